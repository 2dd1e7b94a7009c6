//! Integration tests of the sled event log.

mod bulk_load;
mod by_type;
mod concurrency;
mod corruption;
mod crash;
mod durability;
mod full_disk;
mod limits;
mod model;
mod sled_isolation;
mod snapshot;
mod stream_positions;
mod subscription;
mod support;
mod warm;
