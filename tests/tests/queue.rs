//! The event path on moto: the shipped EventBridge pattern matched by moto's EventBridge into a
//! real SQS queue, and the queue operations the worker relies on.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use aws_sdk_sqs::types::QueueAttributeName;
use registrar_ingest::event::{ParseOptions, Verdict, parse};
use registrar_ingest::sqs::{Queue, attr};
use registrar_tests::moto::{Moto, workspace_root};
use serde_json::Value;

const FIXTURES: &str = "crates/ingest/tests/fixtures";

fn fixture(name: &str) -> Value {
    let path = workspace_root().join(FIXTURES).join(format!("{name}.json"));
    serde_json::from_str(&std::fs::read_to_string(&path).expect("fixture")).expect("json")
}

async fn queue_pair(
    sqs: &aws_sdk_sqs::Client,
    name: &str,
    max_receives: u32,
) -> anyhow::Result<(String, String, String)> {
    let dlq = sqs
        .create_queue()
        .queue_name(format!("{name}-dlq"))
        .send()
        .await?;
    let dlq_url = dlq.queue_url().unwrap_or_default().to_owned();
    let dlq_arn = sqs
        .get_queue_attributes()
        .queue_url(&dlq_url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await?
        .attributes()
        .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
        .unwrap_or_default();
    let redrive =
        format!(r#"{{"deadLetterTargetArn":"{dlq_arn}","maxReceiveCount":"{max_receives}"}}"#);
    let q = sqs
        .create_queue()
        .queue_name(name)
        .attributes(QueueAttributeName::RedrivePolicy, redrive)
        .attributes(QueueAttributeName::VisibilityTimeout, "30")
        .send()
        .await?;
    let url = q.queue_url().unwrap_or_default().to_owned();
    let arn = sqs
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await?
        .attributes()
        .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
        .unwrap_or_default();
    Ok((url, arn, dlq_url))
}

async fn drain(queue: &Queue) -> anyhow::Result<Vec<registrar_ingest::sqs::Received>> {
    let mut all = Vec::new();
    loop {
        let batch = queue
            .receive(10, Duration::from_secs(1), Duration::from_secs(60))
            .await?;
        if batch.is_empty() {
            return Ok(all);
        }
        all.extend(batch);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_shipped_pattern_lets_through_exactly_the_mutating_agentcore_calls()
-> anyhow::Result<()> {
    let moto = Moto::start().await?;
    let config = moto.sdk_config().await;
    let sqs = aws_sdk_sqs::Client::new(&config);
    let events = aws_sdk_eventbridge::Client::new(&config);
    let (url, arn, _) = queue_pair(&sqs, "agentcore-events", 5).await?;

    let pattern = std::fs::read_to_string(
        workspace_root().join("infra/eventbridge/agentcore-api-calls.pattern.json"),
    )?;
    events
        .put_rule()
        .name("agentcore-api-calls")
        .event_pattern(pattern)
        .send()
        .await?;
    events
        .put_targets()
        .rule("agentcore-api-calls")
        .targets(
            aws_sdk_eventbridge::types::Target::builder()
                .id("queue")
                .arn(arn)
                .build()?,
        )
        .send()
        .await?;

    let should_match = [
        "create_gateway",
        "update_gateway",
        "delete_gateway",
        "create_gateway_target",
        "update_gateway_target",
        "delete_gateway_target",
        "synchronize_gateway_targets",
        "create_agent_runtime",
        "update_agent_runtime",
        "delete_agent_runtime",
        "create_agent_runtime_endpoint",
        "update_agent_runtime_endpoint",
        "delete_agent_runtime_endpoint",
        "redacted_update_gateway",
        "no_account_create_agent_runtime",
        "missing_identifier_delete_gateway",
    ];
    let should_not = [
        "error_create_gateway",
        "read_only_get_gateway",
        "unknown_event_name",
        "not_cloudtrail",
    ];
    for name in should_match.iter().chain(should_not.iter()) {
        let e = fixture(name);
        let entry = aws_sdk_eventbridge::types::PutEventsRequestEntry::builder()
            .source(e["source"].as_str().unwrap_or_default())
            .detail_type(e["detail-type"].as_str().unwrap_or_default())
            .detail(e["detail"].to_string())
            .build();
        let out = events.put_events().entries(entry).send().await?;
        assert_eq!(out.failed_entry_count(), 0, "{name}");
    }

    let queue = Queue::new(sqs.clone(), url, None);
    let delivered = drain(&queue).await?;
    let got: BTreeSet<String> = delivered
        .iter()
        .map(|m| {
            let body: Value = serde_json::from_str(&m.body).expect("delivered JSON");
            body["detail"]["eventID"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    let want: BTreeSet<String> = should_match
        .iter()
        .map(|n| {
            fixture(n)["detail"]["eventID"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    assert_eq!(
        got, want,
        "matched exactly the mutating calls, no errors, no reads, nothing else"
    );

    // What moto delivers (no `account` field) still parses into keys, except the poison one.
    let opts = ParseOptions {
        include_targets: true,
        ..ParseOptions::default()
    };
    let verdicts: Vec<Verdict> = delivered.iter().map(|m| parse(&m.body, opts)).collect();
    assert_eq!(
        verdicts
            .iter()
            .filter(|v| matches!(v, Verdict::Reconcile { .. }))
            .count(),
        should_match.len() - 1
    );
    assert_eq!(
        verdicts
            .iter()
            .filter(|v| matches!(v, Verdict::Reject(_)))
            .count(),
        1
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_delayed_copy_does_not_burn_the_receive_count_and_poison_goes_to_the_dlq_with_its_reason()
-> anyhow::Result<()> {
    let moto = Moto::start().await?;
    let sqs = aws_sdk_sqs::Client::new(&moto.sdk_config().await);
    let (url, _, dlq_url) = queue_pair(&sqs, "work", 2).await?;
    let queue = Queue::new(sqs.clone(), url.clone(), Some(dlq_url.clone()));
    let dlq = Queue::new(sqs.clone(), dlq_url, None);
    let long = Duration::from_secs(60);

    sqs.send_message()
        .queue_url(&url)
        .message_body("waiting-resource")
        .send()
        .await?;
    let first = queue
        .receive(1, Duration::from_secs(2), Duration::ZERO)
        .await?;
    let first = first.first().expect("received");
    queue.set_visibility(first, Duration::ZERO).await?;
    let again = queue.receive(1, Duration::from_secs(2), long).await?;
    let again = again.first().expect("visible again at once");
    assert_eq!(again.receive_count, 2);

    let attrs = HashMap::from([(attr::WAIT_COUNT.to_owned(), "1".to_owned())]);
    queue
        .requeue_delayed(again, Duration::from_secs(1), &attrs)
        .await?;
    let copies = queue.receive(1, Duration::from_secs(5), long).await?;
    let copy = copies.first().expect("the delayed copy arrives");
    assert_eq!(copy.body, "waiting-resource");
    assert_eq!(
        copy.receive_count, 1,
        "a fresh message: the count was not burned"
    );
    assert_eq!(
        copy.attributes.get(attr::WAIT_COUNT).map(String::as_str),
        Some("1")
    );

    queue
        .dead_letter(copy, "malformed", "body is not a JSON object")
        .await?;
    let dead = drain(&dlq).await?;
    assert_eq!(dead.len(), 1);
    assert_eq!(
        dead[0]
            .attributes
            .get(attr::REASON_CODE)
            .map(String::as_str),
        Some("malformed")
    );
    assert_eq!(
        dead[0].attributes.get(attr::WAIT_COUNT).map(String::as_str),
        Some("1"),
        "attributes travel along"
    );
    assert!(drain(&queue).await?.is_empty(), "the original is gone");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn batch_delete_reports_failed_entries_and_redrive_moves_after_max_receives()
-> anyhow::Result<()> {
    let moto = Moto::start().await?;
    let sqs = aws_sdk_sqs::Client::new(&moto.sdk_config().await);
    let (url, _, dlq_url) = queue_pair(&sqs, "redrive", 2).await?;
    let queue = Queue::new(sqs.clone(), url.clone(), Some(dlq_url.clone()));

    for body in ["a", "b"] {
        sqs.send_message()
            .queue_url(&url)
            .message_body(body)
            .send()
            .await?;
    }
    let got = drain(&queue).await?;
    assert_eq!(got.len(), 2);
    let mut bogus = got[1].clone();
    bogus.receipt_handle = "not-a-receipt-handle".into();
    let failures = queue.delete_batch(&[&got[0], &bogus]).await?;
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert_eq!(failures[0].message_id, got[1].message_id);

    // "b" keeps failing: released twice, then SQS moves it to the DLQ on the next receive.
    for expected_count in 1..=2 {
        let m = if expected_count == 1 {
            got[1].clone()
        } else {
            let r = queue
                .receive(1, Duration::from_secs(2), Duration::from_secs(60))
                .await?;
            r.first().cloned().expect("redelivered")
        };
        assert_eq!(m.receive_count, expected_count);
        queue.set_visibility(&m, Duration::ZERO).await?;
    }
    assert!(
        queue
            .receive(1, Duration::from_secs(1), Duration::from_secs(60))
            .await?
            .is_empty()
    );
    let dead = drain(&Queue::new(sqs.clone(), dlq_url, None)).await?;
    assert_eq!(
        dead.iter().map(|m| m.body.as_str()).collect::<Vec<_>>(),
        ["b"],
        "after maxReceiveCount, not before"
    );
    Ok(())
}
