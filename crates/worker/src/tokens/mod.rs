//! Egress tokens for entries behind CUSTOM_JWT authorizers, delivered: the secret (resolved
//! through the trust policy), a token from the IdP ([`crate::net::oauth`]), the registry's
//! auth-credential PATCH, the enable-once after the first token, and the token state (expiry,
//! next refresh, last result) in DynamoDB.
//!
//! Two gates stand before anything leaves (design invariant 7): the trust policy decides where a
//! client secret may go, before any request; and a token is PATCHed only into an entry that a
//! GET just showed to be ours and pointing at the gateway recorded with the manifest row.

pub mod schedule;
pub mod secrets;

use std::time::Duration;

use registrar_core::desired::{Collection, InboundAuth, Pointing};
use registrar_core::enable::EnablePolicy;
use registrar_core::plan::{RecordedResource, RegistryIdentity};
use registrar_core::ports::{Registry, StateStore};
use registrar_core::refresh::{
    RefreshPolicy, TokenState, jwt_exp, lifetime, next_refresh, retry_at, token_request,
};
use registrar_core::tokens::ManifestFields;
use registrar_core::trust::{Refusal, TrustPolicy};
use registrar_core::{ErrorClass, PortError};
use secrecy::ExposeSecret;

use self::secrets::{SecretError, SecretResolver};
use crate::net::oauth::{IssueError, Oidc};

/// How long a refused token waits before it is looked at again: a refusal holds until the
/// operator's configuration or the resource changes (`tokens refresh --path` asks at once).
pub const REFUSAL_RECHECK_SECS: u64 = 3600;

/// Why a token was not delivered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeliveryError {
    /// The client secret may not go to this IdP: nothing was sent to it.
    #[error("refused: {0}")]
    Untrusted(Refusal),
    /// The entry is not verified as ours and pointing at its gateway: no token goes into it.
    #[error(
        "refused: the entry at {path} is not verified as ours ({why}); no token is written into it"
    )]
    Unverified { path: String, why: String },
    #[error(transparent)]
    Failed(PortError),
}

impl DeliveryError {
    /// A refusal (not retried hot, counted apart from failures).
    pub fn is_refusal(&self) -> bool {
        !matches!(self, Self::Failed(_))
    }

    fn class(&self) -> ErrorClass {
        match self {
            Self::Failed(e) => e.class,
            _ => ErrorClass::Terminal,
        }
    }
}

impl From<PortError> for DeliveryError {
    fn from(e: PortError) -> Self {
        Self::Failed(e)
    }
}

impl From<IssueError> for DeliveryError {
    fn from(e: IssueError) -> Self {
        match e {
            IssueError::Refused(r) => Self::Untrusted(r),
            IssueError::Failed(e) => Self::Failed(e),
        }
    }
}

/// Manifest rows of server entries (the registry has no credential API for agents), with their
/// resource records and token states, sorted by path.
pub type TokenRows = Vec<(ManifestFields, Option<RecordedResource>, Option<TokenState>)>;

/// Reads [`TokenRows`] from the state store: every token through the due index, with its
/// manifest and resource rows by key (no scan: leases, pointers, claims and the rows of
/// resources without tokens are never read).
pub async fn token_rows<S: StateStore>(state: &S) -> Result<TokenRows, PortError> {
    let mut rows: TokenRows = state
        .due_tokens(u64::MAX)
        .await?
        .into_iter()
        .filter(|d| serves_tokens(d.resource.as_ref()))
        .map(|d| (d.manifest, d.resource, d.token))
        .collect();
    rows.sort_by(|a, b| a.0.path.cmp(&b.0.path));
    Ok(rows)
}

/// Whether the entry of a manifest row takes tokens: servers do, agents do not (the registry
/// has no credential API for agents). A row without a resource record is tried.
pub fn serves_tokens(resource: Option<&RecordedResource>) -> bool {
    resource.is_none_or(|r| r.collection == Collection::Server)
}

/// Everything a refresh needs.
#[derive(Debug)]
pub struct Refresher<'a, R, S> {
    pub registry: &'a R,
    pub state: &'a S,
    pub oidc: &'a Oidc,
    pub secrets: &'a SecretResolver,
    pub trust: &'a TrustPolicy,
    /// Our `registered_by` at the registry, when configured.
    pub identity: Option<RegistryIdentity>,
    pub enable: EnablePolicy,
    pub policy: RefreshPolicy,
    /// Issue times, retry times and their jitter.
    pub clock: &'a dyn registrar_core::ports::Clock,
}

/// How one refresh went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refreshed {
    pub path: String,
    pub state: TokenState,
    /// The error, when it failed or was refused (no secrets).
    pub error: Option<String>,
    /// It was refused (untrusted IdP, unverified entry) rather than failed.
    pub refused: Option<Refusing>,
    pub enabled_now: bool,
}

/// What a refusal was about (the metric's label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusing {
    /// The IdP or the secret's binding: the secret was not sent.
    Secret,
    /// The registry entry: the token was not written.
    Entry,
}

impl<R: Registry, S: StateStore> Refresher<'_, R, S> {
    /// Refreshes the token of one manifest row and records the outcome; a failure is recorded
    /// with a retry time well before the current token expires. The steps before the first
    /// write (trust, verification, secret, the IdP) that are still under way `within` after it
    /// began are abandoned and recorded as a transient failure: each request has its own
    /// timeout, this bounds their sum, so a refresh reaches the registry well inside the token
    /// loop's claim on the row. The writes, once begun, run to their end: cut halfway, the
    /// registry would hold a token (or an enabled entry) the state does not record.
    pub async fn refresh(
        &self,
        row: &ManifestFields,
        previous: Option<&TokenState>,
        recorded: Option<&RecordedResource>,
        within: Duration,
    ) -> Refreshed {
        let started = self.clock.now_s();
        match self.issue_and_deliver(row, recorded, within).await {
            Ok((state, enabled_now)) => {
                if let Err(e) = self.state.record_token(&row.arn, &state).await {
                    tracing::warn!(path = %row.path, error = %e, "Token state could not be recorded.");
                }
                tracing::info!(path = %row.path, expires_at = state.expires_at, next_refresh_at = state.next_refresh_at, "Token refreshed.");
                Refreshed {
                    path: row.path.clone(),
                    state,
                    error: None,
                    refused: None,
                    enabled_now,
                }
            }
            Err(e) => {
                let failures = previous.map_or(0, |p| p.failures) + 1;
                let expires_at = previous.and_then(|p| p.expires_at);
                let next_refresh_at = if e.is_refusal() {
                    started + REFUSAL_RECHECK_SECS
                } else {
                    retry_at(
                        started,
                        expires_at,
                        failures,
                        self.clock.jitter(),
                        &self.policy,
                    )
                };
                let state = TokenState {
                    expires_at,
                    next_refresh_at,
                    last_result: if e.is_refusal() {
                        e.to_string()
                    } else {
                        format!("{e} ({})", e.class())
                    },
                    failures,
                    client_id: previous.and_then(|p| p.client_id.clone()),
                    refreshed_at: previous.and_then(|p| p.refreshed_at),
                };
                if let Err(e) = self.state.record_token(&row.arn, &state).await {
                    tracing::warn!(path = %row.path, error = %e, "Token state could not be recorded.");
                }
                let refused = match &e {
                    DeliveryError::Untrusted(_) => Some(Refusing::Secret),
                    DeliveryError::Unverified { .. } => Some(Refusing::Entry),
                    DeliveryError::Failed(_) => None,
                };
                if refused.is_some() {
                    tracing::warn!(path = %row.path, error = %e, "Token refresh refused.");
                } else {
                    tracing::warn!(path = %row.path, error = %e, class = %e.class(), failures, "Token refresh failed.");
                }
                Refreshed {
                    path: row.path.clone(),
                    error: Some(state.last_result.clone()),
                    state,
                    refused,
                    enabled_now: false,
                }
            }
        }
    }

    async fn issue_and_deliver(
        &self,
        row: &ManifestFields,
        recorded: Option<&RecordedResource>,
        within: Duration,
    ) -> Result<(TokenState, bool), DeliveryError> {
        let (client_id, token, issued) = tokio::time::timeout(within, self.issue(row))
            .await
            .unwrap_or_else(|_| {
                Err(DeliveryError::Failed(PortError::new(
                    "tokens",
                    "refresh",
                    ErrorClass::Transient,
                    format!(
                        "the refresh of {} got no token within {} s and was abandoned before writing anything",
                        row.path,
                        within.as_secs()
                    ),
                )))
            })?;
        let life = lifetime(
            token.expires_in,
            jwt_exp(token.access_token.expose_secret()),
            issued,
            &self.policy,
        );
        self.registry
            .set_credential(&row.path, Some(token.access_token.expose_secret()))
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
            next_refresh_at: next_refresh(issued, life, self.clock.jitter(), &self.policy),
            last_result: "ok".into(),
            failures: 0,
            client_id: Some(client_id),
            refreshed_at: Some(issued),
        };
        Ok((state, enabled_now))
    }

    /// Everything before the first write: the trust policy, the entry verified, a secret that
    /// may go to the issuer, a token from it, and the entry verified again (it may have been
    /// overwritten meanwhile). The client id used, the token, and when the IdP answered.
    async fn issue(
        &self,
        row: &ManifestFields,
    ) -> Result<(String, crate::net::oauth::IssuedToken, u64), DeliveryError> {
        let terminal = |m: String| PortError::new("tokens", "secret", ErrorClass::Terminal, m);
        // Decided before anything is fetched: an untrusted IdP is never asked anything, and no
        // token is minted for an entry that is not ours.
        let issuer = self
            .trust
            .issuer_of(&row.discovery_url, &row.allowed_clients)
            .map_err(DeliveryError::Untrusted)?;
        self.verify_entry(row).await?;
        // The first allowed client with a secret that may go to this issuer (the Python tool
        // used only the first client).
        let mut missing = Vec::new();
        let mut refused = None;
        let mut found = None;
        for client_id in &row.allowed_clients {
            if let Err(why) = secrets::check_client_id(client_id) {
                missing.push(why);
                continue;
            }
            match self
                .secrets
                .resolve(client_id, row.idp_vendor, self.trust, &issuer)
                .await
            {
                Ok(secret) => {
                    found = Some((client_id.clone(), secret));
                    break;
                }
                Err(SecretError::Missing(e)) => missing.push(e.to_string()),
                Err(SecretError::NotForIssuer(r)) => {
                    refused.get_or_insert(r);
                }
                Err(SecretError::Lookup(e)) => return Err(e.into()),
            }
        }
        let Some((client_id, secret)) = found else {
            if let Some(r) = refused {
                return Err(DeliveryError::Untrusted(r));
            }
            if row.allowed_clients.is_empty() {
                return Err(terminal("the authorizer lists no allowed clients".into()).into());
            }
            return Err(terminal(missing.join("; ")).into());
        };
        tracing::debug!(path = %row.path, client_id, source = %secret.source, "Client secret found.");
        let request = token_request(row.idp_vendor, &row.allowed_audience, &row.allowed_scopes);
        let token = self
            .oidc
            .issue(self.trust, &issuer, &client_id, &secret.secret, &request)
            .await?;
        let issued = self.clock.now_s();
        self.verify_entry(row).await?;
        Ok((client_id, token, issued))
    }

    /// Before a token is minted and again right before its PATCH: the entry must be ours for
    /// this resource (by metadata, by who registered it when that is configured) and point at
    /// the URL recorded with the manifest row, with the bearer scheme. Anyone allowed to register can overwrite a server
    /// and keep our metadata; the registry keeps the stored credential across the overwrite.
    async fn verify_entry(&self, row: &ManifestFields) -> Result<(), DeliveryError> {
        let unverified = |why: String| DeliveryError::Unverified {
            path: row.path.clone(),
            why,
        };
        if row.url.is_empty() {
            // Written by an older version: the start-up rescan rewrites the row. Not a
            // refusal (an hour's wait), a failure retried soon.
            return Err(DeliveryError::Failed(PortError::new(
                "tokens",
                "verify entry",
                ErrorClass::Transient,
                format!(
                    "the manifest row of {} records no entry URL yet (written by an older version); the next rescan records it",
                    row.path
                ),
            )));
        }
        let entry = self
            .registry
            .get(Collection::Server, &row.path)
            .await?
            .ok_or_else(|| unverified("the registry has no entry there".into()))?;
        let expected = [Pointing::new(&row.url, Some("bearer"))];
        entry
            .verify(&row.arn, &expected, self.identity, false)
            .map_err(unverified)
    }
}
