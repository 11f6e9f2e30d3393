//! The task options a component declares (`celeriac:task@0.2.0`'s
//! `task-options`, Python's `@app.task(rate_limit=..., max_retries=...)`),
//! checked once when the component loads.
//!
//! A component whose options Celery would refuse (a rate limit it cannot
//! parse, a negative or non-finite time) is refused with a reason naming the
//! task and the option, as a bad task name is: the worker never has to guess
//! what a malformed declaration meant while a task is running.

pub use super::exports::DeclaredOptions;
use crate::config::RateLimit;

/// Why a declaration is refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DeclaredError {
    /// `rate-limit` is not Celery's `N[/s|/m|/h]`.
    #[error("rate-limit {0}")]
    RateLimit(String),
    /// A time option is negative, zero where it must be positive, or not finite.
    #[error("{field} = {value}: expected a positive number of seconds")]
    Seconds {
        /// The WIT field name.
        field: &'static str,
        /// The declared value.
        value: f64,
    },
}

/// Check what a component declares for one task.
pub fn check(o: &DeclaredOptions) -> Result<(), DeclaredError> {
    if let Some(r) = &o.rate_limit {
        RateLimit::parse(r).map_err(|e| DeclaredError::RateLimit(e.to_string()))?;
    }
    let positive = [("time-limit", o.time_limit), ("soft-time-limit", o.soft_time_limit)];
    for (field, value) in positive {
        if let Some(v) = value
            && !(v.is_finite() && v > 0.0)
        {
            return Err(DeclaredError::Seconds { field, value: v });
        }
    }
    if let Some(v) = o.default_retry_delay
        && !(v.is_finite() && v >= 0.0)
    {
        return Err(DeclaredError::Seconds { field: "default-retry-delay", value: v });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn celery_rate_limits_and_positive_times_are_accepted() {
        let o = DeclaredOptions {
            rate_limit: Some("10/m".into()),
            time_limit: Some(5.0),
            soft_time_limit: Some(2.5),
            default_retry_delay: Some(0.0),
            ..DeclaredOptions::default()
        };
        assert_eq!(check(&o), Ok(()));
        assert_eq!(check(&DeclaredOptions::default()), Ok(()));
    }

    #[test]
    fn what_celery_would_refuse_is_refused_naming_the_option() {
        let bad_rate = DeclaredOptions { rate_limit: Some("10/d".into()), ..DeclaredOptions::default() };
        assert!(matches!(check(&bad_rate), Err(DeclaredError::RateLimit(_))));
        for t in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            let o = DeclaredOptions { time_limit: Some(t), ..DeclaredOptions::default() };
            let e = check(&o).unwrap_err().to_string();
            assert!(e.starts_with("time-limit = "), "{e}");
        }
        let o = DeclaredOptions { default_retry_delay: Some(-1.0), ..DeclaredOptions::default() };
        assert!(check(&o).is_err());
    }
}
