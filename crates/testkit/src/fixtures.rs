//! Resources, entries and rows to test with, derived through the real domain functions so they
//! stay what the engine would produce.

use registrar_core::desired::{
    DeriveOptions, DesiredEntry, gateway_entry, runtime_entry, target_entry,
};
use registrar_core::observed::{
    AuthorizerType, GatewaySnapshot, JwtAuthorizer, Lifecycle, RuntimeSnapshot, ServerProtocol,
    TargetSnapshot,
};
use registrar_core::plan::RecordedResource;
use registrar_core::refresh::TokenState;

/// The account of every fixture.
pub const ACCOUNT: &str = "123456789012";
/// The region of every fixture.
pub const REGION: &str = "us-east-1";

/// A READY gateway behind IAM (or, with `issuer`, behind a CUSTOM_JWT authorizer of that IdP).
pub fn gateway(name: &str, id: &str, issuer: Option<&str>) -> GatewaySnapshot {
    GatewaySnapshot {
        id: id.into(),
        arn: format!("arn:aws:bedrock-agentcore:{REGION}:{ACCOUNT}:gateway/{id}"),
        name: name.into(),
        description: Some(format!("the {name} gateway")),
        lifecycle: Lifecycle::Ready,
        url: Some(format!(
            "https://{id}.gateway.bedrock-agentcore.{REGION}.amazonaws.com/mcp"
        )),
        authorizer_type: if issuer.is_some() {
            AuthorizerType::CustomJwt
        } else {
            AuthorizerType::AwsIam
        },
        jwt: issuer.map(|i| JwtAuthorizer {
            discovery_url: format!("{i}/.well-known/openid-configuration"),
            allowed_clients: vec!["client-1".into()],
            allowed_audience: Vec::new(),
            allowed_scopes: Vec::new(),
        }),
        created_at: "2026-11-29T00:00:00Z".into(),
        updated_at: "2026-11-29T00:00:00Z".into(),
    }
}

/// A READY `mcpServer` target of `gateway`, its endpoint on its own host.
pub fn target(gateway: &GatewaySnapshot, name: &str, id: &str) -> TargetSnapshot {
    TargetSnapshot {
        gateway: gateway.clone(),
        target_id: id.into(),
        name: name.into(),
        description: None,
        lifecycle: Lifecycle::Ready,
        mcp_endpoint: Some(format!("https://{}.mcp.example.com/mcp", id.to_lowercase())),
        created_at: "2026-11-29T00:00:00Z".into(),
        updated_at: "2026-11-29T00:00:00Z".into(),
    }
}

/// A READY A2A runtime.
pub fn runtime(name: &str, id: &str) -> RuntimeSnapshot {
    RuntimeSnapshot {
        id: id.into(),
        arn: format!("arn:aws:bedrock-agentcore:{REGION}:{ACCOUNT}:runtime/{id}"),
        name: name.into(),
        description: Some(format!("the {name} agent")),
        lifecycle: Lifecycle::Ready,
        protocol: ServerProtocol::A2a,
        jwt: None,
        created_at: "2026-11-29T00:00:00Z".into(),
        updated_at: "2026-11-29T00:00:00Z".into(),
    }
}

/// The server entry of [`gateway`].
pub fn server_entry(name: &str, id: &str) -> DesiredEntry {
    gateway_entry(&gateway(name, id, None), DeriveOptions::default())
        .unwrap_or_else(|u| panic!("fixture gateway {name} is registrable: {}", u.reason))
}

/// The server entry of [`target`] `name` (`id`) of the IAM gateway `gateway_name` (`gateway_id`).
pub fn target_server_entry(
    gateway_name: &str,
    gateway_id: &str,
    name: &str,
    id: &str,
) -> DesiredEntry {
    let t = target(&gateway(gateway_name, gateway_id, None), name, id);
    match target_entry(&t, DeriveOptions::default()) {
        Some(Ok(d)) => d,
        _ => panic!("fixture target {name} is registrable"),
    }
}

/// The agent entry of [`runtime`].
pub fn agent_entry(name: &str, id: &str) -> DesiredEntry {
    runtime_entry(&runtime(name, id), DeriveOptions::default())
        .unwrap_or_else(|u| panic!("fixture runtime {name} is registrable: {}", u.reason))
}

/// What the engine records after writing `d` (its enable settled).
pub fn recorded(d: &DesiredEntry) -> RecordedResource {
    RecordedResource::written(d, true)
}

/// A token refreshed at `at` (Unix seconds), due again at `next`.
pub fn token(at: u64, next: u64) -> TokenState {
    TokenState {
        expires_at: Some(at + 3600),
        next_refresh_at: next,
        last_result: "ok".into(),
        failures: 0,
        client_id: Some("client-1".into()),
        refreshed_at: Some(at),
    }
}
