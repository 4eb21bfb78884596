//! What every registry does, as `registry-contract.md` records it: a registration never
//! overwrites (a 409 for any taken path: ours, disabled, a draft lists leave out, another
//! publisher's), servers start disabled and remember who registered them, an update keeps the
//! enabled state, credentials change the server's auth scheme, removal is idempotent, and
//! lists carry no `mcp_endpoint`.

use registrar_core::ErrorClass;
use registrar_core::desired::Collection;
use registrar_core::ports::Registry;

use crate::fixtures::{agent_entry, server_entry};

/// Runs the suite against `registry`, whose caller is `user`, on paths no other test uses.
pub async fn registry<R: Registry>(registry: &R, user: &str) {
    let d = server_entry("contract", "gw-contract");
    let path = d.path.clone();
    assert_eq!(
        registry.get(Collection::Server, &path).await.expect("get"),
        None
    );

    registry.register(&d).await.expect("register");
    let got = registry
        .get(Collection::Server, &path)
        .await
        .expect("get")
        .expect("entry");
    assert!(!got.enabled, "servers start disabled");
    assert_eq!(got.registered_by.as_deref(), Some(user));
    assert_eq!(got.pointing, Some(d.body.pointing()));
    assert_eq!(got.fingerprint(), Some(d.fingerprint.as_str()));
    assert!(
        got.mcp_endpoint.is_some(),
        "a GET says where the MCP endpoint is"
    );
    // Our own entry, still disabled, at the path.
    let again = registry.register(&d).await.expect_err("the path is taken");
    assert_eq!(again.class, ErrorClass::Conflict, "{again}");

    registry
        .set_enabled(Collection::Server, &path, true)
        .await
        .expect("enable");
    let mut changed = server_entry("contract", "gw-contract");
    changed.fingerprint = format!("{}-2", changed.fingerprint);
    if let registrar_core::desired::EntryBody::Server(s) = &mut changed.body {
        s.description = "changed".into();
        s.metadata
            .insert("fingerprint".into(), changed.fingerprint.clone().into());
    }
    registry.update(&changed, &got).await.expect("update");
    let updated = registry
        .get(Collection::Server, &path)
        .await
        .expect("get")
        .expect("entry");
    assert!(updated.enabled, "an update keeps the enabled state");
    assert_eq!(updated.fingerprint(), Some(changed.fingerprint.as_str()));

    registry
        .set_credential(&path, Some("token-1"))
        .await
        .expect("credential");
    let with = registry
        .get(Collection::Server, &path)
        .await
        .expect("get")
        .expect("entry");
    assert_eq!(
        with.pointing.and_then(|p| p.auth_scheme).as_deref(),
        Some("bearer")
    );
    registry.set_credential(&path, None).await.expect("clear");
    let without = registry
        .get(Collection::Server, &path)
        .await
        .expect("get")
        .expect("entry");
    assert_eq!(
        without.pointing.and_then(|p| p.auth_scheme).as_deref(),
        Some("none")
    );

    let listed = registry.list(Collection::Server).await.expect("list");
    let mine = listed.iter().find(|e| e.path == path).expect("listed");
    assert_eq!(mine.mcp_endpoint, None, "lists carry no mcp_endpoint");
    assert!(mine.enabled);

    registry
        .remove(Collection::Server, &path)
        .await
        .expect("remove");
    assert_eq!(
        registry.get(Collection::Server, &path).await.expect("get"),
        None
    );
    registry
        .remove(Collection::Server, &path)
        .await
        .expect("removal is idempotent");
    assert!(
        registry
            .set_enabled(Collection::Server, &path, true)
            .await
            .is_err()
    );
    assert!(registry.set_credential(&path, Some("t")).await.is_err());

    let a = agent_entry("contract-agent", "rt-contract");
    registry.register(&a).await.expect("register agent");
    let agent = registry
        .get(Collection::Agent, &a.path)
        .await
        .expect("get")
        .expect("agent");
    assert_eq!(agent.pointing, Some(a.body.pointing()));
    assert_eq!(agent.fingerprint(), Some(a.fingerprint.as_str()));
    let again = registry.register(&a).await.expect_err("taken");
    assert_eq!(again.class, ErrorClass::Conflict, "{again}");
    registry
        .set_enabled(Collection::Agent, &a.path, true)
        .await
        .expect("enable agent");
    assert!(
        registry
            .get(Collection::Agent, &a.path)
            .await
            .expect("get")
            .expect("agent")
            .enabled
    );
    registry
        .remove(Collection::Agent, &a.path)
        .await
        .expect("remove agent");
    assert_eq!(
        registry.get(Collection::Agent, &a.path).await.expect("get"),
        None
    );
}

/// How a suite puts entries in place as someone else would: another publisher, through the
/// registry's own routes where it has them, never through the client under test.
pub trait Seed {
    /// Another publisher's server at `path`, with status `draft` (lists leave it out).
    fn draft_server(&self, path: &str) -> impl Future<Output = ()>;
    /// Another publisher's agent at `path` (stored disabled, as every new agent is).
    fn foreign_agent(&self, path: &str) -> impl Future<Output = ()>;
}

/// A registration finds a path taken whoever holds it and whatever its state, answering a
/// conflict (409) and leaving the entry as it was: a draft server that lists leave out, and
/// another publisher's disabled agent. The engine registers new resources without a GET first
/// and relies on exactly this. Runs on paths no other suite uses.
pub async fn taken_paths<R: Registry, S: Seed>(registry: &R, seed: &S) {
    let d = server_entry("contract-draft", "gw-contract-draft");
    seed.draft_server(&d.path).await;
    let listed = registry.list(Collection::Server).await.expect("list");
    assert!(
        listed.iter().all(|e| e.path != d.path),
        "lists leave drafts out"
    );
    let draft = registry
        .get(Collection::Server, &d.path)
        .await
        .expect("get")
        .expect("a GET finds the draft");
    assert_eq!(draft.status.as_deref(), Some("draft"));
    let taken = registry
        .register(&d)
        .await
        .expect_err("the draft's path is taken");
    assert_eq!(taken.class, ErrorClass::Conflict, "{taken}");
    assert_eq!(
        registry
            .get(Collection::Server, &d.path)
            .await
            .expect("get"),
        Some(draft),
        "the draft is left as it was"
    );

    let a = agent_entry("contract-foreign", "rt-contract-foreign");
    seed.foreign_agent(&a.path).await;
    let foreign = registry
        .get(Collection::Agent, &a.path)
        .await
        .expect("get")
        .expect("a GET finds the agent");
    assert!(!foreign.enabled, "agents start disabled");
    let taken = registry
        .register(&a)
        .await
        .expect_err("the agent's path is taken");
    assert_eq!(taken.class, ErrorClass::Conflict, "{taken}");
    assert_eq!(
        registry.get(Collection::Agent, &a.path).await.expect("get"),
        Some(foreign),
        "the other publisher's agent is left as it was"
    );
}
