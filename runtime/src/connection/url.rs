//! URL helpers shared by transports and result backends (kombu's `kombu.utils.url`).
//!
//! Which server a URL names is decided here once, by scheme, so the broker,
//! the backend, the banner and the configuration all agree; and passwords are
//! masked here for every log line and banner that shows a URL.

use std::path::{Path, PathBuf};

use super::UrlError;

/// Schemes of a Redis server: kombu's `redis://`, `rediss://` (TLS), and the
/// Unix-socket forms `unix://`, `socket://`, `redis+socket://`.
pub const REDIS_SCHEMES: &[&str] = &["redis://", "rediss://", "unix://", "socket://", "redis+socket://"];

/// URL schemes of kombu's SQLAlchemy transport on SQLite.
pub const SQLITE_TRANSPORT_SCHEMES: &[&str] = &["sqla+sqlite://", "sqlalchemy+sqlite://"];

/// URL scheme of Celery's database result backend on SQLite.
pub const SQLITE_BACKEND_SCHEME: &str = "db+sqlite://";

/// Whether a URL names a Redis server.
pub fn is_redis_url(url: &str) -> bool {
    REDIS_SCHEMES.iter().any(|p| url.starts_with(p))
}

/// Whether `url` names the SQLAlchemy transport on SQLite.
pub fn is_sqlite_transport_url(url: &str) -> bool {
    SQLITE_TRANSPORT_SCHEMES.iter().any(|s| url.starts_with(s))
}

/// Whether `url` names the SQLAlchemy transport on another database.
pub fn is_other_sqlalchemy_url(url: &str) -> bool {
    (url.starts_with("sqla+") || url.starts_with("sqlalchemy+")) && !is_sqlite_transport_url(url)
}

/// Whether `url` names Celery's database backend on SQLite.
pub fn is_sqlite_backend_url(url: &str) -> bool {
    url.starts_with(SQLITE_BACKEND_SCHEME)
}

/// Whether `url` names Celery's database backend on another database.
pub fn is_other_database_url(url: &str) -> bool {
    url.starts_with("db+") && !is_sqlite_backend_url(url)
}

/// The database file of an SQLAlchemy-style SQLite URL (`<scheme>:///relative.db`,
/// `<scheme>:////absolute/path.db`), made absolute against the current
/// directory. `scheme` is everything before `://`.
pub fn sqlite_path(url: &str) -> Result<PathBuf, UrlError> {
    let rest = url.split_once("://").map(|(_, r)| r).ok_or_else(|| UrlError(format!("{url}: not a URL")))?;
    let rest = rest.split_once('?').map(|(p, _)| p).unwrap_or(rest);
    let Some(path) = rest.strip_prefix('/') else {
        return Err(UrlError(format!(
            "{url}: expected {}///<file> (a host is not allowed)",
            url.split("://").next().unwrap_or("")
        )));
    };
    if path.is_empty() || path == ":memory:" {
        return Err(UrlError(format!("{url}: an in-memory database cannot be shared between processes; name a file")));
    }
    let p = Path::new(path);
    Ok(if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir().map(|d| d.join(p)).unwrap_or_else(|_| p.to_path_buf())
    })
}

/// Hide the password of a URL (`redis://:secret@host` → `redis://:**@host`).
pub fn mask_password(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else { return url.to_string() };
    let rest = &url[scheme_end + 3..];
    let Some(at) = rest.find('@') else { return url.to_string() };
    let userinfo = &rest[..at];
    let masked = match userinfo.find(':') {
        Some(colon) => format!("{}:**", &userinfo[..colon]),
        None => "**".to_string(),
    };
    format!("{}{}@{}", &url[..scheme_end + 3], masked, &rest[at + 1..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_masked() {
        assert_eq!(mask_password("redis://:secret@localhost:6379/0"), "redis://:**@localhost:6379/0");
        assert_eq!(mask_password("redis://user:pw@h/1"), "redis://user:**@h/1");
        assert_eq!(mask_password("redis://localhost:6379/0"), "redis://localhost:6379/0");
    }

    #[test]
    fn sqlite_urls_name_a_file_relative_to_the_working_directory() {
        assert_eq!(sqlite_path("sqla+sqlite:////tmp/x.db").unwrap(), PathBuf::from("/tmp/x.db"));
        assert_eq!(sqlite_path("db+sqlite:////tmp/x.db?timeout=3").unwrap(), PathBuf::from("/tmp/x.db"));
        let rel = sqlite_path("sqla+sqlite:///celeriac.sqlite").unwrap();
        assert!(rel.is_absolute() && rel.ends_with("celeriac.sqlite"), "{rel:?}");
        assert!(sqlite_path("sqla+sqlite://").is_err());
        assert!(sqlite_path("sqla+sqlite:///:memory:").is_err());
        assert!(sqlite_path("sqla+sqlite://host/x.db").is_err());
    }

    #[test]
    fn schemes_name_their_servers() {
        assert!(is_sqlite_transport_url("sqla+sqlite:///x") && is_sqlite_transport_url("sqlalchemy+sqlite:///x"));
        assert!(!is_sqlite_transport_url("redis://x") && !is_sqlite_transport_url("sqla+postgresql://x"));
        assert!(is_other_sqlalchemy_url("sqla+postgresql://x") && !is_other_sqlalchemy_url("sqla+sqlite:///x"));
        assert!(is_redis_url("rediss://h/0") && is_redis_url("socket:///tmp/s") && !is_redis_url("amqp://h"));
        assert!(is_sqlite_backend_url("db+sqlite:///x") && is_other_database_url("db+postgresql://h/x"));
    }
}
