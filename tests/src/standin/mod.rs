//! A stand-in for the MCP Gateway Registry, behaving as `registry-contract.md` §2 records the
//! real one: form vs JSON bodies, 201/409/404/401/403/422 with the recorded shapes, new entries
//! disabled, lists that hide what the caller may not see (never 403), an agent PUT that resets
//! `status`, and server overwrite that keeps `is_enabled` and issues a new `id`.
//!
//! Tests drive it in-process through [`Standin`]; the `registry-standin` binary serves it for the
//! demo. Faults (5xx, Retry-After, hangs) can be injected for resilience tests.

// `Result<_, Response>` is axum's idiom for early answers; the size of `Response` is fine here.
#![allow(clippy::result_large_err)]

mod agents;
mod servers;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// A caller the stand-in knows, by bearer token.
#[derive(Debug, Clone)]
pub struct User {
    pub name: String,
    /// Every permission, sees everything.
    pub admin: bool,
    /// May register, modify and delete.
    pub can_write: bool,
    /// Paths a non-admin may see besides its own entries.
    pub visible: BTreeSet<String>,
    /// Server permissions its groups do not grant (`register_service`, `modify_service`,
    /// `delete_service`), each answered with the contract's 403 for that route.
    pub denied: BTreeSet<String>,
}

impl User {
    pub fn admin(name: &str) -> Self {
        Self {
            name: name.into(),
            admin: true,
            can_write: true,
            visible: BTreeSet::new(),
            denied: BTreeSet::new(),
        }
    }

    /// Another publisher: may register (and, the registry's default, overwrite any server path),
    /// sees only what it registered.
    pub fn publisher(name: &str) -> Self {
        Self {
            name: name.into(),
            admin: false,
            can_write: true,
            visible: BTreeSet::new(),
            denied: BTreeSet::new(),
        }
    }

    /// A key whose groups map to nothing: lists come back empty, writes get 403.
    pub fn nobody(name: &str) -> Self {
        Self {
            name: name.into(),
            admin: false,
            can_write: false,
            visible: BTreeSet::new(),
            denied: BTreeSet::new(),
        }
    }

    /// The same user without one server permission (the registry's names: `register_service`,
    /// `modify_service`, `delete_service`).
    pub fn without(mut self, permission: &str) -> Self {
        self.denied.insert(permission.to_owned());
        self
    }

    /// Whether the user holds a server permission.
    pub(crate) fn may(&self, permission: &str) -> bool {
        (self.admin || self.can_write) && !self.denied.contains(permission)
    }

    fn sees(&self, path: &str, registered_by: &str) -> bool {
        self.admin || registered_by == self.name || self.visible.contains(path)
    }
}

/// An injected failure, applied to the next `count` API requests (optionally only to writes).
#[derive(Debug, Clone)]
pub struct Fault {
    pub status: u16,
    pub count: usize,
    pub retry_after_secs: Option<u64>,
    /// Sleep this long before answering (a hang, when longer than the client timeout).
    pub delay: Option<Duration>,
    pub writes_only: bool,
    /// Carry the request out, then answer with the fault (a reply lost after the work was
    /// done: a proxy's 502, a timeout after the commit).
    pub after_handling: bool,
}

impl Fault {
    pub fn status(status: u16, count: usize) -> Self {
        Self {
            status,
            count,
            retry_after_secs: None,
            delay: None,
            writes_only: false,
            after_handling: false,
        }
    }
}

/// One request the stand-in answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Logged {
    pub method: String,
    pub path: String,
    pub status: u16,
}

impl Logged {
    /// Whether the request changed (or tried to change) the registry.
    pub fn is_write(&self) -> bool {
        self.method != "GET"
    }

    /// The kind of call, by method and route (`registry-contract.md` §2.2, §2.3): `list
    /// servers`, `get agent`, `register server`, `toggle agent`, `set credential`, ... A server
    /// registration and a server overwrite share one route (the form's `overwrite` tells them
    /// apart, and the log keeps no bodies): both are `register server`.
    pub fn kind(&self) -> &'static str {
        let path = self.path.as_str();
        let (server, rest) = if let Some(rest) = path.strip_prefix("/api/servers") {
            (true, rest)
        } else if let Some(rest) = path.strip_prefix("/api/agents") {
            (false, rest)
        } else {
            return "other";
        };
        let pick = |for_server: &'static str, for_agent: &'static str| {
            if server { for_server } else { for_agent }
        };
        match (self.method.as_str(), rest) {
            ("GET", "" | "/") => pick("list servers", "list agents"),
            ("GET", "/health") if server => "health",
            ("GET", _) => pick("get server", "get agent"),
            ("POST", "/register") => pick("register server", "register agent"),
            ("POST", "/toggle") if server => "toggle server",
            ("POST", "/remove") if server => "remove server",
            ("POST", r) if !server && r.ends_with("/toggle") => "toggle agent",
            ("POST", r) if r.ends_with("/rescan") => "rescan",
            ("PATCH", r) if server && r.ends_with("/auth-credential") => "set credential",
            ("PUT", _) if !server => "update agent",
            ("DELETE", _) if !server => "delete agent",
            _ => "other",
        }
    }
}

/// The registry's data and the stand-in's controls.
#[derive(Debug, Default)]
pub struct Db {
    pub servers: BTreeMap<String, Value>,
    pub agents: BTreeMap<String, Value>,
    pub users: BTreeMap<String, User>,
    /// JWT issuers whose unexpired tokens are accepted, as the user named here (the real
    /// registry validates IdP JWTs against the IdP's keys; this stand-in checks `iss` and `exp`).
    pub trusted_issuers: BTreeMap<String, User>,
    pub faults: VecDeque<Fault>,
    /// Every API request answered, with its status.
    pub log: Vec<Logged>,
    /// Every API request as it arrives (before any injected delay): `(method, path)`.
    pub arrivals: Vec<(String, String)>,
    next_id: u64,
}

impl Db {
    fn new_id(&mut self) -> String {
        self.next_id += 1;
        format!("00000000-0000-4000-8000-{:012x}", self.next_id)
    }
}

pub(crate) type Shared = Arc<Mutex<Db>>;

pub(crate) fn lock(db: &Shared) -> MutexGuard<'_, Db> {
    db.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A running stand-in; stops when dropped.
#[derive(Debug)]
pub struct Standin {
    pub addr: SocketAddr,
    db: Shared,
    stop: Option<oneshot::Sender<()>>,
}

impl Standin {
    /// Starts on 127.0.0.1 at `port` (0 picks a free one) with the given users.
    pub async fn start(port: u16, users: Vec<(String, User)>) -> std::io::Result<Self> {
        let db: Shared = Arc::new(Mutex::new(Db::default()));
        lock(&db).users = users.into_iter().collect();
        let listener = TcpListener::bind(("127.0.0.1", port)).await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let app = router(db.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
        });
        Ok(Self {
            addr,
            db,
            stop: Some(stop),
        })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn db(&self) -> MutexGuard<'_, Db> {
        lock(&self.db)
    }

    pub fn inject(&self, fault: Fault) {
        self.db().faults.push_back(fault);
    }

    /// API requests answered so far.
    pub fn log(&self) -> Vec<Logged> {
        self.db().log.clone()
    }

    pub fn clear_log(&self) {
        self.db().log.clear();
    }

    /// API requests answered so far, counted by [`Logged::kind`]; those not answered with a
    /// 2xx are counted apart, with their status (`register server (409)`).
    pub fn calls_by_kind(&self) -> BTreeMap<String, usize> {
        let mut by = BTreeMap::new();
        for l in &self.db().log {
            let kind = if (200..300).contains(&l.status) {
                l.kind().to_owned()
            } else {
                format!("{} ({})", l.kind(), l.status)
            };
            *by.entry(kind).or_default() += 1;
        }
        by
    }

    /// Requests that have arrived at `path` (answered or not).
    pub fn arrived(&self, path: &str) -> usize {
        self.db().arrivals.iter().filter(|(_, p)| p == path).count()
    }

    /// Writes (non-GET API requests) answered so far.
    pub fn writes(&self) -> Vec<Logged> {
        self.log().into_iter().filter(Logged::is_write).collect()
    }

    pub fn server(&self, path: &str) -> Option<Value> {
        self.db().servers.get(path).cloned()
    }

    pub fn agent(&self, path: &str) -> Option<Value> {
        self.db().agents.get(path).cloned()
    }

    /// Accepts unexpired JWTs issued by `issuer` as an admin named `name`.
    pub fn trust_issuer(&self, issuer: &str, name: &str) {
        self.db()
            .trusted_issuers
            .insert(issuer.to_owned(), User::admin(name));
    }

    /// Puts an entry in place directly, as another client would have registered it.
    pub fn seed_server(&self, doc: Value) {
        let path = doc["path"].as_str().unwrap_or_default().to_owned();
        self.db().servers.insert(path, doc);
    }
}

impl Drop for Standin {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// The router, for the binary and for tests.
pub(crate) fn router(db: Shared) -> Router {
    Router::new()
        .route("/api/servers", get(servers::list))
        .route("/api/servers/register", post(servers::register))
        .route("/api/servers/toggle", post(servers::toggle))
        .route("/api/servers/remove", post(servers::remove))
        .route("/api/servers/health", get(servers::health))
        .route(
            "/api/servers/{*path}",
            get(servers::get_one).patch(servers::patch),
        )
        .route("/api/agents", get(agents::list))
        .route("/api/agents/register", post(agents::register))
        .route(
            "/api/agents/{*path}",
            get(agents::get_one)
                .put(agents::update)
                .delete(agents::delete)
                .post(agents::post_sub),
        )
        .layer(middleware::from_fn_with_state(db.clone(), gate))
        .with_state(db)
}

/// The caller, resolved by the gate.
#[derive(Debug, Clone)]
pub(crate) struct Caller(pub User);

/// Faults, authentication (nginx `/validate`: 401 with `WWW-Authenticate`), and the request log.
async fn gate(State(db): State<Shared>, mut req: Request, next: Next) -> Response {
    let method = req.method().to_string();
    let path = req.uri().path().to_owned();
    let is_write = method != "GET";
    let fault = {
        let mut d = lock(&db);
        d.arrivals.push((method.clone(), path.clone()));
        match d.faults.front_mut() {
            Some(f) if !f.writes_only || is_write => {
                f.count = f.count.saturating_sub(1);
                let fault = f.clone();
                if f.count == 0 {
                    d.faults.pop_front();
                }
                Some(fault)
            }
            _ => None,
        }
    };
    let response = if let Some(f) = fault {
        if f.after_handling {
            let token = req
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .and_then(|t| lock(&db).users.get(t).cloned());
            if let Some(user) = token {
                req.extensions_mut().insert(Caller(user));
                let _ = next.run(req).await;
            }
        }
        if let Some(delay) = f.delay {
            tokio::time::sleep(delay).await;
        }
        let status = StatusCode::from_u16(f.status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
        let mut r = (
            status,
            axum::Json(json!({"detail": format!("injected fault {}", f.status)})),
        )
            .into_response();
        if let Some(secs) = f.retry_after_secs {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        r
    } else {
        let token = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::to_owned);
        let user = token.and_then(|t| {
            let d = lock(&db);
            d.users
                .get(&t)
                .cloned()
                .or_else(|| jwt_user(&t, &d.trusted_issuers))
        });
        match user {
            Some(user) => {
                req.extensions_mut().insert(Caller(user));
                next.run(req).await
            }
            None => {
                let mut r = (
                    StatusCode::UNAUTHORIZED,
                    axum::Json(json!({"detail": "Missing or invalid Authorization header. Expected: Bearer <token>"})),
                )
                    .into_response();
                r.headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                r
            }
        }
    };
    lock(&db).log.push(Logged {
        method,
        path,
        status: response.status().as_u16(),
    });
    response
}

/// The user of an unexpired JWT from a trusted issuer.
fn jwt_user(token: &str, trusted: &BTreeMap<String, User>) -> Option<User> {
    let claims = registrar_core::refresh::jwt_claims(token)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_secs();
    let user = trusted.get(claims["iss"].as_str()?)?;
    (claims["exp"].as_u64()? > now).then(|| user.clone())
}

pub(crate) fn reply(status: StatusCode, body: Value) -> Response {
    (status, axum::Json(body)).into_response()
}

/// A pydantic-style 422.
pub(crate) fn unprocessable(kind: &str, field: &str, msg: &str) -> Response {
    reply(
        StatusCode::UNPROCESSABLE_ENTITY,
        json!({"detail": [{"type": kind, "loc": ["body", field], "msg": msg, "input": null}]}),
    )
}

/// `limit` (1..=2000) and `offset` of a list call.
pub(crate) fn page(q: &BTreeMap<String, String>) -> Result<(usize, usize), Response> {
    let limit = q
        .get("limit")
        .map_or(Ok(100), |l| l.parse::<usize>())
        .unwrap_or(0);
    if !(1..=2000).contains(&limit) {
        return Err(reply(
            StatusCode::UNPROCESSABLE_ENTITY,
            json!({"detail": [{"type": "less_than_equal", "loc": ["query", "limit"], "msg": "Input should be less than or equal to 2000"}]}),
        ));
    }
    let offset = q.get("offset").and_then(|o| o.parse().ok()).unwrap_or(0);
    Ok((limit, offset))
}

pub(crate) fn now_iso() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    format!("{secs:.3}")
}

/// `true`/`True`/`1`/`on` (Python's form bool parsing).
pub(crate) fn truthy(v: &str) -> bool {
    matches!(v.to_ascii_lowercase().as_str(), "true" | "1" | "yes" | "on")
}
