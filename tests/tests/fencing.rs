//! Leases fence the work they protect. A worker that stalls past its lease (a long GC pause, a
//! frozen container, SIGSTOP) must not, on waking, undo what the lease's next holder did: its
//! renewal fails, its registry writes are preceded by a check of the lease, its state writes
//! are conditioned on the lease's version, and a registry write that landed late is undone by
//! a reconcile under a new lease. Real worker processes against moto and the stand-in (the
//! state-level rules are the contract suite's, `tests/tests/contracts.rs`).

use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use registrar_core::identity::{ResourceKey, ResourceKind};
use registrar_core::ports::ResourceStore;
use registrar_tests::env::{TestEnv, eventually};
use registrar_tests::events::EventPath;
use registrar_tests::fixtures::{GatewayAuth, create_gateway};
use registrar_tests::proxy::Proxy;
use serde_json::json;

/// Runs `kill -<signal> <pid>`.
fn signal(child: &tokio::process::Child, signal: &str) -> anyhow::Result<()> {
    let pid = child.id().ok_or_else(|| anyhow::anyhow!("worker exited"))?;
    let status = std::process::Command::new("kill")
        .args([format!("-{signal}"), pid.to_string()])
        .status()?;
    anyhow::ensure!(status.success(), "kill -{signal} {pid}: {status}");
    Ok(())
}

fn claim_holder_of(
    item: Option<&std::collections::HashMap<String, AttributeValue>>,
) -> Option<String> {
    item.and_then(|i| i.get("holder"))
        .and_then(|h| h.as_s().ok())
        .cloned()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_frozen_mid_write_past_its_lease_leaves_the_registry_and_state_as_agentcore_is()
-> anyhow::Result<()> {
    let env = TestEnv::start().await?;
    let path = EventPath::create(&env.config, "fencing", 10, 3).await?;
    // Worker A reaches the registry through a proxy that can hold its writes in flight.
    let proxy = Proxy::start(&env.standin.url()).await?;
    let fast = ["--visibility-timeout", "3"];
    let mut a =
        env.spawn_worker_with_env(&path, &fast, &[("REGISTRY_URL", proxy.url().as_str())])?;

    // A registers and records the gateway.
    let id = create_gateway(&env.agentcore, "fenced", GatewayAuth::Iam).await?;
    path.put("CreateGateway", json!({}), json!({"gatewayId": id}))
        .await?;
    let key = ResourceKey {
        kind: ResourceKind::Gateway,
        account: registrar_tests::ACCOUNT.into(),
        region: registrar_tests::REGION.into(),
        id: id.clone(),
        gateway_id: None,
    };
    let state = env.state();
    assert!(
        eventually(Duration::from_secs(30), || env
            .standin
            .server("/fenced")
            .is_some())
        .await,
        "A registers the gateway\n{}",
        env.worker_logs()
    );
    anyhow::ensure!(
        path.drained(Duration::from_secs(30)).await?,
        "the create is done"
    );
    anyhow::ensure!(state.lookup(&key).await?.is_some(), "A recorded it");

    // The entry drifted, so the next event makes A overwrite it: A's write is held in flight
    // and A is frozen there, past its lease.
    {
        let mut db = env.standin.db();
        let entry = db.servers.get_mut("/fenced").expect("entry");
        entry["description"] = json!("stale");
        entry["metadata"]["fingerprint"] = json!("stale");
    }
    proxy.hold_registry_writes();
    path.put(
        "UpdateGateway",
        json!({"gatewayIdentifier": id, "name": "***"}),
        json!(null),
    )
    .await?;
    assert!(
        eventually(Duration::from_secs(30), || proxy.held_writes() > 0).await,
        "A sends its overwrite\n{}",
        env.worker_logs()
    );
    signal(&a, "STOP")?;

    let result = async {
        // Meanwhile the gateway is deleted, and worker B deregisters it once A's lease ran out.
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
        let deregistered = eventually(Duration::from_secs(60), || {
            env.standin.server("/fenced").is_none()
        })
        .await;
        anyhow::ensure!(deregistered, "B deregisters it\n{}", env.worker_logs());
        anyhow::ensure!(
            path.drained(Duration::from_secs(60)).await?,
            "B drained the queue"
        );
        anyhow::ensure!(state.lookup(&key).await?.is_none(), "B forgot it");

        // A's overwrite, held in flight all along, lands now: the deleted gateway is back.
        proxy.release_registry_writes();
        let resurrected = eventually(Duration::from_secs(30), || {
            env.standin.server("/fenced").is_some()
        })
        .await;
        anyhow::ensure!(resurrected, "the stale write landed\n{}", env.worker_logs());

        // A wakes: its lease is lost, its state writes are refused, and it reconciles the key
        // again under a new lease, removing what its late write put back.
        signal(&a, "CONT")?;
        let repaired = eventually(Duration::from_secs(60), || {
            env.standin.server("/fenced").is_none()
        })
        .await;
        anyhow::ensure!(repaired, "A undoes its late write\n{}", env.worker_logs());
        let logs = env.worker_logs();
        anyhow::ensure!(
            logs.contains("lease lost"),
            "A reports its lease lost\n{logs}"
        );
        anyhow::ensure!(
            logs.contains("reconciling again under a new lease"),
            "A repairs under a new lease\n{logs}"
        );
        anyhow::Ok(())
    }
    .await;
    // Never leave a stopped process or a held request behind.
    let _ = signal(&a, "CONT");
    proxy.release_registry_writes();
    result?;

    // The registry and the state are as AgentCore is: nothing.
    assert!(env.standin.server("/fenced").is_none());
    assert_eq!(state.lookup(&key).await?, None, "no state row");
    let ddb = aws_sdk_dynamodb::Client::new(&env.config);
    let claim = ddb
        .get_item()
        .table_name(&env.table)
        .key("pk", AttributeValue::S("path#/fenced".into()))
        .key("sk", AttributeValue::S("claim".into()))
        .send()
        .await?;
    assert_eq!(
        claim_holder_of(claim.item()),
        None,
        "no claim left on the path"
    );
    a.kill().await?;
    Ok(())
}
