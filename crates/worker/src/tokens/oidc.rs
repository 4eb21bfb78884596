//! OIDC discovery (fetched once per URL and cached, issuer checked) and the client_credentials
//! grant with the `oauth2` crate, using the client authentication the IdP advertises.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use oauth2::basic::BasicClient;
use oauth2::{AuthType, ClientId, ClientSecret, RequestTokenError, Scope, TokenResponse, TokenUrl};
use registrar_core::refresh::TokenRequest;
use registrar_core::{ErrorClass, PortError};
use serde::Deserialize;
use tokio::time::Instant;

use crate::registry::check_registry_url;

const PEER: &str = "idp";

/// A client secret or token: never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// What the registrar reads from a discovery document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discovery {
    pub issuer: String,
    pub token_endpoint: String,
    pub auth_methods: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct DiscoveryDocument {
    issuer: Option<String>,
    token_endpoint: Option<String>,
    #[serde(default)]
    token_endpoint_auth_methods_supported: Vec<String>,
}

/// A token the IdP issued.
#[derive(Debug, Clone)]
pub struct IssuedToken {
    pub access_token: Secret,
    /// `expires_in` of the token response, when present.
    pub expires_in: Option<u64>,
}

/// The IdP client: one connection pool, a discovery cache.
#[derive(Debug)]
pub struct Oidc {
    http: reqwest::Client,
    cache: Mutex<HashMap<String, (Instant, Arc<Discovery>)>>,
    cache_ttl: Duration,
    allow_insecure: bool,
}

fn err(operation: &str, class: ErrorClass, message: impl Into<String>) -> PortError {
    PortError::new(PEER, operation, class, message)
}

impl Oidc {
    /// `allow_insecure` permits plain-http IdPs beyond loopback (never wise: secrets travel).
    pub fn new(
        timeout: Duration,
        cache_ttl: Duration,
        allow_insecure: bool,
    ) -> Result<Self, PortError> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            // Token endpoints must not redirect credentials elsewhere (oauth2 crate guidance).
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| err("client", ErrorClass::Terminal, e.to_string()))?;
        Ok(Self {
            http,
            cache: Mutex::new(HashMap::new()),
            cache_ttl,
            allow_insecure,
        })
    }

    /// The discovery document at `url`, from the cache when fresh. The issuer must be the URL
    /// without its `/.well-known/...` suffix, and a token endpoint must be present.
    pub async fn discover(&self, url: &str) -> Result<Arc<Discovery>, PortError> {
        if let Some((at, d)) = self
            .cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(url)
            && at.elapsed() < self.cache_ttl
        {
            return Ok(Arc::clone(d));
        }
        let op = "discovery";
        check_registry_url(url, self.allow_insecure)
            .map_err(|e| err(op, ErrorClass::Terminal, format!("discovery URL: {e}")))?;
        let response = self
            .http
            .get(url)
            .send()
            .await
            .map_err(|e| err(op, ErrorClass::Transient, format!("{url}: {e}")))?;
        let status = response.status();
        if !status.is_success() {
            let class = if status.is_server_error() || status.as_u16() == 429 {
                ErrorClass::Transient
            } else {
                ErrorClass::Terminal
            };
            return Err(err(
                op,
                class,
                format!("{url} answered HTTP {}", status.as_u16()),
            ));
        }
        let doc: DiscoveryDocument = response.json().await.map_err(|e| {
            err(
                op,
                ErrorClass::Terminal,
                format!("{url} is not a discovery document: {e}"),
            )
        })?;
        let issuer = doc.issuer.ok_or_else(|| {
            err(
                op,
                ErrorClass::Terminal,
                format!("discovery document at {url} has no issuer"),
            )
        })?;
        let expected_prefix = issuer.trim_end_matches('/');
        let base = url.split("/.well-known/").next().unwrap_or_default();
        if base != expected_prefix {
            return Err(err(
                op,
                ErrorClass::Terminal,
                format!("issuer {issuer} does not match the discovery URL {url}"),
            ));
        }
        let token_endpoint = doc.token_endpoint.ok_or_else(|| {
            err(
                op,
                ErrorClass::Terminal,
                format!("discovery document at {url} has no token_endpoint"),
            )
        })?;
        let discovery = Arc::new(Discovery {
            issuer,
            token_endpoint,
            auth_methods: doc.token_endpoint_auth_methods_supported,
        });
        self.cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(url.to_owned(), (Instant::now(), Arc::clone(&discovery)));
        Ok(discovery)
    }

    /// The client_credentials grant. Client authentication: HTTP Basic when the IdP supports it
    /// (or says nothing), else the secret in the body.
    pub async fn client_credentials(
        &self,
        discovery: &Discovery,
        client_id: &str,
        secret: &Secret,
        request: &TokenRequest,
    ) -> Result<IssuedToken, PortError> {
        let op = "client_credentials";
        let methods = &discovery.auth_methods;
        let auth = if methods.is_empty() || methods.iter().any(|m| m == "client_secret_basic") {
            AuthType::BasicAuth
        } else {
            AuthType::RequestBody
        };
        let token_url = TokenUrl::new(discovery.token_endpoint.clone()).map_err(|e| {
            err(
                op,
                ErrorClass::Terminal,
                format!("token endpoint {}: {e}", discovery.token_endpoint),
            )
        })?;
        let client = BasicClient::new(ClientId::new(client_id.to_owned()))
            .set_client_secret(ClientSecret::new(secret.0.clone()))
            .set_token_uri(token_url)
            .set_auth_type(auth);
        let mut grant = client.exchange_client_credentials();
        if let Some(scope) = &request.scope {
            grant = grant.add_scopes(scope.split_whitespace().map(|s| Scope::new(s.to_owned())));
        }
        if let Some(audience) = &request.audience {
            grant = grant.add_extra_param("audience", audience.clone());
        }
        match grant.request_async(&self.http).await {
            Ok(token) => Ok(IssuedToken {
                access_token: Secret(token.access_token().secret().clone()),
                expires_in: token.expires_in().map(|d| d.as_secs()),
            }),
            Err(RequestTokenError::ServerResponse(e)) => {
                let description = e
                    .error_description()
                    .map(|d| format!(": {d}"))
                    .unwrap_or_default();
                Err(err(
                    op,
                    ErrorClass::Terminal,
                    format!(
                        "{} refused client {client_id}: {}{description}",
                        discovery.token_endpoint,
                        e.error()
                    ),
                ))
            }
            Err(RequestTokenError::Request(e)) => Err(err(
                op,
                ErrorClass::Transient,
                format!("{} unreachable: {e}", discovery.token_endpoint),
            )),
            Err(RequestTokenError::Parse(e, _)) => Err(err(
                op,
                ErrorClass::Terminal,
                format!(
                    "{} answered an unreadable token response: {e}",
                    discovery.token_endpoint
                ),
            )),
            Err(RequestTokenError::Other(e)) => Err(err(
                op,
                ErrorClass::Transient,
                format!("{}: {e}", discovery.token_endpoint),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// A discovery endpoint counting its hits; `issuer_suffix` makes the issuer (mis)match.
    async fn serve(
        issuer_suffix: &'static str,
        token_endpoint: bool,
    ) -> (String, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let hits = Arc::new(AtomicUsize::new(0));
        let (issuer, counter) = (format!("{base}{issuer_suffix}"), Arc::clone(&hits));
        let app = axum::Router::new().route(
            "/.well-known/openid-configuration",
            axum::routing::get(move || {
                counter.fetch_add(1, Ordering::SeqCst);
                let mut doc = serde_json::json!({"issuer": issuer, "token_endpoint_auth_methods_supported": ["client_secret_post"]});
                if token_endpoint {
                    doc["token_endpoint"] = serde_json::json!(format!("{issuer}/token"));
                }
                async move { axum::Json(doc) }
            }),
        );
        tokio::spawn(async move { axum::serve(listener, app).await });
        (base, hits)
    }

    #[tokio::test]
    async fn discovery_is_fetched_once_and_cached() {
        let (base, hits) = serve("", true).await;
        let oidc =
            Oidc::new(Duration::from_secs(5), Duration::from_secs(3600), false).expect("client");
        let url = format!("{base}/.well-known/openid-configuration");
        let first = oidc.discover(&url).await.expect("discovered");
        let second = oidc.discover(&url).await.expect("cached");
        assert_eq!(first, second);
        assert_eq!(first.token_endpoint, format!("{base}/token"));
        assert_eq!(first.auth_methods, ["client_secret_post"]);
        assert_eq!(hits.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn an_issuer_that_does_not_match_the_url_or_a_missing_token_endpoint_is_refused() {
        let oidc =
            Oidc::new(Duration::from_secs(5), Duration::from_secs(3600), false).expect("client");
        let (base, _) = serve("/someone-else", true).await;
        let err = oidc
            .discover(&format!("{base}/.well-known/openid-configuration"))
            .await
            .expect_err("mismatch");
        assert!(
            err.message.contains("does not match the discovery URL"),
            "{err}"
        );
        assert_eq!(err.class, ErrorClass::Terminal);
        let (base, _) = serve("", false).await;
        let err = oidc
            .discover(&format!("{base}/.well-known/openid-configuration"))
            .await
            .expect_err("no endpoint");
        assert!(err.message.contains("has no token_endpoint"), "{err}");
        let err = oidc
            .discover("http://idp.example.com/.well-known/openid-configuration")
            .await
            .expect_err("insecure");
        assert!(err.message.contains("plain http"), "{err}");
    }
}
