//! Runs plans: sends each piece to its shard's primary and combines what comes back.
//!
//! ```text
//!  Plan::Direct/Split ─► Execute on each target (concurrently) ─► concatenate, sum counts
//!  Plan::Gather       ─► fetch rows (concurrently) ─► MemTables ─► engine executor at router
//!  Plan::Local        ─► system views ─► MemTables ─► engine executor at router
//!  Plan::CreateTable  ─► meta (Raft) ─► every shard of the keyspace
//! ```
//! A node that answers "not primary in this epoch" means our map is stale: wait for meta's
//! next version and plan again, once.

use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Duration;

use protocol::cluster::MetaCommand;
use protocol::error::{Error, Result, sqlstate};
use protocol::message::{Request, Response};
use protocol::rpc::Pool;
use protocol::schema::{QueryResult, ResultColumn};
use protocol::{DataType, Value};
use replication::meta::MetaClient;
use sqlparser::ast::{self, Ident, ObjectName, Statement};

use crate::memtxn::MemTables;
use crate::names::table_name;
use crate::plan::{Plan, Planner, Target};
use crate::status;

pub struct Router {
    pub meta: MetaClient,
    pub pool: Pool,
    pub row_budget: usize,
}

impl Router {
    pub fn new(meta: MetaClient, pool: Pool, row_budget: usize) -> Arc<Self> {
        Arc::new(Router {
            meta,
            pool,
            row_budget,
        })
    }

    /// Plans and runs one statement.
    pub async fn execute(&self, stmt: &Statement, params: &[Value]) -> Result<QueryResult> {
        if let Statement::Explain {
            statement,
            analyze: false,
            ..
        } = stmt
        {
            let state = self.meta.state();
            let plan = Planner::new(&state, params).plan(statement)?;
            let lines = plan.explain();
            return Ok(QueryResult {
                columns: vec![ResultColumn {
                    name: "QUERY PLAN".into(),
                    data_type: DataType::Text,
                }],
                affected: lines.len() as u64,
                rows: lines.into_iter().map(|l| vec![Value::Text(l)]).collect(),
                tag: "EXPLAIN".into(),
            });
        }
        let mut retried = false;
        loop {
            let state = self.meta.state();
            let plan = Planner::new(&state, params).plan(stmt)?;
            match self.run(plan, params).await {
                Err(e) if is_stale_route(&e) && !retried => {
                    retried = true;
                    let _ = self
                        .meta
                        .wait_for_version(state.version + 1, Duration::from_secs(5))
                        .await;
                }
                other => return other,
            }
        }
    }

    /// Parameter types and result columns of a statement.
    pub async fn describe(&self, stmt: &Statement) -> Result<(Vec<DataType>, Vec<ResultColumn>)> {
        if let Statement::Explain { .. } = stmt {
            return Ok((
                Vec::new(),
                vec![ResultColumn {
                    name: "QUERY PLAN".into(),
                    data_type: DataType::Text,
                }],
            ));
        }
        let state = self.meta.state();
        // Planning with no parameter values cannot prune; any shard's catalog describes.
        let plan = Planner::new(&state, &[]).plan(stmt);
        match plan {
            Ok(Plan::Local { stmt, views }) => {
                let (mem, stmt) = self.local_tables(&stmt, &views, false).await?;
                engine::sql::describe(&stmt, &mem)
            }
            Ok(Plan::Gather { tables, stmt, .. }) => {
                let mut mem = MemTables::new(self.row_budget);
                for t in tables {
                    mem.add_table(t);
                }
                engine::sql::describe(&canonical_names(&stmt), &mem)
            }
            Ok(Plan::Direct { targets, .. })
            | Ok(Plan::CreateTable { targets, .. })
            | Ok(Plan::DropTable { targets, .. })
                if !targets.is_empty() =>
            {
                self.describe_on(&targets[0], stmt).await
            }
            Ok(Plan::Split { parts }) if !parts.is_empty() => {
                self.describe_on(&parts[0].0, stmt).await
            }
            Ok(_) => Ok((Vec::new(), Vec::new())),
            Err(e) if e.code == sqlstate::UNDEFINED_PARAMETER => Ok((Vec::new(), Vec::new())),
            Err(e) => Err(e),
        }
    }

    async fn describe_on(
        &self,
        target: &Target,
        stmt: &Statement,
    ) -> Result<(Vec<DataType>, Vec<ResultColumn>)> {
        match self
            .pool
            .call(
                &target.addr,
                Request::Describe {
                    shard: target.shard,
                    sql: stmt.to_string(),
                },
            )
            .await?
        {
            Response::Described { params, columns } => Ok((params, columns)),
            other => Err(Error::protocol(format!(
                "unexpected answer to Describe: {other:?}"
            ))),
        }
    }

    async fn send(&self, target: &Target, sql: String, params: &[Value]) -> Result<QueryResult> {
        let req = Request::Execute {
            shard: target.shard,
            epoch: target.epoch,
            sql,
            params: params.to_vec(),
        };
        match self.pool.call(&target.addr, req).await? {
            Response::Result(r) => Ok(r),
            other => Err(Error::protocol(format!(
                "unexpected answer to Execute: {other:?}"
            ))),
        }
    }

    async fn run(&self, plan: Plan, params: &[Value]) -> Result<QueryResult> {
        match plan {
            Plan::Direct { targets, sql } => {
                let calls = targets.iter().map(|t| self.send(t, sql.clone(), params));
                concat(futures::future::join_all(calls).await)
            }
            Plan::Split { parts } => {
                let calls = parts
                    .iter()
                    .map(|(t, sql)| self.send(t, sql.clone(), params));
                concat(futures::future::join_all(calls).await)
            }
            Plan::Gather {
                fetches,
                tables,
                stmt,
            } => {
                let calls = fetches
                    .iter()
                    .map(|f| self.send(&f.target, f.sql.clone(), params));
                let results = futures::future::join_all(calls).await;
                let mut mem = MemTables::new(self.row_budget);
                for t in tables {
                    mem.add_table(t);
                }
                for (fetch, result) in fetches.iter().zip(results) {
                    mem.add_rows(&fetch.table, result?.rows)?;
                }
                mem.seal();
                let stmt = canonical_names(&stmt);
                let params = params.to_vec();
                tokio::task::spawn_blocking(move || engine::sql::query(&stmt, &params, &mem))
                    .await
                    .map_err(|e| Error::internal(format!("router executor failed: {e}")))?
            }
            Plan::Local { stmt, views } => {
                let (mem, stmt) = self.local_tables(&stmt, &views, true).await?;
                engine::sql::query(&stmt, params, &mem)
            }
            Plan::CreateTable {
                info,
                if_not_exists,
                sql,
                targets,
            } => {
                match self.meta.propose(MetaCommand::CreateTable(info)).await {
                    Ok(_) => {}
                    Err(e) if e.code == sqlstate::DUPLICATE_TABLE && if_not_exists => {
                        return Ok(QueryResult::command("CREATE TABLE", 0));
                    }
                    Err(e) => return Err(e),
                }
                let calls = targets.iter().map(|t| self.send(t, sql.clone(), &[]));
                for r in futures::future::join_all(calls).await {
                    r?;
                }
                Ok(QueryResult::command("CREATE TABLE", 0))
            }
            Plan::DropTable {
                names,
                if_exists,
                targets,
            } => {
                for name in &names {
                    match self
                        .meta
                        .propose(MetaCommand::DropTable { name: name.clone() })
                        .await
                    {
                        Ok(_) => {}
                        Err(_) if if_exists => {}
                        Err(e) => return Err(e),
                    }
                }
                let sql = format!("DROP TABLE IF EXISTS {}", names.join(", "));
                let calls = targets.iter().map(|t| self.send(t, sql.clone(), &[]));
                for r in futures::future::join_all(calls).await {
                    r?;
                }
                Ok(QueryResult::command("DROP TABLE", 0))
            }
        }
    }

    /// Materialises the system views a statement reads.
    async fn local_tables(
        &self,
        stmt: &Statement,
        views: &[String],
        with_rows: bool,
    ) -> Result<(MemTables, Statement)> {
        let state = self.meta.state();
        let live = if with_rows && views.iter().any(|v| v != "tessera.nodes") {
            status::collect(&state, &self.pool).await
        } else {
            Vec::new()
        };
        let mut mem = MemTables::new(self.row_budget);
        for view in views {
            let (schema, rows) = match view.as_str() {
                "tessera.nodes" => status::nodes_view(&state),
                "tessera.shards" => status::shards_view(&live),
                "tessera.replication" => status::replication_view(&live),
                other => return Err(Error::undefined_table(other)),
            };
            mem.add_table(schema);
            if with_rows {
                mem.add_rows(view, rows)?;
            }
        }
        mem.seal();
        Ok((mem, canonical_names(stmt)))
    }
}

/// Rewrites every table reference to its canonical name as one quoted identifier, so the
/// executor resolves `public.t`, `T` and `tessera.shards` exactly as the planner did.
fn canonical_names(stmt: &Statement) -> Statement {
    let mut stmt = stmt.clone();
    let _ = ast::visit_relations_mut(&mut stmt, |name| {
        let canonical = table_name(name);
        *name = ObjectName::from(vec![Ident::with_quote('"', canonical)]);
        ControlFlow::<()>::Continue(())
    });
    stmt
}

fn is_stale_route(e: &Error) -> bool {
    // Only this refusal proves the statement did not run; a lost connection leaves a write's
    // outcome unknown, so it is never retried blindly.
    e.code == sqlstate::READ_ONLY_SQL_TRANSACTION && e.message.contains("is not primary in epoch")
}

/// Combines per-shard results: rows in shard order, counts summed; the first error wins.
fn concat(results: Vec<Result<QueryResult>>) -> Result<QueryResult> {
    let mut out: Option<QueryResult> = None;
    for r in results {
        let r = r?;
        match out.as_mut() {
            None => out = Some(r),
            Some(acc) => {
                acc.affected += r.affected;
                acc.rows.extend(r.rows);
            }
        }
    }
    out.ok_or_else(|| Error::internal("statement reached no shard"))
}
