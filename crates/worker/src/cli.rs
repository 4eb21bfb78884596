//! The command line: every flag is also an environment variable (names shared with the Python
//! tool keep their names; the rest use the `REGISTRAR_` prefix).

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use registrar_core::desired::{DeriveOptions, Visibility};
use registrar_core::enable::EnablePolicy;
use registrar_core::plan::{DeleteGuard, PlanContext, Policy, RegistryIdentity};
use registrar_core::reach::{ReachRequest, is_region_code};
use registrar_core::trust::{TrustConfig, TrustPolicy};
use secrecy::{ExposeSecret, SecretString};

use crate::aws::agentcore::AgentCoreAws;
use crate::aws::fleet::Fleet;
use crate::aws::load_config;
use crate::aws::state::DynamoState;
use crate::registry::token::{ClientCredentialsToken, TokenFile, TokenSource};
use crate::registry::{RegistryClient, RetryPolicy, check_registry_url};
use crate::resync::report::{Outcome, Report, Status};
use crate::resync::scan::{Known, Progress, ScanOptions, scan_fleet};
use crate::resync::{ResyncOptions, resync};

#[derive(Debug, Parser)]
#[command(
    name = "registrar",
    version,
    about = "Keeps an MCP Gateway Registry in step with Amazon Bedrock AgentCore."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// Parses the command line; an environment variable set to "" counts as unset (deployment
    /// templates set every variable, some of them empty), so its default applies.
    pub fn parse_env_aware() -> Self {
        use clap::{CommandFactory, FromArgMatches};
        let matches = empty_env_is_unset(Self::command()).get_matches();
        Self::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
    }
}

fn empty_env_is_unset(cmd: clap::Command) -> clap::Command {
    let subcommands: Vec<String> = cmd
        .get_subcommands()
        .map(|c| c.get_name().to_owned())
        .collect();
    let cmd = cmd.mut_args(|arg| {
        let empty = arg
            .get_env()
            .is_some_and(|name| std::env::var_os(name).is_some_and(|v| v.is_empty()));
        if empty { arg.env(None::<&str>) } else { arg }
    });
    subcommands.iter().fold(cmd, |cmd, name| {
        cmd.mut_subcommand(name, empty_env_is_unset)
    })
}

#[derive(Debug, Args)]
pub struct Global {
    /// AWS home region (each resource carries its own region in its ARN).
    #[arg(long, env = "AWS_REGION", global = true)]
    pub region: Option<String>,
    /// DynamoDB state table.
    #[arg(
        long,
        env = "REGISTRAR_TABLE",
        default_value = "agentcore-registrar",
        global = true
    )]
    pub table: String,
    /// Log format on stderr.
    #[arg(long, env = "REGISTRAR_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
    /// Log filter (tracing `EnvFilter` syntax).
    #[arg(long, env = "REGISTRAR_LOG", default_value = "warn", global = true)]
    pub log: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Text,
    Json,
}

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
    /// Timeout of one registry request, in seconds.
    #[arg(long, env = "REGISTRAR_REGISTRY_TIMEOUT", default_value_t = 30)]
    pub registry_timeout: u64,
    /// Attempts per registry request (transient failures only).
    #[arg(long, env = "REGISTRAR_REGISTRY_ATTEMPTS", default_value_t = 4)]
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
    fn identity(&self) -> Option<RegistryIdentity> {
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
    const PATTERN_RULE: &str = "must be a fixed prefix then {name}, such as agentcore-registrar/egress/{name} (IAM grants that prefix alone)";

    /// Client ids must not choose the whole secret name: IAM scopes reads to a prefix.
    fn pattern_has_prefix(&self) -> bool {
        self.secret_name_pattern
            .split_once("{name}")
            .is_some_and(|(prefix, _)| !prefix.is_empty())
    }

    /// The trust policy; Cognito pools are trusted in `regions` (those the worker reads). The
    /// registry's own client never gets an egress token, and its IdP serves egress only when
    /// listed.
    pub(crate) fn policy(
        &self,
        regions: &[String],
        registry: Option<&RegistryArgs>,
    ) -> anyhow::Result<TrustPolicy> {
        if !self.pattern_has_prefix() {
            anyhow::bail!(
                "--secret-name-pattern (REGISTRAR_SECRET_NAME_PATTERN) {}, got {:?}",
                Self::PATTERN_RULE,
                self.secret_name_pattern
            );
        }
        // Also from the environment, so a process that reads a token file (or `manifest
        // export`, which has no registry) still knows the registry's own client and IdP.
        let from_env = |var: &str| std::env::var(var).ok().filter(|v| !v.trim().is_empty());
        let registry_url = registry
            .and_then(|r| r.registry_token_discovery_url.clone())
            .or_else(|| from_env("REGISTRY_TOKEN_DISCOVERY_URL"));
        let registry_client = registry
            .and_then(|r| r.registry_client_id.clone())
            .or_else(|| from_env("REGISTRY_CLIENT_ID"));
        let registry_issuer = registry_url.as_deref().and_then(|u| {
            u.trim()
                .strip_suffix(registrar_core::trust::DISCOVERY_SUFFIX)
        });
        TrustPolicy::new(&TrustConfig {
            trusted: &self.trusted_issuers,
            token_hosts: &self.trusted_token_hosts,
            cognito_regions: regions,
            cognito_issuer_base: &self.cognito_issuer_base,
            cognito_pools: &self.trusted_cognito_pools,
            client_issuers: &self.client_issuers,
            registry_client: registry_client.as_deref(),
            registry_issuer,
        })
        .map_err(|e| anyhow::anyhow!("{e}"))
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
    #[arg(long, env = "REGISTRAR_VISIBILITY", default_value = "public", value_parser = parse_visibility)]
    pub visibility: Visibility,
    /// Concurrent AgentCore reads.
    #[arg(long, env = "REGISTRAR_AWS_CONCURRENCY", default_value_t = 16)]
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
}

/// A secret from its environment variable or a file, never from the command line: every user of
/// the machine can read a process's arguments.
fn secret_input(
    var: &str,
    file: Option<&std::path::Path>,
    file_flag: &str,
) -> anyhow::Result<Option<SecretString>> {
    let from_env = std::env::var(var).ok().filter(|v| !v.is_empty());
    match (from_env, file) {
        (Some(_), Some(_)) => anyhow::bail!("both {var} and --{file_flag} are set: use one"),
        (Some(value), None) => Ok(Some(SecretString::from(value))),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("--{file_flag} {}: {e}", path.display()))?;
            let value = text.trim();
            anyhow::ensure!(
                !value.is_empty(),
                "--{file_flag} {} is empty",
                path.display()
            );
            Ok(Some(SecretString::from(value.to_owned())))
        }
        (None, None) => Ok(None),
    }
}

impl ReachArgs {
    /// Every account and region to read, validated (an account outside the allowlist is an
    /// error, not a skip).
    pub(crate) async fn fleet(
        &self,
        config: &aws_config::SdkConfig,
    ) -> anyhow::Result<Fleet<AgentCoreAws>> {
        let home_region = config.region().map(ToString::to_string).unwrap_or_default();
        let external_id = secret_input(
            "REGISTRAR_MEMBER_EXTERNAL_ID",
            self.member_external_id_file.as_deref(),
            "member-external-id-file",
        )?;
        let fleet = crate::aws::fleet::build(
            config,
            ReachRequest {
                home_region: &home_region,
                regions: &self.regions,
                member_accounts: &self.member_accounts,
                allowed_accounts: &self.allowed_accounts,
            },
            &self.member_role_name,
            external_id.as_ref().map(ExposeSecret::expose_secret),
        )
        .await?;
        tracing::info!(
            regions = ?self.regions,
            members = ?self.member_accounts,
            scopes = fleet.members().len(),
            "Reading AgentCore in these accounts and regions."
        );
        Ok(fleet)
    }
}

impl ScopeArgs {
    fn scan_options(&self) -> ScanOptions {
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

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Scan AgentCore, then register, update and deregister registry entries to match.
    Resync {
        #[command(flatten)]
        registry: RegistryArgs,
        #[command(flatten)]
        scope: ScopeArgs,
        /// Plan and print; write nothing.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        policy: PolicyArgs,
        /// Deregister even past --max-delete-fraction.
        #[arg(long)]
        force: bool,
        /// Read every resource from AgentCore and recheck every entry, even those AgentCore lists
        /// with the updatedAt of an entry that is as we wrote it (skipped otherwise).
        #[arg(long)]
        deep: bool,
        /// Concurrent registry writes.
        #[arg(long, env = "REGISTRAR_REGISTRY_CONCURRENCY", default_value_t = 8)]
        registry_concurrency: usize,
    },
    /// Discover and print AgentCore resources and their registry paths; register nothing.
    List {
        #[command(flatten)]
        scope: ScopeArgs,
    },
    /// Consume AgentCore events from SQS and reconcile each named resource (the deployed job).
    Worker(Box<WorkerArgs>),
    /// The dead-letter queue: inspect it, or move messages back to the queue.
    Dlq {
        #[command(subcommand)]
        command: DlqCommand,
    },
    /// Egress tokens of CUSTOM_JWT entries.
    Tokens {
        #[command(subcommand)]
        command: TokensCommand,
    },
    /// The token-refresh manifest.
    Manifest {
        #[command(subcommand)]
        command: ManifestCommand,
    },
    /// State table operations.
    State {
        #[command(subcommand)]
        command: StateCommand,
    },
    /// Check a deployment from the outside: credentials, AgentCore access, the state table, the
    /// queue and its DLQ, the EventBridge rule, CloudTrail, the registry and its permissions, the
    /// trusted issuers. Prints a checklist with a fix per failure; exit 0 only when all pass.
    Doctor(Box<crate::doctor::DoctorArgs>),
    /// Exit 0 when a worker's /healthz answers 200 (the container health check; no curl needed).
    Healthcheck {
        #[arg(
            long,
            env = "REGISTRAR_HEALTHCHECK_URL",
            default_value = "http://127.0.0.1:8080/healthz"
        )]
        url: String,
    },
}

#[derive(Debug, Args)]
pub struct WorkerArgs {
    #[command(flatten)]
    registry: RegistryArgs,
    #[command(flatten)]
    scope: ScopeArgs,
    /// SQS queue the EventBridge rule fills.
    #[arg(long, env = "REGISTRAR_QUEUE_URL")]
    queue_url: String,
    /// Its dead-letter queue (poison messages are sent there at once, with the reason).
    #[arg(long, env = "REGISTRAR_DLQ_URL")]
    dlq_url: Option<String>,
    /// Address of /healthz, /readyz and /metrics.
    #[arg(long, env = "REGISTRAR_LISTEN")]
    listen: Option<std::net::SocketAddr>,
    /// Messages processed at once.
    #[arg(long, env = "REGISTRAR_CONCURRENCY", default_value_t = 16)]
    concurrency: usize,
    /// Seconds a received message stays hidden; renewed by a heartbeat while it is processed.
    #[arg(long, env = "REGISTRAR_VISIBILITY_TIMEOUT", default_value_t = 60)]
    visibility_timeout: u64,
    /// Seconds of the first re-check of a resource still CREATING/UPDATING (then doubling).
    #[arg(long, env = "REGISTRAR_WAIT_BASE", default_value_t = 10)]
    wait_base: u64,
    /// Longest re-check delay, seconds (SQS allows 900 at most).
    #[arg(long, env = "REGISTRAR_WAIT_CAP", default_value_t = 300)]
    wait_cap: u64,
    /// Seconds after which a resource still not READY is given up (dead-lettered).
    #[arg(long, env = "REGISTRAR_MAX_WAIT", default_value_t = 3600)]
    max_wait: u64,
    /// Seconds of the first retry of a transient failure (then doubling, per key).
    #[arg(long, env = "REGISTRAR_RETRY_BASE", default_value_t = 5)]
    retry_base: u64,
    /// Longest retry delay, seconds.
    #[arg(long, env = "REGISTRAR_RETRY_CAP", default_value_t = 300)]
    retry_cap: u64,
    /// Seconds in-flight work may take to finish after SIGTERM before it is released.
    #[arg(long, env = "REGISTRAR_SHUTDOWN_GRACE", default_value_t = 25)]
    shutdown_grace: u64,
    /// Seconds between CloudWatch embedded-metric-format lines on stderr; 0 writes none (the
    /// stack sets 60).
    #[arg(long, env = "REGISTRAR_EMF_INTERVAL", default_value_t = 0)]
    emf_interval: u64,
    /// Seconds one key's reconcile may take, whatever it waits on; then it fails (transient).
    #[arg(long, env = "REGISTRAR_RECONCILE_DEADLINE", default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=3600))]
    reconcile_deadline: u64,
    /// Long-poll wait of one receive, seconds (0..=20).
    #[arg(long, env = "REGISTRAR_RECEIVE_WAIT", default_value_t = 20)]
    receive_wait: u64,
    /// Run a full rescan at start-up (/readyz turns ready when it is done).
    #[arg(long, env = "REGISTRAR_STARTUP_RESCAN", default_value_t = true, action = clap::ArgAction::Set)]
    startup_rescan: bool,
    /// Seconds between periodic rescans (jittered by 10%); 0 turns them off.
    #[arg(long, env = "REGISTRAR_RESCAN_INTERVAL", default_value_t = 3600)]
    rescan_interval: u64,
    #[command(flatten)]
    policy: PolicyArgs,
    /// Refresh the egress tokens of CUSTOM_JWT entries.
    #[arg(long, env = "REGISTRAR_TOKEN_REFRESH", default_value_t = true, action = clap::ArgAction::Set)]
    token_refresh: bool,
    /// Longest pause between looks for tokens due, seconds.
    #[arg(long, env = "REGISTRAR_TOKEN_CHECK_INTERVAL", default_value_t = 15)]
    token_check_interval: u64,
    /// Token refreshes at once (IdP requests in flight); raise it for many short-lived tokens.
    #[arg(long, env = "REGISTRAR_TOKEN_CONCURRENCY", default_value_t = 16)]
    token_concurrency: usize,
    #[command(flatten)]
    trust: TrustArgs,
}

impl WorkerArgs {
    /// Every out-of-range setting at once, each named by its flag and variable.
    fn validate(&self) -> anyhow::Result<()> {
        let mut wrong = Vec::new();
        let mut check = |ok: bool, flag: &str, var: &str, rule: &str, got: String| {
            if !ok {
                wrong.push(format!("--{flag} ({var}) {rule}, got {got}"));
            }
        };
        let is_url = |u: &str| u.starts_with("http://") || u.starts_with("https://");
        check(
            is_url(&self.queue_url),
            "queue-url",
            "REGISTRAR_QUEUE_URL",
            "must be a queue URL (https://sqs.<region>.amazonaws.com/<account>/<name>)",
            format!("{:?}", self.queue_url),
        );
        if let Some(dlq) = &self.dlq_url {
            check(
                is_url(dlq),
                "dlq-url",
                "REGISTRAR_DLQ_URL",
                "must be a queue URL",
                format!("{dlq:?}"),
            );
        }
        let v = self.visibility_timeout;
        check(
            (1..=43_200).contains(&v),
            "visibility-timeout",
            "REGISTRAR_VISIBILITY_TIMEOUT",
            "must be 1..=43200 seconds (the SQS limit)",
            v.to_string(),
        );
        for (flag, var, value) in [
            ("concurrency", "REGISTRAR_CONCURRENCY", self.concurrency),
            (
                "token-concurrency",
                "REGISTRAR_TOKEN_CONCURRENCY",
                self.token_concurrency,
            ),
            (
                "aws-concurrency",
                "REGISTRAR_AWS_CONCURRENCY",
                self.scope.aws_concurrency,
            ),
            (
                "registry-attempts",
                "REGISTRAR_REGISTRY_ATTEMPTS",
                self.registry.registry_attempts,
            ),
        ] {
            check(
                value >= 1,
                flag,
                var,
                "must be at least 1",
                value.to_string(),
            );
        }
        for (flag, var, value) in [
            ("wait-base", "REGISTRAR_WAIT_BASE", self.wait_base),
            ("retry-base", "REGISTRAR_RETRY_BASE", self.retry_base),
            (
                "registry-timeout",
                "REGISTRAR_REGISTRY_TIMEOUT",
                self.registry.registry_timeout,
            ),
            (
                "token-check-interval",
                "REGISTRAR_TOKEN_CHECK_INTERVAL",
                self.token_check_interval,
            ),
        ] {
            check(
                value >= 1,
                flag,
                var,
                "must be at least 1 second",
                value.to_string(),
            );
        }
        check(
            (self.wait_base..=900).contains(&self.wait_cap),
            "wait-cap",
            "REGISTRAR_WAIT_CAP",
            "must be between --wait-base and 900 seconds (the SQS delay limit)",
            self.wait_cap.to_string(),
        );
        check(
            self.retry_cap >= self.retry_base,
            "retry-cap",
            "REGISTRAR_RETRY_CAP",
            "must be at least --retry-base",
            self.retry_cap.to_string(),
        );
        check(
            self.max_wait >= self.wait_base,
            "max-wait",
            "REGISTRAR_MAX_WAIT",
            "must be at least --wait-base",
            self.max_wait.to_string(),
        );
        check(
            self.receive_wait <= 20,
            "receive-wait",
            "REGISTRAR_RECEIVE_WAIT",
            "must be at most 20 seconds",
            self.receive_wait.to_string(),
        );
        check(
            self.rescan_interval == 0 || self.rescan_interval >= 10,
            "rescan-interval",
            "REGISTRAR_RESCAN_INTERVAL",
            "must be 0 (off) or at least 10 seconds",
            self.rescan_interval.to_string(),
        );
        check(
            self.trust.pattern_has_prefix(),
            "secret-name-pattern",
            "REGISTRAR_SECRET_NAME_PATTERN",
            TrustArgs::PATTERN_RULE,
            format!("{:?}", self.trust.secret_name_pattern),
        );
        match wrong.len() {
            0 => Ok(()),
            1 => anyhow::bail!("{}", wrong[0]),
            n => anyhow::bail!("{n} settings are wrong:\n  {}", wrong.join("\n  ")),
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// Count, oldest age, breakdown by event name and by failure reason, and a sample.
    Inspect {
        #[arg(long, env = "REGISTRAR_DLQ_URL")]
        dlq_url: String,
        /// Messages read for the breakdown (they are made visible again afterwards).
        #[arg(long, env = "REGISTRAR_DLQ_INSPECT_LIMIT", default_value_t = 1000)]
        limit: usize,
        /// Messages shown in the sample.
        #[arg(long, env = "REGISTRAR_DLQ_SAMPLE", default_value_t = 10)]
        sample: usize,
        #[arg(long, env = "REGISTRAR_OUTPUT", value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Move messages back to the source queue (SQS's move task when nothing is filtered; else
    /// one by one: send, then delete).
    Replay {
        #[arg(long, env = "REGISTRAR_QUEUE_URL")]
        queue_url: String,
        #[arg(long, env = "REGISTRAR_DLQ_URL")]
        dlq_url: String,
        /// Show what would move; move nothing.
        #[arg(long)]
        dry_run: bool,
        /// Move at most this many.
        #[arg(long)]
        max: Option<usize>,
        /// At most this many messages per second.
        #[arg(long, env = "REGISTRAR_REPLAY_RATE")]
        rate: Option<f64>,
        /// Only messages of this CloudTrail event name (`unparseable` for poison).
        #[arg(long)]
        filter_event: Option<String>,
        /// Only messages naming this resource id.
        #[arg(long)]
        filter_resource: Option<String>,
        #[arg(long, env = "REGISTRAR_OUTPUT", value_enum, default_value_t = Output::Text)]
        output: Output,
    },
}

#[derive(Debug, Subcommand)]
#[allow(
    clippy::large_enum_variant,
    reason = "parsed once per process; boxing would only obscure the flags"
)]
pub enum TokensCommand {
    /// Path, vendor, client, expiry, next refresh and last result of every token.
    Status {
        #[arg(long, env = "REGISTRAR_OUTPUT", value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Refresh the tokens that are due (or all of them with --force, or one with --path).
    Refresh {
        #[command(flatten)]
        registry: RegistryArgs,
        /// Only this registry path.
        #[arg(long)]
        path: Option<String>,
        /// Refresh even tokens that are not due yet.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        trust: TrustArgs,
        /// Regions read besides the home region (Cognito pools there are trusted).
        #[arg(long, env = "REGISTRAR_REGIONS", value_delimiter = ',')]
        regions: Vec<String>,
        #[arg(long, env = "REGISTRAR_ENABLE_POLICY", default_value = "authenticated", value_parser = parse_enable)]
        enable_policy: EnablePolicy,
    },
}

#[derive(Debug, Subcommand)]
pub enum ManifestCommand {
    /// Write the Python tool's `token_refresh_manifest.json` (server entries only: the registry
    /// has no credential API for agents), so its refresher can still read it.
    /// Only rows whose IdP the worker trusts are written: the Python refresher sends secrets
    /// wherever a discovery document says.
    Export {
        /// Write here (atomically) instead of stdout.
        #[arg(long)]
        out: Option<std::path::PathBuf>,
        #[command(flatten)]
        trust: TrustArgs,
        /// Regions read besides the home region (Cognito pools there are trusted).
        #[arg(long, env = "REGISTRAR_REGIONS", value_delimiter = ',')]
        regions: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum StateCommand {
    /// Create the DynamoDB state table if it does not exist (local runs; infra/ does it in AWS).
    Init,
}

fn parse_visibility(s: &str) -> Result<Visibility, String> {
    Visibility::parse(s).ok_or_else(|| {
        format!("unknown visibility {s:?}: use public, private, internal or group-restricted")
    })
}

/// What a run may write and enable: shared by `resync` and `worker`.
#[derive(Debug, Args)]
pub struct PolicyArgs {
    /// sync (register, update, deregister), upsert-only, or create-only.
    #[arg(long, env = "REGISTRAR_POLICY", default_value = "sync", value_parser = parse_policy)]
    pub policy: Policy,
    /// Which new entries are enabled: none, authenticated, all.
    #[arg(long, env = "REGISTRAR_ENABLE_POLICY", default_value = "authenticated", value_parser = parse_enable)]
    pub enable_policy: EnablePolicy,
    /// Adopt entries the Python tool (agentcore-sync) registered for the same ARN.
    #[arg(long, env = "REGISTRAR_ADOPT_LEGACY", default_value_t = true, action = clap::ArgAction::Set)]
    pub adopt_legacy: bool,
    /// Largest share of owned entries one full rescan may deregister without --force.
    #[arg(long, env = "REGISTRAR_MAX_DELETE_FRACTION", default_value_t = 0.5)]
    pub max_delete_fraction: f64,
}

impl PolicyArgs {
    /// The planner's settings; an out-of-range fraction is refused.
    fn plan_context(
        &self,
        force: bool,
        identity: Option<RegistryIdentity>,
    ) -> anyhow::Result<PlanContext> {
        if !(0.0..=1.0).contains(&self.max_delete_fraction) {
            anyhow::bail!(
                "--max-delete-fraction must be between 0 and 1, got {}",
                self.max_delete_fraction
            );
        }
        Ok(PlanContext {
            policy: self.policy,
            adopt_legacy: self.adopt_legacy,
            guard: DeleteGuard {
                max_fraction: self.max_delete_fraction,
                force,
            },
            identity,
        })
    }
}

fn parse_policy(s: &str) -> Result<Policy, String> {
    Policy::parse(s)
        .ok_or_else(|| format!("unknown policy {s:?}: use sync, upsert-only or create-only"))
}

fn parse_enable(s: &str) -> Result<EnablePolicy, String> {
    EnablePolicy::parse(s)
        .ok_or_else(|| format!("unknown enable policy {s:?}: use none, authenticated or all"))
}

fn init_logging(global: &Global) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(&global.log).map_err(|e| {
        anyhow::anyhow!(
            "--log (REGISTRAR_LOG) {:?} is not a log filter such as info or registrar_worker=debug: {e}",
            global.log
        )
    })?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match global.log_format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
    };
    Ok(())
}

/// Shows scan and apply progress on a terminal (never in pipes or CI logs).
fn spawn_progress(progress: Arc<Progress>) -> Option<tokio::task::JoinHandle<()>> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    Some(tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(250)).await;
            eprint!(
                "\r  listed {}  read {}  applied {} ",
                progress.listed.load(Ordering::Relaxed),
                progress.read.load(Ordering::Relaxed),
                progress.applied.load(Ordering::Relaxed)
            );
        }
    }))
}

fn stop_progress(handle: Option<tokio::task::JoinHandle<()>>) {
    if let Some(h) = handle {
        h.abort();
        eprint!("\r{:60}\r", "");
    }
}

pub(crate) fn registry_client(args: &RegistryArgs) -> anyhow::Result<RegistryClient> {
    let base = check_registry_url(&args.registry_url, args.allow_insecure_registry)?;
    let retry = RetryPolicy {
        attempts: args.registry_attempts.max(1),
        ..RetryPolicy::default()
    };
    let token = match &args.registry_token_discovery_url {
        None => TokenSource::File(
            TokenFile::new(&args.token_file).allow_shared(args.allow_shared_token_file),
        ),
        Some(url) => {
            let secret = secret_input(
                "REGISTRY_CLIENT_SECRET",
                args.registry_client_secret_file.as_deref(),
                "registry-client-secret-file",
            )?;
            let (Some(client_id), Some(secret)) = (&args.registry_client_id, secret) else {
                anyhow::bail!(
                    "--registry-token-discovery-url needs --registry-client-id and REGISTRY_CLIENT_SECRET (or --registry-client-secret-file)"
                );
            };
            let oidc =
                crate::tokens::oidc::Oidc::new(Duration::from_secs(15), Duration::from_secs(3600))?;
            // The operator named this IdP: it is trusted for the registry's client alone.
            let issuer = url
                .trim()
                .strip_suffix(registrar_core::trust::DISCOVERY_SUFFIX)
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "--registry-token-discovery-url (REGISTRY_TOKEN_DISCOVERY_URL) {url:?} must end in {}",
                        registrar_core::trust::DISCOVERY_SUFFIX
                    )
                })?;
            // A Cognito IdP's token endpoint is on its `amazoncognito.com` domain.
            let cognito_region: Vec<String> = url::Url::parse(issuer)
                .ok()
                .and_then(|u| {
                    u.host_str()?
                        .strip_prefix("cognito-idp.")?
                        .strip_suffix(".amazonaws.com")
                        .map(str::to_owned)
                })
                .into_iter()
                .collect();
            let trust = TrustPolicy::new(&TrustConfig {
                trusted: &[issuer.to_owned()],
                cognito_regions: &cognito_region,
                cognito_issuer_base: registrar_core::trust::COGNITO_ISSUER_BASE,
                ..TrustConfig::default()
            })
            .map_err(|e| anyhow::anyhow!("--registry-token-discovery-url: {e}"))?;
            let trusted = trust
                .issuer_of(url, std::slice::from_ref(client_id))
                .map_err(|e| anyhow::anyhow!("--registry-token-discovery-url: {e}"))?;
            TokenSource::ClientCredentials(Box::new(ClientCredentialsToken::new(
                oidc,
                trust,
                trusted,
                client_id.clone(),
                secret,
                registrar_core::refresh::TokenRequest {
                    scope: args.registry_token_scope.clone(),
                    audience: None,
                },
            )))
        }
    };
    Ok(RegistryClient::new(
        base,
        token,
        Duration::from_secs(args.registry_timeout),
        retry,
    )?)
}

/// The home region and the extra regions (where Cognito pools are trusted).
pub(crate) fn regions_read(config: &aws_config::SdkConfig, extra: &[String]) -> Vec<String> {
    let mut regions: Vec<String> = config
        .region()
        .map(ToString::to_string)
        .into_iter()
        .collect();
    for r in extra.iter().map(|r| r.trim()).filter(|r| !r.is_empty()) {
        if !regions.iter().any(|have| have == r) {
            regions.push(r.to_owned());
        }
    }
    regions
}

fn print_report(report: &Report, output: Output) {
    match output {
        Output::Text => print!("{}", report.to_text()),
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(report).unwrap_or_default()
        ),
    }
}

/// Runs a command; the exit code is 1 when anything failed, 2 for bad configuration.
pub async fn run(cli: Cli) -> ExitCode {
    if let Err(e) = init_logging(&cli.global) {
        eprintln!("error: {e:#}");
        return ExitCode::from(2);
    }
    match execute(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

async fn execute(cli: Cli) -> anyhow::Result<ExitCode> {
    if let Command::Healthcheck { url } = &cli.command {
        return Ok(healthcheck(url).await);
    }
    crate::aws::clients::set_principal(match cli.command {
        Command::Worker(_) => crate::aws::clients::Principal::Task,
        Command::State { .. } => crate::aws::clients::Principal::Local,
        _ => crate::aws::clients::Principal::Operator,
    });
    let config = load_config(cli.global.region.as_deref()).await;
    match config.region() {
        None => anyhow::bail!("no AWS region: set AWS_REGION or pass --region"),
        Some(r) if !is_region_code(r.as_ref()) => {
            anyhow::bail!(
                "unknown AWS region {:?}: expected a region code such as us-east-1 or eu-west-2",
                r.as_ref()
            )
        }
        Some(_) => {}
    }
    match cli.command {
        Command::Resync {
            registry,
            scope,
            dry_run,
            policy,
            force,
            deep,
            registry_concurrency,
        } => {
            let ctx = policy.plan_context(force, registry.identity())?;
            let client = registry_client(&registry)?;
            client_token_check(&registry)?;
            let agentcore = scope.reach.fleet(&config).await?;
            let state = DynamoState::new(&config, &cli.global.table);
            let opts = ResyncOptions {
                scan: scope.scan_options(),
                ctx,
                enable: policy.enable_policy,
                dry_run,
                registry_concurrency,
                deep,
            };
            let progress = Arc::new(Progress::default());
            let ticker = spawn_progress(progress.clone());
            let result = resync(&agentcore, &client, &state, opts, &progress).await;
            stop_progress(ticker);
            match result {
                Ok(report) => {
                    print_report(&report, scope.output);
                    Ok(if report.has_failures() {
                        ExitCode::from(1)
                    } else {
                        ExitCode::SUCCESS
                    })
                }
                Err(e) => {
                    eprintln!("error: resync aborted before any change: {e} ({})", e.class);
                    Ok(ExitCode::from(1))
                }
            }
        }
        Command::List { scope } => {
            let agentcore = scope.reach.fleet(&config).await?;
            let progress = Arc::new(Progress::default());
            let ticker = spawn_progress(progress.clone());
            let scanned = scan_fleet(
                &agentcore,
                scope.scan_options(),
                &Known::default(),
                &progress,
            )
            .await;
            stop_progress(ticker);
            let rows = scanned
                .discovered
                .iter()
                .map(|d| {
                    let status = match (&d.unregistrable, d.lifecycle.as_str()) {
                        (Some(reason), _) => (Status::Skipped, reason.clone()),
                        (None, "READY") => (Status::DryRun, "ready to register".to_owned()),
                        (None, other) => (Status::Waiting, format!("AgentCore status {other}")),
                    };
                    let mut o =
                        Outcome::for_kind(d.kind, &d.name, &d.arn, &d.path, status.0, status.1);
                    o.auth_type = d.auth.clone();
                    o
                })
                .collect();
            let errors: Vec<String> = scanned.errors.iter().map(ToString::to_string).collect();
            let report = Report::new(true, rows, errors, 0, 0);
            print_report(&report, scope.output);
            Ok(if report.has_failures() {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::Worker(args) => run_worker(&config, &cli.global.table, *args).await,
        Command::Doctor(args) => crate::doctor::run(&config, &cli.global.table, *args).await,
        Command::Tokens { command } => run_tokens(&config, &cli.global.table, command).await,
        Command::Dlq { command } => run_dlq(&config, command).await,
        Command::Manifest {
            command:
                ManifestCommand::Export {
                    out,
                    trust,
                    regions,
                },
        } => {
            use registrar_core::ports::{ResourceStore, TokenStore};
            let state = DynamoState::new(&config, &cli.global.table);
            let (rows, resources) = futures::try_join!(state.manifests(), state.resources())?;
            let servers: std::collections::BTreeSet<String> = resources
                .iter()
                .filter(|r| r.collection == registrar_core::desired::Collection::Server)
                .map(|r| r.resource.arn.clone())
                .collect();
            let policy = trust.policy(&regions_read(&config, &regions), None)?;
            // The Python refresher sends an environment secret of the first allowed client to
            // whatever token endpoint discovery names: export only rows the worker would serve.
            let refusal = |m: &registrar_core::tokens::ManifestFields| -> Option<String> {
                let issuer = match policy.issuer_of(&m.discovery_url, &m.allowed_clients) {
                    Ok(i) => i,
                    Err(e) => return Some(e.to_string()),
                };
                let client = m.allowed_clients.first()?;
                if let Err(why) = crate::tokens::secrets::check_client_id(client) {
                    return Some(why);
                }
                // A listed issuer gets the environment's (unbound) secret; a Cognito pool trusted
                // by default, the secret Cognito holds for its own client.
                let binding = match (&issuer.cognito, issuer.configured) {
                    (Some(pool), false) => {
                        registrar_core::trust::SecretBinding::CognitoPool(pool.clone())
                    }
                    _ => registrar_core::trust::SecretBinding::Unbound,
                };
                policy
                    .may_send(&issuer, client, "the Python refresher's secret", &binding)
                    .err()
                    .map(|e| e.to_string())
            };
            let mut rows_out = Vec::new();
            for m in rows.into_iter().filter(|m| servers.contains(&m.arn)) {
                match refusal(&m) {
                    None => rows_out.push(m),
                    Some(why) => eprintln!("left out {}: {why}", m.path),
                }
            }
            let rows = rows_out;
            let text =
                serde_json::to_string_pretty(&registrar_core::tokens::python_manifest(&rows))?
                    + "\n";
            match out {
                Some(path) => {
                    let tmp = path.with_extension("tmp");
                    std::fs::write(&tmp, &text)
                        .map_err(|e| anyhow::anyhow!("writing {}: {e}", tmp.display()))?;
                    std::fs::rename(&tmp, &path)
                        .map_err(|e| anyhow::anyhow!("renaming to {}: {e}", path.display()))?;
                    eprintln!("wrote {} entries to {}", rows.len(), path.display());
                }
                None => print!("{text}"),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Healthcheck { .. } => unreachable!("answered before the AWS configuration"),
        Command::State {
            command: StateCommand::Init,
        } => {
            let state = DynamoState::new(&config, &cli.global.table);
            let created = state.ensure_table().await?;
            println!(
                "table {} {}",
                cli.global.table,
                if created { "created" } else { "already exists" }
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn run_worker(
    config: &aws_config::SdkConfig,
    table: &str,
    args: WorkerArgs,
) -> anyhow::Result<ExitCode> {
    use registrar_core::backoff::Backoff;
    use registrar_ingest::event::ParseOptions;
    use registrar_ingest::sqs::Queue;

    let ctx = args.policy.plan_context(false, args.registry.identity())?;
    if ctx.identity.is_none() {
        tracing::warn!(
            "No --registry-identity (REGISTRAR_REGISTRY_IDENTITY): entries are verified as ours by what they point at only, not by who registered them. Set it to the registered_by the registry records for this service."
        );
    }
    args.validate()?;
    let registry = registry_client(&args.registry)?;
    client_token_check(&args.registry)?;
    // A secret the registry's IdP refuses (the stack's generated placeholder, before the
    // operator fills it in) is said once, clearly, at start-up. The worker keeps running (a stopped
    // task would fail the stack's first deployment and roll it back), and registry calls retry.
    if let Err(e) = registry.check_token().await
        && e.class == registrar_core::ErrorClass::Terminal
    {
        tracing::error!(
            error = %e,
            "The registry token could not be obtained. If REGISTRY_CLIENT_SECRET comes from the stack's <stack>/registry-client-secret, replace its generated placeholder with the client secret the registry's IdP issued, then force a new deployment."
        );
    }
    let secs = Duration::from_secs;
    let scan = args.scope.scan_options();
    let consumer_config = crate::consumer::ConsumerConfig {
        concurrency: args.concurrency.max(1),
        visibility: secs(args.visibility_timeout.max(1)),
        receive_wait: secs(args.receive_wait),
        wait_backoff: Backoff {
            base: secs(args.wait_base.max(1)),
            cap: secs(args.wait_cap.clamp(1, 900)),
        },
        max_wait: secs(args.max_wait),
        retry_backoff: Backoff {
            base: secs(args.retry_base.max(1)),
            cap: secs(args.retry_cap.max(1)),
        },
        shutdown_grace: secs(args.shutdown_grace),
        reconcile_deadline: secs(args.reconcile_deadline),
        parse: ParseOptions {
            include_targets: scan.mcp_targets,
            ..ParseOptions::default()
        },
        reconcile: crate::reconcile::ReconcileOptions {
            derive: scan.derive,
            policy: ctx.policy,
            adopt_legacy: ctx.adopt_legacy,
            identity: ctx.identity,
            enable: args.policy.enable_policy,
            mcp_targets: scan.mcp_targets,
        },
    };
    let queue = Queue::new(
        crate::aws::clients::sqs(config),
        args.queue_url.clone(),
        args.dlq_url.clone(),
    );
    let consumer = crate::consumer::Consumer::new(
        queue,
        args.scope.reach.fleet(config).await?,
        registry,
        DynamoState::new(config, table),
        consumer_config,
    );
    let schedule = crate::service::RescanSchedule {
        at_startup: args.startup_rescan,
        every: secs(args.rescan_interval),
        options: ResyncOptions {
            scan,
            ctx,
            enable: args.policy.enable_policy,
            dry_run: false,
            registry_concurrency: 4,
            deep: false,
        },
    };
    let tokens = if args.token_refresh {
        Some(crate::service::TokenSettings {
            oidc: crate::tokens::oidc::Oidc::new(secs(15), secs(3600))?,
            secrets: crate::tokens::secrets::SecretResolver::from_process_env(
                args.trust.secret_name_pattern.clone(),
                config.clone(),
            ),
            trust: args.trust.policy(
                &regions_read(config, &args.scope.reach.regions),
                Some(&args.registry),
            )?,
            identity: ctx.identity,
            enable: args.policy.enable_policy,
            policy: registrar_core::refresh::RefreshPolicy::default(),
            schedule: crate::tokens::schedule::TokenSchedule {
                check_every: secs(args.token_check_interval.max(1)),
                claim_for: secs(60),
                concurrency: args.token_concurrency,
            },
        })
    } else {
        None
    };
    crate::service::run(
        consumer,
        schedule,
        args.listen,
        tokens,
        (args.emf_interval > 0).then(|| secs(args.emf_interval)),
        tokio_util::sync::CancellationToken::new(),
    )
    .await?;
    Ok(ExitCode::SUCCESS)
}

fn in_words(seconds: i64) -> String {
    match seconds {
        s if s < 0 => format!("{}s ago", -s),
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s => format!("{}h", s / 3600),
    }
}

async fn run_tokens(
    config: &aws_config::SdkConfig,
    table: &str,
    command: TokensCommand,
) -> anyhow::Result<ExitCode> {
    let state = DynamoState::new(config, table);
    let now = registrar_core::ports::Clock::now_s(&crate::clock::SystemClock::new()) as i64;
    match command {
        TokensCommand::Status { output } => {
            let rows = crate::tokens::token_rows(&state).await?;
            match output {
                Output::Json => {
                    let json: Vec<serde_json::Value> = rows
                        .iter()
                        .map(|(m, _, t)| {
                            serde_json::json!({"path": m.path, "arn": m.arn, "idp_vendor": m.idp_vendor.as_str(),
                                "allowed_clients": m.allowed_clients, "token": t})
                        })
                        .collect();
                    println!("{}", serde_json::to_string_pretty(&json)?);
                }
                Output::Text => {
                    println!(
                        "{:<30} {:<9} {:<26} {:<11} {:<12} Last result",
                        "Path", "Vendor", "Client", "Expires in", "Next refresh"
                    );
                    for (m, _, t) in &rows {
                        let client = t
                            .as_ref()
                            .and_then(|t| t.client_id.clone())
                            .or_else(|| m.allowed_clients.first().cloned())
                            .unwrap_or_default();
                        let expires = t
                            .as_ref()
                            .and_then(|t| t.expires_at)
                            .map_or("-".into(), |e| in_words(e as i64 - now));
                        let next = t
                            .as_ref()
                            .map_or("due".into(), |t| in_words(t.next_refresh_at as i64 - now));
                        let last = t
                            .as_ref()
                            .map_or("never refreshed".into(), |t| t.last_result.clone());
                        println!(
                            "{:<30} {:<9} {:<26} {:<11} {:<12} {last}",
                            m.path,
                            m.idp_vendor.as_str(),
                            client,
                            expires,
                            next
                        );
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        TokensCommand::Refresh {
            registry,
            path,
            force,
            trust,
            regions,
            enable_policy,
        } => {
            let client = registry_client(&registry)?;
            client_token_check(&registry)?;
            let oidc =
                crate::tokens::oidc::Oidc::new(Duration::from_secs(15), Duration::from_secs(3600))?;
            let secrets = crate::tokens::secrets::SecretResolver::from_process_env(
                trust.secret_name_pattern.clone(),
                config.clone(),
            );
            let policy = trust.policy(&regions_read(config, &regions), Some(&registry))?;
            let refresher = crate::tokens::Refresher {
                registry: &client,
                state: &state,
                oidc: &oidc,
                secrets: &secrets,
                trust: &policy,
                identity: registry.identity(),
                enable: enable_policy,
                policy: registrar_core::refresh::RefreshPolicy::default(),
                clock: &crate::clock::SystemClock::new(),
            };
            let rows = crate::tokens::token_rows(&state).await?;
            let selected: Vec<_> = rows
                .iter()
                .filter(|(m, _, _)| path.as_ref().is_none_or(|p| &m.path == p))
                .filter(|(_, _, t)| {
                    force
                        || path.is_some()
                        || t.as_ref().is_none_or(|t| t.next_refresh_at as i64 <= now)
                })
                .collect();
            if let Some(p) = &path
                && selected.is_empty()
            {
                anyhow::bail!("no token-manifest row for path {p}");
            }
            let mut failed = 0;
            for (m, resource, token) in selected {
                let done = refresher
                    .refresh(m, token.as_ref(), resource.as_ref())
                    .await;
                match &done.error {
                    None => println!(
                        "{:<30} refreshed, expires in {}{}",
                        done.path,
                        in_words(
                            done.state.expires_at.unwrap_or(0) as i64
                                - registrar_core::ports::Clock::now_s(
                                    &crate::clock::SystemClock::new()
                                ) as i64
                        ),
                        if done.enabled_now { ", enabled" } else { "" }
                    ),
                    Some(e) => {
                        failed += 1;
                        if done.refused.is_some() {
                            println!("{:<30} {e}", done.path);
                        } else {
                            println!("{:<30} FAILED: {e}", done.path);
                        }
                    }
                }
            }
            Ok(if failed > 0 {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            })
        }
    }
}

fn queue(
    config: &aws_config::SdkConfig,
    url: &str,
) -> anyhow::Result<registrar_ingest::sqs::Queue> {
    if !url.starts_with("http://") && !url.starts_with("https://") {
        anyhow::bail!(
            "{url:?} is not a queue URL (https://sqs.<region>.amazonaws.com/<account>/<name>)"
        );
    }
    Ok(registrar_ingest::sqs::Queue::new(
        crate::aws::clients::sqs(config),
        url.to_owned(),
        None,
    ))
}

async fn run_dlq(config: &aws_config::SdkConfig, command: DlqCommand) -> anyhow::Result<ExitCode> {
    use registrar_ingest::dlq;
    let counts = |m: &std::collections::BTreeMap<String, u64>| {
        m.iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let row = |d: &dlq::DeadLetter| {
        format!(
            "  {:<38} {:<28} {:<24} {:<18} age {:>6}s  replays {}",
            d.message_id,
            d.event_name,
            d.resource.as_deref().unwrap_or("-"),
            d.reason_code,
            d.age_seconds.unwrap_or(0),
            d.replay_count
        )
    };
    match command {
        DlqCommand::Inspect {
            dlq_url,
            limit,
            sample,
            output,
        } => {
            let report = dlq::inspect(&queue(config, &dlq_url)?, limit, sample).await?;
            match output {
                Output::Json => println!("{}", serde_json::to_string_pretty(&report)?),
                Output::Text => {
                    println!("Dead-letter queue {dlq_url}");
                    println!(
                        "Messages: {} (read {}), oldest: {}",
                        report.count,
                        report.read,
                        report
                            .oldest_age_seconds
                            .map_or("-".into(), |a| format!("{a}s"))
                    );
                    println!("By event:  {}", counts(&report.by_event));
                    println!("By reason: {}", counts(&report.by_reason));
                    println!("Sample:");
                    for d in &report.sample {
                        println!("{}", row(d));
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        DlqCommand::Replay {
            queue_url,
            dlq_url,
            dry_run,
            max,
            rate,
            filter_event,
            filter_resource,
            output,
        } => {
            let opts = dlq::ReplayOptions {
                dry_run,
                max,
                rate,
                filter_event,
                filter_resource,
            };
            let done = dlq::replay(
                &queue(config, &dlq_url)?,
                &queue(config, &queue_url)?,
                &opts,
            )
            .await?;
            match output {
                Output::Json => println!("{}", serde_json::to_string_pretty(&done)?),
                Output::Text => {
                    let verb = if done.dry_run { "would move" } else { "moved" };
                    match &done.task_handle {
                        Some(h) => println!("Started SQS message move task {h} (all messages)."),
                        None => println!(
                            "{} {} message(s) ({} mode); {} left in the DLQ",
                            verb,
                            done.moved.len(),
                            done.mode,
                            done.left
                        ),
                    }
                    for d in &done.moved {
                        println!("{}", row(d));
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// One GET with a short timeout: 0 on 200, 1 otherwise (with the reason on stderr).
async fn healthcheck(url: &str) -> ExitCode {
    let answer = async {
        reqwest::Client::builder()
            .timeout(Duration::from_secs(3))
            .build()?
            .get(url)
            .send()
            .await
    };
    match answer.await {
        Ok(r) if r.status().is_success() => ExitCode::SUCCESS,
        Ok(r) => {
            eprintln!("unhealthy: {url} answered {}", r.status());
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("unhealthy: {url}: {e}");
            ExitCode::from(1)
        }
    }
}

/// Fails fast, naming the file, when the registry token cannot be read.
fn client_token_check(args: &RegistryArgs) -> anyhow::Result<()> {
    if args.registry_token_discovery_url.is_none() {
        TokenFile::new(&args.token_file)
            .allow_shared(args.allow_shared_token_file)
            .token()?;
    }
    Ok(())
}
