//! The example task component. Built as `target/tasks/tasks.wasm`, it serves
//! the Celery tasks `tasks.add`, `tasks.mul`, ... listed in `export_tasks!` at
//! the bottom.
//!
//! Besides Celery's first-steps tasks it has tasks that misbehave on purpose
//! (`panic`, `spin`, `hog`, `deep`, `open_file`), used to test the worker's
//! sandbox and limits.

use std::hint::black_box;

use celeriac_sdk::{TaskError, task};
use serde_json::json;

/// `add(x, y)`: the sum of two integers. Python's ints never wrap around;
/// these are 64-bit, so a sum that does not fit raises `OverflowError`.
#[task]
fn add(x: i64, y: i64) -> Result<i64, TaskError> {
    x.checked_add(y).ok_or_else(|| overflow(x, "+", y))
}

/// `mul(x, y)`: the product of two integers (`OverflowError` past 64 bits).
#[task]
fn mul(x: i64, y: i64) -> Result<i64, TaskError> {
    x.checked_mul(y).ok_or_else(|| overflow(x, "*", y))
}

/// Python's `OverflowError` for an integer result that does not fit 64 bits.
fn overflow(x: i64, op: &str, y: i64) -> TaskError {
    TaskError::new("OverflowError", format!("int too large: {x} {op} {y} does not fit in a 64-bit integer"))
}

/// `xsum(numbers)`: the sum of a list of numbers. Like Python's `sum`, a list
/// of integers sums to an integer; any float makes the result a float.
#[task]
fn xsum(numbers: Vec<serde_json::Number>) -> Result<serde_json::Value, TaskError> {
    let ints: Option<Vec<i64>> = numbers.iter().map(serde_json::Number::as_i64).collect();
    match ints {
        Some(ints) => match ints.iter().try_fold(0i64, |a, b| a.checked_add(*b)) {
            Some(sum) => Ok(json!(sum)),
            None => Err(TaskError::new("OverflowError", "int too large: the sum does not fit in a 64-bit integer")),
        },
        None => Ok(json!(numbers.iter().filter_map(serde_json::Number::as_f64).sum::<f64>())),
    }
}

/// `counter()`: increments a global counter and returns it. Every call runs
/// in a fresh instance, so this always returns 1: nothing survives a call.
#[task]
fn counter() -> u64 {
    static COUNT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    COUNT.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1
}

/// `repeat(text, times)`: `text` repeated `times` times (a way to return a
/// large result).
#[task]
fn repeat(text: String, times: usize) -> String {
    text.repeat(times)
}

/// `div(a, b)`: `a / b`; raises `ZeroDivisionError` when `b` is 0.
#[task]
fn div(a: f64, b: f64) -> Result<f64, TaskError> {
    if b == 0.0 {
        return Err(TaskError::new("ZeroDivisionError", "division by zero"));
    }
    Ok(a / b)
}

/// `fail(msg)`: raises `ValueError(msg)`.
#[task]
fn fail(msg: String) -> Result<(), TaskError> {
    Err(TaskError::value_error(msg))
}

/// `panic(msg)`: panics with `msg`, so the component traps.
#[task]
fn panic(msg: String) {
    panic!("{msg}");
}

/// `spin()`: loops forever (until the worker's time or fuel limit).
#[task]
fn spin() {
    let mut n: u64 = 0;
    loop {
        n = black_box(n.wrapping_add(1));
    }
}

/// `hog()`: allocates memory without bound (until the worker's memory limit).
#[task]
fn hog() -> usize {
    const MIB: usize = 1 << 20;
    let mut chunks: Vec<Vec<u8>> = Vec::new();
    loop {
        let mut chunk = vec![0u8; MIB];
        // Touch every page so the memory is really used.
        for i in (0..MIB).step_by(4096) {
            chunk[i] = 1;
        }
        chunks.push(black_box(chunk));
        black_box(&chunks);
    }
}

/// `deep()`: recurses without bound (until the stack is exhausted).
#[task]
fn deep() -> u64 {
    recurse(black_box(0))
}

#[inline(never)]
#[allow(unconditional_recursion)]
fn recurse(depth: u64) -> u64 {
    // A stack buffer used after the call keeps this from becoming a loop.
    let frame = black_box([depth; 16]);
    let below = recurse(black_box(depth + 1));
    black_box(frame[(depth % 16) as usize]).wrapping_add(below)
}

/// `sleep(seconds)`: sleeps on the WASI clock (burns no fuel); returns `seconds`.
#[task]
fn sleep(seconds: f64) -> Result<f64, TaskError> {
    let duration = std::time::Duration::try_from_secs_f64(seconds)
        .map_err(|e| TaskError::value_error(format!("sleep length must be a non-negative number: {e}")))?;
    std::thread::sleep(duration);
    Ok(seconds)
}

/// `progress(n)`: reports `PROGRESS` states `{current: i, total: n}` for
/// `i` in `0..n` (logging each), then returns `n`.
#[task]
fn progress(n: u32) -> u32 {
    for i in 0..n {
        celeriac_sdk::update_state("PROGRESS", &json!({"current": i + 1, "total": n}));
        celeriac_sdk::info!("progress {}/{}", i + 1, n);
    }
    n
}

/// `context()`: the request context (id, name, retries, headers, ...).
#[task]
fn context() -> celeriac_sdk::Request {
    celeriac_sdk::request()
}

/// `open_file(path)`: reads a file. The sandbox grants no filesystem, so this
/// raises `OSError`.
#[task]
fn open_file(path: String) -> Result<String, TaskError> {
    std::fs::read_to_string(&path).map_err(|e| TaskError::new("OSError", format!("{e}: '{path}'")))
}

/// `log(msg)`: writes `msg` to stdout and, at level info, to the worker's
/// log; returns null.
#[task]
fn log(msg: String) {
    println!("{msg}");
    celeriac_sdk::log::info(&msg);
}

/// `flaky(n)`: fails with `ValueError` until it has been retried `n` times,
/// asking for a retry in 0.1 s each time; then returns the number of retries.
/// Declares `max_retries = 3`: `flaky(5)` ends in `FAILURE` (`ValueError`).
#[task(max_retries = 3, default_retry_delay = 1)]
fn flaky(n: u32, countdown: Option<f64>) -> Result<u32, celeriac_sdk::Raise> {
    let retries = celeriac_sdk::request().retries;
    if retries < n {
        let why = TaskError::value_error(format!("flaky: attempt {} of {}", retries + 1, n + 1));
        return Err(celeriac_sdk::Retry::after(countdown.unwrap_or(0.1)).because(why).into());
    }
    Ok(retries)
}

/// `autoflaky(n)`: raises `ValueError` until it has been retried `n` times;
/// `autoretry_for = ["ValueError"]` with a 1 s backoff (no jitter) retries it.
#[task(autoretry_for = ["ValueError"], max_retries = 5, retry_backoff = 1, retry_backoff_max = 1, retry_jitter = false)]
fn autoflaky(n: u32) -> Result<u32, TaskError> {
    let retries = celeriac_sdk::request().retries;
    if retries < n {
        return Err(TaskError::value_error(format!("autoflaky: attempt {}", retries + 1)));
    }
    Ok(retries)
}

/// `expected_fail()`: raises `ExpectedException('Task expected to fail',
/// 'test')`, an exception with two arguments, as Celery's integration tests do.
#[task]
fn expected_fail() -> Result<(), TaskError> {
    Err(TaskError::new("ExpectedException", "").with_args(["Task expected to fail", "test"]))
}

/// `limited()`: returns `true`; declares `rate_limit = "2/s"`, so a burst of
/// calls starts at most two a second on one worker.
#[task(rate_limit = "2/s")]
fn limited() -> bool {
    true
}

/// `spawn(x, y)`: sends `tasks.add(x, y)` as a child task and returns the
/// child's id, as Celery's `return add.delay(x, y).id`. Needs the worker's
/// `send_tasks` grant.
#[task]
fn spawn(x: i64, y: i64) -> Result<String, TaskError> {
    celeriac_sdk::signature("tasks.add").args((x, y)).delay()
}

/// `spawn_context()`: sends `tasks.context` (which returns its own request)
/// and returns its id: the child's `root_id` and `parent_id` can be checked.
#[task]
fn spawn_context() -> Result<String, TaskError> {
    celeriac_sdk::signature("tasks.context").delay()
}

/// `replaced(x)`: replaces itself with `add(x, 1) | mul(10)`, as Celery's
/// `raise self.replace(add.s(x, 1) | mul.s(10))`: the client waiting on this
/// task gets `(x + 1) * 10`. Needs the `send_tasks` grant.
#[task]
fn replaced(x: i64) -> Result<(), TaskError> {
    use celeriac_sdk::{chain, signature};
    celeriac_sdk::replace(&chain([signature("tasks.add").args((x, 1)), signature("tasks.mul").args((10,))]))
}

/// `fanout(n)`: sends the chord `[add(i, i) for i in 0..n] | xsum()` and returns
/// the id of its body, whose result is the sum. Needs the `send_tasks` grant.
#[task]
fn fanout(n: i64) -> Result<String, TaskError> {
    use celeriac_sdk::{chord, signature};
    chord((0..n).map(|i| signature("tasks.add").args((i, i))), signature("tasks.xsum")).delay()
}

/// `crunch(seconds)`: works in rounds of 10 ms for `seconds`, unless the call's
/// soft time limit passes first: then it stops and returns what it has, as a
/// Celery task catching `SoftTimeLimitExceeded` would.
#[task]
fn crunch(seconds: f64) -> serde_json::Value {
    let start = std::time::Instant::now();
    let mut rounds = 0u64;
    while start.elapsed().as_secs_f64() < seconds {
        if celeriac_sdk::soft_time_left().is_some_and(|left| left <= 0.0) {
            return json!({"partial": true, "rounds": rounds});
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
        rounds += 1;
    }
    json!({"partial": false, "rounds": rounds})
}

/// `give_up()`: stops at once when it has a soft time limit, raising Celery's
/// `SoftTimeLimitExceeded`; returns `"no limit"` otherwise.
#[task]
fn give_up() -> Result<&'static str, TaskError> {
    match celeriac_sdk::soft_time_left() {
        Some(_) => Err(TaskError::soft_time_limit_exceeded()),
        None => Ok("no limit"),
    }
}

/// `where_from()`: the message's `delivery_info` (Celery's `self.request.delivery_info`).
#[task]
fn where_from() -> serde_json::Map<String, serde_json::Value> {
    celeriac_sdk::delivery_info()
}

/// `ignored()`: Celery's `raise Ignore()`: no state is stored for it.
#[task]
fn ignored() {
    celeriac_sdk::ignore();
}

/// `bounce()`: rejected with requeue on its first delivery (Celery's `raise
/// Reject(requeue=True)`), then `"redelivered"` when it comes back. Declares
/// `acks_late`, which Reject needs.
#[task(acks_late = true)]
fn bounce() -> &'static str {
    if celeriac_sdk::delivery_info().get("redelivered") == Some(&json!(true)) {
        return "redelivered";
    }
    celeriac_sdk::reject(true);
    "rejected"
}

/// `grow_chord(x)`: inside a chord, adds `add(x, 100)` to it (Celery's
/// `self.add_to_chord`) and returns `x`. Needs the `send_tasks` grant.
#[task]
fn grow_chord(x: i64) -> Result<i64, TaskError> {
    celeriac_sdk::add_to_chord(&celeriac_sdk::signature("tasks.add").args((x, 100)))?;
    Ok(x)
}

/// `routed()`: declares `queue = "slow"`, so the chain steps and callbacks a
/// worker sends to it go there; returns the queue it came through.
#[task(queue = "slow")]
fn routed() -> String {
    let info = celeriac_sdk::delivery_info();
    info.get("routing_key").and_then(|k| k.as_str()).unwrap_or_default().to_string()
}

celeriac_sdk::export_tasks!(
    add,
    mul,
    xsum,
    div,
    fail,
    panic,
    spin,
    hog,
    deep,
    sleep,
    progress,
    context,
    open_file,
    log,
    counter,
    repeat,
    flaky,
    autoflaky,
    expected_fail,
    limited,
    spawn,
    replaced,
    fanout,
    crunch,
    give_up,
    where_from,
    ignored,
    bounce,
    grow_chord,
    routed,
    spawn_context
);
