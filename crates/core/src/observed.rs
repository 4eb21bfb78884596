//! What we read from AgentCore, as plain structs the adapters fill in.

use std::fmt;

/// Where a resource is in its lifecycle, reduced to what the reconciler acts on
/// (`aws-facts.md` §1.7).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lifecycle {
    /// `READY`: register or update.
    Ready,
    /// `CREATING`, `UPDATING`, `SYNCHRONIZING`, or a value we do not know: re-check later, and
    /// never treat as gone.
    InProgress(String),
    /// `CREATE_PENDING_AUTH`, `UPDATE_PENDING_AUTH`, `SYNCHRONIZE_PENDING_AUTH`: a target waits
    /// for an administrator's OAuth consent, which may never come by itself. Reported (see
    /// [`AUTHORIZATION_NEEDED`]), never treated as gone, checked again on the target's next
    /// event or rescan rather than polled.
    NeedsAuthorization(String),
    /// `UPDATE_UNSUCCESSFUL`, `UPDATE_FAILED`, `DELETE_FAILED`: the resource still exists and the
    /// previous configuration may still serve, so an existing entry is kept as it is.
    Degraded(String),
    /// `FAILED`, `CREATE_FAILED`: the resource cannot serve; an entry we own is deregistered.
    Failed(String),
    /// `DELETING`: as good as gone.
    Deleting,
}

impl Lifecycle {
    /// Maps an AgentCore status wire value (gateway, target or runtime).
    pub fn from_status(status: &str) -> Self {
        match status {
            "READY" => Self::Ready,
            "DELETING" => Self::Deleting,
            "FAILED" | "CREATE_FAILED" => Self::Failed(status.to_owned()),
            "UPDATE_UNSUCCESSFUL"
            | "UPDATE_FAILED"
            | "DELETE_FAILED"
            | "SYNCHRONIZE_UNSUCCESSFUL" => Self::Degraded(status.to_owned()),
            pending if pending.ends_with("_PENDING_AUTH") => {
                Self::NeedsAuthorization(status.to_owned())
            }
            other => Self::InProgress(other.to_owned()),
        }
    }

    /// The wire value, for reports.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Ready => "READY",
            Self::Deleting => "DELETING",
            Self::InProgress(s)
            | Self::NeedsAuthorization(s)
            | Self::Degraded(s)
            | Self::Failed(s) => s,
        }
    }
}

/// What an administrator must do for a target that waits for OAuth consent
/// (seed: blog-agentcore-gateway-oauth-authorization-code).
pub const AUTHORIZATION_NEEDED: &str = "needs authorization: an administrator must complete the \
OAuth authorization code flow for this target (open the authorization URL its CreateGatewayTarget, \
UpdateGatewayTarget or SynchronizeGatewayTargets call returned, consent, and complete it with \
CompleteResourceTokenAuth within 10 minutes), or give the target its tool schema so no consent is \
needed; it is checked again on its next UpdateGatewayTarget/SynchronizeGatewayTargets event or rescan";

/// A gateway's or runtime's inbound authorizer type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthorizerType {
    /// `CUSTOM_JWT`: callers present a JWT from an OIDC issuer.
    CustomJwt,
    /// `AWS_IAM`: callers sign with SigV4.
    AwsIam,
    /// `NONE`: anyone who can reach it may call it.
    None,
    /// A type this version does not know, as AWS spelt it.
    Other(String),
}

impl AuthorizerType {
    /// Reads AWS's spelling.
    pub fn from_wire(value: &str) -> Self {
        match value {
            "CUSTOM_JWT" => Self::CustomJwt,
            "AWS_IAM" => Self::AwsIam,
            "NONE" => Self::None,
            other => Self::Other(other.to_owned()),
        }
    }

    /// AWS's spelling.
    pub fn as_str(&self) -> &str {
        match self {
            Self::CustomJwt => "CUSTOM_JWT",
            Self::AwsIam => "AWS_IAM",
            Self::None => "NONE",
            Self::Other(s) => s,
        }
    }
}

/// `customJWTAuthorizer` of a gateway or runtime.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct JwtAuthorizer {
    /// The issuer's OIDC discovery URL (chosen by whoever created the resource).
    pub discovery_url: String,
    /// Client ids whose tokens are accepted.
    pub allowed_clients: Vec<String>,
    /// Audiences accepted.
    pub allowed_audience: Vec<String>,
    /// Scopes accepted.
    pub allowed_scopes: Vec<String>,
}

/// A runtime's `protocolConfiguration.serverProtocol` (absent counts as HTTP).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerProtocol {
    /// `MCP`: registered as an MCP server.
    Mcp,
    /// `HTTP` (also when absent): registered as an agent.
    Http,
    /// `A2A`: registered as an agent that speaks A2A.
    A2a,
    /// `AGUI`: registered as an agent.
    Agui,
    /// A protocol this version does not know, as AWS spelt it.
    Other(String),
}

impl ServerProtocol {
    /// Reads AWS's spelling (absent is HTTP).
    pub fn from_wire(value: Option<&str>) -> Self {
        match value {
            None | Some("HTTP") => Self::Http,
            Some("MCP") => Self::Mcp,
            Some("A2A") => Self::A2a,
            Some("AGUI") => Self::Agui,
            Some(other) => Self::Other(other.to_owned()),
        }
    }

    /// AWS's spelling.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Mcp => "MCP",
            Self::Http => "HTTP",
            Self::A2a => "A2A",
            Self::Agui => "AGUI",
            Self::Other(s) => s,
        }
    }
}

/// A gateway as `GetGateway` returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewaySnapshot {
    /// `gatewayId`.
    pub id: String,
    /// `gatewayArn`.
    pub arn: String,
    /// `name`.
    pub name: String,
    /// `description`.
    pub description: Option<String>,
    /// `status`, read as a lifecycle.
    pub lifecycle: Lifecycle,
    /// `gatewayUrl`: what the registry entry points at.
    pub url: Option<String>,
    /// `authorizerType`.
    pub authorizer_type: AuthorizerType,
    /// `authorizerConfiguration.customJWTAuthorizer`, when set.
    pub jwt: Option<JwtAuthorizer>,
    /// ISO-8601, as AWS returned it.
    pub created_at: String,
    /// ISO-8601, as AWS returned it: equal to the recorded one means unchanged.
    pub updated_at: String,
}

/// A gateway target as `GetGatewayTarget` returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetSnapshot {
    /// The gateway it belongs to (its URL and authorizer apply to the target).
    pub gateway: GatewaySnapshot,
    /// `targetId`.
    pub target_id: String,
    /// `name`.
    pub name: String,
    /// `description`.
    pub description: Option<String>,
    /// `status`, read as a lifecycle.
    pub lifecycle: Lifecycle,
    /// `targetConfiguration.mcp.mcpServer.endpoint`, when the target is an MCP server.
    pub mcp_endpoint: Option<String>,
    /// ISO-8601, as AWS returned it.
    pub created_at: String,
    /// ISO-8601, as AWS returned it: equal to the recorded one means unchanged.
    pub updated_at: String,
}

/// An agent runtime as `GetAgentRuntime` returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeSnapshot {
    /// `agentRuntimeId`.
    pub id: String,
    /// `agentRuntimeArn` (may carry a version qualifier).
    pub arn: String,
    /// `agentRuntimeName`.
    pub name: String,
    /// `description`.
    pub description: Option<String>,
    /// `status`, read as a lifecycle.
    pub lifecycle: Lifecycle,
    /// `protocolConfiguration.serverProtocol`.
    pub protocol: ServerProtocol,
    /// `authorizerConfiguration.customJWTAuthorizer`, when set.
    pub jwt: Option<JwtAuthorizer>,
    /// ISO-8601, as AWS returned it.
    pub created_at: String,
    /// ISO-8601, as AWS returned it: equal to the recorded one means unchanged.
    pub updated_at: String,
}

/// The parts of an ARN the registrar needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Arn {
    /// `aws`, `aws-cn`, `aws-us-gov`.
    pub partition: String,
    /// `bedrock-agentcore`.
    pub service: String,
    /// The resource's region.
    pub region: String,
    /// The owning account.
    pub account: String,
    /// Everything after the account (`gateway/<id>`, `runtime/<id>`, ...).
    pub resource: String,
}

impl Arn {
    /// Parses `arn:<partition>:<service>:<region>:<account>:<resource>`.
    pub fn parse(arn: &str) -> Option<Self> {
        let mut parts = arn.splitn(6, ':');
        if parts.next()? != "arn" {
            return None;
        }
        let arn = Self {
            partition: parts.next()?.to_owned(),
            service: parts.next()?.to_owned(),
            region: parts.next()?.to_owned(),
            account: parts.next()?.to_owned(),
            resource: parts.next()?.to_owned(),
        };
        (!arn.region.is_empty() && !arn.resource.is_empty()).then_some(arn)
    }
}

impl fmt::Display for Arn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self {
            partition,
            service,
            region,
            account,
            resource,
        } = self;
        write!(f, "arn:{partition}:{service}:{region}:{account}:{resource}")
    }
}

/// A runtime ARN without a trailing `:<version>` qualifier, so that every version of a runtime
/// names the same resource (the local emulator returns qualified ARNs; AWS does not).
pub fn unqualified_runtime_arn(arn: &str) -> String {
    match arn.rsplit_once(':') {
        Some((head, version))
            if !version.is_empty()
                && version.bytes().all(|b| b.is_ascii_digit())
                && head.matches(':').count() >= 5 =>
        {
            head.to_owned()
        }
        _ => arn.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_lifecycles() {
        assert_eq!(Lifecycle::from_status("READY"), Lifecycle::Ready);
        assert!(matches!(
            Lifecycle::from_status("CREATING"),
            Lifecycle::InProgress(_)
        ));
        assert!(matches!(
            Lifecycle::from_status("UPDATING"),
            Lifecycle::InProgress(_)
        ));
        assert!(matches!(
            Lifecycle::from_status("SOMETHING_NEW"),
            Lifecycle::InProgress(_)
        ));
        assert!(matches!(
            Lifecycle::from_status("UPDATE_UNSUCCESSFUL"),
            Lifecycle::Degraded(_)
        ));
        for pending in [
            "CREATE_PENDING_AUTH",
            "UPDATE_PENDING_AUTH",
            "SYNCHRONIZE_PENDING_AUTH",
        ] {
            assert_eq!(
                Lifecycle::from_status(pending),
                Lifecycle::NeedsAuthorization(pending.into())
            );
        }
        assert!(matches!(
            Lifecycle::from_status("CREATE_FAILED"),
            Lifecycle::Failed(_)
        ));
        assert_eq!(Lifecycle::from_status("DELETING"), Lifecycle::Deleting);
    }

    #[test]
    fn arns_parse_and_print() {
        let text = "arn:aws:bedrock-agentcore:eu-west-1:111122223333:gateway/gw-1";
        let arn = Arn::parse(text).expect("valid");
        assert_eq!(arn.region, "eu-west-1");
        assert_eq!(arn.account, "111122223333");
        assert_eq!(arn.resource, "gateway/gw-1");
        assert_eq!(arn.to_string(), text);
        assert_eq!(Arn::parse("not-an-arn"), None);
    }

    #[test]
    fn runtime_version_qualifier_is_dropped() {
        let q = "arn:aws:bedrock-agentcore:us-east-1:123456789012:agent/6a8e:3";
        assert_eq!(
            unqualified_runtime_arn(q),
            "arn:aws:bedrock-agentcore:us-east-1:123456789012:agent/6a8e"
        );
        let real = "arn:aws:bedrock-agentcore:us-east-1:123456789012:runtime/sre_agent-Xyz12AbCde";
        assert_eq!(unqualified_runtime_arn(real), real);
    }
}
