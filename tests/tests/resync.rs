//! `registrar resync` against moto and the registry stand-in: idempotence, deletion only on
//! authority, conflicts, and how registry errors are retried or reported.

use aws_sdk_bedrockagentcorecontrol::types::{AuthorizerType, GatewayProtocolType, ServerProtocol};
use registrar_core::ports::ResourceStore;
use registrar_tests::env::{ADMIN_TOKEN, NOBODY_TOKEN, TestEnv, eventually, options};
use registrar_tests::fixtures::{GatewayAuth, create_gateway, create_runtime};
use registrar_tests::proxy::Proxy;
use registrar_tests::standin::Fault;
use registrar_tests::{ACCOUNT, REGION};
use registrar_worker::aws::agentcore::AgentCoreAws;
use registrar_worker::resync::ResyncOptions;
use registrar_worker::resync::report::Status;
use serde_json::json;

fn status_of(report: &registrar_worker::resync::report::Report, path: &str) -> Option<Status> {
    report
        .results
        .iter()
        .find(|r| r.path == path)
        .map(|r| r.status)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_resync_makes_zero_registry_writes() -> anyhow::Result<()> {
    let env = TestEnv::start().await?;
    create_gateway(&env.agentcore, "orders", GatewayAuth::Iam).await?;
    create_gateway(
        &env.agentcore,
        "billing",
        GatewayAuth::cognito("us-east-1_P", "c1"),
    )
    .await?;
    create_runtime(&env.agentcore, "support_agent", ServerProtocol::A2A).await?;
    create_runtime(&env.agentcore, "geo_tools", ServerProtocol::Mcp).await?;
    let first = env.resync(options()).await?;
    assert_eq!(first.registered, 4, "{}", first.to_text());
    env.standin.clear_log();

    let second = env.resync(options()).await?;
    assert_eq!(second.unchanged, 4, "{}", second.to_text());
    assert_eq!(
        env.standin.writes(),
        vec![],
        "no registry writes on a no-change resync"
    );
    let gets = env
        .standin
        .log()
        .iter()
        .filter(|l| l.path.starts_with("/api/servers/") || l.path.starts_with("/api/agents/"))
        .count();
    assert_eq!(
        gets, 0,
        "what exists is learned from the two list calls, not per entry"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_first_resync_registers_each_new_resource_in_one_call_and_asks_only_about_taken_paths()
-> anyhow::Result<()> {
    let env = TestEnv::start().await?;
    create_gateway(&env.agentcore, "orders", GatewayAuth::Iam).await?;
    create_runtime(&env.agentcore, "support_agent", ServerProtocol::A2A).await?;
    create_gateway(&env.agentcore, "billing", GatewayAuth::Iam).await?;
    // Someone else's draft at a path we want: lists leave it out, the registration does not.
    let draft = json!({"path": "/billing", "server_name": "Billing (draft)", "description": "by alice",
        "proxy_pass_url": "https://billing.internal/mcp", "tags": [], "registered_by": "alice",
        "is_enabled": false, "status": "draft", "metadata": {"owner": "alice"}});
    env.standin.seed_server(draft.clone());
    env.standin.clear_log();

    let report = env.resync(options()).await?;
    let text = report.to_text();
    assert_eq!(report.registered, 2, "{text}");
    assert_eq!(
        status_of(&report, "/billing"),
        Some(Status::Conflict),
        "{text}"
    );
    assert!(!report.has_failures(), "{text}");
    let want: Vec<(&str, usize)> = vec![
        // Only the taken path is looked at, after its registration answered 409.
        ("get server", 1),
        ("list agents", 1),
        ("list servers", 1),
        ("register agent", 1),
        ("register server", 1),
        ("register server (409)", 1),
        ("toggle agent", 1),
        ("toggle server", 1),
    ];
    let by = env.standin.calls_by_kind();
    let got: Vec<(&str, usize)> = by.iter().map(|(k, n)| (k.as_str(), *n)).collect();
    assert_eq!(got, want);
    assert_eq!(
        env.standin.server("/billing"),
        Some(draft),
        "the draft is untouched"
    );
    Ok(())
}

/// The AgentCore calls of a resync through `aws`, as `GET /gateways/` and the like.
fn agentcore_calls(aws: &Proxy) -> Vec<String> {
    aws.take_recorded()
        .iter()
        .filter(|c| c.service == "bedrock-agentcore")
        .map(|c| {
            format!(
                "{} {}",
                c.method,
                c.uri.split('?').next().unwrap_or_default()
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rescan_reads_only_what_aws_lists_as_changed_unless_deep() -> anyhow::Result<()> {
    let env = TestEnv::start().await?;
    let orders = create_gateway(&env.agentcore, "orders", GatewayAuth::Iam).await?;
    create_gateway(&env.agentcore, "wide-open", GatewayAuth::None).await?;
    create_runtime(&env.agentcore, "support_agent", ServerProtocol::A2A).await?;
    create_runtime(&env.agentcore, "geo_tools", ServerProtocol::Mcp).await?;
    assert_eq!(env.resync(options()).await?.registered, 4);
    // Through a proxy that counts AgentCore calls (and finishes moto's endless UPDATING).
    let aws = Proxy::start(&env.moto.url()).await?;
    aws.controls().complete_updates = true;
    let ac = AgentCoreAws::new(&env.config.to_builder().endpoint_url(aws.url()).build());
    let registry = env.registry(ADMIN_TOKEN);

    aws.record();
    env.standin.clear_log();
    let quick = env.resync_with(&ac, &registry, options()).await?;
    assert_eq!(quick.unchanged, 4, "{}", quick.to_text());
    assert!(
        quick
            .results
            .iter()
            .all(|r| r.message.starts_with("not read")),
        "{}",
        quick.to_text()
    );
    assert_eq!(quick.unauthenticated, ["/wide-open"], "still warned about");
    assert_eq!(
        agentcore_calls(&aws),
        ["GET /gateways", "POST /runtimes"],
        "the two lists, no Get"
    );
    assert_eq!(env.standin.writes(), vec![]);

    aws.record();
    let deep = env
        .resync_with(
            &ac,
            &registry,
            ResyncOptions {
                deep: true,
                ..options()
            },
        )
        .await?;
    assert_eq!(deep.unchanged, 4, "{}", deep.to_text());
    assert_eq!(
        agentcore_calls(&aws).len(),
        2 + 4,
        "--deep reads every resource"
    );
    assert_eq!(env.standin.writes(), vec![]);

    // A change in AgentCore moves updatedAt: that resource alone is read and rewritten.
    env.agentcore
        .update_gateway()
        .gateway_identifier(&orders)
        .name("orders")
        .description("Orders, now with refunds")
        .role_arn(format!("arn:aws:iam::{ACCOUNT}:role/gw"))
        .protocol_type(GatewayProtocolType::Mcp)
        .authorizer_type(AuthorizerType::AwsIam)
        .send()
        .await?;
    aws.record();
    let after = env.resync_with(&ac, &registry, options()).await?;
    assert_eq!(
        (after.updated, after.unchanged),
        (1, 3),
        "{}",
        after.to_text()
    );
    // Every list comes before any read (the planner learns which paths are contested).
    assert_eq!(
        agentcore_calls(&aws),
        [
            "GET /gateways".to_owned(),
            "POST /runtimes".to_owned(),
            format!("GET /gateways/{orders}"),
        ]
    );
    assert_eq!(
        env.standin.server("/orders").expect("entry")["description"],
        json!("Orders, now with refunds")
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deleted_gateway_is_deregistered_but_updating_and_creating_ones_are_kept()
-> anyhow::Result<()> {
    let env = TestEnv::start().await?;
    let ac = &env.agentcore;
    create_gateway(ac, "keep-me", GatewayAuth::Iam).await?;
    let doomed = create_gateway(ac, "delete-me", GatewayAuth::Iam).await?;
    let updating = create_gateway(ac, "update-me", GatewayAuth::Iam).await?;
    create_runtime(ac, "steady_agent", ServerProtocol::Http).await?;
    let first = env.resync(options()).await?;
    assert_eq!(first.registered, 4, "{}", first.to_text());

    ac.delete_gateway()
        .gateway_identifier(&doomed)
        .send()
        .await?;
    // moto leaves an updated gateway UPDATING for good.
    ac.update_gateway()
        .gateway_identifier(&updating)
        .name("update-me")
        .role_arn("arn:aws:iam::123456789012:role/AgentCoreRole")
        .protocol_type(GatewayProtocolType::Mcp)
        .authorizer_type(AuthorizerType::AwsIam)
        .send()
        .await?;
    // A gateway still CREATING, whose entry we registered earlier (e.g. from a previous life).
    env.moto
        .set_transition(
            "bedrock-agentcore-control::gateway",
            json!({"progression": "manual", "times": 1000}),
        )
        .await?;
    let creating = ac
        .create_gateway()
        .name("creating-gw")
        .role_arn("arn:aws:iam::123456789012:role/AgentCoreRole")
        .protocol_type(GatewayProtocolType::Mcp)
        .authorizer_type(AuthorizerType::AwsIam)
        .send()
        .await?;
    env.standin.seed_server(json!({
        "path": "/creating-gw", "server_name": "Creating Gw", "description": "x", "proxy_pass_url": "https://x",
        "tags": ["agentcore", "gateway", "auto-registered"], "registered_by": "registrar", "is_enabled": false,
        "status": "active", "metadata": {"source": "agentcore-registrar", "gateway_arn": creating.gateway_arn(),
        "gateway_id": creating.gateway_id(), "region": REGION, "account_id": ACCOUNT}}));

    let second = env.resync(options()).await?;
    let text = second.to_text();
    assert_eq!(
        status_of(&second, "/delete-me"),
        Some(Status::Deregistered),
        "{text}"
    );
    assert!(
        env.standin.server("/delete-me").is_none(),
        "removed from the registry"
    );
    assert!(
        env.standin.server("/update-me").is_some(),
        "UPDATING is not gone"
    );
    assert!(
        env.standin.server("/creating-gw").is_some(),
        "CREATING is not gone"
    );
    assert!(env.standin.server("/keep-me").is_some());
    assert!(env.standin.agent("/steady-agent").is_some());
    assert_eq!(second.deregistered, 1, "{text}");
    assert!(
        second
            .results
            .iter()
            .any(|r| r.status == Status::Waiting && r.message.contains("CREATING")),
        "{text}"
    );
    let remaining: Vec<String> = env
        .state()
        .resources()
        .await?
        .into_iter()
        .map(|r| r.path)
        .collect();
    assert!(
        !remaining.contains(&"/delete-me".to_owned()),
        "its state row is gone: {remaining:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn an_entry_we_do_not_own_is_a_conflict_and_left_untouched() -> anyhow::Result<()> {
    let env = TestEnv::start().await?;
    let foreign = json!({"path": "/orders", "server_name": "Orders (hand made)", "description": "by alice",
        "proxy_pass_url": "https://orders.internal/mcp", "tags": ["orders"], "registered_by": "alice",
        "is_enabled": true, "status": "active", "metadata": {"owner": "alice"}});
    env.standin.seed_server(foreign.clone());
    create_gateway(&env.agentcore, "orders", GatewayAuth::Iam).await?;

    let report = env.resync(options()).await?;
    let row = report
        .results
        .iter()
        .find(|r| r.path == "/orders")
        .expect("row");
    assert_eq!(row.status, Status::Conflict, "{}", report.to_text());
    assert!(
        row.message.contains("not owned by agentcore-registrar"),
        "{}",
        row.message
    );
    assert_eq!(
        env.standin.server("/orders"),
        Some(foreign),
        "the foreign entry is untouched"
    );
    assert_eq!(env.standin.writes(), vec![], "no write was even attempted");
    assert!(
        !report.has_failures(),
        "a conflict is reported, not a failure"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_gateway_and_a_runtime_with_the_same_slug_do_not_overwrite_each_other()
-> anyhow::Result<()> {
    let env = TestEnv::start().await?;
    let gw = create_gateway(&env.agentcore, "geo-mcp", GatewayAuth::Iam).await?;
    create_runtime(&env.agentcore, "geo_mcp", ServerProtocol::Mcp).await?;

    for round in 0..2 {
        let report = env.resync(options()).await?;
        let rows: Vec<_> = report
            .results
            .iter()
            .filter(|r| r.path == "/geo-mcp")
            .collect();
        assert_eq!(rows.len(), 2, "{}", report.to_text());
        let gateway_row = rows
            .iter()
            .find(|r| r.resource_type == "gateway")
            .expect("gateway row");
        let runtime_row = rows
            .iter()
            .find(|r| r.resource_type == "runtime")
            .expect("runtime row");
        let want = if round == 0 {
            Status::Registered
        } else {
            Status::Unchanged
        };
        assert_eq!(
            gateway_row.status, want,
            "the older resource keeps the path"
        );
        assert_eq!(runtime_row.status, Status::Conflict);
        let entry = env.standin.server("/geo-mcp").expect("entry");
        assert_eq!(
            entry["metadata"]["gateway_id"],
            json!(gw),
            "still the gateway's entry"
        );
        assert!(entry["metadata"].get("runtime_arn").is_none());
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn registry_5xx_is_retried_until_it_succeeds() -> anyhow::Result<()> {
    let env = TestEnv::start().await?;
    create_gateway(&env.agentcore, "flaky", GatewayAuth::Iam).await?;
    env.standin.inject(Fault {
        writes_only: true,
        retry_after_secs: Some(0),
        ..Fault::status(503, 2)
    });

    let report = env.resync(options()).await?;
    assert_eq!(
        status_of(&report, "/flaky"),
        Some(Status::Registered),
        "{}",
        report.to_text()
    );
    let register_statuses: Vec<u16> = env
        .standin
        .log()
        .iter()
        .filter(|l| l.path == "/api/servers/register")
        .map(|l| l.status)
        .collect();
    assert_eq!(register_statuses, [503, 503, 201]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_registry_that_keeps_failing_is_reported_as_transient() -> anyhow::Result<()> {
    let env = TestEnv::start().await?;
    create_gateway(&env.agentcore, "down", GatewayAuth::Iam).await?;
    env.standin.inject(Fault {
        writes_only: true,
        ..Fault::status(502, 100)
    });
    let report = env.resync(options()).await?;
    let row = report
        .results
        .iter()
        .find(|r| r.path == "/down")
        .expect("row");
    assert_eq!(row.status, Status::Failed);
    assert!(
        row.message.contains("HTTP 502") && row.message.contains("(transient)"),
        "{}",
        row.message
    );
    let attempts = env
        .standin
        .log()
        .iter()
        .filter(|l| l.path == "/api/servers/register")
        .count();
    assert_eq!(attempts, 3, "the configured number of attempts, no more");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_registry_4xx_is_not_retried_and_is_reported_with_the_registry_message()
-> anyhow::Result<()> {
    let env = TestEnv::start().await?;
    create_gateway(&env.agentcore, "orders", GatewayAuth::Iam).await?;
    create_runtime(&env.agentcore, "helper_agent", ServerProtocol::Http).await?;
    let nobody_token = env.token_file.with_file_name("nobody.json");
    registrar_tests::env::write_private(
        &nobody_token,
        &json!({"tokens": {"access_token": NOBODY_TOKEN}}).to_string(),
    )?;

    let out = env
        .cli(&[
            "resync",
            "--token-file",
            nobody_token.to_str().unwrap_or_default(),
        ])
        .await?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "failures give a non-zero exit code\n{stdout}"
    );
    assert!(
        stdout.contains("You do not have permission to register new services"),
        "{stdout}"
    );
    assert!(
        stdout.contains("You do not have permission to register agents"),
        "{stdout}"
    );
    assert!(stdout.contains("(terminal)"), "{stdout}");
    let log = env.standin.log();
    assert_eq!(
        log.iter()
            .filter(|l| l.path == "/api/servers/register")
            .count(),
        1,
        "a 403 is not retried"
    );
    assert_eq!(
        log.iter()
            .filter(|l| l.path == "/api/agents/register")
            .count(),
        1,
        "a 403 is not retried"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn an_insecure_registry_url_and_a_missing_token_file_are_refused_up_front()
-> anyhow::Result<()> {
    let env = TestEnv::start().await?;
    let out = env
        .cli(&["resync", "--registry-url", "http://registry.example.com"])
        .await?;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("plain http to a non-loopback host"));
    let out = env
        .cli(&["resync", "--token-file", "/nonexistent/token.json"])
        .await?;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/token.json"));
    assert!(env.standin.log().is_empty(), "nothing was sent");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plain_http_idp_url_names_the_idp_flag_never_the_registry_one() -> anyhow::Result<()> {
    let env = TestEnv::start().await?;
    let secret = [("REGISTRY_CLIENT_SECRET", "s3cret-value")];
    let idp = "http://idp.example.com/.well-known/openid-configuration";
    // Allowing an insecure registry does not open a plain-http IdP.
    for allow in [&[][..], &["--allow-insecure-registry"][..]] {
        let mut args = vec![
            "resync",
            "--registry-token-discovery-url",
            idp,
            "--registry-client-id",
            "registrar",
        ];
        args.extend_from_slice(allow);
        let out = env.cli_with_env(&args, &secret).await?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(
            stderr.contains("--registry-token-discovery-url")
                && stderr.contains("plain http to a non-loopback host"),
            "{stderr}"
        );
        assert!(!stderr.contains("--allow-insecure-registry"), "{stderr}");
        assert!(!stderr.contains("s3cret-value"), "{stderr}");
    }
    assert!(env.standin.log().is_empty(), "nothing was sent");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn an_update_keeps_the_operators_enabled_state_and_agent_status() -> anyhow::Result<()> {
    let env = TestEnv::start().await?;
    create_runtime(&env.agentcore, "ops_agent", ServerProtocol::Http).await?;
    create_gateway(&env.agentcore, "ops-gw", GatewayAuth::Iam).await?;
    env.resync(options()).await?;
    {
        // The operator publishes the agent and disables the gateway; the entries drift.
        let mut db = env.standin.db();
        let agent = db.agents.get_mut("/ops-agent").expect("agent");
        agent["status"] = json!("active");
        agent["metadata"]["fingerprint"] = json!("drifted");
        let server = db.servers.get_mut("/ops-gw").expect("server");
        server["is_enabled"] = json!(false);
        server["metadata"]["fingerprint"] = json!("drifted");
    }
    let report = env.resync(options()).await?;
    assert_eq!(report.updated, 2, "{}", report.to_text());
    let agent = env.standin.agent("/ops-agent").expect("agent");
    assert_eq!(
        agent["status"],
        json!("active"),
        "our PUT sends the current status back"
    );
    assert_eq!(agent["is_enabled"], json!(true));
    assert_eq!(
        env.standin.server("/ops-gw").expect("server")["is_enabled"],
        json!(false),
        "enabled state is set once"
    );
    let toggles_after_first = env
        .standin
        .writes()
        .iter()
        .filter(|w| w.path.contains("toggle"))
        .count();
    assert_eq!(
        toggles_after_first, 2,
        "only the two enables of the first registration"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn mcp_server_targets_are_registered_only_when_asked_and_deregistered_when_deleted()
-> anyhow::Result<()> {
    use aws_sdk_bedrockagentcorecontrol::types::{
        McpServerTargetConfiguration, McpTargetConfiguration, TargetConfiguration,
    };
    let env = TestEnv::start().await?;
    let gw = create_gateway(&env.agentcore, "SRE-Gateway", GatewayAuth::Iam).await?;
    let target = env
        .agentcore
        .create_gateway_target()
        .gateway_identifier(&gw)
        .name("docs_search")
        .target_configuration(TargetConfiguration::Mcp(McpTargetConfiguration::McpServer(
            McpServerTargetConfiguration::builder()
                .endpoint("https://mcp.example.com/mcp")
                .build()?,
        )))
        .send()
        .await?;

    let without = env.resync(options()).await?;
    assert_eq!(
        without.registered,
        1,
        "targets are opt-in: {}",
        without.to_text()
    );

    let mut with_targets = options();
    with_targets.scan.mcp_targets = true;
    let with = env.resync(with_targets).await?;
    assert_eq!(
        status_of(&with, "/sre-gateway-docs-search"),
        Some(Status::Registered),
        "{}",
        with.to_text()
    );
    let entry = env
        .standin
        .server("/sre-gateway-docs-search")
        .expect("target entry");
    assert_eq!(
        entry["proxy_pass_url"],
        json!("https://mcp.example.com/mcp")
    );
    assert_eq!(entry["server_name"], json!("SRE Gateway - Docs Search"));
    assert_eq!(
        entry["tags"],
        json!([
            "agentcore",
            "gateway-target",
            "mcp-server",
            "auto-registered"
        ])
    );
    assert_eq!(entry["metadata"]["target_id"], json!(target.target_id()));
    assert_eq!(
        entry["is_enabled"],
        json!(false),
        "a target's upstream auth is unknown: never auto-enabled"
    );

    env.agentcore
        .delete_gateway_target()
        .gateway_identifier(&gw)
        .target_id(target.target_id())
        .send()
        .await?;
    let out_of_scope = env.resync(options()).await?;
    assert!(
        env.standin.server("/sre-gateway-docs-search").is_some(),
        "targets not scanned: not deregistered\n{}",
        out_of_scope.to_text()
    );
    let gone = env.resync(with_targets).await?;
    assert_eq!(
        status_of(&gone, "/sre-gateway-docs-search"),
        Some(Status::Deregistered),
        "{}",
        gone.to_text()
    );
    assert!(env.standin.server("/sre-gateway-docs-search").is_none());
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rescan_yields_the_registry_to_event_work_in_flight() -> anyhow::Result<()> {
    use registrar_worker::resync::scan::Progress;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    let env = TestEnv::start().await?;
    create_gateway(
        &env.agentcore,
        "patient",
        GatewayAuth::cognito("us-east-1_P", "c"),
    )
    .await?;
    let events_in_flight = Arc::new(AtomicU64::new(1));
    let progress = Progress {
        yield_to: Some(Arc::clone(&events_in_flight)),
        ..Progress::default()
    };
    let (ac, registry, state) = (
        registrar_worker::aws::fleet::Fleet::one(
            registrar_worker::aws::agentcore::AgentCoreAws::new(&env.config),
        ),
        env.registry(registrar_tests::env::ADMIN_TOKEN),
        env.state(),
    );
    let rescan = registrar_worker::resync::resync(&ac, &registry, &state, options(), &progress);
    let events = async {
        // The rescan has reached its first write and is waiting on the event work.
        let waiting = eventually(std::time::Duration::from_secs(30), || {
            progress.yielding.load(Ordering::Relaxed) > 0
        })
        .await;
        assert!(waiting, "the rescan yields");
        let writes_while_busy = env.standin.writes().len();
        events_in_flight.store(0, Ordering::Relaxed);
        writes_while_busy
    };
    let (report, writes_while_busy) = tokio::join!(rescan, events);
    assert_eq!(
        writes_while_busy, 0,
        "no rescan write while event work was in flight"
    );
    assert_eq!(report?.registered, 1, "then the rescan went ahead");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_gateway_anyone_can_invoke_is_tagged_warned_about_and_never_enabled() -> anyhow::Result<()>
{
    let env = TestEnv::start().await?;
    create_gateway(&env.agentcore, "wide-open", GatewayAuth::None).await?;
    create_gateway(&env.agentcore, "also-open", GatewayAuth::None).await?;
    create_gateway(&env.agentcore, "guarded", GatewayAuth::Iam).await?;
    let out = env.cli(&["resync"]).await?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    // The log warns once per rescan, with the count and the first paths (the report lists all).
    let stderr = String::from_utf8_lossy(&out.stderr);
    let warnings: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("no inbound authorization"))
        .collect();
    assert_eq!(warnings.len(), 1, "{stderr}");
    assert!(
        warnings[0].contains("count=2") && warnings[0].contains("/also-open, /wide-open"),
        "{stderr}"
    );
    assert!(
        stdout.contains(
            "WARNING: gateway /wide-open has no inbound authorization (authorizerType NONE)"
        ),
        "{stdout}"
    );
    assert!(!stdout.contains("gateway /guarded has no inbound"));
    let open = env.standin.server("/wide-open").expect("registered");
    assert_eq!(
        open["tags"],
        json!(["agentcore", "gateway", "auto-registered", "unauthenticated"])
    );
    assert_eq!(open["auth_scheme"], json!("none"));
    assert_eq!(
        open["is_enabled"],
        json!(false),
        "the authenticated enable policy never enables it"
    );
    assert_eq!(
        env.standin.server("/guarded").expect("registered")["is_enabled"],
        json!(true)
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_settings_are_refused_at_start_up_with_a_message_naming_them() -> anyhow::Result<()> {
    let env = TestEnv::start().await?;
    let out = env
        .cli_with_env(&["resync"], &[("AWS_REGION", "mars")])
        .await?;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown AWS region \"mars\""));
    let out = env
        .cli(&["worker", "--queue-url", "agentcore-events"])
        .await?;
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--queue-url (REGISTRAR_QUEUE_URL) must be a queue URL")
            && stderr.contains("got \"agentcore-events\""),
        "{stderr}"
    );
    // A flag's own range is checked on the flag, before anything runs: the message names the
    // flag, its variable, the rule and the value, from the command line or the environment.
    let queue = [
        "worker",
        "--queue-url",
        "https://sqs.us-east-1.amazonaws.com/1/q",
    ];
    for (flags, vars, expected) in [
        (
            &["--concurrency", "0"][..],
            &[][..],
            "--concurrency (REGISTRAR_CONCURRENCY) must be at least 1, got 0",
        ),
        (
            &["--wait-cap", "1000"],
            &[],
            "--wait-cap (REGISTRAR_WAIT_CAP) must be 1..=900 seconds (the SQS delay limit), got 1000",
        ),
        (
            &[],
            &[("REGISTRAR_VISIBILITY_TIMEOUT", "50000")],
            "--visibility-timeout (REGISTRAR_VISIBILITY_TIMEOUT) must be 1..=43200 seconds (the SQS limit), got 50000",
        ),
    ] {
        let args: Vec<&str> = queue.iter().chain(flags).copied().collect();
        let out = env.cli_with_env(&args, vars).await?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains(expected), "{expected}\n{stderr}");
    }
    // Settings that must agree with each other: every wrong one at once, by flag and variable.
    let out = env
        .cli_with_env(
            &[&queue[..], &["--wait-base", "100", "--wait-cap", "50"]].concat(),
            &[("REGISTRAR_SECRET_NAME_PATTERN", "static-name")],
        )
        .await?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    for expected in [
        "2 settings are wrong",
        "--wait-cap (REGISTRAR_WAIT_CAP) must be between --wait-base and 900 seconds (the SQS delay limit), got 50",
        "--secret-name-pattern (REGISTRAR_SECRET_NAME_PATTERN) must be a fixed prefix then {name}",
    ] {
        assert!(stderr.contains(expected), "{expected}\n{stderr}");
    }
    let out = env
        .cli_with_env(&["list"], &[("REGISTRAR_LOG", "info,[[")])
        .await?;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--log (REGISTRAR_LOG)"));
    // A variable set to "" (as deployment templates do) is unset: defaults apply.
    let out = env
        .cli_with_env(
            &["list"],
            &[
                ("REGISTRAR_REGIONS", ""),
                ("REGISTRAR_MEMBER_ACCOUNTS", ""),
                ("REGISTRAR_OUTPUT", ""),
                ("REGISTRAR_LOG", ""),
            ],
        )
        .await?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = env
        .cli(&[
            "worker",
            "--queue-url",
            "https://sqs.us-east-1.amazonaws.com/1/q",
            "--registry-url",
            "http://registry.internal",
        ])
        .await?;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("plain http to a non-loopback host"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn rows_a_rescan_did_not_read_show_the_same_names_and_auth_as_rows_it_read()
-> anyhow::Result<()> {
    let env = TestEnv::start().await?;
    create_gateway(&env.agentcore, "my_custom_gw", GatewayAuth::Iam).await?;
    create_runtime(&env.agentcore, "my_custom_sre_agent", ServerProtocol::Http).await?;
    let rows = |out: &std::process::Output| -> anyhow::Result<Vec<serde_json::Value>> {
        let report: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        Ok(report["results"].as_array().cloned().unwrap_or_default())
    };
    let first = rows(&env.cli(&["resync", "--output", "json"]).await?)?;
    let second = rows(&env.cli(&["resync", "--output", "json"]).await?)?;
    assert_eq!(first.len(), 2, "{first:?}");
    for row in &second {
        assert!(
            row["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("not read")),
            "the second rescan reads nothing: {row}"
        );
        let read = first
            .iter()
            .find(|r| r["path"] == row["path"])
            .expect("same path");
        assert_eq!(
            row["resource_name"], read["resource_name"],
            "{row} vs {read}"
        );
        assert_eq!(row["auth_type"], read["auth_type"], "{row} vs {read}");
        assert!(
            row["auth_type"].as_str().is_some_and(|a| !a.is_empty()),
            "{row}"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_target_waiting_for_oauth_consent_is_reported_as_needing_authorization_not_waited_for()
-> anyhow::Result<()> {
    use aws_sdk_bedrockagentcorecontrol::types::{
        McpServerTargetConfiguration, McpTargetConfiguration, TargetConfiguration,
    };
    let env = TestEnv::start().await?;
    let gw = create_gateway(&env.agentcore, "crm", GatewayAuth::Iam).await?;
    let target = env
        .agentcore
        .create_gateway_target()
        .gateway_identifier(&gw)
        .name("salesforce")
        .target_configuration(TargetConfiguration::Mcp(McpTargetConfiguration::McpServer(
            McpServerTargetConfiguration::builder()
                .endpoint("https://mcp.salesforce.example/mcp")
                .build()?,
        )))
        .send()
        .await?;
    // AWS holds the target in CREATE_PENDING_AUTH until an administrator consents.
    let aws = Proxy::start(&env.moto.url()).await?;
    aws.controls().target_status = Some("CREATE_PENDING_AUTH".into());

    // The rescan reports it, with what the administrator must do; the gateway goes on.
    let ac = AgentCoreAws::new(&env.config.to_builder().endpoint_url(aws.url()).build());
    let mut opts = options();
    opts.scan.mcp_targets = true;
    let report = env
        .resync_with(&ac, &env.registry(ADMIN_TOKEN), opts)
        .await?;
    assert_eq!(report.needs_authorization, 1, "{}", report.to_text());
    let row = report
        .results
        .iter()
        .find(|r| r.status == Status::NeedsAuthorization)
        .expect("row");
    assert!(
        row.message
            .starts_with("CREATE_PENDING_AUTH: needs authorization")
            && row.message.contains("CompleteResourceTokenAuth"),
        "{}",
        row.message
    );
    assert!(report.to_text().contains("Needs authorization: 1"));
    assert!(env.standin.server("/crm").is_some());
    assert!(env.standin.server("/crm-salesforce").is_none());

    // The event path ends the message at once (not waiting until --max-wait dead-letters it).
    let path = registrar_tests::events::EventPath::create(&env.config, "consent", 5, 10).await?;
    let proxied = aws.url();
    let mut worker = env.spawn_worker_with_env(
        &path,
        &[],
        &[
            ("AWS_ENDPOINT_URL", proxied.as_str()),
            ("REGISTRAR_INCLUDE_MCP_TARGETS", "true"),
        ],
    )?;
    path.put(
        "UpdateGatewayTarget",
        json!({"gatewayIdentifier": gw, "targetId": target.target_id()}),
        json!({"gatewayArn": format!("arn:aws:bedrock-agentcore:{REGION}:{ACCOUNT}:gateway/{gw}"),
               "targetId": target.target_id(), "status": "UPDATE_PENDING_AUTH"}),
    )
    .await?;
    assert!(
        path.drained(std::time::Duration::from_secs(60)).await?,
        "{}",
        env.worker_logs()
    );
    worker.kill().await?;
    assert_eq!(path.dlq_total().await?, 0, "nothing dead-lettered");
    assert!(
        env.worker_logs().contains("needs authorization"),
        "{}",
        env.worker_logs()
    );
    assert!(env.standin.server("/crm-salesforce").is_none());
    Ok(())
}
