//! Egress tokens from a real OpenID provider (`oidc-provider`) into the registry stand-in.

#![allow(clippy::disallowed_methods)] // tests time real processes on the real clock

use std::time::Duration;

use axum::routing::get;
use registrar_tests::env::TestEnv;
use registrar_tests::fixtures::{GatewayAuth, create_gateway};
use registrar_tests::idp::Idp;
use registrar_tests::proxy::{Proxy, dynamodb_items_read};
use serde_json::{Value, json};

fn claims(jwt: &str) -> Value {
    registrar_core::refresh::jwt_claims(jwt).expect("a JWT with JSON claims")
}

fn jwt_auth(idp: &Idp, client: &str) -> GatewayAuth {
    GatewayAuth::Jwt {
        discovery_url: idp.discovery_url(),
        clients: vec![client.to_owned()],
    }
}

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_custom_jwt_gateway_gets_a_valid_token_and_is_enabled_once_it_has_one()
-> anyhow::Result<()> {
    let env = TestEnv::start().await?;
    let idp = Idp::start("gw-client", "s3cret-value", Duration::from_secs(300)).await?;
    env.trust_issuer(&idp.issuer);
    create_gateway(&env.agentcore, "secured", jwt_auth(&idp, "gw-client")).await?;
    assert!(env.cli(&["resync"]).await?.status.success());
    assert_eq!(
        env.standin.server("/secured").expect("entry")["is_enabled"],
        json!(false),
        "no token yet"
    );

    let secret = [("OAUTH_CLIENT_SECRET_gw-client", "s3cret-value")];
    let out = env
        .cli_with_env(&["tokens", "refresh", "--log", "debug"], &secret)
        .await?;
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    let entry = env.standin.server("/secured").expect("entry");
    let token = entry["auth_credential"]
        .as_str()
        .expect("a credential was delivered");
    let c = claims(token);
    assert_eq!(c["client_id"], json!("gw-client"));
    assert_eq!(c["aud"], json!("urn:test:gateway"));
    assert_eq!(c["iss"], json!(idp.issuer));
    assert!(
        c["exp"]
            .as_u64()
            .is_some_and(|e| e > registrar_worker::clock::now())
    );
    assert_eq!(
        entry["is_enabled"],
        json!(true),
        "enabled once its token is in place"
    );
    assert!(
        !all.contains("s3cret-value") && !all.contains(token),
        "no secret or token in any output:\n{all}"
    );

    let status = env.cli(&["tokens", "status"]).await?;
    let status = String::from_utf8_lossy(&status.stdout).to_string();
    let line = status
        .lines()
        .find(|l| l.starts_with("/secured"))
        .expect("status row");
    assert!(
        line.contains("unknown") && line.contains("gw-client") && line.ends_with("ok"),
        "{status}"
    );

    // Not due yet: nothing is fetched or written.
    let patches = env.standin.arrived("/api/servers/secured/auth-credential");
    assert!(
        env.cli_with_env(&["tokens", "refresh"], &secret)
            .await?
            .status
            .success()
    );
    assert_eq!(
        env.standin.arrived("/api/servers/secured/auth-credential"),
        patches
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn refresh_failures_are_per_resource_clear_and_leave_others_alone() -> anyhow::Result<()> {
    let env = TestEnv::start().await?;
    let mut idp = Idp::start(
        "good-client",
        "right-secret-value",
        Duration::from_secs(300),
    )
    .await?;
    env.trust_issuer(&idp.issuer);
    create_gateway(&env.agentcore, "good", jwt_auth(&idp, "good-client")).await?;
    create_gateway(&env.agentcore, "wrong-secret", jwt_auth(&idp, "bad-client")).await?;
    create_gateway(&env.agentcore, "no-secret", jwt_auth(&idp, "lonely-client")).await?;
    // An IdP whose discovery document lacks token_endpoint.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let broken = format!("http://{}", listener.local_addr()?);
    let issuer = broken.clone();
    let app =
        axum::Router::new().route(
            "/.well-known/openid-configuration",
            get(move || {
                let issuer = issuer.clone();
                async move {
                    axum::Json(json!({"issuer": issuer, "jwks_uri": format!("{issuer}/jwks")}))
                }
            }),
        );
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    env.trust_issuer(&broken);
    // Two IdPs are trusted: each client's environment secret is mapped to its own.
    for client in ["good-client", "bad-client", "lonely-client"] {
        env.map_client(client, &idp.issuer);
    }
    env.map_client("good-client", &broken);
    create_gateway(
        &env.agentcore,
        "no-endpoint",
        GatewayAuth::Jwt {
            discovery_url: format!("{broken}/.well-known/openid-configuration"),
            clients: vec!["good-client".into()],
        },
    )
    .await?;
    assert!(env.cli(&["resync"]).await?.status.success());

    let secrets = [
        ("OAUTH_CLIENT_SECRET_good-client", "right-secret-value"),
        ("OAUTH_CLIENT_SECRET_bad-client", "not-the-secret"),
    ];
    let out = env.cli_with_env(&["tokens", "refresh"], &secrets).await?;
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    let line = |path: &str| {
        all.lines()
            .find(|l| l.starts_with(path))
            .unwrap_or_default()
            .to_owned()
    };
    assert!(line("/good ").contains("refreshed"), "{all}");
    assert!(
        line("/wrong-secret").contains("refused client bad-client: invalid_client"),
        "{all}"
    );
    assert!(
        line("/no-secret").contains(
            "no client secret for lonely-client; tried env OAUTH_CLIENT_SECRET_lonely-client"
        ),
        "{all}"
    );
    assert!(
        line("/no-endpoint").contains("has no token_endpoint"),
        "{all}"
    );
    assert!(env.standin.server("/good").expect("entry")["auth_credential"].is_string());
    assert!(
        !all.contains("not-the-secret") && !all.contains("right-secret-value"),
        "no secret in output:\n{all}"
    );

    // The failures are recorded, to be retried before their tokens could expire.
    let status = env.cli(&["tokens", "status"]).await?;
    let status = String::from_utf8_lossy(&status.stdout).to_string();
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("/wrong-secret") && l.contains("invalid_client")),
        "{status}"
    );

    // The IdP goes down: a transient error for that resource.
    idp.stop().await;
    let out = env
        .cli_with_env(&["tokens", "refresh", "--path", "/good"], &secrets)
        .await?;
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1));
    assert!(all.contains("(transient)"), "{all}");
    server.abort();
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn deleting_the_gateway_removes_its_manifest_row_and_token_state() -> anyhow::Result<()> {
    let env = TestEnv::start().await?;
    let idp = Idp::start("c", "s", Duration::from_secs(300)).await?;
    env.trust_issuer(&idp.issuer);
    let doomed = create_gateway(&env.agentcore, "doomed", jwt_auth(&idp, "c")).await?;
    create_gateway(&env.agentcore, "kept", jwt_auth(&idp, "c")).await?;
    assert!(env.cli(&["resync"]).await?.status.success());
    assert!(
        env.cli_with_env(&["tokens", "refresh"], &[("OAUTH_CLIENT_SECRET_c", "s")])
            .await?
            .status
            .success()
    );

    env.agentcore
        .delete_gateway()
        .gateway_identifier(&doomed)
        .send()
        .await?;
    assert!(env.cli(&["resync"]).await?.status.success());
    let status = String::from_utf8_lossy(&env.cli(&["tokens", "status"]).await?.stdout).to_string();
    assert!(!status.contains("/doomed"), "{status}");
    assert!(status.contains("/kept"), "{status}");
    let patches = env.standin.arrived("/api/servers/doomed/auth-credential");
    assert!(
        env.cli_with_env(
            &["tokens", "refresh", "--force"],
            &[("OAUTH_CLIENT_SECRET_c", "s")]
        )
        .await?
        .status
        .success()
    );
    assert_eq!(
        env.standin.arrived("/api/servers/doomed/auth-credential"),
        patches,
        "its refreshes stopped"
    );
    Ok(())
}

/// Samples the registry's credential for `path` every 250 ms until `tokens` different ones have
/// been in place: fails at any sample where the one in place has expired (once a first one
/// arrived). The watch ends on those deliveries, not after a window; `limit` only stops a stuck
/// run. Returns the claims of the tokens seen, in order.
async fn watch_credential(
    env: &TestEnv,
    path: &str,
    tokens: usize,
    limit: Duration,
) -> anyhow::Result<Vec<Value>> {
    let start = std::time::Instant::now();
    let mut seen: Vec<(String, Value)> = Vec::new();
    while seen.len() < tokens {
        anyhow::ensure!(
            start.elapsed() < limit,
            "{} of {tokens} tokens delivered\n{}",
            seen.len(),
            env.worker_logs()
        );
        if let Some(token) = env
            .standin
            .server(path)
            .and_then(|e| e["auth_credential"].as_str().map(str::to_owned))
        {
            let c = claims(&token);
            let exp = c["exp"].as_u64().unwrap_or(0);
            let now = registrar_worker::clock::now();
            anyhow::ensure!(
                exp > now,
                "the registry held an expired token (exp {exp}, now {now})\n{}",
                env.worker_logs()
            );
            if seen.last().is_none_or(|(last, _)| *last != token) {
                seen.push((token, c));
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Ok(seen.into_iter().map(|(_, c)| c).collect())
}

/// Tokens delivered to `path` (credential PATCHes that reached the registry) per token lifetime
/// covered by `seen`: refreshes counted against lifetimes counted on the tokens' own `iat`/`exp`
/// (the IdP's issue times), not on the test's clock.
fn deliveries_per_lifetime(env: &TestEnv, path: &str, seen: &[Value]) -> (usize, f64) {
    let delivered = env
        .standin
        .arrived(&format!("/api/servers{path}/auth-credential"));
    let at = |c: &Value, k: &str| c[k].as_u64().unwrap_or(0) as f64;
    let (first, last) = (&seen[0], &seen[seen.len() - 1]);
    let lifetime = at(first, "exp") - at(first, "iat");
    let lifetimes = (at(last, "iat") - at(first, "iat")) / lifetime;
    // The first token starts the count; each later one is one refresh.
    let per_lifetime = delivered.saturating_sub(1) as f64 / lifetimes.max(f64::EPSILON);
    eprintln!(
        "{path}: {delivered} tokens delivered over {lifetimes:.2} lifetimes: {per_lifetime:.2} refreshes per lifetime"
    );
    (delivered, per_lifetime)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_running_worker_keeps_a_20s_token_fresh_with_about_one_request_per_lifetime()
-> anyhow::Result<()> {
    let env = TestEnv::start().await?;
    let idp = Idp::start("fast-client", "fast-secret", Duration::from_secs(20)).await?;
    env.trust_issuer(&idp.issuer);
    create_gateway(&env.agentcore, "fresh", jwt_auth(&idp, "fast-client")).await?;
    assert!(env.cli(&["resync"]).await?.status.success());
    let path = registrar_tests::events::EventPath::create(&env.config, "tokens", 5, 10).await?;
    let _worker = env.spawn_worker_with_env(
        &path,
        &["--token-check-interval", "1"],
        &[("OAUTH_CLIENT_SECRET_fast-client", "fast-secret")],
    )?;
    // Six tokens in turn (the first and five refreshes), none ever expired in place.
    let seen = watch_credential(&env, "/fresh", 6, Duration::from_secs(600)).await?;
    // Refreshed at 75 to 80% of the lifetime: 1.25 to 1.33 refreshes per lifetime. Fewer than
    // one would mean a lapse (the watch refuses that); more than 1.5 would be refreshing eagerly.
    let (delivered, per_lifetime) = deliveries_per_lifetime(&env, "/fresh", &seen);
    assert!(
        per_lifetime <= 1.5,
        "{delivered} tokens delivered, {per_lifetime:.2} refreshes per lifetime: {seen:?}\n{}",
        env.worker_logs()
    );
    assert_eq!(
        delivered,
        seen.len(),
        "every token delivered was the one in place for a while"
    );
    assert!(
        !env.worker_logs().contains("fast-secret"),
        "no secret in any log line"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idle_workers_token_loop_never_scans_and_reads_nothing_when_nothing_is_due()
-> anyhow::Result<()> {
    let env = TestEnv::start().await?;
    let idp = Idp::start("idle-client", "idle-secret", Duration::from_secs(300)).await?;
    env.trust_issuer(&idp.issuer);
    create_gateway(&env.agentcore, "idle", jwt_auth(&idp, "idle-client")).await?;
    create_gateway(&env.agentcore, "plain", GatewayAuth::Iam).await?;
    assert!(env.cli(&["resync"]).await?.status.success());
    // The worker's DynamoDB calls go through a proxy that keeps them and their answers.
    let dynamodb = Proxy::start(&env.moto.url()).await?;
    dynamodb.record_answers();
    let path = registrar_tests::events::EventPath::create(&env.config, "idle", 5, 10).await?;
    let _worker = env.spawn_worker_with_env(
        &path,
        &["--token-check-interval", "1"],
        &[
            ("OAUTH_CLIENT_SECRET_idle-client", "idle-secret"),
            ("AWS_ENDPOINT_URL_DYNAMODB", &dynamodb.url()),
        ],
    )?;
    // The new manifest row is found through the index and refreshed at once...
    assert!(
        registrar_tests::env::eventually(Duration::from_secs(30), || {
            env.standin
                .server("/idle")
                .is_some_and(|e| e["auth_credential"].is_string())
        })
        .await,
        "the token was delivered\n{}",
        env.worker_logs()
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    // ...then, with nothing due for minutes, a look every second costs one empty Query.
    dynamodb.record();
    tokio::time::sleep(Duration::from_secs(6)).await;
    let calls = dynamodb.take_recorded();
    let ops: Vec<String> = calls
        .iter()
        .filter_map(|c| {
            c.headers
                .get("x-amz-target")?
                .to_str()
                .ok()
                .map(str::to_owned)
        })
        .collect();
    assert!(
        !ops.iter().any(|op| op.ends_with(".Scan")),
        "no Scan: {ops:?}"
    );
    let queries = ops.iter().filter(|op| op.ends_with(".Query")).count();
    assert!((3..=8).contains(&queries), "a Query per look: {ops:?}");
    assert_eq!(
        dynamodb_items_read(&calls),
        Vec::<String>::new(),
        "nothing read when nothing is due: {ops:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn two_workers_refresh_each_token_once_per_cycle_not_twice() -> anyhow::Result<()> {
    let env = TestEnv::start().await?;
    let idp = Idp::start("shared-client", "shared-secret", Duration::from_secs(20)).await?;
    env.trust_issuer(&idp.issuer);
    create_gateway(&env.agentcore, "shared", jwt_auth(&idp, "shared-client")).await?;
    assert!(env.cli(&["resync"]).await?.status.success());
    let path = registrar_tests::events::EventPath::create(&env.config, "tokens2", 5, 10).await?;
    let secret = [("OAUTH_CLIENT_SECRET_shared-client", "shared-secret")];
    let _a = env.spawn_worker_with_env(&path, &["--token-check-interval", "1"], &secret)?;
    let _b = env.spawn_worker_with_env(&path, &["--token-check-interval", "1"], &secret)?;
    let seen = watch_credential(&env, "/shared", 5, Duration::from_secs(600)).await?;
    // One refresher per cycle: 1.25 to 1.33 refreshes per lifetime (both refreshing would give
    // about twice that, the second token of a cycle replacing the first at once).
    let (delivered, per_lifetime) = deliveries_per_lifetime(&env, "/shared", &seen);
    assert!(
        per_lifetime <= 1.5,
        "{delivered} tokens delivered, {per_lifetime:.2} per lifetime: {seen:?}\n{}",
        env.worker_logs()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn secrets_come_from_the_environment_secrets_manager_and_cognito_in_turn()
-> anyhow::Result<()> {
    let env = TestEnv::start().await?;
    // Environment.
    let env_idp = Idp::start("env-client", "env-secret", Duration::from_secs(300)).await?;
    env.trust_issuer(&env_idp.issuer);
    env.map_client("env-client", &env_idp.issuer);
    create_gateway(&env.agentcore, "from-env", jwt_auth(&env_idp, "env-client")).await?;
    // Secrets Manager (moto), by the default name pattern, as JSON.
    let sm_idp = Idp::start("sm-client", "sm-secret", Duration::from_secs(300)).await?;
    env.trust_issuer(&sm_idp.issuer);
    aws_sdk_secretsmanager::Client::new(&env.config)
        .create_secret()
        .name("agentcore-registrar/egress/sm-client")
        // Bound to its IdP: it may go nowhere else.
        .secret_string(json!({"client_secret": "sm-secret", "issuer": sm_idp.issuer}).to_string())
        .send()
        .await?;
    create_gateway(&env.agentcore, "from-sm", jwt_auth(&sm_idp, "sm-client")).await?;
    // Cognito (moto): the app client's generated secret, found through DescribeUserPoolClient of
    // the pool named in the discovery URL.
    let cognito = aws_sdk_cognitoidentityprovider::Client::new(&env.config);
    let pool = cognito
        .create_user_pool()
        .pool_name("gateways")
        .send()
        .await?;
    let pool_id = pool
        .user_pool()
        .and_then(|p| p.id())
        .unwrap_or_default()
        .to_owned();
    let app = cognito
        .create_user_pool_client()
        .user_pool_id(&pool_id)
        .client_name("gw")
        .generate_secret(true)
        .send()
        .await?;
    let app = app.user_pool_client().expect("client");
    let (client_id, client_secret) = (
        app.client_id().unwrap_or_default(),
        app.client_secret().unwrap_or_default(),
    );
    let cognito_idp = Idp::start_under(
        &format!("/cognito-idp.us-east-1.amazonaws.com/{pool_id}"),
        client_id,
        client_secret,
        Duration::from_secs(300),
    )
    .await?;
    create_gateway(
        &env.agentcore,
        "from-cognito",
        jwt_auth(&cognito_idp, client_id),
    )
    .await?;
    assert!(env.cli(&["resync"]).await?.status.success());

    // The pool's IdP is trusted as a Cognito pool (not listed): only for the secret Cognito
    // holds for its own app client. The emulated Cognito issuer lives on the local IdP's host.
    let cognito_base = format!(
        "{}/cognito-idp.{{region}}.amazonaws.com",
        cognito_idp
            .issuer
            .split("/cognito-idp.")
            .next()
            .unwrap_or_default()
    );
    let out = env
        .cli_with_env(
            &["tokens", "refresh"],
            &[
                ("OAUTH_CLIENT_SECRET_env-client", "env-secret"),
                ("REGISTRAR_COGNITO_ISSUER_BASE", &cognito_base),
            ],
        )
        .await?;
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    for (path, client) in [
        ("/from-env", "env-client"),
        ("/from-sm", "sm-client"),
        ("/from-cognito", client_id),
    ] {
        let token = env
            .standin
            .server(path)
            .and_then(|e| e["auth_credential"].as_str().map(str::to_owned));
        let token = token.unwrap_or_else(|| panic!("{path} has a token\n{all}"));
        assert_eq!(claims(&token)["client_id"], json!(client), "{path}");
    }
    for secret in ["env-secret", "sm-secret", client_secret] {
        assert!(!all.contains(secret), "no secret in output");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_long_running_worker_renews_its_registry_token_by_client_credentials()
-> anyhow::Result<()> {
    let env = TestEnv::start().await?;
    // The registry accepts JWTs from this IdP; they live 4 s.
    let idp = Idp::start(
        "registrar-ingress",
        "ingress-secret",
        Duration::from_secs(4),
    )
    .await?;
    env.trust_issuer(&idp.issuer);
    env.standin.trust_issuer(&idp.issuer, "registrar");
    let path = registrar_tests::events::EventPath::create(&env.config, "ingress", 5, 10).await?;
    let discovery = idp.discovery_url();
    let _worker = env.spawn_worker_with_env(
        &path,
        &[
            "--token-file",
            "/nonexistent/token.json",
            "--registry-token-discovery-url",
            &discovery,
            "--registry-client-id",
            "registrar-ingress",
            "--token-refresh",
            "false",
        ],
        &[("REGISTRY_CLIENT_SECRET", "ingress-secret")],
    )?;
    for (i, name) in ["first", "second", "third"].iter().enumerate() {
        if i > 0 {
            // Longer than a token lives: the next call needs a renewed token.
            tokio::time::sleep(Duration::from_secs(6)).await;
        }
        let id = create_gateway(&env.agentcore, name, GatewayAuth::Iam).await?;
        path.put("CreateGateway", json!({}), json!({"gatewayId": id}))
            .await?;
        let entry = format!("/{name}");
        assert!(
            registrar_tests::env::eventually(Duration::from_secs(20), || env
                .standin
                .server(&entry)
                .is_some())
            .await,
            "{entry} registered with a renewed registry token\n{}",
            env.worker_logs()
        );
    }
    assert!(
        !env.standin.log().iter().any(|l| l.status == 401),
        "never presented an expired token"
    );
    assert!(!env.worker_logs().contains("ingress-secret"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_about_to_expire_unrefreshed_raises_a_warning_and_a_metric() -> anyhow::Result<()> {
    let env = TestEnv::start().await?;
    let mut idp = Idp::start("fading-client", "fading-secret", Duration::from_secs(30)).await?;
    env.trust_issuer(&idp.issuer);
    create_gateway(&env.agentcore, "fading", jwt_auth(&idp, "fading-client")).await?;
    assert!(env.cli(&["resync"]).await?.status.success());
    let secret = [("OAUTH_CLIENT_SECRET_fading-client", "fading-secret")];
    assert!(
        env.cli_with_env(&["tokens", "refresh"], &secret)
            .await?
            .status
            .success()
    );
    // The IdP goes away for good: the next refreshes fail while the token runs out.
    idp.stop().await;
    let path = registrar_tests::events::EventPath::create(&env.config, "fading", 5, 10).await?;
    let port = registrar_tests::moto::free_port()?;
    let listen = format!("127.0.0.1:{port}");
    let _worker = env.spawn_worker_with_env(
        &path,
        &["--token-check-interval", "1", "--listen", &listen],
        &secret,
    )?;
    let mut seen = String::new();
    for _ in 0..60 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        if let Ok(r) = reqwest::get(format!("http://{listen}/metrics")).await {
            seen = r.text().await.unwrap_or_default();
            if seen
                .lines()
                .any(|l| l == "registrar_tokens_expiring_unrefreshed 1")
            {
                break;
            }
        }
    }
    assert!(
        seen.lines()
            .any(|l| l == "registrar_tokens_expiring_unrefreshed 1"),
        "{seen}\n{}",
        env.worker_logs()
    );
    assert!(seen.lines().any(
        |l| l.starts_with("registrar_token_refreshes_total{result=\"failed\"}")
            && !l.ends_with(" 0")
    ));
    assert!(
        env.worker_logs()
            .contains("Token is about to expire unrefreshed.")
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_whose_registry_client_secret_is_refused_says_so_once_at_start_up()
-> anyhow::Result<()> {
    let env = TestEnv::start().await?;
    let idp = Idp::start(
        "registrar-ingress",
        "the-real-secret",
        Duration::from_secs(300),
    )
    .await?;
    let discovery = idp.discovery_url();
    let path =
        registrar_tests::events::EventPath::create(&env.config, "placeholder", 5, 10).await?;
    let _worker = env.spawn_worker_with_env(
        &path,
        &[
            "--token-file",
            "/nonexistent/token.json",
            "--registry-token-discovery-url",
            &discovery,
            "--registry-client-id",
            "registrar-ingress",
        ],
        // The stack's generated placeholder, not the IdP's value.
        &[("REGISTRY_CLIENT_SECRET", "GeneratedPlaceholder0123456789")],
    )?;
    let said = "replace its generated placeholder";
    assert!(
        registrar_tests::env::eventually(Duration::from_secs(30), || env
            .worker_logs()
            .contains(said))
        .await,
        "{}",
        env.worker_logs()
    );
    let logs = env.worker_logs();
    assert!(logs.contains("invalid_client"), "{logs}");
    assert_eq!(logs.matches(said).count(), 1, "once: {logs}");
    assert!(!logs.contains("GeneratedPlaceholder0123456789"));
    Ok(())
}
