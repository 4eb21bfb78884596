//! Token refresh decisions as pure functions: how long a token lives, when to refresh it, when to
//! retry a failed refresh, what to ask the IdP for, and where its client secret may be.
//! Times are Unix seconds; jitter (`0.0..=1.0`) is supplied by the caller.

use std::time::Duration;

use crate::backoff::Backoff;
use crate::tokens::IdpVendor;
use crate::trust::CognitoPool;

/// What the state store keeps about one resource's egress token: times and results, never the
/// token itself (design invariant 7).
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct TokenState {
    /// When the token in the registry expires (Unix seconds).
    pub expires_at: Option<u64>,
    /// When it is due for refresh (Unix seconds).
    pub next_refresh_at: u64,
    /// `ok`, or the last error (no secrets).
    pub last_result: String,
    /// Consecutive failed refreshes.
    pub failures: u32,
    /// The client the token was issued to.
    pub client_id: Option<String>,
    /// When the last successful refresh happened (Unix seconds).
    pub refreshed_at: Option<u64>,
}

/// How long before expiry a token whose last refresh did not succeed is reported as about to
/// expire unrefreshed (a warning and the `expiring_unrefreshed` gauge).
pub const EXPIRY_WARNING_S: u64 = 60;

impl TokenState {
    /// When the token loop must next look at this token (Unix seconds): when it is due for
    /// refresh, or, for a token whose last refresh did not succeed, when it comes within
    /// [`EXPIRY_WARNING_S`] of expiring unrefreshed, if that is sooner. State stores index
    /// tokens by it, so a look reads only the tokens this says are worth reading.
    pub fn look_at(&self) -> u64 {
        match self.expires_at {
            Some(exp) if self.last_result != "ok" => self
                .next_refresh_at
                .min(exp.saturating_sub(EXPIRY_WARNING_S)),
            _ => self.next_refresh_at,
        }
    }
}

/// When tokens are refreshed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RefreshPolicy {
    /// Refresh at this share of the lifetime (about 0.8).
    pub fraction: f64,
    /// Up to this share of the lifetime is taken off at random, so refreshes spread out.
    pub jitter_fraction: f64,
    /// Never refresh later than this before expiry.
    pub safety_margin: Duration,
    /// Lifetime assumed when the IdP says nothing and the token is not a JWT with `exp`.
    pub default_lifetime: Duration,
    /// Retries of a failed refresh.
    pub failure_backoff: Backoff,
}

impl Default for RefreshPolicy {
    fn default() -> Self {
        Self {
            fraction: 0.8,
            jitter_fraction: 0.05,
            safety_margin: Duration::from_secs(60),
            default_lifetime: Duration::from_secs(3600),
            failure_backoff: Backoff {
                base: Duration::from_secs(5),
                cap: Duration::from_secs(300),
            },
        }
    }
}

/// Seconds until expiry: `expires_in` when the IdP sent it, else the JWT's `exp`, else the default.
pub fn lifetime(
    expires_in: Option<u64>,
    jwt_exp: Option<u64>,
    now: u64,
    policy: &RefreshPolicy,
) -> u64 {
    expires_in
        .or_else(|| jwt_exp.map(|exp| exp.saturating_sub(now)))
        .filter(|l| *l > 0)
        .unwrap_or(policy.default_lifetime.as_secs())
}

/// When to refresh a token issued at `issued` that lives `lifetime` seconds: about
/// `fraction` of the way, minus jitter, and never later than the safety margin before expiry.
/// The margin is at most a tenth of the lifetime, so short tokens are still fetched about once
/// per lifetime rather than twice.
pub fn next_refresh(issued: u64, lifetime: u64, jitter: f64, policy: &RefreshPolicy) -> u64 {
    let life = lifetime as f64;
    let target = life * (policy.fraction - policy.jitter_fraction * jitter.clamp(0.0, 1.0));
    let margin = (policy.safety_margin.as_secs() as f64).min(life / 10.0);
    issued + target.min(life - margin).max(1.0) as u64
}

/// When to retry after `attempt` failed refreshes: the backoff, but while the current token is
/// still valid, never later than `safety_margin` before it expires.
pub fn retry_at(
    now: u64,
    expires_at: Option<u64>,
    attempt: u32,
    jitter: f64,
    policy: &RefreshPolicy,
) -> u64 {
    let backoff = now
        + policy
            .failure_backoff
            .delay(attempt, jitter)
            .as_secs()
            .max(1);
    match expires_at {
        Some(exp) if exp > now => {
            let before_expiry = exp
                .saturating_sub(policy.safety_margin.as_secs())
                .max(now + 1);
            backoff.min(before_expiry)
        }
        _ => backoff,
    }
}

/// Whether a token expires within `window` seconds without a successful refresh: worth a
/// warning and a metric.
pub fn expiring_unrefreshed(now: u64, expires_at: u64, window: u64) -> bool {
    expires_at <= now + window
}

#[cfg(test)]
mod look_at_tests {
    use super::*;

    fn state(next: u64, expires: Option<u64>, result: &str) -> TokenState {
        TokenState {
            expires_at: expires,
            next_refresh_at: next,
            last_result: result.into(),
            ..TokenState::default()
        }
    }

    #[test]
    fn a_token_is_looked_at_when_due_or_when_it_would_expire_unrefreshed() {
        assert_eq!(state(800, Some(1000), "ok").look_at(), 800);
        assert_eq!(state(800, None, "failed").look_at(), 800);
        // A refusal waits an hour, but its token expires sooner: looked at a minute before.
        assert_eq!(state(4600, Some(1000), "refused").look_at(), 940);
        // A failure retried well before expiry is looked at for the retry.
        assert_eq!(state(900, Some(1000), "failed").look_at(), 900);
        // Expired already: at once (and on every look until it is refreshed).
        assert_eq!(state(4600, Some(30), "refused").look_at(), 0);
        assert!(expiring_unrefreshed(940, 1000, EXPIRY_WARNING_S));
    }
}

/// The claims of a JWT, read without verifying it (to schedule refreshes, never to trust).
pub fn jwt_claims(token: &str) -> Option<serde_json::Value> {
    let payload = token.split('.').nth(1)?;
    serde_json::from_slice(&base64url_decode(payload)?).ok()
}

/// The `exp` claim of a JWT, read without verifying it (only to schedule the refresh).
pub fn jwt_exp(token: &str) -> Option<u64> {
    jwt_claims(token)?.get("exp")?.as_u64()
}

/// Base64, the URL-safe or the standard alphabet, padding optional.
pub fn base64url_decode(input: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(input.len() * 3 / 4);
    let (mut buf, mut bits) = (0u32, 0u32);
    for c in input.trim_end_matches('=').bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' | b'+' => 62,
            b'_' | b'/' => 63,
            _ => return None,
        };
        buf = (buf << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((buf >> bits) as u8);
            buf &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// What a client_credentials request asks for, per vendor (design.md, Tokens).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TokenRequest {
    /// `scope` of the grant (space-separated), when the vendor uses scopes.
    pub scope: Option<String>,
    /// `audience` of the grant (Auth0).
    pub audience: Option<String>,
}

/// Entra: `<first audience>/.default` (a trailing `/` dropped, kept as is if it already ends in
/// `/.default`); Auth0: `audience` = the first audience; others: the allowed scopes.
pub fn token_request(
    vendor: IdpVendor,
    allowed_audience: &[String],
    allowed_scopes: &[String],
) -> TokenRequest {
    let scopes = (!allowed_scopes.is_empty()).then(|| allowed_scopes.join(" "));
    match vendor {
        IdpVendor::Entra => TokenRequest {
            scope: allowed_audience
                .first()
                .map(|a| {
                    if a.ends_with("/.default") {
                        a.clone()
                    } else {
                        format!("{}/.default", a.trim_end_matches('/'))
                    }
                })
                .or(scopes),
            audience: None,
        },
        IdpVendor::Auth0 => TokenRequest {
            scope: scopes,
            audience: allowed_audience.first().cloned(),
        },
        _ => TokenRequest {
            scope: scopes,
            audience: None,
        },
    }
}

/// One place a client secret may be found, in the order they are tried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// An environment variable.
    Env(String),
    /// A Secrets Manager secret (its `SecretString`, or its `client_secret` JSON key).
    SecretsManager(String),
    /// Cognito `DescribeUserPoolClient` of the pool in the discovery URL.
    Cognito {
        /// The pool's region.
        region: String,
        /// The pool's id (`<region>_<id>`).
        pool_id: String,
    },
}

impl SecretSource {
    /// A name for error messages (never the secret).
    pub fn describe(&self) -> String {
        match self {
            Self::Env(n) => format!("env {n}"),
            Self::SecretsManager(n) => format!("secretsmanager {n}"),
            Self::Cognito { region, pool_id } => format!("cognito {region}/{pool_id}"),
        }
    }
}

/// The vendor-wide secret variable (`ENTRA_CLIENT_SECRET`, ...), if the vendor has one.
fn vendor_variable(vendor: IdpVendor) -> Option<&'static str> {
    match vendor {
        IdpVendor::Entra => Some("ENTRA_CLIENT_SECRET"),
        IdpVendor::Auth0 => Some("AUTH0_CLIENT_SECRET"),
        IdpVendor::Okta => Some("OKTA_CLIENT_SECRET"),
        IdpVendor::Keycloak => Some("KEYCLOAK_CLIENT_SECRET"),
        IdpVendor::Cognito | IdpVendor::Unknown => None,
    }
}

/// Where to look for `client_id`'s secret, first match wins: `OAUTH_CLIENT_SECRET_<client_id>`
/// (also with `-` written as `_`), a Secrets Manager secret named by `secret_name_pattern`
/// (`{name}` = the client id), Cognito when the trust policy recognised the issuer as a pool
/// (`cognito`), then the vendor secret from env or Secrets Manager (`{name}` = the variable
/// name). Whether a found secret may be sent is [`crate::trust::TrustPolicy::may_send`]'s call.
pub fn secret_sources(
    client_id: &str,
    vendor: IdpVendor,
    cognito: Option<&CognitoPool>,
    secret_name_pattern: &str,
) -> Vec<SecretSource> {
    let mut sources = vec![SecretSource::Env(format!(
        "OAUTH_CLIENT_SECRET_{client_id}"
    ))];
    let underscored = format!("OAUTH_CLIENT_SECRET_{}", client_id.replace('-', "_"));
    if !sources.contains(&SecretSource::Env(underscored.clone())) {
        sources.push(SecretSource::Env(underscored));
    }
    sources.push(SecretSource::SecretsManager(
        secret_name_pattern.replace("{name}", client_id),
    ));
    if let Some(pool) = cognito {
        sources.push(SecretSource::Cognito {
            region: pool.region.clone(),
            pool_id: pool.pool_id.clone(),
        });
    }
    if let Some(var) = vendor_variable(vendor) {
        sources.push(SecretSource::Env(var.to_owned()));
        sources.push(SecretSource::SecretsManager(
            secret_name_pattern.replace("{name}", var),
        ));
    }
    sources
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: RefreshPolicy = RefreshPolicy {
        fraction: 0.8,
        jitter_fraction: 0.05,
        safety_margin: Duration::from_secs(60),
        default_lifetime: Duration::from_secs(3600),
        failure_backoff: Backoff {
            base: Duration::from_secs(5),
            cap: Duration::from_secs(300),
        },
    };

    #[test]
    fn lifetime_comes_from_expires_in_then_the_jwt_then_the_default() {
        assert_eq!(lifetime(Some(300), Some(2000), 1000, &P), 300);
        assert_eq!(lifetime(None, Some(1600), 1000, &P), 600);
        assert_eq!(lifetime(None, None, 1000, &P), 3600);
        assert_eq!(
            lifetime(Some(0), Some(900), 1000, &P),
            3600,
            "nonsense falls back to the default"
        );
    }

    #[test]
    fn refresh_is_at_about_eighty_percent_and_before_the_safety_margin() {
        assert_eq!(next_refresh(1000, 3600, 0.0, &P), 1000 + 2880);
        assert_eq!(
            next_refresh(1000, 3600, 1.0, &P),
            1000 + 2700,
            "jitter takes up to 5% off"
        );
        // 300 s tokens: 80% is 240 s, the 60 s margin allows it.
        assert_eq!(next_refresh(1000, 300, 0.0, &P), 1240);
        // 20 s tokens: the margin shrinks to 2 s, so about one fetch per lifetime (at 16 s).
        assert_eq!(next_refresh(1000, 20, 0.0, &P), 1016);
        // Were the fraction near 1, the margin still holds.
        let late = RefreshPolicy {
            fraction: 0.99,
            jitter_fraction: 0.0,
            ..P
        };
        assert_eq!(next_refresh(1000, 3600, 0.0, &late), 1000 + 3540);
        for lifetime in [1, 2, 20, 61, 300, 86_400] {
            for jitter in [0.0, 0.5, 1.0] {
                let at = next_refresh(0, lifetime, jitter, &P);
                assert!(
                    at >= 1 && at < lifetime.max(2),
                    "{lifetime} {jitter} -> {at}"
                );
            }
        }
    }

    #[test]
    fn failed_refreshes_back_off_but_retry_before_the_token_expires() {
        assert_eq!(retry_at(1000, Some(5000), 1, 0.0, &P), 1005);
        assert_eq!(
            retry_at(1000, Some(5000), 10, 0.0, &P),
            1300,
            "capped backoff"
        );
        assert_eq!(
            retry_at(1000, Some(1100), 10, 0.0, &P),
            1040,
            "well before expiry"
        );
        assert_eq!(
            retry_at(1000, Some(1030), 10, 0.0, &P),
            1001,
            "almost expired: at once"
        );
        assert_eq!(retry_at(1000, None, 2, 0.0, &P), 1010);
        assert!(expiring_unrefreshed(1000, 1050, 60));
        assert!(!expiring_unrefreshed(1000, 1100, 60));
    }

    #[test]
    fn the_jwt_exp_is_read_without_verification() {
        // {"alg":"RS256"}.{"sub":"c","exp":1999999999}.sig
        let token = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJjIiwiZXhwIjoxOTk5OTk5OTk5fQ.c2ln";
        assert_eq!(jwt_exp(token), Some(1_999_999_999));
        assert_eq!(jwt_exp("opaque-token"), None);
        assert_eq!(jwt_exp("a.!!!.c"), None);
    }

    #[test]
    fn vendors_get_their_scope_or_audience() {
        let aud = vec!["api://orders/".to_owned()];
        let scopes = vec!["orders/read".to_owned(), "orders/write".to_owned()];
        assert_eq!(
            token_request(IdpVendor::Entra, &aud, &scopes)
                .scope
                .as_deref(),
            Some("api://orders/.default")
        );
        let ready = vec!["api://x/.default".to_owned()];
        assert_eq!(
            token_request(IdpVendor::Entra, &ready, &[])
                .scope
                .as_deref(),
            Some("api://x/.default")
        );
        let auth0 = token_request(IdpVendor::Auth0, &["https://api.example.com".into()], &[]);
        assert_eq!(
            (auth0.audience.as_deref(), auth0.scope),
            (Some("https://api.example.com"), None)
        );
        assert_eq!(
            token_request(IdpVendor::Okta, &[], &scopes)
                .scope
                .as_deref(),
            Some("orders/read orders/write")
        );
        assert_eq!(
            token_request(IdpVendor::Unknown, &[], &[]),
            TokenRequest::default()
        );
    }

    #[test]
    fn secrets_are_looked_for_in_the_documented_order() {
        let pool = CognitoPool {
            region: "eu-west-1".into(),
            pool_id: "eu-west-1_AbC".into(),
        };
        let got: Vec<String> =
            secret_sources("a1-b2", IdpVendor::Cognito, Some(&pool), "registrar/{name}")
                .iter()
                .map(SecretSource::describe)
                .collect();
        assert_eq!(
            got,
            [
                "env OAUTH_CLIENT_SECRET_a1-b2",
                "env OAUTH_CLIENT_SECRET_a1_b2",
                "secretsmanager registrar/a1-b2",
                "cognito eu-west-1/eu-west-1_AbC",
            ]
        );
        let entra: Vec<String> = secret_sources("c", IdpVendor::Entra, None, "registrar/{name}")
            .iter()
            .map(SecretSource::describe)
            .collect();
        assert_eq!(
            entra,
            [
                "env OAUTH_CLIENT_SECRET_c",
                "secretsmanager registrar/c",
                "env ENTRA_CLIENT_SECRET",
                "secretsmanager registrar/ENTRA_CLIENT_SECRET"
            ]
        );
    }
}
