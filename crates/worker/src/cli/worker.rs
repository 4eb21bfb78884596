//! `registrar worker`: the deployed job. Consumes AgentCore events from SQS and reconciles each
//! named resource, rescans on a timer, refreshes egress tokens, serves /healthz, /readyz and
//! /metrics.

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use registrar_core::backoff::Backoff;
use registrar_core::plan::PlanContext;
use registrar_ingest::event::ParseOptions;

use super::args::{PolicyArgs, RegistryArgs, ScopeArgs, TrustArgs};
use super::compose::{self, Root};
use super::parse::{QueueUrl, at_least, at_most, within};
use crate::consumer::{Consumer, ConsumerConfig};
use crate::engine::ReconcileOptions;
use crate::registry::RegistryClient;
use crate::rescan::RescanSchedule;
use crate::resync::ResyncOptions;
use crate::resync::scan::ScanOptions;
use crate::service::TokenSettings;

#[derive(Debug, Args)]
pub struct WorkerArgs {
    #[command(flatten)]
    pub(crate) registry: RegistryArgs,
    #[command(flatten)]
    pub(crate) scope: ScopeArgs,
    /// SQS queue the EventBridge rule fills.
    #[arg(long, env = "REGISTRAR_QUEUE_URL", value_parser = QueueUrl)]
    pub(crate) queue_url: String,
    /// Its dead-letter queue (poison messages are sent there at once, with the reason).
    #[arg(long, env = "REGISTRAR_DLQ_URL", value_parser = QueueUrl)]
    pub(crate) dlq_url: Option<String>,
    /// Address of /healthz, /readyz and /metrics.
    #[arg(long, env = "REGISTRAR_LISTEN")]
    pub(crate) listen: Option<std::net::SocketAddr>,
    /// Messages processed at once (at least 1).
    #[arg(long, env = "REGISTRAR_CONCURRENCY", default_value_t = 16, value_parser = at_least::<usize>(1))]
    pub(crate) concurrency: usize,
    /// Seconds a received message stays hidden; renewed by a heartbeat while it is processed
    /// (1..=43200, the SQS limit).
    #[arg(long, env = "REGISTRAR_VISIBILITY_TIMEOUT", default_value_t = 60, value_parser = within::<u64>(1..=43_200).seconds().because("the SQS limit"))]
    pub(crate) visibility_timeout: u64,
    /// Seconds of the first re-check of a resource still CREATING/UPDATING (then doubling; at
    /// least 1).
    #[arg(long, env = "REGISTRAR_WAIT_BASE", default_value_t = 10, value_parser = at_least::<u64>(1).seconds())]
    pub(crate) wait_base: u64,
    /// Longest re-check delay, seconds (--wait-base..=900: SQS allows 900 at most).
    #[arg(long, env = "REGISTRAR_WAIT_CAP", default_value_t = 300, value_parser = within::<u64>(1..=900).seconds().because("the SQS delay limit"))]
    pub(crate) wait_cap: u64,
    /// Seconds after which a resource still not READY is given up (dead-lettered; at least
    /// --wait-base).
    #[arg(long, env = "REGISTRAR_MAX_WAIT", default_value_t = 3600)]
    pub(crate) max_wait: u64,
    /// Seconds of the first retry of a transient failure (then doubling, per key; at least 1).
    #[arg(long, env = "REGISTRAR_RETRY_BASE", default_value_t = 5, value_parser = at_least::<u64>(1).seconds())]
    pub(crate) retry_base: u64,
    /// Longest retry delay, seconds (at least --retry-base).
    #[arg(long, env = "REGISTRAR_RETRY_CAP", default_value_t = 300)]
    pub(crate) retry_cap: u64,
    /// Seconds in-flight work may take to finish after SIGTERM before it is released.
    #[arg(long, env = "REGISTRAR_SHUTDOWN_GRACE", default_value_t = 25)]
    pub(crate) shutdown_grace: u64,
    /// Seconds between CloudWatch embedded-metric-format lines on stderr; 0 writes none (the
    /// stack sets 60).
    #[arg(long, env = "REGISTRAR_EMF_INTERVAL", default_value_t = 0)]
    pub(crate) emf_interval: u64,
    /// Seconds one key's reconcile may take, whatever it waits on; then it fails (transient;
    /// 1..=3600).
    #[arg(long, env = "REGISTRAR_RECONCILE_DEADLINE", default_value_t = 300, value_parser = within::<u64>(1..=3600).seconds())]
    pub(crate) reconcile_deadline: u64,
    /// Long-poll wait of one receive, seconds (0..=20).
    #[arg(long, env = "REGISTRAR_RECEIVE_WAIT", default_value_t = 20, value_parser = at_most::<u64>(20).seconds())]
    pub(crate) receive_wait: u64,
    /// Run a full rescan at start-up (/readyz turns ready when it is done).
    #[arg(long, env = "REGISTRAR_STARTUP_RESCAN", default_value_t = true, action = clap::ArgAction::Set)]
    pub(crate) startup_rescan: bool,
    /// Seconds between periodic rescans (jittered by 10%); 0 turns them off, else at least 10.
    #[arg(long, env = "REGISTRAR_RESCAN_INTERVAL", default_value_t = 3600, value_parser = at_least::<u64>(10).seconds().or_off())]
    pub(crate) rescan_interval: u64,
    #[command(flatten)]
    pub(crate) policy: PolicyArgs,
    /// Refresh the egress tokens of CUSTOM_JWT entries.
    #[arg(long, env = "REGISTRAR_TOKEN_REFRESH", default_value_t = true, action = clap::ArgAction::Set)]
    pub(crate) token_refresh: bool,
    /// Longest pause between looks for tokens due, seconds (at least 1).
    #[arg(long, env = "REGISTRAR_TOKEN_CHECK_INTERVAL", default_value_t = 15, value_parser = at_least::<u64>(1).seconds())]
    pub(crate) token_check_interval: u64,
    /// Token refreshes at once (IdP requests in flight); raise it for many short-lived tokens
    /// (at least 1).
    #[arg(long, env = "REGISTRAR_TOKEN_CONCURRENCY", default_value_t = 16, value_parser = at_least::<usize>(1))]
    pub(crate) token_concurrency: usize,
    #[command(flatten)]
    pub(crate) trust: TrustArgs,
}

/// Runs until SIGTERM/SIGINT; settings that disagree are refused before anything starts.
pub(crate) async fn run(root: &Root, args: WorkerArgs) -> anyhow::Result<ExitCode> {
    let ctx = args.policy.plan_context(false, args.registry.identity());
    if ctx.identity.is_none() {
        tracing::warn!(
            "No --registry-identity (REGISTRAR_REGISTRY_IDENTITY): entries are verified as ours by what they point at only, not by who registered them. Set it to the registered_by the registry records for this service."
        );
    }
    compose::worker_settings_agree(&args)?;
    let registry = root.registry(&args.registry)?;
    say_if_registry_token_refused(&registry).await;
    let scan = args.scope.scan_options();
    let fleet = root.fleet(&args.scope.reach).await?;
    for (region, e) in fleet.learn_accounts().await {
        tracing::warn!(region, error = %e, "Could not learn which account a member reads; events for it will ask again.");
    }
    let consumer = Consumer::new(
        root.worker_queue(&args.queue_url, args.dlq_url.as_deref()),
        fleet,
        registry,
        root.state(),
        consumer_config(&args, &ctx, &scan),
    );
    let schedule = RescanSchedule {
        at_startup: args.startup_rescan,
        every: Duration::from_secs(args.rescan_interval),
        options: ResyncOptions {
            scan,
            ctx,
            enable: args.policy.enable_policy,
            dry_run: false,
            registry_concurrency: 4,
            deep: false,
        },
    };
    if scan.mcp_targets {
        backfill_target_pointers(root).await;
    }
    let tokens = if args.token_refresh {
        backfill_token_index(root).await;
        Some(token_settings(root, &args, &ctx)?)
    } else {
        None
    };
    crate::service::run(
        consumer,
        schedule,
        args.listen,
        tokens,
        (args.emf_interval > 0).then(|| Duration::from_secs(args.emf_interval)),
        tokio_util::sync::CancellationToken::new(),
    )
    .await?;
    Ok(ExitCode::SUCCESS)
}

/// Indexes token items written before the due index existed (once per table; later starts read
/// one marker item). A failure is said and the worker goes on: tokens it could not index are
/// refreshed once their next write indexes them, and the next start tries again.
async fn backfill_token_index(root: &Root) {
    match root.state().backfill_token_index().await {
        Ok(None) => {}
        Ok(Some(indexed)) => {
            tracing::info!(
                indexed,
                "Token items indexed for the token loop (once per table)."
            );
        }
        Err(e) => tracing::warn!(
            error = %e,
            "Token items written before this version could not be indexed; the next start tries again. Does the table have the due-tokens index (update the stack)?"
        ),
    }
}

/// Gives target records written before this version the pointer under their gateway's key
/// that a deleted gateway's cascade finds them by (once per table; later starts read one marker
/// item). A failure is said and the worker goes on: until a start succeeds, the targets of a
/// deleted gateway recorded before the upgrade are deregistered by the next rescan, as before.
async fn backfill_target_pointers(root: &Root) {
    match root.state().backfill_target_pointers().await {
        Ok(None) => {}
        Ok(Some(written)) => {
            tracing::info!(
                written,
                "Target records given their pointer under their gateway (once per table)."
            );
        }
        Err(e) => tracing::warn!(
            error = %e,
            "Target records written before this version could not be given their pointer under their gateway; the next start tries again."
        ),
    }
}

/// A secret the registry's IdP refuses (the stack's generated placeholder, before the operator
/// fills it in) is said once, clearly, at start-up. The worker keeps running (a stopped task
/// would fail the stack's first deployment and roll it back), and registry calls retry.
async fn say_if_registry_token_refused(registry: &RegistryClient) {
    if let Err(e) = registry.check_token().await
        && e.class == registrar_core::ErrorClass::Terminal
    {
        tracing::error!(
            error = %e,
            "The registry token could not be obtained. If REGISTRY_CLIENT_SECRET comes from the stack's <stack>/registry-client-secret, replace its generated placeholder with the client secret the registry's IdP issued, then force a new deployment."
        );
    }
}

/// How messages are received, waited on, retried and reconciled.
fn consumer_config(args: &WorkerArgs, ctx: &PlanContext, scan: &ScanOptions) -> ConsumerConfig {
    let secs = Duration::from_secs;
    ConsumerConfig {
        concurrency: args.concurrency,
        visibility: secs(args.visibility_timeout),
        receive_wait: secs(args.receive_wait),
        wait_backoff: Backoff {
            base: secs(args.wait_base),
            cap: secs(args.wait_cap),
        },
        max_wait: secs(args.max_wait),
        retry_backoff: Backoff {
            base: secs(args.retry_base),
            cap: secs(args.retry_cap),
        },
        shutdown_grace: secs(args.shutdown_grace),
        reconcile_deadline: secs(args.reconcile_deadline),
        parse: ParseOptions {
            include_targets: scan.mcp_targets,
            ..ParseOptions::default()
        },
        reconcile: ReconcileOptions {
            derive: scan.derive,
            policy: ctx.policy,
            adopt_legacy: ctx.adopt_legacy,
            identity: ctx.identity,
            enable: args.policy.enable_policy,
            mcp_targets: scan.mcp_targets,
        },
    }
}

/// The token loop: its machinery from the composition root, its pace from the flags.
fn token_settings(
    root: &Root,
    args: &WorkerArgs,
    ctx: &PlanContext,
) -> anyhow::Result<TokenSettings> {
    let machinery = root.token_machinery(&args.trust, &args.scope.reach.regions, &args.registry)?;
    Ok(TokenSettings {
        oidc: machinery.oidc,
        secrets: machinery.secrets,
        trust: machinery.trust,
        identity: ctx.identity,
        enable: args.policy.enable_policy,
        policy: registrar_core::refresh::RefreshPolicy::default(),
        schedule: crate::tokens::schedule::TokenSchedule {
            check_every: Duration::from_secs(args.token_check_interval),
            claim_for: crate::tokens::schedule::CLAIM_FOR,
            concurrency: args.token_concurrency,
        },
    })
}
