//! Retries, as Celery's `Task.retry` and `autoretry_for` make them.
//!
//! A task asks for a retry (`celeriac:task@0.2.0`'s `raised.retry`, Python's
//! `raise self.retry(exc=..., countdown=...)`), or raises an exception named
//! in its declared `autoretry_for`. Celery then, in the worker running it:
//! re-publishes the same message (same id, arguments, routing, callbacks and
//! errbacks; `retries` + 1; `eta` = now + countdown; `parent_id` = the task's
//! own id, as the captures in `tests/fixtures/redis/raw/03-retry.decoded.json`
//! show), stores `RETRY` with the exception and the retried task as the only
//! child, sends `task-retried` and logs `Task tasks.x[id] retry: Retry in 1s:
//! ValueError('…')`. Once `retries >= max_retries` it raises the original
//! exception instead (or `MaxRetriesExceededError` when there was none),
//! which ends the task in `FAILURE`. This module holds the pure parts: the
//! decision, the countdown (with Celery's exponential backoff), the message,
//! and the texts; `request.rs` publishes and stores.

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::protocol::time::{isoformat, parse_datetime};
use crate::protocol::{ExceptionInfo, NewTask, TaskMessage, args_repr, kwargs_repr};
use crate::sandbox::{DeclaredOptions, RetryRequest, TaskFailure};

/// Celery's `Task.max_retries` default.
pub const DEFAULT_MAX_RETRIES: u32 = 3;
/// Celery's `Task.default_retry_delay` default, in seconds.
pub const DEFAULT_RETRY_DELAY: f64 = 180.0;
/// Celery's `Task.retry_backoff_max` default, in seconds.
pub const DEFAULT_RETRY_BACKOFF_MAX: u32 = 600;

/// Celery's `get_exponential_backoff_interval(factor, retries, maximum,
/// full_jitter)`: `min(maximum, factor * 2**retries)`, then with full jitter a
/// uniformly random whole number of seconds between 0 and that. `random` is
/// `[0, 1)` (ignored without jitter).
pub fn exponential_backoff(factor: u32, retries: u32, maximum: u32, full_jitter: bool, random: f64) -> u64 {
    let power = 2u64.checked_pow(retries).unwrap_or(u64::MAX);
    let countdown = u64::from(factor).saturating_mul(power).min(u64::from(maximum));
    if full_jitter {
        // random.randrange(countdown + 1)
        ((random.clamp(0.0, 1.0 - f64::EPSILON)) * (countdown as f64 + 1.0)).floor() as u64
    } else {
        countdown
    }
}

/// A random number in `[0, 1)` for the jitter.
pub fn random_unit() -> f64 {
    (uuid::Uuid::new_v4().as_u128() >> 75) as f64 / (1u64 << 53) as f64
}

/// The retry an exception raised by a task turns into when its type is in the
/// task's `autoretry_for` (`Exception` matches every exception a task
/// raises); `None` otherwise. With `retry_backoff` the countdown is Celery's
/// exponential backoff, else the task's `default_retry_delay` applies.
pub fn autoretry(failure: &TaskFailure, options: &DeclaredOptions, retries: u32, random: f64) -> Option<RetryRequest> {
    let matches =
        options.autoretry_for.iter().any(|n| n == &failure.exc_type || n == "Exception" || n == "BaseException");
    if !matches || failure.kind != crate::sandbox::FailureKind::Raised {
        return None;
    }
    let countdown = options.retry_backoff.map(|factor| {
        let maximum = options.retry_backoff_max.unwrap_or(DEFAULT_RETRY_BACKOFF_MAX);
        exponential_backoff(factor.max(1), retries, maximum, options.retry_jitter.unwrap_or(true), random) as f64
    });
    Some(RetryRequest { countdown, eta: None, exc: Some(failure.clone()), max_retries: None })
}

/// The annotation a task runs with: the configured one (`task_annotations`,
/// `"*"` then the task's own), over what the component declares, as Celery's
/// annotations override a task class's attributes.
pub fn annotation_over(mut a: crate::config::Annotation, declared: &DeclaredOptions) -> crate::config::Annotation {
    if a.rate_limit.is_none() {
        // Checked when the component loaded (`sandbox::declared::check`).
        a.rate_limit = declared.rate_limit.as_deref().and_then(|r| crate::config::RateLimit::parse(r).ok());
    }
    a.time_limit = a.time_limit.or(declared.time_limit);
    a.soft_time_limit = a.soft_time_limit.or(declared.soft_time_limit);
    a.acks_late = a.acks_late.or(declared.acks_late);
    a.ignore_result = a.ignore_result.or(declared.ignore_result);
    a
}

/// When a retry runs: Celery's `Retry.when`, a number of seconds or a time.
#[derive(Debug, Clone, PartialEq)]
pub enum When {
    /// Seconds from now.
    Countdown(f64),
    /// An absolute time.
    At(DateTime<Utc>),
}

impl When {
    /// `Retry.humanize()`: `in 1s`, `in 0.5s`, `at 2025-01-01 12:00:00+00:00`.
    pub fn humanize(&self) -> String {
        match self {
            When::Countdown(c) => format!("in {}s", py_number(*c)),
            When::At(t) => format!("at {}", isoformat(t).replacen('T', " ", 1)),
        }
    }
}

/// A number as Python prints the int or float a task passed.
fn py_number(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 1e15 { format!("{}", n as i64) } else { format!("{n}") }
}

/// What the worker does with a retry request.
#[derive(Debug, Clone)]
pub enum Decision {
    /// Retry: publish `task`, store `RETRY` with `exc`.
    Retry {
        /// The message to publish.
        task: Box<NewTask>,
        /// When it runs.
        when: When,
        /// The exception stored with `RETRY` (the task's, or Celery's `Retry`).
        exc: ExceptionInfo,
        /// Its traceback.
        traceback: String,
        /// The `exc` the task gave, for the log line and event.
        cause: Option<ExceptionInfo>,
    },
    /// Retries exhausted (or the request unusable): the task fails with this.
    Fail {
        /// The exception.
        exc: ExceptionInfo,
        /// Its traceback.
        traceback: String,
    },
}

/// Decide a retry request of `msg` as Celery's `Task.retry` does.
pub fn decide(msg: &TaskMessage, r: &RetryRequest, options: &DeclaredOptions, now: DateTime<Utc>) -> Decision {
    let max_retries = r.max_retries.or(options.max_retries).unwrap_or(DEFAULT_MAX_RETRIES);
    let cause = r.exc.as_ref().map(TaskFailure::exception);
    let traceback = r.exc.as_ref().map(|f| f.traceback.clone()).unwrap_or_default();
    if msg.retries >= max_retries {
        return match cause {
            Some(exc) => Decision::Fail { exc, traceback },
            None => Decision::Fail {
                exc: ExceptionInfo::new(
                    "MaxRetriesExceededError",
                    vec![Value::String(format!(
                        "Can't retry {}[{}] args:{} kwargs:{}",
                        msg.task,
                        msg.id,
                        args_repr(&msg.args),
                        kwargs_repr(&msg.kwargs)
                    ))],
                    "celery.exceptions",
                ),
                traceback,
            },
        };
    }
    let when = match r.eta.as_deref() {
        Some(text) => match parse_datetime(text) {
            Some(at) => When::At(at),
            None => {
                let exc = ExceptionInfo::new(
                    "ValueError",
                    vec![Value::String(format!("retry eta is not an ISO-8601 time: {text:?}"))],
                    "builtins",
                );
                return Decision::Fail { exc, traceback };
            }
        },
        None => When::Countdown(
            r.countdown
                .filter(|c| c.is_finite())
                .unwrap_or(options.default_retry_delay.unwrap_or(DEFAULT_RETRY_DELAY))
                .max(0.0),
        ),
    };
    let eta = match &when {
        When::At(t) => *t,
        When::Countdown(c) => now + chrono::Duration::microseconds((c * 1e6).min(1e17) as i64),
    };
    let task = Box::new(retry_message(msg, eta));
    let retry_exc =
        ExceptionInfo::new("Retry", vec![Value::String(retry_text(&when, cause.as_ref()))], "celery.exceptions");
    let exc = cause.clone().unwrap_or(retry_exc);
    let mut traceback = traceback;
    traceback.push_str(&format!("celery.exceptions.Retry: {}\n", retry_text(&when, cause.as_ref())));
    Decision::Retry { task, when, exc, traceback, cause }
}

/// `str(Retry)`: `Retry in 1s: ValueError('transient 1')`, or `Retry in 180s`.
pub fn retry_text(when: &When, cause: Option<&ExceptionInfo>) -> String {
    match cause {
        Some(c) => format!("Retry {}: {}", when.humanize(), c.repr()),
        None => format!("Retry {}", when.humanize()),
    }
}

/// `repr(Retry)` as `task-retried` carries it: `Retry(Retry(...), ValueError('transient 1'), 1)`.
pub fn retry_event_repr(when: &When, cause: Option<&ExceptionInfo>) -> String {
    let when = match when {
        When::Countdown(c) => py_number(*c),
        When::At(t) => format!("datetime.datetime({})", isoformat(t)),
    };
    match cause {
        Some(c) => format!("Retry(Retry(...), {}, {when})", c.repr()),
        None => format!("Retry(Retry(...), None, {when})"),
    }
}

/// The retried message, as Celery's `Task.retry` sends it: the original
/// (`TaskMessage::to_new_task`: same id, arguments, routing, headers,
/// callbacks/errbacks/chain/chord) with `retries` + 1, the new `eta`, and
/// `parent_id` the task's own id; the `origin` property is the original
/// sender's, as the captured retry shows.
pub fn retry_message(msg: &TaskMessage, eta: DateTime<Utc>) -> NewTask {
    let mut t = msg.to_new_task();
    t.options.retries = msg.retries.saturating_add(1);
    t.options.eta = Some(eta);
    t.options.parent_id = Some(msg.id.clone());
    t.options.property_origin = msg.origin.clone();
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_celerys_exponential_interval() {
        // get_exponential_backoff_interval(factor, retries, maximum, full_jitter=False)
        assert_eq!(exponential_backoff(1, 0, 600, false, 0.0), 1);
        assert_eq!(exponential_backoff(1, 3, 600, false, 0.0), 8);
        assert_eq!(exponential_backoff(2, 3, 600, false, 0.0), 16);
        assert_eq!(exponential_backoff(1, 10, 600, false, 0.0), 600);
        assert_eq!(exponential_backoff(5, 100, 600, false, 0.0), 600);
        // randrange(countdown + 1): 0..=countdown
        assert_eq!(exponential_backoff(1, 3, 600, true, 0.0), 0);
        assert_eq!(exponential_backoff(1, 3, 600, true, 0.999_999), 8);
        assert_eq!(exponential_backoff(1, 3, 600, true, 0.5), 4);
        for _ in 0..100 {
            let r = random_unit();
            assert!((0.0..1.0).contains(&r));
        }
    }

    #[test]
    fn retry_texts_are_celerys() {
        let cause = ExceptionInfo::new("ValueError", vec![Value::from("transient 1")], "builtins");
        let when = When::Countdown(1.0);
        assert_eq!(retry_text(&when, Some(&cause)), "Retry in 1s: ValueError('transient 1')");
        assert_eq!(retry_event_repr(&when, Some(&cause)), "Retry(Retry(...), ValueError('transient 1'), 1)");
        assert_eq!(retry_text(&When::Countdown(0.5), None), "Retry in 0.5s");
    }
}
