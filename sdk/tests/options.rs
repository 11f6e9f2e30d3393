//! `#[task(...)]` options, retries and exceptions with several arguments, as
//! the component exports them (`celeriac:task@0.2.0`), run on the host.

use celeriac_sdk::__private::{Guest, Raised};
use celeriac_sdk::{Raise, Retry, TaskError, task};

#[task(
    rate_limit = "10/m",
    time_limit = 30,
    soft_time_limit = 2.5,
    max_retries = 7,
    default_retry_delay = 5,
    autoretry_for = ["ValueError", "KeyError"],
    retry_backoff = true,
    retry_backoff_max = 60,
    retry_jitter = false,
    acks_late = true,
    ignore_result = false,
    queue = "slow"
)]
fn declared() -> i64 {
    1
}

#[task]
fn plain() {}

#[task]
fn retrying(countdown: f64) -> Result<(), Raise> {
    Err(Retry::after(countdown).because(TaskError::value_error("later")).max_retries(2).into())
}

#[task]
fn two_args() -> Result<(), TaskError> {
    Err(TaskError::new("ExpectedException", "").with_args(["Task expected to fail", "test"]))
}

celeriac_sdk::export_tasks!(declared, plain, retrying, two_args);

#[test]
fn declared_options_are_exported() {
    let infos = <__CeleriacComponent as Guest>::tasks();
    let o = &infos[0].options;
    assert_eq!(infos[0].name, "declared");
    assert_eq!(o.rate_limit.as_deref(), Some("10/m"));
    assert_eq!((o.time_limit, o.soft_time_limit), (Some(30.0), Some(2.5)));
    assert_eq!((o.max_retries, o.default_retry_delay), (Some(7), Some(5.0)));
    assert_eq!(o.autoretry_for, ["ValueError", "KeyError"]);
    assert_eq!((o.retry_backoff, o.retry_backoff_max, o.retry_jitter), (Some(1), Some(60), Some(false)));
    assert_eq!((o.acks_late, o.ignore_result, o.queue.as_deref()), (Some(true), Some(false), Some("slow")));
    let p = &infos[1].options;
    assert_eq!((p.rate_limit.as_deref(), p.max_retries, p.autoretry_for.len()), (None, None, 0));
}

#[test]
fn a_retry_crosses_as_a_retry_request() {
    let Err(Raised::Retry(r)) = <__CeleriacComponent as Guest>::invoke("retrying".into(), "[1.5]".into(), "{}".into())
    else {
        panic!("expected a retry request")
    };
    assert_eq!((r.countdown, r.eta, r.max_retries), (Some(1.5), None, Some(2)));
    let exc = r.exc.expect("the cause");
    assert_eq!((exc.exc_type.as_str(), exc.message.as_str()), ("ValueError", "later"));
}

#[test]
fn exception_arguments_cross_as_json() {
    let Err(Raised::Exception(e)) = <__CeleriacComponent as Guest>::invoke("two_args".into(), "[]".into(), "{}".into())
    else {
        panic!("expected an exception")
    };
    assert_eq!(e.args, Some(vec![r#""Task expected to fail""#.to_string(), r#""test""#.to_string()]));
    assert_eq!(e.message, "('Task expected to fail', 'test')");
    let Err(Raised::Exception(e)) = <__CeleriacComponent as Guest>::invoke("nope".into(), "[]".into(), "{}".into())
    else {
        panic!("expected NotRegistered")
    };
    assert_eq!((e.exc_type.as_str(), e.args), ("NotRegistered", None));
}
