//! Matching rules: thresholds from the business, field models from record linkage.

use serde::{Deserialize, Serialize};

use crate::compare::Field;

/// Thresholds of the duplicate rule. The defaults come from the source material: company
/// similarity at least 85%, contact-name edit distance at most 2, the same landline area
/// code, the same industry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Thresholds {
    /// Minimum similarity (0..=1) of two company names (core and industry words) to count as
    /// agreement; below it the company field disagrees.
    pub company_similarity: f64,
    /// Maximum edit distance between two Hanzi names (one character = one edit) to count as
    /// partial agreement. Two-character names tolerate one edit at most.
    pub contact_name_max_edits: usize,
    /// Minimum Jaro-Winkler similarity of two Latin-script names for partial agreement.
    pub latin_name_similarity: f64,
    /// Landlines with different area codes count against a match (otherwise neutral).
    pub same_landline_area_code: bool,
    /// Different industries count against a match (otherwise neutral).
    pub same_industry: bool,
    /// Total weight (log2 likelihood ratio) at or above which a pair is a duplicate.
    pub match_weight: f64,
    /// Total weight at or above which a pair is shown for review.
    pub review_weight: f64,
    /// Sparse records: when the fields both records have could add up to little, a pair in
    /// which no field disagrees is also a duplicate once its weight reaches `sparse_share`
    /// of what they could reach at most, provided it reaches `sparse_floor`. Two records that only have a name and an
    /// address cannot reach `match_weight` with a single typing error, but agree on most
    /// of what they have.
    pub sparse_share: f64,
    pub sparse_floor: f64,
}

impl Thresholds {
    /// The weight a pair must reach, given the most its shared fields could add up to.
    pub fn match_weight_for(&self, attainable: f64) -> f64 {
        (attainable * self.sparse_share).max(self.sparse_floor).min(self.match_weight)
    }
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            company_similarity: 0.85,
            contact_name_max_edits: 2,
            latin_name_similarity: 0.85,
            same_landline_area_code: true,
            same_industry: true,
            match_weight: 15.0,
            review_weight: 8.0,
            sparse_share: 0.6,
            sparse_floor: 11.0,
        }
    }
}

/// Fellegi-Sunter model of one field: `m` = P(field agrees | same customer),
/// `u` = P(field agrees | different customers). Agreement adds `log2(m/u)`, disagreement adds
/// `log2((1-m)/(1-u))`, partial agreement interpolates, a missing field adds nothing.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FieldModel {
    pub m: f64,
    pub u: f64,
}

impl FieldModel {
    pub const fn new(m: f64, u: f64) -> FieldModel {
        FieldModel { m, u }
    }

    pub fn agreement(self) -> f64 {
        (self.m / self.u).log2()
    }

    pub fn disagreement(self) -> f64 {
        ((1.0 - self.m) / (1.0 - self.u)).log2()
    }

    /// Weight of a partial agreement, `factor` in 0..=1 (0 = disagreement, 1 = agreement).
    pub fn partial(self, factor: f64) -> f64 {
        let d = self.disagreement();
        d + (self.agreement() - d) * factor.clamp(0.0, 1.0)
    }
}

/// One [`FieldModel`] per field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FieldModels {
    pub uscc: FieldModel,
    pub company: FieldModel,
    pub name: FieldModel,
    pub mobile: FieldModel,
    pub landline: FieldModel,
    pub email: FieldModel,
    pub address: FieldModel,
    pub postcode: FieldModel,
    pub region: FieldModel,
    pub industry: FieldModel,
    pub birth_date: FieldModel,
    pub id_number: FieldModel,
}

impl FieldModels {
    pub fn get(&self, field: Field) -> FieldModel {
        match field {
            Field::Kind => FieldModel::new(0.95, 0.5),
            Field::Uscc => self.uscc,
            Field::Company => self.company,
            Field::Name => self.name,
            Field::Mobile => self.mobile,
            Field::Landline => self.landline,
            Field::Email => self.email,
            Field::Address => self.address,
            Field::Postcode => self.postcode,
            Field::Region => self.region,
            Field::Industry => self.industry,
            Field::BirthDate => self.birth_date,
            Field::IdNumber => self.id_number,
        }
    }

    /// Models for pairs of company customers. `u` values are the chance that two different
    /// companies agree: a registered name core with its industry is nearly unique, a contact's
    /// mobile or mailbox is personal, a landline may be a shared switchboard; `m` values allow
    /// for contacts who change, second mailboxes and typing errors.
    pub fn companies() -> FieldModels {
        FieldModels {
            uscc: FieldModel::new(0.97, 1e-7),
            company: FieldModel::new(0.97, 1e-4),
            name: FieldModel::new(0.7, 1e-3),
            mobile: FieldModel::new(0.8, 1e-6),
            landline: FieldModel::new(0.8, 1e-4),
            email: FieldModel::new(0.7, 1e-6),
            address: FieldModel::new(0.8, 1e-3),
            postcode: FieldModel::new(0.9, 0.01),
            region: FieldModel::new(0.95, 0.1),
            industry: FieldModel::new(0.9, 0.15),
            birth_date: FieldModel::new(0.95, 5e-5),
            id_number: FieldModel::new(0.97, 1e-8),
        }
    }

    /// Models for pairs of person customers. Common names are shared by many people
    /// (张伟 by hundreds of thousands), landlines and addresses by households.
    pub fn persons() -> FieldModels {
        FieldModels {
            uscc: FieldModel::new(0.97, 1e-7),
            company: FieldModel::new(0.9, 1e-3),
            name: FieldModel::new(0.95, 5e-4),
            mobile: FieldModel::new(0.85, 1e-6),
            landline: FieldModel::new(0.7, 1e-2),
            email: FieldModel::new(0.85, 1e-6),
            address: FieldModel::new(0.8, 1e-2),
            postcode: FieldModel::new(0.9, 0.01),
            region: FieldModel::new(0.95, 0.1),
            industry: FieldModel::new(0.9, 0.15),
            birth_date: FieldModel::new(0.95, 5e-5),
            id_number: FieldModel::new(0.97, 1e-8),
        }
    }
}

/// Candidate lookup: how blocks are used.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BlockingConfig {
    /// A block with more records than this is not used for lookup (a common surname, a
    /// frequent word); it stops growing once past it.
    pub max_block: usize,
    /// At most this many candidates per lookup, the best supported first.
    pub max_candidates: usize,
    /// Minimum support (sum of key weights, discounted by block size) for a candidate that
    /// shares no exact key.
    pub min_support: f32,
}

impl Default for BlockingConfig {
    fn default() -> Self {
        BlockingConfig { max_block: 200, max_candidates: 16, min_support: 2.0 }
    }
}

/// Everything the matcher needs: thresholds, field models for company and person pairs,
/// blocking. Changing it changes results, so a re-scan follows a change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MatchConfig {
    pub thresholds: Thresholds,
    pub companies: FieldModels,
    pub persons: FieldModels,
    pub blocking: BlockingConfig,
}

impl Default for MatchConfig {
    fn default() -> Self {
        MatchConfig {
            thresholds: Thresholds::default(),
            companies: FieldModels::companies(),
            persons: FieldModels::persons(),
            blocking: BlockingConfig::default(),
        }
    }
}

impl Default for FieldModels {
    fn default() -> Self {
        FieldModels::companies()
    }
}
