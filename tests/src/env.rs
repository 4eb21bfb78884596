//! One test's world: moto, the registry stand-in, a token file and a state table, wired to the
//! registrar either as a library (for assertions on reports) or as the real binary.

use std::path::PathBuf;
use std::process::Output;
use std::time::Duration;

use anyhow::Context;
use registrar_core::desired::DeriveOptions;
use registrar_core::enable::EnablePolicy;
use registrar_core::plan::PlanContext;
use registrar_worker::aws::agentcore::AgentCoreAws;
use registrar_worker::aws::state::DynamoState;
use registrar_worker::registry::token::TokenFile;
use registrar_worker::registry::{RegistryClient, RetryPolicy};
use registrar_worker::resync::report::Report;
use registrar_worker::resync::scan::{Progress, ScanOptions};
use registrar_worker::resync::{ResyncOptions, resync};

use crate::moto::Moto;
use crate::standin::{Standin, User};

/// The registrar's admin key at the stand-in.
pub const ADMIN_TOKEN: &str = "registrar-admin-key-0123456789abcdef0123";
/// Another publisher at the same registry (the attacker of the ownership tests).
pub const MALLORY_TOKEN: &str = "mallory-key-0123456789abcdef0123456789ab";
/// A key whose groups map to nothing.
pub const NOBODY_TOKEN: &str = "nobody-key-0123456789abcdef0123456789ab";

/// Default resync options for tests: everything, sync policy, small retries.
pub fn options() -> ResyncOptions {
    ResyncOptions {
        scan: ScanOptions {
            gateways: true,
            runtimes: true,
            mcp_targets: false,
            derive: DeriveOptions::default(),
            concurrency: 8,
        },
        ctx: PlanContext {
            adopt_legacy: true,
            ..PlanContext::default()
        },
        enable: EnablePolicy::Authenticated,
        dry_run: false,
        registry_concurrency: 4,
        deep: false,
    }
}

/// Writes a file only its owner may read (the registrar refuses a token file others can read).
pub fn write_private(path: &std::path::Path, contents: &str) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, contents)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
}

/// A test's peers.
#[derive(Debug)]
pub struct TestEnv {
    pub moto: Moto,
    pub standin: Standin,
    pub config: aws_config::SdkConfig,
    pub agentcore: aws_sdk_bedrockagentcorecontrol::Client,
    pub token_file: PathBuf,
    pub table: String,
    pub dir: PathBuf,
    /// Issuers the `registrar` processes of this test trust (`REGISTRAR_TRUSTED_ISSUERS`).
    trusted: std::sync::Mutex<Vec<String>>,
    /// `client=issuer` pairs (`REGISTRAR_CLIENT_ISSUERS`).
    client_issuers: std::sync::Mutex<Vec<String>>,
}

impl TestEnv {
    /// Starts moto and the stand-in, writes the admin token file, creates the state table.
    pub async fn start() -> anyhow::Result<Self> {
        let moto = Moto::start().await?;
        let users = vec![
            (ADMIN_TOKEN.to_owned(), User::admin("registrar")),
            (NOBODY_TOKEN.to_owned(), User::nobody("nobody")),
            (MALLORY_TOKEN.to_owned(), User::publisher("mallory")),
        ];
        let standin = Standin::start(0, users).await?;
        let config = moto.sdk_config().await;
        let dir = std::env::temp_dir().join(format!(
            "registrar-test-{}-{}",
            std::process::id(),
            moto.port
        ));
        std::fs::create_dir_all(&dir)?;
        let token_file = dir.join("token.json");
        write_private(
            &token_file,
            &serde_json::json!({"access_token": ADMIN_TOKEN}).to_string(),
        )?;
        let table = "registrar-state".to_owned();
        DynamoState::new(&config, &table)
            .ensure_table()
            .await
            .context("creating the state table")?;
        let agentcore = aws_sdk_bedrockagentcorecontrol::Client::new(&config);
        Ok(Self {
            moto,
            standin,
            config,
            agentcore,
            token_file,
            table,
            dir,
            trusted: std::sync::Mutex::new(Vec::new()),
            client_issuers: std::sync::Mutex::new(Vec::new()),
        })
    }

    /// Lets the `registrar` processes started from now on send client secrets to `issuer`.
    pub fn trust_issuer(&self, issuer: &str) {
        self.trusted
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(issuer.to_owned());
    }

    /// Lets a secret of `client` that names no issuer go to `issuer` (with several trusted).
    pub fn map_client(&self, client: &str, issuer: &str) {
        self.client_issuers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(format!("{client}={issuer}"));
    }

    /// The environment every `registrar` process of this test gets (extras override it).
    fn base_env(&self) -> Vec<(String, String)> {
        let trusted = self
            .trusted
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .join(",");
        let mut env: Vec<(String, String)> = self
            .moto
            .env()
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        env.extend(
            [
                ("REGISTRY_URL", self.standin.url()),
                ("REGISTRY_TOKEN_FILE", self.token_file.display().to_string()),
                ("REGISTRAR_TABLE", self.table.clone()),
                // Every AWS call, by principal: scripts/iam-check.py proves the policies allow it.
                (
                    "REGISTRAR_AWS_CALL_LOG",
                    crate::moto::workspace_root()
                        .join("target/aws-calls.log")
                        .display()
                        .to_string(),
                ),
                // The stand-in's admin user: what we register carries this `registered_by`.
                ("REGISTRAR_REGISTRY_IDENTITY", "registrar".to_owned()),
                ("REGISTRAR_TRUSTED_ISSUERS", trusted),
                (
                    "REGISTRAR_CLIENT_ISSUERS",
                    self.client_issuers
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .join(","),
                ),
            ]
            .map(|(k, v)| (k.to_owned(), v)),
        );
        env
    }

    pub fn state(&self) -> DynamoState {
        DynamoState::new(&self.config, &self.table)
    }

    pub fn registry(&self, token: &str) -> RegistryClient {
        let file = self.dir.join(format!("token-{}.json", &token[..8]));
        let _ = write_private(
            &file,
            &serde_json::json!({"access_token": token}).to_string(),
        );
        let retry = RetryPolicy {
            attempts: 3,
            min_delay: Duration::from_millis(20),
            max_delay: Duration::from_millis(200),
        };
        RegistryClient::new(
            self.standin.url(),
            registrar_worker::registry::token::TokenSource::File(TokenFile::new(file)),
            Duration::from_secs(5),
            retry,
        )
        .expect("client")
    }

    /// One resync through the library, as the admin.
    pub async fn resync(&self, opts: ResyncOptions) -> anyhow::Result<Report> {
        self.resync_with(
            &AgentCoreAws::new(&self.config),
            &self.registry(ADMIN_TOKEN),
            opts,
        )
        .await
    }

    pub async fn resync_with(
        &self,
        ac: &AgentCoreAws,
        registry: &RegistryClient,
        opts: ResyncOptions,
    ) -> anyhow::Result<Report> {
        let fleet = registrar_worker::aws::fleet::Fleet::one(ac.clone());
        Ok(resync(&fleet, registry, &self.state(), opts, &Progress::default()).await?)
    }

    /// Runs the real `registrar` binary against these peers.
    pub async fn cli(&self, args: &[&str]) -> anyhow::Result<Output> {
        self.cli_with_env(args, &[]).await
    }

    /// [`TestEnv::cli`] with extra environment variables (client secrets, ...).
    pub async fn cli_with_env(
        &self,
        args: &[&str],
        extra: &[(&str, &str)],
    ) -> anyhow::Result<Output> {
        let bin = registrar_bin();
        let mut cmd = tokio::process::Command::new(&bin);
        cmd.args(args)
            .envs(self.base_env())
            .envs(extra.iter().copied())
            .kill_on_drop(true);
        cmd.output()
            .await
            .with_context(|| format!("running {}", bin.display()))
    }
}

impl TestEnv {
    /// Starts the real `registrar worker` on `path`'s queue with fast test timings; killed when
    /// dropped. `extra` is flag/value pairs that replace the defaults or add to them. Its log
    /// (JSON lines) goes to a file in the test's directory, printed by [`TestEnv::worker_logs`].
    pub fn spawn_worker(
        &self,
        path: &crate::events::EventPath,
        extra: &[&str],
    ) -> anyhow::Result<tokio::process::Child> {
        self.spawn_worker_with_env(path, extra, &[])
    }

    /// [`TestEnv::spawn_worker`] with extra environment variables (client secrets, ...).
    pub fn spawn_worker_with_env(
        &self,
        path: &crate::events::EventPath,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> anyhow::Result<tokio::process::Child> {
        let mut flags: Vec<(String, String)> = [
            ("--receive-wait", "1"),
            ("--visibility-timeout", "10"),
            ("--wait-base", "1"),
            ("--wait-cap", "2"),
            ("--retry-base", "1"),
            ("--retry-cap", "2"),
            ("--startup-rescan", "false"),
            ("--rescan-interval", "0"),
            ("--shutdown-grace", "5"),
            ("--registry-attempts", "2"),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
        for pair in extra.chunks(2) {
            let (flag, value) = (
                pair[0].to_owned(),
                pair.get(1).map(|v| (*v).to_owned()).unwrap_or_default(),
            );
            match flags.iter_mut().find(|(k, _)| *k == flag) {
                Some(slot) => slot.1 = value,
                None => flags.push((flag, value)),
            }
        }
        let mut args = vec!["worker".to_owned()];
        args.extend(flags.into_iter().flat_map(|(k, v)| [k, v]));
        let n = std::fs::read_dir(&self.dir).map(|d| d.count()).unwrap_or(0);
        let log = std::fs::File::create(self.dir.join(format!("worker-{n}.log")))?;
        let child = tokio::process::Command::new(registrar_bin())
            .args(&args)
            .envs(self.base_env())
            .env("REGISTRAR_QUEUE_URL", &path.queue_url)
            .env("REGISTRAR_DLQ_URL", &path.dlq_url)
            .env("REGISTRAR_LOG", "info")
            .env("REGISTRAR_LOG_FORMAT", "json")
            .envs(env.iter().copied())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::from(log))
            .kill_on_drop(true)
            .spawn()?;
        Ok(child)
    }

    /// The logs of the workers this test started.
    pub fn worker_logs(&self) -> String {
        let mut out = String::new();
        if let Ok(dir) = std::fs::read_dir(&self.dir) {
            for entry in dir
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with("worker-"))
            {
                out.push_str(&format!("--- {}\n", entry.path().display()));
                out.push_str(&std::fs::read_to_string(entry.path()).unwrap_or_default());
            }
        }
        out
    }
}

/// Polls `check` every 100 ms until it holds or `limit` passes.
pub async fn eventually(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let start = std::time::Instant::now();
    while start.elapsed() < limit {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    check()
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The `registrar` binary of this build (`cargo build --bins` puts it beside the test
/// executables' parent directory), or `REGISTRAR_BIN`.
pub fn registrar_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("REGISTRAR_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().unwrap_or_default();
    let mut dir = exe.parent().map(PathBuf::from).unwrap_or_default();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir.join("registrar")
}
