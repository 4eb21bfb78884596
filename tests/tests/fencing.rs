//! Leases fence the work they protect. A worker that stalls past its lease (a long GC pause, a
//! frozen container, SIGSTOP) must not, on waking, undo what the lease's next holder did: its
//! renewal fails, its registry writes are preceded by a check of the lease, and its state writes
//! are conditioned on the lease's version. Against moto, the stand-in and real worker processes.

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
        region: registrar_tests::REGION.into(),
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
