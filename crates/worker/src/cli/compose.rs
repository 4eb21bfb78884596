//! The composition root: every client a command uses is built here, from the parsed flags: the
//! AWS configuration, the AgentCore fleet, the registry client and its token, the state store,
//! the queues, and the token machinery (IdP client, secret resolver, trust policy). Checks that
//! span several flags live here too; a single flag's range lives on the flag.

use std::time::Duration;

use registrar_core::reach::{ReachRequest, is_region_code};
use registrar_core::trust::{COGNITO_ISSUER_BASE, DISCOVERY_SUFFIX, TrustConfig, TrustPolicy};
use secrecy::{ExposeSecret, SecretString};

use super::Global;
use super::args::{ReachArgs, RegistryArgs, TrustArgs};
use super::worker::WorkerArgs;
use crate::aws::agentcore::AgentCoreAws;
use crate::aws::clients::Principal;
use crate::aws::fleet::Fleet;
use crate::aws::state::DynamoState;
use crate::net::oauth::Oidc;
use crate::pace::Paced;
use crate::registry::token::{ClientCredentialsToken, TokenFile, TokenSource};
use crate::registry::{RegistryClient, RetryPolicy, check_registry_url};
use crate::tokens::secrets::SecretResolver;
use registrar_ingest::sqs::Queue;

/// Timeout of one IdP request, and how long a discovery document is cached.
const OIDC_TIMEOUT: Duration = Duration::from_secs(15);
const OIDC_CACHE: Duration = Duration::from_secs(3600);

/// The AWS configuration (its home region checked) and the state table every AWS-backed command
/// starts from.
#[derive(Debug)]
pub struct Root {
    config: aws_config::SdkConfig,
    table: String,
    clock: std::sync::Arc<crate::clock::SystemClock>,
}

/// What refreshes egress tokens: the IdP client, where secrets are read, where they may go.
#[derive(Debug)]
pub(crate) struct TokenMachinery {
    pub oidc: Oidc,
    pub secrets: SecretResolver,
    pub trust: TrustPolicy,
}

impl Root {
    /// Loads the SDK configuration as `principal`; no region, or one that is not a region code,
    /// is refused.
    pub(crate) async fn load(global: &Global, principal: Principal) -> anyhow::Result<Self> {
        crate::aws::clients::set_principal(principal);
        let config = crate::aws::load_config(global.region.as_deref()).await;
        match config.region() {
            None => anyhow::bail!("no AWS region: set AWS_REGION or pass --region"),
            Some(r) if !is_region_code(r.as_ref()) => anyhow::bail!(
                "unknown AWS region {:?}: expected a region code such as us-east-1 or eu-west-2",
                r.as_ref()
            ),
            Some(_) => {}
        }
        Ok(Self {
            config,
            table: global.table.clone(),
            clock: std::sync::Arc::default(),
        })
    }

    pub(crate) fn config(&self) -> &aws_config::SdkConfig {
        &self.config
    }

    pub(crate) fn table(&self) -> &str {
        &self.table
    }

    /// The DynamoDB state store.
    /// The one clock every command reads time from.
    pub(crate) fn clock(&self) -> std::sync::Arc<crate::clock::SystemClock> {
        std::sync::Arc::clone(&self.clock)
    }

    pub(crate) fn state(&self) -> DynamoState {
        DynamoState::new(&self.config, &self.table)
    }

    /// The AgentCore fleet: every account and region `reach` names.
    pub(crate) async fn fleet(
        &self,
        reach: &ReachArgs,
    ) -> anyhow::Result<Fleet<Paced<AgentCoreAws>>> {
        fleet(&self.config, reach).await
    }

    /// The registry client; fails fast, naming the file, when its token file cannot be read.
    pub(crate) fn registry(&self, args: &RegistryArgs) -> anyhow::Result<RegistryClient> {
        let client = registry_client(args)?;
        token_file_readable(args)?;
        Ok(client)
    }

    /// The trust policy for the home region and `regions`.
    pub(crate) fn trust(
        &self,
        trust: &TrustArgs,
        regions: &[String],
        registry: Option<&RegistryArgs>,
    ) -> anyhow::Result<TrustPolicy> {
        trust_policy(trust, &regions_read(&self.config, regions), registry)
    }

    /// The IdP client, the secret resolver and the trust policy, for refreshing egress tokens.
    pub(crate) fn token_machinery(
        &self,
        trust: &TrustArgs,
        regions: &[String],
        registry: &RegistryArgs,
    ) -> anyhow::Result<TokenMachinery> {
        Ok(TokenMachinery {
            oidc: Oidc::new(OIDC_TIMEOUT, OIDC_CACHE, self.clock())?,
            secrets: SecretResolver::from_process_env(
                trust.secret_name_pattern.clone(),
                self.config.clone(),
            ),
            trust: self.trust(trust, regions, Some(registry))?,
        })
    }

    /// One SQS queue (the flag checked its URL).
    pub(crate) fn queue(&self, url: &str) -> Queue {
        Queue::new(crate::aws::clients::sqs(&self.config), url.to_owned(), None)
    }

    /// The worker's queue, with the dead-letter queue poison messages go to.
    pub(crate) fn worker_queue(&self, url: &str, dlq_url: Option<&str>) -> Queue {
        Queue::new(
            crate::aws::clients::sqs(&self.config),
            url.to_owned(),
            dlq_url.map(str::to_owned),
        )
    }
}

/// The client a container health check uses: one short timeout, no AWS configuration.
pub(crate) fn health_client() -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()
}

/// The worker's settings that depend on each other, all at once, each named by its flag and
/// variable.
pub(crate) fn worker_settings_agree(args: &WorkerArgs) -> anyhow::Result<()> {
    let mut wrong = Vec::new();
    let mut check = |ok: bool, flag: &str, var: &str, rule: &str, got: String| {
        if !ok {
            wrong.push(format!("--{flag} ({var}) {rule}, got {got}"));
        }
    };
    check(
        args.wait_cap >= args.wait_base,
        "wait-cap",
        "REGISTRAR_WAIT_CAP",
        "must be between --wait-base and 900 seconds (the SQS delay limit)",
        args.wait_cap.to_string(),
    );
    check(
        args.retry_cap >= args.retry_base,
        "retry-cap",
        "REGISTRAR_RETRY_CAP",
        "must be at least --retry-base",
        args.retry_cap.to_string(),
    );
    check(
        args.max_wait >= args.wait_base,
        "max-wait",
        "REGISTRAR_MAX_WAIT",
        "must be at least --wait-base",
        args.max_wait.to_string(),
    );
    check(
        args.trust.pattern_has_prefix(),
        "secret-name-pattern",
        "REGISTRAR_SECRET_NAME_PATTERN",
        TrustArgs::PATTERN_RULE,
        format!("{:?}", args.trust.secret_name_pattern),
    );
    match wrong.len() {
        0 => Ok(()),
        1 => anyhow::bail!("{}", wrong[0]),
        n => anyhow::bail!("{n} settings are wrong:\n  {}", wrong.join("\n  ")),
    }
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

/// Every account and region to read, validated (an account outside the allowlist is an error,
/// not a skip).
pub(crate) async fn fleet(
    config: &aws_config::SdkConfig,
    reach: &ReachArgs,
) -> anyhow::Result<Fleet<Paced<AgentCoreAws>>> {
    let home_region = config.region().map(ToString::to_string).unwrap_or_default();
    let external_id = secret_input(
        "REGISTRAR_MEMBER_EXTERNAL_ID",
        reach.member_external_id_file.as_deref(),
        "member-external-id-file",
    )?;
    let fleet = crate::aws::fleet::build(
        config,
        ReachRequest {
            home_region: &home_region,
            regions: &reach.regions,
            member_accounts: &reach.member_accounts,
            allowed_accounts: &reach.allowed_accounts,
        },
        &reach.member_role_name,
        external_id.as_ref().map(ExposeSecret::expose_secret),
        reach.pace.rates(),
        std::sync::Arc::new(crate::clock::SystemClock::new()),
    )
    .await?;
    let rates = reach.pace.rates();
    tracing::info!(
        regions = ?reach.regions,
        members = ?reach.member_accounts,
        scopes = fleet.members().len(),
        gateway_reads_per_s = rates.gateway_reads,
        runtime_reads_per_s = rates.runtime_reads,
        list_pages_per_s = rates.lists,
        "Reading AgentCore in these accounts and regions, paced per account and region."
    );
    Ok(fleet)
}

/// The trust policy; Cognito pools are trusted in `regions` (those the worker reads). The
/// registry's own client never gets an egress token, and its IdP serves egress only when listed.
pub(crate) fn trust_policy(
    trust: &TrustArgs,
    regions: &[String],
    registry: Option<&RegistryArgs>,
) -> anyhow::Result<TrustPolicy> {
    if !trust.pattern_has_prefix() {
        anyhow::bail!(
            "--secret-name-pattern (REGISTRAR_SECRET_NAME_PATTERN) {}, got {:?}",
            TrustArgs::PATTERN_RULE,
            trust.secret_name_pattern
        );
    }
    // Also from the environment, so a process that reads a token file (or `manifest export`,
    // which has no registry) still knows the registry's own client and IdP.
    let from_env = |var: &str| std::env::var(var).ok().filter(|v| !v.trim().is_empty());
    let registry_url = registry
        .and_then(|r| r.registry_token_discovery_url.clone())
        .or_else(|| from_env("REGISTRY_TOKEN_DISCOVERY_URL"));
    let registry_client = registry
        .and_then(|r| r.registry_client_id.clone())
        .or_else(|| from_env("REGISTRY_CLIENT_ID"));
    let registry_issuer = registry_url
        .as_deref()
        .and_then(|u| u.trim().strip_suffix(DISCOVERY_SUFFIX));
    TrustPolicy::new(&TrustConfig {
        trusted: &trust.trusted_issuers,
        token_hosts: &trust.trusted_token_hosts,
        cognito_regions: regions,
        cognito_issuer_base: &trust.cognito_issuer_base,
        cognito_pools: &trust.trusted_cognito_pools,
        client_issuers: &trust.client_issuers,
        registry_client: registry_client.as_deref(),
        registry_issuer,
    })
    .map_err(|e| anyhow::anyhow!("{e}"))
}

/// The registry client: its URL checked, its token from the file or from the registry's IdP.
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
        Some(url) => registry_client_credentials(args, url)?,
    };
    Ok(RegistryClient::new(
        base,
        token,
        Duration::from_secs(args.registry_timeout),
        retry,
    )?)
}

/// The registry token by client_credentials from the IdP the operator named.
fn registry_client_credentials(args: &RegistryArgs, url: &str) -> anyhow::Result<TokenSource> {
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
    let oidc = Oidc::new(
        OIDC_TIMEOUT,
        OIDC_CACHE,
        std::sync::Arc::new(crate::clock::SystemClock::new()),
    )?;
    let trust = registry_idp_trust(url)?;
    let trusted = trust
        .issuer_of(url, std::slice::from_ref(client_id))
        .map_err(|e| anyhow::anyhow!("--registry-token-discovery-url: {e}"))?;
    Ok(TokenSource::ClientCredentials(Box::new(
        ClientCredentialsToken::new(
            oidc,
            trust,
            trusted,
            client_id.clone(),
            secret,
            registrar_core::refresh::TokenRequest {
                scope: args.registry_token_scope.clone(),
                audience: None,
            },
        ),
    )))
}

/// The operator named this IdP: it is trusted for the registry's client alone.
fn registry_idp_trust(url: &str) -> anyhow::Result<TrustPolicy> {
    let issuer = url.trim().strip_suffix(DISCOVERY_SUFFIX).ok_or_else(|| {
        anyhow::anyhow!(
            "--registry-token-discovery-url (REGISTRY_TOKEN_DISCOVERY_URL) {url:?} must end in {DISCOVERY_SUFFIX}"
        )
    })?;
    // Checked here, so that the error names this flag (the policy below would name its own).
    registrar_core::outbound::check_outbound_url(issuer, false).map_err(|e| {
        anyhow::anyhow!("--registry-token-discovery-url (REGISTRY_TOKEN_DISCOVERY_URL): {e}")
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
    TrustPolicy::new(&TrustConfig {
        trusted: &[issuer.to_owned()],
        cognito_regions: &cognito_region,
        cognito_issuer_base: COGNITO_ISSUER_BASE,
        ..TrustConfig::default()
    })
    .map_err(|e| anyhow::anyhow!("--registry-token-discovery-url: {e}"))
}

/// Fails fast, naming the file, when the registry token cannot be read.
fn token_file_readable(args: &RegistryArgs) -> anyhow::Result<()> {
    if args.registry_token_discovery_url.is_none() {
        TokenFile::new(&args.token_file)
            .allow_shared(args.allow_shared_token_file)
            .token()?;
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_http_registry_idp_is_refused_naming_its_own_flag() {
        let e = registry_idp_trust("http://idp.example/.well-known/openid-configuration")
            .expect_err("plain http to a remote IdP");
        let text = e.to_string();
        assert!(text.contains("--registry-token-discovery-url"), "{text}");
        assert!(!text.contains("--trusted-issuers"), "{text}");
        assert!(!text.contains("--allow-insecure-registry"), "{text}");
        registry_idp_trust("http://127.0.0.1:8080/.well-known/openid-configuration")
            .expect("loopback http is allowed");
    }
}
