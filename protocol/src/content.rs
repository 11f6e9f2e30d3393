//! Serializers (JSON, msgpack) and the `accept_content` gate.
//!
//! kombu names a serializer by a short name (`json`) and puts its MIME type
//! in the message (`application/json`). A worker must check that content type
//! against its `accept_content` list *before* deserialising anything. We
//! implement `json` and `msgpack` and never deserialise `pickle` (or `yaml`):
//! they can run arbitrary code, so they are refused even when a configuration
//! lists them.
//!
//! Inside Celeriac every payload is a `serde_json::Value`. msgpack maps onto
//! it as follows (documented decisions):
//! - map keys must be strings, anything else is a decode error (a JSON
//!   object cannot hold them, and Python's json serializer would not have
//!   produced them either);
//! - `bin` values become kombu's JSON marker for bytes, exactly what kombu's
//!   JSON encoder writes for a Python `bytes` value:
//!   `{"__type__": "bytes", "__value__": "<utf-8 text>"}` when the bytes are
//!   UTF-8, else `{"__type__": "base64", "__value__": "<base64>"}`;
//! - `ext` values and non-finite floats are decode errors;
//! - integers are 64-bit in msgpack, so nothing is lost there;
//! - values nested deeper than JSON allows ([`MAX_DEPTH`] arrays, maps and
//!   bytes markers) are decode errors, so whatever a msgpack body decodes to
//!   also reads back from its JSON form (results, the guest's arguments).
//!
//! JSON numbers are read with serde_json's default number type: integers up
//! to `u64::MAX` / down to `i64::MIN` are exact, larger integers (Python
//! ints are unbounded) degrade to `f64`. JSON `NaN`/`Infinity` tokens, which
//! Python's json module emits for non-finite floats, are decode errors.

use base64::Engine as _;
use serde_json::{Map, Number, Value};

use super::auth::{AuthError, CONTENT_TYPE_AUTH, SignedBody, Verifier};
use super::error::ProtocolError;
use super::pyjson;

/// Why a message for the `auth` serializer is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureRefused {
    /// Its signature (or its framing) does not hold.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// The signed body's own serializer is not one Celeriac decodes.
    #[error("the signed body is {0}, which Celeriac does not deserialize")]
    InnerContent(String),
    /// `auth` is accepted but no certificate store was loaded.
    #[error("no certificate store (security_cert_store) to verify it with")]
    NoCertificates,
}

/// MIME type of kombu's JSON serializer.
pub const CONTENT_TYPE_JSON: &str = "application/json";
/// MIME type of kombu's msgpack serializer.
pub const CONTENT_TYPE_MSGPACK: &str = "application/x-msgpack";
/// MIME type of kombu's pickle serializer (never accepted).
pub const CONTENT_TYPE_PICKLE: &str = "application/x-python-serialize";
/// What kombu assumes when a message has no content type.
pub const CONTENT_TYPE_DATA: &str = "application/data";

/// The deepest nesting of arrays and objects a JSON body may have: serde_json's
/// recursion limit (128) allows 127 levels. msgpack bodies are held to the same.
pub const MAX_DEPTH: usize = 127;

/// A serializer Celeriac can read and write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Serializer {
    /// `json` / `application/json` / content-encoding `utf-8`.
    #[default]
    Json,
    /// `msgpack` / `application/x-msgpack` / content-encoding `binary`.
    Msgpack,
}

impl Serializer {
    /// kombu's short name: `json` or `msgpack`.
    pub fn name(self) -> &'static str {
        match self {
            Serializer::Json => "json",
            Serializer::Msgpack => "msgpack",
        }
    }

    /// The MIME type written into messages.
    pub fn content_type(self) -> &'static str {
        match self {
            Serializer::Json => CONTENT_TYPE_JSON,
            Serializer::Msgpack => CONTENT_TYPE_MSGPACK,
        }
    }

    /// The content encoding written into messages.
    pub fn content_encoding(self) -> &'static str {
        match self {
            Serializer::Json => "utf-8",
            Serializer::Msgpack => "binary",
        }
    }

    /// Look a serializer up by short name or MIME type (case-insensitive,
    /// MIME parameters such as `; charset=utf-8` ignored). Aliases kombu
    /// registers are accepted too (`application/x-json`, `application/msgpack`...).
    pub fn from_name(name: &str) -> Option<Serializer> {
        match normalize(name).as_str() {
            "json" | "application/json" | "application/x-json" | "text/json" => Some(Serializer::Json),
            "msgpack" | "application/x-msgpack" | "application/msgpack" | "x-msgpack" => Some(Serializer::Msgpack),
            _ => None,
        }
    }

    /// Serialise a value. JSON output is byte-identical to Python's
    /// `json.dumps`; msgpack output to `msgpack.packb(use_bin_type=True)`.
    pub fn encode(self, value: &Value) -> Result<Vec<u8>, ProtocolError> {
        match self {
            Serializer::Json => Ok(pyjson::to_vec(value)),
            Serializer::Msgpack => {
                let mut out = Vec::new();
                rmpv::encode::write_value(&mut out, &json_to_msgpack(value))
                    .map_err(|e| ProtocolError::Encode { serializer: "msgpack", reason: e.to_string() })?;
                Ok(out)
            }
        }
    }

    /// Deserialise bytes. Callers wrap the error into a [`ProtocolError`]
    /// carrying what they know about the task.
    pub fn decode(self, bytes: &[u8]) -> Result<Value, DecodeError> {
        match self {
            Serializer::Json => Ok(serde_json::from_slice(bytes)?),
            Serializer::Msgpack => {
                let mut cursor = bytes;
                let value = rmpv::decode::read_value(&mut cursor)?;
                if !cursor.is_empty() {
                    return Err(DecodeError::TrailingBytes(cursor.len()));
                }
                msgpack_to_json(value)
            }
        }
    }
}

impl std::fmt::Display for Serializer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Lowercase, strip MIME parameters and whitespace.
fn normalize(content_type: &str) -> String {
    content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase()
}

/// True for the names and MIME types of serializers that can execute code
/// when loading (`pickle`, `yaml`): Celeriac never deserialises them.
pub fn is_unsafe_serializer(name: &str) -> bool {
    matches!(
        normalize(name).as_str(),
        "pickle" | "application/x-python-serialize" | "yaml" | "application/x-yaml" | "application/yaml"
    )
}

/// The `accept_content` setting: which content types may be deserialised.
///
/// Built from names as a Celery config would list them (`json`, `msgpack`,
/// `application/json`, ...). Names Celeriac cannot or will not decode
/// (`pickle`, `yaml`, unknown) are left out and reported by [`ignored`].
///
/// [`ignored`]: AcceptContent::ignored
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcceptContent {
    allowed: Vec<Serializer>,
    ignored: Vec<String>,
    /// `auth` is listed: signed bodies are accepted once verified.
    auth: bool,
    /// What verifies them (set by the worker from the security settings).
    verifier: Option<VerifierRef>,
    /// How big a message may be.
    limits: MessageLimits,
}

/// Bounds on what one task message may hold, so a hostile or broken producer
/// cannot make the worker parse or hold arbitrarily much. A message over a
/// bound is refused as invalid (logged, `FAILURE` stored when its id is
/// known), never run. The arguments travel in the body, so `max_body` bounds
/// their size too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageLimits {
    /// Largest body, in bytes (after the transport's base64).
    pub max_body: usize,
    /// Most headers.
    pub max_headers: usize,
    /// Largest total size of the headers' keys and string values, in bytes.
    pub max_header_bytes: usize,
    /// Most arguments: positional plus keyword.
    pub max_args: usize,
}

impl Default for MessageLimits {
    fn default() -> Self {
        MessageLimits { max_body: 16 << 20, max_headers: 1024, max_header_bytes: 1 << 20, max_args: 100_000 }
    }
}

/// The signature checker of an [`AcceptContent`] (compared by identity).
#[derive(Clone)]
pub struct VerifierRef(pub std::sync::Arc<dyn Verifier>);

impl std::fmt::Debug for VerifierRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Verifier")
    }
}

impl PartialEq for VerifierRef {
    fn eq(&self, other: &Self) -> bool {
        std::sync::Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for VerifierRef {}

impl Default for AcceptContent {
    /// Celery's default: `["json"]`.
    fn default() -> Self {
        AcceptContent {
            allowed: vec![Serializer::Json],
            ignored: Vec::new(),
            auth: false,
            verifier: None,
            limits: MessageLimits::default(),
        }
    }
}

impl AcceptContent {
    /// Build from configured names. Unusable names are dropped (with a
    /// warning) and listed in [`AcceptContent::ignored`].
    pub fn new<I, S>(names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut allowed = Vec::new();
        let mut ignored = Vec::new();
        let mut auth = false;
        for name in names {
            let name = name.as_ref();
            if name == "auth" {
                auth = true;
                continue;
            }
            match Serializer::from_name(name) {
                Some(s) => {
                    if !allowed.contains(&s) {
                        allowed.push(s);
                    }
                }
                None => {
                    if is_unsafe_serializer(name) {
                        tracing::warn!(
                            serializer = name,
                            "accept_content lists an unsafe serializer; Celeriac never deserializes it"
                        );
                    } else {
                        tracing::warn!(serializer = name, "accept_content lists an unknown serializer; ignored");
                    }
                    ignored.push(name.to_owned());
                }
            }
        }
        AcceptContent { allowed, ignored, auth, verifier: None, limits: MessageLimits::default() }
    }

    /// Accept every serializer Celeriac implements (json and msgpack).
    pub fn all() -> Self {
        AcceptContent {
            allowed: vec![Serializer::Json, Serializer::Msgpack],
            ignored: Vec::new(),
            auth: false,
            verifier: None,
            limits: MessageLimits::default(),
        }
    }

    /// The same, with these bounds on a message.
    pub fn with_limits(mut self, limits: MessageLimits) -> Self {
        self.limits = limits;
        self
    }

    /// The bounds on a message.
    pub fn limits(&self) -> &MessageLimits {
        &self.limits
    }

    /// Whether `auth` (Celery's message signing) is listed.
    pub fn wants_auth(&self) -> bool {
        self.auth
    }

    /// Verify signed bodies with `verifier` (when `auth` is listed).
    pub fn with_verifier(mut self, verifier: std::sync::Arc<dyn Verifier>) -> Self {
        self.verifier = Some(VerifierRef(verifier));
        self
    }

    /// A signed body (`application/data` while `auth` is accepted), verified
    /// and unwrapped: its serializer and the serialized bytes that were
    /// signed. `None`: not a message for the `auth` serializer (the other
    /// content types go through [`AcceptContent::check`]).
    pub fn open_signed(
        &self,
        content_type: Option<&str>,
        body: &[u8],
    ) -> Option<Result<(Serializer, Vec<u8>), SignatureRefused>> {
        let ct = content_type.map(str::trim).filter(|s| !s.is_empty()).unwrap_or(CONTENT_TYPE_DATA);
        if !self.auth || ct != CONTENT_TYPE_AUTH {
            return None;
        }
        let Some(verifier) = &self.verifier else { return Some(Err(SignatureRefused::NoCertificates)) };
        Some((|| {
            let signed = SignedBody::unpack(body)?;
            verifier.0.verify(&signed.signer, &signed.body, &signed.signature)?;
            // Celery deserializes the verified body by its own content type (`force=True`).
            let serializer = Serializer::from_name(&signed.content_type)
                .ok_or(SignatureRefused::InnerContent(signed.content_type.clone()))?;
            Ok((serializer, signed.body))
        })())
    }

    /// The serializers that will be decoded.
    pub fn allowed(&self) -> &[Serializer] {
        &self.allowed
    }

    /// Configured names that were dropped (pickle, yaml, unknown).
    pub fn ignored(&self) -> &[String] {
        &self.ignored
    }

    /// The serializer to use for a message's content type, or `Err` with the
    /// content type that is refused. A missing content type is treated as
    /// kombu does, as `application/data`, which no serializer decodes.
    pub fn check(&self, content_type: Option<&str>) -> Result<Serializer, String> {
        let ct = content_type.map(str::trim).filter(|s| !s.is_empty()).unwrap_or(CONTENT_TYPE_DATA);
        if is_unsafe_serializer(ct) {
            return Err(ct.to_owned());
        }
        match Serializer::from_name(ct) {
            Some(s) if self.allowed.contains(&s) => Ok(s),
            _ => Err(ct.to_owned()),
        }
    }
}

/// Convert a JSON value into a msgpack value (order kept; integers packed in
/// their smallest form, floats as float 64, like Python's msgpack).
pub fn json_to_msgpack(value: &Value) -> rmpv::Value {
    match value {
        Value::Null => rmpv::Value::Nil,
        Value::Bool(b) => rmpv::Value::Boolean(*b),
        Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                rmpv::Value::from(u)
            } else if let Some(i) = n.as_i64() {
                rmpv::Value::from(i)
            } else {
                rmpv::Value::F64(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        Value::String(s) => rmpv::Value::String(s.as_str().into()),
        Value::Array(items) => rmpv::Value::Array(items.iter().map(json_to_msgpack).collect()),
        Value::Object(map) => rmpv::Value::Map(
            map.iter().map(|(k, v)| (rmpv::Value::String(k.as_str().into()), json_to_msgpack(v))).collect(),
        ),
    }
}

/// Why a body could not be deserialised.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Not JSON.
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    /// Not msgpack.
    #[error(transparent)]
    Msgpack(#[from] rmpv::decode::Error),
    /// A msgpack value followed by more bytes.
    #[error("{0} unexpected bytes after the msgpack value")]
    TrailingBytes(usize),
    /// A msgpack value JSON cannot carry.
    #[error("{0}")]
    NoJsonForm(String),
}

/// Convert a msgpack value into JSON, following the rules in the module docs.
pub fn msgpack_to_json(value: rmpv::Value) -> Result<Value, DecodeError> {
    to_json(value, 0)
}

/// [`msgpack_to_json`] of a value `depth` containers deep.
fn to_json(value: rmpv::Value, depth: usize) -> Result<Value, DecodeError> {
    let nests = matches!(value, rmpv::Value::Array(_) | rmpv::Value::Map(_) | rmpv::Value::Binary(_));
    if nests && depth >= MAX_DEPTH {
        return Err(DecodeError::NoJsonForm(format!("nested deeper than {MAX_DEPTH} levels")));
    }
    let inner = depth + 1;
    Ok(match value {
        rmpv::Value::Nil => Value::Null,
        rmpv::Value::Boolean(b) => Value::Bool(b),
        rmpv::Value::Integer(i) => {
            if let Some(u) = i.as_u64() {
                Value::Number(u.into())
            } else if let Some(s) = i.as_i64() {
                Value::Number(s.into())
            } else {
                return Err(DecodeError::NoJsonForm("integer out of range".to_owned()));
            }
        }
        rmpv::Value::F32(f) => float(f64::from(f))?,
        rmpv::Value::F64(f) => float(f)?,
        rmpv::Value::String(s) => match s.into_str() {
            Some(s) => Value::String(s),
            None => return Err(DecodeError::NoJsonForm("string is not valid UTF-8".to_owned())),
        },
        rmpv::Value::Binary(bytes) => {
            let mut marker = Map::new();
            match String::from_utf8(bytes) {
                Ok(text) => {
                    marker.insert("__type__".to_owned(), Value::from("bytes"));
                    marker.insert("__value__".to_owned(), Value::String(text));
                }
                Err(e) => {
                    let b64 = base64::engine::general_purpose::STANDARD.encode(e.as_bytes());
                    marker.insert("__type__".to_owned(), Value::from("base64"));
                    marker.insert("__value__".to_owned(), Value::String(b64));
                }
            }
            Value::Object(marker)
        }
        rmpv::Value::Array(items) => {
            Value::Array(items.into_iter().map(|v| to_json(v, inner)).collect::<Result<_, _>>()?)
        }
        rmpv::Value::Map(pairs) => {
            let mut map = Map::with_capacity(pairs.len());
            for (k, v) in pairs {
                let key = match k {
                    rmpv::Value::String(s) => match s.into_str() {
                        Some(s) => s,
                        None => return Err(DecodeError::NoJsonForm("map key is not valid UTF-8".to_owned())),
                    },
                    other => return Err(DecodeError::NoJsonForm(format!("map key must be a string, got {other}"))),
                };
                map.insert(key, to_json(v, inner)?);
            }
            Value::Object(map)
        }
        rmpv::Value::Ext(tag, _) => {
            return Err(DecodeError::NoJsonForm(format!("msgpack extension type {tag} is not supported")));
        }
    })
}

fn float(f: f64) -> Result<Value, DecodeError> {
    Number::from_f64(f)
        .map(Value::Number)
        .ok_or_else(|| DecodeError::NoJsonForm(format!("non-finite float {f} has no JSON form")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// `n` msgpack arrays of one element each around `inner`.
    fn nested_msgpack(n: usize, inner: &[u8]) -> Vec<u8> {
        let mut bytes = vec![0x91; n];
        bytes.extend_from_slice(inner);
        bytes
    }

    #[test]
    fn a_msgpack_body_nested_deeper_than_json_allows_is_a_decode_error_not_a_value_json_cannot_read() {
        // Found by fuzz/ (body_decode): it decoded, but its JSON form hit
        // serde_json's recursion limit when read back.
        let mut found = vec![0x93, 0x94, 0x92, 0xd2, 0x60, 0xd2, 0xd2];
        found.extend(nested_msgpack(
            154,
            &[0xd2, 0xd2, 0xd2, 0xd2, 0xd2, 0xd2, 0xd2, 0xc2, 0xc2, 0x34, 0xc2, 0xc2, 0xc2, 0x65],
        ));
        assert!(matches!(Serializer::Msgpack.decode(&found), Err(DecodeError::NoJsonForm(_))));

        // The limit is JSON's own: what decodes reads back from its JSON form.
        let deepest = Serializer::Msgpack.decode(&nested_msgpack(MAX_DEPTH, &[0x01])).unwrap();
        let text = Serializer::Json.encode(&deepest).unwrap();
        assert_eq!(Serializer::Json.decode(&text).unwrap(), deepest);
        assert!(
            Serializer::Json
                .decode(format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1)).as_bytes())
                .is_err()
        );
        assert!(Serializer::Msgpack.decode(&nested_msgpack(MAX_DEPTH + 1, &[0x01])).is_err());
        // A bytes value becomes a marker object: one level more.
        assert!(Serializer::Msgpack.decode(&nested_msgpack(MAX_DEPTH - 1, &[0xc4, 0x01, b'a'])).is_ok());
        assert!(Serializer::Msgpack.decode(&nested_msgpack(MAX_DEPTH, &[0xc4, 0x01, b'a'])).is_err());
    }

    #[test]
    fn names_and_types() {
        assert_eq!(Serializer::from_name("json"), Some(Serializer::Json));
        assert_eq!(Serializer::from_name("Application/JSON; charset=utf-8"), Some(Serializer::Json));
        assert_eq!(Serializer::from_name("msgpack"), Some(Serializer::Msgpack));
        assert_eq!(Serializer::from_name("application/x-msgpack"), Some(Serializer::Msgpack));
        assert_eq!(Serializer::from_name("pickle"), None);
        assert_eq!(Serializer::Msgpack.content_encoding(), "binary");
        assert_eq!(Serializer::Json.to_string(), "json");
    }

    #[test]
    fn accept_content_refuses_pickle_even_when_listed() {
        let accept = AcceptContent::new(["json", "pickle", "application/x-python-serialize", "yaml", "bogus"]);
        assert_eq!(accept.allowed(), &[Serializer::Json]);
        assert_eq!(accept.ignored().len(), 4);
        assert_eq!(accept.check(Some("application/json")), Ok(Serializer::Json));
        assert_eq!(accept.check(Some(CONTENT_TYPE_PICKLE)), Err(CONTENT_TYPE_PICKLE.to_owned()));
        assert_eq!(accept.check(Some(CONTENT_TYPE_MSGPACK)), Err(CONTENT_TYPE_MSGPACK.to_owned()));
        assert_eq!(accept.check(None), Err(CONTENT_TYPE_DATA.to_owned()));
        assert_eq!(AcceptContent::all().check(Some(CONTENT_TYPE_MSGPACK)), Ok(Serializer::Msgpack));
        assert_eq!(AcceptContent::default().allowed(), &[Serializer::Json]);
    }

    #[test]
    fn msgpack_roundtrip_and_bytes() {
        let v = json!({"a": [1, -5, -200, 300, 1.5, null, true, "x"], "b": {}});
        let bytes = Serializer::Msgpack.encode(&v).unwrap();
        assert_eq!(Serializer::Msgpack.decode(&bytes).unwrap(), v);

        // bin → kombu's bytes markers
        let mut buf = Vec::new();
        rmpv::encode::write_value(
            &mut buf,
            &rmpv::Value::Array(vec![rmpv::Value::Binary(b"hi".to_vec()), rmpv::Value::Binary(vec![0xff, 0x00])]),
        )
        .unwrap();
        assert_eq!(
            Serializer::Msgpack.decode(&buf).unwrap(),
            json!([{"__type__": "bytes", "__value__": "hi"}, {"__type__": "base64", "__value__": "/wA="}])
        );
    }

    #[test]
    fn msgpack_rejects_what_json_cannot_hold() {
        let mut buf = Vec::new();
        rmpv::encode::write_value(&mut buf, &rmpv::Value::Map(vec![(rmpv::Value::from(1), rmpv::Value::Nil)])).unwrap();
        assert!(Serializer::Msgpack.decode(&buf).unwrap_err().to_string().contains("map key must be a string"));
        buf.clear();
        rmpv::encode::write_value(&mut buf, &rmpv::Value::Ext(5, vec![1])).unwrap();
        assert!(Serializer::Msgpack.decode(&buf).is_err());
        buf.clear();
        rmpv::encode::write_value(&mut buf, &rmpv::Value::F64(f64::NAN)).unwrap();
        assert!(Serializer::Msgpack.decode(&buf).is_err());
        // trailing garbage and truncation
        assert!(Serializer::Msgpack.decode(&[0x90, 0x90]).is_err());
        assert!(Serializer::Msgpack.decode(&[0x92, 0x01]).is_err());
        assert!(Serializer::Msgpack.decode(&[]).is_err());
    }

    #[test]
    fn json_decode_errors_are_reported() {
        assert!(Serializer::Json.decode(b"[1, NaN]").is_err());
        assert!(Serializer::Json.decode(b"\xff").is_err());
        assert_eq!(Serializer::Json.decode(b"[1, 2]").unwrap(), json!([1, 2]));
        assert_eq!(Serializer::Json.encode(&json!({"a": [1]})).unwrap(), b"{\"a\": [1]}");
    }
}
