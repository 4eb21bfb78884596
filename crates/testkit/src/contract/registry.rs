//! What every registry does, as `registry-contract.md` records it: a registration never
//! overwrites, servers start disabled and remember who registered them, an update keeps the
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
