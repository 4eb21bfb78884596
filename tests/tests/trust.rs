//! The trust boundaries, played by an attacker (design invariant 7): a client secret goes only to
//! an issuer the operator trusts for it, and a token only into an entry verified as ours and
//! pointing at its gateway. The attackers' IdPs are the real `oidc-provider` behind a recording
//! proxy, so every request that would reach them is seen, headers and body.

use std::time::Duration;

use registrar_tests::env::{MALLORY_TOKEN, TestEnv};
use registrar_tests::fixtures::{GatewayAuth, create_gateway};
use registrar_tests::idp::Idp;
use registrar_tests::proxy::{Proxy, Recorded};
use serde_json::{Value, json};

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn line(all: &str, path: &str) -> String {
    all.lines()
        .find(|l| l.starts_with(&format!("{path} ")))
        .unwrap_or_default()
        .to_owned()
}

/// Every form a secret could take in a request: as is, URL-encoded, or in HTTP Basic.
fn carries(r: &Recorded, secret: &str) -> bool {
    let headers = format!("{:?}", r.headers);
    let body = String::from_utf8_lossy(&r.body);
    let basic = r
        .headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(registrar_core::refresh::base64url_decode)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    [headers.as_str(), &body, &basic, &r.uri]
        .iter()
        .any(|t| t.contains(secret))
}

fn host_of(proxy: &Proxy) -> String {
    proxy.url().trim_start_matches("http://").to_owned()
}

async fn metrics(listen: &str) -> String {
    match reqwest::get(format!("http://{listen}/metrics")).await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn client_secrets_never_reach_an_idp_the_operator_did_not_trust() -> anyhow::Result<()> {
    let env = TestEnv::start().await?;
    // The real IdP, trusted by the operator; the client's secret is in Secrets Manager, bound to
    // that issuer. A second client's secret is in the environment (bound to nothing).
    let good = Idp::start("shared-client", "real-secret", Duration::from_secs(300)).await?;
    env.trust_issuer(&good.issuer);
    aws_sdk_secretsmanager::Client::new(&env.config)
        .create_secret()
        .name("agentcore-registrar/egress/shared-client")
        .secret_string(json!({"client_secret": "real-secret", "issuer": good.issuer}).to_string())
        .send()
        .await?;
    let env_secret = [("OAUTH_CLIENT_SECRET_env-client", "env-secret")];

    // Attacker 1: its IdP under a Cognito-looking path, on a host nobody trusted.
    let (cognito_look, cognito_rec) = Idp::start_recorded(
        "/cognito-idp.us-east-1.amazonaws.com/us-east-1_Evil",
        "shared-client",
        "attacker",
        Duration::from_secs(300),
    )
    .await?;
    // Attacker 2: on a host the operator trusts (every issuer there), but not the issuer the
    // shared client's secret belongs to.
    let (realm, realm_rec) = Idp::start_recorded(
        "/evil",
        "shared-client",
        "attacker",
        Duration::from_secs(300),
    )
    .await?;
    env.trust_issuer(&host_of(&realm_rec));
    // Attacker 3: a listed issuer's host, another issuer path.
    let (sibling, sibling_rec) =
        Idp::start_recorded("/other", "env-client", "attacker", Duration::from_secs(300)).await?;
    env.trust_issuer(&format!("{}/good", sibling_rec.url()));

    let jwt = |idp: &Idp, clients: &[&str]| GatewayAuth::Jwt {
        discovery_url: idp.discovery_url(),
        clients: clients.iter().map(|c| (*c).to_owned()).collect(),
    };
    create_gateway(&env.agentcore, "good", jwt(&good, &["shared-client"])).await?;
    create_gateway(
        &env.agentcore,
        "evil-cognito",
        jwt(&cognito_look, &["env-client", "shared-client"]),
    )
    .await?;
    create_gateway(
        &env.agentcore,
        "evil-realm",
        jwt(&realm, &["shared-client", "env-client"]),
    )
    .await?;
    create_gateway(
        &env.agentcore,
        "evil-sibling",
        jwt(&sibling, &["env-client"]),
    )
    .await?;
    assert!(env.cli(&["resync"]).await?.status.success());

    // The worker's token loop: the good token is delivered, the three others refused and
    // counted; nothing reaches any attacker.
    let path = registrar_tests::events::EventPath::create(&env.config, "trust", 5, 10).await?;
    let listen = format!("127.0.0.1:{}", registrar_tests::moto::free_port()?);
    let mut worker = env.spawn_worker_with_env(
        &path,
        &["--token-check-interval", "1", "--listen", &listen],
        &env_secret,
    )?;
    let refusals = "registrar_token_refusals_total{reason=\"untrusted_issuer\"} 3";
    let mut seen = String::new();
    for _ in 0..120 {
        seen = metrics(&listen).await;
        if seen.lines().any(|l| l == refusals)
            && env
                .standin
                .server("/good")
                .is_some_and(|e| e["auth_credential"].is_string())
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(
        seen.lines().any(|l| l == refusals),
        "{seen}\n{}",
        env.worker_logs()
    );
    let good_entry = env.standin.server("/good").expect("good entry");
    assert!(
        good_entry["auth_credential"].is_string(),
        "other resources go on"
    );
    worker.kill().await?;
    for path in ["/evil-cognito", "/evil-realm", "/evil-sibling"] {
        let entry = env.standin.server(path).expect("entry");
        assert!(entry.get("auth_credential").is_none(), "{path}: {entry}");
    }

    // On demand, with the reasons; a refusal is not retried hot (next look in an hour).
    let out = env
        .cli_with_env(&["tokens", "refresh", "--force"], &env_secret)
        .await?;
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(line(&all, "/good").contains("refreshed"), "{all}");
    let cognito_line = line(&all, "/evil-cognito");
    assert!(
        cognito_line.contains(&format!(
            "refused: issuer {} is not trusted for client env-client, shared-client; trust it with --trusted-issuers or REGISTRAR_TRUSTED_ISSUERS",
            cognito_look.issuer
        )),
        "{all}"
    );
    assert!(
        line(&all, "/evil-realm").contains(&format!(
            "the secret of client shared-client from secretsmanager agentcore-registrar/egress/shared-client may not go to issuer {}: the secret is bound to issuer {}",
            realm.issuer, good.issuer
        )),
        "{all}"
    );
    assert!(
        line(&all, "/evil-sibling").contains("is not trusted for client env-client"),
        "{all}"
    );
    let status = env.cli(&["tokens", "status", "--output", "json"]).await?;
    let status: Vec<Value> = serde_json::from_slice(&status.stdout)?;
    let now = registrar_worker::clock::now();
    for row in status.iter().filter(|r| r["path"] != json!("/good")) {
        let token = &row["token"];
        assert!(
            token["last_result"]
                .as_str()
                .is_some_and(|r| r.starts_with("refused")),
            "{row}"
        );
        assert!(
            token["next_refresh_at"].as_u64().unwrap_or(0) > now + 3000,
            "not retried hot: {row}"
        );
    }

    for (name, rec) in [
        ("cognito-looking", &cognito_rec),
        ("trusted host, wrong issuer", &realm_rec),
        ("listed host, other issuer", &sibling_rec),
    ] {
        let requests = rec.take_recorded();
        assert!(
            requests
                .iter()
                .all(|r| !carries(r, "real-secret") && !carries(r, "env-secret")),
            "{name} received a secret"
        );
        assert!(
            requests.is_empty(),
            "{name}: nothing at all is sent to an IdP the secret may not go to: {requests:?}"
        );
    }
    let logs = env.worker_logs() + &all;
    assert!(!logs.contains("real-secret") && !logs.contains("env-secret"));
    Ok(())
}

/// Registers `path` at the stand-in as another publisher would, overwriting what is there.
async fn overwrite_as_mallory(
    env: &TestEnv,
    path: &str,
    proxy_pass_url: &str,
) -> anyhow::Result<()> {
    let ours = env.standin.server(path).expect("our entry");
    let form = [
        ("path", path.to_owned()),
        (
            "name",
            ours["server_name"].as_str().unwrap_or("x").to_owned(),
        ),
        ("description", "looks familiar".to_owned()),
        ("proxy_pass_url", proxy_pass_url.to_owned()),
        ("auth_scheme", "bearer".to_owned()),
        // Our metadata, copied to the letter (fingerprint included), and our tags.
        ("metadata", ours["metadata"].to_string()),
        (
            "tags",
            ours["tags"]
                .as_array()
                .map(|t| {
                    t.iter()
                        .filter_map(Value::as_str)
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .unwrap_or_default(),
        ),
    ];
    let status = reqwest::Client::new()
        .post(format!("{}/api/servers/register", env.standin.url()))
        .bearer_auth(MALLORY_TOKEN)
        .form(&form)
        .send()
        .await?
        .status();
    anyhow::ensure!(status.as_u16() == 201, "mallory's overwrite: {status}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn an_entry_overwritten_by_another_publisher_gets_no_token_and_is_never_written()
-> anyhow::Result<()> {
    let env = TestEnv::start().await?;
    let idp = Idp::start("gw-client", "gw-secret", Duration::from_secs(20)).await?;
    env.trust_issuer(&idp.issuer);
    let secret = [("OAUTH_CLIENT_SECRET_gw-client", "gw-secret")];
    let auth = |clients: &[&str]| GatewayAuth::Jwt {
        discovery_url: idp.discovery_url(),
        clients: clients.iter().map(|c| (*c).to_owned()).collect(),
    };
    create_gateway(&env.agentcore, "victim", auth(&["gw-client"])).await?;
    create_gateway(&env.agentcore, "bystander", auth(&["gw-client"])).await?;
    assert!(env.cli(&["resync"]).await?.status.success());
    let out = env.cli_with_env(&["tokens", "refresh"], &secret).await?;
    assert!(out.status.success(), "{}", text(&out));
    let credential = "/api/servers/victim/auth-credential";
    assert_eq!(env.standin.arrived(credential), 1);

    // Another publisher re-registers the path with our metadata and its own URL; the registry
    // keeps the stored credential across the overwrite.
    overwrite_as_mallory(&env, "/victim", "https://mallory.example/mcp").await?;
    env.standin.clear_log();
    let delivered = env.standin.arrived(credential);

    // The token loop refreshes the 20 s tokens: the bystander's goes on, the victim's is refused
    // (counted) and never PATCHed.
    let path = registrar_tests::events::EventPath::create(&env.config, "hijack", 5, 10).await?;
    let listen = format!("127.0.0.1:{}", registrar_tests::moto::free_port()?);
    let mut worker = env.spawn_worker_with_env(
        &path,
        &["--token-check-interval", "1", "--listen", &listen],
        &secret,
    )?;
    let refused = "registrar_token_refusals_total{reason=\"unverified_entry\"} 1";
    let mut seen = String::new();
    for _ in 0..160 {
        seen = metrics(&listen).await;
        if seen.lines().any(|l| l == refused)
            && env
                .standin
                .arrived("/api/servers/bystander/auth-credential")
                > 0
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(
        seen.lines().any(|l| l == refused),
        "{seen}\n{}",
        env.worker_logs()
    );
    worker.kill().await?;
    assert_eq!(
        env.standin.arrived(credential),
        delivered,
        "no token into the hijacked entry"
    );
    assert!(
        env.standin
            .arrived("/api/servers/bystander/auth-credential")
            > 0
    );

    // On demand: refused, with the reason.
    let out = env
        .cli_with_env(&["tokens", "refresh", "--path", "/victim"], &secret)
        .await?;
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(
        line(&all, "/victim").contains("refused: the entry at /victim"),
        "{all}"
    );
    assert!(all.contains("https://mallory.example/mcp"), "{all}");

    // A deep resync reads everything and names the entry a conflict; it writes nothing there.
    let out = env.cli(&["resync", "--deep", "--output", "json"]).await?;
    let report: Value = serde_json::from_slice(&out.stdout)?;
    let row = report["results"]
        .as_array()
        .and_then(|rows| rows.iter().find(|r| r["path"] == json!("/victim")))
        .cloned()
        .unwrap_or_default();
    assert_eq!(row["status"], json!("conflict"), "{report}");
    assert!(
        row["message"]
            .as_str()
            .is_some_and(|m| m.contains("mallory.example")),
        "{row}"
    );
    let writes: Vec<_> = env
        .standin
        .writes()
        .into_iter()
        .filter(|w| {
            w.path.contains("victim") || w.method == "POST" && w.path.ends_with("/register")
        })
        .collect();
    assert!(writes.is_empty(), "{writes:?}");
    assert_eq!(env.standin.arrived(credential), delivered);
    let entry = env.standin.server("/victim").expect("entry");
    assert_eq!(
        entry["proxy_pass_url"],
        json!("https://mallory.example/mcp")
    );
    assert_eq!(entry["registered_by"], json!("mallory"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn registry_calls_follow_no_redirects() -> anyhow::Result<()> {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let env = TestEnv::start().await?;
    create_gateway(&env.agentcore, "plain", GatewayAuth::None).await?;
    // Something in front of the registry answers every call with a redirect elsewhere: the
    // bearer token (and any credential body) must not follow it.
    let elsewhere = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let elsewhere_url = format!("http://{}", elsewhere.local_addr()?);
    let reached = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&reached);
    let sink = axum::Router::new().fallback(move || {
        counter.fetch_add(1, Ordering::SeqCst);
        async { axum::Json(json!({"servers": [], "agents": [], "has_next": false})) }
    });
    let front = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let front_url = format!("http://{}", front.local_addr()?);
    let redirect = axum::Router::new().fallback(move |uri: axum::http::Uri| {
        let to = format!("{elsewhere_url}{uri}");
        async move { axum::response::Redirect::temporary(&to) }
    });
    let servers = [
        tokio::spawn(async move { axum::serve(elsewhere, sink).await }),
        tokio::spawn(async move { axum::serve(front, redirect).await }),
    ];
    let out = env
        .cli_with_env(&["resync"], &[("REGISTRY_URL", front_url.as_str())])
        .await?;
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(
        all.contains("307"),
        "the redirect is an error, named: {all}"
    );
    assert_eq!(
        reached.load(Ordering::SeqCst),
        0,
        "nothing followed the redirect"
    );
    for s in servers {
        s.abort();
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn no_long_lived_value_prints_a_secret_and_secrets_are_never_arguments() -> anyhow::Result<()>
{
    use clap::Parser;
    use registrar_core::ports::Registry;
    use registrar_core::trust::{COGNITO_ISSUER_BASE, TrustConfig, TrustPolicy};
    use registrar_worker::registry::token::{ClientCredentialsToken, TokenFile, TokenSource};
    use registrar_worker::registry::{RegistryClient, RetryPolicy};
    use secrecy::SecretString;

    let env = TestEnv::start().await?;
    // The registry's own client, its token obtained by client_credentials and cached.
    let idp = Idp::start(
        "registrar-ingress",
        "ingress-secret-value",
        Duration::from_secs(300),
    )
    .await?;
    env.standin.trust_issuer(&idp.issuer, "registrar");
    let trust = TrustPolicy::new(&TrustConfig {
        trusted: std::slice::from_ref(&idp.issuer),
        cognito_issuer_base: COGNITO_ISSUER_BASE,
        ..TrustConfig::default()
    })
    .map_err(anyhow::Error::msg)?;
    let issuer = trust.issuer_of(&idp.discovery_url(), &[])?;
    let oidc = registrar_worker::net::oauth::Oidc::new(
        Duration::from_secs(5),
        Duration::from_secs(60),
        std::sync::Arc::new(registrar_worker::clock::SystemClock::new()),
    )?;
    let client_credentials = RegistryClient::new(
        env.standin.url(),
        TokenSource::ClientCredentials(Box::new(ClientCredentialsToken::new(
            oidc,
            trust,
            issuer,
            "registrar-ingress".into(),
            SecretString::from("ingress-secret-value"),
            registrar_core::refresh::TokenRequest::default(),
        ))),
        Duration::from_secs(5),
        RetryPolicy::default(),
    )?;
    client_credentials
        .list(registrar_core::desired::Collection::Server)
        .await?;
    // A token file, read (and cached).
    let file_token = "file-token-value-0123456789";
    let path = env.dir.join("private-token");
    registrar_tests::env::write_private(&path, file_token)?;
    let file = TokenFile::new(&path);
    file.token()?;
    // The member accounts' external id, handed to AssumeRole.
    let members = vec!["111111111111".to_owned()];
    let fleet = registrar_worker::aws::fleet::build(
        &env.config,
        registrar_core::reach::ReachRequest {
            home_region: registrar_tests::REGION,
            member_accounts: &members,
            allowed_accounts: &members,
            ..Default::default()
        },
        "agentcore-registrar-reader",
        Some("external-id-value-42"),
        registrar_worker::pace::Rates::DEFAULT,
        std::sync::Arc::new(registrar_worker::clock::SystemClock::new()),
    )
    .await?;
    let issued = registrar_worker::net::oauth::IssuedToken {
        access_token: SecretString::from("issued-token-value"),
        expires_in: Some(60),
    };
    let cli = registrar_worker::cli::Cli::try_parse_from([
        "registrar",
        "resync",
        "--registry-url",
        "https://registry.example",
        "--registry-token-discovery-url",
        "https://idp.example/.well-known/openid-configuration",
        "--registry-client-secret-file",
        "/run/secrets/registry",
    ])?;

    // The token loop's parts: a resolver that has the environment's secrets at hand.
    let resolver = registrar_worker::tokens::secrets::SecretResolver::new(
        std::sync::Arc::new(|_: &str| Some("env-secret-value".to_owned())),
        "agentcore-registrar/egress/{name}",
        Some(env.config.clone()),
    );
    let found = registrar_worker::tokens::secrets::FoundSecret {
        secret: SecretString::from("found-secret-value"),
        source: "env OAUTH_CLIENT_SECRET_x".into(),
    };
    let printed = format!(
        "{client_credentials:?}\n{file:?}\n{fleet:?}\n{issued:?}\n{cli:?}\n{resolver:?}\n{found:?}"
    );
    for secret in [
        "ingress-secret-value",
        file_token,
        "external-id-value-42",
        "issued-token-value",
        "env-secret-value",
        "found-secret-value",
        "eyJ", // any JWT the IdP issued
    ] {
        assert!(
            !printed.contains(secret),
            "{secret} printed by Debug:\n{printed}"
        );
    }

    // Secrets are never command-line arguments (every user can read a process's arguments).
    for flag in ["--registry-client-secret", "--member-external-id"] {
        let out = env.cli(&["resync", flag, "hunter2"]).await?;
        assert_eq!(out.status.code(), Some(2), "{flag}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("unexpected argument"),
            "{flag}: {}",
            text(&out)
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_registrys_own_client_never_gets_an_egress_token() -> anyhow::Result<()> {
    let env = TestEnv::start().await?;
    // The registry's IdP and the registrar's client there (its ingress token comes from it).
    let idp = Idp::start(
        "registrar-ingress",
        "ingress-secret",
        Duration::from_secs(300),
    )
    .await?;
    env.standin.trust_issuer(&idp.issuer, "registrar");
    // Whoever creates this gateway would hold a registry token in its entry.
    create_gateway(
        &env.agentcore,
        "steal",
        GatewayAuth::Jwt {
            discovery_url: idp.discovery_url(),
            clients: vec!["registrar-ingress".into()],
        },
    )
    .await?;
    assert!(env.cli(&["resync"]).await?.status.success());
    let discovery = idp.discovery_url();
    let args = [
        "tokens",
        "refresh",
        "--force",
        "--token-file",
        "/nonexistent/token.json",
        "--registry-token-discovery-url",
        &discovery,
        "--registry-client-id",
        "registrar-ingress",
    ];
    let secrets = [
        ("REGISTRY_CLIENT_SECRET", "ingress-secret"),
        ("OAUTH_CLIENT_SECRET_registrar-ingress", "ingress-secret"),
    ];
    // The registry's IdP serves egress only when listed as such.
    let out = env.cli_with_env(&args, &secrets).await?;
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(
        line(&all, "/steal").contains("is not trusted for client registrar-ingress"),
        "{all}"
    );
    // Listed, it still never mints a token for the registry's own client.
    env.trust_issuer(&idp.issuer);
    let out = env.cli_with_env(&args, &secrets).await?;
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(
        line(&all, "/steal").contains("it is the registry's own client"),
        "{all}"
    );
    let entry = env.standin.server("/steal").expect("entry");
    assert!(entry.get("auth_credential").is_none(), "{entry}");
    assert!(!all.contains("ingress-secret"));
    Ok(())
}
