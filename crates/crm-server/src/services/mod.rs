//! The tonic services.

pub mod admin;
pub mod audit;
pub mod duplicates;
pub mod eventlog;
pub mod projections;
pub mod query;
pub mod tokens;
