//! SQL values and types as every crate sees them.
//!
//! `Value` is the runtime form of one datum; `DataType` is a column's declared type, with the
//! PostgreSQL type OID the router reports to clients. Integers of every width share `Value::Int`
//! (the column's `DataType` keeps the width), so equal keys compare, encode and hash alike.
//!
//! The richer types live in submodules: [`numeric`] (exact decimals), [`datetime`] (date,
//! time, timestamp[tz], interval) and [`json`] (json, jsonb). Their `Value` variants come after
//! the original six so that stored rows (bincode, variant index first) keep their meaning.

pub mod array;
pub mod datetime;
pub mod json;
pub mod numeric;

use std::cmp::Ordering;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result, sqlstate};
pub use datetime::Interval;
pub use numeric::Numeric;

/// One SQL datum.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(String),
    Bytes(Vec<u8>),
    // New variants go at the end: a stored row's bincode names variants by index.
    Numeric(Numeric),
    /// Days since 2000-01-01.
    Date(i32),
    /// Microseconds since midnight.
    Time(i64),
    /// Microseconds since 2000-01-01 00:00:00.
    Timestamp(i64),
    /// Microseconds since 2000-01-01 00:00:00 UTC.
    TimestampTz(i64),
    Interval(Interval),
    Uuid([u8; 16]),
    /// json: the input text, verbatim.
    Json(String),
    /// jsonb: the normalised text.
    Jsonb(String),
    /// character(n): blank-padded text; trailing blanks are insignificant.
    BpChar(String),
    /// A one-dimensional array (see [`array`]); NULL elements are `Value::Null`.
    Array(Vec<Value>),
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
    // New variants go at the end: stored schemas name variants by index.
    /// numeric(precision, scale); `None` for unconstrained numeric.
    Numeric(Option<(u32, u32)>),
    Date,
    Time,
    Timestamp,
    TimestampTz,
    Interval,
    Uuid,
    Json,
    Jsonb,
    /// character(n); `None` for `bpchar` without a length.
    Bpchar(Option<u32>),
    /// A one-dimensional array of the element type (queries and results only, see [`array`]).
    Array(array::Elem),
    /// The catalogs' `int2vector` (elements int2) and `oidvector` (elements oid): arrays
    /// whose subscripts start at 0 and whose text form is space-separated.
    Vector(array::Elem),
    /// An object identifier: an unsigned 4-byte integer (`Value::Int`), an integer type.
    Oid,
}

impl DataType {
    /// The type modifier (pg_attribute.atttypmod, RowDescription's type modifier) as
    /// PostgreSQL computes it: varchar(n)/char(n) n + 4, numeric(p,s) ((p << 16) | s) + 4,
    /// -1 for none.
    pub fn typmod(&self) -> i32 {
        let m = match self {
            DataType::Varchar(Some(n)) | DataType::Bpchar(Some(n)) => i64::from(*n) + 4,
            DataType::Numeric(Some((p, s))) => ((i64::from(*p) << 16) | i64::from(*s)) + 4,
            _ => -1,
        };
        i32::try_from(m).unwrap_or(-1)
    }

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
            DataType::Numeric(_) => 1700,
            DataType::Date => 1082,
            DataType::Time => 1083,
            DataType::Timestamp => 1114,
            DataType::TimestampTz => 1184,
            DataType::Interval => 1186,
            DataType::Uuid => 2950,
            DataType::Json => 114,
            DataType::Jsonb => 3802,
            DataType::Bpchar(_) => 1042,
            DataType::Array(e) => e.array_oid(),
            DataType::Vector(array::Elem::Int2) => 22,
            DataType::Vector(_) => 30,
            DataType::Oid => 26,
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
            1700 => DataType::Numeric(None),
            1082 => DataType::Date,
            1083 => DataType::Time,
            1114 => DataType::Timestamp,
            1184 => DataType::TimestampTz,
            1186 => DataType::Interval,
            2950 => DataType::Uuid,
            114 => DataType::Json,
            3802 => DataType::Jsonb,
            1042 => DataType::Bpchar(None),
            22 => DataType::Vector(array::Elem::Int2),
            30 => DataType::Vector(array::Elem::Oid),
            26 => DataType::Oid,
            oid => DataType::Array(array::Elem::from_array_oid(oid)?),
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
            DataType::Numeric(None) => "numeric".into(),
            DataType::Numeric(Some((p, s))) => format!("numeric({p},{s})"),
            DataType::Date => "date".into(),
            DataType::Time => "time without time zone".into(),
            DataType::Timestamp => "timestamp without time zone".into(),
            DataType::TimestampTz => "timestamp with time zone".into(),
            DataType::Interval => "interval".into(),
            DataType::Uuid => "uuid".into(),
            DataType::Json => "json".into(),
            DataType::Jsonb => "jsonb".into(),
            DataType::Bpchar(None) => "bpchar".into(),
            DataType::Bpchar(Some(n)) => format!("character({n})"),
            DataType::Array(e) => format!("{}[]", e.scalar().name()),
            DataType::Vector(array::Elem::Int2) => "int2vector".into(),
            DataType::Vector(_) => "oidvector".into(),
            DataType::Oid => "oid".into(),
        }
    }

    pub fn is_integer(&self) -> bool {
        matches!(
            self,
            DataType::Int2 | DataType::Int4 | DataType::Int8 | DataType::Oid
        )
    }

    /// Integers, floats and numeric: the types arithmetic applies to.
    pub fn is_numeric(&self) -> bool {
        self.is_integer()
            || matches!(
                self,
                DataType::Float4 | DataType::Float8 | DataType::Numeric(_)
            )
    }

    pub fn is_float(&self) -> bool {
        matches!(self, DataType::Float4 | DataType::Float8)
    }

    /// The string types: text, varchar(n) and character(n).
    pub fn is_text(&self) -> bool {
        matches!(
            self,
            DataType::Text | DataType::Varchar(_) | DataType::Bpchar(_)
        )
    }

    /// date, timestamp and timestamptz: the types that name a point in time.
    pub fn is_datetime(&self) -> bool {
        matches!(
            self,
            DataType::Date | DataType::Timestamp | DataType::TimestampTz
        )
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
            (DataType::Oid, Value::Int(i)) => {
                u32::try_from(i).map_err(|_| out_of_range("oid"))?;
                Value::Int(i)
            }
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
            (DataType::Bpchar(limit), Value::Text(s)) => Value::BpChar(pad_bpchar(s, *limit)?),
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
            (DataType::Array(e) | DataType::Vector(e), Value::Array(items)) => {
                array::coerce(items, e.scalar())?
            }
            (t, Value::BpChar(s)) if t.is_text() => {
                t.coerce(Value::Text(s.trim_end_matches(' ').to_string()))?
            }
            (t, v) if !v.is_text_like() && t.accepts_assignment(&v) => t.convert(v)?,
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
            DataType::Int2 | DataType::Int4 | DataType::Int8 | DataType::Oid => {
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
            DataType::Numeric(_) => self.convert(Value::Numeric(Numeric::parse(s)?))?,
            DataType::Date => Value::Date(datetime::parse_date(s)?),
            DataType::Time => Value::Time(datetime::parse_time(s)?),
            DataType::Timestamp => Value::Timestamp(datetime::parse_timestamp(s, false)?),
            DataType::TimestampTz => Value::TimestampTz(datetime::parse_timestamp(s, true)?),
            DataType::Interval => Value::Interval(datetime::parse_interval(s)?),
            DataType::Uuid => Value::Uuid(parse_uuid(s)?),
            DataType::Json => Value::Json(json::validate_json(s)?),
            DataType::Jsonb => Value::Jsonb(json::normalize_jsonb(s)?),
            DataType::Bpchar(_) => self.coerce(Value::Text(s.to_string()))?,
            DataType::Array(e) => array::parse(s, e.scalar())?,
            DataType::Vector(e) => Value::Array(
                t.split_whitespace()
                    .map(|x| e.scalar().parse_text(x))
                    .collect::<Result<_>>()?,
            ),
        })
    }
}

impl DataType {
    /// Whether an assignment (INSERT, UPDATE) converts a value of `v`'s kind to this type
    /// without an explicit cast, as PostgreSQL's implicit and assignment casts do.
    pub fn accepts_assignment(&self, v: &Value) -> bool {
        use DataType as T;
        match v {
            Value::Int(_) | Value::Float(_) | Value::Numeric(_) => self.is_numeric(),
            Value::Date(_) | Value::Timestamp(_) | Value::TimestampTz(_) => {
                self.is_datetime() || (*self == T::Time && !matches!(v, Value::Date(_)))
            }
            Value::Time(_) => matches!(self, T::Time | T::Interval),
            Value::Interval(_) => *self == T::Interval,
            Value::Uuid(_) => *self == T::Uuid,
            Value::Json(_) | Value::Jsonb(_) => matches!(self, T::Json | T::Jsonb),
            _ => false,
        }
    }

    /// Converts a value of another non-text kind to this type, as a cast does: numbers
    /// between integer, float and numeric (rounding, range checks, typmods), dates and
    /// timestamps between each other, json and jsonb. Text is the caller's business.
    pub fn convert(&self, v: Value) -> Result<Value> {
        use DataType as T;
        let mismatch = |v: &Value| {
            Error::new(
                sqlstate::DATATYPE_MISMATCH,
                format!("cannot cast type {} to {}", v.type_name(), self.name()),
            )
        };
        let out_of_range = |t: &DataType| {
            Error::new(
                sqlstate::NUMERIC_VALUE_OUT_OF_RANGE,
                format!("{} out of range", t.name()),
            )
        };
        Ok(match (self, v) {
            (_, Value::Null) => Value::Null,
            (t, v @ (Value::Int(_) | Value::Float(_))) if t.is_integer() || t.is_float() => {
                t.coerce(v)?
            }
            (t, Value::Numeric(n)) if t.is_integer() => {
                if n.is_nan() {
                    return Err(Error::new(
                        sqlstate::FEATURE_NOT_SUPPORTED,
                        format!("cannot convert NaN to {}", t.name()),
                    ));
                }
                let i = n
                    .to_i128_rounded()
                    .and_then(|i| i64::try_from(i).ok())
                    .ok_or_else(|| out_of_range(t))?;
                t.coerce(Value::Int(i)).map_err(|_| out_of_range(t))?
            }
            (t, Value::Numeric(n)) if t.is_float() => t.coerce(Value::Float(n.to_f64()))?,
            (T::Numeric(tm), v @ (Value::Int(_) | Value::Float(_) | Value::Numeric(_))) => {
                let n = match v {
                    Value::Int(i) => Numeric::from_i64(i),
                    Value::Float(f) => Numeric::from_f64(f, false)?,
                    Value::Numeric(n) => n,
                    _ => return Err(mismatch(&v)),
                };
                Value::Numeric(match tm {
                    Some((p, s)) => n.with_typmod(*p, *s)?,
                    None => n,
                })
            }
            (T::Date, Value::Date(d)) => Value::Date(d),
            (T::Date, Value::Timestamp(ts) | Value::TimestampTz(ts)) => Value::Date(match ts {
                datetime::TS_NEG_INF => datetime::DATE_NEG_INF,
                datetime::TS_POS_INF => datetime::DATE_POS_INF,
                ts => i32::try_from(ts.div_euclid(datetime::USECS_PER_DAY))
                    .map_err(|_| datetime::date_range())?,
            }),
            (T::Timestamp | T::TimestampTz, Value::Date(d)) => {
                let ts = match d {
                    datetime::DATE_NEG_INF => datetime::TS_NEG_INF,
                    datetime::DATE_POS_INF => datetime::TS_POS_INF,
                    d => datetime::timestamp_from_parts(d as i64, 0)?,
                };
                if *self == T::Timestamp {
                    Value::Timestamp(ts)
                } else {
                    Value::TimestampTz(ts)
                }
            }
            (T::Timestamp, Value::Timestamp(ts) | Value::TimestampTz(ts)) => Value::Timestamp(ts),
            (T::TimestampTz, Value::Timestamp(ts) | Value::TimestampTz(ts)) => {
                Value::TimestampTz(ts)
            }
            (T::Time, Value::Time(t)) => Value::Time(t),
            (T::Time, Value::Timestamp(ts) | Value::TimestampTz(ts)) => {
                Value::Time(ts.rem_euclid(datetime::USECS_PER_DAY))
            }
            (T::Interval, Value::Interval(i)) => Value::Interval(i),
            (T::Interval, Value::Time(t)) => Value::Interval(Interval {
                months: 0,
                days: 0,
                micros: t,
            }),
            (T::Uuid, Value::Uuid(u)) => Value::Uuid(u),
            (T::Json, Value::Json(j) | Value::Jsonb(j)) => Value::Json(j),
            (T::Jsonb, Value::Jsonb(j)) => Value::Jsonb(j),
            (T::Jsonb, Value::Json(j)) => Value::Jsonb(json::normalize_jsonb(&j)?),
            (T::Bool, Value::Bool(b)) => Value::Bool(b),
            (T::Bytea, Value::Bytes(b)) => Value::Bytes(b),
            (T::Array(e) | T::Vector(e), Value::Array(items)) => array::coerce(items, e.scalar())?,
            (_, v) => return Err(mismatch(&v)),
        })
    }
}

/// character(n) input: longer values are an error unless the excess is blanks; shorter ones
/// are padded with blanks.
fn pad_bpchar(s: String, limit: Option<u32>) -> Result<String> {
    let Some(n) = limit else {
        return Ok(s);
    };
    let n = n as usize;
    let len = s.chars().count();
    if len > n {
        let trimmed = s.trim_end_matches(' ');
        if trimmed.chars().count() > n {
            return Err(Error::new(
                sqlstate::STRING_DATA_RIGHT_TRUNCATION,
                format!("value too long for type character({n})"),
            ));
        }
        return Ok(s.chars().take(n).collect());
    }
    let mut out = s;
    out.extend(std::iter::repeat_n(' ', n - len));
    Ok(out)
}

/// Pads or truncates to character(n), as an explicit cast does (no error).
pub fn bpchar_cast(s: &str, n: u32) -> String {
    let mut out: String = s.chars().take(n as usize).collect();
    let len = out.chars().count();
    out.extend(std::iter::repeat_n(' ', n as usize - len));
    out
}

/// uuid input: 32 hex digits, optionally hyphenated (after any group of four) and braced.
pub fn parse_uuid(s: &str) -> Result<[u8; 16]> {
    let invalid = || {
        Error::new(
            sqlstate::INVALID_TEXT_REPRESENTATION,
            format!("invalid input syntax for type uuid: \"{s}\""),
        )
    };
    let t = s.trim();
    let t = match t.strip_prefix('{') {
        Some(inner) => inner.strip_suffix('}').ok_or_else(invalid)?,
        None => t,
    };
    let mut out = [0u8; 16];
    let mut n = 0;
    let bytes = t.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'-' {
            // A hyphen may follow only a complete group of four digits.
            if n == 0 || n % 4 != 0 || i + 1 == bytes.len() || bytes[i + 1] == b'-' {
                return Err(invalid());
            }
            i += 1;
            continue;
        }
        let d = (bytes[i] as char).to_digit(16).ok_or_else(invalid)? as u8;
        if n >= 32 {
            return Err(invalid());
        }
        out[n / 2] |= if n % 2 == 0 { d << 4 } else { d };
        n += 1;
        i += 1;
    }
    if n != 32 {
        return Err(invalid());
    }
    Ok(out)
}

pub fn format_uuid(u: &[u8; 16]) -> String {
    let mut out = String::with_capacity(36);
    for (i, b) in u.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            out.push('-');
        }
        out.push_str(&format!("{b:02x}"));
    }
    out
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
            Value::Numeric(_) => "numeric",
            Value::Date(_) => "date",
            Value::Time(_) => "time without time zone",
            Value::Timestamp(_) => "timestamp without time zone",
            Value::TimestampTz(_) => "timestamp with time zone",
            Value::Interval(_) => "interval",
            Value::Uuid(_) => "uuid",
            Value::Json(_) => "json",
            Value::Jsonb(_) => "jsonb",
            Value::BpChar(_) => "character",
            Value::Array(_) => "array",
        }
    }

    /// Text or character(n): values an untyped literal's rules apply to.
    pub fn is_text_like(&self) -> bool {
        matches!(self, Value::Text(_) | Value::BpChar(_))
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
            (Value::Numeric(a), Value::Numeric(b)) => Some(a.cmp(b)),
            (Value::Numeric(a), Value::Int(b)) => Some(a.cmp(&Numeric::from_i64(*b))),
            (Value::Int(a), Value::Numeric(b)) => Some(Numeric::from_i64(*a).cmp(b)),
            (Value::Numeric(a), Value::Float(b)) => Some(float_total(a.to_f64(), *b)),
            (Value::Float(a), Value::Numeric(b)) => Some(float_total(*a, b.to_f64())),
            (a @ (Value::Date(_) | Value::Timestamp(_) | Value::TimestampTz(_)), b) => {
                Some(a.instant()?.cmp(&b.instant()?))
            }
            (Value::Time(a), Value::Time(b)) => Some(a.cmp(b)),
            (Value::Interval(a), Value::Interval(b)) => Some(a.span().cmp(&b.span())),
            (Value::Uuid(a), Value::Uuid(b)) => Some(a.cmp(b)),
            (Value::Json(a), Value::Json(b)) => Some(a.cmp(b)),
            (Value::Jsonb(a), Value::Jsonb(b)) => Some(json::compare_text(a, b)),
            (Value::BpChar(a), Value::BpChar(b)) => {
                Some(a.trim_end_matches(' ').cmp(b.trim_end_matches(' ')))
            }
            (Value::BpChar(a), Value::Text(b)) => Some(a.trim_end_matches(' ').cmp(b.as_str())),
            (Value::Text(a), Value::BpChar(b)) => Some(a.as_str().cmp(b.trim_end_matches(' '))),
            // Element by element, NULL elements equal to each other and after the rest (as
            // PostgreSQL's array comparison orders them), then the shorter array first.
            (Value::Array(a), Value::Array(b)) => Some(
                a.iter()
                    .zip(b)
                    .map(|(x, y)| x.total_cmp(y))
                    .find(|o| o.is_ne())
                    .unwrap_or_else(|| a.len().cmp(&b.len())),
            ),
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

    /// A point in time in microseconds since 2000-01-01 (dates at midnight), with the
    /// infinities at the ends: how date, timestamp and timestamptz compare with each other.
    fn instant(&self) -> Option<i128> {
        Some(match self {
            Value::Date(datetime::DATE_NEG_INF) => i128::MIN,
            Value::Date(datetime::DATE_POS_INF) => i128::MAX,
            Value::Date(d) => *d as i128 * datetime::USECS_PER_DAY as i128,
            Value::Timestamp(t) | Value::TimestampTz(t) => match *t {
                datetime::TS_NEG_INF => i128::MIN,
                datetime::TS_POS_INF => i128::MAX,
                t => t as i128,
            },
            _ => return None,
        })
    }

    fn rank(&self) -> u8 {
        match self {
            Value::Bool(_) => 0,
            Value::Int(_) | Value::Float(_) | Value::Numeric(_) => 1,
            Value::Text(_) | Value::BpChar(_) => 2,
            Value::Bytes(_) => 3,
            Value::Date(_) | Value::Timestamp(_) | Value::TimestampTz(_) => 4,
            Value::Time(_) => 5,
            Value::Interval(_) => 6,
            Value::Uuid(_) => 7,
            Value::Json(_) => 8,
            Value::Jsonb(_) => 9,
            Value::Array(_) => 10,
            Value::Null => 11,
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
            Value::Numeric(n) => n.to_string(),
            Value::Date(d) => datetime::format_date(*d),
            Value::Time(t) => datetime::format_time(*t),
            Value::Timestamp(t) => datetime::format_timestamp(*t, false),
            Value::TimestampTz(t) => datetime::format_timestamp(*t, true),
            Value::Interval(i) => datetime::format_interval(i),
            Value::Uuid(u) => format_uuid(u),
            Value::Json(s) | Value::Jsonb(s) | Value::BpChar(s) => s.clone(),
            Value::Array(items) => match ty {
                DataType::Array(e) => array::to_text(items, e.scalar()),
                DataType::Vector(e) => items
                    .iter()
                    .map(|v| v.to_pg_text(&e.scalar()).unwrap_or_default())
                    .collect::<Vec<_>>()
                    .join(" "),
                _ => array::to_text(items, DataType::Text),
            },
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
            // Hashes agree wherever `eq` does across kinds: a numeric like the integer or
            // float it equals, a date like the timestamp at its midnight, character(n) like
            // its text without trailing blanks, an interval by its span.
            Value::Numeric(n) => match n.as_exact_i64() {
                Some(i) => (i as f64).to_bits().hash(state),
                None => {
                    let f = n.to_f64();
                    let f = if f == 0.0 { 0.0 } else { f };
                    f.to_bits().hash(state)
                }
            },
            Value::Date(_) | Value::Timestamp(_) | Value::TimestampTz(_) => {
                self.instant().hash(state)
            }
            Value::Time(t) => t.hash(state),
            Value::Interval(i) => i.span().hash(state),
            Value::Uuid(u) => u.hash(state),
            Value::Json(s) => s.hash(state),
            Value::Jsonb(s) => json::canonical(s).hash(state),
            Value::BpChar(s) => s.trim_end_matches(' ').hash(state),
            Value::Array(items) => items.hash(state),
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
