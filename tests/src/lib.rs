//! End-to-end test support: real local peers (moto), the registry stand-in, fixtures, and a
//! bundle that wires them to the registrar.

#![allow(clippy::disallowed_methods)] // tests time real processes on the real clock

pub mod env;
pub mod events;
pub mod fixtures;
pub mod idp;
pub mod metrics;
pub mod moto;
pub mod proxy;
pub mod sim;
pub mod standin;

/// The region every test runs in.
pub const REGION: &str = "us-east-1";
/// The account moto answers with.
pub const ACCOUNT: &str = "123456789012";
