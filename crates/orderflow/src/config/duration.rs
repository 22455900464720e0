//! Durations in configuration: written as text (`250ms`, `30s`, `10m`, `72h`, `7d`,
//! `PT1H`), held as [`Duration`] once read, and written back in the shortest exact unit.

use std::time::Duration;

use serde::de::{self, Visitor};
use serde::{Deserializer, Serializer};

/// Parses a duration as configuration writes it. The error says what was wrong with the
/// text; the caller names the key.
pub fn parse(value: &str) -> Result<Duration, String> {
    if let Some(ms) = value.trim().strip_suffix("ms")
        && let Ok(ms) = ms.trim().parse::<u64>()
    {
        return Ok(Duration::from_millis(ms));
    }
    oms::duration::parse_seconds(value)
        .map(Duration::from_secs)
        .map_err(|e| e.to_string())
}

/// `d` in the largest unit that holds it exactly: `250ms`, `30s`, `10m`, `72h` stays `3d`.
pub fn render(d: Duration) -> String {
    if d.subsec_nanos() != 0 || d.is_zero() {
        return format!("{}ms", d.as_millis());
    }
    let s = d.as_secs();
    for (unit, size) in [("d", 86_400), ("h", 3_600), ("m", 60)] {
        if s.is_multiple_of(size) {
            return format!("{}{unit}", s / size);
        }
    }
    format!("{s}s")
}

/// `#[serde(with = "duration")]` for a [`Duration`] written as text.
pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&render(*d))
}

/// See [`serialize`]. A bare number is seconds (`ORDERFLOW_WORKER__LEASE=30` arrives as
/// one). A bad value is an error naming the text; figment adds the key.
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    struct Text;
    impl Visitor<'_> for Text {
        type Value = Duration;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a duration such as \"30s\", \"10m\" or \"72h\", or seconds")
        }
        fn visit_str<E: de::Error>(self, text: &str) -> Result<Duration, E> {
            parse(text).map_err(|reason| E::custom(format!("invalid duration {text:?}: {reason}")))
        }
        fn visit_u64<E: de::Error>(self, s: u64) -> Result<Duration, E> {
            Ok(Duration::from_secs(s))
        }
        fn visit_i64<E: de::Error>(self, s: i64) -> Result<Duration, E> {
            u64::try_from(s)
                .map(Duration::from_secs)
                .map_err(|_| E::custom(format!("invalid duration {s}: it is negative")))
        }
    }
    d.deserialize_any(Text)
}

/// `#[serde(with = "duration::list")]` for a list of durations (`["0s", "5s", "5m"]`).
pub mod list {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Each element as [`super::render`] writes it.
    pub fn serialize<S: Serializer>(list: &[Duration], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(list.iter().map(|d| super::render(*d)))
    }

    /// Each element as [`super::deserialize`] reads it (text or seconds).
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Duration>, D::Error> {
        #[derive(Deserialize)]
        struct One(#[serde(with = "super")] Duration);
        let list: Vec<One> = Vec::deserialize(d)?;
        Ok(list.into_iter().map(|o| o.0).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_round_trips() {
        for (text, d) in [
            ("250ms", Duration::from_millis(250)),
            ("30s", Duration::from_secs(30)),
            ("10m", Duration::from_secs(600)),
            ("72h", Duration::from_secs(3 * 86_400)),
            ("7d", Duration::from_secs(7 * 86_400)),
        ] {
            assert_eq!(parse(text).unwrap(), d, "{text}");
            assert_eq!(parse(&render(d)).unwrap(), d, "{text}");
        }
        assert_eq!(render(Duration::from_secs(90)), "90s");
        assert_eq!(parse("PT1H").unwrap(), Duration::from_secs(3600));
        assert!(parse("5 parsecs").is_err());
    }
}
