//! Normalisers for the master keys and match keys of the CRM: phone numbers, Unified
//! Social Credit Codes, company names, e-mail addresses and person names.
//!
//! Every normaliser is total: it never fails and never drops its input. It keeps the raw
//! text next to the normalised form and flags what it could not validate, so a record with a
//! bad phone number or a USCC that fails its checksum is kept and sent to review instead of
//! being lost at intake.

mod company;
mod phone;
mod text;
mod uscc;

pub use company::{normalize_company, CompanyName};
pub use phone::{normalize_phone, Phone, PhoneKind};
pub use text::{normalize_email, normalize_person_name};
pub use uscc::{normalize_uscc, uscc_check_char, Uscc, USCC_ALPHABET};
