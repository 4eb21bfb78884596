//! Leases fence the work they protect. A worker that stalls past its lease (a long GC pause, a
//! frozen container, SIGSTOP) must not, on waking, undo what the lease's next holder did: its
//! renewal fails, its registry writes are preceded by a check of the lease, and its state writes
//! are conditioned on the lease's version. Against moto, the stand-in and real worker processes.

use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use registrar_core::desired::{Collection, Pointing};
use registrar_core::identity::{ResourceKey, ResourceKind, ResourceRef};
use registrar_core::plan::RecordedResource;
use registrar_core::ports::StateStore;
use registrar_core::tokens::{IdpVendor, ManifestFields};
use registrar_core::{ErrorClass, PortError};
use registrar_tests::REGION;
use registrar_tests::env::{TestEnv, eventually};
use registrar_tests::events::EventPath;
use registrar_tests::fixtures::{GatewayAuth, create_gateway};
use registrar_tests::proxy::Proxy;
use serde_json::json;

const ARN: &str = "arn:aws:bedrock-agentcore:us-east-1:123456789012:gateway/gw-fenced";

fn row() -> RecordedResource {
    RecordedResource {
        resource: ResourceRef {
            kind: ResourceKind::Gateway,
            arn: ARN.into(),
            account: "123456789012".into(),
            region: REGION.into(),
            id: "gw-fenced".into(),
            gateway_id: None,
        },
        collection: Collection::Server,
        path: "/fenced".into(),
        fingerprint: "f1".into(),
        aws_updated_at: "2026-11-29T10:00:00Z".into(),
        enabled_set: true,
        pointing: Some(Pointing::new("https://gw-fenced.example/mcp", None)),
        name: "fenced".into(),
        auth_label: "IAM".into(),
    }
}

fn manifest() -> ManifestFields {
    ManifestFields {
        path: "/fenced".into(),
        arn: ARN.into(),
        url: "https://gw-fenced.example/mcp".into(),
        discovery_url: "https://idp.example/.well-known/openid-configuration".into(),
        allowed_clients: vec!["c".into()],
        allowed_audience: vec![],
        allowed_scopes: vec![],
        idp_vendor: IdpVendor::detect("https://idp.example/.well-known/openid-configuration"),
    }
}

fn key() -> ResourceKey {
    ResourceKey {
        kind: ResourceKind::Gateway,
        account: "123456789012".into(),
        region: REGION.into(),
        id: "gw-fenced".into(),
        gateway_id: None,
    }
}

fn lease_lost(r: Result<impl std::fmt::Debug, PortError>, what: &str) {
    let e = r.expect_err(what);
    assert_eq!(e.class, ErrorClass::Transient, "{what}: {e}");
    assert!(e.to_string().contains("lease lost"), "{what}: {e}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stale_lease_neither_overwrites_nor_resurrects_what_the_next_holder_did()
-> anyhow::Result<()> {
    let env = TestEnv::start().await?;
    let state = env.state();
    let name = "key#gateway#us-east-1#gw-fenced";
    let ttl = Duration::from_millis(300);

    // A holds the lease and writes under it.
    let a = state
        .acquire_lease(name, "worker-a", ttl)
        .await?
        .expect("free");
    let stale = state.fenced(&a);
    stale.hold().await?;
    assert_eq!(stale.claim_path("/fenced", ARN).await?, None);
    stale.record(&row()).await?;
    stale.put_manifest(&manifest()).await?;
    assert!(
        state.acquire_lease(name, "worker-b", ttl).await?.is_none(),
        "held by A"
    );

    // A stalls; once its lease has run out, B takes it and handles the deletion.
    let mut b = None;
    for _ in 0..100 {
        b = state
            .acquire_lease(name, "worker-b", Duration::from_secs(30))
            .await?;
        if b.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let b = b.expect("B takes the lease after A's ran out");
    assert!(b.version > a.version, "versions only grow");
    let next = state.fenced(&b);
    next.release_path("/fenced", ARN).await?;
    next.forget(ARN).await?;
    next.delete_manifest(ARN).await?;

    // A wakes up: its lease is gone, and none of its writes lands.
    assert!(!state.renew_lease(&a).await?, "A's renewal fails");
    lease_lost(stale.hold().await, "hold");
    lease_lost(stale.record(&row()).await, "record");
    lease_lost(stale.claim_path("/fenced", ARN).await, "claim");
    lease_lost(stale.put_manifest(&manifest()).await, "manifest");
    assert!(stale.mark_enabled(ARN).await.is_err(), "no row to mark");
    state.release_lease(&a).await?;
    assert!(
        state.renew_lease(&b).await?,
        "A's release left B's lease alone"
    );

    // The state is as B left it: nothing (tombstones are invisible to readers).
    assert_eq!(state.lookup(&key()).await?, None);
    assert_eq!(state.manifest(ARN).await?, None);
    assert!(
        state
            .resources()
            .await?
            .iter()
            .all(|r| r.resource.arn != ARN)
    );
    assert!(state.manifests().await?.iter().all(|m| m.arn != ARN));
    let ddb = aws_sdk_dynamodb::Client::new(&env.config);
    let claim = ddb
        .get_item()
        .table_name(&env.table)
        .key("pk", AttributeValue::S("path#/fenced".into()))
        .key("sk", AttributeValue::S("claim".into()))
        .send()
        .await?;
    assert!(
        claim.item().is_none_or(|i| !i.contains_key("holder")),
        "no claim on the path: {claim:?}"
    );

    // The next holder (and an unfenced rescan) write over the tombstones as usual.
    let newer = state.fenced(&b);
    assert_eq!(newer.claim_path("/fenced", ARN).await?, None);
    newer.record(&row()).await?;
    newer.put_manifest(&manifest()).await?;
    newer.mark_enabled(ARN).await?;
    assert_eq!(state.lookup(&key()).await?, Some(row()));
    assert_eq!(state.manifest(ARN).await?, Some(manifest()));
    state.release_lease(&b).await?;
    let c = state
        .acquire_lease(name, "worker-c", ttl)
        .await?
        .expect("released");
    assert!(c.version > b.version);
    Ok(())
}

/// Runs `kill -<signal> <pid>`.
fn signal(child: &tokio::process::Child, signal: &str) -> anyhow::Result<()> {
    let pid = child.id().ok_or_else(|| anyhow::anyhow!("worker exited"))?;
    let status = std::process::Command::new("kill")
        .args([format!("-{signal}"), pid.to_string()])
        .status()?;
    anyhow::ensure!(status.success(), "kill -{signal} {pid}: {status}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_paused_past_its_lease_does_not_undo_the_delete_another_worker_handled()
-> anyhow::Result<()> {
    let env = TestEnv::start().await?;
    let path = EventPath::create(&env.config, "fencing", 10, 3).await?;
    // Worker A reaches the registry through a proxy, so the test sees when A is mid-reconcile.
    let proxy = Proxy::start(&env.standin.url()).await?;
    proxy.set_latency(Duration::from_millis(500));
    proxy.record();
    let fast = ["--visibility-timeout", "3"];
    let mut a =
        env.spawn_worker_with_env(&path, &fast, &[("REGISTRY_URL", proxy.url().as_str())])?;

    let id = create_gateway(&env.agentcore, "fenced", GatewayAuth::Iam).await?;
    path.put("CreateGateway", json!({}), json!({"gatewayId": id}))
        .await?;
    // A has read AgentCore (READY) and asks the registry what is at the path: freeze it there.
    let asked = || {
        proxy
            .controls()
            .recorded
            .iter()
            .any(|r| r.service == "registry" && r.uri.contains("fenced"))
    };
    assert!(
        eventually(Duration::from_secs(20), asked).await,
        "worker A reconciles the create\n{}",
        env.worker_logs()
    );
    signal(&a, "STOP")?;

    // While A is frozen the gateway is deleted, and worker B handles that, once A's lease has
    // run out (B's own attempts wait on it), together with A's message, which reappears.
    env.agentcore
        .delete_gateway()
        .gateway_identifier(&id)
        .send()
        .await?;
    path.put(
        "DeleteGateway",
        json!({"gatewayIdentifier": id}),
        json!({"gatewayId": id, "status": "DELETING"}),
    )
    .await?;
    let _b = env.spawn_worker(&path, &fast)?;
    let drained = path.drained(Duration::from_secs(60)).await?;
    let result = async {
        anyhow::ensure!(drained, "B drained the queue\n{}", env.worker_logs());
        anyhow::ensure!(
            env.standin.server("/fenced").is_none(),
            "nothing registered yet"
        );

        // A wakes with what it read before the delete (READY, nothing at the path). Its
        // lease is gone: it stops before any write.
        signal(&a, "CONT")?;
        let lost = eventually(Duration::from_secs(30), || {
            env.worker_logs().contains("lease lost")
        })
        .await;
        anyhow::ensure!(lost, "A reports its lease lost\n{}", env.worker_logs());
        anyhow::Ok(())
    }
    .await;
    // Never leave a stopped process behind.
    let _ = signal(&a, "CONT");
    result?;
    assert!(
        env.standin.server("/fenced").is_none(),
        "the registry is as AgentCore is: no entry\n{}",
        env.worker_logs()
    );
    assert!(
        env.standin.writes().is_empty(),
        "no registry write at all: {:?}",
        env.standin.writes()
    );
    let state = env.state();
    let gone = ResourceKey {
        kind: ResourceKind::Gateway,
        account: registrar_tests::ACCOUNT.into(),
        region: REGION.into(),
        id: id.clone(),
        gateway_id: None,
    };
    assert_eq!(state.lookup(&gone).await?, None, "no state row");
    let ddb = aws_sdk_dynamodb::Client::new(&env.config);
    let claim = ddb
        .get_item()
        .table_name(&env.table)
        .key("pk", AttributeValue::S("path#/fenced".into()))
        .key("sk", AttributeValue::S("claim".into()))
        .send()
        .await?;
    assert!(
        claim.item().is_none_or(|i| !i.contains_key("holder")),
        "no claim left on the path: {claim:?}"
    );
    a.kill().await?;
    Ok(())
}
