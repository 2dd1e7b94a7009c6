//! One build of one projection: a sled tree, its checkpoint, and the fold that advances it.

use std::sync::Arc;

use crm_domain::{DecodeError, Event, Rules};
use crm_eventlog::SledEventStore;
use serde::{Deserialize, Serialize};

use crate::projector::{decode_value, encode_value, Cache, Projector, META_KEY};

/// Events read from the log per call.
const READ_CHUNK: usize = 4096;

/// Stored under [`META_KEY`] in every projection tree, in the same batch as the state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Meta {
    /// Last applied position (0: nothing applied).
    pub(crate) position: u64,
    pub(crate) version: u32,
    pub(crate) fingerprint: u64,
    /// The rules this build runs with.
    pub(crate) rules: Rules,
    /// `recorded_at` of the event at `position`.
    pub(crate) last_recorded_at_micros: i64,
}

/// Why a build stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The position of the event that could not be applied (or read).
    pub position: u64,
    pub detail: String,
}

#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct StepOutcome {
    pub(crate) applied: u64,
}

pub(crate) struct Builder<P: Projector> {
    pub(crate) projector: Arc<P>,
    pub(crate) tree: sled::Tree,
    pub(crate) meta: Meta,
    /// The newest rules seen in a `RulesChanged` event during the last step.
    pub(crate) seen_rules: Option<Rules>,
    cache: Cache<P::Value>,
}

impl<P: Projector> Builder<P> {
    /// A build over `tree`, resuming from its stored checkpoint, or starting empty with `rules`.
    pub(crate) fn open(projector: Arc<P>, tree: sled::Tree, rules: Rules) -> Result<Self, Failure> {
        let stored = tree.get(META_KEY).map_err(|e| Failure { position: 0, detail: e.to_string() })?;
        let fresh = stored.is_none() && tree.is_empty();
        let meta = match stored {
            Some(bytes) => {
                decode_value::<Meta>(META_KEY, &bytes).map_err(|e| Failure { position: 0, detail: e.to_string() })?
            }
            None => Meta {
                position: 0,
                version: projector.version(),
                fingerprint: projector.fingerprint(&rules),
                rules,
                last_recorded_at_micros: 0,
            },
        };
        Ok(Builder { projector, tree, meta, seen_rules: None, cache: Cache::new(fresh) })
    }

    /// Applies events after the checkpoint up to `up_to` (and never past the committed head),
    /// at most about `max_events`, then commits state and checkpoint in one sled batch.
    /// On failure nothing of this step is committed: the stored state stays at the last
    /// checkpoint, and the failing position is returned.
    pub(crate) fn step(&mut self, store: &SledEventStore, up_to: u64, max_events: u64) -> Result<StepOutcome, Failure> {
        self.seen_rules = None;
        let target = up_to.min(store.committed_head());
        let mut position = self.meta.position;
        let mut last_recorded = self.meta.last_recorded_at_micros;
        let mut applied = 0u64;
        let projector = self.projector.clone();
        while position < target && applied < max_events {
            let want = (target - position).min(READ_CHUNK as u64) as usize;
            let events = match store.read_all_blocking(position + 1, want) {
                Ok(events) => events,
                Err(e) => {
                    self.cache.clear();
                    return Err(Failure { position: position + 1, detail: format!("reading the log: {e}") });
                }
            };
            if events.is_empty() {
                break;
            }
            let mut state = self.cache.state(&self.tree);
            for recorded in &events {
                let fail = |detail: String| Failure { position: recorded.position, detail };
                if recorded.position != position + 1 {
                    self.cache.clear();
                    return Err(fail(format!(
                        "expected position {}, the log returned {}",
                        position + 1,
                        recorded.position
                    )));
                }
                let event = match Event::decode(&recorded.event_type, recorded.schema_version, &recorded.payload) {
                    Ok(event) => Some(event),
                    // Not a domain event (the auth subsystem's token events, say): the
                    // projector sees it without a payload.
                    Err(DecodeError::UnknownEventType(_)) => None,
                    Err(e) => {
                        self.cache.clear();
                        return Err(fail(format!("decoding {}: {e}", recorded.event_type)));
                    }
                };
                if let Err(detail) = projector.apply(&mut state, &self.meta.rules, recorded, event.as_ref()) {
                    self.cache.clear();
                    return Err(fail(detail));
                }
                if let Some(Event::RulesChanged(changed)) = &event {
                    self.seen_rules = Some(changed.rules.clone());
                }
                position = recorded.position;
                last_recorded = recorded.recorded_at_micros;
                applied += 1;
            }
        }
        if applied > 0 {
            let mut meta = self.meta.clone();
            meta.position = position;
            meta.last_recorded_at_micros = last_recorded;
            let mut batch = sled::Batch::default();
            self.cache.drain_into(&mut batch);
            batch.insert(META_KEY, encode_value(&meta));
            if let Err(e) = self.tree.apply_batch(batch) {
                return Err(Failure { position: self.meta.position + 1, detail: format!("writing the batch: {e}") });
            }
            self.meta = meta;
        } else if self.meta.position == 0 && self.tree.get(META_KEY).ok().flatten().is_none() {
            // Record the build's version and rules even before the first event.
            let _ = self.tree.insert(META_KEY, encode_value(&self.meta));
        }
        Ok(StepOutcome { applied })
    }
}
