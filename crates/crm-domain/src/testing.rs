//! Given/when/then for aggregates, in the style of cqrs-es's `TestFramework`:
//!
//! ```
//! use crm_domain::testing::given;
//! use crm_domain::{Aggregate, Event, UserCommand, Role, UserId, UserCreated};
//! let user = UserId(uuid::Uuid::from_u128(1));
//! given::<crm_domain::User>(vec![])
//!     .when(UserCommand::Create { user_id: user, name: "王芳".into(), role: Role::SalesRep,
//!           region: Some("北京".into()), team: Some("华北".into()), capacity: 20 })
//!     .then_expect_events(vec![Event::UserCreated(UserCreated { user_id: user, name: "王芳".into(),
//!           role: Role::SalesRep, region: Some("北京".into()), team: Some("华北".into()), capacity: 20 })]);
//! ```

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::aggregate::Aggregate;
use crate::error::DomainError;
use crate::event::Event;
use crate::rules::Rules;
use crate::CommandContext;

/// A fixed context: actor `tester`, source `test`, time 2026-03-02 09:00 UTC (a Monday).
pub fn test_context() -> CommandContext {
    context_at("2026-03-02T09:00:00Z")
}

/// [`test_context`] at another time (RFC 3339).
///
/// # Panics
/// On a malformed time: test input only.
pub fn context_at(rfc3339: &str) -> CommandContext {
    CommandContext {
        actor: "tester".into(),
        correlation_id: Uuid::from_u128(0xC0FFEE),
        causation_id: None,
        source: "test".into(),
        now: DateTime::parse_from_rfc3339(rfc3339).expect("valid test time").with_timezone(&Utc),
    }
}

/// Starts a specification from the events already in the aggregate's stream.
pub fn given<A: Aggregate>(events: Vec<Event>) -> Given<A> {
    Given { state: A::fold(&events), rules: Rules::default(), ctx: test_context() }
}

pub struct Given<A> {
    state: A,
    rules: Rules,
    ctx: CommandContext,
}

impl<A: Aggregate> Given<A> {
    pub fn with_rules(mut self, rules: Rules) -> Self {
        self.rules = rules;
        self
    }

    pub fn at(mut self, ctx: CommandContext) -> Self {
        self.ctx = ctx;
        self
    }

    pub fn when(self, cmd: A::Command) -> Then<A> {
        let result = self.state.handle(cmd, &self.ctx, &self.rules);
        Then { state: self.state, result }
    }
}

pub struct Then<A> {
    state: A,
    result: Result<Vec<Event>, DomainError>,
}

impl<A: Aggregate> Then<A> {
    /// # Panics
    /// When the command was refused or emitted other events.
    #[track_caller]
    pub fn then_expect_events(self, expected: Vec<Event>) -> A {
        match self.result {
            Ok(events) => {
                assert_eq!(events, expected, "emitted events");
                let mut state = self.state;
                for e in &events {
                    state.apply(e);
                }
                state
            }
            Err(e) => panic!("expected events, the command was refused: {e}"),
        }
    }

    /// # Panics
    /// When the command succeeded or failed differently.
    #[track_caller]
    pub fn then_expect_error(self, expected: DomainError) {
        match self.result {
            Ok(events) => panic!("expected {expected}, the command emitted {events:?}"),
            Err(e) => assert_eq!(e, expected),
        }
    }

    /// The refusal's rule (or field for `InvalidArgument`), for tests that check only that.
    ///
    /// # Panics
    /// When the command succeeded.
    #[track_caller]
    pub fn then_expect_rule(self, rule: &str) {
        match self.result {
            Ok(events) => panic!("expected a refusal by {rule}, the command emitted {events:?}"),
            Err(DomainError::InvalidArgument { rule: r, .. } | DomainError::FailedPrecondition { rule: r, .. }) => {
                assert_eq!(r, rule)
            }
            Err(other) => panic!("expected a refusal by {rule}, got {other}"),
        }
    }

    /// A `FailedPrecondition` by `rule` listing exactly `missing`.
    ///
    /// # Panics
    /// When the command succeeded or failed differently.
    #[track_caller]
    pub fn then_expect_missing(self, rule: &str, missing: &[&str]) {
        match self.result {
            Err(DomainError::FailedPrecondition { rule: r, missing: m, .. }) => {
                assert_eq!((r.as_str(), m.iter().map(String::as_str).collect::<Vec<_>>()), (rule, missing.to_vec()))
            }
            other => panic!("expected {rule} missing {missing:?}, got {other:?}"),
        }
    }

    /// The raw outcome, for assertions the helpers do not cover.
    pub fn result(self) -> Result<Vec<Event>, DomainError> {
        self.result
    }
}
