//! Functions in FROM: `SELECT g FROM generate_series(1, 3) AS g`.
//!
//! ```text
//!  FROM generate_series(1, 3) AS g        ──► FROM (SELECT generate_series(1, 3) AS "g") AS g
//!  FROM unnest(ARRAY[1, 2])               ──► FROM (SELECT unnest(ARRAY[1, 2]) AS "unnest") AS unnest
//!  FROM generate_series(1, 3) AS s (n)    ──► FROM (SELECT generate_series(1, 3) AS "n") AS s
//! ```
//! PostgreSQL lets any function stand in FROM as a relation of its results; a function of
//! one result column names that column after the alias (or after the function, without
//! one). The executor already runs set-returning functions in a select list, so the router
//! rewrites each function in FROM into that subquery before planning (as it expands
//! views): the planner then sees no table of that name, and a join of the function's rows
//! with sharded tables is planned like a join with any FROM subquery (explicit `LATERAL`
//! changes nothing for arguments that read no columns). The frontend rewrites before it
//! replaces session functions, so `FROM set_config(…)` or `FROM current_setting(…)` are the
//! session's too. Arguments that read columns are not rewritten: PostgreSQL resolves them
//! against the sibling FROM items (implicit LATERAL), which a FROM subquery cannot see, and
//! a same-named column of an enclosing query would silently be read instead. Those, and
//! WITH ORDINALITY, are left for the later stages to refuse as before.

use std::ops::ControlFlow;

use sqlparser::ast::{
    Expr, Function, FunctionArg, FunctionArgExpr, Ident, ObjectName, Statement, TableAlias,
    TableFactor, Visit, VisitMut, Visitor, VisitorMut,
};

/// The statement with every function in FROM replaced by a subquery, or `None` if it has
/// none that can be. A form this does not rewrite (see `subquery_for`) stays as it is, to be
/// answered (a catalog query) or refused further on, as before.
pub fn expand(stmt: &Statement) -> Option<Statement> {
    if !finds_call(stmt, |_| false) {
        return None;
    }
    let mut out = stmt.clone();
    let mut rewriter = Rewriter { changed: false };
    let _ = VisitMut::visit(&mut out, &mut rewriter);
    rewriter.changed.then_some(out)
}

/// True if some FROM item anywhere in the statement is a function call, or some function
/// call in an expression satisfies `call`: one walk for callers that look for both.
pub fn finds_call(stmt: &Statement, call: impl FnMut(&Function) -> bool) -> bool {
    struct Finder<F>(F);
    impl<F: FnMut(&Function) -> bool> Visitor for Finder<F> {
        type Break = ();
        fn pre_visit_table_factor(&mut self, factor: &TableFactor) -> ControlFlow<()> {
            match factor {
                TableFactor::Table { args: Some(_), .. }
                | TableFactor::UNNEST { .. }
                | TableFactor::Function { .. } => ControlFlow::Break(()),
                _ => ControlFlow::Continue(()),
            }
        }
        fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<()> {
            match expr {
                Expr::Function(f) if (self.0)(f) => ControlFlow::Break(()),
                _ => ControlFlow::Continue(()),
            }
        }
    }
    Visit::visit(stmt, &mut Finder(call)).is_break()
}

struct Rewriter {
    changed: bool,
}

impl VisitorMut for Rewriter {
    type Break = ();

    fn pre_visit_table_factor(&mut self, factor: &mut TableFactor) -> ControlFlow<()> {
        if let Some(derived) = subquery_for(factor) {
            *factor = derived;
            self.changed = true;
        }
        ControlFlow::Continue(())
    }
}

/// The FROM subquery standing for a function in FROM; `None` for any other FROM item and for
/// forms not rewritten: WITH ORDINALITY, WITH OFFSET, several arrays in one `unnest`, and
/// arguments that read columns. PostgreSQL resolves those against the sibling FROM items
/// (implicit LATERAL), which a FROM subquery cannot see; rewritten, a column of an enclosing
/// query with the same name would be read instead, a silently wrong answer.
fn subquery_for(factor: &TableFactor) -> Option<TableFactor> {
    let (call, function, alias, args): (String, String, &Option<TableAlias>, Vec<&Expr>) =
        match factor {
            TableFactor::Table {
                name,
                alias,
                args: Some(args),
                with_ordinality: false,
                ..
            } if args.settings.is_none() => {
                let call = format!("{name}({})", comma_list(&args.args));
                (call, function_name(name)?, alias, arg_exprs(&args.args))
            }
            TableFactor::Function {
                name,
                args,
                alias,
                with_ordinality: false,
                ..
            } => {
                let call = format!("{name}({})", comma_list(args));
                (call, function_name(name)?, alias, arg_exprs(args))
            }
            TableFactor::UNNEST {
                alias,
                array_exprs,
                with_offset: false,
                with_ordinality: false,
                ..
            } if array_exprs.len() == 1 => {
                let call = format!("unnest({})", array_exprs[0]);
                (call, "unnest".into(), alias, array_exprs.iter().collect())
            }
            _ => return None,
        };
    if args.iter().any(|e| reads_columns(e)) {
        return None;
    }
    // The result column: the alias's column list, else the alias, else the function.
    let column = match alias {
        Some(a) => match a.columns.first() {
            Some(c) => crate::names::ident(&c.name),
            None => crate::names::ident(&a.name),
        },
        None => function.clone(),
    };
    let sql = format!("SELECT {call} AS {}", Ident::with_quote('"', &column));
    let query = crate::views::parse_query(&sql).ok()?;
    // An alias's column list stays: the executor checks its length against the one column.
    let alias = match alias {
        Some(a) => a.clone(),
        None => TableAlias {
            explicit: true,
            name: Ident::with_quote('"', &function),
            columns: Vec::new(),
            at: None,
        },
    };
    Some(TableFactor::Derived {
        lateral: false,
        subquery: Box::new(query),
        alias: Some(alias),
        sample: None,
    })
}

/// The function's own name (without its schema), as PostgreSQL names its result column.
fn function_name(name: &ObjectName) -> Option<String> {
    name.0.last()?.as_ident().map(crate::names::ident)
}

fn comma_list(args: &[FunctionArg]) -> String {
    args.iter()
        .map(|a| a.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn arg_exprs(args: &[FunctionArg]) -> Vec<&Expr> {
    args.iter()
        .filter_map(|a| match a {
            FunctionArg::Unnamed(FunctionArgExpr::Expr(e))
            | FunctionArg::Named {
                arg: FunctionArgExpr::Expr(e),
                ..
            }
            | FunctionArg::ExprNamed {
                arg: FunctionArgExpr::Expr(e),
                ..
            } => Some(e),
            _ => None,
        })
        .collect()
}

/// True if the expression names a column (anything but constants, parameters and calls).
fn reads_columns(e: &Expr) -> bool {
    sqlparser::ast::visit_expressions(e, |e| match e {
        Expr::Identifier(_) | Expr::CompoundIdentifier(_) | Expr::CompoundFieldAccess { .. } => {
            ControlFlow::Break(())
        }
        _ => ControlFlow::Continue(()),
    })
    .is_break()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewritten(sql: &str) -> String {
        let stmt = engine::sql::parse(sql).unwrap().remove(0);
        match expand(&stmt) {
            Some(s) => s.to_string(),
            None => "unchanged".into(),
        }
    }

    #[test]
    fn functions_in_from_become_subqueries() {
        let cases = [
            (
                "SELECT * FROM generate_series(1, 3)",
                r#"SELECT * FROM (SELECT generate_series(1, 3) AS "generate_series") AS "generate_series""#,
            ),
            (
                "SELECT g FROM generate_series(1, 3) AS g",
                r#"SELECT g FROM (SELECT generate_series(1, 3) AS "g") AS g"#,
            ),
            (
                "SELECT n FROM generate_series(1, 9, 2) s(n) WHERE n > 1",
                r#"SELECT n FROM (SELECT generate_series(1, 9, 2) AS "n") s (n) WHERE n > 1"#,
            ),
            (
                "INSERT INTO t SELECT g, 'x' FROM pg_catalog.generate_series(1, 5) g",
                r#"INSERT INTO t SELECT g, 'x' FROM (SELECT pg_catalog.generate_series(1, 5) AS "g") g"#,
            ),
            (
                "SELECT * FROM t JOIN unnest(ARRAY[1, 2]) u ON t.k = u",
                r#"SELECT * FROM t JOIN (SELECT unnest(ARRAY[1, 2]) AS "u") u ON t.k = u"#,
            ),
            ("SELECT * FROM t, u WHERE t.k = u.k", "unchanged"),
            (
                r#"SELECT "G" FROM LATERAL generate_series(1, 2) AS "G""#,
                r#"SELECT "G" FROM (SELECT generate_series(1, 2) AS "G") AS "G""#,
            ),
            (
                "SELECT * FROM generate_series(1, $1) g",
                r#"SELECT * FROM (SELECT generate_series(1, $1) AS "g") g"#,
            ),
            (
                "SELECT * FROM (SELECT * FROM unnest(ARRAY[now()])) AS x",
                r#"SELECT * FROM (SELECT * FROM (SELECT unnest(ARRAY[now()]) AS "unnest") AS "unnest") AS x"#,
            ),
            // Left for later stages (which refuse them, or answer a catalog query).
            (
                "SELECT * FROM generate_series(1, 3) WITH ORDINALITY",
                "unchanged",
            ),
            ("SELECT * FROM t, generate_series(1, t.n) g", "unchanged"),
            (
                "SELECT * FROM u, LATERAL generate_series(1, n) g",
                "unchanged",
            ),
            ("SELECT * FROM unnest(ARRAY[1], ARRAY[2])", "unchanged"),
        ];
        for (sql, want) in cases {
            assert_eq!(rewritten(sql), want, "{sql}");
        }
    }
}
