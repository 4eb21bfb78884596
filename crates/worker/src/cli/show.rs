//! What `resync` and `list` show: scan progress on a terminal, then the report as text or JSON.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::Output;
use crate::resync::report::Report;
use crate::resync::scan::Progress;

/// Shows scan and apply progress on a terminal (never in pipes or CI logs) until stopped.
#[derive(Debug)]
pub(crate) struct Ticker(Option<tokio::task::JoinHandle<()>>);

impl Ticker {
    pub(crate) fn start(progress: Arc<Progress>) -> Self {
        if !std::io::stderr().is_terminal() {
            return Self(None);
        }
        Self(Some(tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(250)).await;
                eprint!(
                    "\r  listed {}  read {}  applied {} ",
                    progress.listed.load(Ordering::Relaxed),
                    progress.read.load(Ordering::Relaxed),
                    progress.applied.load(Ordering::Relaxed)
                );
            }
        })))
    }

    /// Stops the ticker and clears its line.
    pub(crate) fn stop(self) {
        if let Some(h) = self.0 {
            h.abort();
            eprint!("\r{:60}\r", "");
        }
    }
}

/// Prints the report; exit 1 when anything in it failed.
pub(crate) fn report(report: &Report, output: Output) -> ExitCode {
    match output {
        Output::Text => print!("{}", report.to_text()),
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(report).unwrap_or_default()
        ),
    }
    if report.has_failures() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
