//! Messages a finished reconcile already covers. A reconcile reads AgentCore and the registry as
//! they are when it starts, so a message queued before a settled reconcile of its key began
//! announces nothing that reconcile did not see (invariant 1: events only name a resource). Such
//! a message is deleted without another round of reads: a burst of repeated events for the same
//! resources drains at the cost of one reconcile per resource, not one per event.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use registrar_core::identity::ResourceKey;

/// A reconcile covers a message only if it started this long after SQS accepted the message:
/// room for clock skew between SQS and this host and for AgentCore's read-after-write lag (the
/// API call behind an event happened before the event was even queued).
pub const MARGIN_MS: u64 = 2_000;
/// Marks older than this are forgotten: a message queued that long before is rare (a retry, a
/// replay) and is simply reconciled.
const KEEP_MS: u64 = 15 * 60 * 1_000;
/// How often the marks are pruned.
const PRUNE_EVERY_MS: u64 = 60 * 1_000;

/// How far this host's clock may run ahead of SQS's, from the queue's own timestamps. A mark is
/// compared with SQS's `SentTimestamp`, so a clock running ahead by more than [`MARGIN_MS`]
/// would date a reconcile after messages it never saw, and cover them; every replica reads the
/// marks. Each message received gives a bound: the time here when it arrived less SQS's time
/// when it first handed it out (or sent it) is the clocks' difference plus the time in
/// between, never less. Marks are dated on SQS's clock by taking the smallest bound of the last
/// few seconds off a reconcile's start (only recent ones: a clock stepped forward makes older
/// bounds too small); with no recent bound, nothing is dated and nothing marked.
#[derive(Debug, Default)]
pub struct Ahead {
    window: Mutex<AheadWindow>,
}

#[derive(Debug, Default)]
struct AheadWindow {
    started_ms: u64,
    current: Option<u64>,
    previous: Option<u64>,
}

/// How long a window of bounds lasts; a bound is used for one to two windows.
const AHEAD_WINDOW_MS: u64 = 10_000;

impl Ahead {
    /// A message SQS handed out (first, or sent) at `handed_out_ms` on its clock arrived here
    /// at `now_ms`.
    pub fn sample(&self, handed_out_ms: u64, now_ms: u64) {
        let bound = now_ms.saturating_sub(handed_out_ms);
        let mut w = self.lock();
        w.roll(now_ms);
        w.current = Some(w.current.map_or(bound, |b| b.min(bound)));
    }

    /// `now_ms` (this host's clock) on SQS's clock, never later; `None` without a recent bound.
    pub fn on_sqs_clock(&self, now_ms: u64) -> Option<u64> {
        let mut w = self.lock();
        w.roll(now_ms);
        let bound = match (w.current, w.previous) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }?;
        Some(now_ms.saturating_sub(bound))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, AheadWindow> {
        self.window
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl AheadWindow {
    fn roll(&mut self, now_ms: u64) {
        let age = now_ms.saturating_sub(self.started_ms);
        if age >= AHEAD_WINDOW_MS {
            self.previous = if age < 2 * AHEAD_WINDOW_MS {
                self.current
            } else {
                None
            };
            self.current = None;
            self.started_ms = now_ms;
        }
    }
}

/// When the last settled reconcile of each key started (epoch milliseconds).
#[derive(Debug, Default)]
pub struct Freshness {
    marks: Mutex<HashMap<ResourceKey, u64>>,
    pruned_at_ms: AtomicU64,
}

impl Freshness {
    /// A reconcile of `key` that started at `started_ms` converged (or had nothing to do).
    pub fn mark(&self, key: &ResourceKey, started_ms: u64) {
        let mut marks = self.lock();
        let mark = marks.entry(key.clone()).or_default();
        *mark = (*mark).max(started_ms);
        if started_ms.saturating_sub(self.pruned_at_ms.load(Ordering::Relaxed)) > PRUNE_EVERY_MS {
            marks.retain(|_, at| started_ms.saturating_sub(*at) < KEEP_MS);
            self.pruned_at_ms.store(started_ms, Ordering::Relaxed);
        }
    }

    /// True when every key of a message queued at `sent_at_ms` was reconciled, to a settled
    /// end, by a run that started at least [`MARGIN_MS`] later.
    pub fn covers(&self, keys: &[ResourceKey], sent_at_ms: Option<u64>) -> bool {
        let Some(sent) = sent_at_ms else {
            return false;
        };
        let marks = self.lock();
        !keys.is_empty()
            && keys
                .iter()
                .all(|k| marks.get(k).is_some_and(|&at| at >= sent + MARGIN_MS))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ResourceKey, u64>> {
        self.marks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use registrar_core::identity::ResourceKind;

    fn key(id: &str) -> ResourceKey {
        ResourceKey {
            kind: ResourceKind::Gateway,
            account: "123456789012".into(),
            region: "us-east-1".into(),
            id: id.into(),
            gateway_id: None,
        }
    }

    #[test]
    fn a_message_is_covered_only_by_a_reconcile_that_started_well_after_it_was_queued() {
        let fresh = Freshness::default();
        let sent = 1_000_000;
        assert!(!fresh.covers(&[key("a")], Some(sent)), "never reconciled");
        fresh.mark(&key("a"), sent + MARGIN_MS - 1);
        assert!(!fresh.covers(&[key("a")], Some(sent)), "inside the margin");
        fresh.mark(&key("a"), sent + MARGIN_MS);
        assert!(fresh.covers(&[key("a")], Some(sent)));
        assert!(
            !fresh.covers(&[key("a")], Some(sent + 1)),
            "queued after that run began"
        );
        assert!(!fresh.covers(&[key("a")], None), "no SentTimestamp");
    }

    #[test]
    fn every_key_of_a_message_must_be_covered() {
        let fresh = Freshness::default();
        fresh.mark(&key("a"), 10_000);
        assert!(!fresh.covers(&[key("a"), key("b")], Some(1)));
        fresh.mark(&key("b"), 10_000);
        assert!(fresh.covers(&[key("a"), key("b")], Some(1)));
        assert!(!fresh.covers(&[], Some(1)), "a message without keys");
    }

    #[test]
    fn an_older_mark_never_replaces_a_newer_one_and_old_marks_are_forgotten() {
        let fresh = Freshness::default();
        fresh.mark(&key("a"), 50_000);
        fresh.mark(&key("a"), 20_000);
        assert!(fresh.covers(&[key("a")], Some(40_000)));
        let later = 50_000 + KEEP_MS + PRUNE_EVERY_MS + 1;
        fresh.mark(&key("b"), later);
        assert!(!fresh.covers(&[key("a")], Some(0)), "pruned");
        assert!(fresh.covers(&[key("b")], Some(later - MARGIN_MS)));
    }

    #[test]
    fn a_clock_running_ahead_of_sqs_dates_its_marks_back_by_the_smallest_recent_bound() {
        let ahead = Ahead::default();
        assert_eq!(
            ahead.on_sqs_clock(100_000),
            None,
            "no bound yet: nothing is dated"
        );
        // This clock runs 5 s ahead: messages arrive 5.2 s and 5.05 s "after" SQS handed them
        // out; one sent long ago bounds nothing new.
        ahead.sample(1_000_000, 1_005_200);
        ahead.sample(1_001_000, 1_006_050);
        ahead.sample(900_000, 1_006_100);
        assert_eq!(ahead.on_sqs_clock(1_008_000), Some(1_008_000 - 5_050));
        // Stepped forward by another 10 s: once the old bounds age out, the new ones count.
        let later = 1_006_050 + 2 * AHEAD_WINDOW_MS;
        ahead.sample(later - 15_040, later);
        assert_eq!(ahead.on_sqs_clock(later), Some(later - 15_040));
        // No bound for two windows: nothing is dated.
        assert_eq!(ahead.on_sqs_clock(later + 2 * AHEAD_WINDOW_MS), None);
        // A clock behind SQS's: nothing is taken off.
        let behind = Ahead::default();
        behind.sample(2_000_000, 1_999_000);
        assert_eq!(behind.on_sqs_clock(2_000_500), Some(2_000_500));
    }
}
