//! `registrar manifest export`: the Python tool's `token_refresh_manifest.json`, written only
//! with rows whose IdP the worker trusts.

use std::collections::BTreeSet;
use std::process::ExitCode;

use clap::Subcommand;
use registrar_core::ports::{ResourceStore, TokenStore};
use registrar_core::tokens::ManifestFields;
use registrar_core::trust::{SecretBinding, TrustPolicy};

use super::args::TrustArgs;
use super::compose::Root;

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

pub(crate) async fn run(root: &Root, command: ManifestCommand) -> anyhow::Result<ExitCode> {
    let ManifestCommand::Export {
        out,
        trust,
        regions,
    } = command;
    let state = root.state();
    let (rows, resources) = futures::try_join!(state.manifests(), state.resources())?;
    let servers: BTreeSet<String> = resources
        .iter()
        .filter(|r| r.collection == registrar_core::desired::Collection::Server)
        .map(|r| r.resource.arn.clone())
        .collect();
    let policy = root.trust(&trust, &regions, None)?;
    let mut rows_out = Vec::new();
    for m in rows.into_iter().filter(|m| servers.contains(&m.arn)) {
        match refusal(&policy, &m) {
            None => rows_out.push(m),
            Some(why) => eprintln!("left out {}: {why}", m.path),
        }
    }
    let text =
        serde_json::to_string_pretty(&registrar_core::tokens::python_manifest(&rows_out))? + "\n";
    match out {
        Some(path) => {
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, &text)
                .map_err(|e| anyhow::anyhow!("writing {}: {e}", tmp.display()))?;
            std::fs::rename(&tmp, &path)
                .map_err(|e| anyhow::anyhow!("renaming to {}: {e}", path.display()))?;
            eprintln!("wrote {} entries to {}", rows_out.len(), path.display());
        }
        None => print!("{text}"),
    }
    Ok(ExitCode::SUCCESS)
}

/// Why a row is left out, if it is. The Python refresher sends an environment secret of the
/// first allowed client to whatever token endpoint discovery names: export only rows the worker
/// would serve.
fn refusal(policy: &TrustPolicy, m: &ManifestFields) -> Option<String> {
    let issuer = match policy.issuer_of(&m.discovery_url, &m.allowed_clients) {
        Ok(i) => i,
        Err(e) => return Some(e.to_string()),
    };
    let client = m.allowed_clients.first()?;
    if let Err(why) = crate::tokens::secrets::check_client_id(client) {
        return Some(why);
    }
    // A listed issuer gets the environment's (unbound) secret; a Cognito pool trusted by
    // default, the secret Cognito holds for its own client.
    let binding = match (&issuer.cognito, issuer.configured) {
        (Some(pool), false) => SecretBinding::CognitoPool(pool.clone()),
        _ => SecretBinding::Unbound,
    };
    policy
        .may_send(&issuer, client, "the Python refresher's secret", &binding)
        .err()
        .map(|e| e.to_string())
}
