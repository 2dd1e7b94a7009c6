use crm_eventlog::{Error, EventStore, ExpectedVersion};

use crate::support::{event, open};

#[tokio::test]
async fn a_flipped_byte_in_a_stored_record_is_reported_at_its_position() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        for i in 0..5 {
            store.append("c", ExpectedVersion::Any, vec![event(format!("event {i}"))]).await.unwrap();
        }
        store.close();
    }
    // Damage the record holding position 3 underneath the store, the way a bad disk block or
    // a stray write would, then reopen.
    {
        let db = sled::Config::new().path(dir.path()).segment_size(8 * 1024 * 1024).open().unwrap();
        let key = [b'e'].into_iter().chain(3u64.to_be_bytes()).collect::<Vec<u8>>();
        let mut value = db.get(&key).unwrap().expect("positions 1..=5 were written one per group").to_vec();
        let last = value.len() - 2;
        value[last] ^= 0x01;
        db.insert(&key, value).unwrap();
        db.flush().unwrap();
    }
    let store = open(dir.path());
    let ok = store.read_all(1, 2).await.unwrap();
    assert_eq!(ok.len(), 2, "records before the damage still read");
    let err = store.read_all(1, 10).await.unwrap_err();
    assert!(matches!(err, Error::Corruption { position: 3, .. }), "{err}");
    let err = store.read_stream("c", Some(2), Default::default(), 10).await.unwrap_err();
    assert!(matches!(err, Error::Corruption { position: 3, .. }), "{err}");
    let after = store.read_all(4, 10).await.unwrap();
    assert_eq!(after.iter().map(|e| e.position).collect::<Vec<_>>(), vec![4, 5]);
}
