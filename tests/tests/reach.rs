//! Several regions and member accounts per worker, on moto: member accounts are reached by
//! AssumeRole (moto keeps one backend per account and attributes assumed credentials to the
//! role's account), and cross-account reads fail closed.

use std::time::Duration;

use aws_config::Region;
use aws_config::sts::AssumeRoleProvider;
use aws_sdk_bedrockagentcorecontrol::Client;
use registrar_tests::env::{TestEnv, eventually};
use registrar_tests::events::EventPath;
use registrar_tests::fixtures::{GatewayAuth, create_gateway};
use serde_json::{Value, json};

const MEMBER: &str = "111111111111";
const STRANGER: &str = "222222222222";
const OTHER_REGION: &str = "eu-west-1";

/// An AgentCore client acting in `account` (through an assumed role) and `region`.
async fn agentcore_in(env: &TestEnv, account: Option<&str>, region: &str) -> Client {
    let mut config = aws_sdk_bedrockagentcorecontrol::config::Builder::from(&env.config)
        .region(Region::new(region.to_owned()));
    if let Some(account) = account {
        let role = AssumeRoleProvider::builder(format!(
            "arn:aws:iam::{account}:role/agentcore-registrar-reader"
        ))
        .session_name("test-setup")
        .configure(&env.config)
        .build()
        .await;
        config = config.credentials_provider(role);
    }
    Client::from_conf(config.build())
}

fn arn_of(entry: &Value) -> String {
    entry["metadata"]["gateway_arn"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn resync_reads_allowlisted_member_accounts_in_every_listed_region() -> anyhow::Result<()> {
    let env = TestEnv::start().await?;
    create_gateway(&env.agentcore, "home-east", GatewayAuth::Iam).await?;
    let home_west = agentcore_in(&env, None, OTHER_REGION).await;
    create_gateway(&home_west, "home-west", GatewayAuth::Iam).await?;
    let member_east = agentcore_in(&env, Some(MEMBER), registrar_tests::REGION).await;
    create_gateway(&member_east, "member-east", GatewayAuth::Iam).await?;
    let member_west = agentcore_in(&env, Some(MEMBER), OTHER_REGION).await;
    let member_west_id = create_gateway(&member_west, "member-west", GatewayAuth::Iam).await?;
    let stranger = agentcore_in(&env, Some(STRANGER), registrar_tests::REGION).await;
    create_gateway(&stranger, "stranger", GatewayAuth::Iam).await?;

    let reach = [
        "--regions",
        OTHER_REGION,
        "--member-accounts",
        MEMBER,
        "--allowed-accounts",
        "111111111111,333333333333",
    ];
    let out = env.cli(&[&["resync"][..], &reach].concat()).await?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let expect = [
        ("/home-east", "us-east-1:123456789012:"),
        ("/home-west", "eu-west-1:123456789012:"),
        ("/member-east", "us-east-1:111111111111:"),
        ("/member-west", "eu-west-1:111111111111:"),
    ];
    for (path, scope) in expect {
        let entry = env
            .standin
            .server(path)
            .unwrap_or_else(|| panic!("{path} registered: {stdout}"));
        assert!(arn_of(&entry).contains(scope), "{path}: {}", arn_of(&entry));
    }
    assert!(
        env.standin.server("/stranger").is_none(),
        "an account nobody listed is never read"
    );
    assert_eq!(env.standin.db().servers.len(), 4);

    // A listed account outside the allowlist: refused before anything is read or written.
    let before = env.standin.log().len();
    let out = env
        .cli(&[
            "resync",
            "--member-accounts",
            "111111111111,222222222222",
            "--allowed-accounts",
            MEMBER,
        ])
        .await?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("222222222222") && stderr.contains("--allowed-accounts"),
        "{stderr}"
    );
    // The same through the environment, with no allowlist at all.
    let out = env
        .cli_with_env(&["resync"], &[("REGISTRAR_MEMBER_ACCOUNTS", MEMBER)])
        .await?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("empty"), "{stderr}");
    assert_eq!(env.standin.log().len(), before, "refused runs send nothing");

    // Deletion in a member region is seen: that scope was listed completely.
    member_west
        .delete_gateway()
        .gateway_identifier(&member_west_id)
        .send()
        .await?;
    let out = env.cli(&[&["resync"][..], &reach].concat()).await?;
    assert!(out.status.success());
    assert!(env.standin.server("/member-west").is_none());
    assert_eq!(env.standin.db().servers.len(), 3);
    Ok(())
}

/// An EventBridge envelope of a CreateGateway call in `account`/`region`.
fn create_event(account: &str, region: &str, gateway_id: &str) -> String {
    json!({
        "version": "0", "id": format!("eb-{gateway_id}"), "detail-type": "AWS API Call via CloudTrail",
        "source": "aws.bedrock-agentcore", "account": account, "time": "2026-11-22T10:00:00Z",
        "region": region, "resources": [],
        "detail": {
            "eventVersion": "1.09", "eventSource": "bedrock-agentcore.amazonaws.com",
            "eventName": "CreateGateway", "awsRegion": region, "eventTime": "2026-11-22T10:00:00Z",
            "eventID": format!("ct-{gateway_id}"), "readOnly": false, "eventType": "AwsApiCall",
            "managementEvent": true, "recipientAccountId": account, "requestParameters": {},
            "responseElements": {
                "gatewayId": gateway_id,
                "gatewayArn": format!("arn:aws:bedrock-agentcore:{region}:{account}:gateway/{gateway_id}"),
            },
        },
    })
    .to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn worker_routes_events_by_account_and_region_and_refuses_strangers() -> anyhow::Result<()> {
    let env = TestEnv::start().await?;
    let path = EventPath::create(&env.config, "reach", 3, 10).await?;
    let member_west = agentcore_in(&env, Some(MEMBER), OTHER_REGION).await;
    let member_id = create_gateway(&member_west, "member-west", GatewayAuth::Iam).await?;
    let home_west = agentcore_in(&env, None, OTHER_REGION).await;
    let home_id = create_gateway(&home_west, "home-west", GatewayAuth::Iam).await?;
    let stranger = agentcore_in(&env, Some(STRANGER), OTHER_REGION).await;
    let stranger_id = create_gateway(&stranger, "stranger", GatewayAuth::Iam).await?;

    let _worker = env.spawn_worker_with_env(
        &path,
        &[],
        &[
            ("REGISTRAR_REGIONS", OTHER_REGION),
            ("REGISTRAR_MEMBER_ACCOUNTS", MEMBER),
            ("REGISTRAR_ALLOWED_ACCOUNTS", MEMBER),
        ],
    )?;
    path.send_raw(&create_event(MEMBER, OTHER_REGION, &member_id))
        .await?;
    path.send_raw(&create_event(
        registrar_tests::ACCOUNT,
        OTHER_REGION,
        &home_id,
    ))
    .await?;
    path.send_raw(&create_event(STRANGER, OTHER_REGION, &stranger_id))
        .await?;
    assert!(
        eventually(Duration::from_secs(30), || env
            .standin
            .server("/member-west")
            .is_some()
            && env.standin.server("/home-west").is_some())
        .await,
        "member and home events in the second region are served\n{}",
        env.worker_logs()
    );
    let dead = path.wait_for_dead_letters(Duration::from_secs(30)).await?;
    assert_eq!(dead.len(), 1, "{dead:?}");
    let reason = dead[0]
        .attributes
        .get("registrar-reason")
        .cloned()
        .unwrap_or_default();
    assert!(
        reason.contains(STRANGER) && reason.contains("outside what this worker reads"),
        "{reason}"
    );
    assert!(env.standin.server("/stranger").is_none());
    Ok(())
}
