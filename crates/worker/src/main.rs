use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = registrar_worker::cli::Cli::parse();
    registrar_worker::cli::run(cli).await
}
