//! The pure planner: desired entries + what the registry holds + policy -> actions.
//!
//! It enforces ownership (invariant 2: only entries we own are changed or removed), deletion
//! only on authority (invariant 3: an owned entry is removed only when a complete listing of
//! its scope no longer shows its resource, or the resource moved to another path), and one
//! resource per path (an older resource keeps a contested path; the other is a conflict).

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};

use crate::desired::{Collection, DesiredEntry, EntryBody, Pointing};
use crate::identity::{Owner, ResourceRef, Scope};

/// An entry as the registry holds it (from a list or a GET).
#[derive(Debug, Clone, PartialEq)]
pub struct CurrentEntry {
    /// Which collection it is in.
    pub collection: Collection,
    /// Its registry path.
    pub path: String,
    /// Its display name (`server_name`, `display_name` or `name`).
    pub name: String,
    /// Its metadata (ownership: `source` and the ARN; our `fingerprint`).
    pub metadata: Map<String, Value>,
    /// Its tags.
    pub tags: Vec<String>,
    /// Whether it is enabled (`is_enabled`).
    pub enabled: bool,
    /// An agent's `status` (`draft`, ...), kept on update since a PUT would reset it.
    pub status: Option<String>,
    /// Where it points; `None` when the registry did not say.
    pub pointing: Option<Pointing>,
    /// Who registered it, when the registry says (servers: rewritten by every overwrite).
    pub registered_by: Option<String>,
    /// A server's `mcp_endpoint`, when the registry says (a GET does, a list does not).
    pub mcp_endpoint: Option<String>,
}

/// The name the registry knows this service by (`registered_by` of what it registers), when
/// the operator configured it. Set once per process from configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegistryIdentity(&'static str);

impl RegistryIdentity {
    /// Keeps `name` for the life of the process (it is configuration, read once).
    pub fn configured(name: String) -> Self {
        Self(Box::leak(name.into_boxed_str()))
    }

    /// The configured name.
    pub fn as_str(self) -> &'static str {
        self.0
    }
}

impl CurrentEntry {
    /// The fingerprint we stored in the metadata when we last wrote the entry.
    pub fn fingerprint(&self) -> Option<&str> {
        self.metadata.get("fingerprint").and_then(Value::as_str)
    }

    /// The entry the registry holds after we wrote `desired`.
    pub fn written(desired: &DesiredEntry, enabled: bool, status: Option<String>) -> Self {
        let (tags, name) = match &desired.body {
            EntryBody::Server(s) => (s.tags.clone(), s.name.clone()),
            EntryBody::Agent(a) => (a.tags.clone(), a.name.clone()),
        };
        Self {
            collection: desired.collection(),
            path: desired.path.clone(),
            name,
            metadata: desired.body.metadata().clone(),
            tags,
            enabled,
            status,
            pointing: Some(desired.body.pointing()),
            registered_by: None,
            mcp_endpoint: None,
        }
    }

    /// Whose entry this is, from its metadata and tags ([`Owner::classify`]).
    pub fn owner(&self, adopt_legacy: bool) -> Owner {
        Owner::classify(&self.metadata, &self.tags, adopt_legacy)
    }

    /// Whether an entry whose metadata says it is ours (or the Python tool's) for `arn` really
    /// is: it points where we would point it (`expected`: what we want now and what we last
    /// wrote), with the auth scheme we would give it, and, for servers, was registered by us when
    /// the identity is configured. Metadata alone can be copied by anyone allowed to register,
    /// and a server overwrite keeps the stored credential (`registry-contract.md` §1.6).
    /// `Err` says what differs. With nothing in `expected`, only the identity is checked.
    pub fn verify(
        &self,
        arn: &str,
        expected: &[Pointing],
        identity: Option<RegistryIdentity>,
        adopt_legacy: bool,
    ) -> Result<(), String> {
        let legacy = match self.owner(adopt_legacy) {
            Owner::Us(r) if r.arn == arn => false,
            Owner::Legacy(r) if r.arn == arn => true,
            _ => return Err(format!("its metadata does not name {arn}")),
        };
        // Servers only: an agent's `registered_by` stays the first publisher's across a PUT
        // (adopted agents keep the Python tool's), and only its owner or an admin may change it.
        let registered_by_us = || match (identity, &self.registered_by) {
            (Some(ours), by) if !legacy && self.collection == Collection::Server => match by {
                Some(by) if by == ours.as_str() => Ok(()),
                Some(by) => Err(format!(
                    "it was registered by {by:?}, not by this service ({:?})",
                    ours.as_str()
                )),
                None => Err("the registry does not say who registered it".into()),
            },
            _ => Ok(()),
        };
        if expected.is_empty() {
            // Rows recorded before pointing was kept (or state lost): with an identity, a server
            // registered by us is ours; otherwise nothing tells, and nothing is removed.
            return match identity {
                Some(_) if self.collection == Collection::Server && !legacy => registered_by_us(),
                _ => Err("nothing we recorded writing tells where it should point".into()),
            };
        }
        let Some(have) = &self.pointing else {
            return Err("the registry does not say where it points".into());
        };
        let matches = |want: &Pointing| {
            have.url == want.url
                // We send mcp_endpoint = proxy_pass_url; a GET shows it, a list does not.
                && self.mcp_endpoint.as_ref().is_none_or(|m| *m == want.url)
                // The Python tool maps auth differently: an adopted entry is checked by URL.
                && (legacy || want.auth_scheme.is_none() || have.auth_scheme == want.auth_scheme)
        };
        if expected.iter().any(matches) {
            return registered_by_us();
        }
        let want = &expected[0];
        Err(
            if let Some(m) = self.mcp_endpoint.as_ref().filter(|m| **m != have.url) {
                format!("its mcp_endpoint is {m:?}, not {:?}", want.url)
            } else if have.url == want.url {
                format!(
                    "its auth scheme is {}, not {}",
                    have.auth_scheme.as_deref().unwrap_or("unset"),
                    want.auth_scheme.as_deref().unwrap_or("unset")
                )
            } else {
                format!("it points at {:?}, not at {:?}", have.url, want.url)
            },
        )
    }
}

/// What the state store recorded for a resource we applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedResource {
    /// The resource.
    pub resource: ResourceRef,
    /// The collection its entry is in.
    pub collection: Collection,
    /// The path of its entry.
    pub path: String,
    /// Fingerprint of the body last applied: equal to the desired one means nothing to write.
    pub fingerprint: String,
    /// AWS `updatedAt` when last applied: equal to the listed one means no Get is needed.
    pub aws_updated_at: String,
    /// We have set this entry's enabled state once (invariant 6) and never touch it again.
    pub enabled_set: bool,
    /// Where the entry we last wrote points; `None` in rows recorded before it was kept.
    pub pointing: Option<Pointing>,
    /// The resource's AWS name and the report's auth label, so rows of resources a rescan did not
    /// read look like rows it read; empty in rows recorded before they were kept.
    pub name: String,
    /// The summary table's Auth column.
    pub auth_label: String,
}

impl RecordedResource {
    /// The record of `desired` as written to the registry, its enable settled or not.
    pub fn written(desired: &DesiredEntry, enabled_set: bool) -> Self {
        Self {
            resource: desired.resource.clone(),
            collection: desired.collection(),
            path: desired.path.clone(),
            fingerprint: desired.fingerprint.clone(),
            aws_updated_at: desired.aws_updated_at.clone(),
            enabled_set,
            pointing: Some(desired.body.pointing()),
            name: desired.name.clone(),
            auth_label: desired.auth_label.clone(),
        }
    }
}

/// What a scan of AgentCore saw.
#[derive(Debug, Clone, Default)]
pub struct Observation {
    /// Entries for every READY, registrable resource.
    pub desired: Vec<DesiredEntry>,
    /// Identities of every resource that still exists and is not FAILED or DELETING
    /// (ready, in progress, degraded, or unregistrable): never deregistered.
    pub present: BTreeSet<String>,
    /// Scopes that were listed completely: only there is absence authoritative.
    pub covered: BTreeSet<Scope>,
}

/// Which writes a run may make.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Policy {
    /// Register, update and deregister.
    #[default]
    Sync,
    /// Register and update; never deregister.
    UpsertOnly,
    /// Register only; existing entries are left as they are.
    CreateOnly,
}

impl Policy {
    /// Reads the flag's value: `sync`, `upsert-only`, `create-only`.
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "sync" => Some(Self::Sync),
            "upsert-only" => Some(Self::UpsertOnly),
            "create-only" => Some(Self::CreateOnly),
            _ => None,
        }
    }

    /// The flag's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sync => "sync",
            Self::UpsertOnly => "upsert-only",
            Self::CreateOnly => "create-only",
        }
    }
}

/// Refuses a run that would remove more than `max_fraction` of the owned entries, unless
/// forced (a safety net for a scan that is complete but wrong, e.g. the wrong account).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DeleteGuard {
    /// The largest share of owned entries one run may remove (`0.0..=1.0`).
    pub max_fraction: f64,
    /// Remove past the share anyway (`--force`).
    pub force: bool,
}

impl Default for DeleteGuard {
    fn default() -> Self {
        Self {
            max_fraction: 0.5,
            force: false,
        }
    }
}

/// Settings of one planning run.
#[derive(Debug, Clone, Copy, Default)]
pub struct PlanContext {
    /// Which writes are allowed.
    pub policy: Policy,
    /// Whether entries of the Python tool are adopted (updated, deregistered) as ours.
    pub adopt_legacy: bool,
    /// The mass-deletion guard.
    pub guard: DeleteGuard,
    /// Our `registered_by`, when configured: servers registered by anyone else are not ours.
    pub identity: Option<RegistryIdentity>,
}

/// What an entry of `arn` may point at: what we want now, and what we last wrote.
fn expected_pointing(
    desired: Option<&DesiredEntry>,
    arn: &str,
    recorded: &[RecordedResource],
) -> Vec<Pointing> {
    let mut out: Vec<Pointing> = desired.map(|d| d.body.pointing()).into_iter().collect();
    out.extend(
        recorded
            .iter()
            .filter(|r| r.resource.arn == arn)
            .filter_map(|r| r.pointing.clone()),
    );
    out
}

/// Why an owned entry goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeregisterReason {
    /// A complete listing no longer shows the resource (or it FAILED / is DELETING).
    Gone,
    /// The resource now wants another path or collection (renamed, protocol changed).
    Moved {
        /// The path it wants now.
        to: String,
    },
}

/// An owned entry to remove.
#[derive(Debug, Clone, PartialEq)]
pub struct Deregistration {
    /// The resource the entry stood for.
    pub resource: ResourceRef,
    /// The collection the entry is in.
    pub collection: Collection,
    /// Its path.
    pub path: String,
    /// The resource's name, for reports.
    pub name: String,
    /// Why it goes.
    pub reason: DeregisterReason,
}

/// One step of a plan.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// The path is free: create the entry.
    Register(DesiredEntry),
    /// We own (or adopt) the entry and it differs.
    Update {
        /// What the entry should be.
        desired: DesiredEntry,
        /// What it is now.
        current: CurrentEntry,
    },
    /// We own the entry and it is what we want: no registry write.
    Unchanged {
        /// What the entry should be.
        desired: DesiredEntry,
        /// What it is (and should stay).
        current: CurrentEntry,
    },
    /// Remove an entry we own.
    Deregister(Deregistration),
    /// Another entry or resource holds the path: reported, never overwritten.
    Conflict {
        /// The entry we wanted there.
        desired: DesiredEntry,
        /// Who holds the path (another entry, or the resource that won it), for the report.
        holder: String,
    },
    /// A write the policy or the deletion guard forbids.
    Skip {
        /// The resource.
        resource: ResourceRef,
        /// Its name.
        name: String,
        /// Its path.
        path: String,
        /// Why the write was not made.
        reason: SkipReason,
    },
}

/// Why a planned write was not made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SkipReason {
    /// `create-only`: the entry exists and differs, and the policy forbids updating it.
    PolicyKeepsChanges,
    /// A policy other than `sync` keeps an owned entry whose resource is gone or moved.
    PolicyKeepsOwned(Policy),
    /// The deletion guard held back a deletion: too many owned entries would go at once.
    DeletionGuard {
        /// Owned entries whose resources are gone.
        gone: usize,
        /// Owned entries in all.
        owned: usize,
        /// The guard's limit, in percent of `owned`.
        limit_percent: u32,
    },
}

impl SkipReason {
    /// A deletion the guard held back (what the blocked-deletions metric counts): policies
    /// that never delete are configuration, not an alarm.
    pub fn is_blocked_deletion(&self) -> bool {
        matches!(self, Self::DeletionGuard { .. })
    }
}

impl std::fmt::Display for SkipReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::PolicyKeepsChanges => {
                f.write_str("policy create-only: the entry exists and differs")
            }
            Self::PolicyKeepsOwned(policy) => {
                write!(f, "policy {}: owned entry kept", policy.as_str())
            }
            Self::DeletionGuard {
                gone,
                owned,
                limit_percent,
            } => write!(
                f,
                "deletion guard: {gone} of {owned} owned entries would go (limit {limit_percent}%); rerun with --force"
            ),
        }
    }
}

impl Action {
    /// The registry path the action is about.
    pub fn path(&self) -> &str {
        match self {
            Self::Register(d)
            | Self::Update { desired: d, .. }
            | Self::Unchanged { desired: d, .. }
            | Self::Conflict { desired: d, .. } => &d.path,
            Self::Deregister(d) => &d.path,
            Self::Skip { path, .. } => path,
        }
    }

    /// Whether applying the action writes to the registry.
    pub fn writes(&self) -> bool {
        matches!(
            self,
            Self::Register(_) | Self::Update { .. } | Self::Deregister(_)
        )
    }
}

/// Plans one run. Deregistrations come first in the result, so that a path they free can be
/// taken by a registration in the same run. The observation's entries move into the actions
/// (a rescan holds one copy of each, not two).
pub fn plan(
    obs: Observation,
    current: &[CurrentEntry],
    recorded: &[RecordedResource],
    ctx: PlanContext,
) -> Vec<Action> {
    plan_with(obs, current, recorded, ctx, 0)
}

/// [`plan`], where `planned_apart` resources the run wants were planned on their own before
/// ([`Streaming`]) and are owned once it is done, besides those `owned_before` counts.
fn plan_with(
    obs: Observation,
    current: &[CurrentEntry],
    recorded: &[RecordedResource],
    ctx: PlanContext,
    planned_apart: usize,
) -> Vec<Action> {
    let (mut actions, freed) = {
        let desired_by_arn: BTreeMap<&str, &DesiredEntry> = obs
            .desired
            .iter()
            .map(|d| (d.resource.arn.as_str(), d))
            .collect();
        let candidates = deregistration_candidates(&obs, current, recorded, &desired_by_arn, ctx);
        let owned = owned_identities(&obs, current, recorded, ctx.identity) + planned_apart;
        guard_deregistrations(candidates, owned, ctx)
    };
    // Indexed once: a fleet's paths each look up their holders and claims without a pass over
    // every entry and record.
    let mut holders_at: BTreeMap<&str, Vec<&CurrentEntry>> = BTreeMap::new();
    for e in current {
        if !freed.contains(&(e.collection, e.path.clone())) {
            holders_at.entry(e.path.as_str()).or_default().push(e);
        }
    }
    let claims: BTreeSet<(&str, &str)> = recorded
        .iter()
        .map(|r| (r.path.as_str(), r.resource.arn.as_str()))
        .collect();

    let mut desired = obs.desired;
    // Grouped by path, in the order they were observed within a path.
    desired.sort_by(|a, b| a.path.cmp(&b.path));
    let mut rest = desired.into_iter().peekable();
    while let Some(first) = rest.next() {
        let mut contenders = vec![first];
        while let Some(next) = rest.next_if(|d| d.path == contenders[0].path) {
            contenders.push(next);
        }
        let path = contenders[0].path.clone();
        let holders = holders_at.get(path.as_str()).map_or(&[][..], Vec::as_slice);
        let holds = |d: &DesiredEntry| {
            holders.iter().any(|e| {
                e.owner(ctx.adopt_legacy)
                    .resource()
                    .is_some_and(|r| r.arn == d.resource.arn)
            })
        };
        let claimed = |d: &DesiredEntry| claims.contains(&(path.as_str(), d.resource.arn.as_str()));
        contenders.sort_by(|a, b| {
            (!holds(a), !claimed(a), &a.aws_created_at, &a.resource.arn).cmp(&(
                !holds(b),
                !claimed(b),
                &b.aws_created_at,
                &b.resource.arn,
            ))
        });
        let mut contenders = contenders.into_iter();
        let winner = contenders.next().expect("grouped paths are non-empty");
        for loser in contenders {
            actions.push(Action::Conflict {
                desired: loser,
                holder: format!("path wanted by {} ({})", winner.resource.arn, winner.name),
            });
        }
        actions.push(action_for_winner(winner, holders, recorded, ctx));
    }
    actions
}

fn action_for_winner(
    d: DesiredEntry,
    holders: &[&CurrentEntry],
    recorded: &[RecordedResource],
    ctx: PlanContext,
) -> Action {
    let owned_by_winner = holders.iter().find(|e| {
        e.collection == d.collection()
            && e.owner(ctx.adopt_legacy)
                .resource()
                .is_some_and(|r| r.arn == d.resource.arn)
    });
    match (owned_by_winner, holders.first()) {
        (Some(e), _) => {
            let expected = expected_pointing(Some(&d), &d.resource.arn, recorded);
            if let Err(why) = e.verify(&d.resource.arn, &expected, ctx.identity, ctx.adopt_legacy) {
                return Action::Conflict {
                    desired: d,
                    holder: format!(
                        "{} claims to be ours but {why}: not verified as ours, never written to",
                        e.collection.as_str()
                    ),
                };
            }
            let ours = matches!(e.owner(false), Owner::Us(_));
            if ours && e.fingerprint() == Some(d.fingerprint.as_str()) {
                Action::Unchanged {
                    desired: d,
                    current: (*e).clone(),
                }
            } else if ctx.policy == Policy::CreateOnly {
                Action::Skip {
                    resource: d.resource,
                    name: d.name,
                    path: d.path,
                    reason: SkipReason::PolicyKeepsChanges,
                }
            } else {
                Action::Update {
                    desired: d,
                    current: (*e).clone(),
                }
            }
        }
        (None, Some(holder)) => Action::Conflict {
            desired: d,
            holder: describe_holder(holder, ctx),
        },
        (None, None) => Action::Register(d),
    }
}

/// A short, operator-facing description of who holds a path.
pub fn describe_holder(e: &CurrentEntry, ctx: PlanContext) -> String {
    match e.owner(ctx.adopt_legacy) {
        Owner::Us(r) => format!("{} held by our entry for {}", e.collection.as_str(), r.arn),
        Owner::Legacy(r) => format!(
            "{} held by agentcore-sync entry for {}",
            e.collection.as_str(),
            r.arn
        ),
        Owner::Foreign => {
            let source = e
                .metadata
                .get("source")
                .and_then(Value::as_str)
                .unwrap_or("none");
            format!(
                "{} '{}' not owned by agentcore-registrar (source: {source})",
                e.collection.as_str(),
                e.name
            )
        }
    }
}

fn deregistration_candidates(
    obs: &Observation,
    current: &[CurrentEntry],
    recorded: &[RecordedResource],
    desired_by_arn: &BTreeMap<&str, &DesiredEntry>,
    ctx: PlanContext,
) -> Vec<Deregistration> {
    let mut seen: BTreeSet<(Collection, String)> = BTreeSet::new();
    let mut out = Vec::new();
    // Only entries verified as ours (what they point at, who registered them) are removed.
    let listed = current.iter().filter_map(|e| match e.owner(false) {
        Owner::Us(r)
            if e.verify(
                &r.arn,
                &expected_pointing(
                    desired_by_arn.get(r.arn.as_str()).copied(),
                    &r.arn,
                    recorded,
                ),
                ctx.identity,
                false,
            )
            .is_ok() =>
        {
            Some((r, e.collection, e.path.clone(), e.name.clone()))
        }
        _ => None,
    });
    // Recorded resources the lists did not show (lists hide some entries): the applier
    // confirms with a GET before it removes anything.
    let unlisted = recorded
        .iter()
        .filter(|r| {
            !current
                .iter()
                .any(|e| e.path == r.path && e.collection == r.collection)
        })
        .map(|r| {
            (
                r.resource.clone(),
                r.collection,
                r.path.clone(),
                r.path.clone(),
            )
        });
    for (resource, collection, path, name) in listed.chain(unlisted) {
        if !seen.insert((collection, path.clone())) {
            continue;
        }
        let reason = match desired_by_arn.get(resource.arn.as_str()) {
            Some(d) if d.path == path && d.collection() == collection => continue,
            Some(d) => DeregisterReason::Moved { to: d.path.clone() },
            None if !obs.present.contains(&resource.arn)
                && obs.covered.contains(&resource.scope()) =>
            {
                DeregisterReason::Gone
            }
            None => continue,
        };
        out.push(Deregistration {
            resource,
            collection,
            path,
            name,
            reason,
        });
    }
    out
}

/// The resources we own once the run is done: those owned now plus those we want. Counting the
/// wanted ones keeps the guard's verdict the same before and after a plan is applied.
fn owned_identities(
    obs: &Observation,
    current: &[CurrentEntry],
    recorded: &[RecordedResource],
    identity: Option<RegistryIdentity>,
) -> usize {
    let mut owned = owned_before(current, recorded, identity);
    owned.extend(
        obs.desired
            .iter()
            .map(|d| Cow::Borrowed(d.resource.arn.as_str())),
    );
    owned.len()
}

/// The resources we own before the run: recorded, or listed by an entry verified as ours. The
/// ARNs are borrowed from the rows and entries wherever they hold them verbatim.
fn owned_before<'a>(
    current: &'a [CurrentEntry],
    recorded: &'a [RecordedResource],
    identity: Option<RegistryIdentity>,
) -> BTreeSet<Cow<'a, str>> {
    let mut owned: BTreeSet<Cow<'a, str>> = recorded
        .iter()
        .map(|r| Cow::Borrowed(r.resource.arn.as_str()))
        .collect();
    // Only entries verified as ours: entries anyone could fake would otherwise dilute the guard.
    owned.extend(current.iter().filter_map(|e| {
        let arn = owner_arn(e, false)?;
        e.verify(
            &arn,
            &expected_pointing(None, &arn, recorded),
            identity,
            false,
        )
        .is_ok()
        .then_some(arn)
    }));
    owned
}

/// The ARN of the resource `e` is ours (or, with `adopt_legacy`, the Python tool's) for;
/// borrowed from its metadata when that holds it verbatim (gateways, unversioned runtimes), so
/// indexes over a whole listing need not copy it.
fn owner_arn(e: &CurrentEntry, adopt_legacy: bool) -> Option<Cow<'_, str>> {
    let (Owner::Us(r) | Owner::Legacy(r)) = e.owner(adopt_legacy) else {
        return None;
    };
    let verbatim = ["gateway_arn", "runtime_arn"]
        .into_iter()
        .filter_map(|key| e.metadata.get(key).and_then(Value::as_str))
        .find(|arn| *arn == r.arn);
    Some(verbatim.map_or(Cow::Owned(r.arn), Cow::Borrowed))
}

/// Applies policy and the deletion guard; returns the actions and the paths they free.
fn guard_deregistrations(
    candidates: Vec<Deregistration>,
    owned: usize,
    ctx: PlanContext,
) -> (Vec<Action>, BTreeSet<(Collection, String)>) {
    let gone = candidates
        .iter()
        .filter(|c| c.reason == DeregisterReason::Gone)
        .count();
    let guard_trips = ctx.policy == Policy::Sync
        && !ctx.guard.force
        && gone > 0
        && gone as f64 > ctx.guard.max_fraction * owned as f64;
    let mut actions = Vec::new();
    let mut freed = BTreeSet::new();
    for c in candidates {
        let refusal = if ctx.policy != Policy::Sync {
            Some(SkipReason::PolicyKeepsOwned(ctx.policy))
        } else if guard_trips && c.reason == DeregisterReason::Gone {
            Some(SkipReason::DeletionGuard {
                gone,
                owned,
                limit_percent: (ctx.guard.max_fraction * 100.0).round() as u32,
            })
        } else {
            None
        };
        match refusal {
            Some(reason) => actions.push(Action::Skip {
                resource: c.resource,
                name: c.name,
                path: c.path,
                reason,
            }),
            None => {
                freed.insert((c.collection, c.path.clone()));
                actions.push(Action::Deregister(c));
            }
        }
    }
    (actions, freed)
}

/// A recorded resource whose registry entry is exactly as we last wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Intact {
    /// The state row.
    pub recorded: RecordedResource,
    /// The resource's AWS name, as recorded (reports show it).
    pub name: String,
    /// The entry carries the unauthenticated-gateway tag.
    pub unauthenticated: bool,
}

/// Resources a rescan need not read from AgentCore (design, "do only what changed"): recorded
/// with AWS's `updatedAt`, their enabled state settled, and their entry listed by the registry as
/// ours, at the recorded path, with the recorded fingerprint. When AgentCore lists one of them
/// READY with that same `updatedAt`, nothing its entry is derived from can have changed. The
/// entry must also still point where we recorded writing it ([`CurrentEntry::verify`]); rows
/// recorded before that was kept are read again, which records it.
pub fn intact(
    recorded: &[RecordedResource],
    current: &[CurrentEntry],
    identity: Option<RegistryIdentity>,
) -> Vec<Intact> {
    let by_path: BTreeMap<(Collection, &str), &CurrentEntry> = current
        .iter()
        .map(|c| ((c.collection, c.path.as_str()), c))
        .collect();
    recorded
        .iter()
        .filter(|r| r.enabled_set && !r.aws_updated_at.is_empty() && !r.name.is_empty())
        .filter_map(|r| {
            let entry = by_path.get(&(r.collection, r.path.as_str()))?;
            let pointing = r.pointing.clone()?;
            let ours = matches!(entry.owner(false), Owner::Us(o) if o.arn == r.resource.arn)
                && entry
                    .verify(&r.resource.arn, &[pointing], identity, false)
                    .is_ok();
            (ours && entry.fingerprint() == Some(r.fingerprint.as_str())).then(|| Intact {
                recorded: r.clone(),
                name: r.name.clone(),
                unauthenticated: entry
                    .tags
                    .iter()
                    .any(|t| t == crate::desired::UNAUTHENTICATED_TAG),
            })
        })
        .collect()
}

#[path = "plan_stream.rs"]
mod stream;
pub use stream::{ListedKey, Streaming};

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
