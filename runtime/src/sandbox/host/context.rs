//! Host capability: `host.request` — the task's own request context
//! (Celery's `self.request`): id, name, retries, eta/expires, lineage, headers.

use serde::Serialize;

use super::bindings::celeriac::task::types::RequestContext;

/// What the worker knows about one task call, handed to the guest on request.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Request {
    /// Task id.
    pub id: String,
    /// Full task name (`tasks.add`).
    pub name: String,
    /// Retries so far.
    pub retries: u32,
    /// ETA, ISO-8601.
    pub eta: Option<String>,
    /// Expiry, ISO-8601.
    pub expires: Option<String>,
    /// Workflow root id.
    pub root_id: Option<String>,
    /// Parent task id.
    pub parent_id: Option<String>,
    /// Group id.
    pub group_id: Option<String>,
    /// The worker's node name.
    pub hostname: String,
    /// All message headers as a JSON object.
    pub headers: serde_json::Map<String, serde_json::Value>,
    /// `delivery_info` and the message properties (`host.delivery-info`).
    pub delivery_info: serde_json::Map<String, serde_json::Value>,
    /// Whether the task is a chord member (`canvas.add-to-chord` needs it).
    pub in_chord: bool,
}

/// The WIT record of a request, in one version of the contract (the record is
/// the same in 0.1.0 and 0.2.0).
macro_rules! request_context {
    ($self:ident, $ty:path) => {{
        use $ty as Ctx;
        Ctx {
            id: $self.id.clone(),
            name: $self.name.clone(),
            retries: $self.retries,
            eta: $self.eta.clone(),
            expires: $self.expires.clone(),
            root_id: $self.root_id.clone(),
            parent_id: $self.parent_id.clone(),
            group_id: $self.group_id.clone(),
            hostname: $self.hostname.clone(),
            headers: serde_json::Value::Object($self.headers.clone()).to_string(),
        }
    }};
}

impl Request {
    /// The WIT record for this request (`celeriac:task@0.2.0`).
    pub fn to_wit(&self) -> RequestContext {
        request_context!(self, super::bindings::celeriac::task::types::RequestContext)
    }

    /// The WIT record for this request (`celeriac:task@0.1.0`).
    pub fn to_wit_v0_1(&self) -> super::bindings_v0_1::celeriac::task::types::RequestContext {
        request_context!(self, super::bindings_v0_1::celeriac::task::types::RequestContext)
    }
}
