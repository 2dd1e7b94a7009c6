//! Authentication and authorisation, decided in one place.
//!
//! - [`tokens`]: bearer tokens, issued and revoked by administrators, stored only as SHA-256
//!   hashes in the `tokens` stream of the log (so every issue and revocation is an audited
//!   event), with an expiry.
//! - [`policy`]: the role/permission matrix, the permission each gRPC method needs, the record
//!   scope and the field masks of each role.
//! - [`layer`]: the tower layer in front of every service: authenticates, checks the method's
//!   permission, applies per-token rate and concurrency limits, records denials, and puts the
//!   [`Principal`] into the request extensions for handlers.

pub mod layer;
pub mod policy;
pub mod tokens;

pub use layer::{AuthLayer, Limits};
pub use policy::{
    mask_fields, mask_identity_number, mask_phone, permission_for, FieldMasks, MethodAccess, Permission, Principal,
    Role, Scope,
};
pub use tokens::{IssuedToken, TokenRecord, TokenStore};

/// The principal of a request, as put there by the auth layer. Errors when the request did
/// not pass the layer (which only happens in unit tests that call handlers directly).
pub fn principal<T>(request: &tonic::Request<T>) -> Result<&Principal, tonic::Status> {
    request
        .extensions()
        .get::<Principal>()
        .ok_or_else(|| tonic::Status::unauthenticated("no authenticated principal on the request"))
}
