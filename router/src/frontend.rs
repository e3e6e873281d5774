//! The Postgres wire protocol front: pgwire handlers for startup, simple and extended query.
//!
//! ```text
//!  Query(text) ──► parse ──► for each statement: session command? ─yes─► answered here
//!                                                  └─no─► Router::execute ─► results
//!  Parse ──► parse once, store the AST        Describe ──► Router::describe (shard catalog)
//!  Bind  ──► pgwire keeps the portal          Execute  ──► decode params by type ─► Router
//! ```
//! Prepared statements live here, in the client's session at the router, never on node
//! connections, so no client ever meets "prepared statement does not exist" after a router
//! or node reconnects.

use std::fmt::Debug;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use futures::{Sink, SinkExt, stream};
use pgwire::api::auth::{
    DefaultServerParameterProvider, StartupHandler, finish_authentication, protocol_negotiation,
    save_startup_parameters_to_metadata,
};
use pgwire::api::cancel::CancelHandler;
use pgwire::api::copy::CopyHandler;
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{
    DataRowEncoder, DescribePortalResponse, DescribeStatementResponse, FieldInfo, QueryResponse,
    Response, Tag,
};
use pgwire::api::stmt::{QueryParser, StoredStatement};
use pgwire::api::store::PortalStore;
use pgwire::api::{ClientInfo, ClientPortalStore, PgWireServerHandlers, Type};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::PgWireBackendMessage;
use pgwire::messages::PgWireFrontendMessage;
use pgwire::messages::cancel::CancelRequest;
use pgwire::messages::copy::{CopyData, CopyDone, CopyFail};
use protocol::error::{Error, Result, sqlstate};
use protocol::message::{Isolation, TxnSpec};
use protocol::schema::{QueryResult, ResultColumn};
use protocol::{DataType, Value};
use sqlparser::ast::{self, Statement};

use crate::dispatch::Router;
use crate::route_cache::RouteCache;

/// Parameter types and result columns of a statement.
type Description = (Vec<DataType>, Vec<ResultColumn>);
use crate::encode;
use crate::names;
use crate::session::{DEFAULTS, SavepointMark, Session, SessionTxn};
use std::collections::BTreeMap;

/// A statement prepared by the client: its text, its parse, and what Describe learned.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub sql: String,
    pub stmt: Option<Statement>,
    /// Shared, not copied, by every Bind, Describe and Execute that needs it.
    described: Arc<Mutex<Option<Arc<Description>>>>,
    /// Calls a function: maybe `pg_backend_pid()` or another the session answers itself.
    backend_calls: bool,
    /// The route its executions take while the cluster map stays the same (used only for a
    /// statement without function calls).
    route: Arc<RouteCache>,
}

impl Prepared {
    pub(crate) fn new(
        sql: &str,
        stmt: Option<Statement>,
        described: Option<Description>,
    ) -> Prepared {
        Prepared {
            sql: sql.to_string(),
            // Any function call might be one; only statements without calls skip the check.
            backend_calls: stmt.as_ref().is_none_or(crate::dispatch::calls_functions),
            stmt,
            described: Arc::new(Mutex::new(described.map(Arc::new))),
            route: Arc::default(),
        }
    }
}

pub fn to_pg_error(e: Error) -> PgWireError {
    PgWireError::UserError(Box::new(error_info(e)))
}

fn error_info(e: Error) -> ErrorInfo {
    let mut info = ErrorInfo::new("ERROR".to_string(), e.code, e.message);
    info.detail = e.detail;
    info
}

pub struct Frontend {
    router: Arc<Router>,
    auth_method: crate::auth::AuthMethod,
    parser: Arc<StatementParser>,
    /// Sessions by backend pid, with the secret a CancelRequest must present.
    cancels: Mutex<std::collections::HashMap<i32, (Bytes, std::sync::Weak<Session>)>>,
}

impl Frontend {
    pub fn new(router: Arc<Router>, auth_method: crate::auth::AuthMethod) -> Arc<Self> {
        Arc::new(Frontend {
            router,
            auth_method,
            parser: Arc::new(StatementParser),
            cancels: Mutex::default(),
        })
    }

    fn session<C: ClientInfo>(client: &C) -> Arc<Session> {
        client
            .session_extensions()
            .get_or_insert_with(Session::default)
    }

    /// Starts COPY FROM STDIN (the data follows in CopyData messages, see `CopyHandler`) or
    /// runs COPY TO STDOUT.
    async fn copy(&self, session: &Session, stmt: &Statement) -> Result<Response> {
        let cmd = crate::copy::command(stmt)?;
        let format = match cmd.opts.format {
            crate::copy::format::Format::Binary => 1,
            _ => 0,
        };
        if let Some(query) = &cmd.query {
            let select = engine::sql::parse(query)?
                .into_iter()
                .next()
                .ok_or_else(|| Error::internal("empty COPY query"))?;
            let result = self.run(session, &select, &[], None).await?;
            let columns = result.columns.len();
            let mut chunks = crate::copy::encode_rows(&cmd, &result);
            // A header travels with the first row, so the "COPY n" count stays the row count.
            if chunks.len() > result.rows.len() && chunks.len() > 1 {
                let header = chunks.remove(0);
                let mut first = header.to_vec();
                first.extend_from_slice(&chunks[0]);
                chunks[0] = first.into();
            }
            // (pgwire appends the binary trailer itself.)
            let data = stream::iter(chunks.into_iter().map(|data| Ok(CopyData::new(data))));
            return Ok(Response::CopyOut(pgwire::api::results::CopyResponse::new(
                format, columns, data,
            )));
        }
        let in_block = {
            let guard = session.txn.lock().await;
            match guard.as_ref() {
                Some(t) if t.failed => return Err(Error::in_failed_transaction()),
                Some(_) => true,
                None => false,
            }
        };
        let lock_timeout_ms = session.millis("lock_timeout");
        let copy = crate::copy::CopyIn::start(&self.router, &cmd, in_block, lock_timeout_ms)?;
        let columns = copy.columns();
        *session.copy.lock().await = Some(copy);
        Ok(Response::CopyIn(pgwire::api::results::CopyResponse::new(
            format,
            columns,
            stream::empty(),
        )))
    }

    /// Ends a COPY FROM: commits its own transaction, or marks the client's block failed.
    async fn copy_end(
        &self,
        session: &Session,
        mut copy: crate::copy::CopyIn,
        error: Option<Error>,
    ) -> Result<u64> {
        let outcome = match error {
            Some(e) => Err(e),
            None => match copy.own.take() {
                Some(mut own) => {
                    let r = copy.done(&self.router, &mut own).await;
                    copy.own = Some(own);
                    r
                }
                None => {
                    let mut guard = session.txn.lock().await;
                    match guard.as_mut() {
                        Some(txn) => copy.done(&self.router, txn).await,
                        None => Err(Error::internal("COPY lost its transaction")),
                    }
                }
            },
        };
        match (copy.own.take(), outcome) {
            (Some(own), Ok(n)) => {
                self.router.end_transaction(&own, true).await?;
                Ok(n)
            }
            (Some(own), Err(e)) => {
                let _ = self.router.end_transaction(&own, false).await;
                Err(e)
            }
            (None, Ok(n)) => Ok(n),
            (None, Err(e)) => {
                if let Some(txn) = session.txn.lock().await.as_mut() {
                    self.abort_block(txn).await;
                }
                Err(e)
            }
        }
    }

    /// VACUUM and ANALYZE (see `maintenance`): checked as PostgreSQL checks them, then done.
    /// CREATE KEYSPACE (`crate::keyspaces`): outside transaction blocks, by a superuser or a
    /// role with CREATEDB, as PostgreSQL's CREATE DATABASE.
    async fn create_keyspace(
        &self,
        session: &Session,
        create: crate::keyspaces::CreateKeyspace,
    ) -> Result<QueryResult> {
        if session.txn.lock().await.is_some() {
            return Err(Error::new(
                sqlstate::ACTIVE_SQL_TRANSACTION,
                "CREATE KEYSPACE cannot run inside a transaction block",
            ));
        }
        let allowed =
            crate::roles::session_may(&self.router.meta.state(), session.role_oid(), |r| {
                r.superuser || r.create_db
            });
        if !allowed {
            return Err(Error::new(
                sqlstate::INSUFFICIENT_PRIVILEGE,
                "permission denied to create keyspace",
            ));
        }
        replication::operations::create_keyspace(
            &self.router.meta,
            create.keyspace,
            create.if_not_exists,
        )
        .await?;
        Ok(QueryResult::command("CREATE KEYSPACE", 0))
    }

    async fn maintenance(
        &self,
        session: &Session,
        tag: &str,
        tables: &[String],
    ) -> Result<QueryResult> {
        if tag == "VACUUM" && session.txn.lock().await.is_some() {
            return Err(Error::new(
                sqlstate::ACTIVE_SQL_TRANSACTION,
                "VACUUM cannot run inside a transaction block",
            ));
        }
        let state = self.router.meta.state();
        for t in tables {
            if !state.tables.contains_key(t) {
                return Err(Error::undefined_table(t));
            }
        }
        Ok(QueryResult::command(tag, 0))
    }

    /// `pg_backend_pid()`, `pg_cancel_backend(pid)`, `current_setting(name [, missing_ok])`
    /// and `set_config(name, value, is_local)` with constant arguments, replaced by their
    /// values: all are about this router's sessions, which only the frontend knows. With
    /// `session` `None` (Describe), nothing is cancelled or set and the calls become typed NULLs.
    fn backend_functions(
        &self,
        session: Option<&Session>,
        stmt: &Statement,
    ) -> Result<Option<Statement>> {
        use std::ops::ControlFlow;
        let run = session.is_some();
        let pid = session.map_or(0, |s| s.pid.load(std::sync::atomic::Ordering::Relaxed));
        // Settings are read and set by queries only: a view, a default or a PREPARE keeps
        // the call (and so the catalogs' value), and EXPLAIN sets nothing.
        let query = matches!(stmt, Statement::Query(_));
        let is_backend_fn = |f: &ast::Function| {
            let name = f.name.to_string().to_lowercase();
            match name.trim_start_matches("pg_catalog.") {
                "pg_backend_pid" | "pg_cancel_backend" => true,
                // With a parameter for the name these are left to the catalogs' defaults.
                "current_setting" | "set_config" => query && literal_args(f).is_some(),
                _ => false,
            }
        };
        // One walk in the common case; a function in FROM becomes a select item first, so
        // these are found there too.
        if !crate::table_functions::finds_call(stmt, is_backend_fn) {
            return Ok(None);
        }
        let in_from = crate::table_functions::expand(stmt);
        let stmt = in_from.as_ref().unwrap_or(stmt);
        let found = ast::visit_expressions(stmt, |e| match e {
            ast::Expr::Function(f) if is_backend_fn(f) => ControlFlow::Break(()),
            _ => ControlFlow::Continue(()),
        });
        if found.is_continue() {
            return Ok(in_from);
        }
        let mut stmt = stmt.clone();
        // `SELECT pg_backend_pid()` keeps the column name PostgreSQL gives it.
        if let Statement::Query(q) = &mut stmt
            && let ast::SetExpr::Select(s) = q.body.as_mut()
        {
            for item in s.projection.iter_mut() {
                if let ast::SelectItem::UnnamedExpr(ast::Expr::Function(f)) = item
                    && is_backend_fn(f)
                {
                    let alias = ast::Ident::new(
                        f.name
                            .to_string()
                            .to_lowercase()
                            .trim_start_matches("pg_catalog.")
                            .to_string(),
                    );
                    let expr = ast::Expr::Function(f.clone());
                    *item = ast::SelectItem::ExprWithAlias { expr, alias };
                }
            }
        }
        let mut failed = None;
        let _ = ast::visit_expressions_mut(&mut stmt, |e| {
            let ast::Expr::Function(f) = e else {
                return ControlFlow::<()>::Continue(());
            };
            if !is_backend_fn(f) {
                return ControlFlow::Continue(());
            }
            let name = f.name.to_string().to_lowercase();
            if !run {
                let data_type = if name.ends_with("pg_backend_pid") {
                    ast::DataType::Integer(None)
                } else if name.ends_with("pg_cancel_backend") {
                    ast::DataType::Boolean
                } else {
                    ast::DataType::Text
                };
                *e = ast::Expr::Cast {
                    kind: ast::CastKind::DoubleColon,
                    expr: Box::new(ast::Expr::value(ast::Value::Null)),
                    data_type,
                    format: None,
                };
                return ControlFlow::Continue(());
            }
            let arg = match &f.args {
                ast::FunctionArguments::List(l) => match l.args.as_slice() {
                    [
                        ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(ast::Expr::Value(v))),
                    ] => match &v.value {
                        ast::Value::Number(n, _) => n.parse::<i32>().ok(),
                        _ => None,
                    },
                    _ => None,
                },
                _ => None,
            };
            let value = if name.ends_with("current_setting") || name.ends_with("set_config") {
                match setting_call(session, &name, f) {
                    Ok(v) => v,
                    Err(err) => {
                        failed = Some(err);
                        return ControlFlow::Break(());
                    }
                }
            } else if name.ends_with("pg_backend_pid") {
                ast::Value::Number(pid.to_string(), false)
            } else if let Some(pid) = arg {
                let target = self
                    .cancels
                    .lock()
                    .ok()
                    .and_then(|c| c.get(&pid).and_then(|(_, s)| s.upgrade()));
                if let Some(s) = &target {
                    s.cancel.notify_waiters();
                }
                ast::Value::Boolean(target.is_some())
            } else {
                return ControlFlow::Continue(());
            };
            *e = ast::Expr::value(value);
            ControlFlow::Continue(())
        });
        match failed {
            Some(err) => Err(err),
            None => Ok(Some(stmt)),
        }
    }

    /// Runs one statement for a session: session commands here, everything else routed.
    /// The session's role is in scope for the catalog (`current_user`, `pg_roles`).
    async fn run(
        &self,
        session: &Session,
        stmt: &Statement,
        params: &[Value],
        prepared: Option<&Prepared>,
    ) -> Result<QueryResult> {
        let identity = crate::catalog::SessionIdentity {
            name: session.user().to_string(),
            oid: session.role_oid(),
        };
        crate::catalog::SESSION_USER
            .scope(
                identity,
                Box::pin(self.run_statement(session, stmt, params, prepared)),
            )
            .await
    }

    /// `prepared`: the client's prepared statement `stmt` comes from (extended protocol).
    async fn run_statement(
        &self,
        session: &Session,
        stmt: &Statement,
        params: &[Value],
        prepared: Option<&Prepared>,
    ) -> Result<QueryResult> {
        let role_statement = matches!(
            stmt,
            Statement::CreateRole(_)
                | Statement::AlterRole { .. }
                | Statement::Drop {
                    object_type: ast::ObjectType::Role
                        | ast::ObjectType::User
                        | ast::ObjectType::Group,
                    ..
                }
        );
        // Only role statements pay for the session lookups below.
        let state = self.router.meta.state();
        let encryption = if role_statement {
            session.get("password_encryption").unwrap_or_default()
        } else {
            String::new()
        };
        let actor = crate::roles::Actor {
            user: session.user(),
            oid: session.role_oid(),
            password_encryption: &encryption,
        };
        if let Some(planned) = role_statement
            .then(|| crate::roles::plan(stmt, &state, &actor))
            .flatten()
        {
            if session.txn.lock().await.is_some() {
                return Err(Error::unsupported(
                    "role commands inside a transaction block are not supported; run them outside the block",
                ));
            }
            let (commands, result) = planned?;
            for command in commands {
                self.router.meta.propose(command).await?;
            }
            return Ok(result);
        }
        drop(state);
        // Boxed: a `Statement` held across the awaits below would grow this future by 3.5 KB,
        // and it is moved onto the heap for every statement (`run`).
        let replaced = match prepared {
            Some(p) if !p.backend_calls => None,
            _ => self.backend_functions(Some(session), stmt)?.map(Box::new),
        };
        // Only a statement without function calls has a route (see `Router::execute_with`);
        // such a statement is never rewritten above.
        let route = prepared.filter(|p| !p.backend_calls).map(|p| &*p.route);
        let stmt = replaced.as_deref().unwrap_or(stmt);
        match stmt {
            Statement::Set(set)
                if !matches!(set, ast::Set::SetTransaction { session: false, .. }) =>
            {
                self.set(session, set)
            }
            Statement::Reset(r) => {
                match &r.reset {
                    ast::Reset::ALL => session.reset_all(),
                    ast::Reset::ConfigurationParameter(name) => {
                        session.reset(&names::table_name(name))
                    }
                    // Tessera has no SET SESSION AUTHORIZATION: the session is its login role.
                    ast::Reset::SessionAuthorization => {}
                }
                Ok(QueryResult::command("RESET", 0))
            }
            Statement::ShowVariable { variable } => {
                let name: Vec<String> = variable.iter().map(names::ident).collect();
                let name = match name.join(".").as_str() {
                    // SQL-standard spellings PostgreSQL accepts.
                    "transaction.isolation.level" => "transaction_isolation".to_string(),
                    "time.zone" => "timezone".to_string(),
                    "session.authorization" => "session_authorization".to_string(),
                    other => other.to_string(),
                };
                if name == "all" {
                    let rows = DEFAULTS
                        .iter()
                        .map(|(k, _)| {
                            vec![
                                Value::Text(k.to_string()),
                                Value::Text(session.get(k).unwrap_or_default()),
                            ]
                        })
                        .collect::<Vec<_>>();
                    return Ok(QueryResult {
                        columns: vec![text_col("name"), text_col("setting")],
                        affected: rows.len() as u64,
                        rows,
                        tag: "SHOW".into(),
                    });
                }
                let value = session.get(&name).ok_or_else(|| {
                    Error::new(
                        sqlstate::UNDEFINED_OBJECT,
                        format!("unrecognized configuration parameter \"{name}\""),
                    )
                })?;
                Ok(QueryResult {
                    columns: vec![text_col(&name)],
                    rows: vec![vec![Value::Text(value)]],
                    tag: "SHOW".into(),
                    affected: 1,
                })
            }
            Statement::Prepare { .. }
            | Statement::Execute { name: Some(_), .. }
            | Statement::Deallocate { .. } => self.sql_prepared(session, stmt).await,
            Statement::Discard { .. } => {
                session.reset_all();
                Ok(QueryResult::command("DISCARD ALL", 0))
            }
            Statement::StartTransaction { modes, .. } => self.begin(session, modes).await,
            Statement::Commit { .. } => self.finish(session, true).await,
            Statement::Rollback {
                savepoint: None, ..
            } => self.finish(session, false).await,
            Statement::Savepoint { name } => self.savepoint(session, &names::ident(name)).await,
            Statement::Rollback {
                savepoint: Some(name),
                ..
            } => self.rollback_to(session, &names::ident(name)).await,
            Statement::ReleaseSavepoint { name } => {
                self.release(session, &names::ident(name)).await
            }
            Statement::Set(ast::Set::SetTransaction {
                modes,
                session: false,
                ..
            }) => {
                let mut guard = session.txn.lock().await;
                let Some(txn) = guard.as_mut() else {
                    return Ok(QueryResult::command("SET", 0));
                };
                if !txn.touched.is_empty() {
                    return Err(Error::new(
                        sqlstate::ACTIVE_SQL_TRANSACTION,
                        "SET TRANSACTION ISOLATION LEVEL must be called before any query",
                    ));
                }
                apply_modes(&mut txn.spec, modes);
                Ok(QueryResult::command("SET", 0))
            }
            _ => {
                let mut guard = session.txn.lock().await;
                match guard.as_mut() {
                    None => {
                        with_timeout(session, self.router.execute_with(stmt, params, None, route))
                            .await
                    }
                    Some(txn) if txn.failed => Err(Error::in_failed_transaction()),
                    Some(txn)
                        if matches!(
                            stmt,
                            Statement::CreateTable(_)
                                | Statement::Drop { .. }
                                | Statement::AlterTable(_)
                        ) =>
                    {
                        let result = self.ddl_in_block(txn, stmt).await;
                        if result.is_err() {
                            self.abort_block(txn).await;
                        }
                        result
                    }
                    Some(txn) => {
                        let result = with_timeout(
                            session,
                            self.router
                                .execute_with(stmt, params, Some(&mut *txn), route),
                        )
                        .await;
                        if result.is_err() {
                            self.abort_block(txn).await;
                        }
                        result
                    }
                }
            }
        }
    }

    async fn begin(
        &self,
        session: &Session,
        modes: &[ast::TransactionMode],
    ) -> Result<QueryResult> {
        let mut guard = session.txn.lock().await;
        if guard.is_some() {
            // PostgreSQL only warns; the open transaction goes on.
            return Ok(QueryResult::command("BEGIN", 0));
        }
        let isolation = session
            .get("default_transaction_isolation")
            .and_then(|v| Isolation::parse(&v))
            .unwrap_or_default();
        let read_only = session
            .get("default_transaction_read_only")
            .is_some_and(|v| v == "on" || v == "true");
        let lock_timeout_ms = session.millis("lock_timeout");
        let mut spec = TxnSpec {
            id: rand::random::<u64>() | 1,
            isolation,
            read_only,
            lock_timeout_ms,
        };
        apply_modes(&mut spec, modes);
        let _ = session.router.set(self.router.clone());
        *guard = Some(SessionTxn::new(spec));
        Ok(QueryResult::command("BEGIN", 0))
    }

    async fn savepoint(&self, session: &Session, name: &str) -> Result<QueryResult> {
        let mut guard = session.txn.lock().await;
        let Some(txn) = guard.as_mut() else {
            return Err(Error::new(
                sqlstate::NO_ACTIVE_SQL_TRANSACTION,
                "SAVEPOINT can only be used in transaction blocks",
            ));
        };
        if txn.failed {
            return Err(Error::in_failed_transaction());
        }
        self.router
            .send_to_shards(txn, &txn.touched, &format!("SAVEPOINT \"{name}\""))
            .await?;
        txn.savepoints.push(SavepointMark {
            name: name.to_string(),
            touched: txn.touched.clone(),
            written: txn.written.clone(),
        });
        Ok(QueryResult::command("SAVEPOINT", 0))
    }

    /// ROLLBACK TO SAVEPOINT: shards touched before it return to it; shards first touched
    /// after it drop their part of the transaction altogether.
    async fn rollback_to(&self, session: &Session, name: &str) -> Result<QueryResult> {
        let mut guard = session.txn.lock().await;
        let Some(txn) = guard.as_mut() else {
            return Err(Error::new(
                sqlstate::NO_ACTIVE_SQL_TRANSACTION,
                "ROLLBACK TO SAVEPOINT can only be used in transaction blocks",
            ));
        };
        let Some(at) = txn.savepoints.iter().rposition(|s| s.name == name) else {
            txn.failed = true;
            return Err(Error::new(
                "3B001",
                format!("savepoint \"{name}\" does not exist"),
            ));
        };
        txn.savepoints.truncate(at + 1);
        let mark = txn.savepoints[at].clone();
        let later: BTreeMap<u32, String> = txn
            .touched
            .iter()
            .filter(|(s, _)| !mark.touched.contains_key(s))
            .map(|(s, a)| (*s, a.clone()))
            .collect();
        let partial = SessionTxn {
            touched: later,
            ..SessionTxn::new(txn.spec)
        };
        self.router.end_transaction(&partial, false).await?;
        self.router
            .send_to_shards(
                txn,
                &mark.touched,
                &format!("ROLLBACK TO SAVEPOINT \"{name}\""),
            )
            .await?;
        txn.touched = mark.touched;
        txn.written = mark.written;
        txn.failed = false;
        Ok(QueryResult::command("ROLLBACK TO", 0))
    }

    async fn release(&self, session: &Session, name: &str) -> Result<QueryResult> {
        let mut guard = session.txn.lock().await;
        let Some(txn) = guard.as_mut() else {
            return Err(Error::new(
                sqlstate::NO_ACTIVE_SQL_TRANSACTION,
                "RELEASE SAVEPOINT can only be used in transaction blocks",
            ));
        };
        if txn.failed {
            return Err(Error::in_failed_transaction());
        }
        let Some(at) = txn.savepoints.iter().rposition(|s| s.name == name) else {
            return Err(Error::new(
                "3B001",
                format!("savepoint \"{name}\" does not exist"),
            ));
        };
        let mark = txn.savepoints[at].clone();
        self.router
            .send_to_shards(txn, &mark.touched, &format!("RELEASE SAVEPOINT \"{name}\""))
            .await?;
        txn.savepoints.truncate(at);
        Ok(QueryResult::command("RELEASE", 0))
    }

    async fn finish(&self, session: &Session, commit: bool) -> Result<QueryResult> {
        let Some(txn) = session.txn.lock().await.take() else {
            // PostgreSQL warns "there is no transaction in progress" and succeeds.
            return Ok(QueryResult::command(
                if commit { "COMMIT" } else { "ROLLBACK" },
                0,
            ));
        };
        if txn.failed || !commit {
            self.router.end_transaction(&txn, false).await?;
            self.drop_created(&txn).await?;
            return Ok(QueryResult::command("ROLLBACK", 0));
        }
        self.router.end_transaction(&txn, true).await?;
        Ok(QueryResult::command("COMMIT", 0))
    }

    /// Any error inside a transaction block aborts the block, as in PostgreSQL: a syntax
    /// error, a refused statement or a bad parameter as much as a failed write. The statements
    /// that follow get 25P02 until ROLLBACK.
    async fn fail_block(&self, session: &Session) {
        if let Some(txn) = session.txn.lock().await.as_mut()
            && !txn.failed
        {
            self.abort_block(txn).await;
        }
    }

    /// `result`, after failing the client's block if it is an error (see `fail_block`).
    async fn failing_block_on_error<T>(
        &self,
        session: &Session,
        result: PgWireResult<T>,
    ) -> PgWireResult<T> {
        if result.is_err() {
            self.fail_block(session).await;
        }
        result
    }

    /// Puts a block into the aborted state (25P02 until ROLLBACK) after a failed statement.
    /// Without a savepoint to return to, nothing it did can be kept: its locks are released
    /// everywhere now, and the client still has to say ROLLBACK (or COMMIT).
    async fn abort_block(&self, txn: &mut SessionTxn) {
        txn.failed = true;
        if txn.savepoints.is_empty() {
            let _ = self.router.end_transaction(txn, false).await;
            txn.touched.clear();
        }
    }

    /// Undoes the CREATE TABLEs of a block that rolled back.
    async fn drop_created(&self, txn: &SessionTxn) -> Result<()> {
        for name in txn.created.iter().rev() {
            let drop = engine::sql::parse(&format!(
                "DROP TABLE IF EXISTS {}",
                crate::plan::quote_ident(name)
            ))?;
            for stmt in &drop {
                self.router.execute(stmt, &[], None).await?;
            }
        }
        Ok(())
    }

    /// CREATE TABLE inside a transaction block. DDL goes through meta and cannot join the
    /// block's shard transactions, so the table is created at once and dropped again if the
    /// block rolls back; other sessions may see the empty table before the block ends. A
    /// DROP TABLE inside a block is accepted only for a table the block created (it could not
    /// be undone otherwise); other DDL in a block is refused.
    async fn ddl_in_block(&self, txn: &mut SessionTxn, stmt: &Statement) -> Result<QueryResult> {
        match stmt {
            Statement::CreateTable(ct) => {
                let name = names::table_name(&ct.name);
                let existed = self.router.meta.state().tables.contains_key(&name);
                let result = self.router.execute(stmt, &[], None).await?;
                if !existed && !txn.created.contains(&name) {
                    txn.created.push(name);
                }
                Ok(result)
            }
            Statement::Drop {
                object_type: ast::ObjectType::Table,
                names: dropped,
                ..
            } if dropped
                .iter()
                .all(|n| txn.created.contains(&names::table_name(n))) =>
            {
                let result = self.router.execute(stmt, &[], None).await?;
                txn.created
                    .retain(|c| !dropped.iter().any(|n| names::table_name(n) == *c));
                Ok(result)
            }
            _ => Err(Error::unsupported(
                "inside a transaction block, only CREATE TABLE (and DROP TABLE of a table the block created) is supported; run other DDL outside the block",
            )),
        }
    }

    /// SQL-level PREPARE / EXECUTE / DEALLOCATE, kept in the session.
    async fn sql_prepared(&self, session: &Session, stmt: &Statement) -> Result<QueryResult> {
        match stmt {
            Statement::Prepare {
                name, statement, ..
            } => {
                let name = names::ident(name);
                let mut prepared = session
                    .prepared
                    .lock()
                    .map_err(|_| Error::internal("poisoned"))?;
                if prepared.contains_key(&name) {
                    return Err(Error::new(
                        "42P05",
                        format!("prepared statement \"{name}\" already exists"),
                    ));
                }
                prepared.insert(name, (**statement).clone());
                Ok(QueryResult::command("PREPARE", 0))
            }
            Statement::Execute {
                name: Some(name),
                parameters,
                ..
            } => {
                let key = names::table_name(name);
                let target = session
                    .prepared
                    .lock()
                    .map_err(|_| Error::internal("poisoned"))?
                    .get(&key)
                    .cloned()
                    .ok_or_else(|| {
                        Error::new(
                            "26000",
                            format!("prepared statement \"{key}\" does not exist"),
                        )
                    })?;
                let params = parameters
                    .iter()
                    .map(parameter_value)
                    .collect::<Result<Vec<_>>>()?;
                Box::pin(self.run(session, &target, &params, None)).await
            }
            Statement::Deallocate { name, .. } => {
                let name = names::ident(name);
                let mut prepared = session
                    .prepared
                    .lock()
                    .map_err(|_| Error::internal("poisoned"))?;
                if name == "all" {
                    prepared.clear();
                } else {
                    // Names of protocol-level statements (which drivers also DEALLOCATE) live
                    // in pgwire's store; unknown names are accepted rather than refused.
                    prepared.remove(&name);
                }
                Ok(QueryResult::command("DEALLOCATE", 0))
            }
            _ => Err(Error::internal("not a PREPARE/EXECUTE/DEALLOCATE")),
        }
    }

    fn set(&self, session: &Session, set: &ast::Set) -> Result<QueryResult> {
        match set {
            ast::Set::SingleAssignment {
                variable, values, ..
            } => {
                let name = names::table_name(variable);
                let value = values
                    .iter()
                    .map(|v| match v {
                        ast::Expr::Value(v) => match &v.value {
                            ast::Value::SingleQuotedString(s) => s.clone(),
                            other => other.to_string(),
                        },
                        ast::Expr::Identifier(id) => id.value.clone(),
                        other => other.to_string(),
                    })
                    .collect::<Vec<_>>()
                    .join(", ");
                if value.eq_ignore_ascii_case("default") {
                    session.reset(&name);
                } else {
                    session.set(&name, value);
                }
                Ok(QueryResult::command("SET", 0))
            }
            ast::Set::SetTimeZone { value, .. } => {
                let v = match value {
                    ast::Expr::Value(v) => match &v.value {
                        ast::Value::SingleQuotedString(s) => s.clone(),
                        other => other.to_string(),
                    },
                    other => other.to_string(),
                };
                session.set("timezone", v);
                Ok(QueryResult::command("SET", 0))
            }
            ast::Set::SetNames { charset_name, .. } => {
                session.set("client_encoding", charset_name.value.clone());
                Ok(QueryResult::command("SET", 0))
            }
            other => Err(Error::unsupported(format!("{other} is not supported"))),
        }
    }

    /// Learns, on its second sighting, whether `shape` may stand for statements like `stmt`
    /// (just run the long way against cluster map `state`, returning `columns`), and
    /// remembers the answer. The description is asked for in the background: the client
    /// has its answer already.
    fn learn_shape(
        &self,
        session: &Arc<Session>,
        shape: crate::shapes::Shape<'_>,
        stmt: &Statement,
        state: Arc<protocol::cluster::ClusterState>,
        columns: &[ResultColumn],
    ) {
        let due = session
            .shapes
            .lock()
            .is_ok_and(|mut s| s.should_learn(&shape.text));
        if !due {
            return;
        }
        let literals = shape.literals();
        let shaped = shape.learn(stmt);
        let columns = columns.to_vec();
        let text = shape.text;
        let router = self.router.clone();
        let session = Arc::downgrade(session);
        tokio::spawn(async move {
            let mut learned = None;
            if let Some(shaped) = shaped {
                let described = tokio::time::timeout(
                    std::time::Duration::from_secs(5),
                    router.describe(&shaped),
                )
                .await;
                if let Ok(Ok((types, described))) = described
                    && crate::shapes::types_allowed(&types, literals)
                    && described == columns
                {
                    learned = Some(crate::shapes::Learned {
                        prepared: Prepared::new(
                            &text,
                            Some(shaped),
                            Some((types.clone(), described)),
                        ),
                        types,
                    });
                }
            }
            if let Some(session) = session.upgrade()
                && let Ok(mut s) = session.shapes.lock()
            {
                s.learned(text, state, learned);
            }
        });
    }

    async fn prepared_types(
        &self,
        session: &Session,
        prepared: &Prepared,
    ) -> Result<Arc<Description>> {
        if let Ok(guard) = prepared.described.lock()
            && let Some(d) = guard.as_ref()
        {
            return Ok(d.clone());
        }
        // EXECUTE of an SQL-prepared statement returns that statement's rows; not cached,
        // as PREPARE and DEALLOCATE can change what the name means.
        if let Some(Statement::Execute {
            name: Some(name), ..
        }) = &prepared.stmt
        {
            let target = session
                .prepared
                .lock()
                .map_err(|_| Error::internal("poisoned"))?
                .get(&names::table_name(name))
                .cloned();
            return match target {
                Some(t) => Ok(Arc::new((Vec::new(), self.router.describe(&t).await?.1))),
                None => Ok(Arc::new((Vec::new(), Vec::new()))),
            };
        }
        let described = match &prepared.stmt {
            // Statements the session answers itself return no rows and take no parameters.
            Some(
                Statement::Set(_)
                | Statement::Discard { .. }
                | Statement::Reset(_)
                | Statement::StartTransaction { .. }
                | Statement::Commit { .. }
                | Statement::Rollback { .. }
                | Statement::Savepoint { .. }
                | Statement::ReleaseSavepoint { .. }
                | Statement::Copy { .. }
                | Statement::Prepare { .. }
                | Statement::Deallocate { .. },
            )
            | None => (Vec::new(), Vec::new()),
            Some(Statement::ShowVariable { variable }) => {
                let name: Vec<String> = variable.iter().map(names::ident).collect();
                (Vec::new(), vec![text_col(&name.join("."))])
            }
            Some(stmt) => match self.backend_functions(None, stmt)? {
                Some(form) => self.router.describe(&form).await?,
                None => self.router.describe(stmt).await?,
            },
        };
        let described = Arc::new(described);
        if let Ok(mut guard) = prepared.described.lock() {
            *guard = Some(described.clone());
        }
        Ok(described)
    }
}

/// Runs a statement under the session's statement_timeout. The shards enforce it (a statement
/// past its deadline rolls back and fails with 57014, so it never commits late); the router
/// gives up too, a little later, should a shard not answer at all.
async fn with_timeout(
    session: &Session,
    run: impl std::future::Future<Output = Result<QueryResult>>,
) -> Result<QueryResult> {
    // A CancelRequest is forwarded to every shard the statement is waiting on (see
    // `protocol::rpc::CANCEL`); the statement then ends with its real outcome, which is
    // 57014 unless it had already committed, so the client is never told "cancelled"
    // about a write that took effect.
    let signal = Arc::new(protocol::rpc::CancelSignal::default());
    let cancelled = session.cancel.notified();
    let run = protocol::rpc::CANCEL.scope(signal.clone(), run);
    let run = crate::sequences::SESSION_SEQUENCES.scope(session.sequences.clone(), run);
    let run = async {
        tokio::pin!(cancelled);
        tokio::pin!(run);
        cancelled.as_mut().enable();
        tokio::select! {
            r = &mut run => r,
            _ = cancelled => {
                signal.fire();
                run.await
            }
        }
    };
    let lock_ms = session.millis("lock_timeout");
    let run = crate::dispatch::LOCK_TIMEOUT_MS.scope(lock_ms, run);
    let ms = session.millis("statement_timeout");
    if ms == 0 {
        return run.await;
    }
    let guarded = tokio::time::timeout(std::time::Duration::from_millis(ms + 5_000), run);
    match crate::dispatch::STATEMENT_TIMEOUT_MS
        .scope(ms, guarded)
        .await
    {
        Ok(result) => result,
        Err(_) => Err(Error::statement_timeout()),
    }
}

/// The value of an EXECUTE argument: a literal, maybe negated or cast (the statement's
/// parameter types convert it, as for a bound parameter).
fn parameter_value(e: &ast::Expr) -> Result<Value> {
    Ok(match e {
        ast::Expr::Value(v) => match &v.value {
            ast::Value::Number(n, _) => match n.parse::<i64>() {
                Ok(i) => Value::Int(i),
                Err(_) => Value::Text(n.clone()),
            },
            ast::Value::SingleQuotedString(s) => Value::Text(s.clone()),
            ast::Value::Boolean(b) => Value::Bool(*b),
            ast::Value::Null => Value::Null,
            other => {
                return Err(Error::unsupported(format!(
                    "EXECUTE argument {other} is not supported"
                )));
            }
        },
        ast::Expr::UnaryOp {
            op: ast::UnaryOperator::Minus,
            expr,
        } => match parameter_value(expr)? {
            Value::Int(i) => Value::Int(-i),
            Value::Text(t) => Value::Text(format!("-{t}")),
            other => other,
        },
        ast::Expr::Nested(e) | ast::Expr::Cast { expr: e, .. } => parameter_value(e)?,
        other => {
            return Err(Error::unsupported(format!(
                "EXECUTE argument {other} must be a literal"
            )));
        }
    })
}

/// Applies `ISOLATION LEVEL …` and `READ ONLY`/`READ WRITE` to a transaction.
fn apply_modes(spec: &mut TxnSpec, modes: &[ast::TransactionMode]) {
    for m in modes {
        match m {
            ast::TransactionMode::IsolationLevel(level) => {
                spec.isolation = match level {
                    ast::TransactionIsolationLevel::RepeatableRead
                    | ast::TransactionIsolationLevel::Snapshot => Isolation::RepeatableRead,
                    ast::TransactionIsolationLevel::Serializable => Isolation::Serializable,
                    _ => Isolation::ReadCommitted,
                }
            }
            ast::TransactionMode::AccessMode(mode) => {
                spec.read_only = matches!(mode, ast::TransactionAccessMode::ReadOnly);
            }
        }
    }
}

fn text_col(name: &str) -> ResultColumn {
    ResultColumn {
        name: name.to_string(),
        data_type: DataType::Text,
    }
}

/// Turns a result into a wire response.
fn response(result: QueryResult, format: &Format) -> PgWireResult<Response> {
    if !result.returns_rows() {
        match result.tag.as_str() {
            "BEGIN" => return Ok(Response::TransactionStart(Tag::new("BEGIN"))),
            "COMMIT" | "ROLLBACK" => return Ok(Response::TransactionEnd(Tag::new(&result.tag))),
            // The transaction goes on; PostgreSQL's tag is plain ROLLBACK.
            "ROLLBACK TO" => return Ok(Response::Execution(Tag::new("ROLLBACK"))),
            _ => {}
        }
        let tag = match result.tag.as_str() {
            "INSERT" => Tag::new("INSERT")
                .with_oid(0)
                .with_rows(result.affected as usize),
            "UPDATE" | "DELETE" | "SELECT" | "COPY" | "MOVE" | "FETCH" => {
                Tag::new(&result.tag).with_rows(result.affected as usize)
            }
            other => Tag::new(other),
        };
        return Ok(Response::Execution(tag));
    }
    let fields = Arc::new(encode::field_infos(&result.columns, |i| {
        format.format_for(i)
    }));
    let types: Vec<DataType> = result.columns.iter().map(|c| c.data_type).collect();
    let mut encoder = DataRowEncoder::new(fields.clone());
    let mut rows = Vec::with_capacity(result.rows.len());
    for row in &result.rows {
        for (i, (value, t)) in row.iter().zip(&types).enumerate() {
            encode::encode_value(&mut encoder, value, t, format.is_binary(i))?;
        }
        rows.push(Ok(encoder.take_row()));
    }
    let mut resp = QueryResponse::new(fields, stream::iter(rows));
    match result.tag.as_str() {
        "INSERT" => resp.set_command_tag("INSERT 0"),
        "UPDATE" | "DELETE" => resp.set_command_tag(&result.tag),
        _ => {}
    }
    Ok(Response::Query(resp))
}

/// The answer to a simple-protocol text of one statement: its rows, or its error.
fn simple_response(result: Result<QueryResult>) -> PgWireResult<Response> {
    Ok(match result {
        Ok(r) => response(r, &Format::UnifiedText)?,
        Err(e) => Response::Error(Box::new(error_info(e))),
    })
}

#[async_trait]
impl SimpleQueryHandler for Frontend {
    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let session = Self::session(client);
        let out = self.simple_query(&session, query).await;
        let failed = match &out {
            Ok(responses) => matches!(responses.last(), Some(Response::Error(_))),
            Err(_) => true,
        };
        if failed {
            self.fail_block(&session).await;
        }
        out
    }
}

impl Frontend {
    /// A simple-protocol Query: its statements in order, stopping at the first error.
    async fn simple_query(
        &self,
        session: &Arc<Session>,
        query: &str,
    ) -> PgWireResult<Vec<Response>> {
        if let Some(parsed) = crate::keyspaces::parse(query) {
            let result = match parsed {
                Ok(create) => self.create_keyspace(session, create).await,
                Err(e) => Err(e),
            };
            return Ok(vec![simple_response(result)?]);
        }
        if let Some(parsed) = crate::maintenance::parse(query) {
            let result = match parsed {
                Ok((tag, tables)) => self.maintenance(session, tag, &tables).await,
                Err(e) => Err(e),
            };
            return Ok(vec![simple_response(result)?]);
        }
        // A statement whose shape the session knows runs as that shape, prepared.
        let shape = crate::shapes::Shape::of(query);
        let state = self.router.meta.state();
        if let Some(shape) = &shape
            && let Some(known) = session
                .shapes
                .lock()
                .ok()
                .and_then(|mut s| s.usable(&shape.text, &state))
            && let (Some(stmt), Some(params)) = (&known.prepared.stmt, shape.params(&known.types))
        {
            self.router
                .shaped_runs
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let result = self
                .run(session, stmt, &params, Some(&known.prepared))
                .await;
            return Ok(vec![simple_response(result)?]);
        }
        let stmts = match engine::sql::parse(&crate::copy::normalize_options(query)) {
            Ok(s) => s,
            Err(e) => return Ok(vec![Response::Error(Box::new(error_info(e)))]),
        };
        // Only a text of one statement has a shape to learn.
        let mut shape = shape.filter(|_| stmts.len() == 1);
        let mut out = Vec::with_capacity(stmts.len());
        for stmt in &stmts {
            if let Statement::Copy { to, .. } = stmt {
                match self.copy(session, stmt).await {
                    Ok(r) => out.push(r),
                    Err(e) => {
                        out.push(Response::Error(Box::new(error_info(e))));
                        break;
                    }
                }
                // The rest of the string would run before the COPY's data arrives.
                if !to {
                    break;
                }
                continue;
            }
            match self.run(session, stmt, &[], None).await {
                Ok(result) => {
                    if let Some(shape) = shape.take() {
                        self.learn_shape(session, shape, stmt, state.clone(), &result.columns);
                    }
                    out.push(response(result, &Format::UnifiedText)?)
                }
                Err(e) => {
                    // Later statements of the string do not run, as in PostgreSQL.
                    out.push(Response::Error(Box::new(error_info(e))));
                    break;
                }
            }
        }
        Ok(out)
    }
}

pub struct StatementParser;

#[async_trait]
impl QueryParser for StatementParser {
    type Statement = Prepared;

    async fn parse_sql<C>(
        &self,
        client: &C,
        sql: &str,
        _types: &[Option<Type>],
    ) -> PgWireResult<Option<Prepared>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        let parsed = parse_statement(sql);
        if parsed.is_err() {
            // A Parse that fails aborts the client's block, as any error does (see
            // `Frontend::fail_block`); its locks go at the ROLLBACK.
            let session = Frontend::session(client);
            if let Some(txn) = session.txn.lock().await.as_mut() {
                txn.failed = true;
            }
        }
        parsed
    }

    fn get_parameter_types(&self, stmt: &Prepared) -> PgWireResult<Vec<Type>> {
        let guard = stmt
            .described
            .lock()
            .map_err(|_| to_pg_error(Error::internal("poisoned lock")))?;
        Ok(guard
            .as_ref()
            .map(|d| d.0.iter().map(encode::pg_type).collect())
            .unwrap_or_default())
    }

    fn get_result_schema(
        &self,
        stmt: &Prepared,
        format: Option<&Format>,
    ) -> PgWireResult<Vec<FieldInfo>> {
        let guard = stmt
            .described
            .lock()
            .map_err(|_| to_pg_error(Error::internal("poisoned lock")))?;
        let format = format.cloned().unwrap_or(Format::UnifiedText);
        Ok(guard
            .as_ref()
            .map(|d| encode::field_infos(&d.1, |i| format.format_for(i)))
            .unwrap_or_default())
    }
}

/// Parses a Parse message's text into the statement it prepares.
fn parse_statement(sql: &str) -> PgWireResult<Option<Prepared>> {
    if let Some(parsed) = crate::keyspaces::parse(sql) {
        // Checked at Parse; run at Execute.
        parsed.map_err(to_pg_error)?;
        return Ok(Some(Prepared::new(
            sql,
            None,
            Some((Vec::new(), Vec::new())),
        )));
    }
    if let Some(parsed) = crate::maintenance::parse(sql) {
        // Checked at Parse, as PostgreSQL does; run at Execute (see do_query).
        parsed.map_err(to_pg_error)?;
        return Ok(Some(Prepared::new(
            sql,
            None,
            Some((Vec::new(), Vec::new())),
        )));
    }
    let mut stmts =
        engine::sql::parse(&crate::copy::normalize_options(sql)).map_err(to_pg_error)?;
    if stmts.len() > 1 {
        return Err(to_pg_error(Error::syntax(
            "cannot insert multiple commands into a prepared statement",
        )));
    }
    Ok(Some(Prepared::new(sql, stmts.pop(), None)))
}

#[async_trait]
impl ExtendedQueryHandler for Frontend {
    type Statement = Prepared;
    type QueryParser = StatementParser;

    fn query_parser(&self) -> Arc<StatementParser> {
        self.parser.clone()
    }

    async fn do_query<C>(
        &self,
        client: &mut C,
        portal: &Portal<Prepared>,
        _max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let session = Self::session(client);
        let result = self.execute_portal(&session, portal).await;
        self.failing_block_on_error(&session, result).await
    }

    async fn do_describe_statement<C>(
        &self,
        client: &mut C,
        target: &StoredStatement<Prepared>,
    ) -> PgWireResult<DescribeStatementResponse>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let session = Self::session(client);
        let result = self.describe_statement(&session, target).await;
        self.failing_block_on_error(&session, result).await
    }

    async fn do_describe_portal<C>(
        &self,
        client: &mut C,
        target: &Portal<Prepared>,
    ) -> PgWireResult<DescribePortalResponse>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let session = Self::session(client);
        let result = self.describe_portal(&session, target).await;
        self.failing_block_on_error(&session, result).await
    }
}

impl Frontend {
    /// An extended-protocol Execute of a bound portal.
    async fn execute_portal(
        &self,
        session: &Arc<Session>,
        portal: &Portal<Prepared>,
    ) -> PgWireResult<Response> {
        let prepared = &portal.statement.statement;
        if let Some(parsed) = crate::keyspaces::parse(&prepared.sql) {
            let create = parsed.map_err(to_pg_error)?;
            let result = self
                .create_keyspace(session, create)
                .await
                .map_err(to_pg_error)?;
            return response(result, &portal.result_column_format);
        }
        if let Some(parsed) = crate::maintenance::parse(&prepared.sql) {
            let (tag, tables) = parsed.map_err(to_pg_error)?;
            let result = self
                .maintenance(session, tag, &tables)
                .await
                .map_err(to_pg_error)?;
            return response(result, &portal.result_column_format);
        }
        let Some(stmt) = &prepared.stmt else {
            return Ok(Response::EmptyQuery);
        };
        if let Statement::Copy { .. } = stmt {
            return self.copy(session, stmt).await.map_err(to_pg_error);
        }
        let description = self
            .prepared_types(session, prepared)
            .await
            .map_err(to_pg_error)?;
        let described = &description.0;
        let mut params = Vec::with_capacity(portal.parameter_len());
        for i in 0..portal.parameter_len() {
            let declared = portal
                .statement
                .parameter_types
                .get(i)
                .cloned()
                .flatten()
                .and_then(|t| DataType::from_oid(t.oid()));
            let t = declared
                .or_else(|| described.get(i).copied())
                .unwrap_or(DataType::Text);
            let binary = portal.parameter_format.is_binary(i);
            params.push(
                encode::decode_param(portal.parameters[i].as_ref(), &t, binary)
                    .map_err(to_pg_error)?,
            );
        }
        let result = self
            .run(session, stmt, &params, Some(prepared))
            .await
            .map_err(to_pg_error)?;
        response(result, &portal.result_column_format)
    }

    async fn describe_statement(
        &self,
        session: &Session,
        target: &StoredStatement<Prepared>,
    ) -> PgWireResult<DescribeStatementResponse> {
        let description = self
            .prepared_types(session, &target.statement)
            .await
            .map_err(to_pg_error)?;
        let (params, columns) = (&description.0, &description.1);
        let n = params.len().max(target.parameter_types.len());
        let param_types = (0..n)
            .map(|i| {
                target
                    .parameter_types
                    .get(i)
                    .cloned()
                    .flatten()
                    .or_else(|| params.get(i).map(encode::pg_type))
                    .unwrap_or(Type::TEXT)
            })
            .collect();
        Ok(DescribeStatementResponse::new(
            param_types,
            encode::field_infos(columns, |_| pgwire::api::results::FieldFormat::Text),
        ))
    }

    async fn describe_portal(
        &self,
        session: &Session,
        target: &Portal<Prepared>,
    ) -> PgWireResult<DescribePortalResponse> {
        let description = self
            .prepared_types(session, &target.statement.statement)
            .await
            .map_err(to_pg_error)?;
        let columns = &description.1;
        let format = &target.result_column_format;
        Ok(DescribePortalResponse::new(encode::field_infos(
            columns,
            |i| format.format_for(i),
        )))
    }
}

#[async_trait]
impl StartupHandler for Frontend {
    async fn on_startup<C>(
        &self,
        client: &mut C,
        message: PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        use crate::auth::Exchange;
        use pgwire::api::PgWireConnectionState;
        use pgwire::messages::startup::Authentication;
        match message {
            PgWireFrontendMessage::Startup(ref startup) => {
                protocol_negotiation(client, startup).await?;
                save_startup_parameters_to_metadata(client, startup);
                let Some(user) = client.metadata().get("user").cloned() else {
                    return Err(fatal(
                        sqlstate::INVALID_AUTHORIZATION,
                        "no PostgreSQL user name specified in startup packet",
                    ));
                };
                let state = self.router.meta.state();
                let first = match crate::auth::begin(self.auth_method, &state, &user) {
                    None => {
                        // Trust still needs a role that may log in, once any role exists.
                        match state.roles.get(&user) {
                            None if !state.roles.is_empty() => {
                                return Err(fatal(
                                    sqlstate::INVALID_AUTHORIZATION,
                                    format!("role \"{user}\" does not exist"),
                                ));
                            }
                            Some(r) if !r.can_login => {
                                return Err(fatal(
                                    sqlstate::INVALID_AUTHORIZATION,
                                    format!("role \"{user}\" is not permitted to log in"),
                                ));
                            }
                            _ => {}
                        }
                        return self.complete_startup(client, None).await;
                    }
                    Some(Exchange::Md5 { salt, expected }) => {
                        *lock(&Self::session(client).auth) = Some(Exchange::Md5 { salt, expected });
                        Authentication::MD5Password(salt.to_vec())
                    }
                    Some(exchange) => {
                        *lock(&Self::session(client).auth) = Some(exchange);
                        Authentication::SASL(vec!["SCRAM-SHA-256".to_string()])
                    }
                };
                client.set_state(PgWireConnectionState::AuthenticationInProgress);
                client
                    .send(PgWireBackendMessage::Authentication(first))
                    .await?;
                Ok(())
            }
            PgWireFrontendMessage::PasswordMessageFamily(answer) => {
                let session = Self::session(client);
                let user = client.metadata().get("user").cloned().unwrap_or_default();
                let failed = || {
                    fatal(
                        sqlstate::INVALID_PASSWORD,
                        format!("password authentication failed for user \"{user}\""),
                    )
                };
                let exchange = lock(&session.auth).take();
                match exchange {
                    Some(Exchange::ScramStart(secret)) => {
                        // pgwire decodes this message without bounds checks.
                        if let pgwire::messages::startup::PasswordMessageFamily::Raw(body) = &answer
                        {
                            crate::wire_check::check_sasl_initial(body)
                                .map_err(|e| fatal(sqlstate::PROTOCOL_VIOLATION, e))?;
                        }
                        let initial = answer.into_sasl_initial_response()?;
                        if initial.auth_method != "SCRAM-SHA-256" {
                            return Err(fatal(
                                sqlstate::PROTOCOL_VIOLATION,
                                "client selected an invalid SASL authentication mechanism",
                            ));
                        }
                        let data = initial.data.unwrap_or_default();
                        let (server_first, next) = crate::auth::scram_first(secret, &data)
                            .map_err(|e| fatal(sqlstate::PROTOCOL_VIOLATION, e))?;
                        *lock(&session.auth) = Some(next);
                        client
                            .send(PgWireBackendMessage::Authentication(
                                Authentication::SASLContinue(Bytes::from(server_first)),
                            ))
                            .await?;
                        Ok(())
                    }
                    Some(Exchange::ScramFinal(waiting)) => {
                        let response = answer.into_sasl_response()?;
                        let server_final = waiting
                            .on_client_final_message(&response.data)
                            .map_err(|_| failed())?;
                        self.complete_startup(
                            client,
                            Some(Authentication::SASLFinal(Bytes::from(server_final))),
                        )
                        .await
                    }
                    Some(Exchange::Md5 { expected, .. }) => {
                        let password = answer.into_password()?;
                        if expected.is_empty() || password.password != expected {
                            return Err(failed());
                        }
                        self.complete_startup(client, None).await
                    }
                    None => Err(fatal(
                        sqlstate::PROTOCOL_VIOLATION,
                        "unexpected password message",
                    )),
                }
            }
            _ => Ok(()),
        }
    }
}

impl Frontend {
    /// The end of a successful startup: the session's identity, its cancel key, then
    /// AuthenticationOk, ParameterStatus, BackendKeyData and ReadyForQuery.
    async fn complete_startup<C>(
        &self,
        client: &mut C,
        final_message: Option<pgwire::messages::startup::Authentication>,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if let Some(message) = final_message {
            client
                .send(PgWireBackendMessage::Authentication(message))
                .await?;
        }
        let session = Self::session(client);
        let user = client.metadata().get("user").cloned().unwrap_or_default();
        // Only a trust login on a cluster without any role has no role (and is treated as a
        // superuser); `auth::begin` refused every other login without one.
        let state = self.router.meta.state();
        let role = state.roles.get(&user);
        let superuser = role.map_or(state.roles.is_empty(), |r| r.superuser);
        session.set_user(user.clone(), role.map(|r| r.oid), superuser);
        let pid = rand_pid();
        // The secret is random: knowing a pid must not be enough to cancel its queries.
        let secret = pgwire::messages::startup::SecretKey::I32(rand::random::<i32>());
        if let Ok(mut cancels) = self.cancels.lock() {
            cancels.retain(|_, (_, s)| s.strong_count() > 0);
            cancels.insert(pid, (secret.to_bytes(), Arc::downgrade(&session)));
        }
        session.pid.store(pid, std::sync::atomic::Ordering::Relaxed);
        client.set_pid_and_secret_key(pid, secret);
        let mut params = DefaultServerParameterProvider::default();
        params.server_version = "15.0 (Tessera)".to_string();
        params.is_superuser = superuser;
        params.application_name = client.metadata().get("application_name").cloned();
        params.session_authorization = Some(user);
        finish_authentication(client, &params).await
    }
}

/// A FATAL error: pgwire sends it and closes the connection.
fn fatal(code: &str, message: impl Into<String>) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "FATAL".to_string(),
        code.to_string(),
        message.into(),
    )))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn rand_pid() -> i32 {
    use std::sync::atomic::{AtomicI32, Ordering};
    static NEXT: AtomicI32 = AtomicI32::new(1000);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

#[async_trait]
impl CopyHandler for Frontend {
    async fn on_copy_data<C>(&self, client: &mut C, copy_data: CopyData) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let session = Self::session(client);
        let mut guard = session.copy.lock().await;
        let Some(copy) = guard.as_mut() else {
            return Ok(());
        };
        if copy.error.is_some() {
            return Ok(());
        }
        let result = match copy.own.take() {
            Some(mut own) => {
                let r = copy.data(&self.router, &mut own, &copy_data.data).await;
                copy.own = Some(own);
                r
            }
            None => {
                let mut txn = session.txn.lock().await;
                match txn.as_mut() {
                    Some(t) => copy.data(&self.router, t, &copy_data.data).await,
                    None => Err(Error::internal("COPY lost its transaction")),
                }
            }
        };
        if let Err(e) = result {
            // Reported at CopyDone; the rest of the data is read and dropped until then.
            copy.error = Some(e);
        }
        Ok(())
    }

    async fn on_copy_done<C>(&self, client: &mut C, _done: CopyDone) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let session = Self::session(client);
        let Some(mut copy) = session.copy.lock().await.take() else {
            return Err(to_pg_error(Error::new(
                sqlstate::PROTOCOL_VIOLATION,
                "CopyDone without a COPY in progress",
            )));
        };
        let error = copy.error.take();
        let rows = self
            .copy_end(&session, copy, error)
            .await
            .map_err(to_pg_error)?;
        let tag = Tag::new("COPY").with_rows(rows as usize);
        client
            .send(PgWireBackendMessage::CommandComplete(tag.into()))
            .await?;
        Ok(())
    }

    async fn on_copy_fail<C>(&self, client: &mut C, fail: CopyFail) -> PgWireError
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let session = Self::session(client);
        let error = Error::new(
            sqlstate::QUERY_CANCELED,
            format!("COPY from stdin failed: {}", fail.message),
        );
        match session.copy.lock().await.take() {
            Some(copy) => match self.copy_end(&session, copy, Some(error.clone())).await {
                Err(e) => to_pg_error(e),
                Ok(_) => to_pg_error(error),
            },
            None => to_pg_error(error),
        }
    }
}

#[async_trait]
impl CancelHandler for Frontend {
    async fn on_cancel_request(&self, request: CancelRequest) {
        let session = self.cancels.lock().ok().and_then(|c| {
            c.get(&request.pid)
                .filter(|(secret, _)| *secret == request.secret_key.to_bytes())
                .and_then(|(_, s)| s.upgrade())
        });
        if let Some(session) = session {
            session.cancel.notify_waiters();
        }
    }
}

/// The pgwire handler set for one router.
pub struct Handlers(pub Arc<Frontend>);

impl PgWireServerHandlers for Handlers {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        self.0.clone()
    }
    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        self.0.clone()
    }
    fn cancel_handler(&self) -> Arc<impl CancelHandler> {
        self.0.clone()
    }
    fn copy_handler(&self) -> Arc<impl CopyHandler> {
        self.0.clone()
    }
    fn startup_handler(&self) -> Arc<impl StartupHandler> {
        self.0.clone()
    }
}

#[allow(unused_imports)]
use SinkExt as _;

/// The string arguments of a call, when every one is a literal (`'name'`, `true`).
fn literal_args(f: &ast::Function) -> Option<Vec<String>> {
    let ast::FunctionArguments::List(l) = &f.args else {
        return None;
    };
    l.args
        .iter()
        .map(|a| match a {
            ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(ast::Expr::Value(v))) => {
                match &v.value {
                    ast::Value::SingleQuotedString(s) => Some(s.clone()),
                    ast::Value::Boolean(b) => Some(b.to_string()),
                    _ => None,
                }
            }
            _ => None,
        })
        .collect()
}

/// `current_setting(name [, missing_ok])`: the session's value, 42704 for a name Tessera does
/// not know (NULL with missing_ok). `set_config(name, value, is_local)`: SET for the session
/// (a transaction-local setting outlives the transaction here, as Tessera keeps one session
/// scope), returning the value.
fn setting_call(session: Option<&Session>, name: &str, f: &ast::Function) -> Result<ast::Value> {
    let args = literal_args(f).unwrap_or_default();
    let Some(session) = session else {
        return Ok(ast::Value::Null);
    };
    let text = |s: String| ast::Value::SingleQuotedString(s);
    match (name.ends_with("set_config"), args.as_slice()) {
        (false, [setting, rest @ ..]) if rest.len() <= 1 => {
            let missing_ok = rest.first().is_some_and(|m| m == "true");
            match session.get(setting) {
                Some(v) => Ok(text(v)),
                None if missing_ok => Ok(ast::Value::Null),
                None => Err(Error::new(
                    sqlstate::UNDEFINED_OBJECT,
                    format!("unrecognized configuration parameter \"{setting}\""),
                )),
            }
        }
        (true, [setting, value, _local]) => {
            session.set(setting, value.clone());
            Ok(text(value.clone()))
        }
        _ => Err(Error::new(
            sqlstate::UNDEFINED_FUNCTION,
            format!(
                "function {name} with {} argument(s) does not exist",
                args.len()
            ),
        )),
    }
}
