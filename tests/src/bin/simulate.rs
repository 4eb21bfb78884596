//! `simulate`: the registrar past this machine (README, "Benchmarks", "At fleet scale"). The
//! real rescan and engine on the in-memory ports behind models of AgentCore's, DynamoDB's,
//! SQS's and the registry's latency and quotas, on a paused clock. Each phase runs in a fresh
//! process of its own (so its peak memory is its own); without `--phase` this process runs them
//! all, with pacing on and off, and prints the tables.

use std::process::Command;

use anyhow::{Context, ensure};
use clap::Parser;
use registrar_tests::sim::{PhaseReport, Setup, burst, memory_mib, paused_runtime, rescan, totals};

#[derive(Debug, Parser)]
#[command(about = "The registrar at fleet scale, simulated on a paused clock")]
struct Args {
    #[arg(long, default_value_t = 100_000)]
    resources: usize,
    #[arg(long, default_value_t = 50)]
    accounts: usize,
    /// Regions per account (at most 3).
    #[arg(long, default_value_t = 3)]
    regions: usize,
    /// Events of the burst.
    #[arg(long, default_value_t = 50_000)]
    events: usize,
    /// Workers of the burst.
    #[arg(long, default_value_t = 4)]
    workers: usize,
    /// Messages each worker processes at once.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Requests the registry serves at once.
    #[arg(long, default_value_t = 1)]
    registry_workers: usize,
    /// Run one phase here (rescan or burst) and print its figures as JSON.
    #[arg(long)]
    phase: Option<String>,
    /// With --phase: the client's pacing on or off.
    #[arg(long, default_value = "on")]
    pacing: String,
    /// Without --phase: which phases and pacings to run.
    #[arg(long, value_delimiter = ',', default_value = "rescan,burst")]
    phases: Vec<String>,
    #[arg(long, value_delimiter = ',', default_value = "on,off")]
    pacings: Vec<String>,
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

impl Args {
    fn setup(&self, pacing: bool) -> Setup {
        let mut setup = Setup::standard(pacing);
        setup.resources = self.resources;
        setup.accounts = self.accounts;
        setup.regions = self.regions.clamp(1, 3);
        setup.events = self.events;
        setup.workers = self.workers;
        setup.concurrency = self.concurrency;
        setup.registry.workers = self.registry_workers;
        setup.seed = self.seed;
        setup
    }

    /// The flags a child needs to run `phase` with `pacing`.
    fn child(&self, phase: &str, pacing: &str) -> Vec<String> {
        [
            ("--resources", self.resources.to_string()),
            ("--accounts", self.accounts.to_string()),
            ("--regions", self.regions.to_string()),
            ("--events", self.events.to_string()),
            ("--workers", self.workers.to_string()),
            ("--concurrency", self.concurrency.to_string()),
            ("--registry-workers", self.registry_workers.to_string()),
            ("--seed", self.seed.to_string()),
            ("--phase", phase.to_owned()),
            ("--pacing", pacing.to_owned()),
        ]
        .into_iter()
        .flat_map(|(k, v)| [k.to_owned(), v])
        .collect()
    }
}

/// Runs one phase in this process.
#[allow(clippy::disallowed_methods)] // the real time it took to simulate, on the real clock
fn run_phase(args: &Args, phase: &str) -> anyhow::Result<PhaseReport> {
    let setup = args.setup(args.pacing == "on");
    let started = std::time::Instant::now();
    let runtime = paused_runtime()?;
    let mut report = runtime.block_on(async {
        match phase {
            "rescan" => rescan::run(&setup).await,
            "burst" => burst::run(&setup).await,
            other => anyhow::bail!("unknown phase {other:?}: rescan or burst"),
        }
    })?;
    report.wall_s = started.elapsed().as_secs_f64();
    report.peak_mib = memory_mib(None).1;
    Ok(report)
}

fn hms(s: f64) -> String {
    let s = s.round() as u64;
    format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

fn calls_line(
    by: &std::collections::BTreeMap<String, registrar_tests::sim::quota::Count>,
) -> String {
    by.iter()
        .map(|(op, c)| {
            let mut s = format!("{op} {}", c.calls);
            if c.throttled > 0 {
                s.push_str(&format!(
                    " ({} throttled, {} failed)",
                    c.throttled, c.failed
                ));
            }
            s
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn table(reports: &[PhaseReport]) -> String {
    let mut out = String::from(
        "| phase | client pacing | simulated time | AgentCore done at | AgentCore requests | throttles met (AgentCore / DynamoDB / SQS) | calls failed after retries | registry calls | DynamoDB requests | SQS calls | calls the pacer held back | registry entries at the end | peak memory (VmHWM; after filling the peers) | wall time |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in reports {
        let (ac, ac_t, ac_f) = totals(&r.agentcore);
        let (reg, _, _) = totals(&r.registry);
        let (db, db_t, db_f) = totals(&r.dynamodb);
        let (sqs, sqs_t, _) = totals(&r.sqs);
        out.push_str(&format!(
            "| {} | {} | {} | {} | {ac} | {ac_t} / {db_t} / {sqs_t} | {} | {reg} | {db} | {sqs} | {} ({:.0} s waited in all) | {} | {:.0} MiB ({:.0} MiB) | {:.0} s |\n",
            r.phase,
            if r.pacing { "on" } else { "off" },
            hms(r.simulated_s),
            hms(r.agentcore_done_s),
            ac_f + db_f,
            r.paced_calls,
            r.paced_wait_s,
            r.registry_entries,
            r.peak_mib,
            r.rss_seeded_mib,
            r.wall_s,
        ));
    }
    out
}

fn details(r: &PhaseReport) -> String {
    let outcomes = r
        .outcomes
        .iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "- **{} (pacing {})**: {outcomes}.\n  AgentCore: {}.\n  Registry: {}.\n  DynamoDB: {}.\n  SQS: {}.{}\n",
        r.phase,
        if r.pacing { "on" } else { "off" },
        calls_line(&r.agentcore),
        calls_line(&r.registry),
        calls_line(&r.dynamodb),
        if r.sqs.is_empty() {
            "none".to_owned()
        } else {
            calls_line(&r.sqs)
        },
        r.notes
            .iter()
            .map(|n| format!("\n  {n}."))
            .collect::<String>(),
    )
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(phase) = &args.phase {
        let report = run_phase(&args, phase)?;
        println!("{}", serde_json::to_string(&report)?);
        return Ok(());
    }
    let exe = std::env::current_exe().context("this program's path")?;
    let mut reports = Vec::new();
    for phase in &args.phases {
        for pacing in &args.pacings {
            eprintln!("simulating {phase} with pacing {pacing} ...");
            let out = Command::new(&exe)
                .args(args.child(phase, pacing))
                .output()
                .context("running a phase")?;
            ensure!(
                out.status.success(),
                "{phase} ({pacing}) failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let report: PhaseReport = serde_json::from_slice(&out.stdout)
                .with_context(|| String::from_utf8_lossy(&out.stdout).into_owned())?;
            eprintln!("{}", details(&report));
            reports.push(report);
        }
    }
    println!(
        "{} resources ({} gateways, {} runtimes) in {} accounts x {} regions; burst of {} events through {} workers ({} messages at once each); registry serving {} request(s) at once.\n",
        args.resources,
        args.resources.div_ceil(2),
        args.resources / 2,
        args.accounts,
        args.regions,
        args.events,
        args.workers,
        args.concurrency,
        args.registry_workers,
    );
    println!("{}", table(&reports));
    for r in &reports {
        println!("{}", details(r));
    }
    Ok(())
}
