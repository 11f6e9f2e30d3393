//! Celery's `rate_limit` values, parsed as `celery.utils.time.rate` does.
//!
//! A rate limit is a number of tasks per second, minute or hour: `"10/m"`,
//! `"100/h"`, `"0.5/s"`, or a bare number (`"20"`, `20`) meaning per second.
//! `"0"`, `0` and `""` mean unlimited, as in Celery. Parsed when the config
//! is loaded, so `celeriac check-config` rejects what Celery would choke on at
//! the first task (`"10/d"`, `"fast"`); negative and non-finite rates are
//! refused too, where Celery would build a nonsensical bucket.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A `rate_limit` that is not Celery's `N[/s|/m|/h]`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid rate limit {text:?}: expected a number of tasks, optionally followed by /s, /m or /h (e.g. \"10/m\")")]
pub struct RateError {
    /// The value as written.
    pub text: String,
}

/// A parsed `rate_limit`: the text as written and the tasks per second it allows.
#[derive(Debug, Clone, PartialEq)]
pub struct RateLimit {
    text: String,
    per_second: f64,
}

impl RateLimit {
    /// Parse Celery's rate syntax.
    pub fn parse(text: &str) -> Result<RateLimit, RateError> {
        let bad = || RateError { text: text.to_string() };
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Ok(RateLimit { text: text.to_string(), per_second: 0.0 });
        }
        // Celery: `ops, _, modifier = r.partition('/')`, the modifier defaulting to seconds.
        let (ops, modifier) = trimmed.split_once('/').unwrap_or((trimmed, "s"));
        let divisor = match modifier.trim() {
            "" | "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        let n: f64 = ops.trim().parse().map_err(|_| bad())?;
        if !n.is_finite() || n < 0.0 {
            return Err(bad());
        }
        Ok(RateLimit { text: text.to_string(), per_second: n / divisor })
    }

    /// A limit of `per_second` tasks per second (`0`: unlimited).
    pub fn per_second(per_second: f64) -> Result<RateLimit, RateError> {
        RateLimit::parse(&per_second.to_string())
    }

    /// Tasks per second, `None` when unlimited.
    pub fn tasks_per_second(&self) -> Option<f64> {
        (self.per_second > 0.0).then_some(self.per_second)
    }
}

impl fmt::Display for RateLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl<'de> Deserialize<'de> for RateLimit {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            Number(f64),
        }
        let raw = Raw::deserialize(d).map_err(|_| {
            serde::de::Error::custom("a rate limit is a string such as \"10/m\" or a number of tasks per second")
        })?;
        match raw {
            Raw::Text(t) => RateLimit::parse(&t),
            Raw::Number(n) => RateLimit::per_second(n),
        }
        .map_err(serde::de::Error::custom)
    }
}

impl Serialize for RateLimit {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(text: &str) -> Option<f64> {
        RateLimit::parse(text).unwrap().tasks_per_second()
    }

    #[test]
    fn a_rate_per_minute_or_hour_is_converted_to_tasks_per_second() {
        assert_eq!(rate("10/m"), Some(10.0 / 60.0));
        assert_eq!(rate("2/h"), Some(2.0 / 3600.0));
        assert_eq!(rate("0.5/s"), Some(0.5));
        assert_eq!(rate("20/s"), Some(20.0));
    }

    #[test]
    fn a_bare_number_is_per_second() {
        assert_eq!(rate("20"), Some(20.0));
        assert_eq!(rate(" 3 "), Some(3.0));
        assert_eq!(rate("7/"), Some(7.0));
    }

    #[test]
    fn zero_and_empty_mean_unlimited() {
        assert_eq!(rate("0"), None);
        assert_eq!(rate("0/m"), None);
        assert_eq!(rate(""), None);
    }

    #[test]
    fn what_celery_cannot_parse_is_an_error_naming_the_value() {
        for bad in ["10/d", "fast", "/s", "-1/s", "inf", "NaN/m"] {
            let e = RateLimit::parse(bad).unwrap_err();
            assert!(e.to_string().contains(&format!("{bad:?}")), "{e}");
        }
    }

    #[test]
    fn a_number_in_the_config_is_tasks_per_second() {
        #[derive(Deserialize)]
        struct T {
            r: RateLimit,
        }
        let t: T = toml::from_str("r = 20").unwrap();
        assert_eq!(t.r.tasks_per_second(), Some(20.0));
        let t: T = toml::from_str("r = \"10/m\"").unwrap();
        assert_eq!(t.r.to_string(), "10/m");
        assert!(toml::from_str::<T>("r = \"10/d\"").is_err());
    }
}
