use serde::{Deserialize, Serialize};

use super::text::nfkc;

/// The 31 characters a Unified Social Credit Code is written in (GB 32100-2015): digits and
/// the capital letters without I, O, S, V and Z.
pub const USCC_ALPHABET: &str = "0123456789ABCDEFGHJKLMNPQRTUWXY";

/// A Unified Social Credit Code (统一社会信用代码) as received, and what could be made of it.
///
/// A code that fails its checksum is kept with `checksum_ok == false` so it can be reviewed:
/// such codes exist in real registers and in typed data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Uscc {
    pub raw: String,
    /// NFKC, uppercase, separators removed; the match key.
    pub normalized: String,
    /// Check character matches the first 17 (implies `well_formed`).
    pub checksum_ok: bool,
    /// 18 characters, all from [`USCC_ALPHABET`].
    pub well_formed: bool,
}

fn index(c: char) -> Option<u32> {
    USCC_ALPHABET.find(c).map(|i| i as u32)
}

/// Computes the check character (position 18) for the first 17 characters of a code,
/// with weights `3^i mod 31` and check index `(31 - sum mod 31) mod 31`. `None` when the
/// input is not 17 characters of [`USCC_ALPHABET`].
///
/// ```
/// use crm_domain::normalize::{normalize_uscc, uscc_check_char};
/// let first17 = "91110108MA01AB2C3";
/// let check = uscc_check_char(first17).unwrap();
/// assert!(normalize_uscc(&format!("{first17}{check}")).checksum_ok);
/// ```
pub fn uscc_check_char(first17: &str) -> Option<char> {
    if first17.chars().count() != 17 {
        return None;
    }
    let mut weight = 1u32;
    let mut sum = 0u32;
    for c in first17.chars() {
        sum += index(c)? * weight;
        weight = weight * 3 % 31;
    }
    let check = (31 - sum % 31) % 31;
    USCC_ALPHABET.chars().nth(check as usize)
}

/// Normalises a USCC: NFKC, uppercase, spaces and dashes removed; then checks the form
/// and the checksum. Never drops the input.
pub fn normalize_uscc(raw: &str) -> Uscc {
    let normalized: String = nfkc(raw)
        .chars()
        .filter(|c| !c.is_whitespace() && !matches!(c, '-' | '_' | '.' | '/'))
        .flat_map(char::to_uppercase)
        .collect();
    let well_formed = normalized.chars().count() == 18 && normalized.chars().all(|c| index(c).is_some());
    let checksum_ok = well_formed && {
        let (first17, last) = normalized.split_at(17);
        uscc_check_char(first17) == last.chars().next()
    };
    Uscc { raw: raw.to_owned(), normalized, checksum_ok, well_formed }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `expected`: (normalized, well_formed, checksum_ok).
    fn check(input: &str, expected: (&str, bool, bool)) {
        let uscc = normalize_uscc(input);
        assert_eq!((uscc.normalized.as_str(), uscc.well_formed, uscc.checksum_ok), expected, "input {input:?}");
        assert_eq!(uscc.raw, input);
    }

    /// Synthetic valid code built from `first17`.
    fn valid(first17: &str) -> String {
        format!("{first17}{}", uscc_check_char(first17).unwrap())
    }

    #[test]
    fn weights_are_powers_of_three_mod_31() {
        // The published weight table of GB 32100-2015.
        let weights: Vec<u32> = (0..17)
            .scan(1u32, |w, _| {
                let current = *w;
                *w = *w * 3 % 31;
                Some(current)
            })
            .collect();
        assert_eq!(weights, [1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28]);
        // All zeros sums to 0, check index 0; a single 1 in position 0 gives sum 1, check 30 = 'Y'.
        assert_eq!(uscc_check_char("00000000000000000"), Some('0'));
        assert_eq!(uscc_check_char("10000000000000000"), Some('Y'));
        assert_eq!(uscc_check_char("01000000000000000"), Some('W')); // 31-3 = 28 = 'W'
    }

    #[test]
    fn check_char_rejects_bad_input() {
        assert_eq!(uscc_check_char("9111010800000000"), None); // 16 chars
        assert_eq!(uscc_check_char("911101080000000000"), None); // 18 chars
        assert_eq!(uscc_check_char("9111010800000000I"), None); // I is not in the alphabet
        assert_eq!(uscc_check_char("9111010800000000o"), None); // lowercase is not normalised here
    }

    #[test]
    fn codes_in_every_spelling() {
        let code = valid("91110108MA01AB2C3");
        let spaced = format!("{} {} {}", &code[..6], &code[6..12], &code[12..]);
        let dashed = format!("{}-{}", &code[..8], &code[8..]);
        let lower = code.to_lowercase();
        let full_width: String = code.chars().map(|c| char::from_u32(c as u32 - 0x21 + 0xFF01).unwrap()).collect();
        for input in [code.clone(), spaced, dashed, lower, full_width, format!("  {code}\t")] {
            check(&input, (&code, true, true));
        }
        for first17 in ["91310115MA1K3YJ00", "92440300L00000000", "12100000400000000", "52110000500000001"] {
            let code = valid(first17);
            check(&code, (&code, true, true));
        }
    }

    #[test]
    fn failing_codes_are_kept_and_flagged() {
        let code = valid("91110108MA01AB2C3");
        // Every wrong check character is detected.
        for wrong in USCC_ALPHABET.chars().filter(|c| !code.ends_with(*c)) {
            let bad = format!("{}{wrong}", &code[..17]);
            check(&bad, (&bad, true, false));
        }
        // A single substituted character in the body is detected.
        let swapped = format!("9{}{}", "2", &code[2..]);
        check(&swapped, (&swapped, true, false));
        // Malformed: wrong length, forbidden letters.
        check("9111010", ("9111010", false, false));
        check(&format!("{code}0"), (&format!("{code}0"), false, false));
        let with_o = format!("{}O", &code[..17]);
        check(&with_o, (&with_o, false, false));
        check("", ("", false, false));
        check("无", ("无", false, false));
    }
}
