//! AgentCore resources created in moto through the SDK, including the FAQ's thirteen.

use anyhow::Context;
use aws_sdk_bedrockagentcorecontrol::Client;
use aws_sdk_bedrockagentcorecontrol::types::{
    AgentRuntimeArtifact, AuthorizerConfiguration, AuthorizerType, ContainerConfiguration,
    CustomJwtAuthorizerConfiguration, GatewayProtocolType, NetworkConfiguration, NetworkMode,
    ProtocolConfiguration, ServerProtocol,
};

/// The five CUSTOM_JWT gateways of the FAQ's dry-run table, with the paths it shows.
pub const FAQ_GATEWAYS: [(&str, &str); 5] = [
    ("customersupport-gw", "/customersupport-gw"),
    ("geo-mcp", "/geo-mcp"),
    ("SRE-Gateway", "/sre-gateway"),
    ("TestGWforLambda", "/testgwforlambda"),
    (
        "weather-time-observability-gateway",
        "/weather-time-observability-gateway",
    ),
];

/// The eight runtimes of the FAQ's dry-run table.
pub const FAQ_RUNTIMES: [(&str, &str); 8] = [
    (
        "weather_time_observability_agent",
        "/weather-time-observability-agent",
    ),
    ("sre_agent_simple", "/sre-agent-simple"),
    ("sre_agent", "/sre-agent"),
    (
        "simple_strands_cognito_agent",
        "/simple-strands-cognito-agent",
    ),
    ("simple_strands_agent", "/simple-strands-agent"),
    ("simple_a2a_strands_agent", "/simple-a2a-strands-agent"),
    ("my_simple_agent", "/my-simple-agent"),
    ("my_custom_sre_agent", "/my-custom-sre-agent"),
];

const ROLE: &str = "arn:aws:iam::123456789012:role/AgentCoreRole";

/// The inbound authorizer of a gateway created in moto.
#[derive(Debug, Clone)]
pub enum GatewayAuth {
    Jwt {
        discovery_url: String,
        clients: Vec<String>,
    },
    Iam,
    None,
}

impl GatewayAuth {
    /// A Cognito pool discovery URL, as the FAQ's gateways use.
    pub fn cognito(pool: &str, client: &str) -> Self {
        Self::Jwt {
            discovery_url: format!(
                "https://cognito-idp.us-east-1.amazonaws.com/{pool}/.well-known/openid-configuration"
            ),
            clients: vec![client.to_owned()],
        }
    }
}

/// Creates a gateway; returns its id.
pub async fn create_gateway(ac: &Client, name: &str, auth: GatewayAuth) -> anyhow::Result<String> {
    let mut req = ac
        .create_gateway()
        .name(name)
        .role_arn(ROLE)
        .protocol_type(GatewayProtocolType::Mcp);
    req = match auth {
        GatewayAuth::Jwt {
            discovery_url,
            clients,
        } => req
            .authorizer_type(AuthorizerType::CustomJwt)
            .authorizer_configuration(AuthorizerConfiguration::CustomJwtAuthorizer(
                CustomJwtAuthorizerConfiguration::builder()
                    .discovery_url(discovery_url)
                    .set_allowed_clients(Some(clients))
                    .build()?,
            )),
        GatewayAuth::Iam => req.authorizer_type(AuthorizerType::AwsIam),
        GatewayAuth::None => req.authorizer_type(AuthorizerType::None),
    };
    let out = req
        .send()
        .await
        .with_context(|| format!("CreateGateway {name}"))?;
    Ok(out.gateway_id().to_owned())
}

/// Creates an agent runtime speaking `protocol`; returns its id.
pub async fn create_runtime(
    ac: &Client,
    name: &str,
    protocol: ServerProtocol,
) -> anyhow::Result<String> {
    let out = ac
        .create_agent_runtime()
        .agent_runtime_name(name)
        .agent_runtime_artifact(AgentRuntimeArtifact::ContainerConfiguration(
            ContainerConfiguration::builder()
                .container_uri(format!(
                    "123456789012.dkr.ecr.us-east-1.amazonaws.com/{name}:latest"
                ))
                .build()?,
        ))
        .role_arn(ROLE)
        .network_configuration(
            NetworkConfiguration::builder()
                .network_mode(NetworkMode::Public)
                .build()?,
        )
        .protocol_configuration(
            ProtocolConfiguration::builder()
                .server_protocol(protocol)
                .build()?,
        )
        .send()
        .await
        .with_context(|| format!("CreateAgentRuntime {name}"))?;
    Ok(out.agent_runtime_id().to_owned())
}

/// The FAQ's thirteen resources: five CUSTOM_JWT gateways on Cognito, eight runtimes (one A2A).
/// Returns the gateway ids in FAQ order.
pub async fn seed_faq(ac: &Client) -> anyhow::Result<Vec<String>> {
    let mut ids = Vec::new();
    for (i, (name, _)) in FAQ_GATEWAYS.iter().enumerate() {
        let auth = GatewayAuth::cognito(
            &format!("us-east-1_Pool{i}"),
            &format!("client{i}abcdefghijklmnopqrstu"),
        );
        ids.push(create_gateway(ac, name, auth).await?);
    }
    for (name, _) in FAQ_RUNTIMES {
        let protocol = if name.contains("a2a") {
            ServerProtocol::A2A
        } else {
            ServerProtocol::Http
        };
        create_runtime(ac, name, protocol).await?;
    }
    Ok(ids)
}
