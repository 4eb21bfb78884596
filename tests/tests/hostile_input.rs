//! The registrar against hostile strings (design: every string from AWS, an event or the
//! registry may be hostile): names that would take the registry's own routes, target endpoints
//! that only look like loopback, event ids that are paths, and registry entries at paths we
//! never derive. Real moto, the registry stand-in and the real `registrar` binary.

#![allow(clippy::disallowed_methods)] // tests time real processes on the real clock

use std::collections::BTreeSet;
use std::time::Duration;

use aws_sdk_bedrockagentcorecontrol::types::{
    McpServerTargetConfiguration, McpTargetConfiguration, ServerProtocol, TargetConfiguration,
};
use registrar_ingest::sqs::attr;
use registrar_tests::env::{TestEnv, eventually};
use registrar_tests::events::EventPath;
use registrar_tests::fixtures::{GatewayAuth, create_gateway, create_runtime};
use serde_json::{Value, json};

/// `registrar <args> --output json`, parsed; the run must succeed.
async fn run_json(env: &TestEnv, args: &[&str]) -> anyhow::Result<Value> {
    let mut all = args.to_vec();
    all.extend(["--output", "json"]);
    let out = env.cli(&all).await?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    anyhow::ensure!(
        out.status.success(),
        "{all:?} failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(serde_json::from_str(&stdout)?)
}

/// The report row whose path is `path`.
fn row<'a>(report: &'a Value, path: &str) -> Option<&'a Value> {
    report["results"]
        .as_array()?
        .iter()
        .find(|r| r["path"] == json!(path))
}

#[tokio::test(flavor = "multi_thread")]
async fn resources_named_after_registry_routes_are_registered_at_a_suffixed_path()
-> anyhow::Result<()> {
    let env = TestEnv::start().await?;
    create_gateway(&env.agentcore, "api", GatewayAuth::Iam).await?;
    create_gateway(&env.agentcore, "health", GatewayAuth::Iam).await?;
    create_runtime(&env.agentcore, "validate", ServerProtocol::A2A).await?;
    create_gateway(&env.agentcore, "orders", GatewayAuth::Iam).await?;

    let report = run_json(&env, &["resync"]).await?;
    assert_eq!(report["registered"], json!(4), "{report:#}");
    let servers: BTreeSet<String> = env.standin.db().servers.keys().cloned().collect();
    assert_eq!(
        servers,
        BTreeSet::from([
            "/api-gateway".to_owned(),
            "/health-gateway".to_owned(),
            "/orders".to_owned()
        ]),
        "never at /api or /health; other names keep their path"
    );
    assert!(env.standin.agent("/validate-runtime").is_some());
    assert!(env.standin.agent("/validate").is_none());
    let api = env.standin.server("/api-gateway").expect("registered");
    assert_eq!(
        api["server_name"],
        json!("API"),
        "the display name is still the resource's"
    );
    assert_eq!(
        row(&report, "/api-gateway").map(|r| r["resource_name"].clone()),
        Some(json!("api"))
    );

    // Converged: the suffixed paths are stable across runs.
    env.standin.clear_log();
    let again = run_json(&env, &["resync"]).await?;
    assert_eq!(again["unchanged"], json!(4), "{again:#}");
    assert_eq!(env.standin.writes(), vec![]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_target_endpoint_that_only_looks_like_loopback_is_reported_and_never_registered()
-> anyhow::Result<()> {
    let env = TestEnv::start().await?;
    let gw = create_gateway(&env.agentcore, "tools", GatewayAuth::Iam).await?;
    for (name, endpoint) in [
        ("evil", "http://localhost:80@evil.example/mcp"),
        ("docs", "https://mcp.example.com/mcp"),
        ("local", "http://127.0.0.1:9/mcp"),
    ] {
        env.agentcore
            .create_gateway_target()
            .gateway_identifier(&gw)
            .name(name)
            .target_configuration(TargetConfiguration::Mcp(McpTargetConfiguration::McpServer(
                McpServerTargetConfiguration::builder()
                    .endpoint(endpoint)
                    .build()?,
            )))
            .send()
            .await?;
    }
    create_runtime(&env.agentcore, "helper_agent", ServerProtocol::Http).await?;

    let report = run_json(&env, &["resync", "--include-mcp-targets"]).await?;
    let evil = row(&report, "/tools-evil").unwrap_or_else(|| panic!("{report:#}"));
    assert_eq!(evil["status"], json!("skipped"), "{evil:#}");
    let reason = evil["message"].as_str().unwrap_or_default();
    assert!(
        reason.contains("mcpServer endpoint refused")
            && reason.contains("http://***@evil.example/mcp"),
        "the reason names the URL (user info masked): {reason}"
    );
    assert!(env.standin.server("/tools-evil").is_none());
    assert!(
        env.standin
            .db()
            .servers
            .values()
            .all(|s| !s.to_string().contains("evil.example")),
        "nothing anywhere points at the attacker's host"
    );
    // Everything else goes on.
    for path in ["/tools", "/tools-docs", "/tools-local"] {
        assert_eq!(
            row(&report, path).map(|r| r["status"].clone()),
            Some(json!("registered")),
            "{path}: {report:#}"
        );
    }
    assert!(env.standin.agent("/helper-agent").is_some());
    assert_eq!(
        env.standin.server("/tools-local").expect("loopback http")["proxy_pass_url"],
        json!("http://127.0.0.1:9/mcp")
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn events_whose_ids_break_the_aws_patterns_are_dead_lettered_naming_the_field()
-> anyhow::Result<()> {
    let env = TestEnv::start().await?;
    let path = EventPath::create(&env.config, "hostile-events", 3, 10).await?;
    let real_gw = create_gateway(&env.agentcore, "after", GatewayAuth::Iam).await?;
    let _worker =
        env.spawn_worker_with_env(&path, &[], &[("REGISTRAR_INCLUDE_MCP_TARGETS", "true")])?;

    let long = format!("{}-8fb4mo6pqx", "a".repeat(289));
    let hostile = [
        (
            "CreateGateway",
            json!({"name": "***"}),
            json!({"gatewayId": "../../api/servers"}),
            "responseElements.gatewayId",
        ),
        (
            "DeleteGateway",
            json!({"gatewayIdentifier": long}),
            json!({}),
            "requestParameters.gatewayIdentifier",
        ),
        (
            "DeleteAgentRuntime",
            json!({"agentRuntimeId": "x/../../agents"}),
            json!({}),
            "requestParameters.agentRuntimeId",
        ),
        (
            "DeleteGatewayTarget",
            json!({"gatewayIdentifier": real_gw, "targetId": "../../../api"}),
            json!({}),
            "requestParameters.targetId",
        ),
        (
            "SynchronizeGatewayTargets",
            json!({"gatewayIdentifier": real_gw,
                   "targetIdList": (0..101).map(|i| format!("T{i:09}")).collect::<Vec<_>>()}),
            json!({}),
            "targetIdList",
        ),
    ];
    for (name, request, response, _) in &hostile {
        path.put(name, request.clone(), response.clone()).await?;
    }
    // A well-formed event after them, with fields we do not read of the wrong type: served.
    path.put(
        "CreateGateway",
        json!({"name": 42, "tags": {"k": "v"}}),
        json!({"gatewayId": real_gw, "tags": ["x"], "createdAt": 1763719200}),
    )
    .await?;

    // Each DLQ read takes what arrived since the last one (received with a long visibility).
    let mut dead = Vec::new();
    let started = std::time::Instant::now();
    while dead.len() < hostile.len() && started.elapsed() < Duration::from_secs(40) {
        dead.extend(path.dead_letters().await?);
        if dead.len() < hostile.len() {
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
    assert_eq!(dead.len(), hostile.len(), "{}", env.worker_logs());
    let reasons: Vec<(String, String)> = dead
        .iter()
        .map(|m| {
            (
                m.attributes
                    .get(attr::REASON_CODE)
                    .cloned()
                    .unwrap_or_default(),
                m.attributes.get(attr::REASON).cloned().unwrap_or_default(),
            )
        })
        .collect();
    for (name, _, _, field) in &hostile {
        assert!(
            reasons
                .iter()
                .any(|(_, reason)| reason.starts_with(name) && reason.contains(field)),
            "{name}: no dead letter naming {field}: {reasons:#?}"
        );
    }
    assert!(
        reasons
            .iter()
            .all(|(code, _)| code == "invalid-identifier" || code == "too-many-targets"),
        "{reasons:#?}"
    );
    let long_reason = reasons
        .iter()
        .find(|(_, r)| r.starts_with("DeleteGateway "))
        .map(|(_, r)| r.clone())
        .unwrap_or_default();
    assert!(
        long_reason.len() < 200 && long_reason.contains("..."),
        "the value is truncated: {long_reason}"
    );

    assert!(
        eventually(Duration::from_secs(30), || env
            .standin
            .server("/after")
            .is_some())
        .await,
        "the well-formed event is served\n{}",
        env.worker_logs()
    );
    assert!(
        path.drained(Duration::from_secs(20)).await?,
        "queue drained"
    );
    for request in env.standin.log() {
        let p = request.path.to_ascii_lowercase();
        assert!(
            !p.contains("..") && !p.contains("%2e") && !p.contains("aaaaaaaa"),
            "a hostile id reached the registry: {request:?}"
        );
    }
    assert!(
        env.standin
            .writes()
            .iter()
            .all(|w| w.path == "/api/servers/register" || w.path == "/api/servers/toggle"),
        "{:?}",
        env.standin.writes()
    );
    let servers: Vec<String> = env.standin.db().servers.keys().cloned().collect();
    assert_eq!(servers, ["/after"]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn registry_entries_at_paths_we_never_derive_are_never_requested() -> anyhow::Result<()> {
    let env = TestEnv::start().await?;
    create_gateway(&env.agentcore, "orders", GatewayAuth::Iam).await?;
    create_runtime(&env.agentcore, "support_agent", ServerProtocol::A2A).await?;
    let first = run_json(&env, &["resync"]).await?;
    assert_eq!(first["registered"], json!(2), "{first:#}");

    // Copies of our own entries (metadata, pointing, registered_by and all) at paths outside
    // the slug grammar: to a planner that trusted them, each is our entry at a stale path, to
    // be removed. `/a/../b` would be sent as `/api/agents/b` and delete someone else's agent.
    let mut server = env.standin.server("/orders").expect("registered");
    server["path"] = json!("/Weird Path_1");
    env.standin.seed_server(server);
    let mut agent = env.standin.agent("/support-agent").expect("registered");
    let foreign = json!({"path": "/b", "name": "B", "url": "https://b.example/", "registered_by": "bob",
                         "metadata": {}, "tags": [], "is_enabled": true});
    agent["path"] = json!("/a/../b");
    {
        let mut db = env.standin.db();
        db.agents.insert("/a/../b".into(), agent);
        db.agents.insert("/b".into(), foreign.clone());
    }
    env.standin.clear_log();

    for deep in [false, true] {
        let args: &[&str] = if deep {
            &["resync", "--deep"]
        } else {
            &["resync"]
        };
        let report = run_json(&env, args).await?;
        assert_eq!(report["unchanged"], json!(2), "{report:#}");
        assert_eq!(report["deregistered"], json!(0), "{report:#}");
        assert_eq!(report["conflicts"], json!(0), "{report:#}");
    }
    let log = env.standin.log();
    assert!(!log.is_empty(), "the resyncs did read the registry");
    for request in &log {
        assert!(
            request.method == "GET"
                && matches!(
                    request.path.as_str(),
                    "/api/servers"
                        | "/api/agents"
                        | "/api/servers/orders"
                        | "/api/agents/support-agent"
                ),
            "only lists and our own paths were requested: {request:?}"
        );
    }
    assert!(env.standin.server("/Weird Path_1").is_some());
    assert!(env.standin.agent("/a/../b").is_some());
    assert_eq!(
        env.standin.agent("/b"),
        Some(foreign),
        "someone else's agent is untouched"
    );
    Ok(())
}
