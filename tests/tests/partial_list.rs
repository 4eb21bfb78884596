//! Listings are read across all pages, and one that fails part-way never causes a deregistration
//! (design invariant 3). moto cannot paginate or deny access, so AgentCore is an in-process HTTP fake speaking the
//! restJson1 wire format; STS and DynamoDB stay on moto.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use registrar_tests::env::{ADMIN_TOKEN, TestEnv, options};
use registrar_tests::{ACCOUNT, REGION};
use registrar_worker::aws::agentcore::AgentCoreAws;
use serde_json::{Value, json};
use std::collections::HashMap;

/// Which page of ListGateways fails with AccessDenied, if any.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Failing {
    Never,
    FirstPage,
    SecondPage,
}

fn gateway_arn(id: &str) -> String {
    format!("arn:aws:bedrock-agentcore:{REGION}:{ACCOUNT}:gateway/{id}")
}

fn summary(id: &str) -> Value {
    json!({"gatewayId": id, "name": id, "status": "READY", "createdAt": "2026-01-01T00:00:00Z",
           "updatedAt": "2026-01-01T00:00:00Z", "authorizerType": "AWS_IAM", "protocolType": "MCP"})
}

fn access_denied() -> Response {
    let mut headers = HeaderMap::new();
    headers.insert(
        "x-amzn-errortype",
        "AccessDeniedException".parse().expect("header"),
    );
    (
        StatusCode::FORBIDDEN,
        headers,
        axum::Json(json!({"message": "User is not authorized to perform ListGateways"})),
    )
        .into_response()
}

async fn list_gateways(
    State(mode): State<Arc<Mutex<Failing>>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let mode = *mode.lock().expect("lock");
    match (mode, q.get("nextToken").map(String::as_str)) {
        (Failing::FirstPage, _) | (Failing::SecondPage, Some(_)) => access_denied(),
        (Failing::Never, Some(_)) => {
            axum::Json(json!({"items": [summary("beta")]})).into_response()
        }
        (_, None) => {
            axum::Json(json!({"items": [summary("alpha")], "nextToken": "page-2"})).into_response()
        }
    }
}

async fn get_gateway(State(mode): State<Arc<Mutex<Failing>>>, Path(id): Path<String>) -> Response {
    let id = id.trim_end_matches('/').to_owned();
    if id != "alpha" && *mode.lock().expect("lock") != Failing::Never {
        return access_denied();
    }
    axum::Json(
        json!({"gatewayId": id, "gatewayArn": gateway_arn(&id), "name": id, "status": "READY",
        "gatewayUrl": format!("https://{id}.gateway.bedrock-agentcore.{REGION}.amazonaws.com/mcp"),
        "protocolType": "MCP", "authorizerType": "AWS_IAM",
        "createdAt": "2026-01-01T00:00:00Z", "updatedAt": "2026-01-01T00:00:00Z"}),
    )
    .into_response()
}

async fn list_runtimes() -> Response {
    axum::Json(json!({"agentRuntimes": []})).into_response()
}

fn owned_entry(id: &str) -> Value {
    // Pointing where we would point it (an entry of ours, verified by more than its metadata).
    let url = format!("https://{id}.gateway.bedrock-agentcore.{REGION}.amazonaws.com/mcp");
    json!({"path": format!("/{id}"), "server_name": id, "description": "d", "proxy_pass_url": url,
        "auth_scheme": "bearer",
        "tags": ["agentcore", "gateway", "auto-registered"], "registered_by": "registrar", "is_enabled": true,
        "status": "active", "metadata": {"source": "agentcore-registrar", "gateway_arn": gateway_arn(id),
        "gateway_id": id, "region": REGION, "account_id": ACCOUNT, "fingerprint": "old"}})
}

#[tokio::test(flavor = "multi_thread")]
async fn a_list_that_fails_part_way_causes_no_deregistration() -> anyhow::Result<()> {
    let env = TestEnv::start().await?;
    let mode = Arc::new(Mutex::new(Failing::SecondPage));
    let app = Router::new()
        .route("/gateways", get(list_gateways))
        .route("/gateways/{id}", get(get_gateway))
        .route("/runtimes", post(list_runtimes))
        .with_state(mode.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let fake_url = format!("http://{}", listener.local_addr()?);
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let ac_config = aws_sdk_bedrockagentcorecontrol::config::Builder::from(&env.config)
        .endpoint_url(&fake_url)
        .build();
    let agentcore = AgentCoreAws::with_clients(
        aws_sdk_bedrockagentcorecontrol::Client::from_conf(ac_config),
        aws_sdk_sts::Client::new(&env.config),
        REGION,
    );
    // Both gateways were registered by us earlier; "beta" is on the page that fails.
    env.standin.seed_server(owned_entry("alpha"));
    env.standin.seed_server(owned_entry("beta"));
    let registry = env.registry(ADMIN_TOKEN);

    for failing in [Failing::SecondPage, Failing::FirstPage] {
        *mode.lock().expect("lock") = failing;
        let report = env.resync_with(&agentcore, &registry, options()).await?;
        let text = report.to_text();
        assert!(
            report.has_failures(),
            "the failed listing is reported: {text}"
        );
        assert!(
            report
                .errors
                .iter()
                .any(|e| e.contains("AccessDeniedException")),
            "{text}"
        );
        assert_eq!(report.deregistered, 0, "{failing:?}: {text}");
        assert!(
            env.standin.server("/beta").is_some(),
            "{failing:?}: beta survives"
        );
        assert!(
            !report.results.iter().any(|r| r.path == "/beta"),
            "no action was even planned for beta: {text}"
        );
        assert!(env.standin.server("/alpha").is_some());
        assert!(
            !env.standin
                .log()
                .iter()
                .any(|l| l.path == "/api/servers/remove"),
            "no removal was attempted"
        );
    }
    // The same fake, answering every page: both gateways are read (all pages) and kept.
    *mode.lock().expect("lock") = Failing::Never;
    let report = env.resync_with(&agentcore, &registry, options()).await?;
    assert!(!report.has_failures(), "{}", report.to_text());
    assert_eq!(
        report.updated,
        2,
        "alpha (page 1) and beta (page 2) are both seen: {}",
        report.to_text()
    );
    server.abort();
    Ok(())
}
