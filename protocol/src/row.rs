//! Row encoding: a stored row is the bincode 2 (standard configuration) encoding of its
//! `Vec<Value>`, one value per column in table order. See docs/FORMATS.md.

use crate::error::{Error, Result, sqlstate};
use crate::value::Value;

pub fn encode_row(row: &[Value]) -> Vec<u8> {
    // Encoding plain enums and vectors into a Vec cannot fail.
    bincode::serde::encode_to_vec(row, bincode::config::standard()).unwrap_or_default()
}

pub fn decode_row(bytes: &[u8]) -> Result<Vec<Value>> {
    bincode::serde::decode_from_slice(bytes, bincode::config::standard())
        .map(|(row, _)| row)
        .map_err(|e| Error::new(sqlstate::DATA_CORRUPTED, format!("corrupt row: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip() {
        let row = vec![
            Value::Int(1),
            Value::Null,
            Value::Text("x".into()),
            Value::Float(0.5),
        ];
        assert_eq!(decode_row(&encode_row(&row)).unwrap(), row);
        assert!(decode_row(&[0xff, 0xff]).is_err());
    }
}
