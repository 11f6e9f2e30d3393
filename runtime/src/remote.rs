//! The client side of remote control, for operators without Python:
//! `celeriac inspect`, `celeriac control` and `celeriac status`, which do what
//! `celery inspect/control/status` do (kombu's `Mailbox._broadcast` +
//! `_collect`) and print what they print (`celery/bin/control.py`): one
//! `->  <node>: OK` block per reply, then `N nodes online.`; "Error: No nodes
//! replied within time constraint" and exit status 69 when none answers.
//! They work against Celeriac and Python workers alike.

use std::time::Duration;

use serde_json::{Map, Value};

use crate::broker::{Broker, BrokerError};
use crate::protocol::pidbox::{decode_reply, request_message};
pub use crate::protocol::render::{dump_line, format_reply, nodes_online, split_events};

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

#[cfg(test)]
mod tests {
    use super::*;

    use serde_json::json;

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
