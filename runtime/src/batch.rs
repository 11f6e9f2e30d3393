//! Batching writers: many tasks' acknowledgements (or results) in one round trip.
//!
//! At thousands of tasks a second, one Redis round trip per acknowledgement and
//! per result would bound throughput by network latency. A [`Batcher`] owns a
//! queue and one flushing task: whatever has queued up while the previous flush
//! was in flight goes out together in the next one (one pipelined `MULTI`), so
//! batches grow with load and a lone task still goes out at once. Items are
//! flushed in submission order, and a submitter can wait for its item to be
//! written (a result must be stored before a late ack, a chord's count, or the
//! next state of the same task).

use std::future::Future;

use tokio::sync::{mpsc, oneshot};

/// Most items written in one flush.
const MAX_BATCH: usize = 512;

enum Item<T> {
    Write(T, Option<oneshot::Sender<()>>),
    Barrier(oneshot::Sender<()>),
}

/// A queue of items flushed in batches by a background task.
pub struct Batcher<T> {
    tx: mpsc::UnboundedSender<Item<T>>,
}

impl<T> Clone for Batcher<T> {
    fn clone(&self) -> Self {
        Batcher { tx: self.tx.clone() }
    }
}

impl<T: Send + 'static> Batcher<T> {
    /// Start a batcher whose flushes call `flush(batch)`; `flush` is expected
    /// to retry on its own and only return once it gave up or succeeded.
    ///
    /// Before each flush the batcher yields to the scheduler once, so items
    /// from tasks that are ready to finish in the same tick join the batch at
    /// no cost in latency; with `linger` it also waits that long for more
    /// (for writes nobody waits on, such as acknowledgements).
    pub fn spawn<F, Fut>(linger: Option<std::time::Duration>, flush: F) -> Self
    where
        F: Fn(Vec<T>) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send,
    {
        let (tx, mut rx) = mpsc::unbounded_channel::<Item<T>>();
        tokio::spawn(async move {
            let mut items = Vec::with_capacity(MAX_BATCH);
            let mut waiters = Vec::new();
            while let Some(first) = rx.recv().await {
                match linger {
                    Some(d) => tokio::time::sleep(d).await,
                    None => tokio::task::yield_now().await,
                }
                let mut next = Some(first);
                while let Some(item) = next.take() {
                    match item {
                        Item::Write(v, w) => {
                            items.push(v);
                            waiters.extend(w);
                        }
                        Item::Barrier(w) => waiters.push(w),
                    }
                    if items.len() < MAX_BATCH {
                        next = rx.try_recv().ok();
                    }
                }
                if !items.is_empty() {
                    flush(std::mem::take(&mut items)).await;
                }
                for w in waiters.drain(..) {
                    let _ = w.send(());
                }
            }
        });
        Batcher { tx }
    }

    /// Queue an item; do not wait for it to be written.
    pub fn submit(&self, item: T) {
        let _ = self.tx.send(Item::Write(item, None));
    }

    /// Queue an item and wait until its batch has been flushed.
    pub async fn write(&self, item: T) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Item::Write(item, Some(done))).is_ok() {
            let _ = wait.await;
        }
    }

    /// Wait until everything submitted so far has been flushed.
    pub async fn barrier(&self) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Item::Barrier(done)).is_ok() {
            let _ = wait.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[tokio::test]
    async fn items_are_flushed_in_order_and_batched_under_load() {
        let seen: Arc<Mutex<Vec<Vec<u32>>>> = Arc::default();
        let s = seen.clone();
        let b = Batcher::spawn(None, move |batch: Vec<u32>| {
            let s = s.clone();
            async move {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                s.lock().unwrap().push(batch);
            }
        });
        b.write(0).await;
        for i in 1..=100 {
            b.submit(i);
        }
        b.barrier().await;
        let batches = seen.lock().unwrap().clone();
        let flat: Vec<u32> = batches.iter().flatten().copied().collect();
        assert_eq!(flat, (0..=100).collect::<Vec<_>>());
        assert!(batches.len() < 50, "100 queued items went out in {} flushes", batches.len());
    }
}
