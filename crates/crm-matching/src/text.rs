//! Text helpers shared by preparation, blocking and comparison: script detection, folding,
//! pinyin, Soundex and token similarity. The domain normalisers in `crm_domain::normalize`
//! do the field-specific work; these only serve matching.

use pinyin::ToPinyin;
use unicode_normalization::UnicodeNormalization;

/// CJK ideographs used in Chinese names and addresses.
pub(crate) fn is_cjk(c: char) -> bool {
    matches!(c, '\u{4E00}'..='\u{9FFF}' | '\u{3400}'..='\u{4DBF}' | '\u{F900}'..='\u{FAFF}')
}

/// NFKD without combining marks (accents: "José" -> "jose", "Zhāng" -> "zhang"),
/// lowercase, every character that is neither alphanumeric nor CJK becomes a space, runs of
/// spaces become one. Full-width text folds to ASCII.
pub(crate) fn fold(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut space = false;
    let chars = raw.nfkd().filter(|c| !unicode_normalization::char::is_combining_mark(*c));
    for c in chars.flat_map(char::to_lowercase).flat_map(|c| {
        if c == 'ß' {
            ['s', 's'].into_iter().take(2)
        } else {
            [c, c].into_iter().take(1)
        }
    }) {
        if c.is_alphanumeric() {
            if space && !out.is_empty() {
                out.push(' ');
            }
            space = false;
            out.push(c);
        } else {
            space = true;
        }
    }
    out
}

/// One spelling for common abbreviations of address and company words ("st" -> "street",
/// "intl" -> "international", "&" -> "and"), so they agree as tokens and as block keys.
pub(crate) fn canonical_word(word: &str) -> &str {
    match word {
        "st" | "str" => "street",
        "rd" => "road",
        "ave" | "av" | "avenue" => "avenue",
        "dr" | "drv" => "drive",
        "pl" => "place",
        "ct" | "crt" => "court",
        "cres" | "cr" => "crescent",
        "ln" => "lane",
        "pde" => "parade",
        "tce" | "ter" => "terrace",
        "blvd" | "bvd" => "boulevard",
        "hwy" => "highway",
        "sq" => "square",
        "cct" => "circuit",
        "cl" => "close",
        "mt" => "mount",
        "apt" | "flat" => "unit",
        "&" => "and",
        "intl" => "international",
        "mfg" => "manufacturing",
        "svcs" | "svc" => "services",
        "assoc" | "assn" => "associates",
        "bros" => "brothers",
        "ctr" | "centre" => "center",
        "tech" => "technology",
        "technologies" => "technology",
        "mgmt" => "management",
        other => other,
    }
}

/// `fold`, then every word replaced by its [`canonical_word`].
pub(crate) fn fold_canonical(raw: &str) -> String {
    fold(raw).split(' ').map(canonical_word).collect::<Vec<_>>().join(" ")
}

/// Tone-less pinyin of one character, or `None` when it is not a Hanzi.
pub(crate) fn pinyin_of(c: char) -> Option<&'static str> {
    c.to_pinyin().map(|p| p.plain())
}

/// Pinyin syllables of a text's Hanzi, other characters dropped.
pub(crate) fn pinyin_syllables(text: &str) -> Vec<&'static str> {
    text.chars().filter_map(pinyin_of).collect()
}

/// The tokens a Chinese name is written with in Latin script: surname syllable, then the
/// given name's syllables joined ("张建国" -> ["zhang", "jianguo"]). Compound surnames are
/// rare enough to be treated as a first syllable plus given name.
pub(crate) fn chinese_name_tokens(name: &str) -> Vec<String> {
    let syllables = pinyin_syllables(name);
    match syllables.split_first() {
        Some((surname, given)) if !given.is_empty() => vec![(*surname).to_owned(), given.concat()],
        Some((surname, _)) => vec![(*surname).to_owned()],
        None => Vec::new(),
    }
}

/// American Soundex of an ASCII-letter token: first letter and three digits ("robert" -> "r163").
pub(crate) fn soundex(token: &str) -> Option<String> {
    let mut letters = token.chars().filter(char::is_ascii_alphabetic).map(|c| c.to_ascii_lowercase());
    let first = letters.next()?;
    let code = |c: char| match c {
        'b' | 'f' | 'p' | 'v' => Some('1'),
        'c' | 'g' | 'j' | 'k' | 'q' | 's' | 'x' | 'z' => Some('2'),
        'd' | 't' => Some('3'),
        'l' => Some('4'),
        'm' | 'n' => Some('5'),
        'r' => Some('6'),
        _ => None,
    };
    let mut out = String::with_capacity(4);
    out.push(first);
    let mut last = code(first);
    for c in letters {
        let digit = code(c);
        if digit.is_some() && digit != last {
            out.extend(digit);
            if out.len() == 4 {
                break;
            }
        }
        // h and w do not separate equal codes; vowels do.
        if !matches!(c, 'h' | 'w') {
            last = digit;
        }
    }
    while out.len() < 4 {
        out.push('0');
    }
    Some(out)
}

/// Character bigrams of a string (one unigram for a single character).
pub(crate) fn char_bigrams(text: &str) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    if chars.len() < 2 {
        return chars.iter().map(|c| c.to_string()).collect();
    }
    chars.windows(2).map(|w| w.iter().collect()).collect()
}

/// Address tokens: Latin words and digit runs as they are, CJK runs as character bigrams.
pub(crate) fn address_tokens(folded: &str) -> Vec<String> {
    let mut tokens = Vec::new();
    for word in folded.split(' ') {
        let mut run = String::new();
        let mut run_cjk = false;
        let flush = |run: &mut String, run_cjk: bool, tokens: &mut Vec<String>| {
            if run.is_empty() {
                return;
            }
            if run_cjk {
                tokens.extend(char_bigrams(run));
            } else {
                tokens.push(std::mem::take(run));
            }
            run.clear();
        };
        for c in word.chars() {
            let cjk = is_cjk(c);
            let kind_changes = !run.is_empty()
                && (cjk != run_cjk || (!cjk && c.is_ascii_digit() != run.ends_with(|p: char| p.is_ascii_digit())));
            if kind_changes {
                flush(&mut run, run_cjk, &mut tokens);
            }
            run_cjk = cjk;
            run.push(c);
        }
        flush(&mut run, run_cjk, &mut tokens);
    }
    tokens.sort();
    tokens.dedup();
    tokens
}

/// Dice coefficient of two sorted, deduplicated token lists.
pub(crate) fn dice(a: &[String], b: &[String]) -> f64 {
    if a.is_empty() || b.is_empty() {
        return 0.0;
    }
    let (mut i, mut j, mut common) = (0, 0, 0usize);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                common += 1;
                i += 1;
                j += 1;
            }
        }
    }
    2.0 * common as f64 / (a.len() + b.len()) as f64
}

/// Jaro-Winkler, made exactly symmetric (the textbook definition is, floating point may not be).
pub(crate) fn jaro_winkler(a: &str, b: &str) -> f64 {
    let x = strsim::jaro_winkler(a, b);
    let y = strsim::jaro_winkler(b, a);
    x.min(y)
}

/// Jaro-Winkler of two tokens, where an initial matches the word it abbreviates ("j" ~ "john").
fn token_jw(a: &str, b: &str) -> f64 {
    let initial = |x: &str, y: &str| x.chars().count() == 1 && y.starts_with(x);
    if a != b && (initial(a, b) || initial(b, a)) {
        return 0.9;
    }
    jaro_winkler(a, b)
}

/// Mean best Jaro-Winkler of tokens, matched greedily in both directions and averaged, so
/// word order and an extra middle name cost little ("wei zhang" ~ "zhang wei").
pub(crate) fn token_similarity(a: &[String], b: &[String]) -> f64 {
    if a.is_empty() || b.is_empty() {
        return 0.0;
    }
    let side = |x: &[String], y: &[String]| -> f64 {
        x.iter().map(|t| y.iter().map(|u| token_jw(t, u)).fold(0.0, f64::max)).sum::<f64>() / x.len() as f64
    };
    // The shorter side decides, the longer only slightly penalises extra tokens.
    let core = match a.len().cmp(&b.len()) {
        std::cmp::Ordering::Less => side(a, b),
        std::cmp::Ordering::Greater => side(b, a),
        std::cmp::Ordering::Equal => side(a, b).min(side(b, a)),
    };
    // Tokens of the longer side that match nothing cost 0.05 each, a lone initial (a
    // middle initial written on one side only) 0.01.
    let (short, long) = if a.len() < b.len() { (a, b) } else { (b, a) };
    let penalty: f64 = if short.len() == long.len() {
        0.0
    } else {
        long.iter()
            .filter(|t| short.iter().map(|u| token_jw(t, u)).fold(0.0, f64::max) < 0.85)
            .map(|t| if t.chars().count() == 1 { 0.01 } else { 0.05 })
            .sum()
    };
    (core - penalty).max(0.0)
}

/// FNV-1a over a tag and bytes: the 64-bit block key of a string.
pub(crate) fn key_hash(tag: u8, text: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ u64::from(tag);
    h = h.wrapping_mul(0x0100_0000_01b3);
    for b in text.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn soundex_codes() {
        for (input, expected) in [
            ("robert", "r163"),
            ("rupert", "r163"),
            ("ashcraft", "a261"),
            ("tymczak", "t522"),
            ("pfister", "p236"),
            ("lee", "l000"),
        ] {
            assert_eq!(soundex(input).as_deref(), Some(expected), "{input}");
        }
        assert_eq!(soundex("123"), None);
    }

    #[test]
    fn folding_and_tokens() {
        assert_eq!(fold("  Ｍａｉｎ  St., No.１２ "), "main st no 12");
        assert_eq!(fold("José Müller-Straße"), "jose muller strasse");
        assert_eq!(fold("Zhāng Wěi"), "zhang wei");
        assert_eq!(address_tokens(&fold("建国路88号")), vec!["88", "号", "国路", "建国"]);
        assert_eq!(chinese_name_tokens("张建国"), vec!["zhang", "jianguo"]);
        assert_eq!(pinyin_syllables("伟威"), vec!["wei", "wei"]);
    }

    #[test]
    fn similarities() {
        let t = |s: &str| s.split(' ').map(str::to_owned).collect::<Vec<_>>();
        assert!((token_similarity(&t("wei zhang"), &t("zhang wei")) - 1.0).abs() < 1e-9);
        assert!(token_similarity(&t("jon smith"), &t("john smith")) > 0.9);
        assert!(token_similarity(&t("mary jones"), &t("peter brown")) < 0.7);
        assert!(token_similarity(&t("john a smith"), &t("john smith")) >= 0.99);
        assert!(token_similarity(&t("john andrew smith"), &t("john smith")) < 0.96);
        assert_eq!(dice(&t("a b c"), &t("a b d")), 2.0 * 2.0 / 6.0);
    }
}
