//! Type rules: which operators apply to which types, what they return, and casts.
//!
//! Binding resolves every expression to a `DataType`, or to PostgreSQL's "unknown" (`None`)
//! for a quoted literal, NULL, or a parameter nothing has typed yet. Unknowns take the type of
//! whatever they meet (`id = '5'` parses '5' as the column's type), which is also how
//! parameter types are inferred for `describe`. Rules follow PostgreSQL where it matters to
//! clients: `int4 + int4` is `int4` and overflows at the int4 range; mixing with a float gives
//! `float8`; incompatible operands are 42883 "operator does not exist".

use protocol::{DataType, Error, Result, Value, sqlstate};

/// A bound expression's type; `None` is PostgreSQL's "unknown".
pub type Ty = Option<DataType>;

pub fn ty_name(t: &Ty) -> String {
    t.map(|t| t.name()).unwrap_or_else(|| "unknown".into())
}

/// The type an unknown takes when compared with `t`: a varchar's length limit must not make
/// `name = 'a long literal'` an error, so comparisons use the unbounded type.
pub fn comparison_type(t: DataType) -> DataType {
    match t {
        DataType::Varchar(_) => DataType::Text,
        // Nor may a numeric(p, s) or character(n) column round or pad what it is compared to.
        DataType::Numeric(_) => DataType::Numeric(None),
        DataType::Bpchar(_) => DataType::Bpchar(None),
        t => t,
    }
}

fn int_rank(t: &DataType) -> u8 {
    match t {
        DataType::Int2 => 1,
        DataType::Int4 => 2,
        _ => 3,
    }
}

/// The result type of `+ - * / %` on two known types, or `None` if no such operator exists.
pub fn arithmetic_type(op: &str, l: DataType, r: DataType) -> Option<DataType> {
    // oid arithmetic is bigint arithmetic (its result need not be a valid oid).
    let as_int8 = |t: DataType| {
        if t == DataType::Oid {
            DataType::Int8
        } else {
            t
        }
    };
    let (l, r) = (as_int8(l), as_int8(r));
    if l.is_integer() && r.is_integer() {
        // int2 op int2 is int2 in PostgreSQL; the wider width wins otherwise.
        return Some(if int_rank(&l) >= int_rank(&r) { l } else { r });
    }
    if l.is_numeric() && r.is_numeric() {
        // int op numeric is numeric; anything with a float is a float (PostgreSQL's
        // preferred type of the numeric category); float % float does not exist.
        if !l.is_float() && !r.is_float() {
            return Some(DataType::Numeric(None));
        }
        if op == "%" {
            return None;
        }
        return Some(if l == DataType::Float4 && r == DataType::Float4 {
            DataType::Float4
        } else {
            DataType::Float8
        });
    }
    datetime_arithmetic_type(op, l, r)
}

/// The date/time operators PostgreSQL defines (`date + integer`, `timestamp - timestamp`,
/// `interval * float8`, ...), or `None`.
fn datetime_arithmetic_type(op: &str, l: DataType, r: DataType) -> Option<DataType> {
    use DataType as T;
    let ts_like = |t: DataType| matches!(t, T::Timestamp | T::TimestampTz);
    Some(match (op, l, r) {
        ("+", T::Date, t) | ("+", t, T::Date) | ("-", T::Date, t) if t.is_integer() => T::Date,
        ("-", T::Date, T::Date) => T::Int4,
        ("+", T::Date, T::Interval) | ("+", T::Interval, T::Date) | ("-", T::Date, T::Interval) => {
            T::Timestamp
        }
        ("+", T::Date, T::Time) | ("+", T::Time, T::Date) => T::Timestamp,
        ("+" | "-", t, T::Interval) if ts_like(t) => t,
        ("+", T::Interval, t) if ts_like(t) => t,
        ("-", a, b) if ts_like(a) && a == b => T::Interval,
        ("-", T::Timestamp, T::Date) | ("-", T::Date, T::Timestamp) => T::Interval,
        ("+" | "-", T::Time, T::Interval) | ("+", T::Interval, T::Time) => T::Time,
        ("-", T::Time, T::Time) => T::Interval,
        ("+" | "-", T::Interval, T::Interval) => T::Interval,
        ("*", T::Interval, t) | ("*", t, T::Interval) | ("/", T::Interval, t) if t.is_numeric() => {
            T::Interval
        }
        _ => return None,
    })
}

/// Whether `=`, `<` and friends apply between two known types.
pub fn comparable(l: DataType, r: DataType) -> bool {
    (l.is_numeric() && r.is_numeric())
        || (l.is_text() && r.is_text())
        || (l.is_datetime() && r.is_datetime())
        // json has no equality operator in PostgreSQL; the other types compare with their own.
        || (l == r && l != DataType::Json)
        || matches!((l, r), (DataType::Array(a) | DataType::Vector(a), DataType::Array(b) | DataType::Vector(b)) if comparable(a.scalar(), b.scalar()))
}

pub fn operator_error(op: &str, l: &Ty, r: &Ty) -> Error {
    Error::new(
        sqlstate::UNDEFINED_FUNCTION,
        format!(
            "operator does not exist: {} {op} {}",
            ty_name(l),
            ty_name(r)
        ),
    )
}

/// The one type that values of all `types` convert to, as for CASE branches, COALESCE
/// arguments, IN lists or UNION columns; `what` names the construct in the error.
pub fn common_type(types: &[Ty], what: &str) -> Result<Ty> {
    let mut out: Ty = None;
    for t in types.iter().flatten() {
        out = Some(match out {
            None => *t,
            Some(o) if o == *t => o,
            Some(o) if o.is_integer() && t.is_integer() => {
                if int_rank(&o) >= int_rank(t) {
                    o
                } else {
                    *t
                }
            }
            Some(o) if o.is_numeric() && t.is_numeric() => {
                if o.is_float() || t.is_float() {
                    DataType::Float8
                } else {
                    DataType::Numeric(None)
                }
            }
            Some(o) if o.is_text() && t.is_text() => {
                if matches!((o, t), (DataType::Bpchar(_), DataType::Bpchar(_))) {
                    DataType::Bpchar(None)
                } else {
                    DataType::Text
                }
            }
            Some(o) if o.is_datetime() && t.is_datetime() => {
                if o == DataType::TimestampTz || *t == DataType::TimestampTz {
                    DataType::TimestampTz
                } else {
                    DataType::Timestamp
                }
            }
            Some(DataType::Array(a)) if let DataType::Array(b) = t => {
                let elem = common_type(&[Some(a.scalar()), Some(b.scalar())], what)?;
                match elem.and_then(protocol::value::array::Elem::of) {
                    Some(e) => DataType::Array(e),
                    None => DataType::Array(a),
                }
            }
            Some(o) if o == DataType::Time && *t == DataType::Interval => DataType::Interval,
            Some(o) if o == DataType::Interval && *t == DataType::Time => DataType::Interval,
            Some(o) => {
                return Err(Error::new(
                    sqlstate::DATATYPE_MISMATCH,
                    format!(
                        "{what} types {} and {} cannot be matched",
                        o.name(),
                        t.name()
                    ),
                ));
            }
        });
    }
    Ok(out)
}

fn out_of_range(t: &DataType) -> Error {
    Error::new(
        sqlstate::NUMERIC_VALUE_OUT_OF_RANGE,
        format!("{} out of range", t.name()),
    )
}

/// Checks an integer result against its type's width.
pub fn check_int(i: Option<i64>, t: &DataType) -> Result<Value> {
    let i = i.ok_or_else(|| out_of_range(t))?;
    let fits = match t {
        DataType::Int2 => i16::try_from(i).is_ok(),
        DataType::Int4 => i32::try_from(i).is_ok(),
        _ => true,
    };
    if fits {
        Ok(Value::Int(i))
    } else {
        Err(out_of_range(t))
    }
}

/// Checks a float result: finite inputs must not overflow to infinity.
pub fn check_float(f: f64, inputs_finite: bool, t: &DataType) -> Result<Value> {
    check_float_range(f, inputs_finite, false, t)
}

/// Checks a float result as PostgreSQL's `check_float8_val` does: finite inputs must not
/// overflow to infinity, and where `zero_means_underflow` (a product of non-zero factors, a
/// quotient of a non-zero dividend by a finite divisor, a power of a non-zero base) the
/// result must not have vanished to zero.
pub fn check_float_range(
    f: f64,
    inputs_finite: bool,
    zero_means_underflow: bool,
    t: &DataType,
) -> Result<Value> {
    let f = if *t == DataType::Float4 {
        f as f32 as f64
    } else {
        f
    };
    if f.is_infinite() && inputs_finite {
        return Err(Error::new(
            sqlstate::NUMERIC_VALUE_OUT_OF_RANGE,
            "value out of range: overflow",
        ));
    }
    if f == 0.0 && zero_means_underflow {
        return Err(Error::new(
            sqlstate::NUMERIC_VALUE_OUT_OF_RANGE,
            "value out of range: underflow",
        ));
    }
    Ok(Value::Float(f))
}

/// An explicit cast (`CAST(x AS t)`, `x::t`), which is more permissive than assignment:
/// anything casts to text, numbers convert between each other, and varchar(n) truncates.
pub fn cast(v: Value, from: Ty, to: &DataType) -> Result<Value> {
    let shown = |v: &Value| from.unwrap_or_else(|| source_type(v));
    Ok(match (v, to) {
        (Value::Null, _) => Value::Null,
        (Value::BpChar(s), t) => {
            // character(n) casts to other string types without its trailing blanks.
            return cast(
                Value::Text(s.trim_end_matches(' ').to_string()),
                Some(DataType::Text),
                t,
            );
        }
        (Value::Text(s), DataType::Varchar(Some(n))) => {
            Value::Text(s.chars().take(*n as usize).collect())
        }
        (Value::Text(s), DataType::Bpchar(Some(n))) => {
            Value::BpChar(protocol::value::bpchar_cast(&s, *n))
        }
        (Value::Text(s), t) => t.parse_text(&s)?,
        (v, DataType::Bpchar(n)) => {
            let s = match v {
                Value::Bool(b) => if b { "true" } else { "false" }.to_string(),
                v => v.to_pg_text(&shown(&v)).unwrap_or_default(),
            };
            Value::BpChar(match n {
                Some(n) => protocol::value::bpchar_cast(&s, *n),
                None => s,
            })
        }
        // The cast from boolean to text spells the value out, unlike boolean's output format.
        (Value::Bool(b), DataType::Text | DataType::Varchar(None)) => {
            Value::Text(if b { "true" } else { "false" }.into())
        }
        (Value::Bool(b), DataType::Varchar(Some(n))) => Value::Text(
            if b { "true" } else { "false" }
                .chars()
                .take(*n as usize)
                .collect(),
        ),
        (v, DataType::Text | DataType::Varchar(None)) => {
            Value::Text(v.to_pg_text(&shown(&v)).unwrap_or_default())
        }
        (v, DataType::Varchar(Some(n))) => {
            let s = v.to_pg_text(&shown(&v)).unwrap_or_default();
            Value::Text(s.chars().take(*n as usize).collect())
        }
        (Value::Bool(b), t) if t.is_integer() => Value::Int(b as i64),
        (Value::Int(i), DataType::Bool) => Value::Bool(i != 0),
        // real to numeric keeps real's 6 significant digits, not double precision's 15.
        (Value::Float(f), DataType::Numeric(tm)) if from == Some(DataType::Float4) => {
            let n = protocol::value::Numeric::from_f64(f, true)?;
            DataType::Numeric(*tm).convert(Value::Numeric(n))?
        }
        (v @ (Value::Int(_) | Value::Float(_) | Value::Numeric(_)), t) if t.is_numeric() => {
            t.convert(v)?
        }
        (Value::Jsonb(j), t) if t.is_numeric() || *t == DataType::Bool => jsonb_scalar(&j, t)?,
        (Value::Bool(b), DataType::Bool) => Value::Bool(b),
        (Value::Bytes(b), DataType::Bytea) => Value::Bytes(b),
        (Value::Array(items), DataType::Array(e) | DataType::Vector(e)) => {
            let from_elem = match from {
                Some(DataType::Array(f) | DataType::Vector(f)) => Some(f.scalar()),
                _ => None,
            };
            Value::Array(
                items
                    .into_iter()
                    .map(|v| cast(v, from_elem, &e.scalar()))
                    .collect::<Result<_>>()?,
            )
        }
        (Value::Interval(i), DataType::Time) => Value::Time(
            i.micros
                .rem_euclid(protocol::value::datetime::USECS_PER_DAY),
        ),
        (v, t) if t.accepts_assignment(&v) => t.convert(v)?,
        (v, t) => {
            return Err(Error::new(
                sqlstate::DATATYPE_MISMATCH,
                format!("cannot cast type {} to {}", v.type_name(), t.name()),
            ));
        }
    })
}

/// jsonb to a number or boolean: only a jsonb scalar of that kind converts.
fn jsonb_scalar(text: &str, to: &DataType) -> Result<Value> {
    use protocol::value::json;
    let node = json::parse(text)?;
    let what = match &node.kind {
        json::Kind::Number(n) if to.is_numeric() => {
            return to.convert(Value::Numeric(protocol::value::Numeric::parse(n)?));
        }
        json::Kind::Bool(b) if *to == DataType::Bool => return Ok(Value::Bool(*b)),
        json::Kind::Null => "null",
        json::Kind::String(_) => "string",
        json::Kind::Number(_) => "numeric",
        json::Kind::Bool(_) => "boolean",
        json::Kind::Array(_) => "array",
        json::Kind::Object(_) => "object",
    };
    Err(Error::new(
        sqlstate::INVALID_PARAMETER_VALUE,
        format!("cannot cast jsonb {what} to type {}", to.name()),
    ))
}

fn source_type(v: &Value) -> DataType {
    match v {
        Value::Float(_) => DataType::Float8,
        _ => DataType::Text,
    }
}

/// Whether an explicit cast between two known types exists at all (checked at bind time).
pub fn castable(from: DataType, to: DataType) -> bool {
    use DataType as T;
    from == to
        || to.is_text()
        || from.is_text()
        || (from.is_numeric() && to.is_numeric())
        || (from == T::Bool && to == T::Int4)
        || (from == T::Int4 && to == T::Bool)
        || (from.is_datetime() && to.is_datetime())
        || (matches!(from, T::Timestamp | T::TimestampTz) && to == T::Time)
        || matches!((from, to), (T::Time, T::Interval) | (T::Interval, T::Time))
        || matches!((from, to), (T::Json, T::Jsonb) | (T::Jsonb, T::Json))
        || (from == T::Jsonb && (to.is_numeric() || to == T::Bool))
        || matches!((from, to), (T::Array(a) | T::Vector(a), T::Array(b) | T::Vector(b)) if castable(a.scalar(), b.scalar()))
}
