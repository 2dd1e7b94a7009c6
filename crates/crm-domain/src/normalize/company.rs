use serde::{Deserialize, Serialize};

use super::text::{is_cjk, nfkc};

/// A company name split into the parts that matter for matching.
///
/// `core` is the distinctive name with region, legal form and industry removed: the part two
/// spellings of the same company share ("北京市康达医疗器械有限公司" and "康达医疗器械（北京）"
/// both have core "康达").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompanyName {
    pub raw: String,
    /// NFKC, lowercased Latin letters, no whitespace, bracket characters removed (their
    /// content kept). Latin-script names keep one space between words.
    pub normalized: String,
    pub core: String,
    /// The outermost region named, without its 省/市/区 suffix: "北京", "广东", "浦东".
    pub region: Option<String>,
    /// The industry word(s) that ended the name: "科技", "医疗器械", "technology".
    pub industry: Option<String>,
    /// The legal form(s), in the order written: "股份有限公司", "集团有限公司", "co ltd".
    pub legal_form: Option<String>,
}

/// Province-level divisions, major cities and well-known districts, written without suffix.
const REGIONS: &[&str] = &[
    // provinces, municipalities, autonomous regions, SARs
    "北京",
    "上海",
    "天津",
    "重庆",
    "河北",
    "山西",
    "辽宁",
    "吉林",
    "黑龙江",
    "江苏",
    "浙江",
    "安徽",
    "福建",
    "江西",
    "山东",
    "河南",
    "湖北",
    "湖南",
    "广东",
    "海南",
    "四川",
    "贵州",
    "云南",
    "陕西",
    "甘肃",
    "青海",
    "台湾",
    "内蒙古",
    "广西",
    "西藏",
    "宁夏",
    "新疆",
    "香港",
    "澳门",
    // cities
    "深圳",
    "广州",
    "杭州",
    "南京",
    "苏州",
    "成都",
    "武汉",
    "西安",
    "长沙",
    "郑州",
    "青岛",
    "宁波",
    "厦门",
    "无锡",
    "佛山",
    "东莞",
    "合肥",
    "济南",
    "福州",
    "大连",
    "沈阳",
    "哈尔滨",
    "长春",
    "昆明",
    "南宁",
    "石家庄",
    "太原",
    "南昌",
    "贵阳",
    "兰州",
    "珠海",
    "温州",
    "绍兴",
    "嘉兴",
    "常州",
    "烟台",
    "唐山",
    "徐州",
    "南通",
    "泉州",
    "中山",
    "惠州",
    "金华",
    "台州",
    "潍坊",
    "保定",
    "洛阳",
    "扬州",
    "乌鲁木齐",
    "呼和浩特",
    "银川",
    "西宁",
    "拉萨",
    "海口",
    "三亚",
    // districts
    "海淀",
    "朝阳",
    "东城",
    "西城",
    "丰台",
    "昌平",
    "顺义",
    "大兴",
    "通州",
    "亦庄",
    "浦东",
    "黄浦",
    "徐汇",
    "静安",
    "闵行",
    "嘉定",
    "松江",
    "青浦",
    "南山",
    "福田",
    "罗湖",
    "宝安",
    "龙岗",
    "龙华",
    "天河",
    "越秀",
    "番禺",
    "黄埔",
    "滨江",
    "西湖",
    "余杭",
    "萧山",
    "江宁",
    "鼓楼",
    "高新",
    "经开",
    "工业园",
];

/// Only valid inside brackets: "某某（中国）有限公司".
const QUALIFIER_REGIONS: &[&str] = &["中国", "中华", "亚太", "国际"];

/// Suffixes of an administrative division, longest first.
const REGION_SUFFIXES: &[&str] =
    &["特别行政区", "维吾尔自治区", "壮族自治区", "回族自治区", "自治区", "自治州", "新区", "省", "市", "区", "县"];

/// Chinese legal forms, longest first; stripped repeatedly from the end.
const LEGAL_FORMS: &[&str] = &[
    "股份有限公司",
    "有限责任公司",
    "股份合作公司",
    "有限合伙",
    "合伙企业",
    "股份公司",
    "有限公司",
    "集团公司",
    "总公司",
    "分公司",
    "集团",
    "公司",
];

/// Chinese industry words, longest first; at most two are stripped from the end.
const INDUSTRIES: &[&str] = &[
    "房地产开发",
    "供应链管理",
    "医疗器械",
    "生物医药",
    "信息技术",
    "电子商务",
    "文化传媒",
    "企业管理",
    "管理咨询",
    "商务咨询",
    "国际贸易",
    "新能源",
    "进出口",
    "供应链",
    "房地产",
    "科技",
    "技术",
    "医疗",
    "医药",
    "制药",
    "药业",
    "生物",
    "教育",
    "培训",
    "贸易",
    "商贸",
    "电子",
    "电器",
    "电气",
    "机械",
    "设备",
    "仪器",
    "实业",
    "投资",
    "咨询",
    "物流",
    "软件",
    "网络",
    "信息",
    "智能",
    "文化",
    "传媒",
    "广告",
    "餐饮",
    "食品",
    "建筑",
    "工程",
    "建设",
    "环保",
    "化工",
    "材料",
    "服装",
    "服饰",
    "家具",
    "制造",
    "汽车",
    "能源",
    "零售",
    "连锁",
    "超市",
    "百货",
    "地产",
    "置业",
    "物业",
    "包装",
    "纺织",
    "农业",
    "金融",
    "数据",
];

const LATIN_REGIONS: &[&str] = &[
    "china",
    "beijing",
    "shanghai",
    "shenzhen",
    "guangzhou",
    "hangzhou",
    "suzhou",
    "tianjin",
    "chongqing",
    "chengdu",
    "wuhan",
    "nanjing",
    "hong kong",
    "hongkong",
    "asia pacific",
    "prc",
];

/// Latin legal forms as token sequences, longest first.
const LATIN_LEGAL_FORMS: &[&[&str]] = &[
    &["company", "limited"],
    &["co", "limited"],
    &["co", "ltd"],
    &["pte", "ltd"],
    &["pvt", "ltd"],
    &["limited"],
    &["ltd"],
    &["incorporated"],
    &["inc"],
    &["llc"],
    &["gmbh"],
    &["corporation"],
    &["corp"],
    &["company"],
    &["co"],
    &["ag"],
    &["plc"],
    &["sa"],
    &["bv"],
    &["kg"],
    &["group"],
    &["&"],
];

const LATIN_INDUSTRIES: &[&str] = &[
    "technology",
    "technologies",
    "tech",
    "medical",
    "devices",
    "trading",
    "electronics",
    "electronic",
    "pharmaceutical",
    "pharmaceuticals",
    "pharma",
    "education",
    "software",
    "healthcare",
    "logistics",
    "industrial",
    "industries",
    "biotech",
    "equipment",
];

/// Normalises a company name for matching.
///
/// NFKC; bracketed qualifiers such as `（北京）` or `(上海)` are taken out (a region becomes
/// `region`, a legal form joins `legal_form`); legal-form suffixes are stripped longest
/// first; leading province/city/district names are stripped with or without their
/// 省/市/区/县 suffix; up to two trailing industry words are split off into `industry`. Each step keeps at
/// least two characters of core, so "北京" alone stays "北京". Latin-script names are
/// lowercased with punctuation folded to spaces and lose "Co., Ltd.", "Inc.", "LLC", "GmbH", ...
///
/// ```
/// use crm_domain::normalize::normalize_company;
/// let a = normalize_company("北京某某科技");
/// let b = normalize_company("北京市某某科技股份有限公司");
/// assert_eq!(a.core, "某某");
/// assert_eq!(a.core, b.core);
/// assert_eq!(b.legal_form.as_deref(), Some("股份有限公司"));
/// ```
pub fn normalize_company(raw: &str) -> CompanyName {
    let text = nfkc(raw).to_lowercase();
    let (outside, qualifiers) = split_brackets(&text);
    if text.chars().any(is_cjk) {
        chinese(raw, &text, &outside, &qualifiers)
    } else {
        latin(raw, &text, &outside, &qualifiers)
    }
}

fn is_open(c: char) -> bool {
    matches!(c, '(' | '[' | '{' | '【' | '〔' | '〖' | '「' | '『' | '<' | '《')
}

fn is_close(c: char) -> bool {
    matches!(c, ')' | ']' | '}' | '】' | '〕' | '〗' | '」' | '』' | '>' | '》')
}

/// Text outside brackets, and the content of each (top-level) bracket pair.
fn split_brackets(text: &str) -> (String, Vec<String>) {
    let mut outside = String::new();
    let mut qualifiers = Vec::new();
    let mut depth = 0usize;
    let mut current = String::new();
    for c in text.chars() {
        if is_open(c) {
            depth += 1;
            if depth == 1 {
                // A space stands where the qualifier was, so "abc (x) co" keeps word breaks.
                outside.push(' ');
            }
        } else if is_close(c) && depth > 0 {
            depth -= 1;
            if depth == 0 {
                qualifiers.push(std::mem::take(&mut current));
            }
        } else if depth > 0 {
            current.push(c);
        } else if !is_close(c) {
            outside.push(c);
        }
    }
    if depth > 0 {
        // Unbalanced: treat the unclosed part as name text.
        outside.push_str(&current);
    }
    (outside, qualifiers)
}

fn keep_cjk_name_char(c: char) -> bool {
    c.is_alphanumeric() || c == '&'
}

fn chinese(raw: &str, text: &str, outside: &str, qualifiers: &[String]) -> CompanyName {
    let normalized: String = text.chars().filter(|c| !c.is_whitespace() && !is_open(*c) && !is_close(*c)).collect();
    let mut region = None;
    let mut legal_forms: Vec<&str> = Vec::new();
    for qualifier in qualifiers {
        let q: String = qualifier.chars().filter(|c| keep_cjk_name_char(*c)).collect();
        if let Some(base) = QUALIFIER_REGIONS.iter().find(|r| **r == q) {
            region.get_or_insert_with(|| (*base).to_owned());
        } else if let Some((base, rest)) = strip_region(&q, 0) {
            if rest.is_empty() {
                region.get_or_insert(base);
            }
        } else if let Some(form) = LEGAL_FORMS.iter().find(|f| **f == q) {
            legal_forms.push(form);
        }
    }

    let mut body: String = outside.chars().filter(|c| keep_cjk_name_char(*c)).collect();
    let mut suffix_forms = Vec::new();
    while let Some(form) = LEGAL_FORMS.iter().find(|f| ends_with_leaving(&body, f, 1)) {
        body.truncate(body.len() - form.len());
        suffix_forms.insert(0, *form);
    }
    legal_forms.extend(suffix_forms);

    // Leading regions: "广东省深圳市南山区..." loses all three.
    for _ in 0..3 {
        match strip_region(&body, 2) {
            Some((base, rest)) => {
                region.get_or_insert(base);
                body = rest;
            }
            None => break,
        }
    }

    let mut industries = Vec::new();
    for _ in 0..2 {
        match INDUSTRIES.iter().find(|w| ends_with_leaving(&body, w, 2)) {
            Some(word) => {
                body.truncate(body.len() - word.len());
                industries.insert(0, *word);
            }
            None => break,
        }
    }

    let core = if body.is_empty() { normalized.clone() } else { body };
    CompanyName {
        raw: raw.to_owned(),
        normalized,
        core,
        region,
        industry: (!industries.is_empty()).then(|| industries.concat()),
        legal_form: (!legal_forms.is_empty()).then(|| legal_forms.concat()),
    }
}

/// `text` ends with `suffix` and at least `min_left` characters remain before it.
fn ends_with_leaving(text: &str, suffix: &str, min_left: usize) -> bool {
    text.ends_with(suffix) && text[..text.len() - suffix.len()].chars().count() >= min_left
}

/// Strips one leading region name (longest match) and its optional suffix. Returns the
/// region base name and the rest, provided at least `min_left` characters remain.
fn strip_region(text: &str, min_left: usize) -> Option<(String, String)> {
    let base = REGIONS.iter().filter(|r| text.starts_with(**r)).max_by_key(|r| r.len())?;
    let mut rest = &text[base.len()..];
    if let Some(suffix) = REGION_SUFFIXES.iter().find(|s| rest.starts_with(**s)) {
        let after = &rest[suffix.len()..];
        // "北京市场..." is a market, not the city of Beijing followed by "场".
        let false_suffix = (*suffix == "市" && after.starts_with('场')) || (*suffix == "区" && after.starts_with('块'));
        if !false_suffix {
            rest = after;
        }
    }
    (rest.chars().count() >= min_left).then(|| ((*base).to_owned(), rest.to_owned()))
}

fn latin_tokens(text: &str) -> Vec<String> {
    text.chars()
        .map(|c| if c.is_alphanumeric() || c == '&' { c } else { ' ' })
        .collect::<String>()
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

fn latin(raw: &str, text: &str, outside: &str, qualifiers: &[String]) -> CompanyName {
    let normalized = latin_tokens(text).join(" ");
    let mut region = None;
    let mut legal_forms: Vec<String> = Vec::new();
    for qualifier in qualifiers {
        let q = latin_tokens(qualifier).join(" ");
        if LATIN_REGIONS.contains(&q.as_str()) {
            region.get_or_insert(q);
        } else if LATIN_LEGAL_FORMS.iter().any(|f| f.join(" ") == q) {
            legal_forms.push(q);
        }
    }
    let mut tokens = latin_tokens(outside);
    let mut suffix_forms = Vec::new();
    'strip: loop {
        for form in LATIN_LEGAL_FORMS {
            if tokens.len() > form.len() && tokens.ends_with(&form.iter().map(|t| t.to_string()).collect::<Vec<_>>()) {
                let removed = tokens.split_off(tokens.len() - form.len());
                if form != &["&"] {
                    suffix_forms.insert(0, removed.join(" "));
                }
                continue 'strip;
            }
        }
        break;
    }
    legal_forms.extend(suffix_forms);
    let mut industries = Vec::new();
    for _ in 0..2 {
        match tokens.last() {
            Some(last) if tokens.len() > 1 && LATIN_INDUSTRIES.contains(&last.as_str()) => {
                industries.insert(0, tokens.pop().unwrap_or_default());
            }
            _ => break,
        }
    }
    let core = if tokens.is_empty() { normalized.clone() } else { tokens.join(" ") };
    CompanyName {
        raw: raw.to_owned(),
        normalized,
        core,
        region,
        industry: (!industries.is_empty()).then(|| industries.join(" ")),
        legal_form: (!legal_forms.is_empty()).then(|| legal_forms.join(" ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `expected`: (core, region, industry, legal form).
    fn check(input: &str, expected: (&str, Option<&str>, Option<&str>, Option<&str>)) {
        let name = normalize_company(input);
        let actual = (name.core.as_str(), name.region.as_deref(), name.industry.as_deref(), name.legal_form.as_deref());
        assert_eq!(actual, expected, "input {input:?}");
        assert_eq!(name.raw, input);
    }

    #[test]
    fn same_company_many_spellings() {
        let kangda = ("康达", Some("北京"), Some("医疗器械"), Some("有限公司"));
        for input in [
            "北京康达医疗器械有限公司",
            "北京市康达医疗器械有限公司",
            "北京市 康达医疗器械有限公司",
            "康达医疗器械（北京）有限公司",
            "康达医疗器械(北京)有限公司",
            "康达医疗器械【北京市】有限公司",
            "(北京)康达医疗器械有限公司",
            "北京 康达 医疗器械 有限公司",
            "　北京康达医疗器械有限公司　",
        ] {
            check(input, kangda);
        }
        check("北京康达医疗器械", ("康达", Some("北京"), Some("医疗器械"), None));
        check("康达医疗器械", ("康达", None, Some("医疗器械"), None));
        check("康达医疗器械股份有限公司", ("康达", None, Some("医疗器械"), Some("股份有限公司")));
    }

    #[test]
    fn issue_example_shares_core() {
        check("北京某某科技", ("某某", Some("北京"), Some("科技"), None));
        check("北京市某某科技股份有限公司", ("某某", Some("北京"), Some("科技"), Some("股份有限公司")));
        check("某某科技（北京）有限责任公司", ("某某", Some("北京"), Some("科技"), Some("有限责任公司")));
    }

    #[test]
    fn regions_with_and_without_suffix() {
        check("上海市浦东新区星辰电子有限公司", ("星辰", Some("上海"), Some("电子"), Some("有限公司")));
        check("上海星辰电子有限公司", ("星辰", Some("上海"), Some("电子"), Some("有限公司")));
        check("广东省深圳市南山区鹏程科技股份有限公司", ("鹏程", Some("广东"), Some("科技"), Some("股份有限公司")));
        check("深圳鹏程科技有限公司", ("鹏程", Some("深圳"), Some("科技"), Some("有限公司")));
        check("杭州市西湖区启明教育科技有限公司", ("启明", Some("杭州"), Some("教育科技"), Some("有限公司")));
        check("新疆维吾尔自治区天山贸易有限公司", ("天山", Some("新疆"), Some("贸易"), Some("有限公司")));
        check("内蒙古草原食品有限公司", ("草原", Some("内蒙古"), Some("食品"), Some("有限公司")));
        check("苏州工业园区恒信制药有限公司", ("恒信", Some("苏州"), Some("制药"), Some("有限公司")));
    }

    #[test]
    fn legal_forms_longest_first_and_stacked() {
        check("华信集团有限公司", ("华信", None, None, Some("集团有限公司")));
        check("华信集团", ("华信", None, None, Some("集团")));
        check("华信(集团)股份有限公司", ("华信", None, None, Some("集团股份有限公司")));
        check("华信贸易公司", ("华信", None, Some("贸易"), Some("公司")));
        check("华信贸易有限责任公司", ("华信", None, Some("贸易"), Some("有限责任公司")));
        check("华信投资合伙企业(有限合伙)", ("华信", None, Some("投资"), Some("有限合伙合伙企业")));
        check("华信药业股份公司", ("华信", None, Some("药业"), Some("股份公司")));
    }

    #[test]
    fn qualifiers_that_are_not_regions() {
        check("博远电子（中国）有限公司", ("博远", Some("中国"), Some("电子"), Some("有限公司")));
        check("博远电子（筹）有限公司", ("博远", None, Some("电子"), Some("有限公司")));
    }

    #[test]
    fn guards_keep_a_core() {
        // A name that is only a region, or only a region and a legal form, keeps itself.
        check("北京", ("北京", None, None, None));
        check("北京公司", ("北京", None, None, Some("公司")));
        // Two-character cores survive industry stripping.
        check("科技", ("科技", None, None, None));
        check("中科科技有限公司", ("中科", None, Some("科技"), Some("有限公司")));
        // 市场 is a word, not 市 + 场.
        check("北京市场调研有限公司", ("市场调研", Some("北京"), None, Some("有限公司")));
    }

    #[test]
    fn normalized_form() {
        let name = normalize_company(" 康达医疗器械（北京）有限公司 ");
        assert_eq!(name.normalized, "康达医疗器械北京有限公司");
        let name = normalize_company("ＡＢＣ 科技 有限公司");
        assert_eq!(name.normalized, "abc科技有限公司");
        assert_eq!(name.core, "abc");
    }

    #[test]
    fn latin_names() {
        let acme = ("acme", None, Some("medical devices"), Some("co ltd"));
        for input in [
            "Acme Medical Devices Co., Ltd.",
            "ACME MEDICAL DEVICES CO.,LTD",
            "Acme Medical Devices Co. Ltd",
            "acme medical devices co ltd",
            "  Acme  Medical   Devices, Co., Ltd. ",
            "Ａｃｍｅ Ｍｅｄｉｃａｌ Ｄｅｖｉｃｅｓ Ｃｏ．， Ｌｔｄ．",
        ] {
            check(input, acme);
        }
        check(
            "Acme Medical Devices (Shanghai) Co., Ltd.",
            ("acme", Some("shanghai"), Some("medical devices"), Some("co ltd")),
        );
        check("Globex Inc.", ("globex", None, None, Some("inc")));
        check("Globex, LLC", ("globex", None, None, Some("llc")));
        check("Müller Technik GmbH", ("müller technik", None, None, Some("gmbh")));
        check("Müller GmbH & Co. KG", ("müller", None, None, Some("gmbh co kg")));
        check("Initech Software Corporation", ("initech", None, Some("software"), Some("corporation")));
        check("Inc.", ("inc", None, None, None));
    }
}
