//! Which acknowledgements of one AMQP channel can go out as one `basic.ack(multiple=true)`.
//!
//! RabbitMQ spends about as much CPU on an acknowledgement frame as on a
//! delivery; a worker that acks every task alone doubles the broker's work.
//! AMQP 0-9-1 lets a consumer settle every outstanding delivery up to a tag
//! with one frame (`multiple=true`) — but it settles *all* of them, so it is
//! only safe up to the first delivery the worker still holds (an ETA waiting
//! in memory, a task waiting for a run slot under `task_acks_late`) and only
//! over tags the worker has actually received (one channel's consumers on
//! several queues reach the worker through separate streams, so tag 7 can be
//! handed over before tag 6).
//!
//! [`AckWindow`] is that bookkeeping for one channel: tags are added as they
//! are received, and [`AckWindow::settle`] splits a batch of tags to
//! acknowledge into one tag for a `multiple` ack and the rest to ack one by
//! one. Pure data, no I/O.

use std::collections::BTreeSet;

/// The unsettled deliveries of one channel.
#[derive(Debug, Default)]
pub struct AckWindow {
    /// Received and not yet acknowledged, rejected or requeued.
    unsettled: BTreeSet<u64>,
    /// Every tag up to this one has been received (delivery tags start at 1).
    contiguous: u64,
    /// Received tags above `contiguous + 1` (arrived ahead of a smaller one).
    ahead: BTreeSet<u64>,
}

/// How to acknowledge a batch.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct AckPlan {
    /// `basic.ack(tag, multiple=true)`: settles every unsettled tag up to it.
    pub multiple: Option<u64>,
    /// `basic.ack(tag)` each.
    pub single: Vec<u64>,
}

impl AckWindow {
    /// The broker delivered `tag` and it reached the worker.
    pub fn received(&mut self, tag: u64) {
        self.unsettled.insert(tag);
        if tag == self.contiguous + 1 {
            self.contiguous = tag;
            while self.ahead.remove(&(self.contiguous + 1)) {
                self.contiguous += 1;
            }
        } else if tag > self.contiguous {
            self.ahead.insert(tag);
        }
    }

    /// `tag` was settled some other way (rejected, requeued).
    pub fn forget(&mut self, tag: u64) {
        self.unsettled.remove(&tag);
    }

    /// Settle `tags` by acknowledgement: the plan that acknowledges exactly
    /// them. Tags not unsettled here (already settled) are left out.
    pub fn settle(&mut self, tags: impl IntoIterator<Item = u64>) -> AckPlan {
        let mut batch: Vec<u64> = tags.into_iter().filter(|t| self.unsettled.remove(t)).collect();
        batch.sort_unstable();
        // A multiple ack may reach up to (not including) the first tag still
        // held, and no further than the tags known to have been received.
        let held = self.unsettled.first().copied().unwrap_or(u64::MAX);
        let limit = self.contiguous.min(held.saturating_sub(1));
        let covered = batch.partition_point(|&t| t <= limit);
        let mut plan = AckPlan { multiple: None, single: batch.split_off(covered) };
        match batch.len() {
            0 => {}
            1 => plan.single.insert(0, batch[0]),
            _ => plan.multiple = batch.last().copied(),
        }
        plan
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(tags: &[u64]) -> AckWindow {
        let mut w = AckWindow::default();
        for &t in tags {
            w.received(t);
        }
        w
    }

    #[test]
    fn a_run_of_tags_is_settled_with_one_multiple_ack() {
        let mut w = window(&[1, 2, 3, 4]);
        assert_eq!(w.settle([2, 1, 3, 4]), AckPlan { multiple: Some(4), single: vec![] });
        // Later ones too, on their own run.
        w.received(5);
        w.received(6);
        assert_eq!(w.settle([5, 6]), AckPlan { multiple: Some(6), single: vec![] });
    }

    #[test]
    fn a_held_delivery_stops_the_multiple_ack_below_it() {
        // 3 is an ETA task held in memory: acking 4 with multiple would settle it.
        let mut w = window(&[1, 2, 3, 4, 5]);
        assert_eq!(w.settle([1, 2, 4, 5]), AckPlan { multiple: Some(2), single: vec![4, 5] });
        // Once 3 is acked, it goes alone: nothing else is unsettled.
        assert_eq!(w.settle([3]), AckPlan { multiple: None, single: vec![3] });
    }

    #[test]
    fn a_tag_not_yet_received_is_never_covered() {
        // 7 arrived (another queue's stream) before 6.
        let mut w = window(&[1, 2, 3, 4, 5, 7]);
        assert_eq!(w.settle([4, 5, 7]), AckPlan { multiple: None, single: vec![4, 5, 7] }.tap_sorted());
        let mut w = window(&[1, 2, 3, 4, 5, 7]);
        assert_eq!(w.settle([1, 2, 3, 4, 5, 7]), AckPlan { multiple: Some(5), single: vec![7] });
        w.received(6);
        w.received(8);
        assert_eq!(w.settle([6, 8]), AckPlan { multiple: Some(8), single: vec![] });
    }

    #[test]
    fn a_requeued_delivery_no_longer_holds_the_window_back() {
        let mut w = window(&[1, 2, 3]);
        w.forget(1);
        assert_eq!(w.settle([2, 3]), AckPlan { multiple: Some(3), single: vec![] });
    }

    #[test]
    fn settled_or_unknown_tags_are_not_acknowledged_twice() {
        let mut w = window(&[1, 2]);
        assert_eq!(w.settle([1]), AckPlan { multiple: None, single: vec![1] });
        assert_eq!(w.settle([1, 2, 9]), AckPlan { multiple: None, single: vec![2] });
    }

    impl AckPlan {
        fn tap_sorted(mut self) -> Self {
            self.single.sort_unstable();
            self
        }
    }
}
