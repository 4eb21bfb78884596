//! Client secrets, first match wins, in the order `registrar_core::refresh::secret_sources`
//! gives. The environment is read through an injectable lookup, so tests never mutate it.

use std::sync::Arc;

use registrar_core::refresh::{SecretSource, secret_sources};
use registrar_core::tokens::IdpVendor;

use super::oidc::Secret;

/// An environment lookup.
pub type EnvLookup = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// No secret was found: the names that were tried (never a value).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no client secret for {client_id}; tried {}", tried.join(", "))]
pub struct MissingSecret {
    pub client_id: String,
    pub tried: Vec<String>,
}

/// Resolves client secrets.
#[derive(Clone)]
pub struct SecretResolver {
    env: EnvLookup,
    name_pattern: String,
}

impl std::fmt::Debug for SecretResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretResolver")
            .field("name_pattern", &self.name_pattern)
            .finish_non_exhaustive()
    }
}

impl SecretResolver {
    /// `name_pattern` names Secrets Manager secrets, `{name}` standing for the client id or the
    /// vendor variable.
    pub fn new(env: EnvLookup, name_pattern: impl Into<String>) -> Self {
        Self {
            env,
            name_pattern: name_pattern.into(),
        }
    }

    /// Reads the process environment.
    pub fn from_process_env(name_pattern: impl Into<String>) -> Self {
        Self::new(
            Arc::new(|name: &str| std::env::var(name).ok().filter(|v| !v.is_empty())),
            name_pattern,
        )
    }

    /// The secret of `client_id` and where it was found.
    pub fn resolve(
        &self,
        client_id: &str,
        vendor: IdpVendor,
        discovery_url: &str,
    ) -> Result<(Secret, String), MissingSecret> {
        let mut tried = Vec::new();
        for source in secret_sources(client_id, vendor, discovery_url, &self.name_pattern) {
            match &source {
                SecretSource::Env(name) => {
                    if let Some(value) = (self.env)(name) {
                        return Ok((Secret(value), source.describe()));
                    }
                    tried.push(source.describe());
                }
                // Secrets Manager and Cognito lookups are not wired into this resolver yet.
                SecretSource::SecretsManager(_) | SecretSource::Cognito { .. } => {
                    tried.push(format!("{} (not available yet)", source.describe()));
                }
            }
        }
        Err(MissingSecret {
            client_id: client_id.to_owned(),
            tried,
        })
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

    #[test]
    fn the_per_client_variable_wins_and_hyphens_may_be_underscores() {
        let r = SecretResolver::new(
            env(&[
                ("OAUTH_CLIENT_SECRET_a_b", "s1"),
                ("ENTRA_CLIENT_SECRET", "v"),
            ]),
            "x/{name}",
        );
        let (secret, source) = r
            .resolve(
                "a-b",
                IdpVendor::Entra,
                "https://login.microsoftonline.com/t",
            )
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
            .expect("vendor");
        assert_eq!(secret.0, "v");
    }

    #[test]
    fn a_missing_secret_names_what_was_tried_and_never_a_value() {
        let r = SecretResolver::new(env(&[("UNRELATED", "zzz")]), "x/{name}");
        let e = r
            .resolve(
                "c1",
                IdpVendor::Okta,
                "https://x.okta.com/.well-known/openid-configuration",
            )
            .expect_err("missing");
        let text = e.to_string();
        assert!(
            text.contains("env OAUTH_CLIENT_SECRET_c1") && text.contains("env OKTA_CLIENT_SECRET"),
            "{text}"
        );
        assert!(!text.contains("zzz"));
        assert_eq!(format!("{:?}", Secret("hunter2".into())), "Secret(***)");
    }
}
