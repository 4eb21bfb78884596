//! `registrar healthcheck`: the container health check (no curl needed): one GET of a worker's
//! /healthz with a short timeout.

use std::process::ExitCode;

use super::compose;

/// 0 on 200, 1 otherwise (with the reason on stderr).
pub(crate) async fn run(url: &str) -> ExitCode {
    let answer = async { compose::health_client()?.get(url).send().await };
    match answer.await {
        Ok(r) if r.status().is_success() => ExitCode::SUCCESS,
        Ok(r) => {
            eprintln!("unhealthy: {url} answered {}", r.status());
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("unhealthy: {url}: {e}");
            ExitCode::from(1)
        }
    }
}
