//! Identifiers and stream names. Ids are UUIDs chosen by the caller (the server makes v7 ones),
//! so a command is deterministic: the domain never generates an id or reads a clock.

use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

macro_rules! id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            /// The stream prefix, `"lead"` for `lead-<id>`.
            pub const PREFIX: &'static str = $prefix;

            /// The event stream this aggregate lives in: `<prefix>-<uuid>`.
            pub fn stream(&self) -> String {
                format!("{}-{}", $prefix, self.0)
            }

            /// Parses a bare UUID (`"0190..."`) or a stream name (`"lead-0190..."`).
            pub fn parse(text: &str) -> Option<Self> {
                let bare = text.strip_prefix(concat!($prefix, "-")).unwrap_or(text);
                Uuid::parse_str(bare).ok().map($name)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl From<Uuid> for $name {
            fn from(id: Uuid) -> Self {
                $name(id)
            }
        }
    };
}

id!(
    /// A lead: stream `lead-<id>`.
    LeadId, "lead"
);
id!(
    /// A customer (company account): stream `customer-<id>`.
    CustomerId, "customer"
);
id!(
    /// An opportunity (deal): stream `opportunity-<id>`.
    OpportunityId, "opportunity"
);
id!(
    /// A user (salesperson, manager, ...): stream `user-<id>`.
    UserId, "user"
);
id!(
    /// A contact person inside a customer; no stream of its own.
    ContactId, "contact"
);
id!(
    /// A logged activity inside a customer; no stream of its own.
    ActivityId, "activity"
);

/// The one stream holding every rule change.
pub const RULES_STREAM: &str = "rules";

/// Which aggregate a stream name belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StreamId {
    Lead(LeadId),
    Customer(CustomerId),
    Opportunity(OpportunityId),
    User(UserId),
    Rules,
}

impl StreamId {
    pub fn parse(stream: &str) -> Option<Self> {
        if stream == RULES_STREAM {
            return Some(StreamId::Rules);
        }
        let (prefix, _) = stream.split_once('-')?;
        match prefix {
            LeadId::PREFIX => LeadId::parse(stream).map(StreamId::Lead),
            CustomerId::PREFIX => CustomerId::parse(stream).map(StreamId::Customer),
            OpportunityId::PREFIX => OpportunityId::parse(stream).map(StreamId::Opportunity),
            UserId::PREFIX => UserId::parse(stream).map(StreamId::User),
            _ => None,
        }
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StreamId::Lead(id) => f.write_str(&id.stream()),
            StreamId::Customer(id) => f.write_str(&id.stream()),
            StreamId::Opportunity(id) => f.write_str(&id.stream()),
            StreamId::User(id) => f.write_str(&id.stream()),
            StreamId::Rules => f.write_str(RULES_STREAM),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_names_round_trip() {
        let id = Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0001);
        for stream in [
            StreamId::Lead(LeadId(id)),
            StreamId::Customer(CustomerId(id)),
            StreamId::Opportunity(OpportunityId(id)),
            StreamId::User(UserId(id)),
            StreamId::Rules,
        ] {
            assert_eq!(StreamId::parse(&stream.to_string()), Some(stream));
        }
        assert_eq!(LeadId(id).stream(), format!("lead-{id}"));
        assert_eq!(LeadId::parse(&id.to_string()), Some(LeadId(id)));
        assert_eq!(StreamId::parse("widget-1"), None);
        assert_eq!(StreamId::parse("lead-not-a-uuid"), None);
    }
}
