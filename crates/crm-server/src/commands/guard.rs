//! The I/O half of the duplicate guard on `CaptureLead` and `UpdateCustomer`: the lookup in
//! the duplicates read model. The rule itself (refuse an exact key collision unless the
//! caller proceeds anyway, record what was found) is crm-domain's `guard_duplicates`.
//!
//! - **Seeing earlier commands.** Before each lookup the guard asks the log for the position
//!   of its last committed event of a type the duplicates read model reads (customer events
//!   and dismissals: `crm_projection_duplicates::DECODED`; at most the committed head) and
//!   waits until the
//!   read model has applied it, so a customer created or edited by any command acknowledged
//!   before this one started is in the index. Lead captures are of no such type, so under a
//!   stream of captures the guard does not wait for the read model to step. A read
//!   model stopped at an event it cannot apply (status `Failed`) does not stop captures: the
//!   guard checks against what it has and logs a warning. One serving an older version
//!   frozen at its position until its rebuild swaps in (`frozen`, after an upgrade) and
//!   behind what the check needs refuses the command at once with UNAVAILABLE: customers
//!   changed since are not in it.
//! - **Concurrent commands.** Guarded commands take a lock per master key (the normalised
//!   USCC and E.164 phone they carry; 1024 stripes) from before the lookup until their append
//!   is acknowledged. Two guarded commands with the same key therefore run one after the
//!   other, and the second one's lookup sees the first one's events.
//! - **Configuration.** The lookup uses the Matcher of the serving build, configured from the
//!   rules that build was made with (`crm_projection_duplicates::match_config`), so the guard
//!   and `ListDuplicateCandidates` agree.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::time::{Duration, Instant};

use crm_domain::{normalize_phone, normalize_uscc, DuplicateCheck};
use crm_eventlog::EventStore;
use crm_projection_duplicates::DuplicatesProjector;
use crm_projection_runtime::{ProjectionHandle, RunState};
use tokio::sync::{Mutex, MutexGuard};
use uuid::Uuid;

use super::error::CommandError;

const STRIPES: usize = 1024;
/// How long a command waits for the duplicates read model to reach the position it needs.
const WAIT: Duration = Duration::from_secs(10);

/// The duplicates read model as the command engine uses it.
pub(crate) struct DuplicateGuard {
    projector: DuplicatesProjector,
    handle: ProjectionHandle,
    stripes: Vec<Mutex<()>>,
}

impl DuplicateGuard {
    /// `projector` must be (a clone of) the one `handle` runs.
    pub(crate) fn new(projector: DuplicatesProjector, handle: ProjectionHandle) -> Self {
        DuplicateGuard { projector, handle, stripes: (0..STRIPES).map(|_| Mutex::new(())).collect() }
    }

    /// Locks the master keys among `fields` (`phone`, `uscc`, raw or normalised); hold the
    /// guards until the command's append is acknowledged.
    pub(crate) async fn lock_keys(&self, fields: &BTreeMap<String, String>) -> Vec<MutexGuard<'_, ()>> {
        let mut keys = Vec::new();
        if let Some(e164) = fields.get("phone").and_then(|p| normalize_phone(p).e164) {
            keys.push(format!("mobile:{e164}"));
        }
        if let Some(uscc) = fields.get("uscc").map(|u| normalize_uscc(u).normalized).filter(|u| !u.is_empty()) {
            keys.push(format!("uscc:{uscc}"));
        }
        let mut stripes: Vec<usize> = keys
            .iter()
            .map(|k| {
                let mut h = std::collections::hash_map::DefaultHasher::new();
                k.hash(&mut h);
                (h.finish() % STRIPES as u64) as usize
            })
            .collect();
        // One order for everybody: no deadlock between two commands with two keys.
        stripes.sort_unstable();
        stripes.dedup();
        let mut guards = Vec::with_capacity(stripes.len());
        for i in stripes {
            guards.push(self.stripes[i].lock().await);
        }
        guards
    }

    /// The live customers that collide with or resemble the profile `fields` of `id` (a lead
    /// or the customer being edited, which is left out), once the read model has applied
    /// everything committed before the call.
    pub(crate) async fn check<S: EventStore>(
        &self,
        store: &S,
        id: Uuid,
        fields: &BTreeMap<String, String>,
    ) -> Result<DuplicateCheck, CommandError> {
        let needed = store.last_position_of_types(crm_projection_duplicates::DECODED).await?;
        let deadline = Instant::now() + WAIT;
        while self.handle.position() < needed {
            let status = self.handle.status();
            if status.state == RunState::Failed {
                // Stopped at an event it cannot apply (visible in ListProjections): captures
                // go on, checked against what the read model has.
                tracing::warn!(
                    position = status.position,
                    needed,
                    "duplicates read model failed; checking against it as it is"
                );
                break;
            }
            if status.frozen {
                // Serving an older version frozen at its position until its rebuild swaps
                // in: customers changed since are not in it, so the check cannot be trusted;
                // refused at once (retryable) rather than after the wait.
                return Err(CommandError::Unavailable {
                    what: "duplicate check".into(),
                    reason: format!(
                        "the duplicates read model is being rebuilt after an upgrade (serving position {}, the check needs {needed})",
                        status.position
                    ),
                });
            }
            if Instant::now() >= deadline {
                return Err(CommandError::Unavailable {
                    what: "duplicate check".into(),
                    reason: format!(
                        "the duplicates read model is at position {}, behind position {needed}, which the check needs",
                        status.position
                    ),
                });
            }
            // Reached or not, look at the state again.
            let _ = self.handle.wait_for(needed, Duration::from_millis(100)).await;
        }
        let tree = String::from_utf8_lossy(&self.handle.reader().tree.name()).into_owned();
        let rules = self.handle.rules();
        Ok(self.projector.check(&tree, &rules, id, fields))
    }
}
