//! Client secrets, first match wins, in the order `registrar_core::refresh::secret_sources`
//! gives: environment, Secrets Manager, Cognito, then the vendor secret. A secret found is used
//! only when the trust policy lets it go to the issuer at hand (a secret bound to another issuer
//! is passed over, and said so). The environment is read through an injectable lookup, so tests
//! never mutate it. Values are never logged.

use std::sync::Arc;

use aws_config::{Region, SdkConfig};
use registrar_core::PortError;
use registrar_core::refresh::{SecretSource, secret_sources};
use registrar_core::tokens::IdpVendor;
use registrar_core::trust::{CognitoPool, Refusal, SecretBinding, TrustPolicy, TrustedIssuer};

use crate::aws::from_sdk_error;
use aws_sdk_cognitoidentityprovider::error::ProvideErrorMetadata;
use secrecy::SecretString;

/// An environment lookup.
pub type EnvLookup = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// No secret was found: the names that were tried (never a value).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no client secret for {client_id}; tried {}", tried.join(", "))]
pub struct MissingSecret {
    pub client_id: String,
    pub tried: Vec<String>,
}

/// Why no secret came back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    /// Every source answered "not here".
    #[error(transparent)]
    Missing(#[from] MissingSecret),
    /// Secrets were found, but none may go to this issuer (the first refusal; never a value).
    #[error(transparent)]
    NotForIssuer(Refusal),
    /// A source could not be asked (access denied, throttled, unreachable).
    #[error(transparent)]
    Lookup(#[from] PortError),
}

/// A secret and where it came from.
#[derive(Debug, Clone)]
pub struct FoundSecret {
    pub secret: SecretString,
    /// `env OAUTH_CLIENT_SECRET_x`, `secretsmanager name`, `cognito region/pool`.
    pub source: String,
}

/// Client ids name environment variables and Secrets Manager secrets: anything but letters,
/// digits and `-_.+=@` could reach names outside the egress prefix (`/`), so it is refused.
/// Real IdPs' client ids (Cognito, Entra GUIDs, Okta, Auth0, Keycloak) fit.
pub fn check_client_id(client_id: &str) -> Result<(), String> {
    // A vendor variable's name (`ENTRA_CLIENT_SECRET`) would read the vendor-wide secret.
    let ok = !client_id.is_empty()
        && client_id.len() <= 256
        && client_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.+=@".contains(&b))
        && !client_id.to_ascii_uppercase().ends_with("_CLIENT_SECRET");
    if ok {
        Ok(())
    } else {
        Err(format!(
            "client id {:?} is not looked up: only letters, digits and -_.+=@ (at most 256)",
            client_id.chars().take(80).collect::<String>()
        ))
    }
}

/// Resolves client secrets.
#[derive(Clone)]
pub struct SecretResolver {
    env: EnvLookup,
    name_pattern: String,
    aws: Option<SdkConfig>,
}

impl std::fmt::Debug for SecretResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretResolver")
            .field("name_pattern", &self.name_pattern)
            .field("aws", &self.aws.is_some())
            .finish_non_exhaustive()
    }
}

/// A JSON secret's string `client_secret`, bound to its `issuer` when it names one; or a plain
/// string (unbound). A JSON object without a string `client_secret`, or with an `issuer` that is
/// not a string, is refused (`Err` says why; never a value).
fn secret_value(text: &str) -> Result<(String, SecretBinding), String> {
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(serde_json::Value::Object(o)) => {
            let binding = match o.get("issuer") {
                None => SecretBinding::Unbound,
                Some(serde_json::Value::String(i)) => SecretBinding::Issuer(i.clone()),
                Some(_) => return Err("its `issuer` is not a string".into()),
            };
            match o.get("client_secret") {
                Some(serde_json::Value::String(v)) if !v.is_empty() => Ok((v.clone(), binding)),
                _ => Err("it is JSON without a string `client_secret`".into()),
            }
        }
        _ => Ok((text.to_owned(), SecretBinding::Unbound)),
    }
}

impl SecretResolver {
    /// `name_pattern` names Secrets Manager secrets, `{name}` standing for the client id or the
    /// vendor variable. Without `aws`, only the environment is consulted.
    pub fn new(env: EnvLookup, name_pattern: impl Into<String>, aws: Option<SdkConfig>) -> Self {
        Self {
            env,
            name_pattern: name_pattern.into(),
            aws,
        }
    }

    /// Reads the process environment, Secrets Manager and Cognito.
    pub fn from_process_env(name_pattern: impl Into<String>, aws: SdkConfig) -> Self {
        Self::new(
            Arc::new(|name: &str| std::env::var(name).ok().filter(|v| !v.is_empty())),
            name_pattern,
            Some(aws),
        )
    }

    /// The first secret of `client_id`, and where it was found, when it may go to `issuer`. The
    /// search stops at the first secret found: one that may not go there is refused, never
    /// replaced by a later (say, vendor-wide) one.
    pub async fn resolve(
        &self,
        client_id: &str,
        vendor: IdpVendor,
        trust: &TrustPolicy,
        issuer: &TrustedIssuer,
    ) -> Result<FoundSecret, SecretError> {
        let mut tried = Vec::new();
        let sources = secret_sources(
            client_id,
            vendor,
            issuer.cognito.as_ref(),
            &self.name_pattern,
        );
        for source in sources {
            let name = source.describe();
            let found = match &source {
                SecretSource::Env(var) => (self.env)(var).map(|v| (v, SecretBinding::Unbound)),
                SecretSource::SecretsManager(secret) => match &self.aws {
                    Some(aws) => match self.look_in_secrets_manager(aws, secret).await? {
                        // `why` is ours, and no JSON error is kept: it could quote the secret.
                        Some(text) => Some(secret_value(&text).map_err(|why| {
                            SecretError::Lookup(PortError::new(
                                "secretsmanager",
                                format!("GetSecretValue {secret}"),
                                registrar_core::ErrorClass::Terminal,
                                format!("secret {secret} is not usable: {why}"),
                            ))
                        })?),
                        None => None,
                    },
                    None => None,
                },
                SecretSource::Cognito { region, pool_id } => match &self.aws {
                    Some(aws) => {
                        let value = self
                            .look_in_cognito(aws, region, pool_id, client_id)
                            .await
                            .map_err(|e| {
                                // Not granted (a pool outside TrustedCognitoUserPoolArns):
                                // refused, not retried as a failure.
                                if e.operation == COGNITO_DENIED {
                                    SecretError::NotForIssuer(Refusal::SecretNotForIssuer {
                                        client: registrar_core::trust::shown(client_id),
                                        source_name: name.clone(),
                                        issuer: issuer.issuer.clone(),
                                        why: "the worker may not read this pool's app clients \
                                              (not in TrustedCognitoUserPoolArns)"
                                            .into(),
                                    })
                                } else {
                                    SecretError::Lookup(e)
                                }
                            })?;
                        let pool = CognitoPool {
                            region: region.clone(),
                            pool_id: pool_id.clone(),
                        };
                        value.map(|v| (v, SecretBinding::CognitoPool(pool)))
                    }
                    None => None,
                },
            };
            match found {
                Some((value, binding)) => {
                    trust
                        .may_send(issuer, client_id, &name, &binding)
                        .map_err(SecretError::NotForIssuer)?;
                    return Ok(FoundSecret {
                        secret: SecretString::from(value),
                        source: name,
                    });
                }
                None => tried.push(name),
            }
        }
        Err(MissingSecret {
            client_id: client_id.to_owned(),
            tried,
        }
        .into())
    }

    async fn look_in_secrets_manager(
        &self,
        aws: &SdkConfig,
        name: &str,
    ) -> Result<Option<String>, PortError> {
        let client = crate::aws::clients::secretsmanager(aws);
        match client.get_secret_value().secret_id(name).send().await {
            Ok(out) => Ok(out.secret_string().map(str::to_owned)),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_resource_not_found_exception()) =>
            {
                Ok(None)
            }
            Err(e) => Err(from_sdk_error(
                "secretsmanager",
                &format!("GetSecretValue {name}"),
                e,
            )),
        }
    }

    async fn look_in_cognito(
        &self,
        aws: &SdkConfig,
        region: &str,
        pool_id: &str,
        client_id: &str,
    ) -> Result<Option<String>, PortError> {
        let in_region = aws
            .to_builder()
            .region(Region::new(region.to_owned()))
            .build();
        let client = crate::aws::clients::cognito(&in_region);
        match client
            .describe_user_pool_client()
            .user_pool_id(pool_id)
            .client_id(client_id)
            .send()
            .await
        {
            Ok(out) => Ok(out
                .user_pool_client()
                .and_then(|c| c.client_secret())
                .map(str::to_owned)),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_resource_not_found_exception()) =>
            {
                Ok(None)
            }
            // Decided on the error code, never on its message (which may echo our input).
            Err(e) if e.code() == Some("AccessDeniedException") => Err(PortError::new(
                "cognito",
                COGNITO_DENIED,
                registrar_core::ErrorClass::Terminal,
                format!("DescribeUserPoolClient {pool_id}: access denied"),
            )),
            Err(e) => Err(from_sdk_error(
                "cognito",
                &format!("DescribeUserPoolClient {pool_id}"),
                e,
            )),
        }
    }
}

/// The operation of a Cognito lookup IAM refused (a pool outside the worker's grants).
const COGNITO_DENIED: &str = "DescribeUserPoolClient (access denied)";

#[cfg(test)]
mod tests {
    use registrar_core::trust::{COGNITO_ISSUER_BASE, TrustConfig};
    use secrecy::ExposeSecret;

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> EnvLookup {
        let map: std::collections::HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect();
        Arc::new(move |name: &str| map.get(name).cloned())
    }

    fn issuer(discovery_url: &str, trusted: &[&str]) -> (TrustPolicy, TrustedIssuer) {
        let t: Vec<String> = trusted.iter().map(|s| (*s).to_owned()).collect();
        let regions = vec!["us-east-1".to_owned()];
        let policy = TrustPolicy::new(&TrustConfig {
            trusted: &t,
            cognito_regions: &regions,
            cognito_issuer_base: COGNITO_ISSUER_BASE,
            ..TrustConfig::default()
        })
        .expect("policy");
        let trusted = policy.issuer_of(discovery_url, &[]).expect("trusted");
        (policy, trusted)
    }

    const ENTRA: &str = "https://login.microsoftonline.com/t/v2.0/.well-known/openid-configuration";

    #[tokio::test]
    async fn the_per_client_variable_wins_and_hyphens_may_be_underscores() {
        let r = SecretResolver::new(
            env(&[
                ("OAUTH_CLIENT_SECRET_a_b", "s1"),
                ("ENTRA_CLIENT_SECRET", "v"),
            ]),
            "x/{name}",
            None,
        );
        let entra = issuer(ENTRA, &["login.microsoftonline.com"]);
        let found = r
            .resolve("a-b", IdpVendor::Entra, &entra.0, &entra.1)
            .await
            .expect("found");
        assert_eq!(
            (found.secret.expose_secret(), found.source.as_str()),
            ("s1", "env OAUTH_CLIENT_SECRET_a_b")
        );
        let found = r
            .resolve("other", IdpVendor::Entra, &entra.0, &entra.1)
            .await
            .expect("vendor");
        assert_eq!(found.secret.expose_secret(), "v");
    }

    #[tokio::test]
    async fn unbound_secrets_never_go_to_an_issuer_trusted_only_as_a_cognito_pool() {
        let r = SecretResolver::new(env(&[("OAUTH_CLIENT_SECRET_c1", "zzz")]), "x/{name}", None);
        let pool = issuer(
            "https://cognito-idp.us-east-1.amazonaws.com/us-east-1_Ab1/.well-known/openid-configuration",
            &[],
        );
        let e = r
            .resolve("c1", IdpVendor::Cognito, &pool.0, &pool.1)
            .await
            .expect_err("refused");
        assert!(matches!(e, SecretError::NotForIssuer(_)), "{e}");
        assert!(e.to_string().contains("env OAUTH_CLIENT_SECRET_c1"), "{e}");
        assert!(!e.to_string().contains("zzz"));
    }

    #[tokio::test]
    async fn a_missing_secret_names_what_was_tried_and_never_a_value() {
        let r = SecretResolver::new(env(&[("UNRELATED", "zzz")]), "x/{name}", None);
        let okta = issuer(
            "https://x.okta.com/oauth2/default/.well-known/openid-configuration",
            &["x.okta.com"],
        );
        let e = r
            .resolve("c1", IdpVendor::Okta, &okta.0, &okta.1)
            .await
            .expect_err("missing");
        let text = e.to_string();
        assert!(
            text.contains("env OAUTH_CLIENT_SECRET_c1") && text.contains("env OKTA_CLIENT_SECRET"),
            "{text}"
        );
        assert!(!text.contains("zzz"));
    }

    #[test]
    fn json_secrets_yield_their_client_secret_and_issuer() {
        assert_eq!(
            secret_value(r#"{"client_secret":"abc","other":1}"#),
            Ok(("abc".to_owned(), SecretBinding::Unbound))
        );
        assert_eq!(
            secret_value(r#"{"client_secret":"abc","issuer":"https://idp.example.com"}"#),
            Ok((
                "abc".to_owned(),
                SecretBinding::Issuer("https://idp.example.com".into())
            ))
        );
        assert_eq!(
            secret_value("plain"),
            Ok(("plain".to_owned(), SecretBinding::Unbound))
        );
        // Never the whole JSON as a secret, never an issuer that is not a string.
        assert!(secret_value(r#"{"password":"x"}"#).is_err());
        assert!(secret_value(r#"{"client_secret":"abc","issuer":["https://a"]}"#).is_err());
        assert!(secret_value(r#"{"client_secret":"abc","issuer":null}"#).is_err());
    }

    #[tokio::test]
    async fn a_secret_refused_for_this_issuer_is_never_replaced_by_a_vendor_secret() {
        // The per-client variable is found first; with two issuers trusted and no mapping it
        // may not go to this one, and the vendor-wide secret is not tried instead.
        let r = SecretResolver::new(
            env(&[
                ("OAUTH_CLIENT_SECRET_c1", "mine"),
                ("OKTA_CLIENT_SECRET", "vendor"),
            ]),
            "x/{name}",
            None,
        );
        let okta = issuer(
            "https://x.okta.com/oauth2/default/.well-known/openid-configuration",
            &["x.okta.com", "https://other.example"],
        );
        let e = r
            .resolve("c1", IdpVendor::Okta, &okta.0, &okta.1)
            .await
            .expect_err("refused");
        assert!(matches!(e, SecretError::NotForIssuer(_)), "{e}");
        assert!(e.to_string().contains("env OAUTH_CLIENT_SECRET_c1"), "{e}");
    }

    #[test]
    fn client_ids_that_could_name_other_secrets_are_refused() {
        for ok in [
            "4f1a2b3c4d5e6f7g8h9i0j1k2l",
            "0oa1b2c3",
            "my-client_1.x",
            "a@b",
        ] {
            assert!(check_client_id(ok).is_ok(), "{ok}");
        }
        for bad in [
            "../registry-client-secret",
            "a/b",
            "",
            "a b",
            "x\ny",
            "ENTRA_CLIENT_SECRET",
            "okta_client_secret",
        ] {
            assert!(check_client_id(bad).is_err(), "{bad}");
        }
    }
}
