//! The pure domain of agentcore-registrar: what AgentCore resources look like, which registry
//! entry each should have, who owns an entry, and the plan that converges the two.
//!
//! Nothing here does I/O. This crate must never depend on the AWS SDK, reqwest or a tokio
//! runtime (`tests/core_stays_pure.rs` fails if it does).

#![warn(missing_docs)]

pub mod backoff;
pub mod desired;
pub mod enable;
pub mod error;
pub mod fingerprint;
pub mod identity;
pub mod naming;
pub mod observed;
pub mod outbound;
pub mod plan;
pub mod ports;
pub mod reach;
pub mod refresh;
pub mod tokens;
pub mod trust;

pub use error::{ErrorClass, ErrorSource, PortError};
