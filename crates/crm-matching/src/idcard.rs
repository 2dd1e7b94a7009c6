//! Chinese resident identity numbers (GB 11643-1999): 6 digits of region, 8 of birth date,
//! 3 of sequence, and a check character over ISO 7064 MOD 11-2.

use unicode_normalization::UnicodeNormalization;

const WEIGHTS: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
const CHECK: [char; 11] = ['1', '0', 'X', '9', '8', '7', '6', '5', '4', '3', '2'];

/// An identity number as a match key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdNumber {
    /// NFKC, uppercase, separators removed.
    pub normalized: String,
    /// A well-formed 18-digit Chinese ID whose check character and birth date are valid.
    pub valid_cn: bool,
    /// Birth date `YYYYMMDD` read from a valid Chinese ID.
    pub birth_date: Option<u32>,
}

/// The check character for the first 17 digits of a Chinese resident ID; `None` unless the
/// input is exactly 17 ASCII digits.
///
/// ```
/// assert_eq!(crm_matching::id_check_char("11010519491231002"), Some('X'));
/// ```
pub fn id_check_char(first17: &str) -> Option<char> {
    if first17.len() != 17 {
        return None;
    }
    let mut sum = 0u32;
    for (c, w) in first17.chars().zip(WEIGHTS) {
        sum += c.to_digit(10)? * w;
    }
    Some(CHECK[(sum % 11) as usize])
}

/// Normalises an identity number and validates it as a Chinese resident ID.
pub fn parse_id_number(raw: &str) -> IdNumber {
    let normalized: String = raw.nfkc().filter(|c| c.is_alphanumeric()).flat_map(char::to_uppercase).collect();
    let mut out = IdNumber { normalized, valid_cn: false, birth_date: None };
    if out.normalized.len() == 18 && out.normalized.is_ascii() {
        let (first17, last) = out.normalized.split_at(17);
        if id_check_char(first17).map(String::from).as_deref() == Some(last) {
            let birth: u32 = first17[6..14].parse().unwrap_or(0);
            if plausible_date(birth) {
                out.valid_cn = true;
                out.birth_date = Some(birth);
            }
        }
    }
    out
}

/// `YYYYMMDD` with a year in 1850..=2100, a month 1..=12 and a day valid for that month.
pub(crate) fn plausible_date(yyyymmdd: u32) -> bool {
    let (y, m, d) = (yyyymmdd / 10000, yyyymmdd / 100 % 100, yyyymmdd % 100);
    if !(1850..=2100).contains(&y) || !(1..=12).contains(&m) || d == 0 {
        return false;
    }
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let days = match m {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    };
    d <= days
}

/// Reads a birth date in the usual spellings into `YYYYMMDD`: `1985-03-07`, `1985/3/7`,
/// `1985.3.7`, `1985年3月7日`, `19850307`, and day-first `07/03/1985` (month-first when the
/// first number cannot be a day's month partner, as in `12/31/1985`).
pub fn parse_birth_date(raw: &str) -> Option<u32> {
    let text: String = raw.nfkc().collect();
    let groups: Vec<&str> = text.split(|c: char| !c.is_ascii_digit()).filter(|g| !g.is_empty()).collect();
    let num = |s: &str| s.parse::<u32>().ok();
    let date = match groups.as_slice() {
        [one] if one.len() == 8 => num(one)?,
        [y, m, d] if y.len() == 4 => num(y)? * 10000 + num(m)? * 100 + num(d)?,
        [a, b, y] if y.len() == 4 => {
            let (a, b, y) = (num(a)?, num(b)?, num(y)?);
            if b > 12 {
                y * 10000 + a * 100 + b
            } else {
                y * 10000 + b * 100 + a
            }
        }
        _ => return None,
    };
    plausible_date(date).then_some(date)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_characters() {
        // The example number from GB 11643-1999.
        for (first17, check) in [("11010519491231002", 'X'), ("44052418800101001", '4')] {
            assert_eq!(id_check_char(first17), Some(check), "{first17}");
        }
        assert_eq!(id_check_char("1101051949123100"), None);
        assert_eq!(id_check_char("1101051949123100A"), None);
    }

    #[test]
    fn parses_and_validates() {
        let id = parse_id_number("110105 19491231 002x");
        assert_eq!(id.normalized, "11010519491231002X");
        assert!(id.valid_cn);
        assert_eq!(id.birth_date, Some(19491231));
        assert!(!parse_id_number("110105194912310021").valid_cn, "wrong check digit");
        assert!(!parse_id_number("110105194913310029").valid_cn, "month 13");
        let foreign = parse_id_number("123-45-6789");
        assert_eq!((foreign.normalized.as_str(), foreign.valid_cn), ("123456789", false));
    }

    #[test]
    fn birth_dates() {
        for (input, expected) in [
            ("1985-03-07", Some(19850307)),
            ("1985/3/7", Some(19850307)),
            ("1985年3月7日", Some(19850307)),
            ("１９８５－０３－０７", Some(19850307)),
            ("19850307", Some(19850307)),
            ("07/03/1985", Some(19850307)),
            ("12/31/1985", Some(19851231)),
            ("1985-02-30", None),
            ("yesterday", None),
        ] {
            assert_eq!(parse_birth_date(input), expected, "{input}");
        }
    }
}
