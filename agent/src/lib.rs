//! The node agent's data plane: what circuits one node must carry (`sluice_model::dataplane`), the
//! node's ports as the agent knows them ([`config`]), and the backends that make the
//! data plane match: [`linux`] (network namespaces, VXLAN labels, bridges as
//! cross-connects, HTB egress queues, driven through `ip` and `tc`) and [`mock`] (for
//! unit tests of the layers above only).
//!
//! The Linux backend is split into a pure planner (what the current state, read from
//! `ip`/`tc`, lacks or has too much of, as command lines) and an executor, so the plan
//! is tested without root. Applying a plan twice changes nothing: the second plan is
//! empty.

pub mod admit;
pub mod config;
pub mod lab;
pub mod linux;
pub mod measure;
pub mod mock;
pub mod server;
pub mod service;
pub mod twamp;

pub use config::{AgentConfig, PortConfig};
pub use sluice_model::dataplane::{CircuitEnd, Desired, NodeCircuit};
