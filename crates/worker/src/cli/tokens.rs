//! `registrar tokens status|refresh`: the egress tokens of CUSTOM_JWT entries, shown, or
//! refreshed now.

use std::process::ExitCode;

use clap::Subcommand;
use registrar_core::enable::EnablePolicy;

use super::Output;
use super::args::{RegistryArgs, TrustArgs};
use super::compose::Root;
use super::parse;
use registrar_core::ports::Clock;

use crate::tokens::{Refreshed, TokenRows, schedule, token_rows};

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
        #[arg(long, env = "REGISTRAR_ENABLE_POLICY", default_value = "authenticated", value_parser = parse::enable)]
        enable_policy: EnablePolicy,
    },
}

pub(crate) async fn run(root: &Root, command: TokensCommand) -> anyhow::Result<ExitCode> {
    match command {
        TokensCommand::Status { output } => status(root, output).await,
        TokensCommand::Refresh {
            registry,
            path,
            force,
            trust,
            regions,
            enable_policy,
        } => {
            let chosen = Chosen { path, force };
            refresh(root, &registry, &trust, &regions, enable_policy, chosen).await
        }
    }
}

async fn status(root: &Root, output: Output) -> anyhow::Result<ExitCode> {
    let rows = token_rows(&root.state()).await?;
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
        Output::Text => status_table(&rows, root.clock().now_s() as i64),
    }
    Ok(ExitCode::SUCCESS)
}

fn status_table(rows: &TokenRows, now: i64) {
    println!(
        "{:<30} {:<9} {:<26} {:<11} {:<12} Last result",
        "Path", "Vendor", "Client", "Expires in", "Next refresh"
    );
    for (m, _, t) in rows {
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

/// Which rows a refresh takes: one path, every row (`force`), or the rows that are due.
#[derive(Debug)]
struct Chosen {
    path: Option<String>,
    force: bool,
}

/// Exit 1 when a refresh failed or was refused.
async fn refresh(
    root: &Root,
    registry: &RegistryArgs,
    trust: &TrustArgs,
    regions: &[String],
    enable: EnablePolicy,
    chosen: Chosen,
) -> anyhow::Result<ExitCode> {
    let clock = root.clock();
    let now = clock.now_s() as i64;
    let state = root.state();
    let client = root.registry(registry)?;
    let machinery = root.token_machinery(trust, regions, registry)?;
    let refresher = crate::tokens::Refresher {
        registry: &client,
        state: &state,
        oidc: &machinery.oidc,
        secrets: &machinery.secrets,
        trust: &machinery.trust,
        identity: registry.identity(),
        enable,
        policy: registrar_core::refresh::RefreshPolicy::default(),
        clock: &*clock,
    };
    // Tokens recorded before the due index existed, should no worker have indexed them yet.
    if let Err(e) = state.backfill_token_index().await {
        tracing::warn!(error = %e, "Token items written before this version could not be indexed.");
    }
    let rows = token_rows(&state).await?;
    let selected: Vec<_> = rows
        .iter()
        .filter(|(m, _, _)| chosen.path.as_ref().is_none_or(|p| &m.path == p))
        .filter(|(_, _, t)| {
            chosen.force
                || chosen.path.is_some()
                || t.as_ref().is_none_or(|t| t.next_refresh_at as i64 <= now)
        })
        .collect();
    if let Some(p) = &chosen.path
        && selected.is_empty()
    {
        anyhow::bail!("no token-manifest row for path {p}");
    }
    // As long as the worker's loop gives one refresh.
    let deadline = schedule::refresh_deadline(schedule::CLAIM_FOR);
    let mut failed = 0;
    for (m, resource, token) in selected {
        let done = refresher
            .refresh(m, token.as_ref(), resource.as_ref(), deadline)
            .await;
        failed += usize::from(print_refreshed(&done, clock.now_s() as i64));
    }
    Ok(if failed > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// One line per refresh; true when it failed or was refused.
fn print_refreshed(done: &Refreshed, now: i64) -> bool {
    match &done.error {
        None => {
            println!(
                "{:<30} refreshed, expires in {}{}",
                done.path,
                in_words(done.state.expires_at.unwrap_or(0) as i64 - now),
                if done.enabled_now { ", enabled" } else { "" }
            );
            false
        }
        Some(e) if done.refused.is_some() => {
            println!("{:<30} {e}", done.path);
            true
        }
        Some(e) => {
            println!("{:<30} FAILED: {e}", done.path);
            true
        }
    }
}

fn in_words(seconds: i64) -> String {
    match seconds {
        s if s < 0 => format!("{}s ago", -s),
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s => format!("{}h", s / 3600),
    }
}
