//! The registry, modelled: the in-memory registry answers after a service time, and serves one
//! request at a time per worker process. The real registry spends its time on CPU in one Python
//! process (`registry-contract.md` §5), so concurrent requests queue behind one another: its
//! throughput, not any client's concurrency, is what bounds a run that writes.

use std::sync::Arc;
use std::time::Duration;

use registrar_core::PortError;
use registrar_core::desired::{Collection, DesiredEntry};
use registrar_core::plan::CurrentEntry;
use registrar_core::ports::Registry;
use registrar_testkit::MemoryRegistry;
use tokio::sync::Semaphore;

use super::quota::Tally;

/// Service times of the registry's requests.
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub struct RegistryCosts {
    /// Registration, update, enable/disable, removal, credential.
    pub write: Duration,
    /// GET of one entry.
    pub read: Duration,
    /// A list: this much per 1,000 entries listed (about 280 ms measured for 1,000 servers),
    /// plus one read.
    pub list_per_thousand: Duration,
    /// Requests served at once (the registry's worker processes).
    pub workers: usize,
}

impl RegistryCosts {
    pub const MEASURED: Self = Self {
        write: Duration::from_millis(120),
        read: Duration::from_millis(20),
        list_per_thousand: Duration::from_millis(280),
        workers: 1,
    };
}

#[derive(Debug)]
struct Server {
    data: MemoryRegistry,
    costs: RegistryCosts,
    slots: Semaphore,
    tally: Arc<Tally>,
}

/// The registry port, shared by every worker.
#[derive(Debug, Clone)]
pub struct ModelRegistry(Arc<Server>);

impl ModelRegistry {
    pub fn new(data: MemoryRegistry, costs: RegistryCosts, tally: Arc<Tally>) -> Self {
        Self(Arc::new(Server {
            data,
            slots: Semaphore::new(costs.workers.max(1)),
            costs,
            tally,
        }))
    }

    /// The registry itself, without the model (seeding, counting entries).
    pub fn data(&self) -> &MemoryRegistry {
        &self.0.data
    }

    /// Waits for a free worker of the registry (first come, first served) and holds it for
    /// `service`.
    async fn serve(&self, op: &'static str, service: Duration) {
        self.0.tally.call(op);
        let _slot = self.0.slots.acquire().await;
        tokio::time::sleep(service).await;
    }

    fn write(&self) -> Duration {
        self.0.costs.write
    }
}

impl Registry for ModelRegistry {
    async fn list(&self, collection: Collection) -> Result<Vec<CurrentEntry>, PortError> {
        let listed = self.0.data.list(collection).await?;
        let service = self.0.costs.read
            + self
                .0
                .costs
                .list_per_thousand
                .mul_f64(listed.len() as f64 / 1_000.0);
        self.serve("list", service).await;
        Ok(listed)
    }

    async fn get(
        &self,
        collection: Collection,
        path: &str,
    ) -> Result<Option<CurrentEntry>, PortError> {
        self.serve("get", self.0.costs.read).await;
        self.0.data.get(collection, path).await
    }

    async fn register(&self, desired: &DesiredEntry) -> Result<(), PortError> {
        self.serve("register", self.write()).await;
        self.0.data.register(desired).await
    }

    async fn update(
        &self,
        desired: &DesiredEntry,
        current: &CurrentEntry,
    ) -> Result<(), PortError> {
        self.serve("update", self.write()).await;
        self.0.data.update(desired, current).await
    }

    async fn set_enabled(
        &self,
        collection: Collection,
        path: &str,
        enabled: bool,
    ) -> Result<(), PortError> {
        self.serve("toggle", self.write()).await;
        self.0.data.set_enabled(collection, path, enabled).await
    }

    async fn remove(&self, collection: Collection, path: &str) -> Result<(), PortError> {
        self.serve("remove", self.write()).await;
        self.0.data.remove(collection, path).await
    }

    async fn set_credential(&self, path: &str, bearer: Option<&str>) -> Result<(), PortError> {
        self.serve("credential", self.write()).await;
        self.0.data.set_credential(path, bearer).await
    }
}
