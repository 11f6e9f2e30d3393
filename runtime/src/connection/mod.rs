//! What the broker and the result backend both stand on: URLs and server connections.
//!
//! kombu and Celery share their URL handling (`kombu.utils.url`) and connection
//! setup between transports and result backends; so does Celeriac. This module
//! sits below [`crate::broker`] and [`crate::backend`] (they import it, never the
//! other way round):
//!
//! - [`url`]: scheme checks, the SQLite file of an `sqla+sqlite://` / `db+sqlite://`
//!   URL, `mask_password` for logs and banners.
//! - [`redis`]: a Redis client from a kombu-style URL (TLS parameters included)
//!   and the connection managers the broker and the backend use.
//! - [`sqlite`]: the small pool of SQLite connections the embedded transport and
//!   the database backend share.
//!
//! It also holds [`retry`], the back-off loop every server operation goes
//! through, and [`UrlError`], the error of a URL that cannot be used.

pub mod redis;
pub mod sqlite;
pub mod url;

use std::time::Duration;

/// A URL that cannot be used: a configuration mistake, not worth retrying.
/// Shown with every URL in the message masked ([`url::mask_urls_in`]), so no
/// caller can print a password by quoting the URL.
#[derive(Debug, thiserror::Error)]
#[error("{}", url::mask_urls_in(.0))]
pub struct UrlError(pub String);

/// Retry an operation with back-off until it succeeds, or give up after about
/// two minutes (logged). Used for acknowledgements, restores and result writes,
/// which must survive a broker or backend restart.
pub async fn retry<T, E: std::fmt::Display, F, Fut>(what: &str, mut op: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let mut delay = Duration::from_millis(100);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        match op().await {
            Ok(v) => return Some(v),
            Err(e) if tokio::time::Instant::now() < deadline => {
                tracing::warn!("could not {what}: {e}; retrying in {delay:?}");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            Err(e) => {
                tracing::error!("giving up trying to {what}: {e}");
                return None;
            }
        }
    }
}
