//! Worker configuration with Celery's own setting names.
//!
//! A Celery user already knows `broker_url`, `result_backend`,
//! `task_acks_late`, `task_routes`, `task_annotations`... so a Celeriac config
//! is Celery's: the user's `celeryconfig.py` as it is (a module of literal
//! assignments, read without running Python: `config/pyconfig.rs`), or a TOML
//! file with exactly the same names. With no `--config`, a `celeryconfig.py` in
//! the current directory is read, as Celery's `config_from_object('celeryconfig')`
//! would. Precedence, lowest first: built-in defaults, the file, Celery's
//! `CELERY_BROKER_URL` / `CELERY_RESULT_BACKEND` environment variables (which
//! override the config in Celery too), `CELERIAC_<SETTING>` environment
//! variables (e.g. `CELERIAC_BROKER_URL`), then command-line options.
//!
//! Every one of Celery's 5.7 setting names is known (`config/celery_settings.rs`,
//! generated from Celery itself), old uppercase names included: the ones
//! Celeriac implements are honoured, the others are accepted and reported once
//! as ignored by the worker (with why) or not implemented yet
//! (`config/support.rs`). Only a name that is no Celery setting is an error,
//! and it names the closest valid one.
//!
//! Sandbox limits live in `task_annotations` beside Celery's own annotations
//! (`time_limit`, `fuel`, `max_memory`), and globally in a `[sandbox]` table.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::sandbox::{ByteSize, LimitsOverride, SandboxConfig};

mod celery_settings;
mod pyconfig;
mod rate;
mod routes;
mod support;
mod tenant;

pub use celery_settings::{CELERY_SETTINGS, CELERY_VERSION};
pub use pyconfig::is_python_path;

pub use rate::{RateError, RateLimit};
pub use routes::{REGEX_PREFIX, Route, RouteKey, Router, TaskRoutes};
pub use tenant::{ConfigValues, TENANT_FILE, TenantConfig, Tenants};

/// Errors reading or validating configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    /// The file is not valid TOML or a value has the wrong type.
    #[error("invalid config {origin}: {message}")]
    Invalid { origin: String, message: String },
    /// A `celeryconfig.py` holds something other than literal assignments.
    #[error("{origin}:{line}: {reason}")]
    Python { origin: String, line: usize, reason: String },
    /// An environment variable's value does not fit its setting.
    #[error("environment variable {var}: {message}")]
    Env { var: String, message: String },
    /// A key that is not a known setting.
    #[error("unknown setting {key:?} in {origin}{}", suggestion.as_ref().map(|s| format!(" (did you mean {s:?}?)")).unwrap_or_default())]
    UnknownKey { origin: String, key: String, suggestion: Option<String> },
}

/// Per-task options (`task_annotations`): Celery's annotations plus sandbox limits.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Annotation {
    /// Celery's `rate_limit`, e.g. `"10/s"`, `"100/m"` (see [`RateLimit`]).
    pub rate_limit: Option<RateLimit>,
    /// Hard time limit in seconds (also the sandbox's wall-clock limit).
    pub time_limit: Option<f64>,
    /// Soft time limit in seconds (accepted; a wasm guest cannot catch it, see README).
    pub soft_time_limit: Option<f64>,
    /// Acknowledge after the task ran.
    pub acks_late: Option<bool>,
    /// Store no result.
    pub ignore_result: Option<bool>,
    /// Report STARTED.
    pub track_started: Option<bool>,
    /// Fuel budget per call.
    pub fuel: Option<u64>,
    /// Memory cap per call, e.g. `"64MiB"`.
    pub max_memory: Option<ByteSize>,
    /// Table elements cap.
    pub max_table_elements: Option<usize>,
    /// Instances/tables/memories cap.
    pub max_instances: Option<usize>,
    /// Wasm stack size, e.g. `"1MiB"`.
    pub max_stack: Option<ByteSize>,
    /// Celeriac: calls one instance of the task serves before it is dropped
    /// (default 1: a fresh instance per call; see `Limits::max_calls_per_instance`).
    pub max_calls_per_instance: Option<u32>,
    /// Celery's `max_retries`: retries a task may ask for before it fails
    /// (over what the component declares; default 3).
    pub max_retries: Option<u32>,
    /// Celery's `default_retry_delay`, seconds (over what the component declares; default 180).
    pub default_retry_delay: Option<f64>,
    /// Celeriac: the task may send tasks (`canvas.send`, `canvas.replace`: Celery's
    /// `other.delay()` and `self.replace()`); denied unless granted.
    pub send_tasks: Option<bool>,
    /// Celeriac: a rate limit shared by every worker on the broker (Redis), e.g.
    /// `"100/m"`; Celery's `rate_limit` is per worker.
    pub cluster_rate_limit: Option<RateLimit>,
    /// Celeriac: hosts the task may reach over HTTP (`wasi:http`): `host` (any
    /// port) or `host:port`, names as written (not resolved); denied unless listed.
    /// Checked as it is read, wherever it is written (`task_annotations`, a tenant's `[annotations]`).
    #[serde(default, deserialize_with = "http_allow_list")]
    pub http_allow: Option<Vec<String>>,
}

/// Read an `http_allow` list, refusing an entry that is not a host or
/// `host:port` (a scheme, path, user or wildcard would silently never match).
fn http_allow_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    let list = Option::<Vec<String>>::deserialize(d)?;
    if let Some(bad) = list.iter().flatten().find(|h| h.is_empty() || h.contains(['/', '@', ' ', '*'])) {
        return Err(serde::de::Error::custom(format!(
            "http_allow entry {bad:?} is not a host or host:port (no scheme, path or wildcard)"
        )));
    }
    Ok(list)
}

impl Annotation {
    /// Every option `over` sets replaces this one's.
    pub fn overlay(&mut self, over: &Annotation) {
        macro_rules! overlay {
            ($($f:ident),*) => { $( if over.$f.is_some() { self.$f = over.$f.clone(); } )* };
        }
        overlay!(
            rate_limit,
            time_limit,
            soft_time_limit,
            acks_late,
            ignore_result,
            track_started,
            fuel,
            max_memory,
            max_table_elements,
            max_instances,
            max_stack,
            max_calls_per_instance,
            max_retries,
            default_retry_delay,
            send_tasks,
            cluster_rate_limit,
            http_allow
        );
    }

    /// The sandbox limits this annotation sets.
    pub fn limits(&self) -> LimitsOverride {
        LimitsOverride {
            fuel: self.fuel,
            max_memory: self.max_memory,
            time_limit: self.time_limit,
            max_table_elements: self.max_table_elements,
            max_instances: self.max_instances,
            max_stack: self.max_stack,
            max_calls_per_instance: self.max_calls_per_instance,
        }
    }
}

/// kombu's `broker_transport_options` that Celeriac honours.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TransportOptions {
    /// Seconds before an unacknowledged message is delivered again (Redis).
    pub visibility_timeout: f64,
    /// Seconds between restore sweeps of unacknowledged messages (Redis).
    /// kombu sweeps about every 100 s; Celeriac defaults to a tenth of the
    /// visibility timeout, capped at 60 s.
    pub unacked_restore_interval: Option<f64>,
    /// Seconds a restore sweep may hold `unacked_mutex` (kombu's
    /// `unacked_mutex_expire`, 300 there). A worker killed mid-sweep leaves the
    /// mutex behind until it expires, and no sweep (Celeriac's or kombu's) runs
    /// meanwhile. Restores are atomic on both sides, so two sweeps at once are
    /// harmless and Celeriac's own default is 30 s (a sweep takes milliseconds).
    pub unacked_mutex_expire: Option<f64>,
    /// Priority steps (Redis sub-queues).
    pub priority_steps: Vec<u8>,
    /// Separator between queue name and priority step.
    pub sep: String,
    /// Key prefix for all kombu keys (kombu's `global_keyprefix`).
    pub global_keyprefix: String,
    /// Seconds between polls of an idle queue on a polling transport
    /// (SQLite; default 0.05).
    pub polling_interval: Option<f64>,
}

impl Default for TransportOptions {
    fn default() -> Self {
        TransportOptions {
            visibility_timeout: 3600.0,
            unacked_restore_interval: None,
            unacked_mutex_expire: None,
            priority_steps: vec![0, 3, 6, 9],
            sep: "\x06\x16".into(),
            global_keyprefix: String::new(),
            polling_interval: None,
        }
    }
}

impl TransportOptions {
    /// The visibility timeout as a duration.
    pub fn visibility(&self) -> Duration {
        Duration::from_secs_f64(self.visibility_timeout.max(1.0))
    }

    /// How long a restore sweep holds `unacked_mutex` at most.
    pub fn unacked_mutex_expire(&self) -> Duration {
        Duration::from_secs_f64(self.unacked_mutex_expire.unwrap_or(30.0).max(1.0))
    }

    /// How often to sweep for unacknowledged messages to restore.
    pub fn restore_interval(&self) -> Duration {
        let s = self.unacked_restore_interval.unwrap_or((self.visibility_timeout / 10.0).min(60.0));
        Duration::from_secs_f64(s.max(0.5))
    }
}

/// Celeriac's bounds on one task message (`[message_limits]` table): a
/// message over one is refused as invalid (logged, `FAILURE` stored when its
/// id is known), never run.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MessageLimitsSettings {
    /// Largest message body (the arguments travel in it), e.g. `"16MiB"` (the default).
    pub max_size: ByteSize,
    /// Most headers (default 1024).
    pub max_headers: usize,
    /// Largest total size of the headers (default `"1MiB"`).
    pub max_header_size: ByteSize,
    /// Most arguments, positional plus keyword (default 100,000).
    pub max_args: usize,
}

impl Default for MessageLimitsSettings {
    fn default() -> Self {
        let d = crate::protocol::MessageLimits::default();
        MessageLimitsSettings {
            max_size: ByteSize(d.max_body as u64),
            max_headers: d.max_headers,
            max_header_size: ByteSize(d.max_header_bytes as u64),
            max_args: d.max_args,
        }
    }
}

impl MessageLimitsSettings {
    /// The bounds as the decoder applies them.
    pub fn limits(&self) -> crate::protocol::MessageLimits {
        let size = |b: ByteSize| usize::try_from(b.as_u64()).unwrap_or(usize::MAX);
        crate::protocol::MessageLimits {
            max_body: size(self.max_size),
            max_headers: self.max_headers,
            max_header_bytes: size(self.max_header_size),
            max_args: self.max_args,
        }
    }
}

/// Celeriac's own sandbox settings (`[sandbox]` table).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SandboxSettings {
    /// Fuel per call.
    pub fuel: Option<u64>,
    /// Memory cap per call.
    pub max_memory: Option<ByteSize>,
    /// Default wall-clock limit per call in seconds (Celery's `task_time_limit` also sets it).
    pub time_limit: Option<f64>,
    /// Wasm stack size.
    pub max_stack: Option<ByteSize>,
    /// Calls one instance serves before it is dropped (default 1: a fresh instance per call).
    pub max_calls_per_instance: Option<u32>,
    /// Compiled-component cache directory; `""` disables the cache.
    pub cache_dir: Option<PathBuf>,
    /// The compiled-component cache is pruned to this size at start-up, oldest first (default 1 GiB; 0: no bound).
    pub cache_max_size: Option<ByteSize>,
    /// Compiled components unused for this many seconds are pruned at start-up (default 30 days; 0: never).
    pub cache_max_age: Option<f64>,
    /// Meter fuel (default true).
    pub fuel_metering: Option<bool>,
    /// Largest success result (JSON text) a task may return (default 8 MiB).
    pub max_result_size: Option<ByteSize>,
    /// Largest host memory one parsed result may take (default 64 MiB).
    pub max_result_memory: Option<ByteSize>,
    /// Host memory all results waiting to be stored may take (default 256 MiB).
    pub max_host_memory: Option<ByteSize>,
    /// Longest exception message, and traceback, kept from a guest (default 64 KiB).
    pub max_error_size: Option<ByteSize>,
    /// Guest output lines logged per call (default 1000).
    pub max_log_lines: Option<u32>,
    /// Guest output bytes logged per call (default 1 MiB).
    pub max_log_bytes: Option<ByteSize>,
    /// Task names one component may declare (default 1000).
    pub max_tasks_per_component: Option<usize>,
    /// Largest component file loaded (default 64 MiB).
    pub max_component_size: Option<ByteSize>,
    /// Seconds one component may take to compile (default 120).
    pub compile_timeout: Option<f64>,
    /// Address space of the process compiling one component (default 2 GiB).
    pub compile_memory: Option<ByteSize>,
}

/// `result_expires`: seconds, or `false`/`0` for results that never expire.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ResultExpires(pub Option<u64>);

impl<'de> Deserialize<'de> for ResultExpires {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            B(bool),
            N(f64),
        }
        Ok(match Raw::deserialize(d)? {
            Raw::B(false) => ResultExpires(None),
            Raw::B(true) => ResultExpires(Some(86400)),
            Raw::N(n) if n <= 0.0 => ResultExpires(None),
            Raw::N(n) => ResultExpires(Some(n.round() as u64)),
        })
    }
}

/// `broker_use_ssl`: `true` or kombu's ssl options.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum BrokerUseSsl {
    /// `broker_use_ssl = true`: TLS with the built-in roots.
    Enabled(bool),
    /// `[broker_use_ssl]` with kombu's keys.
    Options {
        /// CA file (PEM).
        ca_certs: Option<String>,
        /// Client certificate (PEM).
        certfile: Option<String>,
        /// Client key (PEM).
        keyfile: Option<String>,
        /// `CERT_REQUIRED` (default) / `CERT_OPTIONAL` / `CERT_NONE`.
        cert_reqs: Option<String>,
        /// Name to verify.
        server_hostname: Option<String>,
    },
}

/// Every setting, with Celery's names and defaults.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Broker URL, e.g. `redis://localhost:6379/0`.
    pub broker_url: Option<String>,
    /// Result backend URL, e.g. `redis://localhost:6379/1`; unset disables results.
    pub result_backend: Option<String>,
    /// Serializer for messages Celeriac sends (`json` or `msgpack`).
    pub task_serializer: String,
    /// Serializer for results (`json` or `msgpack`).
    pub result_serializer: String,
    /// Content types accepted from the broker. `pickle` is never accepted.
    pub accept_content: Vec<String>,
    /// Time zone name for ETAs (only `UTC` is interpreted; others are accepted with a warning).
    pub timezone: String,
    /// Use UTC for dates.
    pub enable_utc: bool,
    /// Result time-to-live in seconds (default one day).
    pub result_expires: ResultExpires,
    /// Acknowledge messages after the task ran instead of before.
    pub task_acks_late: bool,
    /// Store a STARTED state when a task starts.
    pub task_track_started: bool,
    /// Store no results at all.
    pub task_ignore_result: bool,
    /// Global hard time limit in seconds.
    pub task_time_limit: Option<f64>,
    /// Global soft time limit in seconds.
    pub task_soft_time_limit: Option<f64>,
    /// Queue for tasks with no route.
    pub task_default_queue: String,
    /// Task name, glob (`tasks.*`) or regex (`re:...`) → route, or a list of such routers.
    pub task_routes: TaskRoutes,
    /// Rate limit of tasks with none in `task_annotations` (Celery's `task_default_rate_limit`).
    pub task_default_rate_limit: Option<RateLimit>,
    /// Task name (or `*`) → annotation.
    pub task_annotations: BTreeMap<String, Annotation>,
    /// Number of task calls run at once (default: number of CPUs).
    pub worker_concurrency: Option<u32>,
    /// Messages prefetched per concurrency slot.
    pub worker_prefetch_multiplier: u32,
    /// Send task events (`-E`).
    pub worker_send_task_events: bool,
    /// Celeriac: serve Prometheus metrics at `http://<this address>/metrics` (`--metrics`).
    pub worker_metrics_address: Option<String>,
    /// AMQP: `x-max-priority` of the task queues (must match the clients').
    pub task_queue_max_priority: Option<u8>,
    /// AMQP: `classic` or `quorum` (`x-queue-type`), as the clients declare.
    pub task_default_queue_type: String,
    /// AMQP: the type of queues other than the default one (`-Q name`).
    pub task_create_missing_queue_type: String,
    /// AMQP `rpc://` results: persistent messages (`delivery_mode` 2).
    pub result_persistent: bool,
    /// AMQP TLS: `true`, or kombu's ssl options (`ca_certs`, `certfile`, `keyfile`, `cert_reqs`).
    pub broker_use_ssl: Option<BrokerUseSsl>,
    /// kombu transport options.
    pub broker_transport_options: TransportOptions,
    /// Message signing (`task_serializer = "auth"`): the PEM RSA private key that signs.
    pub security_key: Option<String>,
    /// Message signing: the password of `security_key` (encrypted keys are not supported yet).
    pub security_key_password: Option<String>,
    /// Message signing: the PEM certificate of `security_key` (it names the signer).
    pub security_certificate: Option<String>,
    /// Message signing: the trusted certificates (a directory, a `*.pem` glob, or one file).
    pub security_cert_store: Option<String>,
    /// Message signing: the hash (`sha256`, Celery's default; `sha224`, `sha384`, `sha512`).
    pub security_digest: String,
    /// Celeriac: bounds on what one task message may hold (`[message_limits]`).
    pub message_limits: MessageLimitsSettings,
    /// Sandbox settings.
    pub sandbox: SandboxSettings,
    /// What loading noticed and the user should hear once: Celery settings
    /// accepted but not honoured, unknown `CELERIAC_*` variables.
    #[serde(skip)]
    pub notices: Vec<String>,
    /// The tenants' `tenant.toml` files (`config/tenant.rs`), read from the
    /// task directory by the worker.
    #[serde(skip)]
    pub tenants: Tenants,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            broker_url: None,
            result_backend: None,
            task_serializer: "json".into(),
            result_serializer: "json".into(),
            accept_content: vec!["json".into()],
            timezone: "UTC".into(),
            enable_utc: true,
            result_expires: ResultExpires(Some(86400)),
            task_acks_late: false,
            task_track_started: false,
            task_ignore_result: false,
            task_time_limit: None,
            task_soft_time_limit: None,
            task_default_queue: "celery".into(),
            task_routes: TaskRoutes::default(),
            task_default_rate_limit: None,
            task_annotations: BTreeMap::new(),
            worker_concurrency: None,
            worker_prefetch_multiplier: 4,
            worker_send_task_events: false,
            worker_metrics_address: None,
            task_queue_max_priority: None,
            task_default_queue_type: "classic".into(),
            task_create_missing_queue_type: "classic".into(),
            result_persistent: false,
            broker_use_ssl: None,
            broker_transport_options: TransportOptions::default(),
            security_key: None,
            security_key_password: None,
            security_certificate: None,
            security_cert_store: None,
            security_digest: "sha256".into(),
            message_limits: MessageLimitsSettings::default(),
            sandbox: SandboxSettings::default(),
            notices: Vec::new(),
            tenants: Tenants::default(),
        }
    }
}

/// Top-level setting names, for typo suggestions and environment overrides.
pub const SETTING_NAMES: &[&str] = &[
    "broker_url",
    "result_backend",
    "task_serializer",
    "result_serializer",
    "accept_content",
    "timezone",
    "enable_utc",
    "result_expires",
    "task_acks_late",
    "task_track_started",
    "task_ignore_result",
    "task_time_limit",
    "task_soft_time_limit",
    "task_default_queue",
    "task_routes",
    "task_default_rate_limit",
    "task_annotations",
    "worker_concurrency",
    "worker_prefetch_multiplier",
    "worker_send_task_events",
    "worker_metrics_address",
    "task_queue_max_priority",
    "task_default_queue_type",
    "task_create_missing_queue_type",
    "result_persistent",
    "broker_use_ssl",
    "broker_transport_options",
    "security_key",
    "security_key_password",
    "security_certificate",
    "security_cert_store",
    "security_digest",
    "message_limits",
    "sandbox",
];

/// The closest known name to `key`, if one is close enough to be a typo.
fn suggest<'a>(key: &str, names: impl IntoIterator<Item = &'a str>) -> Option<String> {
    // Case as written (old names are uppercase), and lowercased (`Broker_Ulr`).
    let lower = key.to_ascii_lowercase();
    names
        .into_iter()
        .map(|n| (strsim::jaro_winkler(key, n).max(strsim::jaro_winkler(&lower, n)), n))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, n)| n.to_string())
}

/// Celery's environment variables for settings, as `celery.app.utils.Settings` reads
/// them: each overrides the config when set and not empty.
pub const CELERY_ENV_SETTINGS: &[(&str, &str)] =
    &[("CELERY_BROKER_URL", "broker_url"), ("CELERY_RESULT_BACKEND", "result_backend")];

/// The prefix of Celeriac's own setting variables (`CELERIAC_BROKER_URL`).
pub const ENV_PREFIX: &str = "CELERIAC_";

/// `CELERIAC_*` variables that are no setting: the program's own and its tests' and tools'.
pub const NON_SETTING_VARIABLES: &[&str] = &[
    "CELERIAC_CONFIG",
    "CELERIAC_BIN",
    "CELERIAC_TASKS",
    "CELERIAC_TASKS_DIR",
    "CELERIAC_TEST_STANDIN",
    "CELERIAC_BENCH",
    "CELERIAC_PARAMS",
];

/// The notice for a `CELERIAC_*` variable that is no setting, naming the closest one.
fn unknown_variable(var: &str) -> String {
    let candidates: Vec<String> = SETTING_NAMES
        .iter()
        .filter(|n| **n != "sandbox")
        .map(|n| format!("{ENV_PREFIX}{}", n.to_ascii_uppercase()))
        .chain(NON_SETTING_VARIABLES.iter().map(|v| v.to_string()))
        .collect();
    let upper = var.to_ascii_uppercase();
    let best = candidates
        .iter()
        .map(|c| (strsim::jaro_winkler(&upper, c), c))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| format!(" (did you mean {c}?)"))
        .unwrap_or_default();
    format!("environment variable {var} is not a Celeriac setting and is ignored{best}")
}

/// The config file read when none is named: Celery's `config_from_object('celeryconfig')`
/// imports this module from the current directory (the start of `sys.path`).
pub const DISCOVERED_CONFIG: &str = "celeryconfig.py";

/// `celeryconfig.py` in the current directory, if there is one.
pub fn discover_config() -> Option<PathBuf> {
    let p = Path::new(DISCOVERED_CONFIG);
    p.is_file().then(|| p.to_path_buf())
}

/// Read a config file into a checked table of honoured settings: Python
/// (`*.py`) or TOML by extension; Celery settings the worker does not honour
/// are dropped with a notice; values are checked here, so an error names the file.
fn read_file(path: &Path, notices: &mut Vec<String>) -> Result<toml::Table, ConfigError> {
    let origin = path.display().to_string();
    let text =
        std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
    let table = if pyconfig::is_python_path(path) {
        pyconfig::parse(&text, &origin)?
    } else {
        text.parse()
            .map_err(|e: toml::de::Error| ConfigError::Invalid { origin: origin.clone(), message: e.to_string() })?
    };
    let table = sort_settings(table, &origin, notices)?;
    Settings::deserialize(toml::Value::Table(table.clone()))
        .map_err(|e| ConfigError::Invalid { origin: origin.clone(), message: e.to_string() })?;
    Ok(table)
}

/// Sort a file's top-level names: honoured settings are kept (old uppercase
/// names renamed to new ones), Celery settings the worker does not honour are
/// dropped with one notice each, and any other name is an error naming the
/// closest of all the names Celery and Celeriac know.
fn sort_settings(table: toml::Table, origin: &str, notices: &mut Vec<String>) -> Result<toml::Table, ConfigError> {
    let mut out = toml::Table::new();
    for (key, value) in table {
        let name = support::new_name(&key).unwrap_or(key.as_str()).to_string();
        if SETTING_NAMES.contains(&name.as_str()) {
            out.insert(name, value);
        } else if let Some(n) = support::notice(&name, origin) {
            notices.push(n);
        } else {
            let suggestion = suggest(&key, support::all_names());
            return Err(ConfigError::UnknownKey { origin: origin.into(), key, suggestion });
        }
    }
    check_keys(&out, origin)?;
    Ok(out)
}

/// Check every key of a table against the known names (recursing into the
/// tables whose keys are fixed), so the error names the closest valid key.
fn check_keys(table: &toml::Table, origin: &str) -> Result<(), ConfigError> {
    let nested: &[(&str, &[&str])] = &[
        (
            "broker_transport_options",
            &[
                "visibility_timeout",
                "unacked_restore_interval",
                "unacked_mutex_expire",
                "priority_steps",
                "sep",
                "global_keyprefix",
                "polling_interval",
            ],
        ),
        ("broker_use_ssl", &["ca_certs", "certfile", "keyfile", "cert_reqs", "server_hostname"]),
        ("message_limits", &["max_size", "max_headers", "max_header_size", "max_args"]),
        (
            "sandbox",
            &[
                "fuel",
                "max_memory",
                "time_limit",
                "max_stack",
                "max_calls_per_instance",
                "cache_dir",
                "cache_max_size",
                "cache_max_age",
                "fuel_metering",
                "max_result_size",
                "max_result_memory",
                "max_host_memory",
                "max_error_size",
                "max_log_lines",
                "max_log_bytes",
                "max_tasks_per_component",
                "max_component_size",
                "compile_timeout",
                "compile_memory",
            ],
        ),
    ];
    const ANNOTATION_KEYS: &[&str] = &[
        "rate_limit",
        "time_limit",
        "soft_time_limit",
        "acks_late",
        "ignore_result",
        "track_started",
        "fuel",
        "max_memory",
        "max_table_elements",
        "max_instances",
        "max_stack",
        "max_calls_per_instance",
        "max_retries",
        "default_retry_delay",
        "send_tasks",
        "cluster_rate_limit",
        "http_allow",
    ];
    const ROUTE_KEYS: &[&str] = &["queue", "exchange", "routing_key", "priority"];
    for (key, value) in table {
        let check_inner = |t: &toml::Table, allowed: &[&str], prefix: &str| -> Result<(), ConfigError> {
            for k in t.keys() {
                if !allowed.contains(&k.as_str()) {
                    return Err(ConfigError::UnknownKey {
                        origin: origin.into(),
                        key: format!("{prefix}.{k}"),
                        suggestion: suggest(k, allowed.iter().copied()).map(|s| format!("{prefix}.{s}")),
                    });
                }
            }
            Ok(())
        };
        if let Some((_, allowed)) = nested.iter().find(|(n, _)| n == key)
            && let Some(t) = value.as_table()
        {
            check_inner(t, allowed, key)?;
        }
        let per_task = match key.as_str() {
            "task_annotations" => Some(ANNOTATION_KEYS),
            "task_routes" => Some(ROUTE_KEYS),
            _ => None,
        };
        // `task_routes` may also be a list of routers (`[[task_routes]]`).
        let tables: Vec<&toml::Table> = match value {
            toml::Value::Table(t) => vec![t],
            toml::Value::Array(a) => a.iter().filter_map(toml::Value::as_table).collect(),
            _ => Vec::new(),
        };
        if let Some(allowed) = per_task {
            for t in tables {
                for (task, inner) in t {
                    if let Some(inner) = inner.as_table() {
                        check_inner(inner, allowed, &format!("{key}.\"{task}\""))?;
                    }
                }
            }
        }
    }
    Ok(())
}

/// The broker when none is configured: an SQLite file in the current directory.
pub const DEFAULT_BROKER_URL: &str = "sqla+sqlite:///celeriac.sqlite";

impl Settings {
    /// The broker to use: `broker_url`, or the embedded SQLite file
    /// ([`DEFAULT_BROKER_URL`]) when none is configured.
    pub fn effective_broker_url(&self) -> String {
        self.broker_url.clone().unwrap_or_else(|| DEFAULT_BROKER_URL.to_string())
    }

    /// The result backend to use: `result_backend`; else, when the broker is
    /// the embedded SQLite one, Celery's database backend on the same file
    /// (`db+sqlite:///<same path>`); else none (results disabled, as in Celery).
    pub fn effective_result_backend(&self) -> Option<String> {
        if let Some(r) = &self.result_backend {
            return Some(r.clone());
        }
        let broker = self.effective_broker_url();
        crate::connection::url::SQLITE_TRANSPORT_SCHEMES
            .iter()
            .find_map(|s| broker.strip_prefix(s))
            .map(|rest| format!("db+sqlite://{rest}"))
    }

    /// The AMQP declarations these settings call for.
    pub fn amqp_topology(&self) -> crate::broker::amqp::Topology {
        use crate::protocol::amqp::QueueType;
        let kind = |t: &str| if t.eq_ignore_ascii_case("quorum") { QueueType::Quorum } else { QueueType::Classic };
        crate::broker::amqp::Topology {
            max_priority: self.task_queue_max_priority,
            default_queue: self.task_default_queue.clone(),
            default_queue_type: kind(&self.task_default_queue_type),
            missing_queue_type: kind(&self.task_create_missing_queue_type),
        }
    }

    /// `broker_use_ssl` as the AMQP transport's TLS options (`None`: as the URL says).
    pub fn amqp_ssl(&self) -> Option<crate::broker::amqp::url::SslOptions> {
        use crate::broker::amqp::url::SslOptions;
        match self.broker_use_ssl.clone()? {
            BrokerUseSsl::Enabled(false) => None,
            BrokerUseSsl::Enabled(true) => Some(SslOptions::default()),
            BrokerUseSsl::Options { ca_certs, certfile, keyfile, cert_reqs, server_hostname } => {
                Some(SslOptions { cert_reqs, ca_certs, certfile, keyfile, server_hostname })
            }
        }
    }

    /// Parse settings from TOML text.
    pub fn from_toml(text: &str, origin: &str) -> Result<Settings, ConfigError> {
        let table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| ConfigError::Invalid { origin: origin.into(), message: e.to_string() })?;
        Settings::from_table(table, origin)
    }

    /// Parse settings from a `celeryconfig.py` module's text.
    pub fn from_python(text: &str, origin: &str) -> Result<Settings, ConfigError> {
        Settings::from_table(pyconfig::parse(text, origin)?, origin)
    }

    /// Settings from a parsed file (TOML, or Python turned into the same tree).
    fn from_table(table: toml::Table, origin: &str) -> Result<Settings, ConfigError> {
        let mut notices = Vec::new();
        let table = sort_settings(table, origin, &mut notices)?;
        let mut s = Settings::deserialize(toml::Value::Table(table))
            .map_err(|e| ConfigError::Invalid { origin: origin.into(), message: e.to_string() })?;
        s.notices = notices;
        Ok(s)
    }

    /// Read a config file: a Python module (`*.py`, as Celery's `celeryconfig.py`) or TOML.
    pub fn from_file(path: &Path) -> Result<Settings, ConfigError> {
        let mut notices = Vec::new();
        let table = read_file(path, &mut notices)?;
        let mut s = Settings::deserialize(toml::Value::Table(table))
            .map_err(|e| ConfigError::Invalid { origin: path.display().to_string(), message: e.to_string() })?;
        s.notices = notices;
        Ok(s)
    }

    /// Load defaults ← file (if any) ← `CELERY_BROKER_URL` / `CELERY_RESULT_BACKEND`
    /// ← `CELERIAC_*` environment variables.
    pub fn load(file: Option<&Path>) -> Result<Settings, ConfigError> {
        Self::load_with_env(file, std::env::vars())
    }

    /// [`Settings::load`] with an explicit environment (for tests).
    pub fn load_with_env(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Settings, ConfigError> {
        let mut notices = Vec::new();
        let mut table = match file {
            Some(p) => read_file(p, &mut notices)?,
            None => toml::Table::new(),
        };
        let mut env: Vec<(String, String)> = env.into_iter().collect();
        env.sort();
        // Celery's own variables override the config, as `celery.app.utils.Settings`
        // reads them (an empty one counts as unset, as Python's `or` does).
        for (var, name) in CELERY_ENV_SETTINGS {
            if let Some((_, v)) = env.iter().find(|(k, v)| k == var && !v.is_empty()) {
                table.insert(name.to_string(), toml::Value::String(v.clone()));
            }
        }
        for var in ["CELERY_BROKER_READ_URL", "CELERY_BROKER_WRITE_URL"] {
            if env.iter().any(|(k, v)| k == var && !v.is_empty()) {
                notices.push(format!(
                    "environment variable {var} is not implemented yet: the worker reads and writes through broker_url"
                ));
            }
        }
        for (var, v) in &env {
            let Some(name) = var.strip_prefix(ENV_PREFIX) else { continue };
            if NON_SETTING_VARIABLES.contains(&var.as_str()) {
                continue;
            }
            let name = name.to_ascii_lowercase();
            let name = support::new_name(&name.to_ascii_uppercase()).map_or(name, str::to_string);
            if !SETTING_NAMES.contains(&name.as_str()) {
                let origin = format!("environment variable {var}");
                match support::notice(&name, &origin) {
                    Some(n) => notices.push(n),
                    None => notices.push(unknown_variable(var)),
                }
                continue;
            }
            // A value is TOML if it parses as one (`true`, `4`, `["json"]`), else a string.
            let value = format!("v = {v}")
                .parse::<toml::Table>()
                .ok()
                .and_then(|mut t| t.remove("v"))
                .unwrap_or_else(|| toml::Value::String(v.clone()));
            // Checked alone first, so a bad value names the variable it came from.
            let mut alone = toml::Table::new();
            alone.insert(name.clone(), value.clone());
            check_keys(&alone, var)?;
            Settings::deserialize(toml::Value::Table(alone))
                .map_err(|e| ConfigError::Env { var: var.clone(), message: e.to_string() })?;
            table.insert(name, value);
        }
        let mut s = Settings::deserialize(toml::Value::Table(table))
            .map_err(|e| ConfigError::Invalid { origin: "settings".into(), message: e.to_string() })?;
        s.notices = notices;
        Ok(s)
    }

    /// The annotation for `task`: the `"*"` entry overlaid with the task's own.
    pub fn annotation(&self, task: &str) -> Annotation {
        self.annotation_in(task, None)
    }

    /// The annotation for `task` of `tenant` (`None`: a task outside any
    /// tenant's directory): the `"*"` entry, the tenant's `[annotations]`,
    /// then the task's own.
    pub fn annotation_in(&self, task: &str, tenant: Option<&str>) -> Annotation {
        let mut a = self.task_annotations.get("*").cloned().unwrap_or_default();
        if let Some(t) = tenant.and_then(|t| self.tenants.get(t)) {
            a.overlay(&t.annotations);
        }
        if let Some(t) = self.task_annotations.get(task) {
            a.overlay(t);
        }
        a
    }

    /// Where `task` is sent: the first route `task_routes` has for it (see
    /// `config/routes.rs`), its queue defaulting to `task_default_queue`, as Celery's
    /// `Router.route` fills it in.
    pub fn route(&self, task: &str) -> Route {
        let mut route = self.task_routes.route(task).cloned().unwrap_or_default();
        if route.queue.is_none() {
            route.queue = Some(self.task_default_queue.clone());
        }
        route
    }

    /// Warnings for `task_routes` entries that send tasks to a queue this worker
    /// does not consume (`queues`: what it consumes): those tasks would wait there.
    /// A route through an exchange with no queue named cannot be judged and is skipped.
    pub fn unconsumed_routes(&self, queues: &[String]) -> Vec<String> {
        let mut warnings = Vec::new();
        let mut seen = std::collections::BTreeSet::new();
        for (key, route) in self.task_routes.0.iter().flat_map(|r| r.0.iter()) {
            let queue = match (&route.queue, &route.exchange) {
                (Some(q), _) => q.clone(),
                (None, None) => self.task_default_queue.clone(),
                (None, Some(_)) => continue,
            };
            if queues.contains(&queue) || !seen.insert((key.to_string(), queue.clone())) {
                continue;
            }
            let consumed = queues.join(",");
            warnings.push(format!(
                "task_routes sends {key} to queue {queue:?}, which this worker does not consume (it consumes \
                 {consumed}): those tasks will wait there. Consume it too with -Q {consumed},{queue} (or start \
                 another worker with -Q {queue})"
            ));
        }
        warnings
    }

    /// Whether the broker routes through exchanges (AMQP), so that a route's
    /// `exchange` and `routing_key` decide where a message goes.
    pub fn exchange_routing(&self) -> bool {
        crate::broker::amqp::url::is_amqp_url(&self.effective_broker_url())
    }

    /// The tasks per second `task` may start at on one worker (`None`: unlimited):
    /// its annotation's `rate_limit` (`annotation` is [`Settings::annotation`]'s
    /// answer for it), else `task_default_rate_limit`.
    pub fn rate_limit(&self, annotation: &Annotation) -> Option<f64> {
        annotation.rate_limit.as_ref().or(self.task_default_rate_limit.as_ref()).and_then(RateLimit::tasks_per_second)
    }

    /// Worker concurrency: the setting, or the number of CPUs.
    pub fn concurrency(&self) -> u32 {
        self.worker_concurrency
            .filter(|c| *c > 0)
            .unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get() as u32).unwrap_or(1))
    }

    /// The sandbox configuration these settings describe.
    pub fn sandbox_config(&self) -> SandboxConfig {
        let mut cfg = SandboxConfig { max_concurrent: self.concurrency(), ..SandboxConfig::default() };
        let s = &self.sandbox;
        cfg.limits = cfg.limits.with(&LimitsOverride {
            fuel: s.fuel,
            max_memory: s.max_memory,
            time_limit: s.time_limit.or(self.task_time_limit),
            max_stack: s.max_stack,
            max_calls_per_instance: s.max_calls_per_instance,
            ..Default::default()
        });
        if let Some(d) = &s.cache_dir {
            cfg.cache_dir = if d.as_os_str().is_empty() { None } else { Some(d.clone()) };
        }
        if let Some(size) = s.cache_max_size {
            cfg.cache_max_size = size.as_u64();
        }
        if let Some(age) = s.cache_max_age.filter(|a| a.is_finite()) {
            cfg.cache_max_age = Duration::from_secs_f64(age.clamp(0.0, 1e12));
        }
        if let Some(f) = s.fuel_metering {
            cfg.fuel_metering = f;
        }
        let b = &mut cfg.bounds;
        let size = |v: Option<ByteSize>, default: usize| {
            v.map_or(default, |v| usize::try_from(v.as_u64()).unwrap_or(usize::MAX))
        };
        // Capped at the ceilings of what is ever copied out of a guest (sandbox::exports).
        use crate::sandbox::exports::{ERROR_CEILING, RESULT_CEILING, TASKS_CEILING};
        b.max_result_size = size(s.max_result_size, b.max_result_size).min(RESULT_CEILING);
        b.max_result_memory = size(s.max_result_memory, b.max_result_memory);
        b.max_host_memory = size(s.max_host_memory, b.max_host_memory);
        b.max_error_size = size(s.max_error_size, b.max_error_size).clamp(256, ERROR_CEILING);
        b.max_log_lines = s.max_log_lines.unwrap_or(b.max_log_lines);
        b.max_log_bytes = size(s.max_log_bytes, b.max_log_bytes);
        b.max_tasks_per_component = s.max_tasks_per_component.unwrap_or(b.max_tasks_per_component).min(TASKS_CEILING);
        b.max_component_size = s.max_component_size.map_or(b.max_component_size, ByteSize::as_u64);
        if let Some(t) = s.compile_timeout.filter(|t| t.is_finite()) {
            b.compile_timeout = Duration::from_secs_f64(t.clamp(0.1, 86_400.0));
        }
        b.compile_memory = s.compile_memory.map_or(b.compile_memory, ByteSize::as_u64);
        for (task, a) in &self.task_annotations {
            let o = a.limits();
            if !o.is_empty() {
                cfg.task_limits.insert(task.clone(), o);
            }
        }
        cfg.tenant_files = self.tenants.0.keys().cloned().collect();
        for (tenant, t) in &self.tenants.0 {
            let o = t.annotations.limits();
            if !o.is_empty() {
                cfg.tenant_limits.insert(tenant.clone(), o);
            }
        }
        cfg
    }

    /// Problems that are not errors but deserve a warning at start-up (first
    /// the load's [`Settings::notices`], each once).
    pub fn warnings(&self) -> Vec<String> {
        let mut w = self.notices.clone();
        if self.accept_content.iter().any(|c| c.contains("pickle") || c.contains("python-serialize")) {
            w.push("accept_content lists pickle: Celeriac never deserialises pickle; such messages are refused".into());
        }
        if !self.timezone.eq_ignore_ascii_case("utc") {
            w.push(format!("timezone {:?}: ETAs are interpreted from their own UTC offsets", self.timezone));
        }
        if self.task_soft_time_limit.is_some() || self.task_annotations.values().any(|a| a.soft_time_limit.is_some()) {
            w.push(
                "soft time limits are not raised inside a wasm guest: a task reads what is left \
                 (celeriac_sdk::soft_time_left, celeriac.soft_time_left) and stops itself; the hard limit still kills"
                    .into(),
            );
        }
        w
    }
}

/// Celery-style glob (`*` and `?`) match for `task_routes` and annotations.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    fn go(p: &[u8], n: &[u8]) -> bool {
        match (p.first(), n.first()) {
            (None, None) => true,
            (Some(b'*'), _) => go(&p[1..], n) || (!n.is_empty() && go(p, &n[1..])),
            (Some(b'?'), Some(_)) => go(&p[1..], &n[1..]),
            (Some(a), Some(b)) if a == b => go(&p[1..], &n[1..]),
            _ => false,
        }
    }
    go(pattern.as_bytes(), name.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn celery_names_parse() {
        let s = Settings::from_toml(
            r#"
broker_url = "redis://localhost:6379/0"
result_backend = "redis://localhost:6379/1"
task_acks_late = true
result_expires = 60
accept_content = ["json", "msgpack"]
[task_routes."tasks.*"]
queue = "wasm"
[task_annotations."tasks.spin"]
time_limit = 1
max_memory = "16MiB"
max_stack = "1MiB"
[broker_transport_options]
visibility_timeout = 5
"#,
            "test",
        )
        .unwrap();
        assert!(s.task_acks_late);
        assert_eq!(s.result_expires, ResultExpires(Some(60)));
        assert_eq!(s.route("tasks.add").queue.as_deref(), Some("wasm"));
        assert_eq!(s.route("other.add").queue.as_deref(), Some("celery"));
        let cfg = s.sandbox_config();
        assert_eq!(cfg.limits_for("tasks.spin").time_limit, Duration::from_secs(1));
        assert_eq!(cfg.limits_for("tasks.spin").max_memory, 16 << 20);
        assert_eq!(cfg.limits_for("tasks.spin").max_stack, 1 << 20);
        assert_eq!(cfg.limits_for("tasks.add").max_stack, crate::sandbox::limits::DEFAULT_MAX_STACK);
        assert_eq!(s.broker_transport_options.visibility(), Duration::from_secs(5));
    }

    #[test]
    fn max_calls_per_instance_is_one_unless_set_globally_or_per_task() {
        let s =
            Settings::from_toml("[task_annotations.\"tasks.counter\"]\nmax_calls_per_instance = 50\n", "t").unwrap();
        let cfg = s.sandbox_config();
        assert_eq!(cfg.limits_for("tasks.counter").max_calls_per_instance, 50);
        assert_eq!(cfg.limits_for("tasks.add").max_calls_per_instance, 1);
        let s = Settings::from_toml("[sandbox]\nmax_calls_per_instance = 7\n", "t").unwrap();
        assert_eq!(s.sandbox_config().limits_for("tasks.add").max_calls_per_instance, 7);
        // 0 means what 1 does: a fresh instance for every call.
        let s = Settings::from_toml("[sandbox]\nmax_calls_per_instance = 0\n", "t").unwrap();
        assert_eq!(s.sandbox_config().limits_for("tasks.add").max_calls_per_instance, 1);
    }

    #[test]
    fn typos_suggest_the_closest_setting() {
        let e = Settings::from_toml("broker_ulr = \"x\"", "test").unwrap_err();
        assert_eq!(e.to_string(), "unknown setting \"broker_ulr\" in test (did you mean \"broker_url\"?)");
        let e = Settings::from_toml("[task_annotations.\"tasks.add\"]\ntime_limt = 3", "test").unwrap_err();
        assert!(e.to_string().contains("did you mean \"task_annotations.\\\"tasks.add\\\".time_limit\""), "{e}");
    }

    #[test]
    fn an_http_allow_entry_that_could_never_match_is_refused_in_task_annotations_too() {
        let ok = Settings::from_toml("[task_annotations.\"tasks.fetch\"]\nhttp_allow = [\"api.x.com:443\"]", "t");
        let allow = ok.unwrap().task_annotations["tasks.fetch"].http_allow.clone();
        assert_eq!(allow, Some(vec!["api.x.com:443".to_string()]));
        for bad in ["https://api.x.com", "*.x.com", "user@x.com", ""] {
            let text = format!("[task_annotations.\"tasks.fetch\"]\nhttp_allow = [{bad:?}]");
            let e = Settings::from_toml(&text, "t").unwrap_err().to_string();
            assert!(e.contains("not a host or host:port"), "{bad}: {e}");
        }
        let py = "task_annotations = {'tasks.fetch': {'http_allow': ['http://x.com/']}}";
        let e = Settings::from_python(py, "celeryconfig.py").unwrap_err().to_string();
        assert!(e.contains("not a host or host:port"), "{e}");
    }

    #[test]
    fn environment_overrides_the_file() {
        let env = vec![
            ("CELERIAC_BROKER_URL".to_string(), "redis://h:1/2".to_string()),
            ("CELERIAC_TASK_ACKS_LATE".to_string(), "true".to_string()),
            ("CELERIAC_BIN".to_string(), "/x".to_string()),
        ];
        let s = Settings::load_with_env(None, env).unwrap();
        assert_eq!(s.broker_url.as_deref(), Some("redis://h:1/2"));
        assert!(s.task_acks_late);
    }

    #[test]
    fn embedded_sqlite_is_the_default() {
        let s = Settings::default();
        assert_eq!(s.effective_broker_url(), "sqla+sqlite:///celeriac.sqlite");
        assert_eq!(s.effective_result_backend().as_deref(), Some("db+sqlite:///celeriac.sqlite"));
        let s = Settings::from_toml("broker_url = \"sqla+sqlite:////tmp/q.db\"", "t").unwrap();
        assert_eq!(s.effective_result_backend().as_deref(), Some("db+sqlite:////tmp/q.db"));
        let s = Settings::from_toml("broker_url = \"redis://h/0\"", "t").unwrap();
        assert_eq!(s.effective_result_backend(), None);
        let s = Settings::from_toml(
            "result_backend = \"redis://h/1\"\n[broker_transport_options]\npolling_interval = 0.01",
            "t",
        )
        .unwrap();
        assert_eq!(s.effective_result_backend().as_deref(), Some("redis://h/1"));
        assert_eq!(s.broker_transport_options.polling_interval, Some(0.01));
    }

    #[test]
    fn result_expires_false_means_never() {
        let s = Settings::from_toml("result_expires = false", "t").unwrap();
        assert_eq!(s.result_expires, ResultExpires(None));
    }

    #[test]
    fn the_seed_celeryconfig_translated_to_toml_is_accepted() {
        let s = Settings::from_toml(
            r#"
broker_url = "redis://localhost:6379/0"
result_backend = "redis://localhost:6379/1"
task_serializer = "json"
result_serializer = "json"
accept_content = ["json"]
timezone = "Europe/Oslo"
enable_utc = true
[task_routes]
"tasks.add" = "low-priority"
[task_annotations."tasks.add"]
rate_limit = "10/m"
"#,
            "seed",
        )
        .unwrap();
        assert_eq!(s.route("tasks.add").queue.as_deref(), Some("low-priority"));
        assert_eq!(s.route("tasks.mul").queue.as_deref(), Some("celery"));
        assert_eq!(s.rate_limit(&s.annotation("tasks.add")), Some(10.0 / 60.0));
        assert_eq!(s.rate_limit(&s.annotation("tasks.mul")), None);
    }

    #[test]
    fn a_star_annotation_and_the_default_rate_limit_apply_to_every_task_unless_overridden() {
        let s = Settings::from_toml(
            "task_default_rate_limit = \"5/s\"\n[task_annotations.\"*\"]\nrate_limit = \"10/s\"\n\
             [task_annotations.\"tasks.add\"]\nrate_limit = \"0\"",
            "t",
        )
        .unwrap();
        assert_eq!(s.rate_limit(&s.annotation("tasks.mul")), Some(10.0));
        assert_eq!(s.rate_limit(&s.annotation("tasks.add")), None);
        let s = Settings::from_toml("task_default_rate_limit = 5", "t").unwrap();
        assert_eq!(s.rate_limit(&s.annotation("tasks.mul")), Some(5.0));
        let e = Settings::from_toml("[task_annotations.\"*\"]\nrate_limit = \"10/d\"", "t").unwrap_err();
        assert!(e.to_string().contains("invalid rate limit \"10/d\""), "{e}");
    }

    #[test]
    fn a_list_of_routers_is_checked_for_typos_too() {
        let e = Settings::from_toml("[[task_routes]]\n[task_routes.\"tasks.add\"]\nqueu = \"q\"", "t").unwrap_err();
        assert!(e.to_string().contains("did you mean"), "{e}");
    }

    /// Seed `celeryconfig.py` of Celery's First Steps, verbatim.
    const SEED_PY: &str = "broker_url = 'pyamqp://'\nresult_backend = 'rpc://'\n\ntask_serializer = 'json'\n\
                           result_serializer = 'json'\naccept_content = ['json']\ntimezone = 'Europe/Oslo'\n\
                           enable_utc = True\ntask_routes = {\n    'tasks.add': 'low-priority',\n}\n\
                           task_annotations = {\n    'tasks.add': {'rate_limit': '10/m'}\n}\n";

    #[test]
    fn the_seed_celeryconfig_py_loads_as_it_is() {
        let s = Settings::from_python(SEED_PY, "celeryconfig.py").unwrap();
        assert_eq!(s.broker_url.as_deref(), Some("pyamqp://"));
        assert_eq!(s.result_backend.as_deref(), Some("rpc://"));
        assert_eq!(s.timezone, "Europe/Oslo");
        assert!(s.enable_utc);
        assert_eq!(s.route("tasks.add").queue.as_deref(), Some("low-priority"));
        assert_eq!(s.rate_limit(&s.annotation("tasks.add")), Some(10.0 / 60.0));
        assert!(s.notices.is_empty(), "{:?}", s.notices);
        assert!(s.warnings().iter().any(|w| w.contains("Europe/Oslo")), "the time zone is explained");
    }

    #[test]
    fn celery_settings_the_worker_does_not_honour_are_accepted_with_one_notice_each() {
        let s = Settings::from_toml(
            "broker_connection_retry_on_startup = true\ntask_always_eager = true\nimports = [\"proj.tasks\"]\n\
             result_extended = true\nworker_max_tasks_per_child = 10\nCELERYBEAT_SCHEDULE = {}\n",
            "t.toml",
        )
        .unwrap();
        assert_eq!(s.notices.len(), 6, "{:?}", s.notices);
        for name in ["broker_connection_retry_on_startup", "task_always_eager", "imports", "worker_max_tasks_per_child"]
        {
            let n = s.notices.iter().filter(|n| n.starts_with(&format!("{name} "))).collect::<Vec<_>>();
            assert!(n.len() == 1 && n[0].contains("ignored by the worker: "), "{name}: {:?}", s.notices);
        }
        assert!(s.notices.iter().any(|n| n.starts_with("beat_schedule ")), "old names are reported by their new name");
        assert!(s.notices.iter().any(|n| n.starts_with("result_extended ") && n.contains("not implemented yet")));
        assert_eq!(s.warnings().iter().filter(|w| w.contains("task_always_eager")).count(), 1);
    }

    #[test]
    fn a_name_that_is_no_celery_setting_suggests_from_every_celery_name() {
        let e = Settings::from_toml("task_default_rate_limt = \"1/s\"", "t").unwrap_err();
        assert!(e.to_string().contains("did you mean \"task_default_rate_limit\"?"), "{e}");
        let e = Settings::from_toml("worker_max_task_per_child = 1", "t").unwrap_err();
        assert!(e.to_string().contains("did you mean \"worker_max_tasks_per_child\"?"), "{e}");
        let e = Settings::from_toml("CELERY_RESULT_BACKEN = \"x\"", "t").unwrap_err();
        assert!(e.to_string().contains("did you mean \"CELERY_RESULT_BACKEND\"?"), "{e}");
    }

    #[test]
    fn old_uppercase_names_set_the_new_settings() {
        let s = Settings::from_python("BROKER_URL = 'redis://h/0'\nCELERY_RESULT_BACKEND = 'redis://h/1'\n", "c.py")
            .unwrap();
        assert_eq!(s.broker_url.as_deref(), Some("redis://h/0"));
        assert_eq!(s.result_backend.as_deref(), Some("redis://h/1"));
    }

    fn env(vars: &[(&str, &str)]) -> Vec<(String, String)> {
        vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn celery_environment_variables_override_the_file_and_celeriacs_override_them() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("celeryconfig.py");
        std::fs::write(&file, SEED_PY).unwrap();
        let s = Settings::load_with_env(Some(&file), env(&[("CELERY_BROKER_URL", "redis://celery/0")])).unwrap();
        assert_eq!(s.broker_url.as_deref(), Some("redis://celery/0"));
        assert_eq!(s.result_backend.as_deref(), Some("rpc://"));
        let s = Settings::load_with_env(Some(&file), env(&[("CELERY_BROKER_URL", "")])).unwrap();
        assert_eq!(s.broker_url.as_deref(), Some("pyamqp://"), "an empty variable is unset, as Python's `or`");
        let s = Settings::load_with_env(
            Some(&file),
            env(&[("CELERY_RESULT_BACKEND", "redis://celery/1"), ("CELERIAC_RESULT_BACKEND", "redis://mine/1")]),
        )
        .unwrap();
        assert_eq!(s.result_backend.as_deref(), Some("redis://mine/1"));
    }

    #[test]
    fn an_unknown_celeriac_variable_is_a_notice_naming_the_closest_one() {
        let s = Settings::load_with_env(
            None,
            env(&[("CELERIAC_BROKER_ULR", "x"), ("CELERIAC_CONFIG", "f"), ("CELERIAC_TASK_ALWAYS_EAGER", "true")]),
        )
        .unwrap();
        assert_eq!(s.notices.len(), 2, "{:?}", s.notices);
        assert!(s.notices[0].contains("CELERIAC_BROKER_ULR") && s.notices[0].contains("CELERIAC_BROKER_URL?"));
        assert!(s.notices[1].contains("task_always_eager (environment variable CELERIAC_TASK_ALWAYS_EAGER)"));
    }

    #[test]
    fn a_bad_environment_value_names_its_variable() {
        let e = Settings::load_with_env(None, env(&[("CELERIAC_WORKER_CONCURRENCY", "many")])).unwrap_err();
        assert!(e.to_string().starts_with("environment variable CELERIAC_WORKER_CONCURRENCY: "), "{e}");
    }

    #[test]
    fn a_bad_value_in_a_python_file_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("celeryconfig.py");
        std::fs::write(&file, "worker_concurrency = 'many'\n").unwrap();
        let e = Settings::load_with_env(Some(&file), env(&[])).unwrap_err();
        assert!(e.to_string().contains("celeryconfig.py"), "{e}");
        std::fs::write(&file, "import os\n").unwrap();
        let e = Settings::load_with_env(Some(&file), env(&[])).unwrap_err();
        assert!(
            e.to_string().ends_with(
                "celeryconfig.py:1: an import: Celeriac reads celeryconfig.py without running \
                                          Python, so only literal assignments (name = 'value') are allowed"
            ),
            "{e}"
        );
    }

    #[test]
    fn routes_to_queues_the_worker_does_not_consume_are_pointed_out() {
        let s = Settings::from_python(SEED_PY, "c.py").unwrap();
        let w = s.unconsumed_routes(&["celery".to_string()]);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].contains("tasks.add") && w[0].contains("\"low-priority\"") && w[0].contains("-Q celery,low-priority")
        );
        assert!(s.unconsumed_routes(&["celery".into(), "low-priority".into()]).is_empty());
        let s = Settings::from_toml("[task_routes]\n\"a.*\" = { priority = 3 }\n", "t").unwrap();
        assert!(s.unconsumed_routes(&["celery".into()]).is_empty(), "no queue: the default one");
        assert_eq!(s.unconsumed_routes(&["other".into()]).len(), 1);
    }

    #[test]
    fn globs() {
        assert!(glob_match("tasks.*", "tasks.add"));
        assert!(glob_match("*", "x"));
        assert!(!glob_match("tasks.?", "tasks.add"));
    }
}
