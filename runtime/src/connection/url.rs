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

/// Hide the passwords of a URL (`redis://:secret@host` → `redis://:**@host`), as
/// kombu's `maybe_sanitize_url` does, for every scheme (`amqp://`, `db+postgresql://`,
/// `sentinel://`, ...) and for each URL of a `;`-separated failover list; a
/// `password=` query parameter is hidden too. Every URL the program prints goes
/// through here (or through [`mask_urls_in`] for free text).
pub fn mask_password(url: &str) -> String {
    url.split(';').map(mask_one).collect::<Vec<_>>().join(";")
}

/// [`mask_password`] for one URL.
fn mask_one(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else { return url.to_string() };
    let (head, rest) = url.split_at(scheme_end + 3);
    // The query is masked separately; the user info ends at the last `@` before it
    // (an unescaped `@` or `/` in a password must not leak its tail). A URL whose
    // path starts at once (`sqlite:////tmp/a@b.db`) has no user info.
    let (before_query, query) = match rest.find(['?', '#']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let authority = match before_query.rfind('@') {
        Some(at) if !before_query.starts_with('/') => {
            let userinfo = &before_query[..at];
            let masked = match userinfo.find(':') {
                Some(colon) => format!("{}:**", &userinfo[..colon]),
                None => "**".to_string(),
            };
            format!("{masked}{}", &before_query[at..])
        }
        _ => before_query.to_string(),
    };
    format!("{head}{authority}{}", mask_query(query))
}

/// Hide the value of `password=` parameters in a query string (`?password=x&db=1`).
fn mask_query(query: &str) -> String {
    let Some(body) = query.strip_prefix('?') else { return query.to_string() };
    let params: Vec<String> = body
        .split('&')
        .map(|p| match p.split_once('=') {
            Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=**"),
            _ => p.to_string(),
        })
        .collect();
    format!("?{}", params.join("&"))
}

/// Mask every URL found in a free text (an error message that quotes one).
pub fn mask_urls_in(text: &str) -> String {
    let is_scheme = |c: char| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.');
    let ends_url = |c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '`' | ')' | '>' | ',');
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let start = rest[..i]
            .rfind(|c: char| !is_scheme(c))
            .map_or(0, |j| j + rest[j..].chars().next().map_or(1, char::len_utf8));
        let end = rest[i..].find(ends_url).map_or(rest.len(), |j| i + j);
        out.push_str(&rest[..start]);
        out.push_str(&mask_password(&rest[start..end]));
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
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
    fn passwords_are_masked_for_every_scheme() {
        let cases = [
            ("amqp://guest:secret@localhost:5672//", "amqp://guest:**@localhost:5672//"),
            ("pyamqp://u:secret@h/vhost", "pyamqp://u:**@h/vhost"),
            ("amqps://u:secret@h:5671//?heartbeat=10", "amqps://u:**@h:5671//?heartbeat=10"),
            ("db+postgresql://scott:tiger@localhost/mydb", "db+postgresql://scott:**@localhost/mydb"),
            ("sqla+postgresql://scott:tiger@h:5432/db", "sqla+postgresql://scott:**@h:5432/db"),
            ("rediss://:secret@h:6380/0?ssl_cert_reqs=required", "rediss://:**@h:6380/0?ssl_cert_reqs=required"),
            ("sentinel://:pw@h1:26379/0", "sentinel://:**@h1:26379/0"),
            // A password with an unescaped `@` or `/` leaks nothing.
            ("redis://u:p@ss/word@h/0", "redis://u:**@h/0"),
            ("redis://h:6379/0?password=secret&db=1", "redis://h:6379/0?password=**&db=1"),
            ("sqla+sqlite:////tmp/a@b.db", "sqla+sqlite:////tmp/a@b.db"),
            ("rpc://", "rpc://"),
        ];
        for (url, masked) in cases {
            assert_eq!(mask_password(url), masked, "{url}");
        }
    }

    #[test]
    fn every_url_of_a_failover_list_is_masked() {
        assert_eq!(mask_password("amqp://u:one@h1//;amqp://u:two@h2//"), "amqp://u:**@h1//;amqp://u:**@h2//");
        assert_eq!(
            mask_password("sentinel://:a@h1:26379;sentinel://:b@h2:26379"),
            "sentinel://:**@h1:26379;sentinel://:**@h2:26379"
        );
    }

    #[test]
    fn urls_inside_a_message_are_masked() {
        assert_eq!(
            mask_urls_in("cannot connect to db+postgresql://scott:tiger@h/db: refused (was amqp://u:pw@h//)"),
            "cannot connect to db+postgresql://scott:**@h/db: refused (was amqp://u:**@h//)"
        );
        assert_eq!(mask_urls_in("no url here"), "no url here");
        assert_eq!(mask_urls_in("\"redis://:pw@h/0\""), "\"redis://:**@h/0\"");
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
