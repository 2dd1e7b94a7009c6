//! The fold: pairs found at create/update, dismissal, merge report, unmerge.

use std::collections::BTreeMap;

use chrono::{TimeZone, Utc};
use crm_domain::{
    CustomerAbsorbed, CustomerCreated, CustomerId, CustomerRestored, CustomerUnmerged, CustomerUpdated,
    CustomersMerged, DuplicateDismissed, Event, FieldChange, Rules,
};
use crm_eventlog::{Metadata, RecordedEvent};
use crm_projection_duplicates::{pair_key, Candidate, DuplicatesProjector, MergeReport, Status, Value};
use crm_projection_runtime::{decode_value, testing::fold_all, Projector};
use uuid::Uuid;

fn cid(n: u128) -> CustomerId {
    CustomerId(Uuid::from_u128(0x2000 + n))
}

fn recorded(events: Vec<(Event, &str)>) -> Vec<RecordedEvent> {
    events
        .into_iter()
        .enumerate()
        .map(|(i, (event, actor))| RecordedEvent {
            position: i as u64 + 1,
            stream: event.stream(),
            version: 0,
            id: Uuid::from_u128(i as u128 + 1),
            event_type: event.event_type().to_owned(),
            schema_version: event.schema_version(),
            recorded_at_micros: 1_700_000_000_000_000 + i as i64,
            metadata: Metadata { actor: actor.to_owned(), ..Metadata::default() },
            payload: event.encode(),
        })
        .collect()
}

fn created(n: u128, fields: &[(&str, &str)]) -> Event {
    Event::CustomerCreated(CustomerCreated {
        customer_id: cid(n),
        fields: fields.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
        owner: None,
        from_lead: None,
    })
}

fn company_a() -> Event {
    created(1, &[("name", "北京市某某科技股份有限公司"), ("phone", "+86 138 0013 8000"), ("contact_name", "王建国")])
}

fn company_b() -> Event {
    created(2, &[("name", "北京某某科技"), ("phone", "0086 138-0013-8000"), ("contact_name", "王建国")])
}

fn unrelated() -> Event {
    created(3, &[("name", "上海远航物流有限公司"), ("phone", "+86 139 1111 2222"), ("contact_name", "李娜")])
}

fn fold(events: Vec<(Event, &str)>) -> BTreeMap<Vec<u8>, Value> {
    let projector = DuplicatesProjector::new();
    // These tests feed only events the read model reacts to, and `fold_all` decodes them all;
    // the runner decodes only the listed types (and the duplicate guard waits only for them).
    for (event, _) in &events {
        assert!(projector.decodes(event.event_type()), "{} is missing from DECODED", event.event_type());
    }
    fold_all(&projector, &Rules::default(), &recorded(events))
        .into_iter()
        .map(|(k, v)| {
            let value = decode_value::<Value>(&k, &v).expect("decodes");
            (k, value)
        })
        .collect()
}

fn pairs(state: &BTreeMap<Vec<u8>, Value>) -> Vec<Candidate> {
    state
        .values()
        .filter_map(|v| match v {
            Value::Pair(p) => Some((**p).clone()),
            _ => None,
        })
        .collect()
}

fn reports(state: &BTreeMap<Vec<u8>, Value>) -> Vec<MergeReport> {
    state
        .values()
        .filter_map(|v| match v {
            Value::Merge(m) => Some((**m).clone()),
            _ => None,
        })
        .collect()
}

fn merged(survivor: u128, absorbed: u128) -> Vec<(Event, &'static str)> {
    vec![
        (
            Event::CustomersMerged(CustomersMerged {
                survivor_id: cid(survivor),
                absorbed_id: cid(absorbed),
                reason: "duplicate".into(),
                reason_text: "同一家公司，名称写法不同".into(),
                field_changes: vec![FieldChange {
                    field: "email".into(),
                    old: None,
                    new: Some("info@example.com".into()),
                }],
                merged_at: Utc.with_ymd_and_hms(2026, 11, 23, 10, 0, 0).unwrap(),
            }),
            "user-merger",
        ),
        (
            Event::CustomerAbsorbed(CustomerAbsorbed {
                absorbed_id: cid(absorbed),
                survivor_id: cid(survivor),
                reason: "duplicate".into(),
            }),
            "user-merger",
        ),
    ]
}

fn unmerged(survivor: u128, absorbed: u128) -> Vec<(Event, &'static str)> {
    vec![
        (
            Event::CustomerUnmerged(CustomerUnmerged {
                survivor_id: cid(survivor),
                absorbed_id: cid(absorbed),
                reason: "合并错误".into(),
                restored: vec![FieldChange { field: "email".into(), old: Some("info@example.com".into()), new: None }],
                kept: vec![],
                post_merge_activities: vec![],
            }),
            "user-undo",
        ),
        (
            Event::CustomerRestored(CustomerRestored { absorbed_id: cid(absorbed), survivor_id: cid(survivor) }),
            "user-undo",
        ),
    ]
}

#[test]
fn duplicates_written_differently_become_an_open_pair_with_an_explanation() {
    let state = fold(vec![(company_a(), "u"), (unrelated(), "u"), (company_b(), "u")]);
    let pairs = pairs(&state);
    assert_eq!(pairs.len(), 1, "{pairs:?}");
    let pair = &pairs[0];
    assert_eq!((pair.a, pair.b), (cid(1).0, cid(2).0));
    assert_eq!(pair.status, Status::Open);
    assert_eq!(pair.decision, "duplicate");
    assert!(pair.weight > 0.0);
    assert_eq!(pair.found_position, 3);
    assert!(pair.explanation.contains("mobile"), "{}", pair.explanation);
    assert!(pair.contributions.iter().any(|c| c.field == "company" && c.weight > 0.0), "{:?}", pair.contributions);
}

#[test]
fn an_update_that_makes_a_duplicate_creates_the_pair_and_keeps_a_dismissal() {
    let update = Event::CustomerUpdated(CustomerUpdated {
        customer_id: cid(3),
        changes: vec![
            FieldChange {
                field: "name".into(),
                old: Some("上海远航物流有限公司".into()),
                new: Some("北京某某科技有限公司".into()),
            },
            FieldChange {
                field: "phone".into(),
                old: Some("+86 139 1111 2222".into()),
                new: Some("+8613800138000".into()),
            },
            FieldChange { field: "contact_name".into(), old: Some("李娜".into()), new: Some("王建国".into()) },
        ],
    });
    let dismiss = Event::DuplicateDismissed(DuplicateDismissed {
        customer_id: cid(3),
        other_id: cid(1),
        reason: "总公司与分公司".into(),
    });
    let state = fold(vec![(company_a(), "u"), (unrelated(), "u"), (update.clone(), "u"), (dismiss, "reviewer")]);
    let Some(Value::Pair(pair)) = state.get(&pair_key(&cid(1).0, &cid(3).0)) else { panic!("no pair: {state:?}") };
    assert_eq!(pair.found_position, 3);
    assert_eq!(
        pair.status,
        Status::Dismissed { reason: "总公司与分公司".into(), actor: "reviewer".into(), position: 4 }
    );

    // A later update re-scores the pair but keeps the reviewer's decision.
    let again = Event::CustomerUpdated(CustomerUpdated {
        customer_id: cid(3),
        changes: vec![FieldChange { field: "region".into(), old: None, new: Some("北京".into()) }],
    });
    let mut events = vec![(company_a(), "u"), (unrelated(), "u"), (update, "u")];
    events.push((
        Event::DuplicateDismissed(DuplicateDismissed {
            customer_id: cid(3),
            other_id: cid(1),
            reason: "总公司与分公司".into(),
        }),
        "reviewer",
    ));
    events.push((again, "u"));
    let state = fold(events);
    let Some(Value::Pair(pair)) = state.get(&pair_key(&cid(1).0, &cid(3).0)) else { panic!("no pair") };
    assert_eq!(pair.updated_position, 5);
    assert_eq!(pair.status.name(), "dismissed");
}

#[test]
fn a_merge_is_reported_with_reason_actor_and_score_and_an_unmerge_restores_the_customers() {
    let mut events = vec![(company_a(), "u"), (company_b(), "u")];
    let before = fold(events.clone());
    let score_before = pairs(&before)[0].weight;
    events.extend(merged(1, 2));
    let after_merge = fold(events.clone());
    let pair = &pairs(&after_merge)[0];
    assert_eq!(pair.status, Status::Merged { survivor: cid(1).0, actor: "user-merger".into(), position: 3 });
    let report = &reports(&after_merge)[0];
    assert_eq!((report.survivor, report.absorbed), (cid(1).0, cid(2).0));
    assert_eq!(report.reason, "duplicate");
    assert_eq!(report.reason_text, "同一家公司，名称写法不同");
    assert_eq!(report.actor, "user-merger");
    assert_eq!(report.status_before, "open");
    assert_eq!(report.weight, score_before, "the score just before the merge");
    assert!(report.explanation.contains("mobile"));
    assert_eq!(report.field_changes, vec!["email: (none) -> info@example.com".to_owned()]);
    let Some(Value::Customer(absorbed)) = after_merge.get(format!("r/{}", cid(2).0).as_bytes()) else { panic!() };
    assert_eq!(absorbed.absorbed_into, Some(cid(1).0));

    events.extend(unmerged(1, 2));
    let after_unmerge = fold(events);
    for id in [cid(1).0, cid(2).0] {
        let key = format!("r/{id}").into_bytes();
        assert_eq!(after_unmerge.get(&key), before.get(&key), "customer {id} as before the merge");
    }
    let pair = &pairs(&after_unmerge)[0];
    assert_eq!(pair.status, Status::Open);
    let report = &reports(&after_unmerge)[0];
    assert_eq!(report.unmerged_position, Some(5));
    assert_eq!(report.unmerged_by.as_deref(), Some("user-undo"));
    assert_eq!(report.unmerge_reason.as_deref(), Some("合并错误"));
}

#[test]
fn absorbed_customers_form_no_new_pairs_until_restored() {
    let third =
        created(4, &[("name", "某某科技（北京）有限公司"), ("phone", "13800138000"), ("contact_name", "王建国")]);
    let mut events = vec![(company_a(), "u"), (company_b(), "u")];
    events.extend(merged(1, 2));
    events.push((third, "u"));
    let state = fold(events.clone());
    let with_absorbed: Vec<_> = pairs(&state).into_iter().filter(|p| p.a == cid(2).0 || p.b == cid(2).0).collect();
    assert_eq!(with_absorbed.len(), 1, "only the merged pair: {with_absorbed:?}");
    assert!(state.contains_key(&pair_key(&cid(1).0, &cid(4).0)));
    events.extend(unmerged(1, 2));
    let state = fold(events);
    assert!(state.contains_key(&pair_key(&cid(2).0, &cid(4).0)), "restored customer is matched again");
}

#[test]
fn a_second_build_with_the_same_projector_starts_from_an_empty_matcher() {
    let mut events = vec![(company_a(), "u"), (unrelated(), "u"), (company_b(), "u")];
    events.extend(merged(1, 2));
    let events = recorded(events);
    let projector = DuplicatesProjector::new();
    let first = fold_all(&projector, &Rules::default(), &events);
    // The same projector folds the log again (a rebuild or a verify): same result, and the
    // absorbed customer of the first build does not leak into the second.
    let second = fold_all(&projector, &Rules::default(), &events);
    assert_eq!(first, second);
}

#[test]
fn the_decoded_types_are_event_types_of_the_domain() {
    crm_projection_runtime::testing::assert_event_types_exist(crm_projection_duplicates::DECODED);
}
