//! The worker's token loop: refresh each token when it is due (about 80% of its lifetime),
//! exactly once across replicas (a conditional claim in DynamoDB), retry failures well before
//! expiry, and warn about tokens about to expire unrefreshed.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::{StreamExt, stream};
use registrar_core::ports::{DueToken, Registry, StateStore};
use registrar_core::refresh::{EXPIRY_WARNING_S, TokenState, expiring_unrefreshed};
use tokio_util::sync::CancellationToken;

use super::{REFUSAL_RECHECK_SECS, Refresher, serves_tokens};

/// Counters of the token loop (read by `/metrics`).
#[derive(Debug, Default)]
pub struct TokenStats {
    pub refreshed: AtomicU64,
    pub failed: AtomicU64,
    /// Refused because the secret may not go to the IdP (nothing was sent).
    pub refused_secret: AtomicU64,
    /// Refused because the entry is not verified as ours (no token was written).
    pub refused_entry: AtomicU64,
    /// Tokens that expire within a minute and whose last refresh failed.
    pub expiring_unrefreshed: AtomicU64,
}

/// How often the loop looks, at most, and how long a claim lasts.
#[derive(Debug, Clone, Copy)]
pub struct TokenSchedule {
    pub check_every: Duration,
    pub claim_for: Duration,
    pub concurrency: usize,
}

/// Runs until `stop`.
pub async fn run<R: Registry, S: StateStore>(
    refresher: &Refresher<'_, R, S>,
    owner: &str,
    schedule: TokenSchedule,
    stats: &Arc<TokenStats>,
    stop: &CancellationToken,
) {
    loop {
        let wake = match tick(refresher, owner, schedule, stats).await {
            Ok(next_due) => {
                let until_due =
                    Duration::from_secs(next_due.saturating_sub(refresher.clock.now_s()));
                until_due.clamp(Duration::from_millis(500), schedule.check_every)
            }
            Err(e) => {
                tracing::warn!(error = %e, "Token rows could not be read; trying again.");
                schedule.check_every
            }
        };
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(wake) => {}
        }
    }
}

/// One pass: refreshes what is due and claimable; returns when the next token falls due.
///
/// It reads only the tokens the store's due index says are worth a look before the next pass
/// can come (`now + check_every`): those due, those falling due meanwhile (they set the wake-up),
/// and those about to expire unrefreshed (the gauge). An idle fleet costs one empty Query.
async fn tick<R: Registry, S: StateStore>(
    refresher: &Refresher<'_, R, S>,
    owner: &str,
    schedule: TokenSchedule,
    stats: &TokenStats,
) -> Result<u64, registrar_core::PortError> {
    let at = refresher.clock.now_s();
    let horizon = at + schedule.check_every.as_secs();
    let rows = refresher.state.due_tokens(horizon).await?;
    let mut next_due = horizon;
    let mut expiring = 0;
    let mut due = Vec::new();
    for row in rows {
        let DueToken {
            manifest,
            resource,
            token,
        } = row;
        let serves = serves_tokens(resource.as_ref());
        if serves
            && let Some(t) = &token
            && let Some(exp) = t.expires_at
            && t.last_result != "ok"
            && expiring_unrefreshed(at, exp, EXPIRY_WARNING_S)
        {
            expiring += 1;
            tracing::warn!(path = %manifest.path, expires_at = exp, last_result = %t.last_result, "Token is about to expire unrefreshed.");
        }
        let due_at = token.as_ref().map_or(0, |t| t.next_refresh_at);
        if due_at <= at {
            due.push((manifest, resource, token, serves));
        } else {
            next_due = next_due.min(due_at);
        }
    }
    stats
        .expiring_unrefreshed
        .store(expiring, Ordering::Relaxed);
    let claim_until = at + schedule.claim_for.as_secs();
    let done: Vec<Option<u64>> = stream::iter(due)
        .map(|(manifest, resource, token, serves)| async move {
            let seen = token.as_ref().map(|t| t.next_refresh_at);
            match refresher
                .state
                .claim_refresh(&manifest.arn, seen, owner, at, claim_until)
                .await
            {
                Ok(true) => {}
                Ok(false) => return None, // another worker has it
                Err(e) => {
                    tracing::warn!(path = %manifest.path, error = %e, "Refresh claim failed.");
                    return None;
                }
            }
            if !serves {
                return park(refresher, &manifest, token.as_ref(), at).await;
            }
            let result = refresher
                .refresh(&manifest, token.as_ref(), resource.as_ref())
                .await;
            let counter = match (&result.error, result.refused) {
                (None, _) => &stats.refreshed,
                (Some(_), Some(super::Refusing::Secret)) => &stats.refused_secret,
                (Some(_), Some(super::Refusing::Entry)) => &stats.refused_entry,
                (Some(_), None) => &stats.failed,
            };
            counter.fetch_add(1, Ordering::Relaxed);
            Some(result.state.next_refresh_at)
        })
        .buffer_unordered(schedule.concurrency.max(1))
        .collect()
        .await;
    Ok(done.into_iter().flatten().fold(next_due, u64::min))
}

/// A manifest row of an agent entry takes no token: its token item is scheduled an hour out,
/// as a refusal is, so the index does not hand it to every look (a resource that becomes a
/// server is looked at again within the hour, or at once by `tokens refresh`).
async fn park<R: Registry, S: StateStore>(
    refresher: &Refresher<'_, R, S>,
    manifest: &registrar_core::tokens::ManifestFields,
    previous: Option<&TokenState>,
    at: u64,
) -> Option<u64> {
    let state = TokenState {
        next_refresh_at: at + REFUSAL_RECHECK_SECS,
        last_result: "not refreshed: agent entries take no stored credential".into(),
        failures: 0,
        expires_at: None,
        client_id: previous.and_then(|p| p.client_id.clone()),
        refreshed_at: previous.and_then(|p| p.refreshed_at),
    };
    if let Err(e) = refresher.state.record_token(&manifest.arn, &state).await {
        tracing::warn!(path = %manifest.path, error = %e, "Token state could not be recorded.");
    }
    Some(state.next_refresh_at)
}
