//! Window functions: values computed over a row's partition and frame, added to the row.
//!
//! ```text
//!  rows after WHERE / GROUP BY / HAVING
//!   └─ per window call: sort row positions by (PARTITION BY, ORDER BY)
//!        └─ per partition: peer groups (equal ORDER BY values), then per row its frame
//!             └─ value (rank, lag, sum over the frame, …) ─► appended as a hidden column
//!  then the SELECT list (which reads those columns), DISTINCT, ORDER BY, LIMIT
//! ```
//! Binding lifts each `f(…) OVER (…)` out of the SELECT list and ORDER BY into a
//! [`WindowCall`], leaving a column reference behind, the way aggregates are lifted. Frames
//! follow PostgreSQL: ROWS, RANGE (offsets need one numeric ORDER BY column) and GROUPS; the
//! default frame is RANGE BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW, so without ORDER BY
//! every row of the partition is in every frame. EXCLUDE is not supported (sqlparser does not
//! parse it).

use std::cmp::Ordering;

use protocol::{DataType, Error, Result, Value};

use super::aggregate::{Accumulator, AggCall};
use super::exec::compare_for_sort;
use super::expr::{Ctx, Env, Expr, as_f64};

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum WindowFunc {
    RowNumber,
    Rank,
    DenseRank,
    PercentRank,
    CumeDist,
    Ntile,
    Lag,
    Lead,
    FirstValue,
    LastValue,
    NthValue,
    /// An aggregate over the frame (`sum(x) OVER (…)`): see `WindowCall::aggregate`.
    Aggregate,
}

impl WindowFunc {
    pub fn by_name(name: &str) -> Option<WindowFunc> {
        Some(match name {
            "row_number" => WindowFunc::RowNumber,
            "rank" => WindowFunc::Rank,
            "dense_rank" => WindowFunc::DenseRank,
            "percent_rank" => WindowFunc::PercentRank,
            "cume_dist" => WindowFunc::CumeDist,
            "ntile" => WindowFunc::Ntile,
            "lag" => WindowFunc::Lag,
            "lead" => WindowFunc::Lead,
            "first_value" => WindowFunc::FirstValue,
            "last_value" => WindowFunc::LastValue,
            "nth_value" => WindowFunc::NthValue,
            _ => return None,
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum FrameUnits {
    Rows,
    Range,
    Groups,
}

#[derive(Clone, Debug, PartialEq)]
pub enum FrameBound {
    UnboundedPreceding,
    Preceding(Expr),
    CurrentRow,
    Following(Expr),
    UnboundedFollowing,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Frame {
    pub units: FrameUnits,
    pub start: FrameBound,
    pub end: FrameBound,
}

impl Frame {
    /// RANGE BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW.
    pub fn default_frame() -> Frame {
        Frame {
            units: FrameUnits::Range,
            start: FrameBound::UnboundedPreceding,
            end: FrameBound::CurrentRow,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct WindowOrder {
    pub expr: Expr,
    pub desc: bool,
    pub nulls_first: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub struct WindowCall {
    pub func: WindowFunc,
    /// Arguments of the non-aggregate functions.
    pub args: Vec<Expr>,
    /// The aggregate, for `WindowFunc::Aggregate` (its own args and FILTER).
    pub aggregate: Option<AggCall>,
    pub partition: Vec<Expr>,
    pub order: Vec<WindowOrder>,
    pub frame: Frame,
    pub ty: DataType,
}

impl WindowCall {
    /// Applies `f` to every expression of the call (binding rewrites them for GROUP BY).
    pub fn map_exprs(self, f: &mut dyn FnMut(Expr) -> Result<Expr>) -> Result<WindowCall> {
        let bound =
            |b: FrameBound, f: &mut dyn FnMut(Expr) -> Result<Expr>| -> Result<FrameBound> {
                Ok(match b {
                    FrameBound::Preceding(e) => FrameBound::Preceding(f(e)?),
                    FrameBound::Following(e) => FrameBound::Following(f(e)?),
                    other => other,
                })
            };
        let aggregate = match self.aggregate {
            Some(a) => Some(AggCall {
                args: a.args.into_iter().map(&mut *f).collect::<Result<_>>()?,
                filter: a.filter.map(&mut *f).transpose()?,
                ..a
            }),
            None => None,
        };
        Ok(WindowCall {
            func: self.func,
            args: self.args.into_iter().map(&mut *f).collect::<Result<_>>()?,
            aggregate,
            partition: self
                .partition
                .into_iter()
                .map(&mut *f)
                .collect::<Result<_>>()?,
            order: self
                .order
                .into_iter()
                .map(|o| {
                    Ok(WindowOrder {
                        expr: f(o.expr)?,
                        ..o
                    })
                })
                .collect::<Result<_>>()?,
            frame: Frame {
                units: self.frame.units,
                start: bound(self.frame.start, f)?,
                end: bound(self.frame.end, f)?,
            },
            ty: self.ty,
        })
    }
}

/// What one row contributes: its partition and order keys, and its argument values.
struct Prepared {
    partition: Vec<Value>,
    order: Vec<Value>,
    args: Vec<Value>,
    /// Aggregates: false where FILTER rejects the row.
    counted: bool,
}

/// Computes a window function for every row; the result is in `rows` order.
pub fn compute(
    call: &WindowCall,
    rows: &[Vec<Value>],
    outer: Option<&Env>,
    ctx: &Ctx,
) -> Result<Vec<Value>> {
    let mut prepared = Vec::with_capacity(rows.len());
    for r in rows {
        let env = Env::new(r, outer, ctx);
        let eval_all = |es: &[Expr]| es.iter().map(|e| e.eval(&env)).collect::<Result<Vec<_>>>();
        let (args, counted) = match &call.aggregate {
            Some(a) => (
                eval_all(&a.args)?,
                match &a.filter {
                    Some(f) => f.is_true(&env)?,
                    None => true,
                },
            ),
            None => (eval_all(&call.args)?, true),
        };
        prepared.push(Prepared {
            partition: eval_all(&call.partition)?,
            order: call
                .order
                .iter()
                .map(|o| o.expr.eval(&env))
                .collect::<Result<_>>()?,
            args,
            counted,
        });
    }
    let by_partition = |a: &Prepared, b: &Prepared| -> Ordering {
        for (x, y) in a.partition.iter().zip(&b.partition) {
            let o = compare_for_sort(x, y, false, false);
            if o != Ordering::Equal {
                return o;
            }
        }
        Ordering::Equal
    };
    let by_order = |a: &Prepared, b: &Prepared| -> Ordering {
        for ((x, y), o) in a.order.iter().zip(&b.order).zip(&call.order) {
            let c = compare_for_sort(x, y, o.desc, o.nulls_first);
            if c != Ordering::Equal {
                return c;
            }
        }
        Ordering::Equal
    };
    let mut positions: Vec<usize> = (0..rows.len()).collect();
    positions.sort_by(|&a, &b| {
        by_partition(&prepared[a], &prepared[b]).then_with(|| by_order(&prepared[a], &prepared[b]))
    });
    let mut out = vec![Value::Null; rows.len()];
    let mut start = 0;
    while start < positions.len() {
        let mut end = start + 1;
        while end < positions.len()
            && by_partition(&prepared[positions[start]], &prepared[positions[end]])
                == Ordering::Equal
        {
            end += 1;
        }
        let part: Vec<&Prepared> = positions[start..end]
            .iter()
            .map(|&p| &prepared[p])
            .collect();
        let values = partition_values(
            call,
            &part,
            &by_order,
            outer,
            ctx,
            rows,
            &positions[start..end],
        )?;
        for (&p, v) in positions[start..end].iter().zip(values) {
            out[p] = v;
        }
        start = end;
    }
    Ok(out)
}

/// Peer groups of a sorted partition: for each row, the bounds of its group, and its number.
struct Peers {
    start: Vec<usize>,
    end: Vec<usize>,
    group: Vec<usize>,
    /// First row of each group.
    group_start: Vec<usize>,
}

fn peers(part: &[&Prepared], by_order: &dyn Fn(&Prepared, &Prepared) -> Ordering) -> Peers {
    let n = part.len();
    let mut p = Peers {
        start: vec![0; n],
        end: vec![0; n],
        group: vec![0; n],
        group_start: Vec::new(),
    };
    let mut i = 0;
    while i < n {
        let mut j = i + 1;
        while j < n && by_order(part[i], part[j]) == Ordering::Equal {
            j += 1;
        }
        let g = p.group_start.len();
        p.group_start.push(i);
        for k in i..j {
            p.start[k] = i;
            p.end[k] = j;
            p.group[k] = g;
        }
        i = j;
    }
    p
}

#[allow(clippy::too_many_arguments)]
fn partition_values(
    call: &WindowCall,
    part: &[&Prepared],
    by_order: &dyn Fn(&Prepared, &Prepared) -> Ordering,
    outer: Option<&Env>,
    ctx: &Ctx,
    rows: &[Vec<Value>],
    positions: &[usize],
) -> Result<Vec<Value>> {
    let n = part.len();
    let peers = peers(part, by_order);
    let arg = |i: usize, k: usize| part[i].args.get(k).cloned().unwrap_or(Value::Null);
    let int_arg = |i: usize, k: usize| -> Result<Option<i64>> {
        match arg(i, k) {
            Value::Null => Ok(None),
            Value::Int(v) => Ok(Some(v)),
            other => Err(Error::internal(format!(
                "window function argument is {}",
                other.type_name()
            ))),
        }
    };
    let mut out = Vec::with_capacity(n);
    match call.func {
        WindowFunc::RowNumber => out.extend((1..=n as i64).map(Value::Int)),
        WindowFunc::Rank => out.extend((0..n).map(|i| Value::Int(peers.start[i] as i64 + 1))),
        WindowFunc::DenseRank => out.extend((0..n).map(|i| Value::Int(peers.group[i] as i64 + 1))),
        WindowFunc::PercentRank => out.extend((0..n).map(|i| {
            Value::Float(if n <= 1 {
                0.0
            } else {
                peers.start[i] as f64 / (n - 1) as f64
            })
        })),
        WindowFunc::CumeDist => {
            out.extend((0..n).map(|i| Value::Float(peers.end[i] as f64 / n as f64)))
        }
        WindowFunc::Ntile => {
            for i in 0..n {
                let Some(buckets) = int_arg(i, 0)? else {
                    out.push(Value::Null);
                    continue;
                };
                if buckets <= 0 {
                    return Err(Error::new(
                        "22014",
                        "argument of ntile must be greater than zero",
                    ));
                }
                // The first n % buckets buckets get one row more, as in PostgreSQL.
                let buckets = buckets as usize;
                let size = n / buckets;
                let extra = n % buckets;
                let big = extra * (size + 1);
                let bucket = if i < big {
                    i / (size + 1)
                } else {
                    extra + (i - big) / size.max(1)
                };
                out.push(Value::Int(bucket as i64 + 1));
            }
        }
        WindowFunc::Lag | WindowFunc::Lead => {
            for i in 0..n {
                let offset = if call.args.len() > 1 {
                    match int_arg(i, 1)? {
                        Some(o) => o,
                        None => {
                            out.push(Value::Null);
                            continue;
                        }
                    }
                } else {
                    1
                };
                let target = if call.func == WindowFunc::Lag {
                    (i as i64).checked_sub(offset)
                } else {
                    (i as i64).checked_add(offset)
                };
                match target {
                    Some(t) if t >= 0 && (t as usize) < n => out.push(arg(t as usize, 0)),
                    _ => out.push(if call.args.len() > 2 {
                        arg(i, 2)
                    } else {
                        Value::Null
                    }),
                }
            }
        }
        WindowFunc::FirstValue | WindowFunc::LastValue | WindowFunc::NthValue => {
            for i in 0..n {
                let (lo, hi) = frame(call, part, &peers, i, outer, ctx, rows, positions)?;
                let pick = match call.func {
                    WindowFunc::FirstValue => (lo < hi).then_some(lo),
                    WindowFunc::LastValue => (lo < hi).then(|| hi - 1),
                    _ => match int_arg(i, 1)? {
                        None => None,
                        Some(k) if k <= 0 => {
                            return Err(Error::new(
                                "22016",
                                "argument of nth_value must be greater than zero",
                            ));
                        }
                        Some(k) => {
                            let at = lo.saturating_add(k as usize - 1);
                            (at < hi).then_some(at)
                        }
                    },
                };
                out.push(pick.map(|p| arg(p, 0)).unwrap_or(Value::Null));
            }
        }
        WindowFunc::Aggregate => {
            let agg = call
                .aggregate
                .as_ref()
                .ok_or_else(|| Error::internal("window aggregate without its call"))?;
            let running = call.frame.start == FrameBound::UnboundedPreceding;
            let mut acc = Accumulator::new(agg);
            let mut added = 0;
            for i in 0..n {
                let (lo, hi) = frame(call, part, &peers, i, outer, ctx, rows, positions)?;
                if running && lo == 0 && hi >= added {
                    // Frames that start at the partition's first row only grow.
                    while added < hi {
                        if part[added].counted {
                            acc.add(part[added].args.clone())?;
                        }
                        added += 1;
                    }
                    out.push(acc.clone().finish()?);
                } else {
                    let mut fresh = Accumulator::new(agg);
                    for row in part.iter().take(hi).skip(lo) {
                        if row.counted {
                            fresh.add(row.args.clone())?;
                        }
                    }
                    out.push(fresh.finish()?);
                }
            }
        }
    }
    Ok(out)
}

/// The frame of row `i` of a sorted partition, as a half-open range of its rows.
#[allow(clippy::too_many_arguments)]
fn frame(
    call: &WindowCall,
    part: &[&Prepared],
    peers: &Peers,
    i: usize,
    outer: Option<&Env>,
    ctx: &Ctx,
    rows: &[Vec<Value>],
    positions: &[usize],
) -> Result<(usize, usize)> {
    let n = part.len();
    let env_row = &rows[positions[i]];
    let env = Env::new(env_row, outer, ctx);
    let offset = |e: &Expr, start: bool| -> Result<Value> {
        let which = if start { "starting" } else { "ending" };
        let v = e.eval(&env)?;
        if v.is_null() {
            return Err(Error::new(
                "22004",
                format!("frame {which} offset must not be null"),
            ));
        }
        if as_f64(&v).is_some_and(|f| f < 0.0) {
            return Err(Error::new(
                "22013",
                format!("frame {which} offset must not be negative"),
            ));
        }
        Ok(v)
    };
    let count = |v: Value| -> usize {
        match v {
            Value::Int(k) => usize::try_from(k).unwrap_or(usize::MAX),
            other => as_f64(&other).map(|f| f as usize).unwrap_or(0),
        }
    };
    let bound = |b: &FrameBound, start: bool| -> Result<usize> {
        Ok(match call.frame.units {
            FrameUnits::Rows => match b {
                FrameBound::UnboundedPreceding => 0,
                FrameBound::UnboundedFollowing => n,
                FrameBound::CurrentRow => {
                    if start {
                        i
                    } else {
                        i + 1
                    }
                }
                FrameBound::Preceding(e) => {
                    let k = count(offset(e, start)?);
                    let at = i.saturating_sub(k);
                    if start {
                        if k > i { 0 } else { at }
                    } else if k > i {
                        0
                    } else {
                        at + 1
                    }
                }
                FrameBound::Following(e) => {
                    let k = count(offset(e, start)?);
                    let at = i.saturating_add(k);
                    if start {
                        at.min(n)
                    } else {
                        at.saturating_add(1).min(n)
                    }
                }
            },
            FrameUnits::Groups => {
                let g = peers.group[i];
                let groups = peers.group_start.len();
                let group_start = |g: usize| peers.group_start.get(g).copied().unwrap_or(n);
                match b {
                    FrameBound::UnboundedPreceding => 0,
                    FrameBound::UnboundedFollowing => n,
                    FrameBound::CurrentRow => {
                        if start {
                            peers.start[i]
                        } else {
                            peers.end[i]
                        }
                    }
                    FrameBound::Preceding(e) => {
                        let k = count(offset(e, start)?);
                        if k > g {
                            0
                        } else if start {
                            group_start(g - k)
                        } else {
                            group_start(g - k + 1)
                        }
                    }
                    FrameBound::Following(e) => {
                        let k = count(offset(e, start)?);
                        let target = g.saturating_add(k);
                        if target >= groups {
                            n
                        } else if start {
                            group_start(target)
                        } else {
                            group_start(target + 1)
                        }
                    }
                }
            }
            FrameUnits::Range => match b {
                FrameBound::UnboundedPreceding => 0,
                FrameBound::UnboundedFollowing => n,
                FrameBound::CurrentRow => {
                    if start {
                        peers.start[i]
                    } else {
                        peers.end[i]
                    }
                }
                FrameBound::Preceding(e) | FrameBound::Following(e) => {
                    let k = offset(e, start)?;
                    range_bound(
                        call,
                        part,
                        peers,
                        i,
                        &k,
                        matches!(b, FrameBound::Preceding(_)),
                        start,
                    )?
                }
            },
        })
    };
    let lo = bound(&call.frame.start, true)?;
    let hi = bound(&call.frame.end, false)?;
    Ok((lo, hi.max(lo)))
}

/// A RANGE offset bound: the first row (start) or one past the last row (end) whose single
/// ORDER BY value lies within `offset` of the current row's, in the sort's direction.
fn range_bound(
    call: &WindowCall,
    part: &[&Prepared],
    peers: &Peers,
    i: usize,
    offset: &Value,
    preceding: bool,
    start: bool,
) -> Result<usize> {
    let desc = call.order.first().is_some_and(|o| o.desc);
    let value = |r: &Prepared| r.order.first().cloned().unwrap_or(Value::Null);
    let current = value(part[i]);
    let Some(cur) = as_f64(&current) else {
        if current.is_null() {
            // NULLs are peers only of each other.
            return Ok(if start { peers.start[i] } else { peers.end[i] });
        }
        return Err(Error::unsupported(
            "RANGE with offset PRECEDING/FOLLOWING is supported for numeric ORDER BY columns",
        ));
    };
    let k = as_f64(offset).unwrap_or(0.0);
    // The bound value in sort direction: "preceding" moves against the sort order.
    let toward_start = preceding;
    let limit = if toward_start != desc {
        cur - k
    } else {
        cur + k
    };
    // Position along the sort order: in ascending order a value v is "before" the limit
    // when v < limit; descending, when v > limit.
    let before = |v: f64| if desc { v > limit } else { v < limit };
    let after = |v: f64| if desc { v < limit } else { v > limit };
    let n = part.len();
    let non_null = |r: &Prepared| as_f64(&value(r));
    Ok(if start {
        // First row not before the limit (NULL rows sort to one end and are skipped).
        (0..n)
            .find(|&j| non_null(part[j]).is_some_and(|v| !before(v)))
            .unwrap_or(n)
    } else {
        // One past the last row not after the limit.
        (0..n)
            .rev()
            .find(|&j| non_null(part[j]).is_some_and(|v| !after(v)))
            .map(|j| j + 1)
            .unwrap_or(0)
    })
}
