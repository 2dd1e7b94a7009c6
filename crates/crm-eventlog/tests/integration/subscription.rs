use std::time::Duration;

use crm_eventlog::{EventStore, ExpectedVersion};
use futures::StreamExt;

use crate::support::{event, open};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_all_catches_up_then_goes_live_without_gap_or_duplicate() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    for i in 0..300 {
        store.append(&format!("s-{}", i % 7), ExpectedVersion::Any, vec![event(format!("{i}"))]).await.unwrap();
    }
    // Subscribe from the middle while writers keep appending across the catch-up/live switch.
    let mut sub = store.subscribe_all(101);
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            let mut tasks = Vec::new();
            for w in 0..8 {
                let store = store.clone();
                tasks.push(tokio::spawn(async move {
                    for i in 0..100 {
                        store
                            .append(&format!("live-{w}"), ExpectedVersion::Any, vec![event(format!("{w}/{i}"))])
                            .await
                            .unwrap();
                    }
                }));
            }
            for t in tasks {
                t.await.unwrap();
            }
        })
    };
    let mut expected = 101;
    while expected <= 1100 {
        let e = tokio::time::timeout(Duration::from_secs(20), sub.next())
            .await
            .expect("live event arrives")
            .unwrap()
            .unwrap();
        assert_eq!(e.position, expected, "no gap, no duplicate");
        expected += 1;
    }
    writer.await.unwrap();
    assert_eq!(store.head().await.unwrap(), 1100);
    // Nothing more arrives until something is appended.
    assert!(tokio::time::timeout(Duration::from_millis(100), sub.next()).await.is_err());
    store.append("late", ExpectedVersion::Any, vec![event("late")]).await.unwrap();
    let e = sub.next().await.unwrap().unwrap();
    assert_eq!((e.position, e.stream.as_str()), (1101, "late"));
    // Closing the store ends live subscriptions with an error instead of hanging.
    store.close();
    let end = tokio::time::timeout(Duration::from_secs(5), sub.next()).await.unwrap();
    assert!(matches!(end, Some(Err(crm_eventlog::Error::Unavailable(_)))));
}
