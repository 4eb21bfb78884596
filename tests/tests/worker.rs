//! `registrar worker` end to end: events enter through `PutEvents` on moto's EventBridge with
//! the shipped pattern and reach the real worker process through the real queue.

use std::time::Duration;

use registrar_tests::env::{TestEnv, eventually};
use registrar_tests::events::EventPath;
use registrar_tests::fixtures::{GatewayAuth, create_gateway};
use registrar_tests::metrics::{Metrics, processed};
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn events_register_update_and_deregister_through_the_real_queue() -> anyhow::Result<()> {
    let env = TestEnv::start().await?;
    let path = EventPath::create(&env.config, "agentcore-events", 3, 10).await?;
    // The gateway answers CREATING to its first three reads.
    env.moto
        .set_transition(
            "bedrock-agentcore-control::gateway",
            json!({"progression": "manual", "times": 3}),
        )
        .await?;
    let id = create_gateway(
        &env.agentcore,
        "orders",
        GatewayAuth::cognito("us-east-1_P", "c1"),
    )
    .await?;
    let metrics = Metrics::on_free_port()?;
    let mut worker = env.spawn_worker(&path, &["--listen", &metrics.listen])?;

    // Ten duplicate events for the one resource (CloudTrail retries, client-token replays).
    for _ in 0..10 {
        path.put(
            "CreateGateway",
            json!({"name": "***"}),
            json!({"gatewayId": id, "status": "CREATING"}),
        )
        .await?;
    }
    assert!(
        eventually(Duration::from_secs(40), || env
            .standin
            .server("/orders")
            .is_some())
        .await,
        "registered once READY"
    );
    assert!(
        path.dead_letters().await?.is_empty(),
        "the waiting message never reached the DLQ"
    );

    // Every duplicate processed (all ten ended, the queue empty), then count: one write in all.
    processed(&[&metrics], &path, 10, Duration::from_secs(60)).await?;
    let writes = env.standin.writes().len();
    assert_eq!(
        writes, 1,
        "ten events, one write: the registration (CUSTOM_JWT waits for its token to be enabled)"
    );
    // Ten updates that changed nothing the registry holds: still no write.
    for _ in 0..10 {
        announce_update(&path, &id).await?;
    }
    processed(&[&metrics], &path, 20, Duration::from_secs(60)).await?;
    assert_eq!(
        env.standin.writes().len(),
        writes,
        "duplicates write nothing"
    );

    env.agentcore
        .delete_gateway()
        .gateway_identifier(&id)
        .send()
        .await?;
    path.put(
        "DeleteGateway",
        json!({"gatewayIdentifier": id}),
        json!({"gatewayId": id, "status": "DELETING"}),
    )
    .await?;
    assert!(
        eventually(Duration::from_secs(20), || env
            .standin
            .server("/orders")
            .is_none())
        .await,
        "deregistered"
    );

    // A poison message goes to the DLQ with its reason; the worker keeps serving.
    path.send_raw("{not json").await?;
    let id2 = create_gateway(&env.agentcore, "billing", GatewayAuth::Iam).await?;
    path.put("CreateGateway", json!({}), json!({"gatewayId": id2}))
        .await?;
    assert!(
        eventually(Duration::from_secs(20), || env
            .standin
            .server("/billing")
            .is_some())
        .await,
        "still serving"
    );
    let dead = path.dead_letters().await?;
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(
        dead[0]
            .attributes
            .get("registrar-reason-code")
            .map(String::as_str),
        Some("malformed")
    );

    // SIGTERM: the worker stops on its own, well within the grace period.
    let pid = worker.id().expect("pid");
    std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()?;
    let status = tokio::time::timeout(Duration::from_secs(15), worker.wait()).await??;
    assert!(status.success(), "{status}");
    Ok(())
}

fn kill(child: &tokio::process::Child, signal: &str) -> anyhow::Result<()> {
    let pid = child.id().ok_or_else(|| anyhow::anyhow!("no pid"))?;
    std::process::Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()?;
    Ok(())
}

fn registrations(env: &TestEnv) -> Vec<u16> {
    env.standin
        .log()
        .iter()
        .filter(|l| l.path == "/api/servers/register")
        .map(|l| l.status)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn two_workers_register_every_resource_exactly_once() -> anyhow::Result<()> {
    let env = TestEnv::start().await?;
    let path = EventPath::create(&env.config, "shared", 5, 10).await?;
    let mut ids = Vec::new();
    for i in 0..12 {
        ids.push(
            create_gateway(
                &env.agentcore,
                &format!("gw-{i:02}"),
                GatewayAuth::cognito("us-east-1_P", "c"),
            )
            .await?,
        );
    }
    let (ma, mb) = (Metrics::on_free_port()?, Metrics::on_free_port()?);
    let _a = env.spawn_worker(&path, &["--concurrency", "4", "--listen", &ma.listen])?;
    let _b = env.spawn_worker(&path, &["--concurrency", "4", "--listen", &mb.listen])?;
    // Every resource twice (create + a duplicate), so both workers see the same keys.
    for id in ids.iter().chain(ids.iter()) {
        path.put("CreateGateway", json!({}), json!({"gatewayId": id}))
            .await?;
    }
    assert!(
        eventually(Duration::from_secs(60), || env.standin.db().servers.len()
            == 12)
        .await
    );
    // Every duplicate processed too (24 messages ended between the two, the queue empty).
    processed(&[&ma, &mb], &path, 24, Duration::from_secs(60)).await?;
    let statuses = registrations(&env);
    assert_eq!(
        statuses,
        vec![201; 12],
        "each registered exactly once, no 409 from a conflicting write"
    );
    assert!(path.dead_letters().await?.is_empty());
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_killed_mid_reconcile_loses_nothing() -> anyhow::Result<()> {
    let env = TestEnv::start().await?;
    let path = EventPath::create(&env.config, "kill9", 5, 6).await?;
    let id = create_gateway(
        &env.agentcore,
        "survivor",
        GatewayAuth::cognito("us-east-1_P", "c"),
    )
    .await?;
    // The registration hangs, so the worker is killed in the middle of it.
    env.standin.inject(registrar_tests::standin::Fault {
        delay: Some(Duration::from_secs(20)),
        writes_only: true,
        ..registrar_tests::standin::Fault::status(503, 1)
    });
    let mut first = env.spawn_worker(&path, &["--visibility-timeout", "6"])?;
    path.put("CreateGateway", json!({}), json!({"gatewayId": id}))
        .await?;
    assert!(
        eventually(Duration::from_secs(20), || env
            .standin
            .arrived("/api/servers/register")
            == 1)
        .await,
        "hanging\n{}",
        env.worker_logs()
    );
    kill(&first, "-KILL")?;
    first.wait().await?;

    let _second = env.spawn_worker(&path, &["--visibility-timeout", "6"])?;
    assert!(
        eventually(Duration::from_secs(40), || env
            .standin
            .server("/survivor")
            .is_some())
        .await,
        "another worker finishes the work after the visibility timeout"
    );
    assert!(path.dead_letters().await?.is_empty());
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_releases_what_it_cannot_finish_so_another_worker_takes_it_at_once()
-> anyhow::Result<()> {
    let env = TestEnv::start().await?;
    // A long visibility timeout: only a release lets the second worker in quickly.
    let path = EventPath::create(&env.config, "term", 5, 120).await?;
    let id = create_gateway(
        &env.agentcore,
        "handed-over",
        GatewayAuth::cognito("us-east-1_P", "c"),
    )
    .await?;
    env.standin.inject(registrar_tests::standin::Fault {
        delay: Some(Duration::from_secs(30)),
        writes_only: true,
        ..registrar_tests::standin::Fault::status(503, 1)
    });
    let mut first = env.spawn_worker(
        &path,
        &["--visibility-timeout", "120", "--shutdown-grace", "1"],
    )?;
    path.put("CreateGateway", json!({}), json!({"gatewayId": id}))
        .await?;
    assert!(
        eventually(Duration::from_secs(20), || env
            .standin
            .arrived("/api/servers/register")
            == 1)
        .await,
        "hanging\n{}",
        env.worker_logs()
    );
    kill(&first, "-TERM")?;
    let status = tokio::time::timeout(Duration::from_secs(10), first.wait()).await??;
    assert!(status.success(), "exits within the grace period: {status}");

    let _second = env.spawn_worker(&path, &["--visibility-timeout", "120"])?;
    assert!(
        eventually(Duration::from_secs(60), || env
            .standin
            .server("/handed-over")
            .is_some())
        .await,
        "released (visibility 0) and its lease given up, so it did not wait 120 s"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_registry_503_stretch_is_retried_and_a_registry_that_keeps_failing_dead_letters_after_max_receives()
-> anyhow::Result<()> {
    let env = TestEnv::start().await?;
    let path = EventPath::create(&env.config, "flaky", 4, 10).await?;
    let ids = [
        create_gateway(
            &env.agentcore,
            "one",
            GatewayAuth::cognito("us-east-1_P", "c"),
        )
        .await?,
        create_gateway(
            &env.agentcore,
            "two",
            GatewayAuth::cognito("us-east-1_P", "c"),
        )
        .await?,
    ];
    // Four failed writes: with two attempts per reconcile, each message fails at most twice.
    env.standin.inject(registrar_tests::standin::Fault {
        writes_only: true,
        ..registrar_tests::standin::Fault::status(503, 4)
    });
    let _worker = env.spawn_worker(&path, &[])?;
    for id in &ids {
        path.put("CreateGateway", json!({}), json!({"gatewayId": id}))
            .await?;
    }
    assert!(
        eventually(Duration::from_secs(60), || env.standin.db().servers.len()
            == 2)
        .await,
        "converged after recovery"
    );
    assert!(
        path.dead_letters().await?.is_empty(),
        "retries stayed below maxReceiveCount"
    );

    // Now the registry fails for good: the message is tried maxReceiveCount (4) times, then SQS
    // moves it to the DLQ.
    env.standin.inject(registrar_tests::standin::Fault {
        writes_only: true,
        ..registrar_tests::standin::Fault::status(503, 1000)
    });
    let doomed = create_gateway(
        &env.agentcore,
        "doomed",
        GatewayAuth::cognito("us-east-1_P", "c"),
    )
    .await?;
    env.standin.clear_log();
    path.put("CreateGateway", json!({}), json!({"gatewayId": doomed}))
        .await?;
    let dead = path.wait_for_dead_letters(Duration::from_secs(30)).await?;
    assert_eq!(dead.len(), 1, "dead-lettered by the redrive policy");
    assert_eq!(
        registrations(&env),
        vec![503; 8],
        "4 receives x 2 attempts, not fewer"
    );
    Ok(())
}

/// An UpdateGateway event for `id` as CloudTrail records it (the name redacted).
async fn announce_update(path: &EventPath, id: &str) -> anyhow::Result<()> {
    path.put(
        "UpdateGateway",
        json!({"gatewayIdentifier": id, "name": "***"}),
        json!(null),
    )
    .await
}

/// A counter's value in Prometheus text (0 when absent).
fn metric(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse::<u64>().ok())
        .unwrap_or(0)
}

async fn http_get(url: &str) -> anyhow::Result<(u16, String)> {
    let r = reqwest::get(url).await?;
    Ok((r.status().as_u16(), r.text().await?))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_startup_rescan_repairs_missed_events_and_metrics_and_readiness_report_it()
-> anyhow::Result<()> {
    let env = TestEnv::start().await?;
    let path = EventPath::create(&env.config, "observed", 5, 10).await?;
    // Created while no worker ran and its event was lost: only the rescan can find it.
    create_gateway(
        &env.agentcore,
        "missed",
        GatewayAuth::cognito("us-east-1_P", "c"),
    )
    .await?;
    let port = registrar_tests::moto::free_port()?;
    let listen = format!("127.0.0.1:{port}");
    let _worker = env.spawn_worker(&path, &["--startup-rescan", "true", "--listen", &listen])?;
    let base = format!("http://{listen}");

    let mut ready = false;
    for _ in 0..100 {
        if let Ok((code, _)) = http_get(&format!("{base}/readyz")).await {
            assert!(code == 200 || code == 503, "{code}");
            if code == 200 {
                ready = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        ready,
        "ready once the start-up rescan is done\n{}",
        env.worker_logs()
    );
    assert!(
        env.standin.server("/missed").is_some(),
        "the rescan registered what no event announced"
    );
    assert_eq!(http_get(&format!("{base}/healthz")).await?.0, 200);
    // The container's health check command (no curl in the image).
    let check = |url: String| async move {
        tokio::process::Command::new(registrar_tests::env::registrar_bin())
            .args(["healthcheck", "--url", &url])
            .env_remove("AWS_REGION")
            .output()
            .await
    };
    let healthy = check(format!("{base}/healthz")).await?;
    assert!(healthy.status.success(), "{healthy:?}");
    let free = registrar_tests::moto::free_port()?;
    let down = check(format!("http://127.0.0.1:{free}/healthz")).await?;
    assert_eq!(down.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&down.stderr).contains("unhealthy"));

    // An event, then the metrics show it, with the rescan's drift.
    let id = create_gateway(
        &env.agentcore,
        "announced",
        GatewayAuth::cognito("us-east-1_P", "c"),
    )
    .await?;
    path.put("CreateGateway", json!({}), json!({"gatewayId": id}))
        .await?;
    assert!(
        eventually(Duration::from_secs(20), || env
            .standin
            .server("/announced")
            .is_some())
        .await
    );
    // The registration is visible before the message has ended: wait until the metrics show
    // the ending (and the message out of flight), then check them all.
    let expected = [
        "registrar_rescan_drift_total 1",
        "registrar_rescans_total{result=\"ok\"} 1",
        "registrar_reconciles_total{result=\"done\"} 1",
        "registrar_messages_total{ending=\"done\"} 1",
        "registrar_ready 1",
        "registrar_reconcile_duration_seconds_count 1",
        "registrar_in_flight 0",
        "registrar_unauthenticated_gateways 0",
    ];
    let endpoint = Metrics { listen };
    let has = |m: &str, line: &str| m.lines().any(|l| l == line);
    let (_, metrics) = endpoint
        .until(Duration::from_secs(20), |m| {
            expected.iter().all(|line| has(m, line))
        })
        .await;
    for line in expected {
        assert!(has(&metrics, line), "missing {line:?} in\n{metrics}");
    }
    assert!(metrics.contains("registrar_queue_lag_seconds"));
    // JSON logs carry the message and reconcile spans.
    let logs = env.worker_logs();
    assert!(
        logs.lines().any(|l| l.contains("\"Reconciled.\"")
            && l.contains("\"message_id\"")
            && l.contains("\"event_name\":\"CreateGateway\"")),
        "{logs}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_resource_that_never_gets_ready_is_given_up_to_the_dlq_after_max_wait()
-> anyhow::Result<()> {
    let env = TestEnv::start().await?;
    let path = EventPath::create(&env.config, "stuck", 5, 10).await?;
    env.moto
        .set_transition(
            "bedrock-agentcore-control::gateway",
            json!({"progression": "manual", "times": 10_000}),
        )
        .await?;
    let id = create_gateway(&env.agentcore, "stuck", GatewayAuth::Iam).await?;
    let _worker = env.spawn_worker(&path, &["--max-wait", "3"])?;
    path.put("CreateGateway", json!({}), json!({"gatewayId": id}))
        .await?;
    let dead = path.wait_for_dead_letters(Duration::from_secs(30)).await?;
    assert_eq!(dead.len(), 1, "{}", env.worker_logs());
    assert_eq!(
        dead[0]
            .attributes
            .get("registrar-reason-code")
            .map(String::as_str),
        Some("gave-up-waiting")
    );
    assert!(
        dead[0]
            .attributes
            .get("registrar-reason")
            .is_some_and(|r| r.contains("CREATING"))
    );
    assert!(env.standin.server("/stuck").is_none());
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn an_update_event_rewrites_a_changed_entry_and_a_delete_before_its_create_leaves_nothing()
-> anyhow::Result<()> {
    let env = TestEnv::start().await?;
    let path = EventPath::create(&env.config, "order", 5, 10).await?;
    let id = create_gateway(
        &env.agentcore,
        "orders",
        GatewayAuth::cognito("us-east-1_P", "c"),
    )
    .await?;
    let _worker = env.spawn_worker(&path, &[])?;
    path.put("CreateGateway", json!({}), json!({"gatewayId": id}))
        .await?;
    assert!(
        eventually(Duration::from_secs(20), || env
            .standin
            .server("/orders")
            .is_some())
        .await
    );

    // The entry no longer matches what AgentCore holds (moto keeps an updated gateway UPDATING
    // for good, so the difference is made on the registry side): the update event rewrites it.
    {
        let mut db = env.standin.db();
        let entry = db.servers.get_mut("/orders").expect("entry");
        entry["description"] = json!("stale");
        entry["metadata"]["fingerprint"] = json!("stale");
    }
    path.put(
        "UpdateGateway",
        json!({"gatewayIdentifier": id}),
        json!(null),
    )
    .await?;
    assert!(
        eventually(Duration::from_secs(20), || env
            .standin
            .server("/orders")
            .is_some_and(|e| e["description"] != json!("stale")))
        .await,
        "updated"
    );

    // A gateway created and deleted before its events are processed; the delete arrives first.
    let gone = create_gateway(&env.agentcore, "fleeting", GatewayAuth::Iam).await?;
    env.agentcore
        .delete_gateway()
        .gateway_identifier(&gone)
        .send()
        .await?;
    path.put(
        "DeleteGateway",
        json!({"gatewayIdentifier": gone}),
        json!(null),
    )
    .await?;
    path.put("CreateGateway", json!({}), json!({"gatewayId": gone}))
        .await?;
    assert!(
        path.drained(Duration::from_secs(20)).await?,
        "both events processed"
    );
    assert!(
        env.standin.server("/fleeting").is_none(),
        "nothing left behind"
    );
    assert!(path.dead_letters().await?.is_empty());
    Ok(())
}

/// A backlog drained: `events` updates of a new IAM gateway `name` queued while no worker ran,
/// then one worker of concurrency 1 that drained them, its AWS calls (answers included)
/// recorded by `aws`.
struct Backlog {
    path: EventPath,
    id: String,
    aws: registrar_tests::proxy::Proxy,
    /// The worker's metrics address.
    listen: String,
    _worker: tokio::process::Child,
}

impl Backlog {
    async fn drained(env: &TestEnv, name: &str, events: usize) -> anyhow::Result<Self> {
        let path = EventPath::create(&env.config, name, 5, 10).await?;
        let id = create_gateway(&env.agentcore, name, GatewayAuth::Iam).await?;
        for _ in 0..events {
            announce_update(&path, &id).await?;
        }
        // Past the margin, so the first reconcile starts well after every event was queued.
        tokio::time::sleep(Duration::from_millis(
            registrar_worker::fresh::MARGIN_MS + 500,
        ))
        .await;
        let aws = registrar_tests::proxy::Proxy::start(&env.moto.url()).await?;
        aws.record();
        aws.record_answers();
        let listen = format!("127.0.0.1:{}", registrar_tests::moto::free_port()?);
        let worker = env.spawn_worker_with_env(
            &path,
            &["--concurrency", "1", "--listen", &listen],
            &[("AWS_ENDPOINT_URL", &aws.url())],
        )?;
        anyhow::ensure!(
            path.drained(Duration::from_secs(20)).await?,
            "not drained\n{}",
            env.worker_logs()
        );
        Ok(Self {
            path,
            id,
            aws,
            listen,
            _worker: worker,
        })
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backlog_of_repeated_events_costs_one_reconcile_per_resource() -> anyhow::Result<()> {
    let env = TestEnv::start().await?;
    // A backlog: six events for one gateway queued while no worker ran.
    let Backlog {
        path,
        id,
        aws,
        listen,
        _worker,
    } = Backlog::drained(&env, "busy", 6).await?;
    assert!(env.standin.server("/busy").is_some());
    let (_, metrics) = http_get(&format!("http://{listen}/metrics")).await?;
    for line in [
        "registrar_messages_total{ending=\"done\"} 1",
        "registrar_messages_total{ending=\"superseded\"} 5",
        "registrar_reconciles_total{result=\"done\"} 1",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "missing {line:?} in\n{metrics}"
        );
    }
    let gets = aws
        .take_recorded()
        .iter()
        .filter(|c| c.service == "bedrock-agentcore")
        .count();
    assert_eq!(gets, 1, "one AgentCore read for six events");
    assert_eq!(path.dlq_total().await?, 0);

    // An event queued after that reconcile began is not covered: it is reconciled.
    announce_update(&path, &id).await?;
    let second = "registrar_reconciles_total{result=\"done\"} 2";
    let mut reconciled = false;
    for _ in 0..100 {
        let (_, metrics) = http_get(&format!("http://{listen}/metrics")).await?;
        if metrics.lines().any(|l| l == second) {
            reconciled = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(reconciled, "{}", env.worker_logs());
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backlog_of_duplicates_drains_in_batches_at_concurrency_one() -> anyhow::Result<()> {
    let env = TestEnv::start().await?;
    let Backlog {
        aws,
        listen,
        _worker,
        ..
    } = Backlog::drained(&env, "repeated", 20).await?;
    let (_, metrics) = http_get(&format!("http://{listen}/metrics")).await?;
    assert_eq!(
        metric(&metrics, "registrar_messages_total{ending=\"superseded\"}"),
        19,
        "{metrics}"
    );
    // One slot: the first receive takes one message, whose reconcile covers the rest; each
    // receive after asks for one more than the last handed out, as none of those needed a slot
    // (1, 1, 2, 3, 4, 5, then the last 4), where one per slot would take twenty receives.
    let calls = aws.take_recorded();
    let sizes = registrar_tests::proxy::messages_per_receive(&calls);
    assert_eq!(sizes.iter().sum::<usize>(), 20, "{sizes:?}");
    assert_eq!(sizes, [1, 1, 2, 3, 4, 5, 4], "{}", env.worker_logs());
    // The account the events name was learnt at start-up, once, not by the first reconcile.
    let first = |service: &str| calls.iter().position(|c| c.service == service);
    assert!(
        first("sts").is_some_and(|sts| first("sqs").is_some_and(|sqs| sts < sqs)),
        "STS asked before the first receive"
    );
    assert_eq!(
        calls.iter().filter(|c| c.service == "sts").count(),
        1,
        "and only then"
    );
    Ok(())
}

/// From recorded ReceiveMessage answers: each message's receipt handle, by the gateway id its
/// event names.
fn receipts_by_gateway(
    calls: &[registrar_tests::proxy::Recorded],
) -> std::collections::BTreeMap<String, String> {
    let mut by = std::collections::BTreeMap::new();
    for answer in calls.iter().filter_map(|c| c.answer.as_ref()) {
        let Ok(answer) = serde_json::from_slice::<serde_json::Value>(answer) else {
            continue;
        };
        for m in answer["Messages"].as_array().into_iter().flatten() {
            let body: serde_json::Value =
                serde_json::from_str(m["Body"].as_str().unwrap_or("null")).unwrap_or_default();
            let detail = &body["detail"];
            let id = detail["responseElements"]["gatewayId"]
                .as_str()
                .or_else(|| detail["requestParameters"]["gatewayIdentifier"].as_str());
            if let (Some(id), Some(handle)) = (id, m["ReceiptHandle"].as_str()) {
                by.insert(id.to_owned(), handle.to_owned());
            }
        }
    }
    by
}

/// The visibility timeouts the recorded ChangeMessageVisibility calls set on `handle`.
fn visibility_changes(calls: &[registrar_tests::proxy::Recorded], handle: &str) -> Vec<u64> {
    calls
        .iter()
        .filter(|c| {
            c.headers
                .get("x-amz-target")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|t| t.ends_with(".ChangeMessageVisibility"))
        })
        .filter_map(|c| serde_json::from_slice::<serde_json::Value>(&c.body).ok())
        .filter(|b| b["ReceiptHandle"] == json!(handle))
        .filter_map(|b| b["VisibilityTimeout"].as_u64())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn messages_waiting_for_a_slot_stay_hidden_and_are_given_back_on_shutdown()
-> anyhow::Result<()> {
    let env = TestEnv::start().await?;
    // Registered and recorded beforehand: its events change nothing.
    let settled = create_gateway(&env.agentcore, "settled", GatewayAuth::Iam).await?;
    let out = env.cli(&["resync"]).await?;
    anyhow::ensure!(out.status.success(), "{out:?}");
    let registrations = || env.standin.arrived("/api/servers/register");
    let before = registrations();
    let slow = create_gateway(&env.agentcore, "slow", GatewayAuth::Iam).await?;
    let waiting = [
        create_gateway(&env.agentcore, "waiting-a", GatewayAuth::Iam).await?,
        create_gateway(&env.agentcore, "waiting-b", GatewayAuth::Iam).await?,
    ];
    let path = EventPath::create(&env.config, "slots", 5, 6).await?;
    // One slot: the first of `settled`'s events is reconciled, the rest end at once and the
    // receives grow (1, 1, 2), so the next asks for 3 and gets the three creates: `slow` takes
    // the slot and the other two wait for it.
    for _ in 0..4 {
        announce_update(&path, &settled).await?;
    }
    for id in std::iter::once(&slow).chain(&waiting) {
        path.put("CreateGateway", json!({}), json!({"gatewayId": id}))
            .await?;
    }
    tokio::time::sleep(Duration::from_millis(
        registrar_worker::fresh::MARGIN_MS + 500,
    ))
    .await;
    // `slow`'s registration hangs (the first registry write: `settled` writes none).
    env.standin.inject(registrar_tests::standin::Fault {
        delay: Some(Duration::from_secs(60)),
        writes_only: true,
        ..registrar_tests::standin::Fault::status(503, 1)
    });
    let aws = registrar_tests::proxy::Proxy::start(&env.moto.url()).await?;
    aws.record();
    aws.record_answers();
    let mut worker = env.spawn_worker_with_env(
        &path,
        &[
            "--concurrency",
            "1",
            "--visibility-timeout",
            "6",
            "--shutdown-grace",
            "1",
            "--registry-timeout",
            "120",
        ],
        &[("AWS_ENDPOINT_URL", &aws.url())],
    )?;
    assert!(
        eventually(Duration::from_secs(20), || registrations() == before + 1).await,
        "slow's registration under way\n{}",
        env.worker_logs()
    );
    // Their visibility is renewed while they wait (every 2 s), past the 6 s they were given.
    let mut calls = Vec::new();
    let renewed = |calls: &[registrar_tests::proxy::Recorded]| {
        let receipts = receipts_by_gateway(calls);
        waiting.iter().all(|id| {
            receipts
                .get(id)
                .is_some_and(|h| visibility_changes(calls, h).len() >= 4)
        })
    };
    let mut kept_hidden = false;
    for _ in 0..200 {
        calls.extend(aws.take_recorded());
        aws.record();
        if renewed(&calls) {
            kept_hidden = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(kept_hidden, "{}", env.worker_logs());
    assert_eq!(
        registrations(),
        before + 1,
        "they waited for the slot\n{}",
        env.worker_logs()
    );

    kill(&worker, "-TERM")?;
    let status = tokio::time::timeout(Duration::from_secs(15), worker.wait()).await??;
    assert!(status.success(), "exits within the grace period: {status}");
    calls.extend(aws.take_recorded());
    let receipts = receipts_by_gateway(&calls);
    for id in &waiting {
        assert_eq!(
            visibility_changes(&calls, &receipts[id]).last(),
            Some(&0),
            "{id} given back at once, unprocessed"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backlog_split_across_replicas_costs_one_reconcile_per_resource() -> anyhow::Result<()> {
    let env = TestEnv::start().await?;
    // Two queues fed by the same bus: every event reaches both, as a backlog reaches the
    // replicas that share one queue. Each replica gets its own.
    let first = EventPath::create(&env.config, "replica-a", 5, 10).await?;
    let second = EventPath::create(&env.config, "replica-b", 5, 10).await?;
    let id = create_gateway(&env.agentcore, "shared", GatewayAuth::Iam).await?;
    for _ in 0..4 {
        announce_update(&first, &id).await?;
    }
    // Past the margin, so the first reconcile starts well after every event was queued.
    tokio::time::sleep(Duration::from_millis(
        registrar_worker::fresh::MARGIN_MS + 500,
    ))
    .await;
    let spawn = |path, listen: &str, aws: &str| {
        env.spawn_worker_with_env(
            path,
            &["--concurrency", "1", "--listen", listen],
            &[("AWS_ENDPOINT_URL", aws)],
        )
    };
    let (aws_a, aws_b) = (
        registrar_tests::proxy::Proxy::start(&env.moto.url()).await?,
        registrar_tests::proxy::Proxy::start(&env.moto.url()).await?,
    );
    aws_a.record();
    aws_b.record();
    let listen_a = format!("127.0.0.1:{}", registrar_tests::moto::free_port()?);
    let _a = spawn(&first, &listen_a, &aws_a.url())?;
    assert!(
        first.drained(Duration::from_secs(20)).await?,
        "{}",
        env.worker_logs()
    );
    assert!(env.standin.server("/shared").is_some());
    // The other replica finds every one of its messages settled by the first one's reconcile,
    // as the key's lease records it: no reconcile, no AgentCore read.
    let listen_b = format!("127.0.0.1:{}", registrar_tests::moto::free_port()?);
    let _b = spawn(&second, &listen_b, &aws_b.url())?;
    assert!(
        second.drained(Duration::from_secs(20)).await?,
        "{}",
        env.worker_logs()
    );
    let (_, metrics) = http_get(&format!("http://{listen_b}/metrics")).await?;
    // The first of them learns it with the call that would have taken the lease; the rest
    // from the mark that call left in this replica.
    assert_eq!(
        metric(&metrics, "registrar_keys_settled_at_lease_total"),
        1,
        "{metrics}"
    );
    assert_eq!(
        metric(&metrics, "registrar_messages_total{ending=\"superseded\"}"),
        3,
        "{metrics}"
    );
    let agentcore = |proxy: &registrar_tests::proxy::Proxy| {
        proxy
            .take_recorded()
            .iter()
            .filter(|c| c.service == "bedrock-agentcore")
            .count()
    };
    assert_eq!(
        agentcore(&aws_a),
        1,
        "one read for the first replica's backlog"
    );
    assert_eq!(agentcore(&aws_b), 0, "none for the second's");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dense_backlog_costs_one_reconcile_per_resource_in_one_worker() -> anyhow::Result<()> {
    let env = TestEnv::start().await?;
    let path = EventPath::create(&env.config, "dense", 5, 10).await?;
    let ids = [
        create_gateway(&env.agentcore, "dense-a", GatewayAuth::Iam).await?,
        create_gateway(&env.agentcore, "dense-b", GatewayAuth::Iam).await?,
    ];
    // Five events per gateway, side by side in the queue: one receive hands the worker several
    // messages of a key at once, and they meet the key's running reconcile in the key gate.
    for _ in 0..5 {
        for id in &ids {
            announce_update(&path, id).await?;
        }
    }
    tokio::time::sleep(Duration::from_millis(
        registrar_worker::fresh::MARGIN_MS + 500,
    ))
    .await;
    let aws = registrar_tests::proxy::Proxy::start(&env.moto.url()).await?;
    aws.record();
    let listen = format!("127.0.0.1:{}", registrar_tests::moto::free_port()?);
    let _worker = env.spawn_worker_with_env(
        &path,
        &["--concurrency", "10", "--listen", &listen],
        &[("AWS_ENDPOINT_URL", &aws.url())],
    )?;
    assert!(
        path.drained(Duration::from_secs(20)).await?,
        "{}",
        env.worker_logs()
    );
    assert!(env.standin.server("/dense-a").is_some() && env.standin.server("/dense-b").is_some());
    let reads = aws
        .take_recorded()
        .iter()
        .filter(|c| c.service == "bedrock-agentcore")
        .count();
    let (_, metrics) = http_get(&format!("http://{listen}/metrics")).await?;
    // The messages that waited for a running reconcile were served by its end, not by a
    // follow-up reconcile: one AgentCore read per gateway for all ten events.
    assert_eq!(reads, 2, "{metrics}\n{}", env.worker_logs());
    assert_eq!(
        metric(&metrics, "registrar_reconciles_total{result=\"done\"}"),
        2,
        "{metrics}"
    );
    assert_eq!(
        metric(&metrics, "registrar_keys_covered_by_running_total")
            + metric(&metrics, "registrar_messages_total{ending=\"superseded\"}"),
        8,
        "{metrics}"
    );
    Ok(())
}

/// By message id, the highest receive count at which the worker's reconcile failed (its log's
/// "retrying later" lines).
fn failed_receives(logs: &str) -> std::collections::BTreeMap<String, u64> {
    let mut failed = std::collections::BTreeMap::new();
    for v in logs
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["message"] == json!("Reconcile failed; retrying later."))
    {
        let (Some(id), Some(count)) = (
            v["span"]["message_id"].as_str(),
            v["receive_count"].as_u64(),
        ) else {
            continue;
        };
        let highest = failed.entry(id.to_owned()).or_insert(0);
        *highest = count.max(*highest);
    }
    failed
}

#[tokio::test(flavor = "multi_thread")]
async fn a_registry_outage_shorter_than_the_retry_window_dead_letters_nothing() -> anyhow::Result<()>
{
    let env = TestEnv::start().await?;
    // Six receives; retries back off by receive count: 2, 4, 8, 8, 8 s (at least half of each
    // with jitter), so a message outlives an outage of at least 15 s.
    let path = EventPath::create(&env.config, "outage", 6, 10).await?;
    let mut ids = Vec::new();
    for name in ["alpha", "beta", "gamma"] {
        ids.push(create_gateway(&env.agentcore, name, GatewayAuth::Iam).await?);
    }
    // The registry is down (every write answers 503) until the test says otherwise.
    env.standin.inject(registrar_tests::standin::Fault {
        writes_only: true,
        ..registrar_tests::standin::Fault::status(503, 1_000_000)
    });
    let _worker = env.spawn_worker(&path, &["--retry-base", "2", "--retry-cap", "8"])?;
    for id in &ids {
        path.put("CreateGateway", json!({}), json!({"gatewayId": id}))
            .await?;
    }
    // The outage lasts until every message has met it on three receives (half of its six),
    // backed off between them.
    let met_three_times = || {
        let failed = failed_receives(&env.worker_logs());
        failed.len() == ids.len() && failed.values().all(|r| *r >= 3)
    };
    assert!(
        eventually(Duration::from_secs(120), met_three_times).await,
        "{:?}\n{:?}\n{}",
        failed_receives(&env.worker_logs()),
        registrations(&env),
        env.worker_logs()
    );
    env.standin.db().faults.clear();
    assert!(
        eventually(Duration::from_secs(90), || env.standin.db().servers.len()
            == 3)
        .await,
        "converged once the registry came back\n{}",
        env.worker_logs()
    );
    assert!(path.drained(Duration::from_secs(30)).await?);
    assert_eq!(path.dlq_total().await?, 0, "nothing dead-lettered");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn key_metrics_reach_cloudwatch_as_embedded_metric_lines() -> anyhow::Result<()> {
    let env = TestEnv::start().await?;
    let path = EventPath::create(&env.config, "emf", 5, 10).await?;
    let id = create_gateway(&env.agentcore, "measured", GatewayAuth::Iam).await?;
    let _worker = env.spawn_worker_with_env(
        &path,
        &["--startup-rescan", "true"],
        &[("REGISTRAR_EMF_INTERVAL", "1")],
    )?;
    path.put("CreateGateway", json!({}), json!({"gatewayId": id}))
        .await?;
    let done = |logs: &str| -> Option<serde_json::Value> {
        logs.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|v| v.get("_aws").is_some() && v["ReconcilesDone"].as_f64() >= Some(1.0))
    };
    assert!(
        eventually(Duration::from_secs(60), || done(&env.worker_logs())
            .is_some())
        .await,
        "{}",
        env.worker_logs()
    );
    let line = done(&env.worker_logs()).expect("an EMF line");
    let directive = &line["_aws"]["CloudWatchMetrics"][0];
    assert_eq!(directive["Namespace"], json!("AgentCoreRegistrar"));
    let names: Vec<&str> = directive["Metrics"]
        .as_array()
        .map(|m| m.iter().filter_map(|x| x["Name"].as_str()).collect())
        .unwrap_or_default();
    for expected in [
        "ReconcilesFailed",
        "DeadLettered",
        "TokensExpiringUnrefreshed",
    ] {
        assert!(names.contains(&expected), "{expected} in {names:?}");
        assert!(line[expected].is_number(), "{line}");
    }
    // What the rescan saw goes out once, in the line after it (one rescan ran: the start-up
    // one), so another replica's stale view cannot hold an alarm.
    let emf_lines = |logs: &str| -> Vec<serde_json::Value> {
        logs.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v.get("_aws").is_some())
            .collect()
    };
    assert!(
        eventually(Duration::from_secs(30), || emf_lines(&env.worker_logs())
            .len()
            >= 3)
        .await,
        "{}",
        env.worker_logs()
    );
    let with_rescan: Vec<serde_json::Value> = emf_lines(&env.worker_logs())
        .into_iter()
        .filter(|v| v.get("UnauthenticatedGateways").is_some())
        .collect();
    assert_eq!(with_rescan.len(), 1, "{with_rescan:?}");
    for expected in [
        "DeletionsBlocked",
        "UnauthenticatedGateways",
        "TargetsNeedingAuthorization",
    ] {
        assert!(with_rescan[0][expected].is_number(), "{}", with_rescan[0]);
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_delete_gateway_event_removes_its_target_entries_without_a_rescan() -> anyhow::Result<()>
{
    use aws_sdk_bedrockagentcorecontrol::types::{
        McpServerTargetConfiguration, McpTargetConfiguration, TargetConfiguration,
    };
    use registrar_tests::metrics::sample;
    let env = TestEnv::start().await?;
    let path = EventPath::create(&env.config, "cascade", 5, 10).await?;
    let gw = create_gateway(&env.agentcore, "orders", GatewayAuth::Iam).await?;
    let mut targets = Vec::new();
    for name in ["search", "docs"] {
        let out = env
            .agentcore
            .create_gateway_target()
            .gateway_identifier(&gw)
            .name(name)
            .target_configuration(TargetConfiguration::Mcp(McpTargetConfiguration::McpServer(
                McpServerTargetConfiguration::builder()
                    .endpoint(format!("https://{name}.example.com/mcp"))
                    .build()?,
            )))
            .send()
            .await?;
        targets.push(out.target_id().to_owned());
    }
    let metrics = Metrics::on_free_port()?;
    // No rescan at start and none on a timer (the harness's defaults): only events act.
    let _worker = env.spawn_worker_with_env(
        &path,
        &["--listen", &metrics.listen],
        &[("REGISTRAR_INCLUDE_MCP_TARGETS", "true")],
    )?;
    path.put("CreateGateway", json!({}), json!({"gatewayId": gw}))
        .await?;
    for t in &targets {
        path.put(
            "CreateGatewayTarget",
            json!({"gatewayIdentifier": gw}),
            json!({"targetId": t, "status": "CREATING"}),
        )
        .await?;
    }
    processed(&[&metrics], &path, 3, Duration::from_secs(60)).await?;
    let paths = ["/orders", "/orders-search", "/orders-docs"];
    for p in paths {
        assert!(env.standin.server(p).is_some(), "{p} registered");
    }

    // moto deletes the gateway's targets with it; only the DeleteGateway event comes.
    env.agentcore
        .delete_gateway()
        .gateway_identifier(&gw)
        .send()
        .await?;
    path.put(
        "DeleteGateway",
        json!({"gatewayIdentifier": gw}),
        json!({"gatewayId": gw, "status": "DELETING"}),
    )
    .await?;
    processed(&[&metrics], &path, 4, Duration::from_secs(60)).await?;
    for p in paths {
        assert!(
            env.standin.server(p).is_none(),
            "{p} deregistered by the one event"
        );
    }
    let text = metrics.scrape().await;
    assert_eq!(
        sample(&text, "registrar_rescans_total{result=\"ok\"}"),
        Some(0),
        "no rescan ran: {text}"
    );
    assert!(path.dead_letters().await?.is_empty());
    Ok(())
}
