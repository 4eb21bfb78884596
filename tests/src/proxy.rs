//! A loopback HTTP proxy for what the real local peers cannot do by themselves: network latency
//! (benchmarks model a real network with it), throttling of AWS calls for a stretch (the soak),
//! and a record of every request (to count calls by service and to replay them one by one, the
//! sequential baseline of the benchmark).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// One request as it passed through.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: Method,
    /// Path and query.
    pub uri: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// `dynamodb`, `sqs`, `bedrock-agentcore`, `sts`, ... (from the SigV4 scope), or `registry`.
    pub service: String,
    /// When it arrived.
    pub at: Instant,
    /// The answer's body, when [`Proxy::record_answers`] asked for it (and it has come).
    pub answer: Option<Bytes>,
    /// When that answer came back from upstream (a long poll's arrival says little).
    pub answered_at: Option<Instant>,
}

/// What the proxy does to the requests it forwards.
#[derive(Debug, Default)]
pub struct Controls {
    /// Added before every forwarded request (a round trip of a real network).
    pub latency: Duration,
    /// Until then, requests of `throttled_service` are answered with ThrottlingException.
    pub throttle_until: Option<Instant>,
    pub throttled_service: String,
    /// Report AgentCore resources that are UPDATING as READY (moto never finishes an update;
    /// AWS does within minutes).
    pub complete_updates: bool,
    /// Report READY gateway targets with this status instead (moto never produces
    /// `*_PENDING_AUTH`, which needs an administrator's OAuth consent in AWS).
    pub target_status: Option<String>,
    /// Requests answered with AccessDeniedException instead of being forwarded (moto never
    /// denies anything).
    pub denied: Vec<Denial>,
    /// While set, registry writes (anything but GET) wait here before they are forwarded.
    pub hold_registry_writes: Option<Arc<tokio::sync::Semaphore>>,
    /// Registry writes that have arrived while held (forwarded or still waiting).
    pub held_writes: u64,
    /// Keep every request (for a replay).
    pub record: bool,
    pub recorded: Vec<Recorded>,
    /// Keep the answers of recorded requests too (DynamoDB's say how many items were read).
    pub record_answers: bool,
    /// Bumped by every [`Proxy::record`] and [`Proxy::take_recorded`], so an answer that
    /// arrives later is not put beside another request.
    pub generation: u64,
    /// Requests forwarded, by service.
    pub forwarded: BTreeMap<String, u64>,
    /// Requests answered with a throttling error.
    pub throttled: u64,
}

/// A call the proxy refuses as IAM would: `service` (from the SigV4 scope), the HTTP method and
/// the request path (query and trailing `/` ignored), and for JSON protocols (every call a POST
/// to `/`) the operation `X-Amz-Target` names; answered 403 AccessDeniedException naming
/// `action` the way AWS words it.
#[derive(Debug, Clone)]
pub struct Denial {
    pub service: String,
    pub method: Method,
    pub path: String,
    pub operation: Option<String>,
    pub action: String,
}

impl Denial {
    fn refuses(&self, service: &str, parts: &axum::http::request::Parts) -> bool {
        let operation = || {
            parts
                .headers
                .get("x-amz-target")
                .and_then(|v| v.to_str().ok())
                .and_then(|t| t.rsplit('.').next())
        };
        self.service == service
            && self.method == parts.method
            && self.path == parts.uri.path().trim_end_matches('/')
            && self
                .operation
                .as_deref()
                .is_none_or(|o| operation() == Some(o))
    }
}

#[derive(Debug, Clone)]
struct Shared {
    upstream: String,
    client: reqwest::Client,
    controls: Arc<Mutex<Controls>>,
}

/// A running proxy; stopped when dropped.
#[derive(Debug)]
pub struct Proxy {
    addr: SocketAddr,
    controls: Arc<Mutex<Controls>>,
    stop: Option<oneshot::Sender<()>>,
}

fn lock(m: &Mutex<Controls>) -> MutexGuard<'_, Controls> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The service a request is for: the SigV4 credential scope names it; unsigned requests are
/// the registry's.
fn service_of(headers: &HeaderMap) -> String {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|auth| auth.split("Credential=").nth(1))
        .and_then(|cred| cred.split('/').nth(3))
        .map_or_else(|| "registry".to_owned(), str::to_owned)
}

impl Proxy {
    /// Starts a proxy on a free loopback port in front of `upstream` (`http://127.0.0.1:port`).
    pub async fn start(upstream: &str) -> anyhow::Result<Self> {
        let controls = Arc::new(Mutex::new(Controls::default()));
        let shared = Shared {
            upstream: upstream.trim_end_matches('/').to_owned(),
            client: reqwest::Client::builder()
                .pool_max_idle_per_host(64)
                .build()?,
            controls: Arc::clone(&controls),
        };
        let app = Router::new().fallback(forward).with_state(shared);
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
        });
        Ok(Self {
            addr,
            controls,
            stop: Some(stop),
        })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn controls(&self) -> MutexGuard<'_, Controls> {
        lock(&self.controls)
    }

    pub fn set_latency(&self, latency: Duration) {
        self.controls().latency = latency;
    }

    /// Answers requests of `service` (e.g. `bedrock-agentcore`) with ThrottlingException for
    /// `stretch`.
    pub fn throttle(&self, service: &str, stretch: Duration) {
        let mut c = self.controls();
        c.throttled_service = service.to_owned();
        c.throttle_until = Some(Instant::now() + stretch);
    }

    /// Answers `method path` requests of `service` with AccessDeniedException for `action`.
    pub fn deny(&self, service: &str, method: Method, path: &str, action: &str) {
        self.controls().denied.push(Denial {
            service: service.to_owned(),
            method,
            path: path.trim_end_matches('/').to_owned(),
            operation: None,
            action: action.to_owned(),
        });
    }

    /// Answers `service`'s JSON-protocol `operation` (`DeleteMessage`, named by X-Amz-Target)
    /// with AccessDeniedException for `action`.
    pub fn deny_operation(&self, service: &str, operation: &str, action: &str) {
        self.controls().denied.push(Denial {
            service: service.to_owned(),
            method: Method::POST,
            path: String::new(),
            operation: Some(operation.to_owned()),
            action: action.to_owned(),
        });
    }

    /// Holds registry writes (anything but GET) until [`Proxy::release_registry_writes`]; the
    /// requests are taken in and forwarded later, as a network that stalls would.
    pub fn hold_registry_writes(&self) {
        let mut c = self.controls();
        c.hold_registry_writes = Some(Arc::new(tokio::sync::Semaphore::new(0)));
        c.held_writes = 0;
    }

    /// Forwards the held registry writes and stops holding.
    pub fn release_registry_writes(&self) {
        if let Some(gate) = self.controls().hold_registry_writes.take() {
            gate.add_permits(tokio::sync::Semaphore::MAX_PERMITS / 2);
        }
    }

    /// Registry writes that arrived while held.
    pub fn held_writes(&self) -> u64 {
        self.controls().held_writes
    }

    /// Starts recording (clearing what was recorded and counted before).
    pub fn record(&self) {
        let mut c = self.controls();
        c.record = true;
        c.generation += 1;
        c.recorded.clear();
        c.forwarded.clear();
    }

    /// Records the answers of recorded requests as well ([`Recorded::answer`]).
    pub fn record_answers(&self) {
        self.controls().record_answers = true;
    }

    /// Stops recording and hands over what was recorded.
    pub fn take_recorded(&self) -> Vec<Recorded> {
        let mut c = self.controls();
        c.record = false;
        c.generation += 1;
        std::mem::take(&mut c.recorded)
    }

    /// Requests forwarded so far, by service.
    pub fn forwarded(&self) -> BTreeMap<String, u64> {
        self.controls().forwarded.clone()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn access_denied(action: &str) -> Response {
    let message = format!(
        "User: arn:aws:sts::123456789012:assumed-role/operator/doctor is not authorized to perform: {action} on resource: * because no identity-based policy allows the {action} action"
    );
    (
        StatusCode::FORBIDDEN,
        [
            ("x-amzn-errortype", "AccessDeniedException"),
            ("content-type", "application/json"),
        ],
        serde_json::json!({ "message": message }).to_string(),
    )
        .into_response()
}

fn throttling() -> Response {
    (
        StatusCode::BAD_REQUEST,
        [
            ("x-amzn-errortype", "ThrottlingException"),
            ("content-type", "application/json"),
        ],
        r#"{"message":"Rate exceeded"}"#,
    )
        .into_response()
}

async fn forward(State(shared): State<Shared>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let Ok(body) = axum::body::to_bytes(body, 64 << 20).await else {
        return StatusCode::PAYLOAD_TOO_LARGE.into_response();
    };
    let uri = parts
        .uri
        .path_and_query()
        .map_or_else(|| "/".to_owned(), ToString::to_string);
    let service = service_of(&parts.headers);
    let (latency, complete_updates, target_status, hold, slot) = {
        let mut c = lock(&shared.controls);
        if c.throttle_until.is_some_and(|t| Instant::now() < t) && c.throttled_service == service {
            c.throttled += 1;
            drop(c);
            return throttling();
        }
        if let Some(d) = c.denied.iter().find(|d| d.refuses(&service, &parts)) {
            let action = d.action.clone();
            drop(c);
            return access_denied(&action);
        }
        *c.forwarded.entry(service.clone()).or_default() += 1;
        let mut slot = None;
        if c.record {
            if c.record_answers {
                slot = Some((c.generation, c.recorded.len()));
            }
            c.recorded.push(Recorded {
                method: parts.method.clone(),
                uri: uri.clone(),
                headers: parts.headers.clone(),
                body: body.clone(),
                service: service.clone(),
                at: Instant::now(),
                answer: None,
                answered_at: None,
            });
        }
        let hold = c
            .hold_registry_writes
            .clone()
            .filter(|_| service == "registry" && parts.method != Method::GET);
        if hold.is_some() {
            c.held_writes += 1;
        }
        (
            c.latency,
            c.complete_updates && service == "bedrock-agentcore",
            c.target_status
                .clone()
                .filter(|_| service == "bedrock-agentcore" && uri.contains("/targets")),
            hold,
            slot,
        )
    };
    if let Some(gate) = hold {
        // Forwarded once released, whether or not the sender is still there.
        let _ = gate.acquire().await;
    }
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    match send(
        &shared.client,
        &shared.upstream,
        &parts.method,
        &uri,
        &parts.headers,
        body,
    )
    .await
    {
        Ok(response) if target_status.is_some() => {
            let status = target_status.unwrap_or_default();
            rewrite(response, |text| {
                text.replace(
                    "\"status\": \"READY\"",
                    &format!("\"status\": \"{status}\""),
                )
                .replace("\"status\":\"READY\"", &format!("\"status\":\"{status}\""))
            })
            .await
        }
        Ok(response) if complete_updates => updates_completed(response).await,
        Ok(response) if slot.is_some() => {
            let (parts, body) = response.into_parts();
            let Ok(bytes) = axum::body::to_bytes(body, 64 << 20).await else {
                return StatusCode::BAD_GATEWAY.into_response();
            };
            let mut c = lock(&shared.controls);
            if let Some((generation, at)) = slot
                && c.generation == generation
                && let Some(r) = c.recorded.get_mut(at)
            {
                r.answer = Some(bytes.clone());
                r.answered_at = Some(Instant::now());
            }
            drop(c);
            Response::from_parts(parts, Body::from(bytes))
        }
        Ok(response) => response,
        Err(e) => (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    }
}

async fn rewrite(response: Response, edit: impl FnOnce(String) -> String) -> Response {
    let (parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, 64 << 20).await else {
        return StatusCode::BAD_GATEWAY.into_response();
    };
    let text = edit(String::from_utf8_lossy(&bytes).into_owned());
    let mut parts = parts;
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(text))
}

async fn updates_completed(response: Response) -> Response {
    let (parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, 64 << 20).await else {
        return StatusCode::BAD_GATEWAY.into_response();
    };
    let text = String::from_utf8_lossy(&bytes)
        .replace("\"status\": \"UPDATING\"", "\"status\": \"READY\"")
        .replace("\"status\":\"UPDATING\"", "\"status\":\"READY\"");
    Response::from_parts(parts, Body::from(text))
}

/// Sends one request upstream and returns its answer (the replay uses it too).
pub async fn send(
    client: &reqwest::Client,
    upstream: &str,
    method: &Method,
    uri: &str,
    headers: &HeaderMap,
    body: Bytes,
) -> anyhow::Result<Response> {
    let mut out = client.request(method.clone(), format!("{upstream}{uri}"));
    for (name, value) in headers {
        if name != "host" && name != "content-length" && name != "connection" {
            out = out.header(name, value);
        }
    }
    let answer = out.body(body).send().await?;
    let status = answer.status();
    let headers = answer.headers().clone();
    let bytes = answer.bytes().await?;
    let mut response = Response::new(Body::from(bytes));
    *response.status_mut() = status;
    for (name, value) in &headers {
        if name != "content-length" && name != "transfer-encoding" && name != "connection" {
            response.headers_mut().insert(name, value.clone());
        }
    }
    Ok(response)
}

/// How many messages each recorded ReceiveMessage answer handed out ([`Proxy::record_answers`]),
/// in order, leaving out the empty ones (a long poll that found nothing).
pub fn messages_per_receive(calls: &[Recorded]) -> Vec<usize> {
    calls
        .iter()
        .filter(|c| {
            c.service == "sqs"
                && c.headers
                    .get("x-amz-target")
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|t| t.ends_with(".ReceiveMessage"))
        })
        .filter_map(|c| c.answer.as_ref())
        .filter_map(|a| serde_json::from_slice::<serde_json::Value>(a).ok())
        .map(|a| a["Messages"].as_array().map_or(0, Vec::len))
        .filter(|n| *n > 0)
        .collect()
}

/// The kinds (`sk`) of the DynamoDB items the recorded calls read, from their answers
/// ([`Proxy::record_answers`]): each item a Query, GetItem or BatchGetItem returned, and `scan`
/// for every Scan.
pub fn dynamodb_items_read(calls: &[Recorded]) -> Vec<String> {
    let mut kinds = Vec::new();
    for c in calls.iter().filter(|c| c.service == "dynamodb") {
        let op = c
            .headers
            .get("x-amz-target")
            .and_then(|v| v.to_str().ok())
            .and_then(|t| t.rsplit('.').next())
            .unwrap_or_default();
        let answer: serde_json::Value = c
            .answer
            .as_ref()
            .and_then(|a| serde_json::from_slice(a).ok())
            .unwrap_or_default();
        let sk = |item: &serde_json::Value| item["sk"]["S"].as_str().unwrap_or("?").to_owned();
        match op {
            "Scan" => kinds.push("scan".to_owned()),
            "Query" => kinds.extend(answer["Items"].as_array().into_iter().flatten().map(sk)),
            "GetItem" if answer.get("Item").is_some() => kinds.push(sk(&answer["Item"])),
            "BatchGetItem" => kinds.extend(
                answer["Responses"]
                    .as_object()
                    .into_iter()
                    .flat_map(|t| t.values())
                    .filter_map(|v| v.as_array())
                    .flatten()
                    .map(sk),
            ),
            _ => {}
        }
    }
    kinds
}
