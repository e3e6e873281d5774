//! Access paths: which rows a scan must read, and which join conditions can drive a hash join.
//!
//! Rows are stored by their memcomparable primary key, so a WHERE clause that pins the
//! key with `=` becomes a point lookup, one that pins a leading part of a composite key
//! becomes a prefix scan, and `<`/`>` bounds on a single integer key become a key range. The
//! filter is still applied to every row read, so an access path only has to read a superset
//! of the answer; that keeps the analysis simple and never wrong.

use protocol::schema::TableSchema;

use super::expr::{CmpOp, Expr};
use super::plan::{Access, JoinKind, Source};

/// The conjuncts of an AND tree.
pub fn conjuncts(e: &Expr) -> Vec<&Expr> {
    match e {
        Expr::And(l, r) => {
            let mut v = conjuncts(l);
            v.extend(conjuncts(r));
            v
        }
        other => vec![other],
    }
}

/// `column op value` with the column of this scan on one side and a row-independent value on
/// the other, normalised so the column comes first.
fn column_comparison(e: &Expr) -> Option<(usize, CmpOp, &Expr)> {
    let Expr::Compare { op, left, right } = e else {
        return None;
    };
    match (left.as_ref(), right.as_ref()) {
        (Expr::Column { depth: 0, index }, v) if v.is_row_independent() => Some((*index, *op, v)),
        (v, Expr::Column { depth: 0, index }) if v.is_row_independent() => {
            Some((*index, op.flip(), v))
        }
        _ => None,
    }
}

/// The values `=` pins the leading `columns` to, as far as they are pinned.
fn pinned(columns: &[usize], comparisons: &[(usize, CmpOp, &Expr)]) -> Vec<Expr> {
    let mut out = Vec::new();
    for col in columns {
        match comparisons
            .iter()
            .find(|(c, op, _)| c == col && *op == CmpOp::Eq)
        {
            Some((_, _, v)) => out.push((*v).clone()),
            None => break,
        }
    }
    out
}

type Bounds = (Option<(Expr, bool)>, Option<(Expr, bool)>);

/// The first lower and upper bounds `<`, `<=`, `>`, `>=` put on a column.
fn bounds(column: usize, comparisons: &[(usize, CmpOp, &Expr)]) -> Bounds {
    let mut lower = None;
    let mut upper = None;
    for (c, op, v) in comparisons {
        if *c != column {
            continue;
        }
        match op {
            CmpOp::Gt if lower.is_none() => lower = Some(((*v).clone(), false)),
            CmpOp::GtEq if lower.is_none() => lower = Some(((*v).clone(), true)),
            CmpOp::Lt if upper.is_none() => upper = Some(((*v).clone(), false)),
            CmpOp::LtEq if upper.is_none() => upper = Some(((*v).clone(), true)),
            _ => {}
        }
    }
    (lower, upper)
}

/// The best secondary index for the comparisons: most leading columns pinned by `=`, then a
/// bounded next column. `min_pinned` 1 asks for equality on at least the first column.
fn best_index(
    schema: &TableSchema,
    comparisons: &[(usize, CmpOp, &Expr)],
    min_pinned: usize,
) -> Option<Access> {
    let mut best: Option<(usize, Access)> = None;
    for idx in &schema.indexes {
        let eq = pinned(&idx.columns, comparisons);
        let (lower, upper) = match idx.columns.get(eq.len()) {
            Some(&next) => bounds(next, comparisons),
            None => (None, None),
        };
        let ranged = lower.is_some() || upper.is_some();
        if eq.len() < min_pinned || (eq.is_empty() && !ranged) {
            continue;
        }
        let score = eq.len() * 2 + usize::from(ranged);
        if best.as_ref().is_none_or(|(s, _)| score > *s) {
            best = Some((
                score,
                Access::Index {
                    name: idx.name.clone(),
                    eq,
                    lower,
                    upper,
                },
            ));
        }
    }
    best.map(|(_, a)| a)
}

/// Picks the access path for a scan of `schema` filtered by `filter`: the primary key pinned
/// by `=`, else a secondary index pinned by `=`, else a range of an integer primary key,
/// else a range of an index's first column, else the whole table.
pub fn choose(schema: &TableSchema, filter: &Expr) -> Access {
    let parts = conjuncts(filter);
    let comparisons: Vec<(usize, CmpOp, &Expr)> =
        parts.iter().filter_map(|e| column_comparison(e)).collect();
    let pinned = pinned(&schema.primary_key, &comparisons);
    if !pinned.is_empty() {
        return if pinned.len() == schema.primary_key.len() {
            Access::Key(pinned)
        } else {
            Access::Prefix(pinned)
        };
    }
    if let Some(index) = best_index(schema, &comparisons, 1) {
        return index;
    }
    if let [pk] = schema.primary_key.as_slice() {
        let is_int = schema
            .columns
            .get(*pk)
            .is_some_and(|c| c.data_type.is_integer());
        if is_int {
            let (lower, upper) = bounds(*pk, &comparisons);
            if lower.is_some() || upper.is_some() {
                return Access::Range { lower, upper };
            }
        }
    }
    best_index(schema, &comparisons, 0).unwrap_or(Access::Full)
}

/// Which side of a join an expression reads: `Some(true)` left only, `Some(false)` right
/// only, `None` both, neither, or something that is not a plain expression of the row.
fn side(e: &Expr, left_width: usize) -> Option<bool> {
    let mut left = false;
    let mut right = false;
    let mut other = false;
    e.walk(&mut |n| match n {
        Expr::Column { depth: 0, index } if *index < left_width => left = true,
        Expr::Column { depth: 0, .. } => right = true,
        Expr::Subquery(_)
        | Expr::Exists { .. }
        | Expr::InSubquery { .. }
        | Expr::Quantified { .. }
        | Expr::Aggregate(_)
        | Expr::Window(_) => other = true,
        _ => {}
    });
    match (left, right, other) {
        (true, false, false) => Some(true),
        (false, true, false) => Some(false),
        _ => None,
    }
}

/// Splits join conditions into hash-join key pairs `(left expr, right expr)` and the rest.
pub fn split_equi_join(conditions: Vec<Expr>, left_width: usize) -> (Vec<(Expr, Expr)>, Vec<Expr>) {
    let mut equi = Vec::new();
    let mut rest = Vec::new();
    let mut flat = Vec::new();
    for c in conditions {
        flatten_and(c, &mut flat);
    }
    for c in flat {
        match c {
            Expr::Compare {
                op: CmpOp::Eq,
                left,
                right,
            } => match (side(&left, left_width), side(&right, left_width)) {
                (Some(true), Some(false)) => equi.push((*left, *right)),
                (Some(false), Some(true)) => equi.push((*right, *left)),
                _ => rest.push(Expr::Compare {
                    op: CmpOp::Eq,
                    left,
                    right,
                }),
            },
            other => rest.push(other),
        }
    }
    (equi, rest)
}

/// Moves WHERE conjuncts that relate the two sides of an inner join (`FROM a, b WHERE a.x =
/// b.y`) into that join, where equalities become hash-join keys instead of a filter over the
/// cross product. Only joins on the left spine of the FROM tree are considered: their rows
/// start at column 0, as the WHERE clause's do. Returns what is left of the filter.
pub fn push_into_joins(source: &mut Source, filter: Option<Expr>) -> Option<Expr> {
    let filter = filter?;
    if !matches!(source, Source::Join(_)) {
        return Some(filter);
    }
    let mut parts = Vec::new();
    flatten_and(filter, &mut parts);
    push(source, &mut parts);
    parts
        .into_iter()
        .reduce(|a, b| Expr::And(Box::new(a), Box::new(b)))
}

fn push(source: &mut Source, parts: &mut Vec<Expr>) {
    let Source::Join(j) = source else {
        return;
    };
    if j.kind != JoinKind::Inner {
        return;
    }
    push(&mut j.left, parts);
    let lw = j.left.width();
    let total = lw + j.right.width();
    let mut mine = Vec::new();
    let mut i = 0;
    while i < parts.len() {
        if relates_sides(&parts[i], lw, total) {
            mine.push(parts.remove(i));
        } else {
            i += 1;
        }
    }
    if mine.is_empty() {
        return;
    }
    let (equi, rest) = split_equi_join(mine, lw);
    j.equi.extend(equi);
    for r in rest {
        j.on = Some(match j.on.take() {
            Some(on) => Expr::And(Box::new(on), Box::new(r)),
            None => r,
        });
    }
}

/// True if `e` reads columns on both sides of a join of width `total` (left `lw` wide),
/// and nothing beyond it, no subquery and no aggregate.
fn relates_sides(e: &Expr, lw: usize, total: usize) -> bool {
    let (mut left, mut right, mut other) = (false, false, false);
    e.walk(&mut |n| match n {
        Expr::Column { depth: 0, index } if *index < lw => left = true,
        Expr::Column { depth: 0, index } if *index < total => right = true,
        Expr::Column { depth: 0, .. } => other = true,
        Expr::Subquery(_)
        | Expr::Exists { .. }
        | Expr::InSubquery { .. }
        | Expr::Quantified { .. }
        | Expr::Aggregate(_)
        | Expr::Window(_) => other = true,
        _ => {}
    });
    left && right && !other
}

fn flatten_and(e: Expr, out: &mut Vec<Expr>) {
    match e {
        Expr::And(l, r) => {
            flatten_and(*l, out);
            flatten_and(*r, out);
        }
        other => out.push(other),
    }
}
