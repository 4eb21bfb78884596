//! One-key reconciles (what the worker runs per event) against moto and the stand-in.

use aws_sdk_bedrockagentcorecontrol::types::{AuthorizerType, GatewayProtocolType};
use registrar_core::desired::DeriveOptions;
use registrar_core::enable::EnablePolicy;
use registrar_core::identity::{ResourceKey, ResourceKind};
use registrar_core::plan::Policy;
use registrar_core::ports::ResourceStore;
use registrar_tests::env::{ADMIN_TOKEN, TestEnv};
use registrar_tests::fixtures::{GatewayAuth, create_gateway};
use registrar_tests::proxy::Proxy;
use registrar_tests::{ACCOUNT, REGION};
use registrar_worker::aws::agentcore::AgentCoreAws;
use registrar_worker::aws::fleet::Fleet;
use registrar_worker::aws::state::DynamoState;
use registrar_worker::engine::{KeyOutcome, ReconcileOptions, WriteLog, reconcile};
use registrar_worker::resync::report::Status;
use serde_json::json;

fn opts(enable: EnablePolicy) -> ReconcileOptions {
    ReconcileOptions {
        derive: DeriveOptions::default(),
        policy: Policy::Sync,
        adopt_legacy: true,
        identity: None,
        enable,
        mcp_targets: false,
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

fn statuses(outcome: &KeyOutcome) -> Vec<Status> {
    match outcome {
        KeyOutcome::Done(rows) => rows.iter().map(|r| r.status).collect(),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_creating_gateway_waits_then_registers_and_duplicates_write_nothing() -> anyhow::Result<()>
{
    let env = TestEnv::start().await?;
    env.moto
        .set_transition(
            "bedrock-agentcore-control::gateway",
            json!({"progression": "manual", "times": 2}),
        )
        .await?;
    let id = create_gateway(&env.agentcore, "orders", GatewayAuth::Iam).await?;
    let (ac, registry, state) = (
        Fleet::one(AgentCoreAws::new(&env.config)),
        env.registry(ADMIN_TOKEN),
        env.state(),
    );
    let key = gateway_key(&id);

    let first = reconcile(
        &ac,
        &registry,
        &state,
        &key,
        opts(EnablePolicy::None),
        &WriteLog::default(),
        &[],
    )
    .await;
    assert_eq!(first, KeyOutcome::Waiting("CREATING".into()));
    assert!(env.standin.writes().is_empty());

    let mut writes_after = Vec::new();
    for _ in 0..10 {
        let outcome = reconcile(
            &ac,
            &registry,
            &state,
            &key,
            opts(EnablePolicy::None),
            &WriteLog::default(),
            &[],
        )
        .await;
        assert!(matches!(outcome, KeyOutcome::Done(_)), "{outcome:?}");
        writes_after.push(env.standin.writes().len());
    }
    assert_eq!(
        writes_after, [1; 10],
        "ten duplicate events, one registry write"
    );
    assert!(env.standin.server("/orders").is_some());
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deleted_gateway_is_deregistered_and_forgotten() -> anyhow::Result<()> {
    let env = TestEnv::start().await?;
    let id = create_gateway(&env.agentcore, "billing", GatewayAuth::Iam).await?;
    let (ac, registry, state) = (
        Fleet::one(AgentCoreAws::new(&env.config)),
        env.registry(ADMIN_TOKEN),
        env.state(),
    );
    let key = gateway_key(&id);
    assert_eq!(
        statuses(
            &reconcile(
                &ac,
                &registry,
                &state,
                &key,
                opts(EnablePolicy::Authenticated),
                &WriteLog::default(),
                &[],
            )
            .await
        ),
        [Status::Registered]
    );
    assert_eq!(
        env.standin.server("/billing").expect("entry")["is_enabled"],
        json!(true)
    );

    env.agentcore
        .delete_gateway()
        .gateway_identifier(&id)
        .send()
        .await?;
    assert_eq!(
        statuses(
            &reconcile(
                &ac,
                &registry,
                &state,
                &key,
                opts(EnablePolicy::Authenticated),
                &WriteLog::default(),
                &[],
            )
            .await
        ),
        [Status::Deregistered]
    );
    assert!(env.standin.server("/billing").is_none());
    assert_eq!(
        state.lookup(&key).await?,
        None,
        "state row and key pointer are gone"
    );
    assert_eq!(
        statuses(
            &reconcile(
                &ac,
                &registry,
                &state,
                &key,
                opts(EnablePolicy::Authenticated),
                &WriteLog::default(),
                &[],
            )
            .await
        ),
        Vec::<Status>::new()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_delete_that_arrives_before_the_create_leaves_nothing_behind() -> anyhow::Result<()> {
    let env = TestEnv::start().await?;
    let id = create_gateway(&env.agentcore, "short-lived", GatewayAuth::Iam).await?;
    env.agentcore
        .delete_gateway()
        .gateway_identifier(&id)
        .send()
        .await?;
    let (ac, registry, state) = (
        Fleet::one(AgentCoreAws::new(&env.config)),
        env.registry(ADMIN_TOKEN),
        env.state(),
    );
    // The DeleteGateway event first, then the CreateGateway event: both name the same key.
    for _ in 0..2 {
        let outcome = reconcile(
            &ac,
            &registry,
            &state,
            &gateway_key(&id),
            opts(EnablePolicy::Authenticated),
            &WriteLog::default(),
            &[],
        )
        .await;
        assert_eq!(outcome, KeyOutcome::Done(Vec::new()));
    }
    assert!(env.standin.writes().is_empty());
    assert!(env.standin.db().servers.is_empty());
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn an_updating_gateway_waits_and_keeps_its_entry() -> anyhow::Result<()> {
    let env = TestEnv::start().await?;
    let id = create_gateway(&env.agentcore, "orders", GatewayAuth::Iam).await?;
    let (ac, registry, state) = (
        Fleet::one(AgentCoreAws::new(&env.config)),
        env.registry(ADMIN_TOKEN),
        env.state(),
    );
    let key = gateway_key(&id);
    reconcile(
        &ac,
        &registry,
        &state,
        &key,
        opts(EnablePolicy::None),
        &WriteLog::default(),
        &[],
    )
    .await;
    env.agentcore
        .update_gateway()
        .gateway_identifier(&id)
        .name("orders")
        .description("Orders, now with refunds")
        .role_arn("arn:aws:iam::123456789012:role/AgentCoreRole")
        .protocol_type(GatewayProtocolType::Mcp)
        .authorizer_type(AuthorizerType::AwsIam)
        .send()
        .await?;
    assert_eq!(
        reconcile(
            &ac,
            &registry,
            &state,
            &key,
            opts(EnablePolicy::None),
            &WriteLog::default(),
            &[],
        )
        .await,
        KeyOutcome::Waiting("UPDATING".into())
    );
    assert_eq!(
        env.standin.server("/orders").expect("kept")["description"],
        json!("AgentCore Gateway: Orders")
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_gateway_costs_its_registration_and_enable_and_a_taken_path_is_read_after_its_409()
-> anyhow::Result<()> {
    let env = TestEnv::start().await?;
    let fresh = create_gateway(&env.agentcore, "fresh", GatewayAuth::Iam).await?;
    let taken = create_gateway(&env.agentcore, "taken", GatewayAuth::Iam).await?;
    // Another publisher's entry at the path `taken` derives to.
    env.standin.seed_server(
        json!({"path": "/taken", "server_name": "taken", "description": "theirs",
        "proxy_pass_url": "https://theirs.example/mcp", "registered_by": "bob", "tags": [],
        "metadata": {}, "is_enabled": true, "status": "active"}),
    );
    // The state's calls through a recording proxy.
    let dynamodb = Proxy::start(&env.moto.url()).await?;
    let state = DynamoState::new(
        &env.config.to_builder().endpoint_url(dynamodb.url()).build(),
        &env.table,
    );
    let (ac, registry) = (
        Fleet::one(AgentCoreAws::new(&env.config)),
        env.registry(ADMIN_TOKEN),
    );
    let run = |id: String| {
        let (ac, registry, state) = (&ac, &registry, &state);
        async move {
            reconcile(
                ac,
                registry,
                state,
                &gateway_key(&id),
                opts(EnablePolicy::Authenticated),
                &WriteLog::default(),
                &[],
            )
            .await
        }
    };

    env.standin.clear_log();
    assert_eq!(statuses(&run(fresh).await), [Status::Registered]);
    let kinds: Vec<&str> = env.standin.log().iter().map(|l| l.kind()).collect();
    assert_eq!(
        kinds,
        ["register server", "toggle server"],
        "no read before the registration"
    );

    env.standin.clear_log();
    dynamodb.record();
    assert_eq!(statuses(&run(taken).await), [Status::Conflict]);
    let calls = env.standin.calls_by_kind();
    assert_eq!(
        calls,
        [
            ("get server".to_owned(), 1),
            ("register server (409)".to_owned(), 1)
        ]
        .into(),
        "the path read once the registration found it taken"
    );
    assert_eq!(
        env.standin.server("/taken").expect("kept")["registered_by"],
        json!("bob"),
        "theirs, untouched"
    );
    let operations: Vec<String> = dynamodb
        .take_recorded()
        .iter()
        .filter_map(|c| c.headers.get("x-amz-target")?.to_str().ok())
        .filter_map(|t| t.rsplit('.').next().map(str::to_owned))
        .collect();
    assert_eq!(
        operations.iter().filter(|o| *o == "PutItem").count(),
        1,
        "the path claimed once, for the registration: {operations:?}"
    );
    assert_eq!(
        operations.iter().filter(|o| *o == "DeleteItem").count(),
        1,
        "and given back once: {operations:?}"
    );
    assert!(
        state
            .claim_path(
                "/taken",
                "arn:aws:bedrock-agentcore:us-east-1:123456789012:gateway/other"
            )
            .await?
            .is_none(),
        "no claim left on the path"
    );
    Ok(())
}
