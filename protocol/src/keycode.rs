//! Order-preserving ("memcomparable") encoding of primary-key tuples.
//!
//! Rows are stored in redb under the encoding of their primary-key values, so a byte-wise
//! comparison of two keys orders them as SQL orders the tuples, and a range of keys is a range
//! of rows. Each value is a tag byte followed by its body:
//!
//! ```text
//! tag  value        body
//! 0x01 false/true   one byte 0x00 / 0x01
//! 0x02 integer      8 bytes big-endian, sign bit flipped (i64 ^ 1<<63)
//! 0x03 float        8 bytes big-endian of the IEEE bits, all bits flipped if negative,
//!                   else sign bit flipped (so -inf < ... < -0 = +0 < ... < +inf < NaN)
//! 0x04 text         UTF-8 bytes with 0x00 escaped as 0x00 0xFF, ended by 0x00 0x00
//! 0x05 bytea        as text
//! 0x06 NULL         nothing (sorts after every value of the types above, as NULLS LAST)
//! 0x07 numeric      0x02 zero | 0x04 NaN | 0x03 positive: exponent (2 bytes, see below),
//!                   digits each as d+1, then 0x00 | 0x01 negative: exponent and digits
//!                   complemented (exponent bits inverted, digits as 10-d), then 0xFF
//! 0x08 date         4 bytes big-endian, sign bit flipped
//! 0x09 time         8 bytes as integer
//! 0x0A timestamp    8 bytes as integer
//! 0x0B timestamptz  8 bytes as integer
//! 0x0C interval     16 bytes: the span (months as 30 days) as i128, sign bit flipped; then
//!                   months (4), days (4), microseconds (8), each sign-flipped
//! 0x0D uuid         16 bytes
//! 0x0E json         as text
//! 0x0F jsonb        as text (byte order of the normalised text, not jsonb's sort order)
//! 0x10 character(n) as text, trailing blanks removed
//! 0x11 array        the elements' encodings concatenated (a tuple), escaped as text
//! ```
//! A numeric is written as `0.d1d2…dn × 10^e` with `d1 != 0` and no trailing zero digit; the
//! exponent `e` goes in as `(e as i16 as u16) ^ 0x8000` big-endian. Equal numerics (`1.5`,
//! `1.50`) encode identically. A primary key column never holds NULL, so NULL sorting before
//! the values of the newer tags does not matter.
//! A tuple is the concatenation of its values' encodings; the escape keeps a shorter string's
//! terminator below any continuation, so `('a', 2) < ('ab', 1)`. See docs/FORMATS.md.

use crate::error::{Error, Result};
use crate::value::{Interval, Numeric, Value};

const TAG_BOOL: u8 = 0x01;
const TAG_INT: u8 = 0x02;
const TAG_FLOAT: u8 = 0x03;
const TAG_TEXT: u8 = 0x04;
const TAG_BYTES: u8 = 0x05;
const TAG_NULL: u8 = 0x06;
const TAG_NUMERIC: u8 = 0x07;
const TAG_DATE: u8 = 0x08;
const TAG_TIME: u8 = 0x09;
const TAG_TIMESTAMP: u8 = 0x0A;
const TAG_TIMESTAMPTZ: u8 = 0x0B;
const TAG_INTERVAL: u8 = 0x0C;
const TAG_UUID: u8 = 0x0D;
const TAG_JSON: u8 = 0x0E;
const TAG_JSONB: u8 = 0x0F;
const TAG_BPCHAR: u8 = 0x10;
const TAG_ARRAY: u8 = 0x11;

fn int8(i: i64, out: &mut Vec<u8>) {
    out.extend_from_slice(&((i as u64) ^ (1 << 63)).to_be_bytes());
}

fn encode_numeric(n: &Numeric, out: &mut Vec<u8>) {
    if n.is_nan() {
        out.push(0x04);
        return;
    }
    let Some((neg, digits, exp)) = n.digits_exponent() else {
        out.push(0x02);
        return;
    };
    let e = ((exp as i16) as u16) ^ 0x8000;
    if neg {
        out.push(0x01);
        out.extend_from_slice(&(!e).to_be_bytes());
        out.extend(digits.iter().map(|d| 10 - d));
        out.push(0xFF);
    } else {
        out.push(0x03);
        out.extend_from_slice(&e.to_be_bytes());
        out.extend(digits.iter().map(|d| d + 1));
        out.push(0x00);
    }
}

/// Appends the encoding of one value to `out`.
pub fn encode_value(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Bool(b) => {
            out.push(TAG_BOOL);
            out.push(*b as u8);
        }
        Value::Int(i) => {
            out.push(TAG_INT);
            out.extend_from_slice(&((*i as u64) ^ (1 << 63)).to_be_bytes());
        }
        Value::Float(f) => {
            out.push(TAG_FLOAT);
            let f = if *f == 0.0 { 0.0 } else { *f };
            let bits = f.to_bits();
            let bits = if bits >> 63 == 1 {
                !bits
            } else {
                bits ^ (1 << 63)
            };
            out.extend_from_slice(&bits.to_be_bytes());
        }
        Value::Text(s) => {
            out.push(TAG_TEXT);
            escape(s.as_bytes(), out);
        }
        Value::Bytes(b) => {
            out.push(TAG_BYTES);
            escape(b, out);
        }
        Value::Null => out.push(TAG_NULL),
        Value::Numeric(n) => {
            out.push(TAG_NUMERIC);
            encode_numeric(n, out);
        }
        Value::Date(d) => {
            out.push(TAG_DATE);
            out.extend_from_slice(&((*d as u32) ^ (1 << 31)).to_be_bytes());
        }
        Value::Time(t) => {
            out.push(TAG_TIME);
            int8(*t, out);
        }
        Value::Timestamp(t) => {
            out.push(TAG_TIMESTAMP);
            int8(*t, out);
        }
        Value::TimestampTz(t) => {
            out.push(TAG_TIMESTAMPTZ);
            int8(*t, out);
        }
        Value::Interval(i) => {
            out.push(TAG_INTERVAL);
            out.extend_from_slice(&((i.span() as u128) ^ (1 << 127)).to_be_bytes());
            out.extend_from_slice(&((i.months as u32) ^ (1 << 31)).to_be_bytes());
            out.extend_from_slice(&((i.days as u32) ^ (1 << 31)).to_be_bytes());
            int8(i.micros, out);
        }
        Value::Uuid(u) => {
            out.push(TAG_UUID);
            out.extend_from_slice(u);
        }
        Value::Json(s) => {
            out.push(TAG_JSON);
            escape(s.as_bytes(), out);
        }
        Value::Jsonb(s) => {
            out.push(TAG_JSONB);
            escape(s.as_bytes(), out);
        }
        Value::BpChar(s) => {
            out.push(TAG_BPCHAR);
            escape(s.trim_end_matches(' ').as_bytes(), out);
        }
        Value::Array(items) => {
            out.push(TAG_ARRAY);
            escape(&encode_key(items), out);
        }
    }
}

fn escape(bytes: &[u8], out: &mut Vec<u8>) {
    for &b in bytes {
        out.push(b);
        if b == 0 {
            out.push(0xFF);
        }
    }
    out.extend_from_slice(&[0, 0]);
}

/// Encodes a key tuple.
pub fn encode_key(values: &[Value]) -> Vec<u8> {
    let mut out = Vec::with_capacity(values.len() * 9);
    for v in values {
        encode_value(v, &mut out);
    }
    out
}

/// Decodes a key tuple; the inverse of `encode_key`.
pub fn decode_key(mut bytes: &[u8]) -> Result<Vec<Value>> {
    let corrupt = || {
        Error::new(
            crate::error::sqlstate::DATA_CORRUPTED,
            "corrupt key encoding",
        )
    };
    let mut values = Vec::new();
    while let Some((&tag, rest)) = bytes.split_first() {
        bytes = rest;
        let take = |b: &mut &[u8], n: usize| -> Result<Vec<u8>> {
            let (head, rest) = b.split_at_checked(n).ok_or_else(corrupt)?;
            *b = rest;
            Ok(head.to_vec())
        };
        let fixed8 = |b: &[u8]| -> Result<u64> {
            let arr: [u8; 8] = b
                .get(..8)
                .ok_or_else(corrupt)?
                .try_into()
                .map_err(|_| corrupt())?;
            Ok(u64::from_be_bytes(arr))
        };
        match tag {
            TAG_BOOL => {
                let (&b, rest) = bytes.split_first().ok_or_else(corrupt)?;
                values.push(Value::Bool(b != 0));
                bytes = rest;
            }
            TAG_INT => {
                values.push(Value::Int((fixed8(bytes)? ^ (1 << 63)) as i64));
                bytes = &bytes[8..];
            }
            TAG_FLOAT => {
                let bits = fixed8(bytes)?;
                let bits = if bits >> 63 == 1 {
                    bits ^ (1 << 63)
                } else {
                    !bits
                };
                values.push(Value::Float(f64::from_bits(bits)));
                bytes = &bytes[8..];
            }
            TAG_NUMERIC => {
                let (&kind, rest) = bytes.split_first().ok_or_else(corrupt)?;
                bytes = rest;
                let n = match kind {
                    0x02 => Numeric::from_i64(0),
                    0x04 => Numeric::NaN,
                    0x01 | 0x03 => {
                        let neg = kind == 0x01;
                        let e = take(&mut bytes, 2)?;
                        let mut e = u16::from_be_bytes([e[0], e[1]]);
                        if neg {
                            e = !e;
                        }
                        let exp = (e ^ 0x8000) as i16 as i32;
                        let end = if neg { 0xFF } else { 0x00 };
                        let len = bytes.iter().position(|&b| b == end).ok_or_else(corrupt)?;
                        let raw = take(&mut bytes, len + 1)?;
                        let digits: Vec<u8> = raw[..len]
                            .iter()
                            .map(|&b| {
                                if neg {
                                    10u8.wrapping_sub(b)
                                } else {
                                    b.wrapping_sub(1)
                                }
                            })
                            .collect();
                        if digits.iter().any(|d| *d > 9) {
                            return Err(corrupt());
                        }
                        Numeric::from_digits_exponent(neg, &digits, exp).map_err(|_| corrupt())?
                    }
                    _ => return Err(corrupt()),
                };
                values.push(Value::Numeric(n));
            }
            TAG_DATE => {
                let b = take(&mut bytes, 4)?;
                let u = u32::from_be_bytes([b[0], b[1], b[2], b[3]]) ^ (1 << 31);
                values.push(Value::Date(u as i32));
            }
            TAG_TIME | TAG_TIMESTAMP | TAG_TIMESTAMPTZ => {
                let i = (fixed8(bytes)? ^ (1 << 63)) as i64;
                bytes = &bytes[8..];
                values.push(match tag {
                    TAG_TIME => Value::Time(i),
                    TAG_TIMESTAMP => Value::Timestamp(i),
                    _ => Value::TimestampTz(i),
                });
            }
            TAG_INTERVAL => {
                let b = take(&mut bytes, 32)?;
                let word = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
                let months = (word(16) ^ (1 << 31)) as i32;
                let days = (word(20) ^ (1 << 31)) as i32;
                let micros = (fixed8(&b[24..])? ^ (1 << 63)) as i64;
                values.push(Value::Interval(Interval {
                    months,
                    days,
                    micros,
                }));
            }
            TAG_UUID => {
                let b = take(&mut bytes, 16)?;
                values.push(Value::Uuid(b.try_into().map_err(|_| corrupt())?));
            }
            TAG_TEXT | TAG_BYTES | TAG_JSON | TAG_JSONB | TAG_BPCHAR | TAG_ARRAY => {
                let mut raw = Vec::new();
                let mut i = 0;
                loop {
                    let b = *bytes.get(i).ok_or_else(corrupt)?;
                    if b == 0 {
                        match bytes.get(i + 1) {
                            Some(0) => break,
                            Some(0xFF) => {
                                raw.push(0);
                                i += 2;
                                continue;
                            }
                            _ => return Err(corrupt()),
                        }
                    }
                    raw.push(b);
                    i += 1;
                }
                bytes = &bytes[i + 2..];
                values.push(if tag == TAG_BYTES {
                    Value::Bytes(raw)
                } else if tag == TAG_ARRAY {
                    Value::Array(decode_key(&raw)?)
                } else {
                    let s = String::from_utf8(raw).map_err(|_| corrupt())?;
                    match tag {
                        TAG_JSON => Value::Json(s),
                        TAG_JSONB => Value::Jsonb(s),
                        TAG_BPCHAR => Value::BpChar(s),
                        _ => Value::Text(s),
                    }
                });
            }
            TAG_NULL => values.push(Value::Null),
            _ => return Err(corrupt()),
        }
    }
    Ok(values)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(values: Vec<Value>) {
        assert_eq!(decode_key(&encode_key(&values)).unwrap(), values);
    }

    #[test]
    fn roundtrips() {
        roundtrip(vec![
            Value::Int(-5),
            Value::Text("a\0b".into()),
            Value::Bool(true),
        ]);
        roundtrip(vec![
            Value::Float(-1.5),
            Value::Bytes(vec![0, 0, 255]),
            Value::Null,
        ]);
    }

    #[test]
    fn new_types_roundtrip() {
        let n = |s: &str| Value::Numeric(Numeric::parse(s).unwrap());
        roundtrip(vec![
            n("-12.5"),
            n("0"),
            n("1234500"),
            n("0.000123"),
            Value::Numeric(Numeric::NaN),
            Value::Date(-5),
            Value::Time(3),
            Value::Timestamp(-1),
            Value::TimestampTz(i64::MAX),
            Value::Interval(Interval {
                months: -1,
                days: 3,
                micros: -7,
            }),
            Value::Uuid([7; 16]),
            Value::Json("{}".into()),
            Value::Jsonb("[1]".into()),
            Value::BpChar("ab".into()),
            Value::Array(vec![Value::Int(1), Value::Null, Value::Text("a\0".into())]),
            Value::Array(vec![]),
        ]);
        // Equal numerics encode identically.
        assert_eq!(encode_key(&[n("1.5")]), encode_key(&[n("1.50")]));
    }

    #[test]
    fn new_types_byte_order_is_sql_order() {
        let n = |s: &str| Value::Numeric(Numeric::parse(s).unwrap());
        let ordered = [
            "-1000", "-999.9", "-12", "-1.5", "-1.25", "-1", "-0.5", "-0.123", "-0.12", "-0.001",
            "0", "0.001", "0.12", "0.123", "0.5", "1", "1.25", "1.5", "9", "10", "12", "999.9",
            "1000", "NaN",
        ];
        for w in ordered.windows(2) {
            assert!(
                encode_key(&[n(w[0])]) < encode_key(&[n(w[1])]),
                "{} < {}",
                w[0],
                w[1]
            );
        }
        let iv = |months, days, micros| {
            Value::Interval(Interval {
                months,
                days,
                micros,
            })
        };
        let cases = [
            (Value::Date(-1), Value::Date(0)),
            (Value::Date(i32::MIN), Value::Date(i32::MAX)),
            (Value::Timestamp(-5), Value::Timestamp(5)),
            (Value::Time(0), Value::Time(1)),
            (iv(0, 29, 0), iv(1, 0, 0)),
            (iv(0, -1, 0), iv(0, 0, -1)),
            (Value::Uuid([0; 16]), Value::Uuid([1; 16])),
            (Value::BpChar("a".into()), Value::BpChar("ab".into())),
            (Value::Array(vec![]), Value::Array(vec![Value::Int(0)])),
            (
                Value::Array(vec![Value::Int(1)]),
                Value::Array(vec![Value::Int(1), Value::Int(0)]),
            ),
            (
                Value::Array(vec![Value::Int(1), Value::Int(9)]),
                Value::Array(vec![Value::Int(2)]),
            ),
        ];
        for (lo, hi) in cases {
            assert!(
                encode_key(std::slice::from_ref(&lo)) < encode_key(std::slice::from_ref(&hi)),
                "{lo:?} < {hi:?}"
            );
        }
    }

    #[test]
    fn byte_order_is_sql_order() {
        let cases = [
            (vec![Value::Int(-1)], vec![Value::Int(1)]),
            (vec![Value::Int(i64::MIN)], vec![Value::Int(i64::MAX)]),
            (vec![Value::Float(-2.0)], vec![Value::Float(-1.0)]),
            (vec![Value::Float(-0.5)], vec![Value::Float(0.25)]),
            (
                vec![Value::Text("a".into()), Value::Int(2)],
                vec![Value::Text("ab".into()), Value::Int(1)],
            ),
            (
                vec![Value::Text("a".into())],
                vec![Value::Text("a\0".into())],
            ),
            (vec![Value::Int(5)], vec![Value::Null]),
        ];
        for (lo, hi) in cases {
            assert!(encode_key(&lo) < encode_key(&hi), "{lo:?} < {hi:?}");
        }
    }
}
