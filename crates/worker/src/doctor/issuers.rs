//! The trusted issuers: each exact issuer URL's discovery document names that issuer and a
//! token endpoint the trust rules accept (the same rules, and the same discovery client, the
//! token refresher uses). Host entries trust every issuer on a host and cannot be probed.

use std::time::Duration;

use registrar_core::trust::{DISCOVERY_SUFFIX, Refusal, TrustPolicy, shown};

use super::checklist::Check;
use crate::net::oauth::{IssueError, Oidc};

const GROUP: &str = "issuer";

/// One line per `--trusted-issuers` entry.
pub async fn check(policy: &TrustPolicy, entries: &[String], deadline: Duration) -> Vec<Check> {
    let oidc = match Oidc::new(
        deadline,
        Duration::from_secs(60),
        std::sync::Arc::new(crate::clock::SystemClock::new()),
    ) {
        Ok(o) => o,
        Err(e) => {
            return vec![Check::fail(
                GROUP,
                "issuers",
                e.to_string(),
                "report this as a bug",
            )];
        }
    };
    let entries: Vec<&str> = entries
        .iter()
        .map(|e| e.trim())
        .filter(|e| !e.is_empty())
        .collect();
    let lines = entries.iter().map(|entry| one(policy, &oidc, entry));
    futures::future::join_all(lines).await
}

async fn one(policy: &TrustPolicy, oidc: &Oidc, entry: &str) -> Check {
    let subject = shown(entry);
    if !entry.contains("://") {
        return Check::warn(
            GROUP,
            subject,
            "a host: every issuer on it is trusted, and which ones exist cannot be probed",
            "list the exact issuer URLs in --trusted-issuers (REGISTRAR_TRUSTED_ISSUERS) to have them checked",
        );
    }
    let discovery_url = format!("{}{DISCOVERY_SUFFIX}", entry.trim_end_matches('/'));
    let trusted = match policy.issuer_of(&discovery_url, &[]) {
        Ok(t) => t,
        Err(refusal) => {
            return Check::fail(
                GROUP,
                subject,
                refusal.to_string(),
                "fix the --trusted-issuers (REGISTRAR_TRUSTED_ISSUERS) entry: an https issuer URL (http only to loopback)",
            );
        }
    };
    let discovery = match oidc.discover(&trusted).await {
        Ok(d) => d,
        Err(IssueError::Refused(Refusal::IssuerMismatch { claimed, .. })) => {
            return Check::fail(
                GROUP,
                subject,
                format!(
                    "its discovery document {} names issuer {claimed}: tokens and secrets are refused",
                    trusted.discovery_url
                ),
                format!(
                    "list the issuer in --trusted-issuers exactly as the IdP names it ({claimed}) if that IdP is the one you mean; otherwise correct the entry"
                ),
            );
        }
        Err(IssueError::Refused(other)) => {
            return Check::fail(
                GROUP,
                subject,
                other.to_string(),
                "fix the --trusted-issuers (REGISTRAR_TRUSTED_ISSUERS) entry",
            );
        }
        Err(IssueError::Failed(e)) => {
            return Check::fail(
                GROUP,
                subject,
                format!("discovery failed: {}", shown(&e.message)),
                format!(
                    "the IdP must serve its discovery document at {} (reachable from here, no redirect)",
                    trusted.discovery_url
                ),
            );
        }
    };
    match policy.token_endpoint(&trusted, &discovery.token_endpoint) {
        Ok(url) => Check::ok(
            GROUP,
            subject,
            format!("discovery names this issuer and token endpoint {url}"),
        ),
        Err(refusal) => Check::fail(
            GROUP,
            subject,
            refusal.to_string(),
            "list the token endpoint's host in --trusted-token-hosts (REGISTRAR_TRUSTED_TOKEN_HOSTS) if it is the IdP's",
        ),
    }
}
