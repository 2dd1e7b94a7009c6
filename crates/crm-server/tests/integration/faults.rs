//! Faults against the real binary: kill -9 under a concurrent command load (20 rounds), and a
//! full disk.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crm_eventlog::{Config, SledEventStore};
use crm_proto::v1 as pb;
use pb::command_service_client::CommandServiceClient;
use rand::Rng;
use tonic::Code;

use crate::support::{AuthChannel, Server};

fn capture(key: &str, i: u64) -> pb::CaptureLeadRequest {
    pb::CaptureLeadRequest {
        options: Some(pb::CommandOptions {
            idempotency_key: key.to_owned(),
            actor: "loadgen".into(),
            ..Default::default()
        }),
        company: format!("上海测试{i}贸易有限公司"),
        phone: format!("+86 139 {:04} {:04}", 1000 + i % 9000, 1000 + (i / 9000) % 9000),
        channel: pb::LeadChannel::Api as i32,
        channel_ref: "fault-test".into(),
        source: "api".into(),
        ..Default::default()
    }
}

/// What a client was told: the command with this key was durably applied at this position.
#[derive(Debug, Clone)]
struct Ack {
    stream: String,
    position: u64,
}

async fn load(channel: AuthChannel, writer: u64, round: u64, acked: tokio::sync::mpsc::UnboundedSender<(String, Ack)>) {
    let mut client = CommandServiceClient::new(channel);
    for n in 0.. {
        let key = format!("r{round}-w{writer}-n{n}");
        match client.capture_lead(capture(&key, round * 1_000_000 + writer * 10_000 + n)).await {
            Ok(r) => {
                let r = r.into_inner();
                if acked.send((key, Ack { stream: r.stream, position: r.position })).is_err() {
                    return;
                }
            }
            Err(_) => return, // the server was killed
        }
    }
}

/// Opens the stopped server's log and checks: every acknowledged command is there at its
/// position, no command was applied twice, positions are gapless, the hash chain is intact.
fn verify_offline(data: &Path, acked: &HashMap<String, Ack>, round: u64) {
    let store = SledEventStore::open(Config::new(data.join("eventlog"))).expect("reopen after kill -9");
    let head = store.committed_head();
    let all = store.read_all_blocking(1, 10_000_000).unwrap();
    assert_eq!(all.len() as u64, head, "round {round}");
    assert!(all.iter().enumerate().all(|(i, e)| e.position == i as u64 + 1), "round {round}: gapless");
    for (key, ack) in acked {
        let e = &all[ack.position as usize - 1];
        assert_eq!(e.stream, ack.stream, "round {round}: command {key} at its acknowledged position");
    }
    let ids: HashSet<_> = all.iter().map(|e| e.id).collect();
    assert_eq!(ids.len(), all.len(), "round {round}: an event id appears twice");
    let mut captured_per_lead: HashMap<&str, usize> = HashMap::new();
    for e in all.iter().filter(|e| e.event_type == "LeadCaptured") {
        *captured_per_lead.entry(e.stream.as_str()).or_default() += 1;
    }
    assert!(captured_per_lead.values().all(|n| *n == 1), "round {round}: a lead was captured twice");
    let chain = store.verify_log(|_, _| {}).unwrap();
    assert_eq!(chain.first_broken, None, "round {round}");
    store.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_command_load_loses_nothing_acknowledged_twenty_rounds() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = rand::thread_rng();
    let mut acked: HashMap<String, Ack> = HashMap::new();
    let mut total = 0;
    for round in 0..20u64 {
        let mut server = Server::start(dir.path());
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut writers = Vec::new();
        for w in 0..8 {
            writers.push(tokio::spawn(load(server.channel().await, w, round, tx.clone())));
        }
        drop(tx);
        // Wait for the first acknowledgement, then kill at a random moment.
        let first =
            tokio::time::timeout(Duration::from_secs(30), rx.recv()).await.unwrap().expect("an acknowledgement");
        acked.insert(first.0, first.1);
        tokio::time::sleep(Duration::from_millis(rng.gen_range(20..400))).await;
        server.child.kill().unwrap();
        server.child.wait().unwrap();
        for w in writers {
            w.await.unwrap();
        }
        while let Some((key, ack)) = rx.recv().await {
            acked.insert(key, ack);
        }
        total = acked.len();
        verify_offline(dir.path(), &acked, round);
    }
    assert!(total > 100, "only {total} commands acknowledged over 20 rounds");

    // A client that retries its unacknowledged commands with the same idempotency keys after a
    // crash gets the original result, never a second lead.
    let server = Server::start(dir.path());
    let mut client = CommandServiceClient::new(server.channel().await);
    for (key, ack) in acked.iter().take(20) {
        let n: u64 = key.rsplit('n').next().unwrap().parse().unwrap();
        let round: u64 = key[1..key.find('-').unwrap()].parse().unwrap();
        let writer: u64 = key.split('-').nth(1).unwrap()[1..].parse().unwrap();
        let r = client.capture_lead(capture(key, round * 1_000_000 + writer * 10_000 + n)).await.unwrap().into_inner();
        assert!(r.deduplicated, "{key}");
        assert_eq!(r.stream, ack.stream);
    }

    // The server's own verifications agree: the log's hash chain is intact, and every read
    // model, once caught up, equals a rebuild from the log (nothing applied twice or skipped).
    let mut audit = pb::audit_client::AuditClient::new(server.channel().await);
    let log = audit.verify_log(pb::VerifyLogRequest {}).await.unwrap().into_inner();
    assert!(log.intact, "{log:?}");
    assert!(log.verified >= acked.len() as u64);
    let mut admin = pb::admin_client::AdminClient::new(server.channel().await);
    let head = log.head;
    let deadline = Instant::now() + Duration::from_secs(60);
    let projections = loop {
        let list = admin.list_projections(pb::ListProjectionsRequest {}).await.unwrap().into_inner().projections;
        if list.iter().all(|p| p.position >= head) || Instant::now() > deadline {
            break list;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(projections.len() >= 3, "{projections:?}");
    for p in projections {
        assert_eq!(p.state(), pb::ProjectionState::Live, "{p:?}");
        let v =
            admin.verify_projection(pb::VerifyProjectionRequest { name: p.name.clone() }).await.unwrap().into_inner();
        assert_eq!(v.total_differences, 0, "{}: {:?}", p.name, v.differences);
    }
    drop(server);
    verify_offline(dir.path(), &acked, 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_gives_unavailable_the_server_stays_up_and_recovers() {
    let mount_point = tempfile::tempdir().unwrap();
    let status = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64m", "tmpfs"])
        .arg(mount_point.path())
        .status()
        .unwrap();
    assert!(status.success(), "mounting a tmpfs needs root (CI and the dev machines run as root)");
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg("-l").arg(self.0).status();
        }
    }
    let _unmount = Unmount(mount_point.path());
    let data = mount_point.path().join("data");
    let server = Server::start(&data);
    let mut client = CommandServiceClient::new(server.channel().await);
    let mut acked = HashMap::new();
    for i in 0..20 {
        let key = format!("before-{i}");
        let r = client.capture_lead(capture(&key, i)).await.unwrap().into_inner();
        acked.insert(key, Ack { stream: r.stream, position: r.position });
    }

    // Fill the disk.
    {
        use std::io::Write;
        let mut f = std::fs::File::create(mount_point.path().join("filler")).unwrap();
        let block = vec![0u8; 256 * 1024];
        while f.write_all(&block).is_ok() {}
        let _ = f.sync_all();
    }
    let mut refused = None;
    for i in 0..20_000u64 {
        let key = format!("filling-{i}");
        let mut request = capture(&key, 100 + i);
        request.custom_attributes.insert("notes".into(), "备注".repeat(1000));
        match client.capture_lead(request).await {
            Ok(r) => {
                let r = r.into_inner();
                acked.insert(key, Ack { stream: r.stream, position: r.position });
            }
            Err(s) => {
                refused = Some(s);
                break;
            }
        }
    }
    let refused = refused.expect("a full disk refuses commands");
    assert_eq!(refused.code(), Code::Unavailable, "{}", refused.message());

    // The server stays up: health and reads answer.
    let mut health = tonic_health::pb::health_client::HealthClient::new(server.raw_channel().await);
    health.check(tonic_health::pb::HealthCheckRequest { service: String::new() }).await.unwrap();
    let mut log = pb::event_log_client::EventLogClient::new(server.channel().await);
    let head = log.get_head(pb::GetHeadRequest {}).await.unwrap().into_inner().head;
    assert!(head >= acked.values().map(|a| a.position).max().unwrap());

    // Space returns: commands flow again without a restart.
    std::fs::remove_file(mount_point.path().join("filler")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match client.capture_lead(capture("after", 99_999)).await {
            Ok(r) => {
                let r = r.into_inner();
                acked.insert("after".into(), Ack { stream: r.stream, position: r.position });
                break;
            }
            Err(s) if s.code() == Code::Unavailable && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(s) => panic!("the server did not recover: {s:?}"),
        }
    }
    drop(server);
    verify_offline(&data, &acked, 0);
}
