//! `celeriac call` and `celeriac result`, with `celery call`'s and
//! `celery result`'s options.
//!
//! `call` sends the message a Python client's `app.send_task` sends:
//! `-a/--args` and `-k/--kwargs` as JSON, `--eta` (ISO 8601), `--countdown`,
//! `--expires` (seconds or ISO 8601), and Celery's routing: `--queue`, or
//! `--exchange` with `--routing-key` (on AMQP published to that exchange; on
//! the virtual transports delivered to the queues kombu's bindings name).
//! `result` prints what `AsyncResult.get()` returns, or with `--traceback` the
//! stored traceback.

use std::process::ExitCode;

use anyhow::Context;
use chrono::{DateTime, Utc};
use clap::Args;

use super::{GlobalArgs, TaskCall, print_meta, result_backend, runtime};
use crate::protocol::{NewTask, Serializer};

#[derive(Debug, Args)]
pub struct CallArgs {
    #[command(flatten)]
    call: TaskCall,
    /// Scheduled time, ISO 8601 (e.g. 2030-01-02T03:04:05+00:00; no offset means UTC).
    #[arg(long, value_name = "ISO-8601", value_parser = parse_iso8601, help_heading = "Calling Options")]
    eta: Option<DateTime<Utc>>,
    /// ETA in seconds from now.
    #[arg(long, value_name = "SECS", conflicts_with = "eta", help_heading = "Calling Options")]
    countdown: Option<f64>,
    /// Discard the task if not started by then: seconds from now, or an ISO 8601 time.
    #[arg(long, value_name = "ISO-8601|SECS", value_parser = parse_expires, help_heading = "Calling Options")]
    expires: Option<Expires>,
    /// Body serializer: json, msgpack, or auth (JSON signed with security_key) (default: task_serializer).
    #[arg(long, help_heading = "Calling Options")]
    serializer: Option<String>,
    /// Message priority (Redis: 0 is served first).
    #[arg(long, help_heading = "Calling Options")]
    priority: Option<u8>,
    /// Hard time limit in seconds.
    #[arg(long, value_name = "SECS", help_heading = "Calling Options")]
    time_limit: Option<f64>,
    /// Soft time limit in seconds (carried in the message, for Python workers).
    #[arg(long, value_name = "SECS", help_heading = "Calling Options")]
    soft_time_limit: Option<f64>,
    /// Ask the worker not to store a result.
    #[arg(long, help_heading = "Calling Options")]
    ignore_result: bool,
    /// Also send a `task-sent` event (Celery's `task_send_sent_event`), for `celery events` and Flower.
    #[arg(long, help_heading = "Calling Options")]
    send_sent_event: bool,
    /// Queue to send to (default: task_routes, else task_default_queue).
    #[arg(long, help_heading = "Routing Options")]
    queue: Option<String>,
    /// Exchange to publish to (with --routing-key, as Celery).
    #[arg(long, help_heading = "Routing Options")]
    exchange: Option<String>,
    /// Routing key (with --exchange, as Celery).
    #[arg(long, help_heading = "Routing Options")]
    routing_key: Option<String>,
    /// Wait for the result and print it (the task id goes to stderr).
    #[arg(long)]
    wait: bool,
    /// With --wait: give up after this many seconds.
    #[arg(long, default_value_t = 60.0, value_name = "SECS")]
    timeout: f64,
}

#[derive(Debug, Args)]
pub struct ResultArgs {
    /// The task id.
    task_id: String,
    /// Print the stored traceback instead of the value (`None` when there is none).
    #[arg(long, help_heading = "Result Options")]
    traceback: bool,
    /// Name of the task (Celery uses it to pick a custom backend; checked against the stored name when there is one).
    #[arg(short = 't', long, help_heading = "Result Options")]
    task: Option<String>,
    /// Wait until the task is ready (SUCCESS, FAILURE, REVOKED), up to --timeout.
    #[arg(long)]
    wait: bool,
    /// With --wait: give up after this many seconds.
    #[arg(long, default_value_t = 60.0, value_name = "SECS")]
    timeout: f64,
}

/// `--expires`: seconds from now, or a time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Expires {
    /// Seconds from now.
    In(f64),
    /// This time.
    At(DateTime<Utc>),
}

fn parse_iso8601(s: &str) -> Result<DateTime<Utc>, String> {
    crate::protocol::time::parse_datetime(s).ok_or_else(|| {
        format!("{s:?} is not an ISO 8601 time (e.g. 2030-01-02T03:04:05+00:00); for seconds from now use --countdown")
    })
}

fn parse_expires(s: &str) -> Result<Expires, String> {
    if let Ok(secs) = s.trim().parse::<f64>() {
        return Ok(Expires::In(secs));
    }
    crate::protocol::time::parse_datetime(s)
        .map(Expires::At)
        .ok_or_else(|| format!("{s:?} is neither seconds nor an ISO 8601 time (e.g. 60 or 2030-01-02T03:04:05+00:00)"))
}

/// Where Celery's `send_task_message` publishes: `(exchange, routing key)`.
/// An exchange and a routing key given together are used as they are;
/// otherwise (a direct exchange) the message goes to the anonymous exchange
/// with the queue's name as the key, and a lone `--exchange` or
/// `--routing-key` is ignored, as Celery ignores it.
fn celery_target(queue: &str, exchange: Option<&str>, routing_key: Option<&str>) -> (String, String) {
    match (exchange, routing_key) {
        (Some(e), Some(k)) if !e.is_empty() && !k.is_empty() => (e.to_string(), k.to_string()),
        _ => (String::new(), queue.to_string()),
    }
}

pub fn call(g: &GlobalArgs, a: CallArgs) -> anyhow::Result<ExitCode> {
    crate::logging::init("WARNING").map_err(anyhow::Error::msg)?;
    let settings = g.settings()?;
    let (args, kwargs) = a.call.parse()?;
    let mut task = NewTask::new(a.call.task.clone(), args, kwargs);
    if a.call.args_json.is_some() {
        // `celery call -a` sends the JSON list as it is, so its argsrepr is a list's: `[4, 4]`, not `(4, 4)`.
        use crate::protocol::repr::{REPR_MAXLEVELS, REPR_MAXSIZE, saferepr};
        let list = serde_json::Value::Array(task.args.clone());
        task.options.argsrepr = Some(saferepr(&list, Some(REPR_MAXSIZE), REPR_MAXLEVELS));
    }
    let route = settings.route(&a.call.task);
    let o = &mut task.options;
    let explicit = a.exchange.is_some() && a.routing_key.is_some();
    if a.exchange.is_some() != a.routing_key.is_some() {
        let (given, missing) =
            if a.exchange.is_some() { ("--exchange", "--routing-key") } else { ("--routing-key", "--exchange") };
        eprintln!(
            "warning: {given} without {missing} is ignored, as Celery ignores it (the message goes to the queue); \
             give both, or --queue NAME"
        );
    }
    (o.exchange, o.queue) = match (&a.queue, explicit) {
        (_, true) => celery_target("", a.exchange.as_deref(), a.routing_key.as_deref()),
        (Some(q), false) => (String::new(), q.clone()),
        // task_routes: the route's exchange and key (on AMQP), or its queue.
        (None, false) => route.publish_target(&settings.task_default_queue, settings.exchange_routing()),
    };
    o.priority = a.priority.or(route.priority);
    let now = Utc::now();
    let after =
        |s: f64| crate::protocol::time::after_seconds(now, s).with_context(|| format!("{s} seconds is out of range"));
    o.eta = match a.countdown {
        Some(c) => Some(after(c)?),
        None => a.eta,
    };
    o.expires = match a.expires {
        None => None,
        Some(Expires::In(s)) => Some(after(s)?),
        Some(Expires::At(t)) => Some(t),
    };
    o.timelimit.hard = a.time_limit;
    o.timelimit.soft = a.soft_time_limit;
    o.ignore_result = a.ignore_result;
    let ser = a.serializer.as_deref().unwrap_or(&settings.task_serializer);
    // `auth`: JSON, signed with security_key (Celery's message signing).
    let signer = if ser == "auth" {
        let security = crate::security::Security::from_settings(&crate::config::Settings {
            task_serializer: "auth".into(),
            ..settings.clone()
        })?;
        security.signer
    } else {
        None
    };
    o.serializer = if signer.is_some() {
        Serializer::Json
    } else {
        Serializer::from_name(ser)
            .with_context(|| format!("unsupported serializer {ser:?}: use json, msgpack or auth"))?
    };
    let broker_url = settings.effective_broker_url();
    let declare_queue = a.queue.clone();
    runtime()?.block_on(async {
        let broker = crate::broker::Broker::connect_with_settings(&broker_url, &settings, "celeriac call").await?;
        let amqp = broker.name() == "amqp";
        // As a Celery client does: the queue exists before the task is published to it.
        match (&declare_queue, amqp && task.options.exchange.is_empty()) {
            (Some(q), _) => broker.declare(std::slice::from_ref(q)).await?,
            (None, true) => broker.declare(std::slice::from_ref(&task.options.queue)).await?,
            _ => {}
        }
        let mut encoded = task.encode()?;
        if let Some(signer) = &signer {
            encoded = encoded.sign(signer.as_ref());
        }
        // Subscribe before publishing, as a Python client does, so a fast worker cannot be missed.
        let waiter =
            if a.wait { Some(result_backend(&settings, Some(&broker)).await?.waiter(&task.id).await?) } else { None };
        if amqp || !explicit {
            // AMQP routes on the server; elsewhere a route's queue is the destination.
            broker.publish(&task.options.queue, &encoded).await?;
        } else {
            // --exchange on kombu's virtual transports: the exchange's bindings name the queues.
            let queues = broker.route(&task.options.exchange, &task.options.queue).await?;
            if queues.is_empty() {
                eprintln!(
                    "warning: exchange {} has no binding for routing key {}: the message was dropped (as kombu does)",
                    task.options.exchange, task.options.queue
                );
            }
            for q in &queues {
                broker.publish(q, &encoded).await?;
            }
        }
        if a.send_sent_event {
            send_sent_event(&broker, &task).await;
        }
        let outcome = match waiter {
            None => {
                println!("{}", task.id);
                Ok(ExitCode::SUCCESS)
            }
            Some(sub) => {
                eprintln!("{}", task.id);
                let timeout = std::time::Duration::from_secs_f64(a.timeout.max(0.0));
                match sub.wait(timeout).await {
                    Err(crate::backend::BackendError::Timeout(_)) => {
                        Err(anyhow::anyhow!(crate::hints::call_timed_out(&settings, &task.id, timeout)))
                    }
                    other => Ok(print_meta(&other?)),
                }
            }
        };
        // AMQP: connection.close rather than a dropped socket.
        broker.close().await;
        outcome
    })
}

pub fn result(g: &GlobalArgs, a: ResultArgs) -> anyhow::Result<ExitCode> {
    crate::logging::init("WARNING").map_err(anyhow::Error::msg)?;
    let settings = g.settings()?;
    runtime()?.block_on(async {
        let backend = result_backend(&settings, None).await?;
        let meta = if a.wait {
            backend.waiter(&a.task_id).await?.wait(std::time::Duration::from_secs_f64(a.timeout.max(0.0))).await?
        } else {
            match backend.get(&a.task_id).await? {
                Some(b) => b,
                None if a.traceback => {
                    println!("None");
                    return Ok(ExitCode::SUCCESS);
                }
                None => {
                    println!("PENDING");
                    return Ok(ExitCode::from(3));
                }
            }
        };
        if let (Some(asked), Some(stored)) = (&a.task, meta.extended.as_ref().and_then(|e| e.name.as_deref()))
            && asked != stored
        {
            anyhow::bail!("task {} is a {stored}, not a {asked} (--task)", a.task_id);
        }
        if a.traceback {
            // As `celery result --traceback`: the traceback, or None.
            match &meta.traceback {
                Some(tb) => print!("{}{}", tb, if tb.ends_with('\n') { "" } else { "\n" }),
                None => println!("None"),
            }
            return Ok(ExitCode::SUCCESS);
        }
        Ok(print_meta(&meta))
    })
}

/// Send the `task-sent` event of `task`, as a Celery client with
/// `task_send_sent_event` does (from its `gen<pid>@host` node).
async fn send_sent_event(broker: &crate::broker::Broker, task: &crate::protocol::NewTask) {
    let Some(fanout) = broker.fanout() else {
        tracing::warn!("the {} transport has no events: no task-sent event", broker.name());
        return;
    };
    let source = crate::protocol::pidbox::EventSource::this_process(&crate::protocol::default_origin());
    let event = source.event("task-sent", 1, crate::protocol::time::now_secs(), task.sent_event_fields());
    let message = crate::protocol::pidbox::Outgoing::event(&source.hostname, "task.sent", &event);
    if let Err(e) = fanout.broadcast(&message).await {
        tracing::warn!("cannot send the task-sent event: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_exchange_and_a_routing_key_are_used_only_together_as_in_celery() {
        assert_eq!(celery_target("celery", Some("ex"), Some("rk")), ("ex".into(), "rk".into()));
        assert_eq!(celery_target("celery", Some("ex"), None), (String::new(), "celery".into()));
        assert_eq!(celery_target("q", None, Some("rk")), (String::new(), "q".into()));
    }

    #[test]
    fn expires_is_seconds_or_an_iso_time() {
        assert_eq!(parse_expires("30"), Ok(Expires::In(30.0)));
        let at = parse_expires("2030-01-02T03:04:05+00:00");
        assert!(matches!(at, Ok(Expires::At(t)) if t.to_rfc3339() == "2030-01-02T03:04:05+00:00"), "{at:?}");
        assert!(parse_expires("soon").is_err());
    }

    #[test]
    fn an_eta_with_an_offset_is_converted_to_utc() {
        let t = parse_iso8601("2030-01-02T05:04:05+02:00").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(t.to_rfc3339(), "2030-01-02T03:04:05+00:00");
        assert!(parse_iso8601("10").unwrap_err().contains("--countdown"));
    }
}
