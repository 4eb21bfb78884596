//! `registrar worker`: the deployed main job. The SQS consumer, a start-up rescan (ready when it
//! is done) and a periodic jittered rescan, `/healthz` `/readyz` `/metrics`, and a graceful stop
//! on SIGTERM/SIGINT.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use registrar_core::ports::{AgentCore, Registry, StateStore};
use tokio_util::sync::CancellationToken;

use crate::consumer::{Consumer, ConsumerStats};
use crate::rescan::{RescanLeader, RescanSchedule, RescanStats};
use crate::resync::resync;
use crate::resync::scan::Progress;

#[derive(Debug, Clone)]
struct Telemetry {
    /// `/healthz` fails once the receive loop has not gone round for this long.
    stall_limit: std::time::Duration,
    consumer: Arc<ConsumerStats>,
    rescans: Arc<RescanStats>,
    tokens: Arc<crate::tokens::schedule::TokenStats>,
    clock: Arc<dyn registrar_core::ports::Clock>,
}

/// The worker's token refresh (off when `None`).
#[derive(Debug)]
pub struct TokenSettings {
    pub oidc: crate::net::oauth::Oidc,
    pub secrets: crate::tokens::secrets::SecretResolver,
    pub trust: registrar_core::trust::TrustPolicy,
    pub identity: Option<registrar_core::plan::RegistryIdentity>,
    pub enable: registrar_core::enable::EnablePolicy,
    pub policy: registrar_core::refresh::RefreshPolicy,
    pub schedule: crate::tokens::schedule::TokenSchedule,
}

/// Writes the key metrics as one embedded-metric-format line per interval (stderr, shipped by
/// the container's log driver): CloudWatch gets them without a scraper.
async fn emf_loop(t: &Telemetry, every: std::time::Duration, stop: CancellationToken) {
    use crate::emf::{Deltas, Sample, document};
    let mut deltas = Deltas::default();
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
        let (c, r, k) = (&t.consumer, &t.rescans, &t.tokens);
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let now_ms = t.clock.now_ms();
        let duration_count = deltas.of("duration_count", get(&c.duration_count));
        let duration_sum = deltas.of("duration_sum", get(&c.duration_sum_ms));
        let last_rescan = get(&r.last_success_unix);
        let count = |name, value: f64| Sample {
            name,
            value,
            unit: "Count",
        };
        let mut samples = vec![
            count("ReconcilesDone", deltas.of("done", get(&c.reconciles[0]))),
            count(
                "ReconcilesWaiting",
                deltas.of("waiting", get(&c.reconciles[1])),
            ),
            count(
                "ReconcilesFailed",
                deltas.of("failed", get(&c.reconciles[2])),
            ),
            count("DeadLettered", deltas.of("dead", get(&c.dead_lettered))),
            count(
                "TokenRefusals",
                deltas.of("refused_secret", get(&k.refused_secret))
                    + deltas.of("refused_entry", get(&k.refused_entry)),
            ),
            count(
                "TokensExpiringUnrefreshed",
                get(&k.expiring_unrefreshed) as f64,
            ),
            Sample {
                name: "QueueLagMs",
                value: get(&c.last_queue_lag_ms) as f64,
                unit: "Milliseconds",
            },
        ];
        // What a rescan saw goes out once, from the replica that ran it: another replica's
        // older view would keep an alarm from clearing.
        if deltas.of("rescans", get(&r.runs)) > 0.0 {
            samples.extend([
                count("DeletionsBlocked", get(&r.last_blocked) as f64),
                count("UnauthenticatedGateways", get(&r.unauthenticated) as f64),
                count(
                    "TargetsNeedingAuthorization",
                    get(&r.needs_authorization) as f64,
                ),
            ]);
        }
        if duration_count > 0.0 {
            samples.push(Sample {
                name: "ReconcileDurationMs",
                value: duration_sum / duration_count,
                unit: "Milliseconds",
            });
        }
        if last_rescan > 0 {
            samples.push(Sample {
                name: "LastRescanAgeSeconds",
                value: (now_ms / 1000).saturating_sub(last_rescan) as f64,
                unit: "Seconds",
            });
        }
        eprintln!("{}", document(now_ms, "worker", &samples));
    }
}

/// 200 while the receive loop goes round; 503, saying for how long, once it has stalled.
async fn healthz(State(t): State<Telemetry>) -> (StatusCode, String) {
    let last = t.consumer.last_tick_ms.load(Ordering::Relaxed);
    match crate::consumer::liveness(last, t.clock.now_ms(), t.stall_limit) {
        Ok(()) => (StatusCode::OK, "ok\n".into()),
        Err(why) => {
            tracing::error!(reason = %why, "Unhealthy.");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("unhealthy: {why}\n"),
            )
        }
    }
}

async fn readyz(State(t): State<Telemetry>) -> (StatusCode, &'static str) {
    if t.rescans.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ready\n")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "start-up rescan not finished\n",
        )
    }
}

async fn metrics(State(t): State<Telemetry>) -> String {
    let c = &t.consumer;
    let r = &t.rescans;
    let k = &t.tokens;
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, samples: &[(&str, u64)]| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, value) in samples {
            let _ = writeln!(out, "{name}{labels} {value}");
        }
    };
    let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
    metric(
        "registrar_messages_received_total",
        "counter",
        "SQS messages received.",
        &[("", get(&c.received))],
    );
    metric(
        "registrar_messages_total",
        "counter",
        "Messages by how they ended.",
        &[
            ("{ending=\"done\"}", get(&c.done)),
            ("{ending=\"ignored\"}", get(&c.ignored)),
            ("{ending=\"superseded\"}", get(&c.superseded)),
            ("{ending=\"waiting\"}", get(&c.waiting)),
            ("{ending=\"retried\"}", get(&c.retried)),
            ("{ending=\"dead_lettered\"}", get(&c.dead_lettered)),
            ("{ending=\"released\"}", get(&c.released)),
        ],
    );
    metric(
        "registrar_keys_settled_at_lease_total",
        "counter",
        "Keys concluded without a reconcile: the lease showed another replica's settled reconcile, begun after the message was queued.",
        &[("", get(&c.settled_at_lease))],
    );
    metric(
        "registrar_keys_covered_by_running_total",
        "counter",
        "Keys concluded without a reconcile of their own: a reconcile of the key in this worker, running when the message arrived, began after it was queued and settled.",
        &[("", get(&c.covered_by_running))],
    );
    metric(
        "registrar_reconciles_total",
        "counter",
        "Key reconciles by result.",
        &[
            ("{result=\"done\"}", get(&c.reconciles[0])),
            ("{result=\"waiting\"}", get(&c.reconciles[1])),
            ("{result=\"failed\"}", get(&c.reconciles[2])),
        ],
    );
    metric(
        "registrar_reconcile_errors_total",
        "counter",
        "Failed key reconciles by error class.",
        &[
            ("{class=\"transient\"}", get(&c.errors[0])),
            ("{class=\"terminal\"}", get(&c.errors[1])),
            ("{class=\"conflict\"}", get(&c.errors[2])),
        ],
    );
    metric(
        "registrar_delete_failures_total",
        "counter",
        "Messages SQS refused to delete.",
        &[("", get(&c.delete_failures))],
    );
    metric(
        "registrar_in_flight",
        "gauge",
        "Messages being processed.",
        &[("", get(&c.in_flight))],
    );
    metric(
        "registrar_queue_lag_seconds",
        "gauge",
        "Event time to receive time, last message.",
        &[("", get(&c.last_queue_lag_ms) / 1000)],
    );
    metric(
        "registrar_rescans_total",
        "counter",
        "Full rescans by result.",
        &[
            ("{result=\"ok\"}", get(&r.runs)),
            ("{result=\"failed\"}", get(&r.failures)),
        ],
    );
    metric(
        "registrar_rescan_drift_total",
        "counter",
        "Registry writes full rescans had to make.",
        &[("", get(&r.drift))],
    );
    metric(
        "registrar_deletions_blocked_total",
        "counter",
        "Deregistrations refused by the deletion guard or policy.",
        &[("", get(&r.deletions_blocked))],
    );
    metric(
        "registrar_last_rescan_success_timestamp_seconds",
        "gauge",
        "Unix time of the last successful rescan.",
        &[("", get(&r.last_success_unix))],
    );
    metric(
        "registrar_token_refreshes_total",
        "counter",
        "Egress token refreshes by result.",
        &[
            ("{result=\"ok\"}", get(&k.refreshed)),
            ("{result=\"failed\"}", get(&k.failed)),
        ],
    );
    metric(
        "registrar_token_refusals_total",
        "counter",
        "Token refreshes refused: the client secret may not go to the IdP (untrusted_issuer), or the registry entry is not verified as ours and pointing at its gateway (unverified_entry). Nothing was sent.",
        &[
            ("{reason=\"untrusted_issuer\"}", get(&k.refused_secret)),
            ("{reason=\"unverified_entry\"}", get(&k.refused_entry)),
        ],
    );
    metric(
        "registrar_tokens_expiring_unrefreshed",
        "gauge",
        "Tokens expiring within a minute whose last refresh failed.",
        &[("", get(&k.expiring_unrefreshed))],
    );
    metric(
        "registrar_unauthenticated_gateways",
        "gauge",
        "Gateways with no inbound authorization (authorizerType NONE), as the last rescan saw them.",
        &[("", get(&r.unauthenticated))],
    );
    metric(
        "registrar_targets_needing_authorization",
        "gauge",
        "Gateway targets waiting for an administrator's OAuth consent (*_PENDING_AUTH), as the last rescan saw them.",
        &[("", get(&r.needs_authorization))],
    );
    metric(
        "registrar_ready",
        "gauge",
        "1 once the start-up rescan is done.",
        &[("", u64::from(r.ready.load(Ordering::Relaxed)))],
    );
    let _ = writeln!(
        out,
        "# HELP registrar_reconcile_duration_seconds Key reconcile durations.\n# TYPE registrar_reconcile_duration_seconds histogram"
    );
    let mut cumulative = 0;
    for (bound, bucket) in crate::consumer::DURATION_BUCKETS
        .iter()
        .zip(&c.duration_buckets)
    {
        cumulative += get(bucket);
        let _ = writeln!(
            out,
            "registrar_reconcile_duration_seconds_bucket{{le=\"{bound}\"}} {cumulative}"
        );
    }
    let count = get(&c.duration_count);
    let _ = writeln!(
        out,
        "registrar_reconcile_duration_seconds_bucket{{le=\"+Inf\"}} {count}"
    );
    let _ = writeln!(
        out,
        "registrar_reconcile_duration_seconds_sum {:.3}",
        get(&c.duration_sum_ms) as f64 / 1000.0
    );
    let _ = writeln!(out, "registrar_reconcile_duration_seconds_count {count}");
    out
}

/// Runs the worker until SIGTERM/SIGINT (or `shutdown`).
pub async fn run<A, R, S>(
    consumer: Consumer<A, R, S>,
    schedule: RescanSchedule,
    listen: Option<SocketAddr>,
    tokens: Option<TokenSettings>,
    emf_every: Option<std::time::Duration>,
    shutdown: CancellationToken,
) -> anyhow::Result<()>
where
    A: AgentCore + 'static,
    R: Registry + 'static,
    S: StateStore + 'static,
{
    let consumer = Arc::new(consumer);
    let rescans = Arc::new(RescanStats::default());
    let token_stats = Arc::new(crate::tokens::schedule::TokenStats::default());
    let telemetry = Telemetry {
        stall_limit: consumer.stall_limit(),
        consumer: Arc::clone(&consumer.stats),
        rescans: Arc::clone(&rescans),
        tokens: Arc::clone(&token_stats),
        clock: Arc::clone(&consumer.clock),
    };
    if let Some(every) = emf_every {
        let (telemetry, stop) = (telemetry.clone(), shutdown.clone());
        tokio::spawn(async move { emf_loop(&telemetry, every, stop).await });
    }
    if let Some(addr) = listen {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        tracing::info!(addr = %listener.local_addr()?, "Serving /healthz, /readyz and /metrics.");
        let app = Router::new()
            .route("/healthz", get(healthz))
            .route("/readyz", get(readyz))
            .route("/metrics", get(metrics))
            .with_state(telemetry);
        let stop = shutdown.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await;
        });
    }

    {
        let stop = shutdown.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("Stop signal received; finishing in-flight work.");
            stop.cancel();
        });
    }

    let rescanner = {
        let (consumer, rescans, stop) = (
            Arc::clone(&consumer),
            Arc::clone(&rescans),
            shutdown.clone(),
        );
        tokio::spawn(async move {
            let leader = RescanLeader {
                leases: &consumer.state,
                clock: &*consumer.clock,
                owner: &consumer.owner,
                at_startup: schedule.at_startup,
                every: schedule.every,
                stats: &rescans,
            };
            // Lower priority than event work: the rescan waits while messages are in flight.
            let progress = Progress {
                yield_to: Some(Arc::clone(&consumer.stats.in_flight)),
                ..Progress::default()
            };
            let rescan = || {
                resync(
                    &consumer.agentcore,
                    &consumer.registry,
                    &consumer.state,
                    schedule.options,
                    &progress,
                )
            };
            leader.run(rescan, &stop).await;
        })
    };
    let token_loop = tokens.map(|settings| {
        let (consumer, stats, stop) = (
            Arc::clone(&consumer),
            Arc::clone(&token_stats),
            shutdown.clone(),
        );
        tokio::spawn(async move {
            let refresher = crate::tokens::Refresher {
                registry: &consumer.registry,
                state: &consumer.state,
                oidc: &settings.oidc,
                secrets: &settings.secrets,
                trust: &settings.trust,
                identity: settings.identity,
                enable: settings.enable,
                policy: settings.policy,
                clock: &*consumer.clock,
            };
            crate::tokens::schedule::TokenLoop {
                state: &consumer.state,
                clock: &*consumer.clock,
                refresh: &refresher,
                owner: &consumer.owner,
                schedule: settings.schedule,
                stats: &stats,
            }
            .run(&stop)
            .await;
        })
    });
    Arc::clone(&consumer).run(shutdown.clone()).await;
    rescanner.abort();
    if let Some(t) = token_loop {
        t.abort();
    }
    tracing::info!("Worker stopped.");
    Ok(())
}

async fn wait_for_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}
