//! Durations as the configuration writes them (`250ms`, `30s`, `5m`, `1h`, `2d`, `1h 30m`),
//! read by humantime: one syntax and one error message for every key that takes one.

use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// Parses a duration; the error says what was wrong and what is expected.
pub fn parse(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim()).map_err(|e| {
        format!(
            "\"{text}\" is not a duration ({e}): expected a number with a unit, such as \"30s\", \"5m\" or \"1h\""
        )
    })
}

/// Parses a duration that must not be zero.
pub fn parse_positive(text: &str) -> Result<Duration, String> {
    match parse(text)? {
        d if d.is_zero() => Err(format!(
            "\"{text}\" must be longer than zero, such as \"30s\", \"5m\" or \"1h\""
        )),
        d => Ok(d),
    }
}

/// For `#[serde(deserialize_with = "crate::duration::deserialize")]`.
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    parse(&text).map_err(serde::de::Error::custom)
}

/// As [`deserialize`], refusing zero.
pub fn deserialize_positive<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    parse_positive(&text).map_err(serde::de::Error::custom)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_units_operators_write_are_read() {
        assert_eq!(parse("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse(" 5m "), Ok(Duration::from_secs(300)));
        assert_eq!(parse("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse("2d"), Ok(Duration::from_secs(172_800)));
        assert_eq!(parse("1h 30m"), Ok(Duration::from_secs(5400)));
    }

    #[test]
    fn anything_else_is_refused_with_what_is_expected() {
        for bad in ["5", "m", "", "5 fortnights", "-5s", "5s5", "1e3s"] {
            let e = parse(bad).expect_err(bad);
            assert!(e.contains("expected a number with a unit"), "{e}");
        }
        assert!(parse_positive("0s")
            .expect_err("zero")
            .contains("longer than zero"));
        assert_eq!(parse_positive("1s"), Ok(Duration::from_secs(1)));
    }
}
