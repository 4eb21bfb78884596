//! A full scan of one account and region: every gateway, target and runtime, read now.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures::{StreamExt, stream};
use registrar_core::PortError;
use registrar_core::desired::{
    DeriveOptions, DesiredEntry, Unregistrable, gateway_entry, listed_path, runtime_entry,
    target_entry,
};
use registrar_core::identity::{ResourceKind, Scope};
use registrar_core::observed::{GatewaySnapshot, Lifecycle};
use registrar_core::plan::{Intact, ListedKey, Observation};
use registrar_core::ports::{AgentCore, Listed};

use crate::aws::fleet::Fleet;

/// What to scan.
#[derive(Debug, Clone, Copy)]
pub struct ScanOptions {
    pub gateways: bool,
    pub runtimes: bool,
    pub mcp_targets: bool,
    pub derive: DeriveOptions,
    /// Concurrent AgentCore reads.
    pub concurrency: usize,
}

/// One resource as the scan found it (for `list` and the report).
#[derive(Debug, Clone, PartialEq)]
pub struct Discovered {
    pub kind: ResourceKind,
    pub id: String,
    pub arn: String,
    pub name: String,
    pub path: String,
    pub auth: String,
    pub lifecycle: Lifecycle,
    /// Why a READY resource gets no entry.
    pub unregistrable: Option<String>,
}

/// The scan: the planner's observation, what was found, and what could not be read.
#[derive(Debug, Default)]
pub struct Scan {
    pub observation: Observation,
    pub discovered: Vec<Discovered>,
    /// Listed READY with the `updatedAt` recorded for an intact entry: not read, unchanged.
    pub unread: Vec<Intact>,
    pub errors: Vec<PortError>,
    /// Entries are sent on as derived: `discovered` keeps only resources that get none.
    lean: bool,
}

/// Where a scan puts the entries it derives.
#[derive(Debug, Clone, Copy)]
pub enum Entries<'a> {
    /// In the observation, every resource in `discovered` (`list`, a scan on its own).
    Collect,
    /// Sent on as each is derived (waiting while the receiver is behind); `discovered` keeps
    /// only the resources that get no entry. Targets' entries stay in the observation.
    Send(&'a tokio::sync::mpsc::Sender<DesiredEntry>),
}

/// Room in the receiver's channel for one entry, reserved before its read starts.
type Slot<'a> = tokio::sync::mpsc::Permit<'a, DesiredEntry>;

impl<'a> Entries<'a> {
    /// Room for one entry when sending: waited for before a read begins, so a read in flight
    /// never waits on the receiver. (A finished read waiting to send would stop the reads
    /// around it from being polled, and their paced calls would go out late, in a burst.)
    async fn room(self) -> Option<Slot<'a>> {
        match self {
            Entries::Collect => None,
            Entries::Send(tx) => tx.reserve().await.ok(),
        }
    }
}

/// Resources whose read a scan may skip, by kind, account, region and id (see
/// [`registrar_core::plan::intact`]). Empty for a deep scan and for `list`.
#[derive(Debug, Default)]
pub struct Known(HashMap<(ResourceKind, String, String, String), Intact>);

impl Known {
    pub fn new(intact: Vec<Intact>) -> Self {
        Self(
            intact
                .into_iter()
                .map(|i| {
                    let r = &i.recorded.resource;
                    (
                        (r.kind, r.account.clone(), r.region.clone(), r.id.clone()),
                        i,
                    )
                })
                .collect(),
        )
    }

    /// The intact entry of a listed resource that is READY with the recorded `updatedAt`.
    fn unchanged(
        &self,
        kind: ResourceKind,
        account: &str,
        region: &str,
        l: &Listed,
    ) -> Option<&Intact> {
        let key = (kind, account.to_owned(), region.to_owned(), l.id.clone());
        self.0.get(&key).filter(|i| {
            l.lifecycle == Lifecycle::Ready
                && !l.updated_at.is_empty()
                && l.updated_at == i.recorded.aws_updated_at
        })
    }
}

/// Progress of a long scan, read by the terminal indicator.
#[derive(Debug, Default)]
pub struct Progress {
    pub listed: AtomicUsize,
    pub read: AtomicUsize,
    pub applied: AtomicUsize,
    /// Work of higher priority in flight (the worker's messages): each registry write of the
    /// run waits while it is non-zero, up to [`YIELD_LIMIT`], so events go first.
    pub yield_to: Option<std::sync::Arc<std::sync::atomic::AtomicU64>>,
    /// Writes that are waiting on that work now (what a test, or a log, can see).
    pub yielding: AtomicUsize,
}

/// The longest one write of a rescan waits for event work.
pub const YIELD_LIMIT: std::time::Duration = std::time::Duration::from_secs(5);

impl Progress {
    /// Waits while higher-priority work is in flight (at most [`YIELD_LIMIT`]).
    pub async fn yield_to_events(&self) {
        let Some(busy) = &self.yield_to else { return };
        let step = std::time::Duration::from_millis(50);
        let mut waited = std::time::Duration::ZERO;
        if busy.load(Ordering::Relaxed) > 0 {
            self.yielding.fetch_add(1, Ordering::Relaxed);
            while busy.load(Ordering::Relaxed) > 0 && waited < YIELD_LIMIT {
                tokio::time::sleep(step).await;
                waited += step;
            }
            self.yielding.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl Scan {
    /// Keeps the listed resources that must be read; the others are unread and present.
    fn skip_known(
        &mut self,
        kind: ResourceKind,
        scope: (&str, &str),
        listed: Vec<Listed>,
        known: &Known,
    ) -> Vec<Listed> {
        listed
            .into_iter()
            .filter(|l| match known.unchanged(kind, scope.0, scope.1, l) {
                Some(i) => {
                    self.observation
                        .present
                        .insert(i.recorded.resource.arn.clone());
                    self.unread.push(i.clone());
                    false
                }
                None => true,
            })
            .collect()
    }

    /// Notes a READY resource; its entry, if it gets one, is the caller's to place.
    fn add_entry(
        &mut self,
        kind: ResourceKind,
        id: &str,
        lifecycle: &Lifecycle,
        derived: Result<DesiredEntry, Unregistrable>,
    ) -> Option<DesiredEntry> {
        match derived {
            Ok(d) => {
                self.observation.present.insert(d.resource.arn.clone());
                if !self.lean {
                    self.discovered.push(Discovered {
                        kind,
                        id: id.to_owned(),
                        arn: d.resource.arn.clone(),
                        name: d.name.clone(),
                        path: d.path.clone(),
                        auth: d.auth_label.clone(),
                        lifecycle: lifecycle.clone(),
                        unregistrable: None,
                    });
                }
                Some(d)
            }
            Err(u) => {
                self.observation.present.insert(u.resource.arn.clone());
                self.discovered.push(Discovered {
                    kind,
                    id: id.to_owned(),
                    arn: u.resource.arn.clone(),
                    name: u.name,
                    path: u.path,
                    auth: String::new(),
                    lifecycle: lifecycle.clone(),
                    unregistrable: Some(u.reason),
                });
                None
            }
        }
    }

    /// Places an entry where `slot` says: sent on through the room its read reserved, or (when
    /// collecting, or the receiver is gone because the run ends early) kept in the observation.
    fn put(&mut self, d: DesiredEntry, slot: Option<Slot<'_>>) {
        match slot {
            Some(permit) => permit.send(d),
            None => self.observation.desired.push(d),
        }
    }

    /// A resource that exists but is not READY: protected from deregistration (unless FAILED).
    fn add_not_ready(
        &mut self,
        kind: ResourceKind,
        id: &str,
        arn: &str,
        name: &str,
        lifecycle: Lifecycle,
    ) {
        if !matches!(lifecycle, Lifecycle::Failed(_) | Lifecycle::Deleting) {
            self.observation.present.insert(arn.to_owned());
        }
        self.discovered.push(Discovered {
            kind,
            id: id.to_owned(),
            arn: arn.to_owned(),
            name: name.to_owned(),
            path: String::new(),
            auth: String::new(),
            lifecycle,
            unregistrable: None,
        });
    }
}

impl Scan {
    /// Adds another scope's scan (observations of distinct scopes never overlap).
    fn absorb(&mut self, other: Scan) {
        let Observation {
            desired,
            present,
            covered,
        } = other.observation;
        // The first scope's parts are moved, not copied (one scope is the common case).
        fn join<T, C: Default + Extend<T> + IntoIterator<Item = T>>(
            all: &mut C,
            one: C,
            empty: bool,
        ) {
            if empty {
                *all = one;
            } else {
                all.extend(one);
            }
        }
        let empty = self.observation.desired.is_empty();
        join(&mut self.observation.desired, desired, empty);
        let empty = self.observation.present.is_empty();
        join(&mut self.observation.present, present, empty);
        let empty = self.observation.covered.is_empty();
        join(&mut self.observation.covered, covered, empty);
        let empty = self.discovered.is_empty();
        join(&mut self.discovered, other.discovered, empty);
        let empty = self.unread.is_empty();
        join(&mut self.unread, other.unread, empty);
        let empty = self.errors.is_empty();
        join(&mut self.errors, other.errors, empty);
    }
}

/// What the listings of one account and region found: the first half of its scan.
#[derive(Debug)]
pub struct ScopeListing {
    account: String,
    region: String,
    gateways: Option<Result<Vec<Listed>, PortError>>,
    runtimes: Option<Result<Vec<Listed>, PortError>>,
    errors: Vec<PortError>,
}

impl ScopeListing {
    /// The path each listed gateway and runtime wants, with the resource that wants it
    /// (targets are listed only once their gateways are read, and are not here).
    pub fn wanted(&self) -> Vec<(String, ListedKey)> {
        let mut out = Vec::new();
        for (kind, listed) in [
            (ResourceKind::Gateway, &self.gateways),
            (ResourceKind::Runtime, &self.runtimes),
        ] {
            for l in listed.iter().flatten().flatten() {
                out.push((
                    listed_path(&l.name, &l.id, kind),
                    (
                        kind,
                        self.account.clone(),
                        self.region.clone(),
                        l.id.clone(),
                    ),
                ));
            }
        }
        out
    }
}

/// Scans every account and region of the fleet at once, as one observation.
pub async fn scan_fleet<A: AgentCore>(
    fleet: &Fleet<A>,
    opts: ScanOptions,
    known: &Known,
    progress: &Progress,
) -> Scan {
    let listings = list_fleet(fleet, opts, progress).await;
    read_fleet(fleet, listings, opts, known, progress, Entries::Collect).await
}

/// Lists every account and region of the fleet (the first half of a scan), all before any
/// resource is read.
pub async fn list_fleet<A: AgentCore>(
    fleet: &Fleet<A>,
    opts: ScanOptions,
    progress: &Progress,
) -> Vec<ScopeListing> {
    futures::future::join_all(
        fleet
            .members()
            .iter()
            .map(|ac| list_scope(ac, opts, progress)),
    )
    .await
}

/// Reads what `listings` (of [`list_fleet`], in the fleet's order) found, scope by scope at
/// once, as one observation; entries go where `entries` says.
pub async fn read_fleet<A: AgentCore>(
    fleet: &Fleet<A>,
    listings: Vec<ScopeListing>,
    opts: ScanOptions,
    known: &Known,
    progress: &Progress,
    entries: Entries<'_>,
) -> Scan {
    let scans = futures::future::join_all(
        fleet
            .members()
            .iter()
            .zip(listings)
            .map(|(ac, listing)| read_scope(ac, listing, opts, known, progress, entries)),
    )
    .await;
    let mut all = Scan {
        lean: matches!(entries, Entries::Send(_)),
        ..Scan::default()
    };
    for one in scans {
        all.absorb(one);
    }
    all
}

/// Lists one account and region of AgentCore.
async fn list_scope<A: AgentCore>(ac: &A, opts: ScanOptions, progress: &Progress) -> ScopeListing {
    let mut errors = Vec::new();
    let account = match ac.account().await {
        Ok(a) => a,
        Err(e) => {
            errors.push(e);
            String::new()
        }
    };
    let count = |listed: Result<Vec<Listed>, PortError>| {
        if let Ok(l) = &listed {
            progress.listed.fetch_add(l.len(), Ordering::Relaxed);
        }
        listed
    };
    let gateways = if opts.gateways || opts.mcp_targets {
        Some(count(ac.list_gateways().await))
    } else {
        None
    };
    let runtimes = if opts.runtimes {
        Some(count(ac.list_runtimes().await))
    } else {
        None
    };
    ScopeListing {
        account,
        region: ac.region().to_owned(),
        gateways,
        runtimes,
        errors,
    }
}

/// Reads one account and region of AgentCore as `listing` found it. Errors are collected, not
/// raised: a scope with any error is simply not covered, so nothing in it can be deregistered.
/// Resources `known` unchanged are listed but not read.
async fn read_scope<A: AgentCore>(
    ac: &A,
    listing: ScopeListing,
    opts: ScanOptions,
    known: &Known,
    progress: &Progress,
    entries: Entries<'_>,
) -> Scan {
    let mut out = Scan {
        lean: matches!(entries, Entries::Send(_)),
        errors: listing.errors,
        ..Scan::default()
    };
    let account = listing.account;
    let scope = |kind| Scope {
        kind,
        account: account.clone(),
        region: ac.region().to_owned(),
    };
    let conc = opts.concurrency.max(1);

    if let Some(gateways) = listing.gateways {
        match gateways {
            Ok(listed) => {
                // Targets are read through their gateway's snapshot: read every gateway then.
                let listed = if opts.mcp_targets {
                    listed
                } else {
                    out.skip_known(
                        ResourceKind::Gateway,
                        (&account, ac.region()),
                        listed,
                        known,
                    )
                };
                // Each snapshot is turned into its entry as its read completes and then
                // dropped (kept only when its targets are read next): a rescan holds entries,
                // not every snapshot of the fleet at once.
                let mut reads = stream::iter(listed)
                    .map(|l| async move {
                        let slot = entries.room().await;
                        let got = ac.get_gateway(&l.id).await;
                        progress.read.fetch_add(1, Ordering::Relaxed);
                        (l, got, slot)
                    })
                    .buffer_unordered(conc);
                let mut gateways_complete = !account.is_empty();
                let mut targets_complete = gateways_complete;
                let mut live = Vec::new();
                while let Some((listed, got, slot)) = reads.next().await {
                    let gw = match got {
                        Ok(Some(gw)) => gw,
                        Ok(None) => continue, // deleted between list and get
                        Err(e) => {
                            tracing::warn!(gateway = %listed.id, error = %e, "Gateway could not be read; its scope is not covered.");
                            gateways_complete = false;
                            targets_complete = false;
                            out.errors.push(e);
                            continue;
                        }
                    };
                    if opts.gateways {
                        if gw.lifecycle == Lifecycle::Ready {
                            if let Some(d) = out.add_entry(
                                ResourceKind::Gateway,
                                &gw.id,
                                &gw.lifecycle,
                                gateway_entry(&gw, opts.derive),
                            ) {
                                out.put(d, slot);
                            }
                        } else {
                            out.add_not_ready(
                                ResourceKind::Gateway,
                                &gw.id,
                                &gw.arn,
                                &gw.name,
                                gw.lifecycle.clone(),
                            );
                        }
                    }
                    if opts.mcp_targets {
                        live.push(gw);
                    }
                }
                if opts.gateways && gateways_complete {
                    out.observation.covered.insert(scope(ResourceKind::Gateway));
                }
                if opts.mcp_targets {
                    if !scan_targets(ac, &live, opts, progress, &mut out).await {
                        targets_complete = false;
                    }
                    if targets_complete {
                        out.observation.covered.insert(scope(ResourceKind::Target));
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "Gateways could not be listed; none will be deregistered.");
                out.errors.push(e);
            }
        }
    }

    if let Some(runtimes) = listing.runtimes {
        match runtimes {
            Ok(listed) => {
                let listed = out.skip_known(
                    ResourceKind::Runtime,
                    (&account, ac.region()),
                    listed,
                    known,
                );
                let mut reads = stream::iter(listed)
                    .map(|l| async move {
                        let slot = entries.room().await;
                        let got = ac.get_runtime(&l.id).await;
                        progress.read.fetch_add(1, Ordering::Relaxed);
                        (l, got, slot)
                    })
                    .buffer_unordered(conc);
                let mut complete = !account.is_empty();
                while let Some((listed, got, slot)) = reads.next().await {
                    match got {
                        Ok(Some(rt)) if rt.lifecycle == Lifecycle::Ready => {
                            if let Some(d) = out.add_entry(
                                ResourceKind::Runtime,
                                &rt.id,
                                &rt.lifecycle,
                                runtime_entry(&rt, opts.derive),
                            ) {
                                out.put(d, slot);
                            }
                        }
                        Ok(Some(rt)) => {
                            let arn = registrar_core::observed::unqualified_runtime_arn(&rt.arn);
                            out.add_not_ready(
                                ResourceKind::Runtime,
                                &rt.id,
                                &arn,
                                &rt.name,
                                rt.lifecycle.clone(),
                            );
                        }
                        Ok(None) => {}
                        Err(e) => {
                            tracing::warn!(runtime = %listed.id, error = %e, "Runtime could not be read; its scope is not covered.");
                            complete = false;
                            out.errors.push(e);
                        }
                    }
                }
                if complete {
                    out.observation.covered.insert(scope(ResourceKind::Runtime));
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "Runtimes could not be listed; none will be deregistered.");
                out.errors.push(e);
            }
        }
    }
    out
}

/// Scans the targets of every live gateway; false if any list or read failed.
async fn scan_targets<A: AgentCore>(
    ac: &A,
    gateways: &[GatewaySnapshot],
    opts: ScanOptions,
    progress: &Progress,
    out: &mut Scan,
) -> bool {
    let conc = opts.concurrency.max(1);
    // Owned items: borrowed ones trip the higher-ranked lifetime check once this future is
    // spawned (rust-lang/rust#102211).
    let listings: Vec<_> = stream::iter(gateways.iter().cloned())
        .map(|gw| async move {
            let listing = ac.list_targets(&gw.id).await;
            (gw, listing)
        })
        .buffer_unordered(conc)
        .collect()
        .await;
    let mut complete = true;
    let mut wanted = Vec::new();
    for (gw, listing) in listings {
        match listing {
            Ok(items) => wanted.extend(items.into_iter().map(|t| (gw.clone(), t))),
            Err(e) => {
                complete = false;
                out.errors.push(e);
            }
        }
    }
    progress.listed.fetch_add(wanted.len(), Ordering::Relaxed);
    let mut reads = stream::iter(wanted)
        .map(|(gw, l)| async move {
            let got = ac.get_target(&gw, &l.id).await;
            progress.read.fetch_add(1, Ordering::Relaxed);
            got
        })
        .buffer_unordered(conc);
    while let Some(got) = reads.next().await {
        match got {
            Ok(Some(t)) => {
                let identity = registrar_core::identity::ResourceRef::target(
                    &t.gateway.arn,
                    &t.gateway.id,
                    &t.target_id,
                );
                let ready =
                    t.lifecycle == Lifecycle::Ready && t.gateway.lifecycle == Lifecycle::Ready;
                match target_entry(&t, opts.derive) {
                    Some(derived) if ready => {
                        if let Some(d) =
                            out.add_entry(ResourceKind::Target, &t.target_id, &t.lifecycle, derived)
                        {
                            out.observation.desired.push(d);
                        }
                    }
                    Some(_) => out.add_not_ready(
                        ResourceKind::Target,
                        &t.target_id,
                        &identity.arn,
                        &t.name,
                        t.lifecycle.clone(),
                    ),
                    None => {} // not an MCP server target: never registered
                }
            }
            Ok(None) => {}
            Err(e) => {
                complete = false;
                out.errors.push(e);
            }
        }
    }
    complete
}
