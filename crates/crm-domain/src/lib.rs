//! CRM domain: events, commands, aggregates, rules and normalisers. Pure: no I/O.

pub mod normalize;
