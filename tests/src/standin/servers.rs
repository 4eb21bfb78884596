//! `/api/servers/*`: form bodies for register/toggle/remove, JSON for the auth credential.

use std::collections::{BTreeMap, HashMap};

use axum::extract::{Extension, Form, Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Map, Value, json};

use super::{Caller, Shared, lock, now_iso, page, reply, truthy, unprocessable};

const SCHEMES: [&str; 3] = ["none", "bearer", "api_key"];

fn list_field(v: Option<&String>) -> Vec<Value> {
    let Some(v) = v else { return Vec::new() };
    if let Ok(Value::Array(a)) = serde_json::from_str::<Value>(v) {
        return a;
    }
    v.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| json!(s))
        .collect()
}

pub(super) async fn register(
    State(db): State<Shared>,
    Extension(Caller(user)): Extension<Caller>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    if !user.may("register_service") {
        return reply(
            StatusCode::FORBIDDEN,
            json!({"detail": "You do not have permission to register new services"}),
        );
    }
    for field in ["name", "description", "path"] {
        match form.get(field).map(String::as_str) {
            None => return unprocessable("missing", field, "Field required"),
            Some("") => {
                return unprocessable(
                    "string_too_short",
                    field,
                    "String should have at least 1 character",
                );
            }
            Some(_) => {}
        }
    }
    let Some(proxy) = form.get("proxy_pass_url").filter(|p| !p.is_empty()) else {
        return reply(
            StatusCode::BAD_REQUEST,
            json!({"detail": "proxy_pass_url is required for deployment='remote'"}),
        );
    };
    let scheme = form
        .get("auth_scheme")
        .cloned()
        .unwrap_or_else(|| "none".into());
    if !SCHEMES.contains(&scheme.as_str()) {
        return reply(
            StatusCode::BAD_REQUEST,
            json!({"error": "Invalid auth_scheme", "reason": "auth_scheme must be one of: ['none', 'bearer', 'api_key']"}),
        );
    }
    let visibility = match form
        .get("visibility")
        .map(String::as_str)
        .unwrap_or("public")
    {
        "internal" | "private" => "private",
        v @ ("public" | "group-restricted") => v,
        other => {
            return reply(
                StatusCode::BAD_REQUEST,
                json!({"detail": format!("Invalid visibility '{other}'. Must be one of: public, private, group-restricted")}),
            );
        }
    };
    let metadata = match form.get("metadata") {
        None => Value::Object(Map::new()),
        Some(m) => match serde_json::from_str::<Value>(m) {
            Ok(v @ Value::Object(_)) => v,
            _ => {
                return reply(
                    StatusCode::BAD_REQUEST,
                    json!({"detail": "metadata must be a JSON object string"}),
                );
            }
        },
    };
    let path = match form["path"].as_str() {
        p if p.starts_with('/') => p.to_owned(),
        p => format!("/{p}"),
    };
    let overwrite = form.get("overwrite").is_none_or(|v| truthy(v));
    let name = form["name"].clone();
    let mut d = lock(&db);
    let existing = d.servers.get(&path).cloned();
    let version = form.get("version").cloned();
    if let Some(old) = &existing {
        let same_version = version.is_none() || version.as_deref() == old["version"].as_str();
        if !overwrite && same_version {
            let v = old["version"].as_str().unwrap_or("v1.0.0");
            return reply(
                StatusCode::CONFLICT,
                json!({"error": "Service registration failed",
                       "reason": format!("A service with path '{path}' already exists with version {v}"),
                       "detail": "Use overwrite=true to replace, or specify a different version"}),
            );
        }
    }
    let transports = match form.get("supported_transports") {
        Some(_) => list_field(form.get("supported_transports")),
        None => vec![json!("streamable-http")],
    };
    let mut doc = existing.clone().unwrap_or_else(|| {
        json!({"is_enabled": false, "is_active": true, "registered_at": now_iso(), "num_tools": 0, "tool_list": [],
               "license": "N/A", "deployment": "remote", "health_status": "unknown", "version": "v1.0.0",
               "status": "active"})
    });
    let fields = json!({
        "id": d.new_id(), "path": path, "server_name": name, "description": form["description"],
        "proxy_pass_url": proxy, "mcp_endpoint": form.get("mcp_endpoint"), "supported_transports": transports,
        "auth_scheme": scheme, "auth_provider": form.get("auth_provider"), "tags": list_field(form.get("tags")),
        "metadata": metadata, "visibility": visibility, "registered_by": user.name, "updated_at": now_iso(),
    });
    if let (Some(obj), Value::Object(set)) = (doc.as_object_mut(), fields) {
        obj.extend(set);
        if let Some(status) = form.get("status") {
            obj.insert("status".into(), json!(status));
        }
        if let Some(cred) = form.get("auth_credential") {
            obj.insert("auth_credential".into(), json!(cred));
        }
    }
    d.servers.insert(path.clone(), doc);
    reply(
        StatusCode::CREATED,
        json!({"path": path, "name": name, "message": format!("Service '{name}' registered successfully at path '{path}'")}),
    )
}

/// The document as GET returns it: never the credential.
fn public_doc(doc: &Value) -> Value {
    let mut out = doc.clone();
    if let Some(o) = out.as_object_mut() {
        o.remove("auth_credential");
    }
    out
}

pub(super) async fn get_one(
    State(db): State<Shared>,
    Extension(Caller(user)): Extension<Caller>,
    Path(path): Path<String>,
) -> Response {
    let path = format!("/{}", path.trim_start_matches('/'));
    let d = lock(&db);
    match d.servers.get(&path) {
        None => reply(
            StatusCode::NOT_FOUND,
            json!({"detail": "Service path not registered"}),
        ),
        Some(doc) if !user.sees(&path, doc["registered_by"].as_str().unwrap_or_default()) => reply(
            StatusCode::FORBIDDEN,
            json!({"detail": "Access denied to this server"}),
        ),
        Some(doc) => reply(StatusCode::OK, public_doc(doc)),
    }
}

pub(super) async fn list(
    State(db): State<Shared>,
    Extension(Caller(user)): Extension<Caller>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    let (limit, offset) = match page(&q) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let d = lock(&db);
    // Draft and deprecated servers are left out unless a status is asked for; entries the
    // caller may not see are left out silently (never a 403).
    let visible: Vec<Value> = d
        .servers
        .values()
        .filter(|s| user.sees(s["path"].as_str().unwrap_or_default(), s["registered_by"].as_str().unwrap_or_default()))
        .filter(|s| match q.get("status") {
            Some(want) => s["status"].as_str() == Some(want.as_str()),
            None => !matches!(s["status"].as_str(), Some("draft" | "deprecated")),
        })
        .map(|s| {
            json!({"path": s["path"], "display_name": s["server_name"], "description": s["description"],
                   "metadata": s["metadata"], "tags": s["tags"], "registered_by": s["registered_by"],
                   "is_enabled": s["is_enabled"], "health_status": s["health_status"], "status": s["status"],
                   "auth_scheme": s["auth_scheme"], "proxy_pass_url": s["proxy_pass_url"], "version": s["version"],
                   "sync_metadata": null})
        })
        .collect();
    let total = visible.len();
    let items: Vec<Value> = visible.into_iter().skip(offset).take(limit).collect();
    let has_next = offset + items.len() < total;
    reply(
        StatusCode::OK,
        json!({"servers": items, "total_count": total, "limit": limit, "offset": offset, "has_next": has_next}),
    )
}

pub(super) async fn toggle(
    State(db): State<Shared>,
    Extension(Caller(user)): Extension<Caller>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let path = form.get("path").cloned().unwrap_or_default();
    let Some(state) = form.get("new_state") else {
        return unprocessable("missing", "new_state", "Field required");
    };
    let enabled = truthy(state);
    let mut d = lock(&db);
    let Some(doc) = d.servers.get_mut(&path) else {
        return reply(
            StatusCode::NOT_FOUND,
            json!({"detail": "Service path not registered"}),
        );
    };
    if !user.may("modify_service") {
        let name = doc["server_name"].as_str().unwrap_or_default();
        return reply(
            StatusCode::FORBIDDEN,
            json!({"detail": format!("You do not have permission to modify_service for {name}")}),
        );
    }
    doc["is_enabled"] = json!(enabled);
    let health = if enabled { "healthy" } else { "disabled" };
    doc["health_status"] = json!(health);
    reply(
        StatusCode::OK,
        json!({"message": format!("Toggle request for {path} processed."), "service_path": path,
               "new_enabled_state": enabled, "status": health, "last_checked_iso": now_iso(), "num_tools": 0}),
    )
}

pub(super) async fn remove(
    State(db): State<Shared>,
    Extension(Caller(user)): Extension<Caller>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let path = form.get("path").cloned().unwrap_or_default();
    let mut d = lock(&db);
    if !d.servers.contains_key(&path) {
        return reply(
            StatusCode::NOT_FOUND,
            json!({"error": "Service not found", "reason": format!("No service registered at path '{path}'"),
                   "suggestion": "Check the service path and try again"}),
        );
    }
    if !user.may("delete_service") {
        return reply(
            StatusCode::FORBIDDEN,
            json!({"error": "Permission denied", "reason": format!("User does not have delete_service permission for '{path}'")}),
        );
    }
    d.servers.remove(&path);
    reply(
        StatusCode::OK,
        json!({"message": "Service removed successfully", "path": path}),
    )
}

pub(super) async fn health(State(db): State<Shared>) -> Response {
    let d = lock(&db);
    let map: Map<String, Value> = d
        .servers
        .iter()
        .map(|(p, s)| {
            (
                p.clone(),
                json!({"status": s["health_status"], "last_checked_iso": null, "num_tools": 0}),
            )
        })
        .collect();
    reply(StatusCode::OK, Value::Object(map))
}

/// `PATCH /api/servers/<path>/auth-credential` (JSON).
pub(super) async fn patch(
    State(db): State<Shared>,
    Extension(Caller(user)): Extension<Caller>,
    Path(rest): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let Some(path) = rest
        .strip_suffix("/auth-credential")
        .map(|p| format!("/{}", p.trim_start_matches('/')))
    else {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            json!({"detail": "Method Not Allowed"}),
        );
    };
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return unprocessable("json_invalid", "body", "JSON decode error");
    };
    let scheme = body["auth_scheme"].as_str().unwrap_or_default().to_owned();
    if !SCHEMES.contains(&scheme.as_str()) {
        return reply(
            StatusCode::BAD_REQUEST,
            json!({"error": "Invalid auth_scheme", "reason": "auth_scheme must be one of: ['none', 'bearer', 'api_key']"}),
        );
    }
    let credential = body["auth_credential"].as_str().filter(|c| !c.is_empty());
    if scheme != "none" && credential.is_none() {
        return reply(
            StatusCode::BAD_REQUEST,
            json!({"error": "Missing credential", "reason": "auth_credential is required unless auth_scheme is 'none'"}),
        );
    }
    let mut d = lock(&db);
    let Some(doc) = d.servers.get_mut(&path) else {
        return reply(
            StatusCode::NOT_FOUND,
            json!({"error": "Server not found", "reason": format!("No server registered at path '{path}'")}),
        );
    };
    if !user.may("modify_service") {
        let name = doc["server_name"].as_str().unwrap_or_default();
        return reply(
            StatusCode::FORBIDDEN,
            json!({"detail": format!("You do not have permission to modify_service for {name}")}),
        );
    }
    doc["auth_scheme"] = json!(scheme);
    doc["auth_credential"] = if scheme == "none" {
        Value::Null
    } else {
        json!(credential)
    };
    doc["auth_header_name"] = body.get("auth_header_name").cloned().unwrap_or(Value::Null);
    doc["credential_updated_at"] = json!(now_iso());
    reply(
        StatusCode::OK,
        json!({"message": "Auth credentials updated successfully", "path": path, "auth_scheme": scheme, "auth_header_name": null}),
    )
}
