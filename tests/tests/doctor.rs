//! `registrar doctor` against the real local peers: a good deployment passes every check, then
//! one broken thing at a time fails its line, named, with its fix, and hides no other line.
//! moto serves AWS (the queue, its DLQ and redrive, the EventBridge rule from the shipped
//! pattern, the state table, a CloudTrail trail), the stand-in serves the registry, and
//! oidc-provider the trusted issuer. moto never denies a call, so the AgentCore AccessDenied
//! comes from the loopback proxy in front of it.

use std::process::Output;
use std::time::Duration;

use aws_sdk_cloudtrail::types::{EventSelector, ReadWriteType};
use aws_sdk_eventbridge::types::{RuleState, Target};
use aws_sdk_sqs::types::QueueAttributeName;
use axum::http::Method;
use registrar_tests::env::{TestEnv, write_private};
use registrar_tests::idp::Idp;
use registrar_tests::moto::workspace_root;
use registrar_tests::proxy::Proxy;
use registrar_tests::standin::User;
use serde_json::{Value, json};

const QUEUE: &str = "registrar-events";
const RULE: &str = "registrar-agentcore-api-calls";
const TRAIL: &str = "registrar-trail";
const PROBE_PREFIX: &str = "/agentcore-registrar-doctor-probe-";

/// What is deployed, and how it is broken (the default is a good deployment).
#[derive(Debug, Clone, Copy)]
struct Knobs {
    redrive: bool,
    rule_enabled: bool,
    rule_targets_queue: bool,
    trail: Trail,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trail {
    Logging,
    Stopped,
    Absent,
}

impl Default for Knobs {
    fn default() -> Self {
        Self {
            redrive: true,
            rule_enabled: true,
            rule_targets_queue: true,
            trail: Trail::Logging,
        }
    }
}

#[derive(Debug)]
struct Deployment {
    queue_url: String,
    dlq_url: String,
}

async fn queue_arn(sqs: &aws_sdk_sqs::Client, url: &str) -> anyhow::Result<String> {
    let out = sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await?;
    Ok(out
        .attributes()
        .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
        .unwrap_or_default())
}

/// The stack's event path and a trail, made directly in moto.
async fn deploy(env: &TestEnv, knobs: Knobs) -> anyhow::Result<Deployment> {
    let sqs = aws_sdk_sqs::Client::new(&env.config);
    let create = |name: String| {
        let sqs = sqs.clone();
        async move {
            anyhow::Ok(
                sqs.create_queue()
                    .queue_name(name)
                    .send()
                    .await?
                    .queue_url()
                    .unwrap_or_default()
                    .to_owned(),
            )
        }
    };
    let dlq_url = create(format!("{QUEUE}-dlq")).await?;
    let queue_url = create(QUEUE.to_owned()).await?;
    if knobs.redrive {
        let redrive =
            json!({"deadLetterTargetArn": queue_arn(&sqs, &dlq_url).await?, "maxReceiveCount": 12});
        sqs.set_queue_attributes()
            .queue_url(&queue_url)
            .attributes(QueueAttributeName::RedrivePolicy, redrive.to_string())
            .send()
            .await?;
    }
    let target_url = if knobs.rule_targets_queue {
        queue_url.clone()
    } else {
        create("somebody-elses-queue".to_owned()).await?
    };
    let events = aws_sdk_eventbridge::Client::new(&env.config);
    let pattern = std::fs::read_to_string(
        workspace_root().join("infra/eventbridge/agentcore-api-calls.pattern.json"),
    )?;
    events
        .put_rule()
        .name(RULE)
        .event_pattern(pattern)
        .state(if knobs.rule_enabled {
            RuleState::Enabled
        } else {
            RuleState::Disabled
        })
        .send()
        .await?;
    events
        .put_targets()
        .rule(RULE)
        .targets(
            Target::builder()
                .id("events-queue")
                .arn(queue_arn(&sqs, &target_url).await?)
                .build()?,
        )
        .send()
        .await?;
    if knobs.trail != Trail::Absent {
        // moto's CloudTrail wants the bucket to exist; its S3 takes an unsigned path-style PUT.
        let bucket = "registrar-trail-bucket";
        let put = reqwest::Client::new()
            .put(format!("{}/{bucket}", env.moto.url()))
            .send()
            .await?;
        anyhow::ensure!(put.status().is_success(), "bucket: {}", put.status());
        let trail = aws_sdk_cloudtrail::Client::new(&env.config);
        trail
            .create_trail()
            .name(TRAIL)
            .s3_bucket_name(bucket)
            .is_multi_region_trail(true)
            .include_global_service_events(true)
            .send()
            .await?;
        trail
            .put_event_selectors()
            .trail_name(TRAIL)
            .event_selectors(
                EventSelector::builder()
                    .read_write_type(ReadWriteType::All)
                    .include_management_events(true)
                    .build(),
            )
            .send()
            .await?;
        if knobs.trail == Trail::Logging {
            trail.start_logging().name(TRAIL).send().await?;
        }
    }
    Ok(Deployment { queue_url, dlq_url })
}

async fn doctor(
    env: &TestEnv,
    d: &Deployment,
    extra_args: &[&str],
    extra_env: &[(&str, &str)],
) -> anyhow::Result<(i32, String)> {
    let mut args = vec![
        "doctor",
        "--queue-url",
        &d.queue_url,
        "--dlq-url",
        &d.dlq_url,
        "--deadline",
        "30",
    ];
    args.extend_from_slice(extra_args);
    let out: Output = env.cli_with_env(&args, extra_env).await?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}{stderr}");
    Ok((out.status.code().unwrap_or(-1), stdout))
}

/// The check lines (not fix or summary lines) with `status` as their first word.
fn lines<'a>(out: &'a str, status: &str) -> Vec<&'a str> {
    out.lines()
        .filter(|l| l.split_whitespace().next() == Some(status))
        .collect()
}

/// The one FAIL line of the run, with its fix.
fn the_failure(out: &str) -> (String, String) {
    let fails = lines(out, "FAIL");
    assert_eq!(fails.len(), 1, "exactly one failure:\n{out}");
    fix_of(out, fails[0])
}

/// A check line and the fix under it.
fn fix_of(out: &str, line: &str) -> (String, String) {
    let mut it = out.lines().skip_while(|l| *l != line);
    let line = it.next().unwrap_or_default().to_owned();
    let fix = it
        .next()
        .and_then(|l| l.trim().strip_prefix("fix: "))
        .unwrap_or_else(|| panic!("a fix under {line:?}:\n{out}"))
        .to_owned();
    (line, fix)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_good_deployment_passes_every_check() -> anyhow::Result<()> {
    let env = TestEnv::start().await?;
    let d = deploy(&env, Knobs::default()).await?;
    let idp = Idp::start("doctor-client", "doctor-secret", Duration::from_secs(300)).await?;
    let (code, out) = doctor(&env, &d, &[], &[("REGISTRAR_TRUSTED_ISSUERS", &idp.issuer)]).await?;
    assert_eq!(code, 0, "{out}");
    let checks: Vec<&str> = out.lines().filter(|l| !l.contains(" checks: ")).collect();
    assert!(
        checks.iter().all(|l| l.starts_with("ok ")),
        "every line ok:\n{out}"
    );
    for named in [
        "aws       credentials: account 123456789012",
        "agentcore ListGateways in 123456789012/us-east-1: allowed",
        "agentcore ListAgentRuntimes in 123456789012/us-east-1: allowed",
        "state     table registrar-state: keys pk (S, HASH), sk (S, RANGE)",
        "redrive of",
        "rule registrar-agentcore-api-calls: enabled, targets the queue",
        "trail     region us-east-1: trail registrar-trail logs",
        "permission register",
        "permission toggle",
        "permission auth-credential",
        "permission remove: removed the probe; nothing left behind",
        "identity: the registry records this token as registrar",
        &format!("issuer    {}: discovery names this issuer", idp.issuer),
    ] {
        assert!(out.contains(named), "{named:?} in:\n{out}");
    }
    assert!(
        env.standin
            .db()
            .servers
            .keys()
            .all(|p| !p.starts_with(PROBE_PREFIX)),
        "the probe is gone"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_table_with_another_key_schema_fails_naming_the_table() -> anyhow::Result<()> {
    let env = TestEnv::start().await?;
    let d = deploy(&env, Knobs::default()).await?;
    let ddb = aws_sdk_dynamodb::Client::new(&env.config);
    use aws_sdk_dynamodb::types::{
        AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
    };
    ddb.create_table()
        .table_name("not-the-registrars")
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("id")
                .attribute_type(ScalarAttributeType::S)
                .build()?,
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("id")
                .key_type(KeyType::Hash)
                .build()?,
        )
        .send()
        .await?;
    let (code, out) = doctor(&env, &d, &["--table", "not-the-registrars"], &[]).await?;
    assert_eq!(code, 1, "{out}");
    let (line, fix) = the_failure(&out);
    assert!(
        line.contains("table not-the-registrars") && line.contains("keys are id (HASH)"),
        "{line}"
    );
    assert!(fix.contains("--table (REGISTRAR_TABLE)"), "{fix}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_queue_without_redrive_fails_naming_the_queue() -> anyhow::Result<()> {
    let env = TestEnv::start().await?;
    let d = deploy(
        &env,
        Knobs {
            redrive: false,
            ..Knobs::default()
        },
    )
    .await?;
    let (code, out) = doctor(&env, &d, &[], &[]).await?;
    assert_eq!(code, 1, "{out}");
    let (line, fix) = the_failure(&out);
    assert!(
        line.contains(&format!("redrive of {}", d.queue_url)) && line.contains("no redrive policy"),
        "{line}"
    );
    assert!(fix.contains("RedrivePolicy"), "{fix}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_disabled_rule_fails_naming_the_rule() -> anyhow::Result<()> {
    let env = TestEnv::start().await?;
    let d = deploy(
        &env,
        Knobs {
            rule_enabled: false,
            ..Knobs::default()
        },
    )
    .await?;
    let (code, out) = doctor(&env, &d, &[], &[]).await?;
    assert_eq!(code, 1, "{out}");
    let (line, fix) = the_failure(&out);
    assert!(
        line.contains(&format!("rule {RULE}")) && line.contains("is DISABLED"),
        "{line}"
    );
    assert_eq!(
        fix,
        format!("enable it: aws events enable-rule --name {RULE}")
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rule_targeting_another_queue_fails_naming_both() -> anyhow::Result<()> {
    let env = TestEnv::start().await?;
    let d = deploy(
        &env,
        Knobs {
            rule_targets_queue: false,
            ..Knobs::default()
        },
    )
    .await?;
    // Found from the queue's side: no rule targets it.
    let (code, out) = doctor(&env, &d, &[], &[]).await?;
    assert_eq!(code, 1, "{out}");
    let (line, fix) = the_failure(&out);
    assert!(
        line.contains("rules targeting arn:aws:sqs:us-east-1:123456789012:registrar-events")
            && line.contains("no EventBridge rule"),
        "{line}"
    );
    assert!(fix.contains("AgentCoreApiCallsRule"), "{fix}");
    // Named: the rule and where it points instead.
    let (code, out) = doctor(&env, &d, &["--rule-names", RULE], &[]).await?;
    assert_eq!(code, 1, "{out}");
    let (line, fix) = the_failure(&out);
    assert!(
        line.contains(&format!("rule {RULE}"))
            && line.contains("somebody-elses-queue")
            && line.contains("not the queue"),
        "{line}"
    );
    assert!(fix.contains("target"), "{fix}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn no_trail_or_a_stopped_trail_fails_naming_the_region() -> anyhow::Result<()> {
    let env = TestEnv::start().await?;
    let d = deploy(
        &env,
        Knobs {
            trail: Trail::Absent,
            ..Knobs::default()
        },
    )
    .await?;
    let (code, out) = doctor(&env, &d, &[], &[]).await?;
    assert_eq!(code, 1, "{out}");
    let (line, fix) = the_failure(&out);
    assert!(
        line.contains("trail     region us-east-1: no trail logs this region"),
        "{line}"
    );
    assert!(fix.contains("CreateTrail=true"), "{fix}");

    let env = TestEnv::start().await?;
    let d = deploy(
        &env,
        Knobs {
            trail: Trail::Stopped,
            ..Knobs::default()
        },
    )
    .await?;
    let (code, out) = doctor(&env, &d, &[], &[]).await?;
    assert_eq!(code, 1, "{out}");
    let (line, fix) = the_failure(&out);
    assert!(
        line.contains(&format!("trail {TRAIL} is not logging")),
        "{line}"
    );
    assert_eq!(fix, format!("aws cloudtrail start-logging --name {TRAIL}"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rejected_registry_token_fails_and_is_never_printed() -> anyhow::Result<()> {
    let env = TestEnv::start().await?;
    let d = deploy(&env, Knobs::default()).await?;
    let bogus = "revoked-key-0123456789abcdef0123456789abcdef";
    let file = env.dir.join("revoked.json");
    write_private(&file, &json!({"access_token": bogus}).to_string())?;
    let file = file.display().to_string();
    let (code, out) = doctor(&env, &d, &[], &[("REGISTRY_TOKEN_FILE", &file)]).await?;
    assert_eq!(code, 1, "{out}");
    let (line, fix) = the_failure(&out);
    assert!(
        line.contains(&format!("registry {}", env.standin.url()))
            && line.contains("refused the token")
            && line.contains("401"),
        "{line}"
    );
    assert!(fix.contains("--token-file (REGISTRY_TOKEN_FILE)"), "{fix}");
    assert!(!out.contains(bogus), "the token is never printed");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_denied_registry_permission_fails_and_the_probe_never_stays() -> anyhow::Result<()> {
    let env = TestEnv::start().await?;
    let d = deploy(&env, Knobs::default()).await?;
    // May register and remove, not modify: toggle and the credential are refused.
    let token = "no-modify-key-0123456789abcdef0123456789ab";
    env.standin.db().users.insert(
        token.to_owned(),
        User::admin("registrar").without("modify_service"),
    );
    let file = env.dir.join("no-modify.json");
    write_private(&file, &json!({"access_token": token}).to_string())?;
    let file = file.display().to_string();
    let (code, out) = doctor(&env, &d, &[], &[("REGISTRY_TOKEN_FILE", &file)]).await?;
    assert_eq!(code, 1, "{out}");
    let fails = lines(&out, "FAIL");
    assert_eq!(fails.len(), 2, "{out}");
    for (fail, what) in fails
        .iter()
        .zip(["permission toggle", "permission auth-credential"])
    {
        let (line, fix) = fix_of(&out, fail);
        assert!(
            line.contains(what) && line.contains("403") && line.contains("modify_service"),
            "{line}"
        );
        assert!(fix.contains("modify_service permission"), "{fix}");
    }
    assert!(
        out.contains("permission remove: removed the probe; nothing left behind"),
        "{out}"
    );
    assert!(!out.contains(token));
    let servers: Vec<String> = env.standin.db().servers.keys().cloned().collect();
    assert!(
        servers.iter().all(|p| !p.starts_with(PROBE_PREFIX)),
        "{servers:?}"
    );

    // Without delete_service the probe cannot be removed: said loudly, with the path.
    let token = "no-delete-key-0123456789abcdef0123456789ab";
    env.standin.db().users.insert(
        token.to_owned(),
        User::admin("registrar").without("delete_service"),
    );
    let file = env.dir.join("no-delete.json");
    write_private(&file, &json!({"access_token": token}).to_string())?;
    let file = file.display().to_string();
    let (code, out) = doctor(&env, &d, &[], &[("REGISTRY_TOKEN_FILE", &file)]).await?;
    assert_eq!(code, 1, "{out}");
    let (line, fix) = the_failure(&out);
    let left: Vec<String> = env
        .standin
        .db()
        .servers
        .keys()
        .filter(|p| p.starts_with(PROBE_PREFIX))
        .cloned()
        .collect();
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(
        line.contains("permission remove")
            && line.contains("LEFT BEHIND")
            && line.contains(&left[0]),
        "{line}"
    );
    assert!(
        fix.contains("delete_service permission") && fix.contains(&left[0]),
        "{fix}"
    );
    // A denied registration leaves nothing and says what it could not check.
    let token = "no-register-key-0123456789abcdef0123456789";
    env.standin.db().users.insert(
        token.to_owned(),
        User::admin("registrar").without("register_service"),
    );
    let file = env.dir.join("no-register.json");
    write_private(&file, &json!({"access_token": token}).to_string())?;
    let file = file.display().to_string();
    let (code, out) = doctor(&env, &d, &[], &[("REGISTRY_TOKEN_FILE", &file)]).await?;
    assert_eq!(code, 1, "{out}");
    let (line, fix) = the_failure(&out);
    assert!(
        line.contains("permission register") && line.contains("403"),
        "{line}"
    );
    assert!(fix.contains("register_service permission"), "{fix}");
    assert_eq!(
        lines(&out, "warn").len(),
        3,
        "toggle, credential, remove not checked:\n{out}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn an_issuer_whose_discovery_names_another_issuer_fails() -> anyhow::Result<()> {
    let env = TestEnv::start().await?;
    let d = deploy(&env, Knobs::default()).await?;
    let idp = Idp::start("doctor-client", "doctor-secret", Duration::from_secs(300)).await?;
    // The same IdP under another name: its discovery names 127.0.0.1, not localhost.
    let port = idp.issuer.rsplit(':').next().unwrap_or_default().to_owned();
    let other_name = format!("http://localhost:{port}");
    let (code, out) = doctor(&env, &d, &[], &[("REGISTRAR_TRUSTED_ISSUERS", &other_name)]).await?;
    assert_eq!(code, 1, "{out}");
    let (line, fix) = the_failure(&out);
    assert!(
        line.contains(&format!("issuer    {other_name}"))
            && line.contains(&format!("names issuer {}", idp.issuer)),
        "{line}"
    );
    assert!(fix.contains(&idp.issuer), "{fix}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_host_only_issuer_is_a_warning_and_json_says_so() -> anyhow::Result<()> {
    let env = TestEnv::start().await?;
    let d = deploy(&env, Knobs::default()).await?;
    let (code, out) = doctor(
        &env,
        &d,
        &["--output", "json"],
        &[("REGISTRAR_TRUSTED_ISSUERS", "idp.example.com")],
    )
    .await?;
    assert_eq!(code, 0, "warnings do not fail the run:\n{out}");
    let json: Value = serde_json::from_str(&out)?;
    assert_eq!(json["passed"], true);
    assert_eq!(json["tally"]["warn"], 1, "{json}");
    let issuer = json["checks"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["group"] == "issuer"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(issuer["status"], "warn");
    assert_eq!(issuer["subject"], "idp.example.com");
    assert!(
        issuer["fix"]
            .as_str()
            .is_some_and(|f| f.contains("--trusted-issuers")),
        "{issuer}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn agentcore_access_denied_names_the_missing_action() -> anyhow::Result<()> {
    let env = TestEnv::start().await?;
    let d = deploy(&env, Knobs::default()).await?;
    let proxy = Proxy::start(&env.moto.url()).await?;
    proxy.deny(
        "bedrock-agentcore",
        Method::POST,
        "/runtimes",
        "bedrock-agentcore:ListAgentRuntimes",
    );
    let endpoint = proxy.url();
    let (code, out) = doctor(&env, &d, &[], &[("AWS_ENDPOINT_URL", &endpoint)]).await?;
    assert_eq!(code, 1, "{out}");
    let (line, fix) = the_failure(&out);
    assert!(
        line.contains("ListAgentRuntimes in 123456789012/us-east-1")
            && line.contains("bedrock-agentcore:ListAgentRuntimes is not allowed"),
        "{line}"
    );
    assert!(
        fix.contains("allow bedrock-agentcore:ListAgentRuntimes for the operator")
            && fix.contains("operator-policy.json"),
        "{fix}"
    );
    assert!(
        out.contains("ListGateways in 123456789012/us-east-1: allowed"),
        "the other list call is still checked:\n{out}"
    );
    Ok(())
}
