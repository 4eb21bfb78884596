//! Token-manifest rows and IdP vendor rules.

use serde::{Deserialize, Serialize};

/// The identity provider family, detected from a discovery URL as the Python refresher does
/// (`registry-contract.md` §1.9 step 2: first match wins).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IdpVendor {
    /// Amazon Cognito user pools (`cognito-idp.<region>.amazonaws.com`).
    Cognito,
    /// Auth0 (`*.auth0.com`): asked for an `audience`.
    Auth0,
    /// Okta (`*.okta.com`).
    Okta,
    /// Microsoft Entra ID (`login.microsoftonline.com`): asked for `<audience>/.default`.
    Entra,
    /// Keycloak (a `/realms/` path).
    Keycloak,
    /// None of the above: scopes only, no vendor secret variable.
    Unknown,
}

impl IdpVendor {
    /// The vendor decides only what a token request asks for (scope or audience) and which
    /// vendor-wide secret variable is tried, never whether a secret may be sent (that is
    /// [`crate::trust`]'s). It is read from the parsed host, never from a substring of the URL:
    /// `https://evil.example/cognito-idp.us-east-1.amazonaws.com/...` is not Cognito.
    pub fn detect(discovery_url: &str) -> Self {
        let Ok(url) = url::Url::parse(discovery_url.trim()) else {
            return Self::Unknown;
        };
        let host = url.host_str().unwrap_or_default();
        let under = |domain: &str| host.ends_with(&format!(".{domain}"));
        let cognito = host
            .strip_prefix("cognito-idp.")
            .and_then(|rest| rest.strip_suffix(".amazonaws.com"))
            .is_some_and(crate::reach::is_region_code);
        if cognito {
            Self::Cognito
        } else if under("auth0.com") {
            Self::Auth0
        } else if under("okta.com") {
            Self::Okta
        } else if host == "login.microsoftonline.com" {
            Self::Entra
        } else if url.path().contains("/realms/") {
            Self::Keycloak
        } else {
            Self::Unknown
        }
    }

    /// The lowercase name the Python refresher's manifest and our state rows use.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Cognito => "cognito",
            Self::Auth0 => "auth0",
            Self::Okta => "okta",
            Self::Entra => "entra",
            Self::Keycloak => "keycloak",
            Self::Unknown => "unknown",
        }
    }
}

/// What the token refresher needs to know about one resource behind a CUSTOM_JWT authorizer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestFields {
    /// The registry path of the entry the token goes into.
    pub path: String,
    /// The resource's identity ([`crate::identity::ResourceRef::arn`]).
    pub arn: String,
    /// Where the entry points (a gateway's `gatewayUrl`): a token is PATCHed only into an
    /// entry that still points there. Empty in rows written before it was recorded.
    #[serde(default)]
    pub url: String,
    /// The authorizer's OIDC discovery URL.
    pub discovery_url: String,
    /// The authorizer's allowed clients: the client ids a token may be requested for.
    pub allowed_clients: Vec<String>,
    /// The authorizer's allowed audiences (Entra and Auth0 requests use the first).
    pub allowed_audience: Vec<String>,
    /// The authorizer's allowed scopes (requested by the other vendors).
    pub allowed_scopes: Vec<String>,
    /// Detected from `discovery_url`.
    pub idp_vendor: IdpVendor,
}

/// One entry of the Python refresher's `token_refresh_manifest.json` (`registry-contract.md`
/// §1.8), so the existing refresher can still read what this service records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PythonManifestEntry {
    /// The registry path of the entry.
    pub server_path: String,
    /// The Python tool's name for the resource ARN (a runtime's ARN for runtime rows).
    pub gateway_arn: String,
    /// The authorizer's OIDC discovery URL.
    pub discovery_url: String,
    /// The authorizer's allowed clients.
    pub allowed_clients: Vec<String>,
    /// The authorizer's allowed audiences.
    pub allowed_audience: Vec<String>,
    /// Detected from `discovery_url`.
    pub idp_vendor: IdpVendor,
}

impl From<&ManifestFields> for PythonManifestEntry {
    fn from(m: &ManifestFields) -> Self {
        Self {
            server_path: m.path.clone(),
            gateway_arn: m.arn.clone(),
            discovery_url: m.discovery_url.clone(),
            allowed_clients: m.allowed_clients.clone(),
            allowed_audience: m.allowed_audience.clone(),
            idp_vendor: m.idp_vendor,
        }
    }
}

/// The Python manifest for `rows`, sorted by path (stable output for diffs).
pub fn python_manifest(rows: &[ManifestFields]) -> Vec<PythonManifestEntry> {
    let mut entries: Vec<PythonManifestEntry> =
        rows.iter().map(PythonManifestEntry::from).collect();
    entries.sort_by(|a, b| a.server_path.cmp(&b.server_path));
    entries
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_python_manifest_has_the_refreshers_keys_sorted_by_path() {
        let row = |path: &str| ManifestFields {
            path: path.into(),
            arn: format!("arn:aws:bedrock-agentcore:us-east-1:1:gateway{path}"),
            url: "https://gw.example/mcp".into(),
            discovery_url:
                "https://cognito-idp.us-east-1.amazonaws.com/p/.well-known/openid-configuration"
                    .into(),
            allowed_clients: vec!["c1".into()],
            allowed_audience: vec![],
            allowed_scopes: vec!["s".into()],
            idp_vendor: IdpVendor::Cognito,
        };
        let json = serde_json::to_value(python_manifest(&[row("/b"), row("/a")])).expect("json");
        assert_eq!(
            json[0],
            serde_json::json!({"server_path": "/a", "gateway_arn": "arn:aws:bedrock-agentcore:us-east-1:1:gateway/a",
                "discovery_url": "https://cognito-idp.us-east-1.amazonaws.com/p/.well-known/openid-configuration",
                "allowed_clients": ["c1"], "allowed_audience": [], "idp_vendor": "cognito"})
        );
        assert_eq!(json[1]["server_path"], "/b");
    }

    #[test]
    fn vendors_are_detected_in_the_python_order() {
        let cases = [
            (
                "https://cognito-idp.us-east-1.amazonaws.com/p/.well-known/openid-configuration",
                IdpVendor::Cognito,
            ),
            (
                "https://x.auth0.com/.well-known/openid-configuration",
                IdpVendor::Auth0,
            ),
            (
                "https://x.okta.com/oauth2/default/.well-known/openid-configuration",
                IdpVendor::Okta,
            ),
            (
                "https://login.microsoftonline.com/t/v2.0/.well-known/openid-configuration",
                IdpVendor::Entra,
            ),
            (
                "https://kc.example.com/realms/r/.well-known/openid-configuration",
                IdpVendor::Keycloak,
            ),
            (
                "http://127.0.0.1:4455/.well-known/openid-configuration",
                IdpVendor::Unknown,
            ),
            // Substrings of a hostile URL decide nothing.
            (
                "https://evil.example/cognito-idp.us-east-1.amazonaws.com/us-east-1_X/.well-known/openid-configuration",
                IdpVendor::Unknown,
            ),
            (
                "https://okta.com.evil.example/.well-known/openid-configuration",
                IdpVendor::Unknown,
            ),
            (
                "https://evil.example/?login.microsoftonline.com",
                IdpVendor::Unknown,
            ),
        ];
        for (url, vendor) in cases {
            assert_eq!(IdpVendor::detect(url), vendor, "{url}");
        }
    }
}
