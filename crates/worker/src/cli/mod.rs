//! The command line: every flag is also an environment variable (names shared with the Python
//! tool keep their names; the rest use the `REGISTRAR_` prefix).
//!
//! Rooms: this module holds the top-level definitions and dispatch; [`args`] the argument
//! groups several commands share, [`parse`] the typed parsers that keep each flag's allowed
//! values on the flag, [`compose`] the one composition root that builds every client, then one
//! module per command.

mod args;
pub(crate) mod compose;
mod dlq;
mod healthcheck;
mod list;
mod manifest;
mod parse;
mod resync;
mod show;
mod state;
mod tokens;
mod worker;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

pub use self::args::{PolicyArgs, ReachArgs, RegistryArgs, ScopeArgs, TrustArgs};
pub use self::dlq::DlqCommand;
pub use self::manifest::ManifestCommand;
pub use self::resync::ResyncArgs;
pub use self::state::StateCommand;
pub use self::tokens::TokensCommand;
pub use self::worker::WorkerArgs;
use crate::aws::clients::Principal;

#[derive(Debug, Parser)]
#[command(
    name = "registrar",
    version,
    about = "Keeps an MCP Gateway Registry in step with Amazon Bedrock AgentCore."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// Parses the command line; an environment variable set to "" counts as unset (deployment
    /// templates set every variable, some of them empty), so its default applies.
    pub fn parse_env_aware() -> Self {
        use clap::{CommandFactory, FromArgMatches};
        let matches = empty_env_is_unset(Self::command()).get_matches();
        Self::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
    }
}

fn empty_env_is_unset(cmd: clap::Command) -> clap::Command {
    let subcommands: Vec<String> = cmd
        .get_subcommands()
        .map(|c| c.get_name().to_owned())
        .collect();
    let cmd = cmd.mut_args(|arg| {
        let empty = arg
            .get_env()
            .is_some_and(|name| std::env::var_os(name).is_some_and(|v| v.is_empty()));
        if empty { arg.env(None::<&str>) } else { arg }
    });
    subcommands.iter().fold(cmd, |cmd, name| {
        cmd.mut_subcommand(name, empty_env_is_unset)
    })
}

#[derive(Debug, Args)]
pub struct Global {
    /// AWS home region (each resource carries its own region in its ARN).
    #[arg(long, env = "AWS_REGION", global = true)]
    pub region: Option<String>,
    /// DynamoDB state table.
    #[arg(
        long,
        env = "REGISTRAR_TABLE",
        default_value = "agentcore-registrar",
        global = true
    )]
    pub table: String,
    /// Log format on stderr.
    #[arg(long, env = "REGISTRAR_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
    /// Log filter (tracing `EnvFilter` syntax).
    #[arg(long, env = "REGISTRAR_LOG", default_value = "warn", global = true)]
    pub log: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Scan AgentCore, then register, update and deregister registry entries to match.
    Resync(Box<ResyncArgs>),
    /// Discover and print AgentCore resources and their registry paths; register nothing.
    List {
        #[command(flatten)]
        scope: ScopeArgs,
    },
    /// Consume AgentCore events from SQS and reconcile each named resource (the deployed job).
    Worker(Box<WorkerArgs>),
    /// The dead-letter queue: inspect it, or move messages back to the queue.
    Dlq {
        #[command(subcommand)]
        command: DlqCommand,
    },
    /// Egress tokens of CUSTOM_JWT entries.
    Tokens {
        #[command(subcommand)]
        command: TokensCommand,
    },
    /// The token-refresh manifest.
    Manifest {
        #[command(subcommand)]
        command: ManifestCommand,
    },
    /// State table operations.
    State {
        #[command(subcommand)]
        command: StateCommand,
    },
    /// Check a deployment from the outside: credentials, AgentCore access, the state table, the
    /// queue and its DLQ, the EventBridge rule, CloudTrail, the registry and its permissions, the
    /// trusted issuers. Prints a checklist with a fix per failure; exit 0 only when all pass.
    Doctor(Box<crate::doctor::DoctorArgs>),
    /// Exit 0 when a worker's /healthz answers 200 (the container health check; no curl needed).
    Healthcheck {
        #[arg(
            long,
            env = "REGISTRAR_HEALTHCHECK_URL",
            default_value = "http://127.0.0.1:8080/healthz"
        )]
        url: String,
    },
}

/// Runs a command; the exit code is 1 when anything failed, 2 for bad configuration.
pub async fn run(cli: Cli) -> ExitCode {
    if let Err(e) = init_logging(&cli.global) {
        eprintln!("error: {}", registrar_core::error::Chain(e.as_ref()));
        return ExitCode::from(2);
    }
    match execute(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", registrar_core::error::Chain(e.as_ref()));
            ExitCode::from(2)
        }
    }
}

/// The health check needs no AWS configuration; every other command gets its clients from the
/// composition root, loaded as the principal that runs it.
async fn execute(cli: Cli) -> anyhow::Result<ExitCode> {
    let principal = match &cli.command {
        Command::Healthcheck { url } => return Ok(healthcheck::run(url).await),
        Command::Worker(_) => Principal::Task,
        Command::State { .. } => Principal::Local,
        _ => Principal::Operator,
    };
    let root = compose::Root::load(&cli.global, principal).await?;
    match cli.command {
        Command::Resync(args) => resync::run(&root, *args).await,
        Command::List { scope } => list::run(&root, scope).await,
        Command::Worker(args) => worker::run(&root, *args).await,
        Command::Dlq { command } => dlq::run(&root, command).await,
        Command::Tokens { command } => tokens::run(&root, command).await,
        Command::Manifest { command } => manifest::run(&root, command).await,
        Command::State { command } => state::run(&root, command).await,
        Command::Doctor(args) => crate::doctor::run(root.config(), root.table(), *args).await,
        Command::Healthcheck { .. } => unreachable!("answered before the AWS configuration"),
    }
}

fn init_logging(global: &Global) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(&global.log).map_err(|e| {
        anyhow::anyhow!(
            "--log (REGISTRAR_LOG) {:?} is not a log filter such as info or registrar_worker=debug: {e}",
            global.log
        )
    })?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match global.log_format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
    };
    Ok(())
}
