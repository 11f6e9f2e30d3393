//! Timestamps as Celery writes and reads them.
//!
//! Celery writes `eta`, `expires` and `date_done` with Python's
//! `datetime.isoformat()` on an aware UTC datetime:
//! `2026-11-27T05:11:00.770297+00:00`, and without the fraction when the
//! microseconds are zero (`2030-01-02T03:04:05+00:00`). Readers must also
//! accept what other producers write: `Z`, other offsets, a space instead of
//! `T`, and naive times (taken as UTC, which is Celery's default timezone).

use chrono::{DateTime, NaiveDateTime, SecondsFormat, Timelike, Utc};

/// Python `datetime.isoformat()` of a UTC time: microsecond precision
/// (nanoseconds are truncated), fraction omitted when zero, `+00:00` suffix.
pub fn isoformat(dt: &DateTime<Utc>) -> String {
    let micros = dt.nanosecond() / 1_000 % 1_000_000;
    let base = dt.format("%Y-%m-%dT%H:%M:%S");
    if micros == 0 { format!("{base}+00:00") } else { format!("{base}.{micros:06}+00:00") }
}

/// Parse an ISO-8601 timestamp as Celery peers write it. Returns `None` when
/// the text is not a recognisable timestamp.
///
/// Accepted: `2030-01-02T03:04:05+00:00`, fractions of any length, `Z`/`z`,
/// any `±HH:MM` / `±HHMM` offset (converted to UTC), `T` or space between
/// date and time, and naive times (read as UTC).
pub fn parse_datetime(text: &str) -> Option<DateTime<Utc>> {
    let s = text.trim();
    if let Ok(dt) = DateTime::parse_from_rfc3339(s) {
        return Some(dt.with_timezone(&Utc));
    }
    for fmt in ["%Y-%m-%dT%H:%M:%S%.f%z", "%Y-%m-%d %H:%M:%S%.f%z", "%Y-%m-%dT%H:%M%z"] {
        if let Ok(dt) = DateTime::parse_from_str(s, fmt) {
            return Some(dt.with_timezone(&Utc));
        }
    }
    for fmt in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M"] {
        if let Ok(naive) = NaiveDateTime::parse_from_str(s, fmt) {
            return Some(naive.and_utc());
        }
    }
    None
}

/// RFC 3339 with microseconds and `Z`, for logs and CLI output.
pub fn display(dt: &DateTime<Utc>) -> String {
    dt.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// Seconds since the Unix epoch, as kombu and Celery stamp times.
pub fn now_secs() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32, us: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, s).unwrap() + chrono::Duration::microseconds(i64::from(us))
    }

    #[test]
    fn isoformat_like_python() {
        assert_eq!(isoformat(&utc(2026, 11, 27, 5, 11, 0, 770297)), "2026-11-27T05:11:00.770297+00:00");
        assert_eq!(isoformat(&utc(2030, 1, 2, 3, 4, 5, 0)), "2030-01-02T03:04:05+00:00");
        assert_eq!(isoformat(&utc(2026, 1, 1, 0, 0, 0, 50)), "2026-01-01T00:00:00.000050+00:00");
        // Nanoseconds are truncated, not rounded (Python has no nanoseconds).
        let ns = utc(2026, 1, 1, 0, 0, 0, 0) + chrono::Duration::nanoseconds(999);
        assert_eq!(isoformat(&ns), "2026-01-01T00:00:00+00:00");
    }

    #[test]
    fn parse_variants() {
        let want = utc(2026, 11, 27, 5, 10, 57, 996222);
        for s in [
            "2026-11-27T05:10:57.996222+00:00",
            "2026-11-27T05:10:57.996222Z",
            "2026-11-27T05:10:57.996222",
            "2026-11-27 05:10:57.996222",
            "2026-11-27T06:10:57.996222+01:00",
            "2026-11-27T06:10:57.996222+0100",
            "  2026-11-27T05:10:57.996222+00:00 ",
        ] {
            assert_eq!(parse_datetime(s), Some(want), "{s}");
        }
        assert_eq!(parse_datetime("2030-01-02T03:04:05+00:00"), Some(utc(2030, 1, 2, 3, 4, 5, 0)));
        assert_eq!(parse_datetime("2030-01-02T03:04:05"), Some(utc(2030, 1, 2, 3, 4, 5, 0)));
        assert_eq!(parse_datetime("2026-01-01T00:00:00.000000+00:00"), Some(utc(2026, 1, 1, 0, 0, 0, 0)));
        assert_eq!(parse_datetime("not a date"), None);
        assert_eq!(parse_datetime(""), None);
        assert_eq!(parse_datetime("2026-13-45T00:00:00"), None);
    }

    #[test]
    fn roundtrip() {
        let t = utc(2026, 11, 27, 5, 12, 3, 307704);
        assert_eq!(parse_datetime(&isoformat(&t)), Some(t));
        assert_eq!(display(&t), "2026-11-27T05:12:03.307704Z");
    }
}

/// `now` plus `seconds` (a Celery countdown), or `None` when the number is not
/// finite or the time would be out of range (never panics on client input).
pub fn after_seconds(now: chrono::DateTime<chrono::Utc>, seconds: f64) -> Option<chrono::DateTime<chrono::Utc>> {
    if !seconds.is_finite() || seconds.abs() > 1e12 {
        return None;
    }
    let delta = chrono::TimeDelta::try_milliseconds((seconds * 1000.0).round() as i64)?;
    now.checked_add_signed(delta)
}

#[cfg(test)]
mod after_tests {
    use super::after_seconds;

    #[test]
    fn countdowns_never_overflow() {
        let now = chrono::Utc::now();
        assert_eq!(after_seconds(now, 1.5), Some(now + chrono::TimeDelta::milliseconds(1500)));
        assert_eq!(after_seconds(now, 1e300), None);
        assert_eq!(after_seconds(now, f64::NAN), None);
        assert!(after_seconds(now, -30.0).is_some());
    }
}
