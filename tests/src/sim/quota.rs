//! What a peer allows: a server-side token bucket that refuses (throttles) a request beyond its
//! rate instead of queueing it, and the tallies of calls and throttles each model keeps.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

/// `rate` units a second on average and `burst` at once; a request past that is refused. The
/// theoretical-arrival-time form of a token bucket, as [`registrar_worker::pace`] keeps it on
/// the client's side, but refusing instead of waiting.
#[derive(Debug)]
pub struct Quota {
    interval: Duration,
    tolerance: Duration,
    tat: Duration,
}

impl Quota {
    pub fn new(rate: f64, burst: f64) -> Self {
        let interval = Duration::from_secs_f64(1.0 / rate);
        Self {
            interval,
            tolerance: interval.mul_f64((burst - 1.0).max(0.0)),
            tat: Duration::ZERO,
        }
    }

    /// Whether a request of `units` arriving at `now` (monotonic) is served; it is charged only
    /// if it is.
    pub fn admit(&mut self, now: Duration, units: f64) -> bool {
        let start = self.tat.max(now);
        if start.saturating_sub(self.tolerance) > now {
            return false;
        }
        self.tat = start + self.interval.mul_f64(units);
        true
    }
}

/// Calls and throttles by operation, and units charged.
#[derive(Debug, Default)]
pub struct Tally(Mutex<BTreeMap<&'static str, Count>>);

/// One operation's figures.
#[derive(Debug, Default, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub struct Count {
    /// Requests sent (each attempt of a retried call, each page of a listing).
    pub calls: u64,
    /// Requests the quota refused.
    pub throttled: u64,
    /// Calls that failed for good after the SDK's attempts.
    pub failed: u64,
}

impl Tally {
    fn with(&self, op: &'static str, f: impl FnOnce(&mut Count)) {
        f(self
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(op)
            .or_default());
    }

    pub fn call(&self, op: &'static str) {
        self.with(op, |c| c.calls += 1);
    }

    pub fn throttled(&self, op: &'static str) {
        self.with(op, |c| c.throttled += 1);
    }

    pub fn failed(&self, op: &'static str) {
        self.with(op, |c| c.failed += 1);
    }

    pub fn snapshot(&self) -> BTreeMap<String, Count> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(k, v)| ((*k).to_owned(), *v))
            .collect()
    }
}

/// A repeatable stream of numbers in `0.0..1.0` (xorshift64), for event mixes and retry jitter.
#[derive(Debug)]
pub struct Dice(Mutex<u64>);

impl Dice {
    pub fn new(seed: u64) -> Self {
        Self(Mutex::new(seed.max(1)))
    }

    pub fn next_u64(&self) -> u64 {
        let mut x = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        *x ^= *x << 13;
        *x ^= *x >> 7;
        *x ^= *x << 17;
        *x
    }

    pub fn unit(&self) -> f64 {
        (self.next_u64() % 1_000_000) as f64 / 1_000_000.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quota_serves_its_burst_then_its_rate_and_refuses_the_rest() {
        let mut q = Quota::new(10.0, 10.0);
        let t0 = Duration::from_secs(100);
        assert_eq!((0..20).filter(|_| q.admit(t0, 1.0)).count(), 10);
        // One more every 100 ms.
        assert!(!q.admit(t0 + Duration::from_millis(50), 1.0));
        assert!(q.admit(t0 + Duration::from_millis(100), 1.0));
        let served = (0..=1_000)
            .filter(|i| q.admit(t0 + Duration::from_millis(100 + 10 * i), 1.0))
            .count();
        assert_eq!(served, 100, "10 a second over 10 s");
    }
}
