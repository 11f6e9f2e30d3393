//! The order a worker receives its messages in, across its event loops.
//!
//! Celery's consumer is a single one: it receives the messages of a queue one
//! after another and hands each rate-limited task to its token bucket in that
//! order, so of two `add`s sent back to back under `rate_limit = "12/m"` the
//! first runs at once and the second five seconds later. Celeriac's event loops
//! each take messages for themselves; two messages taken a few microseconds
//! apart by two loops could reach the bucket in either order, and the second
//! `add` run first.
//!
//! A [`ReceiveOrder`] is shared by every connection of a transport. Once the
//! worker [keeps](ReceiveOrder::keep) it (it has a rate limit to apply), a
//! virtual transport takes messages from the shared queue under its lock, one
//! taker at a time, and numbers them as they come: the numbers follow the order
//! the broker handed the messages out. Each message carries an [`Arrival`] until
//! it has passed the point where order matters (the worker drops it once its
//! task has its token, or once it is clear the task takes none);
//! [`Arrival::in_turn`] waits, for a bounded time, until every message received
//! before it has passed. Until then nothing is numbered and the connections
//! take messages side by side: taking them one at a time cost 5–13 % of the
//! drain rate on Redis with two loops (measured), a price only a worker with
//! rate limits pays.

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

/// The receive order of one process's messages (cheap to clone: shared).
#[derive(Clone, Default)]
pub struct ReceiveOrder(Arc<Inner>);

#[derive(Default)]
struct Inner {
    /// Whether messages are numbered (see [`ReceiveOrder::keep`]).
    kept: AtomicBool,
    /// Held while messages are being taken, so numbers follow the broker's order.
    taking: tokio::sync::Mutex<()>,
    numbers: Mutex<Numbers>,
    /// Woken whenever a message passes.
    passed: Notify,
}

#[derive(Default)]
struct Numbers {
    next: u64,
    /// Messages received and not yet passed.
    waiting: BTreeSet<u64>,
}

impl ReceiveOrder {
    /// From now on, number what is received (for good: a worker that has
    /// rate limits to apply in receive order).
    pub fn keep(&self) {
        if !self.0.kept.swap(true, Ordering::AcqRel) {
            tracing::debug!("rate limits in use: messages are received one connection at a time, in order");
        }
    }

    /// Take messages with `take` and, once the order is kept, one taker at a
    /// time across the process, giving each its [`Arrival`] in the order
    /// `take` returned them (`None` before).
    pub async fn take<T, E>(
        &self,
        take: impl Future<Output = Result<Vec<T>, E>>,
    ) -> Result<Vec<(T, Option<Arrival>)>, E> {
        if !self.0.kept.load(Ordering::Acquire) {
            return Ok(take.await?.into_iter().map(|t| (t, None)).collect());
        }
        // A reply lost and replayed later (Redis's fetch ids) is numbered when it comes: rare, and
        // only a matter of order.
        let _one_taker = self.0.taking.lock().await;
        let got = take.await?;
        let mut n = self.numbers();
        Ok(got
            .into_iter()
            .map(|t| {
                let number = n.next;
                n.next += 1;
                n.waiting.insert(number);
                (t, Some(Arrival { order: self.clone(), number }))
            })
            .collect())
    }

    fn numbers(&self) -> std::sync::MutexGuard<'_, Numbers> {
        // A poisoned lock only means a thread panicked between two plain updates.
        self.0.numbers.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One received message's place in the order, until it is dropped.
pub struct Arrival {
    order: ReceiveOrder,
    number: u64,
}

impl std::fmt::Debug for Arrival {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Arrival({})", self.number)
    }
}

impl Arrival {
    /// Wait until every message received before this one has passed, or
    /// `bound` has gone by (a message held up elsewhere never holds up the
    /// next ones for longer).
    pub async fn in_turn(&self, bound: Duration) {
        let deadline = tokio::time::Instant::now() + bound;
        loop {
            let passed = self.order.0.passed.notified();
            tokio::pin!(passed);
            // Registered before the check: a pass between the two still wakes us.
            passed.as_mut().enable();
            if self.order.numbers().waiting.first().is_none_or(|first| *first >= self.number) {
                return;
            }
            if tokio::time::timeout_at(deadline, passed).await.is_err() {
                return;
            }
        }
    }
}

impl Drop for Arrival {
    fn drop(&mut self) {
        let mut n = self.order.numbers();
        // Waiters wait for the first number still waiting: only its pass wakes them.
        let first = n.waiting.first() == Some(&self.number);
        n.waiting.remove(&self.number);
        drop(n);
        if first {
            self.order.0.passed.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn received(order: &ReceiveOrder, n: usize) -> Vec<Arrival> {
        let got = order.take(async { Ok::<_, ()>(vec![(); n]) }).await.unwrap();
        got.into_iter().map(|(_, a)| a.unwrap()).collect()
    }

    #[tokio::test]
    async fn nothing_is_numbered_until_the_order_is_kept() {
        let order = ReceiveOrder::default();
        let got = order.take(async { Ok::<_, ()>(vec![(); 2]) }).await.unwrap();
        assert!(got.iter().all(|(_, a)| a.is_none()));
        order.keep();
        assert_eq!(received(&order, 2).await.len(), 2);
    }

    #[tokio::test]
    async fn a_message_waits_for_the_ones_received_before_it_and_not_for_later_ones() {
        let order = ReceiveOrder::default();
        order.keep();
        let mut first = received(&order, 2).await;
        let second = first.pop().unwrap();
        let third = received(&order, 1).await.pop().unwrap();
        // The first goes at once, whatever came after it.
        tokio::time::timeout(Duration::from_millis(100), first[0].in_turn(Duration::from_secs(60))).await.unwrap();
        // The second waits until the first has passed.
        let waiting = tokio::spawn(async move {
            second.in_turn(Duration::from_secs(60)).await;
            second
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "the second went before the first had passed");
        drop(first);
        let second = tokio::time::timeout(Duration::from_secs(5), waiting).await.unwrap().unwrap();
        drop(second);
        tokio::time::timeout(Duration::from_millis(100), third.in_turn(Duration::from_secs(60))).await.unwrap();
    }

    #[test]
    fn a_pass_on_another_event_loop_wakes_the_message_waiting_for_it() {
        let runtime = || tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let order = ReceiveOrder::default();
        order.keep();
        let mut both = runtime().block_on(received(&order, 2));
        let second = both.pop().unwrap();
        let waiter = std::thread::spawn(move || {
            runtime().block_on(async move {
                let started = std::time::Instant::now();
                second.in_turn(Duration::from_secs(60)).await;
                started.elapsed()
            })
        });
        std::thread::sleep(Duration::from_millis(50));
        drop(both);
        let waited = waiter.join().unwrap();
        assert!(waited < Duration::from_secs(30), "woken by the bound ({waited:?}), not by the first's pass");
    }

    #[tokio::test]
    async fn a_message_held_up_elsewhere_holds_up_the_next_only_for_the_bound() {
        let order = ReceiveOrder::default();
        order.keep();
        let mut both = received(&order, 2).await;
        let second = both.pop().unwrap();
        let started = std::time::Instant::now();
        second.in_turn(Duration::from_millis(50)).await;
        assert!(started.elapsed() >= Duration::from_millis(50));
        drop(both);
    }
}
