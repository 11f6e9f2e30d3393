//! What Celeriac does with each of Celery's setting names.
//!
//! A Celery user's `celeryconfig.py` names settings for clients, for `celery beat`
//! and for Python's prefork workers beside the ones a worker acts on. Celery
//! accepts all of them, so Celeriac does too: every name of Celery's own table
//! (`celery_settings.rs`, generated from `celery.app.defaults`) is either
//! honoured, ignored by this worker for a stated reason (it only matters to a
//! client or to a Python worker), or known but not implemented yet. Only a
//! name that is no Celery setting (nor Celeriac's own `sandbox`) is a typo.

use super::celery_settings::CELERY_SETTINGS;

/// What the worker does with one Celery setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Support {
    /// Read into [`super::Settings`] and acted on.
    Honoured,
    /// Accepted and ignored: it matters only to clients, `celery beat` or Python workers.
    Ignored(&'static str),
    /// A worker setting Celeriac does not implement yet.
    NotImplemented(&'static str),
}

/// Setting names Celeriac reads that are not Celery's (tables of its own).
pub const CELERIAC_ONLY_SETTINGS: &[&str] = &["sandbox", "worker_metrics_address", "message_limits"];

/// Whether `name` is one of Celery's setting names (new, lowercase style).
pub fn is_celery_setting(name: &str) -> bool {
    CELERY_SETTINGS.iter().any(|(n, _)| *n == name)
}

/// The new name of one of Celery's old uppercase setting names
/// (`CELERY_RESULT_BACKEND` → `result_backend`, `BROKER_URL` → `broker_url`).
pub fn new_name(old: &str) -> Option<&'static str> {
    CELERY_SETTINGS.iter().find(|(_, o)| !o.is_empty() && *o == old).map(|(n, _)| *n)
}

/// Every name a config may use: Celery's new and old names and Celeriac's own.
pub fn all_names() -> impl Iterator<Item = &'static str> {
    CELERY_SETTINGS
        .iter()
        .flat_map(|(n, o)| [*n, *o])
        .filter(|n| !n.is_empty())
        .chain(CELERIAC_ONLY_SETTINGS.iter().copied())
}

const CLIENT_ONLY: &str = "it only matters to the clients that send tasks";
const BEAT: &str = "periodic tasks are scheduled by `celery beat`, which sends them to this worker like any client";
const PYTHON_POOL: &str = "every task call runs in its own wasm sandbox inside the worker: there is no pool of \
                           Python child processes to configure";
const PYTHON_LOGGING: &str = "it configures Python's logging; the worker writes Celery's log layout itself";
const PYTHON_CLASS: &str = "it names a Python class of the Python worker";
const OTHER_BACKEND: &str = "the settings of a result backend Celeriac does not implement yet \
                             (it has redis://, rpc:// and db+sqlite://)";
const EVENTS: &str = "the worker sends its events to Celery's default `celeryev` exchange, as JSON; this option is \
                      not implemented yet";
const EVENT_RECEIVERS: &str =
    "it shapes the queues of event receivers (celery events, Flower), not what a worker sends";
const REMOTE_CONTROL: &str = "the worker answers on Celery's default mailbox (`celery.pidbox`, its queue's default TTLs); \
                              this option is not implemented yet";
const BROKER_PARTS: &str = "give the broker as one broker_url instead";
const REDIS_BACKEND_PARTS: &str = "give the result backend as one result_backend URL instead \
                                   (TLS options as rediss:// query parameters)";

/// What the worker does with Celery setting `name` (`None`: no Celery setting).
pub fn support(name: &str) -> Option<Support> {
    use Support::{Honoured, Ignored, NotImplemented};
    if !is_celery_setting(name) {
        return None;
    }
    if super::SETTING_NAMES.contains(&name) {
        return Some(Honoured);
    }
    let prefix = |p: &str| name.starts_with(p);
    Some(match name {
        _ if prefix("beat_") => Ignored(BEAT),
        _ if prefix("cassandra_")
            || prefix("s3_")
            || prefix("azureblockblob_")
            || prefix("gcs_")
            || prefix("cosmosdbsql_")
            || prefix("elasticsearch_")
            || prefix("cache_backend")
            || matches!(
                name,
                "couchbase_backend_settings" | "arangodb_backend_settings" | "mongodb_backend_settings"
            ) =>
        {
            NotImplemented(OTHER_BACKEND)
        }
        _ if prefix("database_") => NotImplemented(
            "the db+sqlite:// backend uses Celery's default tables and engine; other database options are not \
             implemented yet",
        ),
        "event_queue_ttl"
        | "event_queue_expires"
        | "event_queue_prefix"
        | "event_queue_durable"
        | "event_queue_exclusive" => Ignored(EVENT_RECEIVERS),
        _ if prefix("event_") => NotImplemented(EVENTS),
        _ if prefix("control_") => NotImplemented(REMOTE_CONTROL),
        "broker_host" | "broker_port" | "broker_user" | "broker_password" | "broker_vhost" => {
            NotImplemented(BROKER_PARTS)
        }
        "redis_host" | "redis_port" | "redis_db" | "redis_username" | "redis_password" | "redis_backend_use_ssl" => {
            NotImplemented(REDIS_BACKEND_PARTS)
        }
        "redis_max_connections"
        | "redis_socket_timeout"
        | "redis_socket_connect_timeout"
        | "redis_retry_on_timeout"
        | "redis_socket_keepalive" => NotImplemented("the Redis connections' tuning is fixed"),
        "imports" | "include" => {
            Ignored("it lists Python modules for a Python worker to import; Celeriac serves the .wasm components of -A")
        }
        "result_accept_content" | "result_cache_max" | "result_chord_join_timeout" => Ignored(CLIENT_ONLY),
        "task_always_eager" | "task_eager_propagates" | "task_store_eager_result" => {
            Ignored("eager tasks run inside the calling Python process and never reach a worker")
        }
        "task_compression" | "task_default_priority" | "task_publish_retry" | "task_publish_retry_policy" => {
            Ignored(CLIENT_ONLY)
        }
        "task_protocol" => Ignored("the worker reads messages of both protocol versions, 1 and 2"),
        "task_send_sent_event" => {
            Ignored("clients send task-sent events (`celeriac call --send-sent-event` does); the worker sends none")
        }
        "broker_pool_limit" | "broker_pool_acquire_timeout" => {
            Ignored("it sizes the connection pool of Python producers; the worker keeps its own connections")
        }
        "broker_connection_retry" => Ignored("the worker always reconnects to a lost broker, with back-off"),
        "broker_connection_retry_on_startup" => {
            Ignored("the worker always retries connecting at start-up, with back-off, for up to a minute")
        }
        "task_create_missing_queues" => Ignored("the worker declares every queue it consumes (-Q)"),
        "task_reject_on_worker_lost" | "task_retry_on_worker_lost" | "worker_lost_wait" => Ignored(
            "there is no child process to lose: a call runs in a sandbox inside the worker (with task_acks_late, \
             a killed worker's messages are delivered again)",
        ),
        "worker_max_tasks_per_child" | "worker_max_memory_per_child" => Ignored(
            "every task call already runs in a fresh sandbox; cap one call's memory with max_memory instead \
             ([sandbox] or task_annotations), and let trusted tasks keep an instance for several calls with \
             max_calls_per_instance",
        ),
        "worker_pool"
        | "worker_pool_putlocks"
        | "worker_pool_restarts"
        | "worker_pool_start_method"
        | "worker_proc_alive_timeout" => Ignored(PYTHON_POOL),
        "worker_agent" | "worker_autoscaler" | "worker_consumer" | "worker_timer" => Ignored(PYTHON_CLASS),
        "worker_timer_precision" => Ignored("it tunes the Python worker's timer thread"),
        "worker_hijack_root_logger"
        | "worker_log_format"
        | "worker_log_datefmt"
        | "worker_task_log_format"
        | "worker_task_log_datefmt" => Ignored(PYTHON_LOGGING),
        "worker_redirect_stdouts" | "worker_redirect_stdouts_level" => {
            Ignored("a task's output (its log calls) is always logged, bounded per call")
        }
        "task_remote_tracebacks" => Ignored("it needs tblib in a Python worker; wasm tracebacks are always stored"),
        "task_repr_maxlevels" => Ignored("it limits Python's repr of arguments in a Python worker's logs"),
        "result_exchange" | "result_exchange_type" => {
            Ignored("they name the exchange of Celery's removed amqp result backend; rpc:// replies as Celery's does")
        }
        "worker_enable_remote_control" => {
            NotImplemented("remote control is always on over Redis and RabbitMQ (it cannot be switched off yet)")
        }
        "result_extended" => NotImplemented("results are stored without the task's name, arguments, worker and queue"),
        // A worker setting with nothing more to say than that.
        _ => NotImplemented(""),
    })
}

/// The one-line notice for a setting that is accepted but not honoured.
pub fn notice(name: &str, origin: &str) -> Option<String> {
    match support(name)? {
        Support::Honoured => None,
        Support::Ignored(why) => Some(format!("{name} ({origin}) is ignored by the worker: {why}")),
        Support::NotImplemented("") => {
            Some(format!("{name} ({origin}) is not implemented yet: it has no effect on this worker"))
        }
        Support::NotImplemented(what) => Some(format!("{name} ({origin}) is not implemented yet: {what}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_honoured_setting_is_a_celery_setting_or_celeriacs_own() {
        for name in super::super::SETTING_NAMES {
            assert!(
                is_celery_setting(name) || CELERIAC_ONLY_SETTINGS.contains(name),
                "{name} is neither Celery's nor Celeriac's own"
            );
        }
    }

    #[test]
    fn every_celery_setting_has_a_verdict() {
        for (name, _) in CELERY_SETTINGS {
            assert!(support(name).is_some(), "{name}");
        }
        assert_eq!(CELERY_SETTINGS.len(), 207, "regenerate celery_settings.rs and classify the new names");
    }

    #[test]
    fn client_and_python_worker_settings_are_ignored_with_a_reason() {
        for name in [
            "broker_connection_retry_on_startup",
            "task_always_eager",
            "imports",
            "include",
            "beat_schedule",
            "worker_max_tasks_per_child",
            "worker_pool",
        ] {
            assert!(matches!(support(name), Some(Support::Ignored(_))), "{name}: {:?}", support(name));
        }
        assert_eq!(support("task_default_rate_limit"), Some(Support::Honoured));
        assert_eq!(support("broker_url"), Some(Support::Honoured));
        assert!(matches!(support("result_extended"), Some(Support::NotImplemented(_))));
        assert!(matches!(support("worker_state_db"), Some(Support::NotImplemented(_))));
        assert_eq!(support("broker_ulr"), None);
        assert_eq!(support("sandbox"), None);
    }

    #[test]
    fn old_uppercase_names_map_to_new_ones() {
        assert_eq!(new_name("CELERY_RESULT_BACKEND"), Some("result_backend"));
        assert_eq!(new_name("BROKER_URL"), Some("broker_url"));
        assert_eq!(new_name("CELERYD_CONCURRENCY"), Some("worker_concurrency"));
        assert_eq!(new_name("broker_url"), None);
        assert_eq!(new_name(""), None);
    }

    #[test]
    fn notices_say_why_or_that_it_is_not_implemented() {
        let n = notice("task_always_eager", "celeryconfig.py").unwrap();
        assert!(n.contains("ignored by the worker: eager tasks"), "{n}");
        let n = notice("worker_state_db", "f").unwrap();
        assert!(n.ends_with("is not implemented yet: it has no effect on this worker"), "{n}");
        assert_eq!(notice("broker_url", "f"), None);
    }
}
