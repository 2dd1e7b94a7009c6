//! The projection runtime: turns the event log into read models that can be trusted.
//!
//! A [`Projector`] is a name, a version, a fingerprint of the rules and configuration it
//! depends on, and a pure fold over `(RecordedEvent, Event)` into key-value [`State`]. The
//! runner ([`spawn`]) follows the log from the projector's checkpoint (catch-up, then live)
//! on one tokio task per projector, applies events in memory in batches, and writes the
//! touched keys together with the checkpoint in **one atomic sled batch**: a restart resumes
//! exactly after the last committed event, never applying one twice and never skipping one.
//!
//! Invariants this crate keeps:
//! - projections never write to the event log; each read model lives in a sled database of
//!   its own (`<data-dir>/projections/<name>`), one tree per build (`<name>/<generation>`);
//! - a build's state and its checkpoint change together, in one batch (a build that serves
//!   nothing yet may write a large commit as single inserts between a `\0spill` marker and
//!   the checkpoint; a tree found with the marker is emptied and built again);
//! - a build far behind the head (catch-up, rebuild, verify) holds its state in memory and
//!   writes each changed key once, in key order, when it reaches its target or its cache
//!   passes a byte bound;
//! - a failing event stops that projector only, at that position, visibly in its status;
//!   nothing is skipped;
//! - when the version or the rules fingerprint changes, the projector is rebuilt from
//!   position 0 into a shadow tree while the old one serves, then swapped by one write of the
//!   catalog entry; queries never see a half-built read model;
//! - `verify` recomputes from the log to the serving build's position and lists every key
//!   that differs.
//!
//! ```
//! use crm_projection_runtime::{printable_key, Fingerprint};
//! assert_eq!(Fingerprint::of(&("stage limits", 5u32)), Fingerprint::of(&("stage limits", 5u32)));
//! assert_ne!(Fingerprint::of(&5u32), Fingerprint::of(&6u32));
//! assert_eq!(printable_key(b"c/\x01x"), "c/\\x01x");
//! ```

mod builder;
mod error;
mod hash_index;
mod projector;
mod runner;
mod stats;

pub use builder::{resume_position, Failure};
pub use error::{Error, Result};
pub use projector::warm;
pub use projector::{
    bucket_key, bucket_of, decode_value, encode_value, in_halves, printable_key, push_hex, Cached, Derived,
    Fingerprint, Projector, State, PREFETCH_ROUNDS,
};
pub use runner::{
    current_rules, spawn, spawn_with, Difference, ProjectionDb, ProjectionHandle, ProjectionStatus, Reader,
    RebuildProgress, RebuildSummary, RunState, SpawnOptions, VerifyReport, DEFAULT_BUILD_CACHE_BYTES,
    DEFAULT_CACHE_BYTES,
};
pub use stats::histogram_median;

/// A deterministic generator of event histories, for tests and benches.
pub mod fixtures;
/// Helpers for tests and benches: fold a projector over events without a runner.
pub mod testing;
