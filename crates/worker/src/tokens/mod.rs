//! Egress tokens for entries behind CUSTOM_JWT authorizers: secret, OIDC discovery,
//! client_credentials, the registry's auth-credential PATCH, the enable-once after the first
//! token, and the token state (expiry, next refresh, last result) in DynamoDB.

pub mod oidc;
pub mod schedule;
pub mod secrets;

use std::time::{SystemTime, UNIX_EPOCH};

use registrar_core::PortError;
use registrar_core::desired::{Collection, InboundAuth};
use registrar_core::enable::EnablePolicy;
use registrar_core::plan::RecordedResource;
use registrar_core::ports::{Registry, StateStore};
use registrar_core::refresh::{
    RefreshPolicy, TokenState, jwt_exp, lifetime, next_refresh, retry_at, token_request,
};
use registrar_core::tokens::ManifestFields;

use self::oidc::Oidc;
use self::secrets::SecretResolver;

/// Manifest rows of server entries (the registry has no credential API for agents), with their
/// resource records and token states, sorted by path.
pub type TokenRows = Vec<(ManifestFields, Option<RecordedResource>, Option<TokenState>)>;

/// Reads [`TokenRows`] from the state store.
pub async fn token_rows<S: StateStore>(state: &S) -> Result<TokenRows, PortError> {
    let (manifests, resources, tokens) =
        futures::try_join!(state.manifests(), state.resources(), state.tokens())?;
    let resources: std::collections::BTreeMap<String, RecordedResource> = resources
        .into_iter()
        .map(|r| (r.resource.arn.clone(), r))
        .collect();
    let mut tokens: std::collections::BTreeMap<String, TokenState> = tokens.into_iter().collect();
    let mut rows: TokenRows = manifests
        .into_iter()
        .filter(|m| {
            resources
                .get(&m.arn)
                .is_none_or(|r| r.collection == Collection::Server)
        })
        .map(|m| {
            let resource = resources.get(&m.arn).cloned();
            let token = tokens.remove(&m.arn);
            (m, resource, token)
        })
        .collect();
    rows.sort_by(|a, b| a.0.path.cmp(&b.0.path));
    Ok(rows)
}

/// Unix seconds now.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Everything a refresh needs.
#[derive(Debug)]
pub struct Refresher<'a, R, S> {
    pub registry: &'a R,
    pub state: &'a S,
    pub oidc: &'a Oidc,
    pub secrets: &'a SecretResolver,
    pub enable: EnablePolicy,
    pub policy: RefreshPolicy,
}

/// How one refresh went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refreshed {
    pub path: String,
    pub state: TokenState,
    /// The error, when it failed (no secrets).
    pub error: Option<String>,
    pub enabled_now: bool,
}

impl<R: Registry, S: StateStore> Refresher<'_, R, S> {
    /// Refreshes the token of one manifest row and records the outcome; a failure is recorded
    /// with a retry time well before the current token expires.
    pub async fn refresh(
        &self,
        row: &ManifestFields,
        previous: Option<&TokenState>,
        recorded: Option<&RecordedResource>,
    ) -> Refreshed {
        let started = now();
        match self.issue_and_deliver(row, recorded).await {
            Ok((state, enabled_now)) => {
                if let Err(e) = self.state.record_token(&row.arn, &state).await {
                    tracing::warn!(path = %row.path, error = %e, "Token state could not be recorded.");
                }
                tracing::info!(path = %row.path, expires_at = state.expires_at, next_refresh_at = state.next_refresh_at, "Token refreshed.");
                Refreshed {
                    path: row.path.clone(),
                    state,
                    error: None,
                    enabled_now,
                }
            }
            Err(e) => {
                let failures = previous.map_or(0, |p| p.failures) + 1;
                let expires_at = previous.and_then(|p| p.expires_at);
                let state = TokenState {
                    expires_at,
                    next_refresh_at: retry_at(
                        started,
                        expires_at,
                        failures,
                        crate::consumer::jitter(),
                        &self.policy,
                    ),
                    last_result: format!("{e} ({})", e.class),
                    failures,
                    client_id: previous.and_then(|p| p.client_id.clone()),
                    refreshed_at: previous.and_then(|p| p.refreshed_at),
                };
                if let Err(e) = self.state.record_token(&row.arn, &state).await {
                    tracing::warn!(path = %row.path, error = %e, "Token state could not be recorded.");
                }
                tracing::warn!(path = %row.path, error = %e, class = %e.class, failures, "Token refresh failed.");
                Refreshed {
                    path: row.path.clone(),
                    error: Some(state.last_result.clone()),
                    state,
                    enabled_now: false,
                }
            }
        }
    }

    async fn issue_and_deliver(
        &self,
        row: &ManifestFields,
        recorded: Option<&RecordedResource>,
    ) -> Result<(TokenState, bool), PortError> {
        let terminal =
            |m: String| PortError::new("tokens", "secret", registrar_core::ErrorClass::Terminal, m);
        // The first allowed client that has a secret (the Python tool used only the first one).
        let mut missing = Vec::new();
        let mut found = None;
        for client_id in &row.allowed_clients {
            match self
                .secrets
                .resolve(client_id, row.idp_vendor, &row.discovery_url)
                .await
            {
                Ok((secret, source)) => {
                    found = Some((client_id.clone(), secret, source));
                    break;
                }
                Err(secrets::SecretError::Missing(e)) => missing.push(e.to_string()),
                Err(secrets::SecretError::Lookup(e)) => return Err(e),
            }
        }
        let Some((client_id, secret, source)) = found else {
            if row.allowed_clients.is_empty() {
                return Err(terminal("the authorizer lists no allowed clients".into()));
            }
            return Err(terminal(missing.join("; ")));
        };
        tracing::debug!(path = %row.path, client_id, source, "Client secret found.");
        let discovery = self.oidc.discover(&row.discovery_url).await?;
        let request = token_request(row.idp_vendor, &row.allowed_audience, &row.allowed_scopes);
        let token = self
            .oidc
            .client_credentials(&discovery, &client_id, &secret, &request)
            .await?;
        let issued = now();
        let life = lifetime(
            token.expires_in,
            jwt_exp(&token.access_token.0),
            issued,
            &self.policy,
        );
        self.registry
            .set_credential(&row.path, Some(&token.access_token.0))
            .await?;
        let mut enabled_now = false;
        if let Some(r) = recorded
            && !r.enabled_set
            && r.collection == Collection::Server
            && self.enable.after_token(InboundAuth::Jwt)
        {
            self.registry
                .set_enabled(Collection::Server, &row.path, true)
                .await?;
            self.state.mark_enabled(&row.arn).await?;
            enabled_now = true;
        }
        let state = TokenState {
            expires_at: Some(issued + life),
            next_refresh_at: next_refresh(issued, life, crate::consumer::jitter(), &self.policy),
            last_result: "ok".into(),
            failures: 0,
            client_id: Some(client_id),
            refreshed_at: Some(issued),
        };
        Ok((state, enabled_now))
    }
}
