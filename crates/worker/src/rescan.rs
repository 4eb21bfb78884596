//! The worker's own rescans: at start-up and on a jittered timer, one replica at a time under
//! the rescan lease, with the readiness and counters they report. What a rescan does is
//! [`crate::resync`]; when it runs and who runs it is here.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use registrar_core::PortError;
use registrar_core::ports::{Clock, LeaseStore};
use tokio_util::sync::CancellationToken;

use crate::resync::ResyncOptions;
use crate::resync::report::Report;

/// The lease one replica holds while it rescans.
pub const RESCAN_LEASE: &str = "rescan";
/// How long the rescan lease lasts unrenewed (it is renewed every sixth of it while held).
pub const RESCAN_LEASE_TTL: Duration = Duration::from_secs(300);

/// Counters of the rescans.
#[derive(Debug, Default)]
pub struct RescanStats {
    /// The start-up rescan is over (done, failed, or run by another replica).
    pub ready: AtomicBool,
    pub runs: AtomicU64,
    pub failures: AtomicU64,
    /// Writes a rescan had to make: events the queue missed, or drift in the registry.
    pub drift: AtomicU64,
    pub deletions_blocked: AtomicU64,
    /// Deletions the last rescan of this replica held back.
    pub last_blocked: AtomicU64,
    pub last_success_unix: AtomicU64,
    /// Gateways with no inbound authorization, as the last rescan saw them.
    pub unauthenticated: AtomicU64,
    /// Targets waiting for an administrator's OAuth consent, as the last rescan saw them.
    pub needs_authorization: AtomicU64,
}

/// Settings of the rescans the worker runs itself.
#[derive(Debug, Clone, Copy)]
pub struct RescanSchedule {
    pub at_startup: bool,
    /// Zero: no periodic rescan.
    pub every: Duration,
    pub options: ResyncOptions,
}

/// Runs rescans on the schedule, each only while this replica holds the rescan lease.
#[derive(Debug)]
pub struct RescanLeader<'a, L> {
    pub leases: &'a L,
    pub clock: &'a dyn Clock,
    /// This replica, as the lease names it.
    pub owner: &'a str,
    /// Rescan once at once (readiness waits for it).
    pub at_startup: bool,
    /// Then every so often (zero: never), give or take a tenth.
    pub every: Duration,
    pub stats: &'a RescanStats,
}

impl<L: LeaseStore> RescanLeader<'_, L> {
    /// Runs until `stop` (or after the start-up rescan, when there is no periodic one).
    ///
    /// A replica that finds the lease held skips the round and is ready at once. A rescan
    /// whose lease was taken (or could not be renewed in time) stops at its next await: another
    /// replica rescans now. Its writes are not fenced by key versions (a rescan lease's version
    /// says nothing about a key's, and would refuse rows events rewrote meanwhile); what a
    /// stale rescan wrote, the next event or rescan of the key repairs.
    pub async fn run<W, F>(&self, rescan: W, stop: &CancellationToken)
    where
        W: Fn() -> F,
        F: Future<Output = Result<Report, PortError>>,
    {
        let stats = self.stats;
        if !self.at_startup {
            stats.ready.store(true, Ordering::Relaxed);
        }
        let mut first = self.at_startup;
        loop {
            if !first {
                if self.every.is_zero() {
                    return;
                }
                // ±10% jitter so replicas do not rescan in step.
                let jitter = 0.9 + 0.2 * self.clock.jitter();
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(self.every.mul_f64(jitter)) => {}
                }
            }
            first = false;
            let lease = match self
                .leases
                .acquire_lease(RESCAN_LEASE, self.owner, RESCAN_LEASE_TTL)
                .await
            {
                Ok(Some(lease)) => lease,
                Ok(None) => {
                    tracing::info!("Another replica holds the rescan lease; skipping this rescan.");
                    stats.ready.store(true, Ordering::Relaxed);
                    continue;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "Rescan lease unavailable; skipping this rescan.");
                    stats.failures.fetch_add(1, Ordering::Relaxed);
                    stats.ready.store(true, Ordering::Relaxed);
                    continue;
                }
            };
            let result = tokio::select! {
                _ = stop.cancelled() => {
                    let _ = self.leases.release_lease(&lease).await;
                    return;
                }
                r = crate::engine::lease::under(self.leases, self.clock, &lease, guarded(rescan())) => r.and_then(|r| r),
            };
            let _ = self.leases.release_lease(&lease).await;
            match result {
                Ok(report) => self.count(&report),
                Err(e) => {
                    stats.failures.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %e, "Rescan failed or stopped; what it applied before that stands.");
                }
            }
            stats.ready.store(true, Ordering::Relaxed);
        }
    }

    fn count(&self, report: &Report) {
        let stats = self.stats;
        let writes = (report.registered + report.updated + report.deregistered) as u64;
        stats.drift.fetch_add(writes, Ordering::Relaxed);
        let blocked = report
            .results
            .iter()
            .filter(|r| r.skip.as_ref().is_some_and(|s| s.is_blocked_deletion()))
            .count() as u64;
        stats
            .deletions_blocked
            .fetch_add(blocked, Ordering::Relaxed);
        stats.last_blocked.store(blocked, Ordering::Relaxed);
        stats
            .unauthenticated
            .store(report.unauthenticated.len() as u64, Ordering::Relaxed);
        stats
            .needs_authorization
            .store(report.needs_authorization as u64, Ordering::Relaxed);
        stats.runs.fetch_add(1, Ordering::Relaxed);
        stats
            .last_success_unix
            .store(self.clock.now_s(), Ordering::Relaxed);
        tracing::info!(
            registered = report.registered,
            updated = report.updated,
            deregistered = report.deregistered,
            conflicts = report.conflicts,
            failed = report.failed,
            "Rescan finished."
        );
    }
}

/// A rescan that panics is a failed rescan: its lease is released, readiness reported and the
/// next one runs on schedule (a panic would otherwise end the leader for good, silently).
async fn guarded<F>(rescan: F) -> Result<Report, PortError>
where
    F: Future<Output = Result<Report, PortError>>,
{
    use futures::FutureExt;
    std::panic::AssertUnwindSafe(rescan)
        .catch_unwind()
        .await
        .unwrap_or_else(|panic| {
            let why = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            Err(PortError::new(
                "rescan",
                "run",
                registrar_core::ErrorClass::Terminal,
                format!("the rescan panicked: {why}"),
            ))
        })
}

#[cfg(test)]
mod tests {
    //! The leader on a paused clock with the in-memory state: one replica rescans at a time,
    //! the others are ready at once; a rescan whose lease is taken stops; periodic rescans come
    //! at the jittered interval; a stop releases the lease.

    use std::sync::Arc;
    use std::sync::atomic::AtomicU32;

    use registrar_testkit::fixtures::server_entry;
    use registrar_testkit::{MemoryState, TestClock};

    use super::*;
    use crate::resync::report::{Outcome, Status};

    /// A rescan that takes `takes`, registers one entry, and counts its runs and their start
    /// times.
    struct Scripted<'a> {
        clock: &'a TestClock,
        takes: Duration,
        runs: AtomicU32,
        started_s: std::sync::Mutex<Vec<u64>>,
    }

    impl<'a> Scripted<'a> {
        fn new(clock: &'a TestClock, takes: Duration) -> Self {
            Self {
                clock,
                takes,
                runs: AtomicU32::new(0),
                started_s: std::sync::Mutex::default(),
            }
        }

        async fn rescan(&self) -> Result<Report, PortError> {
            self.runs.fetch_add(1, Ordering::Relaxed);
            self.started_s.lock().expect("log").push(self.clock.now_s());
            tokio::time::sleep(self.takes).await;
            let d = server_entry("one", "gw-one");
            Ok(Report::new(
                false,
                vec![Outcome::for_desired(&d, Status::Registered, "")],
                Vec::new(),
                0,
                1,
            ))
        }
    }

    fn leader<'a>(
        state: &'a MemoryState,
        clock: &'a TestClock,
        owner: &'a str,
        (at_startup, every): (bool, Duration),
        stats: &'a RescanStats,
    ) -> RescanLeader<'a, MemoryState> {
        RescanLeader {
            leases: state,
            clock,
            owner,
            at_startup,
            every,
            stats,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn one_replica_rescans_at_start_up_and_the_other_is_ready_at_once() {
        let clock = TestClock::standard();
        let state = MemoryState::new(Arc::new(TestClock::standard()));
        let (sa, sb) = (RescanStats::default(), RescanStats::default());
        // Longer than the lease's ttl: renewed while it runs.
        let (ra, rb) = (
            Scripted::new(&clock, RESCAN_LEASE_TTL * 3),
            Scripted::new(&clock, RESCAN_LEASE_TTL * 3),
        );
        let once = (true, Duration::ZERO);
        let a = leader(&state, &clock, "a", once, &sa);
        let b = leader(&state, &clock, "b", once, &sb);
        let stop = CancellationToken::new();
        let probe = async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            (
                sa.ready.load(Ordering::Relaxed),
                sb.ready.load(Ordering::Relaxed),
            )
        };
        let ((), (), (a_ready, b_ready)) = tokio::join!(
            a.run(|| ra.rescan(), &stop),
            b.run(|| rb.rescan(), &stop),
            probe
        );
        assert!(
            !a_ready,
            "the rescanning replica is ready when its rescan is done"
        );
        assert!(b_ready, "the other is ready at once");
        assert_eq!(ra.runs.load(Ordering::Relaxed), 1);
        assert_eq!(rb.runs.load(Ordering::Relaxed), 0, "one rescan, not two");
        assert!(sa.ready.load(Ordering::Relaxed));
        assert_eq!(sa.runs.load(Ordering::Relaxed), 1);
        assert_eq!(sa.drift.load(Ordering::Relaxed), 1);
        assert_eq!(sa.failures.load(Ordering::Relaxed), 0);
        assert_eq!(sb.runs.load(Ordering::Relaxed), 0);
        // Released when done.
        assert!(
            state
                .acquire_lease(RESCAN_LEASE, "c", RESCAN_LEASE_TTL)
                .await
                .expect("store")
                .is_some()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_rescan_whose_lease_is_taken_stops_and_counts_as_failed() {
        let clock = TestClock::standard();
        let state = MemoryState::new(Arc::new(TestClock::standard()));
        let stats = RescanStats::default();
        let slow = Scripted::new(&clock, Duration::from_secs(3600));
        let a = leader(&state, &clock, "a", (true, Duration::ZERO), &stats);
        let stop = CancellationToken::new();
        let takeover = async {
            tokio::time::sleep(Duration::from_secs(60)).await;
            let held = state
                .acquire_lease(RESCAN_LEASE, "x", RESCAN_LEASE_TTL)
                .await
                .expect("store");
            assert!(held.is_none(), "a holds it");
            // Its lease runs out behind its back (a paused process, a partition) and b takes it.
            state.fail_lease_renewals(true);
            tokio::time::sleep(RESCAN_LEASE_TTL).await;
            state.fail_lease_renewals(false);
            state
                .acquire_lease(RESCAN_LEASE, "b", RESCAN_LEASE_TTL)
                .await
                .expect("store")
                .is_some()
        };
        let ((), b_took_it) = tokio::join!(a.run(|| slow.rescan(), &stop), takeover);
        assert!(b_took_it);
        assert_eq!(
            stats.failures.load(Ordering::Relaxed),
            1,
            "stopped, not finished"
        );
        assert_eq!(stats.runs.load(Ordering::Relaxed), 0);
        assert!(stats.ready.load(Ordering::Relaxed));
        assert!(
            clock.elapsed() < Duration::from_secs(3600),
            "it did not run to its end"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn periodic_rescans_come_at_the_interval_give_or_take_a_tenth() {
        let clock = TestClock::standard();
        let state = MemoryState::new(Arc::new(TestClock::standard()));
        let stats = RescanStats::default();
        let quick = Scripted::new(&clock, Duration::from_secs(1));
        let every = Duration::from_secs(600);
        let a = leader(&state, &clock, "a", (false, every), &stats);
        assert!(!stats.ready.load(Ordering::Relaxed));
        let stop = CancellationToken::new();
        let for_a_day = async {
            tokio::time::sleep(Duration::from_secs(86_400)).await;
            stop.cancel();
        };
        tokio::join!(a.run(|| quick.rescan(), &stop), for_a_day);
        let starts = quick.started_s.lock().expect("log").clone();
        assert!(
            (130..=160).contains(&starts.len()),
            "{} rescans",
            starts.len()
        );
        let gaps: Vec<u64> = starts.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(gaps.iter().all(|g| (540..=661).contains(g)), "{gaps:?}");
        assert!(
            gaps.iter().any(|g| *g != gaps[0]),
            "jittered, so replicas do not rescan in step: {gaps:?}"
        );
        assert_eq!(stats.runs.load(Ordering::Relaxed), starts.len() as u64);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stop_during_a_rescan_releases_its_lease() {
        let clock = TestClock::standard();
        let state = MemoryState::new(Arc::new(TestClock::standard()));
        let stats = RescanStats::default();
        let slow = Scripted::new(&clock, Duration::from_secs(3600));
        let a = leader(&state, &clock, "a", (true, Duration::ZERO), &stats);
        let stop = CancellationToken::new();
        let stopper = async {
            tokio::time::sleep(Duration::from_secs(30)).await;
            stop.cancel();
        };
        tokio::join!(a.run(|| slow.rescan(), &stop), stopper);
        assert_eq!(clock.elapsed(), Duration::from_secs(30));
        assert!(
            state
                .acquire_lease(RESCAN_LEASE, "b", RESCAN_LEASE_TTL)
                .await
                .expect("store")
                .is_some(),
            "another replica can rescan at once"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_rescan_that_panics_is_a_failed_rescan_and_the_next_one_runs() {
        let clock = TestClock::standard();
        let state = MemoryState::new(Arc::new(TestClock::standard()));
        let stats = RescanStats::default();
        let runs = AtomicU32::new(0);
        let a = leader(
            &state,
            &clock,
            "a",
            (true, Duration::from_secs(600)),
            &stats,
        );
        let stop = CancellationToken::new();
        let rescan = || async {
            if runs.fetch_add(1, Ordering::Relaxed) == 0 {
                panic!("a bug");
            }
            Ok(Report::new(false, Vec::new(), Vec::new(), 0, 0))
        };
        let for_a_while = async {
            tokio::time::sleep(Duration::from_secs(700)).await;
            stop.cancel();
        };
        tokio::join!(a.run(rescan, &stop), for_a_while);
        assert_eq!(runs.load(Ordering::Relaxed), 2, "the next rescan ran");
        assert_eq!(stats.failures.load(Ordering::Relaxed), 1);
        assert_eq!(stats.runs.load(Ordering::Relaxed), 1);
        assert!(stats.ready.load(Ordering::Relaxed));
    }
}
