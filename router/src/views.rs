//! Views: stored queries that the router expands where they are read.
//!
//! ```text
//!  CREATE VIEW v (a) AS SELECT x FROM t  ──► meta: ViewInfo { query, columns, depends_on }
//!  SELECT * FROM v WHERE a > 1           ──► SELECT * FROM (SELECT x FROM t) AS v (a) WHERE a > 1
//! ```
//! A view lives only in meta's map; shards never hear of it. Every statement is expanded
//! before it is planned (`expand`), so a view over sharded tables is routed, pushed down or
//! gathered like the query it stands for, and a view always reads current rows. A view over
//! views expands again until no view is left (at most `MAX_DEPTH` levels).
//!
//! Views are read-only: INSERT, UPDATE and DELETE on a view are refused (PostgreSQL's
//! automatically updatable simple views are not implemented).

use std::collections::BTreeSet;
use std::ops::ControlFlow;

use protocol::cluster::{ClusterState, ViewInfo};
use protocol::schema::ResultColumn;
use protocol::{Error, Result, sqlstate};
use sqlparser::ast::{
    self, Ident, ObjectName, Query, Statement, TableAlias, TableAliasColumnDef, TableFactor,
    VisitMut, VisitorMut,
};

use crate::names::table_name;

/// Views inside views deeper than this are refused (a cycle cannot be created, but a deep
/// chain would make every statement expensive).
const MAX_DEPTH: usize = 32;

/// The statement with every view it reads replaced by its query, or `None` if it reads none.
pub fn expand(stmt: &Statement, state: &ClusterState) -> Result<Option<Statement>> {
    if state.views.is_empty() {
        return Ok(None);
    }
    refuse_writes(stmt, state)?;
    let mut out = stmt.clone();
    let mut changed = false;
    for _ in 0..MAX_DEPTH {
        let mut expander = Expander {
            state,
            shadowed: cte_names(&out),
            expanded: false,
            error: None,
        };
        let _ = out.visit(&mut expander);
        if let Some(e) = expander.error {
            return Err(e);
        }
        if !expander.expanded {
            return Ok(changed.then_some(out));
        }
        changed = true;
    }
    Err(Error::new(
        sqlstate::PROGRAM_LIMIT_EXCEEDED,
        format!("views nested more than {MAX_DEPTH} deep"),
    ))
}

/// Names that WITH clauses define anywhere in the statement: they hide views of that name.
pub fn cte_names(stmt: &Statement) -> BTreeSet<String> {
    struct Ctes(BTreeSet<String>);
    impl ast::Visitor for Ctes {
        type Break = ();
        fn pre_visit_query(&mut self, q: &Query) -> ControlFlow<()> {
            if let Some(with) = &q.with {
                for cte in &with.cte_tables {
                    self.0.insert(crate::names::ident(&cte.alias.name));
                }
            }
            ControlFlow::Continue(())
        }
    }
    let mut ctes = Ctes(BTreeSet::new());
    let _ = ast::Visit::visit(stmt, &mut ctes);
    ctes.0
}

struct Expander<'a> {
    state: &'a ClusterState,
    shadowed: BTreeSet<String>,
    expanded: bool,
    error: Option<Error>,
}

impl VisitorMut for Expander<'_> {
    type Break = ();

    fn pre_visit_table_factor(&mut self, factor: &mut TableFactor) -> ControlFlow<()> {
        let TableFactor::Table {
            name,
            alias,
            args: None,
            ..
        } = factor
        else {
            return ControlFlow::Continue(());
        };
        let view_name = table_name(name);
        if self.shadowed.contains(&view_name) || name.0.len() > 2 {
            return ControlFlow::Continue(());
        }
        let Some(view) = self.state.views.get(&view_name) else {
            return ControlFlow::Continue(());
        };
        let query = match parse_query(&view.query) {
            Ok(q) => q,
            Err(e) => {
                self.error = Some(e);
                return ControlFlow::Break(());
            }
        };
        let alias = match alias.take() {
            Some(a) if !a.columns.is_empty() => a,
            Some(a) => TableAlias {
                columns: column_aliases(view),
                ..a
            },
            None => TableAlias {
                explicit: true,
                name: Ident::new(&view.name),
                columns: column_aliases(view),
                at: None,
            },
        };
        *factor = TableFactor::Derived {
            lateral: false,
            subquery: Box::new(query),
            alias: Some(alias),
            sample: None,
        };
        self.expanded = true;
        ControlFlow::Continue(())
    }
}

fn column_aliases(view: &ViewInfo) -> Vec<TableAliasColumnDef> {
    view.columns
        .iter()
        .map(|c| TableAliasColumnDef {
            name: Ident::with_quote('"', &c.name),
            data_type: None,
        })
        .collect()
}

pub fn parse_query(sql: &str) -> Result<Query> {
    match engine::sql::parse(sql)?.pop() {
        Some(Statement::Query(q)) => Ok(*q),
        _ => Err(Error::internal(format!(
            "a view's query does not parse: {sql}"
        ))),
    }
}

/// INSERT, UPDATE and DELETE whose target is a view.
fn refuse_writes(stmt: &Statement, state: &ClusterState) -> Result<()> {
    let (verb, target): (&str, Option<&ObjectName>) = match stmt {
        Statement::Insert(i) => match &i.table {
            ast::TableObject::TableName(n) => ("insert into", Some(n)),
            _ => ("insert into", None),
        },
        Statement::Update(u) => match &u.table.relation {
            TableFactor::Table { name, .. } => ("update", Some(name)),
            _ => ("update", None),
        },
        Statement::Delete(d) => {
            let tables = match &d.from {
                ast::FromTable::WithFromKeyword(t) | ast::FromTable::WithoutKeyword(t) => t,
            };
            match tables.first().map(|t| &t.relation) {
                Some(TableFactor::Table { name, .. }) => ("delete from", Some(name)),
                _ => ("delete from", None),
            }
        }
        _ => return Ok(()),
    };
    let Some(name) = target.map(table_name) else {
        return Ok(());
    };
    if state.views.contains_key(&name) {
        return Err(Error::new(
            sqlstate::OBJECT_NOT_IN_PREREQUISITE_STATE,
            format!("cannot {verb} view \"{name}\""),
        )
        .with_detail("Tessera views are read-only: write to the tables the view reads."));
    }
    Ok(())
}

/// The tables and views a query reads (excluding its own CTE names).
pub fn dependencies(query: &Query, state: &ClusterState) -> Vec<String> {
    let stmt = Statement::Query(Box::new(query.clone()));
    let shadowed = cte_names(&stmt);
    let mut out: Vec<String> = crate::plan::relations(&stmt)
        .into_iter()
        .filter(|r| !shadowed.contains(r))
        .filter(|r| state.tables.contains_key(r) || state.views.contains_key(r))
        .collect();
    out.sort();
    out.dedup();
    out
}

/// The columns CREATE VIEW declares: the column list's names over the query's columns.
pub fn view_columns(
    name: &str,
    declared: &[ast::ViewColumnDef],
    query_columns: Vec<ResultColumn>,
) -> Result<Vec<ResultColumn>> {
    if declared.len() > query_columns.len() {
        return Err(Error::syntax(
            "CREATE VIEW specifies more column names than columns",
        ));
    }
    let mut columns = query_columns;
    for (c, d) in columns.iter_mut().zip(declared) {
        c.name = crate::names::ident(&d.name);
    }
    for (i, c) in columns.iter().enumerate() {
        if columns[..i].iter().any(|o| o.name == c.name) {
            return Err(Error::new(
                sqlstate::DUPLICATE_COLUMN,
                format!("column \"{}\" specified more than once", c.name),
            ));
        }
    }
    let _ = name;
    Ok(columns)
}

/// CREATE OR REPLACE VIEW may only add columns at the end, as in PostgreSQL.
pub fn check_replacement(old: &ViewInfo, new: &[ResultColumn]) -> Result<()> {
    if new.len() < old.columns.len() {
        return Err(Error::new(
            sqlstate::INVALID_TABLE_DEFINITION,
            "cannot drop columns from view",
        ));
    }
    for (o, n) in old.columns.iter().zip(new) {
        if o.name != n.name {
            return Err(Error::new(
                sqlstate::INVALID_TABLE_DEFINITION,
                format!(
                    "cannot change name of view column \"{}\" to \"{}\"",
                    o.name, n.name
                ),
            ));
        }
        if o.data_type != n.data_type {
            return Err(Error::new(
                sqlstate::INVALID_TABLE_DEFINITION,
                format!(
                    "cannot change data type of view column \"{}\" from {} to {}",
                    o.name,
                    o.data_type.name(),
                    n.data_type.name()
                ),
            ));
        }
    }
    Ok(())
}
