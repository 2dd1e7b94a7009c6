//! The record the matcher compares: one customer as the caller knows it.

use serde::{Deserialize, Serialize};

/// Whether a customer is a company (B2B) or a person (B2C: education, beauty chains, retail
/// members). The field models differ: two people called 张伟 in one city are common, two
/// companies with the same core name, region and industry are not.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordKind {
    #[default]
    Company,
    Person,
}

/// One customer record as typed, in any script. Every field but `id` is optional; a missing
/// field is neutral evidence, never a reason for or against a match.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Record {
    /// The caller's identifier (customer id, lead id, row number).
    pub id: String,
    pub kind: RecordKind,
    /// The person: the customer for [`RecordKind::Person`], the contact for a company.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Company name as written ("北京市康达医疗器械有限公司", "Acme Co., Ltd.").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub company: Option<String>,
    /// Unified Social Credit Code (统一社会信用代码).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uscc: Option<String>,
    /// Phone numbers in any spelling: mobiles and landlines.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub phones: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Street address, free text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub postcode: Option<String>,
    /// Province, city or state ("北京", "上海市", "nsw").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub industry: Option<String>,
    /// Birth date in any of `1985-03-07`, `1985/3/7`, `1985年3月7日`, `19850307`, `07/03/1985`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub birth_date: Option<String>,
    /// Identity number: an 18-digit Chinese resident ID (checksum validated) or any other
    /// national identifier, compared as text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id_number: Option<String>,
}

impl Record {
    /// A company record with the given id and name; set the other fields directly.
    pub fn company(id: impl Into<String>, company: impl Into<String>) -> Record {
        Record { id: id.into(), kind: RecordKind::Company, company: Some(company.into()), ..Record::default() }
    }

    /// A person record with the given id and name; set the other fields directly.
    pub fn person(id: impl Into<String>, name: impl Into<String>) -> Record {
        Record { id: id.into(), kind: RecordKind::Person, name: Some(name.into()), ..Record::default() }
    }
}
