//! The bookkeeping of one consumer group, without I/O: which events are outstanding (in
//! flight to a consumer or waiting for redelivery), their attempts, and the checkpoint.
//!
//! The checkpoint is the highest position at or below which every matching event was acked
//! or parked (non-matching events count as done when examined): everything outstanding is
//! above it, so a restart from `checkpoint + 1` loses nothing and redelivers at most the
//! unacknowledged window.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Settings {
    pub(crate) group: String,
    pub(crate) event_types: Vec<String>,
    pub(crate) stream_prefixes: Vec<String>,
    pub(crate) max_retries: u32,
    pub(crate) start_from: u64,
    pub(crate) max_in_flight: usize,
}

impl Settings {
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
    pub(crate) consumers: u32,
}

/// What an ack or nack changed, for persistence.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Settled {
    /// Newly parked events.
    pub(crate) parked: Vec<Parked>,
    /// Replayed parked events now done: their parked records go.
    pub(crate) unparked: Vec<u64>,
}

impl Group {
    pub(crate) fn new(settings: Settings, checkpoint: u64) -> Self {
        Group { settings, read_to: checkpoint, outstanding: BTreeMap::new(), ready: VecDeque::new(), consumers: 0 }
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
    pub(crate) fn take_ready(&mut self, consumer: u64, max: usize) -> Vec<(u64, u32)> {
        let mut out = Vec::new();
        while out.len() < max {
            let Some(pos) = self.ready.pop_front() else { break };
            if let Some(p) = self.outstanding.get_mut(&pos) {
                if p.consumer.is_none() {
                    p.consumer = Some(consumer);
                    p.attempts += 1;
                    out.push((pos, p.attempts));
                }
            }
        }
        out
    }

    /// Examines the next log event (in position order). Returns true when it matches and is
    /// now in flight to `consumer` (first attempt).
    pub(crate) fn examine(&mut self, consumer: u64, position: u64, event_type: &str, stream: &str) -> bool {
        debug_assert!(position > self.read_to);
        self.read_to = position;
        if !self.settings.matches(event_type, stream) {
            return false;
        }
        self.outstanding.insert(
            position,
            Pending {
                attempts: 1,
                consumer: Some(consumer),
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
                Pending { attempts: 0, consumer: None, event_type: p.event_type, stream: p.stream, replay: true },
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

    fn group(max_retries: u32) -> Group {
        Group::new(
            Settings {
                group: "g".into(),
                event_types: vec![],
                stream_prefixes: vec!["customer-".into()],
                max_retries,
                start_from: 0,
                max_in_flight: 3,
            },
            0,
        )
    }

    #[test]
    fn checkpoint_stays_below_the_first_unacked_event() {
        let mut g = group(5);
        assert!(g.examine(1, 1, "CustomerCreated", "customer-a"));
        assert!(!g.examine(1, 2, "LeadCaptured", "lead-a"), "filtered by stream prefix");
        assert!(g.examine(1, 3, "CustomerUpdated", "customer-a"));
        assert_eq!(g.checkpoint(), 0);
        g.ack(&[3]);
        assert_eq!(g.checkpoint(), 0, "position 1 is still unacked");
        g.ack(&[1]);
        assert_eq!(g.checkpoint(), 3);
    }

    #[test]
    fn nacks_retry_then_park_and_parking_advances_the_checkpoint() {
        let mut g = group(2);
        g.examine(7, 1, "CustomerCreated", "customer-a");
        assert!(g.nack(&[1], NackAction::Retry, "boom").parked.is_empty());
        assert_eq!(g.take_ready(7, 10), vec![(1, 2)]);
        let settled = g.nack(&[1], NackAction::Retry, "boom");
        assert_eq!(settled.parked.len(), 1);
        assert_eq!(settled.parked[0].attempts, 2);
        assert_eq!(g.checkpoint(), 1);
        // Replayed, it does not hold the checkpoint back, and its ack unparks it.
        assert_eq!(g.replay(settled.parked), 1);
        assert_eq!(g.checkpoint(), 1);
        assert_eq!(g.take_ready(8, 10), vec![(1, 1)]);
        assert_eq!(g.ack(&[1]).unparked, vec![1]);
    }

    #[test]
    fn a_departed_consumers_events_are_delivered_again_in_order() {
        let mut g = group(5);
        g.examine(1, 1, "CustomerCreated", "customer-a");
        g.examine(1, 2, "CustomerCreated", "customer-b");
        g.examine(2, 3, "CustomerCreated", "customer-c");
        assert_eq!(g.room(), 0);
        g.consumer_gone(1);
        assert_eq!(g.take_ready(3, 10), vec![(1, 1), (2, 1)]);
        assert!(g.take_ready(3, 10).is_empty(), "position 3 is still with consumer 2");
    }
}
