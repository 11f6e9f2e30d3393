//! Celery task messages: decoding what brokers deliver, encoding what we publish.
//!
//! A task message is transport-neutral: headers (a map), properties, a
//! serialised body, a content type. Redis wraps these in a kombu
//! [`Envelope`](super::Envelope); AMQP carries them as frame properties. The
//! decoder therefore starts from a [`RawMessage`] that either broker can
//! build, and the encoder produces an [`EncodedTask`] whose pieces an AMQP
//! publisher can use directly, or which becomes a Redis envelope.
//!
//! Two protocol versions exist:
//! - **v2** (Celery ≥ 4 default): headers carry `task`, `id`, `eta`, ...;
//!   the body is `[args, kwargs, embed]`.
//! - **v1**: headers are empty; the body is a dict with `task`, `id`,
//!   `args`, `kwargs`, `eta`, ... It is converted the way Celery's
//!   `hybrid_to_proto2` does: a v2-style header map is synthesised from the
//!   body, message headers are merged over it, and from there both versions
//!   share one code path.
//!
//! Decoding is defensive: the content type is checked against
//! `accept_content` before the body is deserialised, and every failure is an
//! error carrying whatever task id / name could be recovered, never a panic.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use super::content::{AcceptContent, Serializer};
use super::envelope::Envelope;
use super::error::{Partial, ProtocolError, describe};
use super::repr::{args_repr, kwargs_repr};
use super::time::{isoformat, parse_datetime};

/// Header keys Celery 5.7 writes itself, in its order. Anything else in a
/// header map is a custom header (`apply_async(headers=...)`).
pub const STANDARD_HEADERS: &[&str] = &[
    "lang",
    "task",
    "id",
    "shadow",
    "eta",
    "expires",
    "group",
    "group_index",
    "retries",
    "timelimit",
    "root_id",
    "parent_id",
    "argsrepr",
    "kwargsrepr",
    "origin",
    "ignore_result",
    "replaced_task_nesting",
    "stamped_headers",
    "stamps",
];

/// The queue Celery routes to by default.
pub const DEFAULT_QUEUE: &str = "celery";

/// Which task protocol a message used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProtocolVersion {
    /// Everything in the body dict, empty headers.
    V1,
    /// Metadata in headers, body `[args, kwargs, embed]`.
    V2,
}

/// Where a message came from and how to acknowledge or restore it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeliveryInfo {
    /// Redis: `properties.delivery_tag` (a uuid4). AMQP brokers may put the
    /// decimal delivery tag here.
    pub delivery_tag: Option<String>,
    /// The exchange it was published to (`""` for the default exchange).
    pub exchange: String,
    /// The routing key (the queue name for the default exchange).
    pub routing_key: String,
    /// Message priority, if the message had one.
    pub priority: Option<u8>,
    /// True when the broker delivers it a second time.
    pub redelivered: bool,
    /// `properties.reply_to` (the client's reply queue for the rpc backend).
    pub reply_to: Option<String>,
    /// `properties.correlation_id` (the task id, for Celery producers).
    pub correlation_id: Option<String>,
    /// The queue it was consumed from, where the transport knows it apart from
    /// the routing key (AMQP: an exchange's routing key need not name a queue).
    pub queue: Option<String>,
}

/// A message as a broker delivers it, before the body is deserialised.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RawMessage {
    /// Message headers in wire order.
    pub headers: Map<String, Value>,
    /// The serialised body (already base64-decoded on Redis).
    pub body: Vec<u8>,
    /// The content type, e.g. `application/json`.
    pub content_type: Option<String>,
    /// The content encoding, e.g. `utf-8`. Informative only.
    pub content_encoding: Option<String>,
    /// Delivery details.
    pub delivery: DeliveryInfo,
}

/// `timelimit`: `[hard, soft]` seconds, each optional.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct TimeLimit {
    /// Hard limit in seconds: the task is killed.
    pub hard: Option<f64>,
    /// Soft limit in seconds: the task is told to stop.
    pub soft: Option<f64>,
}

impl TimeLimit {
    /// `[hard, soft]`; whole numbers are written as integers, as Python
    /// writes the ints users pass (`[30, 20]`, `[30, 20.5]`).
    pub fn to_value(&self) -> Value {
        Value::Array(vec![seconds_value(self.hard), seconds_value(self.soft)])
    }

    /// Read `[hard, soft]` (a missing second element means no soft limit).
    pub fn from_value(value: &Value) -> Result<TimeLimit, String> {
        match value {
            Value::Null => Ok(TimeLimit::default()),
            Value::Array(items) if items.len() <= 2 => {
                let get = |i: usize| -> Result<Option<f64>, String> {
                    match items.get(i) {
                        None | Some(Value::Null) => Ok(None),
                        Some(Value::Number(n)) => match n.as_f64() {
                            Some(f) if f >= 0.0 => Ok(Some(f)),
                            _ => Err(format!("limit {n} is not a non-negative number")),
                        },
                        Some(other) => Err(format!("limit must be a number or null, got {}", describe(other))),
                    }
                };
                Ok(TimeLimit { hard: get(0)?, soft: get(1)? })
            }
            other => Err(format!("must be [hard, soft], got {}", describe(other))),
        }
    }
}

fn seconds_value(s: Option<f64>) -> Value {
    match s {
        None => Value::Null,
        Some(f) if f.fract() == 0.0 && f.abs() < 9_007_199_254_740_992.0 => Value::from(f as i64),
        Some(f) => serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number),
    }
}

/// The `embed` part of a v2 body: workflow continuations, as raw signatures.
///
/// A signature is `{"task", "args", "kwargs", "options", "subtask_type",
/// "immutable"}`. `chain` holds the remaining steps in reverse order (the
/// next step is the last element); `Some(vec![])` and `None` are different
/// on the wire (`[]` vs `null`) and are kept apart.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Embed {
    /// `link=` signatures, run with the result on success.
    pub callbacks: Option<Vec<Value>>,
    /// `link_error=` signatures, run on failure.
    pub errbacks: Option<Vec<Value>>,
    /// Remaining chain steps, reversed.
    pub chain: Option<Vec<Value>>,
    /// The chord body this task is a header member of.
    pub chord: Option<Value>,
}

impl Embed {
    /// `{"callbacks", "errbacks", "chain", "chord"}` in Celery's order.
    pub fn to_value(&self) -> Value {
        let list = |l: &Option<Vec<Value>>| l.as_ref().map_or(Value::Null, |v| Value::Array(v.clone()));
        let mut m = Map::new();
        m.insert("callbacks".to_owned(), list(&self.callbacks));
        m.insert("errbacks".to_owned(), list(&self.errbacks));
        m.insert("chain".to_owned(), list(&self.chain));
        m.insert("chord".to_owned(), self.chord.clone().unwrap_or(Value::Null));
        Value::Object(m)
    }

    /// Read an embed object; null or `{}` give an empty embed.
    pub fn from_value(value: &Value) -> Result<Embed, String> {
        let obj = match value {
            Value::Null => return Ok(Embed::default()),
            Value::Object(o) => o,
            other => return Err(format!("must be an object, got {}", describe(other))),
        };
        let list = |key: &str| -> Result<Option<Vec<Value>>, String> {
            match obj.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::Array(a)) => Ok(Some(a.clone())),
                Some(other) => Err(format!("`{key}` must be a list of signatures, got {}", describe(other))),
            }
        };
        Ok(Embed {
            callbacks: list("callbacks")?,
            errbacks: list("errbacks")?,
            chain: list("chain")?,
            chord: obj.get("chord").filter(|v| !v.is_null()).cloned(),
        })
    }

    /// True when there is nothing to run after the task.
    pub fn is_empty(&self) -> bool {
        self.callbacks.as_ref().is_none_or(Vec::is_empty)
            && self.errbacks.as_ref().is_none_or(Vec::is_empty)
            && self.chain.as_ref().is_none_or(Vec::is_empty)
            && self.chord.is_none()
    }
}

/// A decoded task message (either protocol version).
#[derive(Debug, Clone, PartialEq)]
pub struct TaskMessage {
    /// Task id (uuid string); the result key is built from it.
    pub id: String,
    /// Registered task name, e.g. `tasks.add`.
    pub task: String,
    /// Positional arguments.
    pub args: Vec<Value>,
    /// Keyword arguments, in wire order.
    pub kwargs: Map<String, Value>,
    /// Callbacks, errbacks, chain and chord.
    pub embed: Embed,
    /// Do not run before this time.
    pub eta: Option<DateTime<Utc>>,
    /// Do not run after this time (store REVOKED "expired" instead).
    pub expires: Option<DateTime<Utc>>,
    /// How many times the task was retried so far.
    pub retries: u32,
    /// Hard / soft time limits.
    pub timelimit: TimeLimit,
    /// First task of the workflow.
    pub root_id: Option<String>,
    /// Task that published this one.
    pub parent_id: Option<String>,
    /// Group (or chord header) id.
    pub group: Option<String>,
    /// Position inside the group.
    pub group_index: Option<u64>,
    /// When true, no result is stored.
    pub ignore_result: bool,
    /// Alternative name for logs.
    pub shadow: Option<String>,
    /// Python repr of args, for logs / events.
    pub argsrepr: Option<String>,
    /// Python repr of kwargs, for logs / events.
    pub kwargsrepr: Option<String>,
    /// `gen<pid>@<host>` of the producer.
    pub origin: Option<String>,
    /// All headers (for v1: synthesised from the body like Celery does), for
    /// pass-through and for the task's request context.
    pub headers: Map<String, Value>,
    /// The message's content type as delivered.
    pub content_type: String,
    /// The serializer that decoded the body (reuse it to republish).
    pub serializer: Serializer,
    /// Which protocol the message used.
    pub protocol: ProtocolVersion,
    /// Delivery details.
    pub delivery: DeliveryInfo,
    /// The args and kwargs JSON texts as sent, when they hold an int wider
    /// than 64 bits, which `args`/`kwargs` can only hold rounded to a float
    /// (see [`bigint`](super::bigint)): the task gets these instead.
    pub wide_args: Option<(String, String)>,
}

impl TaskMessage {
    /// Decode a transport-neutral message. The content type is checked
    /// against `accept` before the body is deserialised.
    pub fn decode(raw: RawMessage, accept: &AcceptContent) -> Result<TaskMessage, ProtocolError> {
        let RawMessage { mut headers, body, content_type, content_encoding: _, delivery } = raw;
        let mut partial = partial_from(&headers, delivery.correlation_id.as_deref());
        let limits = *accept.limits();
        let too_large = |what, size, limit, setting, partial: &Partial| {
            (size > limit).then(|| ProtocolError::TooLarge { what, size, limit, setting, partial: partial.clone() })
        };
        if let Some(e) = too_large("the body", body.len(), limits.max_body, "max_size", &partial)
            .or_else(|| too_large("the header count", headers.len(), limits.max_headers, "max_headers", &partial))
            .or_else(|| {
                let bytes = headers.iter().map(|(k, v)| k.len() + text_size(v)).sum();
                too_large("the headers' size", bytes, limits.max_header_bytes, "max_header_size", &partial)
            })
        {
            return Err(e);
        }

        let (serializer, body) = match accept.open_signed(content_type.as_deref(), &body) {
            Some(Ok(opened)) => opened,
            Some(Err(reason)) => return Err(ProtocolError::Signature { reason, partial }),
            None => (
                accept.check(content_type.as_deref()).map_err(|content_type| ProtocolError::ContentDisallowed {
                    content_type,
                    partial: partial.clone(),
                })?,
                body,
            ),
        };
        let payload = serializer.decode(&body).map_err(|reason| ProtocolError::BodyDecode {
            content_type: serializer.content_type().to_owned(),
            reason,
            partial: partial.clone(),
        })?;

        let is_v2 = headers.get("task").and_then(Value::as_str).is_some_and(|t| !t.is_empty());
        let wide_args = if is_v2 && serializer == Serializer::Json { super::bigint::wide_args(&body) } else { None };
        let (protocol, args, kwargs, embed) = if is_v2 {
            let (args, kwargs, embed) = split_v2_body(payload, &partial)?;
            (ProtocolVersion::V2, args, kwargs, embed)
        } else {
            match payload {
                Value::Object(body) => {
                    let (synth, args, kwargs, embed) = hybrid_to_proto2(body, headers);
                    headers = synth;
                    partial = partial_from(&headers, delivery.correlation_id.as_deref());
                    (ProtocolVersion::V1, args, kwargs, embed)
                }
                Value::Array(_) => {
                    return Err(ProtocolError::MissingField { field: "task", partial });
                }
                other => {
                    return Err(ProtocolError::BodyShape { found: describe(&other), partial });
                }
            }
        };

        let args = match args {
            Value::Array(a) => a,
            other => {
                return Err(ProtocolError::ArgsNotList { found: describe(&other), partial });
            }
        };
        let kwargs = match kwargs {
            Value::Object(m) => m,
            other => {
                return Err(ProtocolError::KwargsNotObject { found: describe(&other), partial });
            }
        };
        if let Some(e) =
            too_large("the argument count", args.len() + kwargs.len(), limits.max_args, "max_args", &partial)
        {
            return Err(e);
        }
        let embed = Embed::from_value(&embed).map_err(|reason| ProtocolError::InvalidField {
            field: "embed".to_owned(),
            reason,
            partial: partial.clone(),
        })?;

        let h = Fields { headers: &headers, partial: &partial };
        let id = h.required("id")?;
        let task = h.required("task")?;
        let eta = h.datetime("eta")?;
        let expires = h.datetime("expires")?;
        let retries = h
            .uint("retries")?
            .map_or(Ok(0), |r| u32::try_from(r).map_err(|_| h.invalid("retries", format!("{r} is too large"))))?;
        let timelimit = match headers.get("timelimit") {
            None => TimeLimit::default(),
            Some(v) => TimeLimit::from_value(v).map_err(|reason| h.invalid("timelimit", reason))?,
        };
        let root_id = h.id_like("root_id")?;
        let parent_id = h.id_like("parent_id")?;
        let group = h.id_like("group")?;
        let group_index = h.uint("group_index")?;
        let ignore_result = match headers.get("ignore_result") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(other) => {
                return Err(h.invalid("ignore_result", format!("must be a boolean, got {}", describe(other))));
            }
        };
        let shadow = h.display("shadow");
        let argsrepr = h.display("argsrepr");
        let kwargsrepr = h.display("kwargsrepr");
        let origin = h.display("origin");

        Ok(TaskMessage {
            id,
            task,
            args,
            kwargs,
            embed,
            eta,
            expires,
            retries,
            timelimit,
            root_id,
            parent_id,
            group,
            group_index,
            ignore_result,
            shadow,
            argsrepr,
            kwargsrepr,
            origin,
            headers,
            content_type: content_type.unwrap_or_default(),
            serializer,
            protocol,
            delivery,
            wide_args,
        })
    }

    /// Decode a task message from a kombu Redis envelope.
    pub fn from_envelope(envelope: &Envelope, accept: &AcceptContent) -> Result<TaskMessage, ProtocolError> {
        Self::decode(envelope.to_raw_message()?, accept)
    }

    /// The name to show in logs: `shadow` when set, else the task name.
    pub fn display_name(&self) -> &str {
        self.shadow.as_deref().filter(|s| !s.is_empty()).unwrap_or(&self.task)
    }

    /// True when `expires` is set and is not after `now`.
    pub fn is_expired(&self, now: DateTime<Utc>) -> bool {
        self.expires.is_some_and(|e| e <= now)
    }

    /// Headers that are not Celery's own (custom `apply_async(headers=...)`
    /// keys), without kombu's `redelivered` mark.
    pub fn custom_headers(&self) -> Map<String, Value> {
        self.headers
            .iter()
            .filter(|(k, _)| !STANDARD_HEADERS.contains(&k.as_str()) && k.as_str() != "redelivered")
            .filter(|(k, _)| self.protocol == ProtocolVersion::V2 || !V1_SYNTH_HEADERS.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// A [`NewTask`] that re-encodes this message as Celery would publish it
    /// (same id, options and headers). The caller adjusts what it needs (a
    /// retry bumps `retries`, sets `eta` and `parent_id`).
    pub fn to_new_task(&self) -> NewTask {
        let h = &self.headers;
        let options = TaskOptions {
            queue: self.delivery.routing_key.clone(),
            exchange: self.delivery.exchange.clone(),
            eta: self.eta,
            expires: self.expires,
            expiration_ms: None,
            priority: self.delivery.priority,
            retries: self.retries,
            root_id: self.root_id.clone(),
            parent_id: self.parent_id.clone(),
            group: self.group.clone(),
            group_index: self.group_index,
            ignore_result: self.ignore_result,
            shadow: self.shadow.clone(),
            timelimit: self.timelimit,
            embed: self.embed.clone(),
            headers: self.custom_headers(),
            reply_to: self.delivery.reply_to.clone(),
            origin: self.origin.clone(),
            property_origin: None,
            argsrepr: self.argsrepr.clone(),
            kwargsrepr: self.kwargsrepr.clone(),
            replaced_task_nesting: h.get("replaced_task_nesting").and_then(Value::as_u64).unwrap_or(0),
            stamped_headers: h.get("stamped_headers").filter(|v| !v.is_null()).cloned(),
            stamps: h.get("stamps").and_then(Value::as_object).cloned().unwrap_or_default(),
            serializer: self.serializer,
            delivery_mode: 2,
        };
        NewTask {
            id: self.id.clone(),
            name: self.task.clone(),
            args: self.args.clone(),
            kwargs: self.kwargs.clone(),
            options,
        }
    }
}

/// Header keys synthesised by `hybrid_to_proto2` that v2 does not write.
const V1_SYNTH_HEADERS: &[&str] = &["meth"];

fn partial_from(headers: &Map<String, Value>, correlation_id: Option<&str>) -> Partial {
    let get = |k: &str| headers.get(k).and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_owned);
    Partial { id: get("id").or_else(|| correlation_id.map(str::to_owned)), task: get("task") }
}

/// Split a v2 body into (args, kwargs, embed).
fn split_v2_body(payload: Value, partial: &Partial) -> Result<(Value, Value, Value), ProtocolError> {
    match payload {
        Value::Array(items) if items.len() == 3 => {
            let mut it = items.into_iter();
            match (it.next(), it.next(), it.next()) {
                (Some(a), Some(k), Some(e)) => Ok((a, k, e)),
                _ => Err(ProtocolError::BodyShape { found: "a short list".to_owned(), partial: partial.clone() }),
            }
        }
        other => Err(ProtocolError::BodyShape { found: describe(&other), partial: partial.clone() }),
    }
}

/// Celery's `hybrid_to_proto2`: v2 headers synthesised from a v1 body dict,
/// message headers merged on top; plus args, kwargs and embed. `group`
/// falls back to the older `taskset` key, and `group_index` is carried over
/// when present (Celery drops it).
fn hybrid_to_proto2(
    mut body: Map<String, Value>,
    message_headers: Map<String, Value>,
) -> (Map<String, Value>, Value, Value, Value) {
    let mut take = |k: &str| body.shift_remove(k);
    let args = take("args").unwrap_or_else(|| Value::Array(Vec::new()));
    let kwargs = take("kwargs").unwrap_or_else(|| Value::Object(Map::new()));
    let mut embed = Map::new();
    embed.insert("callbacks".to_owned(), take("callbacks").unwrap_or(Value::Null));
    embed.insert("errbacks".to_owned(), take("errbacks").unwrap_or(Value::Null));
    embed.insert("chord".to_owned(), take("chord").unwrap_or(Value::Null));
    embed.insert("chain".to_owned(), Value::Null);

    let mut headers = Map::new();
    for key in ["lang", "task", "id", "root_id", "parent_id", "group", "meth", "shadow", "eta", "expires"] {
        headers.insert(key.to_owned(), body.get(key).cloned().unwrap_or(Value::Null));
    }
    if headers.get("group").is_none_or(Value::is_null)
        && let Some(ts) = body.get("taskset").filter(|v| !v.is_null())
    {
        headers.insert("group".to_owned(), ts.clone());
    }
    headers.insert("retries".to_owned(), body.get("retries").cloned().unwrap_or_else(|| Value::from(0)));
    headers.insert(
        "timelimit".to_owned(),
        body.get("timelimit").cloned().unwrap_or_else(|| Value::Array(vec![Value::Null, Value::Null])),
    );
    for key in ["argsrepr", "kwargsrepr", "origin"] {
        headers.insert(key.to_owned(), body.get(key).cloned().unwrap_or(Value::Null));
    }
    if let Some(gi) = body.get("group_index") {
        headers.insert("group_index".to_owned(), gi.clone());
    }
    for (k, v) in message_headers {
        headers.insert(k, v);
    }
    (headers, args, kwargs, Value::Object(embed))
}

/// Typed access to header fields, producing errors that carry the partial.
struct Fields<'a> {
    headers: &'a Map<String, Value>,
    partial: &'a Partial,
}

impl Fields<'_> {
    fn invalid(&self, field: &str, reason: String) -> ProtocolError {
        ProtocolError::InvalidField { field: field.to_owned(), reason, partial: self.partial.clone() }
    }

    /// A non-empty string that must be present (`id`, `task`).
    fn required(&self, field: &'static str) -> Result<String, ProtocolError> {
        match self.headers.get(field) {
            None | Some(Value::Null) => Err(ProtocolError::MissingField { field, partial: self.partial.clone() }),
            Some(Value::String(s)) if s.is_empty() => {
                Err(ProtocolError::MissingField { field, partial: self.partial.clone() })
            }
            Some(Value::String(s)) => Ok(s.clone()),
            Some(other) => Err(self.invalid(field, format!("must be a string, got {}", describe(other)))),
        }
    }

    /// An optional id-like string: absent, null or empty mean `None`.
    fn id_like(&self, field: &str) -> Result<Option<String>, ProtocolError> {
        match self.headers.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.is_empty() => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(self.invalid(field, format!("must be a string or null, got {}", describe(other)))),
        }
    }

    /// A display-only string; anything that is not a string is ignored.
    fn display(&self, field: &str) -> Option<String> {
        self.headers.get(field).and_then(Value::as_str).map(str::to_owned)
    }

    /// An optional non-negative integer.
    fn uint(&self, field: &str) -> Result<Option<u64>, ProtocolError> {
        match self.headers.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => match n.as_u64() {
                Some(u) => Ok(Some(u)),
                None => Err(self.invalid(field, format!("{n} is not a non-negative integer"))),
            },
            Some(other) => Err(self.invalid(field, format!("must be an integer, got {}", describe(other)))),
        }
    }

    /// An optional ISO-8601 timestamp.
    fn datetime(&self, field: &str) -> Result<Option<DateTime<Utc>>, ProtocolError> {
        match self.headers.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if s.is_empty() => Ok(None),
            Some(Value::String(s)) => {
                parse_datetime(s).map(Some).ok_or_else(|| self.invalid(field, format!("{s:?} is not an ISO-8601 time")))
            }
            Some(other) => Err(self.invalid(field, format!("must be an ISO-8601 string, got {}", describe(other)))),
        }
    }
}

// ---------------------------------------------------------------------------
// Encoding
// ---------------------------------------------------------------------------

/// The `apply_async` options that end up in a published message.
///
/// Defaults match `add.delay(...)` on a default Celery app: queue `celery`,
/// default exchange `""`, JSON, persistent delivery, no eta / expiry / limits.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskOptions {
    /// Queue name; used as the routing key on the default exchange.
    pub queue: String,
    /// Exchange name (`""` = default exchange, the only one Redis tasks use).
    pub exchange: String,
    /// Run no earlier than this (a countdown must be converted by the caller).
    pub eta: Option<DateTime<Utc>>,
    /// Discard after this.
    pub expires: Option<DateTime<Utc>>,
    /// `properties.expiration` in milliseconds. When `None` and `expires` is
    /// set, it is computed as `expires - now` (floored at 0), like Celery.
    pub expiration_ms: Option<u64>,
    /// Message priority (Redis: 0 is served first; AMQP: 255 is).
    pub priority: Option<u8>,
    /// Retry count carried by the message.
    pub retries: u32,
    /// Workflow root; defaults to the task's own id.
    pub root_id: Option<String>,
    /// The task that published this one.
    pub parent_id: Option<String>,
    /// Group / chord id.
    pub group: Option<String>,
    /// Position in the group.
    pub group_index: Option<u64>,
    /// Ask workers not to store a result.
    pub ignore_result: bool,
    /// Alternative name for logs.
    pub shadow: Option<String>,
    /// Hard / soft time limits.
    pub timelimit: TimeLimit,
    /// Callbacks, errbacks, chain, chord.
    pub embed: Embed,
    /// Custom headers, merged after Celery's own (and overriding them, as
    /// `headers2.update(headers)` does in Celery).
    pub headers: Map<String, Value>,
    /// `properties.reply_to`; Celery writes `""` when unset.
    pub reply_to: Option<String>,
    /// `headers.origin`; defaults to [`default_origin`].
    pub origin: Option<String>,
    /// `properties.origin`: only Celery's `Task.retry` re-publish sets it.
    pub property_origin: Option<String>,
    /// Override for `headers.argsrepr` (else computed with Celery's saferepr).
    pub argsrepr: Option<String>,
    /// Override for `headers.kwargsrepr`.
    pub kwargsrepr: Option<String>,
    /// `headers.replaced_task_nesting`.
    pub replaced_task_nesting: u64,
    /// `headers.stamped_headers` (`null` when `None`).
    pub stamped_headers: Option<Value>,
    /// `headers.stamps`.
    pub stamps: Map<String, Value>,
    /// Body serializer.
    pub serializer: Serializer,
    /// `properties.delivery_mode` (2 = persistent).
    pub delivery_mode: u8,
}

impl Default for TaskOptions {
    fn default() -> Self {
        TaskOptions {
            queue: DEFAULT_QUEUE.to_owned(),
            exchange: String::new(),
            eta: None,
            expires: None,
            expiration_ms: None,
            priority: None,
            retries: 0,
            root_id: None,
            parent_id: None,
            group: None,
            group_index: None,
            ignore_result: false,
            shadow: None,
            timelimit: TimeLimit::default(),
            embed: Embed::default(),
            headers: Map::new(),
            reply_to: None,
            origin: None,
            property_origin: None,
            argsrepr: None,
            kwargsrepr: None,
            replaced_task_nesting: 0,
            stamped_headers: None,
            stamps: Map::new(),
            serializer: Serializer::Json,
            delivery_mode: 2,
        }
    }
}

/// A task to publish.
#[derive(Debug, Clone, PartialEq)]
pub struct NewTask {
    /// Task id.
    pub id: String,
    /// Registered task name.
    pub name: String,
    /// Positional arguments.
    pub args: Vec<Value>,
    /// Keyword arguments.
    pub kwargs: Map<String, Value>,
    /// Everything else.
    pub options: TaskOptions,
}

impl NewTask {
    /// A task with a fresh uuid4 id and default options.
    pub fn new(name: impl Into<String>, args: Vec<Value>, kwargs: Map<String, Value>) -> NewTask {
        NewTask {
            id: uuid::Uuid::new_v4().to_string(),
            name: name.into(),
            args,
            kwargs,
            options: TaskOptions::default(),
        }
    }

    /// The protocol-2 headers, in Celery 5.7's order, custom headers last.
    pub fn headers(&self) -> Map<String, Value> {
        let o = &self.options;
        let opt_str = |s: &Option<String>| s.as_ref().map_or(Value::Null, |s| Value::String(s.clone()));
        let opt_time = |t: &Option<DateTime<Utc>>| t.as_ref().map_or(Value::Null, |t| Value::String(isoformat(t)));
        let root_id = o.root_id.as_ref().filter(|r| !r.is_empty()).unwrap_or(&self.id);
        let mut h = Map::new();
        h.insert("lang".to_owned(), Value::from("py"));
        h.insert("task".to_owned(), Value::String(self.name.clone()));
        h.insert("id".to_owned(), Value::String(self.id.clone()));
        h.insert("shadow".to_owned(), opt_str(&o.shadow));
        h.insert("eta".to_owned(), opt_time(&o.eta));
        h.insert("expires".to_owned(), opt_time(&o.expires));
        h.insert("group".to_owned(), opt_str(&o.group));
        h.insert("group_index".to_owned(), o.group_index.map_or(Value::Null, Value::from));
        h.insert("retries".to_owned(), Value::from(o.retries));
        h.insert("timelimit".to_owned(), o.timelimit.to_value());
        h.insert("root_id".to_owned(), Value::String(root_id.clone()));
        h.insert("parent_id".to_owned(), opt_str(&o.parent_id));
        h.insert("argsrepr".to_owned(), Value::String(o.argsrepr.clone().unwrap_or_else(|| args_repr(&self.args))));
        h.insert(
            "kwargsrepr".to_owned(),
            Value::String(o.kwargsrepr.clone().unwrap_or_else(|| kwargs_repr(&self.kwargs))),
        );
        h.insert("origin".to_owned(), Value::String(o.origin.clone().unwrap_or_else(default_origin)));
        h.insert("ignore_result".to_owned(), Value::Bool(o.ignore_result));
        h.insert("replaced_task_nesting".to_owned(), Value::from(o.replaced_task_nesting));
        h.insert("stamped_headers".to_owned(), o.stamped_headers.clone().unwrap_or(Value::Null));
        h.insert("stamps".to_owned(), Value::Object(o.stamps.clone()));
        for (k, v) in &o.headers {
            h.insert(k.clone(), v.clone());
        }
        h
    }

    /// The fields of its `task-sent` event, as Celery's `send_task_message`
    /// fills them: `uuid, root_id, parent_id, name, args, kwargs, retries,
    /// eta, expires` (reprs as in the headers), then `queue, exchange, routing_key`.
    pub fn sent_event_fields(&self) -> Map<String, Value> {
        let h = self.headers();
        let o = &self.options;
        let mut f = Map::new();
        f.insert("uuid".to_owned(), Value::String(self.id.clone()));
        for (field, header) in [
            ("root_id", "root_id"),
            ("parent_id", "parent_id"),
            ("name", "task"),
            ("args", "argsrepr"),
            ("kwargs", "kwargsrepr"),
            ("retries", "retries"),
            ("eta", "eta"),
            ("expires", "expires"),
        ] {
            f.insert(field.to_owned(), h.get(header).cloned().unwrap_or(Value::Null));
        }
        f.insert("queue".to_owned(), Value::String(o.queue.clone()));
        f.insert("exchange".to_owned(), Value::String(o.exchange.clone()));
        // The queue name is the routing key, on the default exchange and on a routed one.
        f.insert("routing_key".to_owned(), Value::String(o.queue.clone()));
        f
    }

    /// The protocol-2 body value: `[args, kwargs, embed]`.
    pub fn body_value(&self) -> Value {
        Value::Array(vec![
            Value::Array(self.args.clone()),
            Value::Object(self.kwargs.clone()),
            self.options.embed.to_value(),
        ])
    }

    /// The message properties Celery hands to kombu (before the transport
    /// adds `delivery_info`, `priority`, `body_encoding`, `delivery_tag`):
    /// `correlation_id`, `reply_to`, [`origin`], `delivery_mode`, [`expiration`].
    pub fn properties(&self) -> Map<String, Value> {
        let o = &self.options;
        let mut p = Map::new();
        p.insert("correlation_id".to_owned(), Value::String(self.id.clone()));
        p.insert("reply_to".to_owned(), Value::String(o.reply_to.clone().unwrap_or_default()));
        if let Some(origin) = &o.property_origin {
            p.insert("origin".to_owned(), Value::String(origin.clone()));
        }
        p.insert("delivery_mode".to_owned(), Value::from(o.delivery_mode));
        let expiration = o
            .expiration_ms
            .or_else(|| o.expires.map(|e| u64::try_from((e - Utc::now()).num_milliseconds()).unwrap_or(0)));
        if let Some(ms) = expiration {
            p.insert("expiration".to_owned(), Value::String(ms.to_string()));
        }
        p
    }

    /// Serialise everything.
    pub fn encode(&self) -> Result<EncodedTask, ProtocolError> {
        Ok(EncodedTask {
            id: self.id.clone(),
            headers: self.headers(),
            properties: self.properties(),
            body: self.options.serializer.encode(&self.body_value())?,
            serializer: self.options.serializer,
            exchange: self.options.exchange.clone(),
            routing_key: self.options.queue.clone(),
            priority: self.options.priority,
            signed: false,
        })
    }
}

/// A serialised task, ready for any broker.
#[derive(Debug, Clone, PartialEq)]
pub struct EncodedTask {
    /// Task id (also `properties.correlation_id`).
    pub id: String,
    /// Task headers.
    pub headers: Map<String, Value>,
    /// Message properties (AMQP-style, see [`NewTask::properties`]).
    pub properties: Map<String, Value>,
    /// Serialised body bytes (not base64).
    pub body: Vec<u8>,
    /// The serializer used.
    pub serializer: Serializer,
    /// Exchange to publish to.
    pub exchange: String,
    /// Routing key (queue name on the default exchange).
    pub routing_key: String,
    /// Priority, if any.
    pub priority: Option<u8>,
    /// Whether `body` is the `auth` serializer's signed form of the
    /// `serializer`'s bytes (see [`EncodedTask::sign`]).
    pub signed: bool,
}

impl EncodedTask {
    /// `application/json` or `application/x-msgpack` (`application/data`
    /// once signed).
    pub fn content_type(&self) -> &'static str {
        if self.signed { super::auth::CONTENT_TYPE_AUTH } else { self.serializer.content_type() }
    }

    /// `utf-8` or `binary` (`utf-8` once signed).
    pub fn content_encoding(&self) -> &'static str {
        if self.signed { "utf-8" } else { self.serializer.content_encoding() }
    }

    /// Sign the body as Celery's `auth` serializer does
    /// (`task_serializer = "auth"`). Signing twice signs once.
    pub fn sign(mut self, signer: &dyn super::auth::Signer) -> Self {
        if !self.signed {
            let signed = signer.sign(self.serializer.content_type(), self.serializer.content_encoding(), &self.body);
            self.body = signed.pack();
            self.signed = true;
        }
        self
    }

    /// The kombu Redis envelope: properties plus `delivery_info`,
    /// `priority` (0 when unset), `body_encoding` and `delivery_tag` (a new
    /// uuid4 unless given).
    pub fn to_envelope(&self, delivery_tag: Option<String>) -> Envelope {
        let mut props = self.properties.clone();
        let mut info = Map::new();
        info.insert("exchange".to_owned(), Value::String(self.exchange.clone()));
        info.insert("routing_key".to_owned(), Value::String(self.routing_key.clone()));
        props.insert("delivery_info".to_owned(), Value::Object(info));
        props.insert("priority".to_owned(), Value::from(self.priority.unwrap_or(0)));
        props.insert("body_encoding".to_owned(), Value::from("base64"));
        props.insert(
            "delivery_tag".to_owned(),
            Value::String(delivery_tag.unwrap_or_else(|| uuid::Uuid::new_v4().to_string())),
        );
        Envelope::new(&self.body, self.content_type(), self.content_encoding(), self.headers.clone(), props)
    }

    /// The bytes to LPUSH on Redis (with a fresh delivery tag).
    pub fn to_redis_bytes(&self) -> Vec<u8> {
        self.to_envelope(None).to_bytes()
    }
}

/// The bytes of text a JSON value holds (keys and strings; 8 per other
/// scalar): a cheap stand-in for its serialized size, for the header bound.
fn text_size(v: &Value) -> usize {
    match v {
        Value::String(s) => s.len(),
        Value::Array(a) => a.iter().map(text_size).sum::<usize>() + 2,
        Value::Object(m) => m.iter().map(|(k, v)| k.len() + text_size(v)).sum::<usize>() + 2,
        _ => 8,
    }
}

/// Celery's `anon_nodename()`: `gen<pid>@<hostname>`.
pub fn default_origin() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| "localhost".to_owned());
    format!("gen{}@{host}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn v2_raw(headers: Value, body: &[u8]) -> RawMessage {
        RawMessage {
            headers: headers.as_object().cloned().unwrap_or_default(),
            body: body.to_vec(),
            content_type: Some("application/json".to_owned()),
            content_encoding: Some("utf-8".to_owned()),
            delivery: DeliveryInfo { correlation_id: Some("cid".to_owned()), ..DeliveryInfo::default() },
        }
    }

    fn accept() -> AcceptContent {
        AcceptContent::default()
    }

    #[test]
    fn a_message_over_a_bound_is_refused_naming_the_bound_and_the_task() {
        let small =
            super::super::content::MessageLimits { max_body: 64, max_headers: 3, max_header_bytes: 40, max_args: 2 };
        let limited = AcceptContent::default().with_limits(small);
        let decode = |h: Value, body: &[u8]| TaskMessage::decode(v2_raw(h, body), &limited);
        let ok = decode(json!({"task": "tasks.add", "id": "abc"}), b"[[1, 2], {}, {}]");
        assert!(ok.is_ok(), "{ok:?}");
        let setting = |r: Result<TaskMessage, ProtocolError>| match r {
            Err(e @ ProtocolError::TooLarge { setting, .. }) => {
                assert_eq!(e.task_id(), Some("abc"), "{e}");
                setting
            }
            other => panic!("expected TooLarge, got {other:?}"),
        };
        let big_body = format!("[[\"{}\"], {{}}, {{}}]", "x".repeat(64));
        assert_eq!(setting(decode(json!({"task": "t", "id": "abc"}), big_body.as_bytes())), "max_size");
        let many = json!({"task": "t", "id": "abc", "a": 1, "b": 2});
        assert_eq!(setting(decode(many, b"[[], {}, {}]")), "max_headers");
        let long = json!({"task": "t", "id": "abc", "argsrepr": "y".repeat(40)});
        assert_eq!(setting(decode(long, b"[[], {}, {}]")), "max_header_size");
        assert_eq!(setting(decode(json!({"task": "t", "id": "abc"}), b"[[1, 2], {\"k\": 3}, {}]")), "max_args");
        let message = decode(json!({"task": "t", "id": "abc"}), b"[[1, 2, 3], {}, {}]").unwrap_err().to_string();
        assert!(message.contains("the argument count is 3, the limit is 2 (message_limits.max_args)"), "{message}");
    }

    #[test]
    fn minimal_v2_message() {
        let raw = v2_raw(json!({"task": "tasks.add", "id": "abc"}), b"[[1, 2], {}, {}]");
        let m = TaskMessage::decode(raw, &accept()).unwrap();
        assert_eq!((m.id.as_str(), m.task.as_str()), ("abc", "tasks.add"));
        assert_eq!(m.args, vec![json!(1), json!(2)]);
        assert_eq!(m.protocol, ProtocolVersion::V2);
        assert_eq!(m.retries, 0);
        assert!(m.embed.is_empty());
        assert_eq!(m.timelimit, TimeLimit::default());
        assert!(!m.ignore_result);
    }

    #[test]
    fn two_element_body_is_rejected_with_partial() {
        let raw = v2_raw(json!({"task": "tasks.add", "id": "abc"}), b"[[1, 2], {}]");
        let err = TaskMessage::decode(raw, &accept()).unwrap_err();
        assert!(matches!(err, ProtocolError::BodyShape { .. }), "{err}");
        assert_eq!(err.task_id(), Some("abc"));
        assert_eq!(err.task_name(), Some("tasks.add"));
        assert!(err.to_string().contains("a list of 2 elements"), "{err}");
    }

    #[test]
    fn shape_errors() {
        let h = json!({"task": "t", "id": "i"});
        let cases: &[(&[u8], &str)] = &[
            (b"{\"a\": 1}", "BodyShape"),
            (b"[5, {}, {}]", "ArgsNotList"),
            (b"[[], [], {}]", "KwargsNotObject"),
            (b"[[], {}, 7]", "InvalidField"),
            (b"[[], {}, {\"callbacks\": 3}]", "InvalidField"),
            (b"[[], {}", "BodyDecode"),
            (b"\"str\"", "BodyShape"),
        ];
        for (body, want) in cases {
            let err = TaskMessage::decode(v2_raw(h.clone(), body), &accept()).unwrap_err();
            assert!(format!("{err:?}").starts_with(want), "{err:?} for {}", String::from_utf8_lossy(body));
            assert_eq!(err.task_id(), Some("i"));
        }
    }

    #[test]
    fn missing_id_and_task() {
        // No id header: the correlation id is still reported as the likely id.
        let err = TaskMessage::decode(v2_raw(json!({"task": "t"}), b"[[], {}, {}]"), &accept()).unwrap_err();
        assert!(matches!(err, ProtocolError::MissingField { field: "id", .. }), "{err}");
        assert_eq!(err.task_id(), Some("cid"));
        // No task header and a list body: not v1, so the task name is missing.
        let err = TaskMessage::decode(v2_raw(json!({"id": "i"}), b"[[], {}, {}]"), &accept()).unwrap_err();
        assert!(matches!(err, ProtocolError::MissingField { field: "task", .. }), "{err}");
        assert_eq!(err.task_id(), Some("i"));
        // Wrong types.
        let err = TaskMessage::decode(v2_raw(json!({"task": "t", "id": 5}), b"[[], {}, {}]"), &accept()).unwrap_err();
        assert!(matches!(err, ProtocolError::InvalidField { .. }), "{err}");
    }

    #[test]
    fn header_type_errors() {
        for (k, v) in [
            ("eta", json!("tomorrow")),
            ("eta", json!(5)),
            ("retries", json!(-1)),
            ("retries", json!("1")),
            ("timelimit", json!([1, 2, 3])),
            ("timelimit", json!(["a", null])),
            ("group_index", json!(1.5)),
            ("ignore_result", json!("yes")),
            ("parent_id", json!(7)),
        ] {
            let mut h = json!({"task": "t", "id": "i"});
            h[k] = v.clone();
            let err = TaskMessage::decode(v2_raw(h, b"[[], {}, {}]"), &accept()).unwrap_err();
            assert!(matches!(&err, ProtocolError::InvalidField { field, .. } if field == k), "{k}={v}: {err}");
        }
    }

    #[test]
    fn lenient_header_values() {
        let h = json!({"task": "t", "id": "i", "eta": "", "parent_id": "", "argsrepr": 5,
                       "timelimit": [10], "ignore_result": null});
        let m = TaskMessage::decode(v2_raw(h, b"[[], {}, null]"), &accept()).unwrap();
        assert_eq!(m.eta, None);
        assert_eq!(m.parent_id, None);
        assert_eq!(m.argsrepr, None);
        assert_eq!(m.timelimit, TimeLimit { hard: Some(10.0), soft: None });
        assert!(m.embed.is_empty());
    }

    #[test]
    fn content_disallowed_keeps_id_and_name() {
        let mut raw = v2_raw(json!({"task": "tasks.add", "id": "abc"}), b"\x80\x04K\x01.");
        raw.content_type = Some("application/x-python-serialize".to_owned());
        let all = AcceptContent::new(["json", "msgpack", "pickle"]);
        let err = TaskMessage::decode(raw, &all).unwrap_err();
        match &err {
            ProtocolError::ContentDisallowed { content_type, partial } => {
                assert_eq!(content_type, "application/x-python-serialize");
                assert_eq!(partial, &Partial { id: Some("abc".into()), task: Some("tasks.add".into()) });
            }
            other => panic!("unexpected {other:?}"),
        }
        // msgpack not in the accepted list.
        let mut raw = v2_raw(json!({"task": "tasks.add", "id": "abc"}), b"\x93\x90\x80\x80");
        raw.content_type = Some("application/x-msgpack".to_owned());
        assert!(matches!(TaskMessage::decode(raw.clone(), &accept()), Err(ProtocolError::ContentDisallowed { .. })));
        assert!(TaskMessage::decode(raw, &AcceptContent::all()).is_ok());
    }

    #[test]
    fn v1_body_with_taskset_and_headers() {
        let raw = v2_raw(
            json!({"custom": 1}),
            br#"{"task": "tasks.add", "id": "v1id", "args": [1], "kwargs": {"a": 2}, "taskset": "g1",
                "eta": "2030-01-02T03:04:05", "callbacks": [{"task": "x"}], "retries": 2}"#,
        );
        let m = TaskMessage::decode(raw, &accept()).unwrap();
        assert_eq!(m.protocol, ProtocolVersion::V1);
        assert_eq!((m.id.as_str(), m.task.as_str(), m.retries), ("v1id", "tasks.add", 2));
        assert_eq!(m.group.as_deref(), Some("g1"));
        assert_eq!(m.eta.map(|t| isoformat(&t)).as_deref(), Some("2030-01-02T03:04:05+00:00"));
        assert_eq!(m.embed.callbacks, Some(vec![json!({"task": "x"})]));
        assert_eq!(m.embed.chain, None);
        assert_eq!(m.headers["custom"], json!(1));
        assert_eq!(m.custom_headers().keys().collect::<Vec<_>>(), ["custom"]);
    }

    #[test]
    fn v1_errors_carry_body_id() {
        let raw = v2_raw(json!({}), br#"{"task": "tasks.add", "id": "v1id", "args": [1], "kwargs": []}"#);
        let err = TaskMessage::decode(raw, &accept()).unwrap_err();
        assert!(matches!(err, ProtocolError::KwargsNotObject { .. }), "{err}");
        assert_eq!(err.task_id(), Some("v1id"));
        assert_eq!(err.task_name(), Some("tasks.add"));
        let raw = v2_raw(json!({}), br#"{"id": "v1id"}"#);
        let err = TaskMessage::decode(raw, &accept()).unwrap_err();
        assert!(matches!(err, ProtocolError::MissingField { field: "task", .. }), "{err}");
    }

    #[test]
    fn timelimit_values() {
        assert_eq!(TimeLimit { hard: Some(30.0), soft: Some(20.0) }.to_value(), json!([30, 20]));
        assert_eq!(TimeLimit { hard: Some(30.0), soft: Some(20.5) }.to_value(), json!([30, 20.5]));
        assert_eq!(TimeLimit::default().to_value(), json!([null, null]));
        assert_eq!(
            TimeLimit::from_value(&json!([30, 20.5])).unwrap(),
            TimeLimit { hard: Some(30.0), soft: Some(20.5) }
        );
        assert!(TimeLimit::from_value(&json!([-1, null])).is_err());
        assert!(TimeLimit::from_value(&json!({})).is_err());
    }

    #[test]
    fn encode_defaults() {
        let mut t = NewTask::new("tasks.add", vec![json!(4), json!(4)], Map::new());
        t.options.origin = Some("gen1@h".into());
        let enc = t.encode().unwrap();
        assert_eq!(enc.headers["root_id"], json!(t.id));
        assert_eq!(enc.headers["argsrepr"], json!("(4, 4)"));
        assert_eq!(enc.properties["reply_to"], json!(""));
        assert_eq!(enc.body, br#"[[4, 4], {}, {"callbacks": null, "errbacks": null, "chain": null, "chord": null}]"#);
        let env = enc.to_envelope(None);
        assert_eq!(env.priority(), Some(0));
        assert_eq!(env.routing_key(), Some("celery"));
        assert_eq!(uuid::Uuid::parse_str(env.delivery_tag().unwrap()).map(|u| u.get_version_num()), Ok(4));
        assert!(default_origin().starts_with("gen"));
    }

    #[test]
    fn expiration_computed_from_expires() {
        let mut t = NewTask::new("t", vec![], Map::new());
        t.options.expires = Some(Utc::now() + chrono::Duration::seconds(120));
        let ms: u64 = t.properties()["expiration"].as_str().unwrap().parse().unwrap();
        assert!((119_000..=120_000).contains(&ms), "{ms}");
        t.options.expires = Some(Utc::now() - chrono::Duration::seconds(5));
        assert_eq!(t.properties()["expiration"], json!("0"));
    }

    #[test]
    fn custom_headers_override_and_append() {
        let mut t = NewTask::new("t", vec![], Map::new());
        t.options.headers.insert("custom".into(), json!("hdr"));
        t.options.headers.insert("lang".into(), json!("rs"));
        let h = t.headers();
        assert_eq!(h["lang"], json!("rs"));
        assert_eq!(h.keys().next().map(String::as_str), Some("lang"));
        assert_eq!(h.keys().next_back().map(String::as_str), Some("custom"));
    }

    #[test]
    fn expiry_check() {
        let raw = v2_raw(json!({"task": "t", "id": "i", "expires": "2026-01-01T00:00:00+00:00"}), b"[[], {}, {}]");
        let m = TaskMessage::decode(raw, &accept()).unwrap();
        let exp = m.expires.unwrap();
        assert!(m.is_expired(exp));
        assert!(!m.is_expired(exp - chrono::Duration::seconds(1)));
        assert_eq!(m.display_name(), "t");
    }
}
