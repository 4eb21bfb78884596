//! Key reconciles on the in-memory ports. Deletions that cascade: a deleted gateway takes its
//! target entries with it in its own reconcile, and a path claim left by a resource that is
//! gone and never registered is released for the next resource that wants the path. And a manifest
//! row that goes when its gateway's inbound auth no longer needs it.

use std::sync::Arc;
use std::time::Duration;

use registrar_core::ErrorClass;
use registrar_core::desired::{Collection, DeriveOptions, Pointing};
use registrar_core::enable::EnablePolicy;
use registrar_core::identity::{ResourceKey, ResourceKind};
use registrar_core::plan::{Policy, RegistryIdentity};
use registrar_core::ports::{LeaseStore, Registry, ResourceStore};
use registrar_testkit::fixtures::{
    ACCOUNT, REGION, gateway, server_entry, target, target_server_entry,
};
use registrar_testkit::{MemoryAgentCore, MemoryRegistry, MemoryState, TestClock};

use super::{KeyOutcome, ReconcileOptions, WriteLog, reconcile};
use crate::aws::fleet::Fleet;
use crate::resync::report::{Outcome, Status};

struct World {
    fleet: Fleet<MemoryAgentCore>,
    registry: MemoryRegistry,
    state: MemoryState,
}

impl World {
    fn new() -> Self {
        Self {
            fleet: Fleet::one(MemoryAgentCore::new(ACCOUNT, REGION)),
            registry: MemoryRegistry::new("registrar"),
            state: MemoryState::new(Arc::new(TestClock::standard())),
        }
    }

    fn agentcore(&self) -> &MemoryAgentCore {
        &self.fleet.members()[0]
    }

    /// Reconciles `key` as the event path does, through `state` (the plain or a fenced view).
    async fn reconcile_with(
        &self,
        state: &MemoryState,
        key: &ResourceKey,
        opts: ReconcileOptions,
    ) -> KeyOutcome {
        reconcile(
            &self.fleet,
            &self.registry,
            state,
            key,
            opts,
            &WriteLog::default(),
            &[],
        )
        .await
    }

    async fn reconcile(&self, key: &ResourceKey) -> KeyOutcome {
        self.reconcile_with(&self.state, key, options()).await
    }

    /// A READY gateway `name` (`id`) with `mcpServer` targets, each registered by its event.
    async fn registered_gateway(&self, name: &str, id: &str, targets: &[(&str, &str)]) {
        let gw = gateway(name, id, None);
        self.agentcore().put_gateway(gw.clone());
        for (t_name, t_id) in targets {
            self.agentcore().put_target(target(&gw, t_name, t_id));
        }
        let keys =
            std::iter::once(gateway_key(id)).chain(targets.iter().map(|(_, t)| target_key(id, t)));
        for key in keys {
            let rows = done(self.reconcile(&key).await);
            assert_eq!(statuses(&rows), [Status::Registered], "{rows:?}");
        }
    }

    async fn entry(&self, path: &str) -> Option<registrar_core::plan::CurrentEntry> {
        self.registry
            .get(Collection::Server, path)
            .await
            .expect("registry")
    }

    /// Who holds the claim on `path`: `None` when it is free (taking and giving back a probe).
    async fn claim_holder(&self, path: &str) -> Option<String> {
        let probe = "arn:probe";
        let holder = self.state.claim_path(path, probe).await.expect("claim");
        if holder.is_none() {
            self.state.release_path(path, probe).await.expect("release");
        }
        holder
    }
}

fn options() -> ReconcileOptions {
    ReconcileOptions {
        derive: DeriveOptions::default(),
        policy: Policy::Sync,
        adopt_legacy: true,
        identity: Some(RegistryIdentity::configured("registrar".into())),
        enable: EnablePolicy::Authenticated,
        mcp_targets: true,
    }
}

fn gateway_key(id: &str) -> ResourceKey {
    ResourceKey {
        kind: ResourceKind::Gateway,
        account: ACCOUNT.into(),
        region: REGION.into(),
        id: id.into(),
        gateway_id: None,
    }
}

fn target_key(gateway_id: &str, id: &str) -> ResourceKey {
    ResourceKey {
        kind: ResourceKind::Target,
        gateway_id: Some(gateway_id.into()),
        id: id.into(),
        ..gateway_key(gateway_id)
    }
}

fn done(outcome: KeyOutcome) -> Vec<Outcome> {
    match outcome {
        KeyOutcome::Done(rows) => rows,
        other => panic!("expected done, got {other:?}"),
    }
}

fn statuses(rows: &[Outcome]) -> Vec<Status> {
    rows.iter().map(|r| r.status).collect()
}

fn row<'a>(rows: &'a [Outcome], path: &str) -> &'a Outcome {
    rows.iter()
        .find(|r| r.path == path)
        .unwrap_or_else(|| panic!("no row for {path}: {rows:?}"))
}

const TARGETS: [(&str, &str); 2] = [("search", "TGT0000001"), ("docs", "TGT0000002")];

#[tokio::test(start_paused = true)]
async fn a_delete_gateway_reconcile_removes_the_gateway_and_its_target_entries_at_once() {
    let w = World::new();
    w.registered_gateway("orders", "gw-orders", &TARGETS).await;
    let gw_path = server_entry("orders", "gw-orders").path;
    let target_paths: Vec<String> = TARGETS
        .iter()
        .map(|(name, id)| target_server_entry("orders", "gw-orders", name, id).path)
        .collect();
    for path in std::iter::once(&gw_path).chain(&target_paths) {
        assert!(w.entry(path).await.is_some(), "{path} registered");
    }

    // AgentCore deletes the gateway and its targets; only the DeleteGateway event comes, and
    // its reconcile runs under the gateway key's lease, its writes fenced by it.
    w.agentcore().delete_gateway("gw-orders");
    let lease = w
        .state
        .acquire_lease(
            "key#gateway#us-east-1#gw-orders",
            "worker-a",
            Duration::from_secs(30),
        )
        .await
        .expect("store")
        .expect("free");
    let fenced = w.state.fenced(&lease);
    let rows = done(
        w.reconcile_with(&fenced, &gateway_key("gw-orders"), options())
            .await,
    );
    assert_eq!(statuses(&rows), [Status::Deregistered; 3], "{rows:?}");
    for path in std::iter::once(&gw_path).chain(&target_paths) {
        assert_eq!(row(&rows, path).status, Status::Deregistered);
        assert!(w.entry(path).await.is_none(), "{path} removed at once");
        assert_eq!(w.claim_holder(path).await, None, "{path} claim released");
    }
    for (_, id) in TARGETS {
        assert_eq!(
            w.state
                .lookup(&target_key("gw-orders", id))
                .await
                .expect("lookup"),
            None,
            "{id} forgotten"
        );
    }
    assert!(
        w.state
            .targets_of(&gateway_key("gw-orders"))
            .await
            .expect("targets")
            .is_empty()
    );
    // A replayed DeleteGateway finds nothing left to do.
    assert_eq!(done(w.reconcile(&gateway_key("gw-orders")).await), []);
}

#[tokio::test(start_paused = true)]
async fn a_target_entry_that_is_not_ours_is_reported_and_left_alone() {
    let w = World::new();
    w.registered_gateway("orders", "gw-orders", &TARGETS).await;
    let (search, docs) = (
        target_server_entry("orders", "gw-orders", "search", "TGT0000001").path,
        target_server_entry("orders", "gw-orders", "docs", "TGT0000002").path,
    );
    // Someone re-pointed the docs entry elsewhere, keeping our metadata (which anyone can copy).
    let mut copied = w.entry(&docs).await.expect("registered");
    let elsewhere = "https://elsewhere.example.com/mcp";
    copied.pointing = Some(Pointing::new(elsewhere, Some("bearer")));
    copied.mcp_endpoint = Some(elsewhere.into());
    w.registry.seed(copied.clone());

    w.agentcore().delete_gateway("gw-orders");
    let rows = done(w.reconcile(&gateway_key("gw-orders")).await);
    assert_eq!(rows.len(), 3, "{rows:?}");
    assert_eq!(
        row(&rows, &server_entry("orders", "gw-orders").path).status,
        Status::Deregistered
    );
    assert_eq!(row(&rows, &search).status, Status::Deregistered);
    let kept = row(&rows, &docs);
    assert_eq!(kept.status, Status::Conflict, "{kept:?}");
    assert!(kept.message.starts_with("kept:"), "{}", kept.message);
    assert!(kept.message.contains(elsewhere), "{}", kept.message);
    assert_eq!(w.entry(&docs).await, Some(copied), "never removed");
    assert!(w.entry(&search).await.is_none());
    assert!(
        w.state
            .lookup(&target_key("gw-orders", "TGT0000002"))
            .await
            .expect("lookup")
            .is_some(),
        "its record stays, as after any removal the applier refused"
    );
}

#[tokio::test(start_paused = true)]
async fn with_targets_not_registered_a_deleted_gateway_leaves_target_records_alone() {
    let w = World::new();
    w.registered_gateway("orders", "gw-orders", &TARGETS[..1])
        .await;
    let search = target_server_entry("orders", "gw-orders", "search", "TGT0000001").path;
    w.agentcore().delete_gateway("gw-orders");
    let off = ReconcileOptions {
        mcp_targets: false,
        ..options()
    };
    let rows = done(
        w.reconcile_with(&w.state, &gateway_key("gw-orders"), off)
            .await,
    );
    assert_eq!(statuses(&rows), [Status::Deregistered], "the gateway only");
    assert!(
        w.entry(&search).await.is_some(),
        "left to a run that registers targets"
    );
}

#[tokio::test(start_paused = true)]
async fn a_claim_held_by_a_gone_never_registered_resource_is_released_for_the_new_one() {
    let w = World::new();
    // An earlier gateway of the same name claimed the path and was deleted before it
    // registered (its worker stopped between the claim and the registry write).
    let old = gateway("orders", "gw-old", None);
    let path = server_entry("orders", "gw-new").path;
    assert_eq!(
        w.state.claim_path(&path, &old.arn).await.expect("claim"),
        None
    );
    // Its record stayed behind too (its entry was removed by hand).
    w.state
        .record(&registrar_testkit::fixtures::recorded(&server_entry(
            "orders", "gw-old",
        )))
        .await
        .expect("record");
    let new = gateway("orders", "gw-new", None);
    w.agentcore().put_gateway(new.clone());

    let rows = done(w.reconcile(&gateway_key("gw-new")).await);
    assert_eq!(statuses(&rows), [Status::Registered], "{rows:?}");
    assert_eq!(
        w.state.lookup(&gateway_key("gw-old")).await.expect("state"),
        None,
        "the gone holder's record goes with its claim"
    );
    let entry = w.entry(&path).await.expect("registered at the path");
    assert_eq!(
        entry.owner(false).resource().map(|r| r.arn.clone()),
        Some(new.arn.clone())
    );
    assert_eq!(w.claim_holder(&path).await, Some(new.arn));
}

#[tokio::test(start_paused = true)]
async fn a_claim_held_by_a_live_resource_still_conflicts() {
    let w = World::new();
    // The holder still exists (here: still being created), so its claim stands.
    let mut old = gateway("orders", "gw-old", None);
    old.lifecycle = registrar_core::observed::Lifecycle::InProgress("CREATING".into());
    w.agentcore().put_gateway(old.clone());
    let path = server_entry("orders", "gw-new").path;
    w.state.claim_path(&path, &old.arn).await.expect("claim");
    w.agentcore().put_gateway(gateway("orders", "gw-new", None));

    let rows = done(w.reconcile(&gateway_key("gw-new")).await);
    assert_eq!(statuses(&rows), [Status::Conflict], "{rows:?}");
    assert!(rows[0].message.contains(&old.arn), "{}", rows[0].message);
    assert!(w.entry(&path).await.is_none(), "nothing registered");
    assert_eq!(w.claim_holder(&path).await, Some(old.arn));
}

#[tokio::test(start_paused = true)]
async fn a_holder_that_cannot_be_read_keeps_its_claim_until_it_answers() {
    let w = World::new();
    let old = gateway("orders", "gw-old", None);
    let path = server_entry("orders", "gw-new").path;
    w.state.claim_path(&path, &old.arn).await.expect("claim");
    w.agentcore().put_gateway(gateway("orders", "gw-new", None));
    // The holder is gone, but AgentCore is throttling reads of it.
    w.agentcore().fail_reads_of("gw-old", true);

    match w.reconcile(&gateway_key("gw-new")).await {
        KeyOutcome::Failed(e) => assert_eq!(e.class, ErrorClass::Transient, "retried: {e}"),
        other => panic!("expected a retryable failure, got {other:?}"),
    }
    assert_eq!(w.claim_holder(&path).await, Some(old.arn.clone()), "kept");
    assert!(w.entry(&path).await.is_none());

    // Once AgentCore answers NotFound for it, the retried reconcile frees the path.
    w.agentcore().fail_reads_of("gw-old", false);
    let rows = done(w.reconcile(&gateway_key("gw-new")).await);
    assert_eq!(statuses(&rows), [Status::Registered], "{rows:?}");
}

#[tokio::test(start_paused = true)]
async fn a_gone_holder_whose_entry_of_ours_is_still_there_keeps_its_claim() {
    let w = World::new();
    // The holder registered an agent at the path; the new resource wants a server there. The
    // holder's own deregistration (its Delete event, or a rescan) removes its entry and claim.
    let old = registrar_testkit::fixtures::runtime("orders", "rt-old");
    w.agentcore().put_runtime(old.clone());
    let agent_key = ResourceKey {
        kind: ResourceKind::Runtime,
        ..gateway_key("rt-old")
    };
    let rows = done(w.reconcile(&agent_key).await);
    assert_eq!(statuses(&rows), [Status::Registered], "{rows:?}");
    w.agentcore().delete_runtime("rt-old");
    let path = server_entry("orders", "gw-new").path;
    w.agentcore().put_gateway(gateway("orders", "gw-new", None));

    let rows = done(w.reconcile(&gateway_key("gw-new")).await);
    assert_eq!(statuses(&rows), [Status::Conflict], "{rows:?}");
    assert_eq!(w.claim_holder(&path).await, Some(old.arn));
    assert!(w.entry(&path).await.is_none());
}

#[tokio::test]
async fn a_gateway_whose_inbound_auth_becomes_iam_loses_its_manifest_row() {
    use registrar_core::ports::TokenStore;
    let world = World::new();
    let gw = gateway("guarded", "gw-jwt", Some("https://idp.example.com"));
    world.agentcore().put_gateway(gw.clone());
    let key = gateway_key("gw-jwt");
    assert_eq!(
        statuses(&done(world.reconcile(&key).await)),
        [Status::Registered]
    );
    assert!(world.state.manifest(&gw.arn).await.expect("read").is_some());
    world
        .agentcore()
        .put_gateway(gateway("guarded", "gw-jwt", None));
    let rows = done(world.reconcile(&key).await);
    assert_eq!(statuses(&rows), [Status::Updated], "{rows:?}");
    assert_eq!(world.state.manifest(&gw.arn).await.expect("read"), None);
}
