//! Outbound HTTP (`wasi:http/outgoing-handler`), denied unless granted: a
//! task may reach only the hosts its `http_allow` annotation lists (in
//! `task_annotations`, or a tenant's `tenant.toml` `[annotations]`).
//!
//! Every request passes [`HttpGrant::send_request`] before a connection is
//! made: the URL's authority is checked against the list (names as written,
//! not resolved; a host entry allows any port, `host:port` one port), and a
//! refused request fails in the guest with wasi:http's `HTTP-request-denied`.
//! The refused authority is recorded, so a call that then raises is reported as
//! Python's `PermissionError` naming the host it tried ([`denied_failure`]).
//! Redirects are not followed by the host, so each new URL is checked again.
//! A name on the list is resolved when connecting: an operator allows only
//! names whose DNS the platform controls (a tenant's own name could point at
//! the worker's loopback or network). At most [`MAX_REQUESTS`] requests per call.
//! No request outlives its call: the call's store, and the connections
//! spawned for it, are dropped when it ends or at its time limit (an instance
//! whose call sent a request is never kept for another, `max_calls_per_instance`).

use std::future::Future;

use http_body_util::BodyExt;
use wasmtime_wasi_http::{Error as HttpError, RequestOptions, WasiBody, WasiHttpHooks};

/// A pending request's I/O, driven to completion beside the response.
type Io = Box<dyn Future<Output = Result<(), HttpError>> + Send>;
/// What [`WasiHttpHooks::send_request`] returns.
type SendFuture = Box<dyn Future<Output = Result<(http::Response<WasiBody>, Io), HttpError>> + Send>;

/// Most refused authorities remembered per call (for the error message).
const MAX_DENIED: usize = 8;

/// Most requests one call may make (each holds a connection until the call ends).
pub const MAX_REQUESTS: usize = 64;

/// One call's HTTP grant: the allow-list, and what it refused.
#[derive(Debug, Default)]
pub struct HttpGrant {
    allow: Vec<String>,
    /// Authorities refused in this call, first ones first.
    pub denied: Vec<String>,
    /// Requests let through so far.
    sent: usize,
}

impl HttpGrant {
    /// A grant to the hosts in `allow` (empty: none).
    pub fn new(allow: Vec<String>) -> HttpGrant {
        HttpGrant { allow, denied: Vec::new(), sent: 0 }
    }

    /// Requests let through in this call.
    pub fn sent(&self) -> usize {
        self.sent
    }

    /// Whether `uri` is on the list: its host (any port) or host and port
    /// (the scheme's default port when the URL has none). Case-insensitive.
    pub fn allows(&self, uri: &http::Uri) -> bool {
        let Some(authority) = uri.authority() else { return false };
        let host = authority.host().to_ascii_lowercase();
        let default_port = if uri.scheme() == Some(&http::uri::Scheme::HTTPS) { 443 } else { 80 };
        let port = authority.port_u16().unwrap_or(default_port);
        self.allow.iter().any(|entry| {
            let entry = entry.to_ascii_lowercase();
            match entry.rsplit_once(':') {
                // `host:port` or `[v6]:port` (a bare `[v6]` has colons but no port after `]`).
                Some((h, p)) if !h.is_empty() && (!h.contains(':') || h.ends_with(']')) => {
                    h == host && p.parse::<u16>() == Ok(port)
                }
                _ => entry == host,
            }
        })
    }
}

impl WasiHttpHooks for HttpGrant {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _io: Io,
    ) -> SendFuture {
        if !self.allows(request.uri()) {
            if self.denied.len() < MAX_DENIED {
                let uri = request.uri();
                self.denied.push(uri.authority().map_or_else(|| uri.to_string(), ToString::to_string));
            }
            return Box::new(async { Err(HttpError::HttpRequestDenied) });
        }
        if self.sent >= MAX_REQUESTS {
            return Box::new(async { Err(HttpError::ConnectionLimitReached) });
        }
        self.sent += 1;
        Box::new(async move {
            let (response, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
            Ok((response.map(BodyExt::boxed_unsync), Box::new(io) as Io))
        })
    }
}

/// The `PermissionError` a failed call that was refused HTTP access ends in:
/// the refusal is the cause worth reporting, whatever the guest made of it.
pub fn denied_failure(denied: &[String], granted: bool) -> (String, String) {
    let hosts = denied.iter().map(|d| format!("{d:?}")).collect::<Vec<_>>().join(", ");
    let message = if granted {
        format!(
            "outbound HTTP to {hosts} is not allowed: the host is not in this task's http_allow list (task_annotations, \
             or the tenant's tenant.toml [annotations])"
        )
    } else {
        format!(
            "outbound HTTP to {hosts} is not allowed: this task has no HTTP grant (set http_allow in task_annotations, \
             or in the tenant's tenant.toml [annotations])"
        )
    };
    ("PermissionError".into(), message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allows(list: &[&str], url: &str) -> bool {
        HttpGrant::new(list.iter().map(|s| s.to_string()).collect()).allows(&url.parse().unwrap())
    }

    #[test]
    fn a_host_entry_allows_any_port_and_a_host_port_entry_one_port() {
        assert!(allows(&["api.example.com"], "https://api.example.com/v1"));
        assert!(allows(&["api.example.com"], "http://API.example.com:8080/"));
        assert!(allows(&["127.0.0.1:8080"], "http://127.0.0.1:8080/x"));
        assert!(!allows(&["127.0.0.1:8080"], "http://127.0.0.1:8081/x"));
        assert!(!allows(&["127.0.0.1:8080"], "http://127.0.0.1/x"));
        assert!(allows(&["127.0.0.1:80"], "http://127.0.0.1/x"));
        assert!(allows(&["example.com:443"], "https://example.com/"));
        assert!(allows(&["[::1]:9000"], "http://[::1]:9000/"));
        assert!(allows(&["[::1]"], "http://[::1]:9000/"));
    }

    #[test]
    fn anything_else_is_refused() {
        assert!(!allows(&[], "http://127.0.0.1/"));
        assert!(!allows(&["api.example.com"], "http://evil.example.com/"));
        assert!(!allows(&["api.example.com"], "http://api.example.com.evil.org/"));
        assert!(!allows(&["example.com"], "http://user@evil.org/"));
        assert!(!allows(&["localhost"], "http://127.0.0.1/"));
    }
}
