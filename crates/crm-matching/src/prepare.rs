//! A record in normalised form, with everything comparison and blocking need computed once.

use crm_domain::normalize::{
    normalize_company, normalize_email, normalize_person_name, normalize_phone, normalize_uscc, PhoneKind,
};

use unicode_normalization::UnicodeNormalization;

use crate::idcard::{parse_birth_date, parse_id_number};
use crate::index::FastMap;
use crate::record::{Record, RecordKind};
use crate::text::{address_tokens, chinese_name_tokens, fold, fold_canonical, is_cjk, pinyin_syllables};

/// A person's name in comparable forms.
#[derive(Debug, Clone, PartialEq)]
pub struct PreparedName {
    /// `normalize_person_name`, lowercased.
    pub text: String,
    /// The name is written in Hanzi (compared by characters and pinyin).
    pub hanzi: bool,
    /// Hanzi only, spaces and dots removed: "张建国".
    pub chars: String,
    /// Tone-less pinyin syllables joined: "zhangjianguo" (empty for Latin names).
    pub pinyin: String,
    /// Latin tokens, sorted: ["jianguo", "zhang"] for both "张建国" and "Jianguo ZHANG".
    pub tokens: Vec<String>,
}

/// A company name in comparable forms (see `crm_domain::normalize::CompanyName`).
#[derive(Debug, Clone, PartialEq)]
pub struct PreparedCompany {
    pub normalized: String,
    pub core: String,
    /// Core followed by the industry words of the name: the text whose similarity the
    /// company threshold applies to ("康达医疗器械").
    pub stem: String,
    /// Tone-less pinyin of the core (homophones share it); empty for Latin names.
    pub core_pinyin: String,
    pub region: Option<String>,
    pub industry: Option<String>,
    /// Latin tokens of the stem, sorted (empty for Hanzi names).
    pub tokens: Vec<String>,
}

/// How a phone number may be used as evidence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PhoneClass {
    /// Personal line: a number the numbering plan calls mobile.
    Mobile,
    /// Fixed line (or a valid number of unknown type), possibly shared by a switchboard or
    /// a household.
    Landline,
    /// Did not validate: compared by its digits only, as a landline (it may be shared).
    Unparsed,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreparedPhone {
    /// E.164 when valid, otherwise the digits as typed.
    pub key: String,
    pub class: PhoneClass,
    /// Chinese area code of a landline, without the trunk 0.
    pub area_code: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreparedEmail {
    pub address: String,
    pub local: String,
    pub domain: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreparedUscc {
    pub normalized: String,
    pub checksum_ok: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreparedId {
    pub normalized: String,
    pub valid_cn: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PreparedAddress {
    pub folded: String,
    /// Sorted, deduplicated tokens: Latin words, digit runs, CJK bigrams.
    pub tokens: Vec<String>,
    /// Digit runs with their neighbouring word: "路88", "88 main"; the house-number keys.
    pub numbered: Vec<String>,
}

/// A record in normalised form. Build with [`Prepared::new`]; cheap to compare many times.
#[derive(Debug, Clone, PartialEq)]
pub struct Prepared {
    pub id: String,
    /// The record's kind, except that a company without a company name but with a
    /// person's name counts as a person.
    pub kind: RecordKind,
    pub name: Option<PreparedName>,
    pub company: Option<PreparedCompany>,
    pub uscc: Option<PreparedUscc>,
    /// Sorted and deduplicated by key.
    pub phones: Vec<PreparedPhone>,
    pub email: Option<PreparedEmail>,
    pub address: Option<PreparedAddress>,
    pub postcode: Option<String>,
    /// The record's region without its 省/市 suffix. A region inside the company name is
    /// `company.region` and is compared as part of the company.
    pub region: Option<String>,
    pub industry: Option<String>,
    /// `YYYYMMDD`; from the record, else from a valid Chinese identity number.
    pub birth_date: Option<u32>,
    pub id_number: Option<PreparedId>,
}

fn non_empty(value: &Option<String>) -> Option<&str> {
    value.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

/// Region base name: folded, and without an administrative suffix ("上海市" -> "上海").
pub(crate) fn region_key(raw: &str) -> Option<String> {
    let folded: String = fold(raw).chars().filter(|c| !c.is_whitespace()).collect();
    let mut text = folded.as_str();
    for suffix in ["特别行政区", "自治区", "省", "市", "区", "县"] {
        if let Some(stripped) = text.strip_suffix(suffix) {
            if stripped.chars().count() >= 2 {
                text = stripped;
                break;
            }
        }
    }
    (!text.is_empty()).then(|| text.to_owned())
}

const NAME_TITLES: &[&str] = &["mr", "mrs", "ms", "miss", "mx", "dr", "prof", "sir", "jr", "sr", "herr", "frau"];

/// The full form of a common English nickname ("bob" -> "robert").
fn full_name(token: &str) -> &str {
    match token {
        "bob" | "rob" | "bobby" | "robbie" => "robert",
        "bill" | "will" | "billy" | "willy" => "william",
        "jim" | "jimmy" | "jamie" => "james",
        "mike" | "mick" | "mikey" => "michael",
        "dave" | "davy" => "david",
        "dick" | "rick" | "rich" => "richard",
        "tom" | "tommy" => "thomas",
        "tony" => "anthony",
        "joe" | "joey" => "joseph",
        "steve" => "steven",
        "chris" => "christopher",
        "dan" | "danny" => "daniel",
        "matt" => "matthew",
        "nick" => "nicholas",
        "alex" => "alexander",
        "andy" | "drew" => "andrew",
        "ben" => "benjamin",
        "sam" => "samuel",
        "ed" | "ted" | "eddie" => "edward",
        "greg" => "gregory",
        "jeff" => "jeffrey",
        "ken" => "kenneth",
        "ron" => "ronald",
        "tim" => "timothy",
        "charlie" | "chuck" => "charles",
        "liz" | "beth" | "betty" | "lizzie" => "elizabeth",
        "kate" | "katie" | "kathy" => "katherine",
        "jenny" | "jen" => "jennifer",
        "sue" | "susie" => "susan",
        "meg" | "peggy" | "maggie" => "margaret",
        "becky" => "rebecca",
        "mandy" => "amanda",
        "debbie" | "deb" => "deborah",
        "steph" => "stephanie",
        other => other,
    }
}

fn prepare_name(raw: &str) -> Option<PreparedName> {
    let text = normalize_person_name(raw).to_lowercase();
    let chars: String = text.chars().filter(|c| is_cjk(*c)).collect();
    let hanzi = !chars.is_empty() && chars.chars().count() * 2 >= text.chars().filter(|c| c.is_alphanumeric()).count();
    let (pinyin, mut tokens) = if hanzi {
        (pinyin_syllables(&chars).concat(), chinese_name_tokens(&chars))
    } else {
        // "O'Brien" is one word; titles carry no identity; a nickname means its full name.
        let folded = fold(&text.replace(['\'', '\u{2019}', '`'], ""));
        let tokens =
            folded.split(' ').filter(|t| !t.is_empty() && !NAME_TITLES.contains(t)).map(|t| full_name(t).to_owned());
        (String::new(), tokens.collect())
    };
    tokens.sort();
    if text.is_empty() || (chars.is_empty() && tokens.is_empty()) {
        return None;
    }
    Some(PreparedName { text, hanzi, chars, pinyin, tokens })
}

fn prepare_company(raw: &str) -> Option<PreparedCompany> {
    let name = normalize_company(raw);
    if name.normalized.is_empty() {
        return None;
    }
    let stem = match &name.industry {
        Some(industry) if name.core.chars().any(is_cjk) => format!("{}{}", name.core, industry),
        Some(industry) => format!("{} {}", name.core, industry),
        None => name.core.clone(),
    };
    let core_pinyin = pinyin_syllables(&name.core).concat();
    let (stem, mut tokens): (String, Vec<String>) = if stem.chars().any(is_cjk) {
        (stem, Vec::new())
    } else {
        let words: Vec<String> =
            fold_canonical(&stem).split(' ').filter(|t| !t.is_empty() && *t != "the").map(str::to_owned).collect();
        (words.join(" "), words)
    };
    tokens.sort();
    Some(PreparedCompany {
        normalized: name.normalized,
        core: name.core,
        stem,
        core_pinyin,
        region: name.region,
        industry: name.industry,
        tokens,
    })
}

fn prepare_phone(raw: &str) -> Option<PreparedPhone> {
    let phone = normalize_phone(raw);
    match phone.e164 {
        Some(e164) if phone.valid => Some(PreparedPhone {
            key: e164,
            // Only a number the numbering plan calls mobile is personal; "fixed line or
            // mobile" (as in the US) counts as possibly shared.
            class: if phone.kind == PhoneKind::Mobile { PhoneClass::Mobile } else { PhoneClass::Landline },
            area_code: phone.area_code,
        }),
        _ => {
            let digits: String = fold(raw).chars().filter(char::is_ascii_digit).collect();
            (digits.len() >= 5).then_some(PreparedPhone { key: digits, class: PhoneClass::Unparsed, area_code: None })
        }
    }
}

/// The phones of a record, normalised, sorted and deduplicated by key.
pub(crate) fn prepare_phones(record: &Record) -> Vec<PreparedPhone> {
    sorted_phones(record.phones.iter().filter_map(|p| prepare_phone(p)).collect())
}

fn sorted_phones(mut phones: Vec<PreparedPhone>) -> Vec<PreparedPhone> {
    phones.sort_by(|a, b| a.key.cmp(&b.key));
    phones.dedup_by(|a, b| a.key == b.key);
    phones
}

/// Parses each distinct phone spelling once, for bulk preparation. Spellings that differ
/// only in separators, brackets or full-width digits share one parse.
#[derive(Default)]
pub(crate) struct PhoneCache(FastMap<String, Option<PreparedPhone>>);

impl PhoneCache {
    pub(crate) fn phones(&mut self, record: &Record) -> Vec<PreparedPhone> {
        let phones = record
            .phones
            .iter()
            .filter_map(|raw| match plain_phone(raw) {
                Some(plain) => self.0.entry(plain).or_insert_with_key(|p| prepare_phone(p)).clone(),
                None => prepare_phone(raw),
            })
            .collect();
        sorted_phones(phones)
    }
}

/// The digits (and `+`) of a phone written with nothing but digits and separators; `None`
/// when it has anything else (an extension marker, letters), which the full parser handles.
fn plain_phone(raw: &str) -> Option<String> {
    // ASCII is NFKC already: skip the normaliser for the common case.
    let text: String = if raw.is_ascii() { raw.to_owned() } else { raw.nfkc().collect() };
    text.chars()
        .all(|c| c.is_ascii_digit() || matches!(c, ' ' | '-' | '.' | '(' | ')' | '+'))
        .then(|| text.chars().filter(|c| c.is_ascii_digit() || *c == '+').collect())
}

fn prepare_email(raw: &str) -> Option<PreparedEmail> {
    let address = normalize_email(raw);
    let (local, domain) = address.rsplit_once('@')?;
    if local.is_empty() || domain.is_empty() {
        return None;
    }
    // "name+crm@host" is delivered to "name@host".
    let local = local.split('+').next().filter(|l| !l.is_empty()).unwrap_or(local);
    let address = format!("{local}@{domain}");
    Some(PreparedEmail { local: local.to_owned(), domain: domain.to_owned(), address })
}

fn prepare_address(raw: &str) -> Option<PreparedAddress> {
    let folded = fold_canonical(raw);
    if folded.is_empty() {
        return None;
    }
    let tokens = address_tokens(&folded);
    // House numbers with a neighbour: the two characters before a CJK number, or the word
    // before and after a Latin one.
    let chars: Vec<char> = folded.chars().collect();
    let mut numbered = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        if chars[i].is_ascii_digit() {
            let start = i;
            while i < chars.len() && chars[i].is_ascii_digit() {
                i += 1;
            }
            let digits: String = chars[start..i].iter().collect();
            let before: String = chars[..start]
                .iter()
                .rev()
                .skip_while(|c| **c == ' ')
                .take_while(|c| **c != ' ')
                .take(2)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            let after: String = chars[i..]
                .iter()
                .skip_while(|c| **c == ' ')
                .take_while(|c| *c != &' ' && !c.is_ascii_digit())
                .take(6)
                .collect();
            if !before.is_empty() {
                numbered.push(format!("{before}{digits}"));
            }
            if !after.is_empty() && !after.chars().any(is_cjk) {
                numbered.push(format!("{digits} {after}"));
            }
        } else {
            i += 1;
        }
    }
    numbered.sort();
    numbered.dedup();
    Some(PreparedAddress { folded, tokens, numbered })
}

impl Prepared {
    /// Normalises every field of `record`. Total: a field that cannot be read is kept out,
    /// never an error.
    pub fn new(record: &Record) -> Prepared {
        Prepared::with_phones(record, prepare_phones(record))
    }

    /// Everything but the phones, which the caller prepared with [`prepare_phones`].
    pub(crate) fn with_phones(record: &Record, phones: Vec<PreparedPhone>) -> Prepared {
        let name = non_empty(&record.name).and_then(prepare_name);
        let company = non_empty(&record.company).and_then(prepare_company);
        let uscc = non_empty(&record.uscc).map(normalize_uscc).filter(|u| !u.normalized.is_empty());
        let id_number = non_empty(&record.id_number).map(parse_id_number).filter(|id| !id.normalized.is_empty());
        let birth_date = non_empty(&record.birth_date)
            .and_then(parse_birth_date)
            .or_else(|| id_number.as_ref().and_then(|id| id.birth_date));
        let region = non_empty(&record.region).and_then(region_key);
        Prepared {
            id: record.id.clone(),
            // A "company" without a company name but with a person's name is a person: the
            // person models fit it (households, common names), the company ones do not.
            kind: if record.kind == RecordKind::Company && company.is_none() && name.is_some() {
                RecordKind::Person
            } else {
                record.kind
            },
            name,
            company,
            uscc: uscc.map(|u| PreparedUscc { normalized: u.normalized, checksum_ok: u.checksum_ok }),
            phones,
            email: non_empty(&record.email).and_then(prepare_email),
            address: non_empty(&record.address).and_then(prepare_address),
            postcode: non_empty(&record.postcode).map(|p| fold(p).replace(' ', "")).filter(|p| !p.is_empty()),
            region,
            industry: non_empty(&record.industry).map(fold).filter(|s| !s.is_empty()),
            birth_date,
            id_number: id_number.map(|id| PreparedId { normalized: id.normalized, valid_cn: id.valid_cn }),
        }
    }
}
