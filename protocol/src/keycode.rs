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
//! 0x06 NULL         nothing (sorts after every value, as NULLS LAST)
//! ```
//! A tuple is the concatenation of its values' encodings; the escape keeps a shorter string's
//! terminator below any continuation, so `('a', 2) < ('ab', 1)`. See docs/FORMATS.md.

use crate::error::{Error, Result};
use crate::value::Value;

const TAG_BOOL: u8 = 0x01;
const TAG_INT: u8 = 0x02;
const TAG_FLOAT: u8 = 0x03;
const TAG_TEXT: u8 = 0x04;
const TAG_BYTES: u8 = 0x05;
const TAG_NULL: u8 = 0x06;

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
            TAG_TEXT | TAG_BYTES => {
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
                values.push(if tag == TAG_TEXT {
                    Value::Text(String::from_utf8(raw).map_err(|_| corrupt())?)
                } else {
                    Value::Bytes(raw)
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
