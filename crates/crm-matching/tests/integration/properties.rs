//! Properties: symmetric scores, identical records score highest, an upsert answers like an
//! insert then a find, and an index updated by inserts and removals answers like one built
//! from scratch.

use crm_matching::{compare, Index, MatchConfig, Matcher, Prepared, Record, RecordKind};
use proptest::prelude::*;

fn opt(s: impl Strategy<Value = String>) -> impl Strategy<Value = Option<String>> {
    prop::option::weighted(0.7, s)
}

fn record() -> impl Strategy<Value = Record> {
    let hanzi =
        prop::sample::select(vec!["张", "王", "伟", "威", "康", "达", "华", "信", "北", "京", "科", "技", "李", "静"]);
    let name = prop_oneof![
        prop::collection::vec(hanzi.clone(), 2..4).prop_map(|v| v.concat()),
        "(John|Jon|Mary|Wei|Zhang) (Smith|Smyth|Li|Zhang|Wei)",
    ];
    let company = prop_oneof![
        (
            prop::sample::select(vec!["", "北京", "北京市", "上海"]),
            prop::collection::vec(hanzi, 2..4),
            prop::sample::select(vec!["科技", "医疗器械", ""]),
            prop::sample::select(vec!["有限公司", "股份有限公司", ""])
        )
            .prop_map(|(r, c, i, l)| format!("{r}{}{i}{l}", c.concat())),
        "(Acme|Globex|Initech) (Medical|Trading)? (Co., Ltd.|Inc.|GmbH)",
    ];
    let phone =
        prop_oneof!["13[0-9]{9}", "\\+86 13[89] [0-9]{4} [0-9]{4}", "010-6[0-9]{7}", "0755 8[0-9]{7}", "[0-9]{3,8}"];
    (
        (any::<bool>(), opt(name), opt(company), opt("91110[0-9]{12}[0-9X]"), prop::collection::vec(phone, 0..3)),
        (
            opt("[a-z]{1,6}@(qq|kangda)\\.com"),
            opt("(北京市)?朝阳区(建国|中山)路[0-9]{1,3}号"),
            opt("[0-9]{6}"),
            opt("(北京|上海)市?"),
            opt("(医疗器械|食品)"),
            opt("19[5-9][0-9]-0[1-9]-[12][0-9]"),
            opt("1101051949123100[0-9][0-9X]"),
        ),
    )
        .prop_map(
            |(
                (person, name, company, uscc, phones),
                (email, address, postcode, region, industry, birth_date, id_number),
            )| Record {
                id: String::new(),
                kind: if person { RecordKind::Person } else { RecordKind::Company },
                name,
                company,
                uscc,
                phones,
                email,
                address,
                postcode,
                region,
                industry,
                birth_date,
                id_number,
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn scores_are_symmetric(a in record(), b in record()) {
        let config = MatchConfig::default();
        let (pa, pb) = (Prepared::new(&a), Prepared::new(&b));
        let ab = compare(&pa, &pb, &config);
        let ba = compare(&pb, &pa, &config);
        prop_assert_eq!(ab.weight.to_bits(), ba.weight.to_bits(), "{} vs {}", ab.explanation, ba.explanation);
        prop_assert_eq!(ab.decision, ba.decision);
    }

    #[test]
    fn identical_records_score_highest(a in record(), b in record()) {
        let config = MatchConfig::default();
        let (pa, pb) = (Prepared::new(&a), Prepared::new(&b));
        let own = compare(&pa, &pa, &config);
        let other = compare(&pa, &pb, &config);
        prop_assert!(own.weight >= other.weight, "self {} < other {}: {}", own.weight, other.weight, other.explanation);
        prop_assert!(own.explanation.fields.iter().all(|f| f.weight >= 0.0), "{}", own.explanation);
    }

    #[test]
    fn upsert_equals_insert_then_find(records in prop::collection::vec((0..6usize, record()), 1..30)) {
        let (mut once, mut twice) = (Matcher::default(), Matcher::default());
        for (id, r) in &records {
            // Few ids, so many steps replace a record the matcher holds (an edit).
            let r = Record { id: format!("r{id}"), ..r.clone() };
            let upserted = once.upsert(&r);
            twice.insert(&r);
            let found = twice.find(&r);
            prop_assert_eq!(&upserted, &found);
        }
        prop_assert_eq!(once.len(), twice.len());
    }

    #[test]
    fn index_after_removals_equals_fresh_index(records in prop::collection::vec(record(), 1..25), removed in prop::collection::vec(any::<prop::sample::Index>(), 0..10)) {
        let prepared: Vec<Prepared> = records.iter().enumerate().map(|(i, r)| Prepared::new(&Record { id: format!("r{i}"), ..r.clone() })).collect();
        let gone: std::collections::BTreeSet<usize> = removed.iter().map(|ix| ix.index(prepared.len())).collect();
        let mut updated = Index::default();
        for p in &prepared {
            updated.insert(p.clone());
        }
        for i in &gone {
            updated.remove(&prepared[*i].id);
        }
        let mut fresh = Index::default();
        for (i, p) in prepared.iter().enumerate() {
            if !gone.contains(&i) {
                fresh.insert(p.clone());
            }
        }
        prop_assert_eq!(updated.len(), fresh.len());
        for probe in &prepared {
            let ids = |index: &Index| {
                let mut v: Vec<String> = index.candidates(probe).iter().map(|c| c.prepared.id.clone()).collect();
                v.sort();
                v
            };
            prop_assert_eq!(ids(&updated), ids(&fresh));
        }
    }
}

fn any_record() -> impl Strategy<Value = Record> {
    let text = || prop::option::of(any::<String>());
    (
        (any::<bool>(), text(), text(), text(), prop::collection::vec(any::<String>(), 0..3)),
        (text(), text(), text(), text(), text(), text(), text()),
    )
        .prop_map(
            |(
                (person, name, company, uscc, phones),
                (email, address, postcode, region, industry, birth_date, id_number),
            )| Record {
                id: String::new(),
                kind: if person { RecordKind::Person } else { RecordKind::Company },
                name,
                company,
                uscc,
                phones,
                email,
                address,
                postcode,
                region,
                industry,
                birth_date,
                id_number,
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Any text in any field: preparing, blocking and comparing never panic, and the
    /// properties still hold.
    #[test]
    fn arbitrary_text_is_handled(a in any_record(), b in any_record()) {
        let config = MatchConfig::default();
        let (pa, pb) = (Prepared::new(&a), Prepared::new(&b));
        let _ = crm_matching::blocking_keys(&pa);
        let ab = compare(&pa, &pb, &config);
        let ba = compare(&pb, &pa, &config);
        prop_assert_eq!(ab.weight.to_bits(), ba.weight.to_bits());
        prop_assert!(compare(&pa, &pa, &config).weight >= ab.weight);
        let mut index = Index::default();
        index.insert(Prepared::new(&Record { id: "a".into(), ..a }));
        let _ = index.candidates(&pb);
    }
}
