//! `registrar resync`: scan AgentCore, read the registry and the state, plan, apply, report.

pub mod report;
pub mod scan;

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use futures::stream::FuturesUnordered;
use futures::{StreamExt, stream};
use registrar_core::PortError;
use registrar_core::desired::Collection;
use registrar_core::enable::EnablePolicy;
use registrar_core::observed::Lifecycle;
use registrar_core::plan::{Action, PlanContext, Streaming, intact};
use registrar_core::ports::{AgentCore, Registry, StateStore};
use registrar_core::tokens::ManifestFields;

use self::report::{Outcome, Report, Status};
use self::scan::{Entries, Known, Progress, ScanOptions, ScopeListing, list_fleet, read_fleet};
use crate::aws::fleet::Fleet;
use crate::engine::apply::Applier;

/// Settings of one resync.
#[derive(Debug, Clone, Copy)]
pub struct ResyncOptions {
    pub scan: ScanOptions,
    pub ctx: PlanContext,
    pub enable: EnablePolicy,
    pub dry_run: bool,
    /// Concurrent registry writes.
    pub registry_concurrency: usize,
    /// Read every resource, even those listed with the `updatedAt` of an intact entry.
    pub deep: bool,
}

/// Runs one full resync. An `Err` means nothing was applied (the registry or the state could
/// not be read); per-resource failures are rows of the report.
pub async fn resync<A: AgentCore, R: Registry, S: StateStore>(
    agentcore: &Fleet<A>,
    registry: &R,
    state: &S,
    opts: ResyncOptions,
    progress: &Progress,
) -> Result<Report, PortError> {
    let (servers, agents, recorded, manifests) = futures::try_join!(
        registry.list(Collection::Server),
        registry.list(Collection::Agent),
        state.resources(),
        state.manifests()
    )?;
    let current: Vec<_> = servers.into_iter().chain(agents).collect();
    let manifests: BTreeMap<String, ManifestFields> =
        manifests.into_iter().map(|m| (m.arn.clone(), m)).collect();
    let known = if opts.deep {
        Known::default()
    } else {
        Known::new(intact(&recorded, &current, opts.ctx.identity))
    };
    // Listed first, every scope, so the planner knows which paths more than one resource wants.
    let listings = list_fleet(agentcore, opts.scan, progress).await;
    // Targets are listed only as their gateways are read: with them, everything waits.
    let wanted: Vec<_> = if opts.scan.mcp_targets {
        Vec::new()
    } else {
        listings.iter().flat_map(ScopeListing::wanted).collect()
    };
    let mut planner = Streaming::new(&current, &recorded, wanted, opts.ctx);
    let applier = Applier {
        agentcore,
        registry,
        state,
        ctx: opts.ctx,
        enable: opts.enable,
        recorded: recorded
            .iter()
            .map(|r| (r.resource.arn.as_str(), r))
            .collect(),
        manifests: crate::engine::apply::Manifests::all(manifests),
        written: &crate::engine::WriteLog::discarding(),
    };
    let conc = opts.registry_concurrency.max(1);
    let apply = |a: Action| {
        let applier = &applier;
        async move {
            if opts.dry_run {
                return Outcome::planned(&a);
            }
            if a.writes() {
                progress.yield_to_events().await;
            }
            let o = applier.apply(a).await;
            progress.applied.fetch_add(1, Ordering::Relaxed);
            o
        }
    };

    // Entries are planned, and applied, as the scan derives them whenever nothing else of the
    // run bears on them; the rest wait for the whole observation. A rescan holds the entries
    // in flight and those that wait, not every entry of the fleet.
    // Room for every scope's reads in flight (each read reserves its entry's room before it
    // starts) and for the applier's: reads run at their own pace, as many as a whole scan
    // would run, and the entries held stay bounded by that.
    let room = conc + opts.scan.concurrency.max(1) * listings.len().max(1);
    let (tx, mut rx) = tokio::sync::mpsc::channel(room);
    let scanning = async {
        let tx = tx;
        read_fleet(
            agentcore,
            listings,
            opts.scan,
            &known,
            progress,
            Entries::Send(&tx),
        )
        .await
    };
    let mut seen = Seen::default();
    let mut waiting = Vec::new();
    let mut outcomes: Vec<Outcome> = Vec::new();
    let mut writes = 0;
    let planning = async {
        let mut applying = FuturesUnordered::new();
        let mut open = true;
        loop {
            tokio::select! {
                d = rx.recv(), if open && applying.len() < conc => match d {
                    Some(d) => {
                        seen.note(&d);
                        match planner.plan_alone(d) {
                            Ok(a) => {
                                writes += usize::from(a.writes());
                                applying.push(apply(a));
                            }
                            Err(d) => waiting.push(d),
                        }
                    }
                    None => open = false,
                },
                Some(o) = applying.next(), if !applying.is_empty() => outcomes.push(o),
                else => break,
            }
        }
    };
    let (mut scanned, ()) = tokio::join!(scanning, planning);
    drop(known);
    for d in &scanned.observation.desired {
        seen.note(d);
    }
    scanned.observation.desired.append(&mut waiting);
    let unauthenticated: Vec<String> = seen
        .unauthenticated
        .into_iter()
        .chain(
            scanned
                .unread
                .iter()
                .filter(|i| i.unauthenticated)
                .map(|i| i.recorded.path.clone()),
        )
        .collect();
    // One line per rescan, not one per gateway (a large fleet would print hundreds).
    if !unauthenticated.is_empty() {
        let mut sorted: Vec<&String> = unauthenticated.iter().collect();
        sorted.sort();
        let first: Vec<&str> = sorted.iter().take(5).map(|p| p.as_str()).collect();
        tracing::warn!(
            count = unauthenticated.len(),
            first = %first.join(", "),
            "Gateways have no inbound authorization (authorizerType NONE): anyone who can reach them can invoke their tools. The full list is in the resync report (registrar resync --dry-run) and the metric registrar_unauthenticated_gateways counts them."
        );
    }
    let manifest_entries = seen.manifests
        + scanned
            .unread
            .iter()
            .filter(|i| applier.manifests.contains_key(&i.recorded.resource.arn))
            .count();
    // The entries move into the plan; the registry's listing is not needed past it.
    let observation = std::mem::take(&mut scanned.observation);
    let actions = planner.finish(observation);
    drop(current);
    outcomes.extend(
        scanned
            .discovered
            .iter()
            .filter_map(|d| {
                if let Some(reason) = &d.unregistrable {
                    Some(Outcome::for_kind(
                        d.kind,
                        &d.name,
                        &d.arn,
                        &d.path,
                        Status::Skipped,
                        reason.clone(),
                    ))
                } else if let Lifecycle::NeedsAuthorization(status) = &d.lifecycle {
                    Some(Outcome::for_kind(
                        d.kind,
                        &d.name,
                        &d.arn,
                        "",
                        Status::NeedsAuthorization,
                        format!(
                            "{status}: {}",
                            registrar_core::observed::AUTHORIZATION_NEEDED
                        ),
                    ))
                } else if d.path.is_empty() {
                    Some(Outcome::for_kind(
                        d.kind,
                        &d.name,
                        &d.arn,
                        "",
                        Status::Waiting,
                        format!("AgentCore status {}", d.lifecycle.as_str()),
                    ))
                } else {
                    None
                }
            })
            .chain(scanned.unread.iter().map(Outcome::unread)),
    );
    let errors = scanned.errors.iter().map(ToString::to_string).collect();
    writes += actions.iter().filter(|a| a.writes()).count();

    // Deregistrations first (the plan puts them first): they may free a path a registration of
    // this run wants. Split in place, not copied.
    let first = actions
        .iter()
        .rposition(|a| matches!(a, Action::Deregister(_)))
        .map_or(0, |i| i + 1);
    let mut actions = actions.into_iter();
    let deregistrations: Vec<Action> = actions.by_ref().take(first).collect();
    for batch in [deregistrations, actions.collect()] {
        let done: Vec<Outcome> = stream::iter(batch)
            .map(apply)
            .buffer_unordered(conc)
            .collect()
            .await;
        outcomes.extend(done);
    }
    let mut report = Report::new(
        opts.dry_run,
        outcomes,
        errors,
        manifest_entries,
        if opts.dry_run { 0 } else { writes },
    );
    report.unauthenticated = unauthenticated;
    Ok(report)
}

/// What a run notes of every entry it derived, planned on its own or not.
#[derive(Debug, Default)]
struct Seen {
    /// Paths of gateways anyone can invoke.
    unauthenticated: Vec<String>,
    /// Entries that need an egress token.
    manifests: usize,
}

impl Seen {
    fn note(&mut self, d: &registrar_core::desired::DesiredEntry) {
        if d.inbound_auth == registrar_core::desired::InboundAuth::Open
            && d.resource.kind == registrar_core::identity::ResourceKind::Gateway
        {
            self.unauthenticated.push(d.path.clone());
        }
        self.manifests += usize::from(d.manifest.is_some());
    }
}
