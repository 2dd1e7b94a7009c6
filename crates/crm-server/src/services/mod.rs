//! The tonic services.

pub mod eventlog;
pub mod tokens;
