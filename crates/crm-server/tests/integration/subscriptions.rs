//! Persistent subscriptions against the real binary: a consumer killed mid-stream resumes
//! from the server-side checkpoint, losing nothing, seeing again only what it had not acked.

use std::collections::BTreeSet;

use crm_proto::v1 as pb;
use pb::event_log_client::EventLogClient;
use pb::intake_client::IntakeClient;
use pb::subscriptions_client::SubscriptionsClient;
use tokio_stream::StreamExt;

use crate::support::Server;

const T0: i64 = 1_772_000_000_000_000;

/// Writes `n` customers through the intake (`n` CustomerCreated events plus batch records).
async fn customers(server: &Server, from: usize, n: usize) {
    let mut intake = IntakeClient::new(server.channel().await);
    for chunk in (from..from + n).collect::<Vec<_>>().chunks(500) {
        intake
            .sync_records(pb::SyncRecordsRequest {
                source: "erp".into(),
                records: chunk
                    .iter()
                    .map(|i| pb::SyncRecord {
                        external_id: format!("KH{i:06}"),
                        modified_at_micros: T0,
                        fields: vec![pb::SyncField { name: "name".into(), value: Some(format!("示例客户{i}")) }],
                    })
                    .collect(),
                ..Default::default()
            })
            .await
            .unwrap();
    }
}

async fn created_positions(server: &Server) -> BTreeSet<u64> {
    let mut log = EventLogClient::new(server.channel().await);
    let mut out = BTreeSet::new();
    let mut from = 1;
    loop {
        let events =
            log.read_all(pb::ReadAllRequest { from_position: from, limit: 1000 }).await.unwrap().into_inner().events;
        let Some(last) = events.last() else { break };
        from = last.position + 1;
        out.extend(events.iter().filter(|e| e.event_type == "CustomerCreated").map(|e| e.position));
    }
    out
}

#[tokio::test]
async fn a_consumer_killed_mid_stream_resumes_from_its_checkpoint_with_nothing_lost() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path());
    customers(&server, 0, 1500).await;
    let mut subs = SubscriptionsClient::new(server.channel().await);
    subs.create_group(pb::CreateGroupRequest {
        settings: Some(pb::GroupSettings {
            group: "erp-export".into(),
            event_types: vec!["CustomerCreated".into()],
            stream_prefixes: vec!["customer-".into()],
            max_retries: 2,
            max_in_flight: 400,
            ..Default::default()
        }),
    })
    .await
    .unwrap();

    // Consumer A: acks what it processed, in order, then dies with 150 events unacked.
    let mut acked = BTreeSet::new();
    let mut unacked = BTreeSet::new();
    {
        let mut stream = SubscriptionsClient::new(server.channel().await)
            .subscribe(pb::SubscribeRequest { group: "erp-export".into(), batch_size: 50, render_json: false })
            .await
            .unwrap()
            .into_inner();
        while acked.len() < 700 {
            let batch = stream.next().await.unwrap().unwrap();
            let positions: Vec<u64> = batch.events.iter().map(|e| e.position).collect();
            assert!(batch.events.iter().all(|e| e.event_type == "CustomerCreated"));
            subs.ack(pb::AckRequest { group: "erp-export".into(), positions: positions.clone() }).await.unwrap();
            acked.extend(positions);
        }
        for _ in 0..3 {
            let batch = stream.next().await.unwrap().unwrap();
            unacked.extend(batch.events.iter().map(|e| e.position));
        }
        // Killed: the stream and its connection are dropped here.
    }
    assert_eq!(unacked.len(), 150);
    let groups = subs.list_groups(pb::ListGroupsRequest {}).await.unwrap().into_inner().groups;
    let checkpoint = groups[0].checkpoint;
    assert_eq!(checkpoint, *acked.last().unwrap(), "every acked event is below the checkpoint, in order");

    // More events arrive while nobody listens.
    customers(&server, 1500, 500).await;
    let expected = created_positions(&server).await;
    assert_eq!(expected.len(), 2000);

    // Consumer B resumes: everything not acked arrives, duplicates only from A's unacked window.
    let mut received = Vec::new();
    let mut stream = SubscriptionsClient::new(server.channel().await)
        .subscribe(pb::SubscribeRequest { group: "erp-export".into(), batch_size: 100, render_json: false })
        .await
        .unwrap()
        .into_inner();
    let mut nacked_once = None;
    let mut parked_done = false;
    loop {
        let batch = stream.next().await.unwrap().unwrap();
        let mut positions = Vec::new();
        for (e, attempt) in batch.events.iter().zip(&batch.attempts) {
            received.push(e.position);
            // One poison event: nacked until it is parked (max_retries = 2).
            if nacked_once.is_none() {
                nacked_once = Some(e.position);
            }
            if nacked_once == Some(e.position) {
                let r = subs
                    .nack(pb::NackRequest {
                        group: "erp-export".into(),
                        positions: vec![e.position],
                        action: pb::NackAction::Retry as i32,
                        reason: "downstream rejected".into(),
                    })
                    .await
                    .unwrap()
                    .into_inner();
                assert_eq!(r.parked.is_empty(), *attempt < 2, "attempt {attempt}");
                parked_done |= !r.parked.is_empty();
            } else {
                positions.push(e.position);
            }
        }
        subs.ack(pb::AckRequest { group: "erp-export".into(), positions }).await.unwrap();
        let delivered: BTreeSet<u64> = acked.iter().chain(&received).copied().collect();
        if parked_done && delivered.is_superset(&expected) {
            break;
        }
    }
    drop(stream);
    let delivered: BTreeSet<u64> = acked.iter().chain(&received).copied().collect();
    assert_eq!(delivered, expected, "no event lost");
    assert!(received.iter().all(|p| *p > checkpoint), "nothing at or below the checkpoint came again");
    let dupes: BTreeSet<u64> = received.iter().copied().filter(|p| acked.contains(p) || unacked.contains(p)).collect();
    assert!(dupes.is_subset(&unacked), "duplicates only within the unacknowledged window");
    assert!(!dupes.is_empty());

    // The poison event is parked, listed, and can be replayed.
    let parked = subs
        .list_parked(pb::ListParkedRequest { group: "erp-export".into(), limit: 0 })
        .await
        .unwrap()
        .into_inner()
        .events;
    assert_eq!(parked.len(), 1);
    assert_eq!(Some(parked[0].position), nacked_once);
    assert_eq!((parked[0].attempts, parked[0].reason.as_str()), (2, "downstream rejected"));

    // The checkpoint survives a restart.
    let before = subs.list_groups(pb::ListGroupsRequest {}).await.unwrap().into_inner().groups[0].checkpoint;
    assert!(before >= *expected.last().unwrap(), "{before}");
    drop(subs);
    server.terminate().await;
    let server = Server::start(dir.path());
    let mut subs = SubscriptionsClient::new(server.channel().await);
    let after = subs.list_groups(pb::ListGroupsRequest {}).await.unwrap().into_inner().groups;
    assert_eq!(after[0].checkpoint, before);
    assert_eq!(after[0].parked, 1);

    let replayed =
        subs.replay_parked(pb::ReplayParkedRequest { group: "erp-export".into() }).await.unwrap().into_inner();
    assert_eq!(replayed.replayed, 1);
    let mut stream = subs
        .subscribe(pb::SubscribeRequest { group: "erp-export".into(), batch_size: 10, render_json: true })
        .await
        .unwrap()
        .into_inner();
    let batch = stream.next().await.unwrap().unwrap();
    assert_eq!(batch.events.len(), 1);
    assert_eq!(Some(batch.events[0].position), nacked_once);
    assert!(batch.events[0].payload_json.contains("示例客户"));
    subs.ack(pb::AckRequest { group: "erp-export".into(), positions: vec![batch.events[0].position] }).await.unwrap();
    let parked = subs
        .list_parked(pb::ListParkedRequest { group: "erp-export".into(), limit: 0 })
        .await
        .unwrap()
        .into_inner()
        .events;
    assert!(parked.is_empty());
}

#[tokio::test]
async fn an_event_never_acked_is_delivered_again_after_the_ack_timeout_then_parked() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    customers(&server, 0, 3).await;
    let expected = created_positions(&server).await;
    let mut subs = SubscriptionsClient::new(server.channel().await);

    let too_long = subs
        .create_group(pb::CreateGroupRequest {
            settings: Some(pb::GroupSettings {
                group: "slow".into(),
                ack_timeout_ms: 100_000_000,
                ..Default::default()
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(too_long.code(), tonic::Code::InvalidArgument);
    assert!(too_long.message().contains("settings.ack_timeout_ms"), "{}", too_long.message());

    let timeout = std::time::Duration::from_millis(300);
    subs.create_group(pb::CreateGroupRequest {
        settings: Some(pb::GroupSettings {
            group: "forgetful".into(),
            event_types: vec!["CustomerCreated".into()],
            max_retries: 2,
            ack_timeout_ms: timeout.as_millis() as u32,
            ..Default::default()
        }),
    })
    .await
    .unwrap();
    let groups = subs.list_groups(pb::ListGroupsRequest {}).await.unwrap().into_inner().groups;
    assert_eq!(groups.len(), 1, "the refused group was not created");
    assert_eq!(groups[0].settings.as_ref().unwrap().ack_timeout_ms, 300);

    // A consumer that receives but never acks or nacks.
    let mut consumer = SubscriptionsClient::new(server.channel().await);
    let subscribed_at = std::time::Instant::now();
    let mut stream = consumer
        .subscribe(pb::SubscribeRequest { group: "forgetful".into(), batch_size: 10, render_json: false })
        .await
        .unwrap()
        .into_inner();
    let first = stream.next().await.unwrap().unwrap();
    let positions: BTreeSet<u64> = first.events.iter().map(|e| e.position).collect();
    assert_eq!(positions, expected);
    assert_eq!(first.attempts, vec![1, 1, 1]);

    // The same events come again once the timeout has passed: the second attempt.
    let again = stream.next().await.unwrap().unwrap();
    assert!(subscribed_at.elapsed() >= timeout, "not before the timeout: {:?}", subscribed_at.elapsed());
    assert_eq!(again.events.iter().map(|e| e.position).collect::<BTreeSet<_>>(), expected);
    assert_eq!(again.attempts, vec![2, 2, 2]);
    assert!(again.checkpoint < *expected.first().unwrap(), "unacked events hold the checkpoint");

    // Still not acked: with max_retries = 2 they are parked, listed with the reason.
    let mut parked = Vec::new();
    for _ in 0..100 {
        parked = subs
            .list_parked(pb::ListParkedRequest { group: "forgetful".into(), limit: 0 })
            .await
            .unwrap()
            .into_inner()
            .events;
        if parked.len() == expected.len() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(parked.iter().map(|p| p.position).collect::<BTreeSet<_>>(), expected);
    assert!(parked.iter().all(|p| p.attempts == 2 && p.reason.contains("ack timeout")), "{parked:?}");
    let group = &subs.list_groups(pb::ListGroupsRequest {}).await.unwrap().into_inner().groups[0];
    assert_eq!((group.in_flight, group.parked), (0, 3));
    assert!(group.checkpoint >= *expected.last().unwrap(), "parking frees the checkpoint: {}", group.checkpoint);

    // Delivery goes on with new events only: the parked ones do not come a third time.
    customers(&server, 3, 1).await;
    let next = stream.next().await.unwrap().unwrap();
    assert_eq!(next.attempts, vec![1]);
    assert!(!expected.contains(&next.events[0].position));
    assert_eq!(next.events[0].event_type, "CustomerCreated");
}
