//! `registrar worker` end to end: events enter through `PutEvents` on moto's EventBridge with
//! the shipped pattern and reach the real worker process through the real queue.

use std::time::Duration;

use registrar_tests::env::{TestEnv, eventually};
use registrar_tests::events::EventPath;
use registrar_tests::fixtures::{GatewayAuth, create_gateway};
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn events_register_update_and_deregister_through_the_real_queue() -> anyhow::Result<()> {
    let env = TestEnv::start().await?;
    let path = EventPath::create(&env.config, "agentcore-events", 3, 10).await?;
    // The gateway answers CREATING to its first three reads.
    env.moto
        .set_transition(
            "bedrock-agentcore-control::gateway",
            json!({"progression": "manual", "times": 3}),
        )
        .await?;
    let id = create_gateway(
        &env.agentcore,
        "orders",
        GatewayAuth::cognito("us-east-1_P", "c1"),
    )
    .await?;
    let mut worker = env.spawn_worker(&path, &[])?;

    path.put(
        "CreateGateway",
        json!({"name": "***"}),
        json!({"gatewayId": id, "status": "CREATING"}),
    )
    .await?;
    assert!(
        eventually(Duration::from_secs(40), || env
            .standin
            .server("/orders")
            .is_some())
        .await,
        "registered once READY"
    );
    assert!(
        path.dead_letters().await?.is_empty(),
        "the waiting message never reached the DLQ"
    );

    // Ten duplicate events: the entry is already right, so no registry write at all.
    let writes = env.standin.writes().len();
    assert_eq!(
        writes, 1,
        "one write: the registration (CUSTOM_JWT waits for its token to be enabled)"
    );
    for _ in 0..10 {
        path.put(
            "UpdateGateway",
            json!({"gatewayIdentifier": id, "name": "***"}),
            json!(null),
        )
        .await?;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        env.standin.writes().len(),
        writes,
        "duplicates write nothing"
    );

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
    assert!(
        eventually(Duration::from_secs(20), || env
            .standin
            .server("/orders")
            .is_none())
        .await,
        "deregistered"
    );

    // A poison message goes to the DLQ with its reason; the worker keeps serving.
    path.send_raw("{not json").await?;
    let id2 = create_gateway(&env.agentcore, "billing", GatewayAuth::Iam).await?;
    path.put("CreateGateway", json!({}), json!({"gatewayId": id2}))
        .await?;
    assert!(
        eventually(Duration::from_secs(20), || env
            .standin
            .server("/billing")
            .is_some())
        .await,
        "still serving"
    );
    let dead = path.dead_letters().await?;
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(
        dead[0]
            .attributes
            .get("registrar-reason-code")
            .map(String::as_str),
        Some("malformed")
    );

    // SIGTERM: the worker stops on its own, well within the grace period.
    let pid = worker.id().expect("pid");
    std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()?;
    let status = tokio::time::timeout(Duration::from_secs(15), worker.wait()).await??;
    assert!(status.success(), "{status}");
    Ok(())
}
