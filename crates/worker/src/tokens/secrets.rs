//! Client secrets, first match wins, in the order `registrar_core::refresh::secret_sources`
//! gives: environment, Secrets Manager, Cognito, then the vendor secret. The environment is read
//! through an injectable lookup, so tests never mutate it. Values are never logged.

use std::sync::Arc;

use aws_config::{Region, SdkConfig};
use registrar_core::PortError;
use registrar_core::refresh::{SecretSource, secret_sources};
use registrar_core::tokens::IdpVendor;

use super::oidc::Secret;
use crate::aws::classify_sdk_error;

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
    /// A source could not be asked (access denied, throttled, unreachable).
    #[error(transparent)]
    Lookup(#[from] PortError),
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

/// `client_secret` of a JSON secret, or the whole string.
fn secret_value(text: &str) -> String {
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(serde_json::Value::Object(o)) => o
            .get("client_secret")
            .and_then(|v| v.as_str())
            .map_or_else(|| text.to_owned(), str::to_owned),
        _ => text.to_owned(),
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

    /// The secret of `client_id` and where it was found.
    pub async fn resolve(
        &self,
        client_id: &str,
        vendor: IdpVendor,
        discovery_url: &str,
    ) -> Result<(Secret, String), SecretError> {
        let mut tried = Vec::new();
        for source in secret_sources(client_id, vendor, discovery_url, &self.name_pattern) {
            let found = match &source {
                SecretSource::Env(name) => (self.env)(name),
                SecretSource::SecretsManager(name) => match &self.aws {
                    Some(aws) => self.look_in_secrets_manager(aws, name).await?,
                    None => None,
                },
                SecretSource::Cognito { region, pool_id } => match &self.aws {
                    Some(aws) => {
                        self.look_in_cognito(aws, region, pool_id, client_id)
                            .await?
                    }
                    None => None,
                },
            };
            match found {
                Some(value) => return Ok((Secret(value), source.describe())),
                None => tried.push(source.describe()),
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
        let client = aws_sdk_secretsmanager::Client::new(aws);
        match client.get_secret_value().secret_id(name).send().await {
            Ok(out) => Ok(out.secret_string().map(secret_value)),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_resource_not_found_exception()) =>
            {
                Ok(None)
            }
            Err(e) => Err(classify_sdk_error(
                "secretsmanager",
                &format!("GetSecretValue {name}"),
                &e,
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
        let config = aws_sdk_cognitoidentityprovider::config::Builder::from(aws)
            .region(Region::new(region.to_owned()))
            .build();
        let client = aws_sdk_cognitoidentityprovider::Client::from_conf(config);
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
            Err(e) => Err(classify_sdk_error(
                "cognito",
                &format!("DescribeUserPoolClient {pool_id}"),
                &e,
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> EnvLookup {
        let map: std::collections::HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect();
        Arc::new(move |name: &str| map.get(name).cloned())
    }

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
        let (secret, source) = r
            .resolve(
                "a-b",
                IdpVendor::Entra,
                "https://login.microsoftonline.com/t",
            )
            .await
            .expect("found");
        assert_eq!(
            (secret.0.as_str(), source.as_str()),
            ("s1", "env OAUTH_CLIENT_SECRET_a_b")
        );
        let (secret, _) = r
            .resolve(
                "other",
                IdpVendor::Entra,
                "https://login.microsoftonline.com/t",
            )
            .await
            .expect("vendor");
        assert_eq!(secret.0, "v");
    }

    #[tokio::test]
    async fn a_missing_secret_names_what_was_tried_and_never_a_value() {
        let r = SecretResolver::new(env(&[("UNRELATED", "zzz")]), "x/{name}", None);
        let e = r
            .resolve(
                "c1",
                IdpVendor::Okta,
                "https://x.okta.com/.well-known/openid-configuration",
            )
            .await
            .expect_err("missing");
        let text = e.to_string();
        assert!(
            text.contains("env OAUTH_CLIENT_SECRET_c1") && text.contains("env OKTA_CLIENT_SECRET"),
            "{text}"
        );
        assert!(!text.contains("zzz"));
        assert_eq!(format!("{:?}", Secret("hunter2".into())), "Secret(***)");
    }

    #[test]
    fn json_secrets_yield_their_client_secret() {
        assert_eq!(secret_value(r#"{"client_secret":"abc","other":1}"#), "abc");
        assert_eq!(secret_value("plain"), "plain");
        assert_eq!(secret_value(r#"{"password":"x"}"#), r#"{"password":"x"}"#);
    }
}
