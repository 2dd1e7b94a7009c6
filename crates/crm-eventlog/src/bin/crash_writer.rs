//! Test helper for the crash test: appends forever and prints every acknowledged append as
//! `<request> <stream> <first_position> <last_position> <count>` on stdout. The test kills it
//! with SIGKILL at random moments and checks the log afterwards.
//!
//! Usage: `crm-eventlog-crash-writer <data-dir> <writers> <start-request>`

use std::io::Write;

use crm_eventlog::{Config, EventStore, ExpectedVersion, Metadata, NewEvent, SledEventStore};

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let dir = args.next().expect("data dir");
    let writers: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(8);
    let start: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(0);
    let store = SledEventStore::open(Config::new(dir)).expect("open store");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    for w in 0..writers {
        let store = store.clone();
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut n = 0u64;
            loop {
                // Request ids are unique across restarts: start + writer + n * writers.
                let request = start + w + n * writers;
                n += 1;
                let count = 1 + (request % 4) as usize;
                let stream = format!("crash-{}", request % 13);
                let events = (0..count)
                    .map(|i| NewEvent {
                        id: uuid::Uuid::now_v7(),
                        event_type: "CrashTested".into(),
                        schema_version: 1,
                        metadata: Metadata { actor: format!("writer-{w}"), ..Metadata::default() },
                        payload: format!("{request}:{i}:{count}:{}", "x".repeat(150)).into_bytes(),
                    })
                    .collect();
                match store.append(&stream, ExpectedVersion::Any, events).await {
                    Ok(r) => {
                        let line = format!("{request} {stream} {} {} {count}", r.first_position, r.last_position);
                        if tx.send(line).is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        eprintln!("append failed: {e}");
                        return;
                    }
                }
            }
        });
    }
    drop(tx);
    let mut out = std::io::stdout().lock();
    while let Some(line) = rx.recv().await {
        // Printed only after the append was acknowledged, so every printed line is a promise.
        writeln!(out, "{line}").expect("stdout");
        out.flush().expect("stdout");
    }
}
