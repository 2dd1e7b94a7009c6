//! Synthetic Chinese B2B and B2C customers with planted duplicates and their ground truth.
//!
//! Deterministic for a seed (own SplitMix64, so results do not move with a dependency).
//! Every phone number, USCC and identity number is synthetic: valid in form and checksum,
//! drawn at random, belonging to nobody on purpose. Besides duplicates the data holds the
//! look-alikes that make matching hard: people with common names in the same city,
//! households sharing an address and a landline, companies with the same core name in
//! another city or another industry.

use std::collections::HashSet;

mod latin;

pub use latin::generate_latin;

use crm_domain::normalize::{normalize_phone, uscc_check_char, PhoneKind};
use serde::{Deserialize, Serialize};

use crate::idcard::id_check_char;
use crate::record::{Record, RecordKind};
use crate::text::{pinyin_of, pinyin_syllables};

/// What to generate.
#[derive(Debug, Clone, PartialEq)]
pub struct SynthConfig {
    pub records: usize,
    pub seed: u64,
    /// Share of customers that are persons (B2C); the rest are companies.
    pub person_share: f64,
    /// Share of look-alike (hard negative) customers.
    pub lookalike_share: f64,
}

impl Default for SynthConfig {
    fn default() -> Self {
        SynthConfig { records: 10_000, seed: 7, person_share: 0.4, lookalike_share: 0.08 }
    }
}

/// How a planted duplicate differs from its entity's first record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Variant {
    /// Region prefix added, dropped, with or without 市, or a province before the city.
    PlacePrefix,
    /// Another legal form, or none.
    LegalSuffix,
    /// Full-width digits, letters and brackets.
    FullWidth,
    /// Region in brackets after the name: "康达医疗器械（北京）有限公司".
    Brackets,
    /// One character of a name replaced by another.
    Typo,
    /// One character of a name replaced by a homophone (same pinyin).
    Homophone,
    /// Phones written +86 / 0086 / with spaces or dashes.
    PhoneFormat,
    /// Only the landline where the first record had the mobile, or the other way round.
    LandlineVsMobile,
    /// The name in pinyin, given name first or surname in capitals.
    SwappedNameOrder,
    /// One to three optional fields left out.
    MissingFields,
    /// E-mail in other letter case.
    EmailCase,
    /// Address without province/city, or with a building suffix.
    AddressVariant,
}

impl Variant {
    pub const ALL: [Variant; 12] = [
        Variant::PlacePrefix,
        Variant::LegalSuffix,
        Variant::FullWidth,
        Variant::Brackets,
        Variant::Typo,
        Variant::Homophone,
        Variant::PhoneFormat,
        Variant::LandlineVsMobile,
        Variant::SwappedNameOrder,
        Variant::MissingFields,
        Variant::EmailCase,
        Variant::AddressVariant,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Variant::PlacePrefix => "place_prefix",
            Variant::LegalSuffix => "legal_suffix",
            Variant::FullWidth => "full_width",
            Variant::Brackets => "brackets",
            Variant::Typo => "typo",
            Variant::Homophone => "homophone",
            Variant::PhoneFormat => "phone_format",
            Variant::LandlineVsMobile => "landline_vs_mobile",
            Variant::SwappedNameOrder => "swapped_name_order",
            Variant::MissingFields => "missing_fields",
            Variant::EmailCase => "email_case",
            Variant::AddressVariant => "address_variant",
        }
    }

    pub fn parse(text: &str) -> Option<Variant> {
        Variant::ALL.into_iter().find(|v| v.as_str() == text)
    }
}

/// Ground truth of one record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Truth {
    pub id: String,
    pub entity: String,
    /// Empty for an entity's first record.
    pub variants: Vec<Variant>,
}

/// Records and their ground truth, in the same order.
#[derive(Debug, Clone, Default)]
pub struct Synthetic {
    pub records: Vec<Record>,
    pub truth: Vec<Truth>,
}

/// SplitMix64: small, fast, and stable across versions of everything.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }

    pub fn chance(&mut self, p: f64) -> bool {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    /// Index drawn with weight `1/(i+1)^0.8`: a few values are common, most are rare.
    pub fn zipf(&mut self, n: usize) -> usize {
        // Rejection-free approximation: draw on the cumulative of x^-0.8.
        let u = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        let max = (n as f64 + 1.0).powf(0.2);
        let x = (1.0 + u * (max - 1.0)).powf(5.0) - 1.0;
        (x as usize).min(n - 1)
    }

    pub(crate) fn digits(&mut self, n: usize) -> String {
        (0..n).map(|_| char::from(b'0' + self.below(10) as u8)).collect()
    }
}

struct City {
    name: &'static str,
    province: &'static str,
    area: &'static str,
    division: &'static str,
    districts: &'static [&'static str],
    postcode: &'static str,
}

const CITIES: &[City] = &[
    City {
        name: "北京",
        province: "",
        area: "010",
        division: "110105",
        districts: &["朝阳区", "海淀区", "东城区"],
        postcode: "100020",
    },
    City {
        name: "上海",
        province: "",
        area: "021",
        division: "310115",
        districts: &["浦东新区", "徐汇区", "静安区"],
        postcode: "200120",
    },
    City {
        name: "广州",
        province: "广东省",
        area: "020",
        division: "440106",
        districts: &["天河区", "越秀区"],
        postcode: "510620",
    },
    City {
        name: "深圳",
        province: "广东省",
        area: "0755",
        division: "440305",
        districts: &["南山区", "福田区", "宝安区"],
        postcode: "518057",
    },
    City {
        name: "南京",
        province: "江苏省",
        area: "025",
        division: "320106",
        districts: &["鼓楼区", "江宁区"],
        postcode: "210008",
    },
    City {
        name: "苏州",
        province: "江苏省",
        area: "0512",
        division: "320505",
        districts: &["虎丘区", "吴中区"],
        postcode: "215011",
    },
    City {
        name: "杭州",
        province: "浙江省",
        area: "0571",
        division: "330106",
        districts: &["西湖区", "滨江区"],
        postcode: "310012",
    },
    City {
        name: "成都",
        province: "四川省",
        area: "028",
        division: "510107",
        districts: &["武侯区", "锦江区"],
        postcode: "610041",
    },
    City {
        name: "武汉",
        province: "湖北省",
        area: "027",
        division: "420106",
        districts: &["武昌区", "洪山区"],
        postcode: "430061",
    },
    City {
        name: "西安",
        province: "陕西省",
        area: "029",
        division: "610113",
        districts: &["雁塔区", "碑林区"],
        postcode: "710061",
    },
    City {
        name: "天津",
        province: "",
        area: "022",
        division: "120101",
        districts: &["和平区", "南开区"],
        postcode: "300041",
    },
    City {
        name: "重庆",
        province: "",
        area: "023",
        division: "500103",
        districts: &["渝中区", "江北区"],
        postcode: "400010",
    },
    City {
        name: "长沙",
        province: "湖南省",
        area: "0731",
        division: "430104",
        districts: &["岳麓区", "芙蓉区"],
        postcode: "410006",
    },
    City {
        name: "郑州",
        province: "河南省",
        area: "0371",
        division: "410105",
        districts: &["金水区", "中原区"],
        postcode: "450003",
    },
    City {
        name: "济南",
        province: "山东省",
        area: "0531",
        division: "370102",
        districts: &["历下区", "市中区"],
        postcode: "250011",
    },
    City {
        name: "青岛",
        province: "山东省",
        area: "0532",
        division: "370212",
        districts: &["崂山区", "市南区"],
        postcode: "266061",
    },
    City {
        name: "合肥",
        province: "安徽省",
        area: "0551",
        division: "340104",
        districts: &["蜀山区", "包河区"],
        postcode: "230031",
    },
    City {
        name: "福州",
        province: "福建省",
        area: "0591",
        division: "350102",
        districts: &["鼓楼区", "台江区"],
        postcode: "350001",
    },
    City {
        name: "沈阳",
        province: "辽宁省",
        area: "024",
        division: "210102",
        districts: &["和平区", "沈河区"],
        postcode: "110001",
    },
    City {
        name: "东莞",
        province: "广东省",
        area: "0769",
        division: "441900",
        districts: &["南城街道", "东城街道"],
        postcode: "523000",
    },
];

const SURNAMES: &[&str] = &[
    "王", "李", "张", "刘", "陈", "杨", "黄", "赵", "吴", "周", "徐", "孙", "马", "朱", "胡", "郭", "何", "高", "林",
    "罗", "郑", "梁", "谢", "宋", "唐", "许", "韩", "冯", "邓", "曹", "彭", "曾", "肖", "田", "董", "袁", "潘", "于",
    "蒋", "蔡", "余", "杜", "叶", "程", "苏", "魏", "吕", "丁", "任", "沈", "姚", "卢", "姜", "崔", "钟", "谭", "陆",
    "汪", "范", "金", "石", "廖", "贾", "夏", "韦", "付", "方", "白", "邹", "孟", "熊", "秦", "邱", "江", "尹", "薛",
    "闫", "段", "雷", "侯",
];

const GIVEN: &[&str] = &[
    "伟", "芳", "娜", "敏", "静", "丽", "强", "磊", "军", "洋", "勇", "艳", "杰", "娟", "涛", "明", "超", "秀", "霞",
    "平", "刚", "桂", "英", "华", "建", "国", "文", "辉", "玲", "红", "鹏", "飞", "宇", "浩", "凯", "婷", "雪", "琳",
    "晨", "欣", "怡", "佳", "俊", "峰", "斌", "波", "宁", "亮", "林", "云", "海", "鑫", "龙", "梅", "兰", "成", "志",
    "新", "春", "东", "晓", "玉", "萍", "燕", "刚", "军", "慧", "颖", "涵", "博", "子", "思", "雨", "嘉", "梓", "睿",
    "瑞", "泽", "轩", "然",
];

/// Characters that share a tone-less pinyin syllable, as an input method offers them.
const HOMOPHONES: &[&str] = &[
    "伟威薇维玮炜",
    "芳方舫",
    "静晶京菁",
    "丽莉立俐利",
    "磊垒蕾",
    "军君钧均",
    "明鸣铭名",
    "华桦骅",
    "建健剑键",
    "文雯闻",
    "辉晖",
    "玲琳林灵凌",
    "红宏鸿洪",
    "鹏朋",
    "飞菲霏非",
    "宇雨语羽",
    "浩昊皓",
    "婷亭庭",
    "晨辰臣",
    "欣新心鑫馨",
    "佳嘉家",
    "峰锋丰枫",
    "斌彬宾",
    "波博",
    "亮良",
    "云芸",
    "涛韬",
    "杰洁捷",
    "娟涓鹃",
    "敏民",
    "勇永泳",
    "梅玫",
    "兰岚蓝澜",
    "成诚城承",
    "志智",
    "春纯",
    "东冬",
    "晓筱",
    "萍平苹",
    "艳燕雁",
    "霞侠",
    "刚钢",
    "英瑛莹",
    "超朝",
    "洋阳扬",
    "凯楷恺",
    "怡宜仪",
    "俊峻骏",
    "慧惠",
    "颖影",
    "思丝",
    "瑞睿",
    "泽则",
    "通同",
    "信新欣",
    "达大",
    "源元原",
    "盛胜圣",
    "恒衡",
    "鼎定",
    "远元",
    "创窗",
    "康抗",
    "安鞍",
    "宝保",
    "兴星",
    "隆龙",
    "汇惠会",
    "祥翔",
    "泰太",
    "德得",
];

const BRAND: &[&str] = &[
    "华", "信", "恒", "通", "鼎", "盛", "金", "源", "博", "远", "创", "新", "天", "宇", "瑞", "祥", "中", "达", "泰",
    "宏", "图", "联", "合", "安", "康", "鑫", "海", "正", "和", "宝", "德", "永", "兴", "荣", "汇", "丰", "嘉", "隆",
    "启", "明", "星", "辰", "智", "云", "腾", "跃", "润", "泽", "凯", "旋", "百", "川", "东", "方", "长", "城", "九",
    "州", "万", "佳", "亿", "立", "诚", "致", "优", "尚", "领", "科", "力", "鹏", "飞", "麒", "麟", "英", "卓", "越",
    "精", "工", "锐", "捷",
];

/// Industry word in the name, and the industry recorded for the customer.
const INDUSTRIES: &[(&str, &str)] = &[
    ("科技", "信息技术"),
    ("信息技术", "信息技术"),
    ("软件", "信息技术"),
    ("医疗器械", "医疗器械"),
    ("生物医药", "医药"),
    ("药业", "医药"),
    ("教育科技", "教育"),
    ("培训", "教育"),
    ("贸易", "批发零售"),
    ("商贸", "批发零售"),
    ("电子", "制造"),
    ("机械", "制造"),
    ("汽车零部件", "制造"),
    ("化工", "化工"),
    ("食品", "食品"),
    ("物流", "物流"),
    ("建筑工程", "建筑"),
    ("文化传媒", "文化传媒"),
    ("餐饮管理", "餐饮"),
    ("环保科技", "环保"),
    ("新能源", "能源"),
    ("服饰", "批发零售"),
    ("美容连锁", "生活服务"),
    ("管理咨询", "商务服务"),
];

const LEGAL_FORMS: &[&str] = &["有限公司", "有限公司", "有限公司", "有限责任公司", "股份有限公司"];

const STREETS: &[&str] = &[
    "建国路",
    "中山路",
    "人民路",
    "解放路",
    "长江路",
    "科技园路",
    "学院路",
    "东风路",
    "滨江大道",
    "新华街",
    "文化路",
    "创业路",
    "高新大道",
    "和平路",
    "青年路",
    "光明路",
    "南京路",
    "黄河路",
    "工业大道",
    "金融街",
    "世纪大道",
    "软件园路",
];

const ESTATES: &[&str] = &[
    "阳光花园",
    "翠湖苑",
    "锦绣家园",
    "万科城",
    "碧桂园",
    "金色家园",
    "幸福里",
    "绿地小区",
    "世纪新城",
    "御景湾",
    "丽景苑",
    "海棠湾",
    "紫荆花园",
    "龙湖天街",
    "书香门第",
    "梧桐苑",
];

const TYPO_CHARS: &str = "大小王石木水火土山田口日月立天子文方心力";

const MOBILE_PREFIXES: &[&str] = &[
    "130", "131", "132", "133", "135", "136", "137", "138", "139", "150", "151", "152", "153", "155", "156", "157",
    "158", "159", "177", "180", "181", "182", "183", "185", "186", "187", "188", "189", "199",
];

const PUBLIC_MAIL: &[&str] = &["qq.com", "163.com", "126.com", "sina.com", "foxmail.com", "gmail.com"];

/// One customer as it really is; records are renderings of it.
#[derive(Debug, Clone)]
struct Entity {
    kind: RecordKind,
    city: usize,
    district: usize,
    /// Person name (B2C) or contact (B2B): surname and given name.
    surname: String,
    given: String,
    core: String,
    industry: usize,
    legal: usize,
    uscc: Option<String>,
    mobile: Option<String>,
    landline: Option<String>,
    email: Option<String>,
    street: String,
    detail: String,
    birth: Option<u32>,
    id_number: Option<String>,
}

fn valid_phone(rng: &mut Rng, landline_area: Option<&str>) -> String {
    for _ in 0..50 {
        let number = match landline_area {
            Some(area) => {
                format!("{area}{}{}", 2 + rng.below(7), rng.digits(7))
            }
            None => format!("{}{}", rng.pick(MOBILE_PREFIXES), rng.digits(8)),
        };
        let phone = normalize_phone(&number);
        let wanted = if landline_area.is_some() { PhoneKind::Landline } else { PhoneKind::Mobile };
        if phone.valid && phone.kind == wanted {
            return number;
        }
    }
    // Unreachable in practice: the numbering plan accepts these ranges.
    landline_area.map_or_else(|| "13800138000".to_owned(), |a| format!("{a}61234567"))
}

fn org_code(rng: &mut Rng) -> String {
    let body = rng.digits(8);
    let weights = [3, 7, 9, 10, 5, 8, 4, 2];
    let sum: u32 = body.chars().zip(weights).map(|(c, w)| c.to_digit(10).unwrap_or(0) * w).sum();
    let check = match 11 - sum % 11 {
        10 => 'X',
        11 => '0',
        d => char::from(b'0' + d as u8),
    };
    format!("{body}{check}")
}

fn uscc(rng: &mut Rng, division: &str) -> String {
    let first17 = format!("91{division}{}", org_code(rng));
    let check = uscc_check_char(&first17).expect("17 characters of the USCC alphabet");
    format!("{first17}{check}")
}

fn id_number(rng: &mut Rng, division: &str, birth: u32) -> String {
    let first17 = format!("{division}{birth:08}{}", rng.digits(3));
    let check = id_check_char(&first17).expect("17 digits");
    format!("{first17}{check}")
}

fn birth_date(rng: &mut Rng) -> u32 {
    let y = 1960 + rng.below(46) as u32;
    let m = 1 + rng.below(12) as u32;
    let d = 1 + rng.below(28) as u32;
    y * 10000 + m * 100 + d
}

fn pinyin_word(text: &str) -> String {
    pinyin_syllables(text).concat()
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    c.next().map(|f| f.to_uppercase().chain(c).collect()).unwrap_or_default()
}

fn full_width(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '!'..='~' => char::from_u32(c as u32 + 0xFEE0).unwrap_or(c),
            ' ' => '\u{3000}',
            other => other,
        })
        .collect()
}

fn format_mobile(rng: &mut Rng, m: &str) -> String {
    match rng.below(6) {
        0 => format!("+86 {} {} {}", &m[..3], &m[3..7], &m[7..]),
        1 => format!("0086{m}"),
        2 => format!("{} {} {}", &m[..3], &m[3..7], &m[7..]),
        3 => format!("{}-{}-{}", &m[..3], &m[3..7], &m[7..]),
        4 => format!("+86-{m}"),
        _ => format!("86 {m}"),
    }
}

fn format_landline(rng: &mut Rng, l: &str) -> String {
    let split = if l.starts_with("01") || l.starts_with("02") { 3 } else { 4 };
    let (area, local) = l.split_at(split);
    match rng.below(5) {
        0 => format!("({area}){local}"),
        1 => format!("+86 {} {local}", &area[1..]),
        2 => format!("0086-{}-{local}", &area[1..]),
        3 => format!("{area} {} {}", &local[..4], &local[4..]),
        _ => format!("{area}{local}"),
    }
}

fn homophone_of(rng: &mut Rng, c: char) -> Option<char> {
    let group = HOMOPHONES.iter().find(|g| g.contains(c))?;
    let sound = pinyin_of(c)?;
    let others: Vec<char> = group.chars().filter(|o| *o != c && pinyin_of(*o) == Some(sound)).collect();
    (!others.is_empty()).then(|| *rng.pick(&others))
}

/// Replaces one character of `text` (chosen among `positions`) by a homophone or a typo.
fn alter(rng: &mut Rng, text: &str, homophone: bool) -> Option<String> {
    let chars: Vec<char> = text.chars().collect();
    let mut order: Vec<usize> = (0..chars.len()).collect();
    for i in (1..order.len()).rev() {
        order.swap(i, rng.below(i + 1));
    }
    for i in order {
        let replacement = if homophone {
            homophone_of(rng, chars[i])
        } else {
            let pool: Vec<char> = TYPO_CHARS.chars().filter(|c| *c != chars[i]).collect();
            Some(*rng.pick(&pool))
        };
        if let Some(r) = replacement {
            let mut out = chars.clone();
            out[i] = r;
            return Some(out.into_iter().collect());
        }
    }
    None
}

struct Generator {
    rng: Rng,
    config: SynthConfig,
    names_taken: HashSet<(usize, String, usize)>,
    emails_taken: HashSet<String>,
    entities: Vec<Entity>,
}

impl Generator {
    fn person_name(&mut self) -> (String, String) {
        let surname = SURNAMES[self.rng.zipf(SURNAMES.len())].to_owned();
        let two_chars = self.rng.chance(0.6);
        let mut given = GIVEN[self.rng.zipf(GIVEN.len())].to_owned();
        if two_chars {
            given.push_str(GIVEN[self.rng.below(GIVEN.len())]);
        }
        (surname, given)
    }

    fn email_for(&mut self, surname: &str, given: &str, domain: Option<&str>) -> String {
        let (s, g) = (pinyin_word(surname), pinyin_word(given));
        let local = match self.rng.below(4) {
            0 => format!("{g}.{s}"),
            1 => format!("{s}{g}"),
            2 => format!("{s}{g}{}", self.rng.below(100)),
            _ => format!("{}{s}", g.chars().next().unwrap_or('x')),
        };
        let domain = domain.map_or_else(|| (*self.rng.pick(PUBLIC_MAIL)).to_owned(), str::to_owned);
        // A mailbox belongs to one person: a taken name gets a number, as providers do.
        let mut email = format!("{local}@{domain}");
        while !self.emails_taken.insert(email.clone()) {
            email = format!("{local}{}@{domain}", self.rng.below(10_000));
        }
        email
    }

    fn company(&mut self) -> Entity {
        let (city, core, industry) = loop {
            let city = self.rng.below(CITIES.len());
            let len = if self.rng.chance(0.8) { 2 } else { 3 };
            let core: String = (0..len).map(|_| *self.rng.pick(BRAND)).collect();
            let industry = self.rng.below(INDUSTRIES.len());
            if self.names_taken.insert((city, core.clone(), industry)) {
                break (city, core, industry);
            }
        };
        self.company_named(city, core, industry)
    }

    fn company_named(&mut self, city: usize, core: String, industry: usize) -> Entity {
        let c = &CITIES[city];
        let (surname, given) = self.person_name();
        let domain = format!("{}.com{}", pinyin_word(&core), if self.rng.chance(0.5) { ".cn" } else { "" });
        let email = self.rng.chance(0.7).then(|| self.email_for(&surname, &given, Some(&domain)));
        let street = format!("{}{}号", self.rng.pick(STREETS), 1 + self.rng.below(300));
        let detail = if self.rng.chance(0.5) {
            format!("{}座{}{:02}室", ["A", "B", "C"][self.rng.below(3)], 1 + self.rng.below(30), 1 + self.rng.below(20))
        } else {
            String::new()
        };
        Entity {
            kind: RecordKind::Company,
            city,
            district: self.rng.below(c.districts.len()),
            surname,
            given,
            core,
            industry,
            legal: self.rng.below(LEGAL_FORMS.len()),
            uscc: self.rng.chance(0.75).then(|| uscc(&mut self.rng, c.division)),
            mobile: self.rng.chance(0.85).then(|| valid_phone(&mut self.rng, None)),
            landline: self.rng.chance(0.7).then(|| valid_phone(&mut self.rng, Some(c.area))),
            email,
            street,
            detail,
            birth: None,
            id_number: None,
        }
    }

    fn person(&mut self) -> Entity {
        let city = self.rng.below(CITIES.len());
        let c = &CITIES[city];
        let (surname, given) = self.person_name();
        let birth = birth_date(&mut self.rng);
        let email = self.rng.chance(0.4).then(|| self.email_for(&surname, &given, None));
        Entity {
            kind: RecordKind::Person,
            city,
            district: self.rng.below(c.districts.len()),
            surname,
            given,
            core: String::new(),
            industry: 0,
            legal: 0,
            uscc: None,
            mobile: Some(valid_phone(&mut self.rng, None)),
            landline: self.rng.chance(0.3).then(|| valid_phone(&mut self.rng, Some(c.area))),
            email,
            street: format!("{}{}号", self.rng.pick(STREETS), 1 + self.rng.below(200)),
            detail: format!(
                "{}{}栋{}单元{}{:02}室",
                self.rng.pick(ESTATES),
                1 + self.rng.below(20),
                1 + self.rng.below(4),
                1 + self.rng.below(30),
                1 + self.rng.below(4)
            ),
            birth: self.rng.chance(0.8).then_some(birth),
            id_number: self.rng.chance(0.6).then(|| id_number(&mut self.rng, c.division, birth)),
        }
    }

    /// A customer that is not a duplicate but looks like an earlier one.
    fn lookalike(&mut self) -> Option<Entity> {
        if self.entities.is_empty() {
            return None;
        }
        let base = self.entities[self.rng.below(self.entities.len())].clone();
        match base.kind {
            RecordKind::Person => {
                // A household member: same address and landline, own name, birth, mobile.
                let mut e = self.person();
                e.city = base.city;
                e.district = base.district;
                e.street = base.street.clone();
                e.detail = base.detail.clone();
                e.landline = base.landline.clone();
                if self.rng.chance(0.7) {
                    e.surname = base.surname.clone();
                }
                Some(e)
            }
            RecordKind::Company => {
                // Same core name registered in another city, or in another industry.
                for _ in 0..20 {
                    let (city, industry) = if self.rng.chance(0.5) {
                        (self.rng.below(CITIES.len()), base.industry)
                    } else {
                        (base.city, self.rng.below(INDUSTRIES.len()))
                    };
                    if self.names_taken.insert((city, base.core.clone(), industry)) {
                        return Some(self.company_named(city, base.core.clone(), industry));
                    }
                }
                None
            }
        }
    }

    fn render(&mut self, e: &Entity, variants: &[Variant]) -> Record {
        let has = |v: Variant| variants.contains(&v);
        let rng = &mut self.rng;
        let c = &CITIES[e.city];
        let mut record = Record { kind: e.kind, ..Record::default() };

        // Person or contact name.
        let mut surname = e.surname.clone();
        let mut given = e.given.clone();
        let alter_company = e.kind == RecordKind::Company && rng.chance(0.5);
        let mut core = e.core.clone();
        if has(Variant::Typo) || has(Variant::Homophone) {
            let homophone = has(Variant::Homophone);
            if alter_company {
                if let Some(altered) = alter(rng, &core, homophone) {
                    core = altered;
                }
            } else if let Some(altered) = alter(rng, &given, homophone) {
                given = altered;
            } else if let Some(altered) = alter(rng, &surname, homophone) {
                surname = altered;
            }
        }
        record.name = Some(if has(Variant::SwappedNameOrder) {
            let (s, g) = (capitalise(&pinyin_word(&surname)), capitalise(&pinyin_word(&given)));
            if rng.chance(0.5) {
                format!("{g} {s}")
            } else {
                format!("{} {g}", s.to_uppercase())
            }
        } else {
            format!("{surname}{given}")
        });

        if e.kind == RecordKind::Company {
            let (industry_word, industry_field) = INDUSTRIES[e.industry];
            let legal = if has(Variant::LegalSuffix) {
                *rng.pick(&["", "有限公司", "有限责任公司", "股份有限公司", "公司"])
            } else {
                LEGAL_FORMS[e.legal]
            };
            let city_written = if rng.chance(0.3) { format!("{}市", c.name) } else { c.name.to_owned() };
            let name = if has(Variant::Brackets) {
                if rng.chance(0.5) {
                    format!("{core}{industry_word}（{}）{legal}", c.name)
                } else {
                    format!("{core}{industry_word}({}){legal}", c.name)
                }
            } else if has(Variant::PlacePrefix) {
                match rng.below(3) {
                    0 => format!("{core}{industry_word}{legal}"),
                    1 if !c.province.is_empty() => format!("{}{}市{core}{industry_word}{legal}", c.province, c.name),
                    _ => format!("{}市{core}{industry_word}{legal}", c.name),
                }
            } else {
                format!("{city_written}{core}{industry_word}{legal}")
            };
            record.company = Some(name);
            record.uscc.clone_from(&e.uscc);
            record.industry = Some(industry_field.to_owned());
        } else {
            record.birth_date = e.birth.map(|b| match rng.below(4) {
                0 => format!("{}-{:02}-{:02}", b / 10000, b / 100 % 100, b % 100),
                1 => format!("{}/{}/{}", b / 10000, b / 100 % 100, b % 100),
                2 => format!("{}年{}月{}日", b / 10000, b / 100 % 100, b % 100),
                _ => format!("{b}"),
            });
            record.id_number.clone_from(&e.id_number);
        }
        record.region = Some(if rng.chance(0.5) { format!("{}市", c.name) } else { c.name.to_owned() });

        // Phones.
        let (mut mobile, mut landline) = (e.mobile.clone(), e.landline.clone());
        if has(Variant::LandlineVsMobile) {
            if rng.chance(0.5) && landline.is_some() {
                mobile = None;
            } else {
                landline = None;
            }
        }
        if let Some(m) = &mobile {
            record.phones.push(if has(Variant::PhoneFormat) { format_mobile(rng, m) } else { m.clone() });
        }
        if let Some(l) = &landline {
            let split = if l.starts_with("01") || l.starts_with("02") { 3 } else { 4 };
            record.phones.push(if has(Variant::PhoneFormat) {
                format_landline(rng, l)
            } else {
                format!("{}-{}", &l[..split], &l[split..])
            });
        }
        record.email = e.email.as_ref().map(|m| if has(Variant::EmailCase) { capitalise_email(m) } else { m.clone() });

        // Address.
        let district = c.districts[e.district];
        let full = format!("{}{}市{district}{}{}", c.province, c.name, e.street, e.detail);
        record.address = Some(if has(Variant::AddressVariant) {
            match rng.below(3) {
                0 => format!("{district}{}{}", e.street, e.detail),
                1 => format!("{}{district}{} {}", c.name, e.street, e.detail),
                _ => format!("{}市{district}{}{}", c.name, e.street, if e.detail.is_empty() { "" } else { &e.detail }),
            }
        } else {
            full
        });
        if rng.chance(0.3) {
            record.postcode = Some(c.postcode.to_owned());
        }

        if has(Variant::FullWidth) {
            record.company = record.company.as_deref().map(full_width);
            record.address = record.address.as_deref().map(full_width);
            record.phones = record.phones.iter().map(|p| full_width(p)).collect();
            record.birth_date = record.birth_date.as_deref().map(full_width);
        }
        if has(Variant::MissingFields) {
            let n = 1 + rng.below(3);
            for _ in 0..n {
                match rng.below(6) {
                    0 => record.email = None,
                    1 => record.address = None,
                    2 => record.industry = None,
                    3 => record.uscc = None,
                    4 => record.birth_date = None,
                    _ => record.region = None,
                }
            }
        }
        record
    }
}

fn capitalise_email(m: &str) -> String {
    let (local, domain) = m.split_once('@').unwrap_or((m, ""));
    format!("{}@{}", capitalise(local), domain.to_uppercase())
}

/// Number of records of one entity: most have one, some two, a few up to five.
pub(crate) fn cluster_size(rng: &mut Rng) -> usize {
    match rng.below(100) {
        0..=71 => 1,
        72..=90 => 2,
        91..=97 => 3,
        98 => 4,
        _ => 5,
    }
}

/// Generates `config.records` records with planted duplicates, shuffled, with ids `r0000001`..
pub fn generate(config: &SynthConfig) -> Synthetic {
    let mut g = Generator {
        rng: Rng::new(config.seed),
        config: config.clone(),
        names_taken: HashSet::new(),
        emails_taken: HashSet::new(),
        entities: Vec::new(),
    };
    let mut rows: Vec<(Record, usize, Vec<Variant>)> = Vec::with_capacity(config.records);
    while rows.len() < config.records {
        let entity = if g.rng.chance(g.config.lookalike_share) { g.lookalike() } else { None };
        let entity =
            entity.unwrap_or_else(|| if g.rng.chance(g.config.person_share) { g.person() } else { g.company() });
        let entity_no = g.entities.len();
        let size = cluster_size(&mut g.rng).min(config.records - rows.len());
        for i in 0..size {
            let variants = if i == 0 { Vec::new() } else { pick_variants(&mut g.rng, &entity) };
            let record = g.render(&entity, &variants);
            rows.push((record, entity_no, variants));
        }
        g.entities.push(entity);
    }
    for i in (1..rows.len()).rev() {
        let j = g.rng.below(i + 1);
        rows.swap(i, j);
    }
    let mut out = Synthetic::default();
    for (n, (mut record, entity, variants)) in rows.into_iter().enumerate() {
        record.id = format!("r{:07}", n + 1);
        out.truth.push(Truth { id: record.id.clone(), entity: format!("e{entity:07}"), variants });
        out.records.push(record);
    }
    out
}

fn pick_variants(rng: &mut Rng, e: &Entity) -> Vec<Variant> {
    let applicable: Vec<Variant> = Variant::ALL
        .into_iter()
        .filter(|v| match v {
            Variant::PlacePrefix | Variant::LegalSuffix | Variant::Brackets => e.kind == RecordKind::Company,
            Variant::LandlineVsMobile => e.mobile.is_some() && e.landline.is_some(),
            Variant::EmailCase => e.email.is_some(),
            _ => true,
        })
        .collect();
    let n = 1 + rng.below(3);
    let mut out: Vec<Variant> = Vec::new();
    while out.len() < n {
        let v = *rng.pick(&applicable);
        // A typo and a homophone in one record would be two edits of one name.
        let clash = (v == Variant::Typo && out.contains(&Variant::Homophone))
            || (v == Variant::Homophone && out.contains(&Variant::Typo));
        if !out.contains(&v) && !clash {
            out.push(v);
        }
    }
    out.sort_by_key(|v| Variant::ALL.iter().position(|a| a == v));
    out
}
