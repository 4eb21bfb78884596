//! Derivation of desired entries from snapshots: paths, names, auth mapping, metadata and
//! the Python tool's compatibility rules, pinned per resource kind.

use super::*;
use crate::observed::Lifecycle;
use serde_json::json;

const ACCT: &str = "111122223333";

pub(crate) fn gateway(name: &str, auth: AuthorizerType) -> GatewaySnapshot {
    let id = format!("{}-abcdefghij", crate::naming::slugify(name));
    let jwt = (auth == AuthorizerType::CustomJwt).then(|| JwtAuthorizer {
        discovery_url: "https://cognito-idp.us-east-1.amazonaws.com/us-east-1_P/.well-known/openid-configuration".into(),
        allowed_clients: vec!["client-1".into()],
        allowed_audience: vec![],
        allowed_scopes: vec!["gw/invoke".into()],
    });
    GatewaySnapshot {
        arn: format!("arn:aws:bedrock-agentcore:us-west-2:{ACCT}:gateway/{id}"),
        url: Some(format!(
            "https://{id}.gateway.bedrock-agentcore.us-west-2.amazonaws.com/mcp"
        )),
        id,
        name: name.into(),
        description: None,
        lifecycle: Lifecycle::Ready,
        authorizer_type: auth,
        jwt,
        created_at: "2026-01-01T00:00:00Z".into(),
        updated_at: "2026-01-02T00:00:00Z".into(),
    }
}

fn runtime(name: &str, protocol: ServerProtocol) -> RuntimeSnapshot {
    let id = format!("{name}-Xyz12AbCde");
    RuntimeSnapshot {
        arn: format!("arn:aws:bedrock-agentcore:eu-central-1:{ACCT}:runtime/{id}"),
        id,
        name: name.into(),
        description: Some(String::new()),
        lifecycle: Lifecycle::Ready,
        protocol,
        jwt: None,
        created_at: "2026-01-01T00:00:00Z".into(),
        updated_at: "2026-01-02T00:00:00Z".into(),
    }
}

#[test]
fn custom_jwt_gateway_becomes_a_bearer_server_with_oidc_metadata_and_a_manifest_row() {
    let gw = gateway("geo-mcp", AuthorizerType::CustomJwt);
    let d = gateway_entry(&gw, DeriveOptions::default()).expect("registrable");
    assert_eq!(d.path, "/geo-mcp");
    assert_eq!(d.auth_label, "CUSTOM_JWT");
    let EntryBody::Server(s) = &d.body else {
        panic!("server expected")
    };
    assert_eq!(s.name, "Geo MCP");
    assert_eq!(s.description, "AgentCore Gateway: Geo MCP");
    assert_eq!(s.auth_scheme, "bearer");
    assert_eq!(s.auth_provider, "bedrock-agentcore");
    assert_eq!(s.proxy_pass_url, gw.url.clone().expect("url"));
    assert_eq!(s.mcp_endpoint, s.proxy_pass_url);
    assert_eq!(s.tags, ["agentcore", "gateway", "auto-registered"]);
    assert_eq!(s.visibility, "public");
    assert_eq!(s.metadata["source"], json!("agentcore-registrar"));
    assert_eq!(s.metadata["gateway_arn"], json!(gw.arn));
    assert_eq!(s.metadata["region"], json!("us-west-2"));
    assert_eq!(s.metadata["account_id"], json!(ACCT));
    assert_eq!(s.metadata["idp_vendor"], json!("cognito"));
    assert_eq!(s.metadata["allowed_clients"], json!(["client-1"]));
    assert_eq!(s.metadata["updated_at"], json!(gw.updated_at));
    assert_eq!(s.metadata["fingerprint"], json!(d.fingerprint));
    let m = d.manifest.expect("manifest row");
    assert_eq!(m.path, "/geo-mcp");
    assert_eq!(m.allowed_scopes, ["gw/invoke"]);
}

#[test]
fn auth_types_map_to_registry_schemes() {
    let cases = [
        (AuthorizerType::AwsIam, "bearer", InboundAuth::Iam),
        (AuthorizerType::None, "none", InboundAuth::Open),
        (
            AuthorizerType::Other("AUTHENTICATE_ONLY".into()),
            "none",
            InboundAuth::Unknown,
        ),
    ];
    for (auth, scheme, inbound) in cases {
        let d = gateway_entry(&gateway("g", auth), DeriveOptions::default()).expect("ok");
        let EntryBody::Server(s) = &d.body else {
            panic!()
        };
        assert_eq!(s.auth_scheme, scheme);
        assert_eq!(d.inbound_auth, inbound);
        assert!(d.manifest.is_none());
        assert!(!s.metadata.contains_key("discovery_url"));
    }
}

#[test]
fn a_gateway_anyone_can_invoke_is_tagged_unauthenticated() {
    let open = gateway_entry(
        &gateway("open", AuthorizerType::None),
        DeriveOptions::default(),
    )
    .expect("ok");
    let EntryBody::Server(s) = &open.body else {
        panic!()
    };
    assert_eq!(
        s.tags,
        ["agentcore", "gateway", "auto-registered", "unauthenticated"]
    );
    let iam = gateway_entry(
        &gateway("iam", AuthorizerType::AwsIam),
        DeriveOptions::default(),
    )
    .expect("ok");
    let EntryBody::Server(s) = &iam.body else {
        panic!()
    };
    assert!(!s.tags.iter().any(|t| t == UNAUTHENTICATED_TAG));
}

#[test]
fn non_https_gateway_url_is_unregistrable() {
    let mut gw = gateway("plain", AuthorizerType::AwsIam);
    gw.url = Some("http://plain.example.com/mcp".into());
    let err = gateway_entry(&gw, DeriveOptions::default()).expect_err("refused");
    assert_eq!(err.reason, "Invalid URL (must be HTTPS)");
}

#[test]
fn aws_description_wins_unless_empty() {
    let mut gw = gateway("g", AuthorizerType::AwsIam);
    gw.description = Some("Orders API".into());
    let EntryBody::Server(s) = gateway_entry(&gw, DeriveOptions::default())
        .expect("ok")
        .body
    else {
        panic!()
    };
    assert_eq!(s.description, "Orders API");
    gw.description = Some("  ".into());
    let EntryBody::Server(s) = gateway_entry(&gw, DeriveOptions::default())
        .expect("ok")
        .body
    else {
        panic!()
    };
    assert_eq!(s.description, "AgentCore Gateway: G");
}

#[test]
fn a2a_runtime_becomes_an_a2a_agent_with_the_region_of_its_arn() {
    let rt = runtime("sre_agent", ServerProtocol::A2a);
    let d = runtime_entry(
        &rt,
        DeriveOptions {
            visibility: Visibility::parse("internal").expect("v"),
        },
    )
    .expect("ok");
    assert_eq!(d.path, "/sre-agent");
    assert_eq!(d.auth_label, "IAM");
    let EntryBody::Agent(a) = &d.body else {
        panic!("agent expected")
    };
    assert_eq!(a.name, "SRE Agent");
    assert_eq!(a.description, "AgentCore Agent: SRE Agent");
    assert_eq!(
        a.url,
        "https://bedrock-agentcore.eu-central-1.amazonaws.com/runtimes/arn%3Aaws%3Abedrock-agentcore%3Aeu-central-1%3A111122223333%3Aruntime%2Fsre_agent-Xyz12AbCde/invocations"
    );
    assert_eq!(a.supported_protocol, "a2a");
    assert_eq!(
        a.tags,
        ["agentcore", "runtime", "agent", "auto-registered", "a2a"]
    );
    assert_eq!(
        a.visibility, "private",
        "internal means private, as the registry reads it"
    );
    assert_eq!(a.path, "/sre-agent");
    let body = serde_json::to_value(&d.body).expect("json");
    assert_eq!(body["supportedProtocol"], json!("a2a"));
    assert_eq!(
        body["securitySchemes"]["sigv4"]["scheme"],
        json!("AWS4-HMAC-SHA256")
    );
    assert_eq!(body["metadata"]["server_protocol"], json!("A2A"));
    assert_eq!(body["metadata"]["runtime_id"], json!(rt.id));
}

#[test]
fn http_runtime_is_an_other_agent_and_mcp_runtime_is_a_server() {
    let d = runtime_entry(
        &runtime("my_simple_agent", ServerProtocol::Http),
        DeriveOptions::default(),
    )
    .expect("ok");
    let EntryBody::Agent(a) = &d.body else {
        panic!()
    };
    assert_eq!(a.supported_protocol, "other");
    assert_eq!(a.tags, ["agentcore", "runtime", "agent", "auto-registered"]);

    let d = runtime_entry(
        &runtime("geo_mcp", ServerProtocol::Mcp),
        DeriveOptions::default(),
    )
    .expect("ok");
    assert_eq!(d.path, "/geo-mcp");
    let EntryBody::Server(s) = &d.body else {
        panic!()
    };
    assert_eq!(s.name, "Geo MCP");
    assert_eq!(s.description, "AgentCore MCP Server: Geo MCP");
    assert_eq!(s.auth_scheme, "bearer");
    assert_eq!(
        s.tags,
        ["agentcore", "runtime", "mcp-server", "auto-registered"]
    );
    assert!(s.proxy_pass_url.ends_with("/invocations"));
}

#[test]
fn runtime_with_its_own_jwt_authorizer_gets_a_manifest_row() {
    let mut rt = runtime("jwt_agent", ServerProtocol::Http);
    rt.jwt = Some(JwtAuthorizer {
        discovery_url: "https://x.okta.com/.well-known/openid-configuration".into(),
        ..JwtAuthorizer::default()
    });
    let d = runtime_entry(&rt, DeriveOptions::default()).expect("ok");
    assert_eq!(d.auth_label, "CUSTOM_JWT");
    assert_eq!(d.inbound_auth, InboundAuth::Jwt);
    assert_eq!(d.manifest.expect("row").idp_vendor, IdpVendor::Okta);
    let body = serde_json::to_value(&d.body).expect("json");
    assert_eq!(body["securitySchemes"]["bearer"]["scheme"], json!("bearer"));
}

#[test]
fn mcp_server_target_gets_a_combined_path_and_other_targets_none() {
    let gw = gateway("SRE-Gateway", AuthorizerType::CustomJwt);
    let mut t = TargetSnapshot {
        gateway: gw.clone(),
        target_id: "T1A2B3C4D5".into(),
        name: "Docs_Search".into(),
        description: None,
        lifecycle: Lifecycle::Ready,
        mcp_endpoint: Some("https://mcp.example.com/mcp".into()),
        created_at: "c".into(),
        updated_at: "u".into(),
    };
    let d = target_entry(&t, DeriveOptions::default())
        .expect("mcp")
        .expect("ok");
    assert_eq!(d.path, "/sre-gateway-docs-search");
    assert_eq!(d.resource.arn, format!("{}:target:T1A2B3C4D5", gw.arn));
    let EntryBody::Server(s) = &d.body else {
        panic!()
    };
    assert_eq!(s.name, "SRE Gateway - Docs Search");
    assert_eq!(s.description, "MCP Server target: Docs Search");
    assert_eq!(s.proxy_pass_url, "https://mcp.example.com/mcp");
    assert_eq!(
        s.tags,
        [
            "agentcore",
            "gateway-target",
            "mcp-server",
            "auto-registered"
        ]
    );
    assert_eq!(s.metadata["target_id"], json!("T1A2B3C4D5"));
    t.mcp_endpoint = None;
    assert!(target_entry(&t, DeriveOptions::default()).is_none());
}

#[test]
fn fingerprint_changes_with_content_only() {
    let gw = gateway("g", AuthorizerType::AwsIam);
    let a = gateway_entry(&gw, DeriveOptions::default()).expect("ok");
    let b = gateway_entry(&gw, DeriveOptions::default()).expect("ok");
    assert_eq!(a.fingerprint, b.fingerprint);
    let mut changed = gw.clone();
    changed.description = Some("new".into());
    assert_ne!(
        gateway_entry(&changed, DeriveOptions::default())
            .expect("ok")
            .fingerprint,
        a.fingerprint
    );
}

fn mcp_target(gateway_name: &str, name: &str, endpoint: &str) -> TargetSnapshot {
    TargetSnapshot {
        gateway: gateway(gateway_name, AuthorizerType::AwsIam),
        target_id: "T1A2B3C4D5".into(),
        name: name.into(),
        description: None,
        lifecycle: Lifecycle::Ready,
        mcp_endpoint: Some(endpoint.into()),
        created_at: "c".into(),
        updated_at: "u".into(),
    }
}

#[test]
fn a_target_endpoint_that_is_not_https_or_loopback_is_unregistrable_naming_the_url() {
    for (endpoint, shown) in [
        (
            "http://localhost:80@evil.example/mcp",
            "http://***@evil.example/mcp",
        ),
        (
            "http://127.0.0.1.evil.example/mcp",
            "http://127.0.0.1.evil.example/mcp",
        ),
        ("http://mcp.internal/mcp", "http://mcp.internal/mcp"),
        (
            "https://user:pw@mcp.example.com/",
            "https://***@mcp.example.com/",
        ),
        ("file:///etc/passwd", "file:///etc/passwd"),
        ("mcp.example.com/mcp", "mcp.example.com/mcp"),
    ] {
        let t = mcp_target("orders", "docs", endpoint);
        let err = target_entry(&t, DeriveOptions::default())
            .expect("an MCP target")
            .expect_err("refused");
        assert!(
            err.reason.starts_with("mcpServer endpoint refused"),
            "{endpoint}: {}",
            err.reason
        );
        assert!(err.reason.contains(shown), "{endpoint}: {}", err.reason);
        assert!(!err.reason.contains("pw@"), "{}", err.reason);
        assert_eq!(err.path, "/orders-docs");
        assert_eq!(err.resource.id, "T1A2B3C4D5");
    }
}

#[test]
fn a_target_endpoint_is_sent_as_parsed() {
    for (endpoint, sent) in [
        ("https://mcp.example.com/mcp", "https://mcp.example.com/mcp"),
        ("http://127.0.0.1:9000/mcp", "http://127.0.0.1:9000/mcp"),
        ("http://[::1]:9000/mcp", "http://[::1]:9000/mcp"),
        // WHATWG reads `\` as `/`: the registry gets the host we checked, not `evil.example`.
        (
            "https://good.example\\@evil.example/mcp",
            "https://good.example/@evil.example/mcp",
        ),
    ] {
        let d = target_entry(&mcp_target("g", "t", endpoint), DeriveOptions::default())
            .expect("an MCP target")
            .expect("registrable");
        let EntryBody::Server(s) = &d.body else {
            panic!()
        };
        assert_eq!(s.proxy_pass_url, sent, "{endpoint}");
        assert_eq!(s.mcp_endpoint, sent, "{endpoint}");
    }
}

#[test]
fn a_gateway_url_with_user_info_is_unregistrable() {
    let mut gw = gateway("orders", AuthorizerType::AwsIam);
    gw.url = Some("https://localhost:443@evil.example/mcp".into());
    let err = gateway_entry(&gw, DeriveOptions::default()).expect_err("refused");
    assert!(
        err.reason.contains("https://***@evil.example/mcp"),
        "{}",
        err.reason
    );
}

#[test]
fn resources_named_after_registry_routes_get_a_suffixed_path() {
    let d = gateway_entry(
        &gateway("api", AuthorizerType::AwsIam),
        DeriveOptions::default(),
    )
    .expect("ok");
    assert_eq!(d.path, "/api-gateway");
    assert_eq!(
        d.name, "api",
        "the display name and the report keep the resource's own name"
    );
    let d = gateway_entry(
        &gateway("health", AuthorizerType::CustomJwt),
        DeriveOptions::default(),
    )
    .expect("ok");
    assert_eq!(d.path, "/health-gateway");
    assert_eq!(
        d.manifest.expect("row").path,
        "/health-gateway",
        "the token goes where the entry is"
    );
    let d = runtime_entry(
        &runtime("login", ServerProtocol::A2a),
        DeriveOptions::default(),
    )
    .expect("ok");
    assert_eq!(d.path, "/login-runtime");
    let EntryBody::Agent(a) = &d.body else {
        panic!()
    };
    assert_eq!(
        a.path, "/login-runtime",
        "the agent body carries the same path"
    );
    let d = target_entry(
        &mcp_target("mcp", "proxy", "https://mcp.example.com/mcp"),
        DeriveOptions::default(),
    )
    .expect("an MCP target")
    .expect("ok");
    assert_eq!(d.path, "/mcp-proxy-target");
}

#[test]
fn a_resource_without_a_usable_path_is_unregistrable() {
    let mut gw = gateway("***", AuthorizerType::AwsIam);
    gw.id = "***".into();
    let err = gateway_entry(&gw, DeriveOptions::default()).expect_err("refused");
    assert_eq!(err.path, "/");
    assert!(
        err.reason.contains("No usable registry path"),
        "{}",
        err.reason
    );
}
