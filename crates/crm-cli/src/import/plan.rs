//! The cleansing plan: rows mapped, normalised, flagged and matched, before anything is stored.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write;

use anyhow::{bail, Result};
use crm_domain::normalize::{normalize_email, normalize_person_name, normalize_phone, normalize_uscc};
use crm_matching::{Decision, Matcher, Record};
use crm_proto::v1 as pb;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::Decoded;

/// Customer fields the command API accepts (besides `custom.<name>`).
const FIELDS: &[&str] =
    &["name", "contact_name", "phone", "email", "wechat", "uscc", "region", "industry", "address", "website", "level"];

/// Namespace of the customer ids an import derives (UUID v5 of `<file sha256>:<line>`).
const IMPORT_NAMESPACE: Uuid = Uuid::from_u128(0x6372_6d63_746c_4000_8000_696d_706f_7274);

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Mapping {
    /// Column name -> customer field.
    pub(crate) columns: BTreeMap<String, String>,
    #[serde(default)]
    pub(crate) options: MappingOptions,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct MappingOptions {
    pub(crate) source: String,
    pub(crate) keep_unmapped: bool,
}

impl Default for MappingOptions {
    fn default() -> Self {
        MappingOptions { source: "import".into(), keep_unmapped: false }
    }
}

/// What happens to a row.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub(crate) enum Verdict {
    Import,
    Rejected { reason: String },
    DuplicateInFile { of_line: u64 },
    DuplicateExisting { customer_id: String },
}

/// One data row after mapping and normalisation.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Row {
    /// Line number in the file (the header is line 1).
    pub(crate) line: u64,
    pub(crate) fields: BTreeMap<String, String>,
    pub(crate) verdict: Verdict,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct Issue {
    pub(crate) line: u64,
    pub(crate) column: String,
    pub(crate) value: String,
    pub(crate) problem: String,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct DuplicatePair {
    pub(crate) line: u64,
    /// `line <n>` or `customer <id>`.
    pub(crate) of: String,
    pub(crate) decision: String,
    pub(crate) weight: f64,
    pub(crate) explanation: String,
}

/// The cleansing report (`--dry-run` output; `--report-format json` serialises this).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Report {
    pub(crate) file: String,
    pub(crate) encoding: String,
    pub(crate) sha256: String,
    pub(crate) malformed_bytes: bool,
    pub(crate) rows: usize,
    pub(crate) to_import: usize,
    pub(crate) rejected: Vec<Issue>,
    /// Field -> rows whose value the normalisers changed.
    pub(crate) normalised: BTreeMap<String, usize>,
    pub(crate) invalid_phones: Vec<Issue>,
    pub(crate) invalid_uscc: Vec<Issue>,
    pub(crate) duplicates_in_file: Vec<DuplicatePair>,
    pub(crate) duplicates_existing: Vec<DuplicatePair>,
    /// Pairs for a person to review; imported.
    pub(crate) possible_duplicates: Vec<DuplicatePair>,
    pub(crate) existing_customers_compared: usize,
    pub(crate) unmapped_columns: Vec<String>,
}

pub(crate) struct Plan {
    pub(crate) report: Report,
    pub(crate) rows: Vec<Row>,
}

fn clean_text(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn record(id: String, f: &BTreeMap<String, String>) -> Record {
    let get = |k: &str| f.get(k).cloned();
    Record {
        id,
        company: get("name"),
        name: get("contact_name"),
        uscc: get("uscc"),
        phones: ["phone", "custom.phone_raw"].iter().filter_map(|k| get(k)).collect(),
        email: get("email"),
        address: get("address"),
        region: get("region"),
        industry: get("industry"),
        ..Record::default()
    }
}

impl Plan {
    pub(crate) fn build(
        file: &str,
        decoded: &Decoded,
        mapping: &Mapping,
        existing: &[pb::CustomerView],
        include_duplicates: bool,
    ) -> Result<Plan> {
        for (column, target) in &mapping.columns {
            let custom = target.strip_prefix("custom.").is_some_and(|n| !n.is_empty());
            if !custom && !FIELDS.contains(&target.as_str()) {
                bail!(
                    "mapping: column {column:?} maps to unknown field {target:?}; use one of {} or custom.<name>",
                    FIELDS.join(", ")
                );
            }
        }
        let mut reader = csv::ReaderBuilder::new().flexible(true).from_reader(decoded.text.as_bytes());
        let headers: Vec<String> = reader.headers()?.iter().map(|h| h.trim().to_owned()).collect();
        for column in mapping.columns.keys() {
            if !headers.contains(column) {
                bail!("mapping: column {column:?} is not in the file (its columns: {})", headers.join(", "));
            }
        }
        if !mapping.columns.values().any(|t| t == "name") {
            bail!("mapping: no column maps to `name` (every customer needs one)");
        }
        let unmapped_columns: Vec<String> =
            headers.iter().filter(|h| !mapping.columns.contains_key(*h)).cloned().collect();
        let mut report = Report {
            file: file.to_owned(),
            encoding: decoded.encoding.to_owned(),
            sha256: decoded.sha256.clone(),
            malformed_bytes: decoded.malformed,
            rows: 0,
            to_import: 0,
            rejected: Vec::new(),
            normalised: BTreeMap::new(),
            invalid_phones: Vec::new(),
            invalid_uscc: Vec::new(),
            duplicates_in_file: Vec::new(),
            duplicates_existing: Vec::new(),
            possible_duplicates: Vec::new(),
            existing_customers_compared: 0,
            unmapped_columns: if mapping.options.keep_unmapped { Vec::new() } else { unmapped_columns.clone() },
        };
        let mut rows = Vec::new();
        for record in reader.records() {
            let record = record?;
            // The csv crate's own line count is off by one with CRLF line ends, so count the
            // newlines before the record's first byte.
            let line = record.position().map_or(0, |p| {
                let bytes = decoded.text.as_bytes();
                let mut start = (p.byte() as usize).min(bytes.len());
                while start < bytes.len() && matches!(bytes[start], b'\r' | b'\n') {
                    start += 1;
                }
                decoded.text.as_bytes()[..start].iter().filter(|b| **b == b'\n').count() as u64 + 1
            });
            if record.iter().all(|v| v.trim().is_empty()) {
                continue;
            }
            report.rows += 1;
            let mut fields = BTreeMap::new();
            for (i, header) in headers.iter().enumerate() {
                let raw = record.get(i).unwrap_or("");
                let target = match mapping.columns.get(header) {
                    Some(t) => t.clone(),
                    None if mapping.options.keep_unmapped => format!("custom.{header}"),
                    None => continue,
                };
                let trimmed = clean_text(raw);
                if trimmed.is_empty() {
                    continue;
                }
                let value = match target.as_str() {
                    "phone" => {
                        let p = normalize_phone(&trimmed);
                        match p.e164 {
                            Some(e164) => e164,
                            None => {
                                report.invalid_phones.push(Issue {
                                    line,
                                    column: header.clone(),
                                    value: raw.to_owned(),
                                    problem: "not a valid phone number: kept as custom.phone_raw".into(),
                                });
                                fields.insert("custom.phone_raw".to_owned(), trimmed);
                                continue;
                            }
                        }
                    }
                    "uscc" => {
                        let u = normalize_uscc(&trimmed);
                        if !u.checksum_ok {
                            report.invalid_uscc.push(Issue {
                                line,
                                column: header.clone(),
                                value: raw.to_owned(),
                                problem: if u.well_formed {
                                    "check character does not match (GB 32100-2015): kept, flagged".into()
                                } else {
                                    "not 18 characters of the USCC alphabet: kept, flagged".into()
                                },
                            });
                        }
                        u.normalized
                    }
                    "email" => normalize_email(&trimmed),
                    "contact_name" => normalize_person_name(&trimmed),
                    _ => trimmed.clone(),
                };
                if value != raw {
                    *report.normalised.entry(target.clone()).or_default() += 1;
                }
                fields.insert(target, value);
            }
            let verdict = if fields.get("name").is_none_or(|n| n.is_empty()) {
                report.rejected.push(Issue {
                    line,
                    column: mapping
                        .columns
                        .iter()
                        .find(|(_, t)| *t == "name")
                        .map(|(c, _)| c.clone())
                        .unwrap_or_default(),
                    value: String::new(),
                    problem: "no customer name".into(),
                });
                Verdict::Rejected { reason: "no customer name".into() }
            } else {
                Verdict::Import
            };
            rows.push(Row { line, fields, verdict });
        }
        // Duplicates against the server's customers, then inside the file (earlier rows win).
        let mut known = Matcher::default();
        let own: HashSet<String> =
            rows.iter().map(|r| Plan::customer_id_for(&report.sha256, r.line).to_string()).collect();
        for c in existing.iter().filter(|c| !own.contains(&c.id)) {
            let f: BTreeMap<String, String> = c.fields.clone().into_iter().collect();
            known.insert(&record(format!("customer {}", c.id), &f));
            report.existing_customers_compared += 1;
        }
        let mut in_file = Matcher::default();
        for row in rows.iter_mut().filter(|r| r.verdict == Verdict::Import) {
            let rec = record(format!("line {}", row.line), &row.fields);
            let pair = |m: &crm_matching::Match| DuplicatePair {
                line: row.line,
                of: m.id.clone(),
                decision: format!("{:?}", m.result.decision).to_lowercase(),
                weight: (m.result.weight * 10.0).round() / 10.0,
                explanation: m.result.explanation.to_string(),
            };
            let against_existing = known.find(&rec);
            let against_file = in_file.find(&rec);
            if let Some(m) = against_existing.iter().find(|m| m.result.decision == Decision::Duplicate) {
                report.duplicates_existing.push(pair(m));
                if !include_duplicates {
                    row.verdict =
                        Verdict::DuplicateExisting { customer_id: m.id.trim_start_matches("customer ").to_owned() };
                }
            } else if let Some(m) = against_file.iter().find(|m| m.result.decision == Decision::Duplicate) {
                report.duplicates_in_file.push(pair(m));
                if !include_duplicates {
                    let of_line = m.id.trim_start_matches("line ").parse().unwrap_or(0);
                    row.verdict = Verdict::DuplicateInFile { of_line };
                }
            } else if let Some(m) =
                against_existing.iter().chain(&against_file).find(|m| m.result.decision == Decision::Review)
            {
                report.possible_duplicates.push(pair(m));
            }
            if row.verdict == Verdict::Import {
                in_file.insert(&rec);
            }
        }
        report.to_import = rows.iter().filter(|r| r.verdict == Verdict::Import).count();
        Ok(Plan { report, rows })
    }

    /// The rows to store, in file order.
    pub(crate) fn to_import(&self) -> Vec<&Row> {
        self.rows.iter().filter(|r| r.verdict == Verdict::Import).collect()
    }

    fn customer_id_for(sha256: &str, line: u64) -> Uuid {
        Uuid::new_v5(&IMPORT_NAMESPACE, format!("{sha256}:{line}").as_bytes())
    }

    /// The customer id of a row: the same for the same file and line, on every run.
    pub(crate) fn customer_id(&self, line: u64) -> Uuid {
        Plan::customer_id_for(&self.report.sha256, line)
    }

    /// The idempotency key of a row's CreateCustomer command.
    pub(crate) fn idempotency_key(&self, line: u64) -> String {
        format!("crmctl-import:{}:{line}", &self.report.sha256[..32])
    }

    pub(crate) fn report_text(&self) -> String {
        let r = &self.report;
        let mut s = String::new();
        let _ = writeln!(s, "cleansing report for {} ({}, sha256 {})", r.file, r.encoding, &r.sha256[..16]);
        if r.malformed_bytes {
            let _ = writeln!(
                s,
                "WARNING: byte sequences invalid in {} were replaced by U+FFFD; check --encoding",
                r.encoding
            );
        }
        let skipped_dups = self
            .rows
            .iter()
            .filter(|row| matches!(row.verdict, Verdict::DuplicateExisting { .. } | Verdict::DuplicateInFile { .. }))
            .count();
        let _ = writeln!(s, "rows read:                 {}", r.rows);
        let _ = writeln!(s, "rows to import:            {}", r.to_import);
        let _ = writeln!(s, "rows rejected:             {}", r.rejected.len());
        let _ = writeln!(s, "duplicates skipped:        {skipped_dups}");
        let _ = writeln!(s, "existing customers compared: {}", r.existing_customers_compared);
        if !r.unmapped_columns.is_empty() {
            let _ = writeln!(s, "columns not imported:      {}", r.unmapped_columns.join(", "));
        }
        let _ = writeln!(s, "\nfields normalised (rows):");
        for (field, n) in &r.normalised {
            let _ = writeln!(s, "  {field}: {n}");
        }
        let issues = |s: &mut String, title: &str, list: &[Issue]| {
            let _ = writeln!(s, "\n{title} ({}):", list.len());
            for i in list {
                let _ = writeln!(s, "  line {}: {} {:?}: {}", i.line, i.column, i.value, i.problem);
            }
        };
        issues(&mut s, "rejected rows", &r.rejected);
        issues(&mut s, "invalid phones", &r.invalid_phones);
        issues(&mut s, "invalid credit codes (USCC)", &r.invalid_uscc);
        let pairs = |s: &mut String, title: &str, list: &[DuplicatePair]| {
            let _ = writeln!(s, "\n{title} ({}):", list.len());
            for p in list {
                let _ = writeln!(s, "  line {} = {} (weight {:.1}): {}", p.line, p.of, p.weight, p.explanation);
            }
        };
        pairs(&mut s, "duplicates inside the file (skipped)", &r.duplicates_in_file);
        pairs(&mut s, "duplicates of existing customers (skipped)", &r.duplicates_existing);
        pairs(&mut s, "possible duplicates to review (imported)", &r.possible_duplicates);
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(text: &str) -> Plan {
        let decoded = super::super::decode(text.as_bytes(), super::super::Encoding::Auto).unwrap();
        let mapping: Mapping = toml::from_str("[columns]\nname = \"name\"\nphone = \"phone\"\n").unwrap();
        Plan::build("t.csv", &decoded, &mapping, &[], false).unwrap()
    }

    #[test]
    fn line_numbers_are_file_lines_with_lf_and_crlf() {
        for eol in ["\n", "\r\n"] {
            let text = ["name,phone", "A公司,13800138000", "\"B\n公司\",13900139000", ",1", ""].join(eol);
            let p = plan(&text);
            assert_eq!(p.report.rejected[0].line, 5, "{eol:?}");
            assert_eq!(p.rows.iter().map(|r| r.line).collect::<Vec<_>>(), [2, 3, 5], "{eol:?}");
        }
    }

    #[test]
    fn gbk_and_utf8_bom_are_detected() {
        let (gbk, _, _) = encoding_rs::GBK.encode("name,phone\n北京市康达,13800138000\n");
        let d = super::super::decode(&gbk, super::super::Encoding::Auto).unwrap();
        assert_eq!((d.encoding, d.text.contains("北京市康达"), d.malformed), ("gbk", true, false));
        let d = super::super::decode("\u{feff}name\n甲".as_bytes(), super::super::Encoding::Auto).unwrap();
        assert_eq!((d.encoding, d.text.as_str()), ("utf-8", "name\n甲"));
        let d = super::super::decode(&gbk, super::super::Encoding::Utf8).unwrap();
        assert!(d.malformed, "GBK read as UTF-8 is flagged");
    }
}
