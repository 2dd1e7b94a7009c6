use std::collections::BTreeMap;

use chrono::NaiveDate;
use crm_domain::testing::{context_at, given};
use crm_domain::*;

use crate::support::*;

fn kangda() -> Event {
    customer_created(1, &[("name", "北京市康达医疗器械有限公司"), ("phone", "+8613800138000"), ("region", "北京")])
}

#[test]
fn create_normalises_fields() {
    let fields = map(&[
        ("name", "康达医疗器械"),
        ("phone", "１３８ ００１３ ８０００"),
        ("email", " Sales@Example.COM "),
        ("custom.展会", "CMEF"),
    ]);
    given::<Customer>(vec![])
        .when(CustomerCommand::Create { customer_id: customer_id(1), fields, owner: Some(user_id(1)) })
        .then_expect_events(vec![customer_created(
            1,
            &[
                ("name", "康达医疗器械"),
                ("phone", "+8613800138000"),
                ("email", "sales@example.com"),
                ("custom.展会", "CMEF"),
            ],
        )]);
}

#[test]
fn create_refusals() {
    let create = |fields: &[(&str, &str)]| CustomerCommand::Create {
        customer_id: customer_id(1),
        fields: map(fields),
        owner: None,
    };
    given::<Customer>(vec![]).when(create(&[("phone", "13800138000")])).then_expect_rule("customer.name_required");
    given::<Customer>(vec![]).when(create(&[("name", "康达"), ("fax", "1")])).then_expect_error(
        DomainError::InvalidArgument {
            field: "fields.fax".into(),
            rule: "customer.unknown_field".into(),
            message: format!("unknown field fax; use one of {} or custom.<name>", CUSTOMER_FIELDS.join(", ")),
        },
    );
    given::<Customer>(vec![])
        .when(create(&[("name", "康达"), ("phone", "12345")]))
        .then_expect_rule("customer.phone_invalid");
    given::<Customer>(vec![kangda()])
        .when(create(&[("name", "康达")]))
        .then_expect_error(DomainError::AlreadyExists { kind: "customer".into(), id: customer_id(1).to_string() });
}

#[test]
fn update_records_each_field_old_and_new() {
    let changes: BTreeMap<String, Option<String>> = [
        ("phone".to_owned(), Some("139 0013 9000".to_owned())),
        ("region".to_owned(), Some("北京".to_owned())), // unchanged: not recorded
        ("address".to_owned(), Some("北京市海淀区中关村大街1号".to_owned())),
    ]
    .into();
    let state = given::<Customer>(vec![kangda()]).when(CustomerCommand::Update { changes }).then_expect_events(vec![
        Event::CustomerUpdated(CustomerUpdated {
            customer_id: customer_id(1),
            changes: vec![
                FieldChange {
                    field: "address".into(), old: None, new: Some("北京市海淀区中关村大街1号".into())
                },
                FieldChange {
                    field: "phone".into(),
                    old: Some("+8613800138000".into()),
                    new: Some("+8613900139000".into()),
                },
            ],
        }),
    ]);
    assert_eq!(state.fields["phone"], "+8613900139000");
    let cleared = given::<Customer>(vec![kangda()])
        .when(CustomerCommand::Update { changes: [("region".to_owned(), None)].into() })
        .then_expect_events(vec![Event::CustomerUpdated(CustomerUpdated {
            customer_id: customer_id(1),
            changes: vec![FieldChange { field: "region".into(), old: Some("北京".into()), new: None }],
        })]);
    assert!(!cleared.fields.contains_key("region"));
}

#[test]
fn update_refusals() {
    let update =
        |k: &str, v: Option<&str>| CustomerCommand::Update { changes: [(k.to_owned(), v.map(str::to_owned))].into() };
    given::<Customer>(vec![kangda()]).when(update("region", Some("北京"))).then_expect_rule("customer.unchanged");
    given::<Customer>(vec![kangda()]).when(update("name", None)).then_expect_rule("customer.name_required");
    given::<Customer>(vec![kangda()]).when(update("colour", Some("red"))).then_expect_rule("customer.unknown_field");
    given::<Customer>(vec![])
        .when(update("region", Some("上海")))
        .then_expect_error(DomainError::NotFound { kind: "customer".into(), id: "(new)".into() });
    let absorbed = Event::CustomerAbsorbed(CustomerAbsorbed {
        absorbed_id: customer_id(1),
        survivor_id: customer_id(2),
        reason: "同一手机号".into(),
    });
    given::<Customer>(vec![kangda(), absorbed])
        .when(update("region", Some("上海")))
        .then_expect_rule("customer.absorbed");
}

fn new_contact(n: u128, name: &str) -> NewContact {
    NewContact {
        contact_id: contact_id(n),
        name: name.into(),
        title: Some("采购经理".into()),
        phone: Some("+86 138 0013 8000".into()),
        email: None,
        wechat: None,
    }
}

#[test]
fn contacts() {
    let state = given::<Customer>(vec![kangda()])
        .when(CustomerCommand::AddContact(new_contact(1, "李 娜")))
        .then_expect_events(vec![Event::ContactAdded(ContactAdded {
            customer_id: customer_id(1),
            contact: Contact {
                contact_id: contact_id(1),
                name: "李娜".into(),
                title: Some("采购经理".into()),
                phone: Some("+86 138 0013 8000".into()),
                phone_e164: Some("+8613800138000".into()),
                email: None,
                wechat: None,
            },
        })]);
    assert_eq!(state.contacts.len(), 1);
    let added = Event::ContactAdded(ContactAdded {
        customer_id: customer_id(1),
        contact: state.contacts[&contact_id(1)].clone(),
    });
    given::<Customer>(vec![kangda(), added])
        .when(CustomerCommand::AddContact(new_contact(1, "李娜")))
        .then_expect_error(DomainError::AlreadyExists { kind: "contact".into(), id: contact_id(1).to_string() });
    given::<Customer>(vec![kangda()])
        .when(CustomerCommand::AddContact(new_contact(2, " ")))
        .then_expect_rule("contact.name_required");
}

fn logged(n: u128, at: &str) -> LogActivity {
    LogActivity {
        kind: Some(ActivityKind::Visit),
        duration_minutes: Some(90),
        keywords: vec!["报价".into(), "手术室".into()],
        summary: "上门拜访设备科".into(),
        next_follow_up: NaiveDate::from_ymd_opt(2026, 3, 5),
        ..activity(n, at)
    }
}

fn as_event(cmd: &LogActivity) -> Event {
    Event::ActivityLogged(ActivityLogged {
        customer_id: customer_id(1),
        activity_id: cmd.activity_id,
        by: cmd.by,
        kind: cmd.kind.unwrap(),
        occurred_at: cmd.occurred_at.unwrap(),
        duration_minutes: cmd.duration_minutes,
        keywords: cmd.keywords.clone(),
        summary: cmd.summary.clone(),
        next_follow_up: cmd.next_follow_up,
        contact_id: cmd.contact_id,
        opportunity_id: cmd.opportunity_id,
        inherited_from: None,
        inherited_fields: vec![],
    })
}

#[test]
fn first_activity_is_recorded_as_given() {
    let cmd = logged(1, "2026-03-01T10:00:00Z");
    given::<Customer>(vec![kangda()])
        .when(CustomerCommand::LogActivity(cmd.clone()))
        .then_expect_events(vec![as_event(&cmd)]);
}

#[test]
fn empty_fields_inherit_from_an_activity_within_72_hours() {
    let first = logged(1, "2026-02-28T10:00:00Z");
    let follow_up = LogActivity { summary: "电话确认报价".into(), ..activity(2, "2026-03-02T08:00:00Z") };
    let events = given::<Customer>(vec![kangda(), as_event(&first)])
        .when(CustomerCommand::LogActivity(follow_up))
        .result()
        .unwrap();
    let [Event::ActivityLogged(e)] = events.as_slice() else { panic!("{events:?}") };
    assert_eq!(e.kind, ActivityKind::Visit);
    assert_eq!(e.duration_minutes, Some(90));
    assert_eq!(e.keywords, ["报价", "手术室"]);
    assert_eq!(e.next_follow_up, NaiveDate::from_ymd_opt(2026, 3, 5));
    assert_eq!(e.summary, "电话确认报价", "the summary is never inherited");
    assert_eq!(e.inherited_from, Some(activity_id(1)));
    assert_eq!(e.inherited_fields, ["kind", "duration_minutes", "keywords", "next_follow_up"]);
    // Given fields win over inherited ones.
    let own = LogActivity { kind: Some(ActivityKind::WeChat), ..activity(3, "2026-03-02T08:00:00Z") };
    let events =
        given::<Customer>(vec![kangda(), as_event(&first)]).when(CustomerCommand::LogActivity(own)).result().unwrap();
    let [Event::ActivityLogged(e)] = events.as_slice() else { panic!() };
    assert_eq!((e.kind, e.inherited_fields.contains(&"kind".to_owned())), (ActivityKind::WeChat, false));
}

#[test]
fn nothing_is_inherited_after_72_hours() {
    let first = logged(1, "2026-02-26T08:59:00Z"); // 72h01m before the next one
    given::<Customer>(vec![kangda(), as_event(&first)])
        .when(CustomerCommand::LogActivity(activity(2, "2026-03-01T09:00:00Z")))
        .then_expect_rule("activity.kind_required");
    let rules = Rules { activity_inherit_hours: 96, ..Rules::default() };
    let events = given::<Customer>(vec![kangda(), as_event(&first)])
        .with_rules(rules)
        .when(CustomerCommand::LogActivity(activity(2, "2026-03-01T09:00:00Z")))
        .result()
        .unwrap();
    assert!(matches!(&events[0], Event::ActivityLogged(e) if e.inherited_from == Some(activity_id(1))));
}

#[test]
fn activity_refusals() {
    let too_many = LogActivity {
        keywords: vec!["a".into(), "b".into(), "c".into(), "d".into()],
        ..logged(1, "2026-03-01T10:00:00Z")
    };
    given::<Customer>(vec![kangda()]).when(CustomerCommand::LogActivity(too_many)).then_expect_error(
        DomainError::InvalidArgument {
            field: "keywords".into(),
            rule: "activity.max_keywords".into(),
            message: "at most 3 keywords, got 4".into(),
        },
    );
    // Duplicates and blanks do not count.
    let dupes = LogActivity {
        keywords: vec!["报价".into(), " 报价 ".into(), "".into(), "b".into(), "c".into()],
        ..logged(1, "2026-03-01T10:00:00Z")
    };
    assert!(given::<Customer>(vec![kangda()]).when(CustomerCommand::LogActivity(dupes)).result().is_ok());
    let future = logged(1, "2026-03-02T09:00:01Z");
    given::<Customer>(vec![kangda()]).when(CustomerCommand::LogActivity(future)).then_expect_rule("activity.in_future");
    let unknown_contact = LogActivity { contact_id: Some(contact_id(9)), ..logged(1, "2026-03-01T10:00:00Z") };
    given::<Customer>(vec![kangda()])
        .when(CustomerCommand::LogActivity(unknown_contact))
        .then_expect_error(DomainError::NotFound { kind: "contact".into(), id: contact_id(9).to_string() });
    let past_follow_up =
        LogActivity { next_follow_up: NaiveDate::from_ymd_opt(2026, 2, 1), ..logged(1, "2026-03-01T10:00:00Z") };
    given::<Customer>(vec![kangda()])
        .when(CustomerCommand::LogActivity(past_follow_up))
        .then_expect_rule("activity.follow_up_in_past");
    let first = logged(1, "2026-03-01T10:00:00Z");
    given::<Customer>(vec![kangda(), as_event(&first)])
        .at(context_at("2026-03-02T09:00:00Z"))
        .when(CustomerCommand::LogActivity(logged(1, "2026-03-01T11:00:00Z")))
        .then_expect_error(DomainError::AlreadyExists { kind: "activity".into(), id: activity_id(1).to_string() });
}
