//! Tenants: one subdirectory of the task directory per tenant, and its
//! optional `tenant.toml` — what a platform operator sets for all of one
//! tenant's tasks at once.
//!
//! `tasks/acme/billing.wasm` serves `acme.billing.<name>`: the directory is the
//! tenant (`acme`) and its name is the first part of every task name it
//! serves. `tasks/acme/tenant.toml` may set:
//!
//! ```toml
//! concurrency = 2          # most of acme's calls running at once on this worker
//! rate_limit = "100/s"     # acme's tasks started per second on this worker, all together
//! queue = "acme"           # a queue of acme's own, consumed beside the worker's queues
//!
//! [annotations]            # defaults for every acme task (task_annotations keys)
//! fuel = 500_000_000
//! max_memory = "64MiB"
//! time_limit = 30
//! send_tasks = true                                   # may send tasks
//! http_allow = ["api.example.com", "127.0.0.1:8080"]  # outbound HTTP (wasi:http) to these only
//!
//! [config]                 # values acme's tasks read (`config.get`); never logged
//! api_key = "..."
//! ```
//!
//! Precedence for a task's options, lowest first: the worker's defaults, the
//! `"*"` annotation, the tenant's `[annotations]`, the task's own annotation.
//! The file is the operator's: a tenant who can write it can grant itself
//! anything, so a deploy pipeline lets tenants write `.wasm` files only.
//! It is read when the worker starts (a broken file stops the start with its
//! path and reason); a change needs a restart (the hot-deploy watcher logs it,
//! and refuses the components of a tenant whose file appeared after the
//! start). `celeriac check-config -A DIR`
//! reads every tenant's file the same way, to check one before a restart.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Deserializer};

use super::{Annotation, ConfigError, RateLimit};

/// The name of a tenant's configuration file, in its directory.
pub const TENANT_FILE: &str = "tenant.toml";

/// One tenant's `tenant.toml`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    /// Most of the tenant's calls running at once on this worker (`None`: the worker's concurrency).
    pub concurrency: Option<u32>,
    /// The tenant's tasks started per second on this worker, all of them together.
    pub rate_limit: Option<RateLimit>,
    /// A queue of the tenant's own: consumed by the worker beside its queues,
    /// and where the worker sends the tenant's tasks when nothing else routes them.
    pub queue: Option<String>,
    /// Defaults for every task of the tenant (the keys of `task_annotations`).
    #[serde(default)]
    pub annotations: Annotation,
    /// Values the tenant's tasks may read (`config.get`), shared by every call.
    #[serde(default)]
    pub config: ConfigValues,
}

/// A tenant's `[config]` values: its tasks read them, the worker never shows
/// them (`Debug` lists the keys only).
#[derive(Clone, Default, PartialEq)]
pub struct ConfigValues(pub Arc<BTreeMap<String, String>>);

impl std::fmt::Debug for ConfigValues {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.0.keys().map(|k| (k, "********"))).finish()
    }
}

impl<'de> Deserialize<'de> for ConfigValues {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        BTreeMap::deserialize(d).map(|m| ConfigValues(Arc::new(m)))
    }
}

impl TenantConfig {
    /// Parse a `tenant.toml`; `origin` names it in errors.
    pub fn from_toml(text: &str, origin: &str) -> Result<TenantConfig, ConfigError> {
        // The parser's own text quotes the offending line, which may hold a
        // `[config]` secret: only its message and line number are reported.
        let config: TenantConfig = toml::from_str(text).map_err(|e| {
            let before = e.span().map_or("", |s| text.get(..s.start).unwrap_or(""));
            let line = before.matches('\n').count() + 1;
            let mut message = e.message().to_string();
            // Inside `[config]`, the message itself may quote the value (`invalid type: integer `123``).
            let table = before.lines().rev().map(str::trim).find(|l| l.starts_with('['));
            if table.is_some_and(|t| t.trim_start_matches('[').trim_start().starts_with("config")) {
                message = message.split('`').step_by(2).collect::<Vec<_>>().join("`…`");
            }
            ConfigError::Invalid { origin: origin.into(), message: format!("line {line}: {message}") }
        })?;
        config.check(origin)?;
        Ok(config)
    }

    /// One line on what it sets, for the worker's log and `check-config`:
    /// quotas, queue, HTTP grants and the names (never the values) of its `[config]`.
    pub fn summary(&self) -> String {
        let keys: Vec<&str> = self.config.0.keys().map(String::as_str).collect();
        format!(
            "concurrency {}, rate limit {}, queue {}, HTTP to {}, config keys {}",
            self.concurrency.map_or("unbounded".into(), |c| c.to_string()),
            self.rate_limit.as_ref().map_or("none".into(), ToString::to_string),
            self.queue.as_deref().unwrap_or("(shared)"),
            self.annotations.http_allow.as_ref().filter(|a| !a.is_empty()).map_or("nobody".into(), |a| a.join(", ")),
            if keys.is_empty() { "none".into() } else { keys.join(", ") },
        )
    }

    fn check(&self, origin: &str) -> Result<(), ConfigError> {
        let invalid = |message: String| ConfigError::Invalid { origin: origin.into(), message };
        if self.concurrency == Some(0) {
            return Err(invalid("concurrency must be at least 1".into()));
        }
        if let Some(q) = &self.queue
            && (q.is_empty() || q.len() > 255 || q.chars().any(char::is_control))
        {
            return Err(invalid(format!("queue {q:?} is not a queue name")));
        }
        Ok(())
    }
}

/// Every tenant with a `tenant.toml`, by name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tenants(pub BTreeMap<String, TenantConfig>);

impl Tenants {
    /// The `tenant.toml` of every subdirectory of `app` (nothing when `app`
    /// is a file). Dot directories are skipped, as the loader skips them.
    pub fn load(app: &Path) -> Result<Tenants, ConfigError> {
        let mut tenants = BTreeMap::new();
        let Ok(entries) = std::fs::read_dir(app) else { return Ok(Tenants::default()) };
        let mut dirs: Vec<PathBuf> = entries
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
            .map(|e| e.path())
            .collect();
        dirs.sort();
        for dir in dirs {
            let path = dir.join(TENANT_FILE);
            let text = match std::fs::read_to_string(&path) {
                Ok(t) => t,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(source) => return Err(ConfigError::Read { path, source }),
            };
            let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            tenants.insert(name, TenantConfig::from_toml(&text, &path.display().to_string())?);
        }
        Ok(Tenants(tenants))
    }

    /// The configuration of `tenant`, if it has a `tenant.toml`.
    pub fn get(&self, tenant: &str) -> Option<&TenantConfig> {
        self.0.get(tenant)
    }

    /// The `[config]` values a task of `tenant` reads (none outside a tenant,
    /// or for a tenant without a `tenant.toml`).
    pub fn config_of(&self, tenant: Option<&str>) -> Arc<BTreeMap<String, String>> {
        tenant.and_then(|t| self.get(t)).map(|t| t.config.0.clone()).unwrap_or_default()
    }

    /// The tenants' own queues, each once, in tenant order.
    pub fn queues(&self) -> Vec<String> {
        let mut queues: Vec<String> = Vec::new();
        for q in self.0.values().filter_map(|t| t.queue.clone()) {
            if !queues.contains(&q) {
                queues.push(q);
            }
        }
        queues
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenant_file_sets_quotas_defaults_grants_and_values() {
        let t = TenantConfig::from_toml(
            r#"
            concurrency = 2
            rate_limit = "10/s"
            queue = "acme"
            [annotations]
            fuel = 1000
            max_memory = "8MiB"
            send_tasks = true
            http_allow = ["127.0.0.1:8080", "API.example.com"]
            [config]
            api_key = "s3cret"
            "#,
            "acme/tenant.toml",
        )
        .unwrap();
        assert_eq!(t.concurrency, Some(2));
        assert_eq!(t.rate_limit.as_ref().and_then(RateLimit::tasks_per_second), Some(10.0));
        assert_eq!(t.annotations.fuel, Some(1000));
        assert_eq!(t.annotations.send_tasks, Some(true));
        assert_eq!(
            t.annotations.http_allow.as_deref(),
            Some(&["127.0.0.1:8080".to_string(), "API.example.com".into()][..])
        );
    }

    #[test]
    fn an_unknown_key_or_a_bad_value_is_an_error_naming_the_file() {
        let e = TenantConfig::from_toml("concurency = 2", "acme/tenant.toml").unwrap_err().to_string();
        assert!(e.contains("acme/tenant.toml") && e.contains("concurency"), "{e}");
        let e = TenantConfig::from_toml("[config]\napi_key = 12345678", "t").unwrap_err().to_string();
        assert!(e.contains("line 2") && !e.contains("12345678"), "{e}");
        let e = TenantConfig::from_toml("concurrency = 0", "acme/tenant.toml").unwrap_err().to_string();
        assert!(e.contains("at least 1"), "{e}");
        let e =
            TenantConfig::from_toml("[annotations]\nhttp_allow = [\"https://x.com\"]", "t").unwrap_err().to_string();
        assert!(e.contains("not a host"), "{e}");
    }

    #[test]
    fn tenants_are_read_from_the_subdirectories_of_the_task_directory() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("acme")).unwrap();
        std::fs::create_dir_all(dir.path().join("globex")).unwrap();
        std::fs::create_dir_all(dir.path().join(".hidden")).unwrap();
        std::fs::write(dir.path().join("acme/tenant.toml"), "queue = \"acme\"\nconcurrency = 1").unwrap();
        std::fs::write(dir.path().join(".hidden/tenant.toml"), "nonsense = 1").unwrap();
        let t = Tenants::load(dir.path()).unwrap();
        assert_eq!(t.0.keys().collect::<Vec<_>>(), ["acme"]);
        assert_eq!(t.queues(), ["acme"]);
        std::fs::write(dir.path().join("globex/tenant.toml"), "concurrency = \"x\"").unwrap();
        assert!(Tenants::load(dir.path()).unwrap_err().to_string().contains("globex"));
    }
}
