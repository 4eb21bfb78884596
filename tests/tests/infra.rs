//! The deployment artefacts: the CloudFormation template deployed into moto carries a real
//! event to a real worker, and the templates, the Dockerfile and the worker agree with each
//! other. (cfn-lint and checkov run in `scripts/infra.sh check`.)

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use aws_sdk_cloudformation::types::{Parameter, StackStatus};
use aws_sdk_sqs::types::QueueAttributeName;
use registrar_tests::env::{TestEnv, eventually};
use registrar_tests::events::EventPath;
use registrar_tests::fixtures::{GatewayAuth, create_gateway};
use serde_json::{Value, json};

fn repo_file(path: &str) -> String {
    let file = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(path);
    std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()))
}

/// The one-line EventPattern between a template's `# BEGIN pattern` / `# END pattern` markers.
fn embedded_pattern(template: &str) -> Value {
    let text = repo_file(template);
    let after = text
        .split("# BEGIN pattern")
        .nth(1)
        .unwrap_or_else(|| panic!("{template} has a BEGIN pattern marker"));
    let line = after
        .lines()
        .find_map(|l| l.trim().strip_prefix("EventPattern: "))
        .unwrap_or_else(|| panic!("{template} has an EventPattern after the marker"));
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{template}: {e}"))
}

#[test]
fn both_templates_embed_the_single_pattern_file() {
    let file: Value = serde_json::from_str(&repo_file(
        "infra/eventbridge/agentcore-api-calls.pattern.json",
    ))
    .expect("pattern file is JSON");
    for template in [
        "infra/cloudformation/registrar.yaml",
        "infra/cloudformation/member-account-role.yaml",
    ] {
        assert_eq!(embedded_pattern(template), file, "{template}");
    }
}

#[test]
fn container_task_and_worker_agree_on_health_and_shutdown() {
    let dockerfile = repo_file("Dockerfile");
    let template = repo_file("infra/cloudformation/registrar.yaml");
    // Health: both run the binary's own check (the runtime image has no shell or curl).
    assert!(dockerfile.contains(r#"CMD ["/usr/local/bin/registrar", "healthcheck"]"#));
    assert!(template.contains("Command: [CMD, /usr/local/bin/registrar, healthcheck]"));
    // Non-root in both.
    assert!(dockerfile.contains("USER 65532:65532"));
    assert!(template.contains(r#"User: "65532""#));
    assert!(dockerfile.contains("STOPSIGNAL SIGTERM"));
    // The drain fits in ECS's stop timeout.
    let number_after = |text: &str, key: &str| -> u64 {
        let rest = &text[text.find(key).unwrap_or_else(|| panic!("{key}")) + key.len()..];
        rest.trim_start_matches([' ', '"', ':', ','])
            .chars()
            .take_while(char::is_ascii_digit)
            .collect::<String>()
            .parse()
            .unwrap_or_else(|_| panic!("a number after {key}"))
    };
    let stop_timeout = number_after(&template, "StopTimeout:");
    let grace = number_after(&template, "REGISTRAR_SHUTDOWN_GRACE, Value:");
    assert!(
        grace + 3 <= stop_timeout,
        "grace {grace}s, stop timeout {stop_timeout}s"
    );
    // The worker's visibility matches the queue's.
    assert_eq!(
        number_after(&template, "VisibilityTimeout:"),
        number_after(&template, "REGISTRAR_VISIBILITY_TIMEOUT, Value:")
    );
}

async fn deploy(
    env: &TestEnv,
    stack: &str,
    table: &str,
) -> anyhow::Result<HashMap<String, String>> {
    let cf = aws_sdk_cloudformation::Client::new(&env.config);
    let param = |k: &str, v: &str| {
        Parameter::builder()
            .parameter_key(k)
            .parameter_value(v)
            .build()
    };
    cf.create_stack()
        .stack_name(stack)
        .template_body(repo_file("infra/cloudformation/registrar.yaml"))
        .parameters(param("DeployWorker", "false"))
        .parameters(param("TableName", table))
        .send()
        .await?;
    for _ in 0..120 {
        let out = cf.describe_stacks().stack_name(stack).send().await?;
        let s = out.stacks().first().expect("the stack");
        match s.stack_status() {
            Some(StackStatus::CreateComplete) => {
                return Ok(s
                    .outputs()
                    .iter()
                    .map(|o| {
                        (
                            o.output_key().unwrap_or_default().to_owned(),
                            o.output_value().unwrap_or_default().to_owned(),
                        )
                    })
                    .collect());
            }
            Some(StackStatus::CreateInProgress) => {
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            other => anyhow::bail!("stack {other:?}: {:?}", s.stack_status_reason()),
        }
    }
    anyhow::bail!("stack not created in 30 s")
}

#[tokio::test(flavor = "multi_thread")]
async fn the_template_deploys_into_moto_and_carries_an_event_to_the_worker() -> anyhow::Result<()> {
    let env = TestEnv::start().await?;
    let table = format!("{}-stack", env.table);
    let outputs = deploy(&env, "registrar", &table).await?;
    let output = |k: &str| {
        outputs
            .get(k)
            .cloned()
            .unwrap_or_else(|| panic!("output {k}: {outputs:?}"))
    };
    let (queue_url, dlq_url) = (output("QueueUrl"), output("DlqUrl"));
    assert_eq!(output("TableName"), table);

    // What the template promises, as moto created it.
    let sqs = aws_sdk_sqs::Client::new(&env.config);
    let attrs = |url: String| {
        let sqs = sqs.clone();
        async move {
            let out = sqs
                .get_queue_attributes()
                .queue_url(url)
                .attribute_names(QueueAttributeName::All)
                .send()
                .await?;
            anyhow::Ok(out.attributes().cloned().unwrap_or_default())
        }
    };
    let queue = attrs(queue_url.clone()).await?;
    let dlq = attrs(dlq_url.clone()).await?;
    let retention = |a: &HashMap<QueueAttributeName, String>| -> u64 {
        a[&QueueAttributeName::MessageRetentionPeriod]
            .parse()
            .unwrap_or(0)
    };
    assert!(
        retention(&dlq) > retention(&queue),
        "the DLQ keeps messages longer"
    );
    let redrive: Value = serde_json::from_str(&queue[&QueueAttributeName::RedrivePolicy])?;
    assert_eq!(
        redrive["deadLetterTargetArn"],
        dlq[&QueueAttributeName::QueueArn].as_str()
    );
    for a in [&queue, &dlq] {
        assert_eq!(a[&QueueAttributeName::SqsManagedSseEnabled], "true");
    }
    let events = aws_sdk_eventbridge::Client::new(&env.config);
    let rule = output("RuleArn");
    let rule_name = rule.rsplit('/').next().unwrap_or_default();
    let targets = events.list_targets_by_rule().rule(rule_name).send().await?;
    let target = targets.targets().first().expect("one target");
    assert_eq!(target.arn(), queue[&QueueAttributeName::QueueArn].as_str());
    assert!(target.dead_letter_config().is_some() && target.retry_policy().is_some());
    let ddb = aws_sdk_dynamodb::Client::new(&env.config);
    let described = ddb.describe_table().table_name(&table).send().await?;
    let keys: Vec<String> = described
        .table()
        .map(|t| {
            t.key_schema()
                .iter()
                .map(|k| k.attribute_name().to_owned())
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(keys, ["pk", "sk"]);

    // AgentCore calls through the deployed rule and queue, then a real worker on the deployed
    // queue and table. moto's CloudFormation skips the queue policy, so this does not prove it.
    let path = EventPath::existing(&env.config, &queue_url, &dlq_url);
    let failed = json!({
        "eventVersion": "1.09", "eventSource": "bedrock-agentcore.amazonaws.com",
        "eventName": "CreateGateway", "awsRegion": registrar_tests::REGION,
        "errorCode": "ValidationException", "readOnly": false, "eventType": "AwsApiCall",
        "requestParameters": {}, "responseElements": null,
    });
    path.put_event(
        "aws.bedrock-agentcore",
        "AWS API Call via CloudTrail",
        &failed,
    )
    .await?;
    let id = create_gateway(&env.agentcore, "deployed", GatewayAuth::Iam).await?;
    path.put("CreateGateway", json!({}), json!({"gatewayId": id}))
        .await?;
    let mut depth = 0;
    for _ in 0..20 {
        depth = path.depth().await?;
        if depth > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(
        depth, 1,
        "the successful call reached the queue, the failed one (errorCode) did not"
    );
    let _worker = env.spawn_worker_with_env(&path, &[], &[("REGISTRAR_TABLE", table.as_str())])?;
    assert!(
        eventually(Duration::from_secs(30), || env
            .standin
            .server("/deployed")
            .is_some())
        .await,
        "registered through the deployed path\n{}",
        env.worker_logs()
    );
    let state = ddb.scan().table_name(&table).send().await?;
    assert!(
        state.count() > 0,
        "the worker wrote its state to the deployed table"
    );
    assert_eq!(path.dlq_total().await?, 0, "nothing dead-lettered");
    Ok(())
}

#[test]
fn the_standalone_operator_policy_grants_what_the_stack_policy_grants() {
    let file: Value = serde_json::from_str(&repo_file("infra/iam/operator-policy.json"))
        .expect("operator policy is JSON");
    let template = repo_file("infra/cloudformation/registrar.yaml");
    let stack_policy = &template[template.find("  OperatorPolicy:").expect("OperatorPolicy")..];
    let stack_policy = &stack_policy[..stack_policy
        .find("\n  # ----")
        .unwrap_or(stack_policy.len())];
    let mut actions = Vec::new();
    for statement in file["Statement"].as_array().expect("statements") {
        match &statement["Action"] {
            Value::String(a) => actions.push(a.clone()),
            Value::Array(list) => {
                actions.extend(list.iter().filter_map(|a| a.as_str().map(str::to_owned)))
            }
            _ => {}
        }
    }
    assert!(actions.len() >= 15, "{actions:?}");
    for action in actions {
        assert!(
            stack_policy.contains(&action),
            "{action} missing from the stack's OperatorPolicy"
        );
    }
    assert!(
        !stack_policy.contains("bedrock-agentcore:Create")
            && !stack_policy.contains("bedrock-agentcore:Delete")
    );
}

#[test]
fn the_redrive_policy_outlives_a_ten_minute_registry_outage() {
    let template = repo_file("infra/cloudformation/registrar.yaml");
    let number = |key: &str| -> u64 {
        template
            .lines()
            .find_map(|l| {
                let l = l.trim();
                l.strip_prefix(key)
                    .map(|rest| {
                        rest.trim()
                            .trim_matches(|c| c == '"' || c == '}' || c == ' ')
                    })
                    .and_then(|v| v.split_whitespace().next())
                    .and_then(|v| v.trim_matches('"').parse().ok())
            })
            .unwrap_or_else(|| panic!("{key} in the template"))
    };
    let max_receives = number("maxReceiveCount:");
    let base = number("- { Name: REGISTRAR_RETRY_BASE, Value:");
    let cap = number("- { Name: REGISTRAR_RETRY_CAP, Value:");
    let backoff = registrar_core::backoff::Backoff {
        base: Duration::from_secs(base),
        cap: Duration::from_secs(cap),
    };
    let window = backoff.window(max_receives as u32 - 1);
    assert!(
        window >= Duration::from_secs(600),
        "{max_receives} receives at {base}/{cap} s span only {window:?}"
    );
}
