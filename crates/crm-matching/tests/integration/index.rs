//! The candidate index: lookups, exact collisions, removal.

use crm_matching::{BlockingConfig, Decision, Index, KeyKind, Matcher, Outcome, Prepared, Record, RecordKind};

fn company(id: &str, name: &str, phone: &str) -> Record {
    Record { phones: vec![phone.into()], ..Record::company(id, name) }
}

#[test]
fn finds_a_spelling_variant_and_explains_it() {
    let mut matcher = Matcher::default();
    matcher.insert(&company("c1", "北京市某某科技股份有限公司", "13800138000"));
    matcher.insert(&company("c2", "上海星辰电子有限公司", "13900139000"));
    let found = matcher.find(&company("lead", "北京某某科技", "+86 138-0013-8000"));
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].id, "c1");
    assert!(found[0].result.score > 0.5);
}

#[test]
fn exact_collisions_name_the_existing_customer() {
    let mut matcher = Matcher::default();
    let mut known = company("c1", "康达医疗器械有限公司", "13800138000");
    known.uscc = Some("91110108MA01AB2C3X".into());
    matcher.insert(&known);
    let lead = company("lead", "完全不同的名字", "0086 138 0013 8000");
    let collisions = matcher.exact_collisions(&lead);
    assert_eq!(collisions.len(), 1);
    assert_eq!((collisions[0].id.as_str(), collisions[0].key), ("c1", KeyKind::Mobile));
    let none = matcher.exact_collisions(&company("x", "康达医疗器械有限公司", "13700137000"));
    assert!(none.is_empty(), "a similar name alone is not an exact collision");
}

#[test]
fn removed_records_are_not_candidates() {
    let mut matcher = Matcher::default();
    matcher.insert(&company("c1", "北京康达医疗器械有限公司", "13800138000"));
    assert!(matcher.remove("c1"));
    assert!(!matcher.remove("c1"));
    assert!(matcher.find(&company("lead", "北京康达医疗器械有限公司", "13800138000")).is_empty());
    assert!(matcher.is_empty());
}

#[test]
fn oversized_blocks_are_not_used() {
    let mut index = Index::new(BlockingConfig { max_block: 3, ..BlockingConfig::default() });
    // Five different people share a birth date and nothing else: their block is dropped.
    for i in 0..5 {
        let mut r = Record::person(format!("p{i}"), format!("路人{i}"));
        r.kind = RecordKind::Person;
        r.birth_date = Some("1990-01-01".into());
        index.insert(Prepared::new(&r));
    }
    let mut probe = Record::person("q", "路人0");
    probe.birth_date = Some("1990-01-01".into());
    let candidates = index.candidates(&Prepared::new(&probe));
    assert!(
        candidates.iter().all(|c| c.prepared.id == "p0"),
        "{:?}",
        candidates.iter().map(|c| &c.prepared.id).collect::<Vec<_>>()
    );
}

#[test]
fn reinserting_an_id_replaces_it() {
    let mut index = Index::default();
    index.insert(Prepared::new(&company("c1", "北京康达医疗器械有限公司", "13800138000")));
    index.insert(Prepared::new(&company("c1", "上海星辰电子有限公司", "13900139000")));
    assert_eq!(index.len(), 1);
    let probe = Prepared::new(&company("lead", "北京康达医疗器械有限公司", "13800138000"));
    assert!(index.candidates(&probe).is_empty());
}

#[test]
fn duplicate_pairs_rescores_the_index_with_a_new_rule() {
    let mut matcher = Matcher::default();
    matcher.insert(&company("c1", "北京市康达医疗器械有限公司", "13800138000"));
    matcher.insert(&company("c2", "康达医疗器械（北京）有限公司", "+86 138 0013 8000"));
    matcher.insert(&company("c3", "上海星辰电子有限公司", "13900139000"));
    let pairs = matcher.duplicate_pairs();
    assert_eq!(pairs.len(), 1, "{pairs:?}");
    assert_eq!((pairs[0].a.as_str(), pairs[0].b.as_str()), ("c1", "c2"));
    // A stricter rule: the same pair is no longer a duplicate, only worth a review.
    let mut config = matcher.config().clone();
    config.thresholds.match_weight = 60.0;
    config.thresholds.sparse_floor = 60.0;
    matcher.set_config(config);
    let pairs = matcher.duplicate_pairs();
    assert_eq!(pairs.len(), 1);
    assert_eq!(pairs[0].result.decision, crm_matching::Decision::Review);
}

#[test]
fn decisions_and_outcomes_are_named_as_serialised() {
    for d in Decision::ALL {
        assert_eq!(serde_json::to_string(&d).unwrap(), format!("\"{}\"", d.as_str()));
    }
    for o in Outcome::ALL {
        assert_eq!(serde_json::to_string(&o).unwrap(), format!("\"{}\"", o.as_str()));
    }
}
