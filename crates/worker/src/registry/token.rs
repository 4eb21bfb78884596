//! The registry ingress token, read from a file and re-read whenever the file changes, or
//! obtained by client_credentials. Held as a `SecretString`: no `Debug` prints it.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::SystemTime;

use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

/// Why no token could be read. Names the file; never contains the token.
#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    /// The file is missing or unreadable.
    #[error("cannot read registry token file {path}")]
    Unreadable {
        /// The file.
        path: String,
        /// What the file system said.
        #[source]
        source: std::io::Error,
    },
    /// The file holds no token in any shape the registry tools write.
    #[error(
        "registry token file {path} has no token: expected JSON with `access_token` or `token` at the top level or under `tokens`, or a bare token"
    )]
    NoToken {
        /// The file.
        path: String,
    },
    /// Other users of the machine could read (or replace) the token.
    #[error(
        "registry token file {path} is open to other users (mode {mode:04o}): chmod 600 it, or pass --allow-shared-token-file (REGISTRAR_ALLOW_SHARED_TOKEN_FILE) if a mount cannot be made private"
    )]
    Shared {
        /// The file.
        path: String,
        /// Its permission bits.
        mode: u32,
    },
}

/// A token file in any shape `registry-contract.md` §2.1 lists: `{"access_token"}`,
/// `{"token"}`, `{"tokens": {"access_token"}}` (the UI download), the `ingress.json` of
/// `ingress_oauth.py`, or a bare token on one line.
#[derive(Debug)]
pub struct TokenFile {
    path: PathBuf,
    /// Accept a file that group or others may read or write.
    allow_shared: bool,
    cached: Mutex<Option<(SystemTime, u64, SecretString)>>,
}

impl TokenFile {
    /// A token file that only its owner may read or write.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            allow_shared: false,
            cached: Mutex::new(None),
        }
    }

    /// Also accept a file others may read (a mount that cannot be made private).
    #[must_use]
    pub fn allow_shared(mut self, allow: bool) -> Self {
        self.allow_shared = allow;
        self
    }

    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// The current token; the file is parsed again only when its mtime or size changed.
    pub fn token(&self) -> Result<SecretString, TokenFileError> {
        let display = self.path.display().to_string();
        let unreadable = |source: std::io::Error| TokenFileError::Unreadable {
            path: display.clone(),
            source,
        };
        let meta = std::fs::metadata(&self.path).map_err(unreadable)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 && !self.allow_shared {
                return Err(TokenFileError::Shared {
                    path: display,
                    mode,
                });
            }
        }
        let stamp = (meta.modified().map_err(unreadable)?, meta.len());
        let mut cached = self
            .cached
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((mtime, len, token)) = cached.as_ref()
            && (*mtime, *len) == stamp
        {
            return Ok(token.clone());
        }
        let text = SecretString::from(std::fs::read_to_string(&self.path).map_err(unreadable)?);
        let token = parse_token(text.expose_secret())
            .map(SecretString::from)
            .ok_or(TokenFileError::NoToken { path: display })?;
        *cached = Some((stamp.0, stamp.1, token.clone()));
        Ok(token)
    }
}

/// The registry's ingress token obtained by client_credentials from the registry's IdP, and
/// renewed at about 80% of its lifetime (or at once after a 401), so a long-running worker never
/// stops on an expired registry token.
#[derive(Debug)]
pub struct ClientCredentialsToken {
    pub oidc: crate::net::oauth::Oidc,
    pub trust: registrar_core::trust::TrustPolicy,
    pub issuer: registrar_core::trust::TrustedIssuer,
    pub client_id: String,
    pub secret: SecretString,
    pub request: registrar_core::refresh::TokenRequest,
    cached: tokio::sync::Mutex<Option<(SecretString, u64)>>,
}

impl ClientCredentialsToken {
    pub fn new(
        oidc: crate::net::oauth::Oidc,
        trust: registrar_core::trust::TrustPolicy,
        issuer: registrar_core::trust::TrustedIssuer,
        client_id: String,
        secret: SecretString,
        request: registrar_core::refresh::TokenRequest,
    ) -> Self {
        Self {
            oidc,
            trust,
            issuer,
            client_id,
            secret,
            request,
            cached: tokio::sync::Mutex::new(None),
        }
    }

    async fn token(&self) -> Result<SecretString, registrar_core::PortError> {
        use registrar_core::refresh::{RefreshPolicy, jwt_exp, lifetime, next_refresh};
        let mut cached = self.cached.lock().await;
        let now = crate::clock::now();
        if let Some((token, renew_at)) = cached.as_ref()
            && now < *renew_at
        {
            return Ok(token.clone());
        }
        let issued = self
            .oidc
            .issue(
                &self.trust,
                &self.issuer,
                &self.client_id,
                &self.secret,
                &self.request,
            )
            .await
            .map_err(|e| match e {
                crate::net::oauth::IssueError::Failed(e) => e,
                crate::net::oauth::IssueError::Refused(refusal) => registrar_core::PortError::new(
                    "registry",
                    "token",
                    registrar_core::ErrorClass::Terminal,
                    registry_idp_refusal(&refusal),
                ),
            })?;
        let policy = RefreshPolicy::default();
        let life = lifetime(
            issued.expires_in,
            jwt_exp(issued.access_token.expose_secret()),
            now,
            &policy,
        );
        let token = issued.access_token.clone();
        *cached = Some((issued.access_token, next_refresh(now, life, 0.0, &policy)));
        tracing::info!(
            expires_in_s = life,
            "Registry token obtained by client_credentials."
        );
        Ok(token)
    }
}

/// A refusal of the registry's own IdP, in terms of the flag that configures it. That IdP is
/// trusted through --registry-token-discovery-url alone: the egress trust flags a refusal names
/// for egress IdPs (--trusted-token-hosts) do not apply to it.
fn registry_idp_refusal(refusal: &registrar_core::trust::Refusal) -> String {
    match refusal {
        registrar_core::trust::Refusal::TokenEndpoint {
            issuer,
            endpoint,
            why,
        } => format!(
            "registry IdP: token endpoint {endpoint:?} of issuer {issuer} refused: {why}; the \
             registry's IdP (--registry-token-discovery-url) must serve its token endpoint over \
             https on its own host"
        ),
        other => format!("registry IdP: refused: {other}"),
    }
}

/// Where the registry ingress token comes from.
#[derive(Debug)]
pub enum TokenSource {
    File(TokenFile),
    ClientCredentials(Box<ClientCredentialsToken>),
}

impl TokenSource {
    /// The current token.
    pub async fn get(&self) -> Result<SecretString, registrar_core::PortError> {
        match self {
            Self::File(f) => f.token().map_err(|e| {
                registrar_core::PortError::new(
                    "registry",
                    "token",
                    registrar_core::ErrorClass::Terminal,
                    registrar_core::error::Chain(&e).to_string(),
                )
                .with_source(e)
            }),
            Self::ClientCredentials(c) => c.token().await,
        }
    }

    /// After a 401: drop a renewable token so the next call fetches a new one. Returns whether
    /// retrying can help.
    pub async fn invalidate(&self) -> bool {
        match self {
            Self::File(_) => false,
            Self::ClientCredentials(c) => {
                *c.cached.lock().await = None;
                true
            }
        }
    }
}

fn parse_token(text: &str) -> Option<String> {
    let text = text.trim();
    let Ok(json) = serde_json::from_str::<Value>(text) else {
        let bare =
            !text.is_empty() && !text.contains(char::is_whitespace) && !text.starts_with('{');
        return bare.then(|| text.to_owned());
    };
    let pick = |v: &Value| {
        ["access_token", "token"].iter().find_map(|k| {
            v.get(k)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        })
    };
    pick(&json).or_else(|| json.get("tokens").and_then(pick))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_documented_shape_yields_the_token() {
        for text in [
            r#"{"access_token":"A"}"#,
            r#"{"token":"A"}"#,
            r#"{"success":true,"tokens":{"access_token":"A","refresh_token":"r","expires_in":28800},"client_id":"user-generated"}"#,
            r#"{"provider":"keycloak","access_token":"A","expires_at":1,"token_type":"Bearer"}"#,
            "A\n",
        ] {
            assert_eq!(parse_token(text).as_deref(), Some("A"), "{text}");
        }
        assert_eq!(parse_token(r#"{"nothing":1}"#), None);
        assert_eq!(parse_token(""), None);
    }

    /// An IdP whose discovery document puts its token endpoint on another host.
    async fn idp_with_foreign_token_endpoint() -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let issuer = base.clone();
        let app = axum::Router::new().route(
            "/.well-known/openid-configuration",
            axum::routing::get(move || {
                let doc = serde_json::json!({
                    "issuer": issuer,
                    "token_endpoint": "https://other.example/token",
                });
                async move { axum::Json(doc) }
            }),
        );
        tokio::spawn(async move { axum::serve(listener, app).await });
        base
    }

    #[tokio::test]
    async fn a_refused_registry_idp_names_the_registry_idp_flag_only() {
        use registrar_core::trust::{COGNITO_ISSUER_BASE, TrustConfig, TrustPolicy};
        let base = idp_with_foreign_token_endpoint().await;
        let trust = TrustPolicy::new(&TrustConfig {
            trusted: std::slice::from_ref(&base),
            cognito_issuer_base: COGNITO_ISSUER_BASE,
            ..TrustConfig::default()
        })
        .expect("policy");
        let trusted = trust
            .issuer_of(&format!("{base}/.well-known/openid-configuration"), &[])
            .expect("trusted");
        let oidc = crate::net::oauth::Oidc::new(
            std::time::Duration::from_secs(5),
            std::time::Duration::from_secs(60),
            std::sync::Arc::new(crate::clock::SystemClock::new()),
        )
        .expect("client");
        let source = TokenSource::ClientCredentials(Box::new(ClientCredentialsToken::new(
            oidc,
            trust,
            trusted,
            "registrar".into(),
            SecretString::from("s3cret-value"),
            registrar_core::refresh::TokenRequest::default(),
        )));
        let e = source.get().await.expect_err("refused").to_string();
        assert!(
            e.contains("refused") && e.contains("--registry-token-discovery-url"),
            "{e}"
        );
        assert!(!e.contains("--trusted-token-hosts"), "{e}");
        assert!(!e.contains("--allow-insecure-registry"), "{e}");
        assert!(!e.contains("s3cret-value"), "{e}");
    }

    fn set_mode(path: &std::path::Path, mode: u32) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    }

    #[test]
    fn a_token_file_others_can_read_is_refused_unless_allowed() {
        let dir = std::env::temp_dir().join(format!("registrar-token-mode-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("token.json");
        std::fs::write(&path, r#"{"access_token":"t0ken-value"}"#).expect("write");
        set_mode(&path, 0o644);
        let e = TokenFile::new(&path).token().expect_err("shared");
        assert!(
            e.to_string().contains("mode 0644") && e.to_string().contains("chmod 600"),
            "{e}"
        );
        assert!(!e.to_string().contains("t0ken-value"));
        let shared = TokenFile::new(&path).allow_shared(true);
        assert_eq!(
            shared.token().expect("allowed").expose_secret(),
            "t0ken-value"
        );
        set_mode(&path, 0o600);
        assert!(TokenFile::new(&path).token().is_ok());
        assert!(!format!("{shared:?}").contains("t0ken-value"));
        std::fs::remove_dir_all(&dir).expect("rm");
    }

    #[test]
    fn the_file_is_reread_when_it_changes() {
        let dir = std::env::temp_dir().join(format!("registrar-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("token.json");
        std::fs::write(&path, r#"{"access_token":"first"}"#).expect("write");
        set_mode(&path, 0o600);
        let file = TokenFile::new(&path);
        assert_eq!(file.token().expect("token").expose_secret(), "first");
        std::fs::write(&path, r#"{"access_token":"second-longer"}"#).expect("write");
        assert_eq!(
            file.token().expect("token").expose_secret(),
            "second-longer"
        );
        std::fs::remove_file(&path).expect("rm");
        let err = file.token().expect_err("gone");
        assert!(err.to_string().contains("token.json"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
