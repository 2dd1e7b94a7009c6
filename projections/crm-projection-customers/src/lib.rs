//! The customers read model.
