//! The registry stand-in answers as `registry-contract.md` §2 records the real registry:
//! status codes, body encodings, error shapes, disabled-on-create, list filtering, and the
//! agent PUT that resets `status`.

use registrar_tests::standin::{Standin, User};
use reqwest::StatusCode;
use serde_json::{Value, json};

const ADMIN: &str = "admin-key-0123456789abcdef0123456789abcd";
const NOBODY: &str = "nobody-key-0123456789abcdef0123456789abc";

struct Client {
    http: reqwest::Client,
    base: String,
}

impl Client {
    async fn send(
        &self,
        req: reqwest::RequestBuilder,
        token: Option<&str>,
    ) -> (StatusCode, Value, reqwest::header::HeaderMap) {
        let req = match token {
            Some(t) => req.bearer_auth(t),
            None => req,
        };
        let r = req.send().await.expect("request");
        let status = r.status();
        let headers = r.headers().clone();
        let text = r.text().await.unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::Null),
            headers,
        )
    }

    async fn register_server(&self, token: &str, form: &[(&str, &str)]) -> (StatusCode, Value) {
        let (s, b, _) = self
            .send(
                self.http
                    .post(format!("{}/api/servers/register", self.base))
                    .form(form),
                Some(token),
            )
            .await;
        (s, b)
    }

    async fn get(&self, token: &str, path: &str) -> (StatusCode, Value) {
        let (s, b, _) = self
            .send(self.http.get(format!("{}{path}", self.base)), Some(token))
            .await;
        (s, b)
    }
}

async fn start() -> (Standin, Client) {
    let users = vec![
        (ADMIN.to_owned(), User::admin("registrar")),
        (NOBODY.to_owned(), User::nobody("nobody")),
    ];
    let standin = Standin::start(0, users).await.expect("standin");
    let client = Client {
        http: reqwest::Client::new(),
        base: standin.url(),
    };
    (standin, client)
}

const SERVER: &[(&str, &str)] = &[
    ("path", "/geo-mcp"),
    ("name", "Geo MCP"),
    ("description", "AgentCore Gateway: Geo MCP"),
    ("proxy_pass_url", "https://gw.example.com/mcp"),
    ("auth_scheme", "bearer"),
    ("tags", "agentcore,gateway,auto-registered"),
    ("metadata", r#"{"source":"agentcore-registrar"}"#),
    ("overwrite", "False"),
];

#[tokio::test]
async fn missing_or_unknown_bearer_is_401_with_www_authenticate() {
    let (_s, c) = start().await;
    let (status, body, headers) = c
        .send(c.http.get(format!("{}/api/servers", c.base)), None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        headers
            .get("www-authenticate")
            .map(|v| v.to_str().unwrap_or_default()),
        Some("Bearer")
    );
    assert!(
        body["detail"]
            .as_str()
            .is_some_and(|d| d.starts_with("Missing or invalid Authorization header"))
    );
    let (status, _, _) = c
        .send(c.http.get(format!("{}/api/servers", c.base)), Some("wrong"))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn servers_register_disabled_conflict_without_overwrite_and_keep_enabled_on_overwrite() {
    let (s, c) = start().await;
    let (status, body) = c.register_server(ADMIN, SERVER).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(
        body,
        json!({"path": "/geo-mcp", "name": "Geo MCP", "message": "Service 'Geo MCP' registered successfully at path '/geo-mcp'"})
    );
    let (status, doc) = c.get(ADMIN, "/api/servers/geo-mcp").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(doc["is_enabled"], json!(false), "new servers are disabled");
    assert_eq!(
        doc["tags"],
        json!(["agentcore", "gateway", "auto-registered"])
    );
    assert_eq!(
        doc["metadata"]["source"],
        json!("agentcore-registrar"),
        "metadata stored as an object"
    );
    let first_id = doc["id"].clone();

    let (status, body) = c.register_server(ADMIN, SERVER).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(body["error"], json!("Service registration failed"));
    assert!(
        body["reason"]
            .as_str()
            .is_some_and(|r| r.contains("A service with path '/geo-mcp' already exists"))
    );

    let (status, _, _) = c
        .send(
            c.http
                .post(format!("{}/api/servers/toggle", c.base))
                .form(&[("path", "/geo-mcp"), ("new_state", "true")]),
            Some(ADMIN),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let mut overwrite: Vec<(&str, &str)> = SERVER
        .iter()
        .filter(|(k, _)| *k != "overwrite" && *k != "description")
        .copied()
        .collect();
    overwrite.push(("description", "changed"));
    let (status, _) = c.register_server(ADMIN, &overwrite).await; // overwrite defaults to true
    assert_eq!(status, StatusCode::CREATED);
    let doc = s.server("/geo-mcp").expect("doc");
    assert_eq!(doc["description"], json!("changed"));
    assert_eq!(doc["is_enabled"], json!(true), "overwrite keeps is_enabled");
    assert_ne!(doc["id"], first_id, "overwrite issues a new id");
}

#[tokio::test]
async fn the_request_log_counts_calls_by_kind_and_answers_apart() {
    let (s, c) = start().await;
    c.register_server(ADMIN, SERVER).await;
    c.register_server(ADMIN, SERVER).await;
    c.get(ADMIN, "/api/servers/geo-mcp").await;
    c.get(ADMIN, "/api/servers/nowhere").await;
    c.get(ADMIN, "/api/servers?limit=2000").await;
    c.get(ADMIN, "/api/agents").await;
    c.send(
        c.http
            .post(format!("{}/api/servers/toggle", c.base))
            .form(&[("path", "/geo-mcp"), ("new_state", "true")]),
        Some(ADMIN),
    )
    .await;
    let by: Vec<(String, usize)> = s.calls_by_kind().into_iter().collect();
    let want: Vec<(String, usize)> = [
        ("get server", 1),
        ("get server (404)", 1),
        ("list agents", 1),
        ("list servers", 1),
        ("register server", 1),
        ("register server (409)", 1),
        ("toggle server", 1),
    ]
    .into_iter()
    .map(|(k, n)| (k.to_owned(), n))
    .collect();
    assert_eq!(by, want);
}

#[tokio::test]
async fn server_validation_errors_have_the_recorded_shapes() {
    let (_s, c) = start().await;
    let mut empty_description: Vec<(&str, &str)> = SERVER
        .iter()
        .filter(|(k, _)| *k != "description")
        .copied()
        .collect();
    empty_description.push(("description", ""));
    let (status, body) = c.register_server(ADMIN, &empty_description).await;
    assert_eq!(
        status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "an empty description is rejected"
    );
    assert_eq!(body["detail"][0]["loc"], json!(["body", "description"]));
    let missing: Vec<(&str, &str)> = SERVER
        .iter()
        .filter(|(k, _)| *k != "description")
        .copied()
        .collect();
    let (status, body) = c.register_server(ADMIN, &missing).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body["detail"][0]["type"], json!("missing"));
    let mut bad_scheme: Vec<(&str, &str)> = SERVER
        .iter()
        .filter(|(k, _)| *k != "auth_scheme")
        .copied()
        .collect();
    bad_scheme.push(("auth_scheme", "sigv4"));
    let (status, body) = c.register_server(ADMIN, &bad_scheme).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], json!("Invalid auth_scheme"));
    let (status, _) = c.get(ADMIN, "/api/servers?limit=2001").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "limit above 2000");
    let (status, _) = c.register_server(NOBODY, SERVER).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn lists_hide_drafts_and_what_the_caller_may_not_see_instead_of_403() {
    let (_s, c) = start().await;
    c.register_server(ADMIN, SERVER).await;
    let mut draft: Vec<(&str, &str)> = SERVER
        .iter()
        .filter(|(k, _)| *k != "path")
        .copied()
        .collect();
    draft.extend([("path", "/draft-one"), ("status", "draft")]);
    c.register_server(ADMIN, &draft).await;
    let (status, _) = c.register_server(ADMIN, &draft).await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "a registration without overwrite finds a draft's path taken, though lists hide it"
    );
    let (status, body) = c.get(ADMIN, "/api/servers?limit=2000").await;
    assert_eq!(status, StatusCode::OK);
    let paths: Vec<&str> = body["servers"]
        .as_array()
        .expect("servers")
        .iter()
        .filter_map(|s| s["path"].as_str())
        .collect();
    assert_eq!(paths, ["/geo-mcp"], "drafts are left out by default");
    assert_eq!(
        body["servers"][0]["display_name"],
        json!("Geo MCP"),
        "list items use display_name"
    );
    let (status, body) = c.get(NOBODY, "/api/servers").await;
    assert_eq!(status, StatusCode::OK, "never 403 on a list");
    assert_eq!(body["servers"], json!([]));
    assert_eq!(body["total_count"], json!(0));
}

#[tokio::test]
async fn server_credential_patch_toggle_and_remove() {
    let (s, c) = start().await;
    c.register_server(ADMIN, SERVER).await;
    let url = format!("{}/api/servers/geo-mcp/auth-credential", c.base);
    let (status, body, _) = c
        .send(
            c.http
                .patch(&url)
                .json(&json!({"auth_scheme": "bearer", "auth_credential": "tok"})),
            Some(ADMIN),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body["message"],
        json!("Auth credentials updated successfully")
    );
    assert_eq!(
        s.server("/geo-mcp").expect("doc")["auth_credential"],
        json!("tok")
    );
    let (_, doc) = c.get(ADMIN, "/api/servers/geo-mcp").await;
    assert!(
        doc.get("auth_credential").is_none(),
        "GET never shows the credential"
    );
    let (status, _, _) = c
        .send(
            c.http.patch(&url).json(&json!({"auth_scheme": "bearer"})),
            Some(ADMIN),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "a bearer scheme needs a credential"
    );
    let missing = format!("{}/api/servers/nope/auth-credential", c.base);
    let (status, body, _) = c
        .send(
            c.http.patch(&missing).json(&json!({"auth_scheme": "none"})),
            Some(ADMIN),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"], json!("Server not found"));

    let toggle = format!("{}/api/servers/toggle", c.base);
    let (status, body, _) = c
        .send(
            c.http
                .post(&toggle)
                .form(&[("path", "/nope"), ("new_state", "true")]),
            Some(ADMIN),
        )
        .await;
    assert_eq!(
        (status, body["detail"].clone()),
        (StatusCode::NOT_FOUND, json!("Service path not registered"))
    );

    let remove = format!("{}/api/servers/remove", c.base);
    let (status, body, _) = c
        .send(
            c.http.post(&remove).form(&[("path", "/geo-mcp")]),
            Some(NOBODY),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["error"], json!("Permission denied"));
    let (status, body, _) = c
        .send(
            c.http.post(&remove).form(&[("path", "/geo-mcp")]),
            Some(ADMIN),
        )
        .await;
    assert_eq!(
        (status, body["message"].clone()),
        (StatusCode::OK, json!("Service removed successfully"))
    );
    let (status, body, _) = c
        .send(
            c.http.post(&remove).form(&[("path", "/geo-mcp")]),
            Some(ADMIN),
        )
        .await;
    assert_eq!(
        (status, body["error"].clone()),
        (StatusCode::NOT_FOUND, json!("Service not found"))
    );
}

fn agent_body() -> Value {
    json!({"name": "SRE Agent", "url": "https://bedrock-agentcore.us-east-1.amazonaws.com/runtimes/x/invocations",
           "path": "/sre-agent", "supportedProtocol": "a2a", "visibility": "internal",
           "security": [{"sigv4": []}], "metadata": {"source": "agentcore-registrar"}})
}

#[tokio::test]
async fn agents_register_disabled_and_put_resets_status() {
    let (s, c) = start().await;
    let register = format!("{}/api/agents/register", c.base);
    let (status, body, _) = c
        .send(c.http.post(&register).json(&agent_body()), Some(ADMIN))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(
        body["agent"]["is_enabled"],
        json!(true),
        "the response says enabled ..."
    );
    let stored = s.agent("/sre-agent").expect("stored");
    assert_eq!(
        stored["is_enabled"],
        json!(false),
        "... but the stored agent is disabled"
    );
    assert_eq!(
        stored["visibility"],
        json!("private"),
        "internal is read as private"
    );
    assert_eq!(stored["security"], Value::Null, "security is dropped");
    assert_eq!(stored["status"], json!("draft"));

    let (status, body, _) = c
        .send(c.http.post(&register).json(&agent_body()), Some(ADMIN))
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(
        body["detail"],
        json!("Agent with path '/sre-agent' already exists")
    );

    let mut no_protocol = agent_body();
    if let Some(o) = no_protocol.as_object_mut() {
        o.remove("supportedProtocol");
    }
    no_protocol["path"] = json!("/other");
    let (status, _, _) = c
        .send(c.http.post(&register).json(&no_protocol), Some(ADMIN))
        .await;
    assert_eq!(
        status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "supportedProtocol is required"
    );
    let mut bad_path = agent_body();
    bad_path["path"] = json!("/trailing/");
    let (status, _, _) = c
        .send(c.http.post(&register).json(&bad_path), Some(ADMIN))
        .await;
    assert_eq!(
        status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "agent paths are validated"
    );

    let toggle = format!("{}/api/agents/sre-agent/toggle", c.base);
    let (status, _, _) = c.send(c.http.post(&toggle), Some(ADMIN)).await;
    assert_eq!(
        status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "enabled is a required query parameter"
    );
    let (status, body, _) = c
        .send(
            c.http.post(&toggle).query(&[("enabled", "true")]),
            Some(ADMIN),
        )
        .await;
    assert_eq!(
        (status, body["message"].clone()),
        (StatusCode::OK, json!("Agent enabled successfully"))
    );

    if let Some(a) = s.db().agents.get_mut("/sre-agent") {
        a["status"] = json!("active");
    }
    let put = format!("{}/api/agents/sre-agent", c.base);
    let (status, _, _) = c
        .send(c.http.put(&put).json(&agent_body()), Some(ADMIN))
        .await;
    assert_eq!(status, StatusCode::OK);
    let stored = s.agent("/sre-agent").expect("stored");
    assert_eq!(
        stored["status"],
        json!("draft"),
        "a PUT without status resets it to draft"
    );
    assert_eq!(stored["is_enabled"], json!(true), "a PUT keeps is_enabled");

    let (status, _, headers) = c.send(c.http.get(&put), Some(ADMIN)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        headers
            .get("etag")
            .is_some_and(|e| e.to_str().unwrap_or_default().starts_with("W/\""))
    );
    let (status, _, _) = c.send(c.http.delete(&put), Some(NOBODY)).await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "only the owner or an admin deletes"
    );
    let (status, body, _) = c.send(c.http.delete(&put), Some(ADMIN)).await;
    assert_eq!((status, body), (StatusCode::NO_CONTENT, Value::Null));
    let (status, body, _) = c.send(c.http.get(&put), Some(ADMIN)).await;
    assert_eq!(
        (status, body["detail"].clone()),
        (
            StatusCode::NOT_FOUND,
            json!("Agent not found at path '/sre-agent'")
        )
    );
}

#[tokio::test]
async fn a_user_without_one_server_permission_gets_that_routes_403() {
    let (standin, c) = start().await;
    let no_modify = "no-modify-key-0123456789abcdef0123456789ab";
    let no_delete = "no-delete-key-0123456789abcdef0123456789ab";
    {
        let mut db = standin.db();
        db.users.insert(
            no_modify.to_owned(),
            User::admin("ops").without("modify_service"),
        );
        db.users.insert(
            no_delete.to_owned(),
            User::admin("ops").without("delete_service"),
        );
    }
    let form = [
        ("path", "/probe"),
        ("name", "Probe"),
        ("description", "d"),
        ("proxy_pass_url", "https://probe.invalid/mcp"),
    ];
    let (s, _) = c.register_server(no_modify, &form).await;
    assert_eq!(s, StatusCode::CREATED, "register_service is still granted");
    let (s, b, _) = c
        .send(
            c.http
                .post(format!("{}/api/servers/toggle", c.base))
                .form(&[("path", "/probe"), ("new_state", "false")]),
            Some(no_modify),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert_eq!(
        b,
        json!({"detail": "You do not have permission to modify_service for Probe"})
    );
    let (s, b, _) = c
        .send(
            c.http
                .patch(format!("{}/api/servers/probe/auth-credential", c.base))
                .json(&json!({"auth_scheme": "none"})),
            Some(no_modify),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert_eq!(
        b,
        json!({"detail": "You do not have permission to modify_service for Probe"})
    );
    let remove = || {
        c.http
            .post(format!("{}/api/servers/remove", c.base))
            .form(&[("path", "/probe")])
    };
    let (s, b, _) = c.send(remove(), Some(no_delete)).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert_eq!(
        b,
        json!({"error": "Permission denied", "reason": "User does not have delete_service permission for '/probe'"})
    );
    let (s, _, _) = c.send(remove(), Some(no_modify)).await;
    assert_eq!(s, StatusCode::OK, "delete_service is still granted");
}
