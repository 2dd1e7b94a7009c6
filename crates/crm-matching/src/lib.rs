//! Duplicate detection for CRM customers: normalise, block, score, explain. Pure: no I/O,
//! no clock, no storage; the binaries in `src/bin` read and write files, the library never does.
//!
//! The pipeline:
//! 1. [`Prepared::new`] normalises a [`Record`] with the domain normalisers
//!    (`crm_domain::normalize`: phones to E.164, USCC with checksum, company names split into
//!    region, core, industry and legal form) plus what matching needs: pinyin of names,
//!    address tokens, birth dates, Chinese identity numbers ([`parse_id_number`]).
//! 2. [`blocking_keys`] derive the values two records must share to be compared: exact keys
//!    (USCC, identity number, mobile, e-mail) and fuzzy ones (company core, pinyin, character
//!    bigrams, Soundex of Latin names, landline, birth date, address). An [`Index`] finds
//!    candidates by those keys, ignoring oversized blocks.
//! 3. [`compare`] scores a pair field by field in the Fellegi-Sunter way: each field adds
//!    `log2(m/u)` when it agrees, `log2((1-m)/(1-u))` when it disagrees, an interpolation for
//!    partial agreement and nothing when either side lacks it. The [`Explanation`] lists
//!    every field's contribution; [`Thresholds`] hold the business rule.
//!
//! Invariants: scores are symmetric, and a record scores at least as high against itself as
//! against any other record. Missing fields are neutral.
//!
//! ```
//! use crm_matching::{Decision, Matcher, Record};
//!
//! let mut known = Record::company("c-1", "北京市康达医疗器械股份有限公司");
//! known.phones = vec!["+86 138 0013 8000".into()];
//! known.name = Some("王建国".into());
//! let mut matcher = Matcher::default();
//! matcher.insert(&known);
//!
//! let mut lead = Record::company("lead-9", "康达医疗器械（北京）有限公司");
//! lead.phones = vec!["138-0013-8000".into()];
//! lead.name = Some("王建囯".into());
//! let found = matcher.find(&lead);
//! assert_eq!(found[0].id, "c-1");
//! assert_eq!(found[0].result.decision, Decision::Duplicate);
//! // "company +13.2 (same core), name ..., mobile +19.6 (same number)"
//! println!("{}", found[0].result.explanation);
//! ```

mod compare;
mod config;
mod eval;
mod idcard;
mod index;
mod keys;
mod matcher;
mod prepare;
mod record;
mod rescan;
pub mod synth;
mod text;

pub use compare::{compare, Decision, Explanation, Field, FieldScore, MatchResult, Outcome};
pub use config::{BlockingConfig, FieldModel, FieldModels, MatchConfig, Thresholds};
pub use eval::{evaluate, EvalReport};
pub use idcard::{id_check_char, parse_birth_date, parse_id_number, IdNumber};
pub use index::{Candidate, Index};
pub use keys::{blocking_keys, BlockKey, KeyKind};
pub use matcher::{Collision, Match, Matcher, PairMatch};
pub use prepare::{
    PhoneClass, Prepared, PreparedAddress, PreparedCompany, PreparedEmail, PreparedId, PreparedName, PreparedPhone,
    PreparedUscc,
};
pub use record::{Record, RecordKind};
pub use rescan::{prepare_all, rescan, rescan_prepared, ComparedPair, Rescan};
