//! AMQP broker URLs, read the way kombu reads them.
//!
//! Celery users write `broker_url = "pyamqp://guest@localhost//"`; kombu's
//! `parse_url` turns that into host, port, user id, password and virtual host,
//! and its pyamqp transport fills in the defaults. This module reproduces that
//! reading exactly (pure parsing, no I/O) so a URL that works for a Python
//! client works for the worker:
//!
//! - schemes `amqp://`, `pyamqp://` (plain) and `amqps://`, `pyamqps://` (TLS);
//! - defaults `guest` / `guest` / `localhost` / 5672 (5671 with TLS);
//! - the virtual host is the path without its first `/`, percent-decoded:
//!   `amqp://h//` and `amqp://h/` and `amqp://h` are `/`, `amqp://h/foo` is `foo`,
//!   `amqp://h/%2Ffoo` is `/foo`;
//! - query options `heartbeat`, `connect_timeout` and kombu's ssl options
//!   (`ssl=true`, `ssl_cert_reqs`, `ssl_ca_certs`, `ssl_certfile`, `ssl_keyfile`,
//!   `ssl_server_hostname`);
//! - a `;`-separated failover list (`amqp://h1//;amqp://h2//`), tried in order.

use std::time::Duration;

/// Celery's `broker_heartbeat` default (seconds); RabbitMQ offers 60 and the lower wins.
pub const DEFAULT_HEARTBEAT: u16 = 120;
/// Celery's `broker_connection_timeout` default (seconds).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(4);

/// Why a broker URL cannot be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum UrlError {
    /// Not an AMQP scheme.
    #[error("{0}: not an AMQP URL (amqp://, pyamqp://, amqps://)")]
    Scheme(String),
    /// The port is not a number in 1..=65535.
    #[error("{url}: invalid port {port:?}")]
    Port {
        /// The URL (password masked).
        url: String,
        /// What stood where the port goes.
        port: String,
    },
    /// A query option has a value that cannot be read.
    #[error("{url}: invalid value {value:?} for {option}")]
    Option {
        /// The URL (password masked).
        url: String,
        /// The option name.
        option: String,
        /// Its value.
        value: String,
    },
    /// The list is empty.
    #[error("empty AMQP URL")]
    Empty,
}

/// Whether a URL names an AMQP broker (any element of a failover list is enough).
pub fn is_amqp_url(url: &str) -> bool {
    scheme_tls(url.trim()).is_some()
}

/// `Some(tls)` for the AMQP schemes kombu maps to its pyamqp transport.
fn scheme_tls(url: &str) -> Option<bool> {
    let (scheme, _) = url.split_once("://")?;
    match scheme.to_ascii_lowercase().as_str() {
        "amqp" | "pyamqp" => Some(false),
        "amqps" | "pyamqps" => Some(true),
        _ => None,
    }
}

/// kombu's ssl options (`broker_use_ssl` or `ssl_*` query options).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SslOptions {
    /// `cert_reqs`: `CERT_REQUIRED` (default), `CERT_OPTIONAL`, `CERT_NONE`.
    pub cert_reqs: Option<String>,
    /// `ca_certs`: PEM file of the CA(s) to trust instead of the built-in roots.
    pub ca_certs: Option<String>,
    /// `certfile`: client certificate (PEM).
    pub certfile: Option<String>,
    /// `keyfile`: client key (PEM, PKCS#8).
    pub keyfile: Option<String>,
    /// `server_hostname`: the name to verify (default: the host).
    pub server_hostname: Option<String>,
}

/// One broker of a (failover) URL, with kombu's defaults filled in.
#[derive(Debug, Clone, PartialEq)]
pub struct AmqpUrl {
    /// TLS (`amqps://` or `ssl=true`).
    pub tls: bool,
    /// User id.
    pub user: String,
    /// Password.
    pub password: String,
    /// Host name or address.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Virtual host (`/` by default).
    pub vhost: String,
    /// Heartbeat to ask for, seconds (0 disables; the server's lower value wins).
    pub heartbeat: u16,
    /// TCP + handshake timeout.
    pub connect_timeout: Duration,
    /// TLS options.
    pub ssl: SslOptions,
}

impl AmqpUrl {
    /// The URL with the password masked, for logs: `amqp://guest:**@localhost:5672//`.
    pub fn display(&self) -> String {
        let scheme = if self.tls { "amqps" } else { "amqp" };
        format!("{scheme}://{}:**@{}:{}/{}", self.user, self.host, self.port, self.vhost)
    }
}

/// Parse a broker URL, possibly a `;`-separated failover list.
pub fn parse_failover(url: &str) -> Result<Vec<AmqpUrl>, UrlError> {
    let parts: Vec<&str> = url.split(';').map(str::trim).filter(|s| !s.is_empty()).collect();
    if parts.is_empty() {
        return Err(UrlError::Empty);
    }
    parts.into_iter().map(parse).collect()
}

/// Parse one AMQP URL.
pub fn parse(url: &str) -> Result<AmqpUrl, UrlError> {
    let masked = || crate::connection::url::mask_password(url);
    let tls = scheme_tls(url).ok_or_else(|| UrlError::Scheme(masked()))?;
    let rest = &url[url.find("://").map_or(0, |i| i + 3)..];
    let (rest, query) = match rest.split_once('?') {
        Some((r, q)) => (r, Some(q)),
        None => (rest, None),
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], Some(&rest[i + 1..])),
        None => (rest, None),
    };
    let (userinfo, hostport) = match authority.rfind('@') {
        Some(i) => (Some(&authority[..i]), &authority[i + 1..]),
        None => (None, authority),
    };
    let (user, password) = match userinfo {
        None => (None, None),
        Some(ui) => match ui.split_once(':') {
            Some((u, p)) => (Some(percent_decode(u)), Some(percent_decode(p))),
            None => (Some(percent_decode(ui)), None),
        },
    };
    let (host, port) = split_host_port(hostport);
    let port = match port {
        None | Some("") => None,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 => Some(n),
            _ => return Err(UrlError::Port { url: masked(), port: p.to_string() }),
        },
    };
    let vhost = match path {
        None | Some("") => "/".to_string(),
        Some(p) => percent_decode(p),
    };
    let mut out = AmqpUrl {
        tls,
        user: user.filter(|u| !u.is_empty()).unwrap_or_else(|| "guest".into()),
        password: password.unwrap_or_else(|| "guest".into()),
        host: if host.is_empty() { "localhost".into() } else { percent_decode(host) },
        port: 0,
        vhost,
        heartbeat: DEFAULT_HEARTBEAT,
        connect_timeout: DEFAULT_CONNECT_TIMEOUT,
        ssl: SslOptions::default(),
    };
    for pair in query.unwrap_or("").split('&').filter(|s| !s.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = percent_decode(v);
        let bad = || UrlError::Option { url: masked(), option: k.to_string(), value: v.clone() };
        match k {
            "heartbeat" => out.heartbeat = seconds(&v).ok_or_else(bad)?.round().min(65535.0) as u16,
            "connect_timeout" => out.connect_timeout = Duration::from_secs_f64(seconds(&v).ok_or_else(bad)?),
            "ssl" => out.tls = out.tls || boolean(&v).ok_or_else(bad)?,
            "ssl_cert_reqs" | "cert_reqs" => out.ssl.cert_reqs = Some(v),
            "ssl_ca_certs" | "ca_certs" => out.ssl.ca_certs = Some(v),
            "ssl_certfile" | "certfile" => out.ssl.certfile = Some(v),
            "ssl_keyfile" | "keyfile" => out.ssl.keyfile = Some(v),
            "ssl_server_hostname" | "server_hostname" => out.ssl.server_hostname = Some(v),
            // kombu passes other options to the transport; none of them changes the wire.
            _ => {}
        }
    }
    out.port = port.unwrap_or(if out.tls { 5671 } else { 5672 });
    Ok(out)
}

/// `host:port`, `[v6]:port`, `host`.
fn split_host_port(s: &str) -> (&str, Option<&str>) {
    if let Some(rest) = s.strip_prefix('[')
        && let Some(end) = rest.find(']')
    {
        return (&rest[..end], rest[end + 1..].strip_prefix(':'));
    }
    match s.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (s, None),
    }
}

/// A non-negative number of seconds.
fn seconds(v: &str) -> Option<f64> {
    v.trim().parse::<f64>().ok().filter(|f| f.is_finite() && *f >= 0.0)
}

/// kombu's truthy strings.
fn boolean(v: &str) -> Option<bool> {
    match v.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Some(true),
        "0" | "false" | "no" | "off" | "" => Some(false),
        _ => None,
    }
}

/// `%XX` decoding (invalid escapes are kept as they are, as Python's `unquote` does).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok());
            if let Some(b) = hex {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_steps_url_is_guest_on_localhost_with_vhost_slash() {
        let u = parse("pyamqp://guest@localhost//").unwrap();
        assert_eq!((u.user.as_str(), u.password.as_str()), ("guest", "guest"));
        assert_eq!((u.host.as_str(), u.port, u.vhost.as_str(), u.tls), ("localhost", 5672, "/", false));
        assert_eq!(u.heartbeat, DEFAULT_HEARTBEAT);
        assert_eq!(u.connect_timeout, DEFAULT_CONNECT_TIMEOUT);
    }

    #[test]
    fn a_bare_scheme_gets_every_default() {
        let u = parse("amqp://").unwrap();
        assert_eq!(
            (u.user.as_str(), u.password.as_str(), u.host.as_str(), u.port),
            ("guest", "guest", "localhost", 5672)
        );
        assert_eq!(u.vhost, "/");
    }

    #[test]
    fn the_virtual_host_is_the_path_without_its_first_slash() {
        assert_eq!(parse("amqp://h//").unwrap().vhost, "/");
        assert_eq!(parse("amqp://h/").unwrap().vhost, "/");
        assert_eq!(parse("amqp://h").unwrap().vhost, "/");
        assert_eq!(parse("amqp://h/foo").unwrap().vhost, "foo");
        assert_eq!(parse("amqp://h/%2Ffoo").unwrap().vhost, "/foo");
        assert_eq!(parse("amqp://h/%2f").unwrap().vhost, "/");
    }

    #[test]
    fn user_password_host_and_port_are_read_and_percent_decoded() {
        let u = parse("amqp://us%40er:p%3Ass@rabbit.example:5673/prod").unwrap();
        assert_eq!((u.user.as_str(), u.password.as_str()), ("us@er", "p:ss"));
        assert_eq!((u.host.as_str(), u.port, u.vhost.as_str()), ("rabbit.example", 5673, "prod"));
        let u = parse("amqp://[::1]:5680//").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 5680));
        assert_eq!(parse("amqp://:secret@h//").unwrap().user, "guest");
    }

    #[test]
    fn amqps_means_tls_on_port_5671_and_takes_kombus_ssl_options() {
        let u = parse("amqps://u:p@h//?ssl_ca_certs=/etc/ca.pem&ssl_cert_reqs=CERT_REQUIRED").unwrap();
        assert!(u.tls);
        assert_eq!(u.port, 5671);
        assert_eq!(u.ssl.ca_certs.as_deref(), Some("/etc/ca.pem"));
        assert_eq!(u.ssl.cert_reqs.as_deref(), Some("CERT_REQUIRED"));
        let u = parse("amqp://h:5672//?ssl=true").unwrap();
        assert!(u.tls);
        assert_eq!(u.port, 5672);
    }

    #[test]
    fn heartbeat_and_connect_timeout_come_from_the_query() {
        let u = parse("amqp://h//?heartbeat=30&connect_timeout=2.5").unwrap();
        assert_eq!(u.heartbeat, 30);
        assert_eq!(u.connect_timeout, Duration::from_millis(2500));
        assert!(matches!(parse("amqp://h//?heartbeat=soon"), Err(UrlError::Option { .. })));
    }

    #[test]
    fn a_failover_list_is_split_on_semicolons_in_order() {
        let urls = parse_failover("amqp://a//;pyamqp://b:5673/v ; amqps://c//").unwrap();
        let hosts: Vec<_> = urls.iter().map(|u| (u.host.as_str(), u.port, u.tls)).collect();
        assert_eq!(hosts, [("a", 5672, false), ("b", 5673, false), ("c", 5671, true)]);
        assert_eq!(urls[1].vhost, "v");
        assert!(matches!(parse_failover(" ; "), Err(UrlError::Empty)));
    }

    #[test]
    fn other_schemes_and_bad_ports_are_errors() {
        assert!(matches!(parse("redis://h:6379/0"), Err(UrlError::Scheme(_))));
        assert!(matches!(parse("amqp://h:notaport//"), Err(UrlError::Port { .. })));
        assert!(matches!(parse("amqp://h:0//"), Err(UrlError::Port { .. })));
        assert!(is_amqp_url("pyamqp://"));
        assert!(is_amqp_url("AMQPS://h//"));
        assert!(!is_amqp_url("redis://"));
    }

    #[test]
    fn the_display_form_masks_the_password() {
        let u = parse("amqp://bob:secret@h:5672/v").unwrap();
        assert_eq!(u.display(), "amqp://bob:**@h:5672/v");
    }
}
