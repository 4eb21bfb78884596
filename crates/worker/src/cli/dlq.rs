//! `registrar dlq inspect|replay`: the dead-letter queue's breakdown, and moving messages back
//! to the source queue.

use std::collections::BTreeMap;
use std::process::ExitCode;

use clap::Subcommand;
use registrar_ingest::dlq::{self, DeadLetter, ReplayOptions};

use super::Output;
use super::compose::Root;
use super::parse::QueueUrl;

#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// Count, oldest age, breakdown by event name and by failure reason, and a sample.
    Inspect {
        #[arg(long, env = "REGISTRAR_DLQ_URL", value_parser = QueueUrl)]
        dlq_url: String,
        /// Messages read for the breakdown (they are made visible again afterwards).
        #[arg(long, env = "REGISTRAR_DLQ_INSPECT_LIMIT", default_value_t = 1000)]
        limit: usize,
        /// Messages shown in the sample.
        #[arg(long, env = "REGISTRAR_DLQ_SAMPLE", default_value_t = 10)]
        sample: usize,
        #[arg(long, env = "REGISTRAR_OUTPUT", value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Move messages back to the source queue (SQS's move task when nothing is filtered; else
    /// one by one: send, then delete).
    Replay {
        #[arg(long, env = "REGISTRAR_QUEUE_URL", value_parser = QueueUrl)]
        queue_url: String,
        #[arg(long, env = "REGISTRAR_DLQ_URL", value_parser = QueueUrl)]
        dlq_url: String,
        /// Show what would move; move nothing.
        #[arg(long)]
        dry_run: bool,
        /// Move at most this many.
        #[arg(long)]
        max: Option<usize>,
        /// At most this many messages per second.
        #[arg(long, env = "REGISTRAR_REPLAY_RATE")]
        rate: Option<f64>,
        /// Only messages of this CloudTrail event name (`unparseable` for poison).
        #[arg(long)]
        filter_event: Option<String>,
        /// Only messages naming this resource id.
        #[arg(long)]
        filter_resource: Option<String>,
        #[arg(long, env = "REGISTRAR_OUTPUT", value_enum, default_value_t = Output::Text)]
        output: Output,
    },
}

pub(crate) async fn run(root: &Root, command: DlqCommand) -> anyhow::Result<ExitCode> {
    match command {
        DlqCommand::Inspect {
            dlq_url,
            limit,
            sample,
            output,
        } => inspect(root, &dlq_url, limit, sample, output).await,
        DlqCommand::Replay {
            queue_url,
            dlq_url,
            dry_run,
            max,
            rate,
            filter_event,
            filter_resource,
            output,
        } => {
            let opts = ReplayOptions {
                dry_run,
                max,
                rate,
                filter_event,
                filter_resource,
                started_ms: registrar_core::ports::Clock::now_ms(&*root.clock()),
            };
            replay(root, &queue_url, &dlq_url, &opts, output).await
        }
    }
}

async fn inspect(
    root: &Root,
    dlq_url: &str,
    limit: usize,
    sample: usize,
    output: Output,
) -> anyhow::Result<ExitCode> {
    let now_ms = registrar_core::ports::Clock::now_ms(&*root.clock());
    let report = dlq::inspect(&root.queue(dlq_url), limit, sample, now_ms).await?;
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        Output::Text => {
            println!("Dead-letter queue {dlq_url}");
            println!(
                "Messages: {} (read {}), oldest: {}",
                report.count,
                report.read,
                report
                    .oldest_age_seconds
                    .map_or("-".into(), |a| format!("{a}s"))
            );
            println!("By event:  {}", counts(&report.by_event));
            println!("By reason: {}", counts(&report.by_reason));
            if report.duplicates > 0 {
                println!(
                    "Duplicates: {} (copies of one message handled twice: SQS delivered it \
                     twice, or it was not deleted after its copy was sent; replaying both is \
                     harmless)",
                    report.duplicates
                );
            }
            println!("Sample:");
            for d in &report.sample {
                println!("{}", row(d));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn replay(
    root: &Root,
    queue_url: &str,
    dlq_url: &str,
    opts: &ReplayOptions,
    output: Output,
) -> anyhow::Result<ExitCode> {
    let done = dlq::replay(&root.queue(dlq_url), &root.queue(queue_url), opts).await?;
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&done)?),
        Output::Text => {
            let verb = if done.dry_run { "would move" } else { "moved" };
            match &done.task_handle {
                Some(h) => println!("Started SQS message move task {h} (all messages)."),
                None => println!(
                    "{} {} message(s) ({} mode); {} left in the DLQ",
                    verb,
                    done.moved.len(),
                    done.mode,
                    done.left
                ),
            }
            for d in &done.moved {
                println!("{}", row(d));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// "name count, name count".
fn counts(m: &BTreeMap<String, u64>) -> String {
    m.iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// One dead letter as a line.
fn row(d: &DeadLetter) -> String {
    format!(
        "  {:<38} {:<28} {:<24} {:<18} age {:>6}s  replays {}",
        d.message_id,
        d.event_name,
        d.resource.as_deref().unwrap_or("-"),
        d.reason_code,
        d.age_seconds.unwrap_or(0),
        d.replay_count
    )
}
