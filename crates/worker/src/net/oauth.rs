//! Asks an IdP for a token: OIDC discovery (fetched once per issuer and cached, issuer checked)
//! and the client_credentials grant with the `oauth2` crate, using the client authentication the
//! IdP advertises. Only issuers the trust policy accepted are asked anything, and the token
//! endpoint a discovery document names is checked against the policy before a secret goes to
//! it. Neither request follows redirects ([`super::http`]). Used for egress tokens and for the
//! registry's own ingress token alike; errors name the IdP (peer `idp`), never a registry flag.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use oauth2::basic::BasicClient;
use oauth2::{AuthType, ClientId, ClientSecret, RequestTokenError, Scope, TokenResponse, TokenUrl};
use registrar_core::refresh::TokenRequest;
use registrar_core::trust::{Refusal, TrustPolicy, TrustedIssuer};
use registrar_core::{ErrorClass, PortError};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::http;

const PEER: &str = "idp";

/// What the registrar reads from a discovery document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discovery {
    /// The issuer the document names (checked against the trusted one).
    pub issuer: String,
    /// Where the client_credentials grant is sent (checked against the trust policy first).
    pub token_endpoint: String,
    /// `token_endpoint_auth_methods_supported`; empty when the document says nothing.
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
    /// The bearer token itself.
    pub access_token: SecretString,
    /// `expires_in` of the token response, when present.
    pub expires_in: Option<u64>,
}

/// Why no token was issued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IssueError {
    /// The trust policy refused: nothing was sent, and retrying cannot help until the
    /// operator's configuration changes.
    #[error("refused: {0}")]
    Refused(#[from] Refusal),
    /// The IdP could not be asked, or said no.
    #[error(transparent)]
    Failed(#[from] PortError),
}

/// The IdP client: one connection pool, a discovery cache.
#[derive(Debug)]
pub struct Oidc {
    http: reqwest::Client,
    /// Discovery documents by URL, with when they were read ([`Clock::elapsed`]).
    cache: Mutex<HashMap<String, (Duration, Arc<Discovery>)>>,
    cache_ttl: Duration,
    clock: Arc<dyn registrar_core::ports::Clock>,
}

fn err(operation: &str, class: ErrorClass, message: impl Into<String>) -> PortError {
    PortError::new(PEER, operation, class, message)
}

impl Oidc {
    /// A client whose requests give up after `timeout`, keeping discovery documents for
    /// `cache_ttl` (aged by `clock`).
    pub fn new(
        timeout: Duration,
        cache_ttl: Duration,
        clock: Arc<dyn registrar_core::ports::Clock>,
    ) -> Result<Self, PortError> {
        // Neither discovery nor the token endpoint may send us (and a secret) elsewhere.
        let http = http::client_builder(timeout)
            .build()
            .map_err(|e| http::client_error(PEER, e))?;
        Ok(Self {
            http,
            cache: Mutex::new(HashMap::new()),
            cache_ttl,
            clock,
        })
    }

    /// A token for `client_id` from a trusted issuer: discovery, the token endpoint checked
    /// against `trust`, then the grant.
    pub async fn issue(
        &self,
        trust: &TrustPolicy,
        trusted: &TrustedIssuer,
        client_id: &str,
        secret: &SecretString,
        request: &TokenRequest,
    ) -> Result<IssuedToken, IssueError> {
        let discovery = self.discover(trusted).await?;
        let token_url = trust.token_endpoint(trusted, &discovery.token_endpoint)?;
        Ok(self
            .client_credentials(&discovery, token_url, client_id, secret, request)
            .await?)
    }

    /// The discovery document of a trusted issuer, from the cache when fresh. It must name
    /// that issuer and a token endpoint.
    pub async fn discover(&self, trusted: &TrustedIssuer) -> Result<Arc<Discovery>, IssueError> {
        let url = &trusted.discovery_url;
        if let Some((at, d)) = self
            .cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(url)
            && self.clock.elapsed().saturating_sub(*at) < self.cache_ttl
        {
            return Ok(Arc::clone(d));
        }
        let op = "discovery";
        let response =
            self.http.get(url).send().await.map_err(|e| {
                err(op, ErrorClass::Transient, format!("{url}: {e}")).with_source(e)
            })?;
        let status = response.status();
        if !status.is_success() {
            let class = if http::is_transient_status(status) {
                ErrorClass::Transient
            } else {
                ErrorClass::Terminal
            };
            return Err(err(
                op,
                class,
                format!("{url} answered HTTP {}", status.as_u16()),
            )
            .into());
        }
        let doc: DiscoveryDocument = response.json().await.map_err(|e| {
            err(
                op,
                ErrorClass::Terminal,
                format!("{url} is not a discovery document: {e}"),
            )
            .with_source(e)
        })?;
        let issuer = doc.issuer.ok_or_else(|| {
            err(
                op,
                ErrorClass::Terminal,
                format!("discovery document at {url} has no issuer"),
            )
        })?;
        TrustPolicy::check_discovered_issuer(trusted, &issuer)?;
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
            .insert(url.clone(), (self.clock.elapsed(), Arc::clone(&discovery)));
        Ok(discovery)
    }

    /// The client_credentials grant at a token endpoint the trust policy accepted. Client
    /// authentication: HTTP Basic when the IdP supports it (or says nothing), else the secret in
    /// the body.
    async fn client_credentials(
        &self,
        discovery: &Discovery,
        token_url: url::Url,
        client_id: &str,
        secret: &SecretString,
        request: &TokenRequest,
    ) -> Result<IssuedToken, PortError> {
        let op = "client_credentials";
        let methods = &discovery.auth_methods;
        let auth = if methods.is_empty() || methods.iter().any(|m| m == "client_secret_basic") {
            AuthType::BasicAuth
        } else {
            AuthType::RequestBody
        };
        let client = BasicClient::new(ClientId::new(client_id.to_owned()))
            .set_client_secret(ClientSecret::new(secret.expose_secret().to_owned()))
            .set_token_uri(TokenUrl::from_url(token_url))
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
                access_token: SecretString::from(token.access_token().secret().as_str()),
                expires_in: token.expires_in().map(|d| d.as_secs()),
            }),
            Err(RequestTokenError::ServerResponse(e)) => {
                let description = e
                    .error_description()
                    .map(|d| format!(": {d}"))
                    .unwrap_or_default();
                // Only what the client got wrong is terminal; an IdP that is busy or broken
                // (`temporarily_unavailable`, `server_error`, anything else) is retried.
                use oauth2::basic::BasicErrorResponseType as T;
                let class = match e.error() {
                    T::InvalidClient
                    | T::UnauthorizedClient
                    | T::InvalidGrant
                    | T::InvalidScope
                    | T::InvalidRequest
                    | T::UnsupportedGrantType => ErrorClass::Terminal,
                    T::Extension(_) => ErrorClass::Transient,
                };
                Err(err(
                    op,
                    class,
                    format!(
                        "{} refused client {client_id}: {}{description}",
                        discovery.token_endpoint,
                        e.error()
                    ),
                ))
            }
            // `oauth2` says only "client error": the reqwest chain says why (refused, timed out).
            Err(RequestTokenError::Request(e)) => {
                let why = match &e {
                    oauth2::HttpClientError::Reqwest(r) => http::transport_message(r),
                    other => other.to_string(),
                };
                Err(err(
                    op,
                    ErrorClass::Transient,
                    format!("{} unreachable: {why}", discovery.token_endpoint),
                )
                .with_source(e))
            }
            // Typically a proxy's HTML error page in front of an IdP that is down. Only the
            // parse error is kept: the body beside it may hold a token.
            Err(RequestTokenError::Parse(e, _body)) => Err(err(
                op,
                ErrorClass::Transient,
                format!(
                    "{} answered an unreadable token response: {e}",
                    discovery.token_endpoint
                ),
            )
            .with_source(e)),
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

    use registrar_core::trust::{COGNITO_ISSUER_BASE, TrustConfig};

    use super::*;

    /// A discovery endpoint counting its hits; `issuer_suffix` makes the issuer (mis)match, and
    /// `token_at` is where its token endpoint is (the issuer's own when `None`).
    async fn serve(
        issuer_suffix: &'static str,
        token_endpoint: bool,
        token_at: Option<&'static str>,
    ) -> (String, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let hits = Arc::new(AtomicUsize::new(0));
        let (issuer, counter) = (format!("{base}{issuer_suffix}"), Arc::clone(&hits));
        let app = axum::Router::new()
            .route(
                "/.well-known/openid-configuration",
                axum::routing::get(move || {
                    counter.fetch_add(1, Ordering::SeqCst);
                    let mut doc = serde_json::json!({"issuer": issuer, "token_endpoint_auth_methods_supported": ["client_secret_post"]});
                    if token_endpoint {
                        doc["token_endpoint"] = serde_json::json!(
                            token_at.map_or_else(|| format!("{issuer}/token"), str::to_owned)
                        );
                    }
                    async move { axum::Json(doc) }
                }),
            )
            .route(
                "/redirect/.well-known/openid-configuration",
                axum::routing::get(|| async {
                    axum::response::Redirect::temporary("https://evil.example/.well-known/openid-configuration")
                }),
            );
        tokio::spawn(async move { axum::serve(listener, app).await });
        (base, hits)
    }

    fn trusting(entries: &[String]) -> TrustPolicy {
        TrustPolicy::new(&TrustConfig {
            trusted: entries,
            cognito_issuer_base: COGNITO_ISSUER_BASE,
            ..TrustConfig::default()
        })
        .expect("policy")
    }

    /// The issuer at `base`, trusted as `entry` (an issuer URL or a host).
    fn trusted_at(base: &str, entry: String) -> (TrustPolicy, TrustedIssuer) {
        let trust = trusting(&[entry]);
        let trusted = trust
            .issuer_of(&format!("{base}/.well-known/openid-configuration"), &[])
            .expect("trusted");
        (trust, trusted)
    }

    fn oidc() -> Oidc {
        Oidc::new(
            Duration::from_secs(5),
            Duration::from_secs(3600),
            Arc::new(registrar_testkit::TestClock::standard()),
        )
        .expect("client")
    }

    #[tokio::test]
    async fn idp_url_errors_name_the_idp_flags_never_the_registry_one() {
        let http_issuer = ["http://idp.example.com/realms/x".to_owned()];
        let e = TrustPolicy::new(&TrustConfig {
            trusted: &http_issuer,
            cognito_issuer_base: COGNITO_ISSUER_BASE,
            ..TrustConfig::default()
        })
        .expect_err("plain http issuer");
        assert!(e.contains("use https"), "{e}");
        assert!(!e.contains("--allow-insecure-registry"), "{e}");

        let trust = trusting(&["idp.example.com".to_owned()]);
        let e = trust
            .issuer_of(
                "http://idp.example.com/.well-known/openid-configuration",
                &[],
            )
            .expect_err("plain http discovery URL");
        assert!(e.to_string().contains("plain http"), "{e}");
        assert!(!e.to_string().contains("--allow-insecure-registry"), "{e}");

        // A token endpoint over plain http: the IdP's own flag is named.
        let (base, _) = serve("", true, Some("http://idp.example.com/token")).await;
        let (trust, trusted) = trusted_at(&base, base.clone());
        let e = oidc()
            .issue(
                &trust,
                &trusted,
                "c",
                &SecretString::from("s3cret"),
                &TokenRequest::default(),
            )
            .await
            .expect_err("plain http token endpoint");
        assert!(
            matches!(e, IssueError::Refused(Refusal::TokenEndpoint { .. })),
            "{e}"
        );
        assert!(e.to_string().contains("--trusted-token-hosts"), "{e}");
        assert!(!e.to_string().contains("--allow-insecure-registry"), "{e}");
    }

    #[tokio::test]
    async fn an_unreachable_token_endpoint_says_why_and_keeps_the_cause() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let closed = format!("http://{}/token", listener.local_addr().expect("addr"));
        drop(listener);
        let discovery = Discovery {
            issuer: "http://127.0.0.1".into(),
            token_endpoint: closed.clone(),
            auth_methods: Vec::new(),
        };
        let e = oidc()
            .client_credentials(
                &discovery,
                url::Url::parse(&closed).expect("url"),
                "c",
                &SecretString::from("s3cret"),
                &TokenRequest::default(),
            )
            .await
            .expect_err("nobody listens");
        assert!(e.is_transient());
        assert!(
            e.message.contains("unreachable: connection failed"),
            "{}",
            e.message
        );
        assert!(std::error::Error::source(&e).is_some());
        assert!(!format!("{e:?}").contains("s3cret"));
    }

    #[tokio::test]
    async fn discovery_is_fetched_once_and_cached() {
        let (base, hits) = serve("", true, None).await;
        let (_, trusted) = trusted_at(&base, base.clone());
        let oidc = oidc();
        let first = oidc.discover(&trusted).await.expect("discovered");
        let second = oidc.discover(&trusted).await.expect("cached");
        assert_eq!(first, second);
        assert_eq!(first.token_endpoint, format!("{base}/token"));
        assert_eq!(first.auth_methods, ["client_secret_post"]);
        assert_eq!(hits.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_mismatched_issuer_a_missing_or_foreign_token_endpoint_and_redirects_are_refused() {
        let oidc = oidc();
        let request = TokenRequest::default();
        let secret = SecretString::from("s3cret");

        let (base, _) = serve("/someone-else", true, None).await;
        let (trust, trusted) = trusted_at(&base, base.trim_start_matches("http://").to_owned());
        let e = oidc
            .issue(&trust, &trusted, "c", &secret, &request)
            .await
            .expect_err("mismatch");
        assert!(
            matches!(e, IssueError::Refused(Refusal::IssuerMismatch { .. })),
            "{e}"
        );

        let (base, _) = serve("", false, None).await;
        let (trust, trusted) = trusted_at(&base, base.clone());
        let e = oidc
            .issue(&trust, &trusted, "c", &secret, &request)
            .await
            .expect_err("no endpoint");
        assert!(e.to_string().contains("has no token_endpoint"), "{e}");

        let (base, _) = serve("", true, Some("https://evil.example/token")).await;
        let (trust, trusted) = trusted_at(&base, base.clone());
        let e = oidc
            .issue(&trust, &trusted, "c", &secret, &request)
            .await
            .expect_err("foreign endpoint");
        assert!(
            matches!(e, IssueError::Refused(Refusal::TokenEndpoint { .. })),
            "{e}"
        );
        assert!(!e.to_string().contains("s3cret"));

        let (base, _) = serve("", true, None).await;
        let trust = trusting(&[format!("{base}/redirect")]);
        let trusted = trust
            .issuer_of(
                &format!("{base}/redirect/.well-known/openid-configuration"),
                &[],
            )
            .expect("trusted");
        let e = oidc
            .discover(&trusted)
            .await
            .expect_err("redirect not followed");
        assert!(e.to_string().contains("HTTP 307"), "{e}");
    }
}
