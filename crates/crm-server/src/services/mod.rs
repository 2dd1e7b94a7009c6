//! The tonic services.

pub mod eventlog;
