//! AgentCore's control plane for one account and region, modelled: the in-memory port answers,
//! after a network delay, within per-operation request-rate quotas; a request past its quota is
//! throttled. As the AWS SDK's standard retry does, a throttled request is tried again after a
//! jittered backoff, three attempts in all; then the call fails with a transient error.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use registrar_core::observed::{GatewaySnapshot, RuntimeSnapshot, TargetSnapshot};
use registrar_core::ports::{AgentCore, Clock, Listed};
use registrar_core::{ErrorClass, PortError};
use registrar_testkit::{MemoryAgentCore, TestClock};
use registrar_worker::pace::{LIST_PAGE, Operation};

use super::quota::{Dice, Quota, Tally};

/// Requests a second each operation allows per account and region (burst: one second's worth).
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub struct AgentCoreQuotas {
    pub get_gateway: f64,
    pub get_target: f64,
    pub get_runtime: f64,
    pub list: f64,
}

impl AgentCoreQuotas {
    /// "Rate of GetGateway requests": 10 (Service Quotas). No figure was found for the others:
    /// GetGatewayTarget is taken as GetGateway's, GetAgentRuntime and the listings as 5, the
    /// lowest control-plane read rate the same listing shows (ListAgentRuntimeEndpoints).
    pub const DOCUMENTED: Self = Self {
        get_gateway: 10.0,
        get_target: 10.0,
        get_runtime: 5.0,
        list: 5.0,
    };

    pub fn of(&self, op: Operation) -> f64 {
        match op {
            Operation::GetGateway => self.get_gateway,
            Operation::GetGatewayTarget => self.get_target,
            Operation::GetAgentRuntime => self.get_runtime,
            Operation::ListGateways
            | Operation::ListGatewayTargets
            | Operation::ListAgentRuntimes => self.list,
        }
    }
}

/// The SDK's standard retry: 3 attempts, backoff `rand * 2^(attempt-1)` seconds, at most 20 s.
const ATTEMPTS: u32 = 3;

/// One account and region's control plane: its resources, quotas, and what it served.
#[derive(Debug)]
pub struct ScopeServer {
    pub data: MemoryAgentCore,
    quotas: Mutex<Vec<Quota>>,
    latency: Duration,
    clock: Arc<TestClock>,
    dice: Arc<Dice>,
    pub tally: Arc<Tally>,
    /// When the last request ended (monotonic ms): when the AgentCore work of a phase was done.
    pub last_ms: Arc<AtomicU64>,
}

impl ScopeServer {
    pub fn new(
        data: MemoryAgentCore,
        quotas: AgentCoreQuotas,
        latency: Duration,
        clock: Arc<TestClock>,
        shared: (&Arc<Tally>, &Arc<AtomicU64>, &Arc<Dice>),
    ) -> Self {
        Self {
            data,
            quotas: Mutex::new(
                Operation::ALL
                    .iter()
                    .map(|op| Quota::new(quotas.of(*op), quotas.of(*op)))
                    .collect(),
            ),
            latency,
            clock,
            dice: Arc::clone(shared.2),
            tally: Arc::clone(shared.0),
            last_ms: Arc::clone(shared.1),
        }
    }

    fn admit(&self, op: Operation) -> bool {
        let now = self.clock.elapsed();
        self.quotas.lock().unwrap_or_else(PoisonError::into_inner)[op as usize].admit(now, 1.0)
    }

    /// One request of `op`, with the SDK's attempts: Ok once one is served, else a transient
    /// throttling error.
    async fn request(&self, op: Operation) -> Result<(), PortError> {
        let name = op.name();
        for attempt in 1..=ATTEMPTS {
            self.tally.call(name);
            let served = self.admit(op);
            tokio::time::sleep(self.latency).await;
            self.last_ms
                .fetch_max(self.clock.elapsed().as_millis() as u64, Ordering::Relaxed);
            if served {
                return Ok(());
            }
            self.tally.throttled(name);
            if attempt < ATTEMPTS {
                let cap = Duration::from_secs(1 << (attempt - 1)).min(Duration::from_secs(20));
                tokio::time::sleep(cap.mul_f64(self.dice.unit())).await;
            }
        }
        self.tally.failed(name);
        Err(PortError::new(
            "agentcore",
            name,
            ErrorClass::Transient,
            "ThrottlingException: Rate exceeded (modelled quota)",
        ))
    }

    /// A listing of `items` items: one request per page, one after another, as the paginator
    /// sends them.
    async fn pages(&self, op: Operation, items: usize) -> Result<(), PortError> {
        for _ in 0..items.div_ceil(LIST_PAGE).max(1) {
            self.request(op).await?;
        }
        Ok(())
    }
}

/// The port of one scope, sharing its [`ScopeServer`] with every worker that reads it.
#[derive(Debug, Clone)]
pub struct ModelAgentCore(pub Arc<ScopeServer>);

impl AgentCore for ModelAgentCore {
    /// STS, asked once and cached by the real adapter: no request modelled.
    async fn account(&self) -> Result<String, PortError> {
        self.0.data.account().await
    }

    fn region(&self) -> &str {
        self.0.data.region()
    }

    async fn list_gateways(&self) -> Result<Vec<Listed>, PortError> {
        let listed = self.0.data.list_gateways().await?;
        self.0.pages(Operation::ListGateways, listed.len()).await?;
        Ok(listed)
    }

    async fn get_gateway(&self, id: &str) -> Result<Option<GatewaySnapshot>, PortError> {
        self.0.request(Operation::GetGateway).await?;
        self.0.data.get_gateway(id).await
    }

    async fn list_targets(&self, gateway_id: &str) -> Result<Vec<Listed>, PortError> {
        let listed = self.0.data.list_targets(gateway_id).await?;
        self.0
            .pages(Operation::ListGatewayTargets, listed.len())
            .await?;
        Ok(listed)
    }

    async fn get_target(
        &self,
        gateway: &GatewaySnapshot,
        target_id: &str,
    ) -> Result<Option<TargetSnapshot>, PortError> {
        self.0.request(Operation::GetGatewayTarget).await?;
        self.0.data.get_target(gateway, target_id).await
    }

    async fn list_runtimes(&self) -> Result<Vec<Listed>, PortError> {
        let listed = self.0.data.list_runtimes().await?;
        self.0
            .pages(Operation::ListAgentRuntimes, listed.len())
            .await?;
        Ok(listed)
    }

    async fn get_runtime(&self, id: &str) -> Result<Option<RuntimeSnapshot>, PortError> {
        self.0.request(Operation::GetAgentRuntime).await?;
        self.0.data.get_runtime(id).await
    }
}
