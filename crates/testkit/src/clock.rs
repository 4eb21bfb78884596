//! A clock tests drive: wall and monotonic time follow tokio's clock (so `tokio::time::pause`
//! and `advance` move it), and jitter comes from a seeded generator (so runs repeat).

use std::sync::Mutex;
use std::time::Duration;

use registrar_core::ports::Clock;

/// Time from tokio's clock, starting at a chosen wall time.
#[derive(Debug)]
pub struct TestClock {
    origin: tokio::time::Instant,
    wall_origin_ms: u64,
    seed: Mutex<u64>,
}

impl TestClock {
    /// A clock whose wall time starts at `wall_origin_ms` (Unix ms) and whose jitter sequence
    /// is fixed by `seed`.
    #[allow(clippy::disallowed_methods)] // the one read of tokio's clock, which tests pause
    pub fn new(wall_origin_ms: u64, seed: u64) -> Self {
        Self {
            origin: tokio::time::Instant::now(),
            wall_origin_ms,
            seed: Mutex::new(seed.max(1)),
        }
    }

    /// 2026-11-29T00:00:00Z, seed 1.
    pub fn standard() -> Self {
        Self::new(1_795_910_400_000, 1)
    }
}

impl Clock for TestClock {
    fn now_ms(&self) -> u64 {
        self.wall_origin_ms + self.elapsed().as_millis() as u64
    }

    #[allow(clippy::disallowed_methods)]
    fn elapsed(&self) -> Duration {
        tokio::time::Instant::now().duration_since(self.origin)
    }

    fn jitter(&self) -> f64 {
        // xorshift64: enough spread for backoff jitter, and the same every run.
        let mut x = self
            .seed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *x ^= *x << 13;
        *x ^= *x >> 7;
        *x ^= *x << 17;
        (*x % 10_000) as f64 / 10_000.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn time_follows_the_paused_clock_and_jitter_repeats() {
        let clock = TestClock::new(1_000, 7);
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(clock.now_ms(), 6_000);
        assert_eq!(clock.elapsed(), Duration::from_secs(5));
        let again = TestClock::new(0, 7);
        let a: Vec<f64> = (0..4).map(|_| clock.jitter()).collect();
        let b: Vec<f64> = (0..4).map(|_| again.jitter()).collect();
        assert_eq!(a, b);
        assert!(a.iter().all(|j| (0.0..1.0).contains(j)));
    }
}
