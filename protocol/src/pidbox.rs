//! kombu's pidbox (Celery's remote-control mailbox) and Celery's event
//! messages, as data: what `celery inspect`/`celery control` broadcast, what a
//! worker answers, and the envelopes of its events.
//!
//! A control request is published to the fanout exchange `celery.pidbox`
//! (on Redis: `PUBLISH /<db>.celery.pidbox`) with headers `clock` and
//! `expires` and a JSON body `{method, arguments, destination, pattern,
//! matcher, ticket, reply_to}`. A worker that the request is for (kombu's
//! `Node.handle_message`: `destination` lists it, or `pattern` matches it
//! with `matcher` `glob`/`pcre`, or neither is given) answers, when
//! `reply_to` is set, with `{<hostname>: <reply>}` to the direct exchange
//! `reply.celery.pidbox` under `reply_to.routing_key`, with headers
//! `ticket` and `clock`, `delivery_mode` 1. Events go to the `celeryev`
//! exchange (fanout on Redis, topic on AMQP) under the event type with `-`
//! turned into `.`, header `hostname`; task events are batched as one
//! `task.multi` message whose body is a JSON list. The layouts follow the
//! captures in `tests/fixtures/redis/05-remote-control`, `06-events` and
//! `tests/fixtures/amqp/{control_pidbox,events}`.

use serde_json::{Map, Value};

use super::content::{DecodeError, Serializer};
use super::envelope::Envelope;
use super::message::RawMessage;

/// The fanout exchange control requests are broadcast on.
pub const PIDBOX_EXCHANGE: &str = "celery.pidbox";
/// The direct exchange control replies go to.
pub const REPLY_EXCHANGE: &str = "reply.celery.pidbox";
/// The exchange events go to.
pub const EVENT_EXCHANGE: &str = "celeryev";
/// The routing key of a batch of task events.
pub const TASK_MULTI: &str = "task.multi";
/// `delivery_mode` of replies and events (kombu's `transient`).
pub const TRANSIENT: u8 = 1;

/// A worker's own pidbox queue: `<hostname>.celery.pidbox`.
pub fn node_queue(hostname: &str) -> String {
    format!("{hostname}.{PIDBOX_EXCHANGE}")
}

/// A control client's reply queue: `<oid>.reply.celery.pidbox`.
pub fn reply_queue(oid: &str) -> String {
    format!("{oid}.{REPLY_EXCHANGE}")
}

/// Why a pidbox message could not be read.
#[derive(Debug, thiserror::Error)]
pub enum PidboxError {
    /// A content type other than JSON or msgpack.
    #[error("unsupported content type {0:?} for a control message")]
    ContentType(String),
    /// The body does not deserialise.
    #[error("cannot decode a control message body: {0}")]
    Body(#[from] DecodeError),
    /// The body is not a `{method, arguments, ...}` object.
    #[error("not a control request: {0}")]
    Shape(&'static str),
}

/// Where a control reply goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyTo {
    /// The exchange (`reply.celery.pidbox`).
    pub exchange: String,
    /// The client's id: the reply queue's binding key.
    pub routing_key: String,
}

/// One control request, as a worker receives it.
#[derive(Debug, Clone, PartialEq)]
pub struct ControlRequest {
    /// The command (`ping`, `stats`, `rate_limit`, ...).
    pub method: String,
    /// Its keyword arguments.
    pub arguments: Map<String, Value>,
    /// The node names it is for (`None` or empty: every node).
    pub destination: Option<Vec<String>>,
    /// A node-name pattern, used with `matcher` when there is no destination.
    pub pattern: Option<String>,
    /// `glob` (default) or `pcre`.
    pub matcher: Option<String>,
    /// Copied into the reply's `ticket` header, so the client can match it.
    pub ticket: Option<String>,
    /// Where to reply; `None` for a cast (no reply).
    pub reply_to: Option<ReplyTo>,
    /// The sender's Lamport clock (`clock` header; 0 when absent).
    pub clock: u64,
    /// Absolute expiry in epoch seconds (`expires` header), if any.
    pub expires: Option<f64>,
}

impl ControlRequest {
    /// Read a request from a pidbox message.
    pub fn decode(raw: &RawMessage) -> Result<ControlRequest, PidboxError> {
        let ct = raw.content_type.as_deref().unwrap_or("application/json");
        let serializer = Serializer::from_name(ct).ok_or_else(|| PidboxError::ContentType(ct.to_string()))?;
        let Value::Object(mut body) = serializer.decode(&raw.body)? else {
            return Err(PidboxError::Shape("the body is not an object"));
        };
        let method = match body.remove("method") {
            Some(Value::String(m)) => m,
            _ => return Err(PidboxError::Shape("no method")),
        };
        let arguments = match body.remove("arguments") {
            Some(Value::Object(a)) => a,
            None | Some(Value::Null) => Map::new(),
            Some(_) => return Err(PidboxError::Shape("arguments is not an object")),
        };
        let destination = match body.remove("destination") {
            Some(Value::Array(d)) => Some(d.into_iter().filter_map(|v| v.as_str().map(str::to_owned)).collect()),
            Some(Value::String(d)) => Some(vec![d]),
            _ => None,
        };
        let text = |v: Option<Value>| v.and_then(|v| v.as_str().map(str::to_owned));
        let pattern = text(body.remove("pattern"));
        let matcher = text(body.remove("matcher"));
        let ticket = text(body.remove("ticket"));
        let reply_to = match body.remove("reply_to") {
            Some(Value::Object(r)) => Some(ReplyTo {
                exchange: r.get("exchange").and_then(Value::as_str).unwrap_or(REPLY_EXCHANGE).to_owned(),
                routing_key: r
                    .get("routing_key")
                    .and_then(Value::as_str)
                    .ok_or(PidboxError::Shape("reply_to has no routing_key"))?
                    .to_owned(),
            }),
            _ => None,
        };
        let clock = raw.headers.get("clock").and_then(header_u64).unwrap_or(0);
        let expires = raw.headers.get("expires").and_then(Value::as_f64).filter(|e| *e > 0.0);
        Ok(ControlRequest { method, arguments, destination, pattern, matcher, ticket, reply_to, clock, expires })
    }

    /// Whether this request is for the node `hostname` (kombu's
    /// `Node.handle_message`): listed in `destination`; else matched by
    /// `pattern` with `matcher`; else, with neither, every node.
    pub fn is_for(&self, hostname: &str) -> bool {
        if let Some(d) = self.destination.as_ref().filter(|d| !d.is_empty()) {
            return d.iter().any(|n| n == hostname);
        }
        match (&self.pattern, &self.matcher) {
            (Some(p), Some(m)) if !p.is_empty() && !m.is_empty() => matches(hostname, p, m),
            _ => true,
        }
    }

    /// Whether the request expired before `now` (epoch seconds): its client
    /// stopped listening, so answering is pointless.
    pub fn is_expired(&self, now: f64) -> bool {
        self.expires.is_some_and(|e| now > e)
    }

    /// The reply message for `reply` (None when the request wants none).
    pub fn reply(&self, hostname: &str, reply: Value, clock: u64) -> Option<Outgoing> {
        let to = self.reply_to.as_ref()?;
        let mut body = Map::new();
        body.insert(hostname.to_owned(), reply);
        let mut headers = Map::new();
        headers.insert("ticket".into(), self.ticket.clone().map_or(Value::Null, Value::String));
        headers.insert("clock".into(), Value::from(clock));
        Some(Outgoing {
            exchange: to.exchange.clone(),
            routing_key: to.routing_key.clone(),
            headers,
            body: Serializer::Json.encode(&Value::Object(body)).ok()?,
            delivery_mode: TRANSIENT,
        })
    }
}

/// A control request as `celery inspect`/`control` broadcasts it, from a
/// client whose replies come to `oid`: body `{method, arguments, destination,
/// pattern, matcher, ticket, reply_to}`, headers `clock` and `expires`
/// (`now + timeout`), `delivery_mode` 2, to `celery.pidbox` with key `""`.
#[allow(clippy::too_many_arguments)]
pub fn request_message(
    method: &str,
    arguments: Map<String, Value>,
    destination: Option<&[String]>,
    ticket: &str,
    oid: &str,
    clock: u64,
    expires: f64,
) -> Outgoing {
    let mut body = Map::new();
    body.insert("method".into(), Value::from(method));
    body.insert("arguments".into(), Value::Object(arguments));
    body.insert("destination".into(), destination.map_or(Value::Null, |d| Value::from(d.to_vec())));
    body.insert("pattern".into(), Value::Null);
    body.insert("matcher".into(), Value::Null);
    body.insert("ticket".into(), Value::from(ticket));
    let mut reply_to = Map::new();
    reply_to.insert("exchange".into(), Value::from(REPLY_EXCHANGE));
    reply_to.insert("routing_key".into(), Value::from(oid));
    body.insert("reply_to".into(), Value::Object(reply_to));
    let mut headers = Map::new();
    headers.insert("clock".into(), Value::from(clock));
    headers.insert("expires".into(), Value::from(expires));
    Outgoing {
        exchange: PIDBOX_EXCHANGE.into(),
        routing_key: String::new(),
        headers,
        body: super::pyjson::to_vec(&Value::Object(body)),
        delivery_mode: 2,
    }
}

/// A control reply as a client reads it: the ticket it answers and
/// `{node: reply}`.
pub fn decode_reply(raw: &RawMessage) -> Result<(Option<String>, Map<String, Value>), PidboxError> {
    let ct = raw.content_type.as_deref().unwrap_or("application/json");
    let serializer = Serializer::from_name(ct).ok_or_else(|| PidboxError::ContentType(ct.to_string()))?;
    let Value::Object(body) = serializer.decode(&raw.body)? else {
        return Err(PidboxError::Shape("a reply is not an object"));
    };
    Ok((raw.headers.get("ticket").and_then(Value::as_str).map(str::to_owned), body))
}

/// A clock header: an integer, or (from some clients) its decimal string.
fn header_u64(v: &Value) -> Option<u64> {
    v.as_u64().or_else(|| v.as_str().and_then(|s| s.parse().ok()))
}

/// kombu's matchers: `glob` is `fnmatch(hostname, pattern)`, `pcre` is
/// `re.match(pattern, hostname)` (anchored at the start only). An unknown
/// matcher or a bad pattern matches nothing.
fn matches(hostname: &str, pattern: &str, matcher: &str) -> bool {
    let re = match matcher {
        "glob" => format!("^{}$", glob_to_regex(pattern)),
        "pcre" => format!("^(?:{pattern})"),
        _ => return false,
    };
    regex::Regex::new(&re).is_ok_and(|r| r.is_match(hostname))
}

/// Python's `fnmatch.translate`, for `*`, `?`, `[seq]` and `[!seq]`.
fn glob_to_regex(pattern: &str) -> String {
    let mut out = String::new();
    let chars: Vec<char> = pattern.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '*' => out.push_str(".*"),
            '?' => out.push('.'),
            '[' => match chars[i + 1..].iter().position(|c| *c == ']') {
                Some(end) if end > 0 => {
                    let set: String = chars[i + 1..i + 1 + end].iter().collect();
                    let set = set.replace('\\', "\\\\");
                    match set.strip_prefix('!') {
                        Some(rest) => out.push_str(&format!("[^{rest}]")),
                        None => out.push_str(&format!("[{set}]")),
                    }
                    i += end + 1;
                }
                _ => out.push_str("\\["),
            },
            c => out.push_str(&regex::escape(&c.to_string())),
        }
        i += 1;
    }
    out
}

/// A message a worker publishes outside the task queues: a control reply,
/// a broadcast (`hello`), an event. JSON body.
#[derive(Debug, Clone, PartialEq)]
pub struct Outgoing {
    /// `reply.celery.pidbox`, `celery.pidbox` or `celeryev`.
    pub exchange: String,
    /// The reply's client id, `""` for a broadcast, the event's routing key.
    pub routing_key: String,
    /// `{ticket, clock}` for replies, `{hostname}` for events.
    pub headers: Map<String, Value>,
    /// The serialised JSON body.
    pub body: Vec<u8>,
    /// 1 (transient) for replies and events.
    pub delivery_mode: u8,
}

impl Outgoing {
    /// An event message: `body` is one event (or, for `task.multi`, a list).
    pub fn event(hostname: &str, routing_key: &str, body: &Value) -> Outgoing {
        let mut headers = Map::new();
        headers.insert("hostname".into(), Value::from(hostname));
        Outgoing {
            exchange: EVENT_EXCHANGE.into(),
            routing_key: routing_key.into(),
            headers,
            body: super::pyjson::to_vec(body),
            delivery_mode: TRANSIENT,
        }
    }

    /// The kombu Redis envelope, properties in kombu's order:
    /// `delivery_mode`, `delivery_info`, `priority`, `body_encoding`,
    /// `delivery_tag` (a fresh uuid4).
    pub fn to_envelope(&self) -> Envelope {
        let mut props = Map::new();
        props.insert("delivery_mode".into(), Value::from(self.delivery_mode));
        let mut info = Map::new();
        info.insert("exchange".into(), Value::from(self.exchange.as_str()));
        info.insert("routing_key".into(), Value::from(self.routing_key.as_str()));
        props.insert("delivery_info".into(), Value::Object(info));
        props.insert("priority".into(), Value::from(0));
        props.insert("body_encoding".into(), Value::from("base64"));
        props.insert("delivery_tag".into(), Value::from(uuid::Uuid::new_v4().to_string()));
        let json = Serializer::Json;
        Envelope::new(&self.body, json.content_type(), json.content_encoding(), self.headers.clone(), props)
    }
}

/// Celery's event routing key: the type with `-` as `.` (`worker.heartbeat`).
pub fn event_routing_key(event_type: &str) -> String {
    event_type.replace('-', ".")
}

/// Who sends events: the fields every event starts with.
#[derive(Debug, Clone, PartialEq)]
pub struct EventSource {
    /// The node name.
    pub hostname: String,
    /// Celery's `utcoffset()`: hours west of UTC (0 on a UTC machine).
    pub utcoffset: f64,
    /// The worker's process id.
    pub pid: u32,
}

impl EventSource {
    /// This process as node `hostname`.
    pub fn this_process(hostname: &str) -> EventSource {
        // Celery's `utcoffset()`: hours west of UTC, floored.
        let east = chrono::Local::now().offset().local_minus_utc();
        EventSource {
            hostname: hostname.to_string(),
            utcoffset: (-east).div_euclid(3600) as f64,
            pid: std::process::id(),
        }
    }

    /// One event, fields in Celery's order: `hostname, utcoffset, pid,
    /// clock`, then `fields`, then `timestamp, type`.
    pub fn event(&self, event_type: &str, clock: u64, timestamp: f64, fields: Map<String, Value>) -> Value {
        let mut e = Map::with_capacity(fields.len() + 6);
        e.insert("hostname".into(), Value::from(self.hostname.as_str()));
        e.insert("utcoffset".into(), Value::from(self.utcoffset));
        e.insert("pid".into(), Value::from(self.pid));
        e.insert("clock".into(), Value::from(clock));
        e.extend(fields);
        e.insert("timestamp".into(), Value::from(timestamp));
        e.insert("type".into(), Value::from(event_type));
        Value::Object(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Envelope;

    fn fixture(path: &str) -> Value {
        let p = format!("{}/../tests/fixtures/{path}", env!("CARGO_MANIFEST_DIR"));
        serde_json::from_slice(&std::fs::read(&p).unwrap_or_else(|e| panic!("{p}: {e}"))).unwrap()
    }

    /// The request a captured `celery inspect` published, as a worker reads it.
    fn captured_request(name: &str) -> (ControlRequest, Value) {
        let capture = fixture(&format!("redis/05-remote-control/{name}.json"));
        let raw = capture["request"]["raw"].as_str().unwrap();
        let env = Envelope::parse(raw.as_bytes()).unwrap();
        (ControlRequest::decode(&env.to_raw_message().unwrap()).unwrap(), capture)
    }

    #[test]
    fn a_captured_ping_with_a_destination_is_read_and_addressed_to_that_node_only() {
        let (req, capture) = captured_request("ping");
        assert_eq!(req.method, "ping");
        assert_eq!(req.destination.as_deref(), Some(&["w1@vm".to_string()][..]));
        assert_eq!(req.ticket.as_deref(), capture["request"]["decoded_body"]["ticket"].as_str());
        assert_eq!(req.reply_to.as_ref().unwrap().exchange, REPLY_EXCHANGE);
        assert_eq!(req.clock, 1);
        assert!(req.expires.is_some());
        assert!(req.is_for("w1@vm"));
        assert!(!req.is_for("w2@vm"));
    }

    #[test]
    fn a_reply_is_the_captured_envelope_but_for_its_fresh_delivery_tag() {
        let (req, capture) = captured_request("ping");
        let reply = &capture["replies"][0]["envelope"];
        let out = req.reply("w1@vm", serde_json::json!({"ok": "pong"}), 19).unwrap();
        let mut ours = out.to_envelope().to_value();
        let mut theirs = reply.clone();
        for v in [&mut ours, &mut theirs] {
            v["properties"]["delivery_tag"] = Value::Null;
        }
        assert_eq!(ours, theirs);
        // Same key order too (compared as text).
        assert_eq!(crate::pyjson::to_string(&ours), crate::pyjson::to_string(&theirs));
        assert_eq!(out.routing_key, req.reply_to.unwrap().routing_key);
    }

    #[test]
    fn a_request_we_send_is_read_back_as_the_captured_one_is() {
        let (theirs, _) = captured_request("ping");
        let dest = vec!["w1@vm".to_string()];
        let out = request_message("ping", Map::new(), Some(&dest), "t-1", "oid-1", 1, 2e9);
        let env = Envelope::parse(&out.to_envelope().to_bytes()).unwrap();
        let ours = ControlRequest::decode(&env.to_raw_message().unwrap()).unwrap();
        assert_eq!((ours.method.as_str(), &ours.destination, ours.clock), ("ping", &theirs.destination, 1));
        assert_eq!(ours.reply_to.unwrap().routing_key, "oid-1");
        assert_eq!(env.properties["delivery_info"]["exchange"], PIDBOX_EXCHANGE);
        let reply = ours.ticket.map(|_| "t-1");
        assert_eq!(reply, Some("t-1"));
    }

    #[test]
    fn a_request_without_destination_or_pattern_is_for_every_node() {
        let (req, _) = captured_request("stats");
        assert!(req.destination.is_none());
        assert!(req.is_for("anything@host"));
    }

    #[test]
    fn patterns_match_as_kombu_glob_and_pcre_do() {
        let mut req = captured_request("stats").0;
        req.pattern = Some("celeriac@*".into());
        req.matcher = Some("glob".into());
        assert!(req.is_for("celeriac@vm"));
        assert!(!req.is_for("celery@vm"));
        req.pattern = Some("w[12]@v?".into());
        assert!(req.is_for("w1@vm"));
        assert!(!req.is_for("w3@vm"));
        req.pattern = Some("w[!1]@vm".into());
        assert!(req.is_for("w2@vm") && !req.is_for("w1@vm"));
        req.pattern = Some("cel.*".into());
        req.matcher = Some("pcre".into());
        assert!(req.is_for("celeriac@vm"));
        assert!(!req.is_for("xcel@vm"), "re.match anchors at the start");
        req.matcher = Some("nosuch".into());
        assert!(!req.is_for("celeriac@vm"));
        req.pattern = Some("(".into());
        req.matcher = Some("pcre".into());
        assert!(!req.is_for("celeriac@vm"));
    }

    #[test]
    fn expiry_is_read_from_the_header() {
        let (req, _) = captured_request("stats");
        let e = req.expires.unwrap();
        assert!(!req.is_expired(e - 1.0));
        assert!(req.is_expired(e + 1.0));
    }

    #[test]
    fn bodies_that_are_no_request_are_errors_not_panics() {
        let raw = |body: &str| RawMessage {
            body: body.as_bytes().to_vec(),
            content_type: Some("application/json".into()),
            ..RawMessage::default()
        };
        assert!(ControlRequest::decode(&raw("[]")).is_err());
        assert!(ControlRequest::decode(&raw("{}")).is_err());
        assert!(ControlRequest::decode(&raw("{\"method\": 1}")).is_err());
        assert!(ControlRequest::decode(&raw("nope")).is_err());
        let pickled = RawMessage { content_type: Some("application/x-python-serialize".into()), ..raw("{}") };
        assert!(matches!(ControlRequest::decode(&pickled), Err(PidboxError::ContentType(_))));
        let ok = ControlRequest::decode(&raw("{\"method\": \"ping\"}")).unwrap();
        assert!(ok.reply_to.is_none() && ok.arguments.is_empty());
    }

    #[test]
    fn events_have_celerys_field_order_and_envelope() {
        let capture = fixture("redis/06-events/events.json");
        let theirs = &capture["events_by_type"]["task-succeeded"]["event"];
        let src = EventSource { hostname: "w1@vm".into(), utcoffset: 0.0, pid: 6994 };
        let mut fields = Map::new();
        fields.insert("uuid".into(), theirs["uuid"].clone());
        fields.insert("result".into(), theirs["result"].clone());
        fields.insert("runtime".into(), theirs["runtime"].clone());
        let ours = src.event("task-succeeded", 22, theirs["timestamp"].as_f64().unwrap(), fields);
        assert_eq!(crate::pyjson::to_string(&ours), crate::pyjson::to_string(theirs));

        let env_theirs = &capture["example_envelopes_by_channel"]["/0.celeryev/task.multi"];
        let batch = Envelope::from_value(env_theirs.clone()).unwrap().decoded_body().unwrap();
        let batch: Value = serde_json::from_slice(&batch).unwrap();
        let mut ours = Outgoing::event("w1@vm", TASK_MULTI, &batch).to_envelope().to_value();
        let mut theirs = env_theirs.clone();
        for v in [&mut ours, &mut theirs] {
            v["properties"]["delivery_tag"] = Value::Null;
        }
        assert_eq!(crate::pyjson::to_string(&ours), crate::pyjson::to_string(&theirs));
        assert_eq!(event_routing_key("worker-heartbeat"), "worker.heartbeat");
    }
}
