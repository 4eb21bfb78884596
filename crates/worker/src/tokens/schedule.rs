//! The worker's token loop: refresh each token when it is due (about 80% of its lifetime),
//! exactly once across replicas (a conditional claim in DynamoDB), retry failures well before
//! expiry, and warn about tokens about to expire unrefreshed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::{StreamExt, stream};
use registrar_core::plan::RecordedResource;
use registrar_core::ports::{Clock, DueToken, Registry, StateStore, TokenStore};
use registrar_core::refresh::{EXPIRY_WARNING_S, TokenState, expiring_unrefreshed};
use registrar_core::tokens::ManifestFields;
use tokio_util::sync::CancellationToken;

use super::{REFUSAL_RECHECK_SECS, Refreshed, Refresher, serves_tokens};

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

/// How long a refresh claim lasts by default.
pub const CLAIM_FOR: Duration = Duration::from_secs(60);

/// How long one refresh may take when its claim lasts `claim`: two thirds of it, so the claim
/// (kept in whole seconds, compared against other workers' clocks) surely outlives the refresh.
pub fn refresh_deadline(claim: Duration) -> Duration {
    claim * 2 / 3
}

/// How often the loop looks, at most, and how long a claim lasts.
#[derive(Debug, Clone, Copy)]
pub struct TokenSchedule {
    pub check_every: Duration,
    pub claim_for: Duration,
    pub concurrency: usize,
}

/// The refresh of one due row, as the loop drives it: the [`Refresher`] in the worker, a
/// scripted one in tests.
pub trait RowRefresh: Sync {
    /// Refreshes `row`'s token and records how it went, giving up once `within` has passed
    /// (recorded as a transient failure).
    fn refresh_row(
        &self,
        row: &ManifestFields,
        previous: Option<&TokenState>,
        recorded: Option<&RecordedResource>,
        within: Duration,
    ) -> impl Future<Output = Refreshed> + Send;
}

impl<R: Registry, S: StateStore> RowRefresh for Refresher<'_, R, S> {
    fn refresh_row(
        &self,
        row: &ManifestFields,
        previous: Option<&TokenState>,
        recorded: Option<&RecordedResource>,
        within: Duration,
    ) -> impl Future<Output = Refreshed> + Send {
        self.refresh(row, previous, recorded, within)
    }
}

/// One worker's token loop.
#[derive(Debug)]
pub struct TokenLoop<'a, S, F> {
    pub state: &'a S,
    pub clock: &'a dyn Clock,
    pub refresh: &'a F,
    /// This worker, as its claims name it.
    pub owner: &'a str,
    pub schedule: TokenSchedule,
    pub stats: &'a TokenStats,
}

impl<S: TokenStore, F: RowRefresh> TokenLoop<'_, S, F> {
    /// Runs until `stop`.
    pub async fn run(&self, stop: &CancellationToken) {
        loop {
            let wake = match self.tick().await {
                Ok(next_due) => {
                    let until_due =
                        Duration::from_secs(next_due.saturating_sub(self.clock.now_s()));
                    until_due.clamp(Duration::from_millis(500), self.schedule.check_every)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "Token rows could not be read; trying again.");
                    self.schedule.check_every
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
    /// It reads only the tokens the store's due index says are worth a look before the next
    /// pass can come (`now + check_every`): those due, those falling due meanwhile (they set the
    /// wake-up), and those about to expire unrefreshed (the gauge). An idle fleet costs one
    /// empty Query.
    async fn tick(&self) -> Result<u64, registrar_core::PortError> {
        let at = self.clock.now_s();
        let horizon = at + self.schedule.check_every.as_secs();
        let rows = self.state.due_tokens(horizon).await?;
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
        self.stats
            .expiring_unrefreshed
            .store(expiring, Ordering::Relaxed);
        let done: Vec<Option<u64>> = stream::iter(due)
            .map(|(manifest, resource, token, serves)| async move {
                self.claim_and_refresh(&manifest, resource.as_ref(), token.as_ref(), serves)
                    .await
            })
            .buffer_unordered(self.schedule.concurrency.max(1))
            .collect()
            .await;
        Ok(done.into_iter().flatten().fold(next_due, u64::min))
    }

    /// Claims one due row and refreshes it; the time it is due next, unless another worker had
    /// it. The claim is taken when the refresh starts (a row may wait for a slot behind slower
    /// ones), and the refresh is abandoned before the claim can run out.
    async fn claim_and_refresh(
        &self,
        manifest: &ManifestFields,
        resource: Option<&RecordedResource>,
        token: Option<&TokenState>,
        serves: bool,
    ) -> Option<u64> {
        let seen = token.map(|t| t.next_refresh_at);
        let now = self.clock.now_s();
        let claim_until = now + self.schedule.claim_for.as_secs();
        match self
            .state
            .claim_refresh(&manifest.arn, seen, self.owner, now, claim_until)
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
            return self.park(manifest, token, now).await;
        }
        let within = refresh_deadline(self.schedule.claim_for);
        let result = self
            .refresh
            .refresh_row(manifest, token, resource, within)
            .await;
        let counter = match (&result.error, result.refused) {
            (None, _) => &self.stats.refreshed,
            (Some(_), Some(super::Refusing::Secret)) => &self.stats.refused_secret,
            (Some(_), Some(super::Refusing::Entry)) => &self.stats.refused_entry,
            (Some(_), None) => &self.stats.failed,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        Some(result.state.next_refresh_at)
    }

    /// A manifest row of an agent entry takes no token: its token item is scheduled an hour
    /// out, as a refusal is, so the index does not hand it to every look (a resource that
    /// becomes a server is looked at again within the hour, or at once by `tokens refresh`).
    async fn park(
        &self,
        manifest: &ManifestFields,
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
        if let Err(e) = self.state.record_token(&manifest.arn, &state).await {
            tracing::warn!(path = %manifest.path, error = %e, "Token state could not be recorded.");
        }
        Some(state.next_refresh_at)
    }
}

#[cfg(test)]
mod tests {
    //! The loop on a paused clock, with the in-memory state: which rows a look refreshes, one
    //! refresher per token across workers, claims that outlive their refreshes, and failures
    //! retried before the token expires.

    use std::sync::{Arc, Mutex};

    use registrar_core::desired::{DeriveOptions, DesiredEntry, gateway_entry};
    use registrar_core::ports::{Registry, ResourceStore};
    use registrar_testkit::fixtures::{gateway, recorded, token};
    use registrar_testkit::{MemoryRegistry, MemoryState, TestClock};

    use super::*;

    const ISSUER: &str = "https://idp.example.com";

    fn jwt_entry(n: usize, issuer: &str) -> DesiredEntry {
        let name = format!("jwt{n}");
        gateway_entry(
            &gateway(&name, &format!("gw-{n}"), Some(issuer)),
            DeriveOptions::default(),
        )
        .expect("registrable")
    }

    /// `n` JWT gateways with manifest rows (and records), each with the token state `token_of`
    /// gives it (`None`: never refreshed).
    async fn rows(
        state: &MemoryState,
        n: usize,
        issuer: &str,
        token_of: impl Fn(usize) -> Option<TokenState>,
    ) -> Vec<DesiredEntry> {
        let mut entries = Vec::new();
        for i in 0..n {
            let d = jwt_entry(i, issuer);
            state.record(&recorded(&d)).await.expect("record");
            let m = d
                .manifest
                .clone()
                .expect("a JWT gateway has a manifest row");
            state.put_manifest(&m).await.expect("manifest");
            if let Some(t) = token_of(i) {
                state.record_token(&m.arn, &t).await.expect("token");
            }
            entries.push(d);
        }
        entries
    }

    #[derive(Debug, Clone)]
    struct Call {
        worker: &'static str,
        path: String,
        started_ms: u64,
        ended_ms: u64,
        within: Duration,
    }

    /// A refresh that takes `takes` and succeeds, recording its state as the real one does;
    /// every call goes into the shared log.
    #[derive(Debug)]
    struct Scripted<'a> {
        worker: &'static str,
        state: &'a MemoryState,
        clock: &'a TestClock,
        takes: Duration,
        log: Arc<Mutex<Vec<Call>>>,
    }

    impl RowRefresh for Scripted<'_> {
        async fn refresh_row(
            &self,
            row: &ManifestFields,
            _previous: Option<&TokenState>,
            _recorded: Option<&RecordedResource>,
            within: Duration,
        ) -> Refreshed {
            let started_ms = self.clock.now_ms();
            tokio::time::sleep(self.takes).await;
            let now = self.clock.now_s();
            let state = token(now, now + 2880);
            self.state
                .record_token(&row.arn, &state)
                .await
                .expect("token");
            self.log.lock().expect("log").push(Call {
                worker: self.worker,
                path: row.path.clone(),
                started_ms,
                ended_ms: self.clock.now_ms(),
                within,
            });
            Refreshed {
                path: row.path.clone(),
                state,
                error: None,
                refused: None,
                enabled_now: false,
            }
        }
    }

    fn schedule(concurrency: usize) -> TokenSchedule {
        TokenSchedule {
            check_every: Duration::from_secs(15),
            claim_for: CLAIM_FOR,
            concurrency,
        }
    }

    fn paths(log: &Mutex<Vec<Call>>) -> Vec<String> {
        let mut p: Vec<String> = log
            .lock()
            .expect("log")
            .iter()
            .map(|c| c.path.clone())
            .collect();
        p.sort();
        p
    }

    #[tokio::test(start_paused = true)]
    async fn a_look_refreshes_what_is_due_and_wakes_for_the_next() {
        let clock = TestClock::standard();
        let state = MemoryState::new(Arc::new(TestClock::standard()));
        let now = clock.now_s();
        let entries = rows(&state, 4, ISSUER, |i| match i {
            0 => None,                              // never refreshed: due at once
            1 => Some(token(now - 2890, now - 10)), // overdue
            2 => Some(token(now - 2870, now + 10)), // due before the next look
            _ => Some(token(now, now + 2880)),      // due in 48 minutes
        })
        .await;
        let log = Arc::new(Mutex::new(Vec::new()));
        let refresh = Scripted {
            worker: "w1",
            state: &state,
            clock: &clock,
            takes: Duration::from_secs(2),
            log: Arc::clone(&log),
        };
        let stats = TokenStats::default();
        let tokens = TokenLoop {
            state: &state,
            clock: &clock,
            refresh: &refresh,
            owner: "w1",
            schedule: schedule(4),
            stats: &stats,
        };
        let next = tokens.tick().await.expect("a look");
        assert_eq!(
            paths(&log),
            [entries[0].path.clone(), entries[1].path.clone()]
        );
        assert_eq!(next, now + 10, "it wakes when the next token falls due");
        assert_eq!(stats.refreshed.load(Ordering::Relaxed), 2);

        // At that time the third is refreshed, and nothing else.
        tokio::time::advance(Duration::from_secs(8)).await;
        tokens.tick().await.expect("a look");
        assert_eq!(log.lock().expect("log").len(), 3);
        assert_eq!(log.lock().expect("log")[2].path, entries[2].path);
    }

    #[tokio::test(start_paused = true)]
    async fn two_workers_refresh_each_due_token_once() {
        let clock = TestClock::standard();
        let state = MemoryState::new(Arc::new(TestClock::standard()));
        let now = clock.now_s();
        rows(&state, 12, ISSUER, |i| {
            (i % 2 == 0).then(|| token(now - 3000, now - 1))
        })
        .await;
        let log = Arc::new(Mutex::new(Vec::new()));
        let stats = TokenStats::default();
        let scripted = |worker| Scripted {
            worker,
            state: &state,
            clock: &clock,
            takes: Duration::from_secs(5),
            log: Arc::clone(&log),
        };
        let (r1, r2) = (scripted("w1"), scripted("w2"));
        let worker = |owner, refresh| TokenLoop {
            state: &state,
            clock: &clock,
            refresh,
            owner,
            schedule: schedule(3),
            stats: &stats,
        };
        let (w1, w2) = (worker("w1", &r1), worker("w2", &r2));
        let (a, b) = tokio::join!(w1.tick(), w2.tick());
        a.expect("w1 looked");
        b.expect("w2 looked");
        let done = paths(&log);
        let mut unique = done.clone();
        unique.dedup();
        assert_eq!(done.len(), 12, "every due token refreshed: {done:?}");
        assert_eq!(unique, done, "none refreshed twice");
        let by_w2 = log
            .lock()
            .expect("log")
            .iter()
            .filter(|c| c.worker == "w2")
            .count();
        assert!(
            (1..12).contains(&by_w2),
            "both workers took a share ({by_w2} by w2)"
        );
        // A second look by either finds nothing due.
        let (a, b) = tokio::join!(w1.tick(), w2.tick());
        assert!(a.is_ok() && b.is_ok());
        assert_eq!(log.lock().expect("log").len(), 12);
    }

    #[tokio::test(start_paused = true)]
    async fn a_claim_outlives_the_slowest_refresh_of_its_look() {
        // One slot, three due tokens, each refresh taking 35 s: the third starts 70 s into the
        // look. A claim taken when the look began would have run out at 60 s; another worker
        // looking at 80 s would then refresh the third token a second time.
        let clock = TestClock::standard();
        let state = MemoryState::new(Arc::new(TestClock::standard()));
        let now = clock.now_s();
        rows(&state, 3, ISSUER, |_| Some(token(now - 3000, now - 1))).await;
        let log = Arc::new(Mutex::new(Vec::new()));
        let stats = TokenStats::default();
        let scripted = |worker| Scripted {
            worker,
            state: &state,
            clock: &clock,
            takes: Duration::from_secs(35),
            log: Arc::clone(&log),
        };
        let (r1, r2) = (scripted("w1"), scripted("w2"));
        let worker = |owner, refresh| TokenLoop {
            state: &state,
            clock: &clock,
            refresh,
            owner,
            schedule: schedule(1),
            stats: &stats,
        };
        let (w1, w2) = (worker("w1", &r1), worker("w2", &r2));
        let late_look = async {
            tokio::time::sleep(Duration::from_secs(80)).await;
            w2.tick().await
        };
        let (a, b) = tokio::join!(w1.tick(), late_look);
        a.expect("w1 looked");
        b.expect("w2 looked");
        let calls = log.lock().expect("log").clone();
        assert_eq!(calls.len(), 3, "{calls:?}");
        assert!(calls.iter().all(|c| c.worker == "w1"), "{calls:?}");
        assert_eq!(calls[2].started_ms - calls[0].started_ms, 70_000);
        // Each refresh is told to finish well inside the claim it started under.
        assert!(calls.iter().all(|c| c.within == Duration::from_secs(40)));
        assert!(calls.iter().all(|c| c.ended_ms - c.started_ms < 40_000));
    }

    /// A socket that accepts connections and never answers: an IdP that hangs.
    fn hanging_idp() -> (std::net::TcpListener, String) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let issuer = format!("http://{}", listener.local_addr().expect("addr"));
        (listener, issuer)
    }

    /// What each attempt of the real refresher left in the state.
    #[derive(Debug)]
    struct Attempt {
        started_s: u64,
        failures: u32,
        next_refresh_at: u64,
        last_result: String,
    }

    struct Watched<'a, F> {
        inner: &'a F,
        clock: &'a TestClock,
        attempts: Mutex<Vec<Attempt>>,
    }

    impl<F: RowRefresh> RowRefresh for Watched<'_, F> {
        async fn refresh_row(
            &self,
            row: &ManifestFields,
            previous: Option<&TokenState>,
            recorded: Option<&RecordedResource>,
            within: Duration,
        ) -> Refreshed {
            let started_s = self.clock.now_s();
            let done = self
                .inner
                .refresh_row(row, previous, recorded, within)
                .await;
            self.attempts.lock().expect("log").push(Attempt {
                started_s,
                failures: done.state.failures,
                next_refresh_at: done.state.next_refresh_at,
                last_result: done.state.last_result.clone(),
            });
            done
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_hanging_idp_is_abandoned_within_the_claim_and_retried_before_expiry() {
        let (_idp, issuer) = hanging_idp();
        let clock = TestClock::standard();
        let state = MemoryState::new(Arc::new(TestClock::standard()));
        let registry = MemoryRegistry::new("registrar");
        let now = clock.now_s();
        // Refreshed long ago; it expires in ten minutes.
        let expires_at = now + 600;
        let entries = rows(&state, 1, &issuer, |_| {
            Some(TokenState {
                expires_at: Some(expires_at),
                ..token(now - 3000, now)
            })
        })
        .await;
        registry.register(&entries[0]).await.expect("our entry");
        let clock_arc: Arc<dyn Clock> = Arc::new(TestClock::standard());
        let oidc = crate::net::oauth::Oidc::new(
            Duration::from_secs(300),
            Duration::from_secs(300),
            clock_arc,
        )
        .expect("client");
        let secrets = super::super::secrets::SecretResolver::new(
            Arc::new(|_: &str| Some("s3cret".to_owned())),
            "{name}",
            None,
        );
        let trusted = [issuer.clone()];
        let trust = registrar_core::trust::TrustPolicy::new(&registrar_core::trust::TrustConfig {
            trusted: &trusted,
            token_hosts: &[],
            cognito_regions: &[],
            cognito_issuer_base: registrar_core::trust::COGNITO_ISSUER_BASE,
            cognito_pools: &[],
            client_issuers: &[],
            registry_client: None,
            registry_issuer: None,
        })
        .expect("trust");
        let refresher = Refresher {
            registry: &registry,
            state: &state,
            oidc: &oidc,
            secrets: &secrets,
            trust: &trust,
            identity: None,
            enable: registrar_core::enable::EnablePolicy::default(),
            policy: registrar_core::refresh::RefreshPolicy::default(),
            clock: &clock,
        };
        let watched = Watched {
            inner: &refresher,
            clock: &clock,
            attempts: Mutex::new(Vec::new()),
        };
        let stats = TokenStats::default();
        let tokens = TokenLoop {
            state: &state,
            clock: &clock,
            refresh: &watched,
            owner: "w1",
            schedule: schedule(1),
            stats: &stats,
        };
        let stop = CancellationToken::new();
        let until_expiry = async {
            tokio::time::sleep(Duration::from_secs(600)).await;
            stop.cancel();
        };
        tokio::join!(tokens.run(&stop), until_expiry);

        let attempts = watched.attempts.into_inner().expect("log");
        assert!(attempts.len() >= 4, "retried again and again: {attempts:?}");
        for (i, a) in attempts.iter().enumerate() {
            assert_eq!(a.failures, i as u32 + 1, "{attempts:?}");
            assert!(a.last_result.contains("got no token within 40 s"), "{a:?}");
            if a.started_s + 40 < expires_at - 60 {
                assert!(
                    a.next_refresh_at <= expires_at - 60,
                    "the retry comes before the token expires: {a:?}"
                );
            }
        }
        for pair in attempts.windows(2) {
            assert!(
                pair[1].started_s >= pair[0].next_refresh_at,
                "no retry before its time: {attempts:?}"
            );
            assert!(
                pair[1].started_s - pair[0].started_s >= 40,
                "an abandoned refresh is not retried under its own claim: {attempts:?}"
            );
        }
        assert_eq!(stats.failed.load(Ordering::Relaxed), attempts.len() as u64);
        assert_eq!(stats.expiring_unrefreshed.load(Ordering::Relaxed), 1);
    }
}
