//! Serves the registry stand-in on 127.0.0.1 for the demo and for manual runs.
//!
//! `registry-standin --port 0 --token <admin key> [--url-file F]` prints `listening on URL`.

use clap::Parser;
use registrar_tests::standin::{Standin, User};

#[derive(Debug, Parser)]
struct Args {
    /// Port on 127.0.0.1 (0 picks a free one).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// The admin bearer token the stand-in accepts.
    #[arg(long, env = "STANDIN_ADMIN_TOKEN")]
    token: String,
    /// Write the base URL to this file once listening.
    #[arg(long)]
    url_file: Option<std::path::PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let standin = Standin::start(args.port, vec![(args.token, User::admin("registrar"))]).await?;
    println!("listening on {}", standin.url());
    if let Some(f) = args.url_file {
        std::fs::write(f, standin.url())?;
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    Ok(())
}
