//! Blocking keys: the values two records must share to be compared at all.

use serde::{Deserialize, Serialize};

use crate::prepare::{PhoneClass, Prepared};
use crate::text::{char_bigrams, key_hash, soundex};

/// The kind of a blocking key. Exact keys (USCC, identity number, mobile, e-mail) identify
/// a customer on their own; the others only make a candidate when they add up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyKind {
    Uscc,
    IdNumber,
    Mobile,
    Email,
    /// Area code with the number.
    Landline,
    /// Last eight digits of any number: finds a number written without its country code.
    PhoneTail,
    /// Company core name ("康达").
    CompanyCore,
    /// Company core with the region of the name or record.
    CompanyRegionCore,
    /// Tone-less pinyin of the core with the industry words: homophones share it.
    CompanyPinyin,
    /// Character bigrams of core plus industry, or Latin tokens of the company name.
    CompanyGram,
    /// A Hanzi name as written.
    Name,
    /// Sorted Latin tokens of a name; pinyin tokens for a Hanzi name, so "张建国" and
    /// "Jianguo Zhang" share it.
    NameTokens,
    /// Character bigrams of a Hanzi name of three or more characters.
    NameGram,
    /// Soundex of one name token with the initial of another (order and spelling tolerant).
    NameSound,
    /// The first three letters of every token of a Latin name, sorted.
    NamePrefix,
    BirthDate,
    /// Soundex of a name token with the postcode.
    NamePlace,
    /// Soundex of a name token with the birth year.
    NameYear,
    /// The whole folded address.
    Address,
    /// A house number with its neighbouring word.
    AddressNumber,
}

impl KeyKind {
    /// Identifies a customer on its own: a shared exact key always makes a candidate.
    pub fn is_exact(self) -> bool {
        matches!(self, KeyKind::Uscc | KeyKind::IdNumber | KeyKind::Mobile | KeyKind::Email)
    }

    /// Support a shared key of this kind gives a candidate (before the block-size discount).
    pub(crate) fn weight(self) -> f32 {
        match self {
            KeyKind::Uscc | KeyKind::IdNumber | KeyKind::Mobile | KeyKind::Email => 8.0,
            KeyKind::Landline | KeyKind::PhoneTail | KeyKind::CompanyRegionCore => 3.0,
            KeyKind::Address => 2.5,
            KeyKind::CompanyCore
            | KeyKind::CompanyPinyin
            | KeyKind::Name
            | KeyKind::NameTokens
            | KeyKind::BirthDate => 2.0,
            KeyKind::AddressNumber | KeyKind::NamePlace | KeyKind::NameYear => 1.0,
            KeyKind::CompanyGram | KeyKind::NameGram | KeyKind::NameSound => 0.8,
            KeyKind::NamePrefix => 1.5,
        }
    }
}

/// A blocking key: its kind and text. The index stores only a 64-bit hash of both.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct BlockKey {
    pub kind: KeyKind,
    pub text: String,
}

impl BlockKey {
    pub fn hash(&self) -> u64 {
        key_hash(self.kind as u8, &self.text)
    }
}

/// All blocking keys of a prepared record, deduplicated.
pub fn blocking_keys(p: &Prepared) -> Vec<BlockKey> {
    let mut keys = Vec::with_capacity(16);
    let mut add = |kind: KeyKind, text: String| {
        if !text.is_empty() {
            keys.push(BlockKey { kind, text });
        }
    };
    if let Some(uscc) = &p.uscc {
        add(KeyKind::Uscc, uscc.normalized.clone());
    }
    if let Some(id) = &p.id_number {
        add(KeyKind::IdNumber, id.normalized.clone());
    }
    for phone in &p.phones {
        match phone.class {
            PhoneClass::Mobile => add(KeyKind::Mobile, phone.key.clone()),
            PhoneClass::Landline | PhoneClass::Unparsed => add(KeyKind::Landline, phone.key.clone()),
        }
        if let Some(tail) = crate::compare::phone_tail(&phone.key) {
            add(KeyKind::PhoneTail, tail.to_owned());
        }
    }
    if let Some(email) = &p.email {
        add(KeyKind::Email, email.address.clone());
    }
    if let Some(company) = &p.company {
        // Without spaces: "Maple Leaf" and "Mapleleaf" are one name.
        let core = company.core.replace(' ', "");
        if let Some(region) = company.region.as_ref().or(p.region.as_ref()) {
            add(KeyKind::CompanyRegionCore, format!("{region}|{core}"));
        }
        add(KeyKind::CompanyCore, core);
        if !company.core_pinyin.is_empty() {
            add(
                KeyKind::CompanyPinyin,
                format!("{}|{}", company.core_pinyin, company.industry.as_deref().unwrap_or("")),
            );
        }
        if company.tokens.is_empty() {
            for gram in char_bigrams(&company.stem) {
                add(KeyKind::CompanyGram, gram);
            }
        } else {
            for token in &company.tokens {
                add(KeyKind::CompanyGram, token.clone());
            }
        }
    }
    if let Some(name) = &p.name {
        if name.hanzi {
            add(KeyKind::Name, name.chars.clone());
            if name.chars.chars().count() >= 3 {
                for gram in char_bigrams(&name.chars) {
                    add(KeyKind::NameGram, gram);
                }
            }
        }
        add(KeyKind::NameTokens, name.tokens.join(" "));
        if !name.hanzi {
            // First three letters of each token, sorted: survives typos after the third
            // letter and a swapped order.
            if name.tokens.len() >= 2 {
                let mut prefixes: Vec<String> = name.tokens.iter().map(|t| t.chars().take(3).collect()).collect();
                prefixes.sort();
                add(KeyKind::NamePrefix, prefixes.join(" "));
            }
            for (i, t) in name.tokens.iter().enumerate() {
                for (j, other) in name.tokens.iter().enumerate() {
                    if i != j {
                        if let (Some(code), Some(initial)) = (soundex(t), other.chars().next()) {
                            add(KeyKind::NameSound, format!("{code}{initial}"));
                        }
                    }
                }
            }
        }
    }
    if let Some(birth) = p.birth_date {
        add(KeyKind::BirthDate, birth.to_string());
    }
    // A sound of a name token with the postcode or the birth year: survives a typo in the
    // other name token, in the birth date or in the street.
    if let Some(name) = &p.name {
        for token in &name.tokens {
            if let Some(code) = soundex(token) {
                if let Some(postcode) = &p.postcode {
                    add(KeyKind::NamePlace, format!("{postcode}|{code}"));
                }
                if let Some(birth) = p.birth_date {
                    add(KeyKind::NameYear, format!("{}|{code}", birth / 10000));
                }
            }
        }
    }
    if let Some(address) = &p.address {
        add(KeyKind::Address, address.folded.replace(' ', ""));
        for numbered in &address.numbered {
            add(KeyKind::AddressNumber, numbered.clone());
        }
    }
    keys.sort_by(|a, b| (a.kind as u8, &a.text).cmp(&(b.kind as u8, &b.text)));
    keys.dedup();
    keys
}
