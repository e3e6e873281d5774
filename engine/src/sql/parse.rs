//! Parsing and the small translations from sqlparser's AST vocabulary into Tessera's.
//!
//! sqlparser keeps identifiers as written; PostgreSQL folds unquoted identifiers to lower case,
//! so every name the executor compares goes through [`ident`] or [`object_name`]. Type names in
//! DDL and casts map onto the handful of `DataType`s Tessera stores.

use protocol::{DataType, Error, Result};
use sqlparser::ast::visit_expressions_mut;
use sqlparser::ast::{self, CharacterLength, ExactNumberInfo, Ident, ObjectName, ObjectNamePart};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;
use sqlparser::tokenizer::{Token, TokenWithSpan, Tokenizer};
use std::ops::ControlFlow;

/// Parses one or more statements; any syntax error becomes SQLSTATE 42601.
pub fn parse(sql: &str) -> Result<Vec<ast::Statement>> {
    let dialect = PostgreSqlDialect {};
    let tokens = Tokenizer::new(&dialect, sql)
        .tokenize_with_location()
        .map_err(|e| Error::syntax(parser_message(e.into())))?;
    let (tokens, symmetric) = mark_between_symmetric(tokens);
    let (tokens, create_users) = create_user_as_role(tokens);
    let mut stmts = Parser::new(&dialect)
        .with_tokens_with_locations(tokens)
        .parse_statements()
        .map_err(|e| {
            // Errors are rare: tokenize again to find the token the parser stopped at.
            let tokens = Tokenizer::new(&dialect, sql)
                .tokenize_with_location()
                .unwrap_or_default();
            syntax_error(e, sql, &tokens)
        })?;
    for i in create_users {
        if let Some(ast::Statement::CreateRole(role)) = stmts.get_mut(i) {
            role.login.get_or_insert(true);
        }
    }
    if symmetric {
        let _ = visit_expressions_mut(&mut stmts, |e| {
            rewrite_between_symmetric(e);
            ControlFlow::<()>::Continue(())
        });
    }
    for stmt in &mut stmts {
        with_before_insert(stmt);
        refuse_with_before_other_writes(stmt)?;
    }
    Ok(stmts)
}

/// A WITH before an UPDATE, a DELETE, a MERGE or an INSERT that `with_before_insert` could
/// not move is 0A000: sqlparser reads it as a query, which would be run as a read and
/// refused with a misleading 25006.
fn refuse_with_before_other_writes(stmt: &ast::Statement) -> Result<()> {
    // A data-modifying CTE runs in PostgreSQL even when nothing reads it; the executor binds
    // a CTE only where it is read, so it would be skipped without a word.
    let with = match stmt {
        ast::Statement::Query(q) => q.with.as_ref(),
        ast::Statement::Insert(i) => i.source.as_ref().and_then(|s| s.with.as_ref()),
        _ => None,
    };
    if with.is_some_and(modifies_data) {
        return Err(Error::unsupported(
            "data-modifying statements in WITH are not supported",
        ));
    }
    let ast::Statement::Query(q) = stmt else {
        return Ok(());
    };
    let what = match q.body.as_ref() {
        ast::SetExpr::Insert(_) => {
            "INSERT … VALUES, an INSERT whose ON CONFLICT or RETURNING names a CTE, or one after a data-modifying CTE"
        }
        ast::SetExpr::Update(_) => "UPDATE",
        ast::SetExpr::Delete(_) => "DELETE",
        ast::SetExpr::Merge(_) => "MERGE",
        _ => return Ok(()),
    };
    Err(Error::unsupported(format!(
        "WITH before {what} is not supported; put the WITH inside a subquery"
    )))
}

/// True if one of the CTEs is a data-modifying statement.
fn modifies_data(with: &ast::With) -> bool {
    with.cte_tables.iter().any(|cte| {
        matches!(
            cte.query.body.as_ref(),
            ast::SetExpr::Insert(_)
                | ast::SetExpr::Update(_)
                | ast::SetExpr::Delete(_)
                | ast::SetExpr::Merge(_)
        )
    })
}

/// `WITH x AS (…) INSERT INTO t SELECT … FROM x` becomes `INSERT INTO t WITH x AS (…) SELECT
/// … FROM x`, which the executor runs. sqlparser reads the first as a query whose body is an
/// INSERT, which the router took for a read. The two mean the same in PostgreSQL only when
/// nothing but the source query can use the CTEs, so the move is made only when every CTE is
/// a plain query (a data-modifying one runs even if unused, which a moved one would not) and
/// neither ON CONFLICT nor RETURNING mentions a CTE's name (after the move they could not see
/// it, and might read a table of that name instead). Left alone, and so refused, otherwise,
/// and when the INSERT's own query already has a WITH, or takes VALUES, or the outer query
/// has anything but the WITH.
fn with_before_insert(stmt: &mut ast::Statement) {
    let ast::Statement::Query(q) = stmt else {
        return;
    };
    let Some(with) = q.with.as_ref() else {
        return;
    };
    let plain_outer = q.order_by.is_none()
        && q.limit_clause.is_none()
        && q.fetch.is_none()
        && q.locks.is_empty()
        && q.for_clause.is_none()
        && q.settings.is_none()
        && q.format_clause.is_none()
        && q.pipe_operators.is_empty();
    if !plain_outer || modifies_data(with) {
        return;
    }
    let ast::SetExpr::Insert(ast::Statement::Insert(insert)) = q.body.as_mut() else {
        return;
    };
    let names: Vec<String> = with
        .cte_tables
        .iter()
        .map(|cte| cte.alias.name.value.to_lowercase())
        .collect();
    let mut elsewhere = String::new();
    if let Some(on) = &insert.on {
        elsewhere.push_str(&on.to_string());
    }
    for item in insert.returning.iter().flatten() {
        elsewhere.push(' ');
        elsewhere.push_str(&item.to_string());
    }
    let mentioned = elsewhere
        .split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .any(|word| names.contains(&word.to_lowercase()));
    if mentioned {
        return;
    }
    let Some(source) = insert.source.as_mut() else {
        return;
    };
    if source.with.is_some() || matches!(source.body.as_ref(), ast::SetExpr::Values(_)) {
        return;
    }
    source.with = q.with.take();
    let ast::SetExpr::Insert(inner) = std::mem::replace(
        q.body.as_mut(),
        ast::SetExpr::Values(ast::Values {
            explicit_row: false,
            value_keyword: false,
            rows: Vec::new(),
        }),
    ) else {
        return;
    };
    *stmt = inner;
}

/// PostgreSQL's `CREATE USER` is `CREATE ROLE` with LOGIN by default; sqlparser reads it as
/// Snowflake's statement. The USER keyword becomes ROLE here, and the indexes of the
/// statements so changed are returned so LOGIN can be defaulted after parsing.
fn create_user_as_role(mut tokens: Vec<TokenWithSpan>) -> (Vec<TokenWithSpan>, Vec<usize>) {
    let word = |t: &Token, kw: &str| matches!(t, Token::Word(w) if w.quote_style.is_none() && w.value.eq_ignore_ascii_case(kw));
    let mut changed = Vec::new();
    let mut statement = 0usize;
    let mut at_start = true;
    let mut i = 0;
    while i < tokens.len() {
        match &tokens[i].token {
            Token::Whitespace(_) => {}
            Token::SemiColon => {
                if !at_start {
                    statement += 1;
                }
                at_start = true;
            }
            t => {
                if at_start && word(t, "create") {
                    let next: Vec<usize> = (i + 1..tokens.len())
                        .filter(|&j| !matches!(tokens[j].token, Token::Whitespace(_)))
                        .take(2)
                        .collect();
                    if let [user, after] = next[..]
                        && word(&tokens[user].token, "user")
                        && !word(&tokens[after].token, "mapping")
                    {
                        tokens[user].token = Token::make_keyword("ROLE");
                        changed.push(statement);
                    }
                }
                at_start = false;
            }
        }
        i += 1;
    }
    (tokens, changed)
}

/// sqlparser does not know `BETWEEN [A]SYMMETRIC`. ASYMMETRIC is the default and is dropped;
/// SYMMETRIC becomes a `!!` prefix on the low bound, an operator PostgreSQL 15 no longer has
/// and that the statement did not use itself, which [`rewrite_between_symmetric`] removes
/// again after parsing. Returns whether any SYMMETRIC was marked.
fn mark_between_symmetric(tokens: Vec<TokenWithSpan>) -> (Vec<TokenWithSpan>, bool) {
    let is_word = |t: &Token, kw: &str| matches!(t, Token::Word(w) if w.quote_style.is_none() && w.value.eq_ignore_ascii_case(kw));
    let mentions = tokens
        .iter()
        .any(|t| is_word(&t.token, "symmetric") || is_word(&t.token, "asymmetric"));
    if !mentions
        || tokens
            .iter()
            .any(|t| t.token == Token::DoubleExclamationMark)
    {
        return (tokens, false);
    }
    let mut out: Vec<TokenWithSpan> = Vec::with_capacity(tokens.len());
    let mut marked = false;
    for t in tokens {
        let after_between = out
            .iter()
            .rev()
            .find(|p| !matches!(p.token, Token::Whitespace(_)))
            .is_some_and(|p| is_word(&p.token, "between"));
        if after_between && is_word(&t.token, "asymmetric") {
            continue;
        }
        if after_between && is_word(&t.token, "symmetric") {
            marked = true;
            out.push(TokenWithSpan {
                token: Token::DoubleExclamationMark,
                span: t.span,
            });
            continue;
        }
        out.push(t);
    }
    (out, marked)
}

/// Turns a BETWEEN whose low bound carries the SYMMETRIC mark into PostgreSQL's own
/// expansion: `(x BETWEEN a AND b) OR (x BETWEEN b AND a)`, and for NOT BETWEEN
/// `(x NOT BETWEEN a AND b) AND (x NOT BETWEEN b AND a)`.
fn rewrite_between_symmetric(e: &mut ast::Expr) {
    let ast::Expr::Between {
        expr,
        negated,
        low,
        high,
    } = e
    else {
        return;
    };
    // The mark binds tighter than the operators that can follow it inside the low bound, so
    // it sits on the bound's left spine.
    let mut spine: &mut ast::Expr = low;
    loop {
        match spine {
            ast::Expr::BinaryOp { left, .. } => spine = left,
            ast::Expr::UnaryOp {
                op: ast::UnaryOperator::PGPrefixFactorial,
                expr: inner,
            } => {
                let inner = std::mem::replace(inner.as_mut(), ast::Expr::value(ast::Value::Null));
                *spine = inner;
                break;
            }
            _ => return,
        }
    }
    let between = |low: &ast::Expr, high: &ast::Expr| {
        ast::Expr::Nested(Box::new(ast::Expr::Between {
            expr: expr.clone(),
            negated: *negated,
            low: Box::new(low.clone()),
            high: Box::new(high.clone()),
        }))
    };
    let op = if *negated {
        ast::BinaryOperator::And
    } else {
        ast::BinaryOperator::Or
    };
    *e = ast::Expr::Nested(Box::new(ast::Expr::BinaryOp {
        left: Box::new(between(low, high)),
        op,
        right: Box::new(between(high, low)),
    }));
}

/// Parses a lone expression, as stored in a column's DEFAULT.
pub fn parse_expr(sql: &str) -> Result<ast::Expr> {
    let dialect = PostgreSqlDialect {};
    Parser::new(&dialect)
        .try_with_sql(sql)
        .and_then(|mut p| p.parse_expr())
        .map_err(|e| Error::syntax(parser_message(e)))
}

/// A parser error in PostgreSQL's words: `syntax error at or near "<token>"`, quoting the
/// token as written, or `syntax error at end of input`.
fn syntax_error(e: sqlparser::parser::ParserError, sql: &str, tokens: &[TokenWithSpan]) -> Error {
    let sqlparser::parser::ParserError::ParserError(m) = &e else {
        return Error::syntax(parser_message(e));
    };
    if m.ends_with("found: EOF") {
        return Error::syntax("syntax error at end of input");
    }
    let near = m
        .rsplit_once(" at Line: ")
        .and_then(|(_, at)| {
            let (line, column) = at.split_once(", Column: ")?;
            Some((line.parse::<u64>().ok()?, column.parse::<u64>().ok()?))
        })
        .and_then(|(line, column)| {
            let t = tokens
                .iter()
                .find(|t| t.span.start.line == line && t.span.start.column == column)?;
            let start = byte_offset(sql, t.span.start)?;
            let end = byte_offset(sql, t.span.end)?;
            sql.get(start..end).map(str::to_string)
        });
    match near {
        Some(text) if !text.is_empty() => {
            Error::syntax(format!("syntax error at or near \"{text}\""))
        }
        _ => Error::syntax(parser_message(e)),
    }
}

/// The byte offset of a tokenizer location (1-based line, 1-based column counted in chars).
fn byte_offset(sql: &str, loc: sqlparser::tokenizer::Location) -> Option<usize> {
    let (mut line, mut column) = (1u64, 1u64);
    for (i, c) in sql.char_indices() {
        if line == loc.line && column == loc.column {
            return Some(i);
        }
        if c == '\n' {
            line += 1;
            column = 1;
        } else {
            column += 1;
        }
    }
    (line == loc.line && column == loc.column).then_some(sql.len())
}

fn parser_message(e: sqlparser::parser::ParserError) -> String {
    use sqlparser::parser::ParserError::*;
    match e {
        TokenizerError(m) | ParserError(m) => format!("syntax error: {m}"),
        RecursionLimitExceeded => "syntax error: statement is nested too deeply".into(),
    }
}

/// An identifier as PostgreSQL sees it: unquoted names fold to lower case.
pub fn ident(i: &Ident) -> String {
    if i.quote_style.is_some() {
        i.value.clone()
    } else {
        i.value.to_lowercase()
    }
}

/// The parts of a possibly qualified name, folded.
pub fn name_parts(name: &ObjectName) -> Result<Vec<String>> {
    name.0
        .iter()
        .map(|part| match part {
            ObjectNamePart::Identifier(i) => Ok(ident(i)),
            ObjectNamePart::Function(_) => {
                Err(Error::unsupported(format!("name {name} is not supported")))
            }
        })
        .collect()
}

/// A table or function name. Tessera has one schema, so `public.` (and `pg_catalog.` for
/// functions) qualify nothing; any other schema names an object that does not exist here.
pub fn object_name(name: &ObjectName) -> Result<String> {
    let parts = name_parts(name)?;
    match parts.as_slice() {
        [n] => Ok(n.clone()),
        [schema, n] if schema == "public" || schema == "pg_catalog" => Ok(n.clone()),
        _ => Err(Error::undefined_table(&parts.join("."))),
    }
}

/// Maps a SQL type name onto a storable type.
pub fn data_type(t: &ast::DataType) -> Result<DataType> {
    use ast::DataType as T;
    Ok(match t {
        T::SmallInt(_) | T::Int2(_) => DataType::Int2,
        T::Int(_) | T::Integer(_) | T::Int4(_) => DataType::Int4,
        T::BigInt(_) | T::Int8(_) => DataType::Int8,
        T::Real | T::Float4 => DataType::Float4,
        T::DoublePrecision | T::Float8 | T::Double(ExactNumberInfo::None) => DataType::Float8,
        // float(p) is real for p <= 24, as in PostgreSQL.
        T::Float(ExactNumberInfo::Precision(p)) if *p <= 24 => DataType::Float4,
        T::Float(_) => DataType::Float8,
        T::Text | T::String(None) => DataType::Text,
        T::Varchar(len) | T::CharacterVarying(len) | T::CharVarying(len) => match len {
            None => DataType::Varchar(None),
            Some(CharacterLength::IntegerLength { length, .. }) => {
                let n = u32::try_from(*length)
                    .ok()
                    .filter(|n| *n >= 1 && *n <= 10_485_760)
                    .ok_or_else(|| {
                        Error::new(
                            protocol::sqlstate::INVALID_PARAMETER_VALUE,
                            "length for type varchar must be between 1 and 10485760",
                        )
                    })?;
                DataType::Varchar(Some(n))
            }
            Some(CharacterLength::Max) => DataType::Varchar(None),
        },
        T::Bool | T::Boolean => DataType::Bool,
        T::Bytea => DataType::Bytea,
        T::Numeric(info) | T::Decimal(info) | T::Dec(info) => match info {
            ExactNumberInfo::None => DataType::Numeric(None),
            ExactNumberInfo::Precision(p) => numeric_typmod(*p as i64, 0)?,
            ExactNumberInfo::PrecisionAndScale(p, s) => numeric_typmod(*p as i64, *s)?,
        },
        T::Date => DataType::Date,
        T::Time(_, ast::TimezoneInfo::None | ast::TimezoneInfo::WithoutTimeZone) => DataType::Time,
        T::Timestamp(_, ast::TimezoneInfo::None | ast::TimezoneInfo::WithoutTimeZone) => {
            DataType::Timestamp
        }
        T::Timestamp(_, ast::TimezoneInfo::WithTimeZone | ast::TimezoneInfo::Tz) => {
            DataType::TimestampTz
        }
        T::Interval { .. } => DataType::Interval,
        T::Uuid => DataType::Uuid,
        T::JSON => DataType::Json,
        T::JSONB => DataType::Jsonb,
        T::Char(len) | T::Character(len) => match len {
            None => DataType::Bpchar(Some(1)),
            Some(CharacterLength::IntegerLength { length, .. }) => {
                DataType::Bpchar(Some(char_length(*length)?))
            }
            Some(CharacterLength::Max) => DataType::Bpchar(None),
        },
        T::Custom(name, mods) => {
            let parts = name_parts(name)?;
            let last = match parts.as_slice() {
                [n] => n.as_str(),
                [schema, n] if schema == "pg_catalog" => n.as_str(),
                _ => return Err(custom_type_error(t, &parts)),
            };
            match (last, mods.is_empty()) {
                ("int2", true) => DataType::Int2,
                ("int4", true) => DataType::Int4,
                ("int8", true) => DataType::Int8,
                ("float4", true) => DataType::Float4,
                ("float8", true) => DataType::Float8,
                ("bool", true) => DataType::Bool,
                ("text", true) => DataType::Text,
                ("varchar", true) => DataType::Varchar(None),
                ("numeric" | "decimal", true) => DataType::Numeric(None),
                ("numeric" | "decimal", false) => {
                    let m: Vec<i64> = mods
                        .iter()
                        .map(|m| m.to_string().trim().parse::<i64>())
                        .collect::<std::result::Result<_, _>>()
                        .map_err(|_| custom_type_error(t, &parts))?;
                    match m.as_slice() {
                        [p] => numeric_typmod(*p, 0)?,
                        [p, s] => numeric_typmod(*p, *s)?,
                        _ => return Err(custom_type_error(t, &parts)),
                    }
                }
                ("date", true) => DataType::Date,
                ("time", true) => DataType::Time,
                ("timestamp", true) => DataType::Timestamp,
                ("timestamptz", true) => DataType::TimestampTz,
                ("interval", true) => DataType::Interval,
                ("uuid", true) => DataType::Uuid,
                ("json", true) => DataType::Json,
                ("jsonb", true) => DataType::Jsonb,
                ("bpchar", true) => DataType::Bpchar(None),
                // The array types' internal names, and the catalogs' vector types (which
                // Tessera shows as ordinary arrays).
                ("oid", true) => DataType::Oid,
                ("int2vector", true) => DataType::Vector(protocol::value::array::Elem::Int2),
                ("oidvector", true) => DataType::Vector(protocol::value::array::Elem::Oid),
                // One level only: `_int4` is int4[]; `__int4` would be an array of arrays.
                (n, true) if n.starts_with('_') && !n[1..].starts_with('_') => {
                    let elem = ast::DataType::Custom(
                        ast::ObjectName::from(vec![ast::Ident::new(&n[1..])]),
                        vec![],
                    );
                    array_of(data_type(&elem)?, t)?
                }
                ("bpchar", false) => match mods.as_slice() {
                    [n] => DataType::Bpchar(Some(char_length(
                        n.to_string()
                            .trim()
                            .parse()
                            .map_err(|_| custom_type_error(t, &parts))?,
                    )?)),
                    _ => return Err(custom_type_error(t, &parts)),
                },
                _ => return Err(custom_type_error(t, &parts)),
            }
        }
        T::Array(ast::ArrayElemTypeDef::SquareBracket(inner, _)) => array_of(data_type(inner)?, t)?,
        _ => return Err(unsupported_type(t)),
    })
}

/// numeric(p, s): PostgreSQL's limits on the modifiers (a negative scale, which PostgreSQL 15
/// allows, is not supported here).
fn numeric_typmod(p: i64, s: i64) -> Result<DataType> {
    if !(1..=1000).contains(&p) {
        return Err(Error::new(
            protocol::sqlstate::INVALID_PARAMETER_VALUE,
            format!("NUMERIC precision {p} must be between 1 and 1000"),
        ));
    }
    if s < 0 || s > p {
        return Err(Error::new(
            protocol::sqlstate::INVALID_PARAMETER_VALUE,
            format!("NUMERIC scale {s} must be between 0 and precision {p}"),
        ));
    }
    Ok(DataType::Numeric(Some((p as u32, s as u32))))
}

fn char_length(length: u64) -> Result<u32> {
    u32::try_from(length)
        .ok()
        .filter(|n| *n >= 1 && *n <= 10_485_760)
        .ok_or_else(|| {
            Error::new(
                protocol::sqlstate::INVALID_PARAMETER_VALUE,
                "length for type char must be between 1 and 10485760",
            )
        })
}

/// Built-in PostgreSQL type names (and their aliases) that Tessera does not store: using one
/// is 0A000, while a name PostgreSQL would not know either is 42704.
const OTHER_POSTGRES_TYPES: &[&str] = &[
    "bit",
    "box",
    "char",
    "cid",
    "cidr",
    "circle",
    "citext",
    "daterange",
    "float",
    "inet",
    "int",
    "int4range",
    "int8range",
    "integer",
    "jsonpath",
    "line",
    "lseg",
    "macaddr",
    "macaddr8",
    "money",
    "name",
    "numrange",
    "oid",
    "path",
    "pg_lsn",
    "point",
    "polygon",
    "regclass",
    "regproc",
    "regtype",
    "serial",
    "serial2",
    "serial4",
    "serial8",
    "bigserial",
    "smallserial",
    "tid",
    "timetz",
    "tsquery",
    "tsrange",
    "tstzrange",
    "tsvector",
    "txid_snapshot",
    "varbit",
    "xid",
    "xid8",
    "xml",
    "record",
    "void",
    "anyelement",
];

/// The error for a type name sqlparser did not recognise: PostgreSQL's "does not exist" for a
/// name that is no type at all, "not supported" for a real type Tessera does not store. The
/// built-in types live in `pg_catalog`; `public` holds no types, and no other schema exists.
fn custom_type_error(t: &ast::DataType, parts: &[String]) -> Error {
    let does_not_exist = || {
        Error::new(
            protocol::sqlstate::UNDEFINED_OBJECT,
            format!("type \"{}\" does not exist", parts.join(".")),
        )
    };
    let builtin = |n: &String| {
        if OTHER_POSTGRES_TYPES.contains(&n.as_str()) {
            unsupported_type(t)
        } else {
            does_not_exist()
        }
    };
    match parts {
        [n] => builtin(n),
        [schema, n] if schema == "pg_catalog" => builtin(n),
        [schema, _] if schema == "public" => does_not_exist(),
        [schema, _] => Error::new("3F000", format!("schema \"{schema}\" does not exist")),
        _ => unsupported_type(t),
    }
}

/// The array type of `elem`.
fn array_of(elem: DataType, t: &ast::DataType) -> Result<DataType> {
    protocol::value::array::Elem::of(elem)
        .map(DataType::Array)
        .ok_or_else(|| unsupported_type(t))
}

/// A column's type for a stored table: arrays are values in queries, not stored columns.
pub fn column_type(t: &ast::DataType) -> Result<DataType> {
    match data_type(t)? {
        DataType::Array(_) | DataType::Vector(_) => Err(Error::unsupported(format!(
            "array columns are not supported (type {})",
            t.to_string().to_lowercase()
        ))),
        ty => Ok(ty),
    }
}

fn unsupported_type(t: &ast::DataType) -> Error {
    Error::unsupported(format!(
        "type {} is not supported",
        t.to_string().to_lowercase()
    ))
}

/// The name PostgreSQL gives a cast's output column (`SELECT 1::int` is named `int4`).
pub fn internal_type_name(t: &DataType) -> &'static str {
    match t {
        DataType::Bool => "bool",
        DataType::Int2 => "int2",
        DataType::Int4 => "int4",
        DataType::Int8 => "int8",
        DataType::Float4 => "float4",
        DataType::Float8 => "float8",
        DataType::Text => "text",
        DataType::Varchar(_) => "varchar",
        DataType::Bytea => "bytea",
        DataType::Numeric(_) => "numeric",
        DataType::Date => "date",
        DataType::Time => "time",
        DataType::Timestamp => "timestamp",
        DataType::TimestampTz => "timestamptz",
        DataType::Interval => "interval",
        DataType::Uuid => "uuid",
        DataType::Json => "json",
        DataType::Jsonb => "jsonb",
        DataType::Bpchar(_) => "bpchar",
        DataType::Array(_) => "array",
        DataType::Vector(protocol::value::array::Elem::Int2) => "int2vector",
        DataType::Vector(_) => "oidvector",
        DataType::Oid => "oid",
    }
}

/// A placeholder's 1-based number, from `$n`.
pub fn placeholder_index(p: &str) -> Result<usize> {
    p.strip_prefix('$')
        .and_then(|n| n.parse::<usize>().ok())
        .filter(|n| *n >= 1)
        .ok_or_else(|| Error::syntax(format!("syntax error at or near \"{p}\"")))
}
