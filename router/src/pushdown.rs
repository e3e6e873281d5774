//! Grouped aggregates pushed down to the shards: each shard groups its own rows, the router
//! groups the partial groups.
//!
//! ```text
//!  SELECT g, count(*), avg(x) FROM t WHERE w GROUP BY g HAVING sum(x) > 5 ORDER BY 2 LIMIT 3
//!   each shard:  SELECT g AS g, count(*) AS tessera_p0, sum(x) AS tessera_p1,
//!                       count(x) AS tessera_p2 FROM t WHERE w GROUP BY g
//!   router, over those rows as table t:
//!                SELECT g, CAST(sum(tessera_p0) AS bigint),
//!                       CAST(sum(tessera_p1) AS numeric) / CAST(sum(tessera_p2) AS numeric)
//!                FROM t GROUP BY g HAVING sum(tessera_p1) > 5 ORDER BY 2 LIMIT 3
//! ```
//! The router then holds one row per group and shard instead of every row, so a GROUP BY over
//! millions of rows with few groups stays far below the row budget. Only count, sum, min,
//! max and avg over plain columns (or `*`), grouped by plain columns of one table, are
//! pushed down; anything else (DISTINCT or FILTER in an aggregate, other aggregates, window
//! functions, joins) is gathered and computed whole at the router, as before.

use std::collections::BTreeMap;
use std::ops::ControlFlow;

use protocol::DataType;
use protocol::cluster::TableInfo;
use protocol::schema::{ColumnDef, TableSchema};
use sqlparser::ast::{
    self, Expr, FunctionArg, FunctionArgExpr, FunctionArguments, SetExpr, Statement,
};

use crate::names;

/// Aggregate function names the engine knows; any of them other than the five below keeps a
/// query from being pushed down.
const AGGREGATES: &[&str] = &[
    "count",
    "sum",
    "min",
    "max",
    "avg",
    "string_agg",
    "array_agg",
    "bool_and",
    "bool_or",
    "every",
    "stddev",
    "stddev_samp",
    "stddev_pop",
    "variance",
    "var_samp",
    "var_pop",
    "json_agg",
    "jsonb_agg",
    "json_object_agg",
    "jsonb_object_agg",
];

/// The pieces of a pushed-down grouped aggregate.
pub struct Grouped {
    /// What each shard runs.
    pub shard_sql: String,
    /// The rows each shard returns, as a table named like the queried one.
    pub partials: TableSchema,
    /// What the router runs over them.
    pub final_stmt: Statement,
}

/// One aggregate call of the query, and the partial columns it needs.
struct Call {
    text: String,
    name: String,
    /// The column argument (`None` for count(*)).
    arg: Option<(String, DataType)>,
    /// Index of its first partial column.
    first: usize,
}

fn function_name(f: &ast::Function) -> Option<String> {
    match f.name.0.as_slice() {
        [ast::ObjectNamePart::Identifier(id)] => Some(names::ident(id)),
        _ => None,
    }
}

/// The column an expression names, if it is a plain (possibly qualified) column of `table`.
fn column_of(e: &Expr, table: &TableInfo) -> Option<(String, DataType)> {
    let name = match e {
        Expr::Identifier(id) => names::ident(id),
        Expr::CompoundIdentifier(parts) => names::ident(parts.last()?),
        _ => return None,
    };
    let i = table.schema.column_index(&name)?;
    (!table.schema.is_system(i)).then(|| (name, table.schema.columns[i].data_type))
}

fn sum_type(t: DataType) -> Option<DataType> {
    Some(match t {
        DataType::Int2 | DataType::Int4 => DataType::Int8,
        DataType::Int8 | DataType::Numeric(_) => DataType::Numeric(None),
        DataType::Float4 => DataType::Float4,
        DataType::Float8 => DataType::Float8,
        DataType::Interval => DataType::Interval,
        _ => return None,
    })
}

fn parse_expr(sql: &str) -> Option<Expr> {
    sqlparser::parser::Parser::new(&sqlparser::dialect::PostgreSqlDialect {})
        .try_with_sql(sql)
        .ok()?
        .parse_expr()
        .ok()
}

/// Plans `stmt` as a pushed-down grouped aggregate over `table`, when it qualifies.
pub fn grouped(stmt: &Statement, table: &TableInfo) -> Option<Grouped> {
    let Statement::Query(q) = stmt else {
        return None;
    };
    if q.with.is_some() || q.fetch.is_some() || !q.locks.is_empty() {
        return None;
    }
    let SetExpr::Select(s) = q.body.as_ref() else {
        return None;
    };
    if s.from.len() != 1
        || !s.from[0].joins.is_empty()
        || !matches!(s.from[0].relation, ast::TableFactor::Table { .. })
        || crate::plan::statement_has_subquery(stmt)
        || !s.named_window.is_empty()
        || s.qualify.is_some()
    {
        return None;
    }
    let ast::GroupByExpr::Expressions(group_exprs, mods) = &s.group_by else {
        return None;
    };
    if group_exprs.is_empty() || !mods.is_empty() {
        return None;
    }
    let mut keys: Vec<(String, DataType, String)> = Vec::new();
    for e in group_exprs {
        let (name, t) = column_of(e, table)?;
        // Types with equal values of different spellings ('1 mon' = '30 days', 1.0 = 1.00)
        // would show whichever spelling the router met first: group those at the router
        // over all rows instead, like one shard would.
        if matches!(
            t,
            DataType::Interval | DataType::Numeric(_) | DataType::Float4 | DataType::Float8
        ) {
            return None;
        }
        if !keys.iter().any(|(n, _, _)| *n == name) {
            keys.push((name, t, e.to_string()));
        }
    }
    // Every aggregate call in the output, HAVING and ORDER BY.
    let mut calls: Vec<Call> = Vec::new();
    let mut next = keys.len();
    let mut ok = true;
    let _ = ast::visit_expressions(stmt, |e| {
        let Expr::Function(f) = e else {
            return ControlFlow::Continue(());
        };
        if f.over.is_some() {
            ok = false;
            return ControlFlow::Break(());
        }
        let Some(name) = function_name(f) else {
            return ControlFlow::Continue(());
        };
        if !AGGREGATES.contains(&name.as_str()) {
            return ControlFlow::Continue(());
        }
        let arg = match &f.args {
            FunctionArguments::List(list)
                if list.duplicate_treatment.is_none()
                    && list.clauses.is_empty()
                    && list.args.len() == 1 =>
            {
                match &list.args[0] {
                    FunctionArg::Unnamed(FunctionArgExpr::Wildcard) if name == "count" => None,
                    FunctionArg::Unnamed(FunctionArgExpr::Expr(a)) => match column_of(a, table) {
                        Some(c) => Some(c),
                        None => {
                            ok = false;
                            return ControlFlow::Break(());
                        }
                    },
                    _ => {
                        ok = false;
                        return ControlFlow::Break(());
                    }
                }
            }
            _ => {
                ok = false;
                return ControlFlow::Break(());
            }
        };
        let supported = match (name.as_str(), &arg) {
            ("count" | "min" | "max", _) => true,
            ("sum", Some((_, t))) => sum_type(*t).is_some(),
            ("avg", Some((_, t))) => {
                t.is_integer()
                    || matches!(
                        t,
                        DataType::Numeric(_) | DataType::Float4 | DataType::Float8
                    )
            }
            _ => false,
        };
        if !supported || f.filter.is_some() || !f.within_group.is_empty() {
            ok = false;
            return ControlFlow::Break(());
        }
        let text = e.to_string();
        if !calls.iter().any(|c| c.text == text) {
            let width = if name == "avg" { 2 } else { 1 };
            calls.push(Call {
                text,
                name,
                arg,
                first: next,
            });
            next += width;
        }
        ControlFlow::Continue(())
    });
    if !ok || calls.is_empty() {
        return None;
    }
    // What each shard computes.
    let p = |i: usize| format!("tessera_p{i}");
    let mut items: Vec<String> = keys
        .iter()
        .map(|(n, _, written)| format!("{written} AS {}", crate::plan::quote_ident(n)))
        .collect();
    let mut columns: Vec<ColumnDef> = keys
        .iter()
        .map(|(n, t, _)| ColumnDef {
            name: n.clone(),
            data_type: *t,
            nullable: true,
            default: None,
        })
        .collect();
    let mut finals: BTreeMap<String, String> = BTreeMap::new();
    for c in &calls {
        let arg = c
            .arg
            .as_ref()
            .map_or("*".to_string(), |(n, _)| crate::plan::quote_ident(n));
        let arg_type = c.arg.as_ref().map(|(_, t)| *t);
        let mut partial = |expr: String, t: DataType, i: usize| {
            items.push(format!("{expr} AS {}", p(i)));
            columns.push(ColumnDef {
                name: p(i),
                data_type: t,
                nullable: true,
                default: None,
            });
        };
        let final_expr = match c.name.as_str() {
            "count" => {
                partial(format!("count({arg})"), DataType::Int8, c.first);
                format!("CAST(sum({}) AS bigint)", p(c.first))
            }
            "sum" => {
                let t = sum_type(arg_type?)?;
                partial(format!("sum({arg})"), t, c.first);
                match t {
                    DataType::Int8 => format!("CAST(sum({}) AS bigint)", p(c.first)),
                    _ => format!("sum({})", p(c.first)),
                }
            }
            "min" | "max" => {
                partial(format!("{}({arg})", c.name), arg_type?, c.first);
                format!("{}({})", c.name, p(c.first))
            }
            _ => {
                let t = arg_type?;
                let float = matches!(t, DataType::Float4 | DataType::Float8);
                let s_type = if float {
                    DataType::Float8
                } else {
                    DataType::Numeric(None)
                };
                let cast = if float { "float8" } else { "numeric" };
                partial(format!("sum(CAST({arg} AS {cast}))"), s_type, c.first);
                partial(format!("count({arg})"), DataType::Int8, c.first + 1);
                format!(
                    "(CAST(sum({}) AS {cast}) / CAST(sum({}) AS {cast}))",
                    p(c.first),
                    p(c.first + 1)
                )
            }
        };
        finals.insert(c.text.clone(), final_expr);
    }
    let relation = &s.from[0].relation;
    let filter = s
        .selection
        .as_ref()
        .map(|w| format!(" WHERE {w}"))
        .unwrap_or_default();
    let group_list: Vec<&str> = keys.iter().map(|(_, _, w)| w.as_str()).collect();
    let shard_sql = format!(
        "SELECT {} FROM {relation}{filter} GROUP BY {}",
        items.join(", "),
        group_list.join(", ")
    );
    // What the router runs: the query without WHERE, its aggregates over the partials.
    let mut final_stmt = stmt.clone();
    if let Statement::Query(fq) = &mut final_stmt
        && let SetExpr::Select(fs) = fq.body.as_mut()
    {
        fs.selection = None;
        // A bare aggregate keeps its output name (`count`), which its rewrite would lose.
        for item in fs.projection.iter_mut() {
            if let ast::SelectItem::UnnamedExpr(e @ Expr::Function(_)) = item
                && finals.contains_key(&e.to_string())
                && let Expr::Function(f) = &*e
                && let Some(ast::ObjectNamePart::Identifier(name)) = f.name.0.last()
            {
                let alias = ast::Ident::with_quote('"', name.value.to_lowercase());
                *item = ast::SelectItem::ExprWithAlias {
                    expr: e.clone(),
                    alias,
                };
            }
        }
    }
    let mut failed = false;
    let _ = ast::visit_expressions_mut(&mut final_stmt, |e| {
        if let Expr::Function(_) = e
            && let Some(f) = finals.get(&e.to_string())
        {
            match parse_expr(f) {
                Some(new) => *e = new,
                None => failed = true,
            }
        }
        ControlFlow::<()>::Continue(())
    });
    if failed {
        return None;
    }
    // A column outside the aggregates that is not grouped is an error PostgreSQL words
    // itself: leave such a query to the router's executor over all rows.
    let mut ungrouped = false;
    let _ = ast::visit_expressions(&final_stmt, |e| {
        if matches!(e, Expr::Identifier(_) | Expr::CompoundIdentifier(_))
            && let Some((name, _)) = column_of(e, table)
            && !keys.iter().any(|(k, _, _)| *k == name)
        {
            ungrouped = true;
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    });
    if ungrouped {
        return None;
    }
    Some(Grouped {
        shard_sql,
        partials: TableSchema {
            name: table.schema.name.clone(),
            columns,
            primary_key: vec![],
            indexes: Vec::new(),
            checks: Vec::new(),
            foreign_keys: Vec::new(),
        },
        final_stmt,
    })
}

/// `ORDER BY … LIMIT n` for each shard's fetch of a single-table query without grouping,
/// aggregates, windows or DISTINCT, ordered by expressions over its own columns with a
/// constant LIMIT (and OFFSET): each shard returns only its first LIMIT + OFFSET rows in that
/// order, which hold the query's answer; the router sorts them and applies the query whole.
pub fn top_n(stmt: &Statement, table: &TableInfo) -> Option<String> {
    let Statement::Query(q) = stmt else {
        return None;
    };
    let SetExpr::Select(s) = q.body.as_ref() else {
        return None;
    };
    let order = q.order_by.as_ref()?;
    // The fetch carries the WHERE only for one plain table without subqueries in it: without
    // the filter, a shard's first rows would not be the first matching ones.
    if s.from.len() != 1
        || !s.from[0].joins.is_empty()
        || !matches!(s.from[0].relation, ast::TableFactor::Table { .. })
        || crate::plan::statement_has_subquery(stmt)
    {
        return None;
    }
    let ast::OrderByKind::Expressions(keys) = &order.kind else {
        return None;
    };
    if keys.is_empty() || order.interpolate.is_some() || keys.iter().any(|k| k.with_fill.is_some())
    {
        return None;
    }
    let no_group =
        matches!(&s.group_by, ast::GroupByExpr::Expressions(e, m) if e.is_empty() && m.is_empty());
    if !no_group
        || s.having.is_some()
        || s.distinct.is_some()
        || q.with.is_some()
        || q.fetch.is_some()
    {
        return None;
    }
    // No aggregate or window anywhere (they would see only the first rows).
    let aggregated = ast::visit_expressions(stmt, |e| match e {
        Expr::Function(f)
            if f.over.is_some()
                || function_name(f).is_some_and(|n| AGGREGATES.contains(&n.as_str())) =>
        {
            ControlFlow::Break(())
        }
        _ => ControlFlow::Continue(()),
    });
    if aggregated.is_break() {
        return None;
    }
    // Every ORDER BY key over the table's own columns (not an alias or an ordinal).
    for key in keys {
        let mut own = true;
        let mut any_column = false;
        let _ = ast::visit_expressions(&key.expr, |e| {
            match e {
                Expr::Identifier(_) | Expr::CompoundIdentifier(_) => {
                    if column_of(e, table).is_some() {
                        any_column = true;
                    } else {
                        own = false;
                    }
                }
                Expr::Value(_) if std::ptr::eq(e, &key.expr) => own = false,
                _ => {}
            }
            ControlFlow::<()>::Continue(())
        });
        if !own || !any_column {
            return None;
        }
    }
    let number = |e: &Expr| match e {
        Expr::Value(v) => match &v.value {
            ast::Value::Number(n, _) => n.parse::<u64>().ok(),
            _ => None,
        },
        _ => None,
    };
    let (limit, offset) = match &q.limit_clause {
        Some(ast::LimitClause::LimitOffset {
            limit: Some(limit),
            offset,
            limit_by,
        }) if limit_by.is_empty() => (
            number(limit)?,
            match offset {
                Some(o) => number(&o.value)?,
                None => 0,
            },
        ),
        _ => return None,
    };
    let keys: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
    Some(format!(
        " ORDER BY {} LIMIT {}",
        keys.join(", "),
        limit.checked_add(offset)?
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::cluster::Distribution;

    fn table() -> TableInfo {
        let create = engine::sql::parse(
            "CREATE TABLE t (id int PRIMARY KEY, g text, x int, f float8, n numeric)",
        )
        .unwrap()
        .remove(0);
        TableInfo {
            schema: engine::sql::schema_from_create(&create).unwrap(),
            keyspace: "default".into(),
            distribution: Distribution::Sharded,
            shard_key: vec![0],
        }
    }

    fn plan(sql: &str) -> Option<Grouped> {
        grouped(&engine::sql::parse(sql).unwrap().remove(0), &table())
    }

    #[test]
    fn pushes_down_plain_grouped_aggregates() {
        let g = plan("SELECT g, count(*), avg(x) FROM t WHERE x > 1 GROUP BY g HAVING sum(x) > 2")
            .expect("pushed down");
        assert_eq!(
            g.shard_sql,
            "SELECT g AS g, count(*) AS tessera_p1, sum(CAST(x AS numeric)) AS tessera_p2, count(x) AS tessera_p3, sum(x) AS tessera_p4 FROM t WHERE x > 1 GROUP BY g"
        );
        let fin = g.final_stmt.to_string();
        assert!(fin.contains("CAST(sum(tessera_p1) AS BIGINT)"), "{fin}");
        assert!(!fin.contains("WHERE"), "{fin}");
        assert_eq!(g.partials.columns.len(), 5);
    }

    #[test]
    fn top_n_bounds_each_shard_only_when_it_is_safe() {
        let t = |sql: &str| top_n(&engine::sql::parse(sql).unwrap().remove(0), &table());
        assert_eq!(
            t("SELECT * FROM t WHERE x > 1 ORDER BY x DESC, g LIMIT 10 OFFSET 5").as_deref(),
            Some(" ORDER BY x DESC, g LIMIT 15")
        );
        assert_eq!(
            t("SELECT g FROM t ORDER BY x + 1 LIMIT 3").as_deref(),
            Some(" ORDER BY x + 1 LIMIT 3")
        );
        for sql in [
            "SELECT * FROM t ORDER BY x",
            "SELECT x AS y FROM t ORDER BY y LIMIT 3",
            "SELECT x FROM t ORDER BY 1 LIMIT 3",
            "SELECT count(*) FROM t ORDER BY 1 LIMIT 3",
            "SELECT DISTINCT g FROM t ORDER BY g LIMIT 3",
            "SELECT g, row_number() OVER () FROM t ORDER BY g LIMIT 3",
            "SELECT g FROM t GROUP BY g ORDER BY g LIMIT 3",
            "SELECT * FROM t ORDER BY x LIMIT $1",
            "SELECT * FROM t WHERE x IN (SELECT x FROM t) ORDER BY x LIMIT 3",
            "SELECT * FROM t, t AS u ORDER BY t.x LIMIT 3",
        ] {
            assert!(t(sql).is_none(), "{sql}");
        }
    }

    #[test]
    fn leaves_other_shapes_to_the_router() {
        for sql in [
            "SELECT g, count(DISTINCT x) FROM t GROUP BY g",
            "SELECT g, string_agg(g, ',') FROM t GROUP BY g",
            "SELECT g, sum(x + 1) FROM t GROUP BY g",
            "SELECT n, count(*) FROM t GROUP BY n",
            "SELECT g, x FROM t GROUP BY g",
            "SELECT count(*) FROM t",
            "SELECT g, count(*) FILTER (WHERE x > 1) FROM t GROUP BY g",
            "SELECT g, row_number() OVER () FROM t GROUP BY g",
        ] {
            assert!(plan(sql).is_none(), "{sql}");
        }
    }
}
