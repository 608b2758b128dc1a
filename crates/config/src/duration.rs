//! Durations such as `90s`, `10m`, `2h` or `1h30m`.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A wall-clock budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct TimeLimit(u64);

impl TimeLimit {
    /// A budget of `secs` seconds.
    pub fn from_secs(secs: u64) -> Self {
        TimeLimit(secs)
    }
    /// The budget in seconds.
    pub fn as_secs(self) -> u64 {
        self.0
    }
}

impl fmt::Display for TimeLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (h, m, s) = (self.0 / 3600, self.0 / 60 % 60, self.0 % 60);
        if h > 0 {
            write!(f, "{h}h")?;
        }
        if m > 0 {
            write!(f, "{m}m")?;
        }
        if s > 0 || self.0 == 0 {
            write!(f, "{s}s")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for TimeLimit {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        parse_duration(s).map(TimeLimit)
    }
}

/// The longest budget accepted: 30 days.
pub const MAX_SECS: u64 = 30 * 86_400;

/// Parses `90s`, `10m`, `2h`, `1h30m` or a bare number of seconds into seconds, from 1 s to
/// [`MAX_SECS`].
pub fn parse_duration(text: &str) -> Result<u64, String> {
    let secs = parse_any(text)?;
    if secs == 0 {
        return Err(format!(
            "duration `{}` is zero: give at least 1s",
            text.trim()
        ));
    }
    if secs > MAX_SECS {
        return Err(format!(
            "duration `{}` is longer than 30 days (720h), the most autodl plans for",
            text.trim()
        ));
    }
    Ok(secs)
}

/// Seconds of any duration text; too large to count is [`u64::MAX`], which the range check
/// refuses.
fn parse_any(text: &str) -> Result<u64, String> {
    let bad = || format!("invalid duration `{text}`: use a number with s, m or h, such as `10m`");
    let text = text.trim();
    if text.is_empty() {
        return Err(bad());
    }
    if text.chars().all(|c| c.is_ascii_digit()) {
        return Ok(text.parse::<u64>().unwrap_or(u64::MAX));
    }
    let mut total = 0u64;
    let mut digits = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => return Err(bad()),
        };
        if digits.is_empty() {
            return Err(bad());
        }
        let n = digits.parse::<u64>().unwrap_or(u64::MAX);
        total = total.saturating_add(n.saturating_mul(unit));
        digits.clear();
    }
    if !digits.is_empty() {
        return Err(bad());
    }
    Ok(total)
}

impl Serialize for TimeLimit {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for TimeLimit {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units() {
        assert_eq!(parse_duration("90s"), Ok(90));
        assert_eq!(parse_duration("10m"), Ok(600));
        assert_eq!(parse_duration("1h30m"), Ok(5400));
        assert_eq!(parse_duration("45"), Ok(45));
        assert!(parse_duration("ten minutes").is_err());
        assert!(parse_duration("5").is_ok());
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("h").is_err());
    }

    #[test]
    fn zero_and_huge_budgets_are_refused() {
        for text in [
            "0",
            "0s",
            "0h0m",
            "18446744073709551615",
            "5124095576030432h",
            "99999999999999999999999s",
            "31d",
        ] {
            assert!(parse_duration(text).is_err(), "{text}");
        }
        assert_eq!(parse_duration("30d"), Ok(MAX_SECS));
    }

    #[test]
    fn displays_compactly() {
        assert_eq!(TimeLimit::from_secs(5400).to_string(), "1h30m");
        assert_eq!(TimeLimit::from_secs(600).to_string(), "10m");
    }
}
