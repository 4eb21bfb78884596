//! For tests only: in-memory implementations of the ports, a clock that follows tokio's
//! (pausable) time, fixtures, and the contract suites that run against both these and the real
//! adapters (DynamoDB on moto, the registry stand-in, AgentCore on moto), so the fakes cannot
//! drift from what they stand for.

pub mod agentcore;
pub mod clock;
pub mod contract;
pub mod fixtures;
pub mod registry;
pub mod state;

pub use agentcore::MemoryAgentCore;
pub use clock::TestClock;
pub use registry::MemoryRegistry;
pub use state::MemoryState;
