//! The audit read model.
