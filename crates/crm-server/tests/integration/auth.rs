//! Authentication, the authorisation matrix over every RPC of the API, denials recorded for
//! the auditor, limits, and TLS, against the real binary.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::{Buf, BufMut};
use crm_proto::v1 as pb;
use prost::Message;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::Code;

use crate::support::Server;

/// Sends and receives raw protobuf bytes, so that any method can be called by its path.
#[derive(Default, Clone)]
struct Raw;

impl Codec for Raw {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = Raw;
    type Decoder = Raw;
    fn encoder(&mut self) -> Raw {
        Raw
    }
    fn decoder(&mut self) -> Raw {
        Raw
    }
}

impl Encoder for Raw {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Self::Error> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for Raw {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Self::Error> {
        Ok(Some(src.copy_to_bytes(src.remaining()).to_vec()))
    }
}

/// Every method of the `crm.v1` API: (path, server streaming).
fn all_methods() -> Vec<(String, bool)> {
    let set = prost_types::FileDescriptorSet::decode(crm_proto::FILE_DESCRIPTOR_SET).unwrap();
    let mut out = Vec::new();
    for file in set.file {
        let package = file.package().to_owned();
        for service in file.service {
            for method in &service.method {
                out.push((format!("/{package}.{}/{}", service.name(), method.name()), method.server_streaming()));
            }
        }
    }
    out
}

/// Calls `path` with an empty request message; returns the status code of the answer.
async fn call(channel: crate::support::AuthChannel, path: &str, streaming: bool) -> (Code, String) {
    call_raw(channel, path, streaming, Vec::new()).await
}

/// Calls `path` with `body` as the encoded request message.
pub(crate) async fn call_raw(
    channel: crate::support::AuthChannel,
    path: &str,
    streaming: bool,
    body: Vec<u8>,
) -> (Code, String) {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let path = http::uri::PathAndQuery::try_from(path.to_owned()).unwrap();
    let mut request = tonic::Request::new(body);
    request.set_timeout(Duration::from_secs(5));
    let result = if streaming {
        grpc.server_streaming(request, path, Raw).await.map(|_| ())
    } else {
        grpc.unary(request, path, Raw).await.map(|_| ())
    };
    match result {
        Ok(()) => (Code::Ok, String::new()),
        Err(s) => (s.code(), s.message().to_owned()),
    }
}

const ROLES: [&str; 5] = ["sales_rep", "regional_manager", "operations_director", "auditor", "administrator"];

/// The expected verdict: which permission a method needs and whether each role has it.
fn expected_permission(path: &str) -> &'static str {
    let method = path.rsplit('/').next().unwrap();
    match path.split('/').nth(1).unwrap() {
        "crm.v1.EventLog" => "log.read",
        "crm.v1.Tokens" => "tokens.manage",
        "crm.v1.CommandService" => match method {
            "ChangeRules" => "rules.change",
            "GetRules" => "rules.read",
            "HandoverOwner" => "handover",
            "MergeCustomers" | "UnmergeCustomers" => "merge",
            "CreateUser" | "SetUserRole" | "SetUserRegion" | "DeactivateUser" => "users.manage",
            _ => "command",
        },
        "crm.v1.Query" if method.starts_with("Export") => "export.bulk",
        "crm.v1.Query" => "query",
        "crm.v1.Audit" => "audit",
        "crm.v1.Admin"
            if method == "RebuildProjection" || method.starts_with("Backup") || method.starts_with("Restore") =>
        {
            "rebuild"
        }
        "crm.v1.Admin" => "status.read",
        "crm.v1.Duplicates" if method == "DismissCandidate" => "merge",
        "crm.v1.Duplicates" => "query",
        "crm.v1.Intake" if method.starts_with("List") || method.starts_with("Get") => "status.read",
        "crm.v1.Intake" => "intake",
        "crm.v1.Subscriptions" => "log.read",
        other => panic!("the matrix does not know service {other}: add it here and to auth::policy"),
    }
}

/// The role/permission matrix as documented in docs/SECURITY.md, written out independently
/// of `auth::policy`.
fn role_has(role: &str, permission: &str) -> bool {
    let granted: &[&str] = match role {
        "sales_rep" => &["command", "query", "rules.read"],
        "regional_manager" => &["command", "query", "rules.read", "handover", "merge", "export.bulk"],
        "operations_director" => &[
            "command",
            "query",
            "rules.read",
            "handover",
            "merge",
            "users.manage",
            "log.read",
            "export.bulk",
            "audit",
            "status.read",
            "intake",
        ],
        "auditor" => &["query", "rules.read", "audit", "log.read", "export.bulk", "status.read"],
        "administrator" => return true,
        _ => unreachable!(),
    };
    granted.contains(&permission)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_for_every_role_is_allowed_or_denied_as_documented() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let mut tokens = pb::tokens_client::TokensClient::new(server.channel().await);
    let mut by_role = BTreeMap::new();
    for role in ROLES {
        let t = tokens
            .issue_token(pb::IssueTokenRequest {
                user_id: format!("u-{role}"),
                role: role.into(),
                region: "华东".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        by_role.insert(role, t.token);
    }
    let methods = all_methods();
    assert!(methods.len() >= 29, "the API has {} methods", methods.len());
    let mut denials = 0;
    for (path, streaming) in &methods {
        let permission = expected_permission(path);
        for role in ROLES {
            let channel = server.channel_with(&by_role[role]).await;
            let (code, message) = call(channel, path, *streaming).await;
            if role_has(role, permission) {
                assert!(
                    !matches!(code, Code::PermissionDenied | Code::Unauthenticated | Code::Unimplemented),
                    "{role} must be allowed {path}: {code:?} {message}"
                );
            } else {
                assert_eq!(code, Code::PermissionDenied, "{role} must be denied {path}: {message}");
                assert!(message.contains(&format!("`{permission}`")), "names the permission: {message}");
                denials += 1;
            }
        }
    }

    // Every denial was recorded for the auditor (recording is asynchronous: wait for it).
    let mut log = pb::event_log_client::EventLogClient::new(server.channel().await);
    let mut recorded = Vec::new();
    for _ in 0..100 {
        recorded = log
            .read_stream(pb::ReadStreamRequest { stream: "access-denied".into(), limit: 1000, ..Default::default() })
            .await
            .unwrap()
            .into_inner()
            .events;
        if recorded.len() >= denials {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(recorded.len(), denials);
    let first = &recorded[0].payload_json;
    assert!(first.contains("\"permission\"") && first.contains("\"method\""), "{first}");
}

#[tokio::test]
async fn missing_malformed_unknown_and_revoked_tokens_are_unauthenticated() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let path = "/crm.v1.EventLog/GetHead";

    // No token at all.
    let mut grpc = tonic::client::Grpc::new(server.raw_channel().await);
    grpc.ready().await.unwrap();
    let err = grpc
        .unary(tonic::Request::new(Vec::new()), http::uri::PathAndQuery::from_static("/crm.v1.EventLog/GetHead"), Raw)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    assert!(err.message().contains("Bearer"), "{}", err.message());

    for bad in ["nonsense", &format!("crm_{}_{}", "0".repeat(32), "1".repeat(64))] {
        let (code, _) = call(server.channel_with(bad).await, path, false).await;
        assert_eq!(code, Code::Unauthenticated, "{bad}");
    }

    let mut tokens = pb::tokens_client::TokensClient::new(server.channel().await);
    let issued = tokens
        .issue_token(pb::IssueTokenRequest { user_id: "u-1".into(), role: "auditor".into(), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(call(server.channel_with(&issued.token).await, path, false).await.0, Code::Ok);
    let id = issued.info.unwrap().token_id;
    tokens.revoke_token(pb::RevokeTokenRequest { token_id: id.clone(), reason: "left".into() }).await.unwrap();
    let (code, message) = call(server.channel_with(&issued.token).await, path, false).await;
    assert_eq!(code, Code::Unauthenticated);
    assert!(message.contains("revoked"), "{message}");
    let listed = tokens.list_tokens(pb::ListTokensRequest {}).await.unwrap().into_inner().tokens;
    assert!(listed.iter().any(|t| t.token_id == id && t.revoked_at_unix_micros > 0));

    // Bad issue requests name the field.
    let err = tokens
        .issue_token(pb::IssueTokenRequest { user_id: "u".into(), role: "root".into(), ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("`role`"), "{}", err.message());

    // Health and reflection need no token.
    let mut health = tonic_health::pb::health_client::HealthClient::new(server.raw_channel().await);
    health.check(tonic_health::pb::HealthCheckRequest { service: String::new() }).await.unwrap();
}

#[tokio::test]
async fn rate_limit_and_oversized_requests_give_resource_exhausted() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("crm.toml");
    std::fs::write(&config, "rate_limit_per_sec = 1.0\nrate_limit_burst = 3.0\nmax_request_bytes = 65536\n").unwrap();
    let server = Server::start_with(dir.path(), &["--config", config.to_str().unwrap()]);
    let mut log = pb::event_log_client::EventLogClient::new(server.channel().await);
    let mut codes = Vec::new();
    for _ in 0..5 {
        codes.push(log.get_head(pb::GetHeadRequest {}).await.map_or_else(|s| s.code(), |_| Code::Ok));
    }
    assert_eq!(&codes[..3], &[Code::Ok; 3]);
    assert_eq!(codes[4], Code::ResourceExhausted, "{codes:?}");

    // A request over max_request_bytes; a fresh token so the rate limit is not what answers.
    let mut tokens = pb::tokens_client::TokensClient::new(server.channel().await);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let t = tokens
        .issue_token(pb::IssueTokenRequest {
            user_id: "ops".into(),
            role: "operations_director".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .token;
    let mut commands = pb::command_service_client::CommandServiceClient::new(server.channel_with(&t).await);
    let err = commands
        .capture_lead(pb::CaptureLeadRequest { name: "x".repeat(100_000), ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{}", err.message());

    // Too many items in one command, though the request itself is small.
    let many = (0..201).map(|i| (format!("k{i}"), "v".to_owned())).collect();
    let err = commands
        .capture_lead(pb::CaptureLeadRequest {
            company: "杭州某某电子有限公司".into(),
            phone: "+86 138 0013 8000".into(),
            source: "api".into(),
            channel: pb::LeadChannel::Api as i32,
            custom_attributes: many,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{}", err.message());
    assert!(err.message().contains("`custom_attributes`"), "{}", err.message());
}

#[tokio::test]
async fn tls_when_a_certificate_and_key_are_configured() {
    let dir = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
    let data = dir.path().join("data");
    let server = Server::start_with(
        &data,
        &["--tls-cert", cert_path.to_str().unwrap(), "--tls-key", key_path.to_str().unwrap()],
    );
    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(cert.cert.pem()))
        .domain_name("localhost");
    let channel = tonic::transport::Channel::from_shared(format!("https://{}", server.addr))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .expect("TLS handshake");
    let channel =
        tonic::service::interceptor::InterceptedService::new(channel, crate::support::Bearer::new(&server.admin_token));
    let head = pb::event_log_client::EventLogClient::new(channel).get_head(pb::GetHeadRequest {}).await.unwrap();
    assert_eq!(head.into_inner().head, 1, "the bootstrap token event");
    // Plaintext is refused on the TLS port.
    let mut plain = pb::event_log_client::EventLogClient::new(server.channel().await);
    assert!(plain.get_head(pb::GetHeadRequest {}).await.is_err());
}

/// What each role gets back from the customer list: its records only, with the fields its
/// role must not see masked (docs/SECURITY.md, "What each role sees").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_role_sees_its_records_with_its_masks() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let mut commands = pb::command_service_client::CommandServiceClient::new(server.channel().await);
    let (east, north) = (uuid::Uuid::now_v7().to_string(), uuid::Uuid::now_v7().to_string());
    for (user, region) in [(&east, "华东"), (&north, "华北")] {
        commands
            .create_user(pb::CreateUserRequest {
                user_id: user.clone(),
                name: format!("销售{region}"),
                role: pb::UserRole::SalesRep as i32,
                region: region.into(),
                team: region.into(),
                capacity: 50,
                ..Default::default()
            })
            .await
            .unwrap();
    }
    let mut position = 0;
    for (name, owner, region, phone) in [
        ("上海某某精密机械有限公司", &east, "华东", "+86 138 0013 8000"),
        ("北京某某医疗器械有限公司", &north, "华北", "+86 139 0013 9000"),
    ] {
        let fields = [
            ("name", name),
            ("region", region),
            ("phone", phone),
            ("custom.identity_number", "11010519900307001X"),
            ("custom.contract_amount", "1200000"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let r = commands
            .create_customer(pb::CreateCustomerRequest { fields, owner_id: owner.clone(), ..Default::default() })
            .await
            .unwrap()
            .into_inner();
        position = r.position;
    }
    let tokens = pb::tokens_client::TokensClient::new(server.channel().await);
    let issue = |user: String, role: &str, region: &str| {
        let request =
            pb::IssueTokenRequest { user_id: user, role: role.into(), region: region.into(), ..Default::default() };
        let mut tokens = tokens.clone();
        async move { tokens.issue_token(request).await.unwrap().into_inner().token }
    };
    let cases = [
        // role, token, visible names, phone shown as, identity shown as
        (
            "sales_rep",
            issue(east.clone(), "sales_rep", "华东").await,
            vec!["上海某某精密机械有限公司"],
            "+8613800138000",
            "110105********001X",
        ),
        (
            "regional_manager",
            issue("m-1".into(), "regional_manager", "华北").await,
            vec!["北京某某医疗器械有限公司"],
            "139****9000",
            "110105********001X",
        ),
        (
            "auditor",
            issue("a-1".into(), "auditor", "").await,
            vec!["上海某某精密机械有限公司", "北京某某医疗器械有限公司"],
            "***",
            "110105********001X",
        ),
        (
            "administrator",
            issue("root".into(), "administrator", "").await,
            vec!["上海某某精密机械有限公司", "北京某某医疗器械有限公司"],
            "+86",
            "11010519900307001X",
        ),
    ];
    for (role, token, visible, phone, identity) in cases {
        let mut query = pb::query_client::QueryClient::new(server.channel_with(&token).await);
        let list = query
            .list_customers(pb::ListCustomersRequest { min_position: position, page_size: 100, ..Default::default() })
            .await
            .unwrap()
            .into_inner();
        let mut names: Vec<&str> = list.customers.iter().map(|c| c.fields["name"].as_str()).collect();
        names.sort();
        let mut want = visible.clone();
        want.sort();
        assert_eq!(names, want, "{role} sees its records only");
        for c in &list.customers {
            let shown = &c.fields["phone"];
            match phone {
                "***" => assert!(shown.contains("****"), "{role}: phone {shown} masked"),
                "+86" => assert!(shown.starts_with("+86") && !shown.contains('*'), "{role}: phone {shown} in full"),
                exact => assert_eq!(shown, exact, "{role}: phone"),
            }
            assert_eq!(c.fields["custom.identity_number"], identity, "{role}: identity number");
            assert_eq!(
                c.fields["custom.contract_amount"], "1200000",
                "{role}: contract amounts are for every role that sees the record"
            );
        }
    }
}
