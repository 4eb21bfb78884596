//! SQS, modelled in memory: a standard queue (no per-action request-rate quota; at most 120,000
//! messages in flight), receives of at most 10 messages that long-poll up to 20 s, a round trip
//! per call, delayed copies, visibility backoff, and the redrive policy's `maxReceiveCount`
//! (12, as the stack sets it) moving a message to the dead-letter queue.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use registrar_core::identity::ResourceKey;
use registrar_core::ports::Clock;
use registrar_testkit::TestClock;
use registrar_worker::engine::ending::Waited;
use tokio::sync::Notify;

use super::quota::Tally;

/// Messages one receive returns at most (the SQS limit).
pub const BATCH: usize = 10;
/// Messages a standard queue lets be in flight at once.
pub const IN_FLIGHT_LIMIT: usize = 120_000;
/// The stack's redrive policy.
pub const MAX_RECEIVE_COUNT: u32 = 12;
const LONG_POLL: Duration = Duration::from_secs(20);

/// One message: the resource its event names, when SQS took it, and its attributes.
#[derive(Debug, Clone)]
pub struct Message {
    pub key: ResourceKey,
    pub sent_at_ms: u64,
    /// When the event's first message was queued (a re-check copy keeps its original's).
    pub first_queued_ms: u64,
    pub receive_count: u32,
    /// Where a re-check copy's waiting stands.
    pub waited: Option<Waited>,
}

#[derive(Debug, Default)]
struct Inner {
    visible: VecDeque<Message>,
    /// Hidden until (monotonic ms, then a sequence number).
    hidden: BTreeMap<(u64, u64), Message>,
    seq: u64,
    in_flight: usize,
}

/// The queue every worker receives from.
#[derive(Debug)]
pub struct Queue {
    inner: Mutex<Inner>,
    /// Messages not yet deleted or dead-lettered (visible, hidden or in flight).
    outstanding: AtomicU64,
    pub dead_lettered: AtomicU64,
    latency: Duration,
    clock: Arc<TestClock>,
    tally: Arc<Tally>,
    arrived: Notify,
}

impl Queue {
    pub fn new(latency: Duration, clock: Arc<TestClock>, tally: Arc<Tally>) -> Self {
        Self {
            inner: Mutex::default(),
            outstanding: AtomicU64::new(0),
            dead_lettered: AtomicU64::new(0),
            latency,
            clock,
            tally,
            arrived: Notify::new(),
        }
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn now_ms(&self) -> u64 {
        self.clock.elapsed().as_millis() as u64
    }

    /// The burst: every message at once (sent with SendMessageBatch, 10 a call).
    pub fn send_all(&self, messages: Vec<Message>) {
        let n = messages.len();
        for _ in 0..n.div_ceil(BATCH) {
            self.tally.call("SendMessageBatch");
        }
        self.inner().visible.extend(messages);
        self.outstanding.fetch_add(n as u64, Ordering::Relaxed);
        self.arrived.notify_waiters();
    }

    pub fn outstanding(&self) -> u64 {
        self.outstanding.load(Ordering::Relaxed)
    }

    fn hide(&self, m: Message, for_: Duration) {
        let at = self.now_ms() + for_.as_millis() as u64;
        let mut inner = self.inner();
        inner.seq += 1;
        let seq = inner.seq;
        inner.hidden.insert((at, seq), m);
    }

    /// Up to `max` (at most 10) messages, long-polling up to 20 s while none is visible; empty
    /// when the wait ran out or nothing is left at all.
    pub async fn receive(&self, max: usize) -> Vec<Message> {
        self.tally.call("ReceiveMessage");
        tokio::time::sleep(self.latency).await;
        let mut waited = Duration::ZERO;
        loop {
            let (got, next_hidden) = self.take(max.min(BATCH));
            if !got.is_empty() || self.outstanding() == 0 || waited >= LONG_POLL {
                return got;
            }
            let mut wait = LONG_POLL - waited;
            if let Some(at) = next_hidden {
                wait = wait.min(Duration::from_millis(
                    at.saturating_sub(self.now_ms()).max(1),
                ));
            }
            let started = self.clock.elapsed();
            tokio::select! {
                _ = self.arrived.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
            waited += self.clock.elapsed() - started;
        }
    }

    /// Visible messages (hidden ones whose time came included), each received once more; those
    /// past `maxReceiveCount` go to the dead-letter queue instead.
    fn take(&self, max: usize) -> (Vec<Message>, Option<u64>) {
        let now = self.now_ms();
        let mut inner = self.inner();
        while let Some(entry) = inner.hidden.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let m = entry.remove();
            inner.visible.push_back(m);
        }
        let mut got = Vec::new();
        while got.len() < max && inner.in_flight < IN_FLIGHT_LIMIT {
            let Some(mut m) = inner.visible.pop_front() else {
                break;
            };
            m.receive_count += 1;
            if m.receive_count > MAX_RECEIVE_COUNT {
                self.dead_lettered.fetch_add(1, Ordering::Relaxed);
                self.outstanding.fetch_sub(1, Ordering::Relaxed);
                continue;
            }
            inner.in_flight += 1;
            got.push(m);
        }
        let next = inner.hidden.keys().next().map(|(at, _)| *at);
        (got, next)
    }

    fn settle(&self) {
        self.inner().in_flight -= 1;
    }

    /// A processed message is deleted (the worker batches deletes: see [`Deletes`]).
    pub fn delete(&self) {
        self.settle();
        self.outstanding.fetch_sub(1, Ordering::Relaxed);
        if self.outstanding() == 0 {
            self.arrived.notify_waiters();
        }
    }

    /// A transient failure: hidden for `after`, then received again (ChangeMessageVisibility).
    pub async fn retry(&self, m: Message, after: Duration) {
        self.tally.call("ChangeMessageVisibility");
        tokio::time::sleep(self.latency).await;
        self.settle();
        self.hide(m, after);
    }

    /// A resource not READY yet: a delayed copy (SendMessage) carrying where the waiting
    /// stands, the original deleted.
    pub async fn recheck(&self, m: Message, delay: Duration, waited: Waited) {
        self.tally.call("SendMessage");
        tokio::time::sleep(self.latency).await;
        self.settle();
        let copy = Message {
            receive_count: 0,
            waited: Some(waited),
            sent_at_ms: self.clock.now_ms(),
            ..m
        };
        self.hide(copy, delay);
    }

    /// Given up on: sent to the dead-letter queue, the original deleted.
    pub async fn dead_letter(&self) {
        self.tally.call("SendMessage (DLQ)");
        tokio::time::sleep(self.latency).await;
        self.dead_lettered.fetch_add(1, Ordering::Relaxed);
        self.delete();
    }

    /// The visibility heartbeat of a message held `held`, renewed every third of `visibility`.
    pub fn heartbeats(&self, held: Duration, visibility: Duration) {
        for _ in 0..(held.as_millis() / (visibility / 3).as_millis().max(1)) {
            self.tally.call("ChangeMessageVisibility");
        }
    }

    /// DeleteMessageBatch calls: one per 10 deletions of a worker (see [`Deletes`]).
    pub fn delete_batch_call(&self) {
        self.tally.call("DeleteMessageBatch");
    }
}

/// One worker's pending deletions, sent 10 to a DeleteMessageBatch as the consumer does.
#[derive(Debug, Default)]
pub struct Deletes(AtomicU64);

impl Deletes {
    pub fn add(&self, queue: &Queue) {
        queue.delete();
        if self.0.fetch_add(1, Ordering::Relaxed) % BATCH as u64 == BATCH as u64 - 1 {
            queue.delete_batch_call();
        }
    }

    pub fn flush(&self, queue: &Queue) {
        if !self.0.load(Ordering::Relaxed).is_multiple_of(BATCH as u64) {
            queue.delete_batch_call();
        }
    }
}
