//! The MCP Gateway Registry over HTTP, with the exact encodings of `registry-contract.md` §2:
//! form bodies for server register/toggle/remove, JSON for agents and the auth credential.

pub mod token;

use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use registrar_core::desired::{Collection, DesiredEntry, EntryBody, Pointing, ServerFields};
use registrar_core::naming::{is_slug_path, quote_all};
use registrar_core::outbound::{OutboundUrlError, check_outbound_url};
use registrar_core::plan::CurrentEntry;
use registrar_core::ports::Registry;
use registrar_core::{ErrorClass, PortError};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use secrecy::ExposeSecret;
use serde_json::{Map, Value};

use self::token::TokenSource;
use crate::net::http;

const PEER: &str = "registry";
/// The registry's largest page (`limit` above it is a 422).
const PAGE: usize = 2000;

/// Why a registry URL is refused. The URL is shown with any user info replaced by `***`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryUrlError {
    /// Not an absolute http(s) URL with a host, or it carries `user:password@`.
    #[error("registry URL {0:?} is not an http(s) URL with a host and without user:password@")]
    Malformed(String),
    /// Plain HTTP to a non-loopback host would send the ingress token in clear text.
    #[error(
        "registry URL {0} uses plain http to a non-loopback host; use https, or pass --allow-insecure-registry"
    )]
    Insecure(String),
}

/// Checks the registry base URL with [`check_outbound_url`]: https, or http to a host that is
/// loopback as parsed (so `http://localhost:80@evil.example/` is refused), or http explicitly
/// allowed; never user info. Returns the URL without trailing `/`.
pub fn check_registry_url(url: &str, allow_insecure: bool) -> Result<String, RegistryUrlError> {
    match check_outbound_url(url, allow_insecure) {
        // Paths are appended to the base: a query or fragment would swallow them.
        Ok(u) if u.query().is_some() || u.fragment().is_some() => {
            Err(RegistryUrlError::Malformed(url.into()))
        }
        // As parsed: the host we checked is the host we call.
        Ok(u) => Ok(u.as_str().trim_end_matches('/').to_owned()),
        Err(e @ OutboundUrlError::Insecure(_)) => Err(RegistryUrlError::Insecure(e.url().into())),
        Err(e @ OutboundUrlError::Malformed(_)) => Err(RegistryUrlError::Malformed(e.url().into())),
    }
}

/// How transient failures are retried.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub attempts: usize,
    pub min_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 4,
            min_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(10),
        }
    }
}

/// A failed call, with the server's Retry-After when it sent one.
#[derive(Debug)]
struct Failure {
    error: PortError,
    retry_after: Option<Duration>,
    /// An earlier attempt of the same call got no answer, or a 5xx: it may have been carried
    /// out all the same (a registration answered 409 on its retry may be that attempt's).
    after_unanswered: bool,
}

/// The registry client: one connection pool, the ingress token from its file.
#[derive(Debug)]
pub struct RegistryClient {
    http: reqwest::Client,
    base: String,
    token: TokenSource,
    retry: RetryPolicy,
}

impl RegistryClient {
    /// `base` must have passed [`check_registry_url`].
    pub fn new(
        base: String,
        token: TokenSource,
        timeout: Duration,
        retry: RetryPolicy,
    ) -> Result<Self, PortError> {
        // No redirects: one could carry the bearer token or a credential body elsewhere.
        let http = http::client_builder(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .user_agent(concat!("agentcore-registrar/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| http::client_error(PEER, e))?;
        Ok(Self {
            http,
            base,
            token,
            retry,
        })
    }

    /// Sends one request, retrying transient failures with backoff (honouring Retry-After).
    async fn call(
        &self,
        operation: &str,
        build: impl Fn(&reqwest::Client) -> RequestBuilder,
        ok: &[StatusCode],
    ) -> Result<Response, Failure> {
        let unanswered = std::sync::atomic::AtomicBool::new(false);
        let attempt = || async {
            let token = self.token.get().await.map_err(|error| Failure {
                error,
                retry_after: None,
                after_unanswered: false,
            })?;
            let sent = build(&self.http)
                .bearer_auth(token.expose_secret())
                .send()
                .await;
            let earlier = unanswered.load(std::sync::atomic::Ordering::Relaxed);
            let response = sent.map_err(|e| {
                unanswered.store(true, std::sync::atomic::Ordering::Relaxed);
                Failure {
                    error: http::transport_error(PEER, operation, e),
                    retry_after: None,
                    after_unanswered: earlier,
                }
            })?;
            if response.status().is_server_error() {
                unanswered.store(true, std::sync::atomic::Ordering::Relaxed);
            }
            if ok.contains(&response.status()) {
                Ok(response)
            } else if response.status() == StatusCode::UNAUTHORIZED && self.token.invalidate().await
            {
                // A renewable token was refused (revoked, or expired early): fetch a new one.
                let mut f = failure(operation, response).await;
                f.error.class = ErrorClass::Transient;
                Err(f)
            } else {
                let mut f = failure(operation, response).await;
                f.after_unanswered = earlier;
                Err(f)
            }
        };
        let backoff = ExponentialBuilder::default()
            .with_min_delay(self.retry.min_delay)
            .with_max_delay(self.retry.max_delay)
            .with_max_times(self.retry.attempts.saturating_sub(1))
            .with_jitter();
        attempt
            .retry(backoff)
            .when(|f: &Failure| f.error.is_transient())
            .adjust(|f: &Failure, planned| retry_delay(planned, f.retry_after, self.retry.max_delay))
            .notify(|f: &Failure, after| {
                tracing::warn!(operation, error = %f.error, retry_in_ms = after.as_millis() as u64, "Registry call failed; retrying.");
            })
            .await
    }

    /// Obtains the ingress token once (read the file, or ask the registry's IdP): a start-up
    /// check, so a wrong client secret stops the worker with one clear line.
    pub async fn check_token(&self) -> Result<(), PortError> {
        self.token.get().await.map(drop)
    }

    fn url(&self, rest: &str) -> String {
        format!("{}{rest}", self.base)
    }

    /// One page: the entries we may address, how many items the page held (the next offset
    /// counts those, addressable or not), and whether more follow.
    async fn list_page(
        &self,
        collection: Collection,
        offset: usize,
    ) -> Result<(Vec<CurrentEntry>, usize, bool), PortError> {
        let (route, key) = match collection {
            Collection::Server => ("/api/servers", "servers"),
            Collection::Agent => ("/api/agents", "agents"),
        };
        let url = self.url(route);
        let query = [("limit", PAGE.to_string()), ("offset", offset.to_string())];
        let op = format!("list {key}");
        let response = self
            .call(&op, |c| c.get(&url).query(&query), &[StatusCode::OK])
            .await
            .map_err(|f| f.error)?;
        let body: Value = json_body(&op, response).await?;
        let items = body.get(key).and_then(Value::as_array).ok_or_else(|| {
            PortError::new(
                PEER,
                &op,
                ErrorClass::Transient,
                format!("response has no `{key}` array"),
            )
        })?;
        Ok((
            addressable_entries(collection, items),
            items.len(),
            body.get("has_next")
                .and_then(Value::as_bool)
                .unwrap_or(false),
        ))
    }
}

/// The wait before the next attempt: the server's Retry-After when it sent one (capped at
/// `max`), else the backoff's own; `None` when the backoff gave up.
fn retry_delay(
    planned: Option<Duration>,
    retry_after: Option<Duration>,
    max: Duration,
) -> Option<Duration> {
    planned.map(|p| retry_after.map_or(p, |ra| ra.min(max)))
}

/// Turns an unexpected response into a classified error carrying the registry's own message.
async fn failure(operation: &str, response: Response) -> Failure {
    let status = response.status();
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let text = response.text().await.unwrap_or_default();
    let class = match status {
        StatusCode::CONFLICT => ErrorClass::Conflict,
        s if http::is_transient_status(s) => ErrorClass::Transient,
        _ => ErrorClass::Terminal,
    };
    let message = format!("HTTP {}: {}", status.as_u16(), registry_message(&text));
    Failure {
        error: PortError::new(PEER, operation, class, message),
        retry_after,
        after_unanswered: false,
    }
}

/// The registry's error text: `detail` (string or validation list), `error` + `reason`, or
/// the start of the body (nginx answers with HTML).
fn registry_message(body: &str) -> String {
    let Ok(json) = serde_json::from_str::<Value>(body) else {
        let flat: String = body.split_whitespace().collect::<Vec<_>>().join(" ");
        return flat.chars().take(200).collect();
    };
    let str_of = |k: &str| json.get(k).and_then(Value::as_str);
    match (json.get("detail"), str_of("error"), str_of("reason")) {
        (Some(Value::String(d)), _, _) => d.clone(),
        (Some(Value::Array(items)), _, _) => items
            .iter()
            .map(|i| {
                let loc = i.get("loc").map(|l| l.to_string()).unwrap_or_default();
                let msg = i.get("msg").and_then(Value::as_str).unwrap_or("invalid");
                format!("{loc}: {msg}")
            })
            .collect::<Vec<_>>()
            .join("; "),
        (_, Some(e), Some(r)) => format!("{e}: {r}"),
        (_, Some(e), None) => e.to_owned(),
        _ => json.to_string().chars().take(200).collect(),
    }
}

async fn json_body(operation: &str, response: Response) -> Result<Value, PortError> {
    response.json().await.map_err(|e| {
        PortError::new(
            PEER,
            operation,
            ErrorClass::Transient,
            format!("unreadable JSON: {e}"),
        )
        .with_source(e)
    })
}

/// Reads a server or agent document from a list item or a GET.
fn entry_from_json(collection: Collection, v: &Value) -> Option<CurrentEntry> {
    let path = v.get("path").and_then(Value::as_str)?.to_owned();
    let name = ["server_name", "display_name", "name"]
        .iter()
        .find_map(|k| v.get(*k).and_then(Value::as_str))
        .unwrap_or_default()
        .to_owned();
    let tags = match v.get("tags") {
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        Some(Value::String(s)) => s
            .split(',')
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty())
            .collect(),
        _ => Vec::new(),
    };
    let metadata: Map<String, Value> = match v.get("metadata") {
        Some(Value::Object(m)) => m.clone(),
        Some(Value::String(s)) => serde_json::from_str(s).unwrap_or_default(),
        _ => Map::new(),
    };
    Some(CurrentEntry {
        collection,
        path,
        name,
        metadata,
        tags,
        enabled: v
            .get("is_enabled")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        status: v.get("status").and_then(Value::as_str).map(str::to_owned),
        pointing: match collection {
            Collection::Server => v.get("proxy_pass_url"),
            Collection::Agent => v.get("url"),
        }
        .and_then(Value::as_str)
        .map(|url| {
            Pointing::new(
                url,
                match collection {
                    Collection::Server => v.get("auth_scheme").and_then(Value::as_str),
                    Collection::Agent => None,
                },
            )
        }),
        registered_by: v
            .get("registered_by")
            .and_then(Value::as_str)
            .map(str::to_owned),
        mcp_endpoint: match collection {
            Collection::Server => v
                .get("mcp_endpoint")
                .and_then(Value::as_str)
                .filter(|m| !m.is_empty())
                .map(|m| m.trim().trim_end_matches('/').to_owned()),
            Collection::Agent => None,
        },
    })
}

/// The form of `POST /api/servers/register`.
fn server_form(path: &str, s: &ServerFields, overwrite: bool) -> Vec<(&'static str, String)> {
    vec![
        ("path", path.to_owned()),
        ("name", s.name.clone()),
        ("description", s.description.clone()),
        ("proxy_pass_url", s.proxy_pass_url.clone()),
        ("mcp_endpoint", s.mcp_endpoint.clone()),
        ("auth_provider", s.auth_provider.clone()),
        ("auth_scheme", s.auth_scheme.clone()),
        ("supported_transports", s.supported_transports.clone()),
        ("tags", s.tags.join(",")),
        ("visibility", s.visibility.clone()),
        ("metadata", Value::Object(s.metadata.clone()).to_string()),
        // Python bool spelling, as the registry's form parser and the Python tool use it.
        (
            "overwrite",
            if overwrite { "True" } else { "False" }.to_owned(),
        ),
    ]
}

/// The listed entries whose path is in our slug grammar. The others were never written by us
/// (our paths are slugs) and are never addressed by us: not read, changed, enabled or deleted,
/// whatever their metadata claims, so the planner never sees them.
fn addressable_entries(collection: Collection, items: &[Value]) -> Vec<CurrentEntry> {
    items
        .iter()
        .filter_map(|v| entry_from_json(collection, v))
        .filter(|e| {
            let ours = is_slug_path(&e.path);
            if !ours {
                tracing::debug!(collection = collection.as_str(), path = ?e.path, "Listed entry outside the slug grammar; ignored.");
            }
            ours
        })
        .collect()
}

/// Refuses a path outside our slug grammar ([`is_slug_path`]): we derive only slugs, so any
/// other path was written by someone else and is never addressed, in a URL or a form.
fn addressable(operation: &str, path: &str) -> Result<(), PortError> {
    if is_slug_path(path) {
        Ok(())
    } else {
        let shown: String = path.chars().take(100).collect();
        Err(PortError::new(
            PEER,
            operation,
            ErrorClass::Terminal,
            format!("refusing to address registry path {shown:?}: not a path we derive (/<slug>)"),
        ))
    }
}

/// `/x` -> `x`, for the registry's `<route>/<path>` URLs: the path without its leading slash,
/// each segment percent-encoded (every byte outside `A-Za-z0-9_.-~`), `/` kept between
/// segments. Refused unless [`addressable`].
fn bare(operation: &str, path: &str) -> Result<String, PortError> {
    addressable(operation, path)?;
    Ok(path
        .trim_start_matches('/')
        .split('/')
        .map(quote_all)
        .collect::<Vec<_>>()
        .join("/"))
}

impl Registry for RegistryClient {
    async fn list(&self, collection: Collection) -> Result<Vec<CurrentEntry>, PortError> {
        let mut all = Vec::new();
        let mut offset = 0;
        loop {
            let (page, items, has_next) = self.list_page(collection, offset).await?;
            offset += items;
            all.extend(page);
            if !has_next || items == 0 {
                return Ok(all);
            }
        }
    }

    async fn get(
        &self,
        collection: Collection,
        path: &str,
    ) -> Result<Option<CurrentEntry>, PortError> {
        let (route, op) = match collection {
            Collection::Server => ("/api/servers/", "get server"),
            Collection::Agent => ("/api/agents/", "get agent"),
        };
        let url = self.url(&format!("{route}{}", bare(op, path)?));
        let response = self
            .call(
                op,
                |c| c.get(&url),
                &[StatusCode::OK, StatusCode::NOT_FOUND],
            )
            .await
            .map_err(|f| f.error)?;
        if response.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let body = json_body(op, response).await?;
        match entry_from_json(collection, &body) {
            // The registry answers for the path asked or not at all: an entry at another path
            // is never taken for this one (nor addressed).
            Some(entry) if entry.path != path => Err(PortError::new(
                PEER,
                op,
                ErrorClass::Terminal,
                format!(
                    "asked for {path}, the registry answered with an entry at {:?}",
                    entry.path.chars().take(100).collect::<String>()
                ),
            )),
            other => Ok(other),
        }
    }

    async fn register(&self, d: &DesiredEntry) -> Result<(), PortError> {
        addressable("register", &d.path)?;
        let result = match &d.body {
            EntryBody::Server(s) => {
                let url = self.url("/api/servers/register");
                let form = server_form(&d.path, s, false);
                self.call(
                    "register server",
                    |c| c.post(&url).form(&form),
                    &[StatusCode::CREATED, StatusCode::OK],
                )
                .await
            }
            EntryBody::Agent(a) => {
                let url = self.url("/api/agents/register");
                self.call(
                    "register agent",
                    |c| c.post(&url).json(a),
                    &[StatusCode::CREATED, StatusCode::OK],
                )
                .await
            }
        };
        match result {
            Ok(_) => Ok(()),
            // The retry of an attempt whose answer was lost meets that attempt's entry: it is
            // this registration when it carries this resource's ARN and this very fingerprint
            // (a registration reported as a conflict would never be enabled).
            Err(f) if f.error.class == ErrorClass::Conflict && f.after_unanswered => {
                match self.get(d.collection(), &d.path).await? {
                    Some(e)
                        if e.fingerprint() == Some(d.fingerprint.as_str())
                            && matches!(e.owner(false), registrar_core::identity::Owner::Us(r) if r.arn == d.resource.arn) =>
                    {
                        tracing::info!(path = %d.path, "A registration whose answer was lost had landed; its retry found it.");
                        Ok(())
                    }
                    _ => Err(f.error),
                }
            }
            Err(f) => Err(f.error),
        }
    }

    async fn update(&self, d: &DesiredEntry, current: &CurrentEntry) -> Result<(), PortError> {
        addressable("update", &d.path)?;
        let result = match &d.body {
            EntryBody::Server(s) => {
                let url = self.url("/api/servers/register");
                let form = server_form(&d.path, s, true);
                self.call(
                    "update server",
                    |c| c.post(&url).form(&form),
                    &[StatusCode::CREATED, StatusCode::OK],
                )
                .await
            }
            EntryBody::Agent(a) => {
                // A PUT resets `status` to draft unless it is sent: keep the operator's value.
                let mut body = serde_json::to_value(a).unwrap_or_default();
                if let (Some(status), Some(obj)) = (&current.status, body.as_object_mut()) {
                    obj.insert("status".into(), Value::String(status.clone()));
                }
                let url = self.url(&format!("/api/agents/{}", bare("update agent", &d.path)?));
                self.call(
                    "update agent",
                    |c| c.request(Method::PUT, &url).json(&body),
                    &[StatusCode::OK],
                )
                .await
            }
        };
        result.map(drop).map_err(|f| f.error)
    }

    async fn set_enabled(
        &self,
        collection: Collection,
        path: &str,
        enabled: bool,
    ) -> Result<(), PortError> {
        addressable("toggle", path)?;
        let result = match collection {
            Collection::Server => {
                let url = self.url("/api/servers/toggle");
                let form = [
                    ("path", path.to_owned()),
                    ("new_state", enabled.to_string()),
                ];
                self.call(
                    "toggle server",
                    |c| c.post(&url).form(&form),
                    &[StatusCode::OK],
                )
                .await
            }
            Collection::Agent => {
                let url = self.url(&format!(
                    "/api/agents/{}/toggle",
                    bare("toggle agent", path)?
                ));
                let query = [("enabled", enabled.to_string())];
                self.call(
                    "toggle agent",
                    |c| c.post(&url).query(&query),
                    &[StatusCode::OK],
                )
                .await
            }
        };
        result.map(drop).map_err(|f| f.error)
    }

    async fn remove(&self, collection: Collection, path: &str) -> Result<(), PortError> {
        addressable("remove", path)?;
        // 404 means it is already gone: removal is idempotent.
        let result = match collection {
            Collection::Server => {
                let url = self.url("/api/servers/remove");
                let form = [("path", path.to_owned())];
                self.call(
                    "remove server",
                    |c| c.post(&url).form(&form),
                    &[StatusCode::OK, StatusCode::NOT_FOUND],
                )
                .await
            }
            Collection::Agent => {
                let url = self.url(&format!("/api/agents/{}", bare("delete agent", path)?));
                self.call(
                    "delete agent",
                    |c| c.delete(&url),
                    &[
                        StatusCode::NO_CONTENT,
                        StatusCode::OK,
                        StatusCode::NOT_FOUND,
                    ],
                )
                .await
            }
        };
        result.map(drop).map_err(|f| f.error)
    }

    async fn set_credential(&self, path: &str, bearer: Option<&str>) -> Result<(), PortError> {
        let url = self.url(&format!(
            "/api/servers/{}/auth-credential",
            bare("set auth credential", path)?
        ));
        let body = match bearer {
            Some(token) => serde_json::json!({"auth_scheme": "bearer", "auth_credential": token}),
            None => serde_json::json!({"auth_scheme": "none"}),
        };
        self.call(
            "set auth credential",
            |c| c.patch(&url).json(&body),
            &[StatusCode::OK],
        )
        .await
        .map(drop)
        .map_err(|f| f.error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_replaces_the_backoff_delay_within_the_cap() {
        let ms = Duration::from_millis;
        assert_eq!(
            retry_delay(Some(ms(200)), Some(ms(3000)), ms(10_000)),
            Some(ms(3000))
        );
        assert_eq!(
            retry_delay(Some(ms(200)), Some(ms(60_000)), ms(10_000)),
            Some(ms(10_000))
        );
        assert_eq!(retry_delay(Some(ms(200)), None, ms(10_000)), Some(ms(200)));
        assert_eq!(
            retry_delay(None, Some(ms(1000)), ms(10_000)),
            None,
            "out of attempts"
        );
    }

    #[test]
    fn plain_http_is_refused_unless_loopback_or_allowed() {
        assert!(check_registry_url("https://registry.example.com/", false).is_ok());
        assert!(check_registry_url("http://127.0.0.1:8080", false).is_ok());
        assert!(check_registry_url("http://localhost", false).is_ok());
        assert!(check_registry_url("http://[::1]:80", false).is_ok());
        assert_eq!(
            check_registry_url("http://registry.example.com", false),
            Err(RegistryUrlError::Insecure(
                "http://registry.example.com".into()
            ))
        );
        assert!(check_registry_url("http://registry.example.com", true).is_ok());
        assert!(matches!(
            check_registry_url("registry.example.com", false),
            Err(RegistryUrlError::Malformed(_))
        ));
        assert!(matches!(
            check_registry_url("ftp://x", false),
            Err(RegistryUrlError::Malformed(_))
        ));
        for swallowing in ["https://r.example/?x=1", "https://r.example/#frag"] {
            assert!(
                matches!(
                    check_registry_url(swallowing, false),
                    Err(RegistryUrlError::Malformed(_))
                ),
                "{swallowing}"
            );
        }
        assert_eq!(
            check_registry_url("https://Registry.Example.com:443/base/", false),
            Ok("https://registry.example.com/base".to_owned())
        );
    }

    #[test]
    fn a_registry_url_is_loopback_only_as_parsed_and_never_carries_user_info() {
        for hostile in [
            "http://localhost:80@evil.example/",
            "http://127.0.0.1:8080@evil.example",
            "https://user:pw@registry.example.com/",
        ] {
            let err = check_registry_url(hostile, false).expect_err(hostile);
            assert!(
                matches!(err, RegistryUrlError::Malformed(_)),
                "{hostile}: {err}"
            );
            assert!(
                !err.to_string().contains("pw@") && !err.to_string().contains("localhost:80@"),
                "user info is never shown: {err}"
            );
            assert!(check_registry_url(hostile, true).is_err(), "{hostile}");
        }
        for hostile in [
            "http://127.0.0.1.evil.example/",
            "http://localhost.evil.example",
            "http://[::2]:80",
        ] {
            assert_eq!(
                check_registry_url(hostile, false),
                Err(RegistryUrlError::Insecure(hostile.into())),
                "{hostile}"
            );
        }
        let err = check_registry_url("http://127.0.0.1.evil.example/", false).expect_err("refused");
        assert!(
            err.to_string().contains("--allow-insecure-registry"),
            "{err}"
        );
        assert_eq!(
            check_registry_url("http://[::1]:8080/", false).as_deref(),
            Ok("http://[::1]:8080")
        );
    }

    #[test]
    fn only_slug_paths_are_addressed_and_they_are_percent_encoded() {
        assert_eq!(bare("get", "/geo-mcp").as_deref(), Ok("geo-mcp"));
        for hostile in [
            "/Weird Path_1",
            "/a/../b",
            "/..",
            "/api/servers",
            "/x?y=1",
            "/x#y",
            "/%2e%2e",
            "",
            "/",
        ] {
            let err = bare("delete agent", hostile).expect_err(hostile);
            assert_eq!(err.class, ErrorClass::Terminal);
            assert!(err.message.contains("refusing to address"), "{err}");
            assert!(addressable("remove", hostile).is_err(), "{hostile}");
        }
        // Encoding is the second line of defence: what it would do with a hostile segment.
        assert_eq!(quote_all("a b/../?#"), "a%20b%2F..%2F%3F%23");
    }

    #[test]
    fn listed_entries_outside_the_slug_grammar_are_dropped() {
        let ours = serde_json::json!({"source": "agentcore-registrar",
            "gateway_arn": "arn:aws:bedrock-agentcore:us-east-1:123456789012:gateway/gw0000001a"});
        let items: Vec<Value> = ["/orders", "/Weird Path_1", "/a/../b", "/orders-docs", "/x/"]
            .iter()
            .map(|p| serde_json::json!({"path": p, "metadata": ours, "tags": []}))
            .collect();
        let kept: Vec<String> = addressable_entries(Collection::Server, &items)
            .into_iter()
            .map(|e| e.path)
            .collect();
        assert_eq!(kept, ["/orders", "/orders-docs"]);
    }

    #[test]
    fn a_server_registration_never_overwrites_and_sends_no_version() {
        let d = registrar_testkit::fixtures::server_entry("orders", "gw-orders");
        let EntryBody::Server(s) = &d.body else {
            panic!("a server entry")
        };
        let form = server_form(&d.path, s, false);
        let field = |k: &str| form.iter().find(|(f, _)| *f == k).map(|(_, v)| v.as_str());
        // The registry's default is overwrite=true; and a `version` other than the stored one
        // would register a new version instead of answering 409 (registry-contract.md §2.2).
        assert_eq!(field("overwrite"), Some("False"));
        assert_eq!(field("version"), None);
        assert_eq!(field("path"), Some(d.path.as_str()));
        let update = server_form(&d.path, s, true);
        assert!(update.contains(&("overwrite", "True".to_owned())));
    }

    #[test]
    fn registry_messages_are_extracted_from_every_error_shape() {
        assert_eq!(
            registry_message(r#"{"detail":"Agent not found at path '/x'"}"#),
            "Agent not found at path '/x'"
        );
        assert_eq!(
            registry_message(
                r#"{"error":"Service registration failed","reason":"A service with path '/x' already exists"}"#
            ),
            "Service registration failed: A service with path '/x' already exists"
        );
        assert_eq!(
            registry_message(
                r#"{"detail":[{"type":"missing","loc":["body","description"],"msg":"Field required"}]}"#
            ),
            r#"["body","description"]: Field required"#
        );
        assert_eq!(
            registry_message("<html>\n<h1>500 Internal</h1></html>"),
            "<html> <h1>500 Internal</h1></html>"
        );
    }
}
