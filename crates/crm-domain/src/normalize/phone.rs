use phonenumber::{country, Mode, PhoneNumber, Type};
use serde::{Deserialize, Serialize};

use super::text::nfkc;

/// What kind of line a phone number is, as far as the numbering plan tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PhoneKind {
    Mobile,
    Landline,
    Unknown,
}

/// A phone number as typed, and what could be made of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Phone {
    /// The text exactly as received.
    pub raw: String,
    /// E.164 form (`+8613800138000`) when the number parsed and is valid for its region.
    pub e164: Option<String>,
    pub kind: PhoneKind,
    /// Chinese landline area code without the trunk `0`: `"10"` Beijing, `"21"` Shanghai,
    /// `"755"` Shenzhen. `None` for mobiles and foreign numbers.
    pub area_code: Option<String>,
    pub valid: bool,
}

/// Normalises a phone number, assuming mainland China when no country code is given.
///
/// Steps: NFKC (full-width digits), cut an extension (`转`, `ext`, `x`, `#`), strip
/// separators, turn the international prefix `00` and a bare `86` country code into `+`,
/// then parse and validate with the `phonenumber` crate.
///
/// ```
/// use crm_domain::normalize::{normalize_phone, PhoneKind};
/// let p = normalize_phone("０１０－６１２３ ４５６７");
/// assert_eq!(p.e164.as_deref(), Some("+861061234567"));
/// assert_eq!((p.kind, p.area_code.as_deref()), (PhoneKind::Landline, Some("10")));
/// ```
pub fn normalize_phone(raw: &str) -> Phone {
    let invalid = |kind| Phone { raw: raw.to_owned(), e164: None, kind, area_code: None, valid: false };
    let Some(dialable) = dialable(raw) else {
        return invalid(PhoneKind::Unknown);
    };
    if let Some(e164) = plain_cn_mobile(&dialable) {
        return Phone { raw: raw.to_owned(), e164: Some(e164), kind: PhoneKind::Mobile, area_code: None, valid: true };
    }
    parse_with_library(raw, &dialable)
}

/// Mainland mobile blocks that are wholly allocated (every number in them is a valid mobile in
/// the numbering plan): 130-139, 150-153, 155-159, 180-189.
fn wholly_mobile_block(prefix: &[u8]) -> bool {
    matches!(prefix, [b'1', b'3' | b'8', _] | [b'1', b'5', b'0'..=b'3' | b'5'..=b'9'])
}

/// The E.164 form of a plain mainland mobile (`13800138000`, `+8613800138000`) in a wholly
/// allocated block, without the `phonenumber` crate (which runs its regexes under one global
/// lock, about 25 µs a number). Anything else goes to the library. A test checks that both
/// agree on every block.
fn plain_cn_mobile(dialable: &str) -> Option<String> {
    let national = dialable.strip_prefix("+86").unwrap_or(dialable);
    let bytes = national.as_bytes();
    (bytes.len() == 11 && bytes.iter().all(u8::is_ascii_digit) && wholly_mobile_block(&bytes[..3]))
        .then(|| format!("+86{national}"))
}

/// Parses and validates with the `phonenumber` crate.
fn parse_with_library(raw: &str, dialable: &str) -> Phone {
    let invalid = |kind| Phone { raw: raw.to_owned(), e164: None, kind, area_code: None, valid: false };
    let dialable = dialable.to_owned();
    let parsed = if dialable.starts_with('+') {
        phonenumber::parse(None, &dialable)
    } else {
        phonenumber::parse(Some(country::Id::CN), &dialable)
    };
    let Ok(number) = parsed else {
        return invalid(PhoneKind::Unknown);
    };
    if !number.is_valid() {
        return invalid(PhoneKind::Unknown);
    }
    let kind = match number.number_type(&phonenumber::metadata::DATABASE) {
        Type::Mobile => PhoneKind::Mobile,
        Type::FixedLine => PhoneKind::Landline,
        _ => PhoneKind::Unknown,
    };
    let area_code = if kind == PhoneKind::Landline { cn_area_code(&number) } else { None };
    Phone {
        raw: raw.to_owned(),
        e164: Some(number.format().mode(Mode::E164).to_string()),
        kind,
        area_code,
        valid: true,
    }
}

/// Reduces typed text to `+digits` or `digits`; `None` when no digits are left.
fn dialable(raw: &str) -> Option<String> {
    let text = nfkc(raw).to_lowercase();
    // An extension is not part of the number.
    let text = ["转", "分机", "ext", "x", "#"]
        .iter()
        .filter_map(|marker| text.find(marker))
        .min()
        .map_or(text.as_str(), |at| &text[..at]);
    let text = text.trim();
    let plus = text.starts_with('+');
    let digits: String = text.chars().filter(char::is_ascii_digit).collect();
    if digits.is_empty() {
        return None;
    }
    Some(if plus {
        format!("+{digits}")
    } else if let Some(international) = digits.strip_prefix("00") {
        // 0086..., 0049...: the international call prefix dialled from China.
        format!("+{international}")
    } else if digits.starts_with("86") && digits.len() >= 12 {
        // 86 13800138000 / 86 10 61234567: a country code written without `+`. Domestic
        // numbers never start with 86 at this length (mobiles start with 1, landlines with 0).
        format!("+{digits}")
    } else {
        digits
    })
}

/// Chinese area codes: `10` and `2x` have two digits, every other one has three.
fn cn_area_code(number: &PhoneNumber) -> Option<String> {
    if number.code().value() != 86 {
        return None;
    }
    let national = number.national().value().to_string();
    let len = if national.starts_with('1') || national.starts_with('2') { 2 } else { 3 };
    national.get(..len).map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `expected`: (e164, kind, area code); `None` e164 means invalid.
    fn check(input: &str, expected: (Option<&str>, PhoneKind, Option<&str>)) {
        let phone = normalize_phone(input);
        let actual = (phone.e164.as_deref(), phone.kind, phone.area_code.as_deref());
        assert_eq!(actual, expected, "input {input:?}");
        assert_eq!(phone.valid, expected.0.is_some(), "validity of {input:?}");
        assert_eq!(phone.raw, input, "raw text is kept");
    }

    const MOBILE: (Option<&str>, PhoneKind, Option<&str>) = (Some("+8613800138000"), PhoneKind::Mobile, None);

    /// The fast path agrees with the `phonenumber` crate on every number of every block it
    /// takes (sampled), and leaves every other block to the library.
    #[test]
    fn fast_path_agrees_with_the_library() {
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        for a in b'0'..=b'9' {
            for b in b'0'..=b'9' {
                let prefix = [b'1', a, b];
                let p = std::str::from_utf8(&prefix).unwrap();
                for _ in 0..40 {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let number = format!("{p}{:08}", x % 100_000_000);
                    let fast = plain_cn_mobile(&number);
                    let library = parse_with_library(&number, &number);
                    if wholly_mobile_block(&prefix) {
                        assert_eq!(fast, library.e164, "{number}");
                        assert_eq!(library.kind, PhoneKind::Mobile, "{number}");
                    } else {
                        assert_eq!(fast, None, "{number} is left to the library");
                    }
                }
            }
        }
    }

    #[test]
    fn chinese_mobiles_in_every_spelling() {
        for input in [
            "13800138000",
            "138 0013 8000",
            "138-0013-8000",
            "138.0013.8000",
            "(138) 0013 8000",
            "+86 138 0013 8000",
            "+86-13800138000",
            "+86 (138) 0013-8000",
            "0086 138 0013 8000",
            "008613800138000",
            "86 13800138000",
            "8613800138000",
            "１３８００１３８０００",
            "１３８－００１３－８０００",
            "＋８６ １３８ ００１３ ８０００",
            "  13800138000  ",
            "138\u{3000}0013\u{3000}8000",
            "13800138000 转 123",
            "13800138000 ext. 9",
        ] {
            check(input, MOBILE);
        }
        check("139-0013-9000", (Some("+8613900139000"), PhoneKind::Mobile, None));
        check("+86 186 0018 6000", (Some("+8618600186000"), PhoneKind::Mobile, None));
        check("15000150000", (Some("+8615000150000"), PhoneKind::Mobile, None));
    }

    #[test]
    fn chinese_landlines_with_area_codes() {
        let beijing = (Some("+861061234567"), PhoneKind::Landline, Some("10"));
        for input in [
            "010-61234567",
            "010 6123 4567",
            "(010) 6123-4567",
            "(010)61234567",
            "+86 10 6123 4567",
            "0086 10 61234567",
            "86 10 61234567",
            "０１０－６１２３４５６７",
            "010-61234567 转 8001",
            "010-61234567#8001",
        ] {
            check(input, beijing);
        }
        check("021-51234567", (Some("+862151234567"), PhoneKind::Landline, Some("21")));
        check("020-81234567", (Some("+862081234567"), PhoneKind::Landline, Some("20")));
        check("0755-8612 3456", (Some("+8675586123456"), PhoneKind::Landline, Some("755")));
        check("+86 571 8612 3456", (Some("+8657186123456"), PhoneKind::Landline, Some("571")));
    }

    #[test]
    fn foreign_numbers() {
        let berlin = (Some("+4930123456"), PhoneKind::Landline, None);
        for input in ["+49 30 123456", "0049 30 123456", "+49 (0)30 123456", "0049-30-123456"] {
            check(input, berlin);
        }
        check("+1 650-253-0000", (Some("+16502530000"), PhoneKind::Unknown, None));
        check("+44 7400 123456", (Some("+447400123456"), PhoneKind::Mobile, None));
    }

    #[test]
    fn garbage_is_flagged_not_dropped() {
        for input in [
            "",
            "   ",
            "n/a",
            "无",
            "123",
            "1380013800",   // one digit short
            "138001380001", // one digit long
            "12345678901",  // no such mobile range
            "010-1234",
            "+86 123",
            "+49 1",
        ] {
            check(input, (None, PhoneKind::Unknown, None));
        }
    }
}
