//! The data-health report of one scope.

use std::collections::{BTreeMap, BTreeSet};

use crm_domain::CUSTOMER_FIELDS;
use crm_projection_runtime::{decode_value, Reader, Result};
use uuid::Uuid;

use crate::projector::{customer_key, scope_key, version_1_prefix, CustomerHealth, Value, CUSTOMER_FLAGS, LEAD_FLAGS};

/// Whose records a report covers.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum HealthScope {
    #[default]
    All,
    /// Customers whose `region` field is this (`-`: none); leads captured in it.
    Region(String),
    /// Customers this user owns (no leads).
    Owner(Uuid),
}

impl HealthScope {
    fn key(&self) -> String {
        match self {
            HealthScope::All => "*".to_owned(),
            HealthScope::Region(r) => format!("r:{r}"),
            HealthScope::Owner(o) => format!("o:{o}"),
        }
    }

    fn admits(&self, c: &CustomerHealth) -> bool {
        match self {
            HealthScope::All => true,
            HealthScope::Region(r) => c.region() == r,
            HealthScope::Owner(o) => c.owner == Some(*o),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct HealthReport {
    /// Live customers (not merged into another).
    pub live: u64,
    /// Per customer field, in [`CUSTOMER_FIELDS`] order: live customers with it filled.
    pub filled: Vec<(String, u64)>,
    /// Per flag in [`CUSTOMER_FLAGS`]: live customers carrying it.
    pub customer_flags: BTreeMap<String, u64>,
    pub leads: u64,
    /// Per flag in [`LEAD_FLAGS`]: leads captured with it.
    pub lead_flags: BTreeMap<String, u64>,
    /// Live customers in the scope that are in at least one open duplicate pair.
    pub duplicate_customers: u64,
}

impl HealthReport {
    /// `filled / live`, `None` without live customers.
    pub fn completeness(&self, filled: u64) -> Option<f64> {
        (self.live > 0).then(|| filled as f64 / self.live as f64)
    }

    /// `duplicate_customers / live`, `None` without live customers.
    pub fn duplicate_rate(&self) -> Option<f64> {
        self.completeness(self.duplicate_customers)
    }
}

/// The report for `scope`. `open_pairs` are the customer pairs of the open duplicate
/// candidates (from the duplicates read model).
pub fn health(reader: &Reader, scope: &HealthScope, open_pairs: &[(Uuid, Uuid)]) -> Result<HealthReport> {
    let counts = match reader.get::<Value>(&scope_key(&scope.key()))? {
        Some(Value::Counts(counts)) => counts,
        // A version 1 tree (serving while version 2 is built) keeps a key per counter; a
        // version 2 tree has no key for a scope without counters, and nothing under this prefix.
        _ => {
            let prefix = version_1_prefix(&scope.key());
            let mut counts = BTreeMap::new();
            for entry in reader.tree.scan_prefix(prefix.as_bytes()) {
                let (key, bytes) = entry?;
                if let Value::Count(n) = decode_value::<Value>(&key, &bytes)? {
                    counts.insert(String::from_utf8_lossy(&key[prefix.len()..]).into_owned(), n);
                }
            }
            counts
        }
    };
    let get = |name: &str| counts.get(name).copied().unwrap_or(0);
    let mut report = HealthReport {
        live: get("live"),
        filled: CUSTOMER_FIELDS.iter().map(|f| ((*f).to_owned(), get(&format!("field:{f}")))).collect(),
        customer_flags: CUSTOMER_FLAGS.iter().map(|f| ((*f).to_owned(), get(&format!("flag:{f}")))).collect(),
        leads: get("leads"),
        lead_flags: LEAD_FLAGS.iter().map(|f| ((*f).to_owned(), get(&format!("lead_flag:{f}")))).collect(),
        duplicate_customers: 0,
    };
    let involved: BTreeSet<Uuid> = open_pairs.iter().flat_map(|(a, b)| [*a, *b]).collect();
    for id in involved {
        if let Some(Value::Customer(c)) = reader.get::<Value>(&customer_key(&id))? {
            if !c.absorbed && scope.admits(&c) {
                report.duplicate_customers += 1;
            }
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use crm_projection_runtime::encode_value;

    use super::*;

    /// A version 1 tree (a key per counter) and a version 2 tree (a key per scope) holding the
    /// same counts give the same report, in every scope; a scope with no counts reports zeros.
    #[test]
    fn a_version_1_tree_reports_as_version_2_does() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let counts: BTreeMap<String, u64> =
            [("live", 5), ("field:phone", 4), ("flag:phone_raw", 1), ("leads", 9), ("lead_flag:intake_flagged", 2)]
                .into_iter()
                .map(|(k, n)| (k.to_owned(), n))
                .collect();
        let (v1, v2) = (db.open_tree("health/1").unwrap(), db.open_tree("health/2").unwrap());
        for scope in ["*", "r:华东"] {
            for (counter, n) in &counts {
                let key = format!("{}{counter}", version_1_prefix(scope));
                v1.insert(key, encode_value(&Value::Count(*n))).unwrap();
            }
            v2.insert(scope_key(scope), encode_value(&Value::Counts(counts.clone()))).unwrap();
        }
        let report = |tree: &sled::Tree, scope: &HealthScope| {
            health(&Reader { tree: tree.clone(), position: 1 }, scope, &[]).unwrap()
        };
        for scope in [HealthScope::All, HealthScope::Region("华东".into())] {
            let (old, new) = (report(&v1, &scope), report(&v2, &scope));
            assert_eq!(old, new);
            assert_eq!((new.live, new.leads, new.lead_flags["intake_flagged"]), (5, 9, 2));
            assert_eq!(new.filled.iter().find(|(f, _)| f == "phone").map(|(_, n)| *n), Some(4));
        }
        let empty = report(&v2, &HealthScope::Region("华北".into()));
        assert_eq!((empty.live, empty.leads), (0, 0));
    }
}
