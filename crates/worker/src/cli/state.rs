//! `registrar state init`: create the DynamoDB state table if it does not exist (local runs;
//! infra/ does it in AWS).

use std::process::ExitCode;

use clap::Subcommand;

use super::compose::Root;

#[derive(Debug, Subcommand)]
pub enum StateCommand {
    /// Create the DynamoDB state table if it does not exist (local runs; infra/ does it in AWS).
    Init,
}

pub(crate) async fn run(root: &Root, command: StateCommand) -> anyhow::Result<ExitCode> {
    let StateCommand::Init = command;
    let created = root.state().ensure_table().await?;
    println!(
        "table {} {}",
        root.table(),
        if created { "created" } else { "already exists" }
    );
    Ok(ExitCode::SUCCESS)
}
