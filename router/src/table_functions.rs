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
//! with sharded tables is planned like a join with any FROM subquery. A function in FROM
//! cannot see its sibling FROM items (no implicit LATERAL): such a reference is refused as
//! an unknown column.

use std::ops::ControlFlow;

use protocol::{Error, Result};
use sqlparser::ast::{Ident, Statement, TableAlias, TableFactor, VisitMut, VisitorMut};

/// The statement with every function in FROM replaced by a subquery, or `None` if it has
/// none.
pub fn expand(stmt: &Statement) -> Result<Option<Statement>> {
    if !has_function_in_from(stmt) {
        return Ok(None);
    }
    let mut out = stmt.clone();
    let mut rewriter = Rewriter { error: None };
    let _ = out.visit(&mut rewriter);
    match rewriter.error {
        Some(e) => Err(e),
        None => Ok(Some(out)),
    }
}

/// True if some FROM item anywhere in the statement is a function call.
fn has_function_in_from(stmt: &Statement) -> bool {
    struct Finder;
    impl sqlparser::ast::Visitor for Finder {
        type Break = ();
        fn pre_visit_table_factor(&mut self, factor: &TableFactor) -> ControlFlow<()> {
            match factor {
                TableFactor::Table { args: Some(_), .. } | TableFactor::UNNEST { .. } => {
                    ControlFlow::Break(())
                }
                _ => ControlFlow::Continue(()),
            }
        }
    }
    sqlparser::ast::Visit::visit(stmt, &mut Finder).is_break()
}

struct Rewriter {
    error: Option<Error>,
}

impl VisitorMut for Rewriter {
    type Break = ();

    fn pre_visit_table_factor(&mut self, factor: &mut TableFactor) -> ControlFlow<()> {
        match subquery_for(factor) {
            Ok(Some(derived)) => *factor = derived,
            Ok(None) => {}
            Err(e) => {
                self.error = Some(e);
                return ControlFlow::Break(());
            }
        }
        ControlFlow::Continue(())
    }
}

/// The FROM subquery standing for a function in FROM, or `None` for any other FROM item.
fn subquery_for(factor: &TableFactor) -> Result<Option<TableFactor>> {
    let unsupported = || Error::unsupported(format!("table reference {factor} is not supported"));
    let (call, function, alias, with_ordinality) = match factor {
        TableFactor::Table {
            name,
            alias,
            args: Some(args),
            with_ordinality,
            ..
        } => {
            if args.settings.is_some() {
                return Err(unsupported());
            }
            let function = name
                .0
                .last()
                .and_then(|p| p.as_ident())
                .map(crate::names::ident)
                .ok_or_else(|| Error::syntax(format!("{name} is not a function name")))?;
            let args: Vec<String> = args.args.iter().map(|a| a.to_string()).collect();
            let call = format!("{name}({})", args.join(", "));
            (call, function, alias, *with_ordinality)
        }
        TableFactor::UNNEST {
            alias,
            array_exprs,
            with_offset,
            with_ordinality,
            ..
        } => {
            // Several arrays side by side make several columns: not done here.
            let [array] = array_exprs.as_slice() else {
                return Err(unsupported());
            };
            if *with_offset {
                return Err(unsupported());
            }
            (
                format!("unnest({array})"),
                "unnest".to_string(),
                alias,
                *with_ordinality,
            )
        }
        _ => return Ok(None),
    };
    if with_ordinality {
        return Err(Error::unsupported(
            "WITH ORDINALITY on a function in FROM is not supported",
        ));
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
    let query = crate::views::parse_query(&sql)?;
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
    Ok(Some(TableFactor::Derived {
        lateral: false,
        subquery: Box::new(query),
        alias: Some(alias),
        sample: None,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewritten(sql: &str) -> String {
        let stmt = engine::sql::parse(sql).unwrap().remove(0);
        match expand(&stmt) {
            Ok(Some(s)) => s.to_string(),
            Ok(None) => "unchanged".into(),
            Err(e) => format!("error {}: {}", e.code, e.message),
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
                "SELECT * FROM generate_series(1, 3) WITH ORDINALITY",
                "error 0A000: WITH ORDINALITY on a function in FROM is not supported",
            ),
        ];
        for (sql, want) in cases {
            assert_eq!(rewritten(sql), want, "{sql}");
        }
    }
}
