//! Shared helpers for the criterion benches and the load generators.

use crm_eventlog::{Metadata, NewEvent};

/// An event with a payload of `payload_len` bytes, shaped like a small CRM event.
pub fn sample_event(payload_len: usize, n: u64) -> NewEvent {
    let mut payload =
        format!("{{\"lead\":{n},\"company\":\"北京某某科技有限公司\",\"source\":\"exhibition\"}}").into_bytes();
    payload.resize(payload_len, b' ');
    NewEvent {
        id: uuid::Uuid::now_v7(),
        event_type: "LeadCaptured".into(),
        schema_version: 1,
        metadata: Metadata {
            actor: "user-42".into(),
            correlation_id: uuid::Uuid::now_v7(),
            causation_id: None,
            source: "exhibition_scan".into(),
        },
        payload,
    }
}

/// Raw durability baseline on the same disk: append 4 KiB to a file and `fdatasync` it,
/// `iterations` times. Returns the latency of each iteration in microseconds.
pub fn raw_fdatasync_latencies(dir: &std::path::Path, iterations: usize) -> std::io::Result<Vec<u64>> {
    use std::io::Write;
    let path = dir.join("fdatasync-baseline.tmp");
    let mut f = std::fs::OpenOptions::new().create(true).truncate(true).write(true).open(&path)?;
    let block = vec![0x5au8; 4096];
    let mut out = Vec::with_capacity(iterations);
    for _ in 0..iterations {
        let t = std::time::Instant::now();
        f.write_all(&block)?;
        f.sync_data()?;
        out.push(t.elapsed().as_micros() as u64);
    }
    drop(f);
    std::fs::remove_file(&path)?;
    Ok(out)
}
