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
                let special = match t.to_ascii_lowercase().as_str() {
                    "nan" => Some(f64::NAN),
                    "infinity" | "inf" | "+infinity" | "+inf" => Some(f64::INFINITY),
                    "-infinity" | "-inf" => Some(f64::NEG_INFINITY),
                    _ => None,
                };
                if let Some(f) = special {
                    return Ok(Value::Float(f));
                }
                if !t.starts_with(|c: char| c.is_ascii_digit() || matches!(c, '+' | '-' | '.')) {
                    return Err(invalid());
                }
                // Like PostgreSQL (strtof for real, strtod for double precision), a number
                // beyond the type's range, or one that is not zero but rounds to zero, is an
                // error; denormal results are fine. Real is read as real, not via double.
                let (f, overflow) = if *self == DataType::Float4 {
                    let f: f32 = t.parse().map_err(|_| invalid())?;
                    (f as f64, f.is_infinite())
                } else {
                    let f: f64 = t.parse().map_err(|_| invalid())?;
                    (f, f.is_infinite())
                };
                let mantissa = t.split(['e', 'E']).next().unwrap_or_default();
                let underflow = f == 0.0 && mantissa.chars().any(|c| matches!(c, '1'..='9'));
                if overflow || underflow {
                    return Err(Error::new(
                        sqlstate::NUMERIC_VALUE_OUT_OF_RANGE,
                        format!("\"{s}\" is out of range for type {}", self.name()),
                    ));
                }
                Value::Float(f)
            }
            DataType::Text => Value::Text(s.to_string()),
            DataType::Varchar(_) => self.coerce(Value::Text(s.to_string()))?,
            DataType::Bytea => Value::Bytes(parse_bytea(s)?),
        })
    }
}

/// PostgreSQL's `byteain`: `\x` followed by hex digit pairs (whitespace between pairs is
/// skipped), or the escape format, where `\\` is a backslash and `\nnn` an octal byte.
fn parse_bytea(s: &str) -> Result<Vec<u8>> {
    if let Some(hex) = s.strip_prefix("\\x") {
        let invalid_digit = |c: char| {
            Error::new(
                sqlstate::INVALID_PARAMETER_VALUE,
                format!("invalid hexadecimal digit: \"{c}\""),
            )
        };
        let mut out = Vec::with_capacity(hex.len() / 2);
        let mut chars = hex.chars();
        while let Some(c) = chars.next() {
            if matches!(c, ' ' | '\n' | '\t' | '\r') {
                continue;
            }
            let hi = c.to_digit(16).ok_or_else(|| invalid_digit(c))?;
            let c2 = chars.next().ok_or_else(|| {
                Error::new(
                    sqlstate::INVALID_PARAMETER_VALUE,
                    "invalid hexadecimal data: odd number of digits",
                )
            })?;
            let lo = c2.to_digit(16).ok_or_else(|| invalid_digit(c2))?;
            out.push((hi * 16 + lo) as u8);
        }
        return Ok(out);
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'\\' {
            out.push(bytes[i]);
            i += 1;
            continue;
        }
        match bytes.get(i + 1..i + 4) {
            Some([a @ b'0'..=b'3', b @ b'0'..=b'7', c @ b'0'..=b'7']) => {
                out.push(((a - b'0') << 6) | ((b - b'0') << 3) | (c - b'0'));
                i += 4;
            }
            _ if bytes.get(i + 1) == Some(&b'\\') => {
                out.push(b'\\');
                i += 2;
            }
            _ => {
                return Err(Error::new(
                    sqlstate::INVALID_TEXT_REPRESENTATION,
                    "invalid input syntax for type bytea",
                ));
            }
        }
    }
    Ok(out)
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
    // The shortest digits that read back exactly, in exponent form; PostgreSQL (like printf's
    // %g) writes them in fixed notation when the decimal exponent of the first digit is at
    // least -4 and below 6 for real, 15 for double precision.
    let (e, fixed) = if single {
        (format!("{:e}", f as f32), format!("{}", f as f32))
    } else {
        (format!("{f:e}"), format!("{f}"))
    };
    let Some((mantissa, exp)) = e.split_once('e') else {
        return fixed;
    };
    let exp: i32 = exp.parse().unwrap_or(0);
    let limit = if single { 6 } else { 15 };
    if (-4..limit).contains(&exp) {
        return fixed;
    }
    let sign = if exp < 0 { '-' } else { '+' };
    format!("{mantissa}e{sign}{:02}", exp.abs())
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
        // The switch to exponent notation follows the decimal exponent of the shortest digits.
        assert_eq!(format_float(1e-4f32 as f64, true), "0.0001");
        assert_eq!(format_float(1e-5f32 as f64, true), "1e-05");
        assert_eq!(format_float(123456.7f32 as f64, true), "123456.7");
        assert_eq!(format_float(1e6, true), "1e+06");
        assert_eq!(format_float(1234567.0, true), "1.234567e+06");
        assert_eq!(format_float(1e-4, false), "0.0001");
        assert_eq!(format_float(1e-5, false), "1e-05");
        assert_eq!(format_float(123456789012345.0, false), "123456789012345");
        assert_eq!(format_float(1e15, false), "1e+15");
        assert_eq!(format_float(-0.0, false), "-0");
        assert_eq!(format_float(0.0, true), "0");
    }

    #[test]
    fn float_input_range() {
        let err = DataType::Float4.parse_text("3.5e38").unwrap_err();
        assert_eq!(err.code, sqlstate::NUMERIC_VALUE_OUT_OF_RANGE);
        assert_eq!(err.message, "\"3.5e38\" is out of range for type real");
        assert!(DataType::Float8.parse_text("1e-400").is_err());
        assert!(DataType::Float8.parse_text("0e-400").is_ok());
        assert!(DataType::Float4.parse_text("1e-40").is_ok());
        assert_eq!(
            DataType::Float4.parse_text("0.1").unwrap(),
            Value::Float(0.1f32 as f64)
        );
        assert_eq!(
            DataType::Float8.parse_text("-Infinity").unwrap(),
            Value::Float(f64::NEG_INFINITY)
        );
        assert!(DataType::Float8.parse_text("abc").is_err());
    }

    #[test]
    fn bytea_input_like_postgres() {
        let err = DataType::Bytea.parse_text("\\xZZ").unwrap_err();
        assert_eq!(err.message, "invalid hexadecimal digit: \"Z\"");
        let err = DataType::Bytea.parse_text("\\x123").unwrap_err();
        assert_eq!(
            err.message,
            "invalid hexadecimal data: odd number of digits"
        );
        assert_eq!(
            DataType::Bytea.parse_text("\\x01 02").unwrap(),
            Value::Bytes(vec![1, 2])
        );
        assert_eq!(
            DataType::Bytea.parse_text("a\\\\b\\001").unwrap(),
            Value::Bytes(vec![b'a', b'\\', b'b', 1])
        );
        let err = DataType::Bytea.parse_text("a\\q").unwrap_err();
        assert_eq!(err.message, "invalid input syntax for type bytea");
    }
}
