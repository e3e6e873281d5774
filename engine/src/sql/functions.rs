//! Scalar functions: their signatures (for binding and parameter inference) and evaluation.
//!
//! Each function declares the category of each argument; binding checks known argument types
//! against it and gives unknown literals and parameters the expected type. Like PostgreSQL's
//! strict functions, most return NULL when any argument is NULL; `concat` and the
//! `greatest`/`least` pair skip NULLs instead.

use protocol::{DataType, Error, Result, Value, sqlstate};

use protocol::value::datetime as dt;
use protocol::value::json;

use super::expr::{as_f64, text_of};
use super::types::{self, Ty};

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum MathFn {
    Cbrt,
    Exp,
    Ln,
    Log10,
    Sign,
    Sin,
    Cos,
    Tan,
    Asin,
    Acos,
    Atan,
    Degrees,
    Radians,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Func {
    Lower,
    Upper,
    Length,
    OctetLength,
    Abs,
    Substr,
    Position,
    Strpos,
    Btrim,
    Ltrim,
    Rtrim,
    Replace,
    SplitPart,
    Concat,
    ConcatWs,
    Left,
    Right,
    Reverse,
    Repeat,
    Round,
    Ceil,
    Floor,
    Trunc,
    Mod,
    Power,
    Sqrt,
    Lpad,
    Rpad,
    StartsWith,
    Ascii,
    Chr,
    Translate,
    /// A float8 function of one argument (cbrt, exp, ln, log10, trigonometry, sign, …),
    /// computed in double precision; `numeric` results are converted back.
    Math(MathFn),
    Pi,
    /// log(b, x) = ln(x) / ln(b), as numeric.
    LogBase,
    /// div(y, x): the integer quotient, truncated toward zero, as numeric.
    Div,
    Gcd,
    Lcm,
    NullIf,
    Greatest,
    Least,
    // Date/time (see `datetime.rs`).
    Now,
    CurrentDate,
    LocalTimestamp,
    LocalTime,
    DateTrunc,
    Extract,
    DatePart,
    ToChar,
    MakeDate,
    ToTimestamp,
    Age,
    GenRandomUuid,
    /// nextval/currval/setval/lastval: the router replaces every call by its value (the
    /// sequences live in meta), so a shard only binds them, in column defaults; evaluating
    /// one here (a default reached by another path) is refused.
    RouterSequence,
    // json and jsonb.
    JsonTypeof,
    JsonArrayLength,
    /// `->` (`text: false`) and `->>` (`text: true`).
    JsonGet {
        text: bool,
    },
    /// `#>` and `#>>`.
    JsonPath {
        text: bool,
    },
    /// `@>`; `<@` with the arguments swapped.
    JsonContains,
    // System catalog information (see the end of this file).
    /// `~`, `~*`, `!~`, `!~*` (PostgreSQL's textregexeq and friends).
    RegexMatch {
        icase: bool,
        negate: bool,
    },
    FormatType,
    EncodingToChar,
    /// `json_build_object(k1, v1, ...)`.
    JsonBuildObject,
    /// obj_description and friends: Tessera stores no comments.
    NoDescription,
    CurrentSchema,
    Version,
    CurrentSchemas,
}

/// The kind of value an argument must be.
#[derive(Clone, Copy, PartialEq)]
enum Arg {
    Text,
    Int,
    Num,
    Any,
}

struct Signature {
    func: Func,
    args: &'static [Arg],
    /// How many of `args` may be left off the end.
    optional: usize,
    /// Further arguments of the last kind may follow.
    variadic: bool,
}

fn signature(name: &str) -> Option<Signature> {
    use Arg::*;
    let s = |func, args, optional, variadic| {
        Some(Signature {
            func,
            args,
            optional,
            variadic,
        })
    };
    match name {
        "lower" => s(Func::Lower, &[Text], 0, false),
        "upper" => s(Func::Upper, &[Text], 0, false),
        "length" | "char_length" | "character_length" => s(Func::Length, &[Text], 0, false),
        "octet_length" => s(Func::OctetLength, &[Text], 0, false),
        "abs" => s(Func::Abs, &[Num], 0, false),
        "substr" | "substring" => s(Func::Substr, &[Text, Int, Int], 1, false),
        "position" => s(Func::Position, &[Text, Text], 0, false),
        "strpos" => s(Func::Strpos, &[Text, Text], 0, false),
        "btrim" | "trim" => s(Func::Btrim, &[Text, Text], 1, false),
        "ltrim" => s(Func::Ltrim, &[Text, Text], 1, false),
        "rtrim" => s(Func::Rtrim, &[Text, Text], 1, false),
        "replace" => s(Func::Replace, &[Text, Text, Text], 0, false),
        "split_part" => s(Func::SplitPart, &[Text, Text, Int], 0, false),
        "concat" => s(Func::Concat, &[Any], 1, true),
        "concat_ws" => s(Func::ConcatWs, &[Text, Any], 1, true),
        "left" => s(Func::Left, &[Text, Int], 0, false),
        "right" => s(Func::Right, &[Text, Int], 0, false),
        "reverse" => s(Func::Reverse, &[Text], 0, false),
        "repeat" => s(Func::Repeat, &[Text, Int], 0, false),
        "lpad" => s(Func::Lpad, &[Text, Int, Text], 1, false),
        "rpad" => s(Func::Rpad, &[Text, Int, Text], 1, false),
        "starts_with" => s(Func::StartsWith, &[Text, Text], 0, false),
        "ascii" => s(Func::Ascii, &[Text], 0, false),
        "chr" => s(Func::Chr, &[Int], 0, false),
        "translate" => s(Func::Translate, &[Text, Text, Text], 0, false),
        "round" => s(Func::Round, &[Num, Int], 1, false),
        "ceil" | "ceiling" => s(Func::Ceil, &[Num], 0, false),
        "floor" => s(Func::Floor, &[Num], 0, false),
        "trunc" => s(Func::Trunc, &[Num, Int], 1, false),
        "mod" => s(Func::Mod, &[Num, Num], 0, false),
        "power" | "pow" => s(Func::Power, &[Num, Num], 0, false),
        "sqrt" => s(Func::Sqrt, &[Num], 0, false),
        "cbrt" => s(Func::Math(MathFn::Cbrt), &[Num], 0, false),
        "exp" => s(Func::Math(MathFn::Exp), &[Num], 0, false),
        "ln" => s(Func::Math(MathFn::Ln), &[Num], 0, false),
        "log10" => s(Func::Math(MathFn::Log10), &[Num], 0, false),
        "sign" => s(Func::Math(MathFn::Sign), &[Num], 0, false),
        "sin" => s(Func::Math(MathFn::Sin), &[Num], 0, false),
        "cos" => s(Func::Math(MathFn::Cos), &[Num], 0, false),
        "tan" => s(Func::Math(MathFn::Tan), &[Num], 0, false),
        "asin" => s(Func::Math(MathFn::Asin), &[Num], 0, false),
        "acos" => s(Func::Math(MathFn::Acos), &[Num], 0, false),
        "atan" => s(Func::Math(MathFn::Atan), &[Num], 0, false),
        "degrees" => s(Func::Math(MathFn::Degrees), &[Num], 0, false),
        "radians" => s(Func::Math(MathFn::Radians), &[Num], 0, false),
        "pi" => s(Func::Pi, &[], 0, false),
        "div" => s(Func::Div, &[Num, Num], 0, false),
        "gcd" => s(Func::Gcd, &[Num, Num], 0, false),
        "lcm" => s(Func::Lcm, &[Num, Num], 0, false),
        // log(x) is log10; log(b, x) takes the base first.
        "log" => s(Func::LogBase, &[Num, Num], 1, false),
        "nullif" => s(Func::NullIf, &[Any, Any], 0, false),
        "greatest" => s(Func::Greatest, &[Any], 0, true),
        "least" => s(Func::Least, &[Any], 0, true),
        _ => None,
    }
}

/// A function call resolved against its argument types.
pub struct Resolved {
    pub func: Func,
    /// The type each unknown argument should take (`None`: leave it as it is).
    pub arg_types: Vec<Ty>,
    pub ret: DataType,
}

fn no_such_function(name: &str, args: &[Ty]) -> Error {
    let list: Vec<String> = args.iter().map(types::ty_name).collect();
    Error::new(
        sqlstate::UNDEFINED_FUNCTION,
        format!("function {name}({}) does not exist", list.join(", ")),
    )
}

/// Resolves the date/time, uuid and json functions, whose arguments are typed more finely
/// than `signature` describes.
fn resolve_typed(name: &str, args: &[Ty]) -> Result<Option<Resolved>> {
    use DataType as T;
    let no = || no_such_function(name, args);
    let ok = |func, arg_types: Vec<Ty>, ret| {
        Ok(Some(Resolved {
            func,
            arg_types,
            ret,
        }))
    };
    let first = args.first().copied().flatten();
    let second = args.get(1).copied().flatten();
    let text_ok = |t: Option<DataType>| t.is_none_or(|t| t.is_text());
    let int_ok = |t: &Ty| t.is_none_or(|t| t.is_integer());
    let when = |t: Option<DataType>| {
        matches!(
            t,
            None | Some(T::Date | T::Time | T::Timestamp | T::TimestampTz | T::Interval)
        )
    };
    match (name, args.len()) {
        (
            "now"
            | "current_timestamp"
            | "transaction_timestamp"
            | "statement_timestamp"
            | "clock_timestamp",
            0,
        ) => ok(Func::Now, vec![], T::TimestampTz),
        ("current_date", 0) => ok(Func::CurrentDate, vec![], T::Date),
        ("localtimestamp", 0) => ok(Func::LocalTimestamp, vec![], T::Timestamp),
        ("localtime", 0) => ok(Func::LocalTime, vec![], T::Time),
        ("gen_random_uuid", 0) => ok(Func::GenRandomUuid, vec![], T::Uuid),
        ("nextval" | "currval", 1) => ok(Func::RouterSequence, vec![Some(T::Text)], T::Int8),
        ("setval", 2) => ok(
            Func::RouterSequence,
            vec![Some(T::Text), Some(T::Int8)],
            T::Int8,
        ),
        ("setval", 3) => ok(
            Func::RouterSequence,
            vec![Some(T::Text), Some(T::Int8), Some(T::Bool)],
            T::Int8,
        ),
        ("lastval", 0) => ok(Func::RouterSequence, vec![], T::Int8),
        ("date_trunc", 2) => {
            if !text_ok(first) || !when(second) || second == Some(T::Time) {
                return Err(no());
            }
            let x = second.unwrap_or(T::TimestampTz);
            let ret = match x {
                T::Date => T::TimestampTz,
                t => t,
            };
            ok(Func::DateTrunc, vec![Some(T::Text), Some(x)], ret)
        }
        ("extract" | "date_part", 2) => {
            if !text_ok(first) || !when(second) {
                return Err(no());
            }
            let (func, ret) = if name == "extract" {
                (Func::Extract, T::Numeric(None))
            } else {
                (Func::DatePart, T::Float8)
            };
            ok(
                func,
                vec![Some(T::Text), Some(second.unwrap_or(T::TimestampTz))],
                ret,
            )
        }
        ("to_char", 2) => {
            let x = first.unwrap_or(T::Text);
            if !(when(first) || x.is_numeric()) || x == T::Time || !text_ok(second) {
                return Err(no());
            }
            ok(Func::ToChar, vec![Some(x), Some(T::Text)], T::Text)
        }
        ("make_date", 3) if args.iter().all(int_ok) => ok(
            Func::MakeDate,
            vec![Some(T::Int4), Some(T::Int4), Some(T::Int4)],
            T::Date,
        ),
        ("to_timestamp", 1) if first.is_none_or(|t| t.is_numeric()) => {
            ok(Func::ToTimestamp, vec![Some(T::Float8)], T::TimestampTz)
        }
        ("age", 1 | 2) => {
            if !args.iter().all(|t| t.is_none_or(|t| t.is_datetime())) {
                return Err(no());
            }
            ok(Func::Age, vec![Some(T::Timestamp); args.len()], T::Interval)
        }
        ("textregexeq" | "textregexne" | "texticregexeq" | "texticregexne", 2) => {
            if !text_ok(first) || !text_ok(second) {
                return Err(no());
            }
            let func = Func::RegexMatch {
                icase: name.starts_with("texticregex"),
                negate: name.ends_with("ne"),
            };
            ok(func, vec![Some(T::Text), Some(T::Text)], T::Bool)
        }
        ("format_type", 2) if args.iter().all(int_ok) => ok(
            Func::FormatType,
            vec![Some(T::Int8), Some(T::Int4)],
            T::Text,
        ),
        ("json_build_object", n) if n % 2 == 0 => ok(
            Func::JsonBuildObject,
            args.iter().map(|t| t.or(Some(T::Text))).collect(),
            T::Json,
        ),
        ("pg_encoding_to_char", 1) if int_ok(&first) => {
            ok(Func::EncodingToChar, vec![Some(T::Int4)], T::Text)
        }
        ("obj_description" | "shobj_description", 1 | 2) | ("col_description", 2)
            if int_ok(&first) =>
        {
            let mut types = vec![Some(T::Int8)];
            types.extend(args.iter().skip(1).map(|t| t.or(Some(T::Text))));
            ok(Func::NoDescription, types, T::Text)
        }
        ("current_schema", 0) => ok(Func::CurrentSchema, vec![], T::Text),
        ("version", 0) => ok(Func::Version, vec![], T::Text),
        ("current_schemas", 1) if first.is_none_or(|t| t == T::Bool) => ok(
            Func::CurrentSchemas,
            vec![Some(T::Bool)],
            T::Array(protocol::value::array::Elem::Text),
        ),
        ("jsonb_typeof" | "json_typeof" | "jsonb_array_length" | "json_array_length", 1) => {
            let want = if name.starts_with("jsonb") {
                T::Jsonb
            } else {
                T::Json
            };
            if first.is_some_and(|t| t != want) {
                return Err(no());
            }
            let (func, ret) = if name.ends_with("typeof") {
                (Func::JsonTypeof, T::Text)
            } else {
                (Func::JsonArrayLength, T::Int4)
            };
            ok(func, vec![Some(want)], ret)
        }
        _ => Ok(None),
    }
}

/// Resolves `name(args)`; `Ok(None)` if no scalar function has that name.
pub fn resolve(name: &str, args: &[Ty]) -> Result<Option<Resolved>> {
    if let Some(r) = resolve_typed(name, args)? {
        return Ok(Some(r));
    }
    let Some(sig) = signature(name) else {
        return Ok(None);
    };
    // round(x, n) and trunc(x, n) exist for numeric only; an integer argument becomes numeric.
    if matches!(name, "round" | "trunc")
        && args.len() == 2
        && args[0].is_none_or(|t| t.is_integer() || matches!(t, DataType::Numeric(_)))
        && args[1].is_none_or(|t| t.is_integer())
    {
        return Ok(Some(Resolved {
            func: sig.func,
            arg_types: vec![Some(DataType::Numeric(None)), Some(DataType::Int4)],
            ret: DataType::Numeric(None),
        }));
    }
    // length(bytea) and octet_length(bytea) count bytes.
    if matches!(name, "length" | "octet_length") && args == [Some(DataType::Bytea)] {
        return Ok(Some(Resolved {
            func: sig.func,
            arg_types: vec![None],
            ret: DataType::Int4,
        }));
    }
    let min = sig.args.len() - sig.optional;
    if args.len() < min || (!sig.variadic && args.len() > sig.args.len()) {
        return Err(no_such_function(name, args));
    }
    let mut arg_types = Vec::with_capacity(args.len());
    for (i, t) in args.iter().enumerate() {
        let kind = sig
            .args
            .get(i)
            .or(sig.args.last())
            .copied()
            .unwrap_or(Arg::Any);
        let ok = match (kind, t) {
            (_, None) | (Arg::Any, _) => true,
            (Arg::Text, Some(t)) => t.is_text(),
            (Arg::Int, Some(t)) => t.is_integer(),
            (Arg::Num, Some(t)) => t.is_numeric(),
        };
        if !ok {
            return Err(no_such_function(name, args));
        }
        arg_types.push(match kind {
            Arg::Text => Some(DataType::Text),
            Arg::Int => Some(DataType::Int4),
            Arg::Num => Some(t.unwrap_or(DataType::Float8)),
            Arg::Any => None,
        });
    }
    let first = args.first().copied().flatten();
    let ret = match sig.func {
        Func::Length | Func::OctetLength | Func::Position | Func::Strpos | Func::Ascii => {
            DataType::Int4
        }
        Func::StartsWith => DataType::Bool,
        // PostgreSQL has round(numeric, int) and trunc(numeric, int), not float8 forms.
        Func::Round | Func::Trunc
            if args.len() == 2 && matches!(first, Some(DataType::Float4 | DataType::Float8)) =>
        {
            return Err(no_such_function(name, args));
        }
        Func::Abs | Func::Ceil | Func::Floor | Func::Trunc | Func::Round
            if matches!(first, Some(DataType::Numeric(_))) =>
        {
            DataType::Numeric(None)
        }
        Func::Abs | Func::Ceil | Func::Floor | Func::Trunc => first.unwrap_or(DataType::Float8),
        Func::Round if args.len() == 1 => first.unwrap_or(DataType::Float8),
        Func::Round | Func::Power | Func::Sqrt | Func::Pi => DataType::Float8,
        Func::Math(MathFn::Sign | MathFn::Exp | MathFn::Ln | MathFn::Log10)
            if matches!(first, Some(DataType::Numeric(_))) =>
        {
            DataType::Numeric(None)
        }
        Func::LogBase if args.len() == 1 && !matches!(first, Some(DataType::Numeric(_))) => {
            DataType::Float8
        }
        Func::Math(_) => DataType::Float8,
        Func::LogBase | Func::Div => DataType::Numeric(None),
        Func::Gcd | Func::Lcm => {
            let second = args.get(1).copied().flatten();
            match (first, second) {
                (Some(DataType::Int8), _) | (_, Some(DataType::Int8)) => DataType::Int8,
                (Some(a), Some(b)) if a.is_integer() && b.is_integer() => DataType::Int4,
                _ => return Err(no_such_function(name, args)),
            }
        }
        Func::Mod => {
            let (l, r) = (
                first.unwrap_or(DataType::Int4),
                args.get(1).copied().flatten().unwrap_or(DataType::Int4),
            );
            types::arithmetic_type("%", l, r).ok_or_else(|| no_such_function(name, args))?
        }
        // NULLIF(NULL, x) takes x's type, as an unknown literal resolves against the other;
        // NULLIF(1, 2.5) is numeric: the result is the `=` operator's promoted first operand.
        Func::NullIf => match (first, args.get(1).copied().flatten()) {
            (Some(a), Some(b)) if a.is_numeric() && b.is_numeric() && a != b => {
                types::common_type(&[Some(a), Some(b)], "NULLIF")?.unwrap_or(a)
            }
            (a, b) => a.or(b).unwrap_or(DataType::Text),
        },
        Func::Greatest | Func::Least => {
            let t = types::common_type(args, &name.to_uppercase())?.unwrap_or(DataType::Text);
            for a in arg_types.iter_mut() {
                *a = Some(t);
            }
            t
        }
        _ => DataType::Text,
    };
    if sig.func == Func::NullIf {
        // The second argument is compared with the first, so it takes the first's type.
        if let Some(a) = arg_types.get_mut(1) {
            *a = first.map(types::comparison_type);
        }
        if let Some(a) = arg_types.get_mut(0)
            && (first.is_none() || first != Some(ret))
        {
            *a = Some(ret);
        }
        if first.is_some_and(|f| f != ret)
            && let Some(b) = arg_types.get_mut(1)
        {
            *b = Some(ret);
        }
    }
    Ok(Some(Resolved {
        func: sig.func,
        arg_types,
        ret,
    }))
}

/// The text of a json or jsonb argument, and whether it is jsonb.
fn json_doc(v: &Value) -> Result<(String, bool)> {
    match v {
        Value::Json(s) => Ok((s.clone(), false)),
        Value::Jsonb(s) => Ok((s.clone(), true)),
        Value::Text(s) => Ok((json::normalize_jsonb(s)?, true)),
        other => Err(Error::internal(format!(
            "expected json, got {}",
            other.type_name()
        ))),
    }
}

fn text(v: &Value) -> String {
    text_of(v)
}

fn int(v: &Value) -> Result<i64> {
    match v {
        Value::Int(i) => Ok(*i),
        Value::Float(f) => Ok(f.round() as i64),
        other => Err(Error::internal(format!(
            "expected an integer, got {}",
            other.type_name()
        ))),
    }
}

/// `json_build_object`: `{"k1" : v1, "k2" : v2}` in PostgreSQL's json layout; a key must
/// not be NULL.
fn json_build_object(args: &[Value]) -> Result<Value> {
    use protocol::value::json::quote;
    let mut out = String::from("{");
    for (i, pair) in args.chunks(2).enumerate() {
        let [key, value] = pair else {
            return Err(Error::internal("json_build_object without a value"));
        };
        if i > 0 {
            out.push_str(", ");
        }
        match key {
            Value::Null => {
                return Err(Error::new(
                    sqlstate::INVALID_PARAMETER_VALUE,
                    format!("argument {}: key must not be null", 2 * i + 1),
                ));
            }
            Value::Text(k) | Value::BpChar(k) => quote(k, &mut out),
            Value::Int(n) => quote(&n.to_string(), &mut out),
            Value::Bool(b) => quote(if *b { "true" } else { "false" }, &mut out),
            Value::Numeric(n) => quote(&n.to_string(), &mut out),
            other => {
                return Err(Error::unsupported(format!(
                    "json_build_object key of type {} is not supported",
                    other.type_name()
                )));
            }
        }
        out.push_str(" : ");
        match value {
            Value::Null => out.push_str("null"),
            Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Value::Int(n) => out.push_str(&n.to_string()),
            Value::Float(f) => {
                let t = value.to_pg_text(&DataType::Float8).unwrap_or_default();
                if f.is_finite() {
                    out.push_str(&t);
                } else {
                    quote(&t, &mut out);
                }
            }
            Value::Numeric(n) => out.push_str(&n.to_string()),
            Value::Text(t) | Value::BpChar(t) => quote(t, &mut out),
            Value::Json(j) | Value::Jsonb(j) => out.push_str(j),
            Value::Uuid(_) | Value::Bytes(_) => {
                let ty = if matches!(value, Value::Uuid(_)) {
                    DataType::Uuid
                } else {
                    DataType::Bytea
                };
                quote(&value.to_pg_text(&ty).unwrap_or_default(), &mut out)
            }
            other => {
                return Err(Error::unsupported(format!(
                    "json_build_object value of type {} is not supported",
                    other.type_name()
                )));
            }
        }
    }
    out.push('}');
    Ok(Value::Json(out))
}

/// A one-argument float8 function, with PostgreSQL's domain errors; `numeric` input gives a
/// numeric result for sign, exp, ln and log10.
fn math(m: MathFn, x: f64, numeric: bool) -> Result<Value> {
    let log_domain = |x: f64| -> Result<()> {
        if x == 0.0 {
            return Err(Error::new("2201E", "cannot take logarithm of zero"));
        }
        if x < 0.0 {
            return Err(Error::new(
                "2201E",
                "cannot take logarithm of a negative number",
            ));
        }
        Ok(())
    };
    let unit = |x: f64| -> Result<()> {
        if !(-1.0..=1.0).contains(&x) {
            return Err(Error::new(
                sqlstate::NUMERIC_VALUE_OUT_OF_RANGE,
                "input is out of range",
            ));
        }
        Ok(())
    };
    let r = match m {
        MathFn::Cbrt => x.cbrt(),
        MathFn::Exp => x.exp(),
        MathFn::Ln => {
            log_domain(x)?;
            x.ln()
        }
        MathFn::Log10 => {
            log_domain(x)?;
            x.log10()
        }
        MathFn::Sign => {
            if x > 0.0 {
                1.0
            } else if x < 0.0 {
                -1.0
            } else {
                0.0
            }
        }
        MathFn::Sin => x.sin(),
        MathFn::Cos => x.cos(),
        MathFn::Tan => x.tan(),
        MathFn::Asin => {
            unit(x)?;
            x.asin()
        }
        MathFn::Acos => {
            unit(x)?;
            x.acos()
        }
        MathFn::Atan => x.atan(),
        MathFn::Degrees => x.to_degrees(),
        MathFn::Radians => x.to_radians(),
    };
    if !r.is_finite() && x.is_finite() {
        return Err(Error::new(
            sqlstate::NUMERIC_VALUE_OUT_OF_RANGE,
            "value out of range: overflow",
        ));
    }
    let numeric_result =
        numeric && matches!(m, MathFn::Sign | MathFn::Exp | MathFn::Ln | MathFn::Log10);
    Ok(if numeric_result {
        Value::Numeric(protocol::value::Numeric::from_f64(r, false)?)
    } else {
        Value::Float(r)
    })
}

fn float(v: &Value) -> Result<f64> {
    as_f64(v).ok_or_else(|| Error::internal(format!("expected a number, got {}", v.type_name())))
}

fn trim(s: &str, chars: &str, left: bool, right: bool) -> String {
    let set = |c: char| chars.contains(c);
    let mut out = s;
    if left {
        out = out.trim_start_matches(set);
    }
    if right {
        out = out.trim_end_matches(set);
    }
    out.to_string()
}

impl Func {
    pub fn eval(&self, args: Vec<Value>) -> Result<Value> {
        match self {
            Func::Concat => {
                return Ok(Value::Text(
                    args.iter().filter(|v| !v.is_null()).map(text).collect(),
                ));
            }
            Func::ConcatWs => {
                let Some((sep, rest)) = args.split_first() else {
                    return Ok(Value::Null);
                };
                if sep.is_null() {
                    return Ok(Value::Null);
                }
                let parts: Vec<String> = rest.iter().filter(|v| !v.is_null()).map(text).collect();
                return Ok(Value::Text(parts.join(&text(sep))));
            }
            Func::Greatest | Func::Least => {
                let mut best: Option<Value> = None;
                for v in args.into_iter().filter(|v| !v.is_null()) {
                    let better = match &best {
                        None => true,
                        Some(b) => {
                            let ord = v.total_cmp(b);
                            if *self == Func::Greatest {
                                ord.is_gt()
                            } else {
                                ord.is_lt()
                            }
                        }
                    };
                    if better {
                        best = Some(v);
                    }
                }
                return Ok(best.unwrap_or(Value::Null));
            }
            Func::NullIf => {
                let mut it = args.into_iter();
                let (a, b) = (
                    it.next().unwrap_or(Value::Null),
                    it.next().unwrap_or(Value::Null),
                );
                return Ok(if a.sql_cmp(&b) == Some(std::cmp::Ordering::Equal) {
                    Value::Null
                } else {
                    a
                });
            }
            Func::FormatType => {
                let typmod = match args.get(1) {
                    Some(Value::Int(t)) => Some(*t),
                    _ => None,
                };
                return Ok(match args.first() {
                    Some(Value::Int(oid)) => Value::Text(format_type(*oid, typmod)),
                    _ => Value::Null,
                });
            }
            Func::NoDescription => return Ok(Value::Null),
            Func::JsonBuildObject => return json_build_object(&args),
            _ => {}
        }
        if args.iter().any(Value::is_null) {
            return Ok(Value::Null);
        }
        let arg = |i: usize| args.get(i).cloned().unwrap_or(Value::Null);
        Ok(match self {
            Func::Lower => Value::Text(text(&arg(0)).to_lowercase()),
            Func::Upper => Value::Text(text(&arg(0)).to_uppercase()),
            Func::Length | Func::OctetLength if let Value::Bytes(b) = arg(0) => {
                Value::Int(b.len() as i64)
            }
            Func::Length => Value::Int(text(&arg(0)).chars().count() as i64),
            // character(n) counts its padding here, unlike in length().
            Func::OctetLength if let Value::BpChar(b) = arg(0) => Value::Int(b.len() as i64),
            Func::OctetLength => Value::Int(text(&arg(0)).len() as i64),
            Func::Abs => match arg(0) {
                Value::Int(i) => Value::Int(i.checked_abs().ok_or_else(|| {
                    Error::new(sqlstate::NUMERIC_VALUE_OUT_OF_RANGE, "bigint out of range")
                })?),
                Value::Numeric(n) => Value::Numeric(n.abs()),
                v => Value::Float(float(&v)?.abs()),
            },
            Func::Substr => {
                let s: Vec<char> = text(&arg(0)).chars().collect();
                // PostgreSQL counts from 1 and lets the window start before the string.
                let start = int(&arg(1))?;
                let end = match args.get(2) {
                    Some(len) => {
                        let len = int(len)?;
                        if len < 0 {
                            return Err(Error::new(
                                "22011",
                                "negative substring length not allowed",
                            ));
                        }
                        start.saturating_add(len)
                    }
                    None => i64::MAX,
                };
                let from = start.max(1) as usize - 1;
                let to = end.clamp(1, s.len() as i64 + 1) as usize - 1;
                Value::Text(if from < to {
                    s[from..to].iter().collect()
                } else {
                    String::new()
                })
            }
            Func::Position | Func::Strpos => {
                let (needle, hay) = if *self == Func::Position {
                    (arg(0), arg(1))
                } else {
                    (arg(1), arg(0))
                };
                let (needle, hay) = (text(&needle), text(&hay));
                Value::Int(match hay.find(&needle) {
                    Some(byte) => hay[..byte].chars().count() as i64 + 1,
                    None => 0,
                })
            }
            Func::Btrim | Func::Ltrim | Func::Rtrim => {
                let chars = if args.len() > 1 {
                    text(&arg(1))
                } else {
                    " ".into()
                };
                let (l, r) = match self {
                    Func::Ltrim => (true, false),
                    Func::Rtrim => (false, true),
                    _ => (true, true),
                };
                Value::Text(trim(&text(&arg(0)), &chars, l, r))
            }
            Func::Replace => {
                let (s, from, to) = (text(&arg(0)), text(&arg(1)), text(&arg(2)));
                Value::Text(if from.is_empty() {
                    s
                } else {
                    s.replace(&from, &to)
                })
            }
            Func::SplitPart => {
                let (s, delim, n) = (text(&arg(0)), text(&arg(1)), int(&arg(2))?);
                let parts: Vec<&str> = if delim.is_empty() {
                    vec![s.as_str()]
                } else {
                    s.split(delim.as_str()).collect()
                };
                let idx = match n {
                    0 => {
                        return Err(Error::new(
                            sqlstate::INVALID_PARAMETER_VALUE,
                            "field position must not be zero",
                        ));
                    }
                    n if n > 0 => usize::try_from(n - 1).ok(),
                    n => usize::try_from(parts.len() as i64 + n).ok(),
                };
                Value::Text(
                    idx.and_then(|i| parts.get(i))
                        .map(|p| p.to_string())
                        .unwrap_or_default(),
                )
            }
            Func::Left | Func::Right => {
                let s: Vec<char> = text(&arg(0)).chars().collect();
                let n = int(&arg(1))?;
                let len = s.len() as i64;
                let keep = if n >= 0 { n.min(len) } else { (len + n).max(0) } as usize;
                Value::Text(if *self == Func::Left {
                    s[..keep].iter().collect()
                } else {
                    s[s.len() - keep..].iter().collect()
                })
            }
            Func::Reverse => Value::Text(text(&arg(0)).chars().rev().collect()),
            Func::Lpad | Func::Rpad => {
                let s: Vec<char> = text(&arg(0)).chars().collect();
                let n = usize::try_from(int(&arg(1))?.max(0)).unwrap_or(0);
                if n > 1 << 28 {
                    return Err(Error::new(
                        sqlstate::PROGRAM_LIMIT_EXCEEDED,
                        "requested length too large",
                    ));
                }
                let fill: Vec<char> = if args.len() > 2 {
                    text(&arg(2)).chars().collect()
                } else {
                    vec![' ']
                };
                if s.len() >= n || fill.is_empty() {
                    // Too long: cut to n (on the right for both); no fill: as it is.
                    return Ok(Value::Text(s.iter().take(n).collect()));
                }
                let pad: String = fill.iter().cycle().take(n - s.len()).collect();
                let s: String = s.into_iter().collect();
                Value::Text(if matches!(self, Func::Lpad) {
                    format!("{pad}{s}")
                } else {
                    format!("{s}{pad}")
                })
            }
            Func::StartsWith => Value::Bool(text(&arg(0)).starts_with(&text(&arg(1)))),
            Func::Ascii => Value::Int(text(&arg(0)).chars().next().map(|c| c as i64).unwrap_or(0)),
            Func::Chr => {
                let code = int(&arg(0))?;
                if code == 0 {
                    return Err(Error::new(
                        sqlstate::PROGRAM_LIMIT_EXCEEDED,
                        "null character not permitted",
                    ));
                }
                if code < 0 {
                    return Err(Error::new(
                        sqlstate::PROGRAM_LIMIT_EXCEEDED,
                        "character number must be positive",
                    ));
                }
                let c = u32::try_from(code)
                    .ok()
                    .and_then(char::from_u32)
                    .ok_or_else(|| {
                        Error::new(
                            sqlstate::PROGRAM_LIMIT_EXCEEDED,
                            format!("requested character too large for encoding: {code}"),
                        )
                    })?;
                Value::Text(c.to_string())
            }
            Func::Translate => {
                let (from, to): (Vec<char>, Vec<char>) = (
                    text(&arg(1)).chars().collect(),
                    text(&arg(2)).chars().collect(),
                );
                Value::Text(
                    text(&arg(0))
                        .chars()
                        .filter_map(|c| match from.iter().position(|f| *f == c) {
                            Some(i) => to.get(i).copied(),
                            None => Some(c),
                        })
                        .collect(),
                )
            }
            Func::Repeat => {
                let n = int(&arg(1))?.max(0) as usize;
                let s = text(&arg(0));
                if s.len().saturating_mul(n) > 1 << 30 {
                    return Err(Error::new(
                        sqlstate::PROGRAM_LIMIT_EXCEEDED,
                        "requested length too large",
                    ));
                }
                Value::Text(s.repeat(n))
            }
            Func::Round | Func::Ceil | Func::Floor | Func::Trunc => match arg(0) {
                Value::Int(i) if args.len() == 1 => Value::Int(i),
                v @ (Value::Numeric(_) | Value::Int(_)) => {
                    let n = match v {
                        Value::Numeric(n) => n,
                        Value::Int(i) => protocol::value::Numeric::from_i64(i),
                        _ => return Err(Error::internal("numeric rounding")),
                    };
                    let places = if args.len() > 1 { int(&arg(1))? } else { 0 };
                    use rust_decimal::RoundingStrategy as R;
                    Value::Numeric(match self {
                        Func::Round => n.round(places, R::MidpointAwayFromZero)?,
                        Func::Trunc => n.round(places, R::ToZero)?,
                        Func::Ceil => n.ceil(),
                        _ => n.floor(),
                    })
                }
                v => {
                    let f = float(&v)?;
                    let scale = if args.len() > 1 {
                        10f64.powi(int(&arg(1))?.clamp(-300, 300) as i32)
                    } else {
                        1.0
                    };
                    let x = f * scale;
                    // round(float8) rounds half to even (rint), as PostgreSQL does.
                    let r = match self {
                        Func::Round => x.round_ties_even(),
                        Func::Ceil => x.ceil(),
                        Func::Floor => x.floor(),
                        _ => x.trunc(),
                    };
                    Value::Float(r / scale)
                }
            },
            Func::Mod => match (arg(0), arg(1)) {
                (Value::Int(_), Value::Int(0)) => {
                    return Err(Error::new(sqlstate::DIVISION_BY_ZERO, "division by zero"));
                }
                (Value::Int(a), Value::Int(b)) => Value::Int(a.checked_rem(b).unwrap_or(0)),
                (
                    a @ (Value::Numeric(_) | Value::Int(_)),
                    b @ (Value::Numeric(_) | Value::Int(_)),
                ) => {
                    let num = |v: Value| match v {
                        Value::Numeric(n) => n,
                        Value::Int(i) => protocol::value::Numeric::from_i64(i),
                        _ => protocol::value::Numeric::NaN,
                    };
                    Value::Numeric(num(a).rem(num(b))?)
                }
                (a, b) => {
                    let (a, b) = (float(&a)?, float(&b)?);
                    if b == 0.0 {
                        return Err(Error::new(sqlstate::DIVISION_BY_ZERO, "division by zero"));
                    }
                    Value::Float(a % b)
                }
            },
            Func::Power => {
                let (a, b) = (float(&arg(0))?, float(&arg(1))?);
                if a == 0.0 && b < 0.0 {
                    return Err(Error::new(
                        "2201F",
                        "zero raised to a negative power is undefined",
                    ));
                }
                if a < 0.0 && b.fract() != 0.0 {
                    return Err(Error::new(
                        "2201F",
                        "a negative number raised to a non-integer power yields a complex result",
                    ));
                }
                types::check_float_range(
                    a.powf(b),
                    a.is_finite() && b.is_finite(),
                    a != 0.0 && a.is_finite() && b.is_finite(),
                    &DataType::Float8,
                )?
            }
            Func::Pi => Value::Float(std::f64::consts::PI),
            Func::Math(m) => {
                let x = arg(0);
                let numeric = matches!(x, Value::Numeric(_));
                math(*m, float(&x)?, numeric)?
            }
            Func::LogBase if args.len() == 1 => {
                let x = arg(0);
                let numeric = matches!(x, Value::Numeric(_));
                math(MathFn::Log10, float(&x)?, numeric)?
            }
            Func::LogBase => {
                let (b, x) = (float(&arg(0))?, float(&arg(1))?);
                if b <= 0.0 || x <= 0.0 {
                    let what = if b == 0.0 || x == 0.0 {
                        "zero"
                    } else {
                        "a negative number"
                    };
                    return Err(Error::new(
                        "2201E",
                        format!("cannot take logarithm of {what}"),
                    ));
                }
                if b == 1.0 {
                    return Err(Error::new(sqlstate::DIVISION_BY_ZERO, "division by zero"));
                }
                Value::Numeric(protocol::value::Numeric::from_f64(x.ln() / b.ln(), false)?)
            }
            Func::Div => {
                let (a, b) = (float(&arg(0))?, float(&arg(1))?);
                if b == 0.0 {
                    return Err(Error::new(sqlstate::DIVISION_BY_ZERO, "division by zero"));
                }
                Value::Numeric(protocol::value::Numeric::from_f64((a / b).trunc(), false)?)
            }
            Func::Gcd | Func::Lcm => {
                let (a, b) = (int(&arg(0))?, int(&arg(1))?);
                let gcd = |mut x: i128, mut y: i128| {
                    while y != 0 {
                        (x, y) = (y, x % y);
                    }
                    x.abs()
                };
                let g = gcd(i128::from(a), i128::from(b));
                let v = if matches!(self, Func::Gcd) {
                    g
                } else if a == 0 || b == 0 {
                    0
                } else {
                    (i128::from(a) / g * i128::from(b)).abs()
                };
                let out_of_range =
                    || Error::new(sqlstate::NUMERIC_VALUE_OUT_OF_RANGE, "integer out of range");
                Value::Int(i64::try_from(v).map_err(|_| out_of_range())?)
            }
            Func::Sqrt => {
                let a = float(&arg(0))?;
                if a < 0.0 {
                    return Err(Error::new(
                        "2201F",
                        "cannot take square root of a negative number",
                    ));
                }
                Value::Float(a.sqrt())
            }
            Func::Concat
            | Func::ConcatWs
            | Func::Greatest
            | Func::Least
            | Func::NullIf
            | Func::FormatType
            | Func::JsonBuildObject
            | Func::NoDescription => Value::Null,
            Func::RegexMatch { icase, negate } => {
                let (mut s, mut p) = (text(&arg(0)), text(&arg(1)));
                if *icase {
                    s = s.to_lowercase();
                    p = p.to_lowercase();
                }
                Value::Bool(regex::is_match(&p, &s)? != *negate)
            }
            Func::EncodingToChar => Value::Text(
                match int(&arg(0))? {
                    0 => "SQL_ASCII",
                    6 => "UTF8",
                    8 => "LATIN1",
                    _ => "",
                }
                .into(),
            ),
            Func::CurrentSchema => Value::Text("public".into()),
            // Drivers and ORMs parse "PostgreSQL <major>.<minor>" from this to pick dialects.
            Func::Version => Value::Text(format!(
                "PostgreSQL 15.0 (Tessera {}) on {}-unknown-linux-gnu, compiled by rustc, 64-bit",
                env!("CARGO_PKG_VERSION"),
                std::env::consts::ARCH
            )),
            Func::CurrentSchemas => {
                let mut schemas = vec![];
                if matches!(arg(0), Value::Bool(true)) {
                    schemas.push(Value::Text("pg_catalog".into()));
                }
                schemas.push(Value::Text("public".into()));
                Value::Array(schemas)
            }
            Func::Now => Value::TimestampTz(dt::now_micros()),
            Func::LocalTimestamp => Value::Timestamp(dt::now_micros()),
            Func::CurrentDate => Value::Date(dt::now_micros().div_euclid(dt::USECS_PER_DAY) as i32),
            Func::LocalTime => Value::Time(dt::now_micros().rem_euclid(dt::USECS_PER_DAY)),
            Func::RouterSequence => {
                return Err(Error::unsupported(
                    "a sequence default can only be filled in by the router here: name the column's value, or leave it out of an INSERT … VALUES",
                ));
            }
            Func::GenRandomUuid => {
                let mut u: [u8; 16] = rand::random();
                u[6] = (u[6] & 0x0f) | 0x40;
                u[8] = (u[8] & 0x3f) | 0x80;
                Value::Uuid(u)
            }
            Func::DateTrunc => {
                let v = match arg(1) {
                    Value::Date(_) => DataType::TimestampTz.convert(arg(1))?,
                    v => v,
                };
                super::datetime::date_trunc(&text(&arg(0)), &v)?
            }
            Func::Extract => super::datetime::extract(&text(&arg(0)), &arg(1))?,
            Func::DatePart => match super::datetime::extract(&text(&arg(0)), &arg(1))? {
                Value::Numeric(n) => Value::Float(n.to_f64()),
                v => v,
            },
            Func::ToChar => match arg(0) {
                v @ (Value::Int(_) | Value::Float(_) | Value::Numeric(_)) => {
                    super::datetime::to_char_number(&v, &text(&arg(1)))?
                }
                v => super::datetime::to_char_datetime(&v, &text(&arg(1)))?,
            },
            Func::MakeDate => {
                super::datetime::make_date(int(&arg(0))?, int(&arg(1))?, int(&arg(2))?)?
            }
            Func::ToTimestamp => super::datetime::to_timestamp(float(&arg(0))?)?,
            Func::Age => {
                let ts = |v: Value| -> Result<i64> {
                    match DataType::Timestamp.convert(v)? {
                        Value::Timestamp(t) => Ok(t),
                        _ => Err(Error::internal("age of a non-timestamp")),
                    }
                };
                let a = ts(arg(0))?;
                let b = if args.len() > 1 {
                    ts(arg(1))?
                } else {
                    dt::now_micros().div_euclid(dt::USECS_PER_DAY) * dt::USECS_PER_DAY
                };
                if args.len() > 1 {
                    super::datetime::age(a, b)?
                } else {
                    super::datetime::age(b, a)?
                }
            }
            Func::JsonTypeof | Func::JsonArrayLength => {
                let (doc, _) = json_doc(&arg(0))?;
                let node = json::parse(&doc)?;
                if *self == Func::JsonTypeof {
                    Value::Text(json::type_of(&node).into())
                } else {
                    match &node.kind {
                        json::Kind::Array(items) => Value::Int(items.len() as i64),
                        json::Kind::Object(_) => {
                            return Err(Error::new(
                                sqlstate::INVALID_PARAMETER_VALUE,
                                "cannot get array length of a non-array",
                            ));
                        }
                        _ => {
                            return Err(Error::new(
                                sqlstate::INVALID_PARAMETER_VALUE,
                                "cannot get array length of a scalar",
                            ));
                        }
                    }
                }
            }
            Func::JsonGet { text: as_text } | Func::JsonPath { text: as_text } => {
                let (doc, jsonb) = json_doc(&arg(0))?;
                let root = json::parse(&doc)?;
                let steps = match (self, arg(1)) {
                    (Func::JsonGet { .. }, Value::Int(i)) => vec![json::PathStep::Index(i)],
                    (Func::JsonGet { .. }, k) => vec![json::PathStep::Key(text(&k))],
                    (_, p) => json::parse_path(&text(&p))?,
                };
                let mut node = Some(&root);
                for step in &steps {
                    node = node.and_then(|n| json::get(n, step));
                }
                match node {
                    None => Value::Null,
                    Some(n) if *as_text => json::as_text(&doc, n, jsonb)
                        .map(Value::Text)
                        .unwrap_or(Value::Null),
                    Some(n) => {
                        let t = json::node_text(&doc, n, jsonb);
                        if jsonb {
                            Value::Jsonb(t)
                        } else {
                            Value::Json(t)
                        }
                    }
                }
            }
            Func::JsonContains => {
                let (a, _) = json_doc(&arg(0))?;
                let (b, _) = json_doc(&arg(1))?;
                Value::Bool(json::contains(&json::parse(&a)?, &json::parse(&b)?, true))
            }
        })
    }
}

/// Element type OIDs of the array types `format_type` names, and the names of the non-SQL
/// types the system catalogs use.
const ARRAY_TYPES: &[(u32, u32)] = &[
    (1000, 16),
    (1001, 17),
    (1002, 18),
    (1003, 19),
    (1016, 20),
    (1005, 21),
    (1007, 23),
    (1009, 25),
    (1028, 26),
    (199, 114),
    (1021, 700),
    (1022, 701),
    (1014, 1042),
    (1015, 1043),
    (1182, 1082),
    (1183, 1083),
    (1115, 1114),
    (1185, 1184),
    (1187, 1186),
    (1231, 1700),
    (2210, 2205),
    (2211, 2206),
    (2951, 2950),
    (3807, 3802),
];

const OTHER_TYPES: &[(u32, &str)] = &[
    (18, "\"char\""),
    (19, "name"),
    (22, "int2vector"),
    (24, "regproc"),
    (26, "oid"),
    (30, "oidvector"),
    (194, "pg_node_tree"),
    (705, "unknown"),
    (1033, "aclitem"),
    (2205, "regclass"),
    (2206, "regtype"),
    (2249, "record"),
    (2278, "void"),
    (4089, "regnamespace"),
];

/// PostgreSQL's `format_type(oid, typmod)`: the SQL name of a type, with its modifier.
pub fn format_type(oid: i64, typmod: Option<i64>) -> String {
    let Ok(oid) = u32::try_from(oid) else {
        return "???".into();
    };
    if let Some((_, elem)) = ARRAY_TYPES.iter().find(|(a, _)| *a == oid) {
        return format!("{}[]", format_type(i64::from(*elem), typmod));
    }
    if let Some((_, name)) = OTHER_TYPES.iter().find(|(o, _)| *o == oid) {
        return (*name).into();
    }
    let Some(base) = DataType::from_oid(oid) else {
        return "???".into();
    };
    // A modifier below 4 (or none) means "no modifier"; PostgreSQL keeps VARHDRSZ in it.
    let m = typmod
        .filter(|t| *t >= 4)
        .and_then(|t| u32::try_from(t - 4).ok());
    let t = match (base, m) {
        (DataType::Varchar(_), Some(n)) => DataType::Varchar(Some(n)),
        (DataType::Bpchar(_), Some(n)) => DataType::Bpchar(Some(n)),
        (DataType::Bpchar(_), None) if typmod.is_none() => return "character".into(),
        (DataType::Numeric(_), Some(m)) => DataType::Numeric(Some((m >> 16, m & 0xffff))),
        (t, _) => t,
    };
    t.name()
}

/// POSIX regular expressions as `~` uses them (search, not whole-string match): literals,
/// `.`, bracket classes, `^`, `$`, groups with `|`, and the quantifiers `* + ? {m,n}`, with
/// the escapes `\d \w \s` (and their negations). A backtracking matcher with a step budget.
mod regex {
    use protocol::{Error, Result};

    const MAX_STEPS: usize = 1_000_000;
    const MAX_INPUT: usize = 1_000_000;
    /// Nested matching steps (each consumed character of a repetition nests one deeper).
    const MAX_DEPTH: usize = 2_000;

    enum Node {
        Char(char),
        Any,
        Class(Vec<(char, char)>, bool),
        Start,
        End,
        Group(Vec<Vec<Node>>),
        Repeat(Box<Node>, usize, Option<usize>),
    }

    fn invalid(msg: &str) -> Error {
        Error::new("2201B", format!("invalid regular expression: {msg}"))
    }

    fn class_escape(c: char) -> Option<(Vec<(char, char)>, bool)> {
        let digit = vec![('0', '9')];
        let word = vec![('a', 'z'), ('A', 'Z'), ('0', '9'), ('_', '_')];
        let space = vec![(' ', ' '), ('\t', '\r')];
        Some(match c {
            'd' => (digit, false),
            'D' => (digit, true),
            'w' => (word, false),
            'W' => (word, true),
            's' => (space, false),
            'S' => (space, true),
            _ => return None,
        })
    }

    struct Parser {
        p: Vec<char>,
        i: usize,
        depth: usize,
    }

    impl Parser {
        fn alt(&mut self) -> Result<Vec<Vec<Node>>> {
            self.depth += 1;
            if self.depth > 100 {
                return Err(invalid("nesting too deep"));
            }
            let mut alts = vec![Vec::new()];
            while let Some(&c) = self.p.get(self.i) {
                if c == ')' {
                    break;
                }
                self.i += 1;
                let atom = match c {
                    '|' => {
                        alts.push(Vec::new());
                        continue;
                    }
                    '.' => Node::Any,
                    '^' => Node::Start,
                    '$' => Node::End,
                    '(' => {
                        if self.p.get(self.i..self.i + 2) == Some(&['?', ':']) {
                            self.i += 2;
                        }
                        let g = self.alt()?;
                        if self.p.get(self.i) != Some(&')') {
                            return Err(invalid("parentheses () not balanced"));
                        }
                        self.i += 1;
                        Node::Group(g)
                    }
                    '[' => self.class()?,
                    '\\' => {
                        let e = *self
                            .p
                            .get(self.i)
                            .ok_or_else(|| invalid("invalid escape \\ sequence"))?;
                        self.i += 1;
                        match class_escape(e) {
                            Some((ranges, neg)) => Node::Class(ranges, neg),
                            None => Node::Char(match e {
                                'n' => '\n',
                                't' => '\t',
                                other => other,
                            }),
                        }
                    }
                    '*' | '+' | '?' | '{' => {
                        return Err(invalid("quantifier operand invalid"));
                    }
                    c => Node::Char(c),
                };
                let atom = self.quantified(atom)?;
                if let Some(seq) = alts.last_mut() {
                    seq.push(atom);
                }
            }
            self.depth -= 1;
            Ok(alts)
        }

        fn quantified(&mut self, mut atom: Node) -> Result<Node> {
            loop {
                let (min, max) = match self.p.get(self.i) {
                    Some('*') => (0, None),
                    Some('+') => (1, None),
                    Some('?') => (0, Some(1)),
                    Some('{') => {
                        let close = self.p[self.i..]
                            .iter()
                            .position(|&c| c == '}')
                            .ok_or_else(|| invalid("braces {} not balanced"))?;
                        let body: String = self.p[self.i + 1..self.i + close].iter().collect();
                        let num = |s: &str| {
                            s.trim()
                                .parse::<usize>()
                                .ok()
                                .filter(|n| *n <= 255)
                                .ok_or_else(|| invalid("invalid repetition count(s)"))
                        };
                        let bounds = match body.split_once(',') {
                            None => (num(&body)?, Some(num(&body)?)),
                            Some((a, b)) if b.trim().is_empty() => (num(a)?, None),
                            Some((a, b)) => (num(a)?, Some(num(b)?)),
                        };
                        self.i += close;
                        bounds
                    }
                    _ => return Ok(atom),
                };
                self.i += 1;
                atom = Node::Repeat(Box::new(atom), min, max);
            }
        }

        fn class(&mut self) -> Result<Node> {
            let mut neg = false;
            if self.p.get(self.i) == Some(&'^') {
                neg = true;
                self.i += 1;
            }
            let mut ranges = Vec::new();
            let mut first = true;
            loop {
                let c = *self
                    .p
                    .get(self.i)
                    .ok_or_else(|| invalid("brackets [] not balanced"))?;
                self.i += 1;
                if c == ']' && !first {
                    return Ok(Node::Class(ranges, neg));
                }
                first = false;
                let lo = if c == '\\' {
                    let e = *self
                        .p
                        .get(self.i)
                        .ok_or_else(|| invalid("brackets [] not balanced"))?;
                    self.i += 1;
                    if let Some((r, false)) = class_escape(e) {
                        ranges.extend(r);
                        continue;
                    }
                    e
                } else {
                    c
                };
                if self.p.get(self.i) == Some(&'-')
                    && self.p.get(self.i + 1).is_some_and(|&c| c != ']')
                {
                    let hi = self.p[self.i + 1];
                    self.i += 2;
                    if hi < lo {
                        return Err(invalid("invalid character range"));
                    }
                    ranges.push((lo, hi));
                } else {
                    ranges.push((lo, lo));
                }
            }
        }
    }

    struct Matcher<'a> {
        t: &'a [char],
        steps: usize,
        depth: usize,
    }

    impl Matcher<'_> {
        fn seq(
            &mut self,
            nodes: &[Node],
            i: usize,
            k: &mut dyn FnMut(&mut Self, usize) -> Result<bool>,
        ) -> Result<bool> {
            match nodes.split_first() {
                None => k(self, i),
                Some((n, rest)) => self.node(n, i, &mut |m, j| m.seq(rest, j, k)),
            }
        }

        fn node(
            &mut self,
            n: &Node,
            i: usize,
            k: &mut dyn FnMut(&mut Self, usize) -> Result<bool>,
        ) -> Result<bool> {
            self.steps += 1;
            if self.steps > MAX_STEPS {
                return Err(Error::new(
                    "54001",
                    "regular expression is too complex for this input",
                ));
            }
            if self.depth > MAX_DEPTH {
                return Err(Error::new(
                    "54001",
                    "regular expression is too complex for this input",
                ));
            }
            self.depth += 1;
            let r = self.node_inner(n, i, k);
            self.depth -= 1;
            r
        }

        fn node_inner(
            &mut self,
            n: &Node,
            i: usize,
            k: &mut dyn FnMut(&mut Self, usize) -> Result<bool>,
        ) -> Result<bool> {
            let c = self.t.get(i).copied();
            match n {
                Node::Char(x) => Ok(c == Some(*x) && k(self, i + 1)?),
                Node::Any => Ok(c.is_some() && k(self, i + 1)?),
                Node::Class(ranges, neg) => Ok(match c {
                    Some(c) => {
                        ranges.iter().any(|(lo, hi)| (*lo..=*hi).contains(&c)) != *neg
                            && k(self, i + 1)?
                    }
                    None => false,
                }),
                Node::Start => Ok(i == 0 && k(self, i)?),
                Node::End => Ok(i == self.t.len() && k(self, i)?),
                Node::Group(alts) => {
                    for seq in alts {
                        if self.seq(seq, i, k)? {
                            return Ok(true);
                        }
                    }
                    Ok(false)
                }
                Node::Repeat(inner, min, max) => self.repeat(inner, *min, *max, 0, i, k),
            }
        }

        fn repeat(
            &mut self,
            n: &Node,
            min: usize,
            max: Option<usize>,
            count: usize,
            i: usize,
            k: &mut dyn FnMut(&mut Self, usize) -> Result<bool>,
        ) -> Result<bool> {
            if max.is_none_or(|m| count < m)
                && self.node(n, i, &mut |m, j| {
                    // An iteration that consumes nothing ends the repetition.
                    Ok((j != i || count < min) && m.repeat(n, min, max, count + 1, j, k)?)
                })?
            {
                return Ok(true);
            }
            Ok(count >= min && k(self, i)?)
        }
    }

    /// Whether `pattern` matches anywhere in `text`.
    pub fn is_match(pattern: &str, text: &str) -> Result<bool> {
        let mut p = Parser {
            p: pattern.chars().collect(),
            i: 0,
            depth: 0,
        };
        let alts = p.alt()?;
        if p.i != p.p.len() {
            return Err(invalid("parentheses () not balanced"));
        }
        // A pattern without operators is a substring search.
        if !pattern.contains(|c: char| "\\.[]()|^$*+?{}".contains(c)) {
            return Ok(text.contains(pattern));
        }
        let t: Vec<char> = text.chars().collect();
        if t.len() > MAX_INPUT {
            return Err(Error::new("54000", "regular expression input is too long"));
        }
        let mut m = Matcher {
            t: &t,
            steps: 0,
            depth: 0,
        };
        let re = vec![Node::Group(alts)];
        for start in 0..=t.len() {
            if m.seq(&re, start, &mut |_, _| Ok(true))? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    #[cfg(test)]
    mod tests {
        use super::is_match;

        #[test]
        fn psql_patterns() {
            assert!(is_match("^(t)$", "t").unwrap());
            assert!(!is_match("^(t)$", "t_pkey").unwrap());
            assert!(is_match("^pg_", "pg_toast").unwrap());
            assert!(!is_match("^pg_toast", "public").unwrap());
            assert!(is_match("^(t.*)$", "tab").unwrap());
            assert!(is_match("a[0-9]+b|x", "za12b").unwrap());
            assert!(is_match("^a{2,3}$", "aaa").unwrap());
            assert!(!is_match("^a{2,3}$", "aaaa").unwrap());
            assert!(is_match("^(a*)*$", "aaaa").unwrap());
            assert!(is_match("\\d", "x1").unwrap());
            assert!(is_match("[^a-c]", "abcd").unwrap());
            assert!(is_match("(x|)y", "y").unwrap());
            assert!(is_match("(a|ab)(c|bcd)(d*)$", "abcd").unwrap());
            assert!(is_match("(", "x").is_err());
        }
    }
}
