use crm_eventlog::{Config, Metadata, NewEvent, SledEventStore};

pub(crate) fn event(payload: impl Into<Vec<u8>>) -> NewEvent {
    NewEvent {
        id: uuid::Uuid::now_v7(),
        event_type: "TestHappened".into(),
        schema_version: 1,
        metadata: Metadata {
            actor: "tester".into(),
            correlation_id: uuid::Uuid::now_v7(),
            causation_id: None,
            source: "test".into(),
        },
        payload: payload.into(),
    }
}

pub(crate) fn open(dir: &std::path::Path) -> SledEventStore {
    SledEventStore::open(Config::new(dir)).expect("open store")
}
