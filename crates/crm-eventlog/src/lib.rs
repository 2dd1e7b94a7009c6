//! The append-only CRM event log, on sled.
//!
//! Every state change of the CRM is an event appended to a stream (`lead-<id>`,
//! `customer-<id>`, ...). The log gives each committed event a global position that is
//! gapless and commit-ordered, checks optimistic-concurrency expectations per stream,
//! deduplicates re-sent event ids, and acknowledges an append only after a real durability
//! barrier (`fdatasync` of a write-ahead file beside sled; sled itself is synced by
//! background checkpoints).
//!
//! Invariants this crate keeps:
//! - positions start at 1 and have no gaps; readers never see a durable append before its
//!   barrier (a buffered one is visible once written, without a barrier);
//! - an append is all-or-nothing, across every stream it names;
//! - every stored event is framed with a format byte, schema version and CRC32, and a damaged
//!   record is reported as [`Error::Corruption`] at its position, never decoded as garbage.
//!
//! ```
//! use crm_eventlog::{Config, EventStore, ExpectedVersion, Metadata, NewEvent, SledEventStore};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), crm_eventlog::Error> {
//! let dir = std::env::temp_dir().join(format!("crm-eventlog-doctest-{}", std::process::id()));
//! let store = SledEventStore::open(Config::new(&dir))?;
//! let event = NewEvent {
//!     id: uuid::Uuid::now_v7(),
//!     event_type: "LeadCaptured".into(),
//!     schema_version: 1,
//!     metadata: Metadata { actor: "user-1".into(), ..Metadata::default() },
//!     payload: b"{}".to_vec(),
//! };
//! let appended = store.append("lead-1", ExpectedVersion::NoStream, vec![event]).await?;
//! assert_eq!(appended.first_position, 1);
//! assert_eq!(store.read_all(1, 10).await?.len(), 1);
//! store.close();
//! # drop(store);
//! # let _ = std::fs::remove_dir_all(&dir);
//! # Ok(())
//! # }
//! ```

mod codec;
mod error;
mod id_index;
mod keys;
pub mod memory;
mod sled_store;
mod store;
mod types;
mod wal;

pub use error::{Error, Result};

/// Frame encoding and decoding, exposed for the criterion benches only; not a stable API.
#[doc(hidden)]
pub mod bench_support {
    use crate::codec::{write_frame, EncodedEvent, Frames, GENESIS};
    use crate::{NewEvent, RecordedEvent, Result};

    /// Encodes `event` into a frame at stream version `version`, appending to `out`.
    pub fn encode_frame(out: &mut Vec<u8>, stream: &str, event: NewEvent, version: u64) {
        write_frame(out, &EncodedEvent::encode(stream, event, 0), version, &mut GENESIS.clone());
    }

    /// Verifies and decodes every frame of a chunk.
    pub fn decode_frames(chunk: &[u8], first_position: u64) -> Result<Vec<RecordedEvent>> {
        Frames::new(chunk, first_position).map(|f| f.and_then(|f| f.decode())).collect()
    }
}
pub use sled_store::{
    Config, LogVerification, SledEventStore, Stats, Warmed, DEFAULT_CACHE_BYTES, MAX_EVENTS_PER_APPEND, MAX_NAME_LEN,
    MAX_PAYLOAD_LEN, MAX_STREAM_ID_LEN, WARM_THREADS,
};
pub use store::EventStore;
pub use types::{
    AppendResult, Direction, Durability, ExpectedVersion, Metadata, NewEvent, RecordedEvent, StreamAppend,
};
