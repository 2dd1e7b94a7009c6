//! Criterion benches of the event log: frame codec, durable append with 1/8/64 writers, and a
//! `read_all` scan. Run with `cargo bench -p crm-benches --bench eventlog`.

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use crm_benches::sample_event;
use crm_eventlog::bench_support::{decode_frames, encode_frame};
use crm_eventlog::{Config, EventStore, ExpectedVersion, SledEventStore};

fn codec(c: &mut Criterion) {
    let mut g = c.benchmark_group("codec");
    g.throughput(Throughput::Elements(1));
    g.bench_function("encode/200B", |b| {
        b.iter_batched(
            || sample_event(200, 1),
            |e| {
                let mut out = Vec::with_capacity(400);
                encode_frame(&mut out, "lead-0190-7000", e, 3);
                out
            },
            BatchSize::SmallInput,
        )
    });
    let mut chunk = Vec::new();
    for i in 0..100 {
        encode_frame(&mut chunk, "lead-0190-7000", sample_event(200, i), i);
    }
    g.throughput(Throughput::Elements(100));
    g.bench_function("decode/100x200B", |b| b.iter(|| decode_frames(&chunk, 1).unwrap()));
    g.finish();
}

fn append(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let dir = tempfile::tempdir_in(std::env::var("CRM_BENCH_DIR").unwrap_or_else(|_| ".".into())).unwrap();
    let store = SledEventStore::open(Config::new(dir.path())).unwrap();
    let mut g = c.benchmark_group("append");
    g.sample_size(10).measurement_time(Duration::from_secs(8));
    for writers in [1u64, 8, 64] {
        // A single writer waits for one barrier per event, so it gets fewer events per iteration.
        let per_writer = if writers == 1 { 200 } else { 4096 / writers };
        let total = per_writer * writers;
        g.throughput(Throughput::Elements(total));
        g.bench_function(format!("durable/{writers} writers"), |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let mut elapsed = Duration::ZERO;
                    for _ in 0..iters {
                        let t = Instant::now();
                        let tasks: Vec<_> = (0..writers)
                            .map(|w| {
                                let store = store.clone();
                                tokio::spawn(async move {
                                    for i in 0..per_writer {
                                        store
                                            .append(
                                                &format!("lead-{w}"),
                                                ExpectedVersion::Any,
                                                vec![sample_event(200, i)],
                                            )
                                            .await
                                            .unwrap();
                                    }
                                })
                            })
                            .collect();
                        for t in tasks {
                            t.await.unwrap();
                        }
                        elapsed += t.elapsed();
                    }
                    elapsed
                })
            })
        });
    }
    g.finish();
    store.close();
}

fn scan(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let dir = tempfile::tempdir_in(std::env::var("CRM_BENCH_DIR").unwrap_or_else(|_| ".".into())).unwrap();
    let store = SledEventStore::open(Config::new(dir.path())).unwrap();
    const N: u64 = 200_000;
    rt.block_on(async {
        let tasks: Vec<_> = (0..64u64)
            .map(|w| {
                let store = store.clone();
                tokio::spawn(async move {
                    for i in 0..N / 64 / 10 {
                        let events = (0..10).map(|k| sample_event(200, i * 10 + k)).collect();
                        store.append(&format!("lead-{w}-{}", i % 50), ExpectedVersion::Any, events).await.unwrap();
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
    });
    let head = store.committed_head();
    let mut g = c.benchmark_group("read_all");
    g.sample_size(10);
    g.throughput(Throughput::Elements(head));
    g.bench_function(format!("scan/{head} events"), |b| {
        b.iter(|| {
            let mut from = 1;
            let mut n = 0;
            loop {
                let batch = store.read_all_blocking(from, 10_000).unwrap();
                let Some(last) = batch.last() else { break };
                from = last.position + 1;
                n += batch.len();
            }
            assert_eq!(n as u64, head);
        })
    });
    g.finish();
    store.close();
}

criterion_group!(benches, codec, append, scan);
criterion_main!(benches);
