//! `registrar resync`: scan AgentCore, then register, update and deregister registry entries to
//! match; print the report.

use std::process::ExitCode;
use std::sync::Arc;

use clap::Args;

use super::args::{PolicyArgs, RegistryArgs, ScopeArgs};
use super::compose::Root;
use super::show::{self, Ticker};
use crate::resync::scan::Progress;
use crate::resync::{ResyncOptions, resync};

#[derive(Debug, Args)]
pub struct ResyncArgs {
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
}

/// Exit 1 when an entry failed or the resync was aborted before any change.
pub(crate) async fn run(root: &Root, args: ResyncArgs) -> anyhow::Result<ExitCode> {
    let ctx = args
        .policy
        .plan_context(args.force, args.registry.identity());
    let client = root.registry(&args.registry)?;
    let agentcore = root.fleet(&args.scope.reach).await?;
    let state = root.state();
    let opts = ResyncOptions {
        scan: args.scope.scan_options(),
        ctx,
        enable: args.policy.enable_policy,
        dry_run: args.dry_run,
        registry_concurrency: args.registry_concurrency,
        deep: args.deep,
    };
    let progress = Arc::new(Progress::default());
    let ticker = Ticker::start(progress.clone());
    let result = resync(&agentcore, &client, &state, opts, &progress).await;
    ticker.stop();
    match result {
        Ok(report) => Ok(show::report(&report, args.scope.output)),
        Err(e) => {
            eprintln!("error: resync aborted before any change: {e} ({})", e.class);
            Ok(ExitCode::from(1))
        }
    }
}
