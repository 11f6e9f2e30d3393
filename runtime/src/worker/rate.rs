//! Rate limits (`rate_limit`): Celery's per-worker token bucket, made precise
//! and non-blocking; and the tenants' quotas (`tenant.toml`'s `rate_limit`,
//! one bucket per tenant beside the task's, and `concurrency`, run slots of
//! the tenant's own taken before one of the worker's).
//!
//! Celery gives each task type a `TokenBucket(rate, capacity=1)` per worker
//! (`Consumer.bucket_for_task`): a full bucket lets one task start at once, and
//! a token comes back every `1/rate` seconds. Its consumer keeps the waiting
//! requests in the bucket and polls it from its timer, and they count against
//! the prefetch window meanwhile; measured with Celery 5.7 on Redis, 60 calls at
//! `"20/s"` took 26 s instead of 3, and an unlimited task sent after them waited
//! 20 s behind them.
//!
//! Here each bucket is a reservation clock (the same capacity-1 bucket, as
//! GCRA computes it): a received task takes the next free start time, `max(now,
//! next)`, and moves `next` on by `1/rate`; it then sleeps until that instant,
//! so tasks start exactly on the token schedule, in the order received. While it
//! waits the message is held like an ETA task: acknowledged by no one, out of the
//! prefetch window (so other tasks keep flowing past it), without a run slot, and
//! given back to the broker on warm shutdown. The buckets are process-wide (one
//! per task name for all event loops, behind a mutex taken for a few
//! instructions per message), so the limit is per worker as in Celery.
//!
//! Held in memory rather than parked in the broker: parking (AMQP's delay
//! queues, as for far ETAs) would re-publish the message with a changed `eta`
//! the task can see, and on its return it would need a second token. Memory is
//! bounded instead: at most [`MAX_HELD`] rate-limited messages per worker wait
//! outside the prefetch window; beyond that, the next ones keep their prefetch
//! slot while they wait (Celery's behaviour), which throttles fetching.
//!
//! On AMQP the worker's window is not the whole story: RabbitMQ counts every
//! unacknowledged delivery against the consumer's `basic.qos`, and a held
//! message is unacknowledged. Celery raises its QoS for held messages
//! (`qos.increment_eventually`), which needs global QoS; a per-consumer
//! `basic.qos` (what RabbitMQ 4 and quorum queues accept) applies only to
//! consumers created after it. Until long token waits are parked in the delay
//! queues (with the booked start time in a header, so the task needs no second
//! token on its return), a long backlog of rate-limited tasks can still fill
//! RabbitMQ's prefetch there; the pacing itself is as precise as on Redis.
//!
//! A tenant's quotas throttle its own queue, not the worker: while
//! [`PAUSE_AT`] of a tenant's messages wait for its run slots or tokens, the
//! worker stops consuming the tenant's own `queue` (as `control
//! cancel_consumer` would) and takes it up again once no more than
//! [`RESUME_AT`] wait. Without that, a tenant flooding its queue under a
//! quota would fill the held places and then the prefetch window with
//! messages that cannot start, and another tenant's queue would not be read
//! (on Redis and SQLite; RabbitMQ's per-consumer prefetch bounds each queue
//! itself, so there the queues are left alone). Every pause and resume is
//! decided under the lock of the consumed-queue set, which remote control's
//! `add_consumer`/`cancel_consumer` take too: a queue the operator cancelled
//! is never taken up again, nor one the operator added paused again.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

use crate::config::{RateLimit, Tenants};

/// Most rate-limited messages one worker holds out of its prefetch window.
pub(crate) const MAX_HELD: usize = 10_000;

/// A tenant's own queue is paused while this many of its messages wait for its quotas ...
pub(crate) const PAUSE_AT: usize = 100;
/// ... and consumed again once no more than this many do.
pub(crate) const RESUME_AT: usize = PAUSE_AT / 2;

/// Celery's `TokenBucket(rate, capacity=1)` as a reservation clock.
#[derive(Debug, Clone)]
pub(crate) struct TokenBucket {
    /// Seconds between two tokens (`1/rate`).
    interval: Duration,
    /// When the next token is free (the bucket is full at or after it).
    next: Instant,
}

impl TokenBucket {
    /// A full bucket refilling `per_second` tokens a second.
    pub fn new(per_second: f64, now: Instant) -> TokenBucket {
        TokenBucket { interval: interval(per_second), next: now }
    }

    /// Take the next token: when the task may start (`now` if the bucket is full).
    pub fn reserve(&mut self, now: Instant) -> Instant {
        let at = self.next.max(now);
        self.next = at + self.interval;
        at
    }

    /// Change the rate; tokens already promised keep their times.
    pub fn set_rate(&mut self, per_second: f64) {
        self.interval = interval(per_second);
    }
}

/// `1/rate` as a duration, saturating for absurdly slow rates.
fn interval(per_second: f64) -> Duration {
    Duration::try_from_secs_f64(1.0 / per_second).unwrap_or(Duration::MAX / 4)
}

/// The worker's buckets, one per task name and one per rate-limited tenant,
/// and the tenants' run slots, shared by every event loop.
#[derive(Debug)]
pub(crate) struct RateLimits {
    buckets: Mutex<HashMap<String, TokenBucket>>,
    tenant_buckets: Mutex<HashMap<String, TokenBucket>>,
    /// Each tenant's quotas, from its `tenant.toml`.
    tenants: HashMap<String, TenantQuota>,
    /// Messages waiting for a token (or a tenant's run slot) outside the prefetch window.
    held: Arc<Semaphore>,
    /// The consumed queues, where a tenant's own queue is paused and resumed.
    consumed: Option<Arc<watch::Sender<Vec<String>>>>,
}

/// One tenant's quotas on this worker.
#[derive(Debug)]
struct TenantQuota {
    /// Its tasks started per second, all together.
    per_second: Option<f64>,
    /// Its run slots (`concurrency`).
    slots: Option<Arc<Semaphore>>,
    /// Its own queue, if no one else's: what is paused while too many of its messages wait.
    queue: Option<String>,
    /// Its messages between receipt and its run slot.
    waiting: AtomicUsize,
    /// Whether the worker paused its queue (and so resumes it).
    paused: AtomicBool,
}

/// One of a tenant's messages waiting for the tenant's quotas (counted until dropped).
#[derive(Debug)]
pub(crate) struct TenantWait {
    limits: Arc<RateLimits>,
    tenant: String,
}

impl Drop for TenantWait {
    fn drop(&mut self) {
        let Some(q) = self.limits.tenants.get(&self.tenant) else { return };
        let left = q.waiting.fetch_sub(1, Ordering::AcqRel) - 1;
        let (Some(queue), Some(consumed)) = (&q.queue, &self.limits.consumed) else { return };
        if left > RESUME_AT || !q.paused.load(Ordering::Acquire) {
            return;
        }
        // Decided under the queue set's lock (see the module's notes).
        let resumed = consumed.send_if_modified(|qs| {
            if !q.paused.swap(false, Ordering::AcqRel) || qs.contains(queue) {
                return false;
            }
            qs.push(queue.clone());
            true
        });
        if resumed {
            tracing::info!(
                "tenant {}: {left} tasks wait for its quotas; consuming its queue {queue} again",
                self.tenant
            );
        }
    }
}

impl Default for RateLimits {
    fn default() -> Self {
        RateLimits::new(&Tenants::default())
    }
}

impl RateLimits {
    /// Buckets for every task, and the quotas of `tenants`.
    pub fn new(tenants: &Tenants) -> RateLimits {
        let tenants = tenants
            .0
            .iter()
            .map(|(name, t)| {
                let shared = |q: &String| tenants.0.values().filter(|o| o.queue.as_ref() == Some(q)).count() > 1;
                let quota = TenantQuota {
                    per_second: t.rate_limit.as_ref().and_then(RateLimit::tasks_per_second),
                    slots: t.concurrency.map(|n| Arc::new(Semaphore::new(n as usize))),
                    queue: t.queue.clone().filter(|q| !shared(q)),
                    waiting: AtomicUsize::new(0),
                    paused: AtomicBool::new(false),
                };
                (name.clone(), quota)
            })
            .collect();
        RateLimits {
            buckets: Mutex::new(HashMap::new()),
            tenant_buckets: Mutex::new(HashMap::new()),
            tenants,
            held: Arc::new(Semaphore::new(MAX_HELD)),
            consumed: None,
        }
    }

    /// Pause and resume tenants' own queues in `consumed` (the queues the
    /// event loops consume), except those in `keep` (the worker's `-Q`).
    pub fn with_flow_control(mut self, consumed: Arc<watch::Sender<Vec<String>>>, keep: &[String]) -> RateLimits {
        for q in self.tenants.values_mut() {
            q.queue = q.queue.take().filter(|name| !keep.contains(name));
        }
        self.consumed = Some(consumed);
        self
    }

    /// Remote control changed `queue` (`add_consumer`, `cancel_consumer`):
    /// from now on the operator's choice stands, not a pause of the worker's.
    /// Call it inside the change to the consumed-queue set (under its lock).
    pub fn taken_over(&self, queue: &str) {
        for q in self.tenants.values().filter(|q| q.queue.as_deref() == Some(queue)) {
            q.paused.store(false, Ordering::Release);
        }
    }

    /// The queues the worker serves, as `inspect active_queues` lists them:
    /// `consumed` (read under its lock, where pauses are decided) and the
    /// tenants' queues paused for the moment, which the worker takes up
    /// again by itself.
    pub fn served(&self, consumed: &[String]) -> Vec<String> {
        let mut queues = consumed.to_vec();
        for q in self.tenants.values().filter(|q| q.paused.load(Ordering::Acquire)) {
            if let Some(name) = &q.queue
                && !queues.contains(name)
            {
                queues.push(name.clone());
            }
        }
        queues
    }

    /// Count one of `tenant`'s messages as waiting for its quotas until the
    /// guard is dropped (`None` for a tenant without quotas). The
    /// [`PAUSE_AT`]th pauses its own queue.
    pub fn waiting(self: &Arc<Self>, tenant: &str) -> Option<TenantWait> {
        let q = self.tenants.get(tenant).filter(|q| q.per_second.is_some() || q.slots.is_some())?;
        let now = q.waiting.fetch_add(1, Ordering::AcqRel) + 1;
        if now >= PAUSE_AT
            && let (Some(queue), Some(consumed)) = (&q.queue, &self.consumed)
            && !q.paused.load(Ordering::Acquire)
        {
            // Decided under the queue set's lock; a queue not consumed (`-X`, `cancel_consumer`)
            // is not paused, so never resumed either.
            let paused = consumed.send_if_modified(|qs| {
                if q.paused.load(Ordering::Acquire) || !qs.contains(queue) {
                    return false;
                }
                qs.retain(|x| x != queue);
                q.paused.store(true, Ordering::Release);
                true
            });
            if paused {
                tracing::info!("tenant {tenant}: {now} tasks wait for its quotas; its queue {queue} is paused");
            }
        }
        Some(TenantWait { limits: self.clone(), tenant: tenant.to_string() })
    }

    /// Take a token for `task` limited to `per_second` (`None`: unlimited);
    /// returns how long to wait for it, `None` if it may start now.
    pub fn reserve(&self, task: &str, per_second: Option<f64>, now: Instant) -> Option<Duration> {
        reserve_in(&self.buckets, task, per_second, now)
    }

    /// Take a token from `tenant`'s bucket, if its `tenant.toml` sets a
    /// `rate_limit`: how long to wait for it, `None` if it may start now.
    pub fn reserve_tenant(&self, tenant: &str, now: Instant) -> Option<Duration> {
        let per_second = self.tenants.get(tenant)?.per_second;
        reserve_in(&self.tenant_buckets, tenant, per_second, now)
    }

    /// `tenant`'s run slots, if its `tenant.toml` sets a `concurrency`.
    pub fn tenant_slots(&self, tenant: &str) -> Option<Arc<Semaphore>> {
        self.tenants.get(tenant)?.slots.clone()
    }

    /// A place among the messages held out of the prefetch window, if any is left.
    pub fn hold(&self) -> Option<OwnedSemaphorePermit> {
        self.held.clone().try_acquire_owned().ok()
    }
}

/// Take a token from the bucket `key` of `buckets` at `per_second`.
fn reserve_in(
    buckets: &Mutex<HashMap<String, TokenBucket>>,
    key: &str,
    per_second: Option<f64>,
    now: Instant,
) -> Option<Duration> {
    let per_second = per_second.filter(|r| *r > 0.0 && r.is_finite())?;
    // A poisoned lock only means another loop panicked mid-update: the clock is still valid.
    let mut buckets = buckets.lock().unwrap_or_else(|p| p.into_inner());
    let at = match buckets.get_mut(key) {
        Some(b) => {
            b.set_rate(per_second);
            b.reserve(now)
        }
        None => {
            let mut b = TokenBucket::new(per_second, now);
            let at = b.reserve(now);
            buckets.insert(key.to_string(), b);
            at
        }
    };
    let wait = at.saturating_duration_since(now);
    (!wait.is_zero()).then_some(wait)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenant_with_too_many_waiting_messages_has_its_own_queue_paused_until_few_wait() {
        let t = |toml: &str| crate::config::TenantConfig::from_toml(toml, "t").unwrap();
        let tenants = Tenants(
            [
                ("acme".to_string(), t("concurrency = 1\nqueue = \"acme\"")),
                ("free".into(), t("queue = \"free\"")),
                ("kept".into(), t("concurrency = 1\nqueue = \"celery\"")),
            ]
            .into(),
        );
        let consumed = Arc::new(watch::Sender::new(vec!["celery".to_string(), "acme".into(), "free".into()]));
        let limits = Arc::new(RateLimits::new(&tenants).with_flow_control(consumed.clone(), &["celery".into()]));
        assert!(limits.waiting("free").is_none(), "no quotas: not counted");
        let mut acme: Vec<TenantWait> = (0..PAUSE_AT - 1).map(|_| limits.waiting("acme").unwrap()).collect();
        assert!(consumed.borrow().contains(&"acme".to_string()));
        acme.push(limits.waiting("acme").unwrap());
        assert_eq!(*consumed.borrow(), ["celery", "free"], "the {PAUSE_AT}th pauses acme's queue");
        assert_eq!(limits.served(&consumed.borrow()), ["celery", "free", "acme"], "still served while paused");
        // The worker's own queue, though a tenant's, is never paused.
        let kept: Vec<TenantWait> = (0..PAUSE_AT * 2).map(|_| limits.waiting("kept").unwrap()).collect();
        assert_eq!(*consumed.borrow(), ["celery", "free"]);
        drop(kept);
        acme.truncate(RESUME_AT + 1);
        assert_eq!(*consumed.borrow(), ["celery", "free"], "still more than {RESUME_AT} waiting");
        acme.pop();
        assert_eq!(*consumed.borrow(), ["celery", "free", "acme"], "resumed once {RESUME_AT} wait");
        assert_eq!(limits.served(&consumed.borrow()), ["celery", "free", "acme"]);
        acme.clear();
        assert_eq!(consumed.borrow().len(), 3);
        // Paused, then cancelled by remote control: it stays cancelled.
        let acme: Vec<TenantWait> = (0..PAUSE_AT).map(|_| limits.waiting("acme").unwrap()).collect();
        assert_eq!(*consumed.borrow(), ["celery", "free"]);
        consumed.send_if_modified(|qs| {
            limits.taken_over("acme");
            qs.retain(|q| q != "acme");
            false
        });
        drop(acme);
        assert_eq!(*consumed.borrow(), ["celery", "free"]);
        assert_eq!(limits.served(&consumed.borrow()), ["celery", "free"], "cancelled: no longer served");
    }

    #[test]
    fn a_full_bucket_lets_the_first_task_start_at_once() {
        let now = Instant::now();
        let mut b = TokenBucket::new(20.0, now);
        assert_eq!(b.reserve(now), now);
    }

    #[test]
    fn tokens_come_back_every_one_over_rate_seconds_in_order() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(20.0, t0);
        let times: Vec<Duration> = (0..60).map(|_| b.reserve(t0) - t0).collect();
        assert_eq!(times[1], Duration::from_millis(50));
        // 60 calls at 20/s: the last starts 59/20 = 2.95 s after the first, not earlier.
        assert_eq!(times[59], Duration::from_millis(2950));
        assert!(times.windows(2).all(|w| w[1] - w[0] == Duration::from_millis(50)));
    }

    #[test]
    fn an_idle_bucket_refills_to_one_token_only() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10.0, t0);
        b.reserve(t0);
        let later = t0 + Duration::from_secs(5);
        // Capacity 1: after a long pause one task starts at once, the next waits a full interval.
        assert_eq!(b.reserve(later), later);
        assert_eq!(b.reserve(later), later + Duration::from_millis(100));
    }

    #[test]
    fn the_worker_keeps_one_bucket_per_task_name() {
        let limits = RateLimits::default();
        let now = Instant::now();
        assert_eq!(limits.reserve("tasks.add", Some(2.0), now), None);
        assert_eq!(limits.reserve("tasks.add", Some(2.0), now), Some(Duration::from_millis(500)));
        assert_eq!(limits.reserve("tasks.mul", Some(2.0), now), None);
    }

    #[test]
    fn an_unlimited_task_never_waits() {
        let limits = RateLimits::default();
        let now = Instant::now();
        for _ in 0..100 {
            assert_eq!(limits.reserve("tasks.add", None, now), None);
            assert_eq!(limits.reserve("tasks.mul", Some(0.0), now), None);
        }
    }

    #[test]
    fn a_rate_of_ten_per_minute_spaces_tasks_six_seconds_apart() {
        let limits = RateLimits::default();
        let now = Instant::now();
        limits.reserve("tasks.add", Some(10.0 / 60.0), now);
        assert_eq!(limits.reserve("tasks.add", Some(10.0 / 60.0), now), Some(Duration::from_secs(6)));
    }

    #[test]
    fn a_tenant_has_one_bucket_for_all_its_tasks_and_its_own_run_slots() {
        let tenants = crate::config::Tenants(
            [(
                "acme".to_string(),
                crate::config::TenantConfig::from_toml("rate_limit = \"2/s\"\nconcurrency = 3", "t").unwrap(),
            )]
            .into(),
        );
        let limits = RateLimits::new(&tenants);
        let now = Instant::now();
        assert_eq!(limits.reserve_tenant("acme", now), None);
        assert_eq!(limits.reserve_tenant("acme", now), Some(Duration::from_millis(500)));
        assert_eq!(limits.reserve_tenant("globex", now), None);
        assert_eq!(limits.reserve_tenant("globex", now), None);
        // A task's own bucket is apart from its tenant's.
        assert_eq!(limits.reserve("acme", Some(2.0), now), None);
        assert_eq!(limits.tenant_slots("acme").map(|s| s.available_permits()), Some(3));
        assert!(limits.tenant_slots("globex").is_none());
    }

    #[test]
    fn held_messages_are_bounded() {
        let limits = RateLimits::default();
        let permits: Vec<_> = (0..MAX_HELD).map_while(|_| limits.hold()).collect();
        assert_eq!(permits.len(), MAX_HELD);
        assert!(limits.hold().is_none());
        drop(permits);
        assert!(limits.hold().is_some());
    }
}
