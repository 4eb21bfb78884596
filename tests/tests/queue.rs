//! The event path on moto: the shipped EventBridge pattern matched by moto's EventBridge into a
//! real SQS queue, and the queue operations the worker relies on.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use registrar_ingest::event::{ParseOptions, Verdict, parse};
use registrar_ingest::sqs::attr;
use registrar_tests::events::{EventPath, drain};
use registrar_tests::moto::{Moto, workspace_root};
use serde_json::Value;

fn fixture(name: &str) -> Value {
    let path = workspace_root()
        .join("crates/ingest/tests/fixtures")
        .join(format!("{name}.json"));
    serde_json::from_str(&std::fs::read_to_string(&path).expect("fixture")).expect("json")
}

fn event_id(event: &Value) -> String {
    event["detail"]["eventID"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_shipped_pattern_lets_through_exactly_the_mutating_agentcore_calls()
-> anyhow::Result<()> {
    let moto = Moto::start().await?;
    let path = EventPath::create(&moto.sdk_config().await, "agentcore-events", 5, 30).await?;
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
        path.put_event(
            e["source"].as_str().unwrap_or_default(),
            e["detail-type"].as_str().unwrap_or_default(),
            &e["detail"],
        )
        .await?;
    }

    let delivered = drain(&path.queue()).await?;
    let got: BTreeSet<String> = delivered
        .iter()
        .map(|m| event_id(&serde_json::from_str::<Value>(&m.body).expect("delivered JSON")))
        .collect();
    let want: BTreeSet<String> = should_match.iter().map(|n| event_id(&fixture(n))).collect();
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
    let path = EventPath::create(&moto.sdk_config().await, "work", 2, 30).await?;
    let queue = path.queue();
    let long = Duration::from_secs(60);

    path.send_raw("waiting-resource").await?;
    let first = queue
        .receive(1, Duration::from_secs(2), Duration::ZERO)
        .await?;
    let first = first.first().expect("received");
    // SQS dates a first receive on its own clock (the worker bounds its clock's lead by it).
    let (sent, handed_out) = (
        first.sent_at_ms.expect("SentTimestamp"),
        first
            .first_received_at_ms
            .expect("ApproximateFirstReceiveTimestamp"),
    );
    assert!(handed_out >= sent, "{sent} then {handed_out}");
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
    assert_eq!(copy.origin(), first.message_id);
    // A copy of the copy still names the first message.
    let attrs = HashMap::from([(attr::WAIT_COUNT.to_owned(), "2".to_owned())]);
    queue
        .requeue_delayed(copy, Duration::from_secs(1), &attrs)
        .await?;
    let copies = queue.receive(1, Duration::from_secs(5), long).await?;
    let copy = copies.first().expect("the second delayed copy arrives");
    assert_eq!(copy.origin(), first.message_id);

    queue
        .dead_letter(copy, "malformed", "body is not a JSON object")
        .await?;
    let dead = path.dead_letters().await?;
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
        Some("2"),
        "attributes travel along"
    );
    assert_eq!(
        dead[0].attributes.get(attr::ORIGIN_ID),
        Some(&first.message_id),
        "named by the event's first message, through the delayed copies"
    );
    assert!(drain(&queue).await?.is_empty(), "the original is gone");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn batch_delete_reports_failed_entries_and_redrive_moves_after_max_receives()
-> anyhow::Result<()> {
    let moto = Moto::start().await?;
    let path = EventPath::create(&moto.sdk_config().await, "redrive", 2, 30).await?;
    let queue = path.queue();
    for body in ["a", "b"] {
        path.send_raw(body).await?;
    }
    let got = drain(&queue).await?;
    assert_eq!(got.len(), 2);
    let mut bogus = got[1].clone();
    bogus.receipt_handle = "not-a-receipt-handle".into();
    let failures = queue.delete_batch(&[&got[0], &bogus]).await?;
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert_eq!(failures[0].message_id, got[1].message_id);

    // "b" keeps failing: released twice, then SQS moves it to the DLQ on the next receive.
    queue.set_visibility(&got[1], Duration::ZERO).await?;
    let again = queue
        .receive(1, Duration::from_secs(2), Duration::from_secs(60))
        .await?;
    let again = again.first().cloned().expect("redelivered");
    assert_eq!(again.receive_count, 2);
    queue.set_visibility(&again, Duration::ZERO).await?;
    assert!(
        queue
            .receive(1, Duration::from_secs(1), Duration::from_secs(60))
            .await?
            .is_empty()
    );
    let dead = path.dead_letters().await?;
    assert_eq!(
        dead.iter().map(|m| m.body.as_str()).collect::<Vec<_>>(),
        ["b"],
        "after maxReceiveCount, not before"
    );
    Ok(())
}
