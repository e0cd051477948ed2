//! The inter-domain controller: the store, admission against the in-memory index, the
//! scheduler loop, and the gRPC services.
//!
//! **Architecture invariant:** only this crate knows SQL (in [`store`]); the pure crates
//! (`pce`, `scheduler`, `stitching`) are called, never the other way round.

pub mod agents;
pub mod clock;
pub mod federation;
pub mod grpc;
pub mod metrics;
pub mod operators;
pub mod server;
pub mod service;
pub mod status;
pub mod store;
pub mod testing;
pub mod topology_file;
pub mod verify;

pub use server::{RunningServer, ServerOptions, start};
pub use service::Idc;
