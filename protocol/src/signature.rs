//! Celery signatures as they travel in messages and come from task
//! components: `{"task", "args", "kwargs", "options", "subtask_type",
//! "immutable"}` dicts, where `subtask_type` is `null` for one task, or
//! `"chain"` / `"group"` (`kwargs.tasks`) / `"chord"` (`kwargs.header`,
//! `kwargs.body`) for a canvas. What Celery's `Signature.freeze` does to them —
//! give every task its id before anything is sent, so the caller can hand out
//! the id at once — is [`freeze`]; applying them (messages to publish) is the
//! worker's job.

use serde_json::{Map, Value};

/// Deepest canvas nesting accepted (a chain in a group in a chord ...).
pub const MAX_DEPTH: usize = 32;

/// What a signature is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// One task.
    Task,
    /// `chain(a, b, c)`: `kwargs.tasks`, each step's result prepended to the next one's args.
    Chain,
    /// `group(a, b)`: `kwargs.tasks`, run in parallel under one group id.
    Group,
    /// `chord(header, body)`: the body runs with the list of the header's results.
    Chord,
}

/// Why a value is no signature Celeriac can use.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SignatureError {
    /// Not a signature dict, or a canvas without its parts.
    #[error("malformed signature: {0}")]
    Malformed(String),
    /// A `subtask_type` Celery 5.7 does not have (e.g. a `chunks` or `xmap`
    /// signature, which Celery itself sends as `celery.chunks` / `celery.map` tasks).
    #[error("unsupported signature type {0:?}")]
    Unsupported(String),
    /// Nested deeper than [`MAX_DEPTH`].
    #[error("canvas nested deeper than {MAX_DEPTH} levels")]
    TooDeep,
}

/// The kind of `sig`.
pub fn kind(sig: &Value) -> Result<Kind, SignatureError> {
    let obj = sig.as_object().ok_or_else(|| malformed("not an object", sig))?;
    match obj.get("subtask_type") {
        None | Some(Value::Null) => match obj.get("task") {
            Some(Value::String(_)) => Ok(Kind::Task),
            _ => Err(malformed("no task name", sig)),
        },
        Some(Value::String(t)) => match t.as_str() {
            "chain" => Ok(Kind::Chain),
            "group" => Ok(Kind::Group),
            "chord" => Ok(Kind::Chord),
            other => Err(SignatureError::Unsupported(other.to_string())),
        },
        Some(_) => Err(malformed("subtask_type is not a string", sig)),
    }
}

/// A signature's `options`, created when missing.
pub fn options_mut(sig: &mut Value) -> Result<&mut Map<String, Value>, SignatureError> {
    let obj = sig.as_object_mut().ok_or_else(|| SignatureError::Malformed("not an object".into()))?;
    let opts = obj.entry("options").or_insert_with(|| Value::Object(Map::new()));
    if !opts.is_object() {
        *opts = Value::Object(Map::new());
    }
    Ok(opts.as_object_mut().expect("an object was just put here"))
}

/// The steps of a chain or the members of a group (`kwargs.tasks`).
pub fn tasks_mut(sig: &mut Value) -> Result<&mut Vec<Value>, SignatureError> {
    match sig.pointer_mut("/kwargs/tasks") {
        Some(Value::Array(tasks)) => Ok(tasks),
        _ => Err(SignatureError::Malformed("a chain or group without kwargs.tasks".into())),
    }
}

/// The members of a chord's header: `kwargs.header` is a group signature or a
/// plain list of signatures.
pub fn header_mut(sig: &mut Value) -> Result<&mut Vec<Value>, SignatureError> {
    let header = sig
        .pointer_mut("/kwargs/header")
        .ok_or_else(|| SignatureError::Malformed("a chord without kwargs.header".into()))?;
    if header.is_array() {
        return Ok(header.as_array_mut().expect("checked"));
    }
    tasks_mut(header)
}

/// A chord's body (`kwargs.body`).
pub fn body_mut(sig: &mut Value) -> Result<&mut Value, SignatureError> {
    match sig.pointer_mut("/kwargs/body") {
        Some(b) if b.is_object() => Ok(b),
        _ => Err(SignatureError::Malformed("a chord without kwargs.body".into())),
    }
}

/// Celery's `Signature.freeze(id)`: give every task in `sig` a `task_id` (and
/// every group its group id) where it has none, and return the id of what a
/// client would wait on — the task; a chain's last step; a group's id; a
/// chord's body. `id`, when given, becomes that id (Celery's `self.replace`
/// freezes the replacement with the replaced task's id).
pub fn freeze(sig: &mut Value, id: Option<&str>) -> Result<String, SignatureError> {
    freeze_at(sig, id, 0)
}

fn freeze_at(sig: &mut Value, id: Option<&str>, depth: usize) -> Result<String, SignatureError> {
    if depth > MAX_DEPTH {
        return Err(SignatureError::TooDeep);
    }
    match kind(sig)? {
        Kind::Task => Ok(own_id(options_mut(sig)?, "task_id", id)),
        Kind::Chain => {
            let steps = tasks_mut(sig)?;
            let n = steps.len();
            if n == 0 {
                return Err(SignatureError::Malformed("an empty chain".into()));
            }
            let mut last = String::new();
            for (i, step) in steps.iter_mut().enumerate() {
                last = freeze_at(step, if i + 1 == n { id } else { None }, depth + 1)?;
            }
            Ok(last)
        }
        Kind::Group => {
            let gid = own_id(options_mut(sig)?, "task_id", id);
            for (i, member) in tasks_mut(sig)?.iter_mut().enumerate() {
                let opts = options_mut(member)?;
                opts.insert("group_id".into(), Value::String(gid.clone()));
                opts.insert("group_index".into(), Value::from(i));
                freeze_at(member, None, depth + 1)?;
            }
            Ok(gid)
        }
        Kind::Chord => {
            let header = sig
                .pointer_mut("/kwargs/header")
                .ok_or_else(|| SignatureError::Malformed("a chord without kwargs.header".into()))?;
            // The chord's group id: the header group's id when it has one.
            let gid = match header {
                Value::Array(_) => None,
                group => options_mut(group)?.get("task_id").and_then(Value::as_str).map(str::to_string),
            };
            let gid = own_id(options_mut(sig)?, "group_id", gid.as_deref());
            if let Some(group @ Value::Object(_)) = sig.pointer_mut("/kwargs/header") {
                options_mut(group)?.insert("task_id".into(), Value::String(gid.clone()));
            }
            for (i, member) in header_mut(sig)?.iter_mut().enumerate() {
                let opts = options_mut(member)?;
                opts.insert("group_id".into(), Value::String(gid.clone()));
                opts.insert("group_index".into(), Value::from(i));
                freeze_at(member, None, depth + 1)?;
            }
            let body = freeze_at(body_mut(sig)?, id, depth + 1)?;
            options_mut(sig)?.insert("task_id".into(), Value::String(body.clone()));
            Ok(body)
        }
    }
}

/// `opts[key]` when it is a string id (replaced by `id` when given), else a new id.
fn own_id(opts: &mut Map<String, Value>, key: &str, id: Option<&str>) -> String {
    let chosen = match (id, opts.get(key).and_then(Value::as_str)) {
        (Some(id), _) => id.to_string(),
        (None, Some(existing)) => existing.to_string(),
        (None, None) => uuid::Uuid::new_v4().to_string(),
    };
    opts.insert(key.into(), Value::String(chosen.clone()));
    chosen
}

fn malformed(why: &str, sig: &Value) -> SignatureError {
    let mut text = sig.to_string();
    if text.len() > 200 {
        let mut cut = 200;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push_str("...");
    }
    SignatureError::Malformed(format!("{why}: {text}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn task(name: &str) -> Value {
        json!({"task": name, "args": [], "kwargs": {}, "options": {}, "subtask_type": null, "immutable": false})
    }

    #[test]
    fn a_task_is_frozen_with_a_new_id_or_keeps_its_own() {
        let mut t = task("tasks.add");
        let id = freeze(&mut t, None).unwrap();
        assert_eq!(t["options"]["task_id"], json!(id));
        assert_eq!(freeze(&mut t, None).unwrap(), id);
        assert_eq!(freeze(&mut t, Some("given")).unwrap(), "given");
    }

    #[test]
    fn a_chain_answers_with_its_last_steps_id_and_a_group_with_its_own() {
        let mut c = json!({"task": "celery.chain", "args": [], "kwargs": {"tasks": [task("a"), task("b")]},
            "options": {}, "subtask_type": "chain", "immutable": false});
        let id = freeze(&mut c, Some("replaced-id")).unwrap();
        assert_eq!(id, "replaced-id");
        assert_eq!(c["kwargs"]["tasks"][1]["options"]["task_id"], json!("replaced-id"));
        assert!(c["kwargs"]["tasks"][0]["options"]["task_id"].is_string());
        let mut g = json!({"task": "celery.group", "args": [], "kwargs": {"tasks": [task("a"), task("b")]},
            "options": {}, "subtask_type": "group", "immutable": false});
        let gid = freeze(&mut g, None).unwrap();
        assert_eq!(g["kwargs"]["tasks"][1]["options"]["group_id"], json!(gid));
        assert_eq!(g["kwargs"]["tasks"][1]["options"]["group_index"], json!(1));
    }

    #[test]
    fn a_chord_answers_with_its_bodys_id_and_names_its_group_in_every_member() {
        let header = json!({"task": "celery.group", "args": [], "kwargs": {"tasks": [task("a"), task("b")]},
            "options": {"task_id": "gid"}, "subtask_type": "group", "immutable": false});
        let mut c = json!({"task": "celery.chord", "args": [], "kwargs": {"header": header, "body": task("sum")},
            "options": {}, "subtask_type": "chord", "immutable": false});
        let body = freeze(&mut c, None).unwrap();
        assert_eq!(c["kwargs"]["body"]["options"]["task_id"], json!(body));
        assert_eq!(c["options"]["group_id"], json!("gid"));
        assert_eq!(c["kwargs"]["header"]["kwargs"]["tasks"][0]["options"]["group_id"], json!("gid"));
    }

    #[test]
    fn bad_signatures_are_errors_naming_what_is_wrong() {
        assert!(matches!(kind(&json!(3)), Err(SignatureError::Malformed(_))));
        assert!(matches!(kind(&json!({"args": []})), Err(SignatureError::Malformed(_))));
        assert!(matches!(kind(&json!({"task": "x", "subtask_type": "xmap"})), Err(SignatureError::Unsupported(_))));
        let mut empty = json!({"task": "celery.chain", "kwargs": {"tasks": []}, "subtask_type": "chain"});
        assert!(matches!(freeze(&mut empty, None), Err(SignatureError::Malformed(_))));
        let mut deep = task("x");
        for _ in 0..40 {
            deep = json!({"task": "celery.chain", "kwargs": {"tasks": [deep]}, "subtask_type": "chain"});
        }
        assert_eq!(freeze(&mut deep, None), Err(SignatureError::TooDeep));
    }
}
