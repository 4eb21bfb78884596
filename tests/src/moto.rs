//! The moto server (`moto[server]==5.2.5`) as a child process on 127.0.0.1: one per test, killed
//! when dropped.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::process::{Child, Command};

/// The workspace root (the parent of the `tests` package).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default()
}

/// Where `moto_server` is: `REGISTRAR_MOTO_SERVER`, else the project venv that
/// `scripts/peers.sh install` creates.
pub fn moto_binary() -> PathBuf {
    std::env::var_os("REGISTRAR_MOTO_SERVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".venv-moto/bin/moto_server"))
}

/// The Python that runs `moto_server`: the interpreter its shebang names.
fn moto_python() -> anyhow::Result<PathBuf> {
    let bin = moto_binary();
    let script = std::fs::read_to_string(&bin)
        .with_context(|| format!("reading {}: run `scripts/peers.sh install`", bin.display()))?;
    script
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("#!"))
        .and_then(|l| l.split_whitespace().next())
        .map(PathBuf::from)
        .with_context(|| format!("{} names no interpreter on its first line", bin.display()))
}

/// A free TCP port on 127.0.0.1 (bound, read, released).
pub fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A running moto server.
#[derive(Debug)]
pub struct Moto {
    pub port: u16,
    child: Child,
    pub log: PathBuf,
}

impl Moto {
    /// Starts moto and waits until it answers (about a second).
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_from(moto_binary(), &[]).await
    }

    /// Starts moto through `tests/moto/patched_sqs.py`, which makes two of moto's SQS hot spots
    /// cheap (the file says which, why, and what it leaves as it was). For benchmarks whose
    /// backlog would otherwise be paced by moto's queue bookkeeping; tests use [`Moto::start`].
    pub async fn start_patched_sqs() -> anyhow::Result<Self> {
        let launcher = workspace_root().join("tests/moto/patched_sqs.py");
        Self::start_from(moto_python()?, &[launcher.into_os_string()]).await
    }

    async fn start_from(bin: PathBuf, launcher: &[std::ffi::OsString]) -> anyhow::Result<Self> {
        if !bin.exists() {
            bail!(
                "{} not found: run `scripts/peers.sh install` (or set REGISTRAR_MOTO_SERVER)",
                bin.display()
            );
        }
        let mut last_error = None;
        for _ in 0..3 {
            let port = free_port()?;
            let log = std::env::temp_dir().join(format!("registrar-moto-{port}.log"));
            let log_file = std::fs::File::create(&log)?;
            let child = Command::new(&bin)
                .args(launcher)
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::from(log_file))
                .kill_on_drop(true)
                .spawn()
                .with_context(|| format!("starting {}", bin.display()))?;
            let mut moto = Self { port, child, log };
            match moto.wait_ready(Duration::from_secs(30)).await {
                Ok(()) => return Ok(moto),
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("moto did not start")))
    }

    async fn wait_ready(&mut self, limit: Duration) -> anyhow::Result<()> {
        let started = Instant::now();
        let http = reqwest::Client::new();
        while started.elapsed() < limit {
            if let Some(status) = self.child.try_wait()? {
                bail!("moto exited early ({status}); see {}", self.log.display());
            }
            // Only trust the port once this process says it bound it: if two tests drew the same
            // free port, the loser must not mistake the winner's moto for its own.
            let bound = std::fs::read_to_string(&self.log).is_ok_and(|log| {
                log.contains(&format!("Running on http://127.0.0.1:{}", self.port))
            });
            if bound
                && let Ok(r) = http.get(format!("{}/moto-api/", self.url())).send().await
                && r.status().is_success()
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!(
            "moto did not answer within {limit:?}; see {}",
            self.log.display()
        )
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `POST /moto-api/state-manager/set-transition` for a model such as
    /// `bedrock-agentcore-control::gateway`.
    pub async fn set_transition(
        &self,
        model: &str,
        transition: serde_json::Value,
    ) -> anyhow::Result<()> {
        let body = serde_json::json!({"model_name": model, "transition": transition});
        let r = reqwest::Client::new()
            .post(format!(
                "{}/moto-api/state-manager/set-transition",
                self.url()
            ))
            .json(&body)
            .send()
            .await?;
        if !r.status().is_success() {
            bail!("set-transition failed: {}", r.status());
        }
        Ok(())
    }

    /// The environment a `registrar` child process needs to reach this moto.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.url()),
            ("AWS_REGION", crate::REGION.into()),
            ("AWS_ACCESS_KEY_ID", "test".into()),
            ("AWS_SECRET_ACCESS_KEY", "test".into()),
            ("AWS_EC2_METADATA_DISABLED", "true".into()),
            ("AWS_MAX_ATTEMPTS", "2".into()),
        ]
    }

    /// SDK configuration pointing at this moto, with test credentials.
    pub async fn sdk_config(&self) -> aws_config::SdkConfig {
        aws_config::defaults(aws_config::BehaviorVersion::latest())
            .endpoint_url(self.url())
            .region(aws_config::Region::new(crate::REGION))
            .test_credentials()
            .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(2))
            .load()
            .await
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = std::fs::remove_file(&self.log);
    }
}
