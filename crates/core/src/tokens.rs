//! Token-manifest rows and IdP vendor rules (the refresh arithmetic arrives with the refresher).

use serde::{Deserialize, Serialize};

/// The identity provider family, detected from a discovery URL as the Python refresher does
/// (`registry-contract.md` §1.9 step 2: first match wins).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IdpVendor {
    Cognito,
    Auth0,
    Okta,
    Entra,
    Keycloak,
    Unknown,
}

impl IdpVendor {
    pub fn detect(discovery_url: &str) -> Self {
        const RULES: &[(&str, IdpVendor)] = &[
            ("cognito-idp", IdpVendor::Cognito),
            ("auth0.com", IdpVendor::Auth0),
            ("okta.com", IdpVendor::Okta),
            ("microsoftonline.com", IdpVendor::Entra),
            ("/realms/", IdpVendor::Keycloak),
        ];
        RULES
            .iter()
            .find(|(needle, _)| discovery_url.contains(needle))
            .map_or(Self::Unknown, |(_, vendor)| *vendor)
    }

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
    pub path: String,
    pub arn: String,
    pub discovery_url: String,
    pub allowed_clients: Vec<String>,
    pub allowed_audience: Vec<String>,
    pub allowed_scopes: Vec<String>,
    pub idp_vendor: IdpVendor,
}

#[cfg(test)]
mod tests {
    use super::*;

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
        ];
        for (url, vendor) in cases {
            assert_eq!(IdpVendor::detect(url), vendor, "{url}");
        }
    }
}
