//! Operator functions callable over SQL, so an operator with only psql can run them:
//!
//! ```text
//!  SELECT tessera.rebalance();               -- plan, queue and start moves; one row per move
//!  SELECT tessera.rebalance('keyspace');     -- the same for one keyspace
//!  SELECT tessera.rebalance_plan();          -- the plan only (dry run)
//!  SELECT tessera.drain_node(2);             -- mark node 2 draining, queue moves off it
//!  SELECT tessera.add_node(3, '10.0.0.3:7003');
//!  SELECT tessera.remove_node(2);            -- once it holds nothing
//!  SELECT tessera.split_shard(0);            -- halve shard 0's hash range into a new shard
//!  SELECT tessera.wait_for_jobs(600);        -- until every move ended (seconds to wait)
//!  SELECT tessera.cancel_job(7);             -- roll a running move back
//!  SELECT * FROM tessera.jobs;               -- moves and their progress (a system view)
//! ```
//! Each is a whole `SELECT` of one call with constant arguments (or bound parameters); they
//! change the cluster, so like VACUUM they refuse to run inside a transaction block (25001).

use std::time::Duration;

use protocol::error::{Error, Result, sqlstate};
use protocol::schema::{QueryResult, ResultColumn};
use protocol::{DataType, Value};
use replication::operations;
use sqlparser::ast::{
    self, Expr, FunctionArg, FunctionArgExpr, FunctionArguments, SelectItem, SetExpr, Statement,
};

use crate::dispatch::Router;

/// One operator function call.
#[derive(Debug, PartialEq)]
pub struct AdminCall {
    pub name: String,
    pub args: Vec<Value>,
    /// The highest `$n` among the arguments (for Describe: all are declared text).
    pub params: usize,
}

const FUNCTIONS: &[&str] = &[
    "rebalance",
    "rebalance_plan",
    "drain_node",
    "add_node",
    "remove_node",
    "wait_for_jobs",
    "split_shard",
    "cancel_job",
];

/// The call `stmt` makes, if it is `SELECT tessera.<function>(args)` and nothing else.
pub fn parse(stmt: &Statement, params: &[Value]) -> Option<Result<AdminCall>> {
    let Statement::Query(q) = stmt else {
        return None;
    };
    let SetExpr::Select(select) = q.body.as_ref() else {
        return None;
    };
    if !select.from.is_empty() || select.projection.len() != 1 {
        return None;
    }
    let expr = match &select.projection[0] {
        SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => e,
        _ => return None,
    };
    let Expr::Function(f) = expr else {
        return None;
    };
    let parts: Vec<String> = f
        .name
        .0
        .iter()
        .filter_map(|p| p.as_ident().map(|i| i.value.to_lowercase()))
        .collect();
    let [schema, name] = parts.as_slice() else {
        return None;
    };
    if schema != "tessera" {
        return None;
    }
    if !FUNCTIONS.contains(&name.as_str()) {
        return Some(Err(Error::new(
            sqlstate::UNDEFINED_FUNCTION,
            format!("function tessera.{name} does not exist"),
        )));
    }
    let mut max_param = 0;
    let args = match &f.args {
        FunctionArguments::None => Vec::new(),
        FunctionArguments::List(list) => {
            let mut out = Vec::new();
            for a in &list.args {
                if let FunctionArg::Unnamed(FunctionArgExpr::Expr(Expr::Value(v))) = a
                    && let ast::Value::Placeholder(p) = &v.value
                    && let Ok(i) = p.trim_start_matches('$').parse::<usize>()
                {
                    max_param = max_param.max(i);
                }
            }
            for a in &list.args {
                let FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) = a else {
                    return Some(Err(Error::syntax(format!(
                        "tessera.{name} takes positional arguments"
                    ))));
                };
                match constant(e, params) {
                    Ok(v) => out.push(v),
                    Err(e) => return Some(Err(e)),
                }
            }
            out
        }
        FunctionArguments::Subquery(_) => {
            return Some(Err(Error::syntax(format!(
                "tessera.{name} takes constant arguments"
            ))));
        }
    };
    Some(Ok(AdminCall {
        name: name.clone(),
        args,
        params: max_param,
    }))
}

fn constant(e: &Expr, params: &[Value]) -> Result<Value> {
    match e {
        Expr::Value(v) => match &v.value {
            ast::Value::Number(n, _) => n.parse::<i64>().map(Value::Int).map_err(|_| {
                Error::new(
                    sqlstate::INVALID_PARAMETER_VALUE,
                    format!("invalid number {n}"),
                )
            }),
            ast::Value::SingleQuotedString(s) => Ok(Value::Text(s.clone())),
            ast::Value::Placeholder(p) => {
                let i: usize = p
                    .trim_start_matches('$')
                    .parse()
                    .map_err(|_| Error::syntax(format!("bad parameter {p}")))?;
                // Describe passes no values: the argument is then unknown (NULL).
                Ok(params
                    .get(i.wrapping_sub(1))
                    .cloned()
                    .unwrap_or(Value::Null))
            }
            ast::Value::Null => Ok(Value::Null),
            other => Err(Error::new(
                sqlstate::INVALID_PARAMETER_VALUE,
                format!("unsupported argument {other}"),
            )),
        },
        Expr::Cast { expr, .. } | Expr::Nested(expr) => constant(expr, params),
        other => Err(Error::new(
            sqlstate::INVALID_PARAMETER_VALUE,
            format!("tessera functions take constant arguments, not {other}"),
        )),
    }
}

/// The single text column every operator function returns.
pub fn columns(call: &AdminCall) -> Vec<ResultColumn> {
    vec![ResultColumn {
        name: call.name.clone(),
        data_type: DataType::Text,
    }]
}

fn int_arg(call: &AdminCall, i: usize, what: &str) -> Result<i64> {
    match call.args.get(i) {
        Some(Value::Int(n)) => Ok(*n),
        Some(Value::Text(t)) => t.trim().parse().map_err(|_| bad_arg(call, what)),
        _ => Err(bad_arg(call, what)),
    }
}

fn text_arg(call: &AdminCall, i: usize) -> Option<String> {
    match call.args.get(i) {
        Some(Value::Text(t)) => Some(t.clone()),
        Some(Value::Int(n)) => Some(n.to_string()),
        _ => None,
    }
}

fn bad_arg(call: &AdminCall, what: &str) -> Error {
    Error::new(
        sqlstate::INVALID_PARAMETER_VALUE,
        format!("tessera.{}: {what} expected", call.name),
    )
}

fn node_id(call: &AdminCall) -> Result<u64> {
    let n = int_arg(call, 0, "a node id")?;
    u64::try_from(n).map_err(|_| bad_arg(call, "a node id"))
}

impl Router {
    /// Runs an operator function and returns its lines as rows.
    pub async fn admin(&self, call: &AdminCall) -> Result<QueryResult> {
        let lines: Vec<String> = match call.name.as_str() {
            "rebalance" | "rebalance_plan" => {
                let keyspace = text_arg(call, 0);
                let dry_run = call.name == "rebalance_plan";
                let moves =
                    operations::rebalance(&self.meta, &self.pool, keyspace.as_deref(), dry_run)
                        .await?;
                let state = self.meta.state();
                if moves.is_empty() {
                    vec!["balanced: nothing to move".to_string()]
                } else {
                    moves
                        .iter()
                        .map(|m| {
                            let text = operations::describe(m, &state);
                            if dry_run {
                                text
                            } else {
                                format!("job {}: {text}", m.id)
                            }
                        })
                        .collect()
                }
            }
            "drain_node" => {
                let node = node_id(call)?;
                let moves = operations::drain_node(&self.meta, &self.pool, node, false).await?;
                let state = self.meta.state();
                let mut lines = vec![format!(
                    "node {node} is draining: {} moves queued",
                    moves.len()
                )];
                lines.extend(
                    moves
                        .iter()
                        .map(|m| format!("job {}: {}", m.id, operations::describe(m, &state))),
                );
                lines
            }
            "add_node" => {
                let node = node_id(call)?;
                let addr =
                    text_arg(call, 1).ok_or_else(|| bad_arg(call, "an address host:port"))?;
                operations::add_node(&self.meta, node, &addr).await?;
                vec![format!("node {node} registered at {addr}")]
            }
            "remove_node" => {
                let node = node_id(call)?;
                operations::remove_node(&self.meta, node).await?;
                vec![format!("node {node} removed")]
            }
            "split_shard" => {
                let shard = int_arg(call, 0, "a shard id")?;
                let shard = u32::try_from(shard).map_err(|_| bad_arg(call, "a shard id"))?;
                let to = match call.args.get(1) {
                    None | Some(Value::Null) => None,
                    Some(_) => Some(
                        u64::try_from(int_arg(call, 1, "a node id")?)
                            .map_err(|_| bad_arg(call, "a node id"))?,
                    ),
                };
                let job = operations::split(&self.meta, shard, to).await?;
                let state = self.meta.state();
                vec![format!(
                    "job {}: {}",
                    job.id,
                    operations::describe(&job, &state)
                )]
            }
            "cancel_job" => {
                let id = u64::try_from(int_arg(call, 0, "a job id")?)
                    .map_err(|_| bad_arg(call, "a job id"))?;
                operations::cancel_job(&self.meta, id).await?;
                vec![format!("job {id} will roll back")]
            }
            "wait_for_jobs" => {
                let secs = if call.args.is_empty() {
                    600
                } else {
                    int_arg(call, 0, "seconds to wait")?.clamp(0, 86_400)
                };
                self.wait_for_jobs(Duration::from_secs(secs as u64)).await?
            }
            other => {
                return Err(Error::new(
                    sqlstate::UNDEFINED_FUNCTION,
                    format!("function tessera.{other} does not exist"),
                ));
            }
        };
        Ok(QueryResult {
            columns: columns(call),
            affected: lines.len() as u64,
            rows: lines.into_iter().map(|l| vec![Value::Text(l)]).collect(),
            tag: "SELECT".into(),
        })
    }

    async fn wait_for_jobs(&self, wait: Duration) -> Result<Vec<String>> {
        let mut rx = self.meta.subscribe();
        let waited = tokio::time::timeout(wait, async {
            rx.wait_for(|s| s.active_job().is_none()).await.map(|_| ())
        })
        .await;
        let state = self.meta.state();
        match waited {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Err(Error::internal("meta client stopped")),
            Err(_) => {
                return Err(Error::new(
                    sqlstate::QUERY_CANCELED,
                    format!(
                        "shard moves still running after {wait:?}: {}",
                        state
                            .active_job()
                            .map(|j| operations::describe(j, &state))
                            .unwrap_or_default()
                    ),
                ));
            }
        }
        let done = state
            .jobs
            .values()
            .filter(|j| j.phase == protocol::jobs::JobPhase::Done)
            .count();
        let rolled_back = state.jobs.len() - done;
        Ok(vec![format!(
            "no moves running ({done} done, {rolled_back} rolled back in the job history)"
        )])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(sql: &str) -> Option<Result<AdminCall>> {
        let stmt = engine::sql::parse(sql).unwrap().remove(0);
        parse(&stmt, &[Value::Int(7)])
    }

    #[test]
    fn recognises_only_whole_calls() {
        assert_eq!(
            call("SELECT tessera.rebalance()").unwrap().unwrap(),
            AdminCall {
                name: "rebalance".into(),
                args: vec![],
                params: 0,
            }
        );
        assert_eq!(
            call("select TESSERA.drain_node($1)").unwrap().unwrap().args,
            vec![Value::Int(7)]
        );
        assert_eq!(
            call("SELECT tessera.add_node(3, '127.0.0.1:9')")
                .unwrap()
                .unwrap()
                .args,
            vec![Value::Int(3), Value::Text("127.0.0.1:9".into())]
        );
        assert!(call("SELECT tessera.rebalance() FROM t").is_none());
        assert!(call("SELECT lower('x')").is_none());
        assert!(call("SELECT tessera.nope()").unwrap().is_err());
        assert!(call("SELECT tessera.drain_node(a + 1)").unwrap().is_err());
    }
}
