//! One account and region of AgentCore in memory: gateways, their targets and runtimes as
//! snapshots, answering as the control plane does (NotFound is `Ok(None)`, lists carry id,
//! status and `updatedAt`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Mutex, MutexGuard, PoisonError};

use registrar_core::observed::{GatewaySnapshot, Lifecycle, RuntimeSnapshot, TargetSnapshot};
use registrar_core::ports::{AgentCore, Listed};
use registrar_core::{ErrorClass, PortError};

#[derive(Debug, Default)]
struct Resources {
    gateways: BTreeMap<String, GatewaySnapshot>,
    /// By (gateway id, target id); the gateway part of each snapshot is filled in on read.
    targets: BTreeMap<(String, String), TargetSnapshot>,
    runtimes: BTreeMap<String, RuntimeSnapshot>,
    /// Ids whose reads fail as a throttled control plane's would.
    failing: BTreeSet<String>,
}

/// AgentCore of one account and region, in memory.
#[derive(Debug)]
pub struct MemoryAgentCore {
    account: String,
    region: String,
    inner: Mutex<Resources>,
}

fn listed(id: &str, name: &str, lifecycle: &Lifecycle, updated_at: &str) -> Listed {
    Listed {
        id: id.to_owned(),
        name: name.to_owned(),
        lifecycle: lifecycle.clone(),
        updated_at: updated_at.to_owned(),
    }
}

impl MemoryAgentCore {
    /// An empty account and region.
    pub fn new(account: &str, region: &str) -> Self {
        Self {
            account: account.to_owned(),
            region: region.to_owned(),
            inner: Mutex::default(),
        }
    }

    fn inner(&self) -> MutexGuard<'_, Resources> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds or replaces a gateway.
    pub fn put_gateway(&self, g: GatewaySnapshot) {
        self.inner().gateways.insert(g.id.clone(), g);
    }

    /// Adds or replaces a target of its gateway.
    pub fn put_target(&self, t: TargetSnapshot) {
        self.inner()
            .targets
            .insert((t.gateway.id.clone(), t.target_id.clone()), t);
    }

    /// Adds or replaces a runtime.
    pub fn put_runtime(&self, r: RuntimeSnapshot) {
        self.inner().runtimes.insert(r.id.clone(), r);
    }

    /// Deletes a gateway and its targets (AgentCore refuses to delete a gateway with targets;
    /// tests that need that order delete the targets first).
    pub fn delete_gateway(&self, id: &str) {
        let mut inner = self.inner();
        inner.gateways.remove(id);
        inner.targets.retain(|(g, _), _| g != id);
    }

    /// Makes every read of the gateway, target or runtime `id` fail with a transient error (a
    /// throttled control plane), or, with `fail` false, answer again.
    pub fn fail_reads_of(&self, id: &str, fail: bool) {
        let mut inner = self.inner();
        if fail {
            inner.failing.insert(id.to_owned());
        } else {
            inner.failing.remove(id);
        }
    }

    /// A read of `id`: the fault set for it, if any.
    fn read(&self, id: &str) -> Result<MutexGuard<'_, Resources>, PortError> {
        let inner = self.inner();
        if inner.failing.contains(id) {
            return Err(PortError::new(
                "agentcore",
                format!("get {id}"),
                ErrorClass::Transient,
                "ThrottlingException (a test fault)",
            ));
        }
        Ok(inner)
    }

    /// Deletes a runtime.
    pub fn delete_runtime(&self, id: &str) {
        self.inner().runtimes.remove(id);
    }
}

impl AgentCore for MemoryAgentCore {
    async fn account(&self) -> Result<String, PortError> {
        Ok(self.account.clone())
    }

    fn region(&self) -> &str {
        &self.region
    }

    async fn list_gateways(&self) -> Result<Vec<Listed>, PortError> {
        Ok(self
            .inner()
            .gateways
            .values()
            .map(|g| listed(&g.id, &g.name, &g.lifecycle, &g.updated_at))
            .collect())
    }

    async fn get_gateway(&self, id: &str) -> Result<Option<GatewaySnapshot>, PortError> {
        Ok(self.read(id)?.gateways.get(id).cloned())
    }

    async fn list_targets(&self, gateway_id: &str) -> Result<Vec<Listed>, PortError> {
        Ok(self
            .inner()
            .targets
            .iter()
            .filter(|((g, _), _)| g == gateway_id)
            .map(|(_, t)| listed(&t.target_id, &t.name, &t.lifecycle, &t.updated_at))
            .collect())
    }

    async fn get_target(
        &self,
        gateway: &GatewaySnapshot,
        target_id: &str,
    ) -> Result<Option<TargetSnapshot>, PortError> {
        Ok(self
            .read(target_id)?
            .targets
            .get(&(gateway.id.clone(), target_id.to_owned()))
            .map(|t| TargetSnapshot {
                gateway: gateway.clone(),
                ..t.clone()
            }))
    }

    async fn list_runtimes(&self) -> Result<Vec<Listed>, PortError> {
        Ok(self
            .inner()
            .runtimes
            .values()
            .map(|r| listed(&r.id, &r.name, &r.lifecycle, &r.updated_at))
            .collect())
    }

    async fn get_runtime(&self, id: &str) -> Result<Option<RuntimeSnapshot>, PortError> {
        Ok(self.read(id)?.runtimes.get(id).cloned())
    }
}
