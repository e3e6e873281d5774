//! The exact decimal type `numeric`, on top of `rust_decimal`.
//!
//! A PostgreSQL numeric keeps a *display scale*: `1.50` stays `1.50`, `1.5 * 2` is `3.0`.
//! `rust_decimal::Decimal` keeps its scale the same way, so it carries values directly; the
//! rules PostgreSQL applies to result scales (sum: the larger scale, product: the sum of
//! scales, quotient: at least 16 significant digits, see [`div`]) are applied here.
//!
//! Limits (documented in docs/ARCHITECTURE.md): a Decimal holds a 96-bit mantissa (about 28
//! significant digits) and at most 28 digits after the point. Values beyond that raise 22003
//! "value overflows numeric format"; PostgreSQL's own limits are far wider. `Infinity` is not
//! supported; `NaN` is, ordering above every number as in PostgreSQL.

use std::cmp::Ordering;
use std::fmt;

use rust_decimal::prelude::ToPrimitive;
use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, Result, sqlstate};

/// A numeric value: a decimal with its display scale, or NaN.
#[derive(Clone, Copy, Debug)]
pub enum Numeric {
    Finite(Decimal),
    NaN,
}

/// The largest scale a value can have here (rust_decimal's limit).
pub const MAX_SCALE: u32 = 28;

/// A sum or difference has the larger scale of its operands, as in PostgreSQL (`0.00 + 1` is
/// `1.00`); rust_decimal returns the other operand unchanged when one is zero.
fn keep_scale(a: Decimal, b: Decimal, r: Option<Decimal>) -> Result<Decimal> {
    let mut r = r.ok_or_else(overflow)?;
    let want = a.scale().max(b.scale());
    if r.scale() < want {
        r.rescale(want);
    }
    Ok(r)
}

pub fn overflow() -> Error {
    Error::new(
        sqlstate::NUMERIC_VALUE_OUT_OF_RANGE,
        "value overflows numeric format",
    )
}

fn invalid(s: &str) -> Error {
    Error::new(
        sqlstate::INVALID_TEXT_REPRESENTATION,
        format!("invalid input syntax for type numeric: \"{s}\""),
    )
}

// The arithmetic returns `Result` (overflow is an SQL error), so it cannot be `std::ops`.
#[allow(clippy::should_implement_trait)]
impl Numeric {
    pub fn from_i64(i: i64) -> Numeric {
        Numeric::Finite(Decimal::from(i))
    }

    /// `m × 10^-scale`, keeping `scale` as the display scale.
    pub fn from_scaled(m: i64, scale: u32) -> Numeric {
        Numeric::Finite(normal_zero(Decimal::new(m, scale.min(MAX_SCALE))))
    }

    pub fn from_i128(i: i128) -> Result<Numeric> {
        Decimal::try_from_i128_with_scale(i, 0)
            .map(Numeric::Finite)
            .map_err(|_| overflow())
    }

    /// PostgreSQL's `numeric_in`: optional sign, digits with an optional point, an optional
    /// exponent; or `NaN`. Surrounding whitespace is allowed.
    pub fn parse(s: &str) -> Result<Numeric> {
        let t = s.trim();
        if t.eq_ignore_ascii_case("nan") {
            return Ok(Numeric::NaN);
        }
        let b = t.as_bytes();
        let mut i = 0;
        let negative = match b.first() {
            Some(b'-') => {
                i += 1;
                true
            }
            Some(b'+') => {
                i += 1;
                false
            }
            _ => false,
        };
        let mut digits = String::new();
        let mut frac = 0i64;
        let mut seen_point = false;
        let mut any = false;
        while i < b.len() {
            match b[i] {
                c @ b'0'..=b'9' => {
                    digits.push(c as char);
                    any = true;
                    if seen_point {
                        frac += 1;
                    }
                }
                b'.' if !seen_point => seen_point = true,
                _ => break,
            }
            i += 1;
        }
        if !any {
            return Err(invalid(s));
        }
        let mut exp = 0i64;
        if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
            let rest = &t[i + 1..];
            exp = rest.parse::<i64>().map_err(|_| invalid(s))?;
            if exp.abs() > 1000 {
                return Err(overflow());
            }
            i = b.len();
        }
        if i != b.len() {
            return Err(invalid(s));
        }
        // value = digits * 10^(exp - frac); display scale = max(0, frac - exp).
        let shift = exp - frac;
        let mut digits = digits.trim_start_matches('0').to_string();
        let scale = if shift >= 0 {
            digits.extend(std::iter::repeat_n('0', shift as usize));
            0u32
        } else {
            (-shift) as u32
        };
        if digits.is_empty() {
            digits.push('0');
        }
        let mut dec = decimal_from_digits(&digits, scale)?;
        if negative {
            dec.set_sign_negative(true);
        }
        Ok(Numeric::Finite(normal_zero(dec)))
    }

    /// The value as a Decimal, or `None` for NaN.
    pub fn decimal(&self) -> Option<Decimal> {
        match self {
            Numeric::Finite(d) => Some(*d),
            Numeric::NaN => None,
        }
    }

    pub fn is_nan(&self) -> bool {
        matches!(self, Numeric::NaN)
    }

    pub fn scale(&self) -> u32 {
        self.decimal().map(|d| d.scale()).unwrap_or(0)
    }

    pub fn to_f64(&self) -> f64 {
        match self {
            Numeric::NaN => f64::NAN,
            Numeric::Finite(d) => d.to_string().parse().unwrap_or(f64::NAN),
        }
    }

    /// `float8::numeric`: the value printed with 15 significant digits (`%.15g`), as
    /// PostgreSQL does; 6 for `real`.
    pub fn from_f64(f: f64, single: bool) -> Result<Numeric> {
        if f.is_nan() {
            return Ok(Numeric::NaN);
        }
        if f.is_infinite() {
            return Err(Error::new(
                sqlstate::FEATURE_NOT_SUPPORTED,
                "cannot convert infinity to numeric",
            ));
        }
        let digits = if single { 6 } else { 15 };
        let e = format!("{:.*e}", digits - 1, f);
        let (mant, exp) = e.split_once('e').unwrap_or((&e, "0"));
        let mant = if mant.contains('.') {
            mant.trim_end_matches('0').trim_end_matches('.')
        } else {
            mant
        };
        Numeric::parse(&format!("{mant}e{exp}"))
    }

    /// Rounds half away from zero to an integer, as numeric-to-integer casts do.
    pub fn to_i128_rounded(&self) -> Option<i128> {
        let d = self.decimal()?;
        d.round_dp_with_strategy(0, RoundingStrategy::MidpointAwayFromZero)
            .to_i128()
    }

    /// Applies a `numeric(p, s)` type modifier: rounds to `s` digits after the point, then
    /// fails with 22003 if more than `p - s` digits remain before it.
    pub fn with_typmod(self, precision: u32, scale: u32) -> Result<Numeric> {
        let Numeric::Finite(d) = self else {
            return Ok(self);
        };
        let mut r = d.round_dp_with_strategy(scale, RoundingStrategy::MidpointAwayFromZero);
        r.rescale(scale);
        if r.scale() != scale {
            return Err(overflow());
        }
        let int_digits = integer_digits(&r);
        if int_digits > precision.saturating_sub(scale) as usize {
            return Err(Error::new(
                sqlstate::NUMERIC_VALUE_OUT_OF_RANGE,
                "numeric field overflow",
            ));
        }
        Ok(Numeric::Finite(normal_zero(r)))
    }

    pub fn neg(self) -> Numeric {
        match self {
            Numeric::Finite(d) => Numeric::Finite(normal_zero(-d)),
            n => n,
        }
    }

    pub fn abs(self) -> Numeric {
        match self {
            Numeric::Finite(d) => Numeric::Finite(d.abs()),
            n => n,
        }
    }

    pub fn add(self, o: Numeric) -> Result<Numeric> {
        both(self, o, |a, b| keep_scale(a, b, a.checked_add(b)))
    }

    pub fn sub(self, o: Numeric) -> Result<Numeric> {
        both(self, o, |a, b| keep_scale(a, b, a.checked_sub(b)))
    }

    pub fn mul(self, o: Numeric) -> Result<Numeric> {
        both(self, o, |a, b| {
            let want = a.scale() + b.scale();
            let mut r = a.checked_mul(b).ok_or_else(overflow)?;
            if want <= MAX_SCALE {
                r.rescale(want);
            }
            Ok(r)
        })
    }

    /// Division with PostgreSQL's result scale (`select_div_scale`): enough digits for 16
    /// significant ones, and no fewer than either input's scale.
    pub fn div(self, o: Numeric) -> Result<Numeric> {
        if let Numeric::Finite(b) = o
            && b.is_zero()
            && !self.is_nan()
        {
            return Err(division_by_zero());
        }
        both(self, o, |a, b| {
            let scale = div_scale(&a, &b).min(MAX_SCALE);
            let q = a.checked_div(b).ok_or_else(overflow)?;
            let mut r = q.round_dp_with_strategy(scale, RoundingStrategy::MidpointAwayFromZero);
            r.rescale(scale);
            Ok(r)
        })
    }

    /// Remainder; the result scale is the larger input scale.
    pub fn rem(self, o: Numeric) -> Result<Numeric> {
        if let Numeric::Finite(b) = o
            && b.is_zero()
            && !self.is_nan()
        {
            return Err(division_by_zero());
        }
        both(self, o, |a, b| {
            let scale = a.scale().max(b.scale());
            let mut r = a.checked_rem(b).ok_or_else(overflow)?;
            r.rescale(scale);
            Ok(r)
        })
    }

    /// round(x, s): half away from zero; a negative `s` rounds left of the point.
    pub fn round(self, s: i64, strategy: RoundingStrategy) -> Result<Numeric> {
        let Numeric::Finite(d) = self else {
            return Ok(self);
        };
        if s >= 0 {
            let s = (s as u32).min(MAX_SCALE);
            let mut r = d.round_dp_with_strategy(s, strategy);
            r.rescale(s);
            return Ok(Numeric::Finite(normal_zero(r)));
        }
        let p = Decimal::from(10i64.checked_pow((-s).min(18) as u32).unwrap_or(i64::MAX));
        let scaled = d.checked_div(p).ok_or_else(overflow)?;
        let r = scaled
            .round_dp_with_strategy(0, strategy)
            .checked_mul(p)
            .ok_or_else(overflow)?;
        Ok(Numeric::Finite(normal_zero(r.trunc())))
    }

    pub fn ceil(self) -> Numeric {
        self.map(|d| d.ceil())
    }

    pub fn floor(self) -> Numeric {
        self.map(|d| d.floor())
    }

    fn map(self, f: impl Fn(Decimal) -> Decimal) -> Numeric {
        match self {
            Numeric::Finite(d) => {
                let mut r = f(d);
                r.rescale(0);
                Numeric::Finite(normal_zero(r))
            }
            n => n,
        }
    }

    /// The value with trailing fractional zeros removed (for hashing and keys).
    pub fn normalized(&self) -> Option<Decimal> {
        self.decimal().map(|d| d.normalize())
    }

    /// The value as an i64 if it is an integer in range (so it hashes like an integer).
    pub fn as_exact_i64(&self) -> Option<i64> {
        let d = self.decimal()?;
        if d.fract().is_zero() {
            d.trunc().to_i64()
        } else {
            None
        }
    }

    /// Sign and decimal digits without leading or trailing zeros, with the exponent `e` such
    /// that the value is `0.d1d2... × 10^e`. `None` for zero and NaN.
    pub fn digits_exponent(&self) -> Option<(bool, Vec<u8>, i32)> {
        let d = self.normalized()?;
        if d.is_zero() {
            return None;
        }
        let neg = d.is_sign_negative();
        let text = d.abs().to_string();
        let (int, frac) = text.split_once('.').unwrap_or((&text, ""));
        let int = int.trim_start_matches('0');
        let mut digits: Vec<u8> = int.bytes().chain(frac.bytes()).map(|c| c - b'0').collect();
        let mut exp = int.len() as i32;
        if int.is_empty() {
            let zeros = digits.iter().take_while(|&&c| c == 0).count();
            digits.drain(..zeros);
            exp = -(zeros as i32);
        }
        while digits.last() == Some(&0) {
            digits.pop();
        }
        Some((neg, digits, exp))
    }

    /// The inverse of `digits_exponent`.
    pub fn from_digits_exponent(neg: bool, digits: &[u8], exp: i32) -> Result<Numeric> {
        let text: String = digits.iter().map(|d| (b'0' + d) as char).collect();
        let s = format!("{}0.{text}e{exp}", if neg { "-" } else { "" });
        let n = Numeric::parse(&s)?;
        Ok(n.normalized().map(Numeric::Finite).unwrap_or(n))
    }
}

fn division_by_zero() -> Error {
    Error::new(sqlstate::DIVISION_BY_ZERO, "division by zero")
}

fn both(
    a: Numeric,
    b: Numeric,
    f: impl Fn(Decimal, Decimal) -> Result<Decimal>,
) -> Result<Numeric> {
    match (a, b) {
        (Numeric::Finite(x), Numeric::Finite(y)) => Ok(Numeric::Finite(normal_zero(f(x, y)?))),
        _ => Ok(Numeric::NaN),
    }
}

/// `-0.00` prints as `0.00` in PostgreSQL.
fn normal_zero(mut d: Decimal) -> Decimal {
    if d.is_zero() {
        d.set_sign_positive(true);
    }
    d
}

fn decimal_from_digits(digits: &str, scale: u32) -> Result<Decimal> {
    // Too many fractional digits: round them away (a documented limit).
    let (digits, scale) = if scale > MAX_SCALE {
        let drop = (scale - MAX_SCALE) as usize;
        if drop >= digits.len() {
            ("0".to_string(), MAX_SCALE)
        } else {
            let keep = &digits[..digits.len() - drop];
            let round_up = digits.as_bytes()[digits.len() - drop] >= b'5';
            let mut m: i128 = keep.parse().map_err(|_| overflow())?;
            if round_up {
                m += 1;
            }
            (m.to_string(), MAX_SCALE)
        }
    } else {
        (digits.to_string(), scale)
    };
    let m: i128 = digits.parse().map_err(|_| overflow())?;
    Decimal::try_from_i128_with_scale(m, scale).map_err(|_| overflow())
}

fn integer_digits(d: &Decimal) -> usize {
    let t = d.abs().trunc().to_string();
    let t = t.trim_start_matches('0');
    t.len()
}

/// The base-10000 weight and first non-zero base-10000 digit of `d` (0, 0 for zero).
fn weight_and_first(d: &Decimal) -> (i32, u32) {
    let Some((_, digits, exp)) = Numeric::Finite(*d).digits_exponent() else {
        return (0, 0);
    };
    // value = 0.d1d2... × 10^exp; the first digit d1 sits at decimal position exp - 1
    // (10^(exp-1)); its base-10000 group is floor((exp - 1) / 4).
    let pos = exp - 1;
    let weight = pos.div_euclid(4);
    // Digits of the group above d1: 10^(4*weight) .. 10^(4*weight+3).
    let lead = (pos - 4 * weight) as usize + 1;
    let mut first = 0u32;
    for i in 0..lead {
        first = first * 10 + *digits.get(i).unwrap_or(&0) as u32;
    }
    (weight, first)
}

/// PostgreSQL's `select_div_scale`.
fn div_scale(a: &Decimal, b: &Decimal) -> u32 {
    let (w1, f1) = weight_and_first(a);
    let (w2, f2) = weight_and_first(b);
    let mut qweight = w1 - w2;
    if f1 <= f2 {
        qweight -= 1;
    }
    let rscale = 16 - qweight * 4;
    rscale
        .max(a.scale() as i32)
        .max(b.scale() as i32)
        .clamp(0, 1000) as u32
}

impl fmt::Display for Numeric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Numeric::NaN => f.write_str("NaN"),
            Numeric::Finite(d) => write!(f, "{d}"),
        }
    }
}

impl PartialEq for Numeric {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Numeric {}

impl PartialOrd for Numeric {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Numeric {
    /// NaN equals NaN and sorts above every number, as in PostgreSQL.
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (Numeric::NaN, Numeric::NaN) => Ordering::Equal,
            (Numeric::NaN, _) => Ordering::Greater,
            (_, Numeric::NaN) => Ordering::Less,
            (Numeric::Finite(a), Numeric::Finite(b)) => a.cmp(b),
        }
    }
}

/// Stored (bincode) as PostgreSQL's text form, so a stored value reads back with its scale.
impl Serialize for Numeric {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Numeric {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Numeric::parse(&s).map_err(|e| serde::de::Error::custom(e.message))
    }
}

/// PostgreSQL's binary `numeric`: ndigits, weight, sign, dscale (each 16 bits), then
/// `ndigits` base-10000 digits.
pub fn to_binary(n: &Numeric) -> Vec<u8> {
    let mut out = Vec::new();
    let Numeric::Finite(d) = n else {
        out.extend_from_slice(&0i16.to_be_bytes());
        out.extend_from_slice(&0i16.to_be_bytes());
        out.extend_from_slice(&0xC000u16.to_be_bytes());
        out.extend_from_slice(&0u16.to_be_bytes());
        return out;
    };
    let text = d.abs().to_string();
    let (int, frac) = text.split_once('.').unwrap_or((&text, ""));
    let int = int.trim_start_matches('0');
    let pad_int = (4 - int.len() % 4) % 4;
    let int_padded = format!("{}{int}", "0".repeat(pad_int));
    let pad_frac = (4 - frac.len() % 4) % 4;
    let frac_padded = format!("{frac}{}", "0".repeat(pad_frac));
    let mut groups: Vec<i16> = int_padded
        .as_bytes()
        .chunks(4)
        .chain(frac_padded.as_bytes().chunks(4))
        .map(|c| std::str::from_utf8(c).unwrap_or("0").parse().unwrap_or(0))
        .collect();
    let mut weight = (int_padded.len() / 4) as i16 - 1;
    while groups.first() == Some(&0) {
        groups.remove(0);
        weight -= 1;
    }
    while groups.last() == Some(&0) {
        groups.pop();
    }
    if groups.is_empty() {
        weight = 0;
    }
    let sign: u16 = if d.is_sign_negative() && !d.is_zero() {
        0x4000
    } else {
        0
    };
    out.extend_from_slice(&(groups.len() as i16).to_be_bytes());
    out.extend_from_slice(&weight.to_be_bytes());
    out.extend_from_slice(&sign.to_be_bytes());
    out.extend_from_slice(&(d.scale() as u16).to_be_bytes());
    for g in groups {
        out.extend_from_slice(&g.to_be_bytes());
    }
    out
}

/// Decodes PostgreSQL's binary `numeric`; `None` if malformed.
pub fn from_binary(b: &[u8]) -> Option<Result<Numeric>> {
    let word = |i: usize| -> Option<u16> { Some(u16::from_be_bytes([*b.get(i)?, *b.get(i + 1)?])) };
    let ndigits = word(0)? as usize;
    let weight = word(2)? as i16 as i32;
    let sign = word(4)?;
    let dscale = word(6)? as u32;
    if b.len() != 8 + 2 * ndigits {
        return None;
    }
    if sign == 0xC000 {
        return Some(Ok(Numeric::NaN));
    }
    let mut text = String::new();
    for i in 0..ndigits {
        let g = word(8 + 2 * i)?;
        if g > 9999 {
            return None;
        }
        text.push_str(&format!("{g:04}"));
    }
    if text.is_empty() {
        text.push('0');
    }
    // The digits are 0.g0g1... × 10000^(weight+1).
    let exp = 4 * (weight + 1);
    let s = format!("{}0.{text}e{exp}", if sign == 0x4000 { "-" } else { "" });
    Some(Numeric::parse(&s).map(|n| match n {
        Numeric::Finite(d) => {
            let mut r = d.normalize();
            r.rescale(dscale.min(MAX_SCALE));
            Numeric::Finite(r)
        }
        n => n,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> Numeric {
        Numeric::parse(s).unwrap()
    }

    #[test]
    fn parse_and_print_keep_scale() {
        assert_eq!(n("1.50").to_string(), "1.50");
        assert_eq!(n("1e3").to_string(), "1000");
        assert_eq!(n("1.5e1").to_string(), "15");
        assert_eq!(n("-0.00").to_string(), "0.00");
        assert_eq!(n(" 12 ").to_string(), "12");
        assert_eq!(n(".5").to_string(), "0.5");
        assert_eq!(n("nan").to_string(), "NaN");
        assert!(Numeric::parse("abc").is_err());
        assert!(Numeric::parse("1e").is_err());
        assert!(Numeric::parse("").is_err());
        assert_eq!(
            Numeric::parse("1e100").unwrap_err().code,
            sqlstate::NUMERIC_VALUE_OUT_OF_RANGE
        );
    }

    #[test]
    fn arithmetic_scales_follow_postgres() {
        assert_eq!(n("1.5").mul(n("2")).unwrap().to_string(), "3.0");
        assert_eq!(
            n("1.0").div(n("3")).unwrap().to_string(),
            "0.33333333333333333333"
        );
        assert_eq!(
            n("10").div(n("4.0")).unwrap().to_string(),
            "2.5000000000000000"
        );
        assert_eq!(
            n("7").div(n("3")).unwrap().to_string(),
            "2.3333333333333333"
        );
        assert_eq!(
            n("3.51").div(n("2")).unwrap().to_string(),
            "1.7550000000000000"
        );
        assert_eq!(n("0.1").add(n("0.2")).unwrap().to_string(), "0.3");
        assert!(n("1").div(n("0")).is_err());
        assert_eq!(n("5.5").rem(n("2")).unwrap().to_string(), "1.5");
    }

    #[test]
    fn typmod_rounds_and_overflows() {
        assert_eq!(n("1.005").with_typmod(10, 2).unwrap().to_string(), "1.01");
        assert_eq!(n("1.5").with_typmod(10, 2).unwrap().to_string(), "1.50");
        assert_eq!(n("123.456").with_typmod(5, 1).unwrap().to_string(), "123.5");
        let e = n("12345.6").with_typmod(5, 1).unwrap_err();
        assert_eq!(e.message, "numeric field overflow");
    }

    #[test]
    fn floats_convert_with_15_digits() {
        assert_eq!(Numeric::from_f64(0.1, false).unwrap().to_string(), "0.1");
        assert_eq!(Numeric::from_f64(100.0, false).unwrap().to_string(), "100");
        assert_eq!(
            Numeric::from_f64(1.0 / 3.0, false).unwrap().to_string(),
            "0.333333333333333"
        );
    }

    #[test]
    fn binary_format_round_trips() {
        for s in [
            "0",
            "1.50",
            "-12345.678",
            "10000",
            "0.0001",
            "123456789.000001",
            "NaN",
        ] {
            let v = n(s);
            let back = from_binary(&to_binary(&v)).unwrap().unwrap();
            assert_eq!(back.to_string(), v.to_string(), "{s}");
        }
        // 12345.678 in PostgreSQL: 3 digits, weight 1, +, dscale 3: 1 2345 6780.
        assert_eq!(
            to_binary(&n("12345.678")),
            vec![0, 3, 0, 1, 0, 0, 0, 3, 0, 1, 0x09, 0x29, 0x1a, 0x7c]
        );
    }
}
