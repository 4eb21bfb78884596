//! The `registrar` binary: parses the command line (flags and their env vars) and runs the
//! command; everything else is in the library.

use std::process::ExitCode;

/// jemalloc, whose background thread gives freed pages back to the system a second after they
/// were freed (`.cargo/config.toml` sets its defaults): glibc's malloc kept what a rescan of a
/// large fleet allocated (the worker's resident size stayed at its peak for good).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = registrar_worker::cli::Cli::parse_env_aware();
    registrar_worker::cli::run(cli).await
}
