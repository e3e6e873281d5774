//! PostgreSQL's system catalogs (`pg_catalog`) and `information_schema`, answered by the
//! router from the cluster map, like the `tessera.*` views: each relation a query reads is
//! materialised in `MemTables` and the engine's executor runs the query over them.
//!
//! Before that, `rewrite` turns the catalog functions that need catalog data
//! (`pg_get_userbyid`, `pg_table_is_visible`, `pg_get_indexdef`, `::regclass`, …) into
//! subqueries over those relations, and replaces every query that inner-joins a relation
//! Tessera keeps empty (policies, publications, inheritance, …) by an empty query of the
//! same shape: its result is empty whatever its select list, which may use SQL the engine
//! does not have (arrays, set-returning functions).

pub mod tables;

use std::ops::ControlFlow;

use sqlparser::ast::{
    self, Expr, FunctionArguments, ObjectNamePart, Query, SelectItem, SetExpr, Statement,
    TableFactor, Value as AstValue, VisitMut, VisitorMut,
};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

use crate::names::{ident, table_name};

/// The database and the role the catalogs report (Tessera has one of each).
pub const DATABASE: &str = "tessera";
pub const USER: &str = "tessera";

/// Who runs the statement being planned: the session's role name (`current_user`) and the
/// OID it logged in with (`crate::roles::session_may` checks privileges by it).
#[derive(Clone, Debug)]
pub struct SessionIdentity {
    pub name: String,
    pub oid: Option<u32>,
}

tokio::task_local! {
    /// The identity of the session whose statement runs in this task.
    pub static SESSION_USER: SessionIdentity;
}

/// The session's role, or [`USER`] outside a session (internal statements).
pub fn session_user() -> String {
    SESSION_USER
        .try_with(|u| u.name.clone())
        .unwrap_or_else(|_| USER.to_string())
}

/// Whether the session running this statement is a superuser now.
pub fn session_is_superuser(state: &protocol::cluster::ClusterState) -> bool {
    let oid = SESSION_USER.try_with(|u| u.oid).ok().flatten();
    crate::roles::session_may(state, oid, |r| r.superuser)
}

/// True if `name` (as `names::table_name` returns it) is a catalog relation.
pub fn is_catalog(name: &str) -> bool {
    tables::lookup(name).is_some()
}

/// Rewrites catalog functions and casts into SQL the engine evaluates, and empty queries into
/// trivially empty ones.
pub fn rewrite(stmt: &Statement) -> Statement {
    let mut stmt = stmt.clone();
    name_session_functions(&mut stmt);
    let _ = stmt.visit(&mut Rewriter);
    stmt
}

struct Rewriter;

/// `SELECT current_user` keeps the column name PostgreSQL gives it after the call becomes a
/// literal.
fn name_session_functions(stmt: &mut Statement) {
    let Statement::Query(q) = stmt else { return };
    let ast::SetExpr::Select(s) = q.body.as_mut() else {
        return;
    };
    for item in s.projection.iter_mut() {
        let ast::SelectItem::UnnamedExpr(Expr::Function(f)) = item else {
            continue;
        };
        let name = match catalog_name(&f.name).as_deref() {
            Some("current_user" | "user") => "current_user",
            Some("session_user") => "session_user",
            Some("current_role") => "current_role",
            Some("current_database") => "current_database",
            Some("current_catalog") => "current_catalog",
            _ => continue,
        };
        *item = ast::SelectItem::ExprWithAlias {
            expr: Expr::Function(f.clone()),
            alias: ast::Ident::new(name),
        };
    }
}

fn parse_expr(sql: &str) -> Option<Expr> {
    Parser::new(&PostgreSqlDialect {})
        .try_with_sql(sql)
        .ok()?
        .parse_expr()
        .ok()
}

fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// A name's parts as PostgreSQL folds them.
fn name_parts(name: &ast::ObjectName) -> Vec<String> {
    name.0
        .iter()
        .map(|p| match p {
            ObjectNamePart::Identifier(i) => ident(i),
            ObjectNamePart::Function(f) => ident(&f.name),
        })
        .collect()
}

/// The unqualified, case-folded name of a function or type, if it is unqualified or in
/// pg_catalog.
fn catalog_name(name: &ast::ObjectName) -> Option<String> {
    let parts = name_parts(name);
    match parts.as_slice() {
        [n] => Some(n.clone()),
        [s, n] if s == "pg_catalog" => Some(n.clone()),
        _ => None,
    }
}

fn strip_nested(mut e: &Expr) -> &Expr {
    while let Expr::Nested(inner) = e {
        e = inner;
    }
    e
}

/// The argument of a call of `information_schema._pg_expandarray(a)`, the set-returning
/// function of rows `(x, n)`: each element of `a` and its 1-based position (pgJDBC's
/// metadata queries use it).
fn expandarray_arg(e: &Expr) -> Option<&Expr> {
    let Expr::Function(f) = strip_nested(e) else {
        return None;
    };
    let parts = name_parts(&f.name);
    let named = match parts.as_slice() {
        [n] => n == "_pg_expandarray",
        [schema, n] => schema == "information_schema" && n == "_pg_expandarray",
        _ => false,
    };
    if !named {
        return None;
    }
    match function_args(f)?.as_slice() {
        [arg] => Some(*arg),
        _ => None,
    }
}

fn string_literal(e: &Expr) -> Option<&str> {
    match e {
        Expr::Value(v) => match &v.value {
            AstValue::SingleQuotedString(s) | AstValue::EscapedStringLiteral(s) => Some(s),
            _ => None,
        },
        _ => None,
    }
}

fn function_args(f: &ast::Function) -> Option<Vec<&Expr>> {
    match &f.args {
        FunctionArguments::None => Some(Vec::new()),
        FunctionArguments::List(l) => l
            .args
            .iter()
            .map(|a| match a {
                ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(e)) => Some(e),
                _ => None,
            })
            .collect(),
        FunctionArguments::Subquery(_) => None,
    }
}

/// The replacement SQL for a catalog function call.
fn function_sql(name: &str, args: &[&Expr]) -> Option<String> {
    let a = |i: usize| args.get(i).map(|e| format!("({e})"));
    Some(match (name, args.len()) {
        ("pg_get_userbyid", 1) => {
            let x = a(0)?;
            format!(
                "COALESCE((SELECT tessera_u.rolname FROM pg_catalog.pg_roles tessera_u \
                 WHERE tessera_u.oid = {x}), 'unknown (OID=' || CAST({x} AS TEXT) || ')')"
            )
        }
        // Tessera has no partitioned tables: a table's only "ancestor" is itself (psql's
        // `\d` asks when listing the foreign keys that reference a table).
        ("pg_partition_ancestors", 1) => format!("CAST({} AS BIGINT)", a(0)?),
        ("pg_table_is_visible", 1) => format!(
            "EXISTS (SELECT 1 FROM pg_catalog.pg_class tessera_v WHERE tessera_v.oid = {} \
             AND tessera_v.relnamespace IN ({}, {}))",
            a(0)?,
            tables::PG_CATALOG,
            tables::PUBLIC
        ),
        ("pg_collation_is_visible", 1) => format!(
            "EXISTS (SELECT 1 FROM pg_catalog.pg_collation tessera_v WHERE tessera_v.oid = {} \
             AND tessera_v.collnamespace IN ({}, {}))",
            a(0)?,
            tables::PG_CATALOG,
            tables::PUBLIC
        ),
        ("pg_type_is_visible", 1) => format!(
            "EXISTS (SELECT 1 FROM pg_catalog.pg_type tessera_v WHERE tessera_v.oid = {})",
            a(0)?
        ),
        ("pg_get_expr", 2 | 3) => format!("CAST({} AS TEXT)", a(0)?),
        // With a column number (not 0): that key column's name.
        ("pg_get_indexdef", 3) if args[1].to_string() != "0" => format!(
            "(SELECT CAST(tessera_a.attname AS TEXT) FROM pg_catalog.pg_index tessera_x \
             JOIN pg_catalog.pg_attribute tessera_a ON tessera_a.attrelid = tessera_x.indrelid \
             AND tessera_a.attnum = tessera_x.indkey[{} - 1] WHERE tessera_x.indexrelid = {})",
            a(1)?,
            a(0)?
        ),
        ("pg_get_indexdef", 1 | 3) | ("pg_get_constraintdef", 1 | 2) => {
            let pretty = args.len() > 1 && args.last().is_some_and(|p| p.to_string() != "false");
            format!(
                // The definitions' own column is renamed, so an unqualified `oid` argument
                // (psql writes `pg_get_constraintdef(oid, true)`) still means the caller's.
                "(SELECT tessera_d.{} FROM (SELECT oid AS tessera_oid, def, pretty \
                 FROM pg_catalog.tessera_objdefs) tessera_d WHERE tessera_d.tessera_oid = {})",
                if pretty { "pretty" } else { "def" },
                a(0)?
            )
        }
        ("to_regtype", 1) => match args[0] {
            e if string_literal(e).is_some() || is_placeholder(e) => regtype_of_text(e),
            _ => return None,
        },
        ("to_regclass", 1) => match args[0] {
            e if string_literal(e).is_some() || is_placeholder(e) => regclass_of_text(e),
            _ => return None,
        },
        ("pg_get_viewdef", 1 | 2) => "CAST(NULL AS TEXT)".into(),
        // The setting's value as pg_settings shows it (the server's, not a session's SET).
        ("current_setting", 1 | 2) => format!(
            "(SELECT tessera_s.setting FROM pg_catalog.pg_settings tessera_s \
             WHERE tessera_s.name = lower(CAST({} AS TEXT)))",
            a(0)?
        ),
        ("pg_relation_is_publishable", 1) => "false".into(),
        ("current_database", 0) => quote_literal(DATABASE),
        ("current_user" | "session_user" | "user" | "current_role", 0) => {
            quote_literal(&session_user())
        }
        _ => return None,
    })
}

fn is_placeholder(e: &Expr) -> bool {
    matches!(e, Expr::Value(v) if matches!(v.value, AstValue::Placeholder(_)))
}

/// The OID of the type a text names (a type name or its SQL spelling, any case), or NULL:
/// `to_regtype(text)`, and `'name'::regtype`.
fn regtype_of_text(x: &Expr) -> String {
    format!(
        "(SELECT tessera_t.oid FROM pg_catalog.pg_type tessera_t \
         WHERE tessera_t.typname = lower(trim(CAST(({x}) AS TEXT))) \
         OR pg_catalog.format_type(tessera_t.oid, NULL) = lower(trim(CAST(({x}) AS TEXT))) \
         ORDER BY tessera_t.oid LIMIT 1)"
    )
}

/// The OID of the relation a text names (`t`, `schema.t`, any case), or NULL:
/// `to_regclass(text)`, and `$1::regclass`.
fn regclass_of_text(x: &Expr) -> String {
    if let Some(s) = string_literal(x) {
        // 'public.t' and '"T"' name relations as SQL does.
        let last = s.rsplit('.').next().unwrap_or(s);
        let name = match last.strip_prefix('"').and_then(|l| l.strip_suffix('"')) {
            Some(q) => q.to_string(),
            None => last.to_lowercase(),
        };
        return format!(
            "(SELECT tessera_c.oid FROM pg_catalog.pg_class tessera_c \
             WHERE tessera_c.relname = {})",
            quote_literal(&name)
        );
    }
    format!(
        "(SELECT tessera_c.oid FROM pg_catalog.pg_class tessera_c \
         JOIN pg_catalog.pg_namespace tessera_n ON tessera_n.oid = tessera_c.relnamespace \
         WHERE tessera_c.relname = lower(CAST(({x}) AS TEXT)) \
         OR tessera_n.nspname || '.' || tessera_c.relname = lower(CAST(({x}) AS TEXT)) \
         ORDER BY tessera_c.oid LIMIT 1)"
    )
}

/// The replacement SQL for `x::type` with a catalog type.
fn cast_sql(type_name: &str, x: &Expr) -> Option<String> {
    let lit = string_literal(x);
    let name_of = |s: &str| -> String {
        // 'public.t' and '"T"' name relations as SQL does.
        let last = s.rsplit('.').next().unwrap_or(s);
        match last.strip_prefix('"').and_then(|l| l.strip_suffix('"')) {
            Some(q) => q.to_string(),
            None => last.to_lowercase(),
        }
    };
    Some(match (type_name, lit) {
        ("regclass", _) if lit.is_some() || is_placeholder(x) => regclass_of_text(x),
        ("regclass", None) => format!(
            "COALESCE((SELECT tessera_c.relname FROM pg_catalog.pg_class tessera_c \
             WHERE tessera_c.oid = ({x})), CAST(({x}) AS TEXT))"
        ),
        ("regtype", Some(s)) => format!(
            "(SELECT tessera_t.oid FROM pg_catalog.pg_type tessera_t \
             WHERE tessera_t.typname = {l} OR pg_catalog.format_type(tessera_t.oid, NULL) = {l})",
            l = quote_literal(&s.trim().to_lowercase())
        ),
        ("regtype", None) => format!("pg_catalog.format_type(({x}), NULL)"),
        ("regnamespace", Some(s)) => format!(
            "(SELECT tessera_n.oid FROM pg_catalog.pg_namespace tessera_n \
             WHERE tessera_n.nspname = {})",
            quote_literal(&name_of(s))
        ),
        ("regnamespace", None) => format!(
            "COALESCE((SELECT tessera_n.nspname FROM pg_catalog.pg_namespace tessera_n \
             WHERE tessera_n.oid = ({x})), CAST(({x}) AS TEXT))"
        ),
        ("oid", _) => format!("CAST(({x}) AS BIGINT)"),
        ("regproc" | "regprocedure" | "name" | "char", _) => {
            format!("CAST(({x}) AS TEXT)")
        }
        _ => return None,
    })
}

const AGGREGATES: &[&str] = &[
    "count",
    "sum",
    "avg",
    "min",
    "max",
    "string_agg",
    "array_agg",
    "bool_and",
    "bool_or",
    "every",
    "json_agg",
    "jsonb_agg",
    "json_object_agg",
    "jsonb_object_agg",
];

/// True if the select list calls an aggregate (of this query level, not of a subquery).
fn has_aggregate(items: &[SelectItem]) -> bool {
    struct Finder {
        depth: usize,
        found: bool,
    }
    impl ast::Visitor for Finder {
        type Break = ();
        fn pre_visit_query(&mut self, _: &Query) -> ControlFlow<()> {
            self.depth += 1;
            ControlFlow::Continue(())
        }
        fn post_visit_query(&mut self, _: &Query) -> ControlFlow<()> {
            self.depth -= 1;
            ControlFlow::Continue(())
        }
        fn pre_visit_expr(&mut self, e: &Expr) -> ControlFlow<()> {
            if self.depth == 0
                && let Expr::Function(f) = e
                && catalog_name(&f.name).is_some_and(|n| AGGREGATES.contains(&n.as_str()))
            {
                self.found = true;
            }
            ControlFlow::Continue(())
        }
    }
    let mut finder = Finder {
        depth: 0,
        found: false,
    };
    let _ = ast::Visit::visit(&items.to_vec(), &mut finder);
    finder.found
}

fn relation_is_empty(t: &TableFactor) -> bool {
    match t {
        TableFactor::Table { name, .. } => {
            let n = table_name(name);
            let rel = n.rsplit('.').next().unwrap_or(&n);
            is_catalog(&n) && tables::ALWAYS_EMPTY.contains(&rel)
        }
        TableFactor::Derived { subquery, .. } => query_is_empty(subquery),
        TableFactor::NestedJoin {
            table_with_joins, ..
        } => from_is_empty(table_with_joins),
        _ => false,
    }
}

fn from_is_empty(t: &ast::TableWithJoins) -> bool {
    use ast::JoinOperator as J;
    relation_is_empty(&t.relation)
        || t.joins.iter().any(|j| {
            matches!(j.join_operator, J::Join(_) | J::Inner(_) | J::CrossJoin(_))
                && relation_is_empty(&j.relation)
        })
}

fn is_false(e: &Option<Expr>) -> bool {
    matches!(e, Some(Expr::Value(v)) if v.value == AstValue::Boolean(false))
}

fn set_is_empty(body: &SetExpr) -> bool {
    match body {
        SetExpr::Select(s) => {
            if is_false(&s.selection) && s.from.is_empty() {
                return true;
            }
            let grouped =
                !matches!(&s.group_by, ast::GroupByExpr::Expressions(e, _) if e.is_empty());
            if !grouped && (s.having.is_some() || has_aggregate(&s.projection)) {
                return false;
            }
            s.from.iter().any(from_is_empty)
        }
        SetExpr::Query(q) => query_is_empty(q),
        SetExpr::SetOperation {
            op, left, right, ..
        } => match op {
            ast::SetOperator::Union => set_is_empty(left) && set_is_empty(right),
            ast::SetOperator::Intersect => set_is_empty(left) || set_is_empty(right),
            ast::SetOperator::Except | ast::SetOperator::Minus => set_is_empty(left),
        },
        _ => false,
    }
}

fn query_is_empty(q: &Query) -> bool {
    set_is_empty(&q.body)
}

/// The output column names of a query, or `None` if they cannot be told from its text.
fn output_names(body: &SetExpr) -> Option<Vec<String>> {
    match body {
        SetExpr::Select(s) => s
            .projection
            .iter()
            .map(|item| match item {
                SelectItem::ExprWithAlias { alias, .. } => Some(ident(alias)),
                SelectItem::UnnamedExpr(e) => Some(expr_name(e)),
                _ => None,
            })
            .collect(),
        SetExpr::Query(q) => output_names(&q.body),
        SetExpr::SetOperation { left, .. } => output_names(left),
        _ => None,
    }
}

/// The types of a query's output columns where they are catalog columns, so that the empty
/// query standing in for it keeps them (an `oid` column stays comparable with oids).
fn output_types(body: &SetExpr, width: usize) -> Vec<Option<protocol::DataType>> {
    let SetExpr::Select(s) = body else {
        return vec![None; width];
    };
    // (alias or relation name, canonical relation name) of each catalog relation in FROM.
    let mut relations: Vec<(String, String)> = Vec::new();
    let mut add = |t: &TableFactor| {
        if let TableFactor::Table { name, alias, .. } = t {
            let canonical = table_name(name);
            if is_catalog(&canonical) {
                let short = canonical
                    .rsplit('.')
                    .next()
                    .unwrap_or(&canonical)
                    .to_string();
                let key = alias.as_ref().map(|a| ident(&a.name)).unwrap_or(short);
                relations.push((key, canonical));
            }
        }
    };
    for twj in &s.from {
        add(&twj.relation);
        for j in &twj.joins {
            add(&j.relation);
        }
    }
    let column = |e: &Expr| -> Option<protocol::DataType> {
        let (qualifier, col) = match e {
            Expr::Identifier(i) => (None, ident(i)),
            Expr::CompoundIdentifier(p) if p.len() >= 2 => {
                (Some(ident(&p[p.len() - 2])), ident(&p[p.len() - 1]))
            }
            _ => return None,
        };
        relations
            .iter()
            .filter(|(key, _)| qualifier.as_ref().is_none_or(|q| q == key))
            .find_map(|(_, rel)| tables::column_type(rel, &col))
    };
    s.projection
        .iter()
        .map(|item| match item {
            SelectItem::ExprWithAlias { expr, .. } | SelectItem::UnnamedExpr(expr) => column(expr),
            _ => None,
        })
        .chain(std::iter::repeat(None))
        .take(width)
        .collect()
}

fn expr_name(e: &Expr) -> String {
    match e {
        Expr::Identifier(i) => ident(i),
        Expr::CompoundIdentifier(p) => p.last().map(ident).unwrap_or_default(),
        Expr::Function(f) => catalog_name(&f.name).unwrap_or_else(|| "?column?".into()),
        Expr::Cast { expr, .. } | Expr::Nested(expr) => expr_name(expr),
        _ => "?column?".into(),
    }
}

impl VisitorMut for Rewriter {
    type Break = ();

    fn post_visit_query(&mut self, q: &mut Query) -> ControlFlow<()> {
        let trivially = matches!(q.body.as_ref(), SetExpr::Select(s) if s.from.is_empty() && is_false(&s.selection));
        if trivially || !query_is_empty(q) {
            return ControlFlow::Continue(());
        }
        let Some(names) = output_names(&q.body) else {
            return ControlFlow::Continue(());
        };
        let types = output_types(&q.body, names.len());
        let cols: Vec<String> = names
            .iter()
            .zip(types)
            .map(|(n, t)| {
                let n = n.replace('"', "\"\"");
                match t {
                    Some(t) => format!("CAST(NULL AS {}) AS \"{n}\"", t.name()),
                    None => format!("NULL AS \"{n}\""),
                }
            })
            .collect();
        let sql = format!("SELECT {} WHERE false", cols.join(", "));
        if let Ok(Statement::Query(empty)) = Parser::new(&PostgreSqlDialect {})
            .try_with_sql(&sql)
            .and_then(|mut p| p.parse_statement())
        {
            q.body = empty.body;
            q.order_by = None;
            q.limit_clause = None;
            q.fetch = None;
        }
        ControlFlow::Continue(())
    }

    /// `(_pg_expandarray(a)).x` is `unnest(a)` and `.n` the positions alongside (set-returning
    /// functions in one select list run in step); `(col).x` of a column that held its rows
    /// is the column itself, which the bare call below turns into `unnest(a)`.
    fn pre_visit_expr(&mut self, e: &mut Expr) -> ControlFlow<()> {
        let Expr::CompoundFieldAccess { root, access_chain } = e else {
            return ControlFlow::Continue(());
        };
        let [ast::AccessExpr::Dot(Expr::Identifier(field))] = access_chain.as_slice() else {
            return ControlFlow::Continue(());
        };
        let field = ident(field);
        let new = match expandarray_arg(root) {
            Some(arg) if field == "x" => Some(format!("unnest({arg})")),
            Some(arg) if field == "n" => {
                Some(format!("generate_subscripts(CAST(({arg}) AS BIGINT[]), 1)"))
            }
            Some(_) => None,
            None if field == "x"
                && matches!(
                    strip_nested(root),
                    Expr::Identifier(_) | Expr::CompoundIdentifier(_)
                ) =>
            {
                Some(strip_nested(root).to_string())
            }
            None => None,
        };
        if let Some(new) = new.as_deref().and_then(parse_expr) {
            *e = new;
        }
        ControlFlow::Continue(())
    }

    fn post_visit_expr(&mut self, e: &mut Expr) -> ControlFlow<()> {
        let replacement = match e {
            Expr::Function(_) if let Some(arg) = expandarray_arg(e) => {
                Some(format!("unnest({arg})"))
            }
            Expr::Subquery(q) if query_is_empty(q) => Some("NULL".to_string()),
            Expr::Exists { subquery, negated } if query_is_empty(subquery) => {
                Some(negated.to_string())
            }
            Expr::In {
                target: ast::InTarget::Subquery(subquery),
                negated,
                ..
            } if query_is_empty(subquery) => Some(negated.to_string()),
            Expr::Function(f) => match (&f.args, catalog_name(&f.name)) {
                (FunctionArguments::Subquery(q), Some(n)) if n == "array" => {
                    query_is_empty(q).then(|| "'{}'".to_string())
                }
                (_, Some(n)) => function_args(f).and_then(|args| function_sql(&n, &args)),
                _ => None,
            },
            Expr::Cast {
                expr, data_type, ..
            } => match data_type {
                ast::DataType::Regclass => cast_sql("regclass", expr),
                ast::DataType::Custom(name, mods) if mods.is_empty() => {
                    catalog_name(name).and_then(|n| cast_sql(&n, expr))
                }
                _ => None,
            },
            _ => None,
        };
        if let Some(new) = replacement.as_deref().and_then(parse_expr) {
            *e = new;
        }
        ControlFlow::Continue(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rw(sql: &str) -> String {
        let stmt = Parser::new(&PostgreSqlDialect {})
            .try_with_sql(sql)
            .and_then(|mut p| p.parse_statement())
            .unwrap();
        rewrite(&stmt).to_string()
    }

    #[test]
    fn empty_relations_prune_queries() {
        assert_eq!(
            rw(
                "SELECT pubname, NULL FROM pg_catalog.pg_publication p JOIN pg_class c ON true ORDER BY 1"
            ),
            // A catalog column keeps its type (so it still compares as it would).
            "SELECT CAST(NULL AS TEXT) AS \"pubname\", NULL AS \"?column?\" WHERE false"
        );
        assert_eq!(
            rw("SELECT i.inhrelid FROM pg_inherits i"),
            "SELECT CAST(NULL AS oid) AS \"inhrelid\" WHERE false"
        );
        let out = rw(
            "SELECT pubname, (SELECT string_agg(attname, ', ') FROM pg_catalog.generate_series(0, 1) s, pg_catalog.pg_attribute WHERE attnum = prattrs[s]) FROM pg_catalog.pg_publication p UNION SELECT pubname, NULL FROM pg_publication ORDER BY 1",
        );
        assert!(!out.contains("generate_series"), "{out}");
        assert_eq!(
            rw(
                "SELECT ARRAY(SELECT b.rolname FROM pg_catalog.pg_auth_members m JOIN pg_catalog.pg_roles b ON (m.roleid = b.oid)) AS memberof FROM pg_roles"
            ),
            "SELECT '{}' AS memberof FROM pg_roles"
        );
        // Aggregates over an empty relation still produce a row.
        assert_eq!(
            rw("SELECT count(*) FROM pg_policy"),
            "SELECT count(*) FROM pg_policy"
        );
    }
}
