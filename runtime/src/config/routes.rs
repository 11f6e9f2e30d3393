//! `task_routes` in every form Celery accepts (`celery/app/routes.py`).
//!
//! Celery's setting is a router or a list of routers, tried in order until
//! one answers. A router here is a table (Celery's `MapRoute`) whose keys are
//! task names or patterns and whose values are a queue name
//! (`"tasks.add" = "low-priority"`, Celery's "convenient for direct exchanges"
//! form) or a table of `queue`, `exchange`, `routing_key` and `priority`.
//! Within one table, as in `MapRoute`, an exact name wins, then the patterns
//! are tried in file order:
//!
//! - a key containing `*` is a glob (`fnmatch`: `*`, `?`), as Celery treats it;
//! - a key starting with `re:` is a regular expression, matched like Python's
//!   `re.match` (anchored at the start of the name only). Celery takes regexes
//!   as compiled `re.Pattern` keys, which a TOML file cannot hold; `re:` is the
//!   spelling chosen for them (a string key never means a regex in Celery, and
//!   no task name starts with `re:` in practice).
//!
//! In TOML: `[task_routes]` for one table, `[[task_routes]]` for a list of them.
//! Router classes named by import path (`"myapp.routers.MyRouter"`) are Python
//! code and are refused with an error saying so.

use std::fmt;

use serde::de::{self, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Deserialize, Serialize};

use super::glob_match;

/// Where a task is sent: a `task_routes` value.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Route {
    /// Queue name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
    /// Exchange (AMQP).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exchange: Option<String>,
    /// Routing key (AMQP; defaults to the queue name).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub routing_key: Option<String>,
    /// Priority.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub priority: Option<u8>,
}

impl<'de> Deserialize<'de> for Route {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Table {
            queue: Option<String>,
            exchange: Option<String>,
            routing_key: Option<String>,
            priority: Option<u8>,
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Queue(String),
            Table(Table),
        }
        match Raw::deserialize(d) {
            Ok(Raw::Queue(queue)) => Ok(Route { queue: Some(queue), ..Route::default() }),
            Ok(Raw::Table(Table { queue, exchange, routing_key, priority })) => {
                Ok(Route { queue, exchange, routing_key, priority })
            }
            Err(_) => Err(de::Error::custom(
                "a task route is a queue name or a table of queue, exchange, routing_key (strings) and priority (0-255)",
            )),
        }
    }
}

impl Route {
    /// The exchange and key to publish a task on this route with. On AMQP
    /// (`exchange_routing`) the key is the routing key (default: the queue);
    /// on the other transports, which have no exchanges, the queue itself.
    pub fn publish_target(&self, default_queue: &str, exchange_routing: bool) -> (String, String) {
        let queue = self.queue.clone().unwrap_or_else(|| default_queue.to_string());
        match (&self.exchange, exchange_routing) {
            (Some(exchange), true) => (exchange.clone(), self.routing_key.clone().unwrap_or(queue)),
            (Some(exchange), false) => (exchange.clone(), queue),
            (None, true) => (String::new(), self.routing_key.clone().unwrap_or(queue)),
            (None, false) => (String::new(), queue),
        }
    }
}

/// A `task_routes` key: a task name or a pattern.
#[derive(Debug, Clone)]
pub enum RouteKey {
    /// An exact task name.
    Name(String),
    /// A glob (`tasks.*`).
    Glob(String),
    /// A regular expression (`re:^tasks\.(add|mul)$`).
    Regex(regex::Regex),
}

impl PartialEq for RouteKey {
    fn eq(&self, other: &Self) -> bool {
        self.to_string() == other.to_string()
    }
}

impl fmt::Display for RouteKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RouteKey::Name(n) | RouteKey::Glob(n) => f.write_str(n),
            // Stored anchored (`^(?:...)`); shown as written.
            RouteKey::Regex(r) => {
                let s = r.as_str();
                let inner = s.strip_prefix("^(?:").and_then(|s| s.strip_suffix(')')).unwrap_or(s);
                write!(f, "{REGEX_PREFIX}{inner}")
            }
        }
    }
}

/// The prefix that makes a `task_routes` key a regular expression.
pub const REGEX_PREFIX: &str = "re:";

impl RouteKey {
    /// Classify a key as Celery's `MapRoute` does (plus `re:` for regexes).
    pub fn parse(key: &str) -> Result<RouteKey, regex::Error> {
        if let Some(pattern) = key.strip_prefix(REGEX_PREFIX) {
            // Python's re.match: anchored at the start, not at the end.
            return Ok(RouteKey::Regex(regex::Regex::new(&format!("^(?:{pattern})"))?));
        }
        Ok(if key.contains('*') { RouteKey::Glob(key.to_string()) } else { RouteKey::Name(key.to_string()) })
    }

    fn matches(&self, task: &str) -> bool {
        match self {
            RouteKey::Name(n) => n == task,
            RouteKey::Glob(g) => glob_match(g, task),
            RouteKey::Regex(r) => r.is_match(task),
        }
    }
}

/// One router: Celery's `MapRoute`, entries in file order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Router(pub Vec<(RouteKey, Route)>);

impl Router {
    /// The route for `task`: an exact name first, then the first matching pattern.
    pub fn route(&self, task: &str) -> Option<&Route> {
        let exact = self.0.iter().find(|(k, _)| matches!(k, RouteKey::Name(n) if n == task));
        exact
            .or_else(|| self.0.iter().find(|(k, _)| !matches!(k, RouteKey::Name(_)) && k.matches(task)))
            .map(|(_, r)| r)
    }
}

/// `task_routes`: routers tried in order, the first answer wins.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TaskRoutes(pub Vec<Router>);

impl TaskRoutes {
    /// The route for `task`, if a router has one.
    pub fn route(&self, task: &str) -> Option<&Route> {
        self.0.iter().find_map(|r| r.route(task))
    }

    /// Whether no router is configured.
    pub fn is_empty(&self) -> bool {
        self.0.iter().all(|r| r.0.is_empty())
    }
}

struct RouterVisitor;

impl<'de> Visitor<'de> for RouterVisitor {
    type Value = Router;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a table of task name or pattern = route")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Router, E> {
        Err(E::custom(format!(
            "task_routes router {v:?}: router classes are Python code; use a table of task name or pattern = route"
        )))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Router, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            let parsed = RouteKey::parse(&key)
                .map_err(|e| de::Error::custom(format!("task_routes key {key:?} is not a valid regex: {e}")))?;
            let route: Route = map.next_value()?;
            entries.push((parsed, route));
        }
        Ok(Router(entries))
    }
}

impl<'de> Deserialize<'de> for Router {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(RouterVisitor)
    }
}

impl<'de> Deserialize<'de> for TaskRoutes {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = TaskRoutes;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a table of routes or a list of such tables")
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<TaskRoutes, A::Error> {
                Ok(TaskRoutes(vec![RouterVisitor.visit_map(map)?]))
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<TaskRoutes, E> {
                RouterVisitor.visit_str(v).map(|r| TaskRoutes(vec![r]))
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<TaskRoutes, A::Error> {
                let mut routers = Vec::new();
                while let Some(r) = seq.next_element::<Router>()? {
                    routers.push(r);
                }
                Ok(TaskRoutes(routers))
            }
        }
        d.deserialize_any(V)
    }
}

impl Serialize for Router {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, r) in &self.0 {
            m.serialize_entry(&k.to_string(), r)?;
        }
        m.end()
    }
}

impl Serialize for TaskRoutes {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0.as_slice() {
            [] => Router::default().serialize(s),
            [one] => one.serialize(s),
            many => {
                let mut seq = s.serialize_seq(Some(many.len()))?;
                for r in many {
                    seq.serialize_element(r)?;
                }
                seq.end()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routes(toml_text: &str) -> TaskRoutes {
        #[derive(Deserialize)]
        struct T {
            task_routes: TaskRoutes,
        }
        toml::from_str::<T>(toml_text).unwrap().task_routes
    }

    fn queue(r: &TaskRoutes, task: &str) -> Option<String> {
        r.route(task).and_then(|r| r.queue.clone())
    }

    #[test]
    fn a_queue_name_string_is_a_route_to_that_queue() {
        let r = routes("[task_routes]\n\"tasks.add\" = \"low-priority\"");
        assert_eq!(queue(&r, "tasks.add").as_deref(), Some("low-priority"));
        assert_eq!(r.route("tasks.mul"), None);
    }

    #[test]
    fn a_table_route_carries_exchange_routing_key_and_priority() {
        let r = routes(
            "[task_routes.\"tasks.add\"]\nqueue = \"video\"\nexchange = \"media\"\nrouting_key = \"media.video\"\npriority = 5",
        );
        let route = r.route("tasks.add").unwrap();
        assert_eq!(route.priority, Some(5));
        assert_eq!(route.publish_target("celery", true), ("media".into(), "media.video".into()));
        assert_eq!(route.publish_target("celery", false), ("media".into(), "video".into()));
    }

    #[test]
    fn an_exact_name_wins_over_patterns_and_patterns_keep_file_order() {
        let r = routes("[task_routes]\n\"tasks.z*\" = \"first\"\n\"tasks.*\" = \"glob\"\n\"tasks.add\" = \"exact\"");
        assert_eq!(queue(&r, "tasks.add").as_deref(), Some("exact"));
        assert_eq!(queue(&r, "tasks.zap").as_deref(), Some("first"));
        assert_eq!(queue(&r, "tasks.mul").as_deref(), Some("glob"));
        assert_eq!(queue(&r, "other.mul"), None);
    }

    #[test]
    fn a_key_without_a_star_is_an_exact_name_as_in_celery() {
        let r = routes("[task_routes]\n\"tasks.?dd\" = \"q\"");
        assert_eq!(r.route("tasks.add"), None);
        assert_eq!(queue(&r, "tasks.?dd").as_deref(), Some("q"));
    }

    #[test]
    fn a_re_key_is_a_regex_anchored_at_the_start_like_re_match() {
        let r = routes("[task_routes]\n're:tasks\\.(add|mul)' = \"arith\"");
        assert_eq!(queue(&r, "tasks.add").as_deref(), Some("arith"));
        assert_eq!(queue(&r, "tasks.mulx").as_deref(), Some("arith"));
        assert_eq!(r.route("my.tasks.add"), None);
        assert_eq!(r.0[0].0[0].0.to_string(), "re:tasks\\.(add|mul)");
    }

    #[test]
    fn a_list_of_routers_is_tried_in_order_until_one_answers() {
        let r = routes(
            "[[task_routes]]\n\"tasks.add\" = \"one\"\n[[task_routes]]\n\"tasks.*\" = \"two\"\n\"tasks.add\" = \"never\"",
        );
        assert_eq!(queue(&r, "tasks.add").as_deref(), Some("one"));
        assert_eq!(queue(&r, "tasks.mul").as_deref(), Some("two"));
    }

    #[test]
    fn a_bad_regex_or_a_router_class_is_a_clear_error() {
        #[derive(Debug, Deserialize)]
        #[allow(dead_code)]
        struct T {
            task_routes: TaskRoutes,
        }
        let e = toml::from_str::<T>("[task_routes]\n're:(' = \"q\"").unwrap_err();
        assert!(e.to_string().contains("not a valid regex"), "{e}");
        let e = toml::from_str::<T>("task_routes = \"myapp.Router\"").unwrap_err();
        assert!(e.to_string().contains("Python code"), "{e}");
        let e = toml::from_str::<T>("[task_routes]\n\"tasks.add\" = 3").unwrap_err();
        assert!(e.to_string().contains("queue name or a table"), "{e}");
    }

    #[test]
    fn routes_print_back_as_they_were_written() {
        let text = "[[task_routes]]\n\"tasks.add\" = \"one\"\n[[task_routes]]\n're:x' = \"two\"";
        let r = routes(text);
        #[derive(Serialize)]
        struct T<'a> {
            task_routes: &'a TaskRoutes,
        }
        let back = toml::to_string(&T { task_routes: &r }).unwrap();
        assert_eq!(routes(&back), r);
    }
}
