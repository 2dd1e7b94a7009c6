//! The bookkeeping of one consumer group, without I/O: which events are outstanding (in
//! flight to a consumer or waiting for redelivery), their attempts, and the checkpoint.
//!
//! The checkpoint is the highest position at or below which every matching event was acked
//! or parked (non-matching events count as done when examined): everything outstanding is
//! above it, so a restart from `checkpoint + 1` loses nothing and redelivers at most the
//! unacknowledged window.
//!
//! Time comes in as an argument (`now`): an event in flight longer than the group's
//! `ack_timeout` without an ack or nack is taken back ([`Group::expire`]) and counts as a
//! failed attempt, like a nack.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Settings {
    pub(crate) group: String,
    pub(crate) event_types: Vec<String>,
    pub(crate) stream_prefixes: Vec<String>,
    pub(crate) max_retries: u32,
    pub(crate) start_from: u64,
    pub(crate) max_in_flight: usize,
    /// How long a delivered event may stay neither acked nor nacked before it is taken back
    /// and delivered again (a failed attempt). Groups stored before this setting existed get
    /// the default.
    #[serde(default = "default_ack_timeout_ms")]
    pub(crate) ack_timeout_ms: u64,
}

/// The ack timeout of a group that does not set one.
pub(crate) const DEFAULT_ACK_TIMEOUT_MS: u64 = 30_000;

fn default_ack_timeout_ms() -> u64 {
    DEFAULT_ACK_TIMEOUT_MS
}

impl Settings {
    pub(crate) fn ack_timeout(&self) -> Duration {
        Duration::from_millis(self.ack_timeout_ms)
    }

    pub(crate) fn matches(&self, event_type: &str, stream: &str) -> bool {
        (self.event_types.is_empty() || self.event_types.iter().any(|t| t == event_type))
            && (self.stream_prefixes.is_empty() || self.stream_prefixes.iter().any(|p| stream.starts_with(p.as_str())))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Pending {
    attempts: u32,
    /// The consumer it is in flight to; `None` while waiting for (re)delivery.
    consumer: Option<u64>,
    /// When the current delivery times out; `None` before the first delivery of a replay.
    deadline: Option<Instant>,
    event_type: String,
    stream: String,
    /// A parked event put back by a replay: it lies below the checkpoint and does not hold it.
    replay: bool,
}

/// A parked event, as persisted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Parked {
    pub(crate) position: u64,
    pub(crate) event_type: String,
    pub(crate) stream: String,
    pub(crate) attempts: u32,
    pub(crate) reason: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NackAction {
    Retry,
    Park,
    Skip,
}

#[derive(Debug)]
pub(crate) struct Group {
    pub(crate) settings: Settings,
    /// The last log position examined.
    pub(crate) read_to: u64,
    outstanding: BTreeMap<u64, Pending>,
    ready: VecDeque<u64>,
    /// (deadline, position) of every delivery, in delivery order, so deadlines are
    /// non-decreasing. Entries whose event was settled or delivered again since are stale and
    /// dropped lazily from the front, so the queue stays about as long as `outstanding`.
    deadlines: VecDeque<(Instant, u64)>,
    pub(crate) consumers: u32,
}

/// What an ack or nack changed, for persistence.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Settled {
    /// Newly parked events.
    pub(crate) parked: Vec<Parked>,
    /// Replayed parked events now done: their parked records go.
    pub(crate) unparked: Vec<u64>,
    /// Events taken back by the ack timeout for another attempt.
    pub(crate) expired: usize,
}

impl Group {
    pub(crate) fn new(settings: Settings, checkpoint: u64) -> Self {
        Group {
            settings,
            read_to: checkpoint,
            outstanding: BTreeMap::new(),
            ready: VecDeque::new(),
            deadlines: VecDeque::new(),
            consumers: 0,
        }
    }

    /// Whether the front entry of `deadlines` still describes a delivery in flight.
    fn live(&self, deadline: Instant, position: u64) -> bool {
        self.outstanding.get(&position).is_some_and(|p| p.consumer.is_some() && p.deadline == Some(deadline))
    }

    /// Drops stale entries from the front of the deadline queue.
    fn prune(&mut self) {
        while let Some(&(deadline, position)) = self.deadlines.front() {
            if self.live(deadline, position) {
                break;
            }
            self.deadlines.pop_front();
        }
    }

    /// The earliest deadline of an event in flight, if any.
    pub(crate) fn next_deadline(&mut self) -> Option<Instant> {
        self.prune();
        self.deadlines.front().map(|(d, _)| *d)
    }

    /// Takes back every event in flight whose ack timeout has passed at `now`: a failed
    /// attempt, so it is delivered again, or parked once it has had `max_retries` attempts.
    pub(crate) fn expire(&mut self, now: Instant) -> Settled {
        let mut settled = Settled::default();
        loop {
            self.prune();
            let Some(&(deadline, position)) = self.deadlines.front() else { break };
            if deadline > now {
                break;
            }
            self.deadlines.pop_front();
            let p = self.outstanding.get_mut(&position).expect("live entries are outstanding");
            if p.attempts >= self.settings.max_retries {
                let p = self.outstanding.remove(&position).expect("present");
                settled.parked.push(Parked {
                    position,
                    event_type: p.event_type,
                    stream: p.stream,
                    attempts: p.attempts,
                    reason: format!(
                        "not acknowledged within the ack timeout of {} ms ({} attempts)",
                        self.settings.ack_timeout_ms, p.attempts
                    ),
                });
            } else {
                p.consumer = None;
                self.ready.push_back(position);
                settled.expired += 1;
            }
        }
        settled
    }

    pub(crate) fn checkpoint(&self) -> u64 {
        self.outstanding.iter().find(|(_, p)| !p.replay).map_or(self.read_to, |(pos, _)| pos - 1)
    }

    pub(crate) fn in_flight(&self) -> usize {
        self.outstanding.len()
    }

    /// Room for more new events.
    pub(crate) fn room(&self) -> usize {
        self.settings.max_in_flight.saturating_sub(self.outstanding.len())
    }

    /// Events waiting for redelivery, taken for `consumer`: (position, attempt number).
    pub(crate) fn take_ready(&mut self, consumer: u64, max: usize, now: Instant) -> Vec<(u64, u32)> {
        let deadline = now + self.settings.ack_timeout();
        let mut out = Vec::new();
        while out.len() < max {
            let Some(pos) = self.ready.pop_front() else { break };
            if let Some(p) = self.outstanding.get_mut(&pos) {
                if p.consumer.is_none() {
                    p.consumer = Some(consumer);
                    p.attempts += 1;
                    p.deadline = Some(deadline);
                    self.deadlines.push_back((deadline, pos));
                    out.push((pos, p.attempts));
                }
            }
        }
        out
    }

    /// Examines the next log event (in position order). Returns true when it matches and is
    /// now in flight to `consumer` (first attempt).
    pub(crate) fn examine(
        &mut self,
        consumer: u64,
        position: u64,
        event_type: &str,
        stream: &str,
        now: Instant,
    ) -> bool {
        debug_assert!(position > self.read_to);
        self.read_to = position;
        if !self.settings.matches(event_type, stream) {
            return false;
        }
        let deadline = now + self.settings.ack_timeout();
        self.deadlines.push_back((deadline, position));
        self.outstanding.insert(
            position,
            Pending {
                attempts: 1,
                consumer: Some(consumer),
                deadline: Some(deadline),
                event_type: event_type.to_owned(),
                stream: stream.to_owned(),
                replay: false,
            },
        );
        true
    }

    /// Acknowledged: done.
    pub(crate) fn ack(&mut self, positions: &[u64]) -> Settled {
        let mut settled = Settled::default();
        for pos in positions {
            if let Some(p) = self.outstanding.remove(pos) {
                if p.replay {
                    settled.unparked.push(*pos);
                }
            }
        }
        self.prune();
        settled
    }

    pub(crate) fn nack(&mut self, positions: &[u64], action: NackAction, reason: &str) -> Settled {
        let mut settled = Settled::default();
        for pos in positions {
            let Some(p) = self.outstanding.get_mut(pos) else { continue };
            let park = match action {
                NackAction::Park => true,
                NackAction::Skip => {
                    let p = self.outstanding.remove(pos).expect("present");
                    if p.replay {
                        settled.unparked.push(*pos);
                    }
                    continue;
                }
                NackAction::Retry => p.attempts >= self.settings.max_retries,
            };
            if park {
                let p = self.outstanding.remove(pos).expect("present");
                settled.parked.push(Parked {
                    position: *pos,
                    event_type: p.event_type,
                    stream: p.stream,
                    attempts: p.attempts,
                    reason: reason.to_owned(),
                });
            } else if p.consumer.is_some() {
                p.consumer = None;
                self.ready.push_back(*pos);
            }
        }
        settled
    }

    /// A consumer went away: what it had in flight is delivered again (not a failed attempt).
    pub(crate) fn consumer_gone(&mut self, consumer: u64) {
        let mut back = Vec::new();
        for (pos, p) in &mut self.outstanding {
            if p.consumer == Some(consumer) {
                p.consumer = None;
                p.attempts = p.attempts.saturating_sub(1);
                back.push(*pos);
            }
        }
        for pos in back.into_iter().rev() {
            self.ready.push_front(pos);
        }
    }

    /// Puts parked events back for delivery.
    pub(crate) fn replay(&mut self, parked: Vec<Parked>) -> usize {
        let mut n = 0;
        for p in parked {
            if self.outstanding.contains_key(&p.position) {
                continue;
            }
            self.outstanding.insert(
                p.position,
                Pending {
                    attempts: 0,
                    consumer: None,
                    deadline: None,
                    event_type: p.event_type,
                    stream: p.stream,
                    replay: true,
                },
            );
            self.ready.push_back(p.position);
            n += 1;
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fixed start instant for one test (tests only compare offsets from it).
    fn t0() -> Instant {
        thread_local!(static T0: Instant = Instant::now());
        T0.with(|t| *t)
    }

    fn at(ms: u64) -> Instant {
        t0() + Duration::from_millis(ms)
    }

    fn group(max_retries: u32) -> Group {
        Group::new(
            Settings {
                group: "g".into(),
                event_types: vec![],
                stream_prefixes: vec!["customer-".into()],
                max_retries,
                start_from: 0,
                max_in_flight: 3,
                ack_timeout_ms: 1_000,
            },
            0,
        )
    }

    #[test]
    fn checkpoint_stays_below_the_first_unacked_event() {
        let mut g = group(5);
        assert!(g.examine(1, 1, "CustomerCreated", "customer-a", t0()));
        assert!(!g.examine(1, 2, "LeadCaptured", "lead-a", t0()), "filtered by stream prefix");
        assert!(g.examine(1, 3, "CustomerUpdated", "customer-a", t0()));
        assert_eq!(g.checkpoint(), 0);
        g.ack(&[3]);
        assert_eq!(g.checkpoint(), 0, "position 1 is still unacked");
        g.ack(&[1]);
        assert_eq!(g.checkpoint(), 3);
    }

    #[test]
    fn nacks_retry_then_park_and_parking_advances_the_checkpoint() {
        let mut g = group(2);
        g.examine(7, 1, "CustomerCreated", "customer-a", t0());
        assert!(g.nack(&[1], NackAction::Retry, "boom").parked.is_empty());
        assert_eq!(g.take_ready(7, 10, t0()), vec![(1, 2)]);
        let settled = g.nack(&[1], NackAction::Retry, "boom");
        assert_eq!(settled.parked.len(), 1);
        assert_eq!(settled.parked[0].attempts, 2);
        assert_eq!(g.checkpoint(), 1);
        // Replayed, it does not hold the checkpoint back, and its ack unparks it.
        assert_eq!(g.replay(settled.parked), 1);
        assert_eq!(g.checkpoint(), 1);
        assert_eq!(g.take_ready(8, 10, t0()), vec![(1, 1)]);
        assert_eq!(g.ack(&[1]).unparked, vec![1]);
    }

    #[test]
    fn a_departed_consumers_events_are_delivered_again_in_order() {
        let mut g = group(5);
        g.examine(1, 1, "CustomerCreated", "customer-a", t0());
        g.examine(1, 2, "CustomerCreated", "customer-b", t0());
        g.examine(2, 3, "CustomerCreated", "customer-c", t0());
        assert_eq!(g.room(), 0);
        g.consumer_gone(1);
        assert_eq!(g.take_ready(3, 10, t0()), vec![(1, 1), (2, 1)]);
        assert!(g.take_ready(3, 10, t0()).is_empty(), "position 3 is still with consumer 2");
    }

    #[test]
    fn an_event_not_acked_within_the_timeout_is_delivered_again_then_parked() {
        let mut g = group(2);
        assert!(g.examine(1, 1, "CustomerCreated", "customer-a", at(0)));
        assert!(g.examine(1, 2, "CustomerCreated", "customer-b", at(100)));
        assert_eq!(g.next_deadline(), Some(at(1_000)));
        assert_eq!(g.expire(at(999)), Settled::default(), "not yet");
        g.ack(&[2]);
        // Position 1 times out: a second attempt, to whichever consumer asks next.
        let settled = g.expire(at(1_000));
        assert_eq!((settled.expired, settled.parked.len()), (1, 0));
        assert_eq!(g.next_deadline(), None, "the acked event's deadline is gone");
        assert_eq!(g.checkpoint(), 0, "a timed-out event still holds the checkpoint");
        assert_eq!(g.take_ready(2, 10, at(1_500)), vec![(1, 2)]);
        assert_eq!(g.next_deadline(), Some(at(2_500)));
        // The second attempt times out too: max_retries = 2, so it is parked.
        let settled = g.expire(at(2_500));
        assert_eq!(settled.expired, 0);
        assert_eq!(settled.parked.len(), 1);
        assert_eq!((settled.parked[0].position, settled.parked[0].attempts), (1, 2));
        assert!(settled.parked[0].reason.contains("ack timeout"), "{}", settled.parked[0].reason);
        assert_eq!(g.checkpoint(), 2);
        assert_eq!(g.in_flight(), 0);
    }

    #[test]
    fn acks_nacks_and_departures_cancel_the_timeout() {
        let mut g = group(5);
        g.examine(1, 1, "CustomerCreated", "customer-a", at(0));
        g.examine(1, 2, "CustomerCreated", "customer-b", at(0));
        g.examine(1, 3, "CustomerCreated", "customer-c", at(0));
        g.ack(&[1]);
        g.nack(&[2], NackAction::Retry, "later");
        g.consumer_gone(1);
        assert_eq!(g.expire(at(10_000)), Settled::default());
        // Redelivered, each gets a fresh deadline from its new delivery.
        assert_eq!(g.take_ready(2, 10, at(20_000)), vec![(3, 1), (2, 2)], "the departed consumer's first");
        assert_eq!(g.expire(at(20_999)), Settled::default());
        assert_eq!(g.expire(at(21_000)).expired, 2);
    }

    #[test]
    fn the_deadline_queue_does_not_grow_with_acked_events() {
        let mut g = group(5);
        g.settings.max_in_flight = 100;
        for pos in 1..=10_000 {
            g.examine(1, pos, "CustomerCreated", "customer-a", at(pos));
            g.ack(&[pos]);
            assert!(g.deadlines.len() <= 1);
        }
    }
}
