//! The argument groups several commands share: the registry, the trust policy, the scope of a
//! scan and the accounts and regions it reaches, and the write policy. Their translation into
//! the engine's settings is plain and sits here; clients are built in [`super::compose`].

use clap::Args;
use registrar_core::desired::{DeriveOptions, Visibility};
use registrar_core::enable::EnablePolicy;
use registrar_core::plan::{DeleteGuard, PlanContext, Policy, RegistryIdentity};

use super::Output;
use super::parse::{self, Fraction, PerSecond, at_least};
use crate::pace::Rates;
use crate::resync::scan::ScanOptions;

#[derive(Debug, Args)]
pub struct RegistryArgs {
    /// Registry base URL.
    #[arg(long, env = "REGISTRY_URL")]
    pub registry_url: String,
    /// Registry ingress token file (JSON with access_token/token, or a bare token). Refused when
    /// other users may read it.
    #[arg(long, env = "REGISTRY_TOKEN_FILE", default_value = ".token")]
    pub token_file: String,
    /// Accept a token file that group or others may read (a mount that cannot be made private).
    #[arg(long, env = "REGISTRAR_ALLOW_SHARED_TOKEN_FILE")]
    pub allow_shared_token_file: bool,
    /// Allow a plain-http registry URL to a non-loopback host.
    #[arg(long, env = "REGISTRAR_ALLOW_INSECURE_REGISTRY")]
    pub allow_insecure_registry: bool,
    /// Timeout of one registry request, in seconds (at least 1).
    #[arg(long, env = "REGISTRAR_REGISTRY_TIMEOUT", default_value_t = 30, value_parser = at_least::<u64>(1).seconds())]
    pub registry_timeout: u64,
    /// Attempts per registry request (transient failures only; at least 1).
    #[arg(long, env = "REGISTRAR_REGISTRY_ATTEMPTS", default_value_t = 4, value_parser = at_least::<usize>(1))]
    pub registry_attempts: usize,
    /// Obtain the registry token by client_credentials from this IdP (its OIDC discovery URL)
    /// instead of reading --token-file; it is renewed before it expires.
    #[arg(long, env = "REGISTRY_TOKEN_DISCOVERY_URL")]
    pub registry_token_discovery_url: Option<String>,
    /// The registry client's id at that IdP.
    #[arg(
        long,
        env = "REGISTRY_CLIENT_ID",
        requires = "registry_token_discovery_url"
    )]
    pub registry_client_id: Option<String>,
    /// A file holding its secret; or set REGISTRY_CLIENT_SECRET. Never a command-line value:
    /// every user of the machine can read a process's arguments.
    #[arg(
        long,
        env = "REGISTRY_CLIENT_SECRET_FILE",
        requires = "registry_token_discovery_url"
    )]
    pub registry_client_secret_file: Option<std::path::PathBuf>,
    /// Scope to ask for (space-separated), if the IdP needs one.
    #[arg(long, env = "REGISTRY_TOKEN_SCOPE")]
    pub registry_token_scope: Option<String>,
    /// The name the registry records as `registered_by` for what this service registers (the
    /// key name of a named API key, the client's user at the IdP). When set, a server registered
    /// by anyone else is never treated as ours, whatever its metadata says.
    #[arg(long, env = "REGISTRAR_REGISTRY_IDENTITY")]
    pub registry_identity: Option<String>,
}

impl RegistryArgs {
    pub(crate) fn identity(&self) -> Option<RegistryIdentity> {
        self.registry_identity
            .as_ref()
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
            .map(|s| RegistryIdentity::configured(s.to_owned()))
    }
}

/// Where client secrets may go (design invariant 7) and where they are read from.
#[derive(Debug, Args)]
pub struct TrustArgs {
    /// Issuers client secrets may be sent to (comma-separated): issuer URLs
    /// (https://idp.example.com/realms/x), or hosts (idp.example.com) whose every issuer is
    /// trusted. Cognito user pools in the regions read are trusted without being listed, for the
    /// secret Cognito holds for their own app clients.
    #[arg(long, env = "REGISTRAR_TRUSTED_ISSUERS", value_delimiter = ',')]
    pub trusted_issuers: Vec<String>,
    /// Hosts a trusted issuer's token endpoint may be on besides the issuer's own host.
    #[arg(long, env = "REGISTRAR_TRUSTED_TOKEN_HOSTS", value_delimiter = ',')]
    pub trusted_token_hosts: Vec<String>,
    /// Cognito's issuer, `{region}` standing for the region (change it only for an emulator).
    #[arg(
        long,
        env = "REGISTRAR_COGNITO_ISSUER_BASE",
        default_value = registrar_core::trust::COGNITO_ISSUER_BASE
    )]
    pub cognito_issuer_base: String,
    /// Secrets Manager name of a client secret; `{name}` is the client id or the vendor
    /// variable (ENTRA_CLIENT_SECRET, ...). Keep the registry's own secret outside this prefix.
    #[arg(
        long,
        env = "REGISTRAR_SECRET_NAME_PATTERN",
        default_value = "agentcore-registrar/egress/{name}"
    )]
    pub secret_name_pattern: String,
    /// `client=issuer-url` pairs (comma-separated): where a secret that names no issuer (an
    /// environment variable, a plain Secrets Manager string, a vendor variable) may go for that
    /// client. Without a pair it goes only to the one trusted issuer, when exactly one is listed.
    #[arg(long, env = "REGISTRAR_CLIENT_ISSUERS", value_delimiter = ',')]
    pub client_issuers: Vec<String>,
    /// The only Cognito user pools trusted without being listed (pool ids or ARNs,
    /// comma-separated); empty trusts every pool in the regions read.
    #[arg(long, env = "REGISTRAR_TRUSTED_COGNITO_POOLS", value_delimiter = ',')]
    pub trusted_cognito_pools: Vec<String>,
}

impl TrustArgs {
    pub(crate) const PATTERN_RULE: &str = "must be a fixed prefix then {name}, such as agentcore-registrar/egress/{name} (IAM grants that prefix alone)";

    /// Client ids must not choose the whole secret name: IAM scopes reads to a prefix.
    pub(crate) fn pattern_has_prefix(&self) -> bool {
        self.secret_name_pattern
            .split_once("{name}")
            .is_some_and(|(prefix, _)| !prefix.is_empty())
    }
}

#[derive(Debug, Args)]
pub struct ScopeArgs {
    /// Only gateways (and their targets).
    #[arg(
        long,
        env = "REGISTRAR_GATEWAYS_ONLY",
        conflicts_with = "runtimes_only"
    )]
    pub gateways_only: bool,
    /// Only agent runtimes.
    #[arg(long, env = "REGISTRAR_RUNTIMES_ONLY")]
    pub runtimes_only: bool,
    /// Also register `mcpServer` gateway targets as servers.
    #[arg(long, env = "REGISTRAR_INCLUDE_MCP_TARGETS")]
    pub include_mcp_targets: bool,
    /// Visibility of every entry: public, private (or internal, its alias), group-restricted.
    #[arg(long, env = "REGISTRAR_VISIBILITY", default_value = "public", value_parser = parse::visibility)]
    pub visibility: Visibility,
    /// Concurrent AgentCore reads (at least 1).
    #[arg(long, env = "REGISTRAR_AWS_CONCURRENCY", default_value_t = 16, value_parser = at_least::<usize>(1))]
    pub aws_concurrency: usize,
    /// Output format.
    #[arg(long, env = "REGISTRAR_OUTPUT", value_enum, default_value_t = Output::Text)]
    pub output: Output,
    #[command(flatten)]
    pub reach: ReachArgs,
}

/// Which accounts and regions are read. Cross-account reads fail closed: every member account
/// must be in --allowed-accounts.
#[derive(Debug, Args)]
pub struct ReachArgs {
    /// Regions read besides the home region (comma-separated).
    #[arg(long, env = "REGISTRAR_REGIONS", value_delimiter = ',')]
    pub regions: Vec<String>,
    /// Member accounts read through their --member-role-name role (comma-separated).
    #[arg(long, env = "REGISTRAR_MEMBER_ACCOUNTS", value_delimiter = ',')]
    pub member_accounts: Vec<String>,
    /// The only accounts a role may be assumed in; empty allows none.
    #[arg(long, env = "REGISTRAR_ALLOWED_ACCOUNTS", value_delimiter = ',')]
    pub allowed_accounts: Vec<String>,
    /// Name of the role each member account provides.
    #[arg(
        long,
        env = "REGISTRAR_MEMBER_ROLE_NAME",
        default_value = "agentcore-registrar-reader"
    )]
    pub member_role_name: String,
    /// A file holding the external id the member roles require, if any; or set
    /// REGISTRAR_MEMBER_EXTERNAL_ID. Never a command-line value (the process list shows those).
    #[arg(long, env = "REGISTRAR_MEMBER_EXTERNAL_ID_FILE")]
    pub member_external_id_file: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub pace: PaceArgs,
}

/// How fast each account and region is read: client-side rate limits per AgentCore operation
/// (see [`crate::pace`]), so the fleet stays under AgentCore's quotas by waiting instead of
/// being throttled. Per process: with several workers, give each its share of the quota.
#[derive(Debug, Args)]
pub struct PaceArgs {
    /// GetGateway and GetGatewayTarget requests a second, each, in each account and region
    /// (0 (off) or 0.1..=1000; the quota is 10).
    #[arg(long, env = "REGISTRAR_AGENTCORE_GATEWAY_RATE", default_value_t = Rates::DEFAULT.gateway_reads, value_parser = PerSecond)]
    pub agentcore_gateway_rate: f64,
    /// GetAgentRuntime requests a second in each account and region (0 (off) or 0.1..=1000).
    #[arg(long, env = "REGISTRAR_AGENTCORE_RUNTIME_RATE", default_value_t = Rates::DEFAULT.runtime_reads, value_parser = PerSecond)]
    pub agentcore_runtime_rate: f64,
    /// Pages a second of each listing (ListGateways, ListGatewayTargets, ListAgentRuntimes) in
    /// each account and region (0 (off) or 0.1..=1000).
    #[arg(long, env = "REGISTRAR_AGENTCORE_LIST_RATE", default_value_t = Rates::DEFAULT.lists, value_parser = PerSecond)]
    pub agentcore_list_rate: f64,
}

impl PaceArgs {
    pub(crate) fn rates(&self) -> Rates {
        Rates {
            gateway_reads: self.agentcore_gateway_rate,
            runtime_reads: self.agentcore_runtime_rate,
            lists: self.agentcore_list_rate,
        }
    }
}

impl ScopeArgs {
    pub(crate) fn scan_options(&self) -> ScanOptions {
        ScanOptions {
            gateways: !self.runtimes_only,
            runtimes: !self.gateways_only,
            mcp_targets: self.include_mcp_targets && !self.runtimes_only,
            derive: DeriveOptions {
                visibility: self.visibility,
            },
            concurrency: self.aws_concurrency,
        }
    }
}

/// What a run may write and enable: shared by `resync` and `worker`.
#[derive(Debug, Args)]
pub struct PolicyArgs {
    /// sync (register, update, deregister), upsert-only, or create-only.
    #[arg(long, env = "REGISTRAR_POLICY", default_value = "sync", value_parser = parse::policy)]
    pub policy: Policy,
    /// Which new entries are enabled: none, authenticated, all.
    #[arg(long, env = "REGISTRAR_ENABLE_POLICY", default_value = "authenticated", value_parser = parse::enable)]
    pub enable_policy: EnablePolicy,
    /// Adopt entries the Python tool (agentcore-sync) registered for the same ARN.
    #[arg(long, env = "REGISTRAR_ADOPT_LEGACY", default_value_t = true, action = clap::ArgAction::Set)]
    pub adopt_legacy: bool,
    /// Largest share of owned entries (0 to 1) one full rescan may deregister without --force.
    #[arg(long, env = "REGISTRAR_MAX_DELETE_FRACTION", default_value_t = 0.5, value_parser = Fraction)]
    pub max_delete_fraction: f64,
}

impl PolicyArgs {
    /// The planner's settings (the fraction's range is checked on its flag).
    pub(crate) fn plan_context(
        &self,
        force: bool,
        identity: Option<RegistryIdentity>,
    ) -> PlanContext {
        PlanContext {
            policy: self.policy,
            adopt_legacy: self.adopt_legacy,
            guard: DeleteGuard {
                max_fraction: self.max_delete_fraction,
                force,
            },
            identity,
        }
    }
}
