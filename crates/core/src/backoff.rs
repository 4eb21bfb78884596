//! Retry and re-check delays, as pure arithmetic (the caller supplies the jitter so tests are
//! deterministic).

use std::time::Duration;

/// Exponential delays: `base * 2^(attempt-1)`, capped, with `jitter` in `0.0..=1.0` taking off
/// up to half of the delay (so concurrent retries spread out, and the cap is never exceeded).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// The delay after the first failure.
    pub base: Duration,
    /// No delay is longer.
    pub cap: Duration,
}

impl Backoff {
    /// The delay before attempt `attempt + 1` (attempt 1 is the first failure).
    pub fn delay(self, attempt: u32, jitter: f64) -> Duration {
        let exp = attempt.saturating_sub(1).min(30);
        let raw = self.base.saturating_mul(1u32 << exp).min(self.cap);
        let jitter = jitter.clamp(0.0, 1.0);
        raw.mul_f64(1.0 - jitter / 2.0)
    }

    /// The shortest time `retries` retries can span (every delay at its most jittered): how long
    /// an outage a message outlives before SQS dead-letters it, with `retries + 1` receives.
    pub fn window(self, retries: u32) -> Duration {
        (1..=retries).map(|a| self.delay(a, 1.0)).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_retry_window_is_the_sum_of_the_shortest_delays() {
        let b = Backoff {
            base: Duration::from_secs(5),
            cap: Duration::from_secs(300),
        };
        // 2.5 + 5 + 10 + 20 + 40 + 80 + 150 + 150 + 150 + 150 + 150 s.
        assert_eq!(b.window(11), Duration::from_millis(907_500));
        assert_eq!(b.window(0), Duration::ZERO);
    }

    #[test]
    fn delays_grow_and_are_capped() {
        let b = Backoff {
            base: Duration::from_secs(2),
            cap: Duration::from_secs(60),
        };
        let d: Vec<u64> = (1..=7).map(|a| b.delay(a, 0.0).as_secs()).collect();
        assert_eq!(d, [2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(b.delay(0, 0.0), Duration::from_secs(2));
        assert_eq!(b.delay(u32::MAX, 0.0), Duration::from_secs(60));
        assert_eq!(
            b.delay(3, 1.0),
            Duration::from_secs(4),
            "full jitter halves the delay"
        );
        assert!(b.delay(10, 0.5) <= b.cap);
    }
}
