//! Parsing and the small translations from sqlparser's AST vocabulary into Tessera's.
//!
//! sqlparser keeps identifiers as written; PostgreSQL folds unquoted identifiers to lower case,
//! so every name the executor compares goes through [`ident`] or [`object_name`]. Type names in
//! DDL and casts map onto the handful of `DataType`s Tessera stores.

use protocol::{DataType, Error, Result};
use sqlparser::ast::{self, CharacterLength, ExactNumberInfo, Ident, ObjectName, ObjectNamePart};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

/// Parses one or more statements; any syntax error becomes SQLSTATE 42601.
pub fn parse(sql: &str) -> Result<Vec<ast::Statement>> {
    Parser::parse_sql(&PostgreSqlDialect {}, sql).map_err(|e| Error::syntax(parser_message(e)))
}

/// Parses a lone expression, as stored in a column's DEFAULT.
pub fn parse_expr(sql: &str) -> Result<ast::Expr> {
    let dialect = PostgreSqlDialect {};
    Parser::new(&dialect)
        .try_with_sql(sql)
        .and_then(|mut p| p.parse_expr())
        .map_err(|e| Error::syntax(parser_message(e)))
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
        T::Custom(name, mods) if mods.is_empty() => {
            let parts = name_parts(name)?;
            match parts.last().map(String::as_str) {
                Some("int2") => DataType::Int2,
                Some("int4") => DataType::Int4,
                Some("int8") => DataType::Int8,
                Some("float4") => DataType::Float4,
                Some("float8") => DataType::Float8,
                Some("bool") => DataType::Bool,
                Some("text") => DataType::Text,
                Some("varchar") => DataType::Varchar(None),
                _ => return Err(unsupported_type(t)),
            }
        }
        _ => return Err(unsupported_type(t)),
    })
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
    }
}

/// A placeholder's 1-based number, from `$n`.
pub fn placeholder_index(p: &str) -> Result<usize> {
    p.strip_prefix('$')
        .and_then(|n| n.parse::<usize>().ok())
        .filter(|n| *n >= 1)
        .ok_or_else(|| Error::syntax(format!("syntax error at or near \"{p}\"")))
}
