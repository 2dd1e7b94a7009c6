//! SIGKILL a writer process at random moments; every acknowledged append must survive intact,
//! positions must stay gapless, and no append may be partly present.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Duration;

use rand::Rng;

#[derive(Debug)]
struct Ack {
    stream: String,
    first: u64,
    last: u64,
    count: u64,
}

#[test]
fn every_acknowledged_append_survives_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = rand::thread_rng();
    let mut acked: BTreeMap<u64, Ack> = BTreeMap::new();
    let rounds = 20;
    for round in 0..rounds {
        let mut child = Command::new(env!("CARGO_BIN_EXE_crm-eventlog-crash-writer"))
            .arg(dir.path())
            .arg("8")
            .arg((round as u64 * 1_000_000_000).to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn crash writer");
        // Wait until it acknowledges its first append (opening the store may be slow on a
        // loaded machine), then kill it at a random moment while it is appending.
        let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut first = String::new();
        std::io::BufRead::read_line(&mut stdout, &mut first).unwrap();
        assert!(!first.is_empty(), "round {round}: writer exited before its first acknowledgement");
        let reader = std::thread::spawn(move || {
            let mut s = String::new();
            stdout.read_to_string(&mut s).unwrap();
            s
        });
        std::thread::sleep(Duration::from_millis(rng.gen_range(10..400)));
        child.kill().expect("SIGKILL");
        child.wait().unwrap();
        let out = first + &reader.join().unwrap();
        let mut lines = 0;
        for line in out.lines() {
            let f: Vec<&str> = line.split(' ').collect();
            if f.len() != 5 {
                continue; // a line cut by the kill was never a complete acknowledgement
            }
            let ack = Ack {
                stream: f[1].to_owned(),
                first: f[2].parse().unwrap(),
                last: f[3].parse().unwrap(),
                count: f[4].parse().unwrap(),
            };
            acked.insert(f[0].parse().unwrap(), ack);
            lines += 1;
        }
        assert!(lines > 0, "round {round}: writer acknowledged nothing");
        verify(dir.path(), &acked, round);
    }
    assert!(acked.len() > 100, "only {} appends were acknowledged over {rounds} rounds", acked.len());
}

fn verify(dir: &std::path::Path, acked: &BTreeMap<u64, Ack>, round: usize) {
    let store = crm_eventlog::SledEventStore::open(crm_eventlog::Config::new(dir)).expect("reopen after SIGKILL");
    let head = store.committed_head();
    let mut all = Vec::new();
    let mut from = 1;
    loop {
        let batch = store.read_all_blocking(from, 10_000).expect("every record intact");
        let Some(last) = batch.last() else { break };
        from = last.position + 1;
        all.extend(batch);
    }
    assert_eq!(all.len() as u64, head, "round {round}: read_all returns every position up to the head");
    for (i, e) in all.iter().enumerate() {
        assert_eq!(e.position, i as u64 + 1, "round {round}: positions are gapless");
    }
    // Group the stored events by the request that appended them.
    let mut by_request: HashMap<u64, Vec<&crm_eventlog::RecordedEvent>> = HashMap::new();
    for e in &all {
        let text = std::str::from_utf8(&e.payload).unwrap();
        let request: u64 = text.split(':').next().unwrap().parse().unwrap();
        by_request.entry(request).or_default().push(e);
    }
    for (request, events) in &by_request {
        let count: usize = std::str::from_utf8(&events[0].payload).unwrap().split(':').nth(2).unwrap().parse().unwrap();
        assert_eq!(events.len(), count, "round {round}: request {request} is partly present");
        assert!(events.windows(2).all(|w| w[1].position == w[0].position + 1 && w[1].version == w[0].version + 1));
    }
    for (request, ack) in acked {
        let events =
            by_request.get(request).unwrap_or_else(|| panic!("round {round}: acknowledged request {request} lost"));
        assert_eq!(events[0].position, ack.first);
        assert_eq!(events[events.len() - 1].position, ack.last);
        assert_eq!(events.len() as u64, ack.count);
        assert_eq!(events[0].stream, ack.stream);
    }
    let chain = store.verify_log(|_, _| {}).expect("verify");
    assert_eq!(chain.first_broken, None, "round {round}: hash chain intact after SIGKILL");
    assert_eq!(chain.verified, head);
    // Stream versions are gapless too.
    let mut versions: HashMap<&str, u64> = HashMap::new();
    for e in &all {
        let next = versions.entry(e.stream.as_str()).or_insert(0);
        assert_eq!(e.version, *next, "round {round}: stream {} version gap", e.stream);
        *next += 1;
    }
    store.close();
}
