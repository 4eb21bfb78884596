//! The shipped EventBridge pattern and the parser agree on the event names: every name the rule
//! lets through yields resource keys, and nothing else does.

use registrar_ingest::event::{ParseOptions, Verdict, parse};
use serde_json::{Value, json};

#[test]
fn every_event_name_of_the_pattern_is_handled() {
    let path = format!(
        "{}/../../infra/eventbridge/agentcore-api-calls.pattern.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let pattern: Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("pattern file")).expect("json");
    let names = pattern["detail"]["eventName"]
        .as_array()
        .expect("eventName list");
    assert_eq!(names.len(), 13);
    for name in names.iter().filter_map(Value::as_str) {
        let body = json!({"detail": {"eventSource": "bedrock-agentcore.amazonaws.com", "eventName": name,
            "awsRegion": "us-east-1",
            "requestParameters": {"gatewayIdentifier": "gw-0123456789", "agentRuntimeId": "rt-0123456789", "targetId": "T1A2B3C4D5"},
            "responseElements": null}});
        let verdict = parse(&body.to_string(), ParseOptions::default());
        assert!(
            matches!(verdict, Verdict::Reconcile { .. }),
            "{name}: {verdict:?}"
        );
    }
    assert_eq!(
        pattern["detail"]["errorCode"],
        json!([{"exists": false}]),
        "failed calls are filtered by the rule"
    );
}
