//! The soak: three real workers under a stream of creates, updates and deletes while they are
//! SIGKILLed and restarted, the registry answers 5xx or hangs for stretches, AgentCore throttles
//! for a stretch, and poison messages are mixed in. At the end, after a DLQ replay, the registry
//! equals what AgentCore holds, entries we do not own are untouched, and every poison message is
//! in the DLQ with its reason (copies of one, left by at-least-once delivery, counted once).
//!
//! CI runs it reduced (`SOAK_SECONDS`, default 40 s of traffic); `SOAK_SECONDS=600 cargo test
//! --test soak -- --nocapture` runs a long one.

#![allow(clippy::disallowed_methods)] // tests time real processes on the real clock

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use aws_sdk_bedrockagentcorecontrol::types::{
    AgentRuntimeArtifact, AuthorizerType, ContainerConfiguration, GatewayProtocolType,
    NetworkConfiguration, NetworkMode, ServerProtocol,
};
use registrar_ingest::sqs::{Received, attr};
use registrar_tests::env::{TestEnv, eventually};
use registrar_tests::events::EventPath;
use registrar_tests::fixtures::{GatewayAuth, create_gateway, create_runtime};
use registrar_tests::proxy::Proxy;
use registrar_tests::standin::Fault;
use registrar_worker::aws::agentcore::AgentCoreAws;
use registrar_worker::aws::fleet::Fleet;
use registrar_worker::resync::scan::{Known, Progress, scan_fleet};
use serde_json::{Value, json};
use tokio::process::Child;

const ROLE: &str = "arn:aws:iam::123456789012:role/AgentCoreRole";

/// A small deterministic generator (xorshift): the same run every time.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Gateway,
    Runtime,
}

#[derive(Debug, Default)]
struct Figures {
    events: usize,
    creates: usize,
    updates: usize,
    deletes: usize,
    poison: usize,
    kills: usize,
    registry_5xx_stretches: usize,
    registry_hangs: usize,
    throttle_stretches: usize,
}

async fn update(env: &TestEnv, kind: Kind, id: &str, n: usize) -> anyhow::Result<()> {
    let description = format!("revision {n}");
    match kind {
        Kind::Gateway => {
            let current = env
                .agentcore
                .get_gateway()
                .gateway_identifier(id)
                .send()
                .await?;
            env.agentcore
                .update_gateway()
                .gateway_identifier(id)
                .name(current.name())
                .description(description)
                .role_arn(ROLE)
                .protocol_type(GatewayProtocolType::Mcp)
                .authorizer_type(AuthorizerType::AwsIam)
                .send()
                .await?;
        }
        Kind::Runtime => {
            env.agentcore
                .update_agent_runtime()
                .agent_runtime_id(id)
                .description(description)
                .agent_runtime_artifact(AgentRuntimeArtifact::ContainerConfiguration(
                    ContainerConfiguration::builder()
                        .container_uri("123456789012.dkr.ecr.us-east-1.amazonaws.com/soak:2")
                        .build()?,
                ))
                .role_arn(ROLE)
                .network_configuration(
                    NetworkConfiguration::builder()
                        .network_mode(NetworkMode::Public)
                        .build()?,
                )
                .send()
                .await?;
        }
    }
    Ok(())
}

/// Puts the CloudTrail event of a call through EventBridge.
async fn announce(path: &EventPath, kind: Kind, verb: &str, id: &str) -> anyhow::Result<()> {
    match kind {
        Kind::Gateway => {
            path.put(
                &format!("{verb}Gateway"),
                json!({"gatewayIdentifier": id}),
                json!({"gatewayId": id}),
            )
            .await
        }
        Kind::Runtime => {
            path.put(
                &format!("{verb}AgentRuntime"),
                json!({"agentRuntimeId": id}),
                json!({"agentRuntimeId": id}),
            )
            .await
        }
    }
}

fn poison(n: usize) -> (String, &'static str) {
    match n % 3 {
        0 => (format!("{{not json {n}"), "malformed"),
        1 => (
            json!({"version": "0", "id": format!("other-{n}"), "detail-type": "Object Created",
                   "source": "aws.s3", "detail": {"bucket": "b"}})
            .to_string(),
            "not-cloudtrail",
        ),
        _ => (
            json!({"version": "0", "id": format!("noid-{n}"), "detail-type": "AWS API Call via CloudTrail",
                   "source": "aws.bedrock-agentcore", "region": "us-east-1",
                   "detail": {"eventVersion": "1.09", "eventSource": "bedrock-agentcore.amazonaws.com",
                              "eventName": "DeleteGateway", "awsRegion": "us-east-1",
                              "requestParameters": {}, "responseElements": {}}})
            .to_string(),
            "missing-identifier",
        ),
    }
}

fn spawn(env: &TestEnv, path: &EventPath, aws: &Proxy) -> anyhow::Result<Child> {
    env.spawn_worker_with_env(
        path,
        &[
            "--concurrency",
            "8",
            "--visibility-timeout",
            "6",
            "--registry-timeout",
            "2",
            "--registry-attempts",
            "2",
            "--shutdown-grace",
            "2",
        ],
        &[("AWS_ENDPOINT_URL", &aws.url())],
    )
}

async fn wait_drained(path: &EventPath, limit: Duration) -> anyhow::Result<bool> {
    let started = Instant::now();
    let mut quiet = 0;
    while started.elapsed() < limit {
        if path.depth().await? == 0 {
            quiet += 1;
            if quiet >= 6 {
                return Ok(true);
            }
        } else {
            quiet = 0;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Ok(false)
}

/// The entries AgentCore implies now, by path: (kind, name, description, tags, fingerprint).
async fn expected(env: &TestEnv, aws: &Proxy) -> anyhow::Result<BTreeMap<String, Value>> {
    // Through the proxy: updated resources read as READY there, as they would in AWS.
    let config = env.config.to_builder().endpoint_url(aws.url()).build();
    let fleet = Fleet::one(AgentCoreAws::new(&config));
    let scanned = scan_fleet(
        &fleet,
        registrar_tests::env::options().scan,
        &Known::default(),
        &Progress::default(),
    )
    .await;
    anyhow::ensure!(scanned.errors.is_empty(), "scan: {:?}", scanned.errors);
    Ok(scanned
        .observation
        .desired
        .iter()
        .map(|d| {
            let (name, description, tags) = match &d.body {
                registrar_core::desired::EntryBody::Server(s) => {
                    (s.name.clone(), s.description.clone(), s.tags.clone())
                }
                registrar_core::desired::EntryBody::Agent(a) => {
                    (a.name.clone(), a.description.clone(), a.tags.clone())
                }
            };
            (
                d.path.clone(),
                json!({"name": name, "description": description, "tags": tags, "fingerprint": d.fingerprint}),
            )
        })
        .collect())
}

/// The registry's entries we own, in the same shape.
fn actual(env: &TestEnv) -> BTreeMap<String, Value> {
    let db = env.standin.db();
    let servers = db.servers.iter().map(|(p, e)| (p, e, "server_name"));
    let agents = db.agents.iter().map(|(p, e)| (p, e, "name"));
    servers
        .chain(agents)
        .filter(|(_, e, _)| e["metadata"]["source"] == "agentcore-registrar")
        .map(|(p, e, name_key)| {
            (
                p.clone(),
                json!({"name": e[name_key], "description": e["description"], "tags": e["tags"],
                       "fingerprint": e["metadata"]["fingerprint"]}),
            )
        })
        .collect()
}

/// The JSON object (a log line or one of its spans) that has `key`.
fn find_key<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    match v {
        Value::Object(m) if m.contains_key(key) => Some(v),
        Value::Object(m) => m.values().find_map(|c| find_key(c, key)),
        Value::Array(a) => a.iter().find_map(|c| find_key(c, key)),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn three_workers_under_faults_converge_to_agentcore() -> anyhow::Result<()> {
    let seconds: u64 = std::env::var("SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(40);
    let traffic = Duration::from_secs(seconds);
    let env = TestEnv::start().await?;
    let aws = Proxy::start(&env.moto.url()).await?;
    aws.controls().complete_updates = true;
    let path = EventPath::create(&env.config, "soak", 4, 6).await?;

    // Entries that are not ours, one of them on a path a resource will want.
    let foreign = [
        json!({"path": "/soak-gw-00003", "server_name": "Hand made", "description": "by alice",
               "proxy_pass_url": "https://alice.internal/mcp", "tags": ["alice"], "registered_by": "alice",
               "is_enabled": true, "status": "active", "metadata": {"owner": "alice"}}),
        json!({"path": "/inventory", "server_name": "Inventory", "description": "by bob",
               "proxy_pass_url": "https://bob.internal/mcp", "tags": [], "registered_by": "bob",
               "is_enabled": false, "status": "active", "metadata": {"owner": "bob"}}),
    ];
    for f in &foreign {
        env.standin.seed_server(f.clone());
    }

    let mut workers: Vec<Child> = (0..3)
        .map(|_| spawn(&env, &path, &aws))
        .collect::<anyhow::Result<_>>()?;
    let mut figures = Figures::default();
    let mut rng = Rng(0x5eed_cafe_f00d_d00d);
    let mut live: Vec<(Kind, String)> = Vec::new();
    let mut poison_reasons: BTreeMap<String, usize> = BTreeMap::new();
    let mut created = 0usize;
    let started = Instant::now();
    let mut next_fault = Duration::from_secs(4);
    let mut fault_turn = 0usize;

    while started.elapsed() < traffic {
        // Faults, in turn, every few seconds.
        if started.elapsed() >= next_fault {
            match fault_turn % 4 {
                0 => {
                    let i = rng.below(workers.len());
                    workers[i].start_kill()?;
                    let _ = workers[i].wait().await;
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    workers[i] = spawn(&env, &path, &aws)?;
                    figures.kills += 1;
                }
                1 => {
                    env.standin.inject(Fault::status(503, 25));
                    figures.registry_5xx_stretches += 1;
                }
                2 => {
                    aws.throttle("bedrock-agentcore", Duration::from_secs(3));
                    figures.throttle_stretches += 1;
                }
                _ => {
                    env.standin.inject(Fault {
                        delay: Some(Duration::from_secs(4)),
                        ..Fault::status(503, 4)
                    });
                    figures.registry_hangs += 1;
                }
            }
            fault_turn += 1;
            next_fault += Duration::from_secs(3);
        }

        // Traffic: mostly creates, then updates and deletes of what exists; a poison now and then.
        let roll = rng.below(100);
        if roll < 8 {
            let (body, reason) = poison(figures.poison);
            path.send_raw(&body).await?;
            *poison_reasons.entry(reason.to_owned()).or_default() += 1;
            figures.poison += 1;
        } else if roll < 50 || live.len() < 3 {
            created += 1;
            let kind = if rng.below(3) == 0 {
                Kind::Runtime
            } else {
                Kind::Gateway
            };
            let id = match kind {
                Kind::Gateway => {
                    create_gateway(
                        &env.agentcore,
                        &format!("soak-gw-{created:05}"),
                        GatewayAuth::Iam,
                    )
                    .await?
                }
                Kind::Runtime => {
                    create_runtime(
                        &env.agentcore,
                        &format!("soak_rt_{created:05}"),
                        ServerProtocol::Http,
                    )
                    .await?
                }
            };
            announce(&path, kind, "Create", &id).await?;
            live.push((kind, id));
            figures.creates += 1;
        } else if roll < 80 {
            let (kind, id) = live[rng.below(live.len())].clone();
            update(&env, kind, &id, figures.updates).await?;
            announce(&path, kind, "Update", &id).await?;
            figures.updates += 1;
        } else {
            let (kind, id) = live.swap_remove(rng.below(live.len()));
            match kind {
                Kind::Gateway => {
                    env.agentcore
                        .delete_gateway()
                        .gateway_identifier(&id)
                        .send()
                        .await?;
                }
                Kind::Runtime => {
                    env.agentcore
                        .delete_agent_runtime()
                        .agent_runtime_id(&id)
                        .send()
                        .await?;
                }
            }
            announce(&path, kind, "Delete", &id).await?;
            figures.deletes += 1;
        }
        figures.events += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    eprintln!("soak: traffic done: {figures:?}");
    // Quiet: faults off, let the workers drain the queue.
    env.standin.db().faults.clear();
    assert!(
        wait_drained(&path, Duration::from_secs(120)).await?,
        "the queue drained\n{}",
        env.worker_logs()
    );
    let dead_before = path.dlq_total().await?;
    eprintln!("soak: drained; {dead_before} dead-lettered; replaying");
    let replay = env
        .cli(&[
            "dlq",
            "replay",
            "--queue-url",
            &path.queue_url,
            "--dlq-url",
            &path.dlq_url,
            "--output",
            "json",
        ])
        .await?;
    assert!(
        replay.status.success(),
        "{}",
        String::from_utf8_lossy(&replay.stderr)
    );
    let replayed: Value = serde_json::from_slice(&replay.stdout)?;
    let replayed = replayed["moved"].as_array().map_or(0, Vec::len);
    assert!(
        wait_drained(&path, Duration::from_secs(120)).await?,
        "drained after the replay"
    );

    eprintln!("soak: replayed {replayed}; comparing");
    // 1. The registry equals what AgentCore holds: same paths, same fields (but for a path an
    // entry we do not own holds: that one is a reported conflict).
    let mut want = expected(&env, &aws).await?;
    want.retain(|p, _| !foreign.iter().any(|f| f["path"] == p.as_str()));
    let converged = eventually(Duration::from_secs(30), || actual(&env) == want).await;
    let have = actual(&env);
    let missing: Vec<&String> = want.keys().filter(|p| !have.contains_key(*p)).collect();
    let extra: Vec<&String> = have.keys().filter(|p| !want.contains_key(*p)).collect();
    let differing: Vec<&String> = want
        .iter()
        .filter(|(p, v)| have.get(*p).is_some_and(|h| h != *v))
        .map(|(p, _)| p)
        .collect();
    // 2. Entries we do not own are untouched (the contested path stays alice's).
    for f in &foreign {
        let path_of = f["path"].as_str().unwrap_or_default();
        assert_eq!(
            env.standin.server(path_of).as_ref(),
            Some(f),
            "{path_of} untouched"
        );
    }
    // 3. Every poison message is in the DLQ, with its reason; nothing else is. SQS delivers at
    // least once (moto's receive can hand one message to two workers at once), and a worker
    // killed between copying a message to the DLQ and deleting it dead-letters it again: such
    // copies carry their first's origin and body, and count once.
    let dead = path.dead_letters().await?;
    let mut first_of_origin: BTreeMap<String, &Received> = BTreeMap::new();
    let mut duplicates = 0;
    for d in &dead {
        let origin = d.origin().to_owned();
        match first_of_origin.get(&origin) {
            Some(first) => {
                assert_eq!(first.body, d.body, "copies of {origin} differ");
                duplicates += 1;
            }
            None => {
                first_of_origin.insert(origin, d);
            }
        }
    }
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    for d in first_of_origin.values() {
        *reasons
            .entry(
                d.attributes
                    .get(attr::REASON_CODE)
                    .cloned()
                    .unwrap_or_default(),
            )
            .or_default() += 1;
    }
    let retried: BTreeSet<String> = env
        .worker_logs()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| {
            let span = find_key(&v, "receive_count")?;
            (span["receive_count"].as_u64()? > 1).then(|| span["message_id"].to_string())
        })
        .collect();
    println!(
        "soak: {seconds} s of traffic: {} events ({} creates, {} updates, {} deletes, {} poison); \
         faults: {} SIGKILLs, {} registry 5xx stretches, {} registry hangs, {} AgentCore throttling \
         stretches ({} calls throttled); messages retried {}; dead-lettered {dead_before}, replayed \
         {replayed}, left in the DLQ {} (all poison: {:?}; {duplicates} of them copies); entries {} (expected {}); difference: \
         {} missing, {} extra, {} differing",
        figures.events,
        figures.creates,
        figures.updates,
        figures.deletes,
        figures.poison,
        figures.kills,
        figures.registry_5xx_stretches,
        figures.registry_hangs,
        figures.throttle_stretches,
        aws.controls().throttled,
        retried.len(),
        dead.len(),
        reasons,
        have.len(),
        want.len(),
        missing.len(),
        extra.len(),
        differing.len(),
    );
    assert!(
        converged,
        "registry differs from AgentCore: missing {missing:?}, extra {extra:?}, differing {differing:?}\n{}",
        env.worker_logs()
    );
    assert_eq!(
        reasons, poison_reasons,
        "the DLQ holds the poison, by reason"
    );
    assert!(
        figures.kills >= 1
            && figures.registry_5xx_stretches >= 1
            && figures.throttle_stretches >= 1
            && figures.registry_hangs >= 1,
        "every kind of fault was injected: {figures:?}"
    );
    assert!(figures.updates > 0 && figures.deletes > 0);
    drop(workers);
    Ok(())
}
