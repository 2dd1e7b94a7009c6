//! Integration tests of the projection runner: exactly-once across restarts and crashes,
//! failures that stop one projector only, rebuilds that swap without a gap, verification.

mod crash;
mod runner;
