//! Date/time operators and functions: `date + integer`, `timestamp - timestamp`,
//! `interval * number`, `extract`/`date_part`, `date_trunc`, `age`, `make_date`,
//! `to_timestamp` and `to_char`.
//!
//! Values are PostgreSQL's (see `protocol::value::datetime`): dates are days and timestamps
//! microseconds since 2000-01-01, intervals keep months, days and microseconds apart. The
//! session time zone is UTC, so timestamptz behaves like timestamp except in output.

use protocol::value::Numeric;
use protocol::value::datetime::{
    self as dt, Interval, TS_NEG_INF, TS_POS_INF, USECS_PER_DAY, USECS_PER_HOUR, USECS_PER_MINUTE,
    USECS_PER_SEC,
};
use protocol::{DataType, Error, Result, Value, sqlstate};

use super::expr::ArithOp;

fn internal(l: &Value, r: &Value) -> Error {
    Error::internal(format!(
        "date/time arithmetic on {} and {}",
        l.type_name(),
        r.type_name()
    ))
}

fn factor(v: &Value) -> Option<f64> {
    match v {
        Value::Int(i) => Some(*i as f64),
        Value::Float(f) => Some(*f),
        Value::Numeric(n) => Some(n.to_f64()),
        _ => None,
    }
}

fn date_as_ts(d: i32) -> Result<i64> {
    Ok(match d {
        dt::DATE_NEG_INF => TS_NEG_INF,
        dt::DATE_POS_INF => TS_POS_INF,
        d => dt::timestamp_from_parts(d as i64, 0)?,
    })
}

fn same_kind(ty: &DataType, ts: i64) -> Value {
    if *ty == DataType::TimestampTz {
        Value::TimestampTz(ts)
    } else {
        Value::Timestamp(ts)
    }
}

/// Arithmetic where one side is a date, time, timestamp or interval; `ty` is the result
/// type binding chose.
pub fn arith(op: ArithOp, l: Value, r: Value, ty: &DataType) -> Result<Value> {
    use Value as V;
    let date_range = dt::date_range;
    Ok(match (op, &l, &r) {
        (ArithOp::Add, V::Date(d), V::Int(i)) | (ArithOp::Add, V::Int(i), V::Date(d)) => {
            if *d == dt::DATE_NEG_INF || *d == dt::DATE_POS_INF {
                return Ok(V::Date(*d));
            }
            V::Date(
                i32::try_from(*d as i64 + i)
                    .ok()
                    .filter(|x| *x != dt::DATE_POS_INF && *x != dt::DATE_NEG_INF)
                    .ok_or_else(date_range)?,
            )
        }
        (ArithOp::Sub, V::Date(d), V::Int(i)) => {
            if *d == dt::DATE_NEG_INF || *d == dt::DATE_POS_INF {
                return Ok(V::Date(*d));
            }
            V::Date(i32::try_from(*d as i64 - i).map_err(|_| date_range())?)
        }
        (ArithOp::Sub, V::Date(a), V::Date(b)) => {
            if [*a, *b]
                .iter()
                .any(|d| *d == dt::DATE_NEG_INF || *d == dt::DATE_POS_INF)
            {
                return Err(Error::new(
                    sqlstate::DATETIME_FIELD_OVERFLOW,
                    "cannot subtract infinite dates",
                ));
            }
            V::Int(*a as i64 - *b as i64)
        }
        (ArithOp::Add, V::Date(d), V::Time(t)) | (ArithOp::Add, V::Time(t), V::Date(d)) => {
            V::Timestamp(dt::timestamp_from_parts(*d as i64, *t)?)
        }
        (ArithOp::Add | ArithOp::Sub, V::Date(d), V::Interval(iv))
        | (ArithOp::Add, V::Interval(iv), V::Date(d)) => {
            let iv = if op == ArithOp::Sub { iv.neg()? } else { *iv };
            V::Timestamp(dt::timestamp_add(date_as_ts(*d)?, iv)?)
        }
        (ArithOp::Add | ArithOp::Sub, V::Timestamp(ts) | V::TimestampTz(ts), V::Interval(iv))
        | (ArithOp::Add, V::Interval(iv), V::Timestamp(ts) | V::TimestampTz(ts)) => {
            let iv = if op == ArithOp::Sub { iv.neg()? } else { *iv };
            same_kind(ty, dt::timestamp_add(*ts, iv)?)
        }
        (
            ArithOp::Sub,
            V::Timestamp(_) | V::TimestampTz(_) | V::Date(_),
            V::Timestamp(_) | V::TimestampTz(_) | V::Date(_),
        ) => {
            let as_ts = |v: &Value| match v {
                V::Date(d) => date_as_ts(*d),
                V::Timestamp(t) | V::TimestampTz(t) => Ok(*t),
                _ => Err(internal(&l, &r)),
            };
            let (a, b) = (as_ts(&l)?, as_ts(&r)?);
            if [a, b].iter().any(|t| *t == TS_NEG_INF || *t == TS_POS_INF) {
                return Err(Error::new(
                    sqlstate::DATETIME_FIELD_OVERFLOW,
                    "cannot subtract infinite timestamps",
                ));
            }
            let micros = a.checked_sub(b).ok_or_else(|| {
                Error::new(sqlstate::DATETIME_FIELD_OVERFLOW, "interval out of range")
            })?;
            V::Interval(
                Interval {
                    months: 0,
                    days: 0,
                    micros,
                }
                .justify_hours(),
            )
        }
        (ArithOp::Add | ArithOp::Sub, V::Time(t), V::Interval(iv))
        | (ArithOp::Add, V::Interval(iv), V::Time(t)) => {
            let delta = if op == ArithOp::Sub {
                -(iv.micros % USECS_PER_DAY)
            } else {
                iv.micros % USECS_PER_DAY
            };
            V::Time((t + delta).rem_euclid(USECS_PER_DAY))
        }
        (ArithOp::Sub, V::Time(a), V::Time(b)) => V::Interval(Interval {
            months: 0,
            days: 0,
            micros: a - b,
        }),
        (ArithOp::Add, V::Interval(a), V::Interval(b)) => V::Interval(a.add(*b)?),
        (ArithOp::Sub, V::Interval(a), V::Interval(b)) => V::Interval(a.sub(*b)?),
        (ArithOp::Mul, V::Interval(iv), n) | (ArithOp::Mul, n, V::Interval(iv)) => {
            V::Interval(iv.mul(factor(n).ok_or_else(|| internal(&l, &r))?)?)
        }
        (ArithOp::Div, V::Interval(iv), n) => {
            let f = factor(n).ok_or_else(|| internal(&l, &r))?;
            if f == 0.0 {
                return Err(Error::new(sqlstate::DIVISION_BY_ZERO, "division by zero"));
            }
            V::Interval(iv.mul(1.0 / f)?)
        }
        _ => return Err(internal(&l, &r)),
    })
}

/// Broken-down fields of a timestamp.
struct Fields {
    year: i64,
    month: u32,
    day: u32,
    micros: i64,
    days: i64,
}

fn fields(ts: i64) -> Fields {
    let (days, micros) = dt::split_timestamp(ts);
    let (year, month, day) = dt::civil_from_days(days + dt::UNIX_TO_PG_DAYS);
    Fields {
        year,
        month,
        day,
        micros,
        days,
    }
}

/// ISO weekday, Monday = 1 … Sunday = 7, of a day number since 2000-01-01 (a Saturday).
fn isodow(days: i64) -> i64 {
    (days + 5).rem_euclid(7) + 1
}

/// ISO 8601 week-numbering year and week of a day number.
fn iso_week(days: i64, year: i64) -> (i64, i64) {
    let week1_start = |y: i64| {
        let jan4 = dt::days_from_civil(y, 1, 4) - dt::UNIX_TO_PG_DAYS;
        jan4 - (isodow(jan4) - 1)
    };
    let mut y = year + 1;
    while days < week1_start(y) {
        y -= 1;
    }
    (y, (days - week1_start(y)) / 7 + 1)
}

fn unit_error(field: &str, ty: &str, recognized: bool) -> Error {
    if recognized {
        Error::new(
            sqlstate::FEATURE_NOT_SUPPORTED,
            format!("unit \"{field}\" not supported for type {ty}"),
        )
    } else {
        Error::new(
            sqlstate::INVALID_PARAMETER_VALUE,
            format!("unit \"{field}\" not recognized for type {ty}"),
        )
    }
}

/// PostgreSQL's field names and their abbreviations, normalised.
fn canonical_field(f: &str) -> String {
    let f = f.trim().to_ascii_lowercase();
    match f.as_str() {
        "y" | "yr" | "yrs" | "years" => "year",
        "mon" | "mons" | "months" => "month",
        "d" | "days" => "day",
        "h" | "hr" | "hrs" | "hours" => "hour",
        "m" | "min" | "mins" | "minutes" => "minute",
        "s" | "sec" | "secs" | "seconds" => "second",
        "ms" | "msec" | "msecs" | "millisecond" | "mseconds" => "milliseconds",
        "us" | "usec" | "usecs" | "microsecond" | "useconds" => "microseconds",
        "weeks" | "w" => "week",
        "decades" => "decade",
        "centuries" => "century",
        "millennia" | "millenniums" => "millennium",
        "quarters" | "qtr" => "quarter",
        _ => return f,
    }
    .to_string()
}

const KNOWN_FIELDS: &[&str] = &[
    "year",
    "month",
    "day",
    "hour",
    "minute",
    "second",
    "milliseconds",
    "microseconds",
    "week",
    "decade",
    "century",
    "millennium",
    "quarter",
    "dow",
    "isodow",
    "doy",
    "epoch",
    "isoyear",
    "julian",
    "timezone",
    "timezone_hour",
    "timezone_minute",
];

/// `extract(field FROM v)`: a numeric (scale 6 for seconds and epochs of timestamps, 3 for
/// milliseconds), as PostgreSQL 14+ returns.
pub fn extract(field: &str, v: &Value) -> Result<Value> {
    let f = canonical_field(field);
    let known = KNOWN_FIELDS.contains(&f.as_str());
    let int = |i: i64| Ok(Value::Numeric(Numeric::from_i64(i)));
    let scaled = |m: i64, s: u32| Ok(Value::Numeric(Numeric::from_scaled(m, s)));
    match v {
        Value::Null => Ok(Value::Null),
        Value::Date(d) => {
            if *d == dt::DATE_NEG_INF || *d == dt::DATE_POS_INF {
                return Ok(Value::Null);
            }
            let fl = fields(*d as i64 * USECS_PER_DAY);
            match f.as_str() {
                "hour" | "minute" | "second" | "milliseconds" | "microseconds" | "timezone"
                | "timezone_hour" | "timezone_minute" => Err(unit_error(field, "date", known)),
                "epoch" => int((*d as i64 + dt::UNIX_TO_PG_DAYS) * 86_400),
                _ => calendar_field(&f, &fl)
                    .map(|i| Value::Numeric(Numeric::from_i64(i)))
                    .ok_or_else(|| unit_error(field, "date", known)),
            }
        }
        Value::Timestamp(ts) | Value::TimestampTz(ts) => {
            let ty = if matches!(v, Value::Timestamp(_)) {
                "timestamp without time zone"
            } else {
                "timestamp with time zone"
            };
            if *ts == TS_NEG_INF || *ts == TS_POS_INF {
                return Ok(Value::Null);
            }
            let fl = fields(*ts);
            match f.as_str() {
                "hour" => int(fl.micros / USECS_PER_HOUR),
                "minute" => int(fl.micros % USECS_PER_HOUR / USECS_PER_MINUTE),
                "second" => scaled(fl.micros % USECS_PER_MINUTE, 6),
                "milliseconds" => scaled(fl.micros % USECS_PER_MINUTE, 3),
                "microseconds" => int(fl.micros % USECS_PER_MINUTE),
                "epoch" => scaled(ts + dt::UNIX_TO_PG_DAYS * USECS_PER_DAY, 6),
                "timezone" | "timezone_hour" | "timezone_minute"
                    if matches!(v, Value::TimestampTz(_)) =>
                {
                    int(0)
                }
                _ => calendar_field(&f, &fl)
                    .map(|i| Value::Numeric(Numeric::from_i64(i)))
                    .ok_or_else(|| unit_error(field, ty, known)),
            }
        }
        Value::Time(t) => match f.as_str() {
            "hour" => int(t / USECS_PER_HOUR),
            "minute" => int(t % USECS_PER_HOUR / USECS_PER_MINUTE),
            "second" => scaled(t % USECS_PER_MINUTE, 6),
            "milliseconds" => scaled(t % USECS_PER_MINUTE, 3),
            "microseconds" => int(t % USECS_PER_MINUTE),
            "epoch" => scaled(*t, 6),
            _ => Err(unit_error(field, "time without time zone", known)),
        },
        Value::Interval(iv) => {
            let years = iv.months as i64 / 12;
            match f.as_str() {
                "year" => int(years),
                "month" => int(iv.months as i64 % 12),
                "day" => int(iv.days as i64),
                "hour" => int(iv.micros / USECS_PER_HOUR),
                "minute" => int(iv.micros % USECS_PER_HOUR / USECS_PER_MINUTE),
                "second" => scaled(iv.micros % USECS_PER_MINUTE, 6),
                "milliseconds" => scaled(iv.micros % USECS_PER_MINUTE, 3),
                "microseconds" => int(iv.micros % USECS_PER_MINUTE),
                "quarter" => int((iv.months as i64 % 12) / 3 + 1),
                "decade" => int(years / 10),
                "century" => int(years / 100),
                "millennium" => int(years / 1000),
                "epoch" => {
                    // A year is 365.25 days, a month 30 days.
                    let secs_years = (iv.months as i128 / 12) * 36_525 * 864;
                    let secs_months = (iv.months as i128 % 12) * 30 * 86_400;
                    let micros = (secs_years + secs_months + iv.days as i128 * 86_400)
                        * USECS_PER_SEC as i128
                        + iv.micros as i128;
                    let m = i64::try_from(micros).map_err(|_| {
                        Error::new(
                            sqlstate::NUMERIC_VALUE_OUT_OF_RANGE,
                            "interval out of range",
                        )
                    })?;
                    scaled(m, 6)
                }
                _ => Err(unit_error(field, "interval", known)),
            }
        }
        other => Err(Error::new(
            sqlstate::UNDEFINED_FUNCTION,
            format!(
                "function pg_catalog.extract(unknown, {}) does not exist",
                other.type_name()
            ),
        )),
    }
}

fn calendar_field(f: &str, fl: &Fields) -> Option<i64> {
    // PostgreSQL numbers years BC as negative, with no year 0.
    let year = if fl.year <= 0 { fl.year - 1 } else { fl.year };
    Some(match f {
        "year" => year,
        "month" => fl.month as i64,
        "day" => fl.day as i64,
        "quarter" => (fl.month as i64 - 1) / 3 + 1,
        "dow" => isodow(fl.days) % 7,
        "isodow" => isodow(fl.days),
        "doy" => fl.days - (dt::days_from_civil(fl.year, 1, 1) - dt::UNIX_TO_PG_DAYS) + 1,
        "week" => iso_week(fl.days, fl.year).1,
        "isoyear" => iso_week(fl.days, fl.year).0,
        "decade" => year.div_euclid(10),
        "century" => {
            if year > 0 {
                (year + 99) / 100
            } else {
                -((99 - (year + 1)) / 100)
            }
        }
        "millennium" => {
            if year > 0 {
                (year + 999) / 1000
            } else {
                -((999 - (year + 1)) / 1000)
            }
        }
        "julian" => fl.days + 2_451_545,
        _ => return None,
    })
}

/// `date_trunc(field, v)` for timestamps and intervals.
pub fn date_trunc(field: &str, v: &Value) -> Result<Value> {
    let f = canonical_field(field);
    let known = KNOWN_FIELDS.contains(&f.as_str());
    match v {
        Value::Null => Ok(Value::Null),
        Value::Timestamp(ts) | Value::TimestampTz(ts) => {
            let ty = if matches!(v, Value::Timestamp(_)) {
                "timestamp without time zone"
            } else {
                "timestamp with time zone"
            };
            if *ts == TS_NEG_INF || *ts == TS_POS_INF {
                return Ok(v.clone());
            }
            let fl = fields(*ts);
            let day_start = |y: i64, m: u32, d: u32| -> Result<i64> {
                dt::timestamp_from_parts(dt::days_from_civil(y, m, d) - dt::UNIX_TO_PG_DAYS, 0)
            };
            let trunc_time = |unit: i64| -> Result<i64> {
                dt::timestamp_from_parts(fl.days, fl.micros - fl.micros % unit)
            };
            let out = match f.as_str() {
                "microseconds" => *ts,
                "milliseconds" => trunc_time(1000)?,
                "second" => trunc_time(USECS_PER_SEC)?,
                "minute" => trunc_time(USECS_PER_MINUTE)?,
                "hour" => trunc_time(USECS_PER_HOUR)?,
                "day" => trunc_time(USECS_PER_DAY)?,
                "week" => dt::timestamp_from_parts(fl.days - (isodow(fl.days) - 1), 0)?,
                "month" => day_start(fl.year, fl.month, 1)?,
                "quarter" => day_start(fl.year, (fl.month - 1) / 3 * 3 + 1, 1)?,
                "year" => day_start(fl.year, 1, 1)?,
                "decade" => day_start(fl.year - fl.year.rem_euclid(10), 1, 1)?,
                "century" => day_start((fl.year - 1).div_euclid(100) * 100 + 1, 1, 1)?,
                "millennium" => day_start((fl.year - 1).div_euclid(1000) * 1000 + 1, 1, 1)?,
                _ => return Err(unit_error(field, ty, known)),
            };
            Ok(if matches!(v, Value::Timestamp(_)) {
                Value::Timestamp(out)
            } else {
                Value::TimestampTz(out)
            })
        }
        Value::Interval(iv) => {
            let mut out = *iv;
            let keep_micros = |unit: i64| iv.micros - iv.micros % unit;
            match f.as_str() {
                "microseconds" => {}
                "milliseconds" => out.micros = keep_micros(1000),
                "second" => out.micros = keep_micros(USECS_PER_SEC),
                "minute" => out.micros = keep_micros(USECS_PER_MINUTE),
                "hour" => out.micros = keep_micros(USECS_PER_HOUR),
                "day" => out.micros = 0,
                "month" => {
                    out.micros = 0;
                    out.days = 0;
                }
                "quarter" | "year" | "decade" | "century" | "millennium" => {
                    let unit = match f.as_str() {
                        "quarter" => 3,
                        "year" => 12,
                        "decade" => 120,
                        "century" => 1200,
                        _ => 12000,
                    };
                    out = Interval {
                        months: iv.months - iv.months % unit,
                        days: 0,
                        micros: 0,
                    };
                }
                _ => return Err(unit_error(field, "interval", known)),
            }
            Ok(Value::Interval(out))
        }
        other => Err(Error::internal(format!(
            "date_trunc of {}",
            other.type_name()
        ))),
    }
}

/// `make_date(year, month, day)`; negative years are BC.
pub fn make_date(y: i64, m: i64, d: i64) -> Result<Value> {
    let bad = || {
        Error::new(
            sqlstate::DATETIME_FIELD_OVERFLOW,
            format!("date field value out of range: {y}-{m:02}-{d:02}"),
        )
    };
    if y == 0 {
        return Err(bad());
    }
    let year = if y < 0 { y + 1 } else { y };
    let (m, d) = (
        u32::try_from(m).map_err(|_| bad())?,
        u32::try_from(d).map_err(|_| bad())?,
    );
    dt::date_from_ymd(year, m, d)
        .map(Value::Date)
        .ok_or_else(bad)
}

/// `to_timestamp(seconds since 1970)`.
pub fn to_timestamp(secs: f64) -> Result<Value> {
    if secs.is_nan() {
        return Err(Error::new(
            sqlstate::DATETIME_FIELD_OVERFLOW,
            "timestamp cannot be NaN",
        ));
    }
    if secs.is_infinite() {
        return Ok(Value::TimestampTz(if secs > 0.0 {
            TS_POS_INF
        } else {
            TS_NEG_INF
        }));
    }
    let micros = (secs * 1e6).round() - (dt::UNIX_TO_PG_DAYS * USECS_PER_DAY) as f64;
    if micros.abs() >= 9.2e18 {
        return Err(Error::new(
            sqlstate::DATETIME_FIELD_OVERFLOW,
            format!(
                "timestamp out of range: \"{}\"",
                protocol::value::format_float(secs, false)
            ),
        ));
    }
    Ok(Value::TimestampTz(micros as i64))
}

/// `age(a, b)`: the difference in years, months and days (field by field, borrowing from
/// the earlier date's month), then time.
pub fn age(a: i64, b: i64) -> Result<Value> {
    if [a, b].iter().any(|t| *t == TS_NEG_INF || *t == TS_POS_INF) {
        return Err(Error::new(
            sqlstate::DATETIME_FIELD_OVERFLOW,
            "interval out of range",
        ));
    }
    let (neg, hi, lo) = if a >= b { (false, a, b) } else { (true, b, a) };
    let (x, y) = (fields(hi), fields(lo));
    let mut micros = x.micros - y.micros;
    let mut day = x.day as i64 - y.day as i64;
    let mut month = x.month as i64 - y.month as i64;
    let mut year = x.year - y.year;
    if micros < 0 {
        micros += USECS_PER_DAY;
        day -= 1;
    }
    if day < 0 {
        day += dt::days_in_month(y.year, y.month) as i64;
        month -= 1;
    }
    if month < 0 {
        month += 12;
        year -= 1;
    }
    let iv = Interval {
        months: (year * 12 + month) as i32,
        days: day as i32,
        micros,
    };
    Ok(Value::Interval(if neg { iv.neg()? } else { iv }))
}

const MONTH_NAMES: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const DAY_NAMES: [&str; 7] = [
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
];

fn cased(name: &str, pattern: &str) -> String {
    if pattern.chars().all(|c| c.is_ascii_uppercase()) {
        name.to_uppercase()
    } else if pattern
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase())
    {
        name.to_lowercase()
    } else {
        name.to_string()
    }
}

/// `to_char(timestamp | date | interval, format)`.
pub fn to_char_datetime(v: &Value, fmt: &str) -> Result<Value> {
    let (ts, tz, interval) = match v {
        Value::Timestamp(t) => (*t, false, None),
        Value::TimestampTz(t) => (*t, true, None),
        Value::Date(d) => (date_as_ts(*d)?, false, None),
        Value::Interval(iv) => (iv.micros, false, Some(*iv)),
        other => return Err(Error::internal(format!("to_char of {}", other.type_name()))),
    };
    if ts == TS_NEG_INF || ts == TS_POS_INF {
        return Ok(Value::Null);
    }
    let fl = match interval {
        Some(iv) => Fields {
            year: iv.months as i64 / 12,
            month: (iv.months % 12) as u32,
            day: iv.days as u32,
            micros: iv.micros,
            days: 0,
        },
        None => fields(ts),
    };
    let hour = fl.micros / USECS_PER_HOUR;
    let minute = fl.micros % USECS_PER_HOUR / USECS_PER_MINUTE;
    let second = fl.micros % USECS_PER_MINUTE / USECS_PER_SEC;
    let frac = fl.micros % USECS_PER_SEC;
    let year = if fl.year <= 0 { 1 - fl.year } else { fl.year };
    let mut out = String::new();
    let chars: Vec<char> = fmt.chars().collect();
    let mut i = 0;
    let starts = |i: usize, p: &str| {
        let pc: Vec<char> = p.chars().collect();
        chars.len() >= i + pc.len()
            && chars[i..i + pc.len()]
                .iter()
                .zip(&pc)
                .all(|(a, b)| a.eq_ignore_ascii_case(b))
    };
    while i < chars.len() {
        if chars[i] == '"' {
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                if chars[i] == '\\' && i + 1 < chars.len() {
                    i += 1;
                }
                out.push(chars[i]);
                i += 1;
            }
            i += 1;
            continue;
        }
        let fm = starts(i, "FM");
        let j = if fm { i + 2 } else { i };
        let num = |n: i64, width: usize| {
            if fm {
                n.to_string()
            } else {
                format!("{n:0width$}")
            }
        };
        let raw: String = chars[j..].iter().collect();
        let pat = |p: &str| starts(j, p);
        let (text, len) = if pat("HH24") {
            (num(hour, 2), 4)
        } else if pat("HH12") || pat("HH") {
            let h = if hour % 12 == 0 { 12 } else { hour % 12 };
            (num(h, 2), if pat("HH12") { 4 } else { 2 })
        } else if pat("MI") {
            (num(minute, 2), 2)
        } else if pat("SSSS") {
            (num(fl.micros / USECS_PER_SEC, 1), 4)
        } else if pat("SS") {
            (num(second, 2), 2)
        } else if pat("MS") {
            (num(frac / 1000, 3), 2)
        } else if pat("US") {
            (num(frac, 6), 2)
        } else if pat("AM") || pat("PM") {
            let s = if hour >= 12 { "PM" } else { "AM" };
            (cased(s, &raw[..2]), 2)
        } else if pat("A.M.") || pat("P.M.") {
            let s = if hour >= 12 { "P.M." } else { "A.M." };
            (cased(s, &raw[..4]), 4)
        } else if pat("YYYY") {
            (num(year, 4), 4)
        } else if pat("YYY") {
            (num(year % 1000, 3), 3)
        } else if pat("YY") {
            (num(year % 100, 2), 2)
        } else if pat("Y") {
            (num(year % 10, 1), 1)
        } else if pat("IYYY") {
            (num(iso_week(fl.days, fl.year).0, 4), 4)
        } else if pat("IW") {
            (num(iso_week(fl.days, fl.year).1, 2), 2)
        } else if pat("MONTH") {
            let name = MONTH_NAMES
                .get((fl.month as usize).wrapping_sub(1))
                .copied()
                .unwrap_or("");
            let s = cased(name, &raw[..5]);
            (if fm { s } else { format!("{s:<9}") }, 5)
        } else if pat("MON") {
            let name = MONTH_NAMES
                .get((fl.month as usize).wrapping_sub(1))
                .copied()
                .unwrap_or("");
            (cased(&name[..3.min(name.len())], &raw[..3]), 3)
        } else if pat("MM") {
            (num(fl.month as i64, 2), 2)
        } else if pat("DAY") {
            let s = cased(DAY_NAMES[(isodow(fl.days) % 7) as usize], &raw[..3]);
            (if fm { s } else { format!("{s:<9}") }, 3)
        } else if pat("DY") {
            let name = DAY_NAMES[(isodow(fl.days) % 7) as usize];
            (cased(&name[..3], &raw[..2]), 2)
        } else if pat("DDD") {
            let doy = calendar_field("doy", &fl).unwrap_or(0);
            (num(doy, 3), 3)
        } else if pat("DD") {
            (num(fl.day as i64, 2), 2)
        } else if pat("D") {
            (num(isodow(fl.days) % 7 + 1, 1), 1)
        } else if pat("ID") {
            (num(isodow(fl.days), 1), 2)
        } else if pat("Q") {
            (num((fl.month as i64 - 1) / 3 + 1, 1), 1)
        } else if pat("J") {
            (num(fl.days + 2_451_545, 1), 1)
        } else if pat("TZ") {
            (
                if tz {
                    cased("UTC", &raw[..2])
                } else {
                    String::new()
                },
                2,
            )
        } else if pat("OF") {
            (if tz { "+00".into() } else { String::new() }, 2)
        } else if pat("BC") || pat("AD") {
            let s = if fl.year <= 0 { "BC" } else { "AD" };
            (cased(s, &raw[..2]), 2)
        } else if chars[i] == '\\' && i + 1 < chars.len() {
            out.push(chars[i + 1]);
            i += 2;
            continue;
        } else {
            out.push(chars[i]);
            i += 1;
            continue;
        };
        out.push_str(&text);
        i = j + len;
    }
    Ok(Value::Text(out))
}

/// `to_char(number, format)` for the common patterns: `9` (digit or blank), `0` (digit or
/// zero), `.`/`D` (decimal point), `,`/`G` (group separator), `S`/`MI`/`PL`/`SG` (sign),
/// `FM` (no padding).
pub fn to_char_number(v: &Value, fmt: &str) -> Result<Value> {
    let n = match v {
        Value::Int(i) => Numeric::from_i64(*i),
        Value::Numeric(n) => *n,
        Value::Float(f) => Numeric::from_f64(*f, false)?,
        other => return Err(Error::internal(format!("to_char of {}", other.type_name()))),
    };
    let upper = fmt.to_ascii_uppercase();
    let fm = upper.contains("FM");
    let body = upper.replace("FM", "");
    let explicit_sign = body.contains('S') || body.contains("MI") || body.contains("PL");
    let point = body.find(['.', 'D']);
    let (int_fmt, frac_fmt) = match point {
        Some(p) => (&body[..p], &body[p + 1..]),
        None => (&body[..], ""),
    };
    let is_digit = |c: char| c == '9' || c == '0';
    let int_positions = int_fmt.chars().filter(|c| is_digit(*c)).count();
    let frac_positions = frac_fmt.chars().filter(|c| is_digit(*c)).count();
    let rounded = n.round(
        frac_positions as i64,
        rust_decimal::RoundingStrategy::MidpointAwayFromZero,
    )?;
    let negative = rounded.decimal().is_some_and(|d| d.is_sign_negative());
    let text = rounded.abs().to_string();
    let (int_digits, frac_digits) = text.split_once('.').unwrap_or((&text, ""));
    let int_digits = if int_digits == "0" { "" } else { int_digits };
    let overflow = int_digits.len() > int_positions || n.is_nan();
    // Integer part, right to left.
    let mut int_out: Vec<char> = Vec::new();
    let first_zero = int_fmt
        .chars()
        .filter(|c| is_digit(*c) || *c == ',' || *c == 'G')
        .position(|c| c == '0');
    let int_chars: Vec<char> = int_fmt
        .chars()
        .filter(|c| is_digit(*c) || *c == ',' || *c == 'G')
        .collect();
    let mut digits = int_digits.chars().rev();
    let mut remaining = int_digits.len();
    for (idx, c) in int_chars.iter().enumerate().rev() {
        let zero_forced = first_zero.is_some_and(|z| idx >= z);
        match c {
            ',' | 'G' => int_out.push(if remaining > 0 || zero_forced {
                ','
            } else {
                ' '
            }),
            _ if overflow => int_out.push('#'),
            _ => match digits.next() {
                Some(d) => {
                    int_out.push(d);
                    remaining -= 1;
                }
                None if zero_forced => int_out.push('0'),
                None => int_out.push(' '),
            },
        }
    }
    int_out.reverse();
    let mut s: String = int_out.into_iter().collect();
    // A zero with no fraction positions still shows its units digit.
    if !overflow && int_digits.is_empty() && point.is_none() && s.ends_with(' ') {
        s.pop();
        s.push('0');
    }
    if point.is_some() {
        s.push('.');
        let mut frac: Vec<char> = Vec::new();
        let mut fd = frac_digits.chars();
        for c in frac_fmt.chars().filter(|c| is_digit(*c)) {
            let _ = c;
            frac.push(if overflow {
                '#'
            } else {
                fd.next().unwrap_or('0')
            });
        }
        if fm {
            // FM drops trailing zeros in `9` positions.
            let fmt_digits: Vec<char> = frac_fmt.chars().filter(|c| is_digit(*c)).collect();
            while let (Some('0'), Some('9')) = (frac.last(), fmt_digits.get(frac.len() - 1)) {
                frac.pop();
                if frac.is_empty() {
                    break;
                }
            }
        }
        s.extend(frac);
    }
    let sign = if negative { '-' } else { ' ' };
    let mut out = if explicit_sign {
        let sign_char = if body.contains("PL") {
            if negative { ' ' } else { '+' }
        } else if body.contains("MI") {
            if negative { '-' } else { ' ' }
        } else if negative {
            '-'
        } else {
            '+'
        };
        let trimmed = s.trim_start();
        let pad = " ".repeat(s.len() - trimmed.len());
        if body.starts_with('S') {
            format!("{pad}{sign_char}{trimmed}")
        } else {
            format!("{s}{sign_char}")
        }
    } else {
        let pos = s.find(|c: char| c != ' ').unwrap_or(s.len());
        let mut t = s.clone();
        t.insert(pos, sign);
        t
    };
    if fm {
        out = out.trim_start().to_string();
        if body.contains("MI") {
            out = out.trim_end().to_string();
        }
    }
    Ok(Value::Text(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn num(s: &str) -> Value {
        Value::Numeric(Numeric::parse(s).unwrap())
    }

    fn text(v: Result<Value>) -> String {
        match v.unwrap() {
            Value::Text(s) => s,
            other => other.to_string(),
        }
    }

    #[test]
    fn number_formats() {
        assert_eq!(text(to_char_number(&num("1234.5"), "9999.99")), " 1234.50");
        assert_eq!(text(to_char_number(&num("-1234.5"), "9999.99")), "-1234.50");
        assert_eq!(text(to_char_number(&Value::Int(12), "9999")), "   12");
        assert_eq!(text(to_char_number(&Value::Int(12), "0000")), " 0012");
        assert_eq!(text(to_char_number(&num("0.5"), "9.99")), "  .50");
        assert_eq!(text(to_char_number(&num("0.5"), "0.99")), " 0.50");
        assert_eq!(text(to_char_number(&Value::Int(0), "9999")), "    0");
        assert_eq!(
            text(to_char_number(&Value::Int(1234567), "9,999,999")),
            " 1,234,567"
        );
        assert_eq!(text(to_char_number(&num("1234.5"), "FM9999.99")), "1234.5");
        assert_eq!(text(to_char_number(&Value::Int(12345), "999")), " ###");
    }

    #[test]
    fn datetime_formats() {
        let ts = Value::Timestamp(dt::parse_timestamp("2024-03-05 14:07:09.123", false).unwrap());
        assert_eq!(
            text(to_char_datetime(&ts, "YYYY-MM-DD HH24:MI:SS.MS")),
            "2024-03-05 14:07:09.123"
        );
        assert_eq!(
            text(to_char_datetime(&ts, "Mon DD, YYYY HH12 AM")),
            "Mar 05, 2024 02 PM"
        );
        assert_eq!(
            text(to_char_datetime(&ts, "FMMonth FMDD Day")),
            "March 5 Tuesday  "
        );
    }
}
