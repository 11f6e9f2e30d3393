//! What Celery's command line prints for remote-control replies and events
//! (`celery/bin/control.py`, `celery/events/dumper.py`), as pure text from
//! decoded messages: `celeriac inspect/control/status` and `celeriac events
//! --dump` print the same lines as `celery inspect` and `celery events --dump`.
//! Here, beside the messages they render, so the `control_reply` and `events`
//! fuzz targets reach them.

use std::collections::HashMap;

use serde_json::{Map, Value};

use crate::{RawMessage, Serializer, py_repr};

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
    ev.insert("local_received".into(), Value::from(crate::time::now_secs()));
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
    use serde_json::json;

    #[test]
    fn an_event_timestamp_is_read_exactly_as_python_reads_it() {
        // Python's json (like Rust's `str::parse`) reads a decimal to the nearest double; serde_json
        // without `float_roundtrip` may land one ulp off, and the printed microsecond then differs.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..200_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let text = format!("1796067514.{:07}", x % 10_000_000);
            let exact: f64 = text.parse().unwrap();
            let read: f64 = serde_json::from_str(&text).unwrap();
            assert_eq!(read.to_bits(), exact.to_bits(), "{text}");
        }
    }

    #[test]
    fn timestamps_print_as_pythons_datetime_fromtimestamp_prints_them() {
        // Python: str(datetime.fromtimestamp(1796067514.7887235, tz=timezone.utc)).
        assert_eq!(py_datetime(1796067514.7887235), "2026-11-30 19:38:34.788723+00:00");
        assert_eq!(py_datetime(1796067514.0), "2026-11-30 19:38:34+00:00");
        assert_eq!(py_datetime(1796067514.9999999), "2026-11-30 19:38:35+00:00");
    }

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
}
