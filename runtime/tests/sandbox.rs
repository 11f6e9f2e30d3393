//! The sandbox against the real example component (`make tasks` builds it into
//! `target/tasks/tasks.wasm`): every outcome of a task call, every limit, and
//! every kind of bad component file.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use celeriac::sandbox::{
    ByteSize, CallResult, FailureKind, Invocation, LimitsOverride, Outcome, Request, Sandbox, SandboxConfig,
    TaskFailure,
};
use serde_json::{Value, json};

/// The built example components.
fn tasks_dir() -> PathBuf {
    let dir = std::env::var_os("CELERIAC_TASKS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/tasks"));
    assert!(dir.join("tasks.wasm").is_file(), "{}/tasks.wasm is missing: run `make tasks` first", dir.display());
    dir
}

/// A sandbox with the example component loaded; `f` adjusts the config.
async fn sandbox_with(f: impl FnOnce(&mut SandboxConfig)) -> (Sandbox, tempfile::TempDir) {
    let cache = tempfile::tempdir().unwrap();
    let mut cfg =
        SandboxConfig { cache_dir: Some(cache.path().to_path_buf()), max_concurrent: 4, ..Default::default() };
    f(&mut cfg);
    let sb = Sandbox::new(cfg).unwrap();
    sb.load(&tasks_dir()).await;
    assert!(sb.load_errors().is_empty(), "{:?}", sb.load_errors());
    (sb, cache)
}

async fn sandbox() -> (Sandbox, tempfile::TempDir) {
    sandbox_with(|_| {}).await
}

async fn call(sb: &Sandbox, task: &str, args: Value) -> CallResult {
    call_kw(sb, task, args, json!({})).await
}

async fn call_kw(sb: &Sandbox, task: &str, args: Value, kwargs: Value) -> CallResult {
    let inv = Invocation {
        args: args.to_string(),
        kwargs: kwargs.to_string(),
        request: Request { id: "test-id".into(), name: task.into(), ..Request::default() },
        ..Invocation::default()
    };
    sb.call(task, inv).await.unwrap()
}

fn success(r: &CallResult) -> &Value {
    match &r.outcome {
        Outcome::Success(v) => v,
        Outcome::Failure(f) => panic!("expected success, got {}\n{}", f.repr(), f.traceback),
        Outcome::Retry(r) => panic!("expected success, got a retry request {r:?}"),
    }
}

fn failure(r: &CallResult) -> &TaskFailure {
    match &r.outcome {
        Outcome::Failure(f) => f,
        Outcome::Success(v) => panic!("expected a failure, got {v}"),
        Outcome::Retry(r) => panic!("expected a failure, got a retry request {r:?}"),
    }
}

/// A limits override setting only some fields.
fn limits(time_limit: Option<f64>, fuel: Option<u64>, max_memory: Option<&str>) -> LimitsOverride {
    LimitsOverride { time_limit, fuel, max_memory: max_memory.map(|m| m.parse().unwrap()), ..Default::default() }
}

#[tokio::test]
async fn add_returns_its_result_and_a_report() {
    let (sb, _c) = sandbox().await;
    let r = call(&sb, "tasks.add", json!([4, 4])).await;
    assert_eq!(success(&r), &json!(8));
    assert!(r.report.fuel_consumed > 0);
    assert!(r.report.peak_memory > 0);
    assert_eq!(success(&call(&sb, "tasks.xsum", json!([[1, 2, 3]])).await), &json!(6));
    assert_eq!(success(&call_kw(&sb, "tasks.mul", json!([]), json!({"x": 6, "y": 7})).await), &json!(42));
}

#[tokio::test]
async fn guest_errors_keep_their_exception_type() {
    let (sb, _c) = sandbox().await;
    let f = failure(&call(&sb, "tasks.div", json!([1, 0])).await).clone();
    assert_eq!(
        (f.kind, f.exc_type.as_str(), f.message.as_str()),
        (FailureKind::Raised, "ZeroDivisionError", "division by zero")
    );
    assert!(f.traceback.contains("tasks.div"), "{}", f.traceback);
    assert!(f.traceback.ends_with("ZeroDivisionError: division by zero\n"), "{}", f.traceback);

    let f = failure(&call(&sb, "tasks.fail", json!(["bad input"])).await).clone();
    assert_eq!((f.exc_type.as_str(), f.message.as_str()), ("ValueError", "bad input"));
}

#[tokio::test]
async fn wrong_arguments_are_type_errors() {
    let (sb, _c) = sandbox().await;
    let f = failure(&call(&sb, "tasks.add", json!([4, "a"])).await).clone();
    assert_eq!(f.exc_type, "TypeError");
    assert_eq!(f.message, "add() argument 'y' must be int, not str");
    let f = failure(&call(&sb, "tasks.add", json!([1, 2, 3])).await).clone();
    assert_eq!(f.message, "add() takes 2 positional arguments but 3 were given");
    let f = failure(&call(&sb, "tasks.add", json!([1])).await).clone();
    assert_eq!(f.message, "add() missing 1 required positional argument: 'y'");
}

#[tokio::test]
async fn a_panic_is_a_failure_with_its_message_and_location() {
    let (sb, _c) = sandbox().await;
    let f = failure(&call(&sb, "tasks.panic", json!(["boom"])).await).clone();
    assert_eq!((f.kind, f.exc_type.as_str(), f.message.as_str()), (FailureKind::Panic, "WasmPanic", "boom"));
    assert!(f.traceback.contains("in tasks::panic"), "{}", f.traceback);
    assert!(f.traceback.contains("src/lib.rs:"), "{}", f.traceback);
    assert!(f.traceback.trim_end().ends_with("celeriac.exceptions.WasmPanic: boom"), "{}", f.traceback);
}

#[tokio::test]
async fn an_infinite_loop_is_stopped_at_its_time_limit() {
    let (sb, _c) = sandbox_with(|c| {
        c.task_limits.insert("tasks.spin".into(), limits(Some(0.5), None, None));
    })
    .await;
    let started = Instant::now();
    let r = call(&sb, "tasks.spin", json!([])).await;
    let elapsed = started.elapsed();
    let f = failure(&r);
    assert_eq!((f.kind, f.exc_type.as_str()), (FailureKind::TimeLimit, "TimeLimitExceeded"));
    assert!(f.traceback.contains("in tasks::spin"), "{}", f.traceback);
    // Stopped at the limit, not long after it (a generous bound: this is a
    // correctness check that the limit works, not a benchmark).
    assert!(elapsed >= Duration::from_millis(500) && elapsed < Duration::from_secs(3), "{elapsed:?}");
}

#[tokio::test]
async fn a_message_time_limit_only_tightens() {
    let (sb, _c) = sandbox().await;
    let inv =
        Invocation { args: "[]".into(), kwargs: "{}".into(), message_time_limit: Some(0.3), ..Invocation::default() };
    let r = sb.call("tasks.spin", inv).await.unwrap();
    assert_eq!(failure(&r).kind, FailureKind::TimeLimit);
    assert_eq!(r.limits.time_limit, Duration::from_millis(300));
}

#[tokio::test]
async fn fuel_runs_out() {
    let (sb, _c) = sandbox_with(|c| {
        c.task_limits.insert("tasks.spin".into(), limits(None, Some(50_000_000), None));
    })
    .await;
    let r = call(&sb, "tasks.spin", json!([])).await;
    let f = failure(&r);
    assert_eq!((f.kind, f.exc_type.as_str()), (FailureKind::OutOfFuel, "OutOfFuel"));
    assert_eq!(f.exc_module, "celeriac.exceptions");
    assert_eq!(r.report.fuel_consumed, 50_000_000);
}

#[tokio::test]
async fn unbounded_allocation_stops_at_the_memory_cap() {
    let (sb, _c) = sandbox_with(|c| {
        c.task_limits.insert("tasks.hog".into(), limits(None, None, Some("32MiB")));
    })
    .await;
    let r = call(&sb, "tasks.hog", json!([])).await;
    let f = failure(&r);
    assert_eq!((f.kind, f.exc_type.as_str()), (FailureKind::MemoryLimit, "MemoryError"));
    assert_eq!(f.exc_module, "builtins");
    assert!(f.traceback.contains("in tasks::hog"), "{}", f.traceback);
    assert!(r.report.peak_memory as u64 <= 32 << 20, "{}", r.report.peak_memory);
    assert!(r.report.peak_memory as u64 > 16 << 20, "{}", r.report.peak_memory);
}

#[tokio::test]
async fn unbounded_recursion_is_a_recursion_error() {
    // The Rust guest's frames live partly on its shadow stack in linear memory,
    // which overflows first with the default wasm stack...
    let (sb, _c) = sandbox().await;
    let f = failure(&call(&sb, "tasks.deep", json!([])).await).clone();
    assert_eq!((f.kind, f.exc_type.as_str()), (FailureKind::StackOverflow, "RecursionError"));
    assert!(f.traceback.contains("Previous line repeated"), "{}", f.traceback);
    assert!(f.traceback.contains("tasks::recurse"), "{}", f.traceback);
    // ...and with a small wasm stack the engine's own stack-overflow trap fires first.
    let (sb, _c) = sandbox_with(|c| c.limits.max_stack = ByteSize(32 * 1024).as_u64()).await;
    let f = failure(&call(&sb, "tasks.deep", json!([])).await).clone();
    assert_eq!((f.kind, f.exc_type.as_str()), (FailureKind::StackOverflow, "RecursionError"));
    assert!(f.message.contains("call stack exhausted"), "{}", f.message);
}

#[tokio::test]
async fn sleeping_burns_no_fuel_and_is_bounded_by_the_time_limit() {
    let (sb, _c) = sandbox_with(|c| {
        c.task_limits.insert("tasks.sleep".into(), limits(Some(0.3), None, None));
    })
    .await;
    let r = call(&sb, "tasks.sleep", json!([0.05])).await;
    assert_eq!(success(&r), &json!(0.05));
    assert!(r.report.fuel_consumed < 1_000_000, "{}", r.report.fuel_consumed);
    let started = Instant::now();
    let f = failure(&call(&sb, "tasks.sleep", json!([30])).await).clone();
    assert_eq!((f.kind, f.exc_type.as_str()), (FailureKind::TimeLimit, "TimeLimitExceeded"));
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
}

#[tokio::test]
async fn the_guest_has_no_filesystem() {
    let (sb, _c) = sandbox().await;
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
    for path in ["/etc/passwd", manifest, "Cargo.toml"] {
        let f = failure(&call(&sb, "tasks.open_file", json!([path])).await).clone();
        assert_eq!(f.exc_type, "OSError", "{path}: {}", f.message);
    }
}

#[tokio::test]
async fn no_state_survives_a_call() {
    let (sb, _c) = sandbox().await;
    for _ in 0..3 {
        assert_eq!(success(&call(&sb, "tasks.counter", json!([])).await), &json!(1));
    }
}

/// Reuse of `task`'s instance for up to `n` calls.
fn reuse(n: u32) -> LimitsOverride {
    LimitsOverride { max_calls_per_instance: Some(n), ..Default::default() }
}

#[tokio::test]
async fn an_instance_serves_max_calls_per_instance_calls_then_a_fresh_one_takes_over() {
    let (sb, _c) = sandbox_with(|c| {
        c.task_limits.insert("tasks.counter".into(), reuse(3));
    })
    .await;
    let mut seen = vec![];
    for _ in 0..7 {
        seen.push(success(&call(&sb, "tasks.counter", json!([])).await).clone());
    }
    assert_eq!(seen, [1, 2, 3, 1, 2, 3, 1].map(|n| json!(n)));
    // Only the task it is set for: another task of the component still starts afresh.
    let (sb, _c) = sandbox_with(|c| {
        c.task_limits.insert("tasks.add".into(), reuse(3));
    })
    .await;
    for _ in 0..3 {
        assert_eq!(success(&call(&sb, "tasks.counter", json!([])).await), &json!(1));
    }
}

#[tokio::test]
async fn the_sandbox_keeps_at_most_max_concurrent_idle_instances_dropping_the_oldest() {
    let (sb, _c) = sandbox_with(|c| {
        c.max_concurrent = 1;
        c.task_limits.insert("*".into(), reuse(10));
    })
    .await;
    assert_eq!(success(&call(&sb, "tasks.counter", json!([])).await), &json!(1));
    assert_eq!(success(&call(&sb, "tasks.counter", json!([])).await), &json!(2));
    // One idle instance in all: add's, kept now, takes counter's place.
    assert_eq!(success(&call(&sb, "tasks.add", json!([1, 2])).await), &json!(3));
    assert_eq!(success(&call(&sb, "tasks.counter", json!([])).await), &json!(1));
}

#[tokio::test]
async fn an_instance_holding_more_than_half_its_memory_cap_after_a_call_is_not_kept() {
    let (sb, _c) = sandbox_with(|c| {
        let o = LimitsOverride { max_memory: Some("64MiB".parse().unwrap()), ..reuse(10) };
        c.task_limits.insert("tasks.repeat".into(), o);
    })
    .await;
    let first = call(&sb, "tasks.repeat", json!(["x", 1000])).await.report.peak_memory;
    // A call that returns (its 9 MiB result is refused as too large) and
    // leaves more than 32 MiB behind (wasm memory never shrinks): dropped after it.
    let big = call(&sb, "tasks.repeat", json!(["x", 9 << 20])).await;
    assert!(failure(&big).message.contains("max_result_size"), "{}", failure(&big).message);
    assert!(big.report.peak_memory > 32 << 20, "{}", big.report.peak_memory);
    let after = call(&sb, "tasks.repeat", json!(["x", 1000])).await.report.peak_memory;
    assert_eq!(after, first, "the next call did not start in a fresh instance");
}

#[tokio::test]
async fn the_pool_has_room_for_as_many_idle_instances_as_running_calls() {
    let (sb, _c) = sandbox_with(|c| {
        c.max_concurrent = 4;
        c.task_limits.insert("*".into(), reuse(10));
    })
    .await;
    // Four calls of one task at once leave four idle instances; four calls of
    // another at once still find pool slots to instantiate in.
    for (task, args) in [("tasks.sleep", json!([0.2])), ("tasks.crunch", json!([0.2]))] {
        let calls = (0..4).map(|_| call(&sb, task, args.clone()));
        for r in futures_util::future::join_all(calls).await {
            success(&r);
            assert_eq!(r.report.reused, 0, "{task}");
        }
    }
}

#[tokio::test]
async fn hot_deploy_never_hands_a_kept_instance_of_the_old_version_to_the_new_one() {
    let dir = tempfile::tempdir().unwrap();
    let wasm = std::fs::read(tasks_dir().join("tasks.wasm")).unwrap();
    std::fs::write(dir.path().join("tasks.wasm"), &wasm).unwrap();
    let (sb, _c) = sandbox_with(|c| {
        c.task_limits.insert("tasks.counter".into(), reuse(10));
    })
    .await;
    sb.sync(dir.path()).await;
    assert_eq!(success(&call(&sb, "tasks.counter", json!([])).await), &json!(1));
    assert_eq!(success(&call(&sb, "tasks.counter", json!([])).await), &json!(2));
    // A new version: the same component with a custom section appended (id 0, size, name "v2").
    let mut v2 = wasm.clone();
    v2.extend_from_slice(&[0, 3, 2, b'v', b'2']);
    std::fs::write(dir.path().join("tasks.wasm"), &v2).unwrap();
    let report = sb.sync(dir.path()).await;
    assert_eq!(report.loaded.len(), 1, "{:?}", report.failed);
    assert_eq!(success(&call(&sb, "tasks.counter", json!([])).await), &json!(1));
}

#[tokio::test]
async fn a_kept_instance_gets_a_full_fuel_tank_and_time_limit_for_every_call() {
    let (sb, _c) = sandbox().await;
    let per_call = call(&sb, "tasks.repeat", json!(["x", 20000])).await.report.fuel_consumed;
    assert!(per_call > 0);
    // Fuel for three calls, time for one and a half: kept or not,
    // every call starts with both full.
    let (sb, _c) = sandbox_with(|c| {
        c.task_limits.insert("tasks.sleep".into(), LimitsOverride { time_limit: Some(0.3), ..reuse(100) });
    })
    .await;
    let (sb2, _c2) = sandbox_with(|c| {
        let o = LimitsOverride { fuel: Some(per_call * 3), ..reuse(100) };
        c.task_limits.insert("tasks.repeat".into(), o);
    })
    .await;
    for i in 0..5 {
        let r = call(&sb2, "tasks.repeat", json!(["x", 20000])).await;
        success(&r);
        let s = call(&sb, "tasks.sleep", json!([0.2])).await;
        assert_eq!(success(&s), &json!(0.2));
        // The same instance each time.
        assert_eq!((r.report.reused, s.report.reused), (i, i));
    }
}

#[tokio::test]
async fn a_kept_instance_lets_go_of_the_calls_state_sink_when_the_call_ends() {
    let (sb, _c) = sandbox_with(|c| {
        c.task_limits.insert("tasks.progress".into(), reuse(10));
    })
    .await;
    for i in 0..2 {
        let (tx, mut rx) = tokio::sync::watch::channel(None);
        let inv = Invocation { args: "[2]".into(), kwargs: "{}".into(), state_sink: Some(tx), ..Invocation::default() };
        let r = sb.call("tasks.progress", inv).await.unwrap();
        assert_eq!((success(&r), r.report.reused), (&json!(2), i));
        // The worker's publisher of PROGRESS states runs until the sink closes.
        rx.borrow_and_update();
        let closed = tokio::time::timeout(Duration::from_secs(5), rx.changed()).await;
        assert!(matches!(closed, Ok(Err(_))), "the sink is still open after the call: {closed:?}");
    }
}

#[tokio::test]
async fn an_instance_that_trapped_or_timed_out_is_never_called_again() {
    let (sb, _c) = sandbox_with(|c| {
        c.task_limits.insert("*".into(), LimitsOverride { time_limit: Some(0.3), ..reuse(100) });
    })
    .await;
    for _ in 0..3 {
        let r = call(&sb, "tasks.panic", json!(["boom"])).await;
        let f = failure(&r);
        assert_eq!((f.kind, f.message.as_str(), r.report.reused), (FailureKind::Panic, "boom", 0), "{}", f.traceback);
        // Stopped in wasm code (the epoch interrupt) and in a host call (sleep: the timer).
        for (task, args) in [("tasks.spin", json!([])), ("tasks.sleep", json!([30]))] {
            let r = call(&sb, task, args).await;
            assert_eq!((failure(&r).kind, r.report.reused), (FailureKind::TimeLimit, 0), "{task}");
        }
    }
    // A task that raised goes on in the same instance, as a Celery child goes on.
    for i in 0..2 {
        let r = call(&sb, "tasks.div", json!([1, 0])).await;
        assert_eq!((failure(&r).exc_type.as_str(), r.report.reused), ("ZeroDivisionError", i));
    }
}

#[tokio::test]
async fn the_next_task_runs_normally_after_each_bad_one() {
    let (sb, _c) = sandbox_with(|c| {
        c.task_limits.insert("*".into(), limits(Some(0.5), None, Some("32MiB")));
    })
    .await;
    for (task, args) in [
        ("tasks.panic", json!(["x"])),
        ("tasks.spin", json!([])),
        ("tasks.hog", json!([])),
        ("tasks.deep", json!([])),
        ("tasks.div", json!([1, 0])),
        ("tasks.add", json!(["a", "b"])),
    ] {
        assert!(matches!(call(&sb, task, args).await.outcome, Outcome::Failure(_)), "{task}");
        assert_eq!(success(&call(&sb, "tasks.add", json!([2, 3])).await), &json!(5), "after {task}");
    }
}

#[tokio::test]
async fn request_context_and_progress_states_reach_the_guest_and_back() {
    let (sb, _c) = sandbox().await;
    let r = call(&sb, "tasks.context", json!([])).await;
    let ctx = success(&r);
    assert_eq!((ctx["id"].as_str(), ctx["name"].as_str()), (Some("test-id"), Some("tasks.context")));

    let (tx, rx) = tokio::sync::watch::channel(None);
    let inv = Invocation { args: "[3]".into(), kwargs: "{}".into(), state_sink: Some(tx), ..Invocation::default() };
    let r = sb.call("tasks.progress", inv).await.unwrap();
    assert_eq!(success(&r), &json!(3));
    let last = rx.borrow().clone().expect("a PROGRESS state was reported");
    assert_eq!(last.state, "PROGRESS");
    assert_eq!(last.meta, json!({"current": 3, "total": 3}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_task_does_not_block_short_ones() {
    let (sb, _c) = sandbox_with(|c| {
        c.task_limits.insert("tasks.spin".into(), limits(Some(2.0), None, None));
    })
    .await;
    let sb = std::sync::Arc::new(sb);
    let spinner = {
        let sb = sb.clone();
        tokio::spawn(async move { call(&sb, "tasks.spin", json!([])).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    for i in 0..20 {
        assert_eq!(success(&call(&sb, "tasks.add", json!([i, 1])).await), &json!(i + 1));
    }
    assert!(!spinner.is_finished(), "all adds completed while the spinning task still ran");
    assert_eq!(failure(&spinner.await.unwrap()).kind, FailureKind::TimeLimit);
}

#[tokio::test]
async fn bad_files_are_reported_and_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let good = std::fs::read(tasks_dir().join("tasks.wasm")).unwrap();
    std::fs::create_dir_all(dir.path().join("billing")).unwrap();
    std::fs::write(dir.path().join("billing/invoices.wasm"), &good).unwrap();
    std::fs::write(dir.path().join("garbage.wasm"), b"this is not wasm at all").unwrap();
    // A valid core module: the magic number and version 1.
    std::fs::write(dir.path().join("core.wasm"), b"\0asm\x01\0\0\0").unwrap();
    // A valid but empty component: it exports nothing, so it serves no world of ours.
    std::fs::write(dir.path().join("empty.wasm"), b"\0asm\x0d\0\x01\0").unwrap();
    // A component cut in half.
    std::fs::write(dir.path().join("truncated.wasm"), &good[..good.len() / 2]).unwrap();

    let cache = tempfile::tempdir().unwrap();
    let sb = Sandbox::new(SandboxConfig { cache_dir: Some(cache.path().into()), ..Default::default() }).unwrap();
    sb.load(dir.path()).await;
    let reason = |name: &str| {
        sb.load_errors()
            .iter()
            .find(|e| e.path.ends_with(name))
            .map(|e| e.reason.clone())
            .unwrap_or_else(|| panic!("no load error for {name}: {:?}", sb.load_errors()))
    };
    assert!(reason("garbage.wasm").contains("not a WebAssembly file"));
    assert!(reason("core.wasm").contains("core WebAssembly module, not a component"));
    assert!(reason("empty.wasm").contains("does not target the celeriac:task/task-component world"));
    assert!(reason("truncated.wasm").contains("invalid component"));
    assert_eq!(sb.load_errors().len(), 4);
    // The good file still loaded, named after its path.
    assert_eq!(success(&call(&sb, "billing.invoices.add", json!([4, 4])).await), &json!(8));
    assert!(sb.task("tasks.add").is_none());
}

#[tokio::test]
async fn compiled_components_are_cached_on_disk() {
    let cache = tempfile::tempdir().unwrap();
    let cfg = SandboxConfig { cache_dir: Some(cache.path().into()), ..Default::default() };
    let first = Sandbox::new(cfg.clone()).unwrap();
    first.load(&tasks_dir()).await;
    assert!(!first.components()[0].from_cache);
    assert_eq!(std::fs::read_dir(cache.path()).unwrap().count(), 1);
    let second = Sandbox::new(cfg).unwrap();
    second.load(&tasks_dir()).await;
    assert!(second.components()[0].from_cache);
    assert_eq!(success(&call(&second, "tasks.add", json!([1, 1])).await), &json!(2));
    // An engine with other settings (no fuel) must not reuse the artifact.
    let other = Sandbox::new(SandboxConfig {
        cache_dir: Some(cache.path().into()),
        fuel_metering: false,
        ..Default::default()
    })
    .unwrap();
    other.load(&tasks_dir()).await;
    assert!(!other.components()[0].from_cache);
}

#[tokio::test]
async fn unknown_tasks_are_not_registered() {
    let (sb, _c) = sandbox().await;
    let err = sb.call("tasks.nope", Invocation::default()).await.unwrap_err();
    assert!(err.to_string().contains("tasks.nope"));
}

#[tokio::test]
async fn a_task_can_have_its_own_stack_size() {
    // Wasmtime fixes the stack per engine: a task with its own size runs on an engine of its own.
    let (sb, _c) = sandbox_with(|c| {
        let small = LimitsOverride { max_stack: Some(ByteSize(32 * 1024)), ..Default::default() };
        c.task_limits.insert("tasks.deep".into(), small);
    })
    .await;
    assert_eq!(sb.task("tasks.deep").unwrap().limits.max_stack, 32 * 1024);
    assert_eq!(sb.task("tasks.add").unwrap().limits.max_stack, celeriac::sandbox::limits::DEFAULT_MAX_STACK);
    // With 32 KiB the engine's own stack check fires before the guest's shadow stack runs out.
    let f = failure(&call(&sb, "tasks.deep", json!([])).await).clone();
    assert_eq!((f.kind, f.exc_type.as_str()), (FailureKind::StackOverflow, "RecursionError"));
    assert!(f.message.contains("call stack exhausted"), "{}", f.message);
    // Tasks on the default engine are unaffected, before and after.
    assert_eq!(success(&call(&sb, "tasks.add", json!([1, 2])).await), &json!(3));
    let f = failure(&call(&sb, "tasks.deep", json!([])).await).clone();
    assert!(f.message.contains("call stack exhausted"), "{}", f.message);
}

#[tokio::test]
async fn an_oversized_result_is_refused_before_it_is_parsed() {
    let (sb, _c) = sandbox().await;
    let limit = celeriac::sandbox::bounds::DEFAULT_MAX_RESULT_SIZE;
    let ok = call(&sb, "tasks.repeat", json!(["x", 1000])).await;
    assert_eq!(success(&ok).as_str().map(str::len), Some(1000));
    let f = failure(&call(&sb, "tasks.repeat", json!(["x", limit + 1])).await).clone();
    assert_eq!((f.kind, f.exc_type.as_str()), (FailureKind::BadResult, "EncodeError"));
    assert!(f.message.contains("limit"), "{}", f.message);
}
