//! crm-domain specifications: given/when/then for every command (refusals included), the
//! multi-aggregate processes, the event codec with its frozen fixtures, and a model-based
//! property test (live state equals the state replayed from the encoded events).

mod calendar;
mod codec;
mod customer;
mod duplicates;
mod lead;
mod opportunity;
mod process;
mod replay;
mod support;
mod user_rules;
