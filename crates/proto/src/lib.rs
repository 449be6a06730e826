//! Generated protobuf and gRPC code for every Emporium package, plus the encoded
//! file descriptor set that server reflection serves.
//!
//! Nothing here is written by hand: `build.rs` compiles `proto/` with protox.
//! Refer to a package through an alias so the layer shows at every use:
//! `use emporium_proto::user::v1 as pb;`.

#![allow(unreachable_pub, clippy::all, missing_docs)]

include!(concat!(env!("OUT_DIR"), "/emporium.rs"));

pub use emporium::{common, inventory, order, payment, user};

/// The encoded `FileDescriptorSet` of every Emporium proto and its imports.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/emporium_descriptor.bin"));
