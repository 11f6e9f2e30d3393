//! Resource limits for one task call: fuel, linear memory, tables, instances and
//! wall-clock time.
//!
//! Every limit has a default and is always on, so no task can run unbounded.
//! Limits are set globally (worker configuration) and can be tightened or
//! relaxed per task (`task_annotations`); a Celery message's own hard time limit
//! can only tighten them further.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Default fuel per call: about a minute of CPU for compiled guest code (a
/// tight Rust loop burns ~2e10 units per second here), so the wall-clock limit
/// is what usually stops a runaway task; set `fuel` lower for a strict CPU budget.
pub const DEFAULT_FUEL: u64 = 1_000_000_000_000;
/// Default cap on a call's linear memory (all memories together).
pub const DEFAULT_MAX_MEMORY: u64 = 128 * 1024 * 1024;
/// Default wall-clock limit for one call. Celery has none by default; a sandbox
/// for untrusted code must.
pub const DEFAULT_TIME_LIMIT: Duration = Duration::from_secs(300);
/// Default wasm stack size (wasmtime's own default).
pub const DEFAULT_MAX_STACK: u64 = 512 * 1024;
/// Default cap on the elements of any one table.
pub const DEFAULT_MAX_TABLE_ELEMENTS: usize = 100_000;
/// Default cap on the core instances, tables and memories one component may create.
pub const DEFAULT_MAX_INSTANCES: usize = 64;
/// Default calls one instance serves: one, i.e. every call runs in a fresh instance.
pub const DEFAULT_MAX_CALLS_PER_INSTANCE: u32 = 1;

/// The effective limits of one task call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Limits {
    /// Deterministic instruction budget (wasmtime fuel units).
    pub fuel: u64,
    /// Maximum bytes of linear memory, over all memories of the instance.
    pub max_memory: u64,
    /// Wall-clock time limit (Celery's hard `time_limit`).
    #[serde(with = "humantime_serde_secs")]
    pub time_limit: Duration,
    /// Maximum elements of any one table.
    pub max_table_elements: usize,
    /// Maximum number of core instances, tables and memories (each).
    pub max_instances: usize,
    /// Wasm stack size in bytes. Wasmtime fixes it per engine, so the sandbox
    /// keeps one engine per distinct stack size in use.
    pub max_stack: u64,
    /// Calls one instance serves before it is dropped (Celery's
    /// `worker_max_tasks_per_child`, per instance). 1, the default, gives every
    /// call a fresh instance; more lets a finished instance serve the same task
    /// again, keeping its memory (module globals, caches) as a Celery prefork
    /// child keeps its process. An instance that trapped, ran out of time or
    /// made an HTTP request is never reused. Fuel, the wall-clock limit and the request are per call
    /// either way; `max_memory` bounds what the instance holds over its calls.
    pub max_calls_per_instance: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            fuel: DEFAULT_FUEL,
            max_memory: DEFAULT_MAX_MEMORY,
            time_limit: DEFAULT_TIME_LIMIT,
            max_table_elements: DEFAULT_MAX_TABLE_ELEMENTS,
            max_instances: DEFAULT_MAX_INSTANCES,
            max_stack: DEFAULT_MAX_STACK,
            max_calls_per_instance: DEFAULT_MAX_CALLS_PER_INSTANCE,
        }
    }
}

impl Limits {
    /// Apply an override on top of these limits (unset fields keep their value).
    pub fn with(mut self, o: &LimitsOverride) -> Limits {
        if let Some(f) = o.fuel {
            self.fuel = f;
        }
        if let Some(m) = o.max_memory {
            self.max_memory = m.as_u64();
        }
        if let Some(t) = o.time_limit {
            self.time_limit = Duration::from_secs_f64(t.max(0.001));
        }
        if let Some(t) = o.max_table_elements {
            self.max_table_elements = t;
        }
        if let Some(i) = o.max_instances {
            self.max_instances = i;
        }
        if let Some(st) = o.max_stack {
            self.max_stack = st.as_u64();
        }
        if let Some(n) = o.max_calls_per_instance {
            self.max_calls_per_instance = n.max(1);
        }
        self
    }

    /// Tighten the time limit to a message's own hard limit (seconds), if any.
    /// A client can shorten the worker's limit, never extend it.
    pub fn tightened_by_message(mut self, hard_seconds: Option<f64>) -> Limits {
        // A limit too large for a duration (1e300 s) tightens nothing.
        if let Some(d) = hard_seconds.filter(|s| *s > 0.0).and_then(|s| Duration::try_from_secs_f64(s).ok())
            && d < self.time_limit
        {
            self.time_limit = d;
        }
        self
    }
}

/// Limits as written in configuration: every field optional, overriding the
/// level below it (defaults → global config → per-task annotation).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsOverride {
    /// Fuel budget per call.
    pub fuel: Option<u64>,
    /// Memory cap, e.g. `"64MiB"` or a number of bytes.
    pub max_memory: Option<ByteSize>,
    /// Wall-clock limit in seconds (Celery's `time_limit`).
    pub time_limit: Option<f64>,
    /// Table elements cap.
    pub max_table_elements: Option<usize>,
    /// Instances/tables/memories cap.
    pub max_instances: Option<usize>,
    /// Wasm stack size, e.g. `"1MiB"`.
    pub max_stack: Option<ByteSize>,
    /// Calls one instance serves (1: a fresh instance per call).
    pub max_calls_per_instance: Option<u32>,
}

impl LimitsOverride {
    /// Whether no field is set.
    pub fn is_empty(&self) -> bool {
        *self == LimitsOverride::default()
    }
}

/// A size in bytes, written as a number or a string like `64MiB`, `1GiB`, `512KB`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// The number of bytes.
    pub fn as_u64(self) -> u64 {
        self.0
    }
}

impl std::str::FromStr for ByteSize {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.trim()
            .parse::<bytesize::ByteSize>()
            .map(|b| ByteSize(b.as_u64()))
            .map_err(|e| format!("invalid size {s:?} ({e}); use e.g. 64MiB, 1GiB or a number of bytes"))
    }
}

impl std::fmt::Display for ByteSize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", bytesize::ByteSize(self.0).display().iec())
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) => Ok(ByteSize(n)),
            Raw::S(s) => s.parse().map_err(serde::de::Error::custom),
        }
    }
}

impl Serialize for ByteSize {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

/// Serialise a duration as fractional seconds.
mod humantime_serde_secs {
    pub fn serialize<S: serde::Serializer>(d: &std::time::Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }
}

/// The memory limit was hit: the guest tried to grow past its cap.
#[derive(Debug, thiserror::Error)]
#[error("memory limit exceeded: the task tried to grow its memory to {desired} bytes, over its limit of {limit} bytes")]
pub struct MemoryLimitExceeded {
    /// The size the guest asked for.
    pub desired: usize,
    /// The configured cap.
    pub limit: u64,
}

/// The store's resource limiter: enforces [`Limits`] and records peak memory.
///
/// Unlike wasmtime's `StoreLimits`, a refused memory growth traps with a typed
/// error ([`MemoryLimitExceeded`]) so the outcome can be classified exactly.
#[derive(Debug)]
pub struct Limiter {
    limits: Limits,
    /// Current size of each linear memory seen, summed for the cap.
    memory_total: usize,
    /// Highest total linear memory reached during the call.
    pub peak_memory: usize,
}

impl Limiter {
    /// A limiter enforcing `limits`.
    pub fn new(limits: Limits) -> Self {
        Limiter { limits, memory_total: 0, peak_memory: 0 }
    }

    /// The linear memory the instance holds now, in bytes.
    pub fn held(&self) -> usize {
        self.memory_total
    }

    /// The same instance's next call: `limits` from now on, the peak counted
    /// from the memory it already holds.
    pub fn renew(&mut self, limits: Limits) {
        self.limits = limits;
        self.peak_memory = self.memory_total;
    }
}

impl wasmtime::ResourceLimiter for Limiter {
    fn memory_growing(&mut self, current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        let total = self.memory_total - current.min(self.memory_total) + desired;
        if total as u64 > self.limits.max_memory {
            return Err(wasmtime::Error::new(MemoryLimitExceeded { desired: total, limit: self.limits.max_memory }));
        }
        self.memory_total = total;
        self.peak_memory = self.peak_memory.max(total);
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= self.limits.max_table_elements)
    }

    fn instances(&self) -> usize {
        self.limits.max_instances
    }

    fn tables(&self) -> usize {
        self.limits.max_instances
    }

    fn memories(&self) -> usize {
        self.limits.max_instances
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_like_the_cli_documents() {
        assert_eq!("64MiB".parse::<ByteSize>().unwrap().0, 64 * 1024 * 1024);
        assert_eq!("1GiB".parse::<ByteSize>().unwrap().0, 1 << 30);
        assert_eq!("4096".parse::<ByteSize>().unwrap().0, 4096);
        assert!("lots".parse::<ByteSize>().is_err());
    }

    #[test]
    fn overrides_apply_field_by_field() {
        let o = LimitsOverride { time_limit: Some(2.5), ..Default::default() };
        let l = Limits::default().with(&o);
        assert_eq!(l.time_limit, Duration::from_millis(2500));
        assert_eq!(l.fuel, DEFAULT_FUEL);
    }

    #[test]
    fn a_message_can_only_tighten_the_time_limit() {
        let l = Limits::default().with(&LimitsOverride { time_limit: Some(10.0), ..Default::default() });
        assert_eq!(l.tightened_by_message(Some(1.0)).time_limit, Duration::from_secs(1));
        assert_eq!(l.tightened_by_message(Some(100.0)).time_limit, Duration::from_secs(10));
        assert_eq!(l.tightened_by_message(None).time_limit, Duration::from_secs(10));
        // Values a message (or `control time_limit`) can carry that are no duration at all.
        for odd in [1e300, f64::INFINITY, f64::NAN, -1.0, 0.0] {
            assert_eq!(l.tightened_by_message(Some(odd)).time_limit, Duration::from_secs(10), "{odd}");
        }
    }

    #[test]
    fn memory_growth_past_the_cap_is_a_typed_error() {
        use wasmtime::ResourceLimiter;
        let mut l = Limiter::new(Limits { max_memory: 1 << 20, ..Limits::default() });
        assert!(l.memory_growing(0, 65536, None).unwrap());
        let err = l.memory_growing(65536, 2 << 20, None).unwrap_err();
        assert!(err.downcast_ref::<MemoryLimitExceeded>().is_some());
        assert_eq!(l.peak_memory, 65536);
    }
}
