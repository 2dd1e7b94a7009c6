//! The `crm.v1` gRPC API, compiled from the top-level `proto/` folder by `build.rs` with a
//! vendored protoc. This is the only crate, besides `crm-server`, that knows prost or tonic.
//!
//! ```
//! let set = crm_proto::FILE_DESCRIPTOR_SET;
//! assert!(!set.is_empty());
//! ```

#[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
pub mod v1 {
    tonic::include_proto!("crm.v1");
}

/// The encoded `FileDescriptorSet` of every `crm.v1` file, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("crm_v1_descriptor");
