//! `registrar list`: discover AgentCore resources and print their registry paths; register
//! nothing.

use std::process::ExitCode;
use std::sync::Arc;

use super::args::ScopeArgs;
use super::compose::Root;
use super::show::{self, Ticker};
use crate::resync::report::{Outcome, Report, Status};
use crate::resync::scan::{Discovered, Known, Progress, scan_fleet};

/// Exit 1 when a list failed.
pub(crate) async fn run(root: &Root, scope: ScopeArgs) -> anyhow::Result<ExitCode> {
    let agentcore = root.fleet(&scope.reach).await?;
    let progress = Arc::new(Progress::default());
    let ticker = Ticker::start(progress.clone());
    let scanned = scan_fleet(
        &agentcore,
        scope.scan_options(),
        &Known::default(),
        &progress,
    )
    .await;
    ticker.stop();
    let rows = scanned.discovered.iter().map(row).collect();
    let errors: Vec<String> = scanned.errors.iter().map(ToString::to_string).collect();
    let report = Report::new(true, rows, errors, 0, 0);
    Ok(show::report(&report, scope.output))
}

/// A discovered resource as a report row: skipped, ready to register, or still waiting.
fn row(d: &Discovered) -> Outcome {
    let (status, message) = match (&d.unregistrable, d.lifecycle.as_str()) {
        (Some(reason), _) => (Status::Skipped, reason.clone()),
        (None, "READY") => (Status::DryRun, "ready to register".to_owned()),
        (None, other) => (Status::Waiting, format!("AgentCore status {other}")),
    };
    let mut o = Outcome::for_kind(d.kind, &d.name, &d.arn, &d.path, status, message);
    o.auth_type = d.auth.clone();
    o
}
