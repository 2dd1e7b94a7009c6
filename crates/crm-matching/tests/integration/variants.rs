//! Table-driven cases: one per kind of planted duplicate, and the look-alikes that must stay
//! apart. A case is a base record, a variant of it and the expected decision.

use crm_matching::synth::{generate, SynthConfig, Variant};
use crm_matching::{compare, rescan, Decision, Field, MatchConfig, Outcome, Prepared, Record, RecordKind};

fn company() -> Record {
    Record {
        id: "a".into(),
        kind: RecordKind::Company,
        name: Some("王建国".into()),
        company: Some("北京康达医疗器械有限公司".into()),
        uscc: None,
        phones: vec!["13800138000".into(), "010-61234567".into()],
        email: Some("jianguo.wang@kangda.com.cn".into()),
        address: Some("北京市朝阳区建国路88号A座1203室".into()),
        postcode: None,
        region: Some("北京".into()),
        industry: Some("医疗器械".into()),
        birth_date: None,
        id_number: None,
    }
}

fn person() -> Record {
    Record {
        id: "a".into(),
        kind: RecordKind::Person,
        name: Some("李静怡".into()),
        phones: vec!["13912345678".into()],
        address: Some("上海市浦东新区世纪大道100号翠湖苑3栋2单元501室".into()),
        region: Some("上海".into()),
        birth_date: Some("1988-04-12".into()),
        id_number: Some("310115198804121227".into()),
        ..Record::default()
    }
}

fn check(case: &str, a: &Record, b: &Record, expected: Decision) {
    let config = MatchConfig::default();
    let (pa, pb) = (Prepared::new(a), Prepared::new(b));
    let result = compare(&pa, &pb, &config);
    assert_eq!(result.decision, expected, "{case}: weight {:.1}, {}", result.weight, result.explanation);
}

fn with(base: &Record, change: impl FnOnce(&mut Record)) -> Record {
    let mut r = base.clone();
    r.id = "b".into();
    change(&mut r);
    r
}

#[test]
fn company_variants_are_duplicates() {
    let base = company();
    let cases: Vec<(&str, Record)> = vec![
        ("place prefix with 市", with(&base, |r| r.company = Some("北京市康达医疗器械有限公司".into()))),
        ("place prefix dropped", with(&base, |r| r.company = Some("康达医疗器械有限公司".into()))),
        ("province and city", with(&base, |r| r.company = Some("北京市朝阳区康达医疗器械有限公司".into()))),
        ("legal suffix 股份有限公司", with(&base, |r| r.company = Some("北京康达医疗器械股份有限公司".into()))),
        ("legal suffix dropped", with(&base, |r| r.company = Some("北京康达医疗器械".into()))),
        ("full-width brackets", with(&base, |r| r.company = Some("康达医疗器械（北京）有限公司".into()))),
        ("ASCII brackets", with(&base, |r| r.company = Some("康达医疗器械(北京)有限公司".into()))),
        (
            "full-width everything",
            with(&base, |r| {
                r.phones = vec!["１３８００１３８０００".into(), "０１０－６１２３４５６７".into()];
                r.address = Some("北京市朝阳区建国路８８号Ａ座１２０３室".into());
            }),
        ),
        ("one-character typo in contact", with(&base, |r| r.name = Some("王建图".into()))),
        ("homophone in contact", with(&base, |r| r.name = Some("王健国".into()))),
        ("homophone in company core", with(&base, |r| r.company = Some("北京康答医疗器械有限公司".into()))),
        ("+86 mobile", with(&base, |r| r.phones = vec!["+86 138 0013 8000".into()])),
        ("0086 mobile", with(&base, |r| r.phones = vec!["0086-13800138000".into()])),
        ("mobile with spaces", with(&base, |r| r.phones = vec!["138 0013 8000".into()])),
        ("landline only, other spelling", with(&base, |r| r.phones = vec!["(010)61234567".into()])),
        ("swapped name order in pinyin", with(&base, |r| r.name = Some("Jianguo WANG".into()))),
        (
            "missing fields",
            with(&base, |r| {
                r.email = None;
                r.address = None;
                r.industry = None;
            }),
        ),
        ("email case", with(&base, |r| r.email = Some("Jianguo.Wang@KANGDA.COM.CN".into()))),
        ("address without city", with(&base, |r| r.address = Some("朝阳区建国路88号A座1203室".into()))),
    ];
    for (case, variant) in cases {
        check(case, &base, &variant, Decision::Duplicate);
    }
}

#[test]
fn person_variants_are_duplicates() {
    let base = person();
    let cases: Vec<(&str, Record)> = vec![
        ("typo in given name", with(&base, |r| r.name = Some("李静大".into()))),
        ("homophone", with(&base, |r| r.name = Some("李晶怡".into()))),
        ("swapped order, Latin script", with(&base, |r| r.name = Some("Jingyi Li".into()))),
        ("birth date spelled differently", with(&base, |r| r.birth_date = Some("1988年4月12日".into()))),
        ("phone spelled +86", with(&base, |r| r.phones = vec!["+86 139 1234 5678".into()])),
        (
            "identity number only",
            with(&base, |r| {
                r.phones.clear();
                r.birth_date = None;
                r.address = None;
            }),
        ),
        ("new phone, same birth date and address", with(&base, |r| r.phones = vec!["18611112222".into()])),
    ];
    for (case, variant) in cases {
        check(case, &base, &variant, Decision::Duplicate);
    }
}

#[test]
fn lookalikes_stay_apart() {
    let company = company();
    let person = person();
    let cases: Vec<(&str, Record, Record)> = vec![
        (
            "same core, other city, other contact",
            company.clone(),
            Record {
                id: "b".into(),
                kind: RecordKind::Company,
                name: Some("赵敏".into()),
                company: Some("上海康达医疗器械有限公司".into()),
                phones: vec!["021-51234567".into()],
                region: Some("上海".into()),
                industry: Some("医疗器械".into()),
                ..Record::default()
            },
        ),
        (
            "same core, other industry",
            company.clone(),
            Record {
                id: "b".into(),
                kind: RecordKind::Company,
                company: Some("北京康达食品有限公司".into()),
                region: Some("北京".into()),
                industry: Some("食品".into()),
                ..Record::default()
            },
        ),
        (
            "household member: same address and landline",
            Record { phones: vec!["13912345678".into(), "021-50001234".into()], ..person.clone() },
            Record {
                id: "b".into(),
                kind: RecordKind::Person,
                name: Some("李建华".into()),
                phones: vec!["13700001111".into(), "021-50001234".into()],
                address: person.address.clone(),
                region: Some("上海".into()),
                birth_date: Some("1960-01-03".into()),
                ..Record::default()
            },
        ),
        (
            "common name in the same city",
            Record {
                id: "a".into(),
                kind: RecordKind::Person,
                name: Some("张伟".into()),
                region: Some("北京".into()),
                phones: vec!["13511112222".into()],
                ..Record::default()
            },
            Record {
                id: "b".into(),
                kind: RecordKind::Person,
                name: Some("张伟".into()),
                region: Some("北京市".into()),
                phones: vec!["13633334444".into()],
                ..Record::default()
            },
        ),
        (
            "same name, other birth date and identity number",
            person.clone(),
            with(&person, |r| {
                r.phones = vec!["18600001111".into()];
                r.address = None;
                r.birth_date = Some("1975-09-30".into());
                r.id_number = Some("310115197509301234".into());
            }),
        ),
    ];
    for (case, a, b) in cases {
        let decision = compare(&Prepared::new(&a), &Prepared::new(&b), &MatchConfig::default()).decision;
        assert_ne!(decision, Decision::Duplicate, "{case}");
    }
}

#[test]
fn explanation_names_each_field() {
    let base = company();
    let variant = with(&base, |r| {
        r.company = Some("康达医疗器械（北京）有限公司".into());
        r.name = Some("王健国".into());
    });
    let result = compare(&Prepared::new(&base), &Prepared::new(&variant), &MatchConfig::default());
    let field = |f: Field| result.explanation.field(f).unwrap_or_else(|| panic!("{f:?} in {}", result.explanation));
    assert_eq!(field(Field::Company).outcome, Outcome::Agree);
    assert_eq!((field(Field::Name).outcome, field(Field::Name).reason), (Outcome::Partial, "homophone"));
    assert_eq!(field(Field::Mobile).outcome, Outcome::Agree);
    assert!(field(Field::Name).weight < field(Field::Company).weight);
    let total: f64 = result.explanation.fields.iter().map(|f| f.weight).sum();
    assert!((total - result.weight).abs() < 1e-9);
}

/// Recall per planted variant kind on generated data: each kind on its own must be found.
#[test]
fn every_variant_kind_is_found_in_generated_data() {
    let data = generate(&SynthConfig { records: 3000, seed: 11, ..SynthConfig::default() });
    let scan = rescan(&data.records, &MatchConfig::default());
    let found: std::collections::HashSet<(u32, u32)> = scan.duplicates().map(|p| (p.a, p.b)).collect();
    for variant in Variant::ALL {
        let (mut total, mut hit) = (0usize, 0usize);
        for (i, ti) in data.truth.iter().enumerate() {
            if !ti.variants.contains(&variant) {
                continue;
            }
            for (j, tj) in data.truth.iter().enumerate() {
                if i != j && tj.entity == ti.entity {
                    total += 1;
                    let key = (i.min(j) as u32, i.max(j) as u32);
                    hit += usize::from(found.contains(&key));
                }
            }
        }
        assert!(total >= 20, "{variant:?}: only {total} pairs generated");
        let recall = hit as f64 / total as f64;
        assert!(recall >= 0.95, "{variant:?}: recall {recall:.3} ({hit}/{total})");
    }
}

/// Latin-script data in the style of the Febrl generator (typing errors, swapped names,
/// abbreviations, missing values): the method is not tuned to Chinese records alone.
#[test]
fn latin_script_records_meet_the_targets() {
    let data = crm_matching::synth::generate_latin(&SynthConfig { records: 3000, seed: 5, ..SynthConfig::default() });
    let scan = rescan(&data.records, &MatchConfig::default());
    let entities: Vec<&str> = data.truth.iter().map(|t| t.entity.as_str()).collect();
    let report = crm_matching::evaluate(&scan, &entities);
    assert!(report.f1 >= 0.97 && report.precision >= 0.98, "{report:?}");
    assert!(report.pair_completeness >= 0.99, "{report:?}");
}

#[test]
fn latin_person_variants_are_duplicates() {
    let base = Record {
        id: "a".into(),
        kind: RecordKind::Person,
        name: Some("Robert O'Brien".into()),
        address: Some("12 Main Street, Parramatta".into()),
        postcode: Some("2150".into()),
        birth_date: Some("1970-05-06".into()),
        email: Some("robert.obrien@example.com".into()),
        ..Record::default()
    };
    let cases: Vec<(&str, Record)> = vec![
        ("nickname", with(&base, |r| r.name = Some("Bob O'Brien".into()))),
        ("title and no apostrophe", with(&base, |r| r.name = Some("Dr. Robert OBrien".into()))),
        ("surname first", with(&base, |r| r.name = Some("O'BRIEN, Robert".into()))),
        ("street type abbreviated", with(&base, |r| r.address = Some("12 main st parramatta".into()))),
        ("typing error in surname", with(&base, |r| r.name = Some("Robert O'Brein".into()))),
        ("plus-addressed mail", with(&base, |r| r.email = Some("Robert.OBrien+crm@example.com".into()))),
        ("sparse: name and address only", {
            let mut r = with(&base, |r| r.name = Some("Robert O'Brian".into()));
            r.email = None;
            r.birth_date = None;
            r.postcode = None;
            r
        }),
    ];
    for (case, variant) in cases {
        check(case, &base, &variant, Decision::Duplicate);
    }
    let relative = with(&base, |r| {
        r.name = Some("Mary O'Brien".into());
        r.birth_date = Some("1972-11-23".into());
        r.email = Some("mary.obrien@example.com".into());
    });
    assert_ne!(
        compare(&Prepared::new(&base), &Prepared::new(&relative), &MatchConfig::default()).decision,
        Decision::Duplicate,
        "a relative at the same address"
    );
}

#[test]
fn province_before_the_city_is_the_same_company() {
    let a = Record { name: Some("陈静".into()), ..Record::company("a", "南京恒通电子有限公司") };
    let b = Record {
        name: Some("陈静".into()), ..Record::company("b", "江苏省南京市恒通电子股份有限公司")
    };
    let result = compare(&Prepared::new(&a), &Prepared::new(&b), &MatchConfig::default());
    let company = result.explanation.field(Field::Company).expect("company compared");
    assert_eq!(company.outcome, Outcome::Agree, "{}", result.explanation);
    assert_eq!(result.decision, Decision::Duplicate, "{}", result.explanation);
    // A different city is a different registration.
    let c = Record { name: Some("陈静".into()), ..Record::company("c", "上海恒通电子有限公司") };
    let other = compare(&Prepared::new(&a), &Prepared::new(&c), &MatchConfig::default());
    assert_eq!(other.explanation.field(Field::Company).map(|f| f.outcome), Some(Outcome::Neutral));
}

#[test]
fn a_company_without_a_company_name_is_compared_as_a_person() {
    let record = Record { name: Some("李静怡".into()), birth_date: Some("1988-04-12".into()), ..Record::default() };
    assert_eq!(record.kind, RecordKind::Company, "the default kind");
    assert_eq!(Prepared::new(&record).kind, RecordKind::Person);
    assert_eq!(Prepared::new(&company()).kind, RecordKind::Company);
}
