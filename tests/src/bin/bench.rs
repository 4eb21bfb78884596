//! `bench`: the figures of the README's "Benchmarks", measured side by side in one run on one
//! machine against the real local peers (moto, the registry stand-in, oidc-provider) and the
//! real `registrar` binary. `scripts/bench.sh` builds it in release mode and runs it.
//!
//! The network model: a loopback proxy in front of moto and one in front of the registry add a
//! fixed delay to every call (`--latency-ms`; 0 is plain loopback), the same for the registrar
//! and for the baseline.

#![allow(clippy::disallowed_methods)] // tests time real processes on the real clock

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use aws_sdk_bedrockagentcorecontrol::types::ServerProtocol;
use clap::Parser;
use futures::{StreamExt, TryStreamExt, stream};
use registrar_tests::env::{ADMIN_TOKEN, TestEnv, eventually, registrar_bin};
use registrar_tests::events::EventPath;
use registrar_tests::fixtures::{GatewayAuth, create_gateway, create_runtime};
use registrar_tests::idp::Idp;
use registrar_tests::moto::Moto;
use registrar_tests::proxy::{Proxy, Recorded, send};
use registrar_tests::standin::{Standin, User};
use registrar_worker::aws::state::DynamoState;

#[derive(Debug, Parser)]
#[command(about = "Benchmarks of agentcore-registrar against a sequential baseline")]
struct Args {
    /// Gateways and runtimes of the full-resync benchmark.
    #[arg(long, default_value_t = 1000)]
    gateways: usize,
    #[arg(long, default_value_t = 1000)]
    runtimes: usize,
    /// Network delays to measure the resync at (comma-separated milliseconds per call).
    #[arg(long, value_delimiter = ',', default_value = "0,20,50")]
    latency_ms: Vec<u64>,
    /// AWS and registry concurrency of the measured resync.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Events and distinct resources of the burst benchmark.
    #[arg(long, default_value_t = 5000)]
    burst_events: usize,
    #[arg(long, default_value_t = 500)]
    burst_resources: usize,
    /// Workers draining the burst's queue together.
    #[arg(long, default_value_t = 1)]
    burst_workers: usize,
    /// Queue the whole burst before any worker starts (a backlog), instead of while they run.
    #[arg(long)]
    burst_backlog: bool,
    /// Serve the burst's queue from moto with two SQS hot spots patched
    /// (`tests/moto/patched_sqs.py`: the same answers at a far smaller cost per message, so a
    /// queue of thousands no longer paces the workers).
    #[arg(long)]
    burst_patched_sqs: bool,
    /// Give DynamoDB a moto of its own in the burst, as the resync benchmark does (AWS serves
    /// its services independently); by default it shares AgentCore's.
    #[arg(long)]
    burst_dynamodb_apart: bool,
    /// Messages each burst worker processes at once (its --concurrency).
    #[arg(long, default_value_t = 32)]
    burst_concurrency: usize,
    /// Owned resources of the memory benchmark.
    #[arg(long, default_value_t = 10_000)]
    memory_resources: usize,
    /// CUSTOM_JWT gateways, token lifetime (s) and lifetimes observed in the token benchmark.
    #[arg(long, default_value_t = 500)]
    token_gateways: usize,
    #[arg(long, default_value_t = 30)]
    token_ttl: u64,
    #[arg(long, default_value_t = 4)]
    token_lifetimes: u64,
    /// Owned resources, those of them with tokens, and the seconds observed in the idle token
    /// loop benchmark.
    #[arg(long, default_value_t = 10_000)]
    idle_resources: usize,
    #[arg(long, default_value_t = 500)]
    idle_tokens: usize,
    #[arg(long, default_value_t = 120)]
    idle_window: u64,
    /// Which benchmarks: resync, burst, memory, tokens, idle-tokens.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "resync,burst,memory,tokens,idle-tokens"
    )]
    only: Vec<String>,
}

/// Servers and agents in a stand-in (one lock: a second would deadlock).
fn entries(standin: &Standin) -> usize {
    let db = standin.db();
    db.servers.len() + db.agents.len()
}

fn users() -> Vec<(String, User)> {
    vec![(ADMIN_TOKEN.to_owned(), User::admin("registrar"))]
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

/// Creates `gateways` IAM gateways and `runtimes` HTTP runtimes in moto, 16 at a time.
async fn seed(env: &TestEnv, prefix: &str, gateways: usize, runtimes: usize) -> anyhow::Result<()> {
    let ac = &env.agentcore;
    stream::iter(0..gateways)
        .map(|i| async move {
            create_gateway(ac, &format!("{prefix}-gw-{i:05}"), GatewayAuth::Iam).await
        })
        .buffer_unordered(16)
        .try_collect::<Vec<_>>()
        .await?;
    stream::iter(0..runtimes)
        .map(|i| async move {
            create_runtime(ac, &format!("{prefix}_rt_{i:05}"), ServerProtocol::Http).await
        })
        .buffer_unordered(16)
        .try_collect::<Vec<_>>()
        .await?;
    Ok(())
}

/// The proxies a measured run and its baseline reach their peers through.
struct Peers<'a> {
    /// moto for AgentCore and STS.
    aws: &'a Proxy,
    /// A second moto for DynamoDB: AWS serves its services independently, while one moto
    /// process serves about one request at a time (its threads share one interpreter).
    dynamodb: &'a Proxy,
    registry: &'a Proxy,
}

impl Peers<'_> {
    fn for_service(&self, service: &str) -> String {
        match service {
            "registry" => self.registry.url(),
            "dynamodb" => self.dynamodb.url(),
            _ => self.aws.url(),
        }
    }
}

/// Runs the real `registrar` with AWS and the registry behind the given proxies.
async fn registrar(
    env: &TestEnv,
    peers: &Peers<'_>,
    table: &str,
    args: &[&str],
) -> anyhow::Result<serde_json::Value> {
    let out = env
        .cli_with_env(
            args,
            &[
                ("AWS_ENDPOINT_URL", &peers.aws.url()),
                ("AWS_ENDPOINT_URL_DYNAMODB", &peers.dynamodb.url()),
                ("REGISTRY_URL", &peers.registry.url()),
                ("REGISTRAR_TABLE", table),
            ],
        )
        .await?;
    ensure!(
        out.status.success(),
        "registrar {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(serde_json::from_slice(&out.stdout)?)
}

fn count_by_service(calls: &[Recorded]) -> BTreeMap<String, usize> {
    let mut by = BTreeMap::new();
    for c in calls {
        *by.entry(c.service.clone()).or_default() += 1;
    }
    by
}

/// `service Operation` of an AWS call: the JSON protocols name it in `X-Amz-Target`; REST calls
/// (AgentCore) are named by method and the path with ids dropped.
fn operation_of(c: &Recorded) -> String {
    let op = c
        .headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .and_then(|t| t.rsplit('.').next())
        .map(str::to_owned)
        .unwrap_or_else(|| {
            let path = c.uri.split('?').next().unwrap_or_default();
            let shape: Vec<&str> = path
                .split('/')
                .filter(|s| !s.is_empty())
                .enumerate()
                .map(|(i, s)| if i % 2 == 1 { "{id}" } else { s })
                .collect();
            format!("{} /{}", c.method, shape.join("/"))
        });
    format!("{} {op}", c.service)
}

fn describe(by: &BTreeMap<String, usize>) -> String {
    by.iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The sequential baseline: the calls the registrar made, in the order they arrived, made one
/// after another by one HTTP client with nothing in between (the floor of any sequential
/// client). DynamoDB calls go to a fresh table and registry calls to a fresh stand-in, so every
/// call meets the same state it met the first time.
async fn replay(
    calls: &[Recorded],
    peers: &Peers<'_>,
    from_table: &str,
    to_table: &str,
) -> anyhow::Result<Duration> {
    let client = reqwest::Client::new();
    let from = format!("\"TableName\":\"{from_table}\"");
    let to = format!("\"TableName\":\"{to_table}\"");
    let started = Instant::now();
    for c in calls {
        let body = if c.service == "dynamodb" {
            String::from_utf8_lossy(&c.body).replace(&from, &to).into()
        } else {
            c.body.clone()
        };
        let base = peers.for_service(&c.service);
        send(&client, &base, &c.method, &c.uri, &c.headers, body).await?;
    }
    Ok(started.elapsed())
}

async fn bench_resync(args: &Args, out: &mut String) -> anyhow::Result<()> {
    let env = TestEnv::start().await?;
    let (g, r) = (args.gateways, args.runtimes);
    let seeding = Instant::now();
    seed(&env, "bench", g, r).await?;
    eprintln!(
        "bench: seeded {g} gateways and {r} runtimes in {}",
        secs(seeding.elapsed())
    );
    let conc = args.concurrency.to_string();
    let ddb_moto = Moto::start().await?;
    let ddb_config = ddb_moto.sdk_config().await;
    writeln!(
        out,
        "### Full resync: {g} gateways + {r} runtimes\n\n\
         | network delay per call | sequential baseline | registrar resync | ratio | calls (AWS by service; registry) | registry calls per new resource | no-change resync | its registry writes | its calls |\n\
         |---|---|---|---|---|---|---|---|---|"
    )?;
    // The stand-in's own request log, by kind of call, of each measured run.
    let mut by_kind: Vec<String> = Vec::new();
    for &latency in &args.latency_ms {
        let delay = Duration::from_millis(latency);
        let aws = Proxy::start(&env.moto.url()).await?;
        aws.set_latency(delay);
        let dynamodb = Proxy::start(&ddb_moto.url()).await?;
        dynamodb.set_latency(delay);
        let standin_a = Standin::start(0, users()).await?;
        let registry_a = Proxy::start(&standin_a.url()).await?;
        registry_a.set_latency(delay);
        let measured = Peers {
            aws: &aws,
            dynamodb: &dynamodb,
            registry: &registry_a,
        };
        let table_a = format!("bench-a-{latency}");
        DynamoState::new(&ddb_config, &table_a)
            .ensure_table()
            .await?;
        let record = |on: &Peers<'_>| {
            on.aws.record();
            on.dynamodb.record();
            on.registry.record();
        };
        let take = |on: &Peers<'_>| {
            let mut calls = [
                on.aws.take_recorded(),
                on.dynamodb.take_recorded(),
                on.registry.take_recorded(),
            ]
            .concat();
            calls.sort_by_key(|c| c.at);
            calls
        };

        standin_a.clear_log();
        record(&measured);
        let started = Instant::now();
        let flags = [
            "resync",
            "--output",
            "json",
            "--aws-concurrency",
            &conc,
            "--registry-concurrency",
            &conc,
        ];
        let report = registrar(&env, &measured, &table_a, &flags).await?;
        let first = started.elapsed();
        ensure!(
            report["registered"].as_u64() == Some((g + r) as u64),
            "first resync registered {} of {}",
            report["registered"],
            g + r
        );
        let calls = take(&measured);
        let by = count_by_service(&calls);
        let kinds = standin_a.calls_by_kind();
        standin_a.clear_log();
        // Every registry call but the two lists is spent on the new resources.
        let per_new = kinds
            .iter()
            .filter(|(k, _)| !k.starts_with("list "))
            .map(|(_, n)| n)
            .sum::<usize>() as f64
            / (g + r).max(1) as f64;

        record(&measured);
        let started = Instant::now();
        let again = registrar(&env, &measured, &table_a, &flags).await?;
        let second = started.elapsed();
        let calls2 = take(&measured);
        let kinds2 = standin_a.calls_by_kind();
        by_kind.push(format!(
            "At {latency} ms, registry calls by kind (the stand-in's request log), first resync: {}; no-change resync: {}.",
            describe(&kinds),
            if kinds2.is_empty() { "none".to_owned() } else { describe(&kinds2) }
        ));
        let writes2 = calls2
            .iter()
            .filter(|c| c.service == "registry" && c.method != "GET")
            .count();
        ensure!(
            again["unchanged"].as_u64() == Some((g + r) as u64),
            "no-change resync: {again}"
        );

        let standin_b = Standin::start(0, users()).await?;
        let registry_b = Proxy::start(&standin_b.url()).await?;
        registry_b.set_latency(delay);
        let table_b = format!("bench-b-{latency}");
        DynamoState::new(&ddb_config, &table_b)
            .ensure_table()
            .await?;
        let fresh = Peers {
            registry: &registry_b,
            ..measured
        };
        let baseline = replay(&calls, &fresh, &table_a, &table_b).await?;
        let replayed = entries(&standin_b);
        ensure!(
            replayed == g + r,
            "the replay left {replayed} entries, not {}",
            g + r
        );
        let ratio = baseline.as_secs_f64() / first.as_secs_f64();
        writeln!(
            out,
            "| {latency} ms | {} | {} | **{ratio:.1}x** | {} ({}) | {per_new:.2} | {} | {writes2} | {} |",
            secs(baseline),
            secs(first),
            calls.len(),
            describe(&by),
            secs(second),
            calls2.len()
        )?;
        eprintln!(
            "bench: resync at {latency} ms: baseline {baseline:?}, registrar {first:?}, no-change {second:?}"
        );
    }
    writeln!(out)?;
    for line in by_kind {
        writeln!(out, "{line}\n")?;
    }
    Ok(())
}

/// An EventBridge envelope of a CloudTrail record for `gateway_id`.
fn gateway_event(event_name: &str, gateway_id: &str, n: usize) -> String {
    let region = registrar_tests::REGION;
    let account = registrar_tests::ACCOUNT;
    serde_json::json!({
        "version": "0", "id": format!("eb-{n}"), "detail-type": "AWS API Call via CloudTrail",
        "source": "aws.bedrock-agentcore", "account": account, "time": "2026-11-22T10:00:00Z",
        "region": region, "resources": [],
        "detail": {
            "eventVersion": "1.09", "eventSource": "bedrock-agentcore.amazonaws.com",
            "eventName": event_name, "awsRegion": region, "eventTime": "2026-11-22T10:00:00Z",
            "eventID": format!("ct-{n}"), "readOnly": false, "eventType": "AwsApiCall",
            "managementEvent": true, "recipientAccountId": account,
            "requestParameters": {"gatewayIdentifier": gateway_id},
            "responseElements": {"gatewayId": gateway_id},
        },
    })
    .to_string()
}

/// For each of the gateways `ids`, when a ReceiveMessage answer first handed a worker one of its
/// events.
fn first_received(calls: &[Recorded], ids: &[String]) -> Vec<Option<Instant>> {
    let index: std::collections::HashMap<&str, usize> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| (id.as_str(), i))
        .collect();
    let mut first: Vec<Option<Instant>> = vec![None; ids.len()];
    for c in calls {
        let (Some(answer), Some(at)) = (&c.answer, c.answered_at) else {
            continue;
        };
        let Ok(answer) = serde_json::from_slice::<serde_json::Value>(answer) else {
            continue;
        };
        let bodies = answer["Messages"].as_array().into_iter().flatten();
        for body in bodies.filter_map(|m| m["Body"].as_str()) {
            let Ok(event) = serde_json::from_str::<serde_json::Value>(body) else {
                continue;
            };
            // An update names the gateway in its request, a create only in its response.
            let detail = &event["detail"];
            let id = detail["requestParameters"]["gatewayIdentifier"]
                .as_str()
                .or_else(|| detail["responseElements"]["gatewayId"].as_str());
            if let Some(&i) = id.and_then(|id| index.get(id)) {
                let seen = first[i].get_or_insert(at);
                *seen = (*seen).min(at);
            }
        }
    }
    first
}

/// Per resource, how long within its window its AWS calls (those naming its gateway id or its
/// name, and answered) were outstanding: the union of their spans, clipped to the window.
fn outstanding_on_aws(
    calls: &[Recorded],
    names: &std::collections::HashMap<String, usize>,
    windows: &[(Instant, Instant)],
) -> Vec<Duration> {
    let mut spans: Vec<Vec<(Instant, Instant)>> = vec![Vec::new(); windows.len()];
    for c in calls {
        let Some(answered) = c.answered_at else {
            continue;
        };
        let text = format!("{} {}", c.uri, String::from_utf8_lossy(&c.body));
        let mut named: Vec<usize> = text
            .split(|ch: char| !(ch.is_ascii_alphanumeric() || ch == '-'))
            .filter_map(|token| names.get(token).copied())
            .collect();
        named.sort_unstable();
        named.dedup();
        for i in named {
            let (from, to) = windows[i];
            let (start, end) = (c.at.max(from), answered.min(to));
            if start < end {
                spans[i].push((start, end));
            }
        }
    }
    spans
        .into_iter()
        .map(|mut s| {
            s.sort();
            let mut total = Duration::ZERO;
            let mut reach: Option<Instant> = None;
            for (start, end) in s {
                let start = reach.map_or(start, |r| start.max(r));
                if end > start {
                    total += end - start;
                }
                reach = Some(reach.map_or(end, |r| r.max(end)));
            }
            total
        })
        .collect()
}

/// Whether a request body names `name` as a whole word (the form encodes the path's slash).
fn mentions(body: &[u8], name: &str) -> bool {
    let text = String::from_utf8_lossy(body);
    text.match_indices(name).any(|(at, _)| {
        !text[at + name.len()..]
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
    })
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

async fn bench_burst(args: &Args, out: &mut String) -> anyhow::Result<()> {
    let env = TestEnv::start().await?;
    let n = args.burst_resources;
    let ac = &env.agentcore;
    let ids: Vec<String> = stream::iter(0..n)
        .map(
            |i| async move { create_gateway(ac, &format!("burst-{i:05}"), GatewayAuth::Iam).await },
        )
        .buffered(16)
        .try_collect()
        .await?;
    // The queue lives in a moto of its own: one moto process serves about one request at a time
    // (its threads share one interpreter), and the burst's SQS traffic would queue there behind the
    // worker's AgentCore and DynamoDB calls (in AWS they are different services).
    let sqs_moto = if args.burst_patched_sqs {
        Moto::start_patched_sqs().await?
    } else {
        Moto::start().await?
    };
    let path = EventPath::create(&sqs_moto.sdk_config().await, "burst", 5, 30).await?;
    let registry = Proxy::start(&env.standin.url()).await?;
    registry.record();
    let aws = Proxy::start(&env.moto.url()).await?;
    aws.record();
    // Their answer times say how long a registration waited on AgentCore and DynamoDB.
    aws.record_answers();
    // DynamoDB apart: the same table in a moto of its own, behind its own proxy.
    let ddb_moto = if args.burst_dynamodb_apart {
        let moto = Moto::start().await?;
        DynamoState::new(&moto.sdk_config().await, &env.table)
            .ensure_table()
            .await?;
        Some(moto)
    } else {
        None
    };
    let dynamodb = match &ddb_moto {
        Some(moto) => Some(Proxy::start(&moto.url()).await?),
        None => None,
    };
    if let Some(proxy) = &dynamodb {
        proxy.record();
        proxy.record_answers();
    }
    let sqs = Proxy::start(&sqs_moto.url()).await?;
    sqs.record();
    // Its ReceiveMessage answers say when each resource's first message reached a worker.
    sqs.record_answers();
    // The burst: every resource's create first, then updates round-robin, 10 per SendMessageBatch.
    let bodies: Vec<(usize, String)> = (0..args.burst_events)
        .map(|k| {
            let i = k % n;
            let name = if k < n {
                "CreateGateway"
            } else {
                "UpdateGateway"
            };
            (i, gateway_event(name, &ids[i], k))
        })
        .collect();
    let spawn = || {
        spawn_burst_workers(
            &env,
            &path,
            args.burst_workers.max(1),
            args.burst_concurrency,
            [&registry, &aws, &sqs],
            dynamodb.as_ref(),
        )
    };
    let early = if args.burst_backlog {
        None
    } else {
        Some(spawn().await?)
    };
    let mut first_sent: Vec<Option<Instant>> = vec![None; n];
    let started = Instant::now();
    for chunk in bodies.chunks(10) {
        let mut batch = path.sqs.send_message_batch().queue_url(&path.queue_url);
        for (j, (i, body)) in chunk.iter().enumerate() {
            first_sent[*i].get_or_insert_with(Instant::now);
            batch = batch.entries(
                aws_sdk_sqs::types::SendMessageBatchRequestEntry::builder()
                    .id(j.to_string())
                    .message_body(body)
                    .build()?,
            );
        }
        batch.send().await?;
    }
    let sent = started.elapsed();
    let BurstWorkers {
        children: workers,
        pids,
        listens,
        cpu_before,
    } = match early {
        Some(started) => started,
        None => {
            // A backlog: every event queued (and the margin passed) before any worker starts.
            tokio::time::sleep(Duration::from_millis(
                registrar_worker::fresh::MARGIN_MS + 500,
            ))
            .await;
            spawn().await?
        }
    };
    let all_in = eventually(Duration::from_secs(600), || {
        env.standin.db().servers.len() == n
    })
    .await;
    ensure!(
        all_in,
        "not every resource was registered\n{}",
        env.worker_logs()
    );
    // A backlog of thousands drains at moto's pace (its queue costs grow with its length).
    ensure!(
        path.drained(Duration::from_secs(if args.burst_backlog {
            1_200
        } else {
            120
        }))
        .await?,
        "the queue did not drain"
    );
    let drain = started.elapsed();
    let cpu = cpu_all(&pids)? - cpu_before;
    // Own processing: each reconcile, from its start to its end (its AgentCore, DynamoDB and
    // registry calls included), from the workers' histograms, merged.
    let mut reconciles = 0.0;
    let mut buckets: BTreeMap<String, f64> = BTreeMap::new();
    for listen in &listens {
        let metrics = reqwest::get(format!("http://{listen}/metrics"))
            .await?
            .text()
            .await?;
        for line in metrics.lines() {
            let Some((name, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let value: f64 = value.parse().unwrap_or(0.0);
            if let Some(le) = name
                .strip_prefix("registrar_reconcile_duration_seconds_bucket{le=\"")
                .and_then(|r| r.strip_suffix("\"}"))
            {
                *buckets.entry(le.to_owned()).or_default() += value;
            } else if name == "registrar_reconciles_total{result=\"done\"}" {
                reconciles += value;
            } else if name == "registrar_keys_settled_at_lease_total" {
                // Concluded at the lease, without a reconcile.
                reconciles -= value;
            }
        }
    }
    let total = buckets.get("+Inf").copied().unwrap_or(0.0);
    let mut bounds: Vec<(f64, f64)> = buckets
        .iter()
        .filter_map(|(le, n)| le.parse::<f64>().ok().map(|b| (b, *n)))
        .collect();
    bounds.sort_by(|a, b| a.0.total_cmp(&b.0));
    let within = |q: f64| {
        bounds.iter().find(|(_, n)| *n >= q * total).map_or_else(
            || "> 30 s".to_owned(),
            |(b, _)| format!("<= {} ms", b * 1000.0),
        )
    };
    let calls = registry.take_recorded();
    let mut by_operation: BTreeMap<String, usize> = BTreeMap::new();
    let sqs_calls = sqs.take_recorded();
    let first_received = first_received(&sqs_calls, &ids);
    // The emulator's part of a message's way to a worker: moto answering a receive that had
    // messages to hand out.
    let mut receive_service: Vec<Duration> = sqs_calls
        .iter()
        .filter(|c| {
            c.answer
                .as_deref()
                .is_some_and(|a| a.windows(11).any(|w| w == b"\"Messages\":"))
        })
        .filter_map(|c| Some(c.answered_at?.saturating_duration_since(c.at)))
        .collect();
    receive_service.sort();
    let mut aws_recorded = aws.take_recorded();
    if let Some(proxy) = &dynamodb {
        aws_recorded.extend(proxy.take_recorded());
    }
    // The bench sends the burst straight to moto; only the worker goes through `sqs`.
    for c in aws_recorded.iter().chain(&sqs_calls) {
        *by_operation.entry(operation_of(c)).or_default() += 1;
    }
    let aws_calls: usize = by_operation.values().sum();
    let agentcore_reads: usize = by_operation
        .iter()
        .filter(|(op, _)| op.starts_with("bedrock-agentcore"))
        .map(|(_, n)| n)
        .sum();
    let writes: Vec<&Recorded> = calls.iter().filter(|c| c.method != "GET").collect();
    let registrations = writes
        .iter()
        .filter(|c| c.uri.ends_with("/register"))
        .count();
    // Per resource: first sent, first handed to a worker, registration arriving at the registry.
    let timelines: Vec<(Instant, Instant, Instant)> = (0..n)
        .filter_map(|i| {
            let name = format!("burst-{i:05}");
            let registered = calls.iter().find(|c| {
                c.method == "POST" && c.uri.ends_with("/register") && mentions(&c.body, &name)
            })?;
            Some((first_sent[i]?, first_received[i]?, registered.at))
        })
        .collect();
    ensure!(
        timelines.len() == n,
        "{} of {n} resources have no send, receive and registration on record",
        n - timelines.len()
    );
    ensure!(
        timelines
            .iter()
            .all(|(sent, received, registered)| sent <= received && received <= registered),
        "a resource was registered before any of its events reached a worker"
    );
    let spread = |span: fn(&(Instant, Instant, Instant)) -> Duration| {
        let mut d: Vec<Duration> = timelines.iter().map(span).collect();
        d.sort();
        (secs(percentile(&d, 0.5)), secs(percentile(&d, 0.99)))
    };
    let end_to_end = spread(|(sent, _, registered)| registered.duration_since(*sent));
    let queue_wait = spread(|(sent, received, _)| received.saturating_duration_since(*sent));
    let own = spread(|(_, received, registered)| registered.saturating_duration_since(*received));
    let names: std::collections::HashMap<String, usize> = ids
        .iter()
        .enumerate()
        .flat_map(|(i, id)| [(id.clone(), i), (format!("burst-{i:05}"), i)])
        .collect();
    let windows: Vec<(Instant, Instant)> = timelines.iter().map(|(_, r, g)| (*r, *g)).collect();
    let on_aws = outstanding_on_aws(&aws_recorded, &names, &windows);
    let own_split = |part: &dyn Fn(usize) -> Duration| {
        let mut d: Vec<Duration> = (0..windows.len()).map(part).collect();
        d.sort();
        format!(
            "p50 {} ms / p99 {} ms",
            percentile(&d, 0.5).as_millis(),
            percentile(&d, 0.99).as_millis()
        )
    };
    let own_ms = own_split(&|i| windows[i].1.saturating_duration_since(windows[i].0));
    // The tail, resource by resource: when in the drain each came, and its time at moto.
    let slowest = {
        let start = windows.iter().map(|w| w.0).min();
        let mut by: Vec<usize> = (0..windows.len()).collect();
        by.sort_by_key(|&i| {
            std::cmp::Reverse(windows[i].1.saturating_duration_since(windows[i].0))
        });
        by.iter()
            .take(6)
            .map(|&i| {
                format!(
                    "{} ms at +{:.1} s ({} ms at moto)",
                    windows[i]
                        .1
                        .saturating_duration_since(windows[i].0)
                        .as_millis(),
                    start.map_or(0.0, |s| windows[i].0.duration_since(s).as_secs_f64()),
                    on_aws[i].as_millis()
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let waiting_on_aws = own_split(&|i| on_aws[i]);
    let the_rest = own_split(&|i| {
        (windows[i].1.saturating_duration_since(windows[i].0)).saturating_sub(on_aws[i])
    });
    writeln!(
        out,
        "### Burst: {} events for {n} resources through SQS ({} worker(s) of concurrency {}, {}, {}, loopback)\n\n\
         | sent in | drained in | registry writes | registrations | writes per resource | settled reconciles per resource | AgentCore reads per resource | event-to-registered p50 | p99 | until handed to a worker p50 | p99 | own processing p50 | p99 | reconcile p50 | p99 | worker CPU per event | dead-lettered |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n\
         | {} | {} | {} | {registrations} | {:.2} | {:.2} | {:.2} | {} | {} | {} | {} | {} | {} | {} | {} | {:.2} ms | {} |\n\n\
         Per resource: from its first event sent to the first of its messages handed to a \
         worker (a ReceiveMessage answer; in a backlog this includes the sending, the pause \
         before the workers start and its place in the line), and own processing from there to \
         its registration reaching the registry. Reconcile: the workers' histogram, a bound.\n",
        args.burst_events,
        args.burst_workers.max(1),
        args.burst_concurrency,
        if args.burst_backlog {
            "queued before the workers start"
        } else {
            "sent while they run"
        },
        match (args.burst_patched_sqs, args.burst_dynamodb_apart) {
            (true, true) => "moto's SQS patched (tests/moto/patched_sqs.py), DynamoDB apart",
            (true, false) => "moto's SQS patched (tests/moto/patched_sqs.py)",
            (false, true) => "moto's SQS as is, DynamoDB apart",
            (false, false) => "moto's SQS as is",
        },
        secs(sent),
        secs(drain),
        writes.len(),
        writes.len() as f64 / n as f64,
        reconciles / n as f64,
        agentcore_reads as f64 / n as f64,
        end_to_end.0,
        end_to_end.1,
        queue_wait.0,
        queue_wait.1,
        own.0,
        own.1,
        within(0.5),
        within(0.99),
        cpu * 1000.0 / args.burst_events as f64,
        path.dlq_total().await?
    )?;
    writeln!(
        out,
        "Own processing {own_ms}, split: waiting on AgentCore and DynamoDB (calls naming the resource, \
         outstanding) {waiting_on_aws}; the rest (the worker's work, and waits without such a \
         call: lease backoff, retries, STS, scheduling) {the_rest}. moto's SQS answering a ReceiveMessage that handed out messages: \
         p50 {} ms / p99 {} ms. The six slowest own processings, from the first handed out: {slowest}.\n",
        percentile(&receive_service, 0.5).as_millis(),
        percentile(&receive_service, 0.99).as_millis(),
    )?;
    writeln!(
        out,
        "The workers' AWS calls: {aws_calls} ({:.2} per event): {}.\n",
        aws_calls as f64 / args.burst_events as f64,
        by_operation
            .iter()
            .map(|(op, n)| format!("{op} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    )?;
    if std::env::var_os("BENCH_LOGS").is_some() {
        eprintln!("{}", env.worker_logs());
    }
    drop(workers);
    Ok(())
}

/// User + system CPU seconds a process has used (`/proc/<pid>/stat`, 100 ticks per second).
fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the parenthesised command name; utime and stime are the 14th and 15th.
    let rest = stat.rsplit(')').next().unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    Ok((ticks(11) + ticks(12)) / 100.0)
}

/// The workers of a burst: their processes, pids, metrics addresses, and CPU time at start.
struct BurstWorkers {
    children: Vec<tokio::process::Child>,
    pids: Vec<u32>,
    listens: Vec<String>,
    cpu_before: f64,
}

/// `count` workers on `path`, the registry, AWS and SQS reached through the given proxies.
async fn spawn_burst_workers(
    env: &TestEnv,
    path: &EventPath,
    count: usize,
    concurrency: usize,
    [registry, aws, sqs]: [&Proxy; 3],
    dynamodb: Option<&Proxy>,
) -> anyhow::Result<BurstWorkers> {
    let mut children = Vec::new();
    let mut listens = Vec::new();
    let concurrency = concurrency.to_string();
    for _ in 0..count {
        let listen = format!("127.0.0.1:{}", registrar_tests::moto::free_port()?);
        children.push(env.spawn_worker_with_env(
            path,
            &[
                "--concurrency",
                &concurrency,
                "--wait-base",
                "1",
                "--listen",
                &listen,
            ],
            &[
                ("REGISTRY_URL", &registry.url()),
                ("AWS_ENDPOINT_URL", &aws.url()),
                ("AWS_ENDPOINT_URL_SQS", &sqs.url()),
                (
                    "AWS_ENDPOINT_URL_DYNAMODB",
                    &dynamodb.map_or_else(|| aws.url(), Proxy::url),
                ),
            ],
        )?);
        listens.push(listen);
    }
    let pids: Vec<u32> = children
        .iter()
        .map(|w| w.id().context("worker pid"))
        .collect::<anyhow::Result<_>>()?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let cpu_before = cpu_all(&pids)?;
    Ok(BurstWorkers {
        children,
        pids,
        listens,
        cpu_before,
    })
}

/// CPU seconds of the processes, together.
fn cpu_all(pids: &[u32]) -> anyhow::Result<f64> {
    pids.iter().map(|&p| cpu_seconds(p)).sum()
}

/// VmRSS and VmHWM of a process, in MiB.
fn rss_mib(pid: u32) -> anyhow::Result<(f64, f64)> {
    std::fs::metadata(format!("/proc/{pid}/status"))?;
    Ok(registrar_tests::sim::memory_mib(Some(pid)))
}

async fn bench_memory(args: &Args, out: &mut String) -> anyhow::Result<()> {
    let env = TestEnv::start().await?;
    let path = EventPath::create(&env.config, "memory", 5, 30).await?;
    let idle = env.spawn_worker(&path, &[])?;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (idle_rss, _) = rss_mib(idle.id().context("worker pid")?)?;
    drop(idle);

    let half = args.memory_resources / 2;
    let seeding = Instant::now();
    seed(&env, "mem", half, args.memory_resources - half).await?;
    eprintln!(
        "bench: seeded {} resources in {}",
        args.memory_resources,
        secs(seeding.elapsed())
    );
    let port = registrar_tests::moto::free_port()?;
    let listen = format!("127.0.0.1:{port}");
    let started = Instant::now();
    let worker = env.spawn_worker(&path, &["--startup-rescan", "true", "--listen", &listen])?;
    let pid = worker.id().context("worker pid")?;
    let ready = format!("http://{listen}/readyz");
    loop {
        if reqwest::get(&ready)
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            break;
        }
        if started.elapsed() > Duration::from_secs(1800) {
            bail!("the start-up rescan did not finish\n{}", env.worker_logs());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let rescan = started.elapsed();
    let owned = entries(&env.standin);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (after, _) = rss_mib(pid)?;
    // Steady state: an allocator may give freed pages back a little later.
    tokio::time::sleep(Duration::from_secs(27)).await;
    let (settled, hwm) = rss_mib(pid)?;
    writeln!(
        out,
        "### Memory (worker RSS)\n\n\
         | idle, nothing owned | start-up rescan of {} resources | peak (VmHWM) | 3 s after it, {owned} owned | 30 s after it |\n\
         |---|---|---|---|---|\n\
         | {idle_rss:.1} MiB | {} | {hwm:.1} MiB | {after:.1} MiB | {settled:.1} MiB |\n",
        args.memory_resources,
        secs(rescan),
    )?;
    drop(worker);
    Ok(())
}

async fn bench_tokens(args: &Args, out: &mut String) -> anyhow::Result<()> {
    let env = TestEnv::start().await?;
    let ttl = Duration::from_secs(args.token_ttl);
    let idp = Idp::start("bench-client", "bench-secret", ttl).await?;
    env.trust_issuer(&idp.issuer);
    let ac = &env.agentcore;
    let auth = GatewayAuth::Jwt {
        discovery_url: idp.discovery_url(),
        clients: vec!["bench-client".into()],
    };
    let n = args.token_gateways;
    stream::iter(0..n)
        .map(|i| {
            let auth = auth.clone();
            async move { create_gateway(ac, &format!("tok-{i:05}"), auth).await }
        })
        .buffer_unordered(16)
        .try_collect::<Vec<_>>()
        .await?;
    let path = EventPath::create(&env.config, "tokens", 5, 30).await?;
    let _worker = env.spawn_worker_with_env(
        &path,
        &["--startup-rescan", "true", "--token-check-interval", "1"],
        &[("OAUTH_CLIENT_SECRET_bench-client", "bench-secret")],
    )?;
    let have_token = |env: &TestEnv| {
        env.standin
            .db()
            .servers
            .values()
            .filter(|e| e["auth_credential"].is_string())
            .count()
    };
    let first_round = Instant::now();
    ensure!(
        eventually(Duration::from_secs(600), || have_token(&env) == n).await,
        "not every gateway got a token\n{}",
        env.worker_logs()
    );
    let first_round = first_round.elapsed();
    let delivered_before = env
        .standin
        .writes()
        .iter()
        .filter(|w| w.path.ends_with("/auth-credential"))
        .count();
    let window = ttl * args.token_lifetimes as u32;
    let started = Instant::now();
    let mut worst = i64::MAX;
    let mut expired_seen = 0usize;
    while started.elapsed() < window {
        let now = registrar_worker::clock::now() as i64;
        for e in env.standin.db().servers.values() {
            if let Some(exp) = e["auth_credential"]
                .as_str()
                .and_then(registrar_core::refresh::jwt_exp)
            {
                let left = exp as i64 - now;
                worst = worst.min(left);
                if left <= 0 {
                    expired_seen += 1;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let delivered = env
        .standin
        .writes()
        .iter()
        .filter(|w| w.path.ends_with("/auth-credential"))
        .count()
        - delivered_before;
    writeln!(
        out,
        "### Token refresh at scale: {n} CUSTOM_JWT gateways, {}-second tokens, one worker\n\n\
         | first token for all | window observed | tokens fetched and delivered | per gateway per lifetime | worst time-to-expiry seen | expired tokens seen |\n\
         |---|---|---|---|---|---|\n\
         | {} | {} ({} lifetimes) | {delivered} | {:.2} | {worst} s | {expired_seen} |\n",
        args.token_ttl,
        secs(first_round),
        secs(window),
        args.token_lifetimes,
        delivered as f64 / (n as f64 * args.token_lifetimes as f64),
    )?;
    Ok(())
}

/// DynamoDB items a recorded call read, by its answer: what a Scan or Query evaluated
/// (`ScannedCount`, before any filter: DynamoDB bills reads by it), the item a GetItem found, the
/// items a BatchGetItem returned. Other operations read nothing here.
fn items_read(c: &Recorded) -> u64 {
    let Some(answer) = c.answer.as_ref() else {
        return 0;
    };
    let Ok(json) = serde_json::from_slice::<serde_json::Value>(answer) else {
        return 0;
    };
    let op = operation_of(c);
    match op.rsplit(' ').next().unwrap_or_default() {
        "Scan" | "Query" => json["ScannedCount"].as_u64().unwrap_or(0),
        "GetItem" => u64::from(json.get("Item").is_some()),
        "BatchGetItem" => json["Responses"].as_object().map_or(0, |t| {
            t.values()
                .filter_map(|v| v.as_array())
                .map(|a| a.len() as u64)
                .sum()
        }),
        _ => 0,
    }
}

/// Looks of the token loop among the calls: the first page of each read of the token items (a
/// Scan filtered to `token` items before the due index, a Query of the index after it).
fn token_looks(calls: &[Recorded]) -> u64 {
    calls
        .iter()
        .filter(|c| c.service == "dynamodb")
        .filter(|c| {
            let body = String::from_utf8_lossy(&c.body);
            let op = operation_of(c);
            let first_page = !body.contains("ExclusiveStartKey");
            let scan_of_tokens = op.ends_with(" Scan") && body.contains(r#"{"S":"token"}"#);
            let query_of_index = op.ends_with(" Query") && body.contains("due-tokens");
            first_page && (scan_of_tokens || query_of_index)
        })
        .count() as u64
}

/// Items read and calls made, by operation.
fn reads_by_operation(calls: &[Recorded]) -> BTreeMap<String, (u64, u64)> {
    let mut by: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for c in calls.iter().filter(|c| c.service == "dynamodb") {
        let slot = by.entry(operation_of(c)).or_default();
        slot.0 += 1;
        slot.1 += items_read(c);
    }
    by
}

fn describe_reads(by: &BTreeMap<String, (u64, u64)>) -> String {
    if by.is_empty() {
        return "none".into();
    }
    by.iter()
        .map(|(op, (calls, items))| format!("{op}: {calls} calls, {items} items"))
        .collect::<Vec<_>>()
        .join("; ")
}

/// An idle worker that owns `idle_resources` resources, `idle_tokens` of them with tokens due
/// far in the future: the DynamoDB items its token loop reads per hour. The table is seeded
/// through the state store's own writes (rows, key pointers, path claims, manifest rows and
/// token states exactly as the worker writes them), not by registering every resource.
async fn bench_idle_tokens(args: &Args, out: &mut String) -> anyhow::Result<()> {
    use registrar_core::desired::{Collection, Pointing};
    use registrar_core::identity::{ResourceKind, ResourceRef};
    use registrar_core::plan::RecordedResource;
    use registrar_core::ports::{ResourceStore, TokenStore};
    use registrar_core::refresh::TokenState;
    use registrar_core::tokens::{IdpVendor, ManifestFields};

    let env = TestEnv::start().await?;
    let state = env.state();
    let (n, with_tokens) = (
        args.idle_resources,
        args.idle_tokens.min(args.idle_resources),
    );
    let now = registrar_worker::clock::now();
    let (region, account) = (registrar_tests::REGION, registrar_tests::ACCOUNT);
    let seeding = Instant::now();
    stream::iter(0..n)
        .map(|i| {
            let state = &state;
            async move {
                let id = format!("idle-{i:05}-abcdefghij");
                let arn = format!("arn:aws:bedrock-agentcore:{region}:{account}:gateway/{id}");
                let path = format!("/idle-{i:05}");
                let url =
                    format!("https://{id}.gateway.bedrock-agentcore.{region}.amazonaws.com/mcp");
                let row = RecordedResource {
                    resource: ResourceRef {
                        kind: ResourceKind::Gateway,
                        arn: arn.clone(),
                        account: account.to_owned(),
                        region: region.to_owned(),
                        id: id.clone(),
                        gateway_id: None,
                    },
                    collection: Collection::Server,
                    path: path.clone(),
                    fingerprint: format!("fp-{i}"),
                    aws_updated_at: "2026-11-22T10:00:00Z".into(),
                    enabled_set: true,
                    pointing: Some(Pointing::new(&url, Some("bearer"))),
                    name: format!("idle-{i:05}"),
                    auth_label: "CUSTOM_JWT".into(),
                };
                state.claim_path(&path, &arn).await?;
                state.record(&row).await?;
                if i < with_tokens {
                    let discovery_url = "https://idp.example.com/.well-known/openid-configuration";
                    state
                        .put_manifest(&ManifestFields {
                            path: path.clone(),
                            arn: arn.clone(),
                            url,
                            discovery_url: discovery_url.into(),
                            allowed_clients: vec!["bench-client".into()],
                            allowed_audience: vec![],
                            allowed_scopes: vec!["gateway:invoke".into()],
                            idp_vendor: IdpVendor::detect(discovery_url),
                        })
                        .await?;
                    // Refreshed a minute ago, next due in a week: nothing falls due in the window.
                    state
                        .record_token(
                            &arn,
                            &TokenState {
                                expires_at: Some(now + 8 * 86_400),
                                next_refresh_at: now + 7 * 86_400 + i as u64,
                                last_result: "ok".into(),
                                failures: 0,
                                client_id: Some("bench-client".into()),
                                refreshed_at: Some(now - 60),
                            },
                        )
                        .await?;
                }
                Ok::<(), anyhow::Error>(())
            }
        })
        .buffer_unordered(16)
        .try_collect::<Vec<_>>()
        .await?;
    eprintln!(
        "bench: seeded {n} resources ({with_tokens} with tokens) in {}",
        secs(seeding.elapsed())
    );
    let path = EventPath::create(&env.config, "idle", 5, 30).await?;
    let dynamodb = Proxy::start(&env.moto.url()).await?;
    dynamodb.record_answers();
    dynamodb.record();
    let worker = env.spawn_worker_with_env(
        &path,
        &[],
        &[("AWS_ENDPOINT_URL_DYNAMODB", &dynamodb.url())],
    )?;
    // Start-up (a one-time cost) apart from the idle hours that follow.
    let startup = Duration::from_secs(10);
    tokio::time::sleep(startup).await;
    let first = dynamodb.take_recorded();
    dynamodb.record();
    let window = Duration::from_secs(args.idle_window);
    tokio::time::sleep(window).await;
    let calls = dynamodb.take_recorded();
    ensure!(
        worker.id().is_some(),
        "the worker stopped\n{}",
        env.worker_logs()
    );
    drop(worker);
    let startup_reads = reads_by_operation(&first);
    let reads = reads_by_operation(&calls);
    let items: u64 = reads.values().map(|(_, i)| i).sum();
    let requests: u64 = reads.values().map(|(c, _)| c).sum();
    let looks = token_looks(&calls);
    // On DynamoDB a look takes well under a second, so an idle loop looks every
    // --token-check-interval (15 s): 240 looks an hour. On moto a look that scans the whole
    // table can take longer than that, which caps the measured rate.
    let per_look = items as f64 / looks.max(1) as f64;
    let per_hour = |x: u64| x as f64 * 3600.0 / window.as_secs_f64();
    let commit = std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    writeln!(
        out,
        "### Token loop, idle worker, {n} resources / {with_tokens} tokens\n\n\
         | commit | window observed | looks | DynamoDB requests | items read | items per look | items read per hour (measured on moto) | per hour at 240 looks (DynamoDB pace) | first {} s (start-up) |\n\
         |---|---|---|---|---|---|---|---|---|\n\
         | {commit} | {} | {looks} | {requests} | {items} | {per_look:.0} | **{:.0}** | {:.0} | {} items |\n\n\
         In the window: {}. At start-up: {}.\n",
        startup.as_secs(),
        secs(window),
        per_hour(items),
        per_look * 240.0,
        startup_reads.values().map(|(_, i)| i).sum::<u64>(),
        describe_reads(&reads),
        describe_reads(&startup_reads),
    )?;
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    ensure!(
        registrar_bin().exists(),
        "{} is missing: build it first (scripts/bench.sh does)",
        registrar_bin().display()
    );
    let mut out = String::new();
    writeln!(
        out,
        "## Benchmark results\n\nMeasured {} on this machine ({} cores), `registrar` {} build.\n",
        std::process::Command::new("date")
            .arg("-u")
            .arg("+%Y-%m-%d %H:%M UTC")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        // `registrar` is taken from beside this binary: built with the same profile.
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
    )?;
    for name in &args.only {
        let started = Instant::now();
        match name.as_str() {
            "resync" => bench_resync(&args, &mut out).await?,
            "burst" => bench_burst(&args, &mut out).await?,
            "memory" => bench_memory(&args, &mut out).await?,
            "tokens" => bench_tokens(&args, &mut out).await?,
            "idle-tokens" => bench_idle_tokens(&args, &mut out).await?,
            other => {
                bail!("unknown benchmark {other:?}: use resync, burst, memory, tokens, idle-tokens")
            }
        }
        eprintln!("bench: {name} took {}", secs(started.elapsed()));
        print!("{out}");
        out.clear();
    }
    Ok(())
}
