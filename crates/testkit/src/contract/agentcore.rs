//! What every AgentCore answers: its account and region, NotFound as `None`, a created
//! gateway or runtime READY in its list and by id, a deleted one gone (or DELETING).

use registrar_core::observed::Lifecycle;
use registrar_core::ports::AgentCore;

/// How a suite creates and deletes resources in the AgentCore under test.
pub trait Seed {
    /// Creates a gateway behind IAM; its id.
    fn gateway(&self, name: &str) -> impl Future<Output = String>;
    /// Creates an agent runtime; its id.
    fn runtime(&self, name: &str) -> impl Future<Output = String>;
    /// Deletes a gateway.
    fn delete_gateway(&self, id: &str) -> impl Future<Output = ()>;
}

fn gone(lifecycle: Option<Lifecycle>) -> bool {
    lifecycle.is_none_or(|l| l == Lifecycle::Deleting)
}

/// Runs the suite against `agentcore` of `account`.
pub async fn agentcore<A: AgentCore, S: Seed>(agentcore: &A, account: &str, seed: &S) {
    assert_eq!(agentcore.account().await.expect("account"), account);
    assert_eq!(
        agentcore.get_gateway("gw-nowhere0").await.expect("get"),
        None
    );
    assert_eq!(
        agentcore
            .get_runtime("rt_nowhere0-abcdefghij")
            .await
            .expect("get"),
        None
    );

    let id = seed.gateway("contract-gateway").await;
    let listed = agentcore.list_gateways().await.expect("list");
    let item = listed.iter().find(|l| l.id == id).expect("listed");
    assert_eq!(item.lifecycle, Lifecycle::Ready);
    assert!(!item.updated_at.is_empty());
    let gw = agentcore
        .get_gateway(&id)
        .await
        .expect("get")
        .expect("gateway");
    assert_eq!(gw.name, "contract-gateway");
    assert_eq!(gw.lifecycle, Lifecycle::Ready);
    assert!(
        gw.arn.contains(account) && gw.arn.contains(agentcore.region()),
        "{}",
        gw.arn
    );
    assert!(gw.arn.ends_with(&id), "{}", gw.arn);
    assert!(
        agentcore
            .list_targets(&id)
            .await
            .expect("targets")
            .is_empty()
    );
    assert_eq!(
        agentcore
            .get_target(&gw, "nothere00")
            .await
            .expect("target"),
        None
    );

    let rt = seed.runtime("contract_runtime").await;
    let listed = agentcore.list_runtimes().await.expect("list");
    assert!(listed.iter().any(|l| l.id == rt), "{listed:?}");
    let runtime = agentcore
        .get_runtime(&rt)
        .await
        .expect("get")
        .expect("runtime");
    assert_eq!(runtime.name, "contract_runtime");
    assert_eq!(runtime.lifecycle, Lifecycle::Ready);

    seed.delete_gateway(&id).await;
    let after = agentcore.get_gateway(&id).await.expect("get");
    assert!(gone(after.map(|g| g.lifecycle)), "deleted");
}
