//! Model-based test: the sled store and an in-memory `Vec` model agree on every read and error,
//! across random appends (random expectations, repeated event ids, several streams) and reopens.

use std::collections::HashMap;

use crm_eventlog::{AppendResult, Direction, Error, EventStore, ExpectedVersion, Metadata, NewEvent, SledEventStore};
use proptest::prelude::*;
use uuid::Uuid;

#[derive(Debug, Clone)]
enum Op {
    Append { stream: usize, expected: ExpectedVersion, ids: Vec<u8> },
    Reopen,
    ReadStream { stream: usize, from: Option<u64>, backwards: bool, limit: usize },
    ReadAll { from: u64, limit: usize },
}

const STREAMS: [&str; 3] = ["lead-a", "lead-b", "customer-c"];

fn op() -> impl Strategy<Value = Op> {
    let expected = prop_oneof![
        Just(ExpectedVersion::Any),
        Just(ExpectedVersion::NoStream),
        Just(ExpectedVersion::Exists),
        (0u64..6).prop_map(ExpectedVersion::Exact),
    ];
    prop_oneof![
        6 => (0..STREAMS.len(), expected, prop::collection::vec(0u8..40, 1..4))
            .prop_map(|(stream, expected, ids)| Op::Append { stream, expected, ids }),
        1 => Just(Op::Reopen),
        2 => (0..STREAMS.len(), prop::option::of(0u64..8), any::<bool>(), 0usize..6)
            .prop_map(|(stream, from, backwards, limit)| Op::ReadStream { stream, from, backwards, limit }),
        2 => (0u64..30, 0usize..8).prop_map(|(from, limit)| Op::ReadAll { from, limit }),
    ]
}

/// What the model stores per event.
#[derive(Debug, Clone, PartialEq)]
struct Ev {
    position: u64,
    stream: String,
    version: u64,
    id: Uuid,
}

#[derive(Default)]
struct Model {
    log: Vec<Ev>,
}

impl Model {
    fn version(&self, stream: &str) -> Option<u64> {
        self.log.iter().filter(|e| e.stream == stream).map(|e| e.version).max()
    }

    /// The model's answer: Ok(result) or the error's kind and current version.
    fn append(&mut self, stream: &str, expected: ExpectedVersion, ids: &[Uuid]) -> Result<AppendResult, String> {
        let mut seen = std::collections::HashSet::new();
        if ids.iter().any(|id| !seen.insert(*id)) {
            return Err("invalid".into());
        }
        let known: Vec<Option<Ev>> = ids.iter().map(|id| self.log.iter().find(|e| e.id == *id).cloned()).collect();
        if known.iter().any(Option::is_some) {
            let hits: Option<Vec<Ev>> = known.into_iter().collect();
            let Some(hits) = hits else { return Err("idempotency".into()) };
            if hits.iter().any(|h| h.stream != stream)
                || !hits.windows(2).all(|w| w[1].position == w[0].position + 1 && w[1].version == w[0].version + 1)
            {
                return Err("idempotency".into());
            }
            return Ok(AppendResult {
                first_position: hits[0].position,
                last_position: hits[hits.len() - 1].position,
                last_version: hits[hits.len() - 1].version,
                deduplicated: true,
            });
        }
        let current = self.version(stream);
        if !expected.accepts(current) {
            return Err(format!("conflict {current:?}"));
        }
        let first_version = current.map_or(0, |v| v + 1);
        let first_position = self.log.len() as u64 + 1;
        for (i, id) in ids.iter().enumerate() {
            self.log.push(Ev {
                position: first_position + i as u64,
                stream: stream.to_owned(),
                version: first_version + i as u64,
                id: *id,
            });
        }
        Ok(AppendResult {
            first_position,
            last_position: first_position + ids.len() as u64 - 1,
            last_version: first_version + ids.len() as u64 - 1,
            deduplicated: false,
        })
    }

    fn read_stream(&self, stream: &str, from: Option<u64>, direction: Direction, limit: usize) -> Vec<Ev> {
        let events = self.log.iter().filter(|e| e.stream == stream).cloned();
        match direction {
            Direction::Forwards => {
                let from = from.unwrap_or(0);
                events.filter(|e| e.version >= from).take(limit).collect()
            }
            Direction::Backwards => {
                let from = from.unwrap_or(u64::MAX);
                let mut v: Vec<Ev> = events.filter(|e| e.version <= from).collect();
                v.reverse();
                v.truncate(limit);
                v
            }
        }
    }
}

fn kind(e: &Error) -> String {
    match e {
        Error::InvalidArgument { .. } => "invalid".into(),
        Error::IdempotencyConflict { .. } => "idempotency".into(),
        Error::WrongExpectedVersion { current, .. } => format!("conflict {current:?}"),
        other => format!("unexpected {other}"),
    }
}

fn strip(events: Vec<crm_eventlog::RecordedEvent>) -> Vec<Ev> {
    events.into_iter().map(|e| Ev { position: e.position, stream: e.stream, version: e.version, id: e.id }).collect()
}

fn run(ops: Vec<Op>) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SledEventStore::open(crm_eventlog::Config::new(dir.path())).unwrap();
        let mut model = Model::default();
        // A small pool of ids, so that requests repeat and partly overlap earlier ones.
        let pool: HashMap<u8, Uuid> = (0u8..40).map(|i| (i, Uuid::now_v7())).collect();
        for op in ops {
            match op {
                Op::Append { stream, expected, ids } => {
                    let ids: Vec<Uuid> = ids.iter().map(|i| pool[i]).collect();
                    let events = ids
                        .iter()
                        .map(|id| NewEvent {
                            id: *id,
                            event_type: "ModelTested".into(),
                            schema_version: 1,
                            metadata: Metadata::default(),
                            payload: id.as_bytes().to_vec(),
                        })
                        .collect();
                    let actual = store.append(STREAMS[stream], expected, events).await.map_err(|e| kind(&e));
                    let wanted = model.append(STREAMS[stream], expected, &ids);
                    assert_eq!(actual, wanted, "append {ids:?} to {} at {expected}", STREAMS[stream]);
                }
                Op::Reopen => {
                    store.close();
                    drop(store);
                    store = SledEventStore::open(crm_eventlog::Config::new(dir.path())).unwrap();
                }
                Op::ReadStream { stream, from, backwards, limit } => {
                    let dir = if backwards { Direction::Backwards } else { Direction::Forwards };
                    let actual = strip(store.read_stream(STREAMS[stream], from, dir, limit).await.unwrap());
                    assert_eq!(actual, model.read_stream(STREAMS[stream], from, dir, limit));
                }
                Op::ReadAll { from, limit } => {
                    let actual = strip(store.read_all(from, limit).await.unwrap());
                    let wanted: Vec<Ev> =
                        model.log.iter().filter(|e| e.position >= from).take(limit).cloned().collect();
                    assert_eq!(actual, wanted);
                }
            }
            assert_eq!(store.head().await.unwrap(), model.log.len() as u64);
            for s in STREAMS {
                assert_eq!(store.stream_version(s).await.unwrap(), model.version(s), "{s}");
            }
        }
        // Every event's payload round-trips.
        for e in store.read_all(1, 10_000).await.unwrap() {
            assert_eq!(e.payload, e.id.as_bytes());
        }
        store.close();
    });
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn sled_store_matches_in_memory_model(ops in prop::collection::vec(op(), 1..60)) {
        run(ops);
    }
}
