//! `registrar resync`: scan AgentCore, read the registry and the state, plan, apply, report.

pub mod report;
pub mod scan;

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use futures::{StreamExt, stream};
use registrar_core::PortError;
use registrar_core::desired::Collection;
use registrar_core::enable::EnablePolicy;
use registrar_core::observed::Lifecycle;
use registrar_core::plan::{Action, PlanContext, intact, plan};
use registrar_core::ports::{AgentCore, Registry, StateStore};
use registrar_core::tokens::ManifestFields;

use self::report::{Outcome, Report, Status};
use self::scan::{Known, Progress, ScanOptions, scan_fleet};
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
    let scanned = scan_fleet(agentcore, opts.scan, &known, progress).await;
    drop(known);
    let unauthenticated: Vec<String> = scanned
        .observation
        .desired
        .iter()
        .filter(|d| {
            d.inbound_auth == registrar_core::desired::InboundAuth::Open
                && d.resource.kind == registrar_core::identity::ResourceKind::Gateway
        })
        .map(|d| d.path.clone())
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
    let manifest_entries = scanned
        .observation
        .desired
        .iter()
        .filter(|d| d.manifest.is_some())
        .count()
        + scanned
            .unread
            .iter()
            .filter(|i| manifests.contains_key(&i.recorded.resource.arn))
            .count();
    // The entries move into the plan; the registry's listing is not needed past it.
    let actions = plan(scanned.observation, &current, &recorded, opts.ctx);
    drop(current);
    let mut outcomes: Vec<Outcome> = scanned
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
        .chain(scanned.unread.iter().map(Outcome::unread))
        .collect();
    let errors = scanned.errors.iter().map(ToString::to_string).collect();

    if opts.dry_run {
        outcomes.extend(actions.iter().map(Outcome::planned));
        let mut report = Report::new(true, outcomes, errors, manifest_entries, 0);
        report.unauthenticated = unauthenticated;
        return Ok(report);
    }

    let writes = actions.iter().filter(|a| a.writes()).count();
    let applier = Applier {
        agentcore,
        registry,
        state,
        ctx: opts.ctx,
        enable: opts.enable,
        recorded: recorded
            .into_iter()
            .map(|r| (r.resource.arn.clone(), r))
            .collect(),
        manifests,
        written: &crate::engine::WriteLog::discarding(),
    };
    // Deregistrations first: they may free a path a registration of this run wants.
    let (first, rest): (Vec<Action>, Vec<Action>) = actions
        .into_iter()
        .partition(|a| matches!(a, Action::Deregister(_)));
    let conc = opts.registry_concurrency.max(1);
    for batch in [first, rest] {
        let done: Vec<Outcome> = stream::iter(batch)
            .map(|a| async {
                if a.writes() {
                    progress.yield_to_events().await;
                }
                let o = applier.apply(a).await;
                progress.applied.fetch_add(1, Ordering::Relaxed);
                o
            })
            .buffer_unordered(conc)
            .collect()
            .await;
        outcomes.extend(done);
    }
    let mut report = Report::new(false, outcomes, errors, manifest_entries, writes);
    report.unauthenticated = unauthenticated;
    Ok(report)
}
