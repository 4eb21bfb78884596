//! A worker's `/metrics` endpoint, read as a scraper reads it: the events a test waits for
//! (messages processed, tokens refreshed) instead of a fixed sleep.

use std::time::Duration;

use crate::events::EventPath;

/// The Prometheus endpoint of one `registrar worker` (pass [`Metrics::listen`] as `--listen`).
#[derive(Debug, Clone)]
pub struct Metrics {
    /// `127.0.0.1:<port>`, for the worker's `--listen`.
    pub listen: String,
}

/// Message endings that are final: the message is gone from the queue (deleted, or moved to the
/// DLQ by the worker). A waiting, retried or released message comes back and ends again later.
const SETTLED: [&str; 4] = ["done", "ignored", "superseded", "dead_lettered"];

impl Metrics {
    /// An endpoint on a free local port.
    pub fn on_free_port() -> std::io::Result<Self> {
        Ok(Self {
            listen: format!("127.0.0.1:{}", crate::moto::free_port()?),
        })
    }

    /// The exposition text now; empty while the worker is not listening yet.
    pub async fn scrape(&self) -> String {
        match reqwest::get(format!("http://{}/metrics", self.listen)).await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    /// Scrapes until `check` holds for the text or `limit` passes; the last text, and whether it
    /// held.
    pub async fn until(&self, limit: Duration, check: impl Fn(&str) -> bool) -> (bool, String) {
        let started = std::time::Instant::now();
        loop {
            let text = self.scrape().await;
            if check(&text) {
                return (true, text);
            }
            if started.elapsed() >= limit {
                return (false, text);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// The value of the sample `name` (with its labels, as exposed: `a_total{result="ok"}`).
pub fn sample(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .filter_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .find_map(|v| v.trim().parse().ok())
}

/// Messages that ended for good (see [`SETTLED`]).
pub fn settled(text: &str) -> u64 {
    SETTLED
        .iter()
        .filter_map(|e| sample(text, &format!("registrar_messages_total{{ending=\"{e}\"}}")))
        .sum()
}

/// Waits until the workers behind `endpoints` have, between them, ended `messages` messages for
/// good and `path`'s queue holds nothing (visible, in flight or delayed): every message they were
/// given has been processed, and nothing of it is left to write. Fails, with what was seen, if
/// that does not happen within `limit` (a deadline for a stuck run, not a timing claim).
pub async fn processed(
    endpoints: &[&Metrics],
    path: &EventPath,
    messages: u64,
    limit: Duration,
) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    loop {
        let mut texts = Vec::new();
        for m in endpoints {
            texts.push(m.scrape().await);
        }
        let ended: u64 = texts.iter().map(|t| settled(t)).sum();
        let depth = path.depth().await?;
        if ended >= messages && depth == 0 {
            return Ok(());
        }
        if started.elapsed() >= limit {
            anyhow::bail!(
                "{ended} of {messages} messages ended for good, {depth} left in the queue:\n{}",
                texts.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
