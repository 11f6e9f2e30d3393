//! Log output that looks like Celery's.
//!
//! Celery prints `[2026-11-27 06:00:00,123: INFO/MainProcess] message`; task
//! lines carry the task name and id. Operators grep these, and tools built for
//! Celery logs keep working. Lines inside a task's span (see `worker`) are
//! prefixed with `task_name[task_id]: ` like Celery's task logger does.

use std::fmt;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// The `task_name[task_id]` tag of a task span, stored in the span's extensions.
struct TaskTag(String);

/// Records the `task_name`/`task_id` fields of `task` spans as a [`TaskTag`].
pub struct TaskTagLayer;

#[derive(Default)]
struct TagVisitor {
    name: Option<String>,
    id: Option<String>,
}

impl tracing::field::Visit for TagVisitor {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        match field.name() {
            "task_name" => self.name = Some(value.to_string()),
            "task_id" => self.id = Some(value.to_string()),
            _ => {}
        }
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn fmt::Debug) {
        self.record_str(field, format!("{value:?}").trim_matches('"'));
    }
}

impl<S> tracing_subscriber::Layer<S> for TaskTagLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let mut v = TagVisitor::default();
        attrs.record(&mut v);
        if let (Some(name), Some(task_id), Some(span)) = (v.name, v.id, ctx.span(id)) {
            span.extensions_mut().insert(TaskTag(format!("{name}[{task_id}]")));
        }
    }
}

/// Formats events as `[date time,ms: LEVEL/MainProcess] message`, and inside a
/// task span as `[...] tasks.add[<id>]: message`.
pub struct CeleryFormat;

impl<S, N> FormatEvent<S, N> for CeleryFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, ctx: &FmtContext<'_, S, N>, mut w: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        let now = chrono::Local::now();
        let level = match *event.metadata().level() {
            Level::ERROR => "ERROR",
            Level::WARN => "WARNING",
            Level::INFO => "INFO",
            Level::DEBUG => "DEBUG",
            Level::TRACE => "TRACE",
        };
        write!(w, "[{}: {level}/MainProcess] ", now.format("%Y-%m-%d %H:%M:%S,%3f"))?;
        if let Some(scope) = ctx.event_scope()
            && let Some(tag) = scope.from_root().find_map(|s| s.extensions().get::<TaskTag>().map(|t| t.0.clone()))
        {
            write!(w, "{tag}: ")?;
        }
        ctx.field_format().format_fields(w.by_ref(), event)?;
        writeln!(w)
    }
}

/// The span a task call runs in: its log lines are tagged `name[id]`.
pub fn task_span(name: &str, id: &str) -> tracing::Span {
    // ERROR level so the span exists (and tags lines) at every log level.
    tracing::error_span!("task", task_name = name, task_id = id)
}

/// Map a Celery `--loglevel` name to a tracing filter directive.
pub fn level_filter(loglevel: &str) -> Result<&'static str, String> {
    match loglevel.to_ascii_uppercase().as_str() {
        "DEBUG" => Ok("debug"),
        "INFO" => Ok("info"),
        "WARNING" | "WARN" => Ok("warn"),
        "ERROR" | "CRITICAL" | "FATAL" => Ok("error"),
        other => Err(format!("invalid log level {other:?}: use DEBUG, INFO, WARNING, ERROR or CRITICAL")),
    }
}

/// Install the global subscriber writing Celery-style lines to stderr.
/// `RUST_LOG` refines the filter (e.g. `celeriac=debug,wasmtime=warn`).
pub fn init(loglevel: &str) -> Result<(), String> {
    let level = level_filter(loglevel)?;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("{level},cranelift=warn,wasmtime=warn")));
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    tracing_subscriber::registry()
        .with(filter)
        .with(TaskTagLayer)
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_ansi(false).event_format(CeleryFormat))
        .try_init()
        .map_err(|e| e.to_string())
}

/// Like [`init`], but the lines go to `path` (appended; created if missing),
/// as Celery's `-f/--logfile` does.
pub fn init_file(loglevel: &str, path: &std::path::Path) -> Result<(), String> {
    let level = level_filter(loglevel)?;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| format!("cannot open log file {}: {e}", path.display()))?;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("{level},cranelift=warn,wasmtime=warn")));
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    tracing_subscriber::registry()
        .with(filter)
        .with(TaskTagLayer)
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::sync::Mutex::new(file))
                .with_ansi(false)
                .event_format(CeleryFormat),
        )
        .try_init()
        .map_err(|e| e.to_string())
}
