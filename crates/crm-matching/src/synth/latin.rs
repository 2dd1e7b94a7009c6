//! Latin-script customers in the style of the Febrl generator: persons with given name,
//! surname, street address, suburb, postcode, state, birth date and a 7-digit social
//! security number, and companies with Latin names. Duplicates carry one to three of the
//! classic corruptions (typing errors, swapped fields, missing values, abbreviations).

use std::collections::HashSet;

use super::{Rng, SynthConfig, Synthetic, Truth, Variant};
use crate::record::{Record, RecordKind};

const GIVEN: &[&str] = &[
    "james",
    "john",
    "robert",
    "michael",
    "william",
    "david",
    "richard",
    "joseph",
    "thomas",
    "charles",
    "daniel",
    "matthew",
    "anthony",
    "mark",
    "steven",
    "paul",
    "andrew",
    "joshua",
    "kevin",
    "brian",
    "george",
    "edward",
    "ryan",
    "jacob",
    "nicholas",
    "benjamin",
    "samuel",
    "patrick",
    "alexander",
    "jack",
    "oliver",
    "liam",
    "noah",
    "lucas",
    "mary",
    "patricia",
    "jennifer",
    "linda",
    "elizabeth",
    "barbara",
    "susan",
    "jessica",
    "sarah",
    "karen",
    "nancy",
    "lisa",
    "margaret",
    "sandra",
    "ashley",
    "emily",
    "donna",
    "michelle",
    "carol",
    "amanda",
    "melissa",
    "deborah",
    "stephanie",
    "rebecca",
    "laura",
    "sharon",
    "cynthia",
    "kathleen",
    "amy",
    "angela",
    "anna",
    "emma",
    "olivia",
    "sophie",
    "chloe",
    "isabella",
    "charlotte",
    "grace",
    "ruby",
    "zoe",
    "hannah",
    "lily",
    "ella",
    "mia",
    "jasmine",
];

const SURNAMES: &[&str] = &[
    "smith",
    "jones",
    "williams",
    "brown",
    "wilson",
    "taylor",
    "johnson",
    "white",
    "martin",
    "anderson",
    "thompson",
    "nguyen",
    "thomas",
    "walker",
    "harris",
    "lee",
    "ryan",
    "robinson",
    "kelly",
    "king",
    "davis",
    "wright",
    "evans",
    "roberts",
    "green",
    "hall",
    "wood",
    "jackson",
    "clarke",
    "patel",
    "khan",
    "lewis",
    "james",
    "phillips",
    "mason",
    "mitchell",
    "rose",
    "davies",
    "rodriguez",
    "cox",
    "alexander",
    "morgan",
    "moore",
    "mills",
    "young",
    "campbell",
    "stewart",
    "baker",
    "turner",
    "parker",
    "collins",
    "edwards",
    "cook",
    "morris",
    "murphy",
    "cooper",
    "richardson",
    "bailey",
    "bell",
    "gray",
    "hughes",
    "ward",
    "watson",
    "hill",
    "scott",
    "price",
    "bennett",
    "wood",
    "ross",
    "henderson",
    "coleman",
    "jenkins",
    "perry",
    "powell",
    "long",
    "fisher",
    "reynolds",
    "hamilton",
    "graham",
    "sullivan",
    "wallace",
    "woods",
    "cole",
    "west",
    "jordan",
    "owens",
    "fraser",
    "burke",
    "schmidt",
    "muller",
    "schneider",
    "fischer",
    "weber",
    "meyer",
    "wagner",
    "becker",
    "schulz",
    "hoffmann",
    "rossi",
    "russo",
    "ferrari",
];

const STREETS: &[&str] = &[
    "main",
    "high",
    "church",
    "park",
    "victoria",
    "george",
    "king",
    "queen",
    "station",
    "mill",
    "bridge",
    "river",
    "hill",
    "north",
    "south",
    "elizabeth",
    "albert",
    "william",
    "oxford",
    "cambridge",
    "york",
    "wattle",
    "banksia",
    "acacia",
    "jacaranda",
    "ocean",
    "beach",
    "forest",
    "lake",
    "railway",
    "harbour",
    "gordon",
    "macquarie",
    "pitt",
];

const STREET_TYPES: &[(&str, &str)] = &[
    ("street", "st"),
    ("road", "rd"),
    ("avenue", "ave"),
    ("drive", "dr"),
    ("place", "pl"),
    ("court", "ct"),
    ("crescent", "cres"),
    ("lane", "ln"),
    ("parade", "pde"),
    ("terrace", "tce"),
];

const SUBURBS: &[(&str, &str, &str)] = &[
    ("parramatta", "2150", "nsw"),
    ("chatswood", "2067", "nsw"),
    ("bondi", "2026", "nsw"),
    ("manly", "2095", "nsw"),
    ("penrith", "2750", "nsw"),
    ("newcastle", "2300", "nsw"),
    ("wollongong", "2500", "nsw"),
    ("carlton", "3053", "vic"),
    ("richmond", "3121", "vic"),
    ("st kilda", "3182", "vic"),
    ("geelong", "3220", "vic"),
    ("ballarat", "3350", "vic"),
    ("fortitude valley", "4006", "qld"),
    ("southport", "4215", "qld"),
    ("toowoomba", "4350", "qld"),
    ("cairns", "4870", "qld"),
    ("fremantle", "6160", "wa"),
    ("subiaco", "6008", "wa"),
    ("glenelg", "5045", "sa"),
    ("norwood", "5067", "sa"),
    ("hobart", "7000", "tas"),
    ("launceston", "7250", "tas"),
    ("belconnen", "2617", "act"),
    ("darwin", "0800", "nt"),
];

const COMPANY_WORDS: &[&str] = &[
    "acme",
    "globex",
    "initech",
    "umbrella",
    "stark",
    "wayne",
    "northwind",
    "contoso",
    "fabrikam",
    "tailspin",
    "blue river",
    "red rock",
    "silver lake",
    "golden gate",
    "pacific harbor",
    "summit peak",
    "green valley",
    "iron bridge",
    "clear water",
    "bright star",
    "eagle eye",
    "maple leaf",
    "oak tree",
    "stone hill",
    "sunrise",
    "evergreen",
    "crescent moon",
    "harbour light",
    "southern cross",
    "westfield",
];

const COMPANY_INDUSTRIES: &[(&str, &str)] = &[
    ("technologies", "it"),
    ("software", "it"),
    ("medical", "health"),
    ("healthcare", "health"),
    ("trading", "wholesale"),
    ("logistics", "transport"),
    ("engineering", "construction"),
    ("foods", "food"),
    ("consulting", "services"),
    ("electronics", "manufacturing"),
];

const COMPANY_FORMS: &[&str] = &["pty ltd", "ltd", "limited", "inc", "llc", "corp", "co., ltd.", "gmbh"];

#[derive(Clone)]
struct Entity {
    kind: RecordKind,
    given: String,
    surname: String,
    company: String,
    industry: usize,
    form: usize,
    number: u32,
    street: usize,
    street_type: usize,
    unit: Option<u32>,
    suburb: usize,
    birth: Option<u32>,
    ssn: Option<String>,
    phone: Option<String>,
    email: Option<String>,
}

fn typo(rng: &mut Rng, word: &str) -> String {
    let mut chars: Vec<char> = word.chars().collect();
    if chars.len() < 2 {
        return word.to_owned();
    }
    let at = rng.below(chars.len());
    let letter = char::from(b'a' + rng.below(26) as u8);
    match rng.below(4) {
        0 => chars.insert(at, letter),
        1 => {
            chars.remove(at);
        }
        2 => chars[at] = letter,
        _ => {
            let at = at.min(chars.len() - 2);
            chars.swap(at, at + 1);
        }
    }
    chars.into_iter().collect()
}

fn digit_typo(rng: &mut Rng, digits: &str) -> String {
    let mut chars: Vec<char> = digits.chars().collect();
    let positions: Vec<usize> = (0..chars.len()).filter(|i| chars[*i].is_ascii_digit()).collect();
    if positions.is_empty() {
        return digits.to_owned();
    }
    let at = *rng.pick(&positions);
    let old = chars[at];
    while chars[at] == old {
        chars[at] = char::from(b'0' + rng.below(10) as u8);
    }
    chars.into_iter().collect()
}

fn title(s: &str) -> String {
    s.split(' ')
        .map(|w| {
            let mut c = w.chars();
            c.next().map(|f| f.to_uppercase().chain(c).collect::<String>()).unwrap_or_default()
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn person(rng: &mut Rng, taken: &mut HashSet<String>) -> Entity {
    let given = GIVEN[rng.zipf(GIVEN.len())].to_owned();
    let surname = SURNAMES[rng.zipf(SURNAMES.len())].to_owned();
    let birth =
        1930 * 10000 + rng.below(76) as u32 * 10000 + (1 + rng.below(12) as u32) * 100 + 1 + rng.below(28) as u32;
    let mut email = format!("{given}.{surname}@example.com");
    while !taken.insert(email.clone()) {
        email = format!("{given}.{surname}{}@example.com", rng.below(1000));
    }
    Entity {
        kind: RecordKind::Person,
        given,
        surname,
        company: String::new(),
        industry: 0,
        form: 0,
        number: 1 + rng.below(250) as u32,
        street: rng.below(STREETS.len()),
        street_type: rng.below(STREET_TYPES.len()),
        unit: rng.chance(0.2).then(|| 1 + rng.below(30) as u32),
        suburb: rng.below(SUBURBS.len()),
        birth: rng.chance(0.9).then_some(birth),
        ssn: rng.chance(0.8).then(|| format!("{}{}", 1 + rng.below(9), rng.digits(6))),
        phone: rng.chance(0.6).then(|| format!("0{} {} {}", 2 + rng.below(7), rng.digits(4), rng.digits(4))),
        email: rng.chance(0.3).then_some(email),
    }
}

fn company(rng: &mut Rng, taken: &mut HashSet<String>) -> Entity {
    let mut e = person(rng, taken);
    e.kind = RecordKind::Company;
    loop {
        let name = COMPANY_WORDS[rng.below(COMPANY_WORDS.len())].to_owned();
        let industry = rng.below(COMPANY_INDUSTRIES.len());
        if taken.insert(format!("{name}|{industry}")) {
            e.company = name;
            e.industry = industry;
            break;
        }
        if taken.len() > COMPANY_WORDS.len() * COMPANY_INDUSTRIES.len() * 2 {
            e.company = format!("{name} {}", rng.digits(3));
            e.industry = industry;
            break;
        }
    }
    e.form = rng.below(COMPANY_FORMS.len());
    e.birth = None;
    e.ssn = None;
    e.phone = Some(format!("+61 {} {} {}", 2 + rng.below(7), rng.digits(4), rng.digits(4)));
    let domain: String = e.company.chars().filter(char::is_ascii_alphanumeric).collect();
    e.email = rng.chance(0.6).then(|| format!("{}@{domain}.com.au", e.given));
    e
}

fn render(rng: &mut Rng, e: &Entity, variants: &[Variant]) -> Record {
    let has = |v: Variant| variants.contains(&v);
    let (mut given, mut surname) = (e.given.clone(), e.surname.clone());
    if has(Variant::Typo) {
        if rng.chance(0.5) {
            given = typo(rng, &given);
        } else {
            surname = typo(rng, &surname);
        }
    }
    if has(Variant::Homophone) {
        // Spelling that sounds alike: a doubled or dropped letter, ph/f, y/i.
        let word = if rng.chance(0.5) { &mut given } else { &mut surname };
        *word = if word.contains("ph") {
            word.replacen("ph", "f", 1)
        } else if word.contains('y') {
            word.replacen('y', "i", 1)
        } else if let Some(at) = word.find("ll").or_else(|| word.find("nn")).or_else(|| word.find("tt")) {
            format!("{}{}", &word[..at], &word[at + 1..])
        } else {
            typo(rng, word)
        };
    }
    let name = if has(Variant::SwappedNameOrder) {
        if rng.chance(0.5) {
            format!("{} {}", title(&surname), title(&given))
        } else {
            format!("{}, {}", surname.to_uppercase(), title(&given))
        }
    } else {
        format!("{} {}", title(&given), title(&surname))
    };
    let (street_long, street_short) = STREET_TYPES[e.street_type];
    let street_type = if has(Variant::AddressVariant) ^ rng.chance(0.2) { street_short } else { street_long };
    let mut street = format!("{} {}", STREETS[e.street], street_type);
    if has(Variant::FullWidth) {
        street = typo(rng, &street);
    }
    let address = match e.unit {
        Some(u) if !has(Variant::AddressVariant) => format!("unit {u}, {} {street}", e.number),
        Some(u) => format!("{u}/{} {street}", e.number),
        None => format!("{} {street}", e.number),
    };
    let (suburb, postcode, state) = SUBURBS[e.suburb];
    let mut record = Record {
        kind: e.kind,
        name: Some(name),
        address: Some(format!("{address}, {suburb}")),
        postcode: Some(if has(Variant::PlacePrefix) { digit_typo(rng, postcode) } else { postcode.to_owned() }),
        region: Some(state.to_owned()),
        phones: e.phone.iter().cloned().collect(),
        email: e.email.as_ref().map(|m| if has(Variant::EmailCase) { m.to_uppercase() } else { m.clone() }),
        ..Record::default()
    };
    if e.kind == RecordKind::Company {
        let (industry_word, industry) = COMPANY_INDUSTRIES[e.industry];
        let form = if has(Variant::LegalSuffix) { *rng.pick(COMPANY_FORMS) } else { COMPANY_FORMS[e.form] };
        let mut core = e.company.clone();
        if has(Variant::Brackets) {
            core = core.replace(' ', "");
        }
        record.company = Some(title(&format!("{core} {industry_word} {form}")));
        record.industry = Some(industry.to_owned());
    } else {
        record.birth_date = e.birth.map(|b| {
            let b = if has(Variant::LandlineVsMobile) {
                // A day/month swap or one wrong digit.
                if rng.chance(0.5) && b % 100 <= 12 {
                    b / 10000 * 10000 + (b % 100) * 100 + b / 100 % 100
                } else {
                    digit_typo(rng, &b.to_string()).parse().unwrap_or(b)
                }
            } else {
                b
            };
            if rng.chance(0.5) {
                b.to_string()
            } else {
                format!("{:02}/{:02}/{}", b % 100, b / 100 % 100, b / 10000)
            }
        });
        record.id_number =
            e.ssn.as_ref().map(|s| if has(Variant::PhoneFormat) { digit_typo(rng, s) } else { s.clone() });
    }
    if has(Variant::MissingFields) {
        for _ in 0..1 + rng.below(3) {
            match rng.below(6) {
                0 => record.address = None,
                1 => record.postcode = None,
                2 => record.birth_date = None,
                3 => record.id_number = None,
                4 => record.phones.clear(),
                _ => record.email = None,
            }
        }
    }
    record
}

/// Latin-script records with planted duplicates. Variant names are reused with these
/// meanings: `typo` a typing error in a name, `homophone` a sound-alike spelling,
/// `swapped_name_order` surname first, `address_variant` an abbreviated street type or unit
/// notation, `full_width` a typing error in the street, `place_prefix` a wrong postcode
/// digit, `landline_vs_mobile` a wrong birth date digit or swapped day and month,
/// `phone_format` a wrong identity number digit, `legal_suffix` another legal form,
/// `brackets` a company name written as one word, `missing_fields` and `email_case` as usual.
pub fn generate_latin(config: &SynthConfig) -> Synthetic {
    let mut rng = Rng::new(config.seed ^ 0x5EED_1A71);
    let mut taken = HashSet::new();
    let mut entities: Vec<Entity> = Vec::new();
    let mut rows: Vec<(Record, usize, Vec<Variant>)> = Vec::with_capacity(config.records);
    let applicable = |kind: RecordKind| -> Vec<Variant> {
        Variant::ALL
            .into_iter()
            .filter(|v| match v {
                Variant::LegalSuffix | Variant::Brackets => kind == RecordKind::Company,
                Variant::LandlineVsMobile | Variant::PhoneFormat => kind == RecordKind::Person,
                _ => true,
            })
            .collect()
    };
    while rows.len() < config.records {
        let entity = if rng.chance(config.lookalike_share) && !entities.is_empty() {
            // A household member: same surname and address, own given name, birth, number.
            let base = entities[rng.below(entities.len())].clone();
            let mut e = person(&mut rng, &mut taken);
            if base.kind == RecordKind::Person {
                e.surname = base.surname.clone();
                (e.number, e.street, e.street_type, e.unit, e.suburb) =
                    (base.number, base.street, base.street_type, base.unit, base.suburb);
                e.phone.clone_from(&base.phone);
            }
            e
        } else if rng.chance(config.person_share) {
            person(&mut rng, &mut taken)
        } else {
            company(&mut rng, &mut taken)
        };
        let size = super::cluster_size(&mut rng).min(config.records - rows.len());
        let kinds = applicable(entity.kind);
        for i in 0..size {
            let mut variants = Vec::new();
            if i > 0 {
                let n = 1 + rng.below(3);
                while variants.len() < n {
                    let v = *rng.pick(&kinds);
                    if !variants.contains(&v) {
                        variants.push(v);
                    }
                }
                variants.sort_by_key(|v| Variant::ALL.iter().position(|a| a == v));
            }
            rows.push((render(&mut rng, &entity, &variants), entities.len(), variants));
        }
        entities.push(entity);
    }
    for i in (1..rows.len()).rev() {
        let j = rng.below(i + 1);
        rows.swap(i, j);
    }
    let mut out = Synthetic::default();
    for (n, (mut record, entity, variants)) in rows.into_iter().enumerate() {
        record.id = format!("l{:07}", n + 1);
        out.truth.push(Truth { id: record.id.clone(), entity: format!("le{entity:07}"), variants });
        out.records.push(record);
    }
    out
}
