//! Deterministic ids from an idempotency key, so a retried command produces the same event
//! ids (and the log deduplicates it) and the same generated aggregate ids.
//!
//! An event id is a UUID v8 whose first 14 bytes come from FNV-1a-128 of the key and whose
//! last two bytes are the event's index in the command, so one look at a stored id tells
//! whether it came from a given key.

use uuid::{Builder, Uuid};

fn fnv1a_128(parts: &[&[u8]]) -> [u8; 16] {
    let mut hash: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
    for part in parts {
        for byte in *part {
            hash ^= u128::from(*byte);
            hash = hash.wrapping_mul(0x0000_0000_0100_0000_0000_0000_0000_013b);
        }
        hash ^= 0xff; // separator, so ("ab","c") and ("a","bc") differ
        hash = hash.wrapping_mul(0x0000_0000_0100_0000_0000_0000_0000_013b);
    }
    hash.to_be_bytes()
}

#[derive(Debug, Clone)]
pub(crate) struct IdempotencyKey {
    key: String,
    prefix: [u8; 14],
}

impl IdempotencyKey {
    pub(crate) fn new(key: &str) -> Self {
        let mut bytes = fnv1a_128(&[b"crm.v1/event", key.as_bytes()]);
        bytes[14] = 0;
        bytes[15] = 0;
        let canonical = Builder::from_custom_bytes(bytes).into_uuid();
        let mut prefix = [0; 14];
        prefix.copy_from_slice(&canonical.as_bytes()[..14]);
        IdempotencyKey { key: key.to_owned(), prefix }
    }

    /// The id of the `index`-th event the command emits.
    pub(crate) fn event_id(&self, index: u16) -> Uuid {
        let mut bytes = [0; 16];
        bytes[..14].copy_from_slice(&self.prefix);
        bytes[14..].copy_from_slice(&index.to_be_bytes());
        Uuid::from_bytes(bytes)
    }

    /// Whether a stored event id came from this key.
    pub(crate) fn owns(&self, id: &Uuid) -> bool {
        id.as_bytes()[..14] == self.prefix
    }

    /// A stable id for something the command creates, e.g. `"lead_id"` or `"correlation_id"`.
    pub(crate) fn derived(&self, purpose: &str) -> Uuid {
        Builder::from_custom_bytes(fnv1a_128(&[b"crm.v1/id", self.key.as_bytes(), purpose.as_bytes()])).into_uuid()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_distinct_and_recognisable() {
        let key = IdempotencyKey::new("form-2026-03-02-0001");
        let again = IdempotencyKey::new("form-2026-03-02-0001");
        let other = IdempotencyKey::new("form-2026-03-02-0002");
        assert_eq!(key.event_id(0), again.event_id(0));
        assert_ne!(key.event_id(0), key.event_id(1));
        assert_ne!(key.event_id(0), other.event_id(0));
        assert!(key.owns(&key.event_id(7)));
        assert!(!key.owns(&other.event_id(7)));
        assert!(!key.owns(&Uuid::now_v7()));
        assert_eq!(key.event_id(3).get_version_num(), 8);
        assert_eq!(key.derived("lead_id"), again.derived("lead_id"));
        assert_ne!(key.derived("lead_id"), key.derived("customer_id"));
    }
}
