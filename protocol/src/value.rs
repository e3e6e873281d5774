//! SQL values and types as every crate sees them.
//!
//! `Value` is the runtime form of one datum; `DataType` is a column's declared type, with the
//! PostgreSQL type OID the router reports to clients. Integers of every width share `Value::Int`
//! (the column's `DataType` keeps the width), so equal keys compare, encode and hash alike.

use std::cmp::Ordering;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result, sqlstate};

/// One SQL datum.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(String),
    Bytes(Vec<u8>),
}

/// A column's declared type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DataType {
    Bool,
    Int2,
    Int4,
    Int8,
    Float4,
    Float8,
    Text,
    /// varchar(n); `None` for unbounded.
    Varchar(Option<u32>),
    Bytea,
}

impl DataType {
    /// The PostgreSQL type OID (pg_type.oid) reported in RowDescription.
    pub fn oid(&self) -> u32 {
        match self {
            DataType::Bool => 16,
            DataType::Bytea => 17,
            DataType::Int8 => 20,
            DataType::Int2 => 21,
            DataType::Int4 => 23,
            DataType::Text => 25,
            DataType::Float4 => 700,
            DataType::Float8 => 701,
            DataType::Varchar(_) => 1043,
        }
    }

    /// The type for a PostgreSQL type OID, if Tessera supports it.
    pub fn from_oid(oid: u32) -> Option<DataType> {
        Some(match oid {
            16 => DataType::Bool,
            17 => DataType::Bytea,
            20 => DataType::Int8,
            21 => DataType::Int2,
            23 => DataType::Int4,
            25 => DataType::Text,
            700 => DataType::Float4,
            701 => DataType::Float8,
            1043 => DataType::Varchar(None),
            _ => return None,
        })
    }

    /// The name PostgreSQL's format_type() prints.
    pub fn name(&self) -> String {
        match self {
            DataType::Bool => "boolean".into(),
            DataType::Int2 => "smallint".into(),
            DataType::Int4 => "integer".into(),
            DataType::Int8 => "bigint".into(),
            DataType::Float4 => "real".into(),
            DataType::Float8 => "double precision".into(),
            DataType::Text => "text".into(),
            DataType::Varchar(None) => "character varying".into(),
            DataType::Varchar(Some(n)) => format!("character varying({n})"),
            DataType::Bytea => "bytea".into(),
        }
    }

    pub fn is_integer(&self) -> bool {
        matches!(self, DataType::Int2 | DataType::Int4 | DataType::Int8)
    }

    pub fn is_numeric(&self) -> bool {
        self.is_integer() || matches!(self, DataType::Float4 | DataType::Float8)
    }

    pub fn is_text(&self) -> bool {
        matches!(self, DataType::Text | DataType::Varchar(_))
    }

    /// Converts a value to this type for storage, as an assignment cast does in PostgreSQL.
    pub fn coerce(&self, value: Value) -> Result<Value> {
        let out_of_range = |t: &str| {
            Error::new(
                sqlstate::NUMERIC_VALUE_OUT_OF_RANGE,
                format!("{t} out of range"),
            )
        };
        Ok(match (self, value) {
            (_, Value::Null) => Value::Null,
            (DataType::Bool, Value::Bool(b)) => Value::Bool(b),
            (DataType::Int2, Value::Int(i)) => {
                i16::try_from(i).map_err(|_| out_of_range("smallint"))?;
                Value::Int(i)
            }
            (DataType::Int4, Value::Int(i)) => {
                i32::try_from(i).map_err(|_| out_of_range("integer"))?;
                Value::Int(i)
            }
            (DataType::Int8, Value::Int(i)) => Value::Int(i),
            (t, Value::Float(f)) if t.is_integer() => {
                let rounded = f.round_ties_even();
                if !rounded.is_finite() || rounded < i64::MIN as f64 || rounded >= i64::MAX as f64 {
                    return Err(out_of_range(&t.name()));
                }
                t.coerce(Value::Int(rounded as i64))?
            }
            (DataType::Float4, Value::Int(i)) => Value::Float(i as f32 as f64),
            (DataType::Float8, Value::Int(i)) => Value::Float(i as f64),
            (DataType::Float4, Value::Float(f)) => {
                if f.is_finite() && (f as f32).is_infinite() {
                    return Err(out_of_range("real"));
                }
                Value::Float(f as f32 as f64)
            }
            (DataType::Float8, Value::Float(f)) => Value::Float(f),
            (DataType::Text, Value::Text(s)) => Value::Text(s),
            (DataType::Varchar(limit), Value::Text(s)) => {
                if let Some(n) = limit
                    && s.chars().count() > *n as usize
                {
                    let trimmed = s.trim_end_matches(' ');
                    if trimmed.chars().count() > *n as usize {
                        return Err(Error::new(
                            sqlstate::STRING_DATA_RIGHT_TRUNCATION,
                            format!("value too long for type character varying({n})"),
                        ));
                    }
                    return Ok(Value::Text(trimmed.chars().take(*n as usize).collect()));
                }
                Value::Text(s)
            }
            (DataType::Bytea, Value::Bytes(b)) => Value::Bytes(b),
            // An untyped literal ('...') may be assigned to any column: parse it.
            (t, Value::Text(s)) => t.parse_text(&s)?,
            (t, v) => {
                return Err(Error::new(
                    sqlstate::DATATYPE_MISMATCH,
                    format!(
                        "column is of type {} but expression is of type {}",
                        t.name(),
                        v.type_name()
                    ),
                ));
            }
        })
    }

    /// Parses PostgreSQL's text form of a value of this type.
    pub fn parse_text(&self, s: &str) -> Result<Value> {
        let invalid = || {
            Error::new(
                sqlstate::INVALID_TEXT_REPRESENTATION,
                format!("invalid input syntax for type {}: \"{s}\"", self.name()),
            )
        };
        let t = s.trim();
        Ok(match self {
            DataType::Bool => match t.to_ascii_lowercase().as_str() {
                "t" | "true" | "yes" | "y" | "on" | "1" => Value::Bool(true),
                "f" | "false" | "no" | "n" | "off" | "0" => Value::Bool(false),
                _ => return Err(invalid()),
            },
            DataType::Int2 | DataType::Int4 | DataType::Int8 => {
                let i: i64 = t.parse().map_err(|_| {
                    if !t.is_empty()
                        && t.trim_start_matches(['-', '+'])
                            .chars()
                            .all(|c| c.is_ascii_digit())
                    {
                        Error::new(
                            sqlstate::NUMERIC_VALUE_OUT_OF_RANGE,
                            format!("value \"{s}\" is out of range for type {}", self.name()),
                        )
                    } else {
                        invalid()
                    }
                })?;
                self.coerce(Value::Int(i)).map_err(|_| {
                    Error::new(
                        sqlstate::NUMERIC_VALUE_OUT_OF_RANGE,
                        format!("value \"{s}\" is out of range for type {}", self.name()),
                    )
                })?
            }
            DataType::Float4 | DataType::Float8 => {
                let f: f64 = match t.to_ascii_lowercase().as_str() {
                    "nan" => f64::NAN,
                    "infinity" | "inf" | "+infinity" => f64::INFINITY,
                    "-infinity" | "-inf" => f64::NEG_INFINITY,
                    other => other.parse().map_err(|_| invalid())?,
                };
                self.coerce(Value::Float(f))?
            }
            DataType::Text => Value::Text(s.to_string()),
            DataType::Varchar(_) => self.coerce(Value::Text(s.to_string()))?,
            DataType::Bytea => Value::Bytes(parse_bytea(s).ok_or_else(invalid)?),
        })
    }
}

fn parse_bytea(s: &str) -> Option<Vec<u8>> {
    if let Some(hex) = s.strip_prefix("\\x") {
        if hex.len() % 2 != 0 {
            return None;
        }
        (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
            .collect()
    } else {
        Some(s.as_bytes().to_vec())
    }
}

impl fmt::Display for DataType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

impl Value {
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// The name of the value's type as PostgreSQL would print it in an error.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Null => "unknown",
            Value::Bool(_) => "boolean",
            Value::Int(_) => "bigint",
            Value::Float(_) => "double precision",
            Value::Text(_) => "text",
            Value::Bytes(_) => "bytea",
        }
    }

    /// SQL comparison: `None` when either side is NULL or the types cannot be compared.
    pub fn sql_cmp(&self, other: &Value) -> Option<Ordering> {
        match (self, other) {
            (Value::Null, _) | (_, Value::Null) => None,
            (Value::Bool(a), Value::Bool(b)) => Some(a.cmp(b)),
            (Value::Int(a), Value::Int(b)) => Some(a.cmp(b)),
            (Value::Int(a), Value::Float(b)) => Some(float_total(*a as f64, *b)),
            (Value::Float(a), Value::Int(b)) => Some(float_total(*a, *b as f64)),
            (Value::Float(a), Value::Float(b)) => Some(float_total(*a, *b)),
            (Value::Text(a), Value::Text(b)) => Some(a.cmp(b)),
            (Value::Bytes(a), Value::Bytes(b)) => Some(a.cmp(b)),
            _ => None,
        }
    }

    /// A total order for sorting and grouping: NULL sorts after every value (PostgreSQL's
    /// default for ascending order); values of different kinds order by kind.
    pub fn total_cmp(&self, other: &Value) -> Ordering {
        if let Some(ord) = self.sql_cmp(other) {
            return ord;
        }
        self.rank().cmp(&other.rank())
    }

    fn rank(&self) -> u8 {
        match self {
            Value::Bool(_) => 0,
            Value::Int(_) | Value::Float(_) => 1,
            Value::Text(_) => 2,
            Value::Bytes(_) => 3,
            Value::Null => 4,
        }
    }

    /// PostgreSQL's text output format for a value of the given type.
    pub fn to_pg_text(&self, ty: &DataType) -> Option<String> {
        Some(match self {
            Value::Null => return None,
            Value::Bool(b) => if *b { "t" } else { "f" }.to_string(),
            Value::Int(i) => i.to_string(),
            Value::Float(f) => format_float(*f, matches!(ty, DataType::Float4)),
            Value::Text(s) => s.clone(),
            Value::Bytes(b) => {
                let mut out = String::with_capacity(2 + b.len() * 2);
                out.push_str("\\x");
                for byte in b {
                    out.push_str(&format!("{byte:02x}"));
                }
                out
            }
        })
    }
}

/// Formats a float as PostgreSQL 12+ does: the shortest text that reads back exactly.
pub fn format_float(f: f64, single: bool) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 {
            "Infinity".into()
        } else {
            "-Infinity".into()
        };
    }
    let s = if single {
        format!("{}", f as f32)
    } else {
        format!("{f}")
    };
    let abs = f.abs();
    let limit = if single { 1e6 } else { 1e15 };
    if abs != 0.0 && !(1e-4..limit).contains(&abs) {
        // PostgreSQL switches to exponent notation outside this range.
        let e = if single {
            format!("{:e}", f as f32)
        } else {
            format!("{f:e}")
        };
        return match e.split_once('e') {
            Some((mantissa, exp)) => {
                let exp: i32 = exp.parse().unwrap_or(0);
                let sign = if exp < 0 { '-' } else { '+' };
                format!("{mantissa}e{sign}{:02}", exp.abs())
            }
            None => e,
        };
    }
    s
}

fn float_total(a: f64, b: f64) -> Ordering {
    // PostgreSQL orders NaN above every other float and equal to itself.
    match (a.is_nan(), b.is_nan()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Greater,
        (false, true) => Ordering::Less,
        _ => a.partial_cmp(&b).unwrap_or(Ordering::Equal),
    }
}

impl PartialEq for Value {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Value::Null, Value::Null) => true,
            _ => self.sql_cmp(other) == Some(Ordering::Equal) && self.rank() == other.rank(),
        }
    }
}

impl Eq for Value {}

impl std::hash::Hash for Value {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        match self {
            Value::Null => 0u8.hash(state),
            Value::Bool(b) => b.hash(state),
            Value::Int(i) => (*i as f64).to_bits().hash(state),
            Value::Float(f) => {
                let f = if *f == 0.0 { 0.0 } else { *f };
                f.to_bits().hash(state)
            }
            Value::Text(s) => s.hash(state),
            Value::Bytes(b) => b.hash(state),
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => f.write_str("NULL"),
            Value::Float(x) => f.write_str(&format_float(*x, false)),
            other => f.write_str(&other.to_pg_text(&DataType::Text).unwrap_or_default()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_and_floats_compare_across_kinds() {
        assert_eq!(
            Value::Int(2).sql_cmp(&Value::Float(2.5)),
            Some(Ordering::Less)
        );
        assert_eq!(Value::Int(2), Value::Float(2.0));
        assert_eq!(Value::Null.sql_cmp(&Value::Int(1)), None);
        assert_eq!(Value::Null.total_cmp(&Value::Int(1)), Ordering::Greater);
    }

    #[test]
    fn coercion_checks_width() {
        assert!(DataType::Int2.coerce(Value::Int(40000)).is_err());
        assert_eq!(DataType::Int4.parse_text(" 42 ").unwrap(), Value::Int(42));
        let err = DataType::Int4.parse_text("abc").unwrap_err();
        assert_eq!(err.code, sqlstate::INVALID_TEXT_REPRESENTATION);
        assert_eq!(
            DataType::Bytea.parse_text("\\x0aff").unwrap(),
            Value::Bytes(vec![10, 255])
        );
    }

    #[test]
    fn floats_print_like_postgres() {
        assert_eq!(format_float(1.5, false), "1.5");
        assert_eq!(format_float(1e20, false), "1e+20");
        assert_eq!(format_float(0.1f32 as f64, true), "0.1");
        assert_eq!(format_float(f64::INFINITY, false), "Infinity");
    }
}
