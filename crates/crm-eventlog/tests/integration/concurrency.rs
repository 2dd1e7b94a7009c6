use std::sync::Arc;

use crm_eventlog::{Error, EventStore, ExpectedVersion};

use crate::support::{event, open};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixty_four_racers_exactly_one_wins_each_version() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    const RACERS: usize = 64;
    const ROUNDS: u64 = 20;
    for round in 0..ROUNDS {
        let expected = if round == 0 { ExpectedVersion::NoStream } else { ExpectedVersion::Exact(round - 1) };
        let barrier = Arc::new(tokio::sync::Barrier::new(RACERS));
        let mut tasks = Vec::new();
        for racer in 0..RACERS {
            let store = store.clone();
            let barrier = barrier.clone();
            tasks.push(tokio::spawn(async move {
                barrier.wait().await;
                store.append("race", expected, vec![event(format!("{round}:{racer}"))]).await
            }));
        }
        let mut wins = 0;
        for t in tasks {
            match t.await.unwrap() {
                Ok(r) => {
                    wins += 1;
                    assert_eq!(r.last_version, round);
                }
                Err(Error::WrongExpectedVersion { current, .. }) => assert_eq!(current, Some(round)),
                Err(e) => panic!("unexpected error {e}"),
            }
        }
        assert_eq!(wins, 1, "round {round}");
    }
    let events = store.read_stream("race", None, Default::default(), 1000).await.unwrap();
    assert_eq!(events.iter().map(|e| e.version).collect::<Vec<_>>(), (0..ROUNDS).collect::<Vec<_>>());
    assert_eq!(events.iter().map(|e| e.position).collect::<Vec<_>>(), (1..=ROUNDS).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appends_get_gapless_positions_matching_their_acknowledgements() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let mut tasks = Vec::new();
    for w in 0..64 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for i in 0..30 {
                let n = 1 + (i % 3);
                let events = (0..n).map(|k| event(format!("{w}/{i}/{k}"))).collect();
                let stream = format!("w-{}", w % 5);
                let r = store.append(&stream, ExpectedVersion::Any, events).await.unwrap();
                assert_eq!(r.last_position - r.first_position + 1, n as u64);
                acked.push((r.first_position, format!("{w}/{i}/0")));
            }
            acked
        }));
    }
    let mut acked = Vec::new();
    for t in tasks {
        acked.extend(t.await.unwrap());
    }
    let head = store.head().await.unwrap();
    let all = store.read_all(1, 100_000).await.unwrap();
    assert_eq!(all.len() as u64, head);
    assert!(all.iter().enumerate().all(|(i, e)| e.position == i as u64 + 1), "gapless");
    for (pos, payload) in acked {
        assert_eq!(all[pos as usize - 1].payload, payload.as_bytes(), "acknowledged position holds its event");
    }
    for s in 0..5 {
        let events = store.read_stream(&format!("w-{s}"), None, Default::default(), 100_000).await.unwrap();
        assert!(events.iter().enumerate().all(|(i, e)| e.version == i as u64), "stream versions gapless");
        assert!(events.windows(2).all(|w| w[0].position < w[1].position));
    }
    let stats = store.stats();
    assert!(stats.barriers < head, "appends were grouped: {stats:?} for {head} events");
    // The writer's phases are measured inside its busy time.
    assert!(stats.writer_apply_micros > 0, "{stats:?}");
    assert!(stats.writer_apply_micros + stats.writer_read_ahead_micros <= stats.writer_busy_micros, "{stats:?}");
}
