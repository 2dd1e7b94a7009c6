//! Form field mapping: which form field fills which lead field. Unknown fields become custom
//! attributes; invalid values are kept raw and flagged. Nothing here can refuse a submission.

use std::collections::BTreeMap;

use crm_domain::normalize::normalize_phone;
use serde::{Deserialize, Serialize};

/// A lead field a form field can fill.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeadField {
    Name,
    Company,
    Phone,
    Email,
    Wechat,
    Uscc,
    Region,
}

impl LeadField {
    pub const ALL: [LeadField; 7] = [
        LeadField::Name,
        LeadField::Company,
        LeadField::Phone,
        LeadField::Email,
        LeadField::Wechat,
        LeadField::Uscc,
        LeadField::Region,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            LeadField::Name => "name",
            LeadField::Company => "company",
            LeadField::Phone => "phone",
            LeadField::Email => "email",
            LeadField::Wechat => "wechat",
            LeadField::Uscc => "uscc",
            LeadField::Region => "region",
        }
    }

    pub fn parse(s: &str) -> Option<LeadField> {
        LeadField::ALL.into_iter().find(|f| f.as_str() == s)
    }
}

/// The mapping of one form: form field name -> lead field. A form without a configured
/// mapping uses [`FormMapping::identity`]: fields named like a lead field map onto it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FormMapping {
    pub form_id: String,
    pub fields: BTreeMap<String, LeadField>,
}

impl FormMapping {
    pub fn identity(form_id: &str) -> Self {
        FormMapping {
            form_id: form_id.to_owned(),
            fields: LeadField::ALL.into_iter().map(|f| (f.as_str().to_owned(), f)).collect(),
        }
    }
}

/// What happened to one form field in one submission.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "outcome")]
pub enum ObservationOutcome {
    /// Mapped, present and valid.
    Matched,
    /// Mapped and present, but the value failed its check; kept raw and flagged.
    Invalid { reason: String },
    /// Mapped, but absent or empty in this submission.
    Missing,
    /// Not in the mapping: kept as a custom attribute.
    Unmapped,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldObservation {
    pub field: String,
    #[serde(flatten)]
    pub outcome: ObservationOutcome,
}

impl FieldObservation {
    pub fn matched(&self) -> bool {
        self.outcome == ObservationOutcome::Matched
    }
}

/// A submission mapped onto a lead.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MappedForm {
    pub fields: BTreeMap<LeadField, String>,
    pub custom_attributes: BTreeMap<String, String>,
    /// One per mapped field and per unmapped field present, in field-name order.
    pub observations: Vec<FieldObservation>,
    /// Unmapped fields whose value was used as the lead's contact because no mapped contact
    /// arrived (a renamed phone field must not cost the lead); they stay custom attributes.
    pub salvaged: Vec<(String, LeadField)>,
}

impl MappedForm {
    pub fn get(&self, f: LeadField) -> Option<String> {
        self.fields.get(&f).cloned()
    }

    /// Fields flagged invalid (kept raw).
    pub fn flagged(&self) -> impl Iterator<Item = &FieldObservation> {
        self.observations.iter().filter(|o| matches!(o.outcome, ObservationOutcome::Invalid { .. }))
    }
}

fn check(field: LeadField, value: &str) -> Result<(), String> {
    match field {
        LeadField::Phone if !normalize_phone(value).valid => Err("phone.invalid".into()),
        LeadField::Email if !looks_like_email(value) => Err("email.invalid".into()),
        _ => Ok(()),
    }
}

fn looks_like_email(value: &str) -> bool {
    let Some((local, domain)) = value.trim().split_once('@') else {
        return false;
    };
    !local.is_empty() && domain.contains('.') && !domain.starts_with('.') && !domain.ends_with('.')
}

/// Maps one submission. Never fails: every value ends up in a lead field or a custom
/// attribute, and every mapped field gets an observation for the field-health window.
pub fn map_submission(mapping: &FormMapping, values: &BTreeMap<String, String>) -> MappedForm {
    let mut out = MappedForm::default();
    for (field, value) in values {
        let value = value.trim();
        match mapping.fields.get(field) {
            Some(target) => {
                if value.is_empty() {
                    continue; // observed as Missing below
                }
                if out.fields.contains_key(target) {
                    // Two form fields for one lead field: the first (by name) wins, the
                    // other is kept too.
                    out.custom_attributes.insert(field.clone(), value.to_owned());
                    continue;
                }
                out.fields.insert(*target, value.to_owned());
            }
            None => {
                if !value.is_empty() {
                    out.custom_attributes.insert(field.clone(), value.to_owned());
                    out.observations
                        .push(FieldObservation { field: field.clone(), outcome: ObservationOutcome::Unmapped });
                }
            }
        }
    }
    for (field, target) in &mapping.fields {
        let present = values.get(field).map(|v| v.trim()).filter(|v| !v.is_empty());
        let outcome = match present {
            None => ObservationOutcome::Missing,
            Some(v) => match check(*target, v) {
                Ok(()) => ObservationOutcome::Matched,
                Err(reason) => ObservationOutcome::Invalid { reason },
            },
        };
        out.observations.push(FieldObservation { field: field.clone(), outcome });
    }
    out.observations.sort_by(|a, b| a.field.cmp(&b.field));
    salvage_contact(&mut out);
    out
}

/// When no mapped contact arrived, takes the first unmapped value that is a valid phone
/// number, else the first that looks like an e-mail address.
fn salvage_contact(out: &mut MappedForm) {
    let has_contact =
        [LeadField::Phone, LeadField::Email, LeadField::Wechat].iter().any(|f| out.fields.contains_key(f));
    if has_contact {
        return;
    }
    let unmapped = |o: &&FieldObservation| o.outcome == ObservationOutcome::Unmapped;
    let candidates: Vec<(String, String)> = out
        .observations
        .iter()
        .filter(unmapped)
        .filter_map(|o| out.custom_attributes.get(&o.field).map(|v| (o.field.clone(), v.clone())))
        .collect();
    let found = candidates
        .iter()
        .find(|(_, v)| normalize_phone(v).valid)
        .map(|(f, v)| (f, v, LeadField::Phone))
        .or_else(|| candidates.iter().find(|(_, v)| looks_like_email(v)).map(|(f, v)| (f, v, LeadField::Email)));
    if let Some((field, value, target)) = found {
        out.fields.insert(target, value.clone());
        out.salvaged.push((field.clone(), target));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn unknown_fields_become_custom_attributes_and_nothing_is_dropped() {
        let mut mapping = FormMapping::identity("f1");
        mapping.fields.insert("手机".into(), LeadField::Phone);
        let m =
            map_submission(&mapping, &form(&[("name", "王芳"), ("手机", "13800138000"), ("budget_range", "50-100万")]));
        assert_eq!(m.get(LeadField::Phone).as_deref(), Some("13800138000"));
        assert_eq!(m.custom_attributes.get("budget_range").map(String::as_str), Some("50-100万"));
        let unmapped: Vec<_> = m.observations.iter().filter(|o| o.outcome == ObservationOutcome::Unmapped).collect();
        assert_eq!(unmapped.len(), 1);
        assert_eq!(unmapped[0].field, "budget_range");
    }

    #[test]
    fn a_renamed_phone_field_still_gives_the_lead_its_contact() {
        let m = map_submission(
            &FormMapping::identity("f"),
            &form(&[("name", "王芳"), ("mobile", "13900001111"), ("note", "x")]),
        );
        assert_eq!(m.get(LeadField::Phone).as_deref(), Some("13900001111"));
        assert_eq!(m.salvaged, vec![("mobile".to_owned(), LeadField::Phone)]);
        assert_eq!(m.custom_attributes.get("mobile").map(String::as_str), Some("13900001111"));
        let with_phone =
            map_submission(&FormMapping::identity("f"), &form(&[("phone", "13900001111"), ("alt", "13900002222")]));
        assert!(with_phone.salvaged.is_empty());
    }

    #[test]
    fn invalid_phone_is_kept_raw_and_flagged() {
        let m = map_submission(&FormMapping::identity("f"), &form(&[("company", "某某科技"), ("phone", "12345")]));
        assert_eq!(m.get(LeadField::Phone).as_deref(), Some("12345"));
        let flagged: Vec<_> = m.flagged().collect();
        assert_eq!(flagged.len(), 1);
        assert_eq!(flagged[0].field, "phone");
    }

    #[test]
    fn mapped_fields_that_do_not_arrive_are_observed_missing() {
        let m = map_submission(&FormMapping::identity("f"), &form(&[("name", "张伟"), ("email", "")]));
        let email = m.observations.iter().find(|o| o.field == "email").unwrap();
        assert_eq!(email.outcome, ObservationOutcome::Missing);
        assert_eq!(m.observations.len(), LeadField::ALL.len());
    }

    #[test]
    fn a_second_field_for_the_same_target_is_kept_as_custom() {
        let mut mapping = FormMapping::identity("f");
        mapping.fields.insert("mobile".into(), LeadField::Phone);
        let m = map_submission(&mapping, &form(&[("mobile", "13800138000"), ("phone", "13900139000")]));
        assert_eq!(m.get(LeadField::Phone).as_deref(), Some("13800138000"));
        assert_eq!(m.custom_attributes.get("phone").map(String::as_str), Some("13900139000"));
    }
}
