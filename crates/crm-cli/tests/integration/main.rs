//! crmctl end-to-end tests: the real `crmctl` binary against a real `crm-server`.

mod backup;
mod import;
mod operator;
mod support;
