//! Running query plans: scans, joins, filters, grouping, projection, sort and limit.
//!
//! Execution is deliberately simple: each stage materialises its rows in a `Vec`. A shard
//! answers one statement at a time over data the router has already narrowed, and the
//! router's merge works on whole results too, so streaming would add complexity for little.

use std::cmp::Ordering;
use std::collections::{HashMap, HashSet};
use std::ops::Bound;

use protocol::keycode::encode_key;

use crate::index::prefix_successor;
use protocol::schema::TableSchema;
use protocol::{DataType, Error, Result, Value};

use super::aggregate::Accumulator;
use super::expr::{Ctx, Env, Expr};
use super::plan::{
    Access, JoinKind, JoinNode, Node, QueryPlan, SelectNode, SetOp, SortKey, Source,
};
use super::types;

pub type Rows = Vec<Vec<Value>>;

/// Runs a query; `outer` is the row environment of the enclosing query, if any.
pub fn run_query(plan: &QueryPlan, ctx: &Ctx, outer: Option<&Env>) -> Result<Rows> {
    let mut rows = match &plan.body {
        Node::Select(s) => run_select(s, ctx, outer)?,
        Node::Values(values) => {
            let env = Env::new(&[], outer, ctx);
            values
                .iter()
                .map(|row| row.iter().map(|e| e.eval(&env)).collect())
                .collect::<Result<_>>()?
        }
        Node::SetOp {
            op,
            all,
            left,
            right,
        } => {
            let l = conform(run_query(left, ctx, outer)?, left, plan)?;
            let r = conform(run_query(right, ctx, outer)?, right, plan)?;
            set_op(*op, *all, l, r)
        }
    };
    if plan.distinct {
        rows = dedup(rows);
    }
    if !plan.order.is_empty() {
        sort(&mut rows, &plan.order);
    }
    if !plan.distinct_on.is_empty() {
        let mut seen = HashSet::new();
        rows.retain(|r| {
            let key: Vec<Value> = plan
                .distinct_on
                .iter()
                .map(|&c| r.get(c).cloned().unwrap_or(Value::Null))
                .collect();
            seen.insert(key)
        });
    }
    let env = Env::new(&[], outer, ctx);
    let offset = count(plan.offset.as_ref(), &env, "OFFSET")?.unwrap_or(0);
    let limit = count(plan.limit.as_ref(), &env, "LIMIT")?;
    if offset > 0 || limit.is_some() {
        let keep = limit.unwrap_or(usize::MAX);
        let mut kept: Rows = Vec::with_capacity(keep.min(rows.len()));
        for row in rows.into_iter().skip(offset) {
            if kept.len() >= keep {
                // WITH TIES: rows equal to the last one kept in every sort key stay.
                let tie = plan.with_ties
                    && kept.last().is_some_and(|last| {
                        plan.order.iter().all(|k| {
                            last.get(k.column)
                                .zip(row.get(k.column))
                                .is_some_and(|(a, b)| a.total_cmp(b) == std::cmp::Ordering::Equal)
                        })
                    });
                if !tie {
                    break;
                }
            }
            kept.push(row);
        }
        rows = kept;
    }
    // Sort-only columns go last: ties and DISTINCT ON above may read them.
    if plan.hidden > 0 {
        let keep = plan.columns.len();
        for r in &mut rows {
            r.truncate(keep);
        }
    }
    Ok(rows)
}

/// Converts a set operation's input rows to its output column types (`SELECT 1 UNION
/// SELECT 2.5` yields float8 values for both rows), so every value matches its column type.
fn conform(mut rows: Rows, input: &QueryPlan, output: &QueryPlan) -> Result<Rows> {
    for (i, (from, to)) in input.columns.iter().zip(&output.columns).enumerate() {
        let same =
            from.data_type == to.data_type || (from.data_type.is_text() && to.data_type.is_text());
        if same {
            continue;
        }
        for r in &mut rows {
            if let Some(v) = r.get_mut(i) {
                *v = types::cast(
                    std::mem::replace(v, Value::Null),
                    Some(from.data_type),
                    &to.data_type,
                )?;
            }
        }
    }
    Ok(rows)
}

fn count(e: Option<&Expr>, env: &Env, clause: &str) -> Result<Option<usize>> {
    let Some(e) = e else { return Ok(None) };
    match e.eval(env)? {
        Value::Null => Ok(None),
        Value::Int(n) if n >= 0 => Ok(Some(usize::try_from(n).unwrap_or(usize::MAX))),
        Value::Int(_) => Err(Error::new(
            if clause == "LIMIT" { "2201W" } else { "2201X" },
            format!("{clause} must not be negative"),
        )),
        other => Err(Error::internal(format!(
            "{clause} is {}",
            other.type_name()
        ))),
    }
}

fn dedup(rows: Rows) -> Rows {
    let mut seen = HashSet::with_capacity(rows.len());
    rows.into_iter()
        .filter(|r| seen.insert(r.clone()))
        .collect()
}

pub fn compare_for_sort(a: &Value, b: &Value, desc: bool, nulls_first: bool) -> Ordering {
    match (a.is_null(), b.is_null()) {
        (true, true) => Ordering::Equal,
        (true, false) => {
            if nulls_first {
                Ordering::Less
            } else {
                Ordering::Greater
            }
        }
        (false, true) => {
            if nulls_first {
                Ordering::Greater
            } else {
                Ordering::Less
            }
        }
        (false, false) => {
            let o = a.total_cmp(b);
            if desc { o.reverse() } else { o }
        }
    }
}

fn sort(rows: &mut Rows, keys: &[SortKey]) {
    rows.sort_by(|a, b| {
        for k in keys {
            let (x, y) = (
                a.get(k.column).unwrap_or(&Value::Null),
                b.get(k.column).unwrap_or(&Value::Null),
            );
            let o = compare_for_sort(x, y, k.desc, k.nulls_first);
            if o != Ordering::Equal {
                return o;
            }
        }
        Ordering::Equal
    });
}

/// UNION, INTERSECT and EXCEPT with SQL's multiset rules for ALL.
fn set_op(op: SetOp, all: bool, left: Rows, right: Rows) -> Rows {
    match op {
        SetOp::Union => {
            let mut rows = left;
            rows.extend(right);
            if all { rows } else { dedup(rows) }
        }
        SetOp::Intersect | SetOp::Except => {
            let mut counts: HashMap<Vec<Value>, usize> = HashMap::new();
            for r in right {
                *counts.entry(r).or_default() += 1;
            }
            let mut out = Vec::new();
            for r in left {
                let n = counts.get_mut(&r);
                let present = matches!(&n, Some(n) if **n > 0);
                // With ALL, each right row cancels or matches one left row.
                if all && let Some(n) = n.filter(|n| **n > 0) {
                    *n -= 1;
                }
                if present == (op == SetOp::Intersect) {
                    out.push(r);
                }
            }
            if all { out } else { dedup(out) }
        }
    }
}

fn run_select(s: &SelectNode, ctx: &Ctx, outer: Option<&Env>) -> Result<Rows> {
    let mut rows = run_source(&s.source, ctx, outer)?;
    if let Some(f) = &s.filter {
        let mut kept = Vec::with_capacity(rows.len());
        for r in rows {
            if f.is_true(&Env::new(&r, outer, ctx))? {
                kept.push(r);
            }
        }
        rows = kept;
    }
    if let Some(g) = &s.grouping {
        let mut groups: Vec<(Vec<Value>, Vec<Accumulator>)> = Vec::new();
        let mut index: HashMap<Vec<Value>, usize> = HashMap::new();
        for r in &rows {
            let env = Env::new(r, outer, ctx);
            let key = g
                .keys
                .iter()
                .map(|k| k.eval(&env))
                .collect::<Result<Vec<_>>>()?;
            let slot = match index.get(&key) {
                Some(i) => *i,
                None => {
                    groups.push((
                        key.clone(),
                        g.aggregates.iter().map(Accumulator::new).collect(),
                    ));
                    index.insert(key, groups.len() - 1);
                    groups.len() - 1
                }
            };
            for (call, acc) in g.aggregates.iter().zip(groups[slot].1.iter_mut()) {
                if let Some(f) = &call.filter
                    && !f.is_true(&env)?
                {
                    continue;
                }
                let args = call
                    .args
                    .iter()
                    .map(|a| a.eval(&env))
                    .collect::<Result<Vec<_>>>()?;
                if call.order.is_empty() {
                    acc.add(args)?;
                } else {
                    let keys = call
                        .order
                        .iter()
                        .map(|(e, _, _)| e.eval(&env))
                        .collect::<Result<Vec<_>>>()?;
                    acc.add_ordered(keys, args)?;
                }
            }
        }
        // Without GROUP BY, aggregates over no rows still give one row (count = 0).
        if groups.is_empty() && g.keys.is_empty() {
            groups.push((vec![], g.aggregates.iter().map(Accumulator::new).collect()));
        }
        rows = Vec::with_capacity(groups.len());
        for (mut key, accs) in groups {
            for a in accs {
                key.push(a.finish()?);
            }
            rows.push(key);
        }
        ctx.charge(&rows)?;
    }
    if let Some(h) = &s.having {
        let mut kept = Vec::with_capacity(rows.len());
        for r in rows {
            if h.is_true(&Env::new(&r, outer, ctx))? {
                kept.push(r);
            }
        }
        rows = kept;
    }
    if !s.windows.is_empty() {
        let mut columns = Vec::with_capacity(s.windows.len());
        for call in &s.windows {
            columns.push(super::window::compute(call, &rows, outer, ctx)?);
        }
        for (i, r) in rows.iter_mut().enumerate() {
            for c in &mut columns {
                r.push(std::mem::replace(&mut c[i], Value::Null));
            }
        }
    }
    let mut out = Vec::with_capacity(rows.len());
    let set_returning = super::arrays::has_set_function(&s.projection);
    for r in &rows {
        let env = Env::new(r, outer, ctx);
        if set_returning {
            super::arrays::expand(&s.projection, &env, &mut out)?;
            continue;
        }
        out.push(
            s.projection
                .iter()
                .map(|e| e.eval(&env))
                .collect::<Result<Vec<_>>>()?,
        );
    }
    Ok(out)
}

pub fn run_source(source: &Source, ctx: &Ctx, outer: Option<&Env>) -> Result<Rows> {
    let rows = match source {
        Source::Unit => return Ok(vec![vec![]]),
        Source::Scan { schema, access } => scan(schema, access, ctx, outer)?,
        Source::Subquery(q) => run_query(q, ctx, outer)?,
        // A join charges its output as it grows (a cross join can be far larger than its
        // inputs).
        Source::Join(j) => return join(j, ctx, outer),
        Source::Recursive(r) => super::recursive::run(r, ctx, outer)?,
        Source::WorkingTable { id, .. } => return Ok(ctx.working(*id)),
    };
    ctx.charge(&rows)?;
    Ok(rows)
}

/// Reads the rows of a table that `access` selects, in key order.
pub fn scan(schema: &TableSchema, access: &Access, ctx: &Ctx, outer: Option<&Env>) -> Result<Rows> {
    let env = Env::new(&[], outer, ctx);
    let range = match key_range(schema, access, &env)? {
        KeyAccess::Point(key) => return Ok(ctx.txn.get(&schema.name, &key)?.into_iter().collect()),
        KeyAccess::Range(r) => r,
        KeyAccess::Empty => return Ok(vec![]),
        KeyAccess::Index(name, range) => {
            if inverted(&range.0, &range.1) {
                return Ok(vec![]);
            }
            match ctx.txn.index_scan(&schema.name, &name, range)? {
                Some(mut keys) => {
                    // Key order, as every other access path returns.
                    keys.sort_unstable();
                    keys.dedup();
                    let mut rows = Vec::with_capacity(keys.len());
                    for k in keys {
                        if let Some(row) = ctx.txn.get(&schema.name, &k)? {
                            rows.push(row);
                        }
                    }
                    return Ok(rows);
                }
                None => crate::txn::full_range(),
            }
        }
    };
    ctx.txn
        .scan(&schema.name, range)?
        .map(|r| r.map(|(_, row)| row))
        .collect()
}

enum KeyAccess {
    Point(Vec<u8>),
    Range(crate::txn::KeyRange),
    /// The bounds exclude every key (`id > 5 AND id < 3`).
    Empty,
    /// A range of a secondary index's entries.
    Index(String, crate::txn::KeyRange),
}

/// Computes the key or key range for an access path, or the whole table when a key value
/// does not convert exactly to the key column's type.
fn key_range(schema: &TableSchema, access: &Access, env: &Env) -> Result<KeyAccess> {
    let full = KeyAccess::Range(crate::txn::full_range());
    let key_values = |exprs: &[Expr]| -> Result<Option<Vec<Value>>> {
        let mut out = Vec::with_capacity(exprs.len());
        for (e, pk) in exprs.iter().zip(&schema.primary_key) {
            let Some(col) = schema.columns.get(*pk) else {
                return Ok(None);
            };
            match key_value(&col.data_type, e.eval(env)?) {
                Some(v) => out.push(v),
                None => return Ok(None),
            }
        }
        Ok(Some(out))
    };
    Ok(match access {
        Access::Full => full,
        Access::Key(exprs) => match key_values(exprs)? {
            Some(values) => KeyAccess::Point(encode_key(&values)),
            None => full,
        },
        Access::Prefix(exprs) => match key_values(exprs)? {
            Some(values) => {
                let start = encode_key(&values);
                let end = match prefix_successor(&start) {
                    Some(e) => Bound::Excluded(e),
                    None => Bound::Unbounded,
                };
                KeyAccess::Range((Bound::Included(start), end))
            }
            None => full,
        },
        Access::Index {
            name,
            eq,
            lower,
            upper,
        } => match index_range(schema, name, eq, lower, upper, env)? {
            Some(range) => KeyAccess::Index(name.clone(), range),
            None => full,
        },
        Access::Range { lower, upper } => {
            let bound = |b: &Option<(Expr, bool)>| -> Result<Option<Bound<Vec<u8>>>> {
                let Some((e, inclusive)) = b else {
                    return Ok(Some(Bound::Unbounded));
                };
                Ok(match e.eval(env)? {
                    Value::Int(i) => {
                        let k = encode_key(&[Value::Int(i)]);
                        Some(if *inclusive {
                            Bound::Included(k)
                        } else {
                            Bound::Excluded(k)
                        })
                    }
                    _ => None,
                })
            };
            match (bound(lower)?, bound(upper)?) {
                (Some(l), Some(u)) if inverted(&l, &u) => KeyAccess::Empty,
                (Some(l), Some(u)) => KeyAccess::Range((l, u)),
                _ => full,
            }
        }
    })
}

/// True if no key lies between the bounds; storage may reject such a range.
fn inverted(lower: &Bound<Vec<u8>>, upper: &Bound<Vec<u8>>) -> bool {
    match (lower, upper) {
        (Bound::Included(l), Bound::Included(u)) => l > u,
        (Bound::Included(l) | Bound::Excluded(l), Bound::Included(u) | Bound::Excluded(u)) => {
            l >= u
        }
        _ => false,
    }
}

/// 2^53: every integer below it in magnitude is exactly one float8.
const EXACT_FLOAT_INT: f64 = 9_007_199_254_740_992.0;

/// A value as the key column stores it, if it converts exactly.
fn key_value(ty: &DataType, v: Value) -> Option<Value> {
    match (ty, v) {
        (t, Value::Int(i)) if t.is_integer() => Some(Value::Int(i)),
        // Integers compare with floats as floats: beyond 2^53 several integers equal one
        // float, so only exactly representable values pin one key.
        (t, Value::Float(f)) if t.is_integer() => {
            (f.fract() == 0.0 && f.abs() < EXACT_FLOAT_INT).then_some(Value::Int(f as i64))
        }
        (DataType::Float8, Value::Int(i)) => {
            ((i as f64).abs() < EXACT_FLOAT_INT).then_some(Value::Float(i as f64))
        }
        (DataType::Float8, Value::Float(f)) => Some(Value::Float(f)),
        (DataType::Bpchar(_), Value::Text(s) | Value::BpChar(s)) => Some(Value::BpChar(s)),
        (t, Value::Text(s)) if t.is_text() => Some(Value::Text(s)),
        (DataType::Bool, Value::Bool(b)) => Some(Value::Bool(b)),
        (DataType::Bytea, Value::Bytes(b)) => Some(Value::Bytes(b)),
        // The newer types: a value of the column's kind (after the same conversion an
        // assignment makes) that reads back equal to the original.
        (
            t @ (DataType::Numeric(_)
            | DataType::Date
            | DataType::Time
            | DataType::Timestamp
            | DataType::TimestampTz
            | DataType::Interval
            | DataType::Uuid
            | DataType::Json
            | DataType::Jsonb),
            v,
        ) if !v.is_text_like() && t.accepts_assignment(&v) => {
            let target = match t {
                DataType::Numeric(_) => DataType::Numeric(None),
                t => *t,
            };
            let converted = target.convert(v.clone()).ok()?;
            (converted.sql_cmp(&v) == Some(std::cmp::Ordering::Equal)).then_some(converted)
        }
        _ => None,
    }
}

/// The entry-key range of an index holding `eq` on its leading columns and the next column
/// within the bounds, or `None` when a value does not convert exactly to its column's type.
fn index_range(
    schema: &TableSchema,
    name: &str,
    eq: &[Expr],
    lower: &Option<(Expr, bool)>,
    upper: &Option<(Expr, bool)>,
    env: &Env,
) -> Result<Option<crate::txn::KeyRange>> {
    let Some(idx) = schema.index(name) else {
        return Ok(None);
    };
    // Equal intervals and json values can be encoded differently: no index ranges over them.
    if idx.columns.iter().any(|&c| {
        schema.columns.get(c).is_some_and(|c| {
            matches!(
                c.data_type,
                DataType::Interval | DataType::Json | DataType::Jsonb
            )
        })
    }) {
        return Ok(None);
    }
    let column_type = |i: usize| {
        idx.columns
            .get(i)
            .and_then(|&c| schema.columns.get(c))
            .map(|c| c.data_type)
    };
    let mut values = Vec::with_capacity(eq.len() + 1);
    for (i, e) in eq.iter().enumerate() {
        let Some(ty) = column_type(i) else {
            return Ok(None);
        };
        match key_value(&ty, e.eval(env)?) {
            Some(v) => values.push(v),
            None => return Ok(None),
        }
    }
    let prefix = encode_key(&values);
    let after = |key: &[u8]| match prefix_successor(key) {
        Some(k) => Bound::Excluded(k),
        None => Bound::Unbounded,
    };
    // Entries are the index values followed by the primary key, so "after v" means after
    // every entry that starts with v.
    let bound = |b: &Option<(Expr, bool)>, is_lower: bool| -> Result<Option<Bound<Vec<u8>>>> {
        let Some((e, inclusive)) = b else {
            return Ok(Some(if is_lower {
                Bound::Included(prefix.clone())
            } else {
                after(&prefix)
            }));
        };
        let Some(ty) = column_type(eq.len()) else {
            return Ok(None);
        };
        let v = e.eval(env)?;
        if v.is_null() {
            // `col < NULL` holds for no row.
            return Ok(Some(Bound::Excluded(prefix.clone())));
        }
        let Some(v) = key_value(&ty, v) else {
            return Ok(None);
        };
        let mut with = values.clone();
        with.push(v);
        let k = encode_key(&with);
        Ok(Some(match (is_lower, inclusive) {
            (true, true) => Bound::Included(k),
            (true, false) => match prefix_successor(&k) {
                Some(s) => Bound::Included(s),
                None => Bound::Unbounded,
            },
            (false, true) => after(&k),
            (false, false) => Bound::Excluded(k),
        }))
    };
    match (bound(lower, true)?, bound(upper, false)?) {
        (Some(l), Some(u)) => Ok(Some((l, u))),
        _ => Ok(None),
    }
}

/// Joins two sources: a hash join on the equality keys if there are any, else nested loops.
/// Outer joins pad the unmatched side with NULLs.
fn join(j: &JoinNode, ctx: &Ctx, outer: Option<&Env>) -> Result<Rows> {
    let left = run_source(&j.left, ctx, outer)?;
    let right = run_source(&j.right, ctx, outer)?;
    let (lw, rw) = (j.left.width(), j.right.width());
    let mut right_matched = vec![false; right.len()];
    let mut out = Vec::new();
    let mut charged = 0;

    // Key expressions are bound over the combined row; evaluate each side's over a row
    // padded with NULLs where the other side would be.
    let mut table: HashMap<Vec<Value>, Vec<usize>> = HashMap::new();
    if !j.equi.is_empty() {
        for (i, r) in right.iter().enumerate() {
            let mut padded = vec![Value::Null; lw];
            padded.extend(r.iter().cloned());
            let env = Env::new(&padded, outer, ctx);
            let key = j
                .equi
                .iter()
                .map(|(_, re)| re.eval(&env))
                .collect::<Result<Vec<_>>>()?;
            if key.iter().any(Value::is_null) {
                continue;
            }
            table.entry(key).or_default().push(i);
        }
    }
    let all_right: Vec<usize> = (0..right.len()).collect();
    for l in &left {
        let candidates: &[usize] = if j.equi.is_empty() {
            &all_right
        } else {
            let mut padded = l.clone();
            padded.resize(lw + rw, Value::Null);
            let env = Env::new(&padded, outer, ctx);
            let key = j
                .equi
                .iter()
                .map(|(le, _)| le.eval(&env))
                .collect::<Result<Vec<_>>>()?;
            if key.iter().any(Value::is_null) {
                &[]
            } else {
                table.get(&key).map(Vec::as_slice).unwrap_or(&[])
            }
        };
        let mut matched = false;
        for &i in candidates {
            let mut row = l.clone();
            row.extend(right[i].iter().cloned());
            let keep = match &j.on {
                Some(on) => on.is_true(&Env::new(&row, outer, ctx))?,
                None => true,
            };
            if keep {
                matched = true;
                right_matched[i] = true;
                out.push(row);
                if out.len() - charged >= CHARGE_EVERY {
                    ctx.charge(&out[charged..])?;
                    charged = out.len();
                }
            }
        }
        if !matched && matches!(j.kind, JoinKind::Left | JoinKind::Full) {
            let mut row = l.clone();
            row.resize(lw + rw, Value::Null);
            out.push(row);
        }
    }
    if matches!(j.kind, JoinKind::Right | JoinKind::Full) {
        for (i, r) in right.iter().enumerate() {
            if !right_matched[i] {
                let mut row = vec![Value::Null; lw];
                row.extend(r.iter().cloned());
                out.push(row);
            }
        }
    }
    ctx.charge(&out[charged..])?;
    Ok(out)
}

/// Join output rows counted against the memory budget at a time.
const CHARGE_EVERY: usize = 1024;
