//! Garbage in: random bytes for event decoding, frame decoding and the normalisers never
//! panic, and random bytes sent by a raw client to every RPC get a clear error, never a crash.

use std::time::Duration;

use crm_proto::v1 as pb;
use proptest::prelude::*;
use prost::Message;
use rand::{Rng, SeedableRng};
use tonic::Code;

use crate::support::Server;

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn decoding_random_payloads_never_panics(
        ty in prop::sample::select(crm_domain::EVENT_TYPES),
        version in 0u16..4,
        bytes in prop::collection::vec(any::<u8>(), 0..256),
    ) {
        let _ = crm_domain::Event::decode(ty, version, &bytes);
    }

    #[test]
    fn decoding_random_frames_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..512), first in 1u64..1000) {
        let _ = crm_eventlog::bench_support::decode_frames(&bytes, first);
    }

    #[test]
    fn normalisers_never_panic(s in "\\PC{0,64}") {
        let _ = crm_domain::normalize_phone(&s);
        let _ = crm_domain::normalize_uscc(&s);
        let _ = crm_domain::normalize_company(&s);
        let _ = crm_domain::normalize_email(&s);
        let _ = crm_domain::normalize_person_name(&s);
    }
}

/// Valid frames whose bytes are then damaged are reported, never decoded as garbage.
#[test]
fn damaged_valid_frames_are_errors_not_garbage() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    for _ in 0..2000 {
        let mut chunk = Vec::new();
        let event = crm_eventlog::NewEvent {
            id: uuid::Uuid::now_v7(),
            event_type: "LeadCaptured".into(),
            schema_version: 2,
            metadata: Default::default(),
            payload: (0..rng.gen_range(0..300)).map(|_| rng.gen()).collect(),
        };
        crm_eventlog::bench_support::encode_frame(&mut chunk, "lead-x", event.clone(), 0);
        let i = rng.gen_range(0..chunk.len());
        chunk[i] ^= 1 << rng.gen_range(0..8);
        match crm_eventlog::bench_support::decode_frames(&chunk, 1) {
            Err(crm_eventlog::Error::Corruption { position: 1, .. }) => {}
            other => panic!("flipped byte {i} not reported: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_bytes_to_every_rpc_get_clear_errors_and_the_server_stays_up() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let set = prost_types::FileDescriptorSet::decode(crm_proto::FILE_DESCRIPTOR_SET).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    let mut calls = 0;
    for file in &set.file {
        for service in &file.service {
            for method in &service.method {
                let path = format!("/{}.{}/{}", file.package(), service.name(), method.name());
                for _ in 0..8 {
                    let len = rng.gen_range(1..200);
                    let body: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
                    let (code, message) =
                        crate::auth::call_raw(server.channel().await, &path, method.server_streaming(), body).await;
                    assert!(
                        !matches!(code, Code::Internal | Code::Unknown | Code::Unimplemented),
                        "{path}: {code:?} {message}"
                    );
                    calls += 1;
                }
            }
        }
    }
    assert!(calls > 200);
    // Still up and serving.
    let mut log = pb::event_log_client::EventLogClient::new(server.channel().await);
    tokio::time::timeout(Duration::from_secs(5), log.get_head(pb::GetHeadRequest {})).await.unwrap().unwrap();
}
