//! Timeouts as Spryker writes them (`1hour`, `14days`, `1 hour`, ` 1 minute`, `183days`,
//! `2 days 4 hours`) and as ISO 8601 durations (`PT30M`, `P1DT12H`).
//!
//! Spryker hands the string to PHP's `DateInterval::createFromDateString`, which reads a
//! sequence of `<number> <unit>` pairs. Months and years are calendar units there, so they
//! are kept apart from the fixed part and added with calendar arithmetic.

use std::fmt;

use chrono::{DateTime, Months, TimeDelta, Utc};

/// A parsed timeout; `raw` keeps the text as written for display.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Timeout {
    raw: String,
    months: u32,
    seconds: i64,
}

/// Why a text is not a duration.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum DurationError {
    /// Nothing but whitespace.
    #[error("empty duration")]
    Empty,
    /// Not a sequence of `<number> <unit>` pairs nor an ISO 8601 duration (the text).
    #[error("invalid duration {0:?}: expected e.g. \"1 hour\", \"14days\" or \"PT30M\"")]
    Invalid(String),
    /// A number followed by a word that is no unit PHP knows.
    #[error("unknown unit {unit:?} in duration {raw:?}")]
    UnknownUnit {
        /// The whole text.
        raw: String,
        /// The word that is not a unit.
        unit: String,
    },
    /// The sum does not fit (the text).
    #[error("duration {0:?} is too large")]
    Overflow(String),
}

/// Written and read as the text it was parsed from (configuration uses it for offsets).
impl serde::Serialize for Timeout {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.raw)
    }
}

impl<'de> serde::Deserialize<'de> for Timeout {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        Self::parse(&raw).map_err(serde::de::Error::custom)
    }
}

impl Timeout {
    /// Parses a Spryker or ISO 8601 duration.
    pub fn parse(raw: &str) -> Result<Self, DurationError> {
        let text = raw.trim();
        if text.is_empty() {
            return Err(DurationError::Empty);
        }
        let (months, seconds) = if text.starts_with(['P', 'p']) {
            parse_iso(text).ok_or_else(|| DurationError::Invalid(raw.to_owned()))?
        } else {
            parse_relative(raw, text)?
        };
        Ok(Self {
            raw: raw.to_owned(),
            months,
            seconds,
        })
    }

    /// The text as it was written.
    pub fn raw(&self) -> &str {
        &self.raw
    }

    /// The moment this timeout expires for something that started at `start`.
    pub fn after(&self, start: DateTime<Utc>) -> DateTime<Utc> {
        let t = start
            .checked_add_months(Months::new(self.months))
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        t.checked_add_signed(TimeDelta::seconds(self.seconds))
            .unwrap_or(DateTime::<Utc>::MAX_UTC)
    }

    /// Length in seconds, counting a month as 30 days (for display and sorting only).
    pub fn approx_seconds(&self) -> i64 {
        i64::from(self.months) * 30 * 86_400 + self.seconds
    }
}

impl fmt::Display for Timeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.raw.trim())
    }
}

/// Parses a plain duration such as `72h`, `7d`, `30s`, `1 hour` or `PT1H` into seconds.
/// Used for configuration values; calendar units are refused there.
pub fn parse_seconds(raw: &str) -> Result<u64, DurationError> {
    let t = Timeout::parse(raw)?;
    if t.months != 0 || t.seconds < 0 {
        return Err(DurationError::Invalid(raw.to_owned()));
    }
    Ok(t.seconds as u64)
}

fn unit_seconds(unit: &str) -> Option<(u32, i64)> {
    // (months, seconds) per unit, singular and plural, as PHP's relative formats accept.
    let u = unit.to_ascii_lowercase();
    let v = match u.trim_end_matches('s') {
        "" => (0, 1), // "s"
        "sec" | "second" => (0, 1),
        "m" | "min" | "minute" => (0, 60),
        "h" | "hour" | "hr" => (0, 3_600),
        "d" | "day" => (0, 86_400),
        "w" | "week" => (0, 7 * 86_400),
        "fortnight" => (0, 14 * 86_400),
        "month" => (1, 0),
        "y" | "year" => (12, 0),
        _ => return None,
    };
    Some(v)
}

fn parse_relative(raw: &str, text: &str) -> Result<(u32, i64), DurationError> {
    let invalid = || DurationError::Invalid(raw.to_owned());
    let overflow = || DurationError::Overflow(raw.to_owned());
    let mut months: u32 = 0;
    let mut seconds: i64 = 0;
    let mut rest = text;
    let mut any = false;
    while !rest.is_empty() {
        rest = rest.trim_start();
        let rest_no_sign = rest.strip_prefix('+').unwrap_or(rest).trim_start();
        let digits = rest_no_sign
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest_no_sign.len());
        if digits == 0 {
            return Err(invalid());
        }
        let n: i64 = rest_no_sign[..digits].parse().map_err(|_| overflow())?;
        let after = rest_no_sign[digits..].trim_start();
        let unit_len = after
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(after.len());
        if unit_len == 0 {
            return Err(invalid());
        }
        let unit = &after[..unit_len];
        let (m, s) = unit_seconds(unit).ok_or_else(|| DurationError::UnknownUnit {
            raw: raw.to_owned(),
            unit: unit.to_owned(),
        })?;
        let n_months = u32::try_from(n)
            .ok()
            .and_then(|n| n.checked_mul(m))
            .ok_or_else(overflow)?;
        months = months.checked_add(n_months).ok_or_else(overflow)?;
        seconds = n
            .checked_mul(s)
            .and_then(|v| seconds.checked_add(v))
            .ok_or_else(overflow)?;
        rest = after[unit_len..].trim_start();
        any = true;
    }
    if any {
        Ok((months, seconds))
    } else {
        Err(invalid())
    }
}

fn parse_iso(text: &str) -> Option<(u32, i64)> {
    let body = &text[1..];
    let (date, time) = match body.find(['T', 't']) {
        Some(i) => (&body[..i], Some(&body[i + 1..])),
        None => (body, None),
    };
    let mut months: u32 = 0;
    let mut seconds: i64 = 0;
    let mut any = false;
    for (part, in_time) in [(date, false), (time.unwrap_or(""), true)] {
        let mut num = String::new();
        for c in part.chars() {
            if c.is_ascii_digit() {
                num.push(c);
                continue;
            }
            let n: i64 = num.parse().ok()?;
            num.clear();
            let (m, s) = match (c.to_ascii_uppercase(), in_time) {
                ('Y', false) => (12, 0),
                ('M', false) => (1, 0),
                ('W', false) => (0, 7 * 86_400),
                ('D', false) => (0, 86_400),
                ('H', true) => (0, 3_600),
                ('M', true) => (0, 60),
                ('S', true) => (0, 1),
                _ => return None,
            };
            months = months.checked_add(u32::try_from(n).ok()?.checked_mul(m)?)?;
            seconds = seconds.checked_add(n.checked_mul(s)?)?;
            any = true;
        }
        if !num.is_empty() {
            return None;
        }
    }
    if time == Some("") {
        return None;
    }
    any.then_some((months, seconds))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn secs(s: &str) -> i64 {
        let t = Timeout::parse(s).unwrap();
        assert_eq!(t.months, 0, "{s}");
        t.seconds
    }

    #[test]
    fn spryker_forms() {
        assert_eq!(secs("1hour"), 3_600);
        assert_eq!(secs("1 hour"), 3_600);
        assert_eq!(secs(" 1 minute"), 60);
        assert_eq!(secs("15 minute"), 900);
        assert_eq!(secs("14days"), 14 * 86_400);
        assert_eq!(secs("183days"), 183 * 86_400);
        assert_eq!(secs("5 days"), 5 * 86_400);
        assert_eq!(secs("+2 days 4 hours"), 2 * 86_400 + 4 * 3_600);
        assert_eq!(secs("30 seconds"), 30);
        assert_eq!(secs("1 week"), 7 * 86_400);
    }

    #[test]
    fn iso_8601() {
        assert_eq!(secs("PT30M"), 1_800);
        assert_eq!(secs("P1DT12H"), 86_400 + 12 * 3_600);
        assert_eq!(secs("PT1H30M15S"), 5_415);
        assert_eq!(secs("P2W"), 14 * 86_400);
        assert!(Timeout::parse("PT").is_err());
        assert!(Timeout::parse("P1H").is_err());
        assert!(Timeout::parse("PT5").is_err());
    }

    #[test]
    fn months_are_calendar_months() {
        let t = Timeout::parse("1 month").unwrap();
        let start = Utc.with_ymd_and_hms(2026, 1, 31, 0, 0, 0).unwrap();
        assert_eq!(
            t.after(start),
            Utc.with_ymd_and_hms(2026, 2, 28, 0, 0, 0).unwrap()
        );
    }

    #[test]
    fn rejects_garbage() {
        assert_eq!(Timeout::parse("  "), Err(DurationError::Empty));
        assert!(matches!(
            Timeout::parse("soon"),
            Err(DurationError::Invalid(_))
        ));
        assert!(matches!(
            Timeout::parse("3 parsecs"),
            Err(DurationError::UnknownUnit { .. })
        ));
        assert!(matches!(
            Timeout::parse("5"),
            Err(DurationError::Invalid(_))
        ));
    }

    #[test]
    fn config_durations() {
        assert_eq!(parse_seconds("72h").unwrap(), 72 * 3_600);
        assert_eq!(parse_seconds("7d").unwrap(), 7 * 86_400);
        assert_eq!(parse_seconds("1s").unwrap(), 1);
        assert_eq!(parse_seconds("10m").unwrap(), 600);
        assert!(parse_seconds("1 month").is_err());
    }

    #[test]
    fn after_adds_fixed_part() {
        let start = Utc.with_ymd_and_hms(2026, 3, 1, 10, 0, 0).unwrap();
        let t = Timeout::parse("1hour").unwrap();
        assert_eq!(
            t.after(start),
            Utc.with_ymd_and_hms(2026, 3, 1, 11, 0, 0).unwrap()
        );
    }
}
