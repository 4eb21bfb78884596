//! The deployment artefacts: the CloudFormation template deployed into moto carries a real
//! event to a real worker, the forwarder deployed into other regions and accounts carries theirs
//! to the central queue, and the templates, the Dockerfile and the worker agree with each other.
//! (cfn-lint and checkov run in `scripts/infra.sh check`.)

#![allow(clippy::disallowed_methods)] // tests time real processes on the real clock

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use aws_config::Region;
use aws_config::SdkConfig;
use aws_config::sts::AssumeRoleProvider;
use aws_sdk_cloudformation::types::{Parameter, StackStatus};
use aws_sdk_eventbridge::config::SharedCredentialsProvider;
use aws_sdk_sqs::types::QueueAttributeName;
use registrar_ingest::event::{ParseOptions, Verdict, parse};
use registrar_ingest::sqs::Received;
use registrar_tests::env::{TestEnv, eventually};
use registrar_tests::events::{EventPath, drain};
use registrar_tests::fixtures::{GatewayAuth, create_gateway};
use registrar_tests::{ACCOUNT, REGION};
use serde_json::{Value, json};

const REGISTRAR: &str = "infra/cloudformation/registrar.yaml";
const FORWARDER: &str = "infra/cloudformation/event-forwarder.yaml";
const MEMBER_ROLE: &str = "infra/cloudformation/member-account-role.yaml";
/// A region the worker reads besides the home region.
const OTHER_REGION: &str = "eu-west-1";
/// A member account (moto keeps one backend per account).
const MEMBER: &str = "222222222222";

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
fn every_rule_embeds_the_single_pattern_file() {
    let file: Value = serde_json::from_str(&repo_file(
        "infra/eventbridge/agentcore-api-calls.pattern.json",
    ))
    .expect("pattern file is JSON");
    for template in [REGISTRAR, FORWARDER] {
        assert_eq!(embedded_pattern(template), file, "{template}");
        assert_eq!(
            repo_file(template).matches("AWS::Events::Rule").count(),
            1,
            "{template} holds one rule"
        );
    }
    // One way to forward: the member template holds the reader role only.
    assert!(!repo_file(MEMBER_ROLE).contains("AWS::Events::Rule"));
    // Forwarded events keep the sender's account and region: a pattern naming either would
    // drop the other regions' and accounts' events at the central rule.
    assert!(
        file.get("account").is_none() && file.get("region").is_none(),
        "{file}"
    );
}

#[test]
fn container_task_and_worker_agree_on_health_and_shutdown() {
    let dockerfile = repo_file("Dockerfile");
    let template = repo_file(REGISTRAR);
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

/// Creates `stack` from `template` with `params` where `config` points (account and region) and
/// waits for CREATE_COMPLETE; its outputs.
async fn deploy(
    config: &SdkConfig,
    stack: &str,
    template: &str,
    params: &[(&str, &str)],
) -> anyhow::Result<HashMap<String, String>> {
    let cf = aws_sdk_cloudformation::Client::new(config);
    let mut create = cf
        .create_stack()
        .stack_name(stack)
        .template_body(repo_file(template));
    for (k, v) in params {
        create = create.parameters(
            Parameter::builder()
                .parameter_key(*k)
                .parameter_value(*v)
                .build(),
        );
    }
    create.send().await?;
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
    anyhow::bail!("stack {stack} not created in 30 s")
}

#[tokio::test(flavor = "multi_thread")]
async fn the_template_deploys_into_moto_and_carries_an_event_to_the_worker() -> anyhow::Result<()> {
    let env = TestEnv::start().await?;
    let table = format!("{}-stack", env.table);
    let outputs = deploy(
        &env.config,
        "registrar",
        REGISTRAR,
        &[("DeployWorker", "false"), ("TableName", &table)],
    )
    .await?;
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
        "eventName": "CreateGateway", "awsRegion": REGION,
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

/// SDK configuration acting in `account` (through an assumed role: moto attributes the assumed
/// credentials to the role's account) or the home account, in `region`.
async fn config_in(env: &TestEnv, account: &str, region: &str) -> SdkConfig {
    let mut config = env
        .config
        .to_builder()
        .region(Region::new(region.to_owned()));
    if account != ACCOUNT {
        let role =
            AssumeRoleProvider::builder(format!("arn:aws:iam::{account}:role/stackset-execution"))
                .session_name("test-deploy")
                .configure(&env.config)
                .build()
                .await;
        config = config.credentials_provider(SharedCredentialsProvider::new(role));
    }
    config.build()
}

/// A CloudTrail record of an AgentCore call made in `account`/`region` (as CloudTrail writes it
/// there, before any forwarding).
fn cloudtrail_record(account: &str, region: &str, response: Value, error: Option<&str>) -> Value {
    let mut record = json!({
        "eventVersion": "1.09", "eventSource": "bedrock-agentcore.amazonaws.com",
        "eventName": "CreateGateway", "awsRegion": region, "eventTime": "2026-11-23T10:00:00Z",
        "eventID": format!("ct-{account}-{region}-{}", error.unwrap_or("ok")),
        "readOnly": false, "eventType": "AwsApiCall", "managementEvent": true,
        "recipientAccountId": account, "requestParameters": {}, "responseElements": response,
    });
    if let Some(code) = error {
        record["errorCode"] = json!(code);
    }
    record
}

#[tokio::test(flavor = "multi_thread")]
async fn forwarders_carry_other_regions_and_member_accounts_to_the_central_queue()
-> anyhow::Result<()> {
    let env = TestEnv::start().await?;
    let table = format!("{}-stack", env.table);
    let central = deploy(
        &env.config,
        "registrar",
        REGISTRAR,
        &[
            ("DeployWorker", "false"),
            ("TableName", &table),
            ("Regions", OTHER_REGION),
            ("MemberAccountIds", MEMBER),
        ],
    )
    .await?;
    let (queue_url, dlq_url) = (central["QueueUrl"].clone(), central["DlqUrl"].clone());
    let central_bus = format!("arn:aws:events:{REGION}:{ACCOUNT}:event-bus/default");
    let forwarder_params = [("CentralAccountId", ACCOUNT), ("HomeRegion", REGION)];

    // A StackSet instance landing in the central home region creates nothing: no second rule
    // putting the bus's events back on itself.
    let home = deploy(&env.config, "forwarder", FORWARDER, &forwarder_params).await?;
    assert!(home.is_empty(), "{home:?}");
    let rules = aws_sdk_eventbridge::Client::new(&env.config)
        .list_rules()
        .send()
        .await?;
    let names: Vec<&str> = rules.rules().iter().filter_map(|r| r.name()).collect();
    assert_eq!(names, ["registrar-agentcore-api-calls"]);

    // The forwarder in the home account's other region and in a member account's regions (the
    // home one and another). In each: a failed call, then a successful one naming a gateway
    // that exists there.
    let scopes = [
        (ACCOUNT, OTHER_REGION),
        (MEMBER, REGION),
        (MEMBER, OTHER_REGION),
    ];
    let mut gateways = HashMap::new();
    for (account, region) in scopes {
        let config = config_in(&env, account, region).await;
        let outputs = deploy(&config, "forwarder", FORWARDER, &forwarder_params).await?;
        assert_eq!(outputs["CentralBusArn"], central_bus);
        let events = aws_sdk_eventbridge::Client::new(&config);
        let rule = outputs["RuleArn"].rsplit('/').next().unwrap_or_default();
        assert!(
            outputs["RuleArn"].contains(&format!(":{region}:{account}:rule/")),
            "{outputs:?}"
        );
        let described = events.describe_rule().name(rule).send().await?;
        let deployed: Value = serde_json::from_str(described.event_pattern().unwrap_or("null"))?;
        assert_eq!(deployed, embedded_pattern(FORWARDER), "the single pattern");
        let targets = events.list_targets_by_rule().rule(rule).send().await?;
        let [target] = targets.targets() else {
            panic!("one target: {targets:?}")
        };
        assert_eq!(target.arn(), central_bus);
        let role = target.role_arn().unwrap_or_default();
        assert!(
            role.starts_with(&format!("arn:aws:iam::{account}:role/")),
            "{role}"
        );
        let dlq = target
            .dead_letter_config()
            .and_then(|d| d.arn())
            .unwrap_or_default();
        assert!(dlq.contains(&format!(":sqs:{region}:{account}:")), "{dlq}");
        assert!(target.retry_policy().is_some());

        let name = format!(
            "fwd-{}-{region}",
            if account == ACCOUNT { "home" } else { "member" }
        );
        let agentcore = aws_sdk_bedrockagentcorecontrol::Client::new(&config);
        let id = create_gateway(&agentcore, &name, GatewayAuth::Iam).await?;
        let put = |record: Value| {
            let events = events.clone();
            async move {
                let entry = aws_sdk_eventbridge::types::PutEventsRequestEntry::builder()
                    .source("aws.bedrock-agentcore")
                    .detail_type("AWS API Call via CloudTrail")
                    .detail(record.to_string())
                    .build();
                let out = events.put_events().entries(entry).send().await?;
                anyhow::ensure!(out.failed_entry_count() == 0, "PutEvents failed: {out:?}");
                anyhow::Ok(())
            }
        };
        put(cloudtrail_record(
            account,
            region,
            json!(null),
            Some("ValidationException"),
        ))
        .await?;
        put(cloudtrail_record(
            account,
            region,
            json!({"gatewayId": id}),
            None,
        ))
        .await?;
        gateways.insert(id, (account, region, name));
    }

    // The successful calls arrive on the central queue; once they have, the failed ones (put
    // before them on the same buses) would have too, and nothing else is there.
    let queue = EventPath::existing(&env.config, &queue_url, &dlq_url).queue();
    let mut received: Vec<Received> = Vec::new();
    let started = std::time::Instant::now();
    while received.len() < scopes.len() && started.elapsed() < Duration::from_secs(30) {
        received.extend(
            queue
                .receive(10, Duration::from_secs(1), Duration::from_secs(300))
                .await?,
        );
    }
    received.extend(drain(&queue).await?);
    assert_eq!(
        received.len(),
        scopes.len(),
        "one message per successful call, none for the failed ones: {:?}",
        received.iter().map(|m| &m.body).collect::<Vec<_>>()
    );
    for message in &received {
        let body: Value = serde_json::from_str(&message.body)?;
        let record = &body["detail"];
        assert!(record.get("errorCode").is_none(), "{body}");
        let id = record["responseElements"]["gatewayId"]
            .as_str()
            .unwrap_or_default();
        let (account, region, _) = gateways
            .get(id)
            .unwrap_or_else(|| panic!("a gateway this test named: {body}"));
        // The CloudTrail record arrives as written where the call was made. (moto re-stamps the
        // envelope's `region` with the central bus's and leaves out `account`; AWS keeps the
        // sender's. ingest reads the record's region first, and the envelope's account, else the
        // record's.)
        assert_eq!(record["recipientAccountId"], *account, "{body}");
        assert_eq!(record["awsRegion"], *region, "{body}");
        let Verdict::Reconcile { keys, .. } = parse(&message.body, ParseOptions::default()) else {
            panic!("a reconcile: {body}")
        };
        let [key] = keys.as_slice() else {
            panic!("one key: {keys:?}")
        };
        assert_eq!(
            (key.account.as_str(), key.region.as_str(), key.id.as_str()),
            (*account, *region, id),
            "ingest keys the event by the resource's own account and region"
        );
        queue.set_visibility(message, Duration::ZERO).await?;
    }

    // A real worker reading both regions of both accounts registers each gateway from its
    // forwarded event.
    let path = EventPath::existing(&env.config, &queue_url, &dlq_url);
    let _worker = env.spawn_worker_with_env(
        &path,
        &[],
        &[
            ("REGISTRAR_TABLE", table.as_str()),
            ("REGISTRAR_REGIONS", OTHER_REGION),
            ("REGISTRAR_MEMBER_ACCOUNTS", MEMBER),
            ("REGISTRAR_ALLOWED_ACCOUNTS", MEMBER),
        ],
    )?;
    let paths: Vec<String> = gateways
        .values()
        .map(|(_, _, name)| format!("/{name}"))
        .collect();
    assert!(
        eventually(Duration::from_secs(30), || paths
            .iter()
            .all(|p| env.standin.server(p).is_some()))
        .await,
        "registered through the forwarded path\n{}",
        env.worker_logs()
    );
    for (account, region, name) in gateways.values() {
        let entry = env.standin.server(&format!("/{name}")).unwrap_or_default();
        assert!(
            entry
                .to_string()
                .contains(&format!(":{region}:{account}:gateway/")),
            "{entry}"
        );
    }
    assert!(
        path.drained(Duration::from_secs(10)).await?,
        "the worker consumed them"
    );
    assert_eq!(path.dlq_total().await?, 0, "nothing dead-lettered");
    Ok(())
}

#[test]
fn the_standalone_operator_policy_grants_what_the_stack_policy_grants() {
    let file: Value = serde_json::from_str(&repo_file("infra/iam/operator-policy.json"))
        .expect("operator policy is JSON");
    let template = repo_file(REGISTRAR);
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
    let template = repo_file(REGISTRAR);
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
