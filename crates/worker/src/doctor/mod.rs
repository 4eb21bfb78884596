//! `registrar doctor`: checks a deployment from the outside and prints a checklist, with a fix
//! for each failure. Every group of checks runs at once, each under a deadline, so one failing
//! or hanging check never hides the others. Exit 0 only when nothing failed (warnings allowed).
//!
//! Rooms: [`checklist`] (findings to text and JSON), [`access`] (AWS errors to a missing action),
//! then one module per group: [`accounts`], [`table`], [`queue`], [`rules`], [`trail`],
//! [`registry`], [`issuers`]. The pure parts (redrive parsing, schema comparison, pattern and
//! event-selector evaluation, the probe's entry) are unit tested in their modules.

pub mod access;
pub mod accounts;
pub mod checklist;
pub mod issuers;
pub mod queue;
pub mod registry;
pub mod rules;
pub mod table;
pub mod trail;

use std::future::Future;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use self::checklist::Check;
use crate::cli::{Output, ReachArgs, RegistryArgs, TrustArgs};

/// The settings of a deployment, as the worker gets them, plus what only doctor needs.
#[derive(Debug, Args)]
pub struct DoctorArgs {
    #[command(flatten)]
    pub registry: RegistryArgs,
    #[command(flatten)]
    pub reach: ReachArgs,
    #[command(flatten)]
    pub trust: TrustArgs,
    /// The SQS queue the EventBridge rule fills (the stack's QueueUrl output).
    #[arg(long, env = "REGISTRAR_QUEUE_URL")]
    pub queue_url: Option<String>,
    /// Its dead-letter queue (the stack's DlqUrl output).
    #[arg(long, env = "REGISTRAR_DLQ_URL")]
    pub dlq_url: Option<String>,
    /// The EventBridge rules that should fill the queue (comma-separated); by default every
    /// rule on the default bus that targets the queue.
    #[arg(long, env = "REGISTRAR_RULE_NAMES", value_delimiter = ',')]
    pub rule_names: Vec<String>,
    /// Seconds each group of checks (and each registry call) may take.
    #[arg(long, env = "REGISTRAR_DOCTOR_DEADLINE", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=600))]
    pub deadline: u64,
    /// Output format.
    #[arg(long, env = "REGISTRAR_OUTPUT", value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

/// A group's checks, or one failed line naming the group when it takes longer than `deadline`.
async fn bounded(
    deadline: Duration,
    group: &'static str,
    checks: impl Future<Output = Vec<Check>>,
) -> Vec<Check> {
    tokio::time::timeout(deadline, checks)
        .await
        .unwrap_or_else(|_| {
            vec![Check::fail(
                group,
                "checks",
                format!("no answer within {}s", deadline.as_secs()),
                "check connectivity to the peer; raise --deadline (REGISTRAR_DOCTOR_DEADLINE) for a slow one",
            )]
        })
}

/// Runs every check, prints the checklist; exit 0 when nothing failed, else 1.
pub async fn run(
    config: &aws_config::SdkConfig,
    table_name: &str,
    args: DoctorArgs,
) -> anyhow::Result<ExitCode> {
    let deadline = Duration::from_secs(args.deadline);
    let regions = crate::cli::compose::regions_read(config, &args.reach.regions);
    let event_names = rules::shipped_event_names();

    let aws = bounded(deadline, "aws", async {
        let mut out = vec![accounts::credentials(config).await];
        match crate::cli::compose::fleet(config, &args.reach).await {
            Ok(fleet) => out.extend(accounts::agentcore(&fleet, &args.reach.member_role_name).await),
            Err(e) => out.push(Check::fail(
                "aws",
                "accounts",
                format!("cannot read the accounts and regions configured: {}", registrar_core::trust::shown(&format!("{e:#}"))),
                "--member-accounts must all be in --allowed-accounts, --regions must be region codes, and the process's own account must answer sts:GetCallerIdentity",
            )),
        }
        out
    });
    let table = bounded(deadline, "state", async {
        vec![table::check(config, table_name).await]
    });
    let queue_and_rules = bounded(deadline, "queue", async {
        let q = queue::check(config, args.queue_url.as_deref(), args.dlq_url.as_deref()).await;
        let mut out = q.checks;
        out.extend(rules::check(config, q.queue_arn.as_deref(), &args.rule_names).await);
        out
    });
    let trails = bounded(deadline, "trail", async {
        let mut out = trail::check(config, &regions, &event_names).await;
        let members: Vec<&str> = args
            .reach
            .member_accounts
            .iter()
            .map(|a| a.trim())
            .filter(|a| !a.is_empty())
            .collect();
        if !members.is_empty() {
            out.push(Check::warn(
                "trail",
                format!("member accounts {}", members.join(", ")),
                "not checked: their trails and forwarding rules are read with their own credentials",
                "in each member account: a trail logging management events, and the member stack's forwarding rule (member-account-role.yaml)",
            ));
        }
        out
    });
    // Not bounded as a whole: each call has its own deadline, and the probe must get to its
    // removal whatever happened before.
    let registry = async {
        match crate::cli::compose::registry_client(&args.registry) {
            Ok(client) => {
                let url =
                    registrar_core::trust::shown(args.registry.registry_url.trim_end_matches('/'));
                registry::check(
                    &client,
                    &url,
                    args.registry
                        .registry_identity
                        .as_deref()
                        .map(str::trim)
                        .filter(|s| !s.is_empty()),
                    deadline,
                )
                .await
            }
            Err(e) => vec![Check::fail(
                "registry",
                "settings",
                registrar_core::trust::shown(&format!("{e:#}")),
                "--registry-url (REGISTRY_URL) and the token flags (--token-file, or --registry-token-discovery-url with --registry-client-id)",
            )],
        }
    };
    let issuers = async {
        match crate::cli::compose::trust_policy(&args.trust, &regions, Some(&args.registry)) {
            Ok(policy) => issuers::check(&policy, &args.trust.trusted_issuers, deadline).await,
            Err(e) => vec![Check::fail(
                "issuer",
                "trust settings",
                registrar_core::trust::shown(&format!("{e:#}")),
                "--trusted-issuers, --trusted-token-hosts, --client-issuers, --secret-name-pattern",
            )],
        }
    };
    let (aws, table, queue_and_rules, trails, registry, issuers) =
        tokio::join!(aws, table, queue_and_rules, trails, registry, issuers);
    let checks: Vec<Check> = [aws, table, queue_and_rules, trails, registry, issuers]
        .into_iter()
        .flatten()
        .collect();
    match args.output {
        Output::Text => print!("{}", checklist::render_text(&checks)),
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(&checklist::render_json(&checks))?
        ),
    }
    Ok(if checklist::passed(&checks) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
