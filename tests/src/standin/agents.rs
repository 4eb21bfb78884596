//! `/api/agents/*`: JSON everywhere, snake_case or camelCase accepted.

use std::collections::BTreeMap;

use axum::extract::{Extension, Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::{Caller, Shared, lock, now_iso, page, reply, truthy, unprocessable};

/// A field by its camelCase or snake_case name.
fn field<'a>(body: &'a Value, camel: &str, snake: &str) -> Option<&'a Value> {
    body.get(camel)
        .or_else(|| body.get(snake))
        .filter(|v| !v.is_null())
}

fn tags(v: Option<&Value>) -> Value {
    match v {
        Some(Value::String(s)) => json!(
            s.split(',')
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .collect::<Vec<_>>()
        ),
        Some(Value::Array(a)) => json!(a),
        _ => json!([]),
    }
}

/// Validates a register/update body into the stored card fields (pydantic's 422 on failure).
fn card(body: &Value, path_override: Option<&str>) -> Result<Value, Response> {
    let name = match body.get("name").and_then(Value::as_str) {
        None => return Err(unprocessable("missing", "name", "Field required")),
        Some("") => {
            return Err(unprocessable(
                "string_too_short",
                "name",
                "String should have at least 1 character",
            ));
        }
        Some(n) => n.to_owned(),
    };
    let Some(url) = body.get("url").and_then(Value::as_str) else {
        return Err(unprocessable("missing", "url", "Field required"));
    };
    let protocol =
        match field(body, "supportedProtocol", "supported_protocol").and_then(Value::as_str) {
            None => {
                return Err(unprocessable(
                    "missing",
                    "supportedProtocol",
                    "Field required",
                ));
            }
            Some(p @ ("a2a" | "other")) => p.to_owned(),
            Some(_) => {
                return Err(unprocessable(
                    "literal_error",
                    "supportedProtocol",
                    "Input should be 'a2a' or 'other'",
                ));
            }
        };
    let path = match path_override
        .map(str::to_owned)
        .or_else(|| body.get("path").and_then(Value::as_str).map(str::to_owned))
    {
        Some(p) => {
            if !p.starts_with('/') || p.contains("//") || (p.len() > 1 && p.ends_with('/')) {
                return Err(unprocessable(
                    "value_error",
                    "path",
                    "Value error, path must start with '/', contain no '//' and not end with '/'",
                ));
            }
            p
        }
        None => format!("/{}", name.to_lowercase().replace(' ', "-")),
    };
    let visibility = match body
        .get("visibility")
        .and_then(Value::as_str)
        .unwrap_or("public")
    {
        "internal" | "private" => "private",
        v => v,
    };
    let metadata = body
        .get("metadata")
        .cloned()
        .filter(|m| m.is_object())
        .unwrap_or_else(|| json!({}));
    Ok(json!({
        "name": name, "path": path, "url": url,
        "description": body.get("description").cloned().unwrap_or(json!("")),
        "version": body.get("version").cloned().unwrap_or(json!("1.0.0")),
        "protocol_version": field(body, "protocolVersion", "protocol_version").cloned().unwrap_or(json!("1.0")),
        "tags": tags(body.get("tags")), "metadata": metadata, "visibility": visibility,
        "allowed_groups": field(body, "allowedGroups", "allowed_groups").cloned().unwrap_or(json!([])),
        "supported_protocol": protocol,
        "security_schemes": field(body, "securitySchemes", "security_schemes").cloned().unwrap_or(json!({})),
        // The registry drops `security` on this route (stored as null).
        "security": null,
        "skills": body.get("skills").cloned().unwrap_or(json!([])),
        "trust_level": field(body, "trustLevel", "trust_level").cloned().unwrap_or(json!("community")),
        // The request model defaults status to draft, so a PUT without it resets it.
        "status": body.get("status").cloned().unwrap_or(json!("draft")),
        "license": body.get("license").cloned().unwrap_or(json!("N/A")),
    }))
}

pub(super) async fn register(
    State(db): State<Shared>,
    Extension(Caller(user)): Extension<Caller>,
    body: axum::body::Bytes,
) -> Response {
    if !user.admin && !user.can_write {
        return reply(
            StatusCode::FORBIDDEN,
            json!({"detail": "You do not have permission to register agents"}),
        );
    }
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return unprocessable("json_invalid", "body", "JSON decode error");
    };
    let mut doc = match card(&body, None) {
        Ok(d) => d,
        Err(r) => return r,
    };
    let path = doc["path"].as_str().unwrap_or_default().to_owned();
    let mut d = lock(&db);
    if d.agents.contains_key(&path) {
        return reply(
            StatusCode::CONFLICT,
            json!({"detail": format!("Agent with path '{path}' already exists"), "suggestion": "Use a different path or update the existing agent"}),
        );
    }
    let registered_at = now_iso();
    if let Some(o) = doc.as_object_mut() {
        o.insert("is_enabled".into(), json!(false));
        o.insert("registered_by".into(), json!(user.name));
        o.insert("registered_at".into(), json!(registered_at));
        o.insert("num_stars".into(), json!(0));
    }
    let summary = json!({"name": doc["name"], "path": path, "url": doc["url"], "num_skills": 0,
                         "registered_at": registered_at, "is_enabled": true});
    d.agents.insert(path, doc);
    // `is_enabled: true` here only means "not blocked by the security scan"; it is stored disabled.
    reply(
        StatusCode::CREATED,
        json!({"message": "Agent registered successfully", "agent": summary}),
    )
}

fn agent_path(raw: &str) -> String {
    format!("/{}", raw.trim_start_matches('/'))
}

fn not_found(path: &str) -> Response {
    reply(
        StatusCode::NOT_FOUND,
        json!({"detail": format!("Agent not found at path '{path}'")}),
    )
}

pub(super) async fn get_one(
    State(db): State<Shared>,
    Extension(Caller(user)): Extension<Caller>,
    Path(raw): Path<String>,
) -> Response {
    let path = agent_path(&raw);
    let d = lock(&db);
    match d.agents.get(&path) {
        Some(doc) if user.sees(&path, doc["registered_by"].as_str().unwrap_or_default()) => {
            let mut r = reply(StatusCode::OK, doc.clone());
            let etag = format!("W/\"{}\"", now_iso().replace('.', ""));
            if let Ok(v) = HeaderValue::from_str(&etag) {
                r.headers_mut().insert(header::ETAG, v);
            }
            r
        }
        Some(_) => reply(
            StatusCode::FORBIDDEN,
            json!({"detail": "Access denied to this agent"}),
        ),
        None => not_found(&path),
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
    let visible: Vec<Value> = d
        .agents
        .values()
        .filter(|a| {
            user.sees(
                a["path"].as_str().unwrap_or_default(),
                a["registered_by"].as_str().unwrap_or_default(),
            )
        })
        .filter(|a| {
            !q.get("enabled_only").is_some_and(|v| truthy(v)) || a["is_enabled"] == json!(true)
        })
        .cloned()
        .collect();
    let total = visible.len();
    let items: Vec<Value> = visible.into_iter().skip(offset).take(limit).collect();
    let has_next = offset + items.len() < total;
    reply(
        StatusCode::OK,
        json!({"agents": items, "total_count": total, "limit": limit, "offset": offset, "has_next": has_next}),
    )
}

pub(super) async fn update(
    State(db): State<Shared>,
    Extension(Caller(user)): Extension<Caller>,
    Path(raw): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let path = agent_path(&raw);
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return unprocessable("json_invalid", "body", "JSON decode error");
    };
    let mut d = lock(&db);
    let Some(old) = d.agents.get(&path).cloned() else {
        return not_found(&path);
    };
    if !user.admin && (old["registered_by"].as_str() != Some(user.name.as_str()) || !user.can_write)
    {
        return reply(
            StatusCode::FORBIDDEN,
            json!({"detail": "You can only update agents you registered"}),
        );
    }
    let mut doc = match card(&body, Some(&path)) {
        Ok(d) => d,
        Err(r) => return r,
    };
    if let Some(o) = doc.as_object_mut() {
        for keep in ["is_enabled", "registered_by", "registered_at", "num_stars"] {
            o.insert(keep.into(), old[keep].clone());
        }
        if o.get("metadata")
            .and_then(Value::as_object)
            .is_some_and(|m| m.is_empty())
        {
            o.insert("metadata".into(), old["metadata"].clone());
        }
        o.insert("updated_at".into(), json!(now_iso()));
    }
    d.agents.insert(path, doc.clone());
    reply(StatusCode::OK, doc)
}

pub(super) async fn delete(
    State(db): State<Shared>,
    Extension(Caller(user)): Extension<Caller>,
    Path(raw): Path<String>,
) -> Response {
    let path = agent_path(&raw);
    let mut d = lock(&db);
    let Some(old) = d.agents.get(&path) else {
        return not_found(&path);
    };
    let owner = old["registered_by"].as_str() == Some(user.name.as_str());
    if !user.admin && !owner {
        return reply(
            StatusCode::FORBIDDEN,
            json!({"detail": "You do not have permission to delete this agent"}),
        );
    }
    d.agents.remove(&path);
    StatusCode::NO_CONTENT.into_response()
}

/// `POST /api/agents/<path>/toggle?enabled=true|false` (query parameter, no body).
pub(super) async fn post_sub(
    State(db): State<Shared>,
    Extension(Caller(user)): Extension<Caller>,
    Path(raw): Path<String>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    let Some(path) = raw.strip_suffix("/toggle").map(agent_path) else {
        return reply(StatusCode::NOT_FOUND, json!({"detail": "Not Found"}));
    };
    let Some(enabled) = q.get("enabled").map(|v| truthy(v)) else {
        return reply(
            StatusCode::UNPROCESSABLE_ENTITY,
            json!({"detail": [{"type": "missing", "loc": ["query", "enabled"], "msg": "Field required", "input": null}]}),
        );
    };
    let mut d = lock(&db);
    let Some(doc) = d.agents.get_mut(&path) else {
        return not_found(&path);
    };
    if !user.admin && !user.can_write {
        return reply(
            StatusCode::FORBIDDEN,
            json!({"detail": "You do not have permission to toggle this agent"}),
        );
    }
    doc["is_enabled"] = json!(enabled);
    let word = if enabled { "enabled" } else { "disabled" };
    reply(
        StatusCode::OK,
        json!({"message": format!("Agent {word} successfully"), "path": path, "is_enabled": enabled}),
    )
}
