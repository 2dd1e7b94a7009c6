//! The last committed position of some event types (what the duplicate guard waits for).

use crm_eventlog::{EventStore, ExpectedVersion, NewEvent};

use crate::support::{event, open};

fn typed(event_type: &str) -> NewEvent {
    NewEvent { event_type: event_type.into(), ..event("x") }
}

#[tokio::test]
async fn the_last_position_of_types_follows_appends_and_is_bounded_after_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    assert_eq!(store.last_position_of_types(&["CustomerCreated"]), 0, "an empty log");

    store.append("customer-1", ExpectedVersion::NoStream, vec![typed("CustomerCreated")]).await.unwrap();
    let leads = vec![typed("LeadCaptured"), typed("DuplicateSuspected")];
    store.append("lead-1", ExpectedVersion::NoStream, leads).await.unwrap();
    store.append("lead-2", ExpectedVersion::NoStream, vec![typed("LeadCaptured")]).await.unwrap();
    assert_eq!(store.last_position_of_types(&["CustomerCreated", "CustomerUpdated"]), 1);
    assert_eq!(store.last_position_of_types(&["DuplicateSuspected"]), 3);
    assert_eq!(store.last_position_of_types(&["LeadCaptured"]), 4);
    assert_eq!(store.last_position_of_types(&["CustomerUpdated"]), 0, "a type never appended");
    assert_eq!(EventStore::last_position_of_types(&store, &["CustomerCreated"]).await.unwrap(), 1);

    // Several types in one group of one append: the last of each.
    let mixed = vec![typed("CustomerUpdated"), typed("LeadCaptured"), typed("CustomerUpdated")];
    store.append("mixed", ExpectedVersion::NoStream, mixed).await.unwrap();
    assert_eq!(store.last_position_of_types(&["CustomerUpdated"]), 7);
    assert_eq!(store.last_position_of_types(&["CustomerCreated", "LeadCaptured"]), 6);
    store.close();
    drop(store);

    // After a reopen the store knows only that older events are at or before the head.
    let store = open(dir.path());
    assert_eq!(store.last_position_of_types(&["CustomerCreated"]), 7);
    store.append("lead-3", ExpectedVersion::NoStream, vec![typed("LeadCaptured")]).await.unwrap();
    assert_eq!(store.last_position_of_types(&["CustomerCreated"]), 7, "a capture does not move it");
    store.append("customer-1", ExpectedVersion::Exact(0), vec![typed("CustomerUpdated")]).await.unwrap();
    assert_eq!(store.last_position_of_types(&["CustomerCreated", "CustomerUpdated"]), 9);
    store.close();
}
