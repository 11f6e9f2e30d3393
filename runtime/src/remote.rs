//! The client side of remote control, for operators without Python:
//! `celeriac inspect`, `celeriac control` and `celeriac status`, which do what
//! `celery inspect/control/status` do (kombu's `Mailbox._broadcast` +
//! `_collect`) and print what they print (`celery/bin/control.py`): one
//! `->  <node>: OK` block per reply, then `N nodes online.`; "Error: No nodes
//! replied within time constraint" and exit status 69 when none answers.
//! They work against Celeriac and Python workers alike.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{Map, Value};

use crate::broker::{Broker, BrokerError};
use crate::protocol::pidbox::{decode_reply, request_message};
use crate::protocol::{RawMessage, Serializer, py_repr};

/// A command: its name, the arguments it takes in order, and the name of
/// its variadic argument (Celery's `Panel.meta`).
type Spec = (&'static str, &'static [(&'static str, ArgType)], Option<&'static str>);

/// Inspect commands (read-only).
const INSPECT: &[Spec] = &[
    ("active", &[], None),
    ("active_queues", &[], None),
    ("clock", &[], None),
    ("conf", &[("with_defaults", ArgType::Bool)], None),
    ("ping", &[], None),
    ("query_task", &[], Some("ids")),
    ("registered", &[], Some("taskinfoitems")),
    ("report", &[], None),
    ("reserved", &[], None),
    ("revoked", &[], None),
    ("scheduled", &[], None),
    ("stats", &[], None),
];

/// Control commands (they change the worker).
const CONTROL: &[Spec] = &[
    (
        "add_consumer",
        &[
            ("queue", ArgType::Str),
            ("exchange", ArgType::Str),
            ("exchange_type", ArgType::Str),
            ("routing_key", ArgType::Str),
        ],
        None,
    ),
    ("autoscale", &[("max", ArgType::Int), ("min", ArgType::Int)], None),
    ("cancel_consumer", &[("queue", ArgType::Str)], None),
    ("disable_events", &[], None),
    ("enable_events", &[], None),
    ("heartbeat", &[], None),
    ("pool_grow", &[("n", ArgType::Int)], None),
    ("pool_shrink", &[("n", ArgType::Int)], None),
    ("rate_limit", &[("task_name", ArgType::Str), ("rate_limit", ArgType::Str)], None),
    ("revoke", &[], Some("task_id")),
    ("shutdown", &[], None),
    ("terminate", &[("signal", ArgType::Str)], Some("task_id")),
    ("time_limit", &[("task_name", ArgType::Str), ("soft", ArgType::Float), ("hard", ArgType::Float)], None),
];

/// How a command-line argument is typed into the request.
#[derive(Debug, Clone, Copy)]
enum ArgType {
    Str,
    Int,
    Float,
    Bool,
}

/// Which kind of remote command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `inspect`: read-only.
    Inspect,
    /// `control`: changes workers.
    Control,
}

/// Errors of the remote-control client.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// Not a command of that kind.
    #[error("Command {command} not recognized. Available {kind} commands: {available}")]
    UnknownCommand { command: String, kind: &'static str, available: String },
    /// An argument that does not parse.
    #[error("Command {command:?}: argument {name} must be {expected}, not {value:?}")]
    BadArgument { command: String, name: &'static str, expected: &'static str, value: String },
    /// More arguments than the command takes.
    #[error("Command {command:?} takes arguments: {signature}")]
    TooMany { command: String, signature: String },
    /// The transport has no broadcast (SQLite).
    #[error("the {0} transport has no broadcast: remote control needs Redis or RabbitMQ")]
    NoFanout(&'static str),
    /// The broker failed.
    #[error(transparent)]
    Broker(#[from] BrokerError),
}

impl Kind {
    fn table(self) -> &'static [Spec] {
        match self {
            Kind::Inspect => INSPECT,
            Kind::Control => CONTROL,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Kind::Inspect => "inspect",
            Kind::Control => "control",
        }
    }

    /// The commands of this kind, for `--help`.
    pub fn commands(self) -> Vec<&'static str> {
        self.table().iter().map(|(n, _, _)| *n).collect()
    }
}

/// The request arguments of `command` from its command-line words (Celery's
/// `_compile_arguments`: positional ones by the command's signature, the
/// rest into its variadic argument).
pub fn compile_arguments(kind: Kind, command: &str, words: &[String]) -> Result<Map<String, Value>, RemoteError> {
    let Some((_, positional, variadic)) = kind.table().iter().find(|(n, _, _)| *n == command) else {
        return Err(RemoteError::UnknownCommand {
            command: command.to_string(),
            kind: kind.name(),
            available: kind.commands().join(", "),
        });
    };
    let mut args = Map::new();
    let mut words = words.iter();
    for (name, ty) in positional.iter() {
        let Some(w) = words.next() else { break };
        let bad =
            |expected| RemoteError::BadArgument { command: command.to_string(), name, expected, value: w.clone() };
        let v = match ty {
            ArgType::Str => Value::from(w.as_str()),
            ArgType::Int => Value::from(w.parse::<i64>().map_err(|_| bad("an integer"))?),
            ArgType::Float => Value::from(w.parse::<f64>().map_err(|_| bad("a number"))?),
            ArgType::Bool => Value::from(matches!(w.to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on")),
        };
        args.insert((*name).to_string(), v);
    }
    let rest: Vec<Value> = words.map(|w| Value::from(w.as_str())).collect();
    match variadic {
        Some(v) => {
            args.insert((*v).to_string(), Value::Array(rest));
        }
        None if !rest.is_empty() => {
            let signature = positional.iter().map(|(n, _)| format!("<{n}>")).collect::<Vec<_>>().join(" ");
            return Err(RemoteError::TooMany { command: command.to_string(), signature });
        }
        None => {}
    }
    Ok(args)
}

/// Broadcast `method` and collect `(node, reply)` pairs for `timeout` (or
/// until every node of `destination` answered).
pub async fn broadcast(
    broker: &Broker,
    method: &str,
    arguments: Map<String, Value>,
    destination: Option<&[String]>,
    timeout: Duration,
) -> Result<Vec<(String, Value)>, RemoteError> {
    let fanout = broker.fanout().ok_or(RemoteError::NoFanout(broker.name()))?;
    let oid = uuid::Uuid::new_v4().to_string();
    let ticket = uuid::Uuid::new_v4().to_string();
    let expires = crate::protocol::time::now_secs() + timeout.as_secs_f64();
    let request = request_message(method, arguments, destination, &ticket, &oid, 1, expires);
    let limit = destination.map(<[String]>::len);
    let raw = fanout.call(&request, &oid, timeout, limit).await?;
    let mut replies = Vec::new();
    for r in raw {
        match decode_reply(&r) {
            Ok((t, body)) if t.as_deref().is_none_or(|t| t == ticket) => replies.extend(body),
            Ok(_) => {}
            Err(e) => tracing::warn!("ignoring a control reply: {e}"),
        }
    }
    Ok(replies)
}

/// One reply as `celery inspect` prints it: `->  node: OK` and, when
/// `show_body`, the reply indented below.
pub fn format_reply(node: &str, reply: &Value, show_body: bool) -> String {
    let (ok, body) = pretty(reply);
    let status = if ok { "OK" } else { "ERROR" };
    let mut out = format!("->  {node}: {status}");
    if show_body {
        for line in body.lines() {
            out.push_str("\n    ");
            out.push_str(line);
        }
    }
    out
}

/// Celery's `CLIContext.pretty`: (ok, text).
fn pretty(v: &Value) -> (bool, String) {
    match v {
        Value::Array(items) if items.is_empty() => (true, "- empty -".into()),
        Value::Array(items) => (true, items.iter().map(|i| format!("* {}", py_str(i))).collect::<Vec<_>>().join("\n")),
        Value::Object(m) if m.contains_key("ok") => (true, indent(&pretty(&m["ok"]).1, 4)),
        Value::Object(m) if m.contains_key("error") => (false, pretty(&m["error"]).1),
        Value::Object(_) => (true, sorted_json(v)),
        Value::String(s) => (true, s.clone()),
        other => (true, py_repr(other)),
    }
}

/// `str()` of a list item: strings as they are, the rest as Python reprs.
fn py_str(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => py_repr(other),
    }
}

/// `json.dumps(v, sort_keys=True, indent=4)`.
fn sorted_json(v: &Value) -> String {
    fn sort(v: &Value) -> Value {
        match v {
            Value::Object(m) => {
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort();
                Value::Object(keys.into_iter().map(|k| (k.clone(), sort(&m[k]))).collect())
            }
            Value::Array(a) => Value::Array(a.iter().map(sort).collect()),
            other => other.clone(),
        }
    }
    let mut buf = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut ser = serde_json::Serializer::with_formatter(&mut buf, fmt);
    if serde::Serialize::serialize(&sort(v), &mut ser).is_err() {
        return v.to_string();
    }
    String::from_utf8_lossy(&buf).into_owned()
}

fn indent(text: &str, n: usize) -> String {
    let pad = " ".repeat(n);
    text.lines().map(|l| format!("{pad}{l}")).collect::<Vec<_>>().join("\n")
}

/// The events in one `celeryev` message: a `task.multi` list, or one event.
pub fn split_events(raw: &RawMessage) -> Vec<Map<String, Value>> {
    let value = match raw.content_type.as_deref().and_then(Serializer::from_name).unwrap_or_default().decode(&raw.body)
    {
        Ok(v) => v,
        Err(e) => {
            tracing::warn!("ignoring an undecodable event: {e}");
            return Vec::new();
        }
    };
    let items = match value {
        Value::Array(items) => items,
        one => vec![one],
    };
    items
        .into_iter()
        .filter_map(|v| match v {
            Value::Object(m) => Some(m),
            _ => None,
        })
        .collect()
}

/// One event as `celery events --dump` prints it (Celery's `Dumper.on_event`):
/// `<host> [<utc time>] <type>: [<task>] <field>=<value>, ...`, fields sorted,
/// with the `local_received` time the receiver adds. `names` remembers each
/// task's `name(uuid) args=… kwargs=…` from its `task-received`/`task-sent`.
pub fn dump_line(mut ev: Map<String, Value>, names: &mut HashMap<String, String>) -> String {
    ev.insert("local_received".into(), Value::from(crate::protocol::time::now_secs()));
    let timestamp = ev.remove("timestamp").and_then(|t| t.as_f64()).map(py_datetime).unwrap_or_default();
    let kind = ev.remove("type").and_then(|t| t.as_str().map(str::to_lowercase)).unwrap_or_default();
    let hostname = ev.remove("hostname").map(|h| py_str(&h)).unwrap_or_default();
    let human = match kind.as_str() {
        "worker-offline" => "shutdown".to_string(),
        "worker-online" => "started".to_string(),
        "worker-heartbeat" => "heartbeat".to_string(),
        other => other.replace('-', " "),
    };
    let task = if kind.starts_with("task-") {
        let uuid = ev.remove("uuid").map(|u| py_str(&u)).unwrap_or_default();
        if kind == "task-received" || kind == "task-sent" {
            let mut take = |k: &str| ev.remove(k).map(|v| py_str(&v)).unwrap_or_else(|| "None".into());
            let described = format!("{}({uuid}) args={} kwargs={}", take("name"), take("args"), take("kwargs"));
            names.insert(uuid, described.clone());
            Some(described)
        } else {
            Some(names.get(&uuid).cloned().unwrap_or_default())
        }
    } else {
        None
    };
    let mut keys: Vec<&String> = ev.keys().collect();
    keys.sort();
    let fields = keys.iter().map(|k| format!("{k}={}", py_str(&ev[*k]))).collect::<Vec<_>>().join(", ");
    let sep = if fields.is_empty() { "" } else { ":" };
    match task {
        Some(task) => format!("{hostname} [{timestamp}] {human}{sep} {task} {fields}"),
        None => format!("{hostname} [{timestamp}] {human}{sep} {fields}"),
    }
}

/// `str(datetime.fromtimestamp(t, tz=timezone.utc))`: as CPython, the
/// fraction of a second is split off first and rounded to microseconds half to
/// even (rounding `t * 1e6` instead differs by 1 µs for some timestamps).
fn py_datetime(t: f64) -> String {
    let whole = t.trunc();
    let mut micros = ((t - whole) * 1e6).round_ties_even() as i64;
    let mut secs = whole as i64;
    if micros >= 1_000_000 {
        secs += 1;
        micros -= 1_000_000;
    } else if micros < 0 {
        secs -= 1;
        micros += 1_000_000;
    }
    let Some(dt) = chrono::DateTime::from_timestamp(secs, (micros * 1000) as u32) else { return t.to_string() };
    if dt.timestamp_subsec_micros() == 0 {
        dt.format("%Y-%m-%d %H:%M:%S+00:00").to_string()
    } else {
        dt.format("%Y-%m-%d %H:%M:%S%.6f+00:00").to_string()
    }
}

/// `N node(s) online.`
pub fn nodes_online(n: usize) -> String {
    format!("{n} {} online.", if n == 1 { "node" } else { "nodes" })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_print_as_pythons_datetime_fromtimestamp_prints_them() {
        // Python: str(datetime.fromtimestamp(1796067514.7887235, tz=timezone.utc)).
        assert_eq!(py_datetime(1796067514.7887235), "2026-11-30 19:38:34.788723+00:00");
        assert_eq!(py_datetime(1796067514.0), "2026-11-30 19:38:34+00:00");
        assert_eq!(py_datetime(1796067514.9999999), "2026-11-30 19:38:35+00:00");
    }
    use serde_json::json;

    #[test]
    fn replies_print_as_celery_prints_them() {
        assert_eq!(format_reply("w@h", &json!({"ok": "pong"}), true), "->  w@h: OK\n        pong");
        assert_eq!(
            format_reply("w@h", &json!(["tasks.add", "tasks.mul"]), true),
            "->  w@h: OK\n    * tasks.add\n    * tasks.mul"
        );
        assert_eq!(format_reply("w@h", &json!([]), true), "->  w@h: OK\n    - empty -");
        assert_eq!(format_reply("w@h", &json!({"error": "unknown task"}), true), "->  w@h: ERROR\n    unknown task");
        assert_eq!(
            format_reply("w@h", &json!({"b": 1, "a": [1]}), true),
            "->  w@h: OK\n    {\n        \"a\": [\n            1\n        ],\n        \"b\": 1\n    }"
        );
        assert_eq!(format_reply("w@h", &json!({"ok": "pong"}), false), "->  w@h: OK");
        assert_eq!(nodes_online(1), "1 node online.");
        assert_eq!(nodes_online(2), "2 nodes online.");
    }

    #[test]
    fn events_dump_as_celery_events_dump_prints_them() {
        let mut names = HashMap::new();
        let received = json!({"hostname": "w@h", "utcoffset": 0.0, "pid": 7, "clock": 3, "uuid": "u1",
            "name": "tasks.add", "args": "(4, 4)", "kwargs": "{}", "root_id": "u1", "parent_id": null, "retries": 0,
            "eta": null, "expires": null, "timestamp": 1_796_055_094.995_67, "type": "task-received"});
        let Value::Object(received) = received else { unreachable!() };
        let line = dump_line(received, &mut names);
        assert!(line.starts_with("w@h [2026-11-30 16:11:34.995670+00:00] task received: tasks.add(u1) args=(4, 4) kwargs={} clock=3, eta=None, expires=None, local_received="), "{line}");
        assert!(line.ends_with("parent_id=None, pid=7, retries=0, root_id=u1, utcoffset=0.0"), "{line}");
        let Value::Object(ok) = json!({"hostname": "w@h", "uuid": "u1", "result": "8", "timestamp": 1796055095.0,
            "type": "task-succeeded"})
        else {
            unreachable!()
        };
        let line = dump_line(ok, &mut names);
        assert!(
            line.starts_with(
                "w@h [2026-11-30 16:11:35+00:00] task succeeded: tasks.add(u1) args=(4, 4) kwargs={} local_received="
            ),
            "{line}"
        );
        assert!(line.ends_with(", result=8"), "{line}");
        let Value::Object(hb) =
            json!({"hostname": "w@h", "freq": 2.0, "timestamp": 1796055095.0, "type": "worker-heartbeat"})
        else {
            unreachable!()
        };
        assert!(
            dump_line(hb, &mut names)
                .starts_with("w@h [2026-11-30 16:11:35+00:00] heartbeat: freq=2.0, local_received=")
        );
    }

    #[test]
    fn arguments_follow_each_commands_signature() {
        let words = |w: &[&str]| w.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let a = compile_arguments(Kind::Control, "rate_limit", &words(&["tasks.add", "10/m"])).unwrap();
        assert_eq!(Value::Object(a), json!({"task_name": "tasks.add", "rate_limit": "10/m"}));
        let a = compile_arguments(Kind::Control, "terminate", &words(&["SIGTERM", "a", "b"])).unwrap();
        assert_eq!(Value::Object(a), json!({"signal": "SIGTERM", "task_id": ["a", "b"]}));
        let a = compile_arguments(Kind::Control, "time_limit", &words(&["tasks.spin", "1.5"])).unwrap();
        assert_eq!(Value::Object(a), json!({"task_name": "tasks.spin", "soft": 1.5}));
        assert!(matches!(
            compile_arguments(Kind::Control, "pool_grow", &words(&["x"])),
            Err(RemoteError::BadArgument { .. })
        ));
        assert!(matches!(compile_arguments(Kind::Inspect, "ping", &words(&["x"])), Err(RemoteError::TooMany { .. })));
        let e = compile_arguments(Kind::Inspect, "rate_limit", &[]).unwrap_err().to_string();
        assert!(e.contains("not recognized") && e.contains("ping"), "{e}");
    }
}
