//! The contract suites of `registrar-testkit`, run against the real adapters: the DynamoDB
//! state store on moto, the registry client on the stand-in, AgentCore on moto. The same
//! suites run on the in-memory ports (the testkit's own tests), so the fakes the engine's unit
//! tests use cannot drift from what they stand for.

use std::time::Duration;

use registrar_testkit::contract;
use registrar_tests::env::{ADMIN_TOKEN, TestEnv};
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
    Ok(())
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
