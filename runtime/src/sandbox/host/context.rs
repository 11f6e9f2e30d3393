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
}

impl Request {
    /// The WIT record for this request.
    pub fn to_wit(&self) -> RequestContext {
        RequestContext {
            id: self.id.clone(),
            name: self.name.clone(),
            retries: self.retries,
            eta: self.eta.clone(),
            expires: self.expires.clone(),
            root_id: self.root_id.clone(),
            parent_id: self.parent_id.clone(),
            group_id: self.group_id.clone(),
            hostname: self.hostname.clone(),
            headers: serde_json::Value::Object(self.headers.clone()).to_string(),
        }
    }
}
