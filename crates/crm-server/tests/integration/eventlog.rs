use std::time::Duration;

use crm_eventlog::{EventStore, ExpectedVersion, Metadata, NewEvent, SledEventStore};
use crm_proto::v1 as pb;
use pb::event_log_client::EventLogClient;
use tokio_stream::StreamExt;

use crate::support::Server;

async fn prepopulate(dir: &std::path::Path, n: u64) {
    let store = SledEventStore::open(crm_eventlog::Config::new(dir.join("eventlog"))).unwrap();
    for i in 0..n {
        let event = NewEvent {
            id: uuid::Uuid::now_v7(),
            event_type: "LeadCaptured".into(),
            schema_version: 1,
            metadata: Metadata {
                actor: "user-1".into(),
                correlation_id: uuid::Uuid::now_v7(),
                causation_id: None,
                source: "exhibition_scan".into(),
            },
            payload: format!("lead {i}").into_bytes(),
        };
        store.append(&format!("lead-{}", i % 10), ExpectedVersion::Any, vec![event]).await.unwrap();
    }
    store.close();
}

#[tokio::test]
async fn health_reflection_read_and_subscribe_against_the_real_binary() {
    let dir = tempfile::tempdir().unwrap();
    prepopulate(dir.path(), 50).await;
    let mut server = Server::start(dir.path());
    let channel = server.channel().await;

    // Health: SERVING overall and for the EventLog service.
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    for service in ["", "crm.v1.EventLog"] {
        let r = health.check(tonic_health::pb::HealthCheckRequest { service: service.into() }).await.unwrap();
        assert_eq!(r.into_inner().status(), tonic_health::pb::health_check_response::ServingStatus::Serving);
    }

    // Reflection lists the service.
    use tonic_reflection::pb::v1::{
        server_reflection_client::ServerReflectionClient, server_reflection_request::MessageRequest,
        server_reflection_response::MessageResponse, ServerReflectionRequest,
    };
    let mut reflection = ServerReflectionClient::new(channel.clone());
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses =
        reflection.server_reflection_info(tokio_stream::iter(vec![request])).await.unwrap().into_inner();
    let response = responses.next().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("unexpected reflection answer")
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(names.contains(&"crm.v1.EventLog".to_owned()), "{names:?}");

    // ReadAll, GetHead, ReadStream.
    let mut log = EventLogClient::new(channel.clone());
    let all = log.read_all(pb::ReadAllRequest { from_position: 0, limit: 1000 }).await.unwrap().into_inner();
    // The 50 prepopulated events, then the bootstrap token the server issued on first start.
    assert_eq!(all.head, 51);
    assert_eq!(all.events.iter().map(|e| e.position).collect::<Vec<_>>(), (1..=51).collect::<Vec<_>>());
    assert_eq!((all.events[50].stream.as_str(), all.events[50].event_type.as_str()), ("tokens", "TokenIssued"));
    assert!(all.events[50].payload_json.contains("\"role\":\"administrator\""), "{}", all.events[50].payload_json);
    assert!(!all.events[50].payload_json.contains("hash"));
    assert_eq!(all.events[7].payload, b"lead 7");
    assert_eq!(all.events[7].metadata.as_ref().unwrap().source, "exhibition_scan");
    assert_eq!(all.next_position, 52);
    let page = log.read_all(pb::ReadAllRequest { from_position: 45, limit: 3 }).await.unwrap().into_inner();
    assert_eq!(page.events.iter().map(|e| e.position).collect::<Vec<_>>(), vec![45, 46, 47]);
    assert_eq!(log.get_head(pb::GetHeadRequest {}).await.unwrap().into_inner().head, 51);
    let back = log
        .read_stream(pb::ReadStreamRequest {
            stream: "lead-3".into(),
            from_version: None,
            direction: pb::ReadDirection::Backwards as i32,
            limit: 2,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(back.stream_version, Some(4));
    assert_eq!(back.events.iter().map(|e| e.version).collect::<Vec<_>>(), vec![4, 3]);
    assert_eq!(back.events[0].payload, b"lead 43");

    // Bad input names the field.
    let err = log.read_all(pb::ReadAllRequest { from_position: 1, limit: 5000 }).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("`limit`"), "{}", err.message());
    let err = log.read_stream(pb::ReadStreamRequest::default()).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("`stream`"), "{}", err.message());

    // SubscribeAll catches up from the middle.
    let mut sub = log.subscribe_all(pb::SubscribeAllRequest { from_position: 40 }).await.unwrap().into_inner();
    for expected in 40..=51 {
        let e = tokio::time::timeout(Duration::from_secs(10), sub.next()).await.unwrap().unwrap().unwrap();
        assert_eq!(e.position, expected);
    }

    // ...then goes live: commands issued through the server arrive in order, decoded.
    let mut commands = pb::command_service_client::CommandServiceClient::new(channel.clone());
    let mut written = Vec::new();
    for i in 0..3 {
        let r = commands
            .capture_lead(pb::CaptureLeadRequest {
                options: Some(pb::CommandOptions { actor: "user-live".into(), ..Default::default() }),
                company: format!("北京测试{i}科技有限公司"),
                phone: format!("+86 138 0013 800{i}"),
                channel: pb::LeadChannel::WebForm as i32,
                channel_ref: "form-live".into(),
                source: "web_form".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        written.push(r.position);
    }
    let mut live = Vec::new();
    while live.len() < 3 {
        let e = tokio::time::timeout(Duration::from_secs(10), sub.next()).await.unwrap().unwrap().unwrap();
        assert_eq!(e.position, 52 + live.len() as u64, "no gap, no duplicate at the switch");
        if e.event_type == "LeadCaptured" {
            assert!(e.payload_json.contains("form-live"), "{}", e.payload_json);
            live.push(e.position);
        }
    }
    assert_eq!(live.last(), written.last());

    // SIGTERM: the open subscription ends and the process exits cleanly.
    let status = server.terminate().await;
    assert!(status.success(), "{status:?}");
    let end = tokio::time::timeout(Duration::from_secs(10), sub.next()).await.unwrap();
    assert!(!matches!(end, Some(Ok(_))), "no event after shutdown: {end:?}");

    // A restart serves the same log, with everything acknowledged before the shutdown.
    let server = Server::start(dir.path());
    let mut log = EventLogClient::new(server.channel().await);
    assert_eq!(log.get_head(pb::GetHeadRequest {}).await.unwrap().into_inner().head, *written.last().unwrap());
}
