//! End-to-end tests: the real `crm-server` binary on a loopback port, a real tonic client.

mod auth;
mod commands;
mod duplicates;
mod eventlog;
mod faults;
mod garbage;
mod intake;
mod projections;
mod readmodels;
mod subscriptions;
mod support;
