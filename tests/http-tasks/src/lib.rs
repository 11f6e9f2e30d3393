//! Test-only guest for the `wasi:http` allow-list grant (outbound HTTP from a
//! task). See README.md.
//!
//! A `celeriac:task@0.2.0` component written with `wit-bindgen` directly (no
//! SDK) that serves two tasks: `fetch(url)`, a GET through
//! `wasi:http/outgoing-handler` (bindings from the `wasip2` crate), which returns
//! the response body as a JSON string, or raises `ConnectionError` whose
//! message starts with the `wasi:http` error code (`HttpRequestDenied` when
//! the worker refuses the host); `config(key)`, the tenant's configuration
//! value (`celeriac:task/config`) or null; and `pollables(n)`, which opens `n`
//! host handles (monotonic-clock pollables) and never drops them, as a guest
//! that leaks handles does. It is not an example: `make tasks` never builds it.
//!
//! Only meaningful as a wasm32 guest: on the host (`cargo clippy --workspace`)
//! the crate is empty.
#![cfg(target_arch = "wasm32")]

use std::io::Read;

use wasip2::http::outgoing_handler;
use wasip2::http::types::{ErrorCode, Fields, IncomingBody, Method, OutgoingRequest, Scheme};

wit_bindgen::generate!({
    path: "../../wit",
    world: "task-component",
});

use celeriac::task::types::{Raised, TaskError, TaskInfo, TaskOptions};
use exports::celeriac::task::task::Guest;

struct Component;

fn raise(exc_type: &str, message: String) -> Raised {
    Raised::Exception(TaskError { exc_type: exc_type.into(), exc_module: None, message, args: None, traceback: None })
}

/// `HttpRequestDenied` for `ErrorCode::HttpRequestDenied`, `DnsError(…)` for a
/// variant with a payload: the name a test matches on.
fn code_name(code: &ErrorCode) -> String {
    let text = format!("{code:?}");
    text.strip_prefix("ErrorCode::").unwrap_or(&text).to_owned()
}

fn connection_error(code: &ErrorCode, url: &str) -> Raised {
    raise("ConnectionError", format!("{}: GET {url}", code_name(code)))
}

/// GET `url` (`http://host[:port][/path][?query]`, or `https://`) and return
/// the body as text, whatever the status.
fn fetch(url: &str) -> Result<String, Raised> {
    let (scheme, rest) = if let Some(rest) = url.strip_prefix("http://") {
        (Scheme::Http, rest)
    } else if let Some(rest) = url.strip_prefix("https://") {
        (Scheme::Https, rest)
    } else {
        return Err(raise("ValueError", format!("not an http:// or https:// URL: {url}")));
    };
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) if rest.as_bytes()[i] == b'?' => (&rest[..i], format!("/{}", &rest[i..])),
        Some(i) => (&rest[..i], rest[i..].to_owned()),
        None => (rest, "/".to_owned()),
    };
    let invalid = || raise("ValueError", format!("invalid URL: {url}"));

    // The host sets the Host header from the authority (a guest may not set
    // Host itself: it is a forbidden header).
    let request = OutgoingRequest::new(Fields::new());
    request.set_method(&Method::Get).map_err(|()| invalid())?;
    request.set_scheme(Some(&scheme)).map_err(|()| invalid())?;
    request.set_authority(Some(authority)).map_err(|()| invalid())?;
    request.set_path_with_query(Some(&path)).map_err(|()| invalid())?;

    let future = outgoing_handler::handle(request, None).map_err(|code| connection_error(&code, url))?;
    let response = loop {
        match future.get() {
            Some(result) => break result,
            None => future.subscribe().block(),
        }
    };
    let response = response
        .map_err(|()| raise("RuntimeError", "future-incoming-response read twice".into()))?
        .map_err(|code| connection_error(&code, url))?;

    let body = response.consume().map_err(|()| raise("RuntimeError", "response body already taken".into()))?;
    let mut bytes = Vec::new();
    {
        let mut stream = body.stream().map_err(|()| raise("RuntimeError", "body stream already taken".into()))?;
        stream
            .read_to_end(&mut bytes)
            .map_err(|e| raise("ConnectionError", format!("reading the body of {url}: {e}")))?;
    }
    drop(IncomingBody::finish(body));
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

impl Guest for Component {
    fn tasks() -> Vec<TaskInfo> {
        let options = TaskOptions {
            rate_limit: None,
            time_limit: None,
            soft_time_limit: None,
            max_retries: None,
            default_retry_delay: None,
            autoretry_for: Vec::new(),
            retry_backoff: None,
            retry_backoff_max: None,
            retry_jitter: None,
            acks_late: None,
            ignore_result: None,
            queue: None,
        };
        ["fetch", "config", "pollables"].map(|name| TaskInfo { name: name.into(), options: options.clone() }).to_vec()
    }

    fn invoke(name: String, args: String, _kwargs: String) -> Result<String, Raised> {
        let args: serde_json::Value =
            serde_json::from_str(&args).map_err(|e| raise("TypeError", format!("args: {e}")))?;
        if name == "config" {
            // `config(key)`: the tenant's configuration value, or null.
            let Some(key) = args.get(0).and_then(|v| v.as_str()) else {
                return Err(raise("TypeError", "config() takes one argument, the key (a string)".into()));
            };
            return Ok(serde_json::json!(celeriac::task::config::get(key)).to_string());
        }
        if name == "pollables" {
            // `pollables(n)`: `n` handles left open in the worker's resource table.
            let Some(n) = args.get(0).and_then(|v| v.as_u64()) else {
                return Err(raise("TypeError", "pollables() takes one argument, a count".into()));
            };
            for _ in 0..n {
                std::mem::forget(wasip2::clocks::monotonic_clock::subscribe_duration(0));
            }
            return Ok(n.to_string());
        }
        if name != "fetch" {
            return Err(raise("NotImplementedError", format!("no task {name}")));
        }
        let Some(url) = args.get(0).and_then(|v| v.as_str()) else {
            return Err(raise("TypeError", "fetch() takes one argument, the URL (a string)".into()));
        };
        let text = fetch(url)?;
        Ok(serde_json::Value::String(text).to_string())
    }
}

export!(Component);
