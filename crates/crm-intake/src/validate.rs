//! Per-source field configuration and validation of synced records: type, pattern, range,
//! required, and whether NULL may clear the field.

use std::collections::BTreeMap;

use crm_domain::normalize::normalize_phone;
use crm_domain::CUSTOMER_FIELDS;
use regex::Regex;
use serde::{Deserialize, Serialize};

use crate::breaker::BreakerConfig;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldType {
    #[default]
    Text,
    Integer,
    Decimal,
    Phone,
    Email,
    /// `YYYY-MM-DD`.
    Date,
}

impl FieldType {
    pub fn parse(s: &str) -> Option<FieldType> {
        Some(match s {
            "text" => FieldType::Text,
            "integer" => FieldType::Integer,
            "decimal" => FieldType::Decimal,
            "phone" => FieldType::Phone,
            "email" => FieldType::Email,
            "date" => FieldType::Date,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            FieldType::Text => "text",
            FieldType::Integer => "integer",
            FieldType::Decimal => "decimal",
            FieldType::Phone => "phone",
            FieldType::Email => "email",
            FieldType::Date => "date",
        }
    }
}

/// How one field of a source is checked and written.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FieldRule {
    /// The customer field written (`name`, `phone`, `custom.<x>`, ...); default: the field's
    /// own name when it is a customer field, else `custom.<name>`.
    pub target: Option<String>,
    pub field_type: FieldType,
    /// A regular expression the whole value must match.
    pub pattern: Option<String>,
    /// Inclusive numeric range for `integer` and `decimal`.
    pub min: Option<f64>,
    pub max: Option<f64>,
    /// Most characters for text.
    pub max_len: Option<usize>,
    /// A record without a value for this field is quarantined.
    pub required: bool,
    /// A NULL or empty value clears the stored value (when it is newer). Default: never.
    pub clearable: bool,
}

/// The configuration of one external source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceConfig {
    pub source: String,
    pub fields: BTreeMap<String, FieldRule>,
    pub breaker: BreakerConfig,
}

impl SourceConfig {
    pub fn new(source: &str) -> Self {
        SourceConfig { source: source.to_owned(), fields: BTreeMap::new(), breaker: BreakerConfig::default() }
    }
}

/// Why a record failed validation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValidationError {
    pub field: String,
    pub rule: String,
    pub message: String,
}

impl ValidationError {
    fn new(field: &str, rule: &str, message: impl Into<String>) -> Self {
        ValidationError { field: field.to_owned(), rule: rule.to_owned(), message: message.into() }
    }
}

/// One validated value: the customer field it writes, the value (`None` = NULL/empty) and
/// whether NULL may clear it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Validated {
    pub target: String,
    pub value: Option<String>,
    pub clearable: bool,
}

struct Compiled {
    rule: FieldRule,
    target: String,
    pattern: Option<Regex>,
}

/// A source's configuration, with patterns compiled once.
pub struct Validator {
    fields: BTreeMap<String, Compiled>,
}

/// The default customer field for a source field without a target.
pub fn default_target(field: &str) -> String {
    if CUSTOMER_FIELDS.contains(&field) || field.starts_with("custom.") {
        field.to_owned()
    } else {
        format!("custom.{field}")
    }
}

impl Validator {
    /// Compiles the configuration; a bad pattern or target is an error naming the field.
    pub fn new(config: &SourceConfig) -> Result<Validator, ValidationError> {
        let mut fields = BTreeMap::new();
        for (name, rule) in &config.fields {
            let pattern = match &rule.pattern {
                Some(p) => Some(
                    Regex::new(&format!("^(?:{p})$"))
                        .map_err(|e| ValidationError::new(name, "config.pattern", e.to_string()))?,
                ),
                None => None,
            };
            let target = match &rule.target {
                Some(t) => {
                    let t = t.trim();
                    let custom = t.strip_prefix("custom.").is_some_and(|n| !n.is_empty());
                    if !CUSTOMER_FIELDS.contains(&t) && !custom {
                        return Err(ValidationError::new(
                            name,
                            "config.target",
                            format!(
                                "unknown customer field {t}; use one of {} or custom.<name>",
                                CUSTOMER_FIELDS.join(", ")
                            ),
                        ));
                    }
                    t.to_owned()
                }
                None => default_target(name),
            };
            fields.insert(name.clone(), Compiled { rule: rule.clone(), target, pattern });
        }
        Ok(Validator { fields })
    }

    /// Validates one record's fields (`None` = NULL). Returns every value with its target, or
    /// every error found.
    pub fn validate(&self, record: &[(String, Option<String>)]) -> Result<Vec<Validated>, Vec<ValidationError>> {
        let mut errors = Vec::new();
        let mut out = Vec::with_capacity(record.len());
        for (name, value) in record {
            let value = value.as_deref().map(str::trim).filter(|v| !v.is_empty());
            match self.fields.get(name) {
                None => out.push(Validated {
                    target: default_target(name),
                    value: value.map(str::to_owned),
                    clearable: false,
                }),
                Some(c) => {
                    let mut value = value.map(str::to_owned);
                    if let Some(v) = &value {
                        match check(name, &c.rule, c.pattern.as_ref(), v) {
                            Ok(Some(normalised)) => value = Some(normalised),
                            Ok(None) => {}
                            Err(e) => {
                                errors.push(e);
                                continue;
                            }
                        }
                    }
                    out.push(Validated { target: c.target.clone(), value, clearable: c.rule.clearable });
                }
            }
        }
        for (name, c) in &self.fields {
            if c.rule.required
                && !out.iter().any(|v| v.target == c.target && v.value.is_some())
                && !errors.iter().any(|e| &e.field == name)
            {
                errors.push(ValidationError::new(name, "required", "a value is required"));
            }
        }
        if errors.is_empty() {
            Ok(out)
        } else {
            Err(errors)
        }
    }
}

/// Checks one value; a phone comes back in E.164 (so an unchanged number in another form
/// compares equal to the stored one).
fn check(name: &str, rule: &FieldRule, pattern: Option<&Regex>, v: &str) -> Result<Option<String>, ValidationError> {
    let mut normalised = None;
    let range = |x: f64| -> Result<(), ValidationError> {
        if rule.min.is_some_and(|m| x < m) || rule.max.is_some_and(|m| x > m) {
            return Err(ValidationError::new(
                name,
                "range",
                format!("{v} is outside [{}, {}]", fmt_bound(rule.min), fmt_bound(rule.max)),
            ));
        }
        Ok(())
    };
    match rule.field_type {
        FieldType::Text => {}
        FieldType::Integer => {
            let x: i64 =
                v.parse().map_err(|_| ValidationError::new(name, "type.integer", format!("{v} is not an integer")))?;
            range(x as f64)?;
        }
        FieldType::Decimal => {
            let x: f64 = v
                .parse()
                .ok()
                .filter(|x: &f64| x.is_finite())
                .ok_or_else(|| ValidationError::new(name, "type.decimal", format!("{v} is not a number")))?;
            range(x)?;
        }
        FieldType::Phone => {
            let phone = normalize_phone(v);
            match phone.e164 {
                Some(e164) if phone.valid => normalised = Some(e164),
                _ => return Err(ValidationError::new(name, "type.phone", format!("{v} is not a valid phone number"))),
            }
        }
        FieldType::Email => {
            let ok = v.split_once('@').is_some_and(|(l, d)| !l.is_empty() && d.contains('.'));
            if !ok {
                return Err(ValidationError::new(name, "type.email", format!("{v} is not an e-mail address")));
            }
        }
        FieldType::Date => {
            if !is_date(v) {
                return Err(ValidationError::new(name, "type.date", format!("{v} is not a YYYY-MM-DD date")));
            }
        }
    }
    if let Some(max) = rule.max_len {
        if v.chars().count() > max {
            return Err(ValidationError::new(name, "max_len", format!("longer than {max} characters")));
        }
    }
    if let Some(p) = pattern {
        if !p.is_match(v) {
            return Err(ValidationError::new(
                name,
                "pattern",
                format!("{v} does not match {}", rule.pattern.as_deref().unwrap_or("")),
            ));
        }
    }
    Ok(normalised)
}

fn fmt_bound(b: Option<f64>) -> String {
    b.map_or_else(|| "-".to_owned(), |x| x.to_string())
}

fn is_date(v: &str) -> bool {
    let b = v.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return false;
    }
    let num = |s: &str| s.parse::<u32>().ok();
    let (Some(y), Some(m), Some(d)) = (num(&v[..4]), num(&v[5..7]), num(&v[8..])) else {
        return false;
    };
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let days = match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return false,
    };
    (1..=days).contains(&d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> SourceConfig {
        let mut c = SourceConfig::new("erp");
        c.fields.insert(
            "credit_limit".into(),
            FieldRule { field_type: FieldType::Decimal, min: Some(0.0), max: Some(1e7), ..FieldRule::default() },
        );
        c.fields.insert(
            "tel".into(),
            FieldRule { target: Some("phone".into()), field_type: FieldType::Phone, ..FieldRule::default() },
        );
        c.fields.insert(
            "grade".into(),
            FieldRule {
                target: Some("level".into()),
                pattern: Some("[ABC]".into()),
                clearable: true,
                ..FieldRule::default()
            },
        );
        c.fields.insert("name".into(), FieldRule { required: true, ..FieldRule::default() });
        c
    }

    fn rec(pairs: &[(&str, Option<&str>)]) -> Vec<(String, Option<String>)> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), v.map(str::to_owned))).collect()
    }

    #[test]
    fn valid_records_map_to_targets_and_unknown_fields_to_custom() {
        let v = Validator::new(&config()).unwrap();
        let out = v
            .validate(&rec(&[
                ("name", Some("杭州某某机械有限公司")),
                ("tel", Some("13800138000")),
                ("grade", None),
                ("erp_flag", Some("x")),
            ]))
            .unwrap();
        let targets: Vec<_> = out.iter().map(|o| (o.target.as_str(), o.clearable)).collect();
        assert_eq!(targets, vec![("name", false), ("phone", false), ("level", true), ("custom.erp_flag", false)]);
        assert_eq!(out[1].value.as_deref(), Some("+8613800138000"), "phones are normalised to E.164");
    }

    #[test]
    fn type_pattern_range_and_required_failures_name_the_field() {
        let v = Validator::new(&config()).unwrap();
        let errs = v
            .validate(&rec(&[
                ("credit_limit", Some("-5")),
                ("tel", Some("12")),
                ("grade", Some("Z")),
                ("name", Some("")),
            ]))
            .unwrap_err();
        let rules: Vec<_> = errs.iter().map(|e| (e.field.as_str(), e.rule.as_str())).collect();
        assert_eq!(
            rules,
            vec![("credit_limit", "range"), ("tel", "type.phone"), ("grade", "pattern"), ("name", "required")]
        );
    }

    #[test]
    fn bad_configuration_is_refused() {
        let mut c = SourceConfig::new("erp");
        c.fields.insert("x".into(), FieldRule { pattern: Some("(".into()), ..FieldRule::default() });
        assert_eq!(Validator::new(&c).err().unwrap().rule, "config.pattern");
        let mut c = SourceConfig::new("erp");
        c.fields.insert("x".into(), FieldRule { target: Some("salary".into()), ..FieldRule::default() });
        assert_eq!(Validator::new(&c).err().unwrap().rule, "config.target");
    }

    #[test]
    fn dates() {
        assert!(is_date("2024-02-29"));
        assert!(!is_date("2023-02-29"));
        assert!(!is_date("2023-13-01"));
        assert!(!is_date("20230101"));
    }
}
