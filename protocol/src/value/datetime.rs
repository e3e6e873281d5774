//! Dates, times, timestamps and intervals, in PostgreSQL's representation.
//!
//! - `date`: days since 2000-01-01 (PostgreSQL's epoch) as `i32`;
//! - `time`: microseconds since midnight as `i64`;
//! - `timestamp` / `timestamptz`: microseconds since 2000-01-01 00:00:00 as `i64` (UTC for
//!   timestamptz: the session time zone is always UTC);
//! - `interval`: months, days and microseconds, kept apart because a month has no fixed
//!   length (`'2024-01-31' + 1 month` is Feb 29).
//!
//! `±infinity` are `i32::MIN/MAX` and `i64::MIN/MAX`, as in PostgreSQL. The session settings
//! assumed are DateStyle ISO, MDY, TimeZone UTC and IntervalStyle postgres. Calendar math is
//! the proleptic Gregorian calendar (Howard Hinnant's civil-date algorithms).

use std::cmp::Ordering;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result, sqlstate};

pub const USECS_PER_SEC: i64 = 1_000_000;
pub const USECS_PER_MINUTE: i64 = 60 * USECS_PER_SEC;
pub const USECS_PER_HOUR: i64 = 60 * USECS_PER_MINUTE;
pub const USECS_PER_DAY: i64 = 24 * USECS_PER_HOUR;
/// Days from 1970-01-01 to 2000-01-01.
pub const UNIX_TO_PG_DAYS: i64 = 10_957;

pub const DATE_NEG_INF: i32 = i32::MIN;
pub const DATE_POS_INF: i32 = i32::MAX;
pub const TS_NEG_INF: i64 = i64::MIN;
pub const TS_POS_INF: i64 = i64::MAX;

/// Last year a timestamp may have (PostgreSQL: 294276 AD); first is 4713 BC (-4712).
const MAX_YEAR: i64 = 294_276;
const MIN_YEAR: i64 = -4_712;

/// An interval: months, days and microseconds, each with its own sign.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Interval {
    pub months: i32,
    pub days: i32,
    pub micros: i64,
}

// The arithmetic returns `Result` (overflow is an SQL error), so it cannot be `std::ops`.
#[allow(clippy::should_implement_trait)]
impl Interval {
    /// The span PostgreSQL compares intervals by: a month is 30 days, a day 24 hours.
    pub fn span(&self) -> i128 {
        (self.months as i128 * 30 + self.days as i128) * USECS_PER_DAY as i128 + self.micros as i128
    }

    pub fn neg(self) -> Result<Interval> {
        Ok(Interval {
            months: self.months.checked_neg().ok_or_else(interval_range)?,
            days: self.days.checked_neg().ok_or_else(interval_range)?,
            micros: self.micros.checked_neg().ok_or_else(interval_range)?,
        })
    }

    pub fn add(self, o: Interval) -> Result<Interval> {
        Ok(Interval {
            months: self
                .months
                .checked_add(o.months)
                .ok_or_else(interval_range)?,
            days: self.days.checked_add(o.days).ok_or_else(interval_range)?,
            micros: self
                .micros
                .checked_add(o.micros)
                .ok_or_else(interval_range)?,
        })
    }

    pub fn sub(self, o: Interval) -> Result<Interval> {
        self.add(o.neg()?)
    }

    /// `interval * factor`, cascading fractional months to days and days to time as
    /// PostgreSQL's `interval_mul` does.
    pub fn mul(self, factor: f64) -> Result<Interval> {
        if !factor.is_finite() {
            return Err(interval_range());
        }
        let month_f = self.months as f64 * factor;
        let day_f = self.days as f64 * factor;
        if month_f.abs() > i32::MAX as f64 || day_f.abs() > i32::MAX as f64 {
            return Err(interval_range());
        }
        let months = month_f as i32;
        let mut days = day_f as i32;
        let tsround = |x: f64| (x * 1e6).round() / 1e6;
        let month_remainder_days = tsround((month_f - months as f64) * 30.0);
        let mut sec_remainder = tsround(
            (day_f - days as f64 + month_remainder_days - month_remainder_days.trunc()) * 86_400.0,
        );
        if sec_remainder.abs() >= 86_400.0 {
            days += (sec_remainder / 86_400.0) as i32;
            sec_remainder -= ((sec_remainder / 86_400.0) as i32) as f64 * 86_400.0;
        }
        days += month_remainder_days as i32;
        let micros = (self.micros as f64 * factor + sec_remainder * 1e6).round_ties_even();
        if !micros.is_finite() || micros.abs() >= i64::MAX as f64 {
            return Err(interval_range());
        }
        Ok(Interval {
            months,
            days,
            micros: micros as i64,
        })
    }

    /// Moves whole 24-hour periods of the time part into days (`justify_hours`).
    pub fn justify_hours(mut self) -> Interval {
        let extra = self.micros / USECS_PER_DAY;
        self.micros -= extra * USECS_PER_DAY;
        self.days = self.days.saturating_add(extra as i32);
        if self.days > 0 && self.micros < 0 {
            self.micros += USECS_PER_DAY;
            self.days -= 1;
        } else if self.days < 0 && self.micros > 0 {
            self.micros -= USECS_PER_DAY;
            self.days += 1;
        }
        self
    }
}

impl PartialOrd for Interval {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.span().cmp(&other.span()))
    }
}

fn interval_range() -> Error {
    Error::new(sqlstate::DATETIME_FIELD_OVERFLOW, "interval out of range")
}

pub fn timestamp_range() -> Error {
    Error::new(sqlstate::DATETIME_FIELD_OVERFLOW, "timestamp out of range")
}

pub fn date_range() -> Error {
    Error::new(sqlstate::DATETIME_FIELD_OVERFLOW, "date out of range")
}

// ---------------------------------------------------------------------------------------
// Calendar
// ---------------------------------------------------------------------------------------

/// Days since 1970-01-01 of a proleptic Gregorian date (year 0 is 1 BC).
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = m as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day number (days since 1970-01-01).
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

pub fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

pub fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if is_leap(y) => 29,
        _ => 28,
    }
}

/// A date as days since 2000-01-01, checking the fields.
pub fn date_from_ymd(y: i64, m: u32, d: u32) -> Option<i32> {
    if !(1..=12).contains(&m) || d < 1 || d > days_in_month(y, m) {
        return None;
    }
    i32::try_from(days_from_civil(y, m, d) - UNIX_TO_PG_DAYS).ok()
}

pub fn ymd_from_date(days: i32) -> (i64, u32, u32) {
    civil_from_days(days as i64 + UNIX_TO_PG_DAYS)
}

/// Splits a timestamp into its day number (since 2000-01-01) and microseconds of the day.
pub fn split_timestamp(ts: i64) -> (i64, i64) {
    (ts.div_euclid(USECS_PER_DAY), ts.rem_euclid(USECS_PER_DAY))
}

pub fn timestamp_from_parts(days: i64, micros: i64) -> Result<i64> {
    days.checked_mul(USECS_PER_DAY)
        .and_then(|d| d.checked_add(micros))
        .filter(|ts| ts_in_range(*ts))
        .ok_or_else(timestamp_range)
}

fn ts_in_range(ts: i64) -> bool {
    let (days, _) = split_timestamp(ts);
    let (y, _, _) = civil_from_days(days + UNIX_TO_PG_DAYS);
    (MIN_YEAR..=MAX_YEAR).contains(&y)
}

/// A timestamp plus an interval: months first (clamping the day to the month's end), then
/// days, then time, as PostgreSQL does.
pub fn timestamp_add(ts: i64, iv: Interval) -> Result<i64> {
    if ts == TS_NEG_INF || ts == TS_POS_INF {
        return Ok(ts);
    }
    let (days, time) = split_timestamp(ts);
    let mut days = days;
    if iv.months != 0 {
        let (y, m, d) = ymd_from_date(i32::try_from(days).map_err(|_| timestamp_range())?);
        let total = y * 12 + (m as i64 - 1) + iv.months as i64;
        let (ny, nm) = (total.div_euclid(12), (total.rem_euclid(12) + 1) as u32);
        let nd = d.min(days_in_month(ny, nm));
        days = days_from_civil(ny, nm, nd) - UNIX_TO_PG_DAYS;
    }
    days += iv.days as i64;
    let base = timestamp_from_parts(days, time)?;
    base.checked_add(iv.micros)
        .filter(|t| ts_in_range(*t))
        .ok_or_else(timestamp_range)
}

thread_local! {
    static CLOCK_READS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// How many times this thread has read the clock through [`now_micros`]: comparing it
/// before and after binding a statement tells whether the plan holds the time (`'now'`,
/// `'today'`, a folded `now()` or `current_date`), so must not outlive the statement.
pub fn clock_reads() -> u64 {
    CLOCK_READS.with(|c| c.get())
}

pub fn now_micros() -> i64 {
    CLOCK_READS.with(|c| c.set(c.get().wrapping_add(1)));
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0);
    since - UNIX_TO_PG_DAYS * USECS_PER_DAY
}

// ---------------------------------------------------------------------------------------
// Output
// ---------------------------------------------------------------------------------------

fn format_ymd(y: i64, m: u32, d: u32) -> String {
    if y <= 0 {
        format!("{:04}-{m:02}-{d:02} BC", 1 - y)
    } else {
        format!("{y:04}-{m:02}-{d:02}")
    }
}

pub fn format_date(days: i32) -> String {
    match days {
        DATE_NEG_INF => "-infinity".into(),
        DATE_POS_INF => "infinity".into(),
        d => {
            let (y, m, dd) = ymd_from_date(d);
            format_ymd(y, m, dd)
        }
    }
}

/// `HH:MM:SS` with the fraction's trailing zeros removed.
pub fn format_time(micros: i64) -> String {
    let (h, rest) = (micros / USECS_PER_HOUR, micros % USECS_PER_HOUR);
    let (mi, rest) = (rest / USECS_PER_MINUTE, rest % USECS_PER_MINUTE);
    format!("{h:02}:{mi:02}:{}", format_seconds(rest))
}

fn format_seconds(micros: i64) -> String {
    let (s, f) = (micros / USECS_PER_SEC, micros % USECS_PER_SEC);
    if f == 0 {
        format!("{s:02}")
    } else {
        let frac = format!("{f:06}");
        format!("{s:02}.{}", frac.trim_end_matches('0'))
    }
}

pub fn format_timestamp(ts: i64, tz: bool) -> String {
    match ts {
        TS_NEG_INF => "-infinity".into(),
        TS_POS_INF => "infinity".into(),
        _ => {
            let (days, time) = split_timestamp(ts);
            let (y, m, d) = civil_from_days(days + UNIX_TO_PG_DAYS);
            let mut out = format!(
                "{}-{m:02}-{d:02} {}",
                if y <= 0 {
                    format!("{:04}", 1 - y)
                } else {
                    format!("{y:04}")
                },
                format_time(time)
            );
            if tz {
                out.push_str("+00");
            }
            if y <= 0 {
                out.push_str(" BC");
            }
            out
        }
    }
}

/// IntervalStyle `postgres`: `1 year 2 mons 3 days 04:05:06`.
pub fn format_interval(iv: &Interval) -> String {
    let mut out = String::new();
    let mut is_zero = true;
    let mut is_before = false;
    let mut part = |value: i64, unit: &str, out: &mut String| {
        if value == 0 {
            return;
        }
        out.push_str(&format!(
            "{}{}{value} {unit}{}",
            if is_zero { "" } else { " " },
            if is_before && value > 0 { "+" } else { "" },
            if value != 1 { "s" } else { "" }
        ));
        is_before = value < 0;
        is_zero = false;
    };
    let (year, mon) = (iv.months / 12, iv.months % 12);
    part(year as i64, "year", &mut out);
    part(mon as i64, "mon", &mut out);
    part(iv.days as i64, "day", &mut out);
    if is_zero || iv.micros != 0 {
        let t = iv.micros;
        let minus = t < 0;
        let a = t.unsigned_abs() as i64;
        let (h, rest) = (a / USECS_PER_HOUR, a % USECS_PER_HOUR);
        let (mi, rest) = (rest / USECS_PER_MINUTE, rest % USECS_PER_MINUTE);
        out.push_str(&format!(
            "{}{}{h:02}:{mi:02}:{}",
            if is_zero { "" } else { " " },
            if minus {
                "-"
            } else if is_before {
                "+"
            } else {
                ""
            },
            format_seconds(rest)
        ));
    }
    out
}

// ---------------------------------------------------------------------------------------
// Input
// ---------------------------------------------------------------------------------------

fn bad_format(type_name: &str, s: &str) -> Error {
    Error::new(
        sqlstate::INVALID_DATETIME_FORMAT,
        format!("invalid input syntax for type {type_name}: \"{s}\""),
    )
}

fn field_range(s: &str) -> Error {
    Error::new(
        sqlstate::DATETIME_FIELD_OVERFLOW,
        format!("date/time field value out of range: \"{s}\""),
    )
}

/// What a date/time string holds once parsed.
#[derive(Debug, Default)]
struct Parsed {
    date: Option<(i64, u32, u32)>,
    time: Option<i64>,
    /// Offset east of UTC, in seconds.
    offset: Option<i64>,
    special: Option<Special>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Special {
    Epoch,
    Infinity,
    NegInfinity,
    Now,
    Today,
    Tomorrow,
    Yesterday,
}

const MONTHS: [&str; 12] = [
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
];

fn month_name(w: &str) -> Option<u32> {
    if w.len() < 3 {
        return None;
    }
    let w = if w == "sept" { "sep" } else { w };
    MONTHS
        .iter()
        .position(|m| m.starts_with(w) && (w.len() == 3 || *m == w))
        .map(|i| i as u32 + 1)
}

fn is_weekday(w: &str) -> bool {
    const DAYS: [&str; 7] = [
        "sunday",
        "monday",
        "tuesday",
        "wednesday",
        "thursday",
        "friday",
        "saturday",
    ];
    w.len() >= 3 && DAYS.iter().any(|d| d.starts_with(w))
}

/// Parses `HH:MM[:SS[.ffffff]]` into microseconds; `Err(true)` is a field out of range.
fn parse_clock(t: &str) -> std::result::Result<i64, bool> {
    let mut parts = t.split(':');
    let h: i64 = num(parts.next().ok_or(false)?)?;
    let m: i64 = num(parts.next().ok_or(false)?)?;
    let (s, frac) = match parts.next() {
        None => (0, 0),
        Some(sec) => {
            let (whole, frac) = sec.split_once('.').unwrap_or((sec, ""));
            let s: i64 = num(whole)?;
            if !frac.chars().all(|c| c.is_ascii_digit()) {
                return Err(false);
            }
            // Microseconds, rounded half up from any further digits.
            let mut digits: String = frac.chars().take(7).collect();
            while digits.len() < 7 {
                digits.push('0');
            }
            let seven: i64 = digits.parse().map_err(|_| false)?;
            (s, (seven + 5) / 10)
        }
    };
    if parts.next().is_some() {
        return Err(false);
    }
    if !(0..=59).contains(&m) || !(0..=60).contains(&s) || h < 0 {
        return Err(true);
    }
    let total = h * USECS_PER_HOUR + m * USECS_PER_MINUTE + s * USECS_PER_SEC + frac;
    if total > USECS_PER_DAY {
        return Err(true);
    }
    Ok(total)
}

fn num(s: &str) -> std::result::Result<i64, bool> {
    if s.is_empty() || s.len() > 9 || !s.chars().all(|c| c.is_ascii_digit()) {
        return Err(false);
    }
    s.parse().map_err(|_| false)
}

/// Parses a time-zone suffix: `Z`, `UTC`, `GMT`, `+HH`, `+HH:MM`, `+HHMM` (seconds east).
fn parse_offset(t: &str) -> Option<i64> {
    match t {
        "z" | "utc" | "gmt" | "zulu" => return Some(0),
        _ => {}
    }
    let (sign, rest) = match t.as_bytes().first()? {
        b'+' => (1, &t[1..]),
        b'-' => (-1, &t[1..]),
        _ => return None,
    };
    let (h, m) = if let Some((h, m)) = rest.split_once(':') {
        (h, m)
    } else if rest.len() == 4 {
        (&rest[..2], &rest[2..])
    } else {
        (rest, "0")
    };
    let h: i64 = num(h).ok()?;
    let m: i64 = num(m).ok()?;
    if h > 15 || m > 59 {
        return None;
    }
    Some(sign * (h * 3600 + m * 60))
}

/// Splits a string into date/time tokens and interprets them. `Err(true)` = a field out of
/// range, `Err(false)` = bad syntax.
fn parse_datetime(s: &str) -> std::result::Result<Parsed, bool> {
    let lower = s.trim().to_ascii_lowercase();
    let mut p = Parsed::default();
    match lower.as_str() {
        "epoch" => p.special = Some(Special::Epoch),
        "infinity" | "+infinity" => p.special = Some(Special::Infinity),
        "-infinity" => p.special = Some(Special::NegInfinity),
        "now" => p.special = Some(Special::Now),
        "today" => p.special = Some(Special::Today),
        "tomorrow" => p.special = Some(Special::Tomorrow),
        "yesterday" => p.special = Some(Special::Yesterday),
        _ => {}
    }
    if p.special.is_some() {
        return Ok(p);
    }
    // ISO 8601 `T` between date and time.
    let mut text = lower.clone();
    if let Some(pos) = text.find('t')
        && pos > 0
        && text.as_bytes()[pos - 1].is_ascii_digit()
        && text
            .as_bytes()
            .get(pos + 1)
            .is_some_and(|c| c.is_ascii_digit())
    {
        text.replace_range(pos..pos + 1, " ");
    }
    // A zone glued to the time: `12:00:00+02`, `12:00Z`.
    let mut tokens: Vec<String> = Vec::new();
    for raw in text.split([' ', ',']).filter(|t| !t.is_empty()) {
        if raw.contains(':')
            && let Some(pos) = raw.find(['+', '-', 'z'])
            && pos > 0
        {
            tokens.push(raw[..pos].to_string());
            tokens.push(raw[pos..].to_string());
            continue;
        }
        tokens.push(raw.to_string());
    }
    let mut bc = false;
    let mut loose: Vec<String> = Vec::new(); // numbers and month names for textual dates
    let mut text_month: Option<u32> = None;
    for tok in &tokens {
        let t = tok.as_str();
        if t == "bc" {
            bc = true;
        } else if t == "ad" || is_weekday(t) {
        } else if t.contains(':') && p.time.is_none() && p.date.is_some()
            || t.contains(':') && p.time.is_none() && !t.starts_with(['+', '-'])
        {
            p.time = Some(parse_clock(t)?);
        } else if p.time.is_some() && p.offset.is_none() && parse_offset(t).is_some() {
            p.offset = parse_offset(t);
        } else if t.contains('-') || t.contains('/') || t.contains('.') && p.date.is_none() {
            if p.date.is_some() {
                return Err(false);
            }
            let parts: Vec<&str> = t.split(['-', '/', '.']).collect();
            if parts.len() != 3 {
                return Err(false);
            }
            let month_word = month_name(parts[1]);
            let n = |i: usize| num(parts[i]);
            p.date = Some(if parts[0].len() >= 3 {
                // Y-M-D
                (
                    n(0)?,
                    month_word
                        .map(Ok)
                        .unwrap_or_else(|| n(1).map(|m| m as u32))?,
                    n(2)? as u32,
                )
            } else if let Some(m) = month_word {
                // D-Mon-Y
                (n(2)?, m, n(0)? as u32)
            } else {
                // M-D-Y (DateStyle MDY)
                (n(2)?, n(0)? as u32, n(1)? as u32)
            });
        } else if let Some(m) = month_name(t) {
            text_month = Some(m);
        } else if t.len() == 8 && p.date.is_none() && t.chars().all(|c| c.is_ascii_digit()) {
            let y = num(&t[..4])?;
            p.date = Some((y, num(&t[4..6])? as u32, num(&t[6..])? as u32));
        } else if t.chars().all(|c| c.is_ascii_digit()) {
            loose.push(t.to_string());
        } else if p.offset.is_none() && parse_offset(t).is_some() {
            p.offset = parse_offset(t);
        } else {
            return Err(false);
        }
    }
    if let Some(m) = text_month {
        if p.date.is_some() || loose.len() != 2 {
            return Err(false);
        }
        // `Jan 2 2024`, `2 Jan 2024`, `2024 Jan 2`: the year is the field with 3+ digits,
        // else the last one.
        let (y, d) = if loose[0].len() >= 3 {
            (&loose[0], &loose[1])
        } else {
            (&loose[1], &loose[0])
        };
        p.date = Some((num(y)?, m, num(d)? as u32));
    } else if !loose.is_empty() {
        return Err(false);
    }
    if let Some((y, m, d)) = p.date.as_mut() {
        if bc {
            *y = 1 - *y;
        }
        if *y < MIN_YEAR - 1
            || *y > MAX_YEAR
            || !(1..=12).contains(m)
            || *d < 1
            || *d > days_in_month(*y, *m)
        {
            return Err(true);
        }
        let _ = d;
    }
    Ok(p)
}

fn special_days(sp: Special) -> Option<i64> {
    let today = || now_micros().div_euclid(USECS_PER_DAY);
    match sp {
        Special::Epoch => Some(-UNIX_TO_PG_DAYS),
        Special::Today | Special::Now => Some(today()),
        Special::Tomorrow => Some(today() + 1),
        Special::Yesterday => Some(today() - 1),
        Special::Infinity | Special::NegInfinity => None,
    }
}

/// `date` input.
pub fn parse_date(s: &str) -> Result<i32> {
    let p = parse_datetime(s).map_err(|range| {
        if range {
            field_range(s)
        } else {
            bad_format("date", s)
        }
    })?;
    if let Some(sp) = p.special {
        return match sp {
            Special::Infinity => Ok(DATE_POS_INF),
            Special::NegInfinity => Ok(DATE_NEG_INF),
            sp => Ok(special_days(sp).unwrap_or(0) as i32),
        };
    }
    let (y, m, d) = p.date.ok_or_else(|| bad_format("date", s))?;
    date_from_ymd(y, m, d).ok_or_else(|| field_range(s))
}

/// `time` input: a clock time, possibly with a date or zone before/after it (ignored).
pub fn parse_time(s: &str) -> Result<i64> {
    let p = parse_datetime(s).map_err(|range| {
        if range {
            field_range(s)
        } else {
            bad_format("time without time zone", s)
        }
    })?;
    if p.special == Some(Special::Now) {
        return Ok(now_micros().rem_euclid(USECS_PER_DAY));
    }
    if p.special.is_some() {
        return Err(bad_format("time without time zone", s));
    }
    p.time
        .ok_or_else(|| bad_format("time without time zone", s))
}

/// `timestamp` (tz = false: any zone is ignored) and `timestamptz` (converted to UTC) input.
pub fn parse_timestamp(s: &str, tz: bool) -> Result<i64> {
    let name = if tz {
        "timestamp with time zone"
    } else {
        "timestamp without time zone"
    };
    let p = parse_datetime(s).map_err(|range| {
        if range {
            field_range(s)
        } else {
            bad_format(name, s)
        }
    })?;
    if let Some(sp) = p.special {
        return match sp {
            Special::Infinity => Ok(TS_POS_INF),
            Special::NegInfinity => Ok(TS_NEG_INF),
            Special::Now => Ok(now_micros()),
            sp => Ok(special_days(sp).unwrap_or(0) * USECS_PER_DAY),
        };
    }
    let (y, m, d) = p.date.ok_or_else(|| bad_format(name, s))?;
    let days = days_from_civil(y, m, d) - UNIX_TO_PG_DAYS;
    let mut ts = timestamp_from_parts(days, p.time.unwrap_or(0))?;
    if tz && let Some(off) = p.offset {
        ts = ts
            .checked_sub(off * USECS_PER_SEC)
            .ok_or_else(timestamp_range)?;
    }
    Ok(ts)
}

/// Interval input: `1 year 2 mons 3 days 04:05:06`, `90 minutes`, `1.5 hours`, `-1 day`,
/// `@ 1 day ago`, `P1Y2M3DT4H5M6S`, a bare number (seconds).
pub fn parse_interval(s: &str) -> Result<Interval> {
    let bad = || bad_format("interval", s);
    let lower = s.trim().to_ascii_lowercase();
    if lower.starts_with('p') {
        return parse_iso_interval(&lower).ok_or_else(bad);
    }
    let mut months = 0f64;
    let mut days = 0f64;
    let mut micros = 0f64;
    let mut toks: Vec<&str> = lower.split_whitespace().collect();
    if toks.first() == Some(&"@") {
        toks.remove(0);
    }
    let mut ago = false;
    if toks.last() == Some(&"ago") {
        ago = true;
        toks.pop();
    }
    if toks.is_empty() {
        return Err(bad());
    }
    let mut i = 0;
    let mut any = false;
    while i < toks.len() {
        let t = toks[i];
        if t.contains(':') {
            let (neg, body) = match t.as_bytes()[0] {
                b'-' => (true, &t[1..]),
                b'+' => (false, &t[1..]),
                _ => (false, t),
            };
            let mut parts = body.splitn(3, ':');
            let h: f64 = parts.next().and_then(|x| x.parse().ok()).ok_or_else(bad)?;
            let m: f64 = parts.next().and_then(|x| x.parse().ok()).ok_or_else(bad)?;
            let sec: f64 = match parts.next() {
                Some(x) => x.parse().map_err(|_| bad())?,
                None => 0.0,
            };
            if !(0.0..60.0).contains(&m) || !(0.0..60.0).contains(&sec) {
                return Err(field_range(s));
            }
            let v = h * 3.6e9 + m * 6e7 + sec * 1e6;
            micros += if neg { -v } else { v };
            any = true;
            i += 1;
            continue;
        }
        // A number, with its unit glued on or in the next token.
        let split = t
            .find(|c: char| !(c.is_ascii_digit() || matches!(c, '.' | '-' | '+')))
            .unwrap_or(t.len());
        let (numtxt, mut unit) = t.split_at(split);
        let n: f64 = numtxt.parse().map_err(|_| bad())?;
        if unit.is_empty() {
            if let Some(next) = toks.get(i + 1)
                && next.starts_with(|c: char| c.is_ascii_alphabetic())
            {
                unit = next;
                i += 1;
            } else {
                unit = "second";
            }
        }
        let unit = unit.trim_end_matches(',');
        match unit {
            "microsecond" | "microseconds" | "us" | "usec" | "usecs" | "useconds" => micros += n,
            "millisecond" | "milliseconds" | "ms" | "msec" | "msecs" | "mseconds" => {
                micros += n * 1e3
            }
            "second" | "seconds" | "s" | "sec" | "secs" => micros += n * 1e6,
            "minute" | "minutes" | "m" | "min" | "mins" => micros += n * 6e7,
            "hour" | "hours" | "h" | "hr" | "hrs" => micros += n * 3.6e9,
            "day" | "days" | "d" => days += n,
            "week" | "weeks" | "w" => days += n * 7.0,
            "month" | "months" | "mon" | "mons" => months += n,
            "year" | "years" | "y" | "yr" | "yrs" => months += n * 12.0,
            "decade" | "decades" => months += n * 120.0,
            "century" | "centuries" => months += n * 1200.0,
            "millennium" | "millennia" | "millenniums" => months += n * 12000.0,
            _ => return Err(bad()),
        }
        any = true;
        i += 1;
    }
    if !any {
        return Err(bad());
    }
    let iv = from_fractional(months, days, micros).ok_or_else(interval_range)?;
    if ago { iv.neg() } else { Ok(iv) }
}

/// Builds an interval from fractional fields, cascading fractions downwards.
fn from_fractional(months: f64, days: f64, micros: f64) -> Option<Interval> {
    let whole_months = months.trunc();
    let days = days + (months - whole_months) * 30.0;
    let whole_days = days.trunc();
    let micros = micros + (days - whole_days) * USECS_PER_DAY as f64;
    if whole_months.abs() > i32::MAX as f64
        || whole_days.abs() > i32::MAX as f64
        || micros.abs() >= i64::MAX as f64
    {
        return None;
    }
    Some(Interval {
        months: whole_months as i32,
        days: whole_days as i32,
        micros: micros.round() as i64,
    })
}

fn parse_iso_interval(s: &str) -> Option<Interval> {
    let body = s.strip_prefix('p')?;
    let (date, time) = body.split_once('t').unwrap_or((body, ""));
    let (mut months, mut days, mut micros) = (0f64, 0f64, 0f64);
    let mut scan = |part: &str, in_time: bool| -> Option<()> {
        let mut numtxt = String::new();
        for c in part.chars() {
            if c.is_ascii_digit() || c == '.' || c == '-' {
                numtxt.push(c);
                continue;
            }
            let n: f64 = numtxt.parse().ok()?;
            numtxt.clear();
            match (c, in_time) {
                ('y', false) => months += n * 12.0,
                ('m', false) => months += n,
                ('w', false) => days += n * 7.0,
                ('d', false) => days += n,
                ('h', true) => micros += n * 3.6e9,
                ('m', true) => micros += n * 6e7,
                ('s', true) => micros += n * 1e6,
                _ => return None,
            }
        }
        numtxt.is_empty().then_some(())
    };
    scan(date, false)?;
    scan(time, true)?;
    from_fractional(months, days, micros)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_round_trips() {
        for z in [-800_000i64, -1, 0, 10_957, 19_782, 2_000_000] {
            let (y, m, d) = civil_from_days(z);
            assert_eq!(days_from_civil(y, m, d), z);
        }
        assert_eq!(date_from_ymd(2000, 1, 1), Some(0));
        assert_eq!(date_from_ymd(2023, 2, 29), None);
    }

    #[test]
    fn dates_parse_and_print() {
        assert_eq!(format_date(parse_date("2024-02-29").unwrap()), "2024-02-29");
        assert_eq!(format_date(parse_date("02/03/2024").unwrap()), "2024-02-03");
        assert_eq!(
            format_date(parse_date("Jan 5, 2024").unwrap()),
            "2024-01-05"
        );
        assert_eq!(format_date(parse_date("20240105").unwrap()), "2024-01-05");
        assert_eq!(
            format_date(parse_date("0001-01-01 BC").unwrap()),
            "0001-01-01 BC"
        );
        assert_eq!(format_date(parse_date("epoch").unwrap()), "1970-01-01");
        assert_eq!(format_date(parse_date("infinity").unwrap()), "infinity");
        let e = parse_date("2023-02-29").unwrap_err();
        assert_eq!(e.code, sqlstate::DATETIME_FIELD_OVERFLOW);
        assert_eq!(
            e.message,
            "date/time field value out of range: \"2023-02-29\""
        );
        let e = parse_date("soon").unwrap_err();
        assert_eq!(e.message, "invalid input syntax for type date: \"soon\"");
    }

    #[test]
    fn timestamps_parse_and_print() {
        let ts = |s| format_timestamp(parse_timestamp(s, false).unwrap(), false);
        let tstz = |s| format_timestamp(parse_timestamp(s, true).unwrap(), true);
        assert_eq!(ts("2024-01-02 03:04:05"), "2024-01-02 03:04:05");
        assert_eq!(ts("2024-01-02T03:04:05.5"), "2024-01-02 03:04:05.5");
        assert_eq!(ts("2024-01-02 03:04:05+02"), "2024-01-02 03:04:05");
        assert_eq!(tstz("2024-01-02 03:04:05+02"), "2024-01-02 01:04:05+00");
        assert_eq!(
            tstz("2024-01-02 03:04:05.123456789Z"),
            "2024-01-02 03:04:05.123457+00"
        );
        assert_eq!(tstz("2024-01-02 03:04 -05:30"), "2024-01-02 08:34:00+00");
        assert_eq!(ts("2024-01-02"), "2024-01-02 00:00:00");
        assert_eq!(
            ts("1999-12-31 23:59:59.999999"),
            "1999-12-31 23:59:59.999999"
        );
        assert!(parse_timestamp("2024-01-02 25:00:00", false).is_err());
    }

    #[test]
    fn times_parse_and_print() {
        assert_eq!(format_time(parse_time("12:34:56").unwrap()), "12:34:56");
        assert_eq!(format_time(parse_time("1:2").unwrap()), "01:02:00");
        assert_eq!(format_time(parse_time("24:00:00").unwrap()), "24:00:00");
        assert!(parse_time("12:60").is_err());
    }

    #[test]
    fn intervals_parse_and_print() {
        let iv = |s| format_interval(&parse_interval(s).unwrap());
        assert_eq!(iv("90 minutes"), "01:30:00");
        assert_eq!(iv("1 day 2 hours"), "1 day 02:00:00");
        assert_eq!(
            iv("1 year 2 months 3 days 04:05:06.5"),
            "1 year 2 mons 3 days 04:05:06.5"
        );
        assert_eq!(iv("-1 days 2 hours"), "-1 days +02:00:00");
        assert_eq!(iv("1.5 days"), "1 day 12:00:00");
        assert_eq!(iv("1 day ago"), "-1 days");
        assert_eq!(iv("0"), "00:00:00");
        assert_eq!(iv("P1Y2M3DT4H5M6S"), "1 year 2 mons 3 days 04:05:06");
        assert_eq!(iv("-01:30"), "-01:30:00");
        assert!(parse_interval("soon").is_err());
    }

    #[test]
    fn month_arithmetic_clamps() {
        let ts = parse_timestamp("2024-01-31", false).unwrap();
        let next = timestamp_add(
            ts,
            Interval {
                months: 1,
                days: 0,
                micros: 0,
            },
        )
        .unwrap();
        assert_eq!(format_timestamp(next, false), "2024-02-29 00:00:00");
        let i = Interval {
            months: 1,
            days: 0,
            micros: 0,
        }
        .mul(1.5)
        .unwrap();
        assert_eq!(format_interval(&i), "1 mon 15 days");
    }
}
