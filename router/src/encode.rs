//! Conversions between Tessera values and the Postgres wire formats.
//!
//! Results: each column's declared type fixes the Rust type handed to pgwire's encoder
//! (`int4` → i32, …), because a binary-format client reads exactly that many bytes.
//! Parameters: text-format parameters parse with the type's input function; binary ones
//! decode by type OID.

use bytes::Bytes;
use pgwire::api::Type;
use pgwire::api::results::{DataRowEncoder, FieldFormat, FieldInfo};
use pgwire::error::PgWireResult;
use protocol::error::{Error, Result, sqlstate};
use protocol::schema::ResultColumn;
use protocol::{DataType, Value};

pub fn pg_type(t: &DataType) -> Type {
    Type::from_oid(t.oid()).unwrap_or(Type::UNKNOWN)
}

pub fn field_infos(
    columns: &[ResultColumn],
    format_for: impl Fn(usize) -> FieldFormat,
) -> Vec<FieldInfo> {
    columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            FieldInfo::new(
                c.name.clone(),
                None,
                None,
                pg_type(&c.data_type),
                format_for(i),
            )
            .with_type_modifier(c.data_type.typmod())
            .with_type_size(type_size(c.data_type.oid()))
        })
        .collect()
}

/// A type's `typlen` as PostgreSQL's RowDescription carries it: the size of a fixed-size
/// type, -1 for a variable-length one (arrays and anything not in the builtin list).
fn type_size(oid: u32) -> i16 {
    crate::catalog::tables::type_row(i64::from(oid))
        .and_then(|t| i16::try_from(t.2).ok())
        .unwrap_or(-1)
}

/// Encodes one value of a column of type `t`, in text or binary format.
pub fn encode_value(
    enc: &mut DataRowEncoder,
    value: &Value,
    t: &DataType,
    binary: bool,
) -> PgWireResult<()> {
    if !binary {
        // Text format: PostgreSQL's output functions, not the Rust types' Display. An
        // array's text is complete already: typed as text so pgwire does not quote it as it
        // would quote an element.
        if let Value::Array(_) = value {
            return enc.encode_field_with_type_and_format(
                &value.to_pg_text(t),
                &Type::TEXT,
                FieldFormat::Text,
                &pgwire::types::format::FormatOptions::default(),
            );
        }
        return enc.encode_field(&value.to_pg_text(t));
    }
    match (value, t) {
        (Value::Null, _) => enc.encode_field(&None::<i32>),
        (Value::Int(i), DataType::Int2) => enc.encode_field(&(*i as i16)),
        (Value::Int(i), DataType::Int4) => enc.encode_field(&(*i as i32)),
        (Value::Int(i), DataType::Int8) => enc.encode_field(i),
        (Value::Int(i), DataType::Oid) => enc.encode_field(&(*i as u32)),
        (Value::Float(f), DataType::Float4) => enc.encode_field(&(*f as f32)),
        (Value::Float(f), DataType::Float8) => enc.encode_field(f),
        (Value::Bool(b), DataType::Bool) => enc.encode_field(b),
        (Value::Bytes(b), DataType::Bytea) => enc.encode_field(&b.as_slice()),
        (v, t) if let Some(bytes) = binary_of(v, t) => enc.encode_field(&bytes.as_slice()),
        // A text-typed column (whose binary form is its text), or a value whose kind differs
        // from the declared type, which its text form represents faithfully.
        (v, t) => enc.encode_field(&v.to_pg_text(t)),
    }
}

/// PostgreSQL's binary send format of the newer types (those pgwire has no Rust type for):
/// numeric as base-10000 digits, date as i32 days and time/timestamp[tz] as i64
/// microseconds since 2000-01-01, interval as i64 µs + i32 days + i32 months, uuid as 16
/// bytes, jsonb as version byte 1 + text. `None`: the caller's default applies.
pub fn binary_of(v: &Value, t: &DataType) -> Option<Vec<u8>> {
    Some(match (v, t) {
        (Value::Numeric(n), DataType::Numeric(_)) => protocol::value::numeric::to_binary(n),
        (Value::Date(d), DataType::Date) => d.to_be_bytes().to_vec(),
        (Value::Time(t), DataType::Time) => t.to_be_bytes().to_vec(),
        (Value::Timestamp(t), DataType::Timestamp)
        | (Value::TimestampTz(t), DataType::TimestampTz) => t.to_be_bytes().to_vec(),
        (Value::Interval(i), DataType::Interval) => {
            let mut out = i.micros.to_be_bytes().to_vec();
            out.extend_from_slice(&i.days.to_be_bytes());
            out.extend_from_slice(&i.months.to_be_bytes());
            out
        }
        (Value::Uuid(u), DataType::Uuid) => u.to_vec(),
        (Value::Int(i), DataType::Oid) => (*i as u32).to_be_bytes().to_vec(),
        (Value::Jsonb(s), DataType::Jsonb) => {
            let mut out = vec![1u8];
            out.extend_from_slice(s.as_bytes());
            out
        }
        (Value::Array(items), DataType::Array(e)) => array_binary(items, e.scalar(), 1)?,
        (Value::Array(items), DataType::Vector(e)) => array_binary(items, e.scalar(), 0)?,
        _ => return None,
    })
}

/// The binary form of one array element (any scalar kind).
fn element_binary(v: &Value, t: &DataType) -> Option<Vec<u8>> {
    Some(match (v, t) {
        (Value::Int(i), DataType::Int2) => (*i as i16).to_be_bytes().to_vec(),
        (Value::Int(i), DataType::Int4) => (*i as i32).to_be_bytes().to_vec(),
        (Value::Int(i), DataType::Int8) => i.to_be_bytes().to_vec(),
        (Value::Int(i), DataType::Oid) => (*i as u32).to_be_bytes().to_vec(),
        (Value::Float(f), DataType::Float4) => (*f as f32).to_be_bytes().to_vec(),
        (Value::Float(f), DataType::Float8) => f.to_be_bytes().to_vec(),
        (Value::Bool(b), DataType::Bool) => vec![*b as u8],
        (Value::Bytes(b), DataType::Bytea) => b.clone(),
        (Value::Text(s) | Value::BpChar(s) | Value::Json(s), t)
            if t.is_text() || *t == DataType::Json =>
        {
            s.as_bytes().to_vec()
        }
        (v, t) => binary_of(v, t)?,
    })
}

/// PostgreSQL's binary array format (array_send): the number of dimensions (0 when empty),
/// a has-NULLs flag and the element type's OID, then each dimension's length and lower bound
/// (1 for arrays, 0 for int2vector/oidvector), then each element as its length (-1 for NULL)
/// and binary form.
fn array_binary(items: &[Value], elem: DataType, lower: i32) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(20 + items.len() * 8);
    let ndim: i32 = if items.is_empty() { 0 } else { 1 };
    out.extend_from_slice(&ndim.to_be_bytes());
    out.extend_from_slice(&i32::from(items.iter().any(Value::is_null)).to_be_bytes());
    out.extend_from_slice(&elem.oid().to_be_bytes());
    if ndim == 1 {
        out.extend_from_slice(&i32::try_from(items.len()).ok()?.to_be_bytes());
        out.extend_from_slice(&lower.to_be_bytes());
    }
    for v in items {
        if v.is_null() {
            out.extend_from_slice(&(-1i32).to_be_bytes());
            continue;
        }
        let body = element_binary(v, &elem)?;
        out.extend_from_slice(&i32::try_from(body.len()).ok()?.to_be_bytes());
        out.extend_from_slice(&body);
    }
    Some(out)
}

/// Decodes array_send's format (see `array_binary`) into an array of `elem`.
fn decode_array(bytes: &[u8], elem: DataType) -> Result<Value> {
    let bad = || {
        Error::new(
            sqlstate::INVALID_BINARY_REPRESENTATION,
            format!(
                "incorrect binary data format in bind parameter of type {}[]",
                elem.name()
            ),
        )
    };
    let mut rest = bytes;
    let word = |rest: &mut &[u8]| -> Result<i32> {
        let (head, tail) = rest.split_at_checked(4).ok_or_else(bad)?;
        *rest = tail;
        Ok(i32::from_be_bytes(head.try_into().map_err(|_| bad())?))
    };
    let ndim = word(&mut rest)?;
    let _has_nulls = word(&mut rest)?;
    let _elem_oid = word(&mut rest)?;
    let len = match ndim {
        0 => 0,
        1 => {
            let len = usize::try_from(word(&mut rest)?).map_err(|_| bad())?;
            let _lower = word(&mut rest)?;
            len
        }
        _ => {
            return Err(Error::unsupported(
                "multidimensional arrays are not supported",
            ));
        }
    };
    // Every element takes at least its 4-byte length: a count beyond that is a lie.
    if len > bytes.len() / 4 {
        return Err(bad());
    }
    let mut items = Vec::with_capacity(len);
    for _ in 0..len {
        let n = word(&mut rest)?;
        if n < 0 {
            items.push(Value::Null);
            continue;
        }
        let n = usize::try_from(n).map_err(|_| bad())?;
        let (body, tail) = rest.split_at_checked(n).ok_or_else(bad)?;
        rest = tail;
        items.push(decode_param(
            Some(&Bytes::copy_from_slice(body)),
            &elem,
            true,
        )?);
    }
    if !rest.is_empty() {
        return Err(bad());
    }
    Ok(Value::Array(items))
}

/// Decodes a bound parameter given its type.
pub fn decode_param(bytes: Option<&Bytes>, t: &DataType, binary: bool) -> Result<Value> {
    let Some(bytes) = bytes else {
        return Ok(Value::Null);
    };
    if !binary {
        let text = std::str::from_utf8(bytes).map_err(|_| {
            Error::new(
                sqlstate::INVALID_TEXT_REPRESENTATION,
                "invalid UTF-8 in parameter",
            )
        })?;
        return t.parse_text(text);
    }
    let bad = || {
        Error::new(
            sqlstate::INVALID_BINARY_REPRESENTATION,
            format!(
                "incorrect binary data format in bind parameter of type {}",
                t.name()
            ),
        )
    };
    let fixed = |n: usize| -> Result<&[u8]> {
        if bytes.len() == n {
            Ok(&bytes[..])
        } else {
            Err(bad())
        }
    };
    Ok(match t {
        DataType::Array(e) | DataType::Vector(e) => decode_array(bytes, e.scalar())?,
        DataType::Bool => Value::Bool(fixed(1)?[0] != 0),
        DataType::Int2 => {
            Value::Int(i16::from_be_bytes(fixed(2)?.try_into().map_err(|_| bad())?) as i64)
        }
        DataType::Int4 => {
            Value::Int(i32::from_be_bytes(fixed(4)?.try_into().map_err(|_| bad())?) as i64)
        }
        DataType::Int8 => Value::Int(i64::from_be_bytes(fixed(8)?.try_into().map_err(|_| bad())?)),
        DataType::Oid => {
            Value::Int(u32::from_be_bytes(fixed(4)?.try_into().map_err(|_| bad())?) as i64)
        }
        DataType::Float4 => {
            Value::Float(f32::from_be_bytes(fixed(4)?.try_into().map_err(|_| bad())?) as f64)
        }
        DataType::Float8 => {
            Value::Float(f64::from_be_bytes(fixed(8)?.try_into().map_err(|_| bad())?))
        }
        DataType::Text | DataType::Varchar(_) => {
            Value::Text(String::from_utf8(bytes.to_vec()).map_err(|_| bad())?)
        }
        DataType::Bytea => Value::Bytes(bytes.to_vec()),
        DataType::Numeric(_) => {
            let n = protocol::value::numeric::from_binary(bytes).ok_or_else(bad)??;
            t.convert(Value::Numeric(n))?
        }
        DataType::Date => Value::Date(i32::from_be_bytes(fixed(4)?.try_into().map_err(|_| bad())?)),
        DataType::Time => Value::Time(i64::from_be_bytes(fixed(8)?.try_into().map_err(|_| bad())?)),
        DataType::Timestamp => {
            Value::Timestamp(i64::from_be_bytes(fixed(8)?.try_into().map_err(|_| bad())?))
        }
        DataType::TimestampTz => {
            Value::TimestampTz(i64::from_be_bytes(fixed(8)?.try_into().map_err(|_| bad())?))
        }
        DataType::Interval => {
            let b = fixed(16)?;
            let micros = i64::from_be_bytes(b[..8].try_into().map_err(|_| bad())?);
            let days = i32::from_be_bytes(b[8..12].try_into().map_err(|_| bad())?);
            let months = i32::from_be_bytes(b[12..].try_into().map_err(|_| bad())?);
            Value::Interval(protocol::value::Interval {
                months,
                days,
                micros,
            })
        }
        DataType::Uuid => Value::Uuid(fixed(16)?.try_into().map_err(|_| bad())?),
        DataType::Json | DataType::Jsonb | DataType::Bpchar(_) => {
            let body = match (t, bytes.split_first()) {
                (DataType::Jsonb, Some((1, rest))) => rest,
                (DataType::Jsonb, _) => {
                    return Err(Error::new(
                        sqlstate::INVALID_BINARY_REPRESENTATION,
                        "unsupported jsonb version number",
                    ));
                }
                _ => &bytes[..],
            };
            let text = std::str::from_utf8(body).map_err(|_| bad())?;
            t.parse_text(text)?
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_description_carries_type_modifiers() {
        let col = |data_type| ResultColumn {
            name: "c".into(),
            data_type,
        };
        let fields = field_infos(
            &[
                col(DataType::Numeric(Some((10, 2)))),
                col(DataType::Varchar(Some(20))),
                col(DataType::Bpchar(Some(3))),
                col(DataType::Numeric(None)),
                col(DataType::Int4),
            ],
            |_| FieldFormat::Text,
        );
        let mods: Vec<i32> = fields.iter().map(|f| f.type_modifier()).collect();
        assert_eq!(mods, [655366, 24, 7, -1, -1]);
        // typlen, as PostgreSQL sends it.
        let sizes: Vec<i16> = fields.iter().map(|f| f.type_size()).collect();
        assert_eq!(sizes, [-1, -1, -1, -1, 4]);
    }
}
