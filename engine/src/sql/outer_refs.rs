//! Correlated subqueries of an aggregating SELECT: their references to the SELECT's rows are
//! rewritten to read the aggregated row instead.
//!
//! ```text
//!  SELECT g, (SELECT count(*) FROM u WHERE u.g = t.g) FROM t GROUP BY g
//!                                               └─ Column { depth 1, t.g } ─► group key 0
//! ```
//! After GROUP BY a subquery in the SELECT list, HAVING or ORDER BY runs once per group, with
//! the group's row (keys, then aggregates) as its outer row. Each reference to the grouping
//! SELECT (a column at the depth that leads out of the subquery to it) must therefore name a
//! grouped column, and moves to that key's position; any other column is PostgreSQL's
//! "must appear in the GROUP BY clause" error.

use protocol::Result;

use super::expr::{Expr, SubqueryExpr};
use super::plan::{Access, Node, QueryPlan, Source};

/// Rewrites, inside `plan`, every column at `depth` (the grouping SELECT as seen from there)
/// with `to_grouped`.
pub fn remap_plan(
    plan: &mut QueryPlan,
    depth: usize,
    to_grouped: &dyn Fn(usize) -> Result<usize>,
) -> Result<()> {
    let expr = |e: &mut Expr| -> Result<()> {
        let taken = std::mem::replace(e, Expr::Const(protocol::Value::Null));
        *e = remap_expr(taken, depth, to_grouped)?;
        Ok(())
    };
    match &mut plan.body {
        Node::Select(s) => {
            remap_source(&mut s.source, depth, to_grouped)?;
            for e in s.filter.iter_mut().chain(s.having.iter_mut()) {
                expr(e)?;
            }
            if let Some(g) = &mut s.grouping {
                for k in &mut g.keys {
                    expr(k)?;
                }
                for a in &mut g.aggregates {
                    for e in a.args.iter_mut().chain(a.filter.iter_mut()) {
                        expr(e)?;
                    }
                    for (e, _, _) in &mut a.order {
                        expr(e)?;
                    }
                }
            }
            let windows = std::mem::take(&mut s.windows);
            s.windows = windows
                .into_iter()
                .map(|w| w.map_exprs(&mut |e| remap_expr(e, depth, to_grouped)))
                .collect::<Result<_>>()?;
            for e in &mut s.projection {
                expr(e)?;
            }
        }
        Node::Values(rows) => {
            for row in rows {
                for e in row {
                    expr(e)?;
                }
            }
        }
        Node::SetOp { left, right, .. } => {
            remap_plan(left, depth, to_grouped)?;
            remap_plan(right, depth, to_grouped)?;
        }
    }
    for e in plan.limit.iter_mut().chain(plan.offset.iter_mut()) {
        expr(e)?;
    }
    Ok(())
}

fn remap_source(
    source: &mut Source,
    depth: usize,
    to_grouped: &dyn Fn(usize) -> Result<usize>,
) -> Result<()> {
    let exprs = |list: &mut Vec<Expr>| -> Result<()> {
        for e in list.iter_mut() {
            let taken = std::mem::replace(e, Expr::Const(protocol::Value::Null));
            *e = remap_expr(taken, depth, to_grouped)?;
        }
        Ok(())
    };
    match source {
        Source::Unit | Source::WorkingTable { .. } => {}
        Source::Scan { access, .. } => match access {
            Access::Full => {}
            Access::Key(k) | Access::Prefix(k) => exprs(k)?,
            Access::Range { lower, upper } => {
                for (e, _) in lower.iter_mut().chain(upper.iter_mut()) {
                    let taken = std::mem::replace(e, Expr::Const(protocol::Value::Null));
                    *e = remap_expr(taken, depth, to_grouped)?;
                }
            }
            Access::Index {
                eq, lower, upper, ..
            } => {
                exprs(eq)?;
                for (e, _) in lower.iter_mut().chain(upper.iter_mut()) {
                    let taken = std::mem::replace(e, Expr::Const(protocol::Value::Null));
                    *e = remap_expr(taken, depth, to_grouped)?;
                }
            }
        },
        // A FROM subquery sits at the same level as the FROM it is in.
        Source::Subquery(q) => remap_plan(q, depth, to_grouped)?,
        Source::Join(j) => {
            remap_source(&mut j.left, depth, to_grouped)?;
            remap_source(&mut j.right, depth, to_grouped)?;
            for (l, r) in &mut j.equi {
                let (tl, tr) = (
                    std::mem::replace(l, Expr::Const(protocol::Value::Null)),
                    std::mem::replace(r, Expr::Const(protocol::Value::Null)),
                );
                *l = remap_expr(tl, depth, to_grouped)?;
                *r = remap_expr(tr, depth, to_grouped)?;
            }
            if let Some(on) = j.on.take() {
                j.on = Some(remap_expr(on, depth, to_grouped)?);
            }
        }
        Source::Recursive(r) => {
            remap_plan(&mut r.base, depth, to_grouped)?;
            remap_plan(&mut r.step, depth, to_grouped)?;
        }
    }
    Ok(())
}

/// Rewrites the columns at `depth` of an expression (and of the subqueries inside it, one
/// level deeper each).
pub fn remap_expr(
    e: Expr,
    depth: usize,
    to_grouped: &dyn Fn(usize) -> Result<usize>,
) -> Result<Expr> {
    let sub = |s: SubqueryExpr| -> Result<SubqueryExpr> {
        let mut plan = *s.plan;
        remap_plan(&mut plan, depth + 1, to_grouped)?;
        Ok(SubqueryExpr::new(plan, s.correlated))
    };
    Ok(match e {
        Expr::Column { depth: d, index } if d == depth => Expr::Column {
            depth: d,
            index: to_grouped(index)?,
        },
        Expr::Subquery(s) => Expr::Subquery(sub(s)?),
        Expr::Exists { subquery, negated } => Expr::Exists {
            subquery: sub(subquery)?,
            negated,
        },
        Expr::InSubquery {
            expr,
            subquery,
            negated,
        } => Expr::InSubquery {
            expr: Box::new(remap_expr(*expr, depth, to_grouped)?),
            subquery: sub(subquery)?,
            negated,
        },
        Expr::Quantified {
            expr,
            op,
            subquery,
            all,
        } => Expr::Quantified {
            expr: Box::new(remap_expr(*expr, depth, to_grouped)?),
            op,
            subquery: sub(subquery)?,
            all,
        },
        other => other.map_children(&mut |c| remap_expr(c, depth, to_grouped))?,
    })
}
