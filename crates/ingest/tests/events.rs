//! Every fixture event reduces to the right resource keys, or to the right ignore/reject verdict;
//! and no body, however broken, makes the parser panic.

use proptest::prelude::*;
use registrar_core::identity::{ResourceKey, ResourceKind};
use registrar_ingest::event::{ParseOptions, Rejection, Verdict, parse};

const ACCT: &str = "111122223333";
const REGION: &str = "us-west-2";
const GW: &str = "orders-gw-8fb4mo6pqx";
const RT: &str = "sre_agent-Xyz12AbCde";
const TGT: &str = "T1A2B3C4D5";

fn fixture(name: &str) -> String {
    let path = format!("{}/tests/fixtures/{name}.json", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn key(kind: ResourceKind, id: &str, gateway: Option<&str>) -> ResourceKey {
    ResourceKey {
        kind,
        account: ACCT.into(),
        region: REGION.into(),
        id: id.into(),
        gateway_id: gateway.map(Into::into),
    }
}

fn keys(name: &str, include_targets: bool) -> Vec<ResourceKey> {
    match parse(
        &fixture(name),
        ParseOptions {
            include_targets,
            ..ParseOptions::default()
        },
    ) {
        Verdict::Reconcile { keys, meta } => {
            assert!(
                meta.event_id
                    .as_deref()
                    .is_some_and(|id| id.starts_with("evt-")),
                "{meta:?}"
            );
            keys
        }
        other => panic!("{name}: {other:?}"),
    }
}

#[test]
fn gateway_events_name_the_gateway_by_id() {
    let gw = vec![key(ResourceKind::Gateway, GW, None)];
    for name in [
        "create_gateway",
        "update_gateway",
        "delete_gateway",
        "redacted_update_gateway",
    ] {
        assert_eq!(keys(name, false), gw, "{name}");
    }
}

#[test]
fn target_events_name_the_parent_gateway_and_the_target_when_targets_are_registered() {
    let gw = key(ResourceKind::Gateway, GW, None);
    let target = key(ResourceKind::Target, TGT, Some(GW));
    for name in [
        "create_gateway_target",
        "update_gateway_target",
        "delete_gateway_target",
    ] {
        assert_eq!(keys(name, false), vec![gw.clone()], "{name}");
        assert_eq!(keys(name, true), vec![gw.clone(), target.clone()], "{name}");
    }
    let synced = keys("synchronize_gateway_targets", true);
    assert_eq!(
        synced,
        vec![
            gw,
            target,
            key(ResourceKind::Target, "U9V8W7X6Y5", Some(GW))
        ]
    );
}

#[test]
fn runtime_and_endpoint_events_name_the_runtime() {
    let rt = vec![key(ResourceKind::Runtime, RT, None)];
    for name in [
        "create_agent_runtime",
        "update_agent_runtime",
        "delete_agent_runtime",
        "create_agent_runtime_endpoint",
        "update_agent_runtime_endpoint",
        "delete_agent_runtime_endpoint",
    ] {
        assert_eq!(keys(name, false), rt, "{name}");
    }
}

#[test]
fn a_missing_account_is_tolerated() {
    let got = keys("no_account_create_agent_runtime", false);
    assert_eq!(got.len(), 1);
    assert_eq!(
        got[0].account, "",
        "moto omits `account`; the key still names the runtime"
    );
    assert_eq!(got[0].id, RT);
}

#[test]
fn failed_read_only_and_unknown_events_are_ignored() {
    for (name, reason) in [
        ("error_create_gateway", "errorCode"),
        ("read_only_get_gateway", "read-only"),
        ("unknown_event_name", "CreateMemory is not handled"),
    ] {
        match parse(&fixture(name), ParseOptions::default()) {
            Verdict::Ignore { reason: r, .. } => assert!(r.contains(reason), "{name}: {r}"),
            other => panic!("{name}: {other:?}"),
        }
    }
}

#[test]
fn unusable_bodies_are_rejected_with_a_reason_code() {
    let reject = |body: &str| match parse(body, ParseOptions::default()) {
        Verdict::Reject(r) => r,
        other => panic!("{other:?}"),
    };
    assert_eq!(reject(&fixture("malformed")).code(), "malformed");
    assert_eq!(reject("[1,2]").code(), "malformed");
    assert_eq!(reject(&fixture("not_cloudtrail")).code(), "not-cloudtrail");
    assert_eq!(reject(r#"{"detail": "x"}"#).code(), "not-cloudtrail");
    let missing = reject(&fixture("missing_identifier_delete_gateway"));
    assert_eq!(
        missing,
        Rejection::MissingIdentifier {
            event_name: "DeleteGateway".into(),
            field: "gatewayIdentifier or gatewayId"
        }
    );
    let big = format!(
        r#"{{"pad":"{}"}}"#,
        "x".repeat(registrar_ingest::event::MAX_BODY_BYTES)
    );
    assert_eq!(reject(&big).code(), "oversized");
}

proptest! {
    #[test]
    fn arbitrary_bodies_never_panic(body in ".{0,400}") {
        let _ = parse(&body, ParseOptions { include_targets: true, ..ParseOptions::default() });
    }

    #[test]
    fn mangled_fixtures_never_panic(cut in 0usize..4000, insert in ".{0,8}", which in 0usize..6) {
        let names = ["create_gateway", "synchronize_gateway_targets", "delete_agent_runtime",
                     "update_gateway_target", "error_create_gateway", "not_cloudtrail"];
        let mut body = fixture(names[which]);
        let at = body.char_indices().map(|(i, _)| i).nth(cut % body.chars().count()).unwrap_or(0);
        body.insert_str(at, &insert);
        let _ = parse(&body, ParseOptions { include_targets: true, ..ParseOptions::default() });
    }
}
