//! The SQS consumer of `registrar worker`: every received message ends processed-and-deleted,
//! waiting (a delayed copy), retried (visibility backoff, counted toward the DLQ), or
//! dead-lettered with its reason (design invariants 5 and 8).

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use registrar_core::backoff::Backoff;
use registrar_core::identity::ResourceKey;
use registrar_core::ports::{Acquired, AgentCore, Clock, Lease, Registry, StateStore};
use registrar_core::{ErrorClass, PortError};
use registrar_ingest::event::{EventMeta, ParseOptions, Rejection, Verdict, parse};
use registrar_ingest::sqs::{Queue, Received, attr};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::aws::fleet::Fleet;
use crate::engine::ending::{Ending, EndingPolicy, Parsed, Waited, ending};
use crate::engine::{KeyOutcome, ReconcileOptions, WriteLog, lease, reconcile};
use crate::fresh::{Ahead, Freshness};
use crate::gate::KeyGate;

/// Settings of the consumer.
#[derive(Debug, Clone, Copy)]
pub struct ConsumerConfig {
    /// Messages processed at once.
    pub concurrency: usize,
    /// Visibility timeout while a message is held; the heartbeat renews it every third of it.
    pub visibility: Duration,
    /// Long-poll wait of one receive (at most 20 s).
    pub receive_wait: Duration,
    /// Re-check delays of a resource still CREATING/UPDATING (SQS caps a delay at 15 min).
    pub wait_backoff: Backoff,
    /// Give up waiting (dead-letter) after this long.
    pub max_wait: Duration,
    /// Backoff of transient failures, by the message's receive count.
    pub retry_backoff: Backoff,
    /// On shutdown, in-flight work may finish for this long; then it is released.
    pub shutdown_grace: Duration,
    /// One key's reconcile ends (transient failure) after this long, whatever it waits on.
    pub reconcile_deadline: Duration,
    pub parse: ParseOptions,
    pub reconcile: ReconcileOptions,
}

/// Counters of the consumer (read by `/metrics`).
#[derive(Debug, Default)]
pub struct ConsumerStats {
    pub received: AtomicU64,
    pub done: AtomicU64,
    pub ignored: AtomicU64,
    /// Deleted unread: a settled reconcile of their keys began after they were queued.
    pub superseded: AtomicU64,
    /// Keys concluded without a reconcile: the lease, once taken, showed a settled reconcile
    /// (another replica's) that began after the message was queued.
    pub settled_at_lease: AtomicU64,
    /// Keys concluded without a reconcile of their own: a run of the key in this worker, going
    /// when the message arrived, settled a reconcile that began after the message was queued.
    pub covered_by_running: AtomicU64,
    pub waiting: AtomicU64,
    pub retried: AtomicU64,
    pub dead_lettered: AtomicU64,
    pub released: AtomicU64,
    pub delete_failures: AtomicU64,
    /// Shared with rescans, which yield the registry to event work (see [`crate::resync::scan::Progress`]).
    pub in_flight: Arc<AtomicU64>,
    /// Milliseconds from the event's time to when its message was received, last seen.
    pub last_queue_lag_ms: AtomicU64,
    /// Unix milliseconds when the receive loop last went round (`/healthz` reads it); 0 before
    /// it starts.
    pub last_tick_ms: AtomicU64,
    /// Key reconciles by result: done, waiting, failed.
    pub reconciles: [AtomicU64; 3],
    /// Failed reconciles by error class: transient, terminal, conflict.
    pub errors: [AtomicU64; 3],
    /// Reconcile durations: counts per bucket of [`DURATION_BUCKETS`] (cumulative when read),
    /// their sum in milliseconds, and their count.
    pub duration_buckets: [AtomicU64; DURATION_BUCKETS.len()],
    pub duration_sum_ms: AtomicU64,
    pub duration_count: AtomicU64,
}

/// How long a finished message waits for others to share its DeleteMessageBatch: 200 ms, or a
/// tenth of the visibility timeout when that is shorter, so that it is deleted well before it
/// reappears. One lost to a crash meanwhile is processed again, which is harmless.
fn delete_linger(visibility: Duration) -> Duration {
    Duration::from_millis(200).min(visibility / 10)
}

/// How many messages one receive asks for: one per free slot, and as many more as the last
/// batch held when every message of it ended at once without a slot (events a settled
/// reconcile already covers, or ignored ones). A backlog of such duplicates then drains ten to
/// a receive even at concurrency 1, where one per slot would cost a receive per message. A
/// batch with any work in it resets the extra to none, so messages wait for a slot (hidden by
/// their heartbeat) only in a run of duplicates, behind at most that many others. Between 1
/// and 10 (SQS's limit). `last` is the last batch: messages received, and those of them that
/// needed a slot.
fn receive_size(free_slots: usize, last: (usize, usize)) -> i32 {
    let (received, needed_slots) = last;
    let extra = if needed_slots == 0 { received } else { 0 };
    (free_slots + extra).clamp(1, 10) as i32
}

/// What a received message needs (see [`Consumer::triage`]).
enum Triage {
    Concluded(Received),
    Work(Received, Work),
}

/// The work of a message that needs a slot.
enum Work {
    /// It can never be processed: dead-lettered with its reason.
    Reject(Rejection),
    Reconcile {
        keys: Vec<ResourceKey>,
        meta: EventMeta,
    },
}

/// Upper bounds (seconds) of the reconcile duration histogram.
pub const DURATION_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

impl ConsumerStats {
    fn observe(&self, outcome: &KeyOutcome, took: Duration, now_ms: u64) {
        // A finished reconcile is progress too: a busy loop (every permit held through a registry
        // outage) is not a stalled one.
        self.last_tick_ms.store(now_ms, Ordering::Relaxed);
        let (result, class) = match outcome {
            KeyOutcome::Done(_) => (0, None),
            KeyOutcome::Waiting(_) => (1, None),
            KeyOutcome::Failed(e) => (2, Some(e.class)),
        };
        self.reconciles[result].fetch_add(1, Ordering::Relaxed);
        if let Some(class) = class {
            let i = match class {
                ErrorClass::Transient => 0,
                ErrorClass::Terminal => 1,
                ErrorClass::Conflict => 2,
            };
            self.errors[i].fetch_add(1, Ordering::Relaxed);
        }
        let secs = took.as_secs_f64();
        if let Some(i) = DURATION_BUCKETS.iter().position(|b| secs <= *b) {
            self.duration_buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.duration_sum_ms
            .fetch_add(took.as_millis() as u64, Ordering::Relaxed);
        self.duration_count.fetch_add(1, Ordering::Relaxed);
    }
}

/// The consumer: one queue, the three peers, the in-process key gate.
#[derive(Debug)]
pub struct Consumer<A, R, S> {
    pub queue: Queue,
    pub agentcore: Fleet<A>,
    pub registry: R,
    pub state: S,
    pub config: ConsumerConfig,
    pub stats: Arc<ConsumerStats>,
    /// This worker's name in leases.
    pub owner: String,
    gate: KeyGate<Gated>,
    fresh: Freshness,
    /// How far this clock may run ahead of SQS's (marks are dated on SQS's clock).
    ahead: Ahead,
    leases: std::sync::Mutex<HashMap<String, Lease>>,
    /// Wall and monotonic time, and jitter.
    pub clock: Arc<dyn Clock>,
}

/// What the key gate hands a message's key: the outcome of a run, or that a run of the key
/// going when the message arrived settled what it announced.
#[derive(Debug, Clone)]
enum Gated {
    Ran(KeyOutcome),
    Covered,
}

/// A lease owner unique in the fleet: every container's pid is 1, so the pid alone is not; the
/// random part comes from the OS (hasher keys), and the ECS task's id is added when known.
pub fn lease_owner() -> String {
    let random = {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(u64::from(std::process::id()));
        h.finish()
    };
    // ECS_CONTAINER_METADATA_URI_V4 ends in a per-task container id.
    let task = std::env::var("ECS_CONTAINER_METADATA_URI_V4")
        .ok()
        .and_then(|u| {
            u.rsplit('/')
                .next()
                .map(|id| id.chars().take(32).collect::<String>())
        })
        .filter(|id| !id.is_empty())
        .map(|id| format!("{id}-"))
        .unwrap_or_default();
    format!("worker-{task}{}-{random:016x}", std::process::id())
}

/// Whether the receive loop is alive: it went round within `limit` of `now` (both Unix ms), or
/// has not started yet (the start-up rescan runs first).
pub fn liveness(last_tick_ms: u64, now_ms: u64, limit: Duration) -> Result<(), String> {
    let stalled = now_ms.saturating_sub(last_tick_ms);
    if last_tick_ms == 0 || stalled <= limit.as_millis() as u64 {
        Ok(())
    } else {
        Err(format!(
            "the receive loop has not gone round for {} s (limit {} s)",
            stalled / 1000,
            limit.as_secs()
        ))
    }
}

impl<A, R, S> Consumer<A, R, S>
where
    A: AgentCore + 'static,
    R: Registry + 'static,
    S: StateStore + 'static,
{
    pub fn new(
        queue: Queue,
        agentcore: Fleet<A>,
        registry: R,
        state: S,
        config: ConsumerConfig,
    ) -> Self {
        Self {
            queue,
            agentcore,
            registry,
            state,
            config,
            stats: Arc::new(ConsumerStats::default()),
            owner: lease_owner(),
            gate: KeyGate::default(),
            fresh: Freshness::default(),
            ahead: Ahead::default(),
            leases: std::sync::Mutex::default(),
            clock: Arc::new(crate::clock::SystemClock::new()),
        }
    }

    /// How long the receive loop may go without a round before `/healthz` calls it stalled:
    /// every permit may be held for a whole reconcile deadline, then a receive waits.
    pub fn stall_limit(&self) -> Duration {
        self.config.reconcile_deadline + self.config.receive_wait + Duration::from_secs(60)
    }

    /// Receives and processes until `shutdown` fires; then stops receiving, lets in-flight
    /// messages finish within the grace period, and releases the rest (visibility 0).
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let permits = Arc::new(Semaphore::new(self.config.concurrency.max(1)));
        let tracker = TaskTracker::new();
        let release = CancellationToken::new();
        let (done_tx, done_rx) = mpsc::channel::<Received>(256);
        let deleter = tokio::spawn(Arc::clone(&self).delete_batches(done_rx));

        // The last batch: received, and how many of those needed a slot (see [`receive_size`]).
        let mut last = (0, 0);
        while !shutdown.is_cancelled() {
            self.stats
                .last_tick_ms
                .store(self.clock.now_ms(), Ordering::Relaxed);
            let first = tokio::select! {
                _ = shutdown.cancelled() => break,
                p = Arc::clone(&permits).acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            };
            let want = receive_size(1 + permits.available_permits(), last);
            let batch = tokio::select! {
                _ = shutdown.cancelled() => break,
                r = self.queue.receive(want, self.config.receive_wait, self.config.visibility) => r,
            };
            let batch = match batch {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(error = %e, class = %e.class, "Receive failed; retrying shortly.");
                    drop(first);
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    }
                }
            };
            // Those that need no work end first, so none of them waits behind one that does.
            let mut needing_slots = Vec::with_capacity(batch.len());
            let received = batch.len();
            for message in batch {
                self.stats.received.fetch_add(1, Ordering::Relaxed);
                if let Some(handed_out) = message.first_received_at_ms.or(message.sent_at_ms) {
                    self.ahead.sample(handed_out, self.clock.now_ms());
                }
                match self.triage(message) {
                    Triage::Concluded(message) => {
                        let _ = done_tx.send(message).await;
                    }
                    Triage::Work(message, work) => {
                        // Kept hidden from now: it may wait for a slot behind others of its batch.
                        let heartbeat =
                            Heartbeat::start(&self.queue, &message, self.config.visibility);
                        needing_slots.push((message, work, heartbeat));
                    }
                }
            }
            last = (received, needing_slots.len());
            let mut first = Some(first);
            for (message, work, heartbeat) in needing_slots {
                let permit = match first.take() {
                    Some(p) => p,
                    None => tokio::select! {
                        p = Arc::clone(&permits).acquire_owned() => match p { Ok(p) => p, Err(_) => break },
                        // The slots may stay busy past the grace period: not held meanwhile.
                        _ = shutdown.cancelled() => {
                            heartbeat.stop().await;
                            self.give_back(&message).await;
                            continue;
                        }
                    },
                };
                let (me, release, done_tx) = (Arc::clone(&self), release.clone(), done_tx.clone());
                tracker.spawn(async move {
                    let _counted = InFlight::enter(&me.stats.in_flight);
                    me.handle(message, work, heartbeat, &release, &done_tx)
                        .await;
                    drop(permit);
                });
            }
        }

        tracker.close();
        if tokio::time::timeout(self.config.shutdown_grace, tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("Shutdown grace period over; releasing in-flight messages.");
            release.cancel();
            tracker.wait().await;
        }
        drop(done_tx);
        let _ = deleter.await;
    }

    /// Deletes finished messages in batches of up to ten; refused entries are logged and
    /// counted (the message reappears and is reconciled again, which is harmless).
    async fn delete_batches(self: Arc<Self>, mut rx: mpsc::Receiver<Received>) {
        while let Some(first) = rx.recv().await {
            let mut batch = vec![first];
            let linger = tokio::time::sleep(delete_linger(self.config.visibility));
            tokio::pin!(linger);
            while batch.len() < 10 {
                tokio::select! {
                    m = rx.recv() => match m { Some(m) => batch.push(m), None => break },
                    _ = &mut linger => break,
                }
            }
            let refs: Vec<&Received> = batch.iter().collect();
            match self.queue.delete_batch(&refs).await {
                Ok(failures) => {
                    for f in failures {
                        self.stats.delete_failures.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(message_id = %f.message_id, code = %f.code, error = %f.message, "Message could not be deleted; it will be processed again.");
                    }
                }
                Err(e) => {
                    self.stats
                        .delete_failures
                        .fetch_add(batch.len() as u64, Ordering::Relaxed);
                    tracing::warn!(error = %e, count = batch.len(), "Batch delete failed; the messages will be processed again.");
                }
            }
        }
    }

    /// What a received message needs: nothing more than its delete (an ignored event, or one
    /// a settled reconcile of this worker's already covers), or work under a slot.
    fn triage(&self, message: Received) -> Triage {
        match parse(&message.body, self.config.parse) {
            Verdict::Ignore { reason, meta } => {
                tracing::info!(message_id = %message.message_id, event_name = %meta.event_name, reason, "Event ignored.");
                self.stats.ignored.fetch_add(1, Ordering::Relaxed);
                Triage::Concluded(message)
            }
            Verdict::Reconcile { keys, meta } if self.superseded(&keys, &message) => {
                self.count_superseded(&message, &meta.event_name);
                Triage::Concluded(message)
            }
            Verdict::Reconcile { keys, meta } => {
                Triage::Work(message, Work::Reconcile { keys, meta })
            }
            Verdict::Reject(r) => Triage::Work(message, Work::Reject(r)),
        }
    }

    async fn handle(
        &self,
        message: Received,
        work: Work,
        heartbeat: Heartbeat,
        release: &CancellationToken,
        done: &mpsc::Sender<Received>,
    ) {
        let (keys, meta) = match work {
            Work::Reject(r) => {
                heartbeat.stop().await;
                tracing::warn!(message_id = %message.message_id, reason_code = r.code(), reason = %r, "Unusable message; dead-lettering it.");
                let reason = r.to_string();
                let parsed = Parsed::Rejected {
                    code: r.code(),
                    reason: &reason,
                };
                let ending = self.ending_of(parsed, &message);
                self.finish(message, ending, done).await;
                return;
            }
            Work::Reconcile { keys, meta } => (keys, meta),
        };
        // Again: a reconcile of its key may have settled while it waited for a slot.
        if self.superseded(&keys, &message) {
            heartbeat.stop().await;
            self.count_superseded(&message, &meta.event_name);
            let _ = done.send(message).await;
            return;
        }
        if let Some(lag) = meta
            .event_time
            .as_deref()
            .and_then(event_time_ms)
            .map(|t| self.clock.now_ms().saturating_sub(t))
        {
            self.stats.last_queue_lag_ms.store(lag, Ordering::Relaxed);
        }
        let span = tracing::info_span!("message", message_id = %message.message_id, receive_count = message.receive_count,
            event_id = meta.event_id.as_deref().unwrap_or(""), event_name = %meta.event_name);
        let queued_at = first_queued(&message);
        let work = futures::future::join_all(keys.iter().map(|k| self.reconcile_key(k, queued_at)));
        let outcomes = tokio::select! {
            o = work.instrument(span.clone()) => Some(o),
            _ = release.cancelled() => None,
        };
        heartbeat.stop().await;
        let Some(outcomes) = outcomes else {
            // The cancelled reconciles never reached their own release: give the leases up so
            // the next worker need not wait for them to expire.
            for key in &keys {
                let Some(lease) = self.held_leases().remove(&lease_name(key)) else {
                    continue;
                };
                if let Err(e) = self.state.release_lease(&lease).await {
                    tracing::warn!(parent: &span, error = %e, "Lease release failed; it expires on its own.");
                }
            }
            self.give_back(&message).instrument(span.clone()).await;
            return;
        };
        let ending = self.ending_of(Parsed::Reconciled(&outcomes), &message);
        if ending == Ending::Delete {
            self.stats.done.fetch_add(1, Ordering::Relaxed);
        }
        let _enter = span.enter();
        self.finish(message, ending, done).await;
    }

    /// Makes a message visible again at once, unprocessed (shutting down).
    async fn give_back(&self, message: &Received) {
        self.stats.released.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = self.queue.set_visibility(message, Duration::ZERO).await {
            tracing::warn!(error = %e, "Release failed; the message reappears after its visibility timeout.");
        }
    }

    /// Counts and logs a message that a settled reconcile of its keys covers (deleted unread).
    fn count_superseded(&self, message: &Received, event_name: &str) {
        tracing::debug!(message_id = %message.message_id, event_name, "Already reconciled since this event was queued; deleting it.");
        self.stats.superseded.fetch_add(1, Ordering::Relaxed);
    }

    /// Whether a settled reconcile of this worker's, of every key, began after the message was
    /// first queued (no call). Other replicas' reconciles are learnt with the key's lease, in
    /// the same call that would take it ([`Consumer::leased_reconcile`]). A copy sent to
    /// re-check a waiting resource counts from when the first was queued: it announces nothing
    /// newer.
    fn superseded(&self, keys: &[ResourceKey], message: &Received) -> bool {
        self.fresh.covers(keys, first_queued(message))
    }

    /// Reconciles `key` for a message first queued at `queued_at`.
    async fn reconcile_key(&self, key: &ResourceKey, queued_at: Option<u64>) -> KeyOutcome {
        let span = tracing::info_span!("reconcile", kind = key.kind.as_str(), id = %key.id, region = %key.region);
        let started = self.clock.elapsed();
        let covered = |queued: Option<u64>| {
            self.fresh
                .covers(std::slice::from_ref(key), queued)
                .then_some(Gated::Covered)
        };
        let gated = self
            .gate
            // A follow-up run serves messages queued later than this one: only the caller's
            // own run may take the key as settled since its message was queued.
            .run(key, queued_at, covered, |own| async move {
                Gated::Ran(self.leased_reconcile(key, queued_at.filter(|_| own)).await)
            })
            .instrument(span.clone())
            .await;
        let outcome = match gated {
            Gated::Ran(outcome) => outcome,
            Gated::Covered => {
                tracing::debug!(parent: &span, "Covered by the reconcile that was running when the message arrived.");
                self.stats
                    .covered_by_running
                    .fetch_add(1, Ordering::Relaxed);
                return KeyOutcome::Done(Vec::new());
            }
        };
        self.stats.observe(
            &outcome,
            self.clock.elapsed().saturating_sub(started),
            self.clock.now_ms(),
        );
        match &outcome {
            KeyOutcome::Done(rows) => {
                for row in rows {
                    tracing::info!(parent: &span, path = %row.path, status = row.status.as_str(), detail = %row.message, "Reconciled.");
                }
            }
            KeyOutcome::Waiting(status) => {
                tracing::info!(parent: &span, status, "Waiting for the resource.")
            }
            KeyOutcome::Failed(e) => {
                tracing::warn!(parent: &span, error = %e, class = %e.class, "Reconcile failed.")
            }
        }
        outcome
    }

    /// Reconciles under the key's DynamoDB lease (one reconcile per key across replicas). The
    /// lease lasts one visibility timeout and is renewed while the reconcile runs, so a worker
    /// that dies loses it no later than its message reappears.
    ///
    /// A lease whose holders settled a reconcile that began well after `queued_at` (another
    /// replica, before or while this one waited) concludes the key without taking it: that
    /// run saw what the message announced.
    async fn leased_reconcile(&self, key: &ResourceKey, queued_at: Option<u64>) -> KeyOutcome {
        let since = queued_at.map(|q| q + crate::fresh::MARGIN_MS);
        let lease = match self.acquire(key, since).await {
            Ok(Acquired::Taken(lease)) => lease,
            Ok(Acquired::Settled(started_ms)) => {
                self.fresh.mark(key, started_ms);
                self.stats.settled_at_lease.fetch_add(1, Ordering::Relaxed);
                return KeyOutcome::Done(Vec::new());
            }
            // Another worker is on it: check again shortly, without burning the receive count.
            Ok(Acquired::Held) => {
                return KeyOutcome::Waiting("lease held by another worker".into());
            }
            Err(e) => return KeyOutcome::Failed(e),
        };
        let written = WriteLog::default();
        let outcome = self.under(&lease, key, &written, &[]).await;
        // A lease lost after a registry write: the write may have landed after the next
        // holder's work (say, a deregistration). Reconcile again under a new lease, taking what
        // was written as recorded, so an entry of a resource now gone is removed again.
        let lost = matches!(outcome, KeyOutcome::Failed(_))
            && !written.is_empty()
            && !matches!(self.state.renew_lease(&lease).await, Ok(true));
        self.release(&lease).await;
        if !lost {
            return outcome;
        }
        if let KeyOutcome::Failed(e) = &outcome {
            tracing::warn!(key = ?key, error = %e, "The lease was lost after a registry write; reconciling again under a new lease.");
        }
        match self.acquire(key, None).await {
            Ok(Acquired::Taken(again)) => {
                let repaired = self
                    .under(&again, key, &WriteLog::default(), &written.take())
                    .await;
                self.release(&again).await;
                repaired
            }
            Ok(_) => outcome,
            Err(e) => KeyOutcome::Failed(e),
        }
    }

    /// The key's lease, after a few tries, unless another worker holds it or (with `since_ms`)
    /// it shows a settled reconcile begun at or after `since_ms`.
    async fn acquire(
        &self,
        key: &ResourceKey,
        since_ms: Option<u64>,
    ) -> Result<Acquired, PortError> {
        let name = lease_name(key);
        let acquired = lease::acquire_unless_settled(
            &self.state,
            &name,
            &self.owner,
            self.config.visibility,
            since_ms,
        )
        .await?;
        if let Acquired::Taken(held) = &acquired {
            self.held_leases().insert(name, held.clone());
        }
        Ok(acquired)
    }

    async fn release(&self, lease: &Lease) {
        self.held_leases().remove(&lease.name);
        if let Err(e) = self.state.release_lease(lease).await {
            tracing::warn!(error = %e, "Lease release failed; it expires on its own.");
        }
    }

    /// One reconcile of `key` under `lease`: its state writes fenced by it, stopped when it
    /// cannot be renewed or the reconcile deadline passes.
    async fn under(
        &self,
        lease: &Lease,
        key: &ResourceKey,
        written: &WriteLog,
        suspects: &[registrar_core::plan::RecordedResource],
    ) -> KeyOutcome {
        let deadline = self.config.reconcile_deadline;
        // On SQS's clock, as the messages it is to cover are dated (none: nothing is marked).
        let started_ms = self.ahead.on_sqs_clock(self.clock.now_ms());
        let fenced = self.state.fenced(lease);
        let work = reconcile(
            &self.agentcore,
            &self.registry,
            &fenced,
            key,
            self.config.reconcile,
            written,
            suspects,
        );
        let outcome = match lease::under(
            &self.state,
            &*self.clock,
            lease,
            tokio::time::timeout(deadline, work),
        )
        .await
        {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(_)) => KeyOutcome::Failed(PortError::new(
                "reconcile",
                format!("{key:?}"),
                ErrorClass::Transient,
                format!("exceeded its deadline of {} s", deadline.as_secs()),
            )),
            Err(lost) => KeyOutcome::Failed(lost),
        };
        if matches!(outcome, KeyOutcome::Done(_))
            && let Some(started_ms) = started_ms
        {
            self.fresh.mark(key, started_ms);
            // For every replica: recorded on the lease when it is released.
            lease.settle(started_ms);
        }
        outcome
    }

    /// The key leases this worker holds now, by name (released on shutdown).
    fn held_leases(&self) -> std::sync::MutexGuard<'_, HashMap<String, Lease>> {
        self.leases
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// How the message ends ([`ending`], pure), from its attributes and the time now.
    fn ending_of(&self, parsed: Parsed<'_>, message: &Received) -> Ending {
        let attribute = |name: &str| message.attributes.get(name).and_then(|v| v.parse().ok());
        let waited = attribute(attr::WAITING_SINCE).map(|since_ms| Waited {
            since_ms,
            checks: attribute(attr::WAIT_COUNT).map_or(0, |c: u64| c as u32),
        });
        let now_ms = self.clock.now_ms();
        ending(
            parsed,
            message.receive_count,
            waited,
            now_ms,
            self.clock.jitter(),
            EndingPolicy {
                retry: self.config.retry_backoff,
                wait: self.config.wait_backoff,
                max_wait: self.config.max_wait,
            },
        )
    }

    /// Carries the ending out.
    async fn finish(&self, message: Received, ending: Ending, done: &mpsc::Sender<Received>) {
        let result = match ending {
            Ending::Delete => {
                let _ = done.send(message).await;
                return;
            }
            Ending::Retry { after, error } => {
                self.stats.retried.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %error, retry_in_s = after.as_secs(), receive_count = message.receive_count, "Reconcile failed; retrying later.");
                self.queue.set_visibility(&message, after).await
            }
            Ending::DeadLetter { code, reason } => {
                self.stats.dead_lettered.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(reason_code = code, reason, "Message dead-lettered.");
                self.queue.dead_letter(&message, code, &reason).await
            }
            Ending::Recheck {
                delay,
                waited,
                status,
            } => {
                self.stats.waiting.fetch_add(1, Ordering::Relaxed);
                tracing::info!(
                    status,
                    recheck_in_s = delay.as_secs_f64(),
                    "Resource not ready; re-checking later."
                );
                let mut attrs = message.attributes.clone();
                if let Some(queued_at) = first_queued(&message) {
                    attrs.insert(attr::FIRST_QUEUED.into(), queued_at.to_string());
                }
                attrs.insert(attr::WAITING_SINCE.into(), waited.since_ms.to_string());
                attrs.insert(attr::WAIT_COUNT.into(), waited.checks.to_string());
                self.queue.requeue_delayed(&message, delay, &attrs).await
            }
        };
        if let Err(e) = result {
            // Nothing is lost: the message reappears after its visibility timeout.
            tracing::warn!(error = %e, "Ending the message failed; it will be received again.");
        }
    }
}

/// Keeps a held message hidden: renews its visibility every third of the timeout until stopped
/// or dropped (a panic included: a heartbeat left running would keep the message hidden for the
/// life of the process).
struct Heartbeat {
    stop: tokio_util::sync::DropGuard,
    beat: tokio::task::JoinHandle<()>,
}

impl Heartbeat {
    fn start(queue: &Queue, message: &Received, every: Duration) -> Self {
        let token = CancellationToken::new();
        let (queue, message, cancelled) = (queue.clone(), message.clone(), token.clone());
        let beat = tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = cancelled.cancelled() => return,
                    _ = tokio::time::sleep(every / 3) => {
                        if let Err(e) = queue.set_visibility(&message, every).await {
                            tracing::warn!(message_id = %message.message_id, error = %e, "Visibility heartbeat failed.");
                        }
                    }
                }
            }
        });
        Self {
            stop: token.drop_guard(),
            beat,
        }
    }

    /// Stops it, and waits for a renewal under way: none lands after what ends the message.
    async fn stop(self) {
        drop(self.stop);
        let _ = self.beat.await;
    }
}

/// One message in flight, counted until it is dropped (a panic included: rescans yield to
/// event work while the count is above zero).
struct InFlight<'a>(&'a AtomicU64);

impl<'a> InFlight<'a> {
    fn enter(count: &'a AtomicU64) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Self(count)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// When the event's first message was queued: a delayed copy (sent to re-check a waiting
/// resource) carries its original's time, and announces nothing newer.
fn first_queued(message: &Received) -> Option<u64> {
    let carried = message
        .attributes
        .get(attr::FIRST_QUEUED)
        .and_then(|v| v.parse::<u64>().ok());
    match (message.sent_at_ms, carried) {
        (Some(sent), Some(first)) => Some(sent.min(first)),
        (sent, first) => sent.or(first),
    }
}

/// The DynamoDB lease of one resource key.
fn lease_name(key: &ResourceKey) -> String {
    format!("key#{}#{}#{}", key.kind.as_str(), key.region, key.id)
}

/// `2026-11-21T10:00:00Z` (seconds precision is enough for lag) -> epoch milliseconds.
fn event_time_ms(iso: &str) -> Option<u64> {
    let t =
        aws_smithy_types::DateTime::from_str(iso, aws_smithy_types::date_time::Format::DateTime)
            .ok()?;
    u64::try_from(t.to_millis().ok()?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finished_messages_wait_for_company_well_within_their_visibility() {
        let linger = |s: u64| delete_linger(Duration::from_secs(s));
        assert_eq!(linger(60), Duration::from_millis(200));
        assert_eq!(linger(2), Duration::from_millis(200));
        assert_eq!(linger(1), Duration::from_millis(100));
    }

    #[test]
    fn a_receive_asks_for_the_free_slots_and_more_only_after_a_batch_that_needed_none() {
        assert_eq!(receive_size(1, (0, 0)), 1, "one slot, nothing received yet");
        assert_eq!(
            receive_size(1, (1, 1)),
            1,
            "one slot, the last batch was work"
        );
        assert_eq!(receive_size(1, (1, 0)), 2);
        assert_eq!(receive_size(1, (4, 0)), 5);
        assert_eq!(
            receive_size(1, (5, 1)),
            1,
            "one message of the last batch needed a slot: no extra"
        );
        assert_eq!(receive_size(3, (9, 0)), 10, "SQS hands out at most ten");
        assert_eq!(receive_size(16, (0, 0)), 10);
        assert_eq!(receive_size(0, (0, 0)), 1);
    }

    #[test]
    fn the_receive_loop_is_alive_until_it_stalls_past_the_limit() {
        let limit = Duration::from_secs(120);
        assert!(liveness(0, 1_000_000, limit).is_ok(), "not started yet");
        assert!(liveness(1_000_000, 1_000_000 + 120_000, limit).is_ok());
        let e = liveness(1_000_000, 1_000_000 + 121_000, limit).expect_err("stalled");
        assert!(e.contains("121 s") && e.contains("limit 120 s"), "{e}");
    }

    #[test]
    fn lease_owners_differ_between_processes_with_the_same_pid() {
        // Two consumers in one process stand for two containers whose pid is 1.
        let (a, b) = (lease_owner(), lease_owner());
        assert_ne!(a, b);
        assert!(a.starts_with("worker-"), "{a}");
        assert!(a.contains(&std::process::id().to_string()), "{a}");
    }
}
