//! The `oidc-provider` IdP (tests/idp/idp.mjs) as a child process on 127.0.0.1, killed when
//! dropped. `scripts/peers.sh install` puts its node_modules in `.peers/idp`.

use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::moto::workspace_root;

/// A running IdP with one client_credentials client.
#[derive(Debug)]
pub struct Idp {
    pub issuer: String,
    pub client_id: String,
    child: Child,
}

impl Idp {
    /// Starts the IdP for `client_id`/`client_secret`, issuing tokens that live `ttl`.
    pub async fn start(
        client_id: &str,
        client_secret: &str,
        ttl: Duration,
    ) -> anyhow::Result<Self> {
        Self::start_under("", client_id, client_secret, ttl).await
    }

    /// [`Idp::start`] with the issuer under `issuer_path` (e.g. a Cognito pool's path, so the
    /// discovery URL reads as Cognito's).
    pub async fn start_under(
        issuer_path: &str,
        client_id: &str,
        client_secret: &str,
        ttl: Duration,
    ) -> anyhow::Result<Self> {
        let dir = workspace_root().join(".peers/idp");
        if !dir.join("node_modules/oidc-provider").exists() {
            bail!(
                "oidc-provider not installed in {}: run `scripts/peers.sh install`",
                dir.display()
            );
        }
        // ESM imports resolve next to the script, so it runs beside its node_modules.
        std::fs::copy(
            workspace_root().join("tests/idp/idp.mjs"),
            dir.join("idp.mjs"),
        )?;
        let mut child = Command::new("node")
            .arg(dir.join("idp.mjs"))
            .env("PORT", "0")
            .env("ISSUER_PATH", issuer_path)
            .env("CLIENT_ID", client_id)
            .env("CLIENT_SECRET", client_secret)
            .env("TOKEN_TTL", ttl.as_secs().to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting node (the IdP)")?;
        let stdout = child.stdout.take().context("IdP stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let issuer = tokio::time::timeout(Duration::from_secs(20), async {
            while let Some(line) = lines.next_line().await? {
                if let Some(issuer) = line.strip_prefix("IdP ready at ") {
                    return Ok::<_, anyhow::Error>(issuer.trim().to_owned());
                }
            }
            bail!("the IdP exited before it was ready")
        })
        .await
        .context("the IdP did not start within 20 s")??;
        Ok(Self {
            issuer,
            client_id: client_id.to_owned(),
            child,
        })
    }

    pub fn discovery_url(&self) -> String {
        format!("{}/.well-known/openid-configuration", self.issuer)
    }

    /// Stops the IdP (an outage).
    pub async fn stop(&mut self) {
        let _ = self.child.kill().await;
    }
}
