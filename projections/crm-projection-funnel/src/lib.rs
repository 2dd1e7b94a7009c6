//! The funnel read model.
