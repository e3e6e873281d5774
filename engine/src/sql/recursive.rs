//! WITH RECURSIVE: a CTE of the form `non-recursive term UNION [ALL] recursive term`.
//!
//! ```text
//!  result := base rows;  working := base rows
//!  loop: rows := recursive term with its self-reference reading `working`
//!        UNION drops rows already in result (so cycles end); ALL keeps them
//!        stop when rows is empty; result += rows; working := rows
//! ```
//! Binding gives the self-reference a `Source::WorkingTable` with the non-recursive term's
//! column types; execution keeps each recursion's working rows in the statement's `Ctx`.
//! The number of rows is bounded by `MAX_ROWS` so a runaway UNION ALL fails (54000) instead
//! of exhausting memory.

use std::collections::HashSet;
use std::ops::ControlFlow;

use protocol::schema::ResultColumn;
use protocol::{DataType, Error, Result, Value, sqlstate};
use sqlparser::ast;

use super::bind::{Binder, Cte};
use super::exec::{Rows, run_query};
use super::expr::{Ctx, Env};
use super::parse::ident;
use super::plan::QueryPlan;
use super::types;

/// Rows a recursive CTE may produce before it is stopped.
pub const MAX_ROWS: usize = 1_000_000;

/// A bound recursive CTE.
#[derive(Clone, Debug, PartialEq)]
pub struct Recursion {
    pub id: usize,
    pub base: QueryPlan,
    pub step: QueryPlan,
    /// UNION (true) or UNION ALL.
    pub distinct: bool,
    pub columns: Vec<ResultColumn>,
}

fn invalid(message: String) -> Error {
    Error::new("42P19", message)
}

/// True if `query` reads a relation called `name` anywhere.
pub fn references(query: &ast::Query, name: &str) -> bool {
    count_references(query, name) > 0
}

fn count_references(query: &ast::Query, name: &str) -> usize {
    let mut n = 0;
    let _ = ast::visit_relations(query, |r| {
        if r.0.len() == 1
            && r.0
                .first()
                .and_then(|p| p.as_ident())
                .is_some_and(|i| ident(i) == name)
        {
            n += 1;
        }
        ControlFlow::<()>::Continue(())
    });
    n
}

/// True if `name` is read inside a subquery (in an expression or FROM) of `body`.
fn in_subquery(body: &ast::SetExpr, name: &str) -> bool {
    let ast::SetExpr::Select(s) = body else {
        return false;
    };
    let mut found = false;
    let _ = ast::visit_expressions(s.as_ref(), |e| {
        let q = match e {
            ast::Expr::Subquery(q) | ast::Expr::Exists { subquery: q, .. } => Some(q),
            ast::Expr::In {
                target: ast::InTarget::Subquery(subquery),
                ..
            } => Some(subquery),
            _ => None,
        };
        if q.is_some_and(|q| references(q, name)) {
            found = true;
        }
        ControlFlow::<()>::Continue(())
    });
    for twj in &s.from {
        let mut factors = vec![&twj.relation];
        factors.extend(twj.joins.iter().map(|j| &j.relation));
        for f in factors {
            if let ast::TableFactor::Derived { subquery, .. } = f
                && references(subquery, name)
            {
                found = true;
            }
        }
    }
    found
}

/// PostgreSQL's limits on the recursive term: no aggregates, and the self-reference not on
/// the NULL-extended side of an outer join.
fn check_recursive_term(body: &ast::SetExpr, name: &str) -> Result<()> {
    let ast::SetExpr::Select(s) = body else {
        return Ok(());
    };
    // Aggregates of the term's own SELECT; a subquery inside it (in FROM or an expression)
    // may aggregate, as in PostgreSQL.
    struct Aggregates {
        depth: usize,
        found: bool,
    }
    impl ast::Visitor for Aggregates {
        type Break = ();
        fn pre_visit_query(&mut self, _: &ast::Query) -> ControlFlow<()> {
            self.depth += 1;
            ControlFlow::Continue(())
        }
        fn post_visit_query(&mut self, _: &ast::Query) -> ControlFlow<()> {
            self.depth -= 1;
            ControlFlow::Continue(())
        }
        fn pre_visit_expr(&mut self, e: &ast::Expr) -> ControlFlow<()> {
            if self.depth == 0
                && let ast::Expr::Function(f) = e
                && f.over.is_none()
                && f.name.0.len() == 1
                && f.name
                    .0
                    .first()
                    .and_then(|p| p.as_ident())
                    .is_some_and(|i| super::aggregate::is_aggregate(&ident(i)))
            {
                self.found = true;
            }
            ControlFlow::Continue(())
        }
    }
    let mut visitor = Aggregates {
        depth: 0,
        found: false,
    };
    let _ = ast::Visit::visit(s.as_ref(), &mut visitor);
    if visitor.found {
        return Err(invalid(
            "aggregate functions are not allowed in a recursive query's recursive term".into(),
        ));
    }
    let is_self = |f: &ast::TableFactor| {
        matches!(f, ast::TableFactor::Table { name: n, .. }
            if n.0.len() == 1 && n.0.first().and_then(|p| p.as_ident()).is_some_and(|i| ident(i) == name))
    };
    for twj in &s.from {
        let mut left_has = is_self(&twj.relation);
        for j in &twj.joins {
            use ast::JoinOperator as J;
            let right_is = is_self(&j.relation);
            let nullable = match &j.join_operator {
                J::Left(_) | J::LeftOuter(_) => right_is,
                J::Right(_) | J::RightOuter(_) => left_has,
                J::FullOuter(_) => right_is || left_has,
                _ => false,
            };
            if nullable {
                return Err(invalid(format!(
                    "recursive reference to query \"{name}\" must not appear within an outer join"
                )));
            }
            left_has |= right_is;
        }
    }
    Ok(())
}

impl Binder<'_> {
    /// Binds recursive CTE `name` (its query, column list) at a reference.
    pub(super) fn bind_recursive(
        &mut self,
        name: &str,
        query: &ast::Query,
        columns: &[String],
    ) -> Result<Recursion> {
        let shape = || {
            invalid(format!(
                "recursive query \"{name}\" does not have the form non-recursive-term UNION [ALL] recursive-term"
            ))
        };
        let ast::SetExpr::SetOperation {
            op,
            set_quantifier,
            left,
            right,
        } = query.body.as_ref()
        else {
            return Err(shape());
        };
        if *op != ast::SetOperator::Union {
            return Err(shape());
        }
        if query.order_by.is_some() {
            return Err(Error::unsupported(
                "ORDER BY in a recursive query is not implemented",
            ));
        }
        if query.limit_clause.is_some() {
            return Err(Error::unsupported(
                "OFFSET/LIMIT in a recursive query is not implemented",
            ));
        }
        let distinct = !matches!(set_quantifier, ast::SetQuantifier::All);
        let left_query = ast::Query {
            body: left.clone(),
            ..query.clone()
        };
        if references(&left_query, name) {
            return Err(invalid(format!(
                "recursive reference to query \"{name}\" must not appear within its non-recursive term"
            )));
        }
        let right_query = ast::Query {
            body: right.clone(),
            with: None,
            ..query.clone()
        };
        if in_subquery(right, name) {
            return Err(invalid(format!(
                "recursive reference to query \"{name}\" must not appear within a subquery"
            )));
        }
        if count_references(&right_query, name) > 1 {
            return Err(invalid(format!(
                "recursive reference to query \"{name}\" must not appear more than once"
            )));
        }
        check_recursive_term(right, name)?;
        let mut base = self.set_expr(left)?;
        if columns.len() > base.columns.len() {
            return Err(Error::syntax(format!(
                "WITH query \"{name}\" has {} columns available but {} columns specified",
                base.columns.len(),
                columns.len()
            )));
        }
        for (c, n) in base.columns.iter_mut().zip(columns) {
            c.name = n.clone();
        }
        let id = self.next_working;
        self.next_working += 1;
        self.ctes.push(Cte {
            name: name.to_string(),
            query: query.clone(),
            columns: columns.to_vec(),
            recursive: false,
            working: Some((id, base.columns.clone())),
            scope_uids: self.scope_uids(),
        });
        let step = self.set_expr(right);
        self.ctes.pop();
        let step = step?;
        if step.columns.len() != base.columns.len() {
            return Err(Error::syntax(
                "each UNION query must have the same number of columns",
            ));
        }
        for (i, (b, s)) in base.columns.iter().zip(&step.columns).enumerate() {
            let overall = match (b.data_type, s.data_type) {
                // varchar(n) UNION varchar(m) is varchar without a length.
                (DataType::Varchar(Some(_)), y) if y.is_text() && y != b.data_type => {
                    DataType::Varchar(None)
                }
                (x, y) => {
                    types::common_type(&[Some(x), Some(y)], "UNION")?.unwrap_or(DataType::Text)
                }
            };
            let same = overall == b.data_type
                || (overall.is_text() && b.data_type.is_text() && s.data_type == b.data_type);
            if !same {
                return Err(Error::new(
                    sqlstate::DATATYPE_MISMATCH,
                    format!(
                        "recursive query \"{name}\" column {} has type {} in non-recursive term but type {} overall",
                        i + 1,
                        b.data_type.name(),
                        overall.name()
                    ),
                ));
            }
        }
        let columns = base.columns.clone();
        Ok(Recursion {
            id,
            base,
            step,
            distinct,
            columns,
        })
    }
}

/// Runs a recursive CTE to its fixpoint.
pub fn run(r: &Recursion, ctx: &Ctx, outer: Option<&Env>) -> Result<Rows> {
    let conform = |rows: Rows, plan: &QueryPlan| -> Result<Rows> {
        let mut rows = rows;
        for (i, (from, to)) in plan.columns.iter().zip(&r.columns).enumerate() {
            if from.data_type == to.data_type {
                continue;
            }
            for row in &mut rows {
                if let Some(v) = row.get_mut(i) {
                    *v = types::cast(
                        std::mem::replace(v, Value::Null),
                        Some(from.data_type),
                        &to.data_type,
                    )?;
                }
            }
        }
        Ok(rows)
    };
    let mut seen: HashSet<Vec<Value>> = HashSet::new();
    let mut result: Rows = Vec::new();
    let mut keep = |rows: Rows, result: &mut Rows| -> Rows {
        if !r.distinct {
            result.extend(rows.iter().cloned());
            return rows;
        }
        let mut fresh = Vec::with_capacity(rows.len());
        for row in rows {
            if seen.insert(row.clone()) {
                result.push(row.clone());
                fresh.push(row);
            }
        }
        fresh
    };
    let base = conform(run_query(&r.base, ctx, outer)?, &r.base)?;
    let mut working = keep(base, &mut result);
    while !working.is_empty() {
        if result.len() > MAX_ROWS {
            return Err(Error::new(
                sqlstate::PROGRAM_LIMIT_EXCEEDED,
                format!("recursive query produced more than {MAX_ROWS} rows"),
            ));
        }
        ctx.set_working(r.id, working);
        let step = run_query(&r.step, ctx, outer);
        ctx.clear_working(r.id);
        let step = conform(step?, &r.step)?;
        working = keep(step, &mut result);
    }
    Ok(result)
}
