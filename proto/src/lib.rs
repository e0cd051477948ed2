//! Sluice's wire API: the generated protobuf and gRPC code, and the only place where
//! model types and wire types meet.
//!
//! **Architecture invariant:** conversions live here and nowhere else; a conversion that
//! fails names the field at fault. The mapping of error codes onto gRPC status codes is
//! in [`status`].

pub mod agent;
pub mod convert;
pub mod federation;
pub mod status;

/// Generated code for `sluice.v1`.
pub mod v1 {
    #![allow(clippy::all, clippy::pedantic)]
    tonic::include_proto!("sluice.v1");
}

/// The encoded descriptor set, for the gRPC reflection service.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/sluice_descriptor.bin"));

/// The request header that names the caller (until certificates do).
pub const USER_HEADER: &str = "x-sluice-user";
/// An operator's token (see `sluice serve --operators`), for operator-only requests.
pub const TOKEN_HEADER: &str = "x-sluice-token";
