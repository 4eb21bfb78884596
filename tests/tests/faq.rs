//! The FAQ's thirteen resources, registered by the real `registrar` binary against moto and the
//! registry stand-in.

use registrar_core::ports::{ResourceStore, TokenStore};
use registrar_tests::ACCOUNT;
use registrar_tests::env::{TestEnv, options};
use registrar_tests::fixtures::{FAQ_GATEWAYS, FAQ_RUNTIMES, seed_faq};
use serde_json::json;

fn cut(s: &str, width: usize) -> &str {
    &s[..s.len().min(width)]
}

#[tokio::test(flavor = "multi_thread")]
async fn faq_resources_register_at_the_faq_paths_with_the_contract_fields() -> anyhow::Result<()> {
    let env = TestEnv::start().await?;
    seed_faq(&env.agentcore).await?;

    let dry = env.cli(&["resync", "--dry-run"]).await?;
    let dry_out = String::from_utf8_lossy(&dry.stdout);
    assert!(
        dry.status.success(),
        "dry run: {dry_out}\n{}",
        String::from_utf8_lossy(&dry.stderr)
    );
    assert!(
        dry_out.contains("MODE: DRY-RUN (no changes made)\nWould change: 13"),
        "{dry_out}"
    );
    assert!(env.standin.writes().is_empty(), "a dry run writes nothing");

    let run = env.cli(&["resync"]).await?;
    let out = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "resync: {out}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    for (name, path) in FAQ_GATEWAYS {
        let row = format!(
            "gateway    {:<30} {:<25} {:<14} registered",
            cut(name, 30),
            cut(path, 25),
            "CUSTOM_JWT"
        );
        assert!(out.contains(&row), "missing row {row:?} in\n{out}");
    }
    for (name, path) in FAQ_RUNTIMES {
        let row = format!(
            "runtime    {:<30} {:<25} {:<14} registered",
            cut(name, 30),
            cut(path, 25),
            "IAM"
        );
        assert!(out.contains(&row), "missing row {row:?} in\n{out}");
    }

    // Gateways: CUSTOM_JWT servers, disabled until their token is in place.
    for (name, path) in FAQ_GATEWAYS {
        let s = env
            .standin
            .server(path)
            .unwrap_or_else(|| panic!("server {path}"));
        assert_eq!(s["auth_scheme"], json!("bearer"), "{path}");
        assert_eq!(s["auth_provider"], json!("bedrock-agentcore"));
        assert_eq!(
            s["tags"],
            json!(["agentcore", "gateway", "auto-registered"])
        );
        assert_eq!(s["supported_transports"], json!(["streamable-http"]));
        assert_eq!(s["visibility"], json!("public"));
        assert_eq!(
            s["is_enabled"],
            json!(false),
            "CUSTOM_JWT waits for its egress token"
        );
        assert_eq!(s["metadata"]["source"], json!("agentcore-registrar"));
        assert_eq!(s["metadata"]["authorizer_type"], json!("CUSTOM_JWT"));
        assert_eq!(s["metadata"]["idp_vendor"], json!("cognito"));
        assert_eq!(s["metadata"]["account_id"], json!(ACCOUNT));
        assert_eq!(s["metadata"]["region"], json!("us-east-1"));
        assert!(
            s["proxy_pass_url"]
                .as_str()
                .is_some_and(|u| u.starts_with("https://")),
            "{s}"
        );
        assert_eq!(s["proxy_pass_url"], s["mcp_endpoint"]);
        assert_eq!(
            s["description"],
            json!(format!(
                "AgentCore Gateway: {}",
                registrar_core::naming::display_name(name)
            ))
        );
    }
    assert_eq!(
        env.standin.server("/geo-mcp").expect("geo")["server_name"],
        json!("Geo MCP")
    );

    // Runtimes: agents, IAM-authenticated so enabled at registration; A2A only for the a2a one.
    for (name, path) in FAQ_RUNTIMES {
        let a = env
            .standin
            .agent(path)
            .unwrap_or_else(|| panic!("agent {path}"));
        let a2a = name.contains("a2a");
        assert_eq!(
            a["supported_protocol"],
            json!(if a2a { "a2a" } else { "other" }),
            "{path}"
        );
        assert_eq!(
            a["is_enabled"],
            json!(true),
            "AWS_IAM entries are enabled at registration"
        );
        assert_eq!(a["metadata"]["source"], json!("agentcore-registrar"));
        let url = a["url"].as_str().expect("url");
        assert!(url.starts_with("https://bedrock-agentcore.us-east-1.amazonaws.com/runtimes/arn%3Aaws%3Abedrock-agentcore%3Aus-east-1%3A"), "{url}");
        assert!(url.ends_with("/invocations"));
        assert_eq!(
            a["tags"].as_array().map(|t| t.iter().any(|t| t == "a2a")),
            Some(a2a)
        );
    }
    assert_eq!(
        env.standin.agent("/sre-agent").expect("sre")["name"],
        json!("SRE Agent")
    );

    // State: one resource row each, and manifest rows for the five CUSTOM_JWT gateways.
    let state = env.state();
    assert_eq!(state.resources().await?.len(), 13);
    let mut manifest_paths: Vec<String> = state
        .manifests()
        .await?
        .into_iter()
        .map(|m| m.path)
        .collect();
    manifest_paths.sort();
    let mut want: Vec<String> = FAQ_GATEWAYS.iter().map(|(_, p)| (*p).to_owned()).collect();
    want.sort();
    assert_eq!(manifest_paths, want);

    // The same run through the library reports the same state: nothing left to do.
    let report = env.resync(options()).await?;
    assert_eq!(report.unchanged, 13, "{}", report.to_text());
    assert_eq!(
        state.manifests().await?.len(),
        5,
        "a resync never loses a manifest row"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn list_discovers_without_touching_the_registry_and_state_init_is_idempotent()
-> anyhow::Result<()> {
    let env = TestEnv::start().await?;
    seed_faq(&env.agentcore).await?;
    let out = env.cli(&["list", "--output", "json"]).await?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let rows = report["results"].as_array().expect("results");
    assert_eq!(rows.len(), 13);
    for (_, path) in FAQ_GATEWAYS.iter().chain(FAQ_RUNTIMES.iter()) {
        assert!(
            rows.iter().any(|r| r["path"] == json!(path)),
            "{path} listed"
        );
    }
    assert!(
        env.standin.log().is_empty(),
        "list never calls the registry"
    );

    let init = env.cli(&["state", "init"]).await?;
    assert!(init.status.success());
    assert!(
        String::from_utf8_lossy(&init.stdout).contains("already exists"),
        "the harness created it before"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_manifest_exports_in_the_python_refreshers_format() -> anyhow::Result<()> {
    let env = TestEnv::start().await?;
    seed_faq(&env.agentcore).await?;
    // A gateway whose IdP nobody trusted: the Python refresher would send a secret there.
    registrar_tests::fixtures::create_gateway(
        &env.agentcore,
        "untrusted-idp",
        registrar_tests::fixtures::GatewayAuth::Jwt {
            discovery_url: "https://idp.evil.example/.well-known/openid-configuration".into(),
            clients: vec!["client1abcdefghijklmnopqrstu".into()],
        },
    )
    .await?;
    assert!(env.cli(&["resync"]).await?.status.success());
    let out_file = env.dir.join("token_refresh_manifest.json");
    let out = env
        .cli(&[
            "manifest",
            "export",
            "--out",
            out_file.to_str().unwrap_or_default(),
        ])
        .await?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("left out /untrusted-idp: issuer https://idp.evil.example is not trusted"),
        "{stderr}"
    );
    let manifest: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&out_file)?)?;
    let entries = manifest
        .as_array()
        .expect("a JSON array, as the Python refresher reads it");
    let mut paths: Vec<&str> = entries
        .iter()
        .filter_map(|e| e["server_path"].as_str())
        .collect();
    paths.sort_unstable();
    let mut want: Vec<&str> = FAQ_GATEWAYS.iter().map(|(_, p)| *p).collect();
    want.sort_unstable();
    assert_eq!(paths, want, "one entry per CUSTOM_JWT gateway");
    let geo = entries
        .iter()
        .find(|e| e["server_path"] == json!("/geo-mcp"))
        .expect("geo-mcp");
    let keys: Vec<&str> = geo
        .as_object()
        .map(|o| o.keys().map(String::as_str).collect())
        .unwrap_or_default();
    assert_eq!(
        keys,
        [
            "allowed_audience",
            "allowed_clients",
            "discovery_url",
            "gateway_arn",
            "idp_vendor",
            "server_path"
        ]
    );
    assert_eq!(geo["idp_vendor"], json!("cognito"));
    assert_eq!(
        geo["allowed_clients"],
        json!(["client1abcdefghijklmnopqrstu"])
    );
    assert!(
        geo["discovery_url"]
            .as_str()
            .is_some_and(|u| u.ends_with("/us-east-1_Pool1/.well-known/openid-configuration"))
    );
    assert!(geo["gateway_arn"].as_str().is_some_and(|a| {
        a.starts_with("arn:aws:bedrock-agentcore:us-east-1:123456789012:gateway/")
    }));
    Ok(())
}
