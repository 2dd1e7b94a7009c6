use crm_eventlog::{Error, EventStore, ExpectedVersion, MAX_PAYLOAD_LEN};

use crate::support::{event, open};

#[tokio::test]
async fn bad_input_is_refused_with_the_field_named_and_nothing_written() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.append("ok", ExpectedVersion::Any, vec![event("a")]).await.unwrap();

    let cases: Vec<(String, Vec<crm_eventlog::NewEvent>, &str)> = vec![
        (String::new(), vec![event("x")], "stream"),
        ("s".repeat(257), vec![event("x")], "stream"),
        ("bad\0stream".into(), vec![event("x")], "stream"),
        ("ok".into(), vec![], "events"),
        ("ok".into(), (0..1001).map(|_| event("x")).collect(), "events"),
        ("ok".into(), vec![event(vec![0u8; MAX_PAYLOAD_LEN + 1])], "events[0].payload"),
    ];
    for (stream, events, field) in cases {
        let err = store.append(&stream, ExpectedVersion::Any, events).await.unwrap_err();
        let named = match &err {
            Error::InvalidArgument { field, .. } | Error::TooLarge { field, .. } => field.clone(),
            other => panic!("unexpected error {other:?}"),
        };
        assert_eq!(named, field, "{err}");
    }
    let mut twice = event("x");
    let again = twice.clone();
    twice.payload = b"other".to_vec();
    let err = store.append("ok", ExpectedVersion::Any, vec![twice, again]).await.unwrap_err();
    assert!(matches!(err, Error::InvalidArgument { ref field, .. } if field == "events[1].id"), "{err}");

    assert_eq!(store.head().await.unwrap(), 1, "nothing written by refused appends");
    assert_eq!(store.read_all(1, 100).await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_stream_id_of_256_bytes_and_a_payload_of_1_mib_are_accepted_and_kept_inline() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let stream = "s".repeat(256);
    let big = vec![7u8; MAX_PAYLOAD_LEN];
    let r = store.append(&stream, ExpectedVersion::NoStream, vec![event(big.clone())]).await.unwrap();
    assert_eq!(r.first_position, 1);
    let read = store.read_stream(&stream, None, Default::default(), 10).await.unwrap();
    assert_eq!(read[0].payload, big);
    // sled never fsyncs blob files; every value must stay inline in the synced data file.
    let blobs = std::fs::read_dir(dir.path().join("blobs")).map(|d| d.count()).unwrap_or(0);
    assert_eq!(blobs, 0, "a value was written to an unsynced sled blob file");
}
