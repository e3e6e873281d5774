//! The shard hash: which 64-bit point of the hash space a shard-key value lands on.
//!
//! The function is fixed forever (changing it would move every row), so it is defined here
//! byte by byte and in docs/FORMATS.md:
//!
//! 1. Canonical bytes of the value: integers of any width (and floats with an exact integer
//!    value) are `'i'` then 8 bytes big-endian two's complement; other floats `'f'` then the
//!    8 big-endian IEEE bytes; text `'t'` then UTF-8; bytea `'b'` then the bytes; boolean `'o'`
//!    then 0/1; NULL is the single byte `'n'`. Numeric: an integral value in i64 range as an
//!    integer (`'i'`), else `'d'` + its text without trailing zeros, NaN `'N'`; date `'D'` +
//!    4 bytes, time `'T'`, timestamp `'S'`, timestamptz `'Z'` + 8 bytes; interval `'v'` + its
//!    16-byte span (months as 30 days); uuid `'u'` + 16 bytes; json `'j'` + text; jsonb `'J'`
//!    then its canonical text; character(n) as text without trailing blanks (`'t'`).
//!    Big-endian throughout.
//! 2. FNV-1a 64 over those bytes (offset 0xcbf29ce484222325, prime 0x100000001b3).
//! 3. The splitmix64 finaliser, which spreads FNV's weak low bits across the whole word.
//!
//! A shard owns a contiguous range `[start, end]` of the space; `split_space(n)` divides the
//! space into `n` equal ranges.

use serde::{Deserialize, Serialize};

use crate::value::Value;

/// Appends the canonical hashing bytes of a value.
pub fn canonical_bytes(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Int(i) => {
            out.push(b'i');
            out.extend_from_slice(&i.to_be_bytes());
        }
        Value::Float(f) if f.fract() == 0.0 && *f >= i64::MIN as f64 && *f < i64::MAX as f64 => {
            out.push(b'i');
            out.extend_from_slice(&(*f as i64).to_be_bytes());
        }
        Value::Float(f) => {
            out.push(b'f');
            out.extend_from_slice(&f.to_bits().to_be_bytes());
        }
        Value::Text(s) => {
            out.push(b't');
            out.extend_from_slice(s.as_bytes());
        }
        Value::Bytes(b) => {
            out.push(b'b');
            out.extend_from_slice(b);
        }
        Value::Bool(b) => {
            out.push(b'o');
            out.push(*b as u8);
        }
        Value::Null => out.push(b'n'),
        Value::Numeric(n) => match (n.as_exact_i64(), n.normalized()) {
            (Some(i), _) => {
                out.push(b'i');
                out.extend_from_slice(&i.to_be_bytes());
            }
            (None, Some(d)) => {
                out.push(b'd');
                out.extend_from_slice(d.to_string().as_bytes());
            }
            (None, None) => out.push(b'N'),
        },
        Value::Date(d) => {
            out.push(b'D');
            out.extend_from_slice(&d.to_be_bytes());
        }
        Value::Time(t) => {
            out.push(b'T');
            out.extend_from_slice(&t.to_be_bytes());
        }
        Value::Timestamp(t) => {
            out.push(b'S');
            out.extend_from_slice(&t.to_be_bytes());
        }
        Value::TimestampTz(t) => {
            out.push(b'Z');
            out.extend_from_slice(&t.to_be_bytes());
        }
        Value::Interval(i) => {
            out.push(b'v');
            out.extend_from_slice(&i.span().to_be_bytes());
        }
        Value::Uuid(u) => {
            out.push(b'u');
            out.extend_from_slice(u);
        }
        Value::Json(s) => {
            out.push(b'j');
            out.extend_from_slice(s.as_bytes());
        }
        Value::Jsonb(s) => {
            out.push(b'J');
            out.extend_from_slice(crate::value::json::canonical(s).as_bytes());
        }
        Value::BpChar(s) => {
            out.push(b't');
            out.extend_from_slice(s.trim_end_matches(' ').as_bytes());
        }
        Value::Array(items) => {
            out.push(b'a');
            out.extend_from_slice(&(items.len() as u32).to_be_bytes());
            for item in items {
                let mut one = Vec::new();
                canonical_bytes(item, &mut one);
                out.extend_from_slice(&(one.len() as u32).to_be_bytes());
                out.extend_from_slice(&one);
            }
        }
    }
}

/// The shard hash of one shard-key value.
pub fn shard_hash(value: &Value) -> u64 {
    shard_hash_tuple(std::slice::from_ref(value))
}

/// The shard hash of a (possibly composite) shard key: the canonical bytes concatenated.
pub fn shard_hash_tuple(values: &[Value]) -> u64 {
    let mut bytes = Vec::with_capacity(16);
    for v in values {
        canonical_bytes(v, &mut bytes);
    }
    let mut h: u64 = 0xcbf29ce484222325;
    for b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    splitmix64(h)
}

fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e3779b97f4a7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d049bb133111eb);
    z ^ (z >> 31)
}

/// An inclusive range of the hash space owned by one shard.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HashRange {
    pub start: u64,
    pub end: u64,
}

impl HashRange {
    pub fn contains(&self, hash: u64) -> bool {
        self.start <= hash && hash <= self.end
    }

    /// The two halves of the range, or `None` for a range of one point.
    pub fn halves(&self) -> Option<(HashRange, HashRange)> {
        if self.start == self.end {
            return None;
        }
        let mid = self.start + (self.end - self.start) / 2;
        Some((
            HashRange {
                start: self.start,
                end: mid,
            },
            HashRange {
                start: mid + 1,
                end: self.end,
            },
        ))
    }
}

impl std::fmt::Display for HashRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "[{:016x}, {:016x}]", self.start, self.end)
    }
}

/// Splits the whole 64-bit space into `n` contiguous equal ranges.
pub fn split_space(n: u32) -> Vec<HashRange> {
    let n = n.max(1) as u128;
    let space: u128 = 1 << 64;
    (0..n)
        .map(|i| HashRange {
            start: (i * space / n) as u64,
            end: (((i + 1) * space / n) - 1) as u64,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integer_widths_and_integral_floats_colocate() {
        assert_eq!(shard_hash(&Value::Int(42)), shard_hash(&Value::Float(42.0)));
        assert_ne!(shard_hash(&Value::Int(42)), shard_hash(&Value::Int(43)));
        assert_ne!(
            shard_hash(&Value::Int(42)),
            shard_hash(&Value::Text("42".into()))
        );
    }

    #[test]
    fn the_function_never_changes() {
        // Pinned values: a change here moves every stored row to another shard.
        assert_eq!(shard_hash(&Value::Int(1)), shard_hash(&Value::Int(1)));
        let pinned = shard_hash(&Value::Int(0));
        let mut h: u64 = 0xcbf29ce484222325;
        for b in [b'i', 0, 0, 0, 0, 0, 0, 0, 0] {
            h ^= b as u64;
            h = h.wrapping_mul(0x100000001b3);
        }
        assert_eq!(pinned, splitmix64(h));
    }

    #[test]
    fn ranges_cover_the_space() {
        let ranges = split_space(4);
        assert_eq!(ranges[0].start, 0);
        assert_eq!(ranges[3].end, u64::MAX);
        for w in ranges.windows(2) {
            assert_eq!(w[0].end + 1, w[1].start);
        }
        let spread: Vec<usize> = (0..1000)
            .map(|k| {
                ranges
                    .iter()
                    .position(|r| r.contains(shard_hash(&Value::Int(k))))
                    .unwrap()
            })
            .collect();
        for s in 0..4 {
            let n = spread.iter().filter(|&&x| x == s).count();
            assert!(n > 150, "shard {s} got {n} of 1000 keys");
        }
    }
}
