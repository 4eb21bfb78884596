//! AgentCore control plane through the AWS SDK: translate to core snapshots, classify errors.

use aws_sdk_bedrockagentcorecontrol::Client;
use aws_sdk_bedrockagentcorecontrol::types::{
    AuthorizerConfiguration, CustomJwtAuthorizerConfiguration,
};
use aws_smithy_types::DateTime;
use aws_smithy_types::date_time::Format;
use registrar_core::PortError;
use registrar_core::observed::{
    AuthorizerType, GatewaySnapshot, JwtAuthorizer, Lifecycle, RuntimeSnapshot, ServerProtocol,
    TargetSnapshot,
};
use registrar_core::ports::{AgentCore, Listed};

use super::from_sdk_error;

const PEER: &str = "agentcore";
/// Items per page of every listing: the fewest requests against each listing's rate quota
/// (ListAgentRuntimes allows at most 100; ListGateways pages 10 at a time unless asked).
const PAGE: i32 = crate::pace::LIST_PAGE as i32;

/// The AgentCore control plane of one account and region.
#[derive(Clone)]
pub struct AgentCoreAws {
    client: Client,
    sts: aws_sdk_sts::Client,
    region: String,
    /// The account an assumed role must land in (a member account); `None` for the worker's
    /// own credentials.
    expected_account: Option<String>,
    /// The account, once STS has answered (it never changes for one set of credentials).
    /// Asked of STS once; concurrent first callers share the one call.
    account: std::sync::Arc<tokio::sync::OnceCell<String>>,
}

/// Not derived: the SDK clients' `Debug` prints their credentials provider, and an AssumeRole
/// provider's includes the member roles' external id.
impl std::fmt::Debug for AgentCoreAws {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentCoreAws")
            .field("region", &self.region)
            .field("expected_account", &self.expected_account)
            .field("account", &self.account.get())
            .finish_non_exhaustive()
    }
}

impl AgentCoreAws {
    /// Clients built separately (tests point AgentCore and STS at different endpoints).
    pub fn with_clients(
        client: Client,
        sts: aws_sdk_sts::Client,
        region: impl Into<String>,
    ) -> Self {
        Self {
            client,
            sts,
            region: region.into(),
            expected_account: None,
            account: Default::default(),
        }
    }

    pub fn new(config: &aws_config::SdkConfig) -> Self {
        Self::with_clients(
            super::clients::agentcore(config, false),
            super::clients::sts(config, false),
            config.region().map(ToString::to_string).unwrap_or_default(),
        )
    }

    /// A member account read through an assumed role: `account()` fails (terminal) when the
    /// credentials land anywhere else, so a mistyped role ARN can never widen what is read.
    pub fn member(config: &aws_config::SdkConfig, account: impl Into<String>) -> Self {
        Self {
            expected_account: Some(account.into()),
            ..Self::with_clients(
                super::clients::agentcore(config, true),
                super::clients::sts(config, true),
                config.region().map(ToString::to_string).unwrap_or_default(),
            )
        }
    }
}

impl AgentCoreAws {
    /// The SDK client, for `registrar doctor`'s one-page probes of each list call (it needs the
    /// service's error code, which a [`PortError`] does not keep).
    pub fn control_plane(&self) -> &Client {
        &self.client
    }

    /// The member account these credentials must act in; `None` for the process's own.
    pub fn expected_account(&self) -> Option<&str> {
        self.expected_account.as_deref()
    }
}

fn iso(t: &DateTime) -> String {
    t.fmt(Format::DateTime).unwrap_or_default()
}

fn jwt(config: Option<&AuthorizerConfiguration>) -> Option<JwtAuthorizer> {
    let c: &CustomJwtAuthorizerConfiguration = config?.as_custom_jwt_authorizer().ok()?;
    Some(JwtAuthorizer {
        discovery_url: c.discovery_url().to_owned(),
        allowed_clients: c.allowed_clients().to_vec(),
        allowed_audience: c.allowed_audience().to_vec(),
        allowed_scopes: c.allowed_scopes().to_vec(),
    })
}

/// `Ok(None)` for ResourceNotFound, the authoritative "gone".
macro_rules! found_or_none {
    ($op:literal, $result:expr) => {
        match $result {
            Ok(out) => Some(out),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_resource_not_found_exception()) =>
            {
                None
            }
            Err(e) => return Err(from_sdk_error(PEER, $op, e)),
        }
    };
}

impl AgentCoreAws {
    /// The account STS says these credentials act in; a member's must be the expected one.
    async fn ask_account(&self) -> Result<String, PortError> {
        let me = self
            .sts
            .get_caller_identity()
            .send()
            .await
            .map_err(|e| from_sdk_error("sts", "GetCallerIdentity", e))?;
        let account = me.account().unwrap_or_default().to_owned();
        let wrong = match &self.expected_account {
            Some(expected) if expected != &account => Some(format!(
                "the role for member account {expected} acts in account {account}: check the role ARN"
            )),
            None if account.is_empty() => Some("STS named no account".to_owned()),
            _ => None,
        };
        match wrong {
            Some(why) => Err(PortError::new(
                "sts",
                "GetCallerIdentity",
                registrar_core::ErrorClass::Terminal,
                why,
            )),
            None => Ok(account),
        }
    }
}

impl AgentCore for AgentCoreAws {
    async fn account(&self) -> Result<String, PortError> {
        self.account
            .get_or_try_init(|| self.ask_account())
            .await
            .cloned()
    }

    fn region(&self) -> &str {
        &self.region
    }

    async fn list_gateways(&self) -> Result<Vec<Listed>, PortError> {
        let items: Vec<_> = self
            .client
            .list_gateways()
            .max_results(PAGE)
            .into_paginator()
            .items()
            .send()
            .try_collect()
            .await
            .map_err(|e| from_sdk_error(PEER, "ListGateways", e))?;
        Ok(items
            .iter()
            .map(|g| Listed {
                id: g.gateway_id().to_owned(),
                name: g.name().to_owned(),
                lifecycle: Lifecycle::from_status(g.status().as_str()),
                updated_at: iso(g.updated_at()),
            })
            .collect())
    }

    async fn get_gateway(&self, id: &str) -> Result<Option<GatewaySnapshot>, PortError> {
        let Some(g) = found_or_none!(
            "GetGateway",
            self.client
                .get_gateway()
                .gateway_identifier(id)
                .send()
                .await
        ) else {
            return Ok(None);
        };
        Ok(Some(GatewaySnapshot {
            id: g.gateway_id().to_owned(),
            arn: g.gateway_arn().to_owned(),
            name: g.name().to_owned(),
            description: g.description().map(str::to_owned),
            lifecycle: Lifecycle::from_status(g.status().as_str()),
            url: g.gateway_url().map(str::to_owned),
            authorizer_type: AuthorizerType::from_wire(g.authorizer_type().as_str()),
            jwt: jwt(g.authorizer_configuration()),
            created_at: iso(g.created_at()),
            updated_at: iso(g.updated_at()),
        }))
    }

    async fn list_targets(&self, gateway_id: &str) -> Result<Vec<Listed>, PortError> {
        let items: Vec<_> = self
            .client
            .list_gateway_targets()
            .gateway_identifier(gateway_id)
            .max_results(PAGE)
            .into_paginator()
            .items()
            .send()
            .try_collect()
            .await
            .map_err(|e| from_sdk_error(PEER, "ListGatewayTargets", e))?;
        Ok(items
            .iter()
            .map(|t| Listed {
                id: t.target_id().to_owned(),
                name: t.name().to_owned(),
                lifecycle: Lifecycle::from_status(t.status().as_str()),
                updated_at: iso(t.updated_at()),
            })
            .collect())
    }

    async fn get_target(
        &self,
        gateway: &GatewaySnapshot,
        target_id: &str,
    ) -> Result<Option<TargetSnapshot>, PortError> {
        let request = self
            .client
            .get_gateway_target()
            .gateway_identifier(&gateway.id)
            .target_id(target_id);
        let Some(t) = found_or_none!("GetGatewayTarget", request.send().await) else {
            return Ok(None);
        };
        let mcp_endpoint = t
            .target_configuration()
            .and_then(|c| c.as_mcp().ok())
            .and_then(|m| m.as_mcp_server().ok())
            .map(|s| s.endpoint().to_owned());
        Ok(Some(TargetSnapshot {
            gateway: gateway.clone(),
            target_id: t.target_id().to_owned(),
            name: t.name().to_owned(),
            description: t.description().map(str::to_owned),
            lifecycle: Lifecycle::from_status(t.status().as_str()),
            mcp_endpoint,
            created_at: iso(t.created_at()),
            updated_at: iso(t.updated_at()),
        }))
    }

    async fn list_runtimes(&self) -> Result<Vec<Listed>, PortError> {
        let items: Vec<_> = self
            .client
            .list_agent_runtimes()
            .max_results(PAGE)
            .into_paginator()
            .items()
            .send()
            .try_collect()
            .await
            .map_err(|e| from_sdk_error(PEER, "ListAgentRuntimes", e))?;
        Ok(items
            .iter()
            .map(|r| Listed {
                id: r.agent_runtime_id().to_owned(),
                name: r.agent_runtime_name().to_owned(),
                lifecycle: Lifecycle::from_status(r.status().as_str()),
                updated_at: iso(r.last_updated_at()),
            })
            .collect())
    }

    async fn get_runtime(&self, id: &str) -> Result<Option<RuntimeSnapshot>, PortError> {
        let Some(r) = found_or_none!(
            "GetAgentRuntime",
            self.client
                .get_agent_runtime()
                .agent_runtime_id(id)
                .send()
                .await
        ) else {
            return Ok(None);
        };
        Ok(Some(RuntimeSnapshot {
            id: r.agent_runtime_id().to_owned(),
            arn: r.agent_runtime_arn().to_owned(),
            name: r.agent_runtime_name().to_owned(),
            description: r.description().map(str::to_owned),
            lifecycle: Lifecycle::from_status(r.status().as_str()),
            protocol: ServerProtocol::from_wire(
                r.protocol_configuration()
                    .map(|p| p.server_protocol().as_str()),
            ),
            jwt: jwt(r.authorizer_configuration()),
            created_at: iso(r.created_at()),
            updated_at: iso(r.last_updated_at()),
        }))
    }
}
