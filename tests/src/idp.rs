//! The `oidc-provider` IdP (tests/idp/idp.mjs) as a child process on 127.0.0.1, killed when
//! dropped. `scripts/peers.sh install` puts its node_modules in `.peers/idp`.

use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::moto::workspace_root;
use crate::proxy::Proxy;

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
        Self::spawn(issuer_path, client_id, client_secret, ttl, 0, None).await
    }

    /// [`Idp::start_under`] behind a recording proxy, its issuer on the proxy's address: every
    /// request that reaches the IdP, headers and body, is in `proxy.take_recorded()`. The
    /// attacker of the trust tests.
    pub async fn start_recorded(
        issuer_path: &str,
        client_id: &str,
        client_secret: &str,
        ttl: Duration,
    ) -> anyhow::Result<(Self, Proxy)> {
        let port = crate::moto::free_port()?;
        let proxy = Proxy::start(&format!("http://127.0.0.1:{port}")).await?;
        proxy.record();
        let idp = Self::spawn(
            issuer_path,
            client_id,
            client_secret,
            ttl,
            port,
            Some(proxy.url()),
        )
        .await?;
        Ok((idp, proxy))
    }

    async fn spawn(
        issuer_path: &str,
        client_id: &str,
        client_secret: &str,
        ttl: Duration,
        port: u16,
        public_origin: Option<String>,
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
            .env("PORT", port.to_string())
            .env("PUBLIC_ORIGIN", public_origin.unwrap_or_default())
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
