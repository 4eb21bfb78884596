//! The state table in memory, with the DynamoDB adapter's semantics: conditional path claims,
//! refresh claims, versioned leases, and fenced writes (a write refused where an item was
//! written under a newer lease; fenced deletions leave tombstones). `contract::state` holds
//! both to the same behaviour.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use registrar_core::identity::{ResourceKey, ResourceKind};
use registrar_core::plan::RecordedResource;
use registrar_core::ports::{
    Acquired, Clock, DueToken, Lease, LeaseStore, ResourceStore, TokenStore,
};
use registrar_core::refresh::TokenState;
use registrar_core::tokens::ManifestFields;
use registrar_core::{ErrorClass, PortError};

/// One item: its value (`None`: a tombstone) and the version of the lease that wrote it.
#[derive(Debug, Clone)]
struct Row<T> {
    value: Option<T>,
    fence: Option<u64>,
}

#[derive(Debug, Default, Clone)]
struct TokenRow {
    state: Option<TokenState>,
    claim_until: Option<u64>,
}

#[derive(Debug, Clone)]
struct LeaseRow {
    owner: String,
    version: u64,
    expires_at_ms: u64,
    /// Kept across acquisitions, as the DynamoDB item's attribute is.
    settled_ms: Option<u64>,
}

#[derive(Debug, Default)]
struct Tables {
    /// What was read, by item kind (`res`, `ptr`, `claim`, `manifest`, `token`, `lease`), and
    /// `scan` for a read of every item of a kind.
    reads: Vec<&'static str>,
    resources: BTreeMap<String, Row<RecordedResource>>,
    pointers: BTreeMap<String, Row<String>>,
    claims: BTreeMap<String, Row<String>>,
    manifests: BTreeMap<String, Row<ManifestFields>>,
    tokens: BTreeMap<String, TokenRow>,
    leases: BTreeMap<String, LeaseRow>,
}

/// The state table in memory. Clones share the table; [`LeaseStore::fenced`] makes a view
/// whose writes are fenced.
#[derive(Debug, Clone)]
pub struct MemoryState {
    tables: Arc<Mutex<Tables>>,
    clock: Arc<dyn Clock>,
    fence: Option<Lease>,
    /// A fault for tests: lease renewals fail as an unavailable store's would.
    renewals_fail: Arc<std::sync::atomic::AtomicBool>,
}

fn pointer_key(key: &ResourceKey) -> String {
    format!("{}#{}#{}", key.kind.as_str(), key.region, key.id)
}

impl MemoryState {
    /// An empty table whose leases read `clock`.
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self {
            tables: Arc::default(),
            clock,
            fence: None,
            renewals_fail: Arc::default(),
        }
    }

    /// Makes lease renewals fail (a transient error, as a throttled or unreachable store's).
    pub fn fail_lease_renewals(&self, fail: bool) {
        self.renewals_fail
            .store(fail, std::sync::atomic::Ordering::Relaxed);
    }

    /// This table, seen by a process with another clock (a replica whose clock is off).
    pub fn with_clock(&self, clock: Arc<dyn Clock>) -> Self {
        Self {
            clock,
            ..self.clone()
        }
    }

    /// The kinds of the items read since the last call (`scan` for each scan), so the contract
    /// can hold a reader to what it may read.
    pub fn take_reads(&self) -> Vec<&'static str> {
        std::mem::take(&mut self.tables().reads)
    }

    fn tables(&self) -> MutexGuard<'_, Tables> {
        self.tables.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A resource's row and its key pointer, under the caller's lock.
    fn write_record(&self, t: &mut Tables, r: &RecordedResource) -> Result<(), PortError> {
        let key = pointer_key(&ResourceKey {
            kind: r.resource.kind,
            account: r.resource.account.clone(),
            region: r.resource.region.clone(),
            id: r.resource.id.clone(),
            gateway_id: r.resource.gateway_id.clone(),
        });
        self.put("resource row", &mut t.resources, &r.resource.arn, r.clone())?;
        self.put("key pointer", &mut t.pointers, &key, r.resource.arn.clone())
    }

    /// Refuses a fenced write over an item written under a newer lease.
    fn admit(&self, what: &str, written_under: Option<u64>) -> Result<(), PortError> {
        match (&self.fence, written_under) {
            (Some(lease), Some(theirs)) if theirs > lease.version => Err(lease.lost(&format!(
                "the {what} was written under a newer lease, version {theirs} > ours {}",
                lease.version
            ))),
            _ => Ok(()),
        }
    }

    fn put<T>(
        &self,
        what: &str,
        rows: &mut BTreeMap<String, Row<T>>,
        key: &str,
        value: T,
    ) -> Result<(), PortError> {
        self.admit(what, rows.get(key).and_then(|r| r.fence))?;
        let fence = self.fence.as_ref().map(|l| l.version);
        rows.insert(
            key.to_owned(),
            Row {
                value: Some(value),
                fence,
            },
        );
        Ok(())
    }

    fn delete<T>(
        &self,
        what: &str,
        rows: &mut BTreeMap<String, Row<T>>,
        key: &str,
    ) -> Result<(), PortError> {
        match &self.fence {
            None => {
                rows.remove(key);
                Ok(())
            }
            Some(lease) => {
                self.admit(what, rows.get(key).and_then(|r| r.fence))?;
                rows.insert(
                    key.to_owned(),
                    Row {
                        value: None,
                        fence: Some(lease.version),
                    },
                );
                Ok(())
            }
        }
    }
}

impl ResourceStore for MemoryState {
    async fn resources(&self) -> Result<Vec<RecordedResource>, PortError> {
        let mut t = self.tables();
        t.reads.push("scan");
        Ok(t.resources
            .values()
            .filter_map(|r| r.value.clone())
            .collect())
    }

    async fn record(&self, r: &RecordedResource) -> Result<(), PortError> {
        self.write_record(&mut self.tables(), r)
    }

    async fn record_since(
        &self,
        r: &RecordedResource,
        seen: Option<bool>,
    ) -> Result<bool, PortError> {
        // Read and written under one lock, as the adapter's conditional write.
        let mut t = self.tables();
        let stored = t
            .resources
            .get(&r.resource.arn)
            .and_then(|row| row.value.as_ref())
            .map(|stored| stored.enabled_set);
        // A row (or tombstone) written under a newer lease refuses this writer first.
        self.admit(
            "resource row",
            t.resources.get(&r.resource.arn).and_then(|row| row.fence),
        )?;
        let mut row = r.clone();
        match (seen, stored) {
            // Forgotten since (deregistered): not brought back.
            (Some(_), None) => return Ok(r.enabled_set),
            (_, Some(now)) if Some(now) != seen => row.enabled_set = now,
            _ => {}
        }
        self.write_record(&mut t, &row)?;
        Ok(row.enabled_set)
    }

    async fn forget(&self, arn: &str) -> Result<(), PortError> {
        let mut t = self.tables();
        let t = &mut *t;
        if let Some(r) = t.resources.get(arn).and_then(|r| r.value.clone()) {
            let key = pointer_key(&ResourceKey {
                kind: r.resource.kind,
                account: r.resource.account,
                region: r.resource.region,
                id: r.resource.id,
                gateway_id: r.resource.gateway_id,
            });
            self.delete("key pointer", &mut t.pointers, &key)?;
        }
        self.delete("resource row", &mut t.resources, arn)
    }

    async fn lookup(&self, key: &ResourceKey) -> Result<Option<RecordedResource>, PortError> {
        let mut t = self.tables();
        t.reads.extend(["ptr", "res"]);
        Ok(t.pointers
            .get(&pointer_key(key))
            .and_then(|p| p.value.as_ref())
            .and_then(|arn| t.resources.get(arn))
            .and_then(|r| r.value.clone()))
    }

    async fn targets_of(&self, gateway: &ResourceKey) -> Result<Vec<RecordedResource>, PortError> {
        let mut t = self.tables();
        let found: Vec<RecordedResource> = t
            .resources
            .values()
            .filter_map(|r| r.value.clone())
            .filter(|r| {
                r.resource.kind == ResourceKind::Target
                    && r.resource.region == gateway.region
                    && r.resource.gateway_id.as_deref() == Some(gateway.id.as_str())
            })
            .collect();
        // As the adapter reads them: each target's pointer under the gateway's key, then its row.
        for _ in &found {
            t.reads.extend(["ptr", "res"]);
        }
        Ok(found)
    }

    async fn claim_path(&self, path: &str, arn: &str) -> Result<Option<String>, PortError> {
        let mut t = self.tables();
        if let Some(holder) = t.claims.get(path).and_then(|c| c.value.clone())
            && holder != arn
        {
            return Ok(Some(holder));
        }
        self.put("path claim", &mut t.claims, path, arn.to_owned())?;
        Ok(None)
    }

    async fn release_path(&self, path: &str, arn: &str) -> Result<(), PortError> {
        let mut t = self.tables();
        if t.claims.get(path).and_then(|c| c.value.as_deref()) != Some(arn) {
            return Ok(()); // not ours to release
        }
        self.delete("path claim", &mut t.claims, path)
    }

    async fn mark_enabled(&self, arn: &str) -> Result<(), PortError> {
        let mut t = self.tables();
        let fence = self.fence.as_ref().map(|l| l.version);
        let Some(row) = t.resources.get_mut(arn).filter(|r| r.value.is_some()) else {
            return Err(PortError::new(
                "state",
                "mark enabled",
                ErrorClass::Transient,
                format!("no resource row for {arn}"),
            ));
        };
        self.admit("resource row", row.fence)?;
        if let Some(r) = row.value.as_mut() {
            r.enabled_set = true;
        }
        if fence.is_some() {
            row.fence = fence;
        }
        Ok(())
    }

    async fn claim_enable(&self, arn: &str) -> Result<bool, PortError> {
        self.flip_enabled(arn, true)
    }

    async fn owe_enable_again(&self, arn: &str) -> Result<(), PortError> {
        self.flip_enabled(arn, false).map(|_| ())
    }
}

impl MemoryState {
    /// As the adapter: the live row's `enabled_set` to `to` where it is not so already.
    fn flip_enabled(&self, arn: &str, to: bool) -> Result<bool, PortError> {
        let mut t = self.tables();
        let fence = self.fence.as_ref().map(|l| l.version);
        let Some(row) = t.resources.get_mut(arn) else {
            return Ok(false);
        };
        self.admit("resource row", row.fence)?;
        let Some(r) = row.value.as_mut().filter(|r| r.enabled_set != to) else {
            return Ok(false);
        };
        r.enabled_set = to;
        if fence.is_some() {
            row.fence = fence;
        }
        Ok(true)
    }
}

impl TokenStore for MemoryState {
    async fn manifest(&self, arn: &str) -> Result<Option<ManifestFields>, PortError> {
        let mut t = self.tables();
        t.reads.push("manifest");
        Ok(t.manifests.get(arn).and_then(|m| m.value.clone()))
    }

    async fn put_manifest(&self, row: &ManifestFields) -> Result<(), PortError> {
        let mut t = self.tables();
        self.put("manifest row", &mut t.manifests, &row.arn, row.clone())?;
        // A new row's token item, due at once (the adapter indexes it likewise).
        t.tokens.entry(row.arn.clone()).or_default();
        Ok(())
    }

    async fn delete_manifest(&self, arn: &str) -> Result<(), PortError> {
        let mut t = self.tables();
        self.delete("manifest row", &mut t.manifests, arn)?;
        t.tokens.remove(arn);
        Ok(())
    }

    async fn manifests(&self) -> Result<Vec<ManifestFields>, PortError> {
        let mut t = self.tables();
        t.reads.push("scan");
        Ok(t.manifests
            .values()
            .filter_map(|m| m.value.clone())
            .collect())
    }

    async fn record_token(&self, arn: &str, token: &TokenState) -> Result<(), PortError> {
        // A whole new item, as DynamoDB's PutItem: the refresh claim ends with it.
        self.tables().tokens.insert(
            arn.to_owned(),
            TokenRow {
                state: Some(token.clone()),
                claim_until: None,
            },
        );
        Ok(())
    }

    async fn due_tokens(&self, until: u64) -> Result<Vec<DueToken>, PortError> {
        let mut t = self.tables();
        let t = &mut *t;
        let mut due: Vec<(String, Option<TokenState>, u64)> = t
            .tokens
            .iter()
            .map(|(arn, row)| {
                let look_at = row.state.as_ref().map_or(0, TokenState::look_at);
                (arn.clone(), row.state.clone(), look_at)
            })
            .filter(|(_, _, look_at)| *look_at <= until)
            .collect();
        due.sort_by_key(|(_, _, look_at)| *look_at);
        let mut found = Vec::with_capacity(due.len());
        for (arn, token, _) in due {
            t.reads.extend(["token", "manifest", "res"]);
            let Some(manifest) = t.manifests.get(&arn).and_then(|m| m.value.clone()) else {
                // Written after its manifest row was deleted: out of the index.
                t.tokens.remove(&arn);
                continue;
            };
            found.push(DueToken {
                manifest,
                resource: t.resources.get(&arn).and_then(|r| r.value.clone()),
                token,
            });
        }
        Ok(found)
    }

    async fn claim_refresh(
        &self,
        arn: &str,
        seen: Option<u64>,
        _owner: &str,
        now: u64,
        until: u64,
    ) -> Result<bool, PortError> {
        let mut t = self.tables();
        let row = t.tokens.entry(arn.to_owned()).or_default();
        let next = row.state.as_ref().map(|s| s.next_refresh_at);
        let still_due = next == seen;
        let unclaimed = row.claim_until.is_none_or(|c| c < now);
        if still_due && unclaimed {
            row.claim_until = Some(until);
            Ok(true)
        } else {
            Ok(false)
        }
    }
}

impl LeaseStore for MemoryState {
    async fn acquire_lease_unless_settled(
        &self,
        name: &str,
        owner: &str,
        ttl: Duration,
        since_ms: Option<u64>,
    ) -> Result<Acquired, PortError> {
        let now = self.clock.now_ms();
        let mut t = self.tables();
        let settled_ms = t.leases.get(name).and_then(|l| l.settled_ms);
        if let (Some(since), Some(mark)) = (since_ms, settled_ms)
            && since <= mark
            && mark <= now
        {
            return Ok(Acquired::Settled(mark));
        }
        let version = match t.leases.get(name) {
            Some(l) if l.expires_at_ms >= now && l.owner != owner => return Ok(Acquired::Held),
            Some(l) => now.max(l.version + 1),
            None => now,
        };
        t.leases.insert(
            name.to_owned(),
            LeaseRow {
                owner: owner.to_owned(),
                version,
                expires_at_ms: now + ttl.as_millis() as u64,
                settled_ms,
            },
        );
        Ok(Acquired::Taken(Lease::new(
            name,
            owner,
            version,
            ttl,
            self.clock.elapsed(),
        )))
    }

    async fn renew_lease(&self, lease: &Lease) -> Result<bool, PortError> {
        if self
            .renewals_fail
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            return Err(PortError::new(
                "state",
                "renew lease",
                ErrorClass::Transient,
                "ThrottlingException (a test fault)",
            ));
        }
        let now = self.clock.now_ms();
        let mut t = self.tables();
        match t.leases.get_mut(&lease.name) {
            Some(l) if l.owner == lease.owner && l.version == lease.version => {
                l.expires_at_ms = now + lease.ttl.as_millis() as u64;
                lease.confirm(self.clock.elapsed());
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn release_lease(&self, lease: &Lease) -> Result<(), PortError> {
        // Kept, expired, so that the next version exceeds this one.
        if let Some(l) = self
            .tables()
            .leases
            .get_mut(&lease.name)
            .filter(|l| l.owner == lease.owner && l.version == lease.version)
        {
            l.expires_at_ms = 0;
            if let Some(settled) = lease.settled_ms() {
                l.settled_ms = Some(settled);
            }
        }
        Ok(())
    }

    fn fenced(&self, lease: &Lease) -> Self {
        Self {
            fence: Some(lease.clone()),
            ..self.clone()
        }
    }

    async fn hold(&self) -> Result<(), PortError> {
        let Some(lease) = &self.fence else {
            return Ok(());
        };
        if lease.surely_held(self.clock.elapsed()) || self.renew_lease(lease).await? {
            return Ok(());
        }
        Err(lease.lost(
            "it ran out and another worker took it, or it was released, while this work paused",
        ))
    }
}
