//! Sequences, evaluated at the router: `nextval`, `currval`, `setval`, `lastval`,
//! CREATE/DROP SEQUENCE, and SERIAL / IDENTITY columns.
//!
//! ```text
//!  INSERT INTO t (v) VALUES ('a'), ('b')            t.id is SERIAL (default nextval('t_id_seq'))
//!    ─► fill_serial:  INSERT INTO t (v, id) VALUES ('a', nextval('t_id_seq')), ('b', nextval(…))
//!    ─► evaluate:     each call, in order, gets its value (cache of blocks taken from meta)
//!    ─► rewrite:      INSERT INTO t (v, id) VALUES ('a', CAST(41 AS BIGINT)), ('b', CAST(42 …))
//!    ─► planned and routed like any INSERT: the key is known before routing
//! ```
//! A sequence lives in meta. A router takes a block of values at a time with a
//! compare-and-set proposal (`AllocSequence`), so no two routers — and so no two shards —
//! ever get the same value; setval bumps the sequence's generation, and every router drops
//! the values it took before. Values are unique and, through one router, increasing; across
//! routers they interleave, like PostgreSQL's sequences with CACHE > 1.
//!
//! A call is replaced by its value once per statement, so it is allowed only where it runs
//! once per occurrence: VALUES rows and SELECTs without FROM. In a query over rows, UPDATE or
//! DELETE (once per row in PostgreSQL) it is refused with 0A000, never answered wrongly.

use std::collections::{HashMap, VecDeque};
use std::ops::ControlFlow;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use protocol::cluster::{ClusterState, MetaCommand, SequenceInfo};
use protocol::error::{Error, Result, sqlstate};
use protocol::schema::QueryResult;
use protocol::{DataType, Value};
use sqlparser::ast::{
    self, Expr, FunctionArg, FunctionArgExpr, FunctionArguments, ObjectType, SelectItem, SetExpr,
    Statement,
};

use crate::dispatch::Router;
use crate::names::table_name;

tokio::task_local! {
    /// The session's sequence state for the statement being run (set by the frontend).
    pub static SESSION_SEQUENCES: Arc<Mutex<SessionSequences>>;
}

/// What currval and lastval answer in one session.
#[derive(Default)]
pub struct SessionSequences {
    current: HashMap<String, i64>,
    last: Option<i64>,
}

/// Values this router took from meta and has not handed out, per sequence and generation.
#[derive(Default)]
pub struct SequenceCache {
    blocks: Mutex<HashMap<String, (u64, VecDeque<i64>)>>,
}

/// Values a router takes per allocation at least (a Raft write each time).
const ROUTER_BLOCK: i64 = 32;

/// What `prepare` made of a statement.
pub enum Prepared {
    /// Handled whole (CREATE/DROP SEQUENCE).
    Done(QueryResult),
    /// Sequence calls replaced by values, SERIAL columns filled.
    Rewritten(Box<Statement>),
    Unchanged,
}

const FUNCTIONS: &[&str] = &["nextval", "currval", "setval", "lastval"];

fn sequence_function(f: &ast::Function) -> Option<&'static str> {
    let parts: Vec<String> = f
        .name
        .0
        .iter()
        .filter_map(|p| p.as_ident().map(|i| i.value.to_lowercase()))
        .collect();
    let name = match parts.as_slice() {
        [n] => n,
        [schema, n] if schema == "pg_catalog" => n,
        _ => return None,
    };
    FUNCTIONS.iter().copied().find(|f| f == name)
}

/// Whether an AST node calls a sequence function anywhere.
fn mentions<V: ast::Visit>(node: &V) -> bool {
    let flow = ast::visit_expressions(node, |e| match e {
        Expr::Function(f) if sequence_function(f).is_some() => ControlFlow::Break(()),
        _ => ControlFlow::Continue(()),
    });
    flow.is_break()
}

/// A sequence's canonical name from the text PostgreSQL would parse as a regclass.
pub fn canonical(text: &str) -> String {
    let text = text.trim();
    let name = match text.strip_prefix('"').and_then(|t| t.strip_suffix('"')) {
        Some(quoted) => quoted.to_string(),
        None => text.to_lowercase(),
    };
    name.strip_prefix("public.")
        .map(str::to_string)
        .unwrap_or(name)
}

/// The sequence a SERIAL/IDENTITY column default (`nextval('s'::regclass)`) draws from.
pub fn serial_sequence(default: &str) -> Option<String> {
    let rest = default.trim().strip_prefix("nextval(")?;
    let start = rest.find('\'')?;
    let end = rest[start + 1..].find('\'')?;
    Some(canonical(&rest[start + 1..start + 1 + end]))
}

fn args(f: &ast::Function) -> Vec<&Expr> {
    match &f.args {
        FunctionArguments::List(list) => list
            .args
            .iter()
            .filter_map(|a| match a {
                FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Some(e),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// A constant argument: a literal, a cast of one, or a bound parameter.
fn constant(e: &Expr, params: &[Value]) -> Result<Value> {
    match e {
        Expr::Value(v) => match &v.value {
            ast::Value::Number(n, _) => n.parse::<i64>().map(Value::Int).map_err(|_| {
                Error::new(
                    sqlstate::NUMERIC_VALUE_OUT_OF_RANGE,
                    format!("value \"{n}\" is out of range for type bigint"),
                )
            }),
            ast::Value::SingleQuotedString(s) => Ok(Value::Text(s.clone())),
            ast::Value::Boolean(b) => Ok(Value::Bool(*b)),
            ast::Value::Null => Ok(Value::Null),
            ast::Value::Placeholder(p) => {
                let i: usize = p
                    .trim_start_matches('$')
                    .parse()
                    .map_err(|_| Error::syntax(format!("bad parameter {p}")))?;
                params
                    .get(i.wrapping_sub(1))
                    .cloned()
                    .ok_or_else(|| Error::syntax(format!("there is no parameter {p}")))
            }
            _ => Err(not_constant()),
        },
        Expr::Cast { expr, .. } | Expr::Nested(expr) => constant(expr, params),
        Expr::UnaryOp {
            op: ast::UnaryOperator::Minus,
            expr,
        } => match constant(expr, params)? {
            Value::Int(i) => Ok(Value::Int(-i)),
            _ => Err(not_constant()),
        },
        _ => Err(not_constant()),
    }
}

fn not_constant() -> Error {
    Error::unsupported("sequence functions take constant arguments here")
}

fn text_value(v: &Value) -> Option<String> {
    match v {
        Value::Text(t) => Some(t.clone()),
        _ => None,
    }
}

fn int_value(v: &Value) -> Option<i64> {
    match v {
        Value::Int(i) => Some(*i),
        Value::Text(t) => t.trim().parse().ok(),
        _ => None,
    }
}

fn undefined(name: &str) -> Error {
    Error::new(
        sqlstate::UNDEFINED_TABLE,
        format!("relation \"{name}\" does not exist"),
    )
}

fn session<T>(f: impl FnOnce(&mut SessionSequences) -> T) -> Option<T> {
    SESSION_SEQUENCES
        .try_with(|s| s.lock().ok().map(|mut g| f(&mut g)))
        .ok()
        .flatten()
}

/// Refuses sequence calls where PostgreSQL would evaluate them once per row.
fn check_context(stmt: &Statement) -> Result<()> {
    let per_row = || {
        Error::unsupported(
            "nextval() and the other sequence functions are evaluated once per statement here: use them in VALUES or in a SELECT without FROM",
        )
    };
    fn set_expr_per_row(body: &SetExpr) -> bool {
        match body {
            SetExpr::Select(s) => !s.from.is_empty() && mentions(s.as_ref()),
            SetExpr::Query(q) => set_expr_per_row(&q.body),
            SetExpr::SetOperation { left, right, .. } => {
                set_expr_per_row(left) || set_expr_per_row(right)
            }
            _ => false,
        }
    }
    match stmt {
        Statement::Update(_) | Statement::Delete(_) if mentions(stmt) => Err(per_row()),
        Statement::Query(q) if set_expr_per_row(&q.body) => Err(per_row()),
        Statement::Insert(i) if i.source.as_ref().is_some_and(|q| set_expr_per_row(&q.body)) => {
            Err(per_row())
        }
        _ => Ok(()),
    }
}

/// The sequence options of CREATE SEQUENCE (or an IDENTITY column), PostgreSQL's defaults
/// filled in, validated as PostgreSQL does.
pub fn sequence_from_options(
    name: &str,
    options: &[ast::SequenceOptions],
    data_type: DataType,
    owned_by: Option<(String, String)>,
) -> Result<SequenceInfo> {
    let (type_min, type_max) = match data_type {
        DataType::Int2 => (i64::from(i16::MIN), i64::from(i16::MAX)),
        DataType::Int4 => (i64::from(i32::MIN), i64::from(i32::MAX)),
        _ => (i64::MIN, i64::MAX),
    };
    let mut increment = 1i64;
    let (mut min, mut max, mut start, mut cache, mut cycle) = (None, None, None, 1i64, false);
    let int = |e: &Expr| -> Result<i64> {
        int_value(&constant(e, &[])?).ok_or_else(|| Error::syntax("expected an integer"))
    };
    for opt in options {
        match opt {
            ast::SequenceOptions::IncrementBy(e, _) => increment = int(e)?,
            ast::SequenceOptions::MinValue(e) => min = e.as_ref().map(int).transpose()?,
            ast::SequenceOptions::MaxValue(e) => max = e.as_ref().map(int).transpose()?,
            ast::SequenceOptions::StartWith(e, _) => start = Some(int(e)?),
            ast::SequenceOptions::Cache(e) => cache = int(e)?,
            ast::SequenceOptions::Cycle(c) => cycle = !*c,
            // OWNED BY ties the sequence to a column for DROP; accepted, not tracked.
            ast::SequenceOptions::OwnedBy(_) => {}
            ast::SequenceOptions::DataType(t) => {
                let data_type = match t.to_string().to_lowercase().as_str() {
                    "smallint" | "int2" => DataType::Int2,
                    "integer" | "int" | "int4" => DataType::Int4,
                    "bigint" | "int8" => DataType::Int8,
                    _ => {
                        return Err(Error::new(
                            sqlstate::INVALID_PARAMETER_VALUE,
                            "sequence type must be smallint, integer, or bigint",
                        ));
                    }
                };
                return sequence_from_options(
                    name,
                    &options
                        .iter()
                        .filter(|o| !matches!(o, ast::SequenceOptions::DataType(_)))
                        .cloned()
                        .collect::<Vec<_>>(),
                    data_type,
                    owned_by,
                );
            }
        }
    }
    if increment == 0 {
        return Err(Error::new(
            sqlstate::INVALID_PARAMETER_VALUE,
            "INCREMENT must not be zero",
        ));
    }
    let min = min.unwrap_or(if increment > 0 { 1 } else { type_min });
    let max = max.unwrap_or(if increment > 0 { type_max } else { -1 });
    if min >= max {
        return Err(Error::new(
            sqlstate::INVALID_PARAMETER_VALUE,
            format!("MINVALUE ({min}) must be less than MAXVALUE ({max})"),
        ));
    }
    let start = start.unwrap_or(if increment > 0 { min } else { max });
    if start < min {
        return Err(Error::new(
            sqlstate::INVALID_PARAMETER_VALUE,
            format!("START value ({start}) cannot be less than MINVALUE ({min})"),
        ));
    }
    if start > max {
        return Err(Error::new(
            sqlstate::INVALID_PARAMETER_VALUE,
            format!("START value ({start}) cannot be greater than MAXVALUE ({max})"),
        ));
    }
    if cache < 1 {
        return Err(Error::new(
            sqlstate::INVALID_PARAMETER_VALUE,
            format!("CACHE ({cache}) must be greater than zero"),
        ));
    }
    Ok(SequenceInfo {
        name: name.to_string(),
        increment,
        min,
        max,
        start,
        cycle,
        cache,
        next: Some(start),
        generation: 0,
        owned_by,
    })
}

impl Router {
    /// Runs sequence DDL, fills SERIAL columns of an INSERT, and replaces sequence function
    /// calls with their values.
    pub async fn prepare_sequences(&self, stmt: &Statement, params: &[Value]) -> Result<Prepared> {
        match stmt {
            Statement::CreateSequence {
                if_not_exists,
                name,
                sequence_options,
                ..
            } => {
                let name = table_name(name);
                let seq = sequence_from_options(&name, sequence_options, DataType::Int8, None)?;
                return match self.meta.propose(MetaCommand::CreateSequence(seq)).await {
                    Ok(_) => Ok(Prepared::Done(QueryResult::command("CREATE SEQUENCE", 0))),
                    Err(e) if *if_not_exists && e.message.contains("already exists") => {
                        Ok(Prepared::Done(QueryResult::command("CREATE SEQUENCE", 0)))
                    }
                    Err(e) => Err(e),
                };
            }
            Statement::Drop {
                object_type: ObjectType::Sequence,
                if_exists,
                names,
                ..
            } => {
                for n in names {
                    let name = table_name(n);
                    match self
                        .meta
                        .propose(MetaCommand::DropSequence { name: name.clone() })
                        .await
                    {
                        Ok(_) => {}
                        Err(_) if *if_exists => {}
                        Err(_) => {
                            return Err(Error::new(
                                sqlstate::UNDEFINED_TABLE,
                                format!("sequence \"{name}\" does not exist"),
                            ));
                        }
                    }
                }
                return Ok(Prepared::Done(QueryResult::command("DROP SEQUENCE", 0)));
            }
            _ => {}
        }
        if let Statement::CreateTable(ct) = stmt
            && !self.meta.state().tables.contains_key(&table_name(&ct.name))
            && let Some((rewritten, sequences)) = serial_columns(ct)?
        {
            // Checked before anything is created, so a bad definition leaves no sequence.
            engine::sql::schema_from_create(&rewritten)?;
            for seq in sequences {
                self.meta.propose(MetaCommand::CreateSequence(seq)).await?;
            }
            return Ok(Prepared::Rewritten(Box::new(rewritten)));
        }
        let filled = match stmt {
            Statement::Insert(insert) => fill_serial(&self.meta.state(), insert)?,
            _ => None,
        };
        let stmt_ref = filled.as_ref().unwrap_or(stmt);
        if !mentions(stmt_ref) {
            return Ok(match filled {
                Some(s) => Prepared::Rewritten(Box::new(s)),
                None => Prepared::Unchanged,
            });
        }
        check_context(stmt_ref)?;
        // Evaluate every call, in the order the rewrite below visits them.
        let mut calls: Vec<(&'static str, Vec<Value>)> = Vec::new();
        let mut bad = None;
        let _ = ast::visit_expressions(stmt_ref, |e| {
            if let Expr::Function(f) = e
                && let Some(which) = sequence_function(f)
            {
                match args(f).into_iter().map(|a| constant(a, params)).collect() {
                    Ok(values) => calls.push((which, values)),
                    Err(e) => bad = Some(e),
                }
            }
            ControlFlow::<()>::Continue(())
        });
        if let Some(e) = bad {
            return Err(e);
        }
        let mut values = Vec::with_capacity(calls.len());
        for (which, args) in calls {
            values.push(self.call_sequence(which, &args).await?);
        }
        let mut stmt = stmt_ref.clone();
        name_projected_calls(&mut stmt);
        let mut next = values.into_iter();
        let _ = ast::visit_expressions_mut(&mut stmt, |e| {
            if let Expr::Function(f) = e
                && sequence_function(f).is_some()
                && let Some(v) = next.next()
            {
                *e = match v {
                    Some(v) => Expr::Cast {
                        kind: ast::CastKind::DoubleColon,
                        expr: Box::new(Expr::value(ast::Value::Number(v.to_string(), false))),
                        data_type: ast::DataType::BigInt(None),
                        format: None,
                    },
                    None => Expr::value(ast::Value::Null),
                };
            }
            ControlFlow::<()>::Continue(())
        });
        Ok(Prepared::Rewritten(Box::new(stmt)))
    }

    /// One sequence function call; `None` is SQL NULL (a NULL argument).
    async fn call_sequence(&self, which: &str, args: &[Value]) -> Result<Option<i64>> {
        let name_arg = || {
            args.first()
                .and_then(text_value)
                .map(|t| canonical(&t))
                .ok_or_else(|| {
                    Error::new(
                        sqlstate::UNDEFINED_FUNCTION,
                        format!("function {which}() needs a sequence name"),
                    )
                })
        };
        if args.first().is_some_and(|a| matches!(a, Value::Null)) {
            return Ok(None);
        }
        match which {
            "nextval" => {
                let name = name_arg()?;
                let v = self.next_value(&name).await?;
                session(|s| {
                    s.current.insert(name, v);
                    s.last = Some(v);
                });
                Ok(Some(v))
            }
            "currval" => {
                let name = name_arg()?;
                if !self.meta.state().sequences.contains_key(&name) {
                    return Err(undefined(&name));
                }
                session(|s| s.current.get(&name).copied())
                    .flatten()
                    .map(Some)
                    .ok_or_else(|| {
                        Error::new(
                            sqlstate::OBJECT_NOT_IN_PREREQUISITE_STATE,
                            format!(
                                "currval of sequence \"{name}\" is not yet defined in this session"
                            ),
                        )
                    })
            }
            "lastval" => session(|s| s.last).flatten().map(Some).ok_or_else(|| {
                Error::new(
                    sqlstate::OBJECT_NOT_IN_PREREQUISITE_STATE,
                    "lastval is not yet defined in this session",
                )
            }),
            _ => {
                let name = name_arg()?;
                let value = args
                    .get(1)
                    .and_then(int_value)
                    .ok_or_else(|| Error::syntax("setval needs a bigint value"))?;
                let called = !matches!(args.get(2), Some(Value::Bool(false)));
                let state = self.meta.state();
                let seq = state.sequences.get(&name).ok_or_else(|| undefined(&name))?;
                if value < seq.min || value > seq.max {
                    return Err(Error::new(
                        sqlstate::NUMERIC_VALUE_OUT_OF_RANGE,
                        format!(
                            "setval: value {value} is out of bounds for sequence \"{name}\" ({}..{})",
                            seq.min, seq.max
                        ),
                    ));
                }
                let next = if called {
                    let probe = SequenceInfo {
                        next: Some(value),
                        ..seq.clone()
                    };
                    probe.take(1).map(|(_, n)| n).unwrap_or(None)
                } else {
                    Some(value)
                };
                self.meta
                    .propose(MetaCommand::SetSequence {
                        name: name.clone(),
                        next,
                    })
                    .await?;
                if called {
                    session(|s| {
                        s.current.insert(name, value);
                    });
                }
                Ok(Some(value))
            }
        }
    }

    /// The next value of a sequence: from this router's block, or a new block from meta.
    pub async fn next_value(&self, name: &str) -> Result<i64> {
        for _ in 0..50 {
            let state = self.meta.state();
            let seq = state.sequences.get(name).ok_or_else(|| undefined(name))?;
            if let Ok(mut blocks) = self.sequences.blocks.lock()
                && let Some((generation, values)) = blocks.get_mut(name)
                && *generation == seq.generation
                && let Some(v) = values.pop_front()
            {
                return Ok(v);
            }
            let count = seq.cache.max(ROUTER_BLOCK);
            let (values, _) = seq.take(count).map_err(|e| Error::new("2200H", e))?;
            let cmd = MetaCommand::AllocSequence {
                name: name.to_string(),
                expect: seq.next,
                generation: seq.generation,
                count,
            };
            match self.meta.propose(cmd).await {
                Ok(_) => {
                    let mut values: VecDeque<i64> = values.into();
                    let first = values.pop_front();
                    if let Ok(mut blocks) = self.sequences.blocks.lock() {
                        blocks.insert(name.to_string(), (seq.generation, values));
                    }
                    if let Some(v) = first {
                        return Ok(v);
                    }
                }
                Err(e) if e.message.contains("moved on") => {
                    let _ = self
                        .meta
                        .wait_for_version(state.version + 1, Duration::from_millis(200))
                        .await;
                }
                Err(e) => return Err(e),
            }
        }
        Err(Error::new(
            sqlstate::SERIALIZATION_FAILURE,
            format!("could not allocate values of sequence \"{name}\" (too much contention)"),
        ))
    }
}

/// The statement as a shard can describe it: sequence calls become bigint NULLs (their
/// values are only known when the statement runs).
pub fn describe_form(stmt: &Statement) -> Option<Statement> {
    if !mentions(stmt) {
        return None;
    }
    let mut stmt = stmt.clone();
    name_projected_calls(&mut stmt);
    let _ = ast::visit_expressions_mut(&mut stmt, |e| {
        if let Expr::Function(f) = e
            && sequence_function(f).is_some()
        {
            *e = Expr::Cast {
                kind: ast::CastKind::DoubleColon,
                expr: Box::new(Expr::value(ast::Value::Null)),
                data_type: ast::DataType::BigInt(None),
                format: None,
            };
        }
        ControlFlow::<()>::Continue(())
    });
    Some(stmt)
}

/// `SELECT nextval('s')` keeps the column name PostgreSQL gives it.
fn name_projected_calls(stmt: &mut Statement) {
    let Statement::Query(q) = stmt else {
        return;
    };
    let SetExpr::Select(select) = q.body.as_mut() else {
        return;
    };
    for item in select.projection.iter_mut() {
        if let SelectItem::UnnamedExpr(Expr::Function(f)) = item
            && let Some(which) = sequence_function(f)
        {
            let expr = Expr::Function(f.clone());
            *item = SelectItem::ExprWithAlias {
                expr,
                alias: ast::Ident::new(which),
            };
        }
    }
}

fn nextval_call(sequence: &str) -> Expr {
    Expr::Function(ast::Function {
        name: ast::ObjectName::from(vec![ast::Ident::new("nextval")]),
        uses_odbc_syntax: false,
        parameters: FunctionArguments::None,
        args: FunctionArguments::List(ast::FunctionArgumentList {
            duplicate_treatment: None,
            args: vec![FunctionArg::Unnamed(FunctionArgExpr::Expr(Expr::value(
                ast::Value::SingleQuotedString(sequence.to_string()),
            )))],
            clauses: vec![],
        }),
        filter: None,
        null_treatment: None,
        over: None,
        within_group: vec![],
    })
}

fn is_default_keyword(e: &Expr) -> bool {
    matches!(e, Expr::Identifier(i) if i.quote_style.is_none() && i.value.eq_ignore_ascii_case("default"))
}

/// Gives every SERIAL/IDENTITY column an INSERT leaves out (or sets to DEFAULT) an explicit
/// `nextval(...)`, so the router knows every key before routing.
fn fill_serial(state: &ClusterState, insert: &ast::Insert) -> Result<Option<Statement>> {
    let ast::TableObject::TableName(name) = &insert.table else {
        return Ok(None);
    };
    let Some(table) = state.tables.get(&table_name(name)) else {
        return Ok(None);
    };
    let serial: Vec<(String, String)> = table
        .schema
        .user_columns()
        .filter_map(|(_, c)| {
            let seq = serial_sequence(c.default.as_deref()?)?;
            Some((c.name.clone(), seq))
        })
        .collect();
    if serial.is_empty() {
        return Ok(None);
    }
    let mut insert = insert.clone();
    let all: Vec<String> = table
        .schema
        .user_columns()
        .map(|(_, c)| c.name.clone())
        .collect();
    match insert.source.as_mut().map(|q| q.body.as_mut()) {
        None => {
            // DEFAULT VALUES: only the serial columns get values.
            insert.columns = serial
                .iter()
                .map(|(c, _)| ast::Ident::new(c).into())
                .collect();
            let row: Vec<Expr> = serial.iter().map(|(_, s)| nextval_call(s)).collect();
            insert.source = Some(Box::new(ast::Query {
                body: Box::new(SetExpr::Values(ast::Values {
                    explicit_row: false,
                    value_keyword: false,
                    rows: vec![ast::Parens::with_empty_span(row)],
                })),
                ..empty_query()
            }));
        }
        Some(SetExpr::Values(values)) => {
            if insert.columns.is_empty() {
                // Name the columns the widest row fills; the rest are left out.
                let width = values
                    .rows
                    .iter()
                    .map(|r| r.content.len())
                    .max()
                    .unwrap_or(0);
                insert.columns = all
                    .iter()
                    .take(width)
                    .map(|c| ast::Ident::new(c).into())
                    .collect();
            }
            let listed: Vec<String> = insert.columns.iter().map(table_name).collect();
            for (col, seq) in &serial {
                match listed.iter().position(|c| c == col) {
                    Some(i) => {
                        for row in values.rows.iter_mut() {
                            if row.content.get(i).is_some_and(is_default_keyword) {
                                row.content[i] = nextval_call(seq);
                            }
                        }
                    }
                    None => {
                        insert.columns.push(ast::Ident::new(col).into());
                        for row in values.rows.iter_mut() {
                            row.content.push(nextval_call(seq));
                        }
                    }
                }
            }
        }
        Some(_) => {
            let listed: Vec<String> = insert.columns.iter().map(table_name).collect();
            if !insert.columns.is_empty() && serial.iter().any(|(c, _)| !listed.contains(c)) {
                return Err(Error::unsupported(
                    "INSERT … SELECT into a table with a SERIAL or IDENTITY column must list that column",
                ));
            }
            return Ok(None);
        }
    }
    Ok(Some(Statement::Insert(insert)))
}

/// SERIAL/BIGSERIAL/SMALLSERIAL and GENERATED … AS IDENTITY columns of a CREATE TABLE: each
/// becomes int4/int8/int2 NOT NULL DEFAULT nextval('<table>_<column>_seq'), and its
/// sequence is returned for creation.
fn serial_columns(ct: &ast::CreateTable) -> Result<Option<(Statement, Vec<SequenceInfo>)>> {
    let table = table_name(&ct.name);
    let mut ct = ct.clone();
    let mut sequences = Vec::new();
    for col in ct.columns.iter_mut() {
        let serial_type = match &col.data_type {
            ast::DataType::Custom(name, mods) if mods.is_empty() => {
                match table_name(name).as_str() {
                    "serial" | "serial4" => Some((ast::DataType::Integer(None), DataType::Int4)),
                    "bigserial" | "serial8" => Some((ast::DataType::BigInt(None), DataType::Int8)),
                    "smallserial" | "serial2" => {
                        Some((ast::DataType::SmallInt(None), DataType::Int2))
                    }
                    _ => None,
                }
            }
            _ => None,
        };
        let identity = col.options.iter().position(|o| {
            matches!(
                &o.option,
                ast::ColumnOption::Generated {
                    generated_as: ast::GeneratedAs::Always | ast::GeneratedAs::ByDefault,
                    generation_expr: None,
                    ..
                }
            )
        });
        let (options, kind) = match (serial_type, identity) {
            (Some((ty, kind)), _) => {
                col.data_type = ty;
                (Vec::new(), kind)
            }
            (None, Some(i)) => {
                let opt = col.options.remove(i);
                let options = match opt.option {
                    ast::ColumnOption::Generated {
                        sequence_options, ..
                    } => sequence_options.unwrap_or_default(),
                    _ => Vec::new(),
                };
                let kind = match &col.data_type {
                    ast::DataType::SmallInt(_) | ast::DataType::Int2(_) => DataType::Int2,
                    ast::DataType::Int(_) | ast::DataType::Integer(_) | ast::DataType::Int4(_) => {
                        DataType::Int4
                    }
                    ast::DataType::BigInt(_) | ast::DataType::Int8(_) => DataType::Int8,
                    other => {
                        return Err(Error::new(
                            sqlstate::INVALID_PARAMETER_VALUE,
                            format!(
                                "identity column type must be smallint, integer, or bigint, not {other}"
                            ),
                        ));
                    }
                };
                (options, kind)
            }
            (None, None) => continue,
        };
        let column = col.name.value.to_lowercase();
        let seq_name = format!("{table}_{column}_seq");
        sequences.push(sequence_from_options(
            &seq_name,
            &options,
            kind,
            Some((table.clone(), column)),
        )?);
        let default = sqlparser::parser::Parser::new(&sqlparser::dialect::PostgreSqlDialect {})
            .try_with_sql(&format!("nextval('{seq_name}')"))
            .and_then(|mut p| p.parse_expr())
            .map_err(|e| Error::internal(format!("building a serial default: {e}")))?;
        col.options.retain(|o| {
            !matches!(
                o.option,
                ast::ColumnOption::Default(_) | ast::ColumnOption::Null
            )
        });
        col.options.push(ast::ColumnOptionDef {
            name: None,
            option: ast::ColumnOption::NotNull,
        });
        col.options.push(ast::ColumnOptionDef {
            name: None,
            option: ast::ColumnOption::Default(default),
        });
    }
    if sequences.is_empty() {
        return Ok(None);
    }
    Ok(Some((Statement::CreateTable(ct), sequences)))
}

/// A query with nothing but an empty VALUES body, to build others from.
pub(crate) fn empty_query() -> ast::Query {
    ast::Query {
        with: None,
        body: Box::new(SetExpr::Values(ast::Values {
            explicit_row: false,
            value_keyword: false,
            rows: vec![],
        })),
        order_by: None,
        limit_clause: None,
        fetch: None,
        locks: vec![],
        for_clause: None,
        settings: None,
        format_clause: None,
        pipe_operators: vec![],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_defaults() {
        assert_eq!(canonical("Public.S"), "s");
        assert_eq!(canonical("\"My Seq\""), "My Seq");
        assert_eq!(
            serial_sequence("nextval('t_id_seq'::regclass)").as_deref(),
            Some("t_id_seq")
        );
        assert_eq!(serial_sequence("42"), None);
    }

    #[test]
    fn take_stops_at_the_end_or_cycles() {
        let mut s = sequence_from_options("s", &[], DataType::Int2, None).unwrap();
        s.max = 3;
        let (v, next) = s.take(5).unwrap();
        assert_eq!((v, next), (vec![1, 2, 3], None));
        s.next = None;
        assert!(s.take(1).unwrap_err().contains("reached maximum value"));
        s.cycle = true;
        s.next = Some(3);
        assert_eq!(s.take(3).unwrap(), (vec![3, 1, 2], Some(3)));
    }

    #[test]
    fn per_row_calls_are_refused() {
        for (sql, ok) in [
            ("SELECT nextval('s')", true),
            ("INSERT INTO t VALUES (nextval('s'))", true),
            ("SELECT nextval('s') FROM t", false),
            ("UPDATE t SET a = nextval('s')", false),
            ("INSERT INTO t SELECT nextval('s') FROM u", false),
            ("SELECT a FROM t", true),
        ] {
            let stmt = engine::sql::parse(sql).unwrap().remove(0);
            assert_eq!(check_context(&stmt).is_ok(), ok, "{sql}");
        }
    }
}
