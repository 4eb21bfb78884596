//! Every fixture event reduces to the right resource keys, or to the right ignore/reject verdict;
//! and no body, however broken, makes the parser panic.

use proptest::prelude::*;
use registrar_core::identity::{ResourceKey, ResourceKind};
use registrar_ingest::event::{
    MAX_TARGET_IDS, ParseOptions, Rejection, Verdict, is_account, is_gateway_id, is_region,
    is_runtime_id, is_target_id, parse,
};

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
fn a_forwarded_event_is_keyed_by_the_account_and_region_it_happened_in() {
    // As EventBridge delivers a member account's call forwarded from eu-west-1 to the central
    // bus in us-west-2: the envelope keeps the sender's account and region, and so does the
    // CloudTrail record; the central bus's own account appears nowhere in the event.
    let mut event: serde_json::Value =
        serde_json::from_str(&fixture("create_gateway")).expect("fixture");
    event["account"] = "444455556666".into();
    event["region"] = "eu-west-1".into();
    event["detail"]["recipientAccountId"] = "444455556666".into();
    event["detail"]["awsRegion"] = "eu-west-1".into();
    let Verdict::Reconcile { keys, .. } = parse(&event.to_string(), ParseOptions::default()) else {
        panic!("reconciled");
    };
    assert_eq!(keys.len(), 1);
    assert_eq!(
        (keys[0].account.as_str(), keys[0].region.as_str()),
        ("444455556666", "eu-west-1")
    );
    // moto's forwarding drops `account` and restamps `region` with the central bus's: the
    // CloudTrail record still says where the call happened.
    event.as_object_mut().map(|e| e.remove("account"));
    event["region"] = "us-west-2".into();
    let Verdict::Reconcile { keys, .. } = parse(&event.to_string(), ParseOptions::default()) else {
        panic!("reconciled");
    };
    assert_eq!(
        (keys[0].account.as_str(), keys[0].region.as_str()),
        ("444455556666", "eu-west-1")
    );
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

fn rejection(name: &str, include_targets: bool) -> Rejection {
    match parse(
        &fixture(name),
        ParseOptions {
            include_targets,
            ..ParseOptions::default()
        },
    ) {
        Verdict::Reject(r) => r,
        other => panic!("{name}: {other:?}"),
    }
}

fn invalid(event_name: &str, field: &str, value: &str) -> Rejection {
    Rejection::InvalidIdentifier {
        event_name: event_name.into(),
        field: field.into(),
        value: value.into(),
    }
}

#[test]
fn ids_of_the_wrong_shape_are_poison_naming_the_field_and_the_value() {
    let r = rejection("hostile_gateway_id_create_gateway", false);
    assert_eq!(
        r,
        invalid(
            "CreateGateway",
            "responseElements.gatewayId",
            r#""../../api/servers""#
        )
    );
    assert_eq!(r.code(), "invalid-identifier");
    assert_eq!(
        r.to_string(),
        r#"CreateGateway event has an invalid responseElements.gatewayId: "../../api/servers""#
    );

    let r = rejection("hostile_runtime_id_update_agent_runtime", false);
    assert_eq!(
        r,
        invalid(
            "UpdateAgentRuntime",
            "requestParameters.agentRuntimeId",
            r#""sre_agent-Xyz12AbCde/../../other""#
        )
    );

    let r = rejection("bad_account_create_gateway", false);
    assert_eq!(
        r,
        invalid("CreateGateway", "account", r#""111122223333/../../x""#)
    );
}

#[test]
fn an_overlong_id_is_poison_and_shown_truncated() {
    let r = rejection("long_gateway_id_delete_gateway", false);
    let Rejection::InvalidIdentifier { field, value, .. } = &r else {
        panic!("{r:?}")
    };
    assert_eq!(field, "requestParameters.gatewayIdentifier");
    assert_eq!(value, &format!("{:?}", format!("{}...", "a".repeat(64))));
    assert!(r.to_string().len() < 200, "{r}");
}

#[test]
fn a_bad_target_id_is_poison_only_when_targets_are_read() {
    assert_eq!(
        rejection("hostile_target_id_delete_gateway_target", true),
        invalid(
            "DeleteGatewayTarget",
            "requestParameters.targetId",
            r#""../../../api""#
        )
    );
    // Targets off: the event names only the gateway, which is well formed.
    assert_eq!(
        keys("hostile_target_id_delete_gateway_target", false),
        vec![key(ResourceKind::Gateway, GW, None)]
    );
    assert_eq!(
        rejection("bad_entry_target_list_synchronize_gateway_targets", true),
        invalid(
            "SynchronizeGatewayTargets",
            "requestParameters.targetIdList[1]",
            r#""{\"$ne\":null}""#
        )
    );
}

#[test]
fn a_target_id_list_longer_than_the_cap_is_poison() {
    let r = rejection("oversized_target_list_synchronize_gateway_targets", true);
    assert_eq!(
        r,
        Rejection::TooManyTargets {
            event_name: "SynchronizeGatewayTargets".into(),
            count: 101,
            limit: MAX_TARGET_IDS,
        }
    );
    assert_eq!(r.code(), "too-many-targets");
    assert_eq!(
        r.to_string(),
        "SynchronizeGatewayTargets event lists 101 target ids in targetIdList; at most 100 are accepted"
    );
    // Exactly the cap is accepted.
    let mut event: serde_json::Value =
        serde_json::from_str(&fixture("synchronize_gateway_targets")).expect("json");
    event["detail"]["requestParameters"]["targetIdList"] =
        (0..MAX_TARGET_IDS).map(|i| format!("T{i:09}")).collect();
    let opts = ParseOptions {
        include_targets: true,
        ..ParseOptions::default()
    };
    let Verdict::Reconcile { keys, .. } = parse(&event.to_string(), opts) else {
        panic!("accepted")
    };
    assert_eq!(keys.len(), 1 + MAX_TARGET_IDS);
}

#[test]
fn a_type_mismatch_in_a_field_we_do_not_use_rejects_nothing() {
    assert_eq!(
        keys("mistyped_unused_fields_create_gateway", false),
        vec![key(ResourceKind::Gateway, GW, None)]
    );
}

#[test]
fn a_type_mismatch_in_an_id_is_poison() {
    let mut event: serde_json::Value =
        serde_json::from_str(&fixture("delete_gateway")).expect("json");
    event["detail"]["requestParameters"]["gatewayIdentifier"] =
        serde_json::json!(["orders-gw-8fb4mo6pqx"]);
    match parse(&event.to_string(), ParseOptions::default()) {
        Verdict::Reject(r) => assert_eq!(
            r,
            invalid(
                "DeleteGateway",
                "requestParameters.gatewayIdentifier",
                r#""[\"orders-gw-8fb4mo6pqx\"]""#
            )
        ),
        other => panic!("{other:?}"),
    }
}

#[test]
fn ids_the_emulator_makes_are_accepted() {
    let got = keys("moto_ids_create_gateway", false);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].id, "3beb5875ab");
    assert_eq!(got[0].account, "111122223333", "from recipientAccountId");
    assert!(is_runtime_id("a3beb5875a-0123456789"), "moto runtime id");
    assert!(is_target_id("3beb5875ab"), "moto target id");
}

#[test]
fn id_shapes_follow_the_aws_patterns() {
    for ok in [
        "orders-gw-8fb4mo6pqx",
        "test-openapi-gateway-9c8f7109-8fb4mo6pqx",
        "a-0123456789",
        "a--0123456789",
        "3beb5875ab",
    ] {
        assert!(is_gateway_id(ok), "{ok}");
    }
    let hundred = "a".repeat(100);
    assert!(is_gateway_id(&format!("{hundred}-0123456789")));
    for bad in [
        "",
        "gw-1",
        "../../api/servers",
        "-a-0123456789",
        "a---0123456789",
        "Orders-gw-8fb4mo6pqx",
        "orders gw-8fb4mo6pqx",
        "orders-gw-8fb4mo6pq",
        "3beb5875a",
        "é-0123456789",
        "orders-gw/8fb4mo6pqx",
    ] {
        assert!(!is_gateway_id(bad), "{bad:?}");
    }
    assert!(!is_gateway_id(&format!("{hundred}a-0123456789")));

    assert!(is_target_id("T1A2B3C4D5"));
    for bad in ["T1A2B3C4D", "T1A2B3C4D5E", "T1A2B3C4/5", "../../api/"] {
        assert!(!is_target_id(bad), "{bad:?}");
    }

    for ok in ["sre_agent-Xyz12AbCde", "a-0123456789", "A_b_9-ABCDEFGHIJ"] {
        assert!(is_runtime_id(ok), "{ok}");
    }
    assert!(is_runtime_id(&format!("a{}-0123456789", "b".repeat(99))));
    for bad in [
        "rt-1",
        "_agent-Xyz12AbCde",
        "9agent-Xyz12AbCde",
        "sre-agent-Xyz12AbCde",
        "sre_agent-Xyz12AbCd_",
        "sre_agent/Xyz12AbCde",
    ] {
        assert!(!is_runtime_id(bad), "{bad:?}");
    }
    assert!(!is_runtime_id(&format!("a{}-0123456789", "b".repeat(100))));

    assert!(is_account("111122223333"));
    assert!(!is_account("11112222333") && !is_account("11112222333x"));
    for ok in ["us-east-1", "eu-central-1", "us-gov-west-1", "cn-north-1"] {
        assert!(is_region(ok), "{ok}");
    }
    for bad in [
        "",
        "US-EAST-1",
        "us-east-1/../x",
        "a-very-long-region-name-1",
    ] {
        assert!(!is_region(bad), "{bad:?}");
    }
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
