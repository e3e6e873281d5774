//! One-dimensional arrays: `DataType::Array(elem)` and `Value::Array(elements)`.
//!
//! Arrays exist for what clients and catalogs need of them: `ARRAY[…]`, `'{…}'::int[]`,
//! subscripts, `= ANY (array)`, `array_agg`, `unnest` and the array columns of pg_catalog
//! (`conkey`, `indkey`, …) that drivers' reflection reads. They are values in queries and
//! results, not a column type for stored tables (CREATE TABLE refuses them): a stored row, a
//! key and a shard hash never hold one.
//!
//! Like PostgreSQL's `array_out`, the text form is `{e1,e2,…}` with an element quoted
//! (`"…"`, `\` escaping `"` and `\`) when it is empty, `NULL` in any case, or holds a
//! brace, comma, quote, backslash or white space; a NULL element is a bare `NULL`.
//! Subscripts start at 1; multi-dimensional arrays are refused (0A000).

use serde::{Deserialize, Serialize};

use super::{DataType, Value};
use crate::error::{Error, Result, sqlstate};

/// The element type of an array: the scalar types without their type modifiers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Elem {
    Bool,
    Int2,
    Int4,
    Int8,
    Float4,
    Float8,
    Text,
    Varchar,
    Bytea,
    Numeric,
    Date,
    Time,
    Timestamp,
    TimestampTz,
    Interval,
    Uuid,
    Json,
    Jsonb,
    Bpchar,
    Oid,
}

impl Elem {
    /// The element type of arrays of `t`; `None` for an array type (no arrays of arrays).
    pub fn of(t: DataType) -> Option<Elem> {
        Some(match t {
            DataType::Bool => Elem::Bool,
            DataType::Int2 => Elem::Int2,
            DataType::Int4 => Elem::Int4,
            DataType::Int8 => Elem::Int8,
            DataType::Float4 => Elem::Float4,
            DataType::Float8 => Elem::Float8,
            DataType::Text => Elem::Text,
            DataType::Varchar(_) => Elem::Varchar,
            DataType::Bytea => Elem::Bytea,
            DataType::Numeric(_) => Elem::Numeric,
            DataType::Date => Elem::Date,
            DataType::Time => Elem::Time,
            DataType::Timestamp => Elem::Timestamp,
            DataType::TimestampTz => Elem::TimestampTz,
            DataType::Interval => Elem::Interval,
            DataType::Uuid => Elem::Uuid,
            DataType::Json => Elem::Json,
            DataType::Jsonb => Elem::Jsonb,
            DataType::Bpchar(_) => Elem::Bpchar,
            DataType::Oid => Elem::Oid,
            DataType::Array(_) | DataType::Vector(_) => return None,
        })
    }

    /// The scalar type of the elements.
    pub fn scalar(self) -> DataType {
        match self {
            Elem::Bool => DataType::Bool,
            Elem::Int2 => DataType::Int2,
            Elem::Int4 => DataType::Int4,
            Elem::Int8 => DataType::Int8,
            Elem::Float4 => DataType::Float4,
            Elem::Float8 => DataType::Float8,
            Elem::Text => DataType::Text,
            Elem::Varchar => DataType::Varchar(None),
            Elem::Bytea => DataType::Bytea,
            Elem::Numeric => DataType::Numeric(None),
            Elem::Date => DataType::Date,
            Elem::Time => DataType::Time,
            Elem::Timestamp => DataType::Timestamp,
            Elem::TimestampTz => DataType::TimestampTz,
            Elem::Interval => DataType::Interval,
            Elem::Uuid => DataType::Uuid,
            Elem::Json => DataType::Json,
            Elem::Jsonb => DataType::Jsonb,
            Elem::Bpchar => DataType::Bpchar(None),
            Elem::Oid => DataType::Oid,
        }
    }

    /// The array type's OID (pg_type.typarray of the element type).
    pub fn array_oid(self) -> u32 {
        match self {
            Elem::Bool => 1000,
            Elem::Bytea => 1001,
            Elem::Int2 => 1005,
            Elem::Int4 => 1007,
            Elem::Text => 1009,
            Elem::Bpchar => 1014,
            Elem::Varchar => 1015,
            Elem::Int8 => 1016,
            Elem::Float4 => 1021,
            Elem::Float8 => 1022,
            Elem::Timestamp => 1115,
            Elem::Date => 1182,
            Elem::Time => 1183,
            Elem::TimestampTz => 1185,
            Elem::Interval => 1187,
            Elem::Numeric => 1231,
            Elem::Uuid => 2951,
            Elem::Json => 199,
            Elem::Jsonb => 3807,
            Elem::Oid => 1028,
        }
    }

    /// The element type of the array type with this OID.
    pub fn from_array_oid(oid: u32) -> Option<Elem> {
        ALL.iter().copied().find(|e| e.array_oid() == oid)
    }
}

const ALL: [Elem; 20] = [
    Elem::Oid,
    Elem::Bool,
    Elem::Int2,
    Elem::Int4,
    Elem::Int8,
    Elem::Float4,
    Elem::Float8,
    Elem::Text,
    Elem::Varchar,
    Elem::Bytea,
    Elem::Numeric,
    Elem::Date,
    Elem::Time,
    Elem::Timestamp,
    Elem::TimestampTz,
    Elem::Interval,
    Elem::Uuid,
    Elem::Json,
    Elem::Jsonb,
    Elem::Bpchar,
];

/// PostgreSQL's text form of an array whose elements are of type `elem`.
pub fn to_text(items: &[Value], elem: DataType) -> String {
    let mut out = String::from("{");
    for (i, v) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        match v.to_pg_text(&elem) {
            None => out.push_str("NULL"),
            Some(s) if needs_quotes(&s) => {
                out.push('"');
                for c in s.chars() {
                    if c == '"' || c == '\\' {
                        out.push('\\');
                    }
                    out.push(c);
                }
                out.push('"');
            }
            Some(s) => out.push_str(&s),
        }
    }
    out.push('}');
    out
}

fn needs_quotes(s: &str) -> bool {
    s.is_empty()
        || s.eq_ignore_ascii_case("null")
        || s.chars()
            .any(|c| matches!(c, '{' | '}' | ',' | '"' | '\\') || c.is_ascii_whitespace())
}

/// Parses the text form of a one-dimensional array of `elem`.
pub fn parse(s: &str, elem: DataType) -> Result<Value> {
    let malformed = |why: &str| {
        Error::new(
            sqlstate::INVALID_TEXT_REPRESENTATION,
            format!("malformed array literal: \"{s}\""),
        )
        .with_detail(why.to_string())
    };
    let body = s.trim();
    let Some(inner) = body.strip_prefix('{').and_then(|b| b.strip_suffix('}')) else {
        return Err(malformed(
            "Array value must start with \"{\" or dimension information.",
        ));
    };
    if inner.trim_start().starts_with('{') {
        return Err(Error::unsupported(
            "multidimensional arrays are not supported",
        ));
    }
    let mut items = Vec::new();
    if inner.trim().is_empty() {
        return Ok(Value::Array(items));
    }
    let mut chars = inner.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_ascii_whitespace()) {
            chars.next();
        }
        let mut text = String::new();
        let quoted = chars.peek() == Some(&'"');
        if quoted {
            chars.next();
            loop {
                match chars.next() {
                    Some('"') => break,
                    Some('\\') => text.push(
                        chars
                            .next()
                            .ok_or_else(|| malformed("Unexpected end of input."))?,
                    ),
                    Some(c) => text.push(c),
                    None => return Err(malformed("Unexpected end of input.")),
                }
            }
            while chars.peek().is_some_and(|c| c.is_ascii_whitespace()) {
                chars.next();
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ',' {
                    break;
                }
                if matches!(c, '{' | '}' | '"') {
                    return Err(malformed("Unexpected array element."));
                }
                chars.next();
                if c == '\\' {
                    text.push(
                        chars
                            .next()
                            .ok_or_else(|| malformed("Unexpected end of input."))?,
                    );
                } else {
                    text.push(c);
                }
            }
            let trimmed = text.trim_end().len();
            text.truncate(trimmed);
            if text.is_empty() {
                return Err(malformed("Unexpected \",\" character."));
            }
        }
        items.push(if !quoted && text.eq_ignore_ascii_case("null") {
            Value::Null
        } else {
            elem.parse_text(&text)?
        });
        match chars.next() {
            None => break,
            Some(',') => continue,
            Some(_) => return Err(malformed("Unexpected array element.")),
        }
    }
    Ok(Value::Array(items))
}

/// Converts every element to `elem` (an assignment or explicit cast of the array).
pub fn coerce(items: Vec<Value>, elem: DataType) -> Result<Value> {
    items
        .into_iter()
        .map(|v| match v {
            Value::Text(s) if !elem.is_text() => elem.parse_text(&s),
            v => elem.coerce(v),
        })
        .collect::<Result<Vec<_>>>()
        .map(Value::Array)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_form_round_trips_like_postgres() {
        let cases: &[(&str, DataType, &str)] = &[
            ("{1,2,3}", DataType::Int4, "{1,2,3}"),
            ("{ 1 , NULL ,3}", DataType::Int8, "{1,NULL,3}"),
            ("{}", DataType::Text, "{}"),
            (
                r#"{a,"b c","",\"x,"null",NULL}"#,
                DataType::Text,
                r#"{a,"b c","","\"x","null",NULL}"#,
            ),
            ("{t,f}", DataType::Bool, "{t,f}"),
        ];
        for (input, elem, want) in cases {
            let v = parse(input, *elem).unwrap();
            let Value::Array(items) = &v else { panic!() };
            assert_eq!(to_text(items, *elem), *want, "{input}");
        }
    }

    #[test]
    fn malformed_literals_are_refused() {
        for bad in ["1,2", "{1,2", "{1,,2}", "{{1},{2}}", "{a\"b}"] {
            assert!(parse(bad, DataType::Int4).is_err(), "{bad}");
        }
        assert!(parse("{x}", DataType::Int4).is_err());
    }
}
