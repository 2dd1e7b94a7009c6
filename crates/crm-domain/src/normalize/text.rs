use unicode_normalization::{is_nfkc_quick, IsNormalized, UnicodeNormalization};

/// NFKC-normalises `raw` (full-width letters and digits become ASCII, the ideographic
/// space becomes a plain space). Most names are already NFKC (ASCII, unified CJK
/// ideographs); the quick check tells those apart without decomposing and recomposing them.
pub(crate) fn nfkc(raw: &str) -> String {
    if is_nfkc_quick(raw.chars()) == IsNormalized::Yes {
        return raw.to_owned();
    }
    raw.nfkc().collect()
}

/// True for the CJK ideographs used in Chinese names (unified ideographs and extension A).
pub(crate) fn is_cjk(c: char) -> bool {
    matches!(c, '\u{4E00}'..='\u{9FFF}' | '\u{3400}'..='\u{4DBF}' | '\u{F900}'..='\u{FAFF}')
}

/// E-mail address as a match key: NFKC (full-width `＠` becomes `@`), trimmed, lowercased.
///
/// ```
/// assert_eq!(crm_domain::normalize::normalize_email("  Zhang.San@Example.COM "), "zhang.san@example.com");
/// ```
pub fn normalize_email(raw: &str) -> String {
    nfkc(raw).trim().to_lowercase()
}

/// Person name as a match key: NFKC, whitespace folded to one space, and no space at all
/// between two CJK characters ("张 三" is typed as "张三"). Variants of the middle dot used
/// in transliterated names (`•`, `・`, `．`) become `·`. Case is kept.
///
/// ```
/// assert_eq!(crm_domain::normalize::normalize_person_name(" 张　三 "), "张三");
/// ```
pub fn normalize_person_name(raw: &str) -> String {
    let text = nfkc(raw);
    let mut out = String::with_capacity(text.len());
    let mut pending_space = false;
    for c in text.chars() {
        if c.is_whitespace() {
            pending_space = !out.is_empty();
            continue;
        }
        let c = match c {
            '•' | '・' | '．' | '∙' | '‧' => '·',
            other => other,
        };
        if pending_space {
            let prev = out.chars().next_back();
            let joins_cjk = prev.is_some_and(|p| is_cjk(p) || p == '·') && (is_cjk(c) || c == '·');
            if !joins_cjk {
                out.push(' ');
            }
            pending_space = false;
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_email(input: &str, expected: &str) {
        assert_eq!(normalize_email(input), expected, "input {input:?}");
    }

    fn check_name(input: &str, expected: &str) {
        assert_eq!(normalize_person_name(input), expected, "input {input:?}");
    }

    #[test]
    fn emails() {
        for (input, expected) in [
            ("zhangsan@example.com", "zhangsan@example.com"),
            ("  ZhangSan@Example.com\t", "zhangsan@example.com"),
            ("LI.SI@EXAMPLE.CN", "li.si@example.cn"),
            ("ｗａｎｇ＠ｅｘａｍｐｌｅ．ｃｏｍ", "wang@example.com"),
            ("\u{3000}sales@example.org\u{3000}", "sales@example.org"),
            ("", ""),
        ] {
            check_email(input, expected);
        }
    }

    #[test]
    fn person_names() {
        for (input, expected) in [
            ("张三", "张三"),
            (" 张三 ", "张三"),
            ("张 三", "张三"),
            ("张\u{3000}三", "张三"),
            ("欧阳  娜娜", "欧阳娜娜"),
            ("阿卜杜•热合曼", "阿卜杜·热合曼"),
            ("阿卜杜 ・ 热合曼", "阿卜杜·热合曼"),
            ("Li   Wei", "Li Wei"),
            ("  Anna\tSchmidt ", "Anna Schmidt"),
            ("Ｌｉ Ｗｅｉ", "Li Wei"),
            ("王 Kevin", "王 Kevin"),
            ("", ""),
        ] {
            check_name(input, expected);
        }
    }

    #[test]
    fn the_quick_path_gives_what_full_normalisation_gives() {
        for raw in ["Acme Ltd", "北京市康达医疗器械有限公司", "ＡＢＣ　１２３", "\u{F900}", "ﬁ", "e\u{301}", "①"]
        {
            assert_eq!(nfkc(raw), raw.nfkc().collect::<String>(), "input {raw:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn nfkc_equals_full_normalisation(raw in "\\PC{0,24}") {
            proptest::prop_assert_eq!(nfkc(&raw), raw.nfkc().collect::<String>());
        }
    }
}
