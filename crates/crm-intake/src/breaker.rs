//! The per-source circuit breaker: a source pauses after `max_consecutive_failures` failed
//! batches in a row, or at once when one batch's validation failure rate exceeds the
//! threshold; it stays paused until an operator resumes it.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BreakerConfig {
    pub max_consecutive_failures: u32,
    /// A batch whose share of quarantined records is above this (0..=1) trips the breaker.
    pub failure_rate_threshold: f64,
    /// Batches smaller than this never trip on their rate alone.
    pub min_records_for_rate: usize,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig { max_consecutive_failures: 5, failure_rate_threshold: 0.5, min_records_for_rate: 10 }
    }
}

/// What one batch did.
#[derive(Debug, Clone, PartialEq)]
pub enum BatchOutcome {
    /// The batch as a whole could not be taken (malformed, or storage failed).
    Failed { reason: String },
    /// The batch was taken: `quarantined` of `records` failed validation.
    Processed { records: usize, quarantined: usize },
}

/// Why the breaker opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trip {
    pub reason: String,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Breaker {
    pub consecutive_failures: u32,
    /// `Some(reason)` while paused.
    pub paused: Option<String>,
}

impl Breaker {
    /// Folds one batch in; returns a trip when this batch opened the breaker.
    pub fn record(&mut self, cfg: &BreakerConfig, outcome: &BatchOutcome) -> Option<Trip> {
        let trip = match outcome {
            BatchOutcome::Failed { reason } => {
                self.consecutive_failures += 1;
                (self.consecutive_failures >= cfg.max_consecutive_failures).then(|| Trip {
                    reason: format!("{} consecutive failed batches; last: {reason}", self.consecutive_failures),
                })
            }
            BatchOutcome::Processed { records, quarantined } => {
                let rate = if *records == 0 { 0.0 } else { *quarantined as f64 / *records as f64 };
                if *records >= cfg.min_records_for_rate && rate > cfg.failure_rate_threshold {
                    self.consecutive_failures += 1;
                    Some(Trip {
                        reason: format!(
                            "validation failure rate {:.1}% ({quarantined} of {records}) is above {:.1}%",
                            rate * 100.0,
                            cfg.failure_rate_threshold * 100.0
                        ),
                    })
                } else {
                    self.consecutive_failures = 0;
                    None
                }
            }
        };
        if self.paused.is_none() {
            if let Some(t) = &trip {
                self.paused = Some(t.reason.clone());
            }
            trip
        } else {
            None
        }
    }

    pub fn pause(&mut self, reason: &str) {
        self.paused = Some(reason.to_owned());
    }

    /// An operator resumed the source: closed again, failures forgotten.
    pub fn resume(&mut self) {
        self.paused = None;
        self.consecutive_failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_consecutive_failures_pause_and_resume_closes() {
        let cfg = BreakerConfig::default();
        let mut b = Breaker::default();
        let fail = BatchOutcome::Failed { reason: "bad".into() };
        for _ in 0..4 {
            assert!(b.record(&cfg, &fail).is_none());
        }
        let trip = b.record(&cfg, &fail).expect("fifth failure trips");
        assert!(trip.reason.contains("5 consecutive"));
        assert!(b.paused.is_some());
        b.resume();
        assert!(b.paused.is_none());
        assert!(b.record(&cfg, &fail).is_none());
    }

    #[test]
    fn a_success_resets_the_count() {
        let cfg = BreakerConfig::default();
        let mut b = Breaker::default();
        let fail = BatchOutcome::Failed { reason: "bad".into() };
        for _ in 0..4 {
            b.record(&cfg, &fail);
        }
        b.record(&cfg, &BatchOutcome::Processed { records: 10, quarantined: 0 });
        for _ in 0..4 {
            assert!(b.record(&cfg, &fail).is_none());
        }
    }

    #[test]
    fn a_high_failure_rate_trips_at_once_but_not_on_tiny_batches() {
        let cfg = BreakerConfig::default();
        let mut b = Breaker::default();
        assert!(b.record(&cfg, &BatchOutcome::Processed { records: 4, quarantined: 4 }).is_none());
        assert!(
            b.record(&cfg, &BatchOutcome::Processed { records: 100, quarantined: 50 }).is_none(),
            "50% is not above 50%"
        );
        let t = b.record(&cfg, &BatchOutcome::Processed { records: 100, quarantined: 51 }).unwrap();
        assert!(t.reason.contains("51 of 100"));
    }
}
