//! The ports the engine talks through. Adapters in `registrar-worker` implement them; tests
//! may implement them with fakes.

use std::future::Future;
use std::time::Duration;

use crate::desired::{Collection, DesiredEntry};
use crate::error::PortError;
use crate::identity::ResourceKey;
use crate::observed::{GatewaySnapshot, Lifecycle, RuntimeSnapshot, TargetSnapshot};
use crate::plan::{CurrentEntry, RecordedResource};
use crate::tokens::ManifestFields;

/// A list item: enough to decide whether to read the full resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// The gateway, target or runtime id.
    pub id: String,
    /// Its name, as the list reports it (empty when it does not).
    pub name: String,
    /// Its status, as the list reports it.
    pub lifecycle: Lifecycle,
    /// Its `updatedAt` (ISO-8601): a rescan reads only what changed since it recorded it.
    pub updated_at: String,
}

/// The AgentCore control plane of one account and region. `Ok(None)` from a `get_*` means
/// AgentCore answered NotFound for that very resource.
pub trait AgentCore: Send + Sync {
    /// The account the credentials act in.
    fn account(&self) -> impl Future<Output = Result<String, PortError>> + Send;
    /// The region it reads.
    fn region(&self) -> &str;
    /// Every gateway (all pages); an error if any page failed.
    fn list_gateways(&self) -> impl Future<Output = Result<Vec<Listed>, PortError>> + Send;
    /// One gateway.
    fn get_gateway(
        &self,
        id: &str,
    ) -> impl Future<Output = Result<Option<GatewaySnapshot>, PortError>> + Send;
    /// Every target of a gateway (all pages).
    fn list_targets(
        &self,
        gateway_id: &str,
    ) -> impl Future<Output = Result<Vec<Listed>, PortError>> + Send;
    /// One target of `gateway`.
    fn get_target(
        &self,
        gateway: &GatewaySnapshot,
        target_id: &str,
    ) -> impl Future<Output = Result<Option<TargetSnapshot>, PortError>> + Send;
    /// Every agent runtime (all pages).
    fn list_runtimes(&self) -> impl Future<Output = Result<Vec<Listed>, PortError>> + Send;
    /// One agent runtime.
    fn get_runtime(
        &self,
        id: &str,
    ) -> impl Future<Output = Result<Option<RuntimeSnapshot>, PortError>> + Send;
}

/// The registry HTTP API. A 409 comes back as a [`crate::ErrorClass::Conflict`] error.
pub trait Registry: Send + Sync {
    /// Every entry of a collection the caller may see (lists hide some entries).
    fn list(
        &self,
        collection: Collection,
    ) -> impl Future<Output = Result<Vec<CurrentEntry>, PortError>> + Send;
    /// Authoritative: `Ok(None)` means nothing is registered at the path.
    fn get(
        &self,
        collection: Collection,
        path: &str,
    ) -> impl Future<Output = Result<Option<CurrentEntry>, PortError>> + Send;
    /// Creates the entry; never overwrites (a 409 if the path is taken).
    fn register(
        &self,
        desired: &DesiredEntry,
    ) -> impl Future<Output = Result<(), PortError>> + Send;
    /// Replaces our entry's fields, keeping its enabled state (and an agent's status).
    fn update(
        &self,
        desired: &DesiredEntry,
        current: &CurrentEntry,
    ) -> impl Future<Output = Result<(), PortError>> + Send;
    /// Enables or disables an entry.
    fn set_enabled(
        &self,
        collection: Collection,
        path: &str,
        enabled: bool,
    ) -> impl Future<Output = Result<(), PortError>> + Send;
    /// Removes an entry; nothing there is no error.
    fn remove(
        &self,
        collection: Collection,
        path: &str,
    ) -> impl Future<Output = Result<(), PortError>> + Send;
    /// Sets a server's egress credential (`bearer`), or clears it (`None`: scheme `none`).
    /// The credential never appears in errors or logs.
    fn set_credential(
        &self,
        path: &str,
        bearer: Option<&str>,
    ) -> impl Future<Output = Result<(), PortError>> + Send;
}

/// Resource records (what we applied, per ARN), the key pointers that find them from an
/// event's ids, and path claims (one resource per registry path).
pub trait ResourceStore: Send + Sync {
    /// Every recorded resource.
    fn resources(&self) -> impl Future<Output = Result<Vec<RecordedResource>, PortError>> + Send;
    /// Records what was applied for a resource (and the pointer from its key).
    fn record(
        &self,
        resource: &RecordedResource,
    ) -> impl Future<Output = Result<(), PortError>> + Send;
    /// Records `resource` as [`ResourceStore::record`] does, unless its row changed since the
    /// caller's snapshot saw it with `seen` as its `enabled_set` (`None`: no row). Then the
    /// stored `enabled_set` is written with the rest of `resource`: it is the newer fact (the
    /// token loop enabled the entry since, or a reconcile registered it again and owes its
    /// enable), where the snapshot's value would either have the next refresh enable again what
    /// an operator disabled, or lose an enable still owed (invariant 6). A row seen but
    /// forgotten since (deregistered) is not written back. Each write is conditional on the row
    /// as last read. Returns the `enabled_set` written (or that would have been).
    fn record_since(
        &self,
        resource: &RecordedResource,
        seen: Option<bool>,
    ) -> impl Future<Output = Result<bool, PortError>> + Send;
    /// Forgets a resource: its record and its key pointer.
    fn forget(&self, arn: &str) -> impl Future<Output = Result<(), PortError>> + Send;
    /// The recorded resource an event key names (events carry ids, not ARNs).
    fn lookup(
        &self,
        key: &ResourceKey,
    ) -> impl Future<Output = Result<Option<RecordedResource>, PortError>> + Send;
    /// [`ResourceStore::lookup`], with the manifest row kept under the record's ARN (see
    /// [`TokenStore::manifest`]; `None` without a record): one read of the record's items
    /// where the store keeps them together.
    fn lookup_with_manifest(
        &self,
        key: &ResourceKey,
    ) -> impl Future<Output = Result<(Option<RecordedResource>, Option<ManifestFields>), PortError>> + Send
    where
        Self: TokenStore,
    {
        async move {
            let Some(recorded) = self.lookup(key).await? else {
                return Ok((None, None));
            };
            let manifest = self.manifest(&recorded.resource.arn).await?;
            Ok((Some(recorded), manifest))
        }
    }
    /// The recorded targets of the gateway `gateway` names (a gateway key; found by its region
    /// and id, as key pointers find records, whatever its account). Read through pointers kept
    /// under the gateway's key: the cost grows with the gateway's targets, never with the table
    /// (no scan). Forgotten targets are not returned.
    fn targets_of(
        &self,
        gateway: &ResourceKey,
    ) -> impl Future<Output = Result<Vec<RecordedResource>, PortError>> + Send;
    /// Claims `path` for `arn` with a conditional write. `Ok(Some(holder))` when another
    /// resource holds it.
    fn claim_path(
        &self,
        path: &str,
        arn: &str,
    ) -> impl Future<Output = Result<Option<String>, PortError>> + Send;
    /// Releases the claim if `arn` holds it.
    fn release_path(
        &self,
        path: &str,
        arn: &str,
    ) -> impl Future<Output = Result<(), PortError>> + Send;
    /// Notes that the entry's enabled state has now been set (invariant 6: once).
    fn mark_enabled(&self, arn: &str) -> impl Future<Output = Result<(), PortError>> + Send;
    /// Takes the one enable an entry is owed: marks it done if the live row still owes it.
    /// `true`: this caller, and no other, makes the enable now. `false`: it was made already
    /// (by another writer, since the caller's snapshot), or the row is gone.
    fn claim_enable(&self, arn: &str) -> impl Future<Output = Result<bool, PortError>> + Send;
    /// Gives back a claimed enable that could not be made: the live row owes it again.
    fn owe_enable_again(&self, arn: &str) -> impl Future<Output = Result<(), PortError>> + Send;
}

/// Manifest rows of CUSTOM_JWT resources and the state of their egress tokens.
pub trait TokenStore: Send + Sync {
    /// The manifest row of a resource.
    fn manifest(
        &self,
        arn: &str,
    ) -> impl Future<Output = Result<Option<ManifestFields>, PortError>> + Send;
    /// Writes a manifest row (its token state is a separate item and survives it).
    fn put_manifest(
        &self,
        row: &ManifestFields,
    ) -> impl Future<Output = Result<(), PortError>> + Send;
    /// Deletes a manifest row and its token state.
    fn delete_manifest(&self, arn: &str) -> impl Future<Output = Result<(), PortError>> + Send;
    /// Every manifest row.
    fn manifests(&self) -> impl Future<Output = Result<Vec<ManifestFields>, PortError>> + Send;
    /// Records the token state of a resource (its own item: manifest rewrites keep it).
    fn record_token(
        &self,
        arn: &str,
        token: &crate::refresh::TokenState,
    ) -> impl Future<Output = Result<(), PortError>> + Send;
    /// The tokens to look at by `until` (Unix seconds), earliest first: every manifest row
    /// whose token has no state yet (due at once) or whose [`TokenState::look_at`] is at or
    /// before `until`, with its resource record. Found through an index of token items, then
    /// read by key: the cost grows with the tokens returned, never with the table (no scan,
    /// and leases, pointers, claims and other resource rows are never read). A token whose
    /// manifest row is gone is not returned (and is dropped from the index).
    ///
    /// [`TokenState::look_at`]: crate::refresh::TokenState::look_at
    fn due_tokens(
        &self,
        until: u64,
    ) -> impl Future<Output = Result<Vec<DueToken>, PortError>> + Send;
    /// Claims the refresh of `arn`'s token for `owner` until `until` (Unix seconds), if it is
    /// still due as `seen_next_refresh` says and no other worker holds an unexpired claim:
    /// exactly one worker refreshes a given token. Recording the refreshed state ends the claim.
    fn claim_refresh(
        &self,
        arn: &str,
        seen_next_refresh: Option<u64>,
        owner: &str,
        now: u64,
        until: u64,
    ) -> impl Future<Output = Result<bool, PortError>> + Send;
}

/// A token the loop looks at: its manifest row, the resource's record (if one is kept) and
/// its state (`None` before the first refresh is recorded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueToken {
    /// The manifest row.
    pub manifest: ManifestFields,
    /// The resource's record.
    pub resource: Option<RecordedResource>,
    /// The recorded token state.
    pub token: Option<crate::refresh::TokenState>,
}

impl DueToken {
    /// When the loop must look at it ([`crate::refresh::TokenState::look_at`]; 0 without a
    /// state).
    pub fn look_at(&self) -> u64 {
        self.token
            .as_ref()
            .map_or(0, crate::refresh::TokenState::look_at)
    }
}

/// Leases (one holder of a name at a time, for a while) and the fencing of writes made under
/// one.
pub trait LeaseStore: Send + Sync {
    /// Takes the lease `name` for `owner` for `ttl`, unless another owner holds it unexpired
    /// ([`Acquired::Held`]) or, with `since_ms`, a settled run under it began at or after
    /// `since_ms` and no later than now ([`Acquired::Settled`]: the caller's work was done
    /// there, whoever holds the lease now; one call either way). Every acquisition gets a
    /// version greater than any earlier one of `name` (released leases keep their item, and so
    /// their version and settled mark, for an hour). A mark later than now came from a replica
    /// whose clock runs ahead: it could cover work its run never saw, so it covers nothing.
    fn acquire_lease_unless_settled(
        &self,
        name: &str,
        owner: &str,
        ttl: Duration,
        since_ms: Option<u64>,
    ) -> impl Future<Output = Result<Acquired, PortError>> + Send;
    /// Takes the lease `name` for `owner` for `ttl`, unless another owner holds it unexpired
    /// (`Ok(None)`).
    fn acquire_lease(
        &self,
        name: &str,
        owner: &str,
        ttl: Duration,
    ) -> impl Future<Output = Result<Option<Lease>, PortError>> + Send {
        async move {
            self.acquire_lease_unless_settled(name, owner, ttl, None)
                .await
                .map(Acquired::taken)
        }
    }
    /// Extends `lease` by its ttl. `Ok(false)` when it is no longer this holder's at this
    /// version (it ran out and was taken, or was released): the work it protects must stop.
    fn renew_lease(&self, lease: &Lease) -> impl Future<Output = Result<bool, PortError>> + Send;
    /// Gives `lease` up if it is still this holder's at this version, recording its
    /// [`Lease::settled_ms`] when it has one (in place of the mark there; holders that settle
    /// nothing leave it as it is).
    fn release_lease(&self, lease: &Lease) -> impl Future<Output = Result<(), PortError>> + Send;
    /// This store with its writes fenced by `lease`: a write fails (a transient `lease` error)
    /// where an item was written under a newer lease, and deletions leave a tombstone that
    /// carries the version, so a holder that stalled past its lease cannot undo what the next
    /// holder did.
    fn fenced(&self, lease: &Lease) -> Self
    where
        Self: Sized;
    /// For a fenced store, confirms its lease still holds: at once when it was confirmed
    /// recently ([`Lease::surely_held`]), else by renewing it. Called right before each registry
    /// write, which no condition of ours can fence. Unfenced stores answer `Ok`.
    fn hold(&self) -> impl Future<Output = Result<(), PortError>> + Send;
}

/// The whole state table: resources, tokens and leases (the DynamoDB adapter implements all
/// three; callers that need one part say so in their bounds).
pub trait StateStore: ResourceStore + TokenStore + LeaseStore {}

impl<T: ResourceStore + TokenStore + LeaseStore> StateStore for T {}

/// Time, read through one port so that tests can pause and drive it.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Wall time, Unix milliseconds.
    fn now_ms(&self) -> u64;
    /// Wall time, Unix seconds.
    fn now_s(&self) -> u64 {
        self.now_ms() / 1000
    }
    /// Monotonic time since an arbitrary origin fixed when the clock was made.
    fn elapsed(&self) -> Duration;
    /// A jitter in `0.0..1.0`, from one source (seeded in tests).
    fn jitter(&self) -> f64;
}

/// How [`LeaseStore::acquire_lease_unless_settled`] ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Acquired {
    /// The lease, now the caller's.
    Taken(Lease),
    /// Another owner holds it unexpired.
    Held,
    /// A settled run under the lease began at this time (Unix ms), at or after the caller's
    /// `since_ms`: what the caller came to do was done there.
    Settled(u64),
}

impl Acquired {
    /// The lease, if it was taken.
    pub fn taken(self) -> Option<Lease> {
        match self {
            Acquired::Taken(lease) => Some(lease),
            Acquired::Held | Acquired::Settled(_) => None,
        }
    }
}

/// A lease held. Its `version` (the acquisition's wall time in ms, or one more than the last
/// holder's when clocks disagree: strictly greater than every earlier version of the name)
/// fences the writes made under it.
#[derive(Debug, Clone)]
pub struct Lease {
    /// What is leased (`key#<kind>#<region>#<id>`, `rescan`).
    pub name: String,
    /// The holder (unique per process).
    pub owner: String,
    /// This acquisition's version.
    pub version: u64,
    /// How long an acquisition or renewal holds.
    pub ttl: Duration,
    /// When it was last confirmed (acquired or renewed), on the holder's monotonic clock
    /// ([`Clock::elapsed`], ms). Shared by the clones of one acquisition.
    confirmed_ms: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// When a settled run of the work it protects began under it (Unix ms; 0: none). Release
    /// records it on the lease, where [`LeaseStore::acquire_lease_unless_settled`] shows it to
    /// every replica.
    settled_ms: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl PartialEq for Lease {
    fn eq(&self, other: &Self) -> bool {
        (&self.name, &self.owner, self.version, self.ttl)
            == (&other.name, &other.owner, other.version, other.ttl)
    }
}

impl Eq for Lease {}

impl Lease {
    /// A lease acquired at `confirmed` (the holder's [`Clock::elapsed`]).
    pub fn new(name: &str, owner: &str, version: u64, ttl: Duration, confirmed: Duration) -> Self {
        Self {
            name: name.to_owned(),
            owner: owner.to_owned(),
            version,
            ttl,
            confirmed_ms: std::sync::Arc::new(std::sync::atomic::AtomicU64::new(
                confirmed.as_millis() as u64,
            )),
            settled_ms: std::sync::Arc::default(),
        }
    }

    /// Notes that a run of the work under this lease, begun at `started_ms` (Unix ms), came to
    /// a settled end; the release records it.
    pub fn settle(&self, started_ms: u64) {
        self.settled_ms
            .fetch_max(started_ms, std::sync::atomic::Ordering::Relaxed);
    }

    /// What [`Lease::settle`] noted, if anything.
    pub fn settled_ms(&self) -> Option<u64> {
        Some(self.settled_ms.load(std::sync::atomic::Ordering::Relaxed)).filter(|&ms| ms > 0)
    }

    /// Notes a successful renewal at `at` (the holder's [`Clock::elapsed`]).
    pub fn confirm(&self, at: Duration) {
        self.confirmed_ms
            .fetch_max(at.as_millis() as u64, std::sync::atomic::Ordering::Relaxed);
    }

    /// How long since it was last confirmed, at `now` (the holder's [`Clock::elapsed`]).
    pub fn unconfirmed_for(&self, now: Duration) -> Duration {
        let at = self.confirmed_ms.load(std::sync::atomic::Ordering::Relaxed);
        now.saturating_sub(Duration::from_millis(at))
    }

    /// Whether it certainly still holds without asking the store: confirmed within two thirds
    /// of its ttl (the last third is room for clock skew between holders). A holder that was
    /// frozen wakes past this and must renew before it writes.
    pub fn surely_held(&self, now: Duration) -> bool {
        self.unconfirmed_for(now) < self.ttl * 2 / 3
    }

    /// The error of work stopped because its lease was lost.
    pub fn lost(&self, why: &str) -> PortError {
        PortError::new(
            "lease",
            self.name.clone(),
            crate::ErrorClass::Transient,
            format!("lease lost ({why}); the work it protected was stopped before its next write"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_records_only_what_its_own_runs_settled_and_never_goes_back() {
        let lease = Lease::new("k", "a", 5_000, Duration::from_secs(30), Duration::ZERO);
        assert_eq!(
            lease.settled_ms(),
            None,
            "release writes nothing of its own"
        );
        lease.settle(5_100);
        lease.settle(5_050);
        assert_eq!(lease.settled_ms(), Some(5_100));
        assert_eq!(Acquired::Taken(lease.clone()).taken(), Some(lease));
        assert_eq!(Acquired::Settled(4_000).taken(), None);
    }
}
