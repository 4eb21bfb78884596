//! The registry client against the stand-in: encodings and outcomes of the calls resync does not
//! exercise on its own (the auth-credential PATCH, list pagination, idempotent removal).

use registrar_core::ErrorClass;
use registrar_core::desired::Collection;
use registrar_core::ports::Registry;
use registrar_tests::env::{ADMIN_TOKEN, TestEnv};
use serde_json::json;

fn server(path: &str) -> serde_json::Value {
    json!({"path": path, "server_name": path, "description": "d", "proxy_pass_url": "https://x",
           "tags": [], "registered_by": "registrar", "is_enabled": false, "status": "active", "metadata": {}})
}

#[tokio::test(flavor = "multi_thread")]
async fn the_egress_credential_is_patched_as_json_and_cleared_with_scheme_none()
-> anyhow::Result<()> {
    let env = TestEnv::start().await?;
    env.standin.seed_server(server("/geo-mcp"));
    let client = env.registry(ADMIN_TOKEN);
    client
        .set_credential("/geo-mcp", Some("eyJ.secret.token"))
        .await?;
    let doc = env.standin.server("/geo-mcp").expect("doc");
    assert_eq!(
        (doc["auth_scheme"].clone(), doc["auth_credential"].clone()),
        (json!("bearer"), json!("eyJ.secret.token"))
    );
    client.set_credential("/geo-mcp", None).await?;
    assert_eq!(
        env.standin.server("/geo-mcp").expect("doc")["auth_credential"],
        serde_json::Value::Null
    );

    let err = client
        .set_credential("/missing", Some("eyJ.secret.token"))
        .await
        .expect_err("404");
    assert_eq!(err.class, ErrorClass::Terminal);
    assert!(
        err.message
            .contains("No server registered at path '/missing'"),
        "{err}"
    );
    assert!(
        !err.to_string().contains("secret"),
        "the credential never appears in errors"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn lists_are_read_across_pages_and_removal_is_idempotent() -> anyhow::Result<()> {
    let env = TestEnv::start().await?;
    for i in 0..2005 {
        env.standin.seed_server(server(&format!("/s{i:04}")));
    }
    let client = env.registry(ADMIN_TOKEN);
    let all = client.list(Collection::Server).await?;
    assert_eq!(all.len(), 2005, "two pages of at most 2000");
    let pages = env
        .standin
        .log()
        .iter()
        .filter(|l| l.path == "/api/servers")
        .count();
    assert_eq!(pages, 2);

    client.remove(Collection::Server, "/s0000").await?;
    client.remove(Collection::Server, "/s0000").await?; // already gone: fine
    client.remove(Collection::Agent, "/never-there").await?;
    assert!(env.standin.server("/s0000").is_none());
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_registration_whose_answer_was_lost_is_found_by_its_retry() -> anyhow::Result<()> {
    use registrar_testkit::fixtures::server_entry;
    use registrar_tests::standin::Fault;
    let env = TestEnv::start().await?;
    let client = env.registry(ADMIN_TOKEN);
    let lost = || Fault {
        writes_only: true,
        after_handling: true,
        retry_after_secs: Some(0),
        ..Fault::status(502, 1)
    };
    // The first attempt registers, its answer is lost; the retry meets that entry (409).
    let d = server_entry("lost", "gw-lost");
    env.standin.inject(lost());
    client.register(&d).await?;
    assert!(env.standin.server(&d.path).is_some());
    let registers = env
        .standin
        .calls_by_kind()
        .into_iter()
        .filter(|(kind, _)| kind.starts_with("register server"))
        .map(|(_, n)| n)
        .sum::<usize>();
    assert_eq!(registers, 2, "one lost answer, one retry");

    // Another resource's registration at that path is a conflict, lost answer or not.
    let other = server_entry("lost", "gw-other");
    assert_eq!(d.path, other.path);
    let err = client.register(&other).await.expect_err("taken");
    assert_eq!(err.class, ErrorClass::Conflict);
    env.standin.inject(lost());
    let err = client.register(&other).await.expect_err("taken");
    assert_eq!(err.class, ErrorClass::Conflict, "{err}");
    Ok(())
}
