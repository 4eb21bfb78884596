//! Contract suites: one behaviour, checked against the in-memory port and the real adapter
//! alike (`tests/tests/contracts.rs` runs them on DynamoDB/moto, the registry stand-in and
//! AgentCore/moto; this crate's tests run them on the in-memory ports).

pub mod agentcore;
pub mod registry;
pub mod state;

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use registrar_core::desired::{Collection, Pointing};
    use registrar_core::plan::CurrentEntry;

    use crate::fixtures::{ACCOUNT, REGION, gateway, runtime};
    use crate::{MemoryAgentCore, MemoryRegistry, MemoryState, TestClock};

    fn state() -> MemoryState {
        MemoryState::new(Arc::new(TestClock::standard()))
    }

    #[tokio::test(start_paused = true)]
    async fn the_memory_state_keeps_the_state_contract() {
        super::state::resources(&state()).await;
        super::state::tokens(&state()).await;
        let s = state();
        super::state::due_index(&s, async || {
            s.take_reads().into_iter().map(String::from).collect()
        })
        .await;
        let s = state();
        super::state::gateway_targets(&s, async || {
            s.take_reads().into_iter().map(String::from).collect()
        })
        .await;
        super::state::leases(&state(), Duration::from_millis(300), async |d| {
            tokio::time::sleep(d).await;
        })
        .await;
    }

    #[tokio::test(start_paused = true)]
    async fn memory_lease_versions_only_grow_under_clock_skew() {
        let ahead = state();
        let behind = ahead.with_clock(Arc::new(TestClock::new(1_795_910_300_000, 2)));
        super::state::lease_versions_under_skew(&ahead, &behind).await;
    }

    #[tokio::test]
    async fn the_memory_registry_keeps_the_registry_contract() {
        super::registry::registry(&MemoryRegistry::new("registrar"), "registrar").await;
        let r = MemoryRegistry::new("registrar");
        super::registry::taken_paths(&r, &Publisher(&r)).await;
    }

    /// Another publisher of the memory registry.
    struct Publisher<'a>(&'a MemoryRegistry);

    impl Publisher<'_> {
        fn entry(collection: Collection, path: &str) -> CurrentEntry {
            CurrentEntry {
                collection,
                path: path.to_owned(),
                name: "Someone Else's".into(),
                metadata: serde_json::json!({"source": "someone-else"})
                    .as_object()
                    .cloned()
                    .unwrap_or_default(),
                tags: Vec::new(),
                enabled: false,
                status: Some("draft".into()),
                pointing: Some(Pointing::new("https://elsewhere.example.com/mcp", None)),
                registered_by: Some("mallory".into()),
                mcp_endpoint: None,
            }
        }
    }

    impl super::registry::Seed for Publisher<'_> {
        async fn draft_server(&self, path: &str) {
            self.0.seed(Self::entry(Collection::Server, path));
            self.0.hide(path);
        }
        async fn foreign_agent(&self, path: &str) {
            self.0.seed(Self::entry(Collection::Agent, path));
        }
    }

    struct Seeder<'a>(&'a MemoryAgentCore);

    impl super::agentcore::Seed for Seeder<'_> {
        async fn gateway(&self, name: &str) -> String {
            let id = format!("{name}-0123456789");
            self.0.put_gateway(gateway(name, &id, None));
            id
        }
        async fn runtime(&self, name: &str) -> String {
            let id = format!("{name}-0123456789");
            self.0.put_runtime(runtime(name, &id));
            id
        }
        async fn delete_gateway(&self, id: &str) {
            self.0.delete_gateway(id);
        }
    }

    #[tokio::test]
    async fn the_memory_agentcore_keeps_the_agentcore_contract() {
        let ac = MemoryAgentCore::new(ACCOUNT, REGION);
        super::agentcore::agentcore(&ac, ACCOUNT, &Seeder(&ac)).await;
    }
}
