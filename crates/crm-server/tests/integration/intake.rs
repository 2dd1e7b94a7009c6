//! The intake incidents replayed against the real binary: a form field nobody mapped, an ERP
//! batch of NULLs, a source that keeps failing. All data is synthetic.

use std::collections::HashMap;

use crm_proto::v1 as pb;
use pb::event_log_client::EventLogClient;
use pb::intake_client::IntakeClient;
use tonic::Code;

use crate::support::{AuthChannel, Server};

fn form(pairs: &[(&str, &str)]) -> std::collections::BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

fn field(name: &str, value: Option<&str>) -> pb::SyncField {
    pb::SyncField { name: name.into(), value: value.map(str::to_owned) }
}

/// A synthetic mobile number: 139-0000-xxxx style, never a real subscriber list.
fn mobile(i: usize) -> String {
    format!("1390000{:04}", i % 10_000)
}

async fn client(server: &Server) -> IntakeClient<AuthChannel> {
    IntakeClient::new(server.channel().await)
}

#[tokio::test]
async fn a_form_with_a_new_unmapped_field_keeps_the_lead_and_raises_the_field_health_alert() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let mut intake = client(&server).await;
    intake
        .set_form_mapping(pb::SetFormMappingRequest {
            form_id: "contact-us".into(),
            fields: [
                ("姓名".to_owned(), pb::LeadField::Name as i32),
                ("公司".to_owned(), pb::LeadField::Company as i32),
                ("手机".to_owned(), pb::LeadField::Phone as i32),
            ]
            .into_iter()
            .collect(),
        })
        .await
        .unwrap();

    // A month of ordinary submissions: every mapped field matches, no alert.
    for i in 0..30 {
        let r = intake
            .submit_form(pb::SubmitFormRequest {
                form_id: "contact-us".into(),
                source: "官网-产品页".into(),
                fields: form(&[
                    ("姓名", "测试用户"),
                    ("公司", &format!("示例精密机械有限公司{i}")),
                    ("手机", &mobile(i)),
                ]),
                idempotency_key: String::new(),
            })
            .await
            .unwrap()
            .into_inner();
        assert!(!r.lead_id.is_empty());
        assert!(r.alerts.is_empty(), "{:?}", r.alerts);
    }

    // The web team adds a field and renames 手机 to mobile, telling nobody.
    let r = intake
        .submit_form(pb::SubmitFormRequest {
            form_id: "contact-us".into(),
            source: "官网-产品页".into(),
            fields: form(&[
                ("姓名", "测试用户乙"),
                ("公司", "示例医疗器械有限公司"),
                ("mobile", "13900001111"),
                ("预算", "50-100万"),
            ]),
            idempotency_key: "form-contact-us-0031".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!r.lead_id.is_empty(), "the lead is never dropped: {}", r.refused);
    assert_eq!(r.custom_attributes.get("预算").map(String::as_str), Some("50-100万"));
    assert_eq!(r.custom_attributes.get("mobile").map(String::as_str), Some("13900001111"));
    let mut unmapped = r.unmapped_fields.clone();
    unmapped.sort();
    assert_eq!(unmapped, vec!["mobile".to_owned(), "预算".to_owned()]);
    let kinds: Vec<(String, i32)> = r.alerts.iter().map(|a| (a.field.clone(), a.kind)).collect();
    assert!(kinds.contains(&("预算".to_owned(), pb::FieldAlertKind::UnmappedField as i32)), "{kinds:?}");
    assert!(kinds.contains(&("mobile".to_owned(), pb::FieldAlertKind::UnmappedField as i32)), "{kinds:?}");

    // The lead is in the log with the field as a custom attribute.
    let mut log = EventLogClient::new(server.channel().await);
    let events = log
        .read_stream(pb::ReadStreamRequest { stream: format!("lead-{}", r.lead_id), ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .events;
    assert_eq!(events[0].event_type, "LeadCaptured");
    assert!(events[0].payload_json.contains("预算"), "{}", events[0].payload_json);
    assert!(events[0].payload_json.contains("50-100万"));

    // A retry of the same submission captures nothing new.
    let again = intake
        .submit_form(pb::SubmitFormRequest {
            form_id: "contact-us".into(),
            source: "官网-产品页".into(),
            fields: form(&[
                ("姓名", "测试用户乙"),
                ("公司", "示例医疗器械有限公司"),
                ("mobile", "13900001111"),
                ("预算", "50-100万"),
            ]),
            idempotency_key: "form-contact-us-0031".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.lead_id, r.lead_id);

    // One more renamed submission: 手机 has 30 of 32 = 93.75% < 95%.
    let r = intake
        .submit_form(pb::SubmitFormRequest {
            form_id: "contact-us".into(),
            source: "官网-产品页".into(),
            fields: form(&[("姓名", "测试用户丙"), ("公司", "示例电子有限公司"), ("mobile", "13900002222")]),
            idempotency_key: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        r.alerts.iter().any(|a| a.field == "手机" && a.kind == pb::FieldAlertKind::LowMatchRate as i32),
        "{:?}",
        r.alerts
    );

    // An invalid phone is kept raw and flagged, the lead still captured.
    let r = intake
        .submit_form(pb::SubmitFormRequest {
            form_id: "contact-us".into(),
            source: "官网-产品页".into(),
            fields: form(&[("姓名", "测试用户丁"), ("公司", "示例物流有限公司"), ("手机", "12345")]),
            idempotency_key: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!r.lead_id.is_empty());
    assert_eq!(r.flagged, vec![pb::FlaggedField { field: "手机".into(), reason: "phone.invalid".into() }]);

    // Health is queryable and the alerts are events.
    let health =
        intake.get_form_health(pb::GetFormHealthRequest { form_id: "contact-us".into() }).await.unwrap().into_inner();
    assert_eq!(health.submissions, 33);
    let budget = health.fields.iter().find(|f| f.field == "预算").unwrap();
    assert!(!budget.mapped);
    assert_eq!(budget.match_rate, 0.0);
    assert_eq!(budget.alert, pb::FieldAlertKind::UnmappedField as i32);
    let phone = health.fields.iter().find(|f| f.field == "手机").unwrap();
    assert_eq!(phone.alert, pb::FieldAlertKind::LowMatchRate as i32);
    let recorded = log
        .read_stream(pb::ReadStreamRequest {
            stream: "intake-form-contact-us".into(),
            limit: 1000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .events;
    assert_eq!(recorded.iter().filter(|e| e.event_type == "FormSubmitted").count(), 33);
    assert!(recorded.iter().filter(|e| e.event_type == "FieldHealthAlerted").count() >= 3);
}

async fn configure_erp(intake: &mut IntakeClient<AuthChannel>, source: &str) {
    let rules = [
        ("name", pb::FieldRule { required: true, max_len: 100, ..Default::default() }),
        ("tel", pb::FieldRule { target: "phone".into(), r#type: pb::FieldType::Phone as i32, ..Default::default() }),
        ("grade", pb::FieldRule { target: "level".into(), pattern: "[ABCD]".into(), ..Default::default() }),
        ("industry", pb::FieldRule::default()),
        (
            "credit_limit",
            pb::FieldRule {
                r#type: pb::FieldType::Decimal as i32,
                min: Some(0.0),
                max: Some(1e8),
                ..Default::default()
            },
        ),
        ("remark", pb::FieldRule { clearable: true, ..Default::default() }),
    ];
    intake
        .configure_source(pb::ConfigureSourceRequest {
            source: source.into(),
            fields: rules.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
            ..Default::default()
        })
        .await
        .unwrap();
}

fn erp_record(i: usize, modified: i64, fields: Vec<pb::SyncField>) -> pb::SyncRecord {
    pb::SyncRecord { external_id: format!("KH{i:06}"), modified_at_micros: modified, fields }
}

const T0: i64 = 1_772_000_000_000_000; // 2026-02-25, microseconds

#[tokio::test]
async fn an_erp_batch_of_nulls_for_two_fields_on_2000_customers_clears_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let mut intake = client(&server).await;
    configure_erp(&mut intake, "erp").await;

    let full = |i: usize| {
        erp_record(
            i,
            T0,
            vec![
                field("name", Some(&format!("示例制造有限公司{i}"))),
                field("tel", Some(&mobile(i))),
                field("grade", Some("B")),
                field("industry", Some("医疗器械")),
                field("remark", Some("年度框架客户")),
            ],
        )
    };
    for chunk in (0..2000).collect::<Vec<_>>().chunks(500) {
        let r = intake
            .sync_records(pb::SyncRecordsRequest {
                source: "erp".into(),
                records: chunk.iter().map(|i| full(*i)).collect(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!((r.applied, r.quarantined), (500, 0));
    }

    // The incident: the ERP sends NULL (or empty) for grade and industry, newer than ours.
    let nulls = |i: usize| {
        erp_record(
            i,
            T0 + 1_000_000,
            vec![
                field("name", Some(&format!("示例制造有限公司{i}"))),
                field("grade", if i.is_multiple_of(2) { None } else { Some("") }),
                field("industry", None),
                field("remark", None),
            ],
        )
    };
    let mut kept = 0;
    for chunk in (0..2000).collect::<Vec<_>>().chunks(500) {
        let r = intake
            .sync_records(pb::SyncRecordsRequest {
                source: "erp".into(),
                records: chunk.iter().map(|i| nulls(*i)).collect(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.quarantined, 0);
        kept += r.fields_kept;
    }
    assert_eq!(kept, 4000, "two NULL fields kept on each of 2,000 customers");

    // Every customer still has both values; the clearable remark was cleared.
    for i in 0..2000 {
        let p = intake
            .get_field_provenance(pb::GetFieldProvenanceRequest {
                source: "erp".into(),
                external_id: format!("KH{i:06}"),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let get = |f: &str| p.fields.iter().find(|x| x.field == f).map(|x| x.value.clone());
        assert_eq!(get("level").as_deref(), Some("B"), "customer {i}");
        assert_eq!(get("industry").as_deref(), Some("医疗器械"), "customer {i}");
        assert_eq!(get("remark"), None, "remark is clearable");
        let level = p.fields.iter().find(|x| x.field == "level").unwrap();
        assert_eq!((level.origin.as_str(), level.source.as_str(), level.at_micros), ("sync", "erp", T0));
        assert_eq!(level.external_id, format!("KH{i:06}"));
    }

    // Idempotent: the same batch again changes nothing.
    let r = intake
        .sync_records(pb::SyncRecordsRequest {
            source: "erp".into(),
            records: (0..500).map(nulls).collect(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((r.applied, r.duplicates), (0, 500));

    // A later real value still wins; an older one does not.
    let r = intake
        .sync_records(pb::SyncRecordsRequest {
            source: "erp".into(),
            records: vec![
                erp_record(
                    1,
                    T0 + 2_000_000,
                    vec![field("name", Some("示例制造有限公司1")), field("grade", Some("A"))],
                ),
                erp_record(2, T0 - 1, vec![field("name", Some("示例制造有限公司2")), field("grade", Some("D"))]),
            ],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((r.applied, r.duplicates), (1, 1));
}

#[tokio::test]
async fn five_failing_batches_pause_the_source_the_sixth_is_refused_and_resume_lets_it_flow() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let mut intake = client(&server).await;
    configure_erp(&mut intake, "finance").await;
    let good = |i: usize| erp_record(i, T0 + i as i64, vec![field("name", Some(&format!("示例贸易有限公司{i}")))]);
    // A broken export: records without a modification time.
    let broken = pb::SyncRecordsRequest {
        source: "finance".into(),
        records: vec![good(1), pb::SyncRecord { external_id: "KH9".into(), modified_at_micros: 0, fields: vec![] }],
        ..Default::default()
    };
    for n in 1..=5 {
        let err = intake.sync_records(broken.clone()).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "batch {n}: {err:?}");
        assert_eq!(err.message().contains("paused"), n == 5, "batch {n}: {}", err.message());
    }
    let health = intake
        .get_source_health(pb::GetSourceHealthRequest { source: "finance".into() })
        .await
        .unwrap()
        .into_inner()
        .sources
        .remove(0);
    assert!(health.paused);
    assert_eq!((health.batches, health.failed_batches), (5, 5));
    assert!(health.paused_reason.contains("5 consecutive failed batches"), "{}", health.paused_reason);

    // The sixth, a good one, is refused while paused.
    let sixth = pb::SyncRecordsRequest { source: "finance".into(), records: vec![good(2)], ..Default::default() };
    let err = intake.sync_records(sixth.clone()).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    assert!(err.message().contains("paused") && err.message().contains("consecutive"), "{}", err.message());

    // The pause is an event.
    let mut log = EventLogClient::new(server.channel().await);
    let events = log
        .read_stream(pb::ReadStreamRequest { stream: "intake-source-finance".into(), limit: 100, ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .events;
    assert_eq!(events.iter().filter(|e| e.event_type == "SourcePaused").count(), 1);

    // An operator resumes; the batch flows again.
    intake.resume_source(pb::ResumeSourceRequest { source: "finance".into() }).await.unwrap();
    let r = intake.sync_records(sixth).await.unwrap().into_inner();
    assert_eq!(r.applied, 1);
    let health = intake
        .get_source_health(pb::GetSourceHealthRequest { source: "finance".into() })
        .await
        .unwrap()
        .into_inner()
        .sources
        .remove(0);
    assert!(!health.paused);
    assert!(health.last_success_micros > 0);
    assert!((health.success_rate - 1.0 / 6.0).abs() < 1e-9, "{}", health.success_rate);
}

#[tokio::test]
async fn failing_records_go_to_quarantine_while_the_rest_continues() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let mut intake = client(&server).await;
    configure_erp(&mut intake, "erp").await;
    let records = vec![
        erp_record(1, T0, vec![field("name", Some("示例一有限公司")), field("tel", Some(&mobile(1)))]),
        erp_record(2, T0, vec![field("name", Some("示例二有限公司")), field("tel", Some("12"))]),
        erp_record(3, T0, vec![field("name", Some("示例三有限公司")), field("credit_limit", Some("-5"))]),
        erp_record(4, T0, vec![field("grade", Some("A"))]),
    ];
    let r = intake
        .sync_records(pb::SyncRecordsRequest { source: "erp".into(), records, ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((r.applied, r.quarantined), (1, 3));
    let listed = intake
        .list_quarantined(pb::ListQuarantinedRequest { source: "erp".into(), limit: 0 })
        .await
        .unwrap()
        .into_inner()
        .records;
    let rules: Vec<(String, String)> =
        listed.iter().map(|q| (q.external_id.clone(), q.errors[0].rule.clone())).collect();
    assert_eq!(
        rules,
        vec![
            ("KH000002".to_owned(), "type.phone".to_owned()),
            ("KH000003".to_owned(), "range".to_owned()),
            ("KH000004".to_owned(), "required".to_owned()),
        ]
    );

    // Release with a fix; a release that still fails is refused; reject the last one.
    let err = intake
        .release_quarantined(pb::ReleaseQuarantinedRequest { id: listed[0].id.clone(), corrections: vec![] })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    let released = intake
        .release_quarantined(pb::ReleaseQuarantinedRequest {
            id: listed[0].id.clone(),
            corrections: vec![field("tel", Some(&mobile(2)))],
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!released.customer_id.is_empty());
    intake
        .reject_quarantined(pb::RejectQuarantinedRequest { id: listed[2].id.clone(), reason: "测试数据".into() })
        .await
        .unwrap();
    let left = intake
        .list_quarantined(pb::ListQuarantinedRequest { source: String::new(), limit: 0 })
        .await
        .unwrap()
        .into_inner()
        .records;
    assert_eq!(left.iter().map(|q| q.external_id.as_str()).collect::<Vec<_>>(), vec!["KH000003"]);
    let p = intake
        .get_field_provenance(pb::GetFieldProvenanceRequest { customer_id: released.customer_id, ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert!(p.fields.iter().any(|f| f.field == "phone" && f.value == "+8613900000002"), "{:?}", p.fields);

    // Without a token nothing is taken.
    let err = IntakeClient::new(server.raw_channel().await)
        .sync_records(pb::SyncRecordsRequest { source: "erp".into(), ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
}

#[tokio::test]
async fn our_own_edit_wins_against_an_older_record_and_loses_to_a_later_one() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let mut intake = client(&server).await;
    configure_erp(&mut intake, "erp").await;
    let r = intake
        .sync_records(pb::SyncRecordsRequest {
            source: "erp".into(),
            records: vec![erp_record(
                7,
                T0,
                vec![field("name", Some("示例七有限公司")), field("industry", Some("机械"))],
            )],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.applied, 1);
    let p = intake
        .get_field_provenance(pb::GetFieldProvenanceRequest {
            source: "erp".into(),
            external_id: "KH000007".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();

    // A salesperson corrects the industry in the CRM (recorded now, long after T0).
    let mut commands = pb::command_service_client::CommandServiceClient::new(server.channel().await);
    commands
        .update_customer(pb::UpdateCustomerRequest {
            customer_id: p.customer_id.clone(),
            set: [("industry".to_owned(), "医疗器械".to_owned())].into_iter().collect(),
            ..Default::default()
        })
        .await
        .unwrap();
    let ours = intake
        .get_field_provenance(pb::GetFieldProvenanceRequest {
            customer_id: p.customer_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let industry = ours.fields.iter().find(|f| f.field == "industry").unwrap().clone();
    assert_eq!((industry.value.as_str(), industry.origin.as_str()), ("医疗器械", "crm"));

    // An ERP record modified before our edit, and one modified exactly at it (a tie): ours stays.
    for modified in [T0 + 1, industry.at_micros] {
        let r = intake
            .sync_records(pb::SyncRecordsRequest {
                source: "erp".into(),
                records: vec![erp_record(
                    7,
                    modified,
                    vec![field("name", Some("示例七有限公司")), field("industry", Some("机械"))],
                )],
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!((r.applied, r.fields_kept), (1, 1), "modified at {modified}");
    }
    // One modified after our edit wins.
    let r = intake
        .sync_records(pb::SyncRecordsRequest {
            source: "erp".into(),
            records: vec![erp_record(
                7,
                industry.at_micros + 1,
                vec![field("name", Some("示例七有限公司")), field("industry", Some("电子"))],
            )],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((r.applied, r.fields_kept), (1, 0));
    let after = intake
        .get_field_provenance(pb::GetFieldProvenanceRequest { customer_id: p.customer_id, ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    let industry = after.fields.iter().find(|f| f.field == "industry").unwrap();
    assert_eq!(
        (industry.value.as_str(), industry.origin.as_str(), industry.external_id.as_str()),
        ("电子", "sync", "KH000007")
    );
}

#[tokio::test]
async fn provenance_of_a_customer_no_sync_wrote_is_read_from_its_stream() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let mut intake = client(&server).await;
    let mut commands = pb::command_service_client::CommandServiceClient::new(server.channel().await);
    let created = commands
        .create_customer(pb::CreateCustomerRequest {
            fields: [("name", "示例九号精密机械有限公司"), ("industry", "机械")]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    commands
        .update_customer(pb::UpdateCustomerRequest {
            customer_id: created.id.clone(),
            set: [("industry".to_owned(), "医疗器械".to_owned())].into_iter().collect(),
            ..Default::default()
        })
        .await
        .unwrap();

    // The intake keeps only the customers a sync writes to; this one is folded on demand.
    let p = intake
        .get_field_provenance(pb::GetFieldProvenanceRequest { customer_id: created.id.clone(), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(p.customer_id, created.id);
    let by_field: HashMap<&str, &pb::FieldProvenance> = p.fields.iter().map(|f| (f.field.as_str(), f)).collect();
    assert_eq!(by_field["industry"].value, "医疗器械");
    assert_eq!(by_field["name"].value, "示例九号精密机械有限公司");
    assert!(by_field.values().all(|f| f.origin == "crm" && !f.actor.is_empty() && f.at_micros > 0), "{p:?}");
    assert!(by_field["industry"].at_micros > by_field["name"].at_micros, "the update's time: {p:?}");

    let unknown = intake
        .get_field_provenance(pb::GetFieldProvenanceRequest {
            customer_id: uuid::Uuid::now_v7().to_string(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
}
