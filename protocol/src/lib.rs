//! The Celery wire protocol: task messages, result values, exceptions.
//!
//! Everything here is pure data transformation (bytes ⇄ types), shared by
//! the brokers (Redis, AMQP), the worker and the CLI. Nothing does I/O. The
//! formats follow what Celery 5.7 / kombu 5.7 put on the wire, as captured in
//! `tests/fixtures/` (the tests read those captures and compare bytes). It is
//! a crate of its own so that nothing here can reach the layers above it, and
//! so that the fuzz targets of these parsers build without the sandbox.
//!
//! Files:
//! - [`envelope`]: kombu's Redis JSON envelope (`body`, `content-type`,
//!   `headers`, `properties`), re-serialisable byte for byte for restores.
//! - [`message`]: task messages. Decoding from a transport-neutral
//!   [`RawMessage`] (protocol v2 and v1) into [`TaskMessage`], and encoding a
//!   [`NewTask`] into an [`EncodedTask`] (headers, properties, body) that a
//!   Redis or AMQP publisher can send.
//! - [`amqp`]: the same messages as AMQP 0-9-1 properties and typed header
//!   field tables (RabbitMQ), and the queue arguments Celery declares.
//! - [`content`]: the JSON and msgpack serializers and the `accept_content`
//!   gate (pickle is never deserialised).
//! - [`pidbox`]: kombu's remote-control mailbox (requests, replies, node
//!   matching) and Celery's event messages.
//! - [`result`]: `celery-task-meta-*` values: building them in Celery's key
//!   order and parsing stored ones.
//! - [`exception`]: exceptions as stored in results, the module of each
//!   Python / Celery exception, Python-style renderings.
//! - [`render`]: remote-control replies and events as Celery's CLI prints
//!   them (`celery inspect`, `celery events --dump`).
//! - [`repr`]: Python `repr()` and Celery `saferepr()` of JSON values
//!   (`argsrepr`, exception reprs).
//! - [`pyjson`]: JSON text exactly as Python's `json.dumps` writes it.
//! - [`json_cost`]: what parsing a JSON text will cost, known before the parse.
//! - [`signature`]: Celery signatures (tasks and canvases) and `freeze`.
//! - [`time`]: ISO-8601 timestamps as Celery writes and reads them.
//! - [`error`]: [`ProtocolError`], which carries the task id / name that
//!   could be recovered from a broken message ([`Partial`]).
//!
//! Typical use on the worker side:
//!
//! ```ignore
//! let envelope = Envelope::parse(&bytes)?;              // BRPOPed bytes
//! match TaskMessage::from_envelope(&envelope, &accept) {
//!     Ok(msg) => run(msg),
//!     Err(e) => if let Some(id) = e.task_id() { store_failure(id, &e) },
//! }
//! let value = ResultMeta::success(&msg.id, json!(8)).encode(Serializer::Json)?;
//! ```

pub mod amqp;
pub mod auth;
pub mod bigint;
pub mod content;
pub mod envelope;
pub mod error;
pub mod exception;
pub mod json_cost;
pub mod message;
pub mod pidbox;
pub mod pyjson;
pub mod render;
pub mod repr;
pub mod result;
pub mod signature;
pub mod time;

#[cfg(test)]
mod amqp_capture_tests;
#[cfg(test)]
mod capture_tests;

pub use content::{AcceptContent, MessageLimits, Serializer};
pub use envelope::Envelope;
pub use error::{Partial, ProtocolError};
pub use exception::{ExceptionInfo, exception_module, is_builtin_exception};
pub use json_cost::parsed_json_cost;
pub use message::{
    DeliveryInfo, Embed, EncodedTask, NewTask, ProtocolVersion, RawMessage, TaskMessage, TaskOptions, TimeLimit,
    default_origin,
};
pub use repr::{args_repr, kwargs_repr, py_repr, saferepr};
pub use result::{ExtendedMeta, ResultMeta, TaskState, child_tuple, group_tuple, result_key};
