//! The dead-letter queue: what is in it, and moving messages back. Replay is safe because
//! reconciles are level-triggered: a replayed or duplicated event only makes the worker read the
//! current state again.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use registrar_core::PortError;
use serde::Serialize;

use crate::event::{ParseOptions, Verdict, parse};
use crate::sqs::{Queue, Received, attr};

/// How long a message stays hidden while the tools look at it (released afterwards).
const HOLD: Duration = Duration::from_secs(120);

/// What a dead-lettered message is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeadLetter {
    pub message_id: String,
    /// The CloudTrail event name, or `unparseable`.
    pub event_name: String,
    /// The first resource id the event names, if any.
    pub resource: Option<String>,
    /// `registrar-reason-code`, or `max-receives` when SQS's redrive moved it.
    pub reason_code: String,
    pub reason: Option<String>,
    pub age_seconds: Option<u64>,
    pub replay_count: u32,
}

/// Reads a message for the report and the filters, its age as of `now_ms` (Unix ms).
pub fn describe(m: &Received, now_ms: u64) -> DeadLetter {
    let (event_name, resource) = match parse(
        &m.body,
        ParseOptions {
            include_targets: true,
            ..ParseOptions::default()
        },
    ) {
        Verdict::Reconcile { keys, meta } => (meta.event_name, keys.first().map(|k| k.id.clone())),
        Verdict::Ignore { meta, .. } => (meta.event_name, None),
        Verdict::Reject(_) => ("unparseable".to_owned(), None),
    };
    DeadLetter {
        message_id: m.message_id.clone(),
        event_name,
        resource,
        reason_code: m
            .attributes
            .get(attr::REASON_CODE)
            .cloned()
            .unwrap_or_else(|| "max-receives".into()),
        reason: m.attributes.get(attr::REASON).cloned(),
        age_seconds: m.sent_at_ms.map(|t| now_ms.saturating_sub(t) / 1000),
        replay_count: m
            .attributes
            .get(attr::REPLAY_COUNT)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0),
    }
}

/// `registrar dlq inspect`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Inspection {
    /// SQS's approximate count of waiting messages.
    pub count: u64,
    /// Messages actually read for the breakdown (up to the sample limit).
    pub read: usize,
    pub oldest_age_seconds: Option<u64>,
    pub by_event: BTreeMap<String, u64>,
    pub by_reason: BTreeMap<String, u64>,
    /// Messages read that repeat one read before (same origin, same body): the message was
    /// handled twice (SQS delivered it twice, or it was not deleted after its copy was sent: a
    /// worker stopped, a failed delete, an interrupted replay). Replaying both is harmless.
    pub duplicates: u64,
    pub sample: Vec<DeadLetter>,
}

/// Reads up to `limit` messages, summarises them, and makes them visible again.
pub async fn inspect(
    dlq: &Queue,
    limit: usize,
    sample: usize,
    now_ms: u64,
) -> Result<Inspection, PortError> {
    let count = dlq.depth().await?;
    let held = hold(dlq, limit).await?;
    let mut out = Inspection {
        count,
        read: held.len(),
        ..Inspection::default()
    };
    let mut origins = HashSet::new();
    for m in &held {
        if !origins.insert((m.origin(), &m.body)) {
            out.duplicates += 1;
        }
        let d = describe(m, now_ms);
        *out.by_event.entry(d.event_name.clone()).or_default() += 1;
        *out.by_reason.entry(d.reason_code.clone()).or_default() += 1;
        out.oldest_age_seconds = out.oldest_age_seconds.max(d.age_seconds);
        if out.sample.len() < sample {
            out.sample.push(d);
        }
    }
    release(dlq, &held).await;
    Ok(out)
}

/// Receives (and hides) up to `limit` distinct messages.
async fn hold(queue: &Queue, limit: usize) -> Result<Vec<Received>, PortError> {
    let mut held: Vec<Received> = Vec::new();
    let mut seen = HashSet::new();
    while held.len() < limit {
        let batch = queue
            .receive(
                10.min((limit - held.len()) as i32),
                Duration::from_secs(1),
                HOLD,
            )
            .await?;
        if batch.is_empty() {
            break;
        }
        for m in batch {
            if seen.insert(m.message_id.clone()) {
                held.push(m);
            }
        }
    }
    Ok(held)
}

async fn release(queue: &Queue, held: &[Received]) {
    for m in held {
        if let Err(e) = queue.set_visibility(m, Duration::ZERO).await {
            tracing::warn!(message_id = %m.message_id, error = %e, "Could not make the message visible again; it will be after its hold.");
        }
    }
}

/// What `dlq replay` moves.
#[derive(Debug, Clone, Default)]
pub struct ReplayOptions {
    pub dry_run: bool,
    pub max: Option<usize>,
    /// Messages per second (at most).
    pub rate: Option<f64>,
    pub filter_event: Option<String>,
    pub filter_resource: Option<String>,
    /// When the replay started (Unix ms): it moves what the DLQ held then.
    pub started_ms: u64,
}

impl ReplayOptions {
    fn filtered(&self) -> bool {
        self.filter_event.is_some() || self.filter_resource.is_some()
    }

    fn matches(&self, d: &DeadLetter) -> bool {
        self.filter_event
            .as_ref()
            .is_none_or(|e| &d.event_name == e)
            && self
                .filter_resource
                .as_ref()
                .is_none_or(|r| d.resource.as_ref() == Some(r))
    }
}

/// What a replay did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Replay {
    /// `native` (SQS StartMessageMoveTask) or `portable` (receive, send, delete).
    pub mode: String,
    pub task_handle: Option<String>,
    /// Moved (or, in a dry run, would be moved).
    pub moved: Vec<DeadLetter>,
    /// Left in the DLQ by the filters or `--max`.
    pub left: usize,
    pub dry_run: bool,
}

/// Moves messages from `dlq` back to `source`. Without filters or a limit, SQS's own move task
/// is used when the API is there; otherwise each message is sent to the source (with its
/// replay count raised) and deleted from the DLQ only after the send succeeded, so an
/// interrupted replay can duplicate a message (harmless) but never lose one.
pub async fn replay(
    dlq: &Queue,
    source: &Queue,
    opts: &ReplayOptions,
) -> Result<Replay, PortError> {
    if !opts.filtered() && opts.max.is_none() && !opts.dry_run {
        let rate = opts.rate.map(|r| r.clamp(1.0, 500.0) as i32);
        match dlq.start_move_task(&source.arn().await?, rate).await {
            Ok(handle) => {
                return Ok(Replay {
                    mode: "native".into(),
                    task_handle: Some(handle),
                    ..Replay::default()
                });
            }
            Err(e) => {
                tracing::info!(error = %e, "StartMessageMoveTask unavailable; moving messages one by one.")
            }
        }
    }
    let mut out = Replay {
        mode: "portable".into(),
        dry_run: opts.dry_run,
        ..Replay::default()
    };
    let mut kept: Vec<Received> = Vec::new();
    let mut seen = HashSet::new();
    // A replay moves what the DLQ held when it started. Messages dead-lettered again while it
    // runs (a replayed poison message comes straight back) are left for the next look, or a
    // replay next to running workers would never end.
    let started_ms = opts.started_ms;
    let pause = opts
        .rate
        .filter(|r| *r > 0.0)
        .map(|r| Duration::from_secs_f64(1.0 / r));
    loop {
        // Full: receive no more (what this batch still held goes back below).
        if opts.max.is_some_and(|max| out.moved.len() >= max) {
            break;
        }
        let batch = dlq.receive(10, Duration::from_secs(1), HOLD).await?;
        if batch.is_empty() {
            break;
        }
        for m in batch {
            if !seen.insert(m.message_id.clone()) {
                continue;
            }
            if m.sent_at_ms.is_some_and(|sent| sent >= started_ms) {
                kept.push(m);
                continue;
            }
            let d = describe(&m, started_ms);
            let full = opts.max.is_some_and(|max| out.moved.len() >= max);
            if full || !opts.matches(&d) || opts.dry_run {
                if !full && opts.matches(&d) {
                    out.moved.push(d);
                }
                kept.push(m);
                continue;
            }
            if let Some(p) = pause {
                tokio::time::sleep(p).await;
            }
            let mut attributes: HashMap<String, String> = m.attributes.clone();
            attributes.remove(attr::REASON_CODE);
            attributes.remove(attr::REASON);
            attributes.remove(attr::WAITING_SINCE);
            attributes.remove(attr::WAIT_COUNT);
            // A replay is reconciled afresh, never taken as covered by an earlier reconcile.
            attributes.remove(attr::FIRST_QUEUED);
            attributes.insert(attr::REPLAY_COUNT.into(), (d.replay_count + 1).to_string());
            // SQS's redrive adds no origin: the message keeps its id, which copies made before
            // may carry.
            attributes.insert(attr::ORIGIN_ID.into(), m.origin().to_owned());
            if let Err(e) = source.send(&m.body, &attributes).await {
                // Not moved: it stays in the DLQ (made visible again below).
                kept.push(m);
                release(dlq, &kept).await;
                return Err(e);
            }
            dlq.delete(&m).await?;
            tracing::info!(message_id = %d.message_id, event_name = %d.event_name, "Replayed.");
            out.moved.push(d);
        }
    }
    out.left = kept.len();
    release(dlq, &kept).await;
    Ok(out)
}
