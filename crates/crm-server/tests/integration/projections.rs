//! Read models through the real binary: read-your-writes by position, admin status, rebuild
//! under concurrent commands, verification of a damaged entry, exactly-once after kill -9,
//! and as-of answers equal to answers recorded during the run.

use std::collections::BTreeMap;
use std::time::Duration;

use crm_proto::v1 as pb;
use pb::admin_client::AdminClient;
use pb::audit_client::AuditClient;
use pb::command_service_client::CommandServiceClient;
use pb::event_log_client::EventLogClient;
use pb::query_client::QueryClient;
use tokio_stream::StreamExt;
use tonic::Code;

use crate::support::{AuthChannel, Server};

struct Clients {
    commands: CommandServiceClient<AuthChannel>,
    query: QueryClient<AuthChannel>,
    audit: AuditClient<AuthChannel>,
    admin: AdminClient<AuthChannel>,
    log: EventLogClient<AuthChannel>,
}

async fn clients(server: &Server) -> Clients {
    let channel = server.channel().await;
    Clients {
        commands: CommandServiceClient::new(channel.clone()),
        query: QueryClient::new(channel.clone()),
        audit: AuditClient::new(channel.clone()),
        admin: AdminClient::new(channel.clone()),
        log: EventLogClient::new(channel),
    }
}

fn options() -> Option<pb::CommandOptions> {
    Some(pb::CommandOptions { actor: "user-e2e".into(), source: "e2e".into(), ..Default::default() })
}

fn fields(i: usize, region: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("name".to_owned(), format!("{region}康达医疗器械{i}有限公司")),
        ("phone".to_owned(), format!("138{:08}", 10_000_000 + i)),
        ("region".to_owned(), region.to_owned()),
        ("industry".to_owned(), "医疗器械".to_owned()),
    ])
}

async fn create(commands: &mut CommandServiceClient<AuthChannel>, i: usize, region: &str) -> pb::CommandResponse {
    commands
        .create_customer(pb::CreateCustomerRequest {
            options: options(),
            fields: fields(i, region),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
}

async fn head(log: &mut EventLogClient<AuthChannel>) -> u64 {
    log.get_head(pb::GetHeadRequest {}).await.unwrap().into_inner().head
}

async fn list_all(
    query: &mut QueryClient<AuthChannel>,
    mut request: pb::ListCustomersRequest,
) -> Vec<pb::CustomerView> {
    let mut out = Vec::new();
    loop {
        let page = query.list_customers(request.clone()).await.unwrap().into_inner();
        out.extend(page.customers);
        if page.next_cursor.is_empty() {
            return out;
        }
        request.cursor = page.next_cursor;
    }
}

async fn verify_clean(admin: &mut AdminClient<AuthChannel>) {
    for name in ["customers", "funnel", "audit"] {
        let report =
            admin.verify_projection(pb::VerifyProjectionRequest { name: name.into() }).await.unwrap().into_inner();
        assert_eq!(report.total_differences, 0, "{name}: {:?}", report.differences);
    }
}

async fn wait_caught_up(admin: &mut AdminClient<AuthChannel>, head: u64) {
    for _ in 0..2000 {
        let list = admin.list_projections(pb::ListProjectionsRequest {}).await.unwrap().into_inner();
        if list.projections.iter().all(|p| p.position >= head && p.state == pb::ProjectionState::Live as i32) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("projections did not catch up with {head}");
}

#[tokio::test]
async fn queries_read_their_own_writes_and_admin_reports_status() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let mut c = clients(&server).await;
    let written = create(&mut c.commands, 1, "北京").await;
    // Read-your-writes: min_position makes the query wait for the read model.
    let got = c
        .query
        .get_customer(pb::GetCustomerRequest { min_position: written.position, customer_id: written.id.clone() })
        .await
        .unwrap()
        .into_inner();
    assert!(got.position >= written.position);
    let customer = got.customer.unwrap();
    assert_eq!(customer.fields["region"], "北京");
    assert_eq!(customer.fields["phone"], "+8613810000001");

    for i in 2..12 {
        create(&mut c.commands, i, if i % 2 == 0 { "上海" } else { "北京" }).await;
    }
    let last = create(&mut c.commands, 12, "上海").await;
    let shanghai = c
        .query
        .list_customers(pb::ListCustomersRequest {
            min_position: last.position,
            region: "上海".into(),
            page_size: 4,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((shanghai.customers.len(), shanghai.position >= last.position), (4, true));
    let all_shanghai =
        list_all(&mut c.query, pb::ListCustomersRequest { region: "上海".into(), page_size: 4, ..Default::default() })
            .await;
    assert_eq!(all_shanghai.len(), 6);
    let found = c
        .query
        .search_customers(pb::SearchCustomersRequest {
            min_position: last.position,
            field: pb::SearchField::Phone as i32,
            prefix: "1381000001".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(found.customers.len(), 3, "10..12");
    let funnel = c
        .query
        .get_funnel(pb::GetFunnelRequest { min_position: last.position, ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert!(funnel.position >= last.position);
    assert_eq!(funnel.stages.first().map(|s| s.stage.as_str()), Some(crm_domain::STAGE_INITIAL));

    // A position that will not be reached within the deadline.
    let mut late = tonic::Request::new(pb::GetCustomerRequest {
        min_position: last.position + 1000,
        customer_id: written.id.clone(),
    });
    late.set_timeout(Duration::from_millis(300));
    let err = c.query.get_customer(late).await.unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
    let missing = c
        .query
        .get_customer(pb::GetCustomerRequest { customer_id: uuid::Uuid::nil().to_string(), ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);

    let ops = c
        .audit
        .list_operations(pb::ListOperationsRequest {
            min_position: last.position,
            event_type: "CustomerCreated".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ops.operations.len(), 12);
    // The actor is the authenticated principal, the same for every call of this client.
    let actor = &ops.operations[0].actor;
    assert!(!actor.is_empty() && ops.operations.iter().all(|o| &o.actor == actor));

    let list = c.admin.list_projections(pb::ListProjectionsRequest {}).await.unwrap().into_inner();
    let names: Vec<_> = list.projections.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["customers", "funnel", "audit", "duplicates", "workload", "reminders", "health"]);
    let head = head(&mut c.log).await;
    wait_caught_up(&mut c.admin, head).await;
    let list = c.admin.list_projections(pb::ListProjectionsRequest {}).await.unwrap().into_inner();
    for p in &list.projections {
        assert_eq!((p.head, p.lag_events, p.lag_seconds), (head, 0, 0.0), "{p:?}");
    }
    let unknown = c.admin.verify_projection(pb::VerifyProjectionRequest { name: "nope".into() }).await.unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
}

#[tokio::test]
async fn a_rebuild_under_concurrent_commands_never_fails_a_query_and_ends_exact() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let mut c = clients(&server).await;
    for i in 0..300 {
        create(&mut c.commands, i, "广东").await;
    }
    // The read models step at most every `projection_live_interval_ms`: let them reach the
    // 300 creates, so the swap below cannot come before them.
    let before = head(&mut c.log).await;
    wait_caught_up(&mut c.admin, before).await;
    let writer = {
        let mut commands = c.commands.clone();
        tokio::spawn(async move {
            for i in 300..500 {
                create(&mut commands, i, "广东").await;
            }
        })
    };
    let mut progress = c
        .admin
        .rebuild_projection(pb::RebuildProjectionRequest { name: "customers".into() })
        .await
        .unwrap()
        .into_inner();
    let reader = {
        let mut query = c.query.clone();
        tokio::spawn(async move {
            let mut reads = 0;
            let mut last_position = 0;
            while reads < 200 {
                // Every query succeeds and the served position never goes backwards.
                let page = query
                    .list_customers(pb::ListCustomersRequest {
                        region: "广东".into(),
                        page_size: 5,
                        ..Default::default()
                    })
                    .await
                    .expect("no failed query during the rebuild")
                    .into_inner();
                assert!(page.position >= last_position);
                assert_eq!(page.customers.len(), 5);
                last_position = page.position;
                reads += 1;
            }
        })
    };
    let mut last = None;
    while let Some(message) = progress.next().await {
        let message = message.unwrap();
        assert_eq!(message.name, "customers");
        last = Some(message);
    }
    let last = last.unwrap();
    assert!(last.finished && last.swapped_at_position >= 300, "{last:?}");
    writer.await.unwrap();
    reader.await.unwrap();
    let head = head(&mut c.log).await;
    wait_caught_up(&mut c.admin, head).await;
    let everyone = list_all(&mut c.query, pb::ListCustomersRequest { page_size: 500, ..Default::default() }).await;
    assert_eq!(everyone.len(), 500);
    let status = c.admin.list_projections(pb::ListProjectionsRequest {}).await.unwrap().into_inner();
    assert_eq!(status.projections[0].rebuilds_completed, 1);
    assert!(!status.projections[0].frozen, "a requested rebuild of the same version freezes nothing");
    verify_clean(&mut c.admin).await;
}

#[tokio::test]
async fn verify_finds_a_damaged_read_model_entry() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path());
    let mut c = clients(&server).await;
    let mut ids = Vec::new();
    for i in 0..20 {
        ids.push(create(&mut c.commands, i, "江苏").await.id);
    }
    let h = head(&mut c.log).await;
    wait_caught_up(&mut c.admin, h).await;
    verify_clean(&mut c.admin).await;
    drop(c);
    assert!(server.terminate().await.success());

    // Damage one customer record behind the server's back: change its region.
    {
        let db = crm_projection_runtime::ProjectionDb::open(&dir.path().join("projections")).unwrap();
        let tree = db.serving_tree("customers").unwrap().unwrap();
        let key = format!("c/{}", ids[3]);
        let bytes = tree.get(key.as_bytes()).unwrap().unwrap();
        let mut value: crm_projection_customers::Value =
            crm_projection_runtime::decode_value(key.as_bytes(), &bytes).unwrap();
        let crm_projection_customers::Value::Customer(view) = &mut value else { panic!("a customer") };
        view.fields.insert("region".into(), "西藏".into());
        tree.insert(key.as_bytes(), crm_projection_runtime::encode_value(&value)).unwrap();
        db.flush().unwrap();
    }
    let server = Server::start(dir.path());
    let mut c = clients(&server).await;
    let report =
        c.admin.verify_projection(pb::VerifyProjectionRequest { name: "customers".into() }).await.unwrap().into_inner();
    assert_eq!(report.total_differences, 1, "{:?}", report.differences);
    let d = &report.differences[0];
    assert_eq!(d.key, format!("c/{}", ids[3]));
    assert!(d.expected.as_deref().unwrap().contains("江苏") && d.actual.as_deref().unwrap().contains("西藏"));
    // A rebuild repairs it.
    let mut progress = c
        .admin
        .rebuild_projection(pb::RebuildProjectionRequest { name: "customers".into() })
        .await
        .unwrap()
        .into_inner();
    while let Some(m) = progress.next().await {
        m.unwrap();
    }
    verify_clean(&mut c.admin).await;
}

#[tokio::test]
async fn after_kill_9_during_a_command_load_every_count_is_exact() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path());
    let c = clients(&server).await;
    let mut writers = Vec::new();
    for w in 0..8 {
        let mut commands = c.commands.clone();
        writers.push(tokio::spawn(async move {
            let mut ok = 0;
            for i in 0..10_000 {
                let r = commands
                    .create_customer(pb::CreateCustomerRequest {
                        options: options(),
                        fields: fields(w * 10_000 + i, "浙江"),
                        ..Default::default()
                    })
                    .await;
                if r.is_err() {
                    return ok;
                }
                ok += 1;
            }
            ok
        }));
    }
    // Let the load run, then kill -9 in the middle of it.
    let mut log = c.log.clone();
    while head(&mut log).await < 400 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    let mut acknowledged = 0;
    for w in writers {
        acknowledged += w.await.unwrap();
    }
    drop(c);

    let server = Server::start(dir.path());
    let mut c = clients(&server).await;
    let head = head(&mut c.log).await;
    let mut created_in_log = 0;
    let mut from = 1;
    while from <= head {
        let page = c.log.read_all(pb::ReadAllRequest { from_position: from, limit: 1000 }).await.unwrap().into_inner();
        created_in_log += page.events.iter().filter(|e| e.event_type == "CustomerCreated").count();
        from = page.next_position;
    }
    assert!(created_in_log >= acknowledged, "every acknowledged command is in the log");
    wait_caught_up(&mut c.admin, head).await;
    let customers = list_all(&mut c.query, pb::ListCustomersRequest { page_size: 500, ..Default::default() }).await;
    assert_eq!(customers.len(), created_in_log, "nothing applied twice, nothing skipped");
    let ops = c
        .audit
        .list_operations(pb::ListOperationsRequest { page_size: 1000, ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ops.operations.first().map(|o| o.position), Some(1));
    verify_clean(&mut c.admin).await;
}

#[tokio::test]
async fn as_of_answers_equal_the_answers_recorded_during_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let mut c = clients(&server).await;
    let id = create(&mut c.commands, 1, "四川").await.id;
    let mut recorded = Vec::new();
    for (i, industry) in ["制造", "教育", "零售", "物流", "医疗器械"].iter().enumerate() {
        let written = c
            .commands
            .update_customer(pb::UpdateCustomerRequest {
                options: options(),
                customer_id: id.clone(),
                set: BTreeMap::from([
                    ("industry".to_owned(), (*industry).to_owned()),
                    ("level".to_owned(), i.to_string()),
                ]),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let answer = c
            .query
            .get_customer(pb::GetCustomerRequest { min_position: written.position, customer_id: id.clone() })
            .await
            .unwrap()
            .into_inner();
        let at = answer.customer.as_ref().unwrap().updated_at;
        recorded.push((answer.position, at, answer.customer.unwrap()));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for (position, at, customer) in recorded {
        let by_position = c
            .audit
            .get_customer_as_of(pb::GetCustomerAsOfRequest {
                customer_id: id.clone(),
                as_of: Some(pb::get_customer_as_of_request::AsOf::Position(position)),
            })
            .await
            .unwrap()
            .into_inner();
        assert!(by_position.exists);
        assert_eq!(by_position.customer.as_ref().unwrap().fields, customer.fields);
        assert_eq!(by_position.position, customer.updated_position);
        let by_time = c
            .audit
            .get_customer_as_of(pb::GetCustomerAsOfRequest {
                customer_id: id.clone(),
                as_of: Some(pb::get_customer_as_of_request::AsOf::Time(at.unwrap())),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(by_time.customer.unwrap().fields, customer.fields);
    }
    let history = c
        .audit
        .get_customer_history(pb::GetCustomerHistoryRequest { customer_id: id.clone(), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    let types: Vec<_> = history.entries.iter().map(|e| e.operation.as_ref().unwrap().event_type.as_str()).collect();
    assert_eq!(
        types,
        [
            "CustomerCreated",
            "CustomerUpdated",
            "CustomerUpdated",
            "CustomerUpdated",
            "CustomerUpdated",
            "CustomerUpdated"
        ]
    );
    assert!(history.entries[1].payload_json.contains("制造"));
    let before = c
        .audit
        .get_customer_as_of(pb::GetCustomerAsOfRequest {
            customer_id: id,
            as_of: Some(pb::get_customer_as_of_request::AsOf::Position(0)),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!before.exists);
}
