//! The engine: observe -> plan -> apply for one resource key (design invariant 1,
//! level-triggered), used by the event path and, through [`apply`], by the rescan. It reads
//! AgentCore now, derives the desired entry, reads the registry now, plans with the core
//! planner, applies, and records state. The event that named the key is never consulted, so
//! duplicates, reordering and replays are harmless. [`lease`] runs work under a key's lease;
//! [`ending`] decides, as a pure function, how the message that named the key ends.

pub mod apply;
pub mod ending;
pub mod lease;

use std::collections::BTreeMap;

use registrar_core::desired::{
    DeriveOptions, DesiredEntry, gateway_entry, runtime_entry, target_entry,
};
use registrar_core::enable::EnablePolicy;
use registrar_core::identity::{ResourceKey, ResourceKind};
use registrar_core::observed::Lifecycle;
use registrar_core::plan::{Action, DeleteGuard, Observation, PlanContext, RecordedResource, plan};
use registrar_core::ports::{AgentCore, Registry, StateStore};
use registrar_core::{ErrorClass, PortError};

use self::apply::{Applier, Manifests};
use crate::aws::fleet::Fleet;
use crate::resync::report::{Outcome, Status};

/// Settings of key reconciles.
#[derive(Debug, Clone, Copy)]
pub struct ReconcileOptions {
    pub derive: DeriveOptions,
    pub policy: registrar_core::plan::Policy,
    pub adopt_legacy: bool,
    /// Our `registered_by` at the registry, when configured.
    pub identity: Option<registrar_core::plan::RegistryIdentity>,
    pub enable: EnablePolicy,
    /// Whether `mcpServer` targets are registered.
    pub mcp_targets: bool,
}

/// How one key ended.
#[derive(Debug, Clone, PartialEq)]
pub enum KeyOutcome {
    /// Converged, or nothing to do; the rows say what was done.
    Done(Vec<Outcome>),
    /// The resource is CREATING or UPDATING (or similar): check again later.
    Waiting(String),
    /// A step failed; its class says whether retrying can help.
    Failed(PortError),
}

/// The entries a reconcile created or overwrote at the registry, noted before each such write
/// (as the record a repair verifies them by). When the lease is lost after one, the write may
/// have landed after another worker's deregistration: the key is reconciled again under a new
/// lease with these as its record, so an entry of a resource now gone is removed again.
#[derive(Debug)]
pub struct WriteLog {
    notes: std::sync::Mutex<Vec<RecordedResource>>,
    keeping: bool,
}

impl Default for WriteLog {
    fn default() -> Self {
        Self {
            notes: std::sync::Mutex::default(),
            keeping: true,
        }
    }
}

impl WriteLog {
    /// A log that keeps nothing: a rescan is not repaired after a lost lease (the next event
    /// or rescan of a key repairs it), and a record per write of a large fleet would be held
    /// to its end.
    pub fn discarding() -> Self {
        Self {
            notes: std::sync::Mutex::default(),
            keeping: false,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<RecordedResource>> {
        self.notes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Notes that `d` is about to be written.
    pub fn note(&self, d: &DesiredEntry) {
        if self.keeping {
            // An enable may still be owed: a repair that finds the resource READY settles it.
            self.lock().push(RecordedResource::written(d, false));
        }
    }

    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    pub fn take(&self) -> Vec<RecordedResource> {
        std::mem::take(&mut *self.lock())
    }
}

/// What AgentCore says about the key right now.
enum Seen {
    Ready(Box<DesiredEntry>),
    /// READY but not registrable (an http gateway URL, a non-MCP target): nothing to register.
    NothingToRegister(String),
    InProgress(String),
    /// A target waits for an administrator's OAuth consent: reported, not waited for.
    NeedsAuthorization(String),
    /// The previous configuration may still serve: keep the entry as it is.
    Degraded(String),
    /// NotFound, DELETING or FAILED: deregister what we own.
    Gone,
}

async fn observe<A: AgentCore>(
    ac: &A,
    key: &ResourceKey,
    opts: ReconcileOptions,
) -> Result<Seen, PortError> {
    let lifecycle_seen = |lifecycle: &Lifecycle| match lifecycle {
        Lifecycle::Ready => None,
        Lifecycle::InProgress(s) => Some(Seen::InProgress(s.clone())),
        Lifecycle::NeedsAuthorization(s) => Some(Seen::NeedsAuthorization(s.clone())),
        Lifecycle::Degraded(s) => Some(Seen::Degraded(s.clone())),
        Lifecycle::Failed(_) | Lifecycle::Deleting => Some(Seen::Gone),
    };
    let derived = |d: Result<DesiredEntry, registrar_core::desired::Unregistrable>| match d {
        Ok(d) => Seen::Ready(Box::new(d)),
        Err(u) => Seen::NothingToRegister(u.reason),
    };
    Ok(match key.kind {
        ResourceKind::Gateway => match ac.get_gateway(&key.id).await? {
            None => Seen::Gone,
            Some(gw) => lifecycle_seen(&gw.lifecycle)
                .unwrap_or_else(|| derived(gateway_entry(&gw, opts.derive))),
        },
        ResourceKind::Runtime => match ac.get_runtime(&key.id).await? {
            None => Seen::Gone,
            Some(rt) => lifecycle_seen(&rt.lifecycle)
                .unwrap_or_else(|| derived(runtime_entry(&rt, opts.derive))),
        },
        ResourceKind::Target => {
            let gateway_id = key.gateway_id.clone().unwrap_or_default();
            match ac.get_gateway(&gateway_id).await? {
                None => Seen::Gone,
                Some(gw) => match ac.get_target(&gw, &key.id).await? {
                    None => Seen::Gone,
                    Some(t) => match lifecycle_seen(&t.lifecycle)
                        .or_else(|| lifecycle_seen(&gw.lifecycle))
                    {
                        Some(seen) => seen,
                        None => match target_entry(&t, opts.derive) {
                            Some(d) => derived(d),
                            None => Seen::NothingToRegister("not an MCP server target".into()),
                        },
                    },
                },
            }
        }
    })
}

/// Reconciles one key. Never panics; every failure comes back classified. Registry writes are
/// noted in `written`; `suspects` stand in for the record when the state has none (a repair
/// after a lost lease, see [`WriteLog`]).
pub async fn reconcile<A: AgentCore, R: Registry, S: StateStore>(
    fleet: &Fleet<A>,
    registry: &R,
    state: &S,
    key: &ResourceKey,
    opts: ReconcileOptions,
    written: &WriteLog,
    suspects: &[RecordedResource],
) -> KeyOutcome {
    match try_reconcile(fleet, registry, state, key, opts, written, suspects).await {
        Ok(outcome) => outcome,
        Err(e) => KeyOutcome::Failed(e),
    }
}

/// Observe -> plan -> apply for one key.
async fn try_reconcile<A: AgentCore, R: Registry, S: StateStore>(
    fleet: &Fleet<A>,
    registry: &R,
    state: &S,
    key: &ResourceKey,
    opts: ReconcileOptions,
    written: &WriteLog,
    suspects: &[RecordedResource],
) -> Result<KeyOutcome, PortError> {
    if key.kind == ResourceKind::Target && !opts.mcp_targets {
        return Ok(KeyOutcome::Done(Vec::new()));
    }
    // Only accounts and regions this worker reads; anything else is refused (terminal).
    let ac = fleet.route(&key.account, &key.region).await?;
    // Two reads that need nothing of each other, made together: a reconcile waits for the
    // slower, not for both. When both fail, the state's error is the one reported, as when they
    // ran one after the other.
    let (looked_up, seen) = match futures::future::join(
        state.lookup_with_manifest(key),
        observe(ac, key, opts),
    )
    .await
    {
        (Ok(looked_up), Ok(seen)) => (looked_up, seen),
        (Err(e), _) | (Ok(_), Err(e)) => return Err(e),
    };
    let (recorded, manifest) = match looked_up {
        (Some(r), manifest) => (Some(r), Some(manifest)),
        (None, _) => (suspects.last().cloned(), None),
    };
    let targets = if cascades(key, &seen, opts) {
        targets_of(state, key).await?
    } else {
        Vec::new()
    };
    let obs = match observation(seen, key, recorded.as_ref(), &targets) {
        Ok(obs) => obs,
        Err(settled) => return Ok(settled),
    };
    let manifests = manifest_of(&obs, recorded.as_ref(), manifest);
    let recorded_rows: Vec<RecordedResource> = recorded.into_iter().chain(targets).collect();
    let current = entries_at(registry, &obs, &recorded_rows).await?;
    let ctx = PlanContext {
        policy: opts.policy,
        adopt_legacy: opts.adopt_legacy,
        // One resource AgentCore answered for: the mass-deletion guard is for full rescans.
        guard: DeleteGuard {
            force: true,
            ..DeleteGuard::default()
        },
        identity: opts.identity,
    };
    let gone = obs.desired.is_empty();
    let actions = plan(obs, &current, &recorded_rows, ctx);
    let mut rows = if gone {
        kept_unverified(&current, &recorded_rows, &actions, ctx)
    } else {
        Vec::new()
    };
    let applier = Applier {
        agentcore: fleet,
        registry,
        state,
        ctx,
        enable: opts.enable,
        manifests,
        recorded: recorded_rows
            .iter()
            .map(|r| (r.resource.arn.as_str(), r))
            .collect(),
        written,
    };
    // Deregistrations first: they may free a path a registration wants.
    let (first, rest): (Vec<Action>, Vec<Action>) = actions
        .into_iter()
        .partition(|a| matches!(a, Action::Deregister(_)));
    for action in first.into_iter().chain(rest) {
        rows.push(applier.apply(action).await);
    }
    concluded(rows)
}

/// Whether the key is a gateway AgentCore no longer has (NotFound, DELETING, FAILED) while
/// targets are registered: its targets' entries then go in the same reconcile.
///
/// A gateway's targets cannot outlive it (AgentCore deletes them with it, or refuses to delete
/// a gateway that has any), and their own Delete events may never come: CloudTrail delivery is
/// best effort, and with the gateway gone nothing else would name them before the next rescan.
/// So the reconcile of a gone gateway plans its recorded targets with it (see [`targets_of`]).
/// Each target entry still goes only as every deregistration does: the applier asks AgentCore
/// for that very target first (a FAILED gateway's READY target is kept) and removes only an
/// entry a GET verifies as ours; an entry not ours is reported and left alone.
///
/// Leases: the targets are deregistered under the gateway key's lease, their state writes fenced
/// by it; the target keys' own leases are not taken. Fencing compares lease versions, which are
/// acquisition times whatever the lease's name, so a target reconcile that took its lease before
/// this one did holds an older version: once this reconcile has released the target's claim and
/// tombstoned its record, that reconcile's next state write is refused and it stops, and since a
/// registration or update claims the path before it writes to the registry, it stops before
/// writing there too. A target reconcile that reads AgentCore after the deletion converges on
/// the same removals, all idempotent. Fencing cannot order two cases: a target reconcile whose
/// registry write is already in flight, and one that took its lease after this one but read the
/// target before the gateway went. Taking each target's lease (waiting for its holder) would
/// close them, at the cost of lease plumbing the engine does not have (owner, renewal) and of a
/// gateway deletion waiting on every target's holder; the windows are short, need a target
/// event racing the gateway's deletion, and leave at worst an entry of a gone target, which the
/// next rescan removes as it does today. Where clocks disagree so much that a target item
/// carries a newer version than this lease, this reconcile's write is refused as if its lease
/// were lost: the message is retried, and nothing is removed without authority.
fn cascades(key: &ResourceKey, seen: &Seen, opts: ReconcileOptions) -> bool {
    key.kind == ResourceKind::Gateway && opts.mcp_targets && matches!(seen, Seen::Gone)
}

/// The recorded targets of the gateway `key` names (of its account, when the key says).
async fn targets_of<S: StateStore>(
    state: &S,
    key: &ResourceKey,
) -> Result<Vec<RecordedResource>, PortError> {
    Ok(state
        .targets_of(key)
        .await?
        .into_iter()
        .filter(|t| key.account.is_empty() || t.resource.account == key.account)
        .collect())
}

/// What the planner is to work from, or the key's outcome when there is nothing to plan (not
/// READY yet, waiting for consent, degraded, not registrable, or gone and never recorded).
/// `targets` are the recorded targets of a gone gateway ([`cascades`]).
fn observation(
    seen: Seen,
    key: &ResourceKey,
    recorded: Option<&RecordedResource>,
    targets: &[RecordedResource],
) -> Result<Observation, KeyOutcome> {
    let mut obs = Observation::default();
    match seen {
        Seen::InProgress(status) => return Err(KeyOutcome::Waiting(status)),
        Seen::NeedsAuthorization(status) => {
            // Waiting would only dead-letter it after --max-wait: consent may take days. Its
            // next Update/Synchronize event (or a rescan) looks again.
            tracing::warn!(key = ?key, status, "{}", registrar_core::observed::AUTHORIZATION_NEEDED);
            return Err(KeyOutcome::Done(vec![Outcome::for_kind(
                key.kind,
                &key.id,
                "",
                "",
                Status::NeedsAuthorization,
                format!(
                    "{status}: {}",
                    registrar_core::observed::AUTHORIZATION_NEEDED
                ),
            )]));
        }
        Seen::Degraded(status) => {
            tracing::info!(key = ?key, status, "Resource degraded; its entry is kept as it is.");
            return Err(KeyOutcome::Done(Vec::new()));
        }
        Seen::NothingToRegister(reason) => {
            tracing::info!(key = ?key, reason, "Resource is READY but gets no entry.");
            return Err(KeyOutcome::Done(Vec::new()));
        }
        Seen::Ready(d) => {
            if d.inbound_auth == registrar_core::desired::InboundAuth::Open {
                tracing::warn!(path = %d.path, "Gateway has no inbound authorization (authorizerType NONE): anyone who can reach it can invoke its tools.");
            }
            obs.present.insert(d.resource.arn.clone());
            obs.desired.push(*d);
        }
        // AgentCore answered for this very resource (and so for its gateway's targets): the
        // plan works from the records alone, each removal checked with AgentCore again.
        Seen::Gone => {
            obs.covered.extend(
                recorded
                    .into_iter()
                    .chain(targets)
                    .map(|r| r.resource.scope()),
            );
            if obs.covered.is_empty() {
                return Err(KeyOutcome::Done(Vec::new()));
            }
        }
    }
    Ok(obs)
}

/// Rows for recorded resources of a gone resource's plan whose path holds an entry not verified
/// as theirs (another publisher's, or one that no longer points where we wrote it): the planner
/// leaves such an entry alone (invariant 2), and the key's outcome says so rather than nothing.
/// Their records stay, as when the applier finds such an entry before a removal.
fn kept_unverified(
    current: &[registrar_core::plan::CurrentEntry],
    recorded: &[RecordedResource],
    actions: &[Action],
    ctx: PlanContext,
) -> Vec<Outcome> {
    let planned = |path: &str| {
        actions.iter().any(|a| match a {
            Action::Deregister(d) => d.path == path,
            Action::Skip { path: p, .. } => p == path,
            _ => false,
        })
    };
    recorded
        .iter()
        .filter(|r| !planned(&r.path))
        .filter_map(|r| {
            let entry = current
                .iter()
                .find(|e| e.collection == r.collection && e.path == r.path)?;
            let expected: Vec<_> = r.pointing.iter().cloned().collect();
            let why = entry
                .verify(&r.resource.arn, &expected, ctx.identity, false)
                .err()?;
            Some(Outcome::for_resource(
                &r.resource,
                &r.name,
                &r.path,
                Status::Conflict,
                format!("kept: the entry at this path is not verified as ours: {why}"),
            ))
        })
        .collect()
}

/// What the registry holds now at the paths involved (a GET is authoritative; lists hide some
/// entries). With nothing recorded, nothing is asked: the plan is a registration, which never
/// overwrites and answers 409 for a taken path, and only then is the path read and the plan made
/// again (see [`Applier`]). So a new resource costs no read before its registration.
async fn entries_at<R: Registry>(
    registry: &R,
    obs: &Observation,
    recorded: &[RecordedResource],
) -> Result<Vec<registrar_core::plan::CurrentEntry>, PortError> {
    if recorded.is_empty() {
        return Ok(Vec::new());
    }
    let mut wanted: Vec<(registrar_core::desired::Collection, String)> = obs
        .desired
        .iter()
        .map(|d| (d.collection(), d.path.clone()))
        .chain(recorded.iter().map(|r| (r.collection, r.path.clone())))
        .collect();
    wanted.sort();
    wanted.dedup();
    let mut current = Vec::new();
    for (collection, path) in &wanted {
        if let Some(entry) = registry.get(*collection, path).await? {
            current.push(entry);
        }
    }
    Ok(current)
}

/// The manifest row that writing the key's entry compares with ([`Applier`]'s `after_write`):
/// the one read with the record when the entry's resource is the recorded one (`read_with`
/// says what that read found); else the applier reads it with the path claim, before its
/// registry write; none for a resource that is gone (a deregistration deletes the row unread).
fn manifest_of(
    obs: &Observation,
    recorded: Option<&RecordedResource>,
    read_with: Option<Option<registrar_core::tokens::ManifestFields>>,
) -> Manifests {
    let Some(d) = obs.desired.first() else {
        return Manifests::all(BTreeMap::new());
    };
    match read_with {
        Some(found) if recorded.is_some_and(|r| r.resource.arn == d.resource.arn) => {
            Manifests::known(BTreeMap::from([(d.resource.arn.clone(), found)]))
        }
        _ => Manifests::known(BTreeMap::new()),
    }
}

/// The key's outcome from the rows applied: the worst failure (a retryable one first, so the
/// message is retried rather than dead-lettered while any part can still succeed), or done.
fn concluded(rows: Vec<Outcome>) -> Result<KeyOutcome, PortError> {
    let failed: Vec<&Outcome> = rows.iter().filter(|r| r.status == Status::Failed).collect();
    if let Some(worst) = failed
        .iter()
        .find(|r| r.error_class != Some(ErrorClass::Terminal))
        .or(failed.first())
    {
        let class = worst.error_class.unwrap_or(ErrorClass::Transient);
        return Err(PortError::new(
            "reconcile",
            worst.path.clone(),
            class,
            worst.message.clone(),
        ));
    }
    Ok(KeyOutcome::Done(rows))
}

#[cfg(test)]
#[path = "deletion_tests.rs"]
mod deletion_tests;

#[cfg(test)]
mod tests {
    use registrar_testkit::fixtures::{ACCOUNT, REGION, recorded, server_entry};

    use super::*;

    fn key() -> ResourceKey {
        ResourceKey {
            kind: ResourceKind::Gateway,
            account: ACCOUNT.into(),
            region: REGION.into(),
            id: "gw-one".into(),
            gateway_id: None,
        }
    }

    #[test]
    fn what_was_seen_decides_whether_there_is_anything_to_plan() {
        let waiting = observation(Seen::InProgress("CREATING".into()), &key(), None, &[]);
        assert_eq!(waiting.err(), Some(KeyOutcome::Waiting("CREATING".into())));
        let never_known = observation(Seen::Gone, &key(), None, &[]);
        assert_eq!(never_known.err(), Some(KeyOutcome::Done(Vec::new())));
        let degraded = observation(Seen::Degraded("UPDATE_FAILED".into()), &key(), None, &[]);
        assert_eq!(
            degraded.err(),
            Some(KeyOutcome::Done(Vec::new())),
            "kept as it is"
        );
        let consent = observation(
            Seen::NeedsAuthorization("CREATE_PENDING_AUTH".into()),
            &key(),
            None,
            &[],
        );
        assert!(
            matches!(&consent, Err(KeyOutcome::Done(rows)) if rows[0].status == Status::NeedsAuthorization),
            "{consent:?}"
        );
    }

    #[test]
    fn a_gone_resource_that_was_recorded_is_planned_for_its_scope_alone() {
        let d = server_entry("one", "gw-one");
        let obs = observation(Seen::Gone, &key(), Some(&recorded(&d)), &[]).expect("a plan");
        assert!(obs.desired.is_empty() && obs.present.is_empty());
        assert_eq!(
            obs.covered.len(),
            1,
            "only this resource's scope is authoritative"
        );
        let ready =
            observation(Seen::Ready(Box::new(d.clone())), &key(), None, &[]).expect("a plan");
        assert_eq!(ready.desired, std::slice::from_ref(&d));
        assert!(ready.present.contains(&d.resource.arn));
    }

    #[test]
    fn a_retryable_failure_concludes_a_key_before_a_terminal_one() {
        let d = server_entry("one", "gw-one");
        let failed = |class| Outcome {
            error_class: Some(class),
            ..Outcome::for_desired(&d, Status::Failed, "no")
        };
        let e = concluded(vec![
            failed(ErrorClass::Terminal),
            failed(ErrorClass::Transient),
        ])
        .expect_err("failed");
        assert_eq!(
            e.class,
            ErrorClass::Transient,
            "retried while a part can still succeed"
        );
        let done = concluded(vec![Outcome::for_desired(&d, Status::Registered, "")]);
        assert!(matches!(done, Ok(KeyOutcome::Done(rows)) if rows.len() == 1));
    }
}
