//! Client-side pacing of AgentCore control-plane calls. AgentCore limits the request rate of
//! each operation per account and region ("Rate of GetGateway requests", Service Quotas); a
//! client that sends faster is throttled, and retrying into a throttled quota only adds load.
//! [`Paced`] wraps the [`AgentCore`] port of one account and region and makes each call wait
//! for its operation's token bucket first, so the rescan and the event path alike stay under
//! the quota by waiting. The fleet gives every account and region its own [`Limits`]
//! ([`crate::aws::fleet::Fleet::paced`]); the rates are per process (with N workers reading
//! the same accounts, give each 1/N of the quota).
//!
//! Time comes from the [`Clock`] port and waits from tokio, so the buckets are tested on a
//! paused clock.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use registrar_core::PortError;
use registrar_core::observed::{GatewaySnapshot, RuntimeSnapshot, TargetSnapshot};
use registrar_core::ports::{AgentCore, Clock, Listed};

/// Items the AWS adapter asks for per page of a listing (`maxResults`; ListAgentRuntimes allows
/// at most 100, the gateway listings up to 1,000).
pub const LIST_PAGE: usize = 100;

/// The control-plane operations the registrar calls; each has its own quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    ListGateways,
    GetGateway,
    ListGatewayTargets,
    GetGatewayTarget,
    ListAgentRuntimes,
    GetAgentRuntime,
}

impl Operation {
    pub const ALL: [Self; 6] = [
        Self::ListGateways,
        Self::GetGateway,
        Self::ListGatewayTargets,
        Self::GetGatewayTarget,
        Self::ListAgentRuntimes,
        Self::GetAgentRuntime,
    ];

    /// The API's name for it.
    pub fn name(self) -> &'static str {
        match self {
            Self::ListGateways => "ListGateways",
            Self::GetGateway => "GetGateway",
            Self::ListGatewayTargets => "ListGatewayTargets",
            Self::GetGatewayTarget => "GetGatewayTarget",
            Self::ListAgentRuntimes => "ListAgentRuntimes",
            Self::GetAgentRuntime => "GetAgentRuntime",
        }
    }

    /// Whether it is a listing (paged, [`LIST_PAGE`] items a page).
    pub fn is_list(self) -> bool {
        matches!(
            self,
            Self::ListGateways | Self::ListGatewayTargets | Self::ListAgentRuntimes
        )
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Requests per second one process makes to each operation in one account and region; 0 leaves
/// the operation unpaced.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rates {
    /// GetGateway, and GetGatewayTarget, each.
    pub gateway_reads: f64,
    /// GetAgentRuntime.
    pub runtime_reads: f64,
    /// ListGateways, ListGatewayTargets and ListAgentRuntimes, each (a request is a page).
    pub lists: f64,
}

impl Rates {
    /// 80 % of the quotas the README's "Pacing" names (GetGateway 10/s; runtime reads and
    /// listings taken as 5/s where no figure was found), leaving room for other callers in the
    /// same account.
    pub const DEFAULT: Self = Self {
        gateway_reads: 8.0,
        runtime_reads: 4.0,
        lists: 4.0,
    };

    /// No pacing at all.
    pub const OFF: Self = Self {
        gateway_reads: 0.0,
        runtime_reads: 0.0,
        lists: 0.0,
    };

    /// The rate of `op`.
    pub fn of(&self, op: Operation) -> f64 {
        match op {
            Operation::GetGateway | Operation::GetGatewayTarget => self.gateway_reads,
            Operation::GetAgentRuntime => self.runtime_reads,
            Operation::ListGateways
            | Operation::ListGatewayTargets
            | Operation::ListAgentRuntimes => self.lists,
        }
    }
}

/// A token bucket as a theoretical arrival time (GCRA): `rate` requests a second on average,
/// up to one second's worth (at least one) at once after a quiet spell. Each caller reserves
/// its slot under the lock and then waits for it, so waiters go in the order they came.
#[derive(Debug)]
struct Bucket {
    /// Time per request.
    interval: Duration,
    /// How far ahead of its slot a request may go: (burst - 1) intervals.
    tolerance: Duration,
    /// When the bucket is next empty-handed, on the clock's monotonic time.
    tat: Duration,
}

impl Bucket {
    fn new(rate: f64) -> Option<Self> {
        if !(rate.is_finite() && rate > 0.0) {
            return None;
        }
        let interval = Duration::from_secs_f64(1.0 / rate);
        let burst = rate.floor().max(1.0) as u32;
        Some(Self {
            interval,
            tolerance: interval * (burst - 1),
            tat: Duration::ZERO,
        })
    }

    /// Takes `cost` requests' worth at `now`; how long the first of them must wait.
    fn reserve(&mut self, now: Duration, cost: u32) -> Duration {
        let start = self.tat.max(now);
        let go = start.saturating_sub(self.tolerance).max(now);
        self.tat = start + self.interval * cost;
        go - now
    }
}

/// The buckets of one account and region, one per operation, and how much they held calls back.
#[derive(Debug)]
pub struct Limits {
    clock: Arc<dyn Clock>,
    buckets: Mutex<[Option<Bucket>; 6]>,
    waited_calls: AtomicU64,
    waited_us: AtomicU64,
}

impl Limits {
    pub fn new(rates: Rates, clock: Arc<dyn Clock>) -> Self {
        Self {
            clock,
            buckets: Mutex::new(Operation::ALL.map(|op| Bucket::new(rates.of(op)))),
            waited_calls: AtomicU64::new(0),
            waited_us: AtomicU64::new(0),
        }
    }

    fn take(&self, op: Operation, cost: u32) -> Duration {
        let now = self.clock.elapsed();
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        buckets[op.index()]
            .as_mut()
            .map_or(Duration::ZERO, |b| b.reserve(now, cost))
    }

    /// Waits until one request of `op` may go.
    pub async fn wait(&self, op: Operation) {
        let delay = self.take(op, 1);
        if !delay.is_zero() {
            self.waited_calls.fetch_add(1, Ordering::Relaxed);
            self.waited_us
                .fetch_add(delay.as_micros() as u64, Ordering::Relaxed);
            tokio::time::sleep(delay).await;
        }
    }

    /// Charges `requests` of `op` already sent (the later pages of a listing): the next calls
    /// of `op` wait them off.
    pub fn charge(&self, op: Operation, requests: u32) {
        if requests > 0 {
            self.take(op, requests);
        }
    }

    /// Calls that had to wait, and their waits summed.
    pub fn waited(&self) -> (u64, Duration) {
        (
            self.waited_calls.load(Ordering::Relaxed),
            Duration::from_micros(self.waited_us.load(Ordering::Relaxed)),
        )
    }
}

/// One account and region's AgentCore, paced by its [`Limits`].
///
/// A listing waits for one request's token and, once it has its answer, charges the pages after
/// the first ([`LIST_PAGE`] items each): those went out back to back inside the adapter's
/// paginator, which the port does not see page by page. A listing of more pages than one
/// second's worth of its rate can therefore briefly exceed the rate; the calls after it wait
/// for the debt.
#[derive(Debug, Clone)]
pub struct Paced<A> {
    inner: A,
    limits: Arc<Limits>,
}

impl<A> Paced<A> {
    pub fn new(inner: A, limits: Arc<Limits>) -> Self {
        Self { inner, limits }
    }

    /// The port it paces (`registrar doctor` probes the SDK client directly).
    pub fn inner(&self) -> &A {
        &self.inner
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    async fn listing(
        &self,
        op: Operation,
        call: impl Future<Output = Result<Vec<Listed>, PortError>>,
    ) -> Result<Vec<Listed>, PortError> {
        self.limits.wait(op).await;
        let listed = call.await?;
        let pages = listed.len().div_ceil(LIST_PAGE).max(1);
        self.limits.charge(op, (pages - 1) as u32);
        Ok(listed)
    }
}

impl<A: AgentCore> AgentCore for Paced<A> {
    async fn account(&self) -> Result<String, PortError> {
        self.inner.account().await
    }

    fn region(&self) -> &str {
        self.inner.region()
    }

    async fn list_gateways(&self) -> Result<Vec<Listed>, PortError> {
        self.listing(Operation::ListGateways, self.inner.list_gateways())
            .await
    }

    async fn get_gateway(&self, id: &str) -> Result<Option<GatewaySnapshot>, PortError> {
        self.limits.wait(Operation::GetGateway).await;
        self.inner.get_gateway(id).await
    }

    async fn list_targets(&self, gateway_id: &str) -> Result<Vec<Listed>, PortError> {
        self.listing(
            Operation::ListGatewayTargets,
            self.inner.list_targets(gateway_id),
        )
        .await
    }

    async fn get_target(
        &self,
        gateway: &GatewaySnapshot,
        target_id: &str,
    ) -> Result<Option<TargetSnapshot>, PortError> {
        self.limits.wait(Operation::GetGatewayTarget).await;
        self.inner.get_target(gateway, target_id).await
    }

    async fn list_runtimes(&self) -> Result<Vec<Listed>, PortError> {
        self.listing(Operation::ListAgentRuntimes, self.inner.list_runtimes())
            .await
    }

    async fn get_runtime(&self, id: &str) -> Result<Option<RuntimeSnapshot>, PortError> {
        self.limits.wait(Operation::GetAgentRuntime).await;
        self.inner.get_runtime(id).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use registrar_testkit::fixtures::{ACCOUNT, REGION, gateway, runtime};
    use registrar_testkit::{MemoryAgentCore, TestClock};

    use super::*;

    fn paced(rates: Rates) -> (Paced<MemoryAgentCore>, Arc<TestClock>) {
        let clock = Arc::new(TestClock::standard());
        let ac = MemoryAgentCore::new(ACCOUNT, REGION);
        for i in 0..300 {
            ac.put_gateway(gateway(&format!("g{i}"), &format!("gw-{i:04}"), None));
            ac.put_runtime(runtime(&format!("r{i}"), &format!("rt-{i:04}")));
        }
        let limits = Arc::new(Limits::new(rates, clock.clone()));
        (Paced::new(ac, limits), clock)
    }

    /// Calls `get` as fast as `concurrency` callers can for `window`; how many went.
    async fn hammer<F, Fut>(
        clock: &TestClock,
        window: Duration,
        concurrency: usize,
        get: F,
    ) -> usize
    where
        F: Fn() -> Fut,
        Fut: Future<Output = ()>,
    {
        let done = AtomicUsize::new(0);
        let until = clock.elapsed() + window;
        let caller = || async {
            loop {
                get().await;
                if clock.elapsed() > until {
                    return;
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
        };
        futures::future::join_all((0..concurrency).map(|_| caller())).await;
        done.load(Ordering::Relaxed)
    }

    #[tokio::test(start_paused = true)]
    async fn the_rate_holds_over_a_window_whatever_the_concurrency() {
        let (ac, clock) = paced(Rates::DEFAULT);
        let window = Duration::from_secs(30);
        let gets = hammer(&clock, window, 16, || async {
            ac.get_gateway("gw-0001").await.expect("read");
        })
        .await;
        // 8 a second for 30 s, plus the first second's burst of 8.
        assert!((240..=248).contains(&gets), "{gets} GetGateway in 30 s");
        let (waited, total) = ac.limits().waited();
        assert!(
            waited > 200 && total > Duration::from_secs(60),
            "{waited} {total:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_quiet_bucket_lets_one_seconds_worth_through_at_once_then_paces() {
        let (ac, clock) = paced(Rates::DEFAULT);
        tokio::time::sleep(Duration::from_secs(60)).await;
        let started = clock.elapsed();
        let mut at = Vec::new();
        for _ in 0..12 {
            ac.get_runtime("rt-0001").await.expect("read");
            at.push(clock.elapsed() - started);
        }
        // runtime reads: 4 a second, so 4 at once, then one every 250 ms.
        assert!(at[..4].iter().all(|t| t.is_zero()), "{at:?}");
        assert_eq!(at[4], Duration::from_millis(250));
        assert_eq!(at[11], Duration::from_millis(2_000));
        // A quiet spell refills it, but never beyond one second's worth.
        tokio::time::sleep(Duration::from_secs(10)).await;
        let again = clock.elapsed();
        for _ in 0..5 {
            ac.get_runtime("rt-0001").await.expect("read");
        }
        assert_eq!(clock.elapsed() - again, Duration::from_millis(250));
    }

    #[tokio::test(start_paused = true)]
    async fn the_fleet_gives_each_scope_and_operation_a_bucket_of_its_own() {
        let clock = Arc::new(TestClock::standard());
        let fleet = crate::aws::fleet::Fleet::of(vec![
            MemoryAgentCore::new(ACCOUNT, REGION),
            MemoryAgentCore::new("210987654321", REGION),
        ])
        .paced(Rates::DEFAULT, clock.clone());
        let [one, other] = fleet.members() else {
            panic!("two scopes")
        };
        let started = clock.elapsed();
        // Each drains its own GetGateway bucket (8 at once); other operations are untouched.
        for _ in 0..8 {
            one.get_gateway("gw-0001").await.expect("read");
            other.get_gateway("gw-0001").await.expect("read");
            one.get_target(&gateway("g1", "gw-0001", None), "t")
                .await
                .expect("read");
        }
        for _ in 0..4 {
            one.get_runtime("rt-0001").await.expect("read");
        }
        assert_eq!(clock.elapsed(), started, "nobody waited");
        one.get_gateway("gw-0001").await.expect("read");
        assert_eq!(clock.elapsed() - started, Duration::from_millis(125));
    }

    #[tokio::test(start_paused = true)]
    async fn the_later_pages_of_a_listing_are_charged_to_the_calls_after_it() {
        let (ac, clock) = paced(Rates::DEFAULT);
        // 300 runtimes are 3 pages: 1 waited for, 2 charged; the bucket holds 4 a second.
        assert_eq!(ac.list_runtimes().await.expect("list").len(), 300);
        let started = clock.elapsed();
        ac.list_runtimes().await.expect("list");
        assert_eq!(clock.elapsed(), started, "the fourth request of the burst");
        ac.list_runtimes().await.expect("list");
        // The burst is spent; the second listing's two later pages are waited off first.
        assert_eq!(clock.elapsed() - started, Duration::from_millis(750));
    }

    #[tokio::test(start_paused = true)]
    async fn rate_zero_leaves_calls_unpaced() {
        let (ac, clock) = paced(Rates::OFF);
        for _ in 0..1_000 {
            ac.get_gateway("gw-0001").await.expect("read");
        }
        assert_eq!(clock.elapsed(), Duration::ZERO);
        assert_eq!(ac.limits().waited().0, 0);
    }
}
