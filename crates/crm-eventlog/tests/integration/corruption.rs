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

#[tokio::test]
async fn a_rewritten_record_with_a_valid_checksum_breaks_the_hash_chain_at_its_position() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path());
        for i in 0..6 {
            store.append("t", ExpectedVersion::Any, vec![event(format!("amount {i}00"))]).await.unwrap();
        }
        let clean = store.verify_log(|_, _| {}).unwrap();
        assert_eq!((clean.verified, clean.head, clean.first_broken), (6, 6, None));
        store.close();
    }
    // A deliberate edit: change the payload of position 4 and recompute its CRC, as someone
    // with write access to the data directory could.
    {
        let db = sled::Config::new().path(dir.path()).segment_size(8 * 1024 * 1024).open().unwrap();
        let key = [b'e'].into_iter().chain(4u64.to_be_bytes()).collect::<Vec<u8>>();
        let mut value = db.get(&key).unwrap().unwrap().to_vec();
        let at = value.windows(6).position(|w| w == b"amount").unwrap();
        value[at + 7] = b'9';
        let mut crc = crc32fast::Hasher::new();
        crc.update(&value[..47]);
        crc.update(&value[51..]);
        value[47..51].copy_from_slice(&crc.finalize().to_le_bytes());
        db.insert(&key, value).unwrap();
        db.flush().unwrap();
    }
    let store = open(dir.path());
    let events = store.read_all(1, 10).await.unwrap();
    assert_eq!(events[3].payload, b"amount 900", "the checksum alone cannot see the edit");
    let report = store.verify_log(|_, _| {}).unwrap();
    assert_eq!(report.verified, 3);
    assert_eq!(report.first_broken.as_ref().map(|b| b.0), Some(4), "{report:?}");
}
