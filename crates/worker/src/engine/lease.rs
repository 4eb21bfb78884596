//! Work under a lease: taken with a few tries, renewed while the work runs, and the work
//! dropped (stopped at its next await, before its next write) once the lease is lost. The
//! writes themselves are fenced by the lease's version (the state store's job, see
//! [`LeaseStore::fenced`]), for a holder that stalls between two awaits.

use std::future::Future;
use std::time::Duration;

use registrar_core::PortError;
use registrar_core::ports::{Acquired, Clock, Lease, LeaseStore};

/// Takes `name` for `owner`, trying five times over two seconds while another holder has it;
/// `Ok(None)` when it is still held then.
pub async fn acquire<S: LeaseStore>(
    state: &S,
    name: &str,
    owner: &str,
    ttl: Duration,
) -> Result<Option<Lease>, PortError> {
    Ok(acquire_unless_settled(state, name, owner, ttl, None)
        .await?
        .taken())
}

/// As [`acquire`], but concluded without the lease once it shows a settled run begun at or
/// after `since_ms` (see [`LeaseStore::acquire_lease_unless_settled`]): at once, or while
/// waiting for a holder whose run settles.
pub async fn acquire_unless_settled<S: LeaseStore>(
    state: &S,
    name: &str,
    owner: &str,
    ttl: Duration,
    since_ms: Option<u64>,
) -> Result<Acquired, PortError> {
    for attempt in 1..=5u32 {
        match state
            .acquire_lease_unless_settled(name, owner, ttl, since_ms)
            .await?
        {
            Acquired::Held if attempt < 5 => {
                tokio::time::sleep(Duration::from_millis(200) * attempt).await;
            }
            done => return Ok(done),
        }
    }
    Ok(Acquired::Held)
}

/// Runs `work` while `lease` holds, renewing it every sixth of its ttl. A renewal refused (the
/// lease was taken or released) or failing once the lease may have run out ends the work with
/// a transient `lease` error; a failing renewal is tried again while the lease surely holds.
pub async fn under<S: LeaseStore, T>(
    state: &S,
    clock: &dyn Clock,
    lease: &Lease,
    work: impl Future<Output = T>,
) -> Result<T, PortError> {
    let renew = async {
        loop {
            tokio::time::sleep(lease.ttl / 6).await;
            match state.renew_lease(lease).await {
                Ok(true) => {}
                Ok(false) => return lease.lost("another holder took it, or it was released"),
                Err(e) if lease.surely_held(clock.elapsed()) => {
                    tracing::warn!(lease = %lease.name, error = %e, "Lease renewal failed; trying again.");
                }
                Err(e) => return lease.lost(&format!("it could not be renewed in time: {e}")),
            }
        }
    };
    tokio::select! {
        // A lost lease wins a tie: work woken together with a failed renewal does not go on.
        biased;
        e = renew => Err(e),
        t = work => Ok(t),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    use registrar_core::ErrorClass;
    use registrar_testkit::{MemoryState, TestClock};

    use super::*;

    const TTL: Duration = Duration::from_secs(3);

    fn setup() -> (MemoryState, Arc<TestClock>) {
        let clock = Arc::new(TestClock::standard());
        (MemoryState::new(clock.clone()), clock)
    }

    #[tokio::test(start_paused = true)]
    async fn work_that_outlasts_many_ttls_keeps_its_lease_while_it_runs() {
        let (state, clock) = setup();
        let lease = acquire(&state, "k", "a", TTL)
            .await
            .expect("store")
            .expect("free");
        let work = async {
            tokio::time::sleep(TTL * 10).await;
            42
        };
        let other = async {
            tokio::time::sleep(TTL * 5).await;
            state.acquire_lease("k", "b", TTL).await.expect("store")
        };
        let (done, taken) = tokio::join!(under(&state, &*clock, &lease, work), other);
        assert_eq!(done.expect("held throughout"), 42);
        assert!(taken.is_none(), "renewed, so never free for another holder");
    }

    #[tokio::test(start_paused = true)]
    async fn a_lease_taken_meanwhile_stops_the_work_before_its_next_step() {
        let (state, clock) = setup();
        let lease = acquire(&state, "k", "a", TTL)
            .await
            .expect("store")
            .expect("free");
        let steps = AtomicU32::new(0);
        let work = async {
            loop {
                tokio::time::sleep(Duration::from_millis(100)).await;
                steps.fetch_add(1, Ordering::Relaxed);
            }
        };
        let takeover = async {
            tokio::time::sleep(Duration::from_secs(2)).await;
            // It is released behind the holder's back and another holder takes it.
            state.release_lease(&lease).await.expect("store");
            state
                .acquire_lease("k", "b", TTL)
                .await
                .expect("store")
                .expect("free")
        };
        let (stopped, newer) = tokio::join!(under(&state, &*clock, &lease, work), takeover);
        let e = stopped.expect_err("the work stops");
        assert_eq!(e.class, ErrorClass::Transient);
        assert!(e.to_string().contains("lease lost"), "{e}");
        assert!(newer.version > lease.version);
        // The next renewal (every half second) found it gone: at most that many more steps.
        let n = steps.load(Ordering::Relaxed);
        assert!((20..=25).contains(&n), "{n} steps");
    }

    #[tokio::test(start_paused = true)]
    async fn a_store_that_cannot_renew_stops_the_work_once_the_lease_may_have_run_out() {
        let (state, clock) = setup();
        let lease = acquire(&state, "k", "a", TTL)
            .await
            .expect("store")
            .expect("free");
        state.fail_lease_renewals(true);
        let started = clock.elapsed();
        let e = under(&state, &*clock, &lease, std::future::pending::<()>())
            .await
            .expect_err("stopped");
        assert!(
            e.to_string().contains("could not be renewed in time"),
            "{e}"
        );
        // Failures were tolerated while the lease surely held (two thirds of its ttl).
        let held = clock.elapsed() - started;
        assert!(held >= TTL * 2 / 3 && held <= TTL, "{held:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn taking_a_held_lease_waits_briefly_then_says_it_is_held() {
        let (state, clock) = setup();
        let _held = state
            .acquire_lease("k", "a", Duration::from_secs(60))
            .await
            .expect("store");
        let started = clock.elapsed();
        assert!(
            acquire(&state, "k", "b", TTL)
                .await
                .expect("store")
                .is_none()
        );
        assert_eq!(clock.elapsed() - started, Duration::from_millis(200 * 10));
        // Once it runs out, it is taken at the first try.
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert!(
            acquire(&state, "k", "b", TTL)
                .await
                .expect("store")
                .is_some()
        );
    }
}
