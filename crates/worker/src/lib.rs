//! The `registrar` service: the adapters (`aws`, `registry`, `net`), the pacing of AgentCore
//! calls (`pace`), the reconcile engine and the consumer that feeds it, resync, the token
//! refresher, `doctor`, and the command line.

pub mod aws;
pub mod cli;
pub mod clock;
pub mod consumer;
pub mod doctor;
pub mod emf;
pub mod engine;
pub mod fresh;
pub mod gate;
pub mod net;
pub mod pace;
pub mod registry;
pub mod rescan;
pub mod resync;
pub mod service;
pub mod tokens;
