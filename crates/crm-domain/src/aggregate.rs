use crate::error::DomainError;
use crate::event::Event;
use crate::rules::Rules;
use crate::CommandContext;

/// An event-sourced aggregate (cqrs-es style).
///
/// `handle` holds every business rule and never mutates; `apply` holds none and cannot fail,
/// so replaying a stream always succeeds and always gives the state the live aggregate had.
/// Events that do not concern the aggregate are ignored by `apply`.
pub trait Aggregate: Default + Clone + std::fmt::Debug + PartialEq {
    type Command;
    /// The stream prefix and error `kind`: "lead", "customer", ...
    const KIND: &'static str;

    fn handle(&self, cmd: Self::Command, ctx: &CommandContext, rules: &Rules) -> Result<Vec<Event>, DomainError>;

    fn apply(&mut self, event: &Event);

    /// Rebuilds the state from a stream's events.
    fn fold<'a>(events: impl IntoIterator<Item = &'a Event>) -> Self {
        let mut state = Self::default();
        for event in events {
            state.apply(event);
        }
        state
    }
}

/// Events for one stream, produced by a command that touches several aggregates
/// (qualify, merge, unmerge, mark won, handover). The log appends them atomically.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamEvents {
    pub stream: String,
    pub events: Vec<Event>,
}
