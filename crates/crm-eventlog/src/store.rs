use async_trait::async_trait;
use futures::stream::BoxStream;

use crate::{AppendResult, Direction, Durability, ExpectedVersion, NewEvent, RecordedEvent, Result, StreamAppend};

/// The event log. One implementation lives on sled ([`crate::SledEventStore`]); a backend on a
/// distributed engine can stand beside it later.
///
/// Positions are global, gapless and commit-ordered, starting at 1; `head() == 0` means an
/// empty log. Stream versions start at 0. Readers only ever see acknowledged (committed) events.
#[async_trait]
pub trait EventStore: Send + Sync + 'static {
    /// Appends `events` to `stream` if its version satisfies `expected`, durably.
    async fn append(&self, stream: &str, expected: ExpectedVersion, events: Vec<NewEvent>) -> Result<AppendResult> {
        let mut results = self
            .append_many(vec![StreamAppend { stream: stream.to_owned(), expected, events }], Durability::Durable)
            .await?;
        Ok(results.pop().expect("one result per stream append"))
    }

    /// Appends to several streams atomically: every expectation holds and everything is
    /// written, or nothing is. Results come back in the order of `appends`.
    async fn append_many(&self, appends: Vec<StreamAppend>, durability: Durability) -> Result<Vec<AppendResult>>;

    /// Reads up to `limit` events of one stream, starting at version `from` (inclusive; `None`
    /// is the start when reading forwards and the end when reading backwards).
    async fn read_stream(
        &self,
        stream: &str,
        from: Option<u64>,
        direction: Direction,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>>;

    /// Reads up to `limit` events in log order, starting at position `from` (inclusive).
    async fn read_all(&self, from: u64, limit: usize) -> Result<Vec<RecordedEvent>>;

    /// The position of the last committed event, 0 for an empty log.
    async fn head(&self) -> Result<u64>;

    /// A position at or after the last committed event whose type is one of `types`, and at
    /// most the head: a reader that must have seen every committed event of those types can
    /// wait for it instead of the head. The head unless the store knows better.
    async fn last_position_of_types(&self, types: &[&str]) -> Result<u64> {
        let _ = types;
        self.head().await
    }

    /// The version of the last committed event of `stream`, `None` if it has none.
    async fn stream_version(&self, stream: &str) -> Result<Option<u64>>;

    /// Every event from position `from` (inclusive): first those already in the log, then live
    /// ones as they are committed, with no gap and no duplicate at the switch. Ends with an
    /// `Unavailable` error when the store closes.
    fn subscribe_all(&self, from: u64) -> BoxStream<'static, Result<RecordedEvent>>;
}
