use std::collections::BTreeMap;

use crm_domain::{
    uscc_check_char, Channel, CustomerAbsorbed, CustomerCreated, CustomerId, CustomerRestored, CustomerUnmerged,
    CustomerUpdated, CustomersMerged, Event, FieldChange, LeadCaptured, LeadId, Owned, OwnerChanged, UserId,
};
use crm_projection_health::{health, HealthReport, HealthScope};
use crm_projection_runtime::fixtures::Generated;
use crm_projection_runtime::testing::{append_all, settle, TempLog};
use crm_projection_runtime::{spawn, ProjectionDb, ProjectionHandle};
use uuid::Uuid;

fn id(n: u128) -> Uuid {
    Uuid::from_u128(n)
}

fn uscc(valid: bool) -> String {
    let first17 = "91110108MA01AB2C3";
    let check = uscc_check_char(first17).unwrap();
    let last = if valid {
        check
    } else if check == '0' {
        '1'
    } else {
        '0'
    };
    format!("{first17}{last}")
}

fn customer(n: u128, owner: u128, fields: &[(&str, &str)]) -> Event {
    Event::CustomerCreated(CustomerCreated {
        customer_id: CustomerId(id(n)),
        fields: fields.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
        owner: Some(UserId(id(owner))),
        from_lead: None,
    })
}

fn lead(n: u128, phone_raw: bool, bad_uscc: bool, intake_flags: bool, region: &str) -> Event {
    let mut custom = BTreeMap::new();
    if intake_flags {
        custom.insert("intake.flags".to_owned(), "email_invalid".to_owned());
    }
    Event::LeadCaptured(LeadCaptured {
        lead_id: LeadId(id(n)),
        name: Some("钱女士".into()),
        company: None,
        phone: Some(if phone_raw { "1380013" } else { "13800138000" }.into()),
        phone_e164: (!phone_raw).then(|| "+8613800138000".into()),
        email: None,
        wechat: None,
        uscc: bad_uscc.then(|| uscc(false)),
        uscc_checksum_ok: false,
        region: Some(region.into()),
        channel: Channel::WebForm { form_id: "f".into() },
        source: "官网".into(),
        custom_attributes: custom,
        captured_at: chrono::Utc::now(),
    })
}

fn change(field: &str, old: Option<&str>, new: Option<&str>) -> FieldChange {
    FieldChange { field: field.into(), old: old.map(Into::into), new: new.map(Into::into) }
}

fn filled(report: &HealthReport, field: &str) -> u64 {
    report.filled.iter().find(|(f, _)| f == field).unwrap().1
}

async fn append(log: &TempLog, events: Vec<Event>) {
    let commands: Vec<_> = events.into_iter().map(|e| Generated { actor: "tester".into(), events: vec![e] }).collect();
    append_all(&log.store, &commands).await;
}

fn report(handle: &ProjectionHandle, scope: HealthScope, pairs: &[(Uuid, Uuid)]) -> HealthReport {
    health(&handle.reader(), &scope, pairs).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn completeness_flags_and_duplicate_rate_per_scope() {
    let (u1, u2) = (901, 902);
    let log = TempLog::new();
    let valid = uscc(true);
    let invalid = uscc(false);
    append(
        &log,
        vec![
            customer(
                1,
                u1,
                &[("name", "康达一"), ("phone", "+8613800000001"), ("region", "北京"), ("industry", "制造")],
            ),
            // A phone kept raw (it came from a lead with an invalid number).
            customer(2, u2, &[("name", "华信二"), ("phone", "1380013"), ("region", "上海"), ("uscc", &valid)]),
            customer(3, u1, &[("name", "瑞丰三"), ("region", "北京"), ("uscc", &invalid)]),
            customer(4, u1, &[("name", "新元四"), ("region", "北京"), ("custom.tags", "重点")]),
            Event::CustomersMerged(CustomersMerged {
                survivor_id: CustomerId(id(1)),
                absorbed_id: CustomerId(id(4)),
                reason: "人工核实".into(),
                reason_text: String::new(),
                field_changes: vec![],
                merged_at: chrono::Utc::now(),
            }),
            Event::CustomerAbsorbed(CustomerAbsorbed {
                absorbed_id: CustomerId(id(4)),
                survivor_id: CustomerId(id(1)),
                reason: "人工核实".into(),
            }),
            lead(101, true, false, false, "北京"),
            lead(102, false, true, false, "北京"),
            lead(103, false, false, true, "北京"),
            lead(104, false, false, false, "上海"),
        ],
    )
    .await;
    let db = ProjectionDb::temporary().unwrap();
    let projector = crate::projector();
    let handle = spawn(&db, log.store.clone(), projector).unwrap();
    settle(&handle, &projector, &log.store).await;

    let pairs = [(id(1), id(2)), (id(2), id(4)), (id(3), id(99))];
    let all = report(&handle, HealthScope::All, &pairs);
    assert_eq!(all.live, 3, "C4 is merged into C1");
    assert_eq!(["name", "phone", "region", "industry", "uscc", "email"].map(|f| filled(&all, f)), [3, 2, 3, 1, 2, 0]);
    assert_eq!(all.completeness(filled(&all, "phone")), Some(2.0 / 3.0));
    assert_eq!(all.customer_flags, BTreeMap::from([("phone_raw".into(), 1), ("uscc_checksum".into(), 1)]));
    assert_eq!(all.leads, 4);
    assert_eq!(
        all.lead_flags,
        BTreeMap::from([("intake_flagged".into(), 1), ("phone_raw".into(), 1), ("uscc_checksum".into(), 1)])
    );
    // C1, C2, C3 are in open pairs; C4 is merged away and C99 does not exist.
    assert_eq!((all.duplicate_customers, all.duplicate_rate()), (3, Some(1.0)));

    let beijing = report(&handle, HealthScope::Region("北京".into()), &pairs);
    assert_eq!((beijing.live, beijing.duplicate_customers, beijing.leads), (2, 2, 3));
    assert_eq!(beijing.customer_flags["uscc_checksum"], 1);
    assert_eq!(beijing.customer_flags["phone_raw"], 0);
    let mine = report(&handle, HealthScope::Owner(id(u1)), &[(id(1), id(2))]);
    assert_eq!((mine.live, mine.duplicate_customers, mine.leads), (2, 1, 0));
    assert_eq!(mine.duplicate_rate(), Some(0.5));
    assert_eq!(report(&handle, HealthScope::Owner(id(7)), &pairs).duplicate_rate(), None, "nobody's records");

    // Filling a field, fixing a USCC, handing a customer over and unmerging move the counts.
    append(
        &log,
        vec![
            Event::CustomerUpdated(CustomerUpdated {
                customer_id: CustomerId(id(1)),
                changes: vec![change("email", None, Some("info@kangda.example.cn"))],
            }),
            Event::CustomerUpdated(CustomerUpdated {
                customer_id: CustomerId(id(3)),
                changes: vec![change("uscc", Some(&invalid), Some(&valid))],
            }),
            Event::OwnerChanged(OwnerChanged {
                subject: Owned::Customer(CustomerId(id(3))),
                from: Some(UserId(id(u1))),
                to: UserId(id(u2)),
                reason: "handover".into(),
                receiver_rank: 1,
                over_capacity: false,
            }),
            Event::CustomerUnmerged(CustomerUnmerged {
                survivor_id: CustomerId(id(1)),
                absorbed_id: CustomerId(id(4)),
                reason: "误合并".into(),
                restored: vec![],
                kept: vec![],
                post_merge_activities: vec![],
            }),
            Event::CustomerRestored(CustomerRestored {
                absorbed_id: CustomerId(id(4)),
                survivor_id: CustomerId(id(1)),
            }),
        ],
    )
    .await;
    settle(&handle, &projector, &log.store).await;
    let all = report(&handle, HealthScope::All, &pairs);
    assert_eq!((all.live, filled(&all, "email"), all.customer_flags["uscc_checksum"]), (4, 1, 0));
    assert_eq!((all.duplicate_customers, all.duplicate_rate()), (4, Some(1.0)), "C4 counts again");
    let counts = |o| {
        let r = report(&handle, HealthScope::Owner(id(o)), &[]);
        (r.live, filled(&r, "uscc"))
    };
    assert_eq!((counts(u1), counts(u2)), ((2, 0), (2, 2)));
    handle.stop().await;
}
