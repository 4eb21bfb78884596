//! Past this machine: the registrar's real engine and rescan at fleet scale, run on the
//! in-memory ports behind models of each peer's latency and quotas, on tokio's paused clock
//! (waiting costs nothing; the CPU is the limit). The `simulate` binary runs each phase in a
//! process of its own and prints the README's table.
//!
//! - AgentCore ([`agentcore`]): per-operation request-rate quotas per account and region, the
//!   SDK's three attempts on a throttle.
//! - The registry ([`registry`]): ~120 ms a write, ~20 ms a read, one request at a time.
//! - DynamoDB ([`state`]): ~5 ms a request, a new on-demand table's throughput.
//! - SQS ([`queue`]): batches of 10, long polls, delayed copies, redrive.
//!
//! The client's pacing is the real [`registrar_worker::pace`], wrapped round each scope's
//! modelled control plane exactly as `aws::fleet` wraps the SDK client.

pub mod agentcore;
pub mod burst;
pub mod fleet;
pub mod queue;
pub mod quota;
pub mod registry;
pub mod rescan;
pub mod state;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use registrar_core::desired::DeriveOptions;
use registrar_core::enable::EnablePolicy;
use registrar_core::plan::{PlanContext, RegistryIdentity};
use registrar_core::ports::Clock;
use registrar_testkit::{MemoryRegistry, MemoryState, TestClock};
use registrar_worker::aws::fleet::Fleet;
use registrar_worker::pace::{Paced, Rates};

use self::agentcore::{AgentCoreQuotas, ModelAgentCore, ScopeServer};
use self::fleet::Shape;
use self::quota::{Count, Dice, Tally};
use self::registry::{ModelRegistry, RegistryCosts};
use self::state::{DynamoLimits, ModelState};

/// What to simulate, and the models' figures.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Setup {
    pub resources: usize,
    pub accounts: usize,
    pub regions: usize,
    pub events: usize,
    /// Workers of the burst (sharing the state table and the registry).
    pub workers: usize,
    /// Messages each worker processes at once (`--concurrency`).
    pub concurrency: usize,
    /// Client-side pacing on (each process at `rates`; the burst's workers at `rates` / workers).
    pub pacing: bool,
    pub rates: RatesSetup,
    pub quotas: AgentCoreQuotas,
    pub agentcore_latency: Duration,
    pub registry: RegistryCosts,
    pub dynamodb: DynamoLimits,
    pub sqs_latency: Duration,
    pub seed: u64,
}

/// [`Rates`], serialisable.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub struct RatesSetup {
    pub gateway_reads: f64,
    pub runtime_reads: f64,
    pub lists: f64,
}

impl RatesSetup {
    pub fn rates(self, share: f64) -> Rates {
        Rates {
            gateway_reads: self.gateway_reads * share,
            runtime_reads: self.runtime_reads * share,
            lists: self.lists * share,
        }
    }
}

impl From<Rates> for RatesSetup {
    fn from(r: Rates) -> Self {
        Self {
            gateway_reads: r.gateway_reads,
            runtime_reads: r.runtime_reads,
            lists: r.lists,
        }
    }
}

impl Setup {
    /// The fleet and burst (100,000 resources in 50 accounts x 3 regions; 50,000 events
    /// through 4 workers) with the models' figures: AgentCore ~40 ms a request within its
    /// quotas, the registry as measured, a new on-demand DynamoDB table, SQS ~10 ms a call.
    pub fn standard(pacing: bool) -> Self {
        Self {
            resources: 100_000,
            accounts: 50,
            regions: 3,
            events: 50_000,
            workers: 4,
            concurrency: 16,
            pacing,
            rates: Rates::DEFAULT.into(),
            quotas: AgentCoreQuotas::DOCUMENTED,
            agentcore_latency: Duration::from_millis(40),
            registry: RegistryCosts::MEASURED,
            dynamodb: DynamoLimits::NEW_ON_DEMAND_TABLE,
            sqs_latency: Duration::from_millis(10),
            seed: 1,
        }
    }

    pub fn shape(&self) -> Shape {
        Shape {
            accounts: self.accounts,
            regions: self.regions,
        }
    }
}

/// The modelled peers of one phase.
#[derive(Debug)]
pub struct Peers {
    pub clock: Arc<TestClock>,
    pub dice: Arc<Dice>,
    pub servers: Vec<Arc<ScopeServer>>,
    pub agentcore: Arc<Tally>,
    pub agentcore_last_ms: Arc<AtomicU64>,
    pub registry: ModelRegistry,
    pub registry_tally: Arc<Tally>,
    pub state: ModelState,
    pub dynamodb: Arc<Tally>,
    pub sqs: Arc<Tally>,
}

impl Peers {
    /// AgentCore filled with the fleet; the registry and state empty.
    pub fn new(setup: &Setup) -> Self {
        let clock = Arc::new(TestClock::standard());
        let dice = Arc::new(Dice::new(setup.seed));
        let agentcore = Arc::new(Tally::default());
        let last = Arc::new(AtomicU64::new(0));
        let servers = fleet::servers(
            setup.shape(),
            setup.resources,
            setup.quotas,
            setup.agentcore_latency,
            &clock,
            (&agentcore, &last, &dice),
        );
        let registry_tally = Arc::new(Tally::default());
        let registry = ModelRegistry::new(
            MemoryRegistry::new(USER),
            setup.registry,
            Arc::clone(&registry_tally),
        );
        let dynamodb = Arc::new(Tally::default());
        let state = ModelState::new(
            MemoryState::new(clock.clone()),
            setup.dynamodb,
            Arc::clone(&clock),
            Arc::clone(&dice),
            Arc::clone(&dynamodb),
        );
        Self {
            clock,
            dice,
            servers,
            agentcore,
            agentcore_last_ms: last,
            registry,
            registry_tally,
            state,
            dynamodb,
            sqs: Arc::default(),
        }
    }

    /// One process's view of AgentCore: every scope behind its own limiters at `rates`.
    pub fn fleet(&self, rates: Rates) -> Fleet<Paced<ModelAgentCore>> {
        Fleet::of(
            self.servers
                .iter()
                .map(|s| ModelAgentCore(Arc::clone(s)))
                .collect(),
        )
        .paced(rates, self.clock.clone())
    }
}

/// The registry user the registrar registers as (its `--registry-identity`).
pub const USER: &str = "registrar";

/// The planner's settings of a worker with default flags and `--registry-identity registrar`.
pub fn plan_context() -> PlanContext {
    static IDENTITY: std::sync::OnceLock<RegistryIdentity> = std::sync::OnceLock::new();
    PlanContext {
        adopt_legacy: true,
        identity: Some(*IDENTITY.get_or_init(|| RegistryIdentity::configured(USER.to_owned()))),
        ..PlanContext::default()
    }
}

pub const DERIVE: DeriveOptions = DeriveOptions {
    visibility: registrar_core::desired::Visibility::Public,
};
pub const ENABLE: EnablePolicy = EnablePolicy::Authenticated;

/// What one phase measured.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct PhaseReport {
    pub phase: String,
    pub pacing: bool,
    pub resources: usize,
    pub scopes: usize,
    /// Simulated seconds the phase took.
    pub simulated_s: f64,
    /// Simulated seconds until the last AgentCore request ended.
    pub agentcore_done_s: f64,
    /// Real seconds it took to simulate.
    pub wall_s: f64,
    /// Resident memory once the peers were filled (before the registrar's work), and the
    /// process's peak (VmHWM) at the end, MiB.
    pub rss_seeded_mib: f64,
    pub peak_mib: f64,
    pub agentcore: BTreeMap<String, Count>,
    pub registry: BTreeMap<String, Count>,
    pub dynamodb: BTreeMap<String, Count>,
    pub sqs: BTreeMap<String, Count>,
    /// Calls the client's pacing held back, and for how long in all (simulated seconds).
    pub paced_calls: u64,
    pub paced_wait_s: f64,
    /// Outcomes by name (registered, failed, superseded, ...).
    pub outcomes: BTreeMap<String, u64>,
    pub registry_entries: usize,
    pub notes: Vec<String>,
}

impl PhaseReport {
    pub fn fill_from(&mut self, peers: &Peers) {
        self.simulated_s = peers.clock.elapsed().as_secs_f64();
        self.agentcore_done_s = peers
            .agentcore_last_ms
            .load(std::sync::atomic::Ordering::Relaxed) as f64
            / 1_000.0;
        self.agentcore = peers.agentcore.snapshot();
        self.registry = peers.registry_tally.snapshot();
        self.dynamodb = peers.dynamodb.snapshot();
        self.sqs = peers.sqs.snapshot();
    }

    /// Entries the registry holds now (both collections).
    pub async fn count_entries(&mut self, peers: &Peers) -> anyhow::Result<()> {
        use registrar_core::ports::Registry;
        let data = peers.registry.data();
        self.registry_entries = data
            .list(registrar_core::desired::Collection::Server)
            .await?
            .len()
            + data
                .list(registrar_core::desired::Collection::Agent)
                .await?
                .len();
        Ok(())
    }

    pub fn add_paced<A>(&mut self, fleet: &Fleet<Paced<A>>) {
        for m in fleet.members() {
            let (calls, waited) = m.limits().waited();
            self.paced_calls += calls;
            self.paced_wait_s += waited.as_secs_f64();
        }
    }
}

/// Totals of a tally: (calls, throttled, failed).
pub fn totals(by: &BTreeMap<String, Count>) -> (u64, u64, u64) {
    by.values().fold((0, 0, 0), |(c, t, f), n| {
        (c + n.calls, t + n.throttled, f + n.failed)
    })
}

/// VmRSS and VmHWM of a process (`None`: this one), MiB; zeros when it cannot be read.
pub fn memory_mib(pid: Option<u32>) -> (f64, f64) {
    let path = pid.map_or_else(
        || "/proc/self/status".to_owned(),
        |p| format!("/proc/{p}/status"),
    );
    let status = std::fs::read_to_string(path).unwrap_or_default();
    let field = |name: &str| -> f64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|kb| kb.parse::<f64>().ok())
            .unwrap_or(0.0)
            / 1024.0
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// A paused, single-threaded runtime: time moves only when every task waits.
pub fn paused_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
}
