//! DynamoDB, modelled: the in-memory state table answers each port call after one round trip
//! per request the DynamoDB adapter makes for it, charged to the table's read and write request
//! units. A new on-demand table serves up to 12,000 read and 4,000 write request units a second
//! at once ("Initial throughput for on-demand capacity mode"); past that a request is
//! throttled, retried as the SDK does (three attempts), then failed as transient. Per-partition
//! limits (3,000 reads, 1,000 writes a second) are not modelled: every item here is its own
//! partition key, and no key is touched more than a few times a second.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use registrar_core::identity::ResourceKey;
use registrar_core::plan::RecordedResource;
use registrar_core::ports::{
    Acquired, Clock, DueToken, Lease, LeaseStore, ResourceStore, TokenStore,
};
use registrar_core::refresh::TokenState;
use registrar_core::tokens::ManifestFields;
use registrar_core::{ErrorClass, PortError};
use registrar_testkit::{MemoryState, TestClock};

use super::quota::{Dice, Quota, Tally};

/// The table's limits and round trip.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub struct DynamoLimits {
    pub read_units_per_s: f64,
    pub write_units_per_s: f64,
    pub latency: Duration,
}

impl DynamoLimits {
    pub const NEW_ON_DEMAND_TABLE: Self = Self {
        read_units_per_s: 12_000.0,
        write_units_per_s: 4_000.0,
        latency: Duration::from_millis(5),
    };
}

/// Items a Scan page holds (1 MB at about 400 bytes an item) and what it costs (0.5 read unit
/// per 4 KB, eventually consistent).
const SCAN_PAGE_ITEMS: usize = 2_500;
const SCAN_PAGE_UNITS: f64 = 128.0;

#[derive(Debug)]
struct Table {
    reads: Quota,
    writes: Quota,
}

#[derive(Debug)]
struct Shared {
    table: Mutex<Table>,
    limits: DynamoLimits,
    clock: Arc<TestClock>,
    dice: Arc<Dice>,
    tally: Arc<Tally>,
}

/// The state port over the in-memory table; clones (and fenced views) share the table model.
#[derive(Debug, Clone)]
pub struct ModelState {
    inner: MemoryState,
    shared: Arc<Shared>,
    fence: Option<Lease>,
}

/// What one request charges.
#[derive(Debug, Clone, Copy)]
enum Units {
    Read(f64),
    Write(f64),
}

impl ModelState {
    pub fn new(
        inner: MemoryState,
        limits: DynamoLimits,
        clock: Arc<TestClock>,
        dice: Arc<Dice>,
        tally: Arc<Tally>,
    ) -> Self {
        let table = Table {
            reads: Quota::new(limits.read_units_per_s, limits.read_units_per_s),
            writes: Quota::new(limits.write_units_per_s, limits.write_units_per_s),
        };
        Self {
            inner,
            shared: Arc::new(Shared {
                table: Mutex::new(table),
                limits,
                clock,
                dice,
                tally,
            }),
            fence: None,
        }
    }

    /// The table itself, without the model (seeding).
    pub fn data(&self) -> &MemoryState {
        &self.inner
    }

    /// One DynamoDB request named `op`, with the SDK's attempts.
    async fn request(&self, op: &'static str, units: Units) -> Result<(), PortError> {
        let s = &self.shared;
        // The in-memory table notes every item read (for the contract suites); not needed here.
        drop(self.inner.take_reads());
        for attempt in 1..=3u32 {
            s.tally.call(op);
            let now = s.clock.elapsed();
            let served = {
                let mut t = s.table.lock().unwrap_or_else(PoisonError::into_inner);
                match units {
                    Units::Read(u) => t.reads.admit(now, u),
                    Units::Write(u) => t.writes.admit(now, u),
                }
            };
            tokio::time::sleep(s.limits.latency).await;
            if served {
                return Ok(());
            }
            s.tally.throttled(op);
            if attempt < 3 {
                let cap = Duration::from_millis(25 << (attempt - 1));
                tokio::time::sleep(cap.mul_f64(s.dice.unit())).await;
            }
        }
        s.tally.failed(op);
        Err(PortError::new(
            "state",
            op,
            ErrorClass::Transient,
            "ThrottlingException (modelled table limit)",
        ))
    }

    async fn requests(&self, op: &'static str, n: usize, units: Units) -> Result<(), PortError> {
        for _ in 0..n {
            self.request(op, units).await?;
        }
        Ok(())
    }

    /// A Scan of the whole table (resource rows, pointers and claims: three items a resource).
    async fn scan(&self, rows: usize) -> Result<(), PortError> {
        let pages = (rows * 3).div_ceil(SCAN_PAGE_ITEMS).max(1);
        self.requests("Scan", pages, Units::Read(SCAN_PAGE_UNITS))
            .await
    }
}

const READ: Units = Units::Read(1.0);
const WRITE: Units = Units::Write(1.0);

impl ResourceStore for ModelState {
    async fn resources(&self) -> Result<Vec<RecordedResource>, PortError> {
        let rows = self.inner.resources().await?;
        self.scan(rows.len()).await?;
        Ok(rows)
    }

    async fn record(&self, r: &RecordedResource) -> Result<(), PortError> {
        self.request("BatchWriteItem", Units::Write(2.0)).await?;
        self.inner.record(r).await
    }

    async fn record_since(
        &self,
        r: &RecordedResource,
        seen: Option<bool>,
    ) -> Result<bool, PortError> {
        // As the adapter: the row, conditional, then the pointer (and a target's second one);
        // a row changed since the snapshot costs one more put, not counted.
        let puts = if r.resource.gateway_id.is_some() {
            3
        } else {
            2
        };
        self.requests("PutItem", puts, WRITE).await?;
        self.inner.record_since(r, seen).await
    }

    async fn forget(&self, arn: &str) -> Result<(), PortError> {
        self.requests("DeleteItem", 2, WRITE).await?;
        self.inner.forget(arn).await
    }

    async fn lookup(&self, key: &ResourceKey) -> Result<Option<RecordedResource>, PortError> {
        self.request("GetItem", READ).await?;
        let found = self.inner.lookup(key).await?;
        if found.is_some() {
            self.request("GetItem", READ).await?;
        }
        Ok(found)
    }

    async fn lookup_with_manifest(
        &self,
        key: &ResourceKey,
    ) -> Result<(Option<RecordedResource>, Option<ManifestFields>), PortError> {
        // As the adapter: the pointer, then one Query of the record's items.
        self.request("GetItem", READ).await?;
        let Some(found) = self.inner.lookup(key).await? else {
            return Ok((None, None));
        };
        self.request("Query", READ).await?;
        let manifest = self.inner.manifest(&found.resource.arn).await?;
        Ok((Some(found), manifest))
    }

    async fn targets_of(&self, gateway: &ResourceKey) -> Result<Vec<RecordedResource>, PortError> {
        self.request("Query", READ).await?;
        let found = self.inner.targets_of(gateway).await?;
        self.requests("GetItem", found.len(), READ).await?;
        Ok(found)
    }

    async fn claim_path(&self, path: &str, arn: &str) -> Result<Option<String>, PortError> {
        self.request("PutItem", WRITE).await?;
        self.inner.claim_path(path, arn).await
    }

    async fn release_path(&self, path: &str, arn: &str) -> Result<(), PortError> {
        self.request("DeleteItem", WRITE).await?;
        self.inner.release_path(path, arn).await
    }

    async fn mark_enabled(&self, arn: &str) -> Result<(), PortError> {
        self.request("UpdateItem", WRITE).await?;
        self.inner.mark_enabled(arn).await
    }

    async fn claim_enable(&self, arn: &str) -> Result<bool, PortError> {
        self.request("UpdateItem", WRITE).await?;
        self.inner.claim_enable(arn).await
    }

    async fn owe_enable_again(&self, arn: &str) -> Result<(), PortError> {
        self.request("UpdateItem", WRITE).await?;
        self.inner.owe_enable_again(arn).await
    }
}

impl TokenStore for ModelState {
    async fn manifest(&self, arn: &str) -> Result<Option<ManifestFields>, PortError> {
        self.request("GetItem", READ).await?;
        self.inner.manifest(arn).await
    }

    async fn put_manifest(&self, row: &ManifestFields) -> Result<(), PortError> {
        self.request("BatchWriteItem", Units::Write(2.0)).await?;
        self.inner.put_manifest(row).await
    }

    async fn delete_manifest(&self, arn: &str) -> Result<(), PortError> {
        self.request("BatchWriteItem", Units::Write(2.0)).await?;
        self.inner.delete_manifest(arn).await
    }

    async fn manifests(&self) -> Result<Vec<ManifestFields>, PortError> {
        let rows = self.inner.manifests().await?;
        self.scan(rows.len()).await?;
        Ok(rows)
    }

    async fn record_token(&self, arn: &str, token: &TokenState) -> Result<(), PortError> {
        self.request("PutItem", WRITE).await?;
        self.inner.record_token(arn, token).await
    }

    async fn due_tokens(&self, until: u64) -> Result<Vec<DueToken>, PortError> {
        self.request("Query", READ).await?;
        self.inner.due_tokens(until).await
    }

    async fn claim_refresh(
        &self,
        arn: &str,
        seen: Option<u64>,
        owner: &str,
        now: u64,
        until: u64,
    ) -> Result<bool, PortError> {
        self.request("UpdateItem", WRITE).await?;
        self.inner.claim_refresh(arn, seen, owner, now, until).await
    }
}

impl LeaseStore for ModelState {
    async fn acquire_lease_unless_settled(
        &self,
        name: &str,
        owner: &str,
        ttl: Duration,
        since_ms: Option<u64>,
    ) -> Result<Acquired, PortError> {
        self.request("UpdateItem", WRITE).await?;
        self.inner
            .acquire_lease_unless_settled(name, owner, ttl, since_ms)
            .await
    }

    async fn renew_lease(&self, lease: &Lease) -> Result<bool, PortError> {
        self.request("UpdateItem", WRITE).await?;
        self.inner.renew_lease(lease).await
    }

    async fn release_lease(&self, lease: &Lease) -> Result<(), PortError> {
        self.request("UpdateItem", WRITE).await?;
        self.inner.release_lease(lease).await
    }

    fn fenced(&self, lease: &Lease) -> Self {
        Self {
            inner: self.inner.fenced(lease),
            shared: Arc::clone(&self.shared),
            fence: Some(lease.clone()),
        }
    }

    /// As the adapter does: at once while the lease surely holds, else by renewing it (one
    /// modelled request).
    async fn hold(&self) -> Result<(), PortError> {
        let Some(lease) = &self.fence else {
            return Ok(());
        };
        if lease.surely_held(self.shared.clock.elapsed()) || self.renew_lease(lease).await? {
            return Ok(());
        }
        Err(lease.lost(
            "it ran out and another worker took it, or it was released, while this work paused",
        ))
    }
}
