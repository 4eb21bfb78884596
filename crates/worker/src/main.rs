//! The `registrar` binary: parses the command line (flags and their env vars) and runs the
//! command; everything else is in the library.

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = registrar_worker::cli::Cli::parse_env_aware();
    registrar_worker::cli::run(cli).await
}
