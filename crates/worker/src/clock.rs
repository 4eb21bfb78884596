//! The system clock: the one adapter that reads wall time and monotonic time (everything else
//! asks the [`Clock`] port, so tests can pause and drive time).

use std::hash::{BuildHasher, Hasher};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use registrar_core::ports::Clock;

/// Wall time from the system, monotonic time from tokio (which tests may pause), jitter from
/// the std hasher's random seed.
#[derive(Debug)]
pub struct SystemClock {
    origin: tokio::time::Instant,
}

impl SystemClock {
    /// A clock whose monotonic time starts now.
    #[allow(clippy::disallowed_methods)] // the adapter of the Clock port
    pub fn new() -> Self {
        Self {
            origin: tokio::time::Instant::now(),
        }
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for SystemClock {
    #[allow(clippy::disallowed_methods)] // the adapter of the Clock port
    fn now_ms(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }

    #[allow(clippy::disallowed_methods)] // the adapter of the Clock port
    fn elapsed(&self) -> Duration {
        tokio::time::Instant::now().duration_since(self.origin)
    }

    fn jitter(&self) -> f64 {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(self.now_ms());
        (h.finish() % 10_000) as f64 / 10_000.0
    }
}

/// Unix seconds now, for the edges (command output, the registry's own token cache): the
/// engine reads time through the [`Clock`] port it is given.
pub fn now() -> u64 {
    SystemClock::new().now_s()
}
