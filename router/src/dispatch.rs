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

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Duration;

use protocol::cluster::MetaCommand;
use protocol::error::{Error, Result, sqlstate};
use protocol::message::{Request, Response, TxnSpec};
use protocol::rpc::Pool;
use protocol::schema::{QueryResult, ResultColumn};
use protocol::{DataType, Value};

use crate::route_cache::RouteCache;
use replication::meta::MetaClient;
use sqlparser::ast::{self, Ident, ObjectName, Statement};

use crate::memtxn::MemTables;
use crate::names::table_name;
use crate::plan::{Combine, Plan, Planner, Target};
use crate::session::SessionTxn;
use crate::status;

tokio::task_local! {
    /// The session's statement_timeout for the statement being run (set by the frontend).
    pub static STATEMENT_TIMEOUT_MS: u64;
    /// The session's lock_timeout for the statement being run (set by the frontend).
    pub static LOCK_TIMEOUT_MS: u64;
}

/// The running statement's lock_timeout (see `LOCK_TIMEOUT_MS`); 0 outside one.
pub fn lock_timeout_ms() -> u64 {
    LOCK_TIMEOUT_MS.try_with(|t| *t).unwrap_or(0)
}

pub struct Router {
    pub meta: MetaClient,
    pub pool: Pool,
    pub row_budget: usize,
    pub sequences: crate::sequences::SequenceCache,
    /// Simple-protocol statements run as a shape their session had learned
    /// (`crate::shapes`); tests read it to see that the shortcut is taken.
    pub shaped_runs: std::sync::atomic::AtomicU64,
}

impl Router {
    pub fn new(meta: MetaClient, pool: Pool, row_budget: usize) -> Arc<Self> {
        Arc::new(Router {
            meta,
            pool,
            row_budget,
            sequences: Default::default(),
            shaped_runs: Default::default(),
        })
    }

    /// Plans and runs one statement, inside the session's transaction if it has one.
    pub async fn execute(
        &self,
        stmt: &Statement,
        params: &[Value],
        txn: Option<&mut SessionTxn>,
    ) -> Result<QueryResult> {
        // Boxed once here: the statement's whole state machine lives on the heap, so callers
        // (the frontend's several paths, SQL-level EXECUTE) keep small futures on the stack.
        Box::pin(self.execute_boxed(stmt, params, txn, None)).await
    }

    /// [`Router::execute`] for an execution of a prepared statement: by the route it remembers
    /// while that holds (`crate::route_cache`), else planned in full and the route remembered
    /// when it is one shard chosen by one parameter. `route` `None` is `execute`. Only a
    /// statement that calls no function has a route: a call may be rewritten before planning
    /// (`nextval`, `tessera.*`, the session's `current_setting`) in ways the route would keep.
    pub async fn execute_with(
        &self,
        stmt: &Statement,
        params: &[Value],
        txn: Option<&mut SessionTxn>,
        route: Option<&RouteCache>,
    ) -> Result<QueryResult> {
        Box::pin(self.execute_boxed(stmt, params, txn, route)).await
    }

    async fn execute_boxed(
        &self,
        stmt: &Statement,
        params: &[Value],
        mut txn: Option<&mut SessionTxn>,
        route: Option<&RouteCache>,
    ) -> Result<QueryResult> {
        debug_assert!(
            route.is_none() || !calls_functions(stmt),
            "a route for a statement that calls functions"
        );
        let remembered = route.and_then(|r| {
            let state = self.meta.state();
            r.plan(&state, params).map(|plan| (plan, state.version))
        });
        if let Some((plan, version)) = remembered {
            if let Some(t) = txn.as_deref_mut() {
                admit(&plan, t)?;
            }
            match self.run(plan, params, txn.as_deref().map(|t| t.spec)).await {
                // Refused before it ran: plan in full below (which may retry once more).
                Err(e) if is_stale_route(&e) => {
                    let _ = self
                        .meta
                        .wait_for_version(version + 1, Duration::from_secs(5))
                        .await;
                }
                Err(e) if is_resplit(&e) && txn.is_none() => {}
                other => return other,
            }
        }
        // The route may be remembered only if nothing before planning changed the statement.
        let mut rememberable = route.is_some();
        if let Some(result) = Box::pin(self.view_ddl(stmt, txn.is_some())).await? {
            return Ok(result);
        }
        // Statements kept across an await are boxed: a `Statement` is 3.5 KB, and each one
        // held in place would grow this future (see `prepare_sequences` below).
        let expanded: Box<Statement>;
        let stmt = match crate::views::expand(stmt, &self.meta.state())? {
            Some(s) => {
                rememberable = false;
                expanded = Box::new(s);
                &*expanded
            }
            None => stmt,
        };
        let with_functions: Box<Statement>;
        let stmt = match crate::table_functions::expand(stmt) {
            Some(s) => {
                rememberable = false;
                with_functions = Box::new(s);
                &*with_functions
            }
            None => stmt,
        };
        if let Statement::Explain {
            statement,
            analyze: false,
            ..
        } = stmt
        {
            let state = self.meta.state();
            let lines = match statement.as_ref() {
                Statement::Insert(insert)
                    if crate::insert_select::runs_at_router(&state, insert) =>
                {
                    let query = Statement::Query(
                        insert
                            .source
                            .clone()
                            .ok_or_else(|| Error::internal("INSERT … SELECT without a query"))?,
                    );
                    let mut lines = vec![
                        "Router: run the query below, then insert its rows in VALUES batches split by shard, in one transaction".to_string(),
                    ];
                    lines.extend(
                        Planner::new(&state, params)
                            .plan(&query)?
                            .explain()
                            .into_iter()
                            .map(|l| format!("  {l}")),
                    );
                    lines
                }
                _ => {
                    let plan = Planner::new(&state, params).plan(statement)?;
                    let mut lines = plan.explain();
                    lines.extend(Box::pin(self.explain_below(&plan, params)).await?);
                    lines
                }
            };
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
        if let Some(call) = crate::admin::parse(stmt, params) {
            let call = call?;
            if txn.is_some() {
                return Err(Error::new(
                    sqlstate::ACTIVE_SQL_TRANSACTION,
                    format!(
                        "tessera.{} cannot run inside a transaction block",
                        call.name
                    ),
                ));
            }
            if !crate::catalog::session_is_superuser(&self.meta.state()) {
                return Err(Error::new(
                    sqlstate::INSUFFICIENT_PRIVILEGE,
                    format!("must be superuser to run tessera.{}()", call.name),
                ));
            }
            return Box::pin(self.admin(&call)).await;
        }
        let prepared;
        // Boxed (as the rarer branches below are): a sub-future awaited in place makes this
        // whole state machine as large as the largest one, and every statement moves it onto
        // the heap once (`execute`); kept small, that move is cheap.
        let stmt = match Box::pin(self.prepare_sequences(stmt, params)).await? {
            crate::sequences::Prepared::Done(result) => return Ok(result),
            crate::sequences::Prepared::Rewritten(s) => {
                rememberable = false;
                prepared = s;
                &*prepared
            }
            crate::sequences::Prepared::Unchanged => stmt,
        };
        if let Statement::Insert(insert) = stmt
            && crate::insert_select::runs_at_router(&self.meta.state(), insert)
        {
            return Box::pin(self.insert_select(insert, params, txn)).await;
        }
        if let Statement::Drop {
            object_type: ast::ObjectType::Index,
            names,
            ..
        } = stmt
            && names.len() > 1
            && txn.is_none()
        {
            // Each index changes its own table's definition: one at a time, after checking
            // that every one exists, so a missing name changes nothing.
            let state = self.meta.state();
            for n in names {
                let mut one = stmt.clone();
                if let Statement::Drop { names, .. } = &mut one {
                    *names = vec![n.clone()];
                }
                Planner::new(&state, params).plan(&one)?;
            }
            for n in names {
                let mut one = Box::new(stmt.clone());
                if let Statement::Drop { names, .. } = &mut *one {
                    *names = vec![n.clone()];
                }
                Box::pin(self.execute(&one, params, None)).await?;
            }
            return Ok(QueryResult::command("DROP INDEX", 0));
        }
        let mut retried = false;
        loop {
            let state = self.meta.state();
            let planner = Planner::new(&state, params);
            let plan = planner.plan(stmt)?;
            if rememberable
                && let Some(route) = route
                && let Some((table, n)) = planner.point_param()
            {
                route.remember(&state, params, &table, n, &plan);
            }
            if let Plan::AlterTable {
                tag,
                name,
                info,
                targets,
                sql,
            } = plan
            {
                if let Some(t) = txn.as_deref_mut() {
                    admit(
                        &Plan::AlterTable {
                            tag,
                            name,
                            info,
                            targets,
                            sql,
                        },
                        t,
                    )?;
                    return Err(Error::internal("admit let DDL into a transaction"));
                }
                return match info {
                    Some(info) => Box::pin(self.alter_table(name, *info, targets, sql))
                        .await
                        .map(|_| QueryResult::command(tag, 0)),
                    None => Ok(QueryResult::command(tag, 0)),
                };
            }
            if txn.is_none() && writes_several_shards(&plan) {
                match Box::pin(self.run_atomically(plan, params)).await {
                    // Rolled back everywhere: planning again is safe.
                    Err(e) if is_resplit(&e) && !retried => {
                        retried = true;
                        continue;
                    }
                    other => return other,
                }
            }
            if let Some(t) = txn.as_deref_mut() {
                admit(&plan, t)?;
                if matches!(plan, Plan::MoveUpdate { .. }) {
                    return Box::pin(self.run_move(plan, params, t)).await;
                }
            }
            match self.run(plan, params, txn.as_deref().map(|t| t.spec)).await {
                Err(e) if is_resplit(&e) && !retried && txn.is_none() => {
                    retried = true;
                }
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

    /// The plan trees under a router plan: the first shard's for statements sent whole to
    /// shards, the router's own executor's for gathered rows.
    async fn explain_below(&self, plan: &Plan, params: &[Value]) -> Result<Vec<String>> {
        let tree = |title: String, result: QueryResult| {
            std::iter::once(title)
                .chain(
                    result
                        .rows
                        .into_iter()
                        .filter_map(|r| match r.into_iter().next() {
                            Some(Value::Text(l)) => Some(format!("    {l}")),
                            _ => None,
                        }),
                )
                .collect::<Vec<_>>()
        };
        match plan {
            Plan::Direct { targets, sql } | Plan::Partial { targets, sql, .. } => {
                let Some(t) = targets.first() else {
                    return Ok(Vec::new());
                };
                let explained = self.send(t, format!("EXPLAIN {sql}"), params, None).await?;
                Ok(tree(format!("  plan on shard {}:", t.shard), explained))
            }
            Plan::Gather { tables, stmt, .. } => {
                let mut mem = MemTables::new(self.row_budget);
                for schema in tables {
                    mem.add_table(schema.clone());
                }
                mem.seal();
                let explain = Statement::Explain {
                    describe_alias: ast::DescribeAlias::Explain,
                    analyze: false,
                    verbose: false,
                    query_plan: false,
                    estimate: false,
                    statement: stmt.clone(),
                    format: None,
                    options: None,
                };
                match engine::sql::query(&explain, params, &mem) {
                    Ok(result) => Ok(tree("  router executor plan:".into(), result)),
                    // The router's plan above still stands; its executor tree is a bonus.
                    Err(_) => Ok(Vec::new()),
                }
            }
            _ => Ok(Vec::new()),
        }
    }

    /// CREATE VIEW and DROP VIEW: meta only (`crate::views`); `None` for other statements.
    async fn view_ddl(&self, stmt: &Statement, in_block: bool) -> Result<Option<QueryResult>> {
        match stmt {
            Statement::CreateView(cv) => {
                if in_block {
                    return Err(Error::unsupported(
                        "CREATE VIEW inside a transaction block is not supported; run it outside the block",
                    ));
                }
                if cv.materialized {
                    return Err(Error::unsupported("materialized views are not supported"));
                }
                let name = crate::names::table_name(&cv.name);
                let state = self.meta.state();
                let old = state.views.get(&name).cloned();
                if cv.if_not_exists && state.relation_exists(&name) {
                    return Ok(Some(QueryResult::command("CREATE VIEW", 0)));
                }
                if old.is_none() && state.relation_exists(&name) {
                    return Err(Error::new(
                        sqlstate::DUPLICATE_TABLE,
                        format!("relation \"{name}\" already exists"),
                    ));
                }
                if old.is_some() && !cv.or_replace {
                    return Err(Error::new(
                        sqlstate::DUPLICATE_TABLE,
                        format!("relation \"{name}\" already exists"),
                    ));
                }
                // Describing the query checks it (tables, columns, types) and names its columns.
                let query = Statement::Query(cv.query.clone());
                let (params, columns) = self.describe(&query).await?;
                if !params.is_empty() {
                    return Err(Error::new(
                        sqlstate::UNDEFINED_PARAMETER,
                        "there is no parameter $1",
                    ));
                }
                let columns = crate::views::view_columns(&name, &cv.columns, columns)?;
                if let Some(old) = &old {
                    crate::views::check_replacement(old, &columns)?;
                }
                let depends_on = crate::views::dependencies(&cv.query, &state);
                if depends_on.contains(&name) {
                    return Err(Error::new(
                        sqlstate::INVALID_TABLE_DEFINITION,
                        format!("infinite recursion detected in rules for relation \"{name}\""),
                    ));
                }
                let view = protocol::cluster::ViewInfo {
                    name,
                    query: cv.query.to_string(),
                    columns,
                    depends_on,
                };
                self.meta
                    .propose(MetaCommand::CreateView {
                        view,
                        replace: cv.or_replace,
                    })
                    .await?;
                Ok(Some(QueryResult::command("CREATE VIEW", 0)))
            }
            Statement::Drop {
                object_type: ast::ObjectType::View,
                if_exists,
                names,
                ..
            } => {
                if in_block {
                    return Err(Error::unsupported(
                        "DROP VIEW inside a transaction block is not supported; run it outside the block",
                    ));
                }
                let state = self.meta.state();
                let mut drop = Vec::new();
                for n in names {
                    let name = crate::names::table_name(n);
                    if state.views.contains_key(&name) {
                        drop.push(name);
                    } else if state.relation_exists(&name) {
                        return Err(Error::new(
                            sqlstate::WRONG_OBJECT_TYPE,
                            format!("\"{name}\" is not a view"),
                        ));
                    } else if !*if_exists {
                        return Err(Error::new(
                            sqlstate::UNDEFINED_TABLE,
                            format!("view \"{name}\" does not exist"),
                        ));
                    }
                }
                // Dependents first, when several named views depend on each other.
                drop.sort_by_key(|n| std::cmp::Reverse(state.dependent_views(n).len()));
                let mut pending = drop;
                while !pending.is_empty() {
                    let state = self.meta.state();
                    let Some(pos) = pending.iter().position(|n| {
                        state
                            .dependent_views(n)
                            .iter()
                            .all(|d| !pending.iter().any(|p| p == d))
                    }) else {
                        break;
                    };
                    let name = pending.remove(pos);
                    self.meta.propose(MetaCommand::DropView { name }).await?;
                }
                if let Some(name) = pending.first() {
                    self.meta
                        .propose(MetaCommand::DropView { name: name.clone() })
                        .await?;
                }
                Ok(Some(QueryResult::command("DROP VIEW", 0)))
            }
            _ => Ok(None),
        }
    }

    /// ALTER TABLE: the shards first, all or none (a failure such as a duplicate key under a
    /// new primary key leaves every shard as it was), then meta. Routers learn the new
    /// definition from meta; until then they may plan with the old one, which the shards
    /// refuse or answer consistently, since they already have the new one.
    async fn alter_table(
        &self,
        name: String,
        info: protocol::cluster::TableInfo,
        targets: Vec<Target>,
        sql: String,
    ) -> Result<QueryResult> {
        let direct = Plan::Direct { targets, sql };
        if writes_several_shards(&direct) {
            self.run_atomically(direct, &[]).await?;
        } else {
            self.run(direct, &[], None).await?;
        }
        self.meta
            .propose(MetaCommand::AlterTable { name, table: info })
            .await?;
        Ok(QueryResult::command("ALTER TABLE", 0))
    }

    /// Runs a statement that writes on several shards as its own distributed transaction, so
    /// it applies on all of them or on none (two-phase commit).
    async fn run_atomically(&self, plan: Plan, params: &[Value]) -> Result<QueryResult> {
        let mut txn = SessionTxn::implicit(lock_timeout_ms());
        let spec = txn.spec;
        admit(&plan, &mut txn)?;
        let outcome = match plan {
            Plan::MoveUpdate { .. } => self.run_move(plan, params, &mut txn).await,
            plan => self.run(plan, params, Some(spec)).await,
        };
        match outcome {
            Ok(result) => {
                self.end_transaction(&txn, true).await?;
                Ok(result)
            }
            Err(e) => {
                let _ = self.end_transaction(&txn, false).await;
                Err(e)
            }
        }
    }

    /// Runs an UPDATE that assigns the shard key, inside `txn`: the update itself on its
    /// source shards (returning the new rows), then a delete at the source and an insert at
    /// the new shard for every row whose key now hashes elsewhere. A key that already exists
    /// on the new shard fails the insert with 23505 and so the whole transaction.
    async fn run_move(
        &self,
        plan: Plan,
        params: &[Value],
        txn: &mut SessionTxn,
    ) -> Result<QueryResult> {
        let Plan::MoveUpdate {
            sources,
            sql,
            table,
            shards,
        } = plan
        else {
            return Err(Error::internal("run_move needs a MoveUpdate plan"));
        };
        let spec = Some(txn.spec);
        let schema = &table.schema;
        let key_col = *table
            .shard_key
            .first()
            .ok_or_else(|| Error::internal("table without shard key"))?;
        let key_type = schema.columns[key_col].data_type;
        let name = crate::plan::quote_ident(&schema.name);
        let delete_sql = format!(
            "DELETE FROM {name} WHERE {}",
            schema
                .primary_key
                .iter()
                .enumerate()
                .map(|(i, &c)| format!(
                    "{} = ${}",
                    crate::plan::quote_ident(&schema.columns[c].name),
                    i + 1
                ))
                .collect::<Vec<_>>()
                .join(" AND ")
        );
        // The moved row gets a fresh row id on its new shard, if its table keys rows so.
        let user: Vec<usize> = schema.user_columns().map(|(i, _)| i).collect();
        let insert_sql = format!(
            "INSERT INTO {name} ({}) VALUES ({})",
            user.iter()
                .map(|&i| crate::plan::quote_ident(&schema.columns[i].name))
                .collect::<Vec<_>>()
                .join(", "),
            (1..=user.len())
                .map(|i| format!("${i}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let updates = futures::future::join_all(
            sources
                .iter()
                .map(|t| self.send(t, sql.clone(), params, spec)),
        )
        .await;
        let mut affected = 0;
        let state = self.meta.state();
        for (source, result) in sources.iter().zip(updates) {
            let result = result?;
            affected += result.affected;
            for row in result.rows {
                let key = key_type.coerce(row.get(key_col).cloned().unwrap_or(Value::Null))?;
                let hash = protocol::hash::shard_hash(&key);
                let dest = shards
                    .values()
                    .find(|t| {
                        state
                            .shards
                            .get(&t.shard)
                            .is_some_and(|s| s.range.contains(hash))
                    })
                    .ok_or_else(|| Error::internal("no shard covers the new key"))?;
                if dest.shard == source.shard {
                    continue;
                }
                txn.touched.insert(dest.shard, dest.addr.clone());
                txn.written.insert(dest.shard);
                let pk: Vec<Value> = schema.key_of(&row);
                self.send(source, delete_sql.clone(), &pk, spec).await?;
                let values: Vec<Value> = user
                    .iter()
                    .map(|&i| row.get(i).cloned().unwrap_or(Value::Null))
                    .collect();
                self.send(dest, insert_sql.clone(), &values, spec).await?;
            }
        }
        Ok(QueryResult::command("UPDATE", affected))
    }

    /// Sends a transaction-control statement (SAVEPOINT …) to some of a transaction's shards.
    pub async fn send_to_shards(
        &self,
        txn: &SessionTxn,
        shards: &BTreeMap<u32, String>,
        sql: &str,
    ) -> Result<()> {
        let state = self.meta.state();
        for (shard, addr) in shards {
            let info = state.shards.get(shard);
            let target = Target {
                shard: *shard,
                node: 0,
                addr: self.live_addr(*shard, addr),
                epoch: info.map_or(0, |s| s.epoch),
                range: info.map_or(protocol::hash::HashRange { start: 0, end: 0 }, |s| s.range),
            };
            self.send(&target, sql.to_string(), &[], Some(txn.spec))
                .await?;
        }
        Ok(())
    }

    /// Parameter types and result columns of a statement.
    pub async fn describe(&self, stmt: &Statement) -> Result<(Vec<DataType>, Vec<ResultColumn>)> {
        Box::pin(self.describe_boxed(stmt)).await
    }

    async fn describe_boxed(&self, stmt: &Statement) -> Result<(Vec<DataType>, Vec<ResultColumn>)> {
        if matches!(stmt, Statement::CreateView(_))
            || matches!(
                stmt,
                Statement::Drop {
                    object_type: ast::ObjectType::View,
                    ..
                }
            )
        {
            return Ok((Vec::new(), Vec::new()));
        }
        if let Some(expanded) = crate::views::expand(stmt, &self.meta.state())? {
            return Box::pin(self.describe(&expanded)).await;
        }
        if let Some(expanded) = crate::table_functions::expand(stmt) {
            return Box::pin(self.describe(&expanded)).await;
        }
        if let Some(form) = crate::sequences::describe_form(stmt) {
            return Box::pin(self.describe(&form)).await;
        }
        if let Statement::CreateSequence { .. } = stmt {
            return Ok((Vec::new(), Vec::new()));
        }
        if let Statement::Explain { .. } = stmt {
            return Ok((
                Vec::new(),
                vec![ResultColumn {
                    name: "QUERY PLAN".into(),
                    data_type: DataType::Text,
                }],
            ));
        }
        if let Some(call) = crate::admin::parse(stmt, &[]) {
            let call = call?;
            return Ok((
                vec![DataType::Text; call.params],
                crate::admin::columns(&call),
            ));
        }
        // Every shard of a keyspace holds the catalog of all its tables, so any one of them
        // describes a statement over those tables; no routing (and no parameter value) is
        // needed. System views are described by the router itself.
        let state = self.meta.state();
        let tables = crate::plan::relations(stmt);
        if tables.iter().any(|t| crate::names::is_system(t)) {
            let views: Vec<String> = tables
                .into_iter()
                .filter(|t| crate::names::is_system(t))
                .collect();
            let (mem, stmt) = self.local_tables(stmt, &views, false).await?;
            return engine::sql::describe(&stmt, &mem);
        }
        let keyspaces: std::collections::BTreeSet<&str> = tables
            .iter()
            .filter_map(|t| state.tables.get(t).map(|info| info.keyspace.as_str()))
            .collect();
        if keyspaces.len() > 1 && matches!(stmt, Statement::Query(_) | Statement::Insert(_)) {
            // No shard holds tables of two keyspaces: the router describes the query (or
            // the INSERT … SELECT it runs at the router) over empty copies of them, as it
            // would run it over their gathered rows.
            let mut mem = MemTables::new(self.row_budget);
            for t in &tables {
                if let Some(info) = state.tables.get(t) {
                    mem.add_table(info.schema.clone());
                }
            }
            mem.seal();
            return engine::sql::describe(&canonical_names(stmt), &mem);
        }
        let keyspace = keyspaces
            .first()
            .map(|k| k.to_string())
            .unwrap_or_else(|| protocol::cluster::DEFAULT_KEYSPACE.to_string());
        let shard = state
            .keyspace_shards(&keyspace)
            .first()
            .map(|s| (*s).clone())
            .ok_or_else(|| {
                Error::new(
                    sqlstate::CANNOT_CONNECT_NOW,
                    format!("keyspace \"{keyspace}\" has no shards placed yet"),
                )
            })?;
        let target = crate::plan::target(&state, &shard)?;
        self.describe_on(&target, stmt).await
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

    /// Runs one statement on a shard's primary. A refusal that proves the statement did not
    /// run — the shard is frozen for a move's switch, or the node is no longer its primary in
    /// our epoch — holds the statement here until the map moves on, and sends it again to
    /// the shard's primary then: during a move, clients see a pause, not an error.
    pub(crate) async fn send(
        &self,
        target: &Target,
        sql: String,
        params: &[Value],
        txn: Option<TxnSpec>,
    ) -> Result<QueryResult> {
        let timeout_ms = STATEMENT_TIMEOUT_MS.try_with(|t| *t).unwrap_or(0);
        let lock_timeout_ms = lock_timeout_ms();
        let deadline = tokio::time::Instant::now() + HOLD_WAIT;
        let mut target = target.clone();
        loop {
            let req = Request::Execute {
                shard: target.shard,
                epoch: target.epoch,
                sql: sql.clone(),
                params: params.to_vec(),
                txn,
                timeout_ms,
                lock_timeout_ms,
            };
            match self.pool.call(&target.addr, req).await {
                Ok(Response::Result(r)) => return Ok(r),
                Ok(other) => {
                    return Err(Error::protocol(format!(
                        "unexpected answer to Execute: {other:?}"
                    )));
                }
                Err(e) if is_held(&e) && tokio::time::Instant::now() < deadline => {
                    let next = self.next_route(&target).await;
                    if next.range != target.range {
                        // A split changed which rows live here: resending would reach the
                        // wrong shard for some keys. Nothing ran; plan again.
                        return Err(resplit(target.shard));
                    }
                    target = next;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Sends a catalog statement whose meta part is already done (CREATE/DROP TABLE) to a
    /// shard. If a split took part of the shard's range while it waited, it goes to every
    /// shard that now covers that range instead: planning it again would redo the meta part.
    fn send_ddl(
        &self,
        target: Target,
        sql: String,
    ) -> futures::future::BoxFuture<'_, Result<QueryResult>> {
        Box::pin(async move {
            match self.send(&target, sql.clone(), &[], None).await {
                Err(e) if is_resplit(&e) => {
                    let state = self.meta.state();
                    let keyspace = state
                        .shards
                        .get(&target.shard)
                        .map(|s| s.keyspace.clone())
                        .unwrap_or_default();
                    let covering: Vec<Target> = state
                        .keyspace_shards(&keyspace)
                        .into_iter()
                        .filter(|s| {
                            s.range.start <= target.range.end && target.range.start <= s.range.end
                        })
                        .filter_map(|s| route_of(&state, s.id))
                        .collect();
                    let mut last = Err(e);
                    for t in covering {
                        last = Ok(self.send_ddl(t, sql.clone()).await?);
                    }
                    last
                }
                other => other,
            }
        })
    }

    /// Where to send a held statement next: the shard's primary in a newer map, waiting a
    /// little for one when ours still names the node that refused.
    async fn next_route(&self, held: &Target) -> Target {
        let state = self.meta.state();
        let current = route_of(&state, held.shard);
        if current
            .as_ref()
            .is_some_and(|t| t.addr != held.addr || t.epoch != held.epoch)
        {
            // The map already moved on (the refusing node may not have caught up yet).
            tokio::time::sleep(Duration::from_millis(2)).await;
            return current.unwrap_or_else(|| held.clone());
        }
        let _ = self
            .meta
            .wait_for_version(state.version + 1, HOLD_POLL)
            .await;
        route_of(&self.meta.state(), held.shard).unwrap_or_else(|| held.clone())
    }

    /// The address of a shard's primary now, for ending a transaction there: a shard never
    /// switches primary while a transaction is open on it (a move waits for them), so the
    /// current primary is where the transaction lives, even if it first reached the shard
    /// after a switch that the recorded address predates.
    fn live_addr(&self, shard: u32, recorded: &str) -> String {
        route_of(&self.meta.state(), shard).map_or_else(|| recorded.to_string(), |t| t.addr)
    }

    async fn run(&self, plan: Plan, params: &[Value], txn: Option<TxnSpec>) -> Result<QueryResult> {
        match plan {
            Plan::Direct { targets, sql } => {
                let calls = targets
                    .iter()
                    .map(|t| self.send(t, sql.clone(), params, txn));
                concat(futures::future::join_all(calls).await)
            }
            Plan::Split { parts } => {
                let calls = parts
                    .iter()
                    .map(|(t, sql)| self.send(t, sql.clone(), params, txn));
                concat(futures::future::join_all(calls).await)
            }
            Plan::Replicated { targets, sql } => {
                // The first copy alone first: its row locks order concurrent writers of the
                // same rows, who would otherwise each win a lock on a different copy and
                // deadlock; the other copies then take their locks without contention.
                let (head, rest) = targets
                    .split_first()
                    .ok_or_else(|| Error::internal("a reference table without copies"))?;
                let first = self.send(head, sql.clone(), params, txn).await?;
                let calls = rest.iter().map(|t| self.send(t, sql.clone(), params, txn));
                let results = futures::future::join_all(calls).await.into_iter();
                for other in results {
                    // Copies hold the same rows, so they must report the same change; if not,
                    // the transaction fails rather than commit copies that disagree.
                    if other?.affected != first.affected {
                        return Err(Error::new(
                            sqlstate::DATA_CORRUPTED,
                            "copies of a reference table disagree",
                        ));
                    }
                }
                Ok(first)
            }
            Plan::Partial {
                targets,
                sql,
                combine,
            } => {
                let calls = targets
                    .iter()
                    .map(|t| self.send(t, sql.clone(), params, txn));
                combine_partials(futures::future::join_all(calls).await, &combine)
            }
            Plan::Gather {
                fetches,
                tables,
                stmt,
            } => {
                let calls = fetches
                    .iter()
                    .map(|f| self.send(&f.target, f.sql.clone(), params, txn));
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
                // On a blocking thread, as gathered rows are: a join of catalog views can be
                // long, and a session thread serves other sessions too.
                let params = params.to_vec();
                tokio::task::spawn_blocking(move || engine::sql::query(&stmt, &params, &mem))
                    .await
                    .map_err(|e| Error::internal(format!("router executor failed: {e}")))?
            }
            Plan::CreateTable {
                info,
                if_not_exists,
                sql,
                targets,
            } => {
                let name = info.schema.name.clone();
                match self.meta.propose(MetaCommand::CreateTable(info)).await {
                    Ok(_) => {}
                    Err(e) if e.code == sqlstate::DUPLICATE_TABLE && if_not_exists => {
                        return Ok(QueryResult::command("CREATE TABLE", 0));
                    }
                    Err(e) => return Err(e),
                }
                let calls = targets
                    .iter()
                    .map(|t| self.send_ddl(t.clone(), sql.clone()));
                let failed = futures::future::join_all(calls)
                    .await
                    .into_iter()
                    .find_map(|r| r.err());
                if let Some(e) = failed {
                    // A shard refused the definition: take the table back out of meta, so it
                    // is not listed while the shards do not have it.
                    let _ = self
                        .meta
                        .propose(MetaCommand::DropTable { name: name.clone() })
                        .await;
                    let drop = format!("DROP TABLE IF EXISTS {}", crate::plan::quote_ident(&name));
                    let calls = targets
                        .iter()
                        .map(|t| self.send_ddl(t.clone(), drop.clone()));
                    let _ = futures::future::join_all(calls).await;
                    return Err(e);
                }
                Ok(QueryResult::command("CREATE TABLE", 0))
            }
            Plan::MoveUpdate { .. } => Err(Error::internal(
                "a row-moving update runs only inside a transaction",
            )),
            Plan::AlterTable { .. } => Err(Error::internal(
                "ALTER TABLE runs through Router::alter_table",
            )),
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
                let calls = targets
                    .iter()
                    .map(|t| self.send_ddl(t.clone(), sql.clone()));
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
        // Catalog functions become subqueries over catalog relations, which are then read too.
        let stmt = &crate::catalog::rewrite(stmt);
        let mut views = views.to_vec();
        for t in crate::plan::relations(stmt) {
            if crate::names::is_system(&t) && !views.contains(&t) {
                views.push(t);
            }
        }
        let views = &views;
        let user = crate::catalog::session_user();
        let ctx = crate::catalog::tables::Ctx {
            state: &state,
            user: &user,
            superuser: crate::catalog::session_is_superuser(&state),
            database: crate::catalog::DATABASE,
        };
        let live = if with_rows
            && views
                .iter()
                .any(|v| v == "tessera.shards" || v == "tessera.replication")
        {
            status::collect(&state, &self.pool).await
        } else {
            Vec::new()
        };
        let mut mem = MemTables::new(self.row_budget);
        for view in views {
            let (schema, rows) = match view.as_str() {
                "tessera.nodes" => status::nodes_view(&state),
                "tessera.jobs" => status::jobs_view(&state),
                "tessera.shards" => status::shards_view(&live),
                "tessera.replication" => status::replication_view(&live),
                other => crate::catalog::tables::build(other, &ctx)
                    .ok_or_else(|| Error::undefined_table(other))?,
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
/// executor resolves `public.t`, `T` and `tessera.shards` exactly as the planner did. Row
/// locking clauses are dropped: the shards took those locks when they returned the rows.
fn canonical_names(stmt: &Statement) -> Statement {
    let mut stmt = stmt.clone();
    let _ = ast::visit_relations_mut(&mut stmt, |name| {
        let canonical = table_name(name);
        *name = ObjectName::from(vec![Ident::with_quote('"', canonical)]);
        ControlFlow::<()>::Continue(())
    });
    if let Statement::Query(q) = &mut stmt {
        q.locks.clear();
    }
    stmt
}

/// How long a statement is held while its shard switches copies.
const HOLD_WAIT: Duration = Duration::from_secs(10);
/// How long one wait for a newer map lasts before the held statement is tried again.
const HOLD_POLL: Duration = Duration::from_millis(50);

/// The primary of `shard` in `state`.
fn route_of(state: &protocol::cluster::ClusterState, shard: u32) -> Option<Target> {
    let info = state.shards.get(&shard)?;
    Some(Target {
        shard,
        node: info.primary,
        addr: state.node_addr(info.primary)?.to_string(),
        epoch: info.epoch,
        range: info.range,
    })
}

/// Refusals that prove a statement did not run and that a newer map resolves.
fn is_held(e: &Error) -> bool {
    is_stale_route(e)
        || (e.code == sqlstate::CANNOT_CONNECT_NOW
            && (e.message.contains("is being moved")
                || e.message.contains("is not hosted on node")))
}

/// A statement held through a split of one of its shards: it did not run anywhere on that
/// shard, and must be planned again against the new ranges. A client sees it only inside a
/// transaction block (40001: retry the transaction); alone, the statement is re-planned.
fn resplit(shard: u32) -> Error {
    Error::new(
        sqlstate::SERIALIZATION_FAILURE,
        format!("shard {shard} was split while this statement waited; retry the transaction"),
    )
}

/// True if the statement calls any function: such calls (`nextval`, `tessera.*`, …) may be
/// rewritten before planning in ways that depend on the parameters or the session.
pub(crate) fn calls_functions(stmt: &Statement) -> bool {
    crate::table_functions::finds_call(stmt, |_| true)
}

fn is_resplit(e: &Error) -> bool {
    e.code == sqlstate::SERIALIZATION_FAILURE && e.message.contains("was split while")
}

fn is_stale_route(e: &Error) -> bool {
    // Only this refusal proves the statement did not run; a lost connection leaves a write's
    // outcome unknown, so it is never retried blindly.
    e.code == sqlstate::READ_ONLY_SQL_TRANSACTION && e.message.contains("is not primary in epoch")
}

/// Combines one-row partial aggregates from every shard into the final row.
fn combine_partials(results: Vec<Result<QueryResult>>, combine: &[Combine]) -> Result<QueryResult> {
    let mut out: Option<QueryResult> = None;
    for r in results {
        let r = r?;
        let row = r.rows.into_iter().next().unwrap_or_default();
        match out.as_mut() {
            None => {
                out = Some(QueryResult {
                    rows: vec![row],
                    ..r
                })
            }
            Some(acc) => {
                let acc_row = acc
                    .rows
                    .first_mut()
                    .ok_or_else(|| Error::internal("partial aggregate without a row"))?;
                for ((slot, value), how) in acc_row.iter_mut().zip(row).zip(combine) {
                    *slot = combine_values(std::mem::replace(slot, Value::Null), value, *how)?;
                }
            }
        }
    }
    let mut out = out.ok_or_else(|| Error::internal("statement reached no shard"))?;
    out.affected = out.rows.len() as u64;
    Ok(out)
}

fn combine_values(a: Value, b: Value, how: Combine) -> Result<Value> {
    Ok(match (a, b, how) {
        (Value::Null, v, _) | (v, Value::Null, _) => v,
        (Value::Int(x), Value::Int(y), Combine::Sum) => {
            Value::Int(x.checked_add(y).ok_or_else(|| {
                Error::new(sqlstate::NUMERIC_VALUE_OUT_OF_RANGE, "bigint out of range")
            })?)
        }
        (Value::Int(x), Value::Float(y), Combine::Sum)
        | (Value::Float(y), Value::Int(x), Combine::Sum) => Value::Float(x as f64 + y),
        (Value::Float(x), Value::Float(y), Combine::Sum) => Value::Float(x + y),
        (Value::Numeric(x), Value::Numeric(y), Combine::Sum) => Value::Numeric(x.add(y)?),
        (a, b, Combine::Min) => {
            if b.total_cmp(&a).is_lt() {
                b
            } else {
                a
            }
        }
        (a, b, Combine::Max) => {
            if b.total_cmp(&a).is_gt() {
                b
            } else {
                a
            }
        }
        (a, _, Combine::Sum) => {
            return Err(Error::internal(format!(
                "cannot add partial sums of {}",
                a.type_name()
            )));
        }
    })
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

/// Records the shards a statement of a transaction reaches and which it writes on, refusing
/// DDL (which goes through meta and cannot roll back).
fn admit(plan: &Plan, txn: &mut SessionTxn) -> Result<()> {
    let (targets, writes): (Vec<&Target>, bool) = match plan {
        Plan::Direct { targets, sql } => (targets.iter().collect(), !is_select(sql)),
        Plan::Split { parts } => (parts.iter().map(|(t, _)| t).collect(), true),
        Plan::Replicated { targets, .. } => (targets.iter().collect(), true),
        Plan::Gather { fetches, .. } => (fetches.iter().map(|f| &f.target).collect(), false),
        Plan::Local { .. } => (Vec::new(), false),
        Plan::Partial { targets, .. } => (targets.iter().collect(), false),
        Plan::MoveUpdate { sources, .. } => (sources.iter().collect(), true),
        Plan::CreateTable { .. } | Plan::DropTable { .. } | Plan::AlterTable { .. } => {
            return Err(Error::unsupported(
                "CREATE, ALTER and DROP TABLE cannot run inside a transaction block yet",
            ));
        }
    };
    if writes {
        txn.written.extend(targets.iter().map(|t| t.shard));
    }
    for t in targets {
        txn.touched.insert(t.shard, t.addr.clone());
    }
    Ok(())
}

/// True for a statement that writes on more than one shard.
fn writes_several_shards(plan: &Plan) -> bool {
    match plan {
        Plan::Direct { targets, sql } => targets.len() > 1 && !is_select(sql),
        Plan::Split { parts } => parts.len() > 1,
        Plan::Replicated { targets, .. } => targets.len() > 1,
        Plan::MoveUpdate { .. } => true,
        _ => false,
    }
}

fn is_select(sql: &str) -> bool {
    let head = sql.trim_start().get(..6).unwrap_or("").to_ascii_uppercase();
    head == "SELECT"
        || head.starts_with("WITH")
        || head.starts_with("VALUES")
        || head.starts_with("(")
}

impl Router {
    /// Ends a transaction on every shard it touched: commit or roll back. A transaction that
    /// wrote on more than one shard commits with two-phase commit.
    pub async fn end_transaction(&self, txn: &SessionTxn, commit: bool) -> Result<()> {
        if commit && txn.written.len() > 1 {
            return self.two_phase_commit(txn).await;
        }
        // Read-only participants first; the (single) written shard decides the outcome last.
        let mut order: Vec<(&u32, &String)> = txn.touched.iter().collect();
        order.sort_by_key(|(shard, _)| txn.written.contains(shard));
        let mut first_err = None;
        for (shard, addr) in order {
            let addr = &self.live_addr(*shard, addr);
            let req = Request::EndTxn {
                shard: *shard,
                txn: txn.spec.id,
                commit: commit && first_err.is_none(),
                writes_elsewhere: txn.written.iter().any(|w| w != shard),
            };
            if let Err(e) = self.pool.call(addr, req).await {
                first_err.get_or_insert(e);
            }
        }
        match first_err {
            Some(e) if commit => Err(e),
            _ => Ok(()),
        }
    }

    /// Rolls back one shard's unprepared part of a failing distributed transaction (best
    /// effort, as every rollback of a failed commit is).
    async fn roll_back_part(&self, shard: u32, addr: &str, txn: u64) {
        let req = Request::EndTxn {
            shard,
            txn,
            commit: false,
            writes_elsewhere: true,
        };
        let _ = self.pool.call(addr, req).await;
    }

    /// Two-phase commit. The coordinator is the lowest written shard; its own part commits in
    /// the same durable write as the decision, once every other written shard is prepared
    /// (so it is never prepared itself: one write where a prepare, a decision and a finish
    /// were three). Participants that never hear the outcome ask the coordinator themselves
    /// (the node runtime's in-doubt resolver), so a router crash at any point leaves no
    /// transaction half-applied for long.
    ///
    /// ```text
    ///  read-only shards: EndTxn(commit)      other written shards: PrepareTxn (durable, locks kept)
    ///  coordinator: CommitDecide  ──► its rows and the decision "commit", one write
    ///               (a resolver's abort recorded first makes it fail: one outcome stands)
    ///  other written shards: FinishPrepared(outcome)
    /// ```
    async fn two_phase_commit(&self, txn: &SessionTxn) -> Result<()> {
        let id = txn.spec.id;
        // Read-only participants end first; under SERIALIZABLE that is where their reads are
        // validated, and a failure there must abort the whole transaction.
        let mut read_failure = None;
        for (shard, addr) in txn.touched.iter().filter(|(s, _)| !txn.written.contains(s)) {
            let addr = &self.live_addr(*shard, addr);
            let req = Request::EndTxn {
                shard: *shard,
                txn: id,
                commit: read_failure.is_none(),
                writes_elsewhere: true,
            };
            if let Err(e) = self.pool.call(addr, req).await {
                read_failure.get_or_insert(e);
            }
        }
        if let Some(e) = read_failure {
            for (shard, addr) in txn.touched.iter().filter(|(s, _)| txn.written.contains(s)) {
                self.roll_back_part(*shard, &self.live_addr(*shard, addr), id)
                    .await;
            }
            return Err(e);
        }
        let written: Vec<(u32, String)> = txn
            .written
            .iter()
            .filter_map(|s| txn.touched.get(s).map(|a| (*s, self.live_addr(*s, a))))
            .collect();
        let Some(((coordinator, coordinator_addr), others)) = written.split_first() else {
            return Err(Error::internal("no written shard"));
        };
        let (coordinator, coordinator_addr) = (*coordinator, coordinator_addr.clone());
        // SERIALIZABLE prepares the coordinator too: a prepared write set counts as committed
        // in every other transaction's validation, and the coordinator's must count while the
        // others prepare, or a write skew could pass between them. Its decision is then a
        // write of its own.
        let coordinator_prepares = txn.spec.isolation == protocol::message::Isolation::Serializable;
        let to_prepare = if coordinator_prepares {
            &written[..]
        } else {
            others
        };
        let prepares = to_prepare.iter().map(|(shard, addr)| {
            self.pool.call(
                addr,
                Request::PrepareTxn {
                    shard: *shard,
                    txn: id,
                    coordinator,
                },
            )
        });
        let prepared = futures::future::join_all(prepares).await;
        let failure = prepared.iter().find_map(|r| r.as_ref().err().cloned());
        let outcome = match &failure {
            Some(_) if coordinator_prepares => Ok(false),
            Some(_) => {
                // Nothing can record "commit" now: roll the coordinator's part back.
                self.roll_back_part(coordinator, &coordinator_addr, id)
                    .await;
                Ok(false)
            }
            None => {
                let req = if coordinator_prepares {
                    Request::DecideTxn {
                        shard: coordinator,
                        txn: id,
                        commit: true,
                    }
                } else {
                    Request::CommitDecide {
                        shard: coordinator,
                        txn: id,
                    }
                };
                match self.pool.call(&coordinator_addr, req).await {
                    Ok(Response::Decision(Some(true))) => Ok(true),
                    // An in-doubt resolver recorded an abort first.
                    Ok(Response::Decision(Some(false))) => Err(engine::shard::aborted_in_doubt()),
                    // Committed nothing and recorded nothing there; only that request
                    // records "commit", so the outcome is abort.
                    Err(e) if !outcome_unknown(&e) => Err(e),
                    _ => {
                        // Unknown: the coordinator may or may not have recorded it; the
                        // resolvers finish the participants either way, without delay.
                        for (shard, addr) in to_prepare {
                            let (pool, addr, shard) = (self.pool.clone(), addr.clone(), *shard);
                            tokio::spawn(async move {
                                let _ = pool
                                    .call(&addr, Request::ReleasePrepared { shard, txn: id })
                                    .await;
                            });
                        }
                        return Err(Error::new(
                            sqlstate::CONNECTION_FAILURE,
                            "the outcome of this distributed commit is unknown (the coordinator shard did not answer)",
                        ));
                    }
                }
            }
        };
        let commit = matches!(outcome, Ok(true));
        let finishes = to_prepare
            .iter()
            .zip(&prepared)
            .filter(|(_, p)| p.is_ok())
            .map(|((shard, addr), _)| {
                self.pool.call(
                    addr,
                    Request::FinishPrepared {
                        shard: *shard,
                        txn: id,
                        commit,
                    },
                )
            });
        // A participant that misses this still learns the decision from the coordinator.
        let finished = futures::future::join_all(finishes).await;
        // Every participant is done: nobody will ask for the decision again, so the
        // coordinator may drop its record (off the commit's path; a miss only leaves garbage).
        if failure.is_none() && finished.iter().all(|r| r.is_ok()) {
            let pool = self.pool.clone();
            tokio::spawn(async move {
                let _ = pool
                    .call(
                        &coordinator_addr,
                        Request::ForgetDecision {
                            shard: coordinator,
                            txn: id,
                        },
                    )
                    .await;
            });
        }
        match (failure, outcome) {
            (Some(e), _) | (None, Err(e)) => Err(e),
            (None, Ok(_)) => Ok(()),
        }
    }
}

/// True if a failed commit step may still have taken effect: the link broke, or the shard's
/// durable write failed after it may have reached the disk.
fn outcome_unknown(e: &Error) -> bool {
    e.is_connection() || e.message.starts_with("commit outcome unknown")
}
