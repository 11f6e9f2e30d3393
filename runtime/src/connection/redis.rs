//! Redis connections from kombu-style URLs, for the broker and the result backend.
//!
//! kombu accepts `socket://` and `redis+socket://` for Unix sockets and takes
//! its TLS options as `rediss://` query parameters; the redis crate knows
//! neither, so URLs are translated here once, for both users.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::UrlError;
use super::url::mask_password;

/// Turn kombu-style URLs into ones the redis crate understands:
/// `socket:///path` and `redis+socket:///path` become `unix:///path`.
pub fn normalize_url(url: &str) -> String {
    for prefix in ["redis+socket://", "socket://"] {
        if let Some(rest) = url.strip_prefix(prefix) {
            return format!("unix://{rest}");
        }
    }
    url.to_string()
}

/// A client for a kombu-style Redis URL. `socket://` becomes `unix://`; for
/// `rediss://` (TLS), kombu's query parameters map onto the redis crate's TLS
/// options: `ssl_cert_reqs` (`required`, `optional`, `none`, or `CERT_*`;
/// anything but `required` skips certificate verification), `ssl_ca_certs`
/// (a PEM file of trusted roots instead of the system store), and
/// `ssl_certfile` + `ssl_keyfile` (a client certificate).
pub fn open_client(url: &str) -> Result<redis::Client, UrlError> {
    let url = normalize_url(url);
    if !url.starts_with("rediss://") {
        return redis::Client::open(url.as_str()).map_err(|e| UrlError(format!("{}: {e}", mask_password(&url))));
    }
    let (base, query) = url.split_once('?').unwrap_or((url.as_str(), ""));
    let mut keep = Vec::new();
    let (mut verify, mut ca, mut cert, mut key) = (true, None, None, None);
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "ssl_cert_reqs" => {
                let v = v.to_ascii_lowercase();
                verify = matches!(v.trim_start_matches("cert_"), "required");
            }
            "ssl_ca_certs" => ca = Some(v.to_string()),
            "ssl_certfile" => cert = Some(v.to_string()),
            "ssl_keyfile" => key = Some(v.to_string()),
            _ => keep.push(pair),
        }
    }
    let mut target = base.to_string();
    if !keep.is_empty() {
        target = format!("{target}?{}", keep.join("&"));
    }
    if !verify {
        target.push_str("#insecure");
    }
    let read = |p: &str| std::fs::read(p).map_err(|e| UrlError(format!("cannot read {p}: {e}")));
    let client_tls = match (cert, key) {
        (Some(c), Some(k)) => Some(redis::ClientTlsConfig { client_cert: read(&c)?, client_key: read(&k)? }),
        (None, None) => None,
        _ => return Err(UrlError("ssl_certfile and ssl_keyfile must be given together".into())),
    };
    let root_cert = ca.as_deref().map(read).transpose()?;
    let result = if client_tls.is_some() || root_cert.is_some() {
        redis::Client::build_with_tls(target.as_str(), redis::TlsCertificates { client_tls, root_cert })
    } else {
        redis::Client::open(target.as_str())
    };
    result.map_err(|e| UrlError(format!("{}: {e}", mask_password(&url))))
}

/// The connection settings of every Redis connection: connect within 5 s, a
/// few quick reconnection attempts, replies awaited up to `response_timeout`.
pub fn manager_config(response_timeout: Duration) -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(5)))
        .set_number_of_retries(2)
        .set_max_delay(Duration::from_secs(2))
        .set_response_timeout(Some(response_timeout))
}

/// A multiplexed, auto-reconnecting connection to `client`'s server, bound to
/// the current tokio runtime.
pub async fn connect(client: &redis::Client, response_timeout: Duration) -> redis::RedisResult<ConnectionManager> {
    client.get_connection_manager_with_config(manager_config(response_timeout)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_urls_become_unix_urls() {
        assert_eq!(normalize_url("socket:///tmp/r.sock"), "unix:///tmp/r.sock");
        assert_eq!(normalize_url("redis://h:1/0"), "redis://h:1/0");
    }

    #[test]
    fn kombu_tls_parameters_are_understood() {
        // Verification off: the client is built (no connection is made here).
        assert!(open_client("rediss://localhost:6380/0?ssl_cert_reqs=CERT_NONE").is_ok());
        assert!(open_client("rediss://localhost:6380/0?ssl_cert_reqs=required").is_ok());
        let err = open_client("rediss://localhost:6380/0?ssl_ca_certs=/nonexistent.pem").unwrap_err();
        assert!(err.0.contains("cannot read /nonexistent.pem"), "{err}");
        assert!(open_client("rediss://h/0?ssl_certfile=/x").unwrap_err().0.contains("together"));
    }
}
