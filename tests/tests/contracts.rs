//! The contract suites of `registrar-testkit`, run against the real adapters: the DynamoDB
//! state store on moto, the registry client on the stand-in, AgentCore on moto. The same
//! suites run on the in-memory ports (the testkit's own tests), so the fakes the engine's unit
//! tests use cannot drift from what they stand for.

use std::time::Duration;

use registrar_testkit::contract;
use registrar_tests::env::{ADMIN_TOKEN, MALLORY_TOKEN, TestEnv};
use registrar_tests::fixtures::{GatewayAuth, create_gateway, create_runtime};
use registrar_tests::proxy::{Proxy, dynamodb_items_read};
use registrar_worker::aws::agentcore::AgentCoreAws;
use registrar_worker::aws::state::DynamoState;

#[tokio::test(flavor = "multi_thread")]
async fn the_dynamodb_state_store_keeps_the_state_contract() -> anyhow::Result<()> {
    let env = TestEnv::start().await?;
    let state = env.state();
    contract::state::resources(&state).await;
    contract::state::tokens(&state).await;
    // A real clock: the lease must outlast a few moto calls on a busy machine.
    contract::state::leases(&state, Duration::from_secs(2), async |d| {
        tokio::time::sleep(d).await;
    })
    .await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_dynamodb_due_index_finds_tokens_when_due_and_reads_nothing_else() -> anyhow::Result<()>
{
    let env = TestEnv::start().await?;
    // Every DynamoDB call through a recording proxy: what each answer held is what was read.
    let proxy = Proxy::start(&env.moto.url()).await?;
    proxy.record_answers();
    proxy.record();
    let config = env.config.to_builder().endpoint_url(proxy.url()).build();
    let state = DynamoState::new(&config, &env.table);
    contract::state::due_index(&state, async || {
        let calls = proxy.take_recorded();
        proxy.record();
        dynamodb_items_read(&calls)
    })
    .await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_dynamodb_state_finds_a_gateways_targets_without_a_scan() -> anyhow::Result<()> {
    let env = TestEnv::start().await?;
    let proxy = Proxy::start(&env.moto.url()).await?;
    proxy.record_answers();
    proxy.record();
    let config = env.config.to_builder().endpoint_url(proxy.url()).build();
    let state = DynamoState::new(&config, &env.table);
    contract::state::gateway_targets(&state, async || {
        let calls = proxy.take_recorded();
        proxy.record();
        dynamodb_items_read(&calls)
    })
    .await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn target_records_written_before_their_gateway_pointer_are_given_it_once_per_table()
-> anyhow::Result<()> {
    use aws_sdk_dynamodb::types::AttributeValue;
    use registrar_core::identity::{ResourceKey, ResourceKind};
    use registrar_core::ports::ResourceStore;
    use registrar_testkit::fixtures::{recorded, target_server_entry};
    let env = TestEnv::start().await?;
    let state = env.state();
    let ddb = aws_sdk_dynamodb::Client::new(&env.config);
    let s = |v: &str| AttributeValue::S(v.to_owned());
    // Recorded as the older version did: rows and key pointers, no pointer under the gateway.
    let one = recorded(&target_server_entry("old", "gw-old", "one", "T1"));
    let two = recorded(&target_server_entry("old", "gw-old", "two", "T2"));
    for (r, id) in [(&one, "T1"), (&two, "T2")] {
        state.record(r).await?;
        ddb.delete_item()
            .table_name(&env.table)
            .key("pk", s("key#gateway#us-east-1#gw-old"))
            .key("sk", s(&format!("target#{id}")))
            .send()
            .await?;
    }
    // The table is new: ensure_table wrote the marker. Take it away, as on a table created by
    // the older version or by the stack.
    ddb.delete_item()
        .table_name(&env.table)
        .key("pk", s("meta#target-pointers"))
        .key("sk", s("meta"))
        .send()
        .await?;
    let gateway = ResourceKey {
        kind: ResourceKind::Gateway,
        account: registrar_tests::ACCOUNT.into(),
        region: "us-east-1".into(),
        id: "gw-old".into(),
        gateway_id: None,
    };
    assert!(
        state.targets_of(&gateway).await?.is_empty(),
        "not backfilled yet"
    );
    assert_eq!(state.backfill_target_pointers().await?, Some(2));
    let mut found: Vec<String> = state
        .targets_of(&gateway)
        .await?
        .into_iter()
        .map(|r| r.resource.arn)
        .collect();
    found.sort();
    assert_eq!(found, [one.resource.arn.clone(), two.resource.arn.clone()]);
    assert_eq!(
        state.backfill_target_pointers().await?,
        None,
        "once per table"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn token_items_written_before_the_due_index_are_indexed_once_per_table() -> anyhow::Result<()>
{
    use aws_sdk_dynamodb::types::AttributeValue;
    use registrar_core::ports::TokenStore;
    let env = TestEnv::start().await?;
    let state = env.state();
    let ddb = aws_sdk_dynamodb::Client::new(&env.config);
    let s = |v: &str| AttributeValue::S(v.to_owned());
    let n = |v: u64| AttributeValue::N(v.to_string());
    // As the older version wrote them: manifest rows by their own put, token items without the
    // index keys; one row never refreshed (no token item), one token whose row is gone.
    let mut arns = Vec::new();
    for name in ["old-a", "old-b", "orphan"] {
        let arn = format!("arn:aws:bedrock-agentcore:us-east-1:123456789012:gateway/{name}");
        if name != "orphan" {
            ddb.put_item()
                .table_name(&env.table)
                .item("pk", s(&format!("res#{arn}")))
                .item("sk", s("manifest"))
                .item("arn", s(&arn))
                .item("path", s(&format!("/{name}")))
                .item("url", s("https://gw.example/mcp"))
                .item(
                    "discovery_url",
                    s("https://idp.example/.well-known/openid-configuration"),
                )
                .send()
                .await?;
        }
        if name != "old-b" {
            ddb.put_item()
                .table_name(&env.table)
                .item("pk", s(&format!("res#{arn}")))
                .item("sk", s("token"))
                .item("arn", s(&arn))
                .item("next_refresh_at", n(500))
                .item("last_result", s("ok"))
                .item("failures", n(0))
                .send()
                .await?;
        }
        arns.push(arn);
    }
    // The table is new: ensure_table wrote the marker. Take it away, as on a table created by
    // the older stack.
    ddb.delete_item()
        .table_name(&env.table)
        .key("pk", s("meta#token-index"))
        .key("sk", s("meta"))
        .send()
        .await?;
    assert!(
        state.due_tokens(u64::MAX).await?.is_empty(),
        "not indexed yet"
    );
    assert_eq!(state.backfill_token_index().await?, Some(2));
    let due = state.due_tokens(u64::MAX).await?;
    let found: Vec<(&str, Option<u64>)> = due
        .iter()
        .map(|d| {
            (
                d.manifest.path.as_str(),
                d.token.as_ref().map(|t| t.next_refresh_at),
            )
        })
        .collect();
    assert_eq!(found, [("/old-b", None), ("/old-a", Some(500))]);
    assert_eq!(
        state.due_tokens(499).await?.len(),
        1,
        "indexed at its next refresh"
    );
    assert_eq!(state.backfill_token_index().await?, None, "once per table");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn dynamodb_lease_versions_only_grow_under_clock_skew() -> anyhow::Result<()> {
    let env = TestEnv::start().await?;
    let behind = registrar_testkit::TestClock::new(1_000_000_000_000, 1);
    contract::state::lease_versions_under_skew(
        &env.state(),
        &env.state().with_clock(std::sync::Arc::new(behind)),
    )
    .await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_registry_client_on_the_stand_in_keeps_the_registry_contract() -> anyhow::Result<()> {
    let env = TestEnv::start().await?;
    contract::registry::registry(&env.registry(ADMIN_TOKEN), "registrar").await;
    let publisher = Publisher {
        http: reqwest::Client::new(),
        base: env.standin.url(),
    };
    contract::registry::taken_paths(&env.registry(ADMIN_TOKEN), &publisher).await;
    Ok(())
}

/// Another publisher of the stand-in, registering through its routes with its own key.
struct Publisher {
    http: reqwest::Client,
    base: String,
}

impl contract::registry::Seed for Publisher {
    async fn draft_server(&self, path: &str) {
        let form = [
            ("path", path),
            ("name", "Someone Else's Draft"),
            ("description", "not ours"),
            ("proxy_pass_url", "https://elsewhere.example.com/mcp"),
            ("status", "draft"),
            ("overwrite", "False"),
        ];
        let r = self
            .http
            .post(format!("{}/api/servers/register", self.base))
            .bearer_auth(MALLORY_TOKEN)
            .form(&form)
            .send()
            .await
            .expect("the stand-in answers");
        assert_eq!(r.status(), reqwest::StatusCode::CREATED);
    }

    async fn foreign_agent(&self, path: &str) {
        let body = serde_json::json!({"name": "Someone Else's Agent", "path": path,
            "url": "https://elsewhere.example.com/a2a", "supportedProtocol": "other"});
        let r = self
            .http
            .post(format!("{}/api/agents/register", self.base))
            .bearer_auth(MALLORY_TOKEN)
            .json(&body)
            .send()
            .await
            .expect("the stand-in answers");
        assert_eq!(r.status(), reqwest::StatusCode::CREATED);
    }
}

struct Moto<'a>(&'a aws_sdk_bedrockagentcorecontrol::Client);

impl contract::agentcore::Seed for Moto<'_> {
    async fn gateway(&self, name: &str) -> String {
        create_gateway(self.0, name, GatewayAuth::Iam)
            .await
            .expect("moto creates the gateway")
    }
    async fn runtime(&self, name: &str) -> String {
        create_runtime(
            self.0,
            name,
            aws_sdk_bedrockagentcorecontrol::types::ServerProtocol::A2A,
        )
        .await
        .expect("moto creates the runtime")
    }
    async fn delete_gateway(&self, id: &str) {
        self.0
            .delete_gateway()
            .gateway_identifier(id)
            .send()
            .await
            .expect("moto deletes the gateway");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn agentcore_on_moto_keeps_the_agentcore_contract() -> anyhow::Result<()> {
    let env = TestEnv::start().await?;
    let agentcore = AgentCoreAws::new(&env.config);
    contract::agentcore::agentcore(&agentcore, registrar_tests::ACCOUNT, &Moto(&env.agentcore))
        .await;
    Ok(())
}
