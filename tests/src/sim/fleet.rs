//! The simulated fleet: resources spread evenly over accounts x regions, half gateways and half
//! runtimes, each scope served by its own modelled control plane; the burst of events that
//! changes some of them; and the seeding of the registry and state as a finished rescan leaves
//! them.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use registrar_core::desired::{DeriveOptions, DesiredEntry, gateway_entry, runtime_entry};
use registrar_core::enable::EnablePolicy;
use registrar_core::identity::{ResourceKey, ResourceKind};
use registrar_core::observed::{
    AuthorizerType, GatewaySnapshot, Lifecycle, RuntimeSnapshot, ServerProtocol,
};
use registrar_core::plan::RecordedResource;
use registrar_core::ports::{Clock, Registry, ResourceStore};
use registrar_testkit::{MemoryAgentCore, TestClock};

use super::agentcore::{AgentCoreQuotas, ScopeServer};
use super::queue::Message;
use super::quota::{Dice, Tally};
use super::registry::ModelRegistry;
use super::state::ModelState;

const REGIONS: [&str; 3] = ["us-east-1", "us-west-2", "eu-west-1"];
const CREATED: &str = "2026-11-29T00:00:00Z";
const CHANGED: &str = "2026-11-29T01:00:00Z";

/// Where resource `i` lives and what it is: even ones gateways, odd ones runtimes, dealt round
/// the scopes in turn.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub accounts: usize,
    pub regions: usize,
}

impl Shape {
    pub fn scopes(self) -> usize {
        self.accounts * self.regions
    }

    pub fn scope_of(self, i: usize) -> usize {
        (i / 2) % self.scopes()
    }

    fn account(self, scope: usize) -> String {
        format!("{:012}", 200_000_000_000u64 + (scope / self.regions) as u64)
    }

    fn region(self, scope: usize) -> &'static str {
        REGIONS[scope % self.regions]
    }

    pub fn kind(i: usize) -> ResourceKind {
        if i.is_multiple_of(2) {
            ResourceKind::Gateway
        } else {
            ResourceKind::Runtime
        }
    }

    pub fn id(i: usize) -> String {
        match Self::kind(i) {
            ResourceKind::Runtime => format!("sim_rt_{i:06}-0123456789"),
            _ => format!("sim-gw-{i:06}-0123456789"),
        }
    }

    pub fn key(self, i: usize) -> ResourceKey {
        let scope = self.scope_of(i);
        ResourceKey {
            kind: Self::kind(i),
            account: self.account(scope),
            region: self.region(scope).to_owned(),
            id: Self::id(i),
            gateway_id: None,
        }
    }

    pub fn gateway(self, i: usize, description: &str, updated_at: &str) -> GatewaySnapshot {
        let scope = self.scope_of(i);
        let (account, region, id) = (self.account(scope), self.region(scope), Self::id(i));
        GatewaySnapshot {
            arn: format!("arn:aws:bedrock-agentcore:{region}:{account}:gateway/{id}"),
            url: Some(format!(
                "https://{id}.gateway.bedrock-agentcore.{region}.amazonaws.com/mcp"
            )),
            id,
            name: format!("sim-gw-{i:06}"),
            description: Some(description.to_owned()),
            lifecycle: Lifecycle::Ready,
            authorizer_type: AuthorizerType::AwsIam,
            jwt: None,
            created_at: CREATED.into(),
            updated_at: updated_at.into(),
        }
    }

    pub fn runtime(self, i: usize, description: &str, updated_at: &str) -> RuntimeSnapshot {
        let scope = self.scope_of(i);
        let (account, region, id) = (self.account(scope), self.region(scope), Self::id(i));
        RuntimeSnapshot {
            arn: format!("arn:aws:bedrock-agentcore:{region}:{account}:runtime/{id}"),
            id,
            name: format!("sim_rt_{i:06}"),
            description: Some(description.to_owned()),
            lifecycle: Lifecycle::Ready,
            protocol: ServerProtocol::A2a,
            jwt: None,
            created_at: CREATED.into(),
            updated_at: updated_at.into(),
        }
    }

    /// The entry a rescan derives for resource `i` as first created.
    pub fn entry(self, i: usize) -> DesiredEntry {
        let derived = match Self::kind(i) {
            ResourceKind::Gateway => gateway_entry(
                &self.gateway(i, &first(i), CREATED),
                DeriveOptions::default(),
            ),
            _ => runtime_entry(
                &self.runtime(i, &first(i), CREATED),
                DeriveOptions::default(),
            ),
        };
        derived.unwrap_or_else(|u| panic!("resource {i} is registrable: {}", u.reason))
    }
}

fn first(i: usize) -> String {
    format!("resource {i} of the simulated fleet")
}

/// Every scope's control plane, filled with `resources` resources.
pub fn servers(
    shape: Shape,
    resources: usize,
    quotas: AgentCoreQuotas,
    latency: Duration,
    clock: &Arc<TestClock>,
    shared: (&Arc<Tally>, &Arc<AtomicU64>, &Arc<Dice>),
) -> Vec<Arc<ScopeServer>> {
    let servers: Vec<Arc<ScopeServer>> = (0..shape.scopes())
        .map(|s| {
            let data = MemoryAgentCore::new(&shape.account(s), shape.region(s));
            Arc::new(ScopeServer::new(
                data,
                quotas,
                latency,
                Arc::clone(clock),
                shared,
            ))
        })
        .collect();
    for i in 0..resources {
        put(shape, &servers, i, &first(i), CREATED);
    }
    servers
}

fn put(shape: Shape, servers: &[Arc<ScopeServer>], i: usize, description: &str, at: &str) {
    let data = &servers[shape.scope_of(i)].data;
    match Shape::kind(i) {
        ResourceKind::Gateway => data.put_gateway(shape.gateway(i, description, at)),
        _ => data.put_runtime(shape.runtime(i, description, at)),
    }
}

/// The registry and state as a finished rescan of the first `resources` leaves them, written
/// straight into the in-memory peers (no model: this is the starting point, not measured).
pub async fn seed(
    shape: Shape,
    resources: usize,
    registry: &ModelRegistry,
    state: &ModelState,
) -> anyhow::Result<()> {
    for i in 0..resources {
        let d = shape.entry(i);
        registry.data().register(&d).await?;
        if EnablePolicy::Authenticated.at_registration(d.inbound_auth) {
            registry
                .data()
                .set_enabled(d.collection(), &d.path, true)
                .await?;
        }
        state.data().claim_path(&d.path, &d.resource.arn).await?;
        state
            .data()
            .record(&RecordedResource::written(&d, true))
            .await?;
    }
    Ok(())
}

/// What the burst did to AgentCore, by kind of change.
#[derive(Debug, Default, Clone, Copy, serde::Serialize, serde::Deserialize)]
pub struct Changes {
    pub updated: u64,
    pub deleted: u64,
    pub created: u64,
    /// Events naming a resource already deleted (late events): nothing changed.
    pub late: u64,
    pub distinct: u64,
}

/// `events` events over the fleet's resources, picked at random (so some resources get several):
/// 90 % updates (a new description), 5 % deletions, 5 % creations of new resources. The
/// changes are made in AgentCore at once, and every event is queued at once, as a burst.
pub fn burst(
    shape: Shape,
    resources: usize,
    events: usize,
    servers: &[Arc<ScopeServer>],
    dice: &Dice,
    clock: &TestClock,
) -> (Vec<Message>, Changes) {
    let mut gone = vec![false; resources];
    let mut touched = std::collections::HashSet::new();
    let mut changes = Changes::default();
    let mut created = 0;
    let sent_at_ms = clock.now_ms();
    let messages = (0..events)
        .map(|e| {
            let roll = dice.unit();
            let i = if roll < 0.05 {
                let i = resources + created;
                created += 1;
                changes.created += 1;
                put(shape, servers, i, &format!("created by event {e}"), CHANGED);
                i
            } else {
                let i = (dice.next_u64() % resources as u64) as usize;
                if gone[i] {
                    changes.late += 1;
                } else if roll < 0.10 {
                    gone[i] = true;
                    changes.deleted += 1;
                    let data = &servers[shape.scope_of(i)].data;
                    match Shape::kind(i) {
                        ResourceKind::Gateway => data.delete_gateway(&Shape::id(i)),
                        _ => data.delete_runtime(&Shape::id(i)),
                    }
                } else {
                    changes.updated += 1;
                    put(shape, servers, i, &format!("updated by event {e}"), CHANGED);
                }
                i
            };
            touched.insert(i);
            Message {
                key: shape.key(i),
                sent_at_ms,
                first_queued_ms: sent_at_ms,
                receive_count: 0,
                waited: None,
            }
        })
        .collect();
    changes.distinct = touched.len() as u64;
    (messages, changes)
}
