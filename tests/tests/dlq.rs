//! `registrar dlq inspect` and `registrar dlq replay` against moto (the portable path: moto has
//! no StartMessageMoveTask), and the native path against an in-process SQS fake.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use registrar_ingest::dlq::{ReplayOptions, replay};
use registrar_ingest::sqs::{Queue, attr};
use registrar_tests::env::TestEnv;
use registrar_tests::events::{EventPath, drain};
use registrar_tests::proxy::Proxy;
use serde_json::{Value, json};

fn event(name: &str, id: &str) -> String {
    json!({"version": "0", "detail-type": "AWS API Call via CloudTrail", "source": "aws.bedrock-agentcore",
           "region": "us-east-1", "time": "2026-11-21T10:00:00Z",
           "detail": {"eventSource": "bedrock-agentcore.amazonaws.com", "eventName": name, "awsRegion": "us-east-1",
                      "eventID": format!("evt-{name}-{id}"), "requestParameters": {"gatewayIdentifier": id},
                      "responseElements": {"gatewayId": id}}})
    .to_string()
}

/// Three poison messages the worker dead-lettered, three events SQS redrove.
async fn fill(path: &EventPath) -> anyhow::Result<()> {
    let dlq = path.dlq();
    let poison = HashMap::from([
        (attr::REASON_CODE.to_owned(), "malformed".to_owned()),
        (attr::REASON.to_owned(), "body is not JSON".to_owned()),
    ]);
    for i in 0..3 {
        dlq.send(&format!("{{broken {i}"), &poison).await?;
    }
    dlq.send(&event("CreateGateway", "gw-a-0123456789"), &HashMap::new())
        .await?;
    dlq.send(&event("CreateGateway", "gw-b-0123456789"), &HashMap::new())
        .await?;
    dlq.send(
        &event("DeleteGateway", "gw-other-0123456789"),
        &HashMap::new(),
    )
    .await?;
    Ok(())
}

fn json_of(out: &std::process::Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// `dlq inspect --output json` of the path's DLQ; it must succeed.
async fn inspect_json(env: &TestEnv, path: &EventPath) -> anyhow::Result<Value> {
    let out = env
        .cli(&[
            "dlq",
            "inspect",
            "--dlq-url",
            &path.dlq_url,
            "--output",
            "json",
        ])
        .await?;
    anyhow::ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(json_of(&out))
}

#[tokio::test(flavor = "multi_thread")]
async fn inspect_breaks_the_dlq_down_without_consuming_it() -> anyhow::Result<()> {
    let env = TestEnv::start().await?;
    let path = EventPath::create(&env.config, "work", 2, 30).await?;
    fill(&path).await?;
    let report = inspect_json(&env, &path).await?;
    assert_eq!(report["count"], json!(6));
    assert_eq!(report["read"], json!(6));
    assert_eq!(report["duplicates"], json!(0));
    assert_eq!(
        report["by_event"],
        json!({"CreateGateway": 2, "DeleteGateway": 1, "unparseable": 3})
    );
    assert_eq!(
        report["by_reason"],
        json!({"malformed": 3, "max-receives": 3})
    );
    assert!(report["oldest_age_seconds"].is_u64());
    assert_eq!(report["sample"].as_array().map(Vec::len), Some(6));
    let text = env
        .cli(&["dlq", "inspect", "--dlq-url", &path.dlq_url])
        .await?;
    let text = String::from_utf8_lossy(&text.stdout).to_string();
    assert!(
        text.contains("By reason: malformed 3, max-receives 3"),
        "{text}"
    );
    assert_eq!(path.dlq_total().await?, 6, "inspecting consumes nothing");
    let held = drain(&path.dlq()).await?;
    assert_eq!(held.len(), 6, "and leaves every message visible");

    // A copy made of a message SQS's redrive later moved here (which carries no origin: its id
    // is its origin) is counted as its duplicate.
    let redriven = held
        .iter()
        .find(|m| !m.attributes.contains_key(attr::REASON_CODE))
        .expect("a redriven message");
    let copy = HashMap::from([
        (attr::ORIGIN_ID.to_owned(), redriven.message_id.clone()),
        (attr::REASON_CODE.to_owned(), "terminal".to_owned()),
    ]);
    path.dlq().send(&redriven.body, &copy).await?;
    for m in &held {
        path.dlq().set_visibility(m, Duration::ZERO).await?;
    }
    let report = inspect_json(&env, &path).await?;
    assert_eq!(report["read"], json!(7));
    assert_eq!(report["duplicates"], json!(1), "{report}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn replay_moves_what_the_filters_select_and_nothing_in_a_dry_run() -> anyhow::Result<()> {
    let env = TestEnv::start().await?;
    let path = EventPath::create(&env.config, "work", 2, 30).await?;
    fill(&path).await?;
    let args = [
        "dlq",
        "replay",
        "--queue-url",
        &path.queue_url,
        "--dlq-url",
        &path.dlq_url,
        "--output",
        "json",
    ];
    let run = |extra: &'static [&'static str]| {
        let mut all: Vec<&str> = args.to_vec();
        all.extend_from_slice(extra);
        let env = &env;
        async move { env.cli(&all).await }
    };

    let dry = json_of(&run(&["--dry-run", "--filter-event", "CreateGateway"]).await?);
    assert_eq!(dry["moved"].as_array().map(Vec::len), Some(2));
    assert_eq!(
        (path.depth().await?, path.dlq_total().await?),
        (0, 6),
        "a dry run moves nothing"
    );

    let moved = json_of(&run(&["--filter-event", "CreateGateway"]).await?);
    assert_eq!(moved["mode"], json!("portable"));
    assert_eq!(moved["moved"].as_array().map(Vec::len), Some(2));
    let replayed = drain(&path.queue()).await?;
    assert_eq!(replayed.len(), 2);
    assert!(
        replayed
            .iter()
            .all(|m| m.attributes.get(attr::REPLAY_COUNT).map(String::as_str) == Some("1"))
    );
    // Redriven by SQS, they carried no origin: the replay names the message it moved, so a
    // copy of it dead-lettered earlier is known for the same.
    let moved_ids: HashSet<&str> = moved["moved"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|d| d["message_id"].as_str())
        .collect();
    let origins: HashSet<&str> = replayed.iter().map(|m| m.origin()).collect();
    assert_eq!(origins, moved_ids);
    assert_eq!(path.dlq_total().await?, 4);

    let one = json_of(&run(&["--filter-resource", "gw-other-0123456789"]).await?);
    assert_eq!(one["moved"][0]["event_name"], json!("DeleteGateway"));
    let capped = json_of(&run(&["--max", "1"]).await?);
    assert_eq!(capped["moved"].as_array().map(Vec::len), Some(1));
    assert_eq!(path.dlq_total().await?, 2);

    // No filter and no limit: SQS's move task is tried; moto lacks it, so the portable path runs.
    let rest = json_of(&run(&[]).await?);
    assert_eq!(rest["mode"], json!("portable"));
    assert_eq!(rest["moved"].as_array().map(Vec::len), Some(2));
    assert_eq!(path.dlq_total().await?, 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn an_interrupted_replay_loses_nothing_and_duplicates_at_most_the_message_in_flight()
-> anyhow::Result<()> {
    let env = TestEnv::start().await?;
    let path = EventPath::create(&env.config, "work", 2, 30).await?;
    for i in 0..10 {
        path.dlq()
            .send(
                &event("CreateGateway", &format!("gw-{i}-0123456789")),
                &HashMap::new(),
            )
            .await?;
    }
    let mut child = tokio::process::Command::new(registrar_tests::env::registrar_bin())
        .args([
            "dlq",
            "replay",
            "--queue-url",
            &path.queue_url,
            "--dlq-url",
            &path.dlq_url,
            "--rate",
            "1",
            "--filter-event",
            "CreateGateway",
        ])
        .envs(env.moto.env())
        .kill_on_drop(true)
        .spawn()?;
    // Killed once the first message has moved: at one a second, the rest cannot all follow
    // before the kill lands.
    let first_moved = tokio::time::timeout(Duration::from_secs(60), async {
        while path.depth().await? == 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        anyhow::Ok(())
    })
    .await;
    child.start_kill()?;
    child.wait().await?;
    anyhow::ensure!(first_moved.is_ok(), "the replay moved nothing");
    first_moved??;
    let (in_queue, in_dlq) = (path.depth().await?, path.dlq_total().await?);
    assert!(
        (1..10).contains(&in_queue),
        "interrupted part-way: {in_queue} moved"
    );
    assert!(
        (10..=11).contains(&(in_queue + in_dlq)),
        "nothing lost, at most one duplicate: {in_queue} + {in_dlq}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_message_dead_lettered_twice_is_counted_once_with_its_copies_as_duplicates()
-> anyhow::Result<()> {
    let env = TestEnv::start().await?;
    let path = EventPath::create(&env.config, "work", 10, 30).await?;
    // The worker copies the poison message to the DLQ and cannot delete it (as if it died in
    // between): the message reappears and is dead-lettered again, a copy each time.
    let proxy = Proxy::start(&env.moto.url()).await?;
    proxy.deny_operation("sqs", "DeleteMessage", "sqs:DeleteMessage");
    let mut worker = env.spawn_worker_with_env(
        &path,
        &["--visibility-timeout", "3"],
        &[("AWS_ENDPOINT_URL", &proxy.url())],
    )?;
    path.send_raw("{not json").await?;
    let copies = path.wait_for_dlq_total(2, Duration::from_secs(30)).await?;
    assert!(copies >= 2, "dead-lettered again: {copies} copies");
    proxy.controls().denied.clear();
    assert!(
        path.drained(Duration::from_secs(30)).await?,
        "deleted at last"
    );
    let copies = path.dlq_total().await?;

    let report = inspect_json(&env, &path).await?;
    assert_eq!(report["count"], json!(copies));
    assert_eq!(report["by_reason"], json!({"malformed": copies}));
    assert_eq!(report["duplicates"], json!(copies - 1), "{report}");
    let text = env
        .cli(&["dlq", "inspect", "--dlq-url", &path.dlq_url])
        .await?;
    let text = String::from_utf8_lossy(&text.stdout).to_string();
    assert!(
        text.contains(&format!(
            "Duplicates: {} (copies of one message handled twice",
            copies - 1
        )),
        "{text}"
    );

    // Replayed, each copy is a new message dead-lettered once more: its origin stays the first
    // message's, so the copies are still known for duplicates.
    let replay = [
        "dlq",
        "replay",
        "--queue-url",
        &path.queue_url,
        "--dlq-url",
        &path.dlq_url,
    ];
    assert!(env.cli(&replay).await?.status.success());
    // Drained: every copy was sent to the DLQ before its message was deleted.
    assert!(path.drained(Duration::from_secs(30)).await?);
    worker.start_kill()?;
    worker.wait().await?;
    let dead = path.dead_letters().await?;
    assert!(dead.len() as u64 >= copies, "{dead:?}");
    let origins: HashSet<Option<&str>> = dead
        .iter()
        .map(|m| m.attributes.get(attr::ORIGIN_ID).map(String::as_str))
        .collect();
    assert!(
        origins.len() == 1 && !origins.contains(&None),
        "one origin: {dead:?}"
    );
    assert!(
        dead.iter().all(|m| {
            m.attributes.get(attr::REPLAY_COUNT).map(String::as_str) == Some("1")
                && !origins.contains(&Some(m.message_id.as_str()))
        }),
        "{dead:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn without_filters_the_native_move_task_is_used_where_sqs_has_it() -> anyhow::Result<()> {
    // A fake SQS (awsJson1.0) that knows GetQueueAttributes and StartMessageMoveTask.
    let calls: Arc<Mutex<Vec<(String, Value)>>> = Arc::default();
    let seen = Arc::clone(&calls);
    let app = axum::Router::new().route(
        "/",
        axum::routing::post(move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
            let seen = Arc::clone(&seen);
            async move {
                let target = headers.get("x-amz-target").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
                let body: Value = serde_json::from_slice(&body).unwrap_or_default();
                seen.lock().expect("lock").push((target.clone(), body.clone()));
                let reply = match target.as_str() {
                    "AmazonSQS.GetQueueAttributes" => {
                        let name = body["QueueUrl"].as_str().unwrap_or_default().rsplit('/').next().unwrap_or_default().to_owned();
                        json!({"Attributes": {"QueueArn": format!("arn:aws:sqs:us-east-1:123456789012:{name}")}})
                    }
                    "AmazonSQS.StartMessageMoveTask" => json!({"TaskHandle": "task-42"}),
                    _ => json!({}),
                };
                ([("content-type", "application/x-amz-json-1.0")], axum::Json(reply))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(&url)
        .region(aws_config::Region::new("us-east-1"))
        .test_credentials()
        .load()
        .await;
    let sqs = aws_sdk_sqs::Client::new(&config);
    let dlq = Queue::new(sqs.clone(), format!("{url}/123456789012/work-dlq"), None);
    let source = Queue::new(sqs, format!("{url}/123456789012/work"), None);

    let done = replay(
        &dlq,
        &source,
        &ReplayOptions {
            rate: Some(50.0),
            ..ReplayOptions::default()
        },
    )
    .await?;
    assert_eq!(
        (done.mode.as_str(), done.task_handle.as_deref()),
        ("native", Some("task-42"))
    );
    let calls = calls.lock().expect("lock").clone();
    let task = calls
        .iter()
        .find(|(t, _)| t == "AmazonSQS.StartMessageMoveTask")
        .map(|(_, b)| b.clone())
        .expect("called");
    assert_eq!(
        task["SourceArn"],
        json!("arn:aws:sqs:us-east-1:123456789012:work-dlq")
    );
    assert_eq!(
        task["DestinationArn"],
        json!("arn:aws:sqs:us-east-1:123456789012:work")
    );
    assert_eq!(task["MaxNumberOfMessagesPerSecond"], json!(50));
    server.abort();
    Ok(())
}
