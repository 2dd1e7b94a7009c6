//! Integration tests of crm-matching: one binary, one module per concern.

mod evaluator;
mod index;
mod properties;
mod variants;
