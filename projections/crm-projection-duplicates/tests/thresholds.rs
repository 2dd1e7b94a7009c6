//! The duplicate thresholds of the rules: they configure the matcher, are part of the
//! fingerprint (a change rebuilds from position 0), and the guard's lookup uses them too.

use std::collections::BTreeMap;

use crm_domain::{CustomerCreated, CustomerId, Event, ExactKey, KeyCollision, Rules};
use crm_eventlog::{Metadata, RecordedEvent};
use crm_projection_duplicates::{match_config, DuplicatesProjector};
use crm_projection_runtime::testing::fold_all;
use crm_projection_runtime::Projector;
use uuid::Uuid;

fn cid(n: u128) -> CustomerId {
    CustomerId(Uuid::from_u128(0x3000 + n))
}

fn fields(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

fn created(n: u128, pairs: &[(&str, &str)]) -> RecordedEvent {
    let event = Event::CustomerCreated(CustomerCreated {
        customer_id: cid(n),
        fields: fields(pairs),
        owner: None,
        from_lead: None,
    });
    RecordedEvent {
        position: n as u64,
        stream: event.stream(),
        version: 0,
        id: Uuid::from_u128(n),
        event_type: event.event_type().to_owned(),
        schema_version: event.schema_version(),
        recorded_at_micros: 1_700_000_000_000_000,
        metadata: Metadata::default(),
        payload: event.encode(),
    }
}

/// Company names that agree at 85% similarity but not at 100%, same contact.
fn similar_companies() -> Vec<RecordedEvent> {
    vec![
        created(1, &[("name", "杭州星辰电子科技有限公司"), ("contact_name", "王建国")]),
        created(2, &[("name", "杭州星辰电子有限公司"), ("contact_name", "王建国")]),
    ]
}

/// A synthetic USCC with a correct check character.
fn valid_uscc() -> String {
    let first17 = "91440300MA5F00001";
    format!("{first17}{}", crm_domain::uscc_check_char(first17).unwrap())
}

/// A synthetic USCC whose check character is wrong.
const BAD_USCC: &str = "91440100MA5F00002X";

fn strict() -> Rules {
    let mut rules = Rules::default();
    rules.duplicates.company_name_similarity_pct = 100;
    rules
}

fn pair_count(state: &BTreeMap<Vec<u8>, Vec<u8>>) -> usize {
    state.keys().filter(|k| k.starts_with(b"p/")).count()
}

#[test]
fn thresholds_configure_the_matcher_and_the_fingerprint() {
    let config = match_config(&strict());
    assert_eq!(config.thresholds.company_similarity, 1.0);
    assert_eq!(config.thresholds.contact_name_max_edits, 2);
    let projector = DuplicatesProjector::new();
    assert_eq!(projector.fingerprint(&Rules::default()), projector.fingerprint(&Rules::default()));
    assert_ne!(projector.fingerprint(&Rules::default()), projector.fingerprint(&strict()));
    let mut other_edits = Rules::default();
    other_edits.duplicates.contact_name_edit_distance = 1;
    assert_ne!(projector.fingerprint(&Rules::default()), projector.fingerprint(&other_edits));
    let unrelated = Rules { follow_up_reminder_days: 30, ..Rules::default() };
    assert_eq!(projector.fingerprint(&Rules::default()), projector.fingerprint(&unrelated), "only thresholds count");
}

#[test]
fn a_build_with_stricter_thresholds_drops_the_pair() {
    assert_eq!(pair_count(&fold_all(&DuplicatesProjector::new(), &Rules::default(), &similar_companies())), 1);
    assert_eq!(pair_count(&fold_all(&DuplicatesProjector::new(), &strict(), &similar_companies())), 0);
}

#[test]
fn the_guard_lookup_finds_key_collisions_and_suspects_with_the_build_thresholds() {
    let projector = DuplicatesProjector::new();
    let mut events = similar_companies();
    events.push(created(3, &[("name", "上海远航物流有限公司"), ("phone", "+86 139 1111 2222")]));
    events.push(created(4, &[("name", "深圳某某贸易有限公司"), ("uscc", &valid_uscc())]));
    events.push(created(5, &[("name", "广州某某贸易有限公司"), ("uscc", BAD_USCC)]));
    fold_all(&projector, &Rules::default(), &events);
    let lead = Uuid::from_u128(99);

    // The same mobile written another way is an exact collision, whatever the name.
    let check =
        projector.check("fold", &Rules::default(), lead, &fields(&[("name", "李娜"), ("phone", "0086 13911112222")]));
    assert_eq!(check.collisions, vec![KeyCollision { customer_id: cid(3), key: ExactKey::Mobile }]);

    // A similar company is a suspect under the default thresholds, not under strict ones.
    let similar = fields(&[("name", "杭州星辰电子有限公司"), ("contact_name", "王建国")]);
    let check = projector.check("fold", &Rules::default(), lead, &similar);
    assert!(check.collisions.is_empty());
    let ids: Vec<CustomerId> = check.suspected.iter().map(|s| s.customer_id).collect();
    assert!(ids.contains(&cid(1)) && ids.contains(&cid(2)), "{check:?}");
    let one = check.suspected.iter().find(|s| s.customer_id == cid(1)).unwrap();
    assert!(one.fields.iter().any(|f| f.field == "company" && f.weight_centi > 0), "{one:?}");
    let check = projector.check("fold", &strict(), lead, &similar);
    assert_eq!(check.suspected.iter().map(|s| s.customer_id).collect::<Vec<_>>(), vec![cid(2)], "{check:?}");

    // A customer being edited is never its own duplicate.
    let check = projector.check("fold", &Rules::default(), cid(2).0, &similar);
    assert!(check.suspected.iter().all(|s| s.customer_id != cid(2)), "{check:?}");
    // A valid USCC is a master key; one failing its checksum is not.
    let check = projector.check("fold", &Rules::default(), lead, &fields(&[("name", "某某"), ("uscc", &valid_uscc())]));
    assert_eq!(check.collisions, vec![KeyCollision { customer_id: cid(4), key: ExactKey::Uscc }]);
    let bad = crm_domain::normalize_uscc(BAD_USCC);
    assert!(bad.well_formed && !bad.checksum_ok, "the fixture must fail only its checksum");
    let check = projector.check("fold", &Rules::default(), lead, &fields(&[("name", "某某"), ("uscc", BAD_USCC)]));
    assert!(check.collisions.is_empty(), "{check:?}");
}
