//! The wall clock, read in one place: Unix seconds for token expiries and refresh times (what
//! DynamoDB stores and JWTs carry). Durations and deadlines use tokio's clock instead, so tests
//! can pause it.

use std::time::{SystemTime, UNIX_EPOCH};

/// Unix seconds now (0 if the system clock is before 1970).
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
