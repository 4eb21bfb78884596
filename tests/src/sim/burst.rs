//! Phase (b): a burst of events through several workers that share the state table and the
//! registry. Each worker does what `consumer::Consumer` does with a message, with the real
//! parts it is built from: the key gate, the freshness marks that supersede messages a settled
//! reconcile already covered (its own, or any replica's through the key's lease), the key's
//! lease ([`engine::lease`]), the real [`engine::reconcile`] under it with fenced writes and a
//! deadline, and the real [`ending`] of the message. The queue is the in-memory model
//! ([`super::queue`]), since the consumer itself speaks to SQS through the SDK.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use registrar_core::backoff::Backoff;
use registrar_core::identity::ResourceKey;
use registrar_core::ports::{Acquired, Clock, LeaseStore};
use registrar_core::{ErrorClass, PortError};
use registrar_worker::aws::fleet::Fleet;
use registrar_worker::engine::ending::{Ending, EndingPolicy, Parsed, ending};
use registrar_worker::engine::{KeyOutcome, ReconcileOptions, WriteLog, lease, reconcile};
use registrar_worker::fresh::Freshness;
use registrar_worker::gate::KeyGate;
use registrar_worker::pace::{Paced, Rates};
use tokio::sync::Semaphore;

use super::agentcore::ModelAgentCore;
use super::fleet::{Changes, burst, seed};
use super::queue::{Deletes, Message, Queue};
use super::state::ModelState;
use super::{DERIVE, ENABLE, Peers, PhaseReport, Setup, memory_mib, plan_context};

/// The worker's defaults (`registrar worker --help`).
const VISIBILITY: Duration = Duration::from_secs(60);
const DEADLINE: Duration = Duration::from_secs(300);
const POLICY: EndingPolicy = EndingPolicy {
    retry: Backoff {
        base: Duration::from_secs(5),
        cap: Duration::from_secs(300),
    },
    wait: Backoff {
        base: Duration::from_secs(10),
        cap: Duration::from_secs(300),
    },
    max_wait: Duration::from_secs(3600),
};

/// How messages ended, over every worker.
#[derive(Debug, Default)]
struct Endings {
    done: AtomicU64,
    superseded: AtomicU64,
    retried: AtomicU64,
    rechecked: AtomicU64,
    dead_lettered: AtomicU64,
    failed_reconciles: AtomicU64,
    /// Dead-lettered by the ending, by reason code.
    dead_letter_codes: std::sync::Mutex<std::collections::BTreeMap<&'static str, u64>>,
    /// Simulated ms from the burst to each message's end.
    latencies: std::sync::Mutex<Vec<u64>>,
}

/// One simulated worker process.
struct Worker {
    name: String,
    fleet: Fleet<Paced<ModelAgentCore>>,
    peers: Arc<Peers>,
    queue: Arc<Queue>,
    gate: KeyGate<KeyOutcome>,
    fresh: Freshness,
    deletes: Deletes,
    endings: Arc<Endings>,
    concurrency: usize,
}

fn lease_name(key: &ResourceKey) -> String {
    format!("key#{}#{}#{}", key.kind.as_str(), key.region, key.id)
}

/// What `registrar worker` reconciles with, by default (and `--registry-identity`).
fn options() -> ReconcileOptions {
    let ctx = plan_context();
    ReconcileOptions {
        derive: DERIVE,
        policy: ctx.policy,
        adopt_legacy: ctx.adopt_legacy,
        identity: ctx.identity,
        enable: ENABLE,
        mcp_targets: false,
    }
}

impl Worker {
    /// Receives and processes until nothing is left in the queue.
    async fn run(self: Arc<Self>) {
        let permits = Arc::new(Semaphore::new(self.concurrency));
        let mut tasks = tokio::task::JoinSet::new();
        while self.queue.outstanding() > 0 {
            let Ok(first) = Arc::clone(&permits).acquire_owned().await else {
                break;
            };
            let want = 1 + permits.available_permits().min(9);
            let batch = self.queue.receive(want).await;
            let mut first = Some(first);
            for message in batch {
                let permit = match first.take() {
                    Some(p) => p,
                    None => match Arc::clone(&permits).acquire_owned().await {
                        Ok(p) => p,
                        Err(_) => break,
                    },
                };
                let me = Arc::clone(&self);
                tasks.spawn_local(async move {
                    me.handle(message).await;
                    drop(permit);
                });
            }
            while tasks.try_join_next().is_some() {}
        }
        while tasks.join_next().await.is_some() {}
        self.deletes.flush(&self.queue);
    }

    async fn handle(&self, message: Message) {
        let clock = &self.peers.clock;
        let keys = [message.key.clone()];
        if self.superseded(&keys, &message) {
            self.endings.superseded.fetch_add(1, Ordering::Relaxed);
            self.finish(Ending::Delete, message);
            return;
        }
        let started = clock.elapsed();
        // As the consumer: a message a running reconcile covers is served by its end.
        let queued_at = Some(message.sent_at_ms.min(message.first_queued_ms));
        let covered = |queued: Option<u64>| {
            self.fresh
                .covers(&keys, queued)
                .then(|| KeyOutcome::Done(Vec::new()))
        };
        let outcome = self
            .gate
            .run(&message.key, queued_at, covered, |own| {
                self.leased_reconcile(&message.key, queued_at.filter(|_| own))
            })
            .await;
        self.queue.heartbeats(clock.elapsed() - started, VISIBILITY);
        if matches!(outcome, KeyOutcome::Failed(_)) {
            self.endings
                .failed_reconciles
                .fetch_add(1, Ordering::Relaxed);
        }
        let now_ms = clock.now_ms();
        let end = ending(
            Parsed::Reconciled(std::slice::from_ref(&outcome)),
            message.receive_count,
            message.waited,
            now_ms,
            clock.jitter(),
            POLICY,
        );
        match end {
            Ending::Delete => {
                self.endings.done.fetch_add(1, Ordering::Relaxed);
                self.finish(end, message);
            }
            Ending::Retry { after, .. } => {
                self.endings.retried.fetch_add(1, Ordering::Relaxed);
                self.queue.retry(message, after).await;
            }
            Ending::Recheck { delay, waited, .. } => {
                self.endings.rechecked.fetch_add(1, Ordering::Relaxed);
                self.queue.recheck(message, delay, waited).await;
            }
            Ending::DeadLetter { code, .. } => {
                self.endings.dead_lettered.fetch_add(1, Ordering::Relaxed);
                *self
                    .endings
                    .dead_letter_codes
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .entry(code)
                    .or_default() += 1;
                self.queue.dead_letter().await;
                self.note_latency();
            }
        }
    }

    fn finish(&self, _ending: Ending, _message: Message) {
        self.deletes.add(&self.queue);
        self.note_latency();
    }

    fn note_latency(&self) {
        let ms = self.peers.clock.elapsed().as_millis() as u64;
        self.endings
            .latencies
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(ms);
    }

    /// As the consumer: covered by this worker's own marks (no call).
    fn superseded(&self, keys: &[ResourceKey], message: &Message) -> bool {
        self.fresh
            .covers(keys, Some(message.sent_at_ms.min(message.first_queued_ms)))
    }

    /// As the consumer: the lease, unless it shows a settled reconcile (any replica's) begun
    /// well after the message was queued.
    async fn leased_reconcile(&self, key: &ResourceKey, queued_at: Option<u64>) -> KeyOutcome {
        let state = &self.peers.state;
        let since = queued_at.map(|q| q + registrar_worker::fresh::MARGIN_MS);
        let acquired =
            lease::acquire_unless_settled(state, &lease_name(key), &self.name, VISIBILITY, since)
                .await;
        let held = match acquired {
            Ok(Acquired::Taken(held)) => held,
            Ok(Acquired::Settled(started_ms)) => {
                self.fresh.mark(key, started_ms);
                return KeyOutcome::Done(Vec::new());
            }
            Ok(Acquired::Held) => {
                return KeyOutcome::Waiting("lease held by another worker".into());
            }
            Err(e) => return KeyOutcome::Failed(e),
        };
        let outcome = self.under(&held, key, state).await;
        if let Err(e) = state.release_lease(&held).await {
            return KeyOutcome::Failed(e);
        }
        outcome
    }

    async fn under(
        &self,
        held: &registrar_core::ports::Lease,
        key: &ResourceKey,
        state: &ModelState,
    ) -> KeyOutcome {
        let clock = &*self.peers.clock;
        let started_ms = clock.now_ms();
        let fenced = state.fenced(held);
        let written = WriteLog::default();
        let work = reconcile(
            &self.fleet,
            &self.peers.registry,
            &fenced,
            key,
            options(),
            &written,
            &[],
        );
        let outcome =
            match lease::under(state, clock, held, tokio::time::timeout(DEADLINE, work)).await {
                Ok(Ok(outcome)) => outcome,
                Ok(Err(_)) => KeyOutcome::Failed(PortError::new(
                    "reconcile",
                    format!("{key:?}"),
                    ErrorClass::Transient,
                    "exceeded its deadline",
                )),
                Err(lost) => KeyOutcome::Failed(lost),
            };
        if matches!(outcome, KeyOutcome::Done(_)) {
            self.fresh.mark(key, started_ms);
            held.settle(started_ms);
        }
        outcome
    }
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1_000.0
}

pub async fn run(setup: &Setup) -> anyhow::Result<PhaseReport> {
    let peers = Peers::new(setup);
    seed(
        setup.shape(),
        setup.resources,
        &peers.registry,
        &peers.state,
    )
    .await?;
    let queue = Arc::new(Queue::new(
        setup.sqs_latency,
        peers.clock.clone(),
        Arc::clone(&peers.sqs),
    ));
    let (messages, changes): (Vec<Message>, Changes) = burst(
        setup.shape(),
        setup.resources,
        setup.events,
        &peers.servers,
        &peers.dice,
        &peers.clock,
    );
    queue.send_all(messages);
    let mut report = PhaseReport {
        phase: "burst".into(),
        pacing: setup.pacing,
        resources: setup.resources,
        scopes: setup.shape().scopes(),
        rss_seeded_mib: memory_mib(None).0,
        ..PhaseReport::default()
    };
    let peers = Arc::new(peers);
    let endings = Arc::new(Endings::default());
    let share = 1.0 / setup.workers.max(1) as f64;
    let rates = if setup.pacing {
        setup.rates.rates(share)
    } else {
        Rates::OFF
    };
    let workers: Vec<Arc<Worker>> = (0..setup.workers.max(1))
        .map(|w| {
            Arc::new(Worker {
                name: format!("worker-{w}"),
                fleet: peers.fleet(rates),
                peers: Arc::clone(&peers),
                queue: Arc::clone(&queue),
                gate: KeyGate::default(),
                fresh: Freshness::default(),
                deletes: Deletes::default(),
                endings: Arc::clone(&endings),
                concurrency: setup.concurrency,
            })
        })
        .collect();
    let local = tokio::task::LocalSet::new();
    local
        .run_until(futures::future::join_all(
            workers.iter().map(|w| Arc::clone(w).run()),
        ))
        .await;
    report.fill_from(&peers);
    for w in &workers {
        report.add_paced(&w.fleet);
    }
    report.count_entries(&peers).await?;
    let mut latencies = std::mem::take(
        &mut *endings
            .latencies
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    );
    latencies.sort_unstable();
    let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
    for (name, n) in [
        ("events", setup.events as u64),
        ("distinct resources", changes.distinct),
        ("updated in AgentCore", changes.updated),
        ("deleted in AgentCore", changes.deleted),
        ("created in AgentCore", changes.created),
        ("events for a resource already deleted", changes.late),
        ("reconciled and deleted", get(&endings.done)),
        ("superseded (deleted unread)", get(&endings.superseded)),
        ("retried (transient failure)", get(&endings.retried)),
        ("rechecked (waiting)", get(&endings.rechecked)),
        ("dead-lettered by the ending", get(&endings.dead_lettered)),
        (
            "dead-lettered by the redrive policy",
            get(&queue.dead_lettered) - get(&endings.dead_lettered),
        ),
        ("failed reconciles", get(&endings.failed_reconciles)),
    ] {
        report.outcomes.insert(name.into(), n);
    }
    for (code, n) in endings
        .dead_letter_codes
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .iter()
    {
        report.notes.push(format!("dead-lettered as {code}: {n}"));
    }
    report.notes.push(format!(
        "event to end: p50 {:.1} s, p99 {:.1} s, last {:.1} s",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        percentile(&latencies, 1.0)
    ));
    Ok(report)
}
