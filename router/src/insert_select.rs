//! INSERT … SELECT into a table spread over several shards.
//!
//! ```text
//!  INSERT INTO t (a, b) SELECT x, y FROM u WHERE …
//!    ─► run the SELECT like any query (any shards, joins, aggregates), in the transaction
//!    ─► INSERT INTO t (a, b) VALUES ($1, $2), … in batches, each split by shard
//!    ─► one transaction for all of it: the statement applies whole or not at all
//! ```
//! The rows pass through the router, bounded by the router's row budget like any gathered
//! result; a SELECT over the target table reads it before the first row is written, as in
//! PostgreSQL.

use protocol::Value;
use protocol::cluster::ClusterState;
use protocol::error::{Error, Result, sqlstate};
use protocol::schema::QueryResult;
use sqlparser::ast::{self, SetExpr, Statement};

use crate::dispatch::Router;
use crate::names::table_name;
use crate::session::SessionTxn;

/// Rows per VALUES batch sent through the insert path.
const BATCH_ROWS: usize = 500;

/// Whether `insert` reads its rows from a query and writes a table of several shards, or
/// reads anything but tables of its target's one-shard keyspace (that shard runs
/// INSERT … SELECT itself only when it holds everything the query reads).
pub fn runs_at_router(state: &ClusterState, insert: &ast::Insert) -> bool {
    let Some(source) = insert.source.as_deref() else {
        return false;
    };
    if matches!(source.body.as_ref(), SetExpr::Values(_)) && source.with.is_none() {
        return false;
    }
    let ast::TableObject::TableName(name) = &insert.table else {
        return false;
    };
    let Some(target) = state.tables.get(&table_name(name)) else {
        return false;
    };
    if state.keyspace_shards(&target.keyspace).len() > 1 {
        return true;
    }
    // Another keyspace's tables, system views and catalogs are not on the target's shard.
    let query = Statement::Query(Box::new(source.clone()));
    let ctes = crate::views::cte_names(&query);
    crate::plan::relations(&query)
        .iter()
        .filter(|r| !ctes.contains(*r))
        .any(|r| {
            state
                .tables
                .get(r)
                .is_none_or(|t| t.keyspace != target.keyspace)
        })
}

impl Router {
    /// Runs INSERT … SELECT: in the client's transaction, or in its own.
    pub(crate) async fn insert_select(
        &self,
        insert: &ast::Insert,
        params: &[Value],
        txn: Option<&mut SessionTxn>,
    ) -> Result<QueryResult> {
        if let Some(t) = txn {
            return self.insert_select_in(insert, params, t).await;
        }
        let mut own = SessionTxn::implicit(crate::dispatch::lock_timeout_ms());
        match self.insert_select_in(insert, params, &mut own).await {
            Ok(result) => {
                self.end_transaction(&own, true).await?;
                Ok(result)
            }
            Err(e) => {
                let _ = self.end_transaction(&own, false).await;
                Err(e)
            }
        }
    }

    async fn insert_select_in(
        &self,
        insert: &ast::Insert,
        params: &[Value],
        txn: &mut SessionTxn,
    ) -> Result<QueryResult> {
        let source = insert
            .source
            .clone()
            .ok_or_else(|| Error::internal("INSERT … SELECT without a query"))?;
        let rows = Box::pin(self.execute(&Statement::Query(source), params, Some(txn))).await?;
        let width = rows.columns.len();
        let state = self.meta.state();
        let target_width = match &insert.table {
            ast::TableObject::TableName(name) if insert.columns.is_empty() => state
                .tables
                .get(&table_name(name))
                .map_or(width, |t| t.schema.user_columns().count()),
            _ => insert.columns.len(),
        };
        if width > target_width {
            return Err(Error::new(
                sqlstate::SYNTAX_ERROR,
                "INSERT has more expressions than target columns",
            ));
        }
        let mut total = QueryResult::command("INSERT", 0);
        for chunk in rows.rows.chunks(BATCH_ROWS) {
            let mut n = 0;
            let values = chunk
                .iter()
                .map(|row| {
                    ast::Parens::with_empty_span(
                        row.iter()
                            .map(|_| {
                                n += 1;
                                ast::Expr::value(ast::Value::Placeholder(format!("${n}")))
                            })
                            .collect(),
                    )
                })
                .collect();
            let mut batch = insert.clone();
            batch.source = Some(Box::new(ast::Query {
                body: Box::new(SetExpr::Values(ast::Values {
                    explicit_row: false,
                    value_keyword: false,
                    rows: values,
                })),
                ..crate::sequences::empty_query()
            }));
            let flat: Vec<Value> = chunk.iter().flatten().cloned().collect();
            let r = Box::pin(self.execute(&Statement::Insert(batch), &flat, Some(txn))).await?;
            total.affected += r.affected;
            if total.columns.is_empty() {
                total.columns = r.columns;
            }
            total.rows.extend(r.rows);
        }
        total.tag = "INSERT".into();
        Ok(total)
    }
}
