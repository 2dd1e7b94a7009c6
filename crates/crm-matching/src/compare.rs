//! Field-by-field comparison of two prepared records, the weighted score and its explanation.

use serde::{Deserialize, Serialize};

use crate::config::{FieldModels, MatchConfig, Thresholds};
use crate::prepare::{
    PhoneClass, Prepared, PreparedAddress, PreparedCompany, PreparedEmail, PreparedName, PreparedPhone,
};
use crate::record::RecordKind;
use crate::text::{dice, is_cjk, jaro_winkler, token_similarity};

/// A compared field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Field {
    /// Company versus person; only listed when the kinds differ.
    Kind,
    Uscc,
    Company,
    Name,
    Mobile,
    Landline,
    Email,
    Address,
    Postcode,
    Region,
    Industry,
    BirthDate,
    IdNumber,
}

impl Field {
    pub const ALL: [Field; 13] = [
        Field::Kind,
        Field::Uscc,
        Field::IdNumber,
        Field::Company,
        Field::Name,
        Field::Mobile,
        Field::Landline,
        Field::Email,
        Field::Address,
        Field::Postcode,
        Field::Region,
        Field::Industry,
        Field::BirthDate,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Field::Kind => "kind",
            Field::Uscc => "uscc",
            Field::Company => "company",
            Field::Name => "name",
            Field::Mobile => "mobile",
            Field::Landline => "landline",
            Field::Email => "email",
            Field::Address => "address",
            Field::Postcode => "postcode",
            Field::Region => "region",
            Field::Industry => "industry",
            Field::BirthDate => "birth_date",
            Field::IdNumber => "id_number",
        }
    }
}

/// How a field compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Agree,
    Partial,
    Disagree,
    /// The rule says to ignore this difference (for example different industries when
    /// `same_industry` is off).
    Neutral,
}

impl Outcome {
    pub const ALL: [Outcome; 4] = [Outcome::Agree, Outcome::Partial, Outcome::Disagree, Outcome::Neutral];

    /// The outcome's name in lower case (as serialised): "agree", "partial", ...
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Agree => "agree",
            Outcome::Partial => "partial",
            Outcome::Disagree => "disagree",
            Outcome::Neutral => "neutral",
        }
    }
}

/// One field's contribution to a score.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FieldScore {
    pub field: Field,
    pub outcome: Outcome,
    /// Similarity of the two values, 0..=1.
    pub similarity: f64,
    /// Contribution to the total weight (log2 likelihood ratio).
    pub weight: f64,
    /// Why, in a few words: "same", "homophone", "1 edit", "same area code".
    pub reason: &'static str,
}

/// Every compared field and its contribution; fields missing on either side are absent.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Explanation {
    pub fields: Vec<FieldScore>,
}

impl Explanation {
    pub fn total(&self) -> f64 {
        self.fields.iter().map(|f| f.weight).sum()
    }

    pub fn field(&self, field: Field) -> Option<&FieldScore> {
        self.fields.iter().find(|f| f.field == field)
    }
}

impl std::fmt::Display for Explanation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, s) in self.fields.iter().enumerate() {
            if i > 0 {
                write!(f, ", ")?;
            }
            write!(f, "{} {:+.1} ({})", s.field.as_str(), s.weight, s.reason)?;
        }
        Ok(())
    }
}

/// What the rule concludes about a pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    Duplicate,
    Review,
    Distinct,
}

impl Decision {
    pub const ALL: [Decision; 3] = [Decision::Duplicate, Decision::Review, Decision::Distinct];

    /// The decision's name in lower case (as serialised): "duplicate", "review", "distinct".
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Duplicate => "duplicate",
            Decision::Review => "review",
            Decision::Distinct => "distinct",
        }
    }
}

/// The result of comparing two records.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MatchResult {
    /// Sum of the field weights (log2 likelihood ratio).
    pub weight: f64,
    /// The weight this pair needed to be a duplicate (see [`Thresholds::match_weight_for`]).
    pub threshold: f64,
    /// `weight` mapped to 0..1, 0.5 at this pair's match threshold; for display.
    /// Sort by `weight`.
    pub score: f64,
    pub decision: Decision,
    pub explanation: Explanation,
}

/// Comparison of one field: an outcome with a partial-agreement factor.
#[derive(Clone, Copy)]
struct Cmp {
    outcome: Outcome,
    similarity: f64,
    factor: f64,
    reason: &'static str,
}

impl Cmp {
    fn agree(reason: &'static str) -> Cmp {
        Cmp { outcome: Outcome::Agree, similarity: 1.0, factor: 1.0, reason }
    }
    fn partial(similarity: f64, factor: f64, reason: &'static str) -> Cmp {
        Cmp { outcome: Outcome::Partial, similarity, factor, reason }
    }
    fn disagree(similarity: f64, reason: &'static str) -> Cmp {
        Cmp { outcome: Outcome::Disagree, similarity, factor: 0.0, reason }
    }
    fn neutral(similarity: f64, reason: &'static str) -> Cmp {
        Cmp { outcome: Outcome::Neutral, similarity, factor: 0.0, reason }
    }
}

fn chars(s: &str) -> usize {
    s.chars().count()
}

fn names(a: &PreparedName, b: &PreparedName, t: &Thresholds) -> Cmp {
    if a.text == b.text || (a.hanzi && b.hanzi && a.chars == b.chars) {
        return Cmp::agree("same");
    }
    if a.hanzi && b.hanzi {
        if a.pinyin == b.pinyin && !a.pinyin.is_empty() {
            return Cmp::partial(0.9, 0.85, "homophone");
        }
        let edits = strsim::levenshtein(&a.chars, &b.chars);
        let len = chars(&a.chars).max(chars(&b.chars));
        let similarity = 1.0 - edits as f64 / len as f64;
        // One edit of a two- or three-character name may as well be a relative: it earns little.
        let tolerated = edits <= t.contact_name_max_edits && edits * 2 <= len;
        return match (tolerated, edits, len) {
            (true, 1, 2) => Cmp::partial(similarity, 0.3, "1 edit"),
            (true, 1, 3) => Cmp::partial(similarity, 0.5, "1 edit"),
            (true, 1, _) => Cmp::partial(similarity, 0.7, "1 edit"),
            (true, _, _) => Cmp::partial(similarity, 0.35, "2 edits"),
            _ => Cmp::disagree(similarity, "different"),
        };
    }
    // Latin script on at least one side: tokens (pinyin tokens for a Hanzi name).
    let s = token_similarity(&a.tokens, &b.tokens).max(jaro_winkler(&a.tokens.join(" "), &b.tokens.join(" ")));
    if s >= 1.0 - 1e-12 {
        return Cmp::partial(s, 0.95, "same tokens");
    }
    if s >= t.latin_name_similarity {
        let factor = 0.25 + 0.65 * (s - t.latin_name_similarity) / (1.0 - t.latin_name_similarity);
        return Cmp::partial(s, factor, "similar");
    }
    Cmp::disagree(s, "different")
}

fn companies(a: &PreparedCompany, b: &PreparedCompany, t: &Thresholds) -> Cmp {
    // Regions differ only if neither name mentions the other's: "江苏省南京市..." has region
    // 江苏 (the outermost) and still names 南京.
    let regions_differ = matches!((&a.region, &b.region), (Some(x), Some(y))
        if x != y && !a.normalized.contains(y.as_str()) && !b.normalized.contains(x.as_str()));
    let (similarity, reason) = if a.normalized == b.normalized {
        (1.0, "same name")
    } else if a.stem == b.stem || (a.core == b.core && (a.industry.is_none() || b.industry.is_none())) {
        (1.0, "same core")
    } else if !a.tokens.is_empty() || !b.tokens.is_empty() {
        (token_similarity(&a.tokens, &b.tokens).max(jaro_winkler(&a.stem, &b.stem)), "similar")
    } else {
        let edits = strsim::levenshtein(&a.stem, &b.stem);
        let lev = 1.0 - edits as f64 / chars(&a.stem).max(chars(&b.stem)) as f64;
        let jw = jaro_winkler(&a.stem, &b.stem);
        let homophone = !a.core_pinyin.is_empty() && a.core_pinyin == b.core_pinyin && a.industry == b.industry;
        if homophone {
            (0.95, "homophone")
        } else {
            (lev.max(jw), "similar")
        }
    };
    if similarity < t.company_similarity {
        return Cmp::disagree(similarity, "different");
    }
    if regions_differ {
        return Cmp::neutral(similarity, "same name, other region");
    }
    if similarity >= 1.0 {
        return Cmp::agree(reason);
    }
    let factor = 0.3 + 0.6 * (similarity - t.company_similarity) / (1.0 - t.company_similarity).max(1e-9);
    Cmp::partial(similarity, factor, reason)
}

fn phones(a: &[PreparedPhone], b: &[PreparedPhone], landline: bool, t: &Thresholds) -> Option<Cmp> {
    // A number that did not validate (a foreign number without its country code, a typo)
    // may be a shared line: it is compared with the landlines.
    let pick = |p: &&PreparedPhone| (p.class != PhoneClass::Mobile) == landline;
    // Iterators, not collected: this runs twice for every candidate pair.
    let xs = || a.iter().filter(pick);
    let ys = || b.iter().filter(pick);
    // The same national number written with and without its country code ("0301234567"
    // and "+49 30 1234567"): one side did not validate, the last eight digits agree.
    let same_tail = landline
        && a.iter().any(|x| {
            b.iter().any(|y| {
                (x.class == PhoneClass::Unparsed || y.class == PhoneClass::Unparsed)
                    && x.key != y.key
                    && phone_tail(&x.key).is_some()
                    && phone_tail(&x.key) == phone_tail(&y.key)
            })
        });
    if xs().next().is_none() || ys().next().is_none() {
        return same_tail.then(|| Cmp::partial(0.9, 0.8, "same number, other prefix"));
    }
    if xs().any(|x| ys().any(|y| x.key == y.key)) {
        return Some(Cmp::agree("same number"));
    }
    if same_tail {
        return Some(Cmp::partial(0.9, 0.8, "same number, other prefix"));
    }
    if !landline {
        return Some(Cmp::disagree(0.0, "different numbers"));
    }
    let same_area = xs().any(|x| x.area_code.is_some() && ys().any(|y| y.area_code == x.area_code));
    Some(if same_area {
        Cmp::partial(0.5, 0.35, "same area code")
    } else if t.same_landline_area_code {
        Cmp::disagree(0.0, "other area code")
    } else {
        Cmp::neutral(0.0, "other area code (ignored)")
    })
}

/// The last eight digits of a phone key, if it has that many.
pub(crate) fn phone_tail(key: &str) -> Option<&str> {
    let digits = key.trim_start_matches('+');
    (digits.len() >= 8 && digits.is_ascii()).then(|| &digits[digits.len() - 8..])
}

const PUBLIC_MAIL: &[&str] = &[
    "qq.com",
    "163.com",
    "126.com",
    "yeah.net",
    "sina.com",
    "sina.cn",
    "sohu.com",
    "foxmail.com",
    "139.com",
    "aliyun.com",
    "gmail.com",
    "outlook.com",
    "hotmail.com",
    "live.com",
    "yahoo.com",
    "icloud.com",
    "me.com",
    "gmx.de",
    "web.de",
    "mail.ru",
    "proton.me",
    "protonmail.com",
];

fn emails(a: &PreparedEmail, b: &PreparedEmail, company_pair: bool) -> Cmp {
    if a.address == b.address {
        return Cmp::agree("same address");
    }
    let local = jaro_winkler(&a.local, &b.local);
    if a.domain == b.domain {
        if local >= 0.92 {
            return Cmp::partial(local, 0.5, "similar mailbox");
        }
        if company_pair && !PUBLIC_MAIL.contains(&a.domain.as_str()) {
            return Cmp::partial(local, 0.35, "same company domain");
        }
    } else if a.local == b.local && chars(&a.local) >= 5 {
        // Often just the owner's name in pinyin: evidence the name field already counts.
        return Cmp::partial(local, 0.3, "same mailbox name");
    }
    Cmp::disagree(local, "different")
}

fn addresses(a: &PreparedAddress, b: &PreparedAddress) -> Cmp {
    if a.folded == b.folded {
        return Cmp::agree("same");
    }
    let digits = |x: &PreparedAddress| -> Vec<String> {
        x.tokens.iter().filter(|t| t.chars().all(|c| c.is_ascii_digit())).cloned().collect()
    };
    let (da, db) = (digits(a), digits(b));
    let mut all = dice(&a.tokens, &b.tokens);
    let latin = |x: &PreparedAddress| !x.folded.chars().any(is_cjk);
    if latin(a) && latin(b) {
        // Words compared softly: a typing error costs part of one word, not all of it.
        let words = |x: &PreparedAddress| -> Vec<String> {
            x.tokens.iter().filter(|t| !t.chars().all(|c| c.is_ascii_digit())).cloned().collect()
        };
        all = all.max(token_similarity(&words(a), &words(b)));
    }
    let s = if da.is_empty() || db.is_empty() { all } else { 0.6 * all + 0.4 * dice(&da, &db) };
    if s >= 0.6 {
        Cmp::partial(s, (s - 0.6) / 0.4 * 0.9, "similar")
    } else {
        Cmp::disagree(s, "different")
    }
}

fn birth_dates(a: u32, b: u32) -> Cmp {
    if a == b {
        return Cmp::agree("same");
    }
    let (sa, sb) = (format!("{a:08}"), format!("{b:08}"));
    let differing = sa.bytes().zip(sb.bytes()).filter(|(x, y)| x != y).count();
    let swapped = a / 10000 == b / 10000 && a % 100 == b / 100 % 100 && a / 100 % 100 == b % 100;
    if differing == 1 || swapped {
        return Cmp::partial(0.8, 0.5, if swapped { "day and month swapped" } else { "one digit" });
    }
    Cmp::disagree(0.0, "different")
}

fn codes(a: &str, b: &str, a_valid: bool, b_valid: bool) -> Cmp {
    if a == b {
        return Cmp::agree("same");
    }
    let edits = strsim::levenshtein(a, b);
    let len = chars(a).max(chars(b)).max(1);
    let similarity = 1.0 - edits as f64 / len as f64;
    // Two valid codes that differ are two subjects; a typo breaks the checksum.
    if edits <= 1 && !(a_valid && b_valid) {
        return Cmp::partial(similarity, 0.6, "1 edit");
    }
    if edits == 2 && a.len() == b.len() && !(a_valid && b_valid) {
        let mut x: Vec<char> = a.chars().collect();
        let mut y: Vec<char> = b.chars().collect();
        x.sort_unstable();
        y.sort_unstable();
        if x == y {
            return Cmp::partial(similarity, 0.6, "transposed");
        }
    }
    Cmp::disagree(similarity, "different")
}

fn equal_text(a: &str, b: &str) -> Cmp {
    if a == b {
        Cmp::agree("same")
    } else {
        Cmp::disagree(0.0, "different")
    }
}

/// Compares two prepared records field by field. Symmetric: `compare(a, b)` and
/// `compare(b, a)` have the same weight, and no record scores higher against any other
/// record than against itself.
pub fn compare(a: &Prepared, b: &Prepared, config: &MatchConfig) -> MatchResult {
    let t = &config.thresholds;
    let person_pair = a.kind == RecordKind::Person && b.kind == RecordKind::Person;
    let mixed = a.kind != b.kind;
    let models: &FieldModels = if person_pair { &config.persons } else { &config.companies };
    let mut fields = Vec::with_capacity(8);
    // The most the compared fields could add up to: every one agreeing.
    let mut attainable = 0.0;
    let has_address = a.address.is_some() && b.address.is_some();
    let has_postcode = a.postcode.is_some() && b.postcode.is_some();
    let mut push = |field: Field, cmp: Option<Cmp>| {
        if let Some(c) = cmp {
            // A company compared with a person trusts each field as little as the more
            // cautious model does, so no record matches another better than itself.
            let model = if mixed {
                let (x, y) = (config.companies.get(field), config.persons.get(field));
                if x.agreement() <= y.agreement() {
                    x
                } else {
                    y
                }
            } else {
                models.get(field)
            };
            let weight = match c.outcome {
                Outcome::Agree => model.agreement(),
                Outcome::Disagree => model.disagreement(),
                Outcome::Partial => model.partial(c.factor),
                Outcome::Neutral => 0.0,
            };
            // Location evidence implied by a compared address or postcode cannot add.
            let implied = match field {
                Field::Postcode => has_address,
                Field::Region => has_address || has_postcode,
                _ => false,
            };
            if !implied {
                attainable += model.agreement();
            }
            fields.push(FieldScore { field, outcome: c.outcome, similarity: c.similarity, weight, reason: c.reason });
        }
    };
    fn both<'x, T: ?Sized, R>(x: Option<&'x T>, y: Option<&'x T>, f: impl FnOnce(&'x T, &'x T) -> R) -> Option<R> {
        Some(f(x?, y?))
    }
    push(
        Field::Uscc,
        both(a.uscc.as_ref(), b.uscc.as_ref(), |x, y| {
            codes(&x.normalized, &y.normalized, x.checksum_ok, y.checksum_ok)
        }),
    );
    push(
        Field::IdNumber,
        both(a.id_number.as_ref(), b.id_number.as_ref(), |x, y| {
            codes(&x.normalized, &y.normalized, x.valid_cn, y.valid_cn)
        }),
    );
    push(Field::Company, both(a.company.as_ref(), b.company.as_ref(), |x, y| companies(x, y, t)));
    push(Field::Name, both(a.name.as_ref(), b.name.as_ref(), |x, y| names(x, y, t)));
    push(Field::Mobile, phones(&a.phones, &b.phones, false, t));
    push(Field::Landline, phones(&a.phones, &b.phones, true, t));
    push(Field::Email, both(a.email.as_ref(), b.email.as_ref(), |x, y| emails(x, y, !person_pair)));
    // Region and postcode are implied by an address: when the addresses were compared, their
    // agreement adds nothing (it would count the same evidence twice), their disagreement
    // still counts.
    // So is a region by a postcode.
    let address = both(a.address.as_ref(), b.address.as_ref(), addresses);
    let postcode = both(a.postcode.as_deref(), b.postcode.as_deref(), equal_text);
    let address_agrees = address.is_some_and(|c| c.similarity >= 0.8);
    let implied = |c: Cmp, by_postcode: bool| match c.outcome {
        Outcome::Agree if address.is_some() => Cmp::neutral(1.0, "implied by address"),
        // Same address, other postcode or region: a typing error more likely than a clue.
        Outcome::Disagree if address_agrees => Cmp::neutral(0.0, "differs, address agrees"),
        Outcome::Agree if by_postcode && postcode.is_some() => Cmp::neutral(1.0, "implied by postcode"),
        _ => c,
    };
    let region = both(a.region.as_deref(), b.region.as_deref(), equal_text).map(|c| implied(c, true));
    let postcode = postcode.map(|c| implied(c, false));
    push(Field::Address, address);
    push(Field::Postcode, postcode);
    push(Field::Region, region);
    push(
        Field::Industry,
        both(a.industry.as_deref(), b.industry.as_deref(), |x, y| {
            // Every word of `s` is a word of `t` (as sets: repeats do not count).
            let within = |s: &str, t: &str| s.split(' ').all(|w| t.split(' ').any(|v| v == w));
            if x == y {
                Cmp::agree("same")
            } else if within(x, y) || within(y, x) {
                Cmp::partial(0.7, 0.7, "one names the other")
            } else if t.same_industry {
                Cmp::disagree(0.0, "different")
            } else {
                Cmp::neutral(0.0, "other industry (ignored)")
            }
        }),
    );
    push(Field::BirthDate, both(a.birth_date.as_ref(), b.birth_date.as_ref(), |x, y| birth_dates(*x, *y)));
    if mixed {
        // A person customer and a company customer are different customers even when the
        // person is the company's contact: P(kinds differ | same) ~ 0.05, P(kinds differ |
        // different) ~ 0.5. Agreement of kinds is the normal case and adds nothing.
        fields.push(FieldScore {
            field: Field::Kind,
            outcome: Outcome::Disagree,
            similarity: 0.0,
            weight: config.companies.get(Field::Kind).disagreement(),
            reason: "company and person",
        });
    }
    let explanation = Explanation { fields };
    let weight = explanation.total();
    // The sparse-record rule is for pairs that contradict each other nowhere.
    let contradicted = explanation.fields.iter().any(|f| f.outcome == Outcome::Disagree);
    let threshold = if contradicted { t.match_weight } else { t.match_weight_for(attainable) };
    let decision = if weight >= threshold {
        Decision::Duplicate
    } else if weight >= t.review_weight.min(threshold) {
        Decision::Review
    } else {
        Decision::Distinct
    };
    let score = 1.0 / (1.0 + (threshold - weight).exp2());
    MatchResult { weight, threshold, score, decision, explanation }
}
