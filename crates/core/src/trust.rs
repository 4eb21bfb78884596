//! Where a client secret may go (design invariant 7). Whoever may create a gateway picks its
//! discovery URL and allowed clients, so trust is decided from the operator's configuration,
//! never from what those strings claim: a secret is sent only to the token endpoint of an issuer
//! the operator trusts, and only when the secret is not bound to another issuer.
//!
//! An issuer is trusted when the operator lists it (an issuer URL, or a host whose issuers are
//! all trusted), or when it is a Cognito user pool in a region the worker reads, recognised by
//! an exact match of the parsed URL against Cognito's issuer form.

use url::Url;

/// The discovery document's place under an issuer (OpenID Connect Discovery 1.0 §4).
pub const DISCOVERY_SUFFIX: &str = "/.well-known/openid-configuration";

/// Cognito's issuer for a pool: `<base>/<pool id>`, `{region}` in the base standing for the
/// region. Only tests and emulators change it.
pub const COGNITO_ISSUER_BASE: &str = "https://cognito-idp.{region}.amazonaws.com";

/// Why a secret is not sent. Every message names the thing refused and what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The discovery URL is not one we can use at all.
    #[error("discovery URL {url:?} refused: {why}")]
    BadDiscoveryUrl {
        /// The discovery URL as given.
        url: String,
        /// Which rule it breaks.
        why: String,
    },
    /// The issuer is neither listed by the operator nor a Cognito pool in a region we read.
    #[error(
        "issuer {issuer} is not trusted for client {clients}; trust it with --trusted-issuers or REGISTRAR_TRUSTED_ISSUERS"
    )]
    UntrustedIssuer {
        /// The issuer the discovery URL belongs to.
        issuer: String,
        /// The client (or clients) a secret was wanted for.
        clients: String,
    },
    /// The discovery document names another issuer than the one its URL belongs to.
    #[error("the discovery document at {url} names issuer {claimed}, not {issuer}")]
    IssuerMismatch {
        /// Where the document was read.
        url: String,
        /// The issuer the URL belongs to.
        issuer: String,
        /// The issuer the document names.
        claimed: String,
    },
    /// The token endpoint is not where the issuer's secrets may go.
    #[error(
        "token endpoint {endpoint:?} of issuer {issuer} refused: {why}; list its host in --trusted-token-hosts or REGISTRAR_TRUSTED_TOKEN_HOSTS if it is the IdP's"
    )]
    TokenEndpoint {
        /// The trusted issuer whose document named the endpoint.
        issuer: String,
        /// The endpoint, as shown (see [`shown`]).
        endpoint: String,
        /// Which rule it breaks.
        why: String,
    },
    /// The secret found for the client may not go to this issuer.
    #[error(
        "the secret of client {client} from {source_name} may not go to issuer {issuer}: {why}"
    )]
    SecretNotForIssuer {
        /// The client the secret is for.
        client: String,
        /// Where the secret was found (`env OAUTH_CLIENT_SECRET_x`, never the value).
        source_name: String,
        /// The issuer it would have gone to.
        issuer: String,
        /// Why that issuer may not have it.
        why: String,
    },
}

/// Which issuer a secret belongs to, as far as its source says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretBinding {
    /// The source does not say (an environment variable, a plain Secrets Manager string).
    Unbound,
    /// A Secrets Manager secret's JSON `issuer`.
    Issuer(String),
    /// The secret Cognito holds for an app client of this pool (DescribeUserPoolClient).
    CognitoPool(CognitoPool),
}

/// A Cognito user pool.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct CognitoPool {
    /// The pool's region.
    pub region: String,
    /// The pool's id (`<region>_<id>`).
    pub pool_id: String,
}

/// An issuer the policy trusts, with what made it trusted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedIssuer {
    /// `scheme://host[:port][/path]`, without a trailing `/`.
    pub issuer: String,
    /// Where its discovery document is read.
    pub discovery_url: String,
    /// The operator listed it (or its host): unbound secrets may go to it.
    pub configured: bool,
    /// It is this Cognito pool's issuer (whether or not also listed).
    pub cognito: Option<CognitoPool>,
    host: String,
}

/// The operator's trust configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustPolicy {
    issuers: Vec<String>,
    hosts: Vec<String>,
    token_hosts: Vec<String>,
    cognito_regions: Vec<String>,
    cognito_base: String,
    cognito_pools: Vec<String>,
    /// (client, issuer) pairs for secrets that name no issuer.
    client_issuers: Vec<(String, String)>,
    registry_client: Option<String>,
    registry_issuer: Option<String>,
}

/// What the operator configured.
#[derive(Debug, Clone, Default)]
pub struct TrustConfig<'a> {
    /// Issuer URLs (`https://idp.example.com/realms/x`), or hosts (`idp.example.com`,
    /// `127.0.0.1:8443`) whose every issuer is trusted.
    pub trusted: &'a [String],
    /// Extra hosts token endpoints may be on (an IdP whose token endpoint is on another host).
    pub token_hosts: &'a [String],
    /// The regions the worker reads: Cognito pools there are trusted.
    pub cognito_regions: &'a [String],
    /// [`COGNITO_ISSUER_BASE`] unless overridden.
    pub cognito_issuer_base: &'a str,
    /// When not empty, the only Cognito pools trusted without being listed (pool ids, or user
    /// pool ARNs): those the worker's IAM grants let it read.
    pub cognito_pools: &'a [String],
    /// `client=issuer` pairs: where a secret that names no issuer (an environment variable, a
    /// plain Secrets Manager string, a vendor variable) may go for that client. Without a pair,
    /// such a secret goes only to the one configured issuer, when exactly one is configured.
    pub client_issuers: &'a [String],
    /// The registry's own client at its IdP: it never gets an egress token.
    pub registry_client: Option<&'a str>,
    /// The registry's own IdP: trusted for egress only when listed in `trusted`.
    pub registry_issuer: Option<&'a str>,
}

/// An attacker-chosen string as it may appear in a message: control characters replaced, at
/// most 200 characters.
pub fn shown(s: &str) -> String {
    let mut out: String = s
        .chars()
        .take(200)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if s.chars().count() > 200 {
        out.push_str("...");
    }
    out
}

/// `http` only to loopback (decided on the parsed host), never userinfo, always a host: the
/// outbound rule every request we make follows, with no operator override for IdPs.
fn parse_outbound(raw: &str) -> Result<Url, String> {
    crate::outbound::check_outbound_url(raw, false).map_err(|e| e.to_string())
}

/// `host[:port]` as the URL parser normalised it (lower-case, default port dropped).
fn host_port(url: &Url) -> String {
    let host = url.host_str().unwrap_or_default();
    match url.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_owned(),
    }
}

/// An issuer URL as compared: parsed, without query, fragment or trailing `/`.
fn normalise_issuer(raw: &str) -> Result<String, String> {
    let mut url = parse_outbound(raw)?;
    if url.query().is_some() || url.fragment().is_some() {
        return Err("an issuer has no query or fragment".into());
    }
    url.set_query(None);
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

/// `eu-west-1_AbC123`: the region, `_`, then letters and digits.
fn is_pool_id(pool: &str, region: &str) -> bool {
    pool.strip_prefix(region)
        .and_then(|rest| rest.strip_prefix('_'))
        .is_some_and(|id| {
            !id.is_empty() && id.len() <= 40 && id.bytes().all(|b| b.is_ascii_alphanumeric())
        })
}

impl TrustPolicy {
    /// Validates the configuration; an entry that is neither an issuer URL nor a host is
    /// refused, named.
    pub fn new(config: &TrustConfig<'_>) -> Result<Self, String> {
        let mut policy = Self {
            cognito_regions: config.cognito_regions.to_vec(),
            cognito_base: normalise_issuer(
                &config.cognito_issuer_base.replace("{region}", "us-east-1"),
            )
            .map(|_| config.cognito_issuer_base.trim_end_matches('/').to_owned())
            .map_err(|e| {
                format!(
                    "--cognito-issuer-base {:?}: {e}",
                    config.cognito_issuer_base
                )
            })?,
            ..Self::default()
        };
        for entry in config
            .trusted
            .iter()
            .map(|e| e.trim())
            .filter(|e| !e.is_empty())
        {
            if entry.contains("://") {
                let issuer = normalise_issuer(entry)
                    .map_err(|e| format!("--trusted-issuers entry {entry:?}: {e}"))?;
                policy.issuers.push(issuer);
            } else {
                policy.hosts.push(parse_host(entry, "--trusted-issuers")?);
            }
        }
        for entry in config
            .token_hosts
            .iter()
            .map(|e| e.trim())
            .filter(|e| !e.is_empty())
        {
            policy
                .token_hosts
                .push(parse_host(entry, "--trusted-token-hosts")?);
        }
        for entry in config
            .cognito_pools
            .iter()
            .map(|e| e.trim())
            .filter(|e| !e.is_empty())
        {
            // `arn:aws:cognito-idp:<region>:<account>:userpool/<pool id>`, or the pool id.
            let pool = entry.rsplit('/').next().unwrap_or(entry);
            let region = pool.split('_').next().unwrap_or_default();
            if !is_pool_id(pool, region) {
                return Err(format!(
                    "--trusted-cognito-pools entry {entry:?} is neither a user pool id nor a user pool ARN"
                ));
            }
            policy.cognito_pools.push(pool.to_owned());
        }
        for entry in config
            .client_issuers
            .iter()
            .map(|e| e.trim())
            .filter(|e| !e.is_empty())
        {
            let (client, issuer) = entry.split_once('=').ok_or_else(|| {
                format!("--client-issuers entry {entry:?} is not client=issuer-url")
            })?;
            let issuer = normalise_issuer(issuer)
                .map_err(|e| format!("--client-issuers entry {entry:?}: {e}"))?;
            policy
                .client_issuers
                .push((client.trim().to_owned(), issuer));
        }
        policy.registry_client = config.registry_client.map(str::to_owned);
        policy.registry_issuer = config
            .registry_issuer
            .and_then(|i| normalise_issuer(i).ok());
        Ok(policy)
    }

    /// The trusted issuer a discovery URL belongs to. Nothing has been fetched yet: a refusal
    /// here means nothing is ever sent to that URL.
    pub fn issuer_of(
        &self,
        discovery_url: &str,
        clients: &[String],
    ) -> Result<TrustedIssuer, Refusal> {
        let bad = |why: String| Refusal::BadDiscoveryUrl {
            url: discovery_url.to_owned(),
            why,
        };
        let url = parse_outbound(discovery_url).map_err(bad)?;
        if url.query().is_some() || url.fragment().is_some() {
            return Err(bad("a discovery URL has no query or fragment".into()));
        }
        let issuer = url
            .as_str()
            .strip_suffix(DISCOVERY_SUFFIX)
            .ok_or_else(|| bad(format!("it does not end in {DISCOVERY_SUFFIX}")))?
            .trim_end_matches('/')
            .to_owned();
        let host = host_port(&url);
        let listed = self.issuers.contains(&issuer);
        // The registry's own IdP mints tokens for the registry: only an explicit listing (of
        // that issuer, not its host) trusts it for egress.
        let registry_idp = self.registry_issuer.as_ref() == Some(&issuer);
        let cognito = self.cognito_pool(&issuer);
        let configured = listed || (self.hosts.contains(&host) && !registry_idp);
        if !configured && (cognito.is_none() || registry_idp) {
            return Err(Refusal::UntrustedIssuer {
                issuer: shown(&issuer),
                clients: if clients.is_empty() {
                    "(none listed)".to_owned()
                } else {
                    shown(&clients.join(", "))
                },
            });
        }
        Ok(TrustedIssuer {
            discovery_url: format!("{issuer}{DISCOVERY_SUFFIX}"),
            issuer,
            configured,
            cognito,
            host,
        })
    }

    /// The pool whose issuer this is, when it is in a region the worker reads.
    fn cognito_pool(&self, issuer: &str) -> Option<CognitoPool> {
        self.cognito_regions.iter().find_map(|region| {
            let base = self.cognito_base.replace("{region}", region);
            let pool = issuer.strip_prefix(&base)?.strip_prefix('/')?;
            let allowed =
                self.cognito_pools.is_empty() || self.cognito_pools.iter().any(|p| p == pool);
            (is_pool_id(pool, region) && allowed).then(|| CognitoPool {
                region: region.clone(),
                pool_id: pool.to_owned(),
            })
        })
    }

    /// The discovery document must name the issuer its URL belongs to.
    pub fn check_discovered_issuer(trusted: &TrustedIssuer, claimed: &str) -> Result<(), Refusal> {
        if claimed.trim_end_matches('/') == trusted.issuer {
            Ok(())
        } else {
            Err(Refusal::IssuerMismatch {
                url: trusted.discovery_url.clone(),
                issuer: trusted.issuer.clone(),
                claimed: shown(claimed),
            })
        }
    }

    /// The token endpoint a discovery document named: https (http only to loopback), on the
    /// issuer's host, a host the operator lists, or, for a Cognito pool, its region's
    /// `<domain>.auth.<region>.amazoncognito.com`.
    pub fn token_endpoint(&self, trusted: &TrustedIssuer, endpoint: &str) -> Result<Url, Refusal> {
        let refuse = |why: String| Refusal::TokenEndpoint {
            issuer: trusted.issuer.clone(),
            endpoint: shown(endpoint),
            why,
        };
        let url = parse_outbound(endpoint).map_err(refuse)?;
        let host = host_port(&url);
        let cognito_domain = trusted.cognito.as_ref().is_some_and(|p| {
            url.scheme() == "https"
                && url.port().is_none()
                && host
                    .strip_suffix(&format!(".auth.{}.amazoncognito.com", p.region))
                    .is_some_and(|label| {
                        !label.is_empty()
                            && label
                                .bytes()
                                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    })
        });
        if host == trusted.host || self.token_hosts.contains(&host) || cognito_domain {
            Ok(url)
        } else {
            Err(refuse(format!(
                "host {host} is not the issuer's host {}",
                trusted.host
            )))
        }
    }

    /// Whether a secret of `client` from `source_name`, bound as `binding`, may go to `trusted`.
    pub fn may_send(
        &self,
        trusted: &TrustedIssuer,
        client: &str,
        source_name: &str,
        binding: &SecretBinding,
    ) -> Result<(), Refusal> {
        let refuse = |why: String| Refusal::SecretNotForIssuer {
            client: shown(client),
            source_name: source_name.to_owned(),
            issuer: trusted.issuer.clone(),
            why,
        };
        if self
            .registry_client
            .as_deref()
            .is_some_and(|c| c.eq_ignore_ascii_case(client))
        {
            return Err(refuse(
                "it is the registry's own client (--registry-client-id): it never gets an egress token"
                    .into(),
            ));
        }
        match binding {
            SecretBinding::Unbound if !trusted.configured => Err(refuse(
                "the secret names no issuer, and this Cognito pool is trusted only with the secret \
                 Cognito holds for it or a Secrets Manager secret whose JSON names it as `issuer`; \
                 or list the issuer in --trusted-issuers"
                    .into(),
            )),
            SecretBinding::Unbound => self.unbound_may_go(client, &trusted.issuer).map_err(refuse),
            SecretBinding::Issuer(bound) => match normalise_issuer(bound) {
                Ok(b) if b == trusted.issuer => Ok(()),
                _ => Err(refuse(format!("the secret is bound to issuer {}", shown(bound)))),
            },
            SecretBinding::CognitoPool(pool) if trusted.cognito.as_ref() == Some(pool) => Ok(()),
            SecretBinding::CognitoPool(pool) => Err(refuse(format!(
                "the secret belongs to Cognito pool {}/{}",
                pool.region, pool.pool_id
            ))),
        }
    }

    /// A secret that names no issuer goes where `--client-issuers` maps its client, or, for a
    /// client not mapped at all, to the one issuer configured when exactly one is.
    fn unbound_may_go(&self, client: &str, issuer: &str) -> Result<(), String> {
        let mapped: Vec<&str> = self
            .client_issuers
            .iter()
            .filter(|(c, _)| c == client)
            .map(|(_, i)| i.as_str())
            .collect();
        if mapped.contains(&issuer) {
            return Ok(());
        }
        if mapped.is_empty() && self.issuers.len() + self.hosts.len() == 1 {
            return Ok(());
        }
        Err(if mapped.is_empty() {
            format!(
                "the secret names no issuer and several issuers are trusted; bind it (a Secrets \
                 Manager secret with JSON `issuer`) or map the client with --client-issuers \
                 {}={issuer}",
                shown(client)
            )
        } else {
            format!(
                "the secret names no issuer and --client-issuers maps the client to {}",
                mapped.join(", ")
            )
        })
    }
}

/// A `host[:port]` entry, normalised as a URL parser would.
fn parse_host(entry: &str, flag: &str) -> Result<String, String> {
    if entry.contains('*') {
        return Err(format!(
            "{flag} entry {entry:?}: wildcards are not supported; list each host or issuer URL"
        ));
    }
    let url = Url::parse(&format!("https://{entry}/"))
        .map_err(|e| format!("{flag} entry {entry:?} is neither an issuer URL nor a host ({e})"))?;
    let host = host_port(&url);
    if url.path() != "/"
        || !url.username().is_empty()
        || host.is_empty()
        || host != entry.to_ascii_lowercase()
    {
        return Err(format!(
            "{flag} entry {entry:?} is neither an issuer URL (with https://) nor a bare host[:port]"
        ));
    }
    Ok(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(trusted: &[&str], token_hosts: &[&str]) -> TrustPolicy {
        let t: Vec<String> = trusted.iter().map(|s| (*s).to_owned()).collect();
        let h: Vec<String> = token_hosts.iter().map(|s| (*s).to_owned()).collect();
        let regions = vec!["us-east-1".to_owned(), "eu-west-1".to_owned()];
        TrustPolicy::new(&TrustConfig {
            trusted: &t,
            token_hosts: &h,
            cognito_regions: &regions,
            cognito_issuer_base: COGNITO_ISSUER_BASE,
            ..TrustConfig::default()
        })
        .expect("valid")
    }

    fn clients() -> Vec<String> {
        vec!["c1".to_owned()]
    }

    const POOL_URL: &str = "https://cognito-idp.us-east-1.amazonaws.com/us-east-1_AbC123/.well-known/openid-configuration";

    #[test]
    fn a_cognito_looking_path_on_another_host_is_not_cognito_and_not_trusted() {
        let p = policy(&[], &[]);
        let e = p
            .issuer_of(
                "https://evil.example/cognito-idp.us-east-1.amazonaws.com/us-east-1_X/.well-known/openid-configuration",
                &clients(),
            )
            .expect_err("untrusted");
        assert_eq!(
            e.to_string(),
            "issuer https://evil.example/cognito-idp.us-east-1.amazonaws.com/us-east-1_X is not \
             trusted for client c1; trust it with --trusted-issuers or REGISTRAR_TRUSTED_ISSUERS"
        );
        for hostile in [
            "https://cognito-idp.us-east-1.amazonaws.com.evil.example/us-east-1_X/.well-known/openid-configuration",
            "https://evil.example@cognito-idp.us-east-1.amazonaws.com/us-east-1_X/.well-known/openid-configuration",
            "https://cognito-idp.us-east-1.amazonaws.com/eu-west-1_X/.well-known/openid-configuration",
            "https://cognito-idp.ap-south-1.amazonaws.com/ap-south-1_X/.well-known/openid-configuration",
            "https://cognito-idp.us-east-1.amazonaws.com/us-east-1_X/y/.well-known/openid-configuration",
            "http://cognito-idp.us-east-1.amazonaws.com/us-east-1_X/.well-known/openid-configuration",
        ] {
            assert!(p.issuer_of(hostile, &clients()).is_err(), "{hostile}");
        }
    }

    #[test]
    fn a_real_cognito_pool_in_a_region_read_is_trusted_for_its_own_secrets_only() {
        let p = policy(&[], &[]);
        let t = p.issuer_of(POOL_URL, &clients()).expect("cognito");
        let pool = CognitoPool {
            region: "us-east-1".into(),
            pool_id: "us-east-1_AbC123".into(),
        };
        assert_eq!(t.cognito.as_ref(), Some(&pool));
        assert!(!t.configured);
        assert!(
            p.may_send(&t, "c1", "cognito", &SecretBinding::CognitoPool(pool))
                .is_ok()
        );
        let other = CognitoPool {
            region: "us-east-1".into(),
            pool_id: "us-east-1_Other".into(),
        };
        assert!(
            p.may_send(&t, "c1", "cognito", &SecretBinding::CognitoPool(other))
                .is_err()
        );
        let unbound = p
            .may_send(
                &t,
                "c1",
                "env OAUTH_CLIENT_SECRET_c1",
                &SecretBinding::Unbound,
            )
            .expect_err("unbound");
        assert!(
            unbound.to_string().contains("env OAUTH_CLIENT_SECRET_c1"),
            "{unbound}"
        );
        let bound = SecretBinding::Issuer(
            "https://cognito-idp.us-east-1.amazonaws.com/us-east-1_AbC123/".into(),
        );
        assert!(p.may_send(&t, "c1", "secretsmanager x", &bound).is_ok());
    }

    #[test]
    fn listed_issuers_and_hosts_are_trusted_exactly() {
        let p = policy(
            &[
                "https://idp.example.com/realms/a",
                "login.example.org",
                "127.0.0.1:9000",
            ],
            &[],
        );
        let t = p
            .issuer_of(
                "https://IDP.example.com/realms/a/.well-known/openid-configuration",
                &clients(),
            )
            .expect("listed issuer");
        assert_eq!(t.issuer, "https://idp.example.com/realms/a");
        assert!(t.configured);
        assert!(
            p.issuer_of(
                "https://idp.example.com/realms/b/.well-known/openid-configuration",
                &clients()
            )
            .is_err()
        );
        assert!(
            p.issuer_of(
                "https://login.example.org/any/.well-known/openid-configuration",
                &clients()
            )
            .is_ok()
        );
        assert!(
            p.issuer_of(
                "http://127.0.0.1:9000/x/.well-known/openid-configuration",
                &clients()
            )
            .is_ok()
        );
        assert!(
            p.issuer_of(
                "http://127.0.0.1:9001/x/.well-known/openid-configuration",
                &clients()
            )
            .is_err(),
            "another port is another host"
        );
        assert!(
            p.issuer_of(
                "http://localhost:80@login.example.org/.well-known/openid-configuration",
                &clients()
            )
            .is_err(),
            "userinfo is refused"
        );
        assert!(
            p.issuer_of("https://login.example.org/x", &clients())
                .is_err(),
            "not a discovery URL"
        );
    }

    #[test]
    fn bound_secrets_go_only_to_their_issuer() {
        let p = policy(&["https://idp.example.com"], &[]);
        let t = p
            .issuer_of(
                "https://idp.example.com/.well-known/openid-configuration",
                &clients(),
            )
            .expect("trusted");
        assert!(
            p.may_send(&t, "c1", "env X", &SecretBinding::Unbound)
                .is_ok()
        );
        assert!(
            p.may_send(
                &t,
                "c1",
                "sm",
                &SecretBinding::Issuer("https://idp.example.com/".into())
            )
            .is_ok()
        );
        let e = p
            .may_send(
                &t,
                "c1",
                "secretsmanager r/c1",
                &SecretBinding::Issuer("https://other.example.com".into()),
            )
            .expect_err("bound elsewhere");
        assert!(
            e.to_string()
                .contains("bound to issuer https://other.example.com"),
            "{e}"
        );
    }

    #[test]
    fn token_endpoints_stay_on_the_issuers_host_or_a_listed_one() {
        let p = policy(&["https://idp.example.com/t"], &["tokens.example.com"]);
        let t = p
            .issuer_of(
                "https://idp.example.com/t/.well-known/openid-configuration",
                &clients(),
            )
            .expect("trusted");
        assert!(
            p.token_endpoint(&t, "https://idp.example.com/t/token")
                .is_ok()
        );
        assert!(
            p.token_endpoint(&t, "https://tokens.example.com/oauth/token")
                .is_ok()
        );
        for bad in [
            "https://evil.example/token",
            "http://idp.example.com/t/token",
            "https://idp.example.com.evil.example/token",
            "https://x@evil.example/token",
            "ftp://idp.example.com/token",
        ] {
            assert!(p.token_endpoint(&t, bad).is_err(), "{bad}");
        }
        let c = p.issuer_of(POOL_URL, &clients()).expect("cognito");
        assert!(
            p.token_endpoint(
                &c,
                "https://my-domain.auth.us-east-1.amazoncognito.com/oauth2/token"
            )
            .is_ok()
        );
        assert!(
            p.token_endpoint(
                &c,
                "https://my-domain.auth.eu-west-1.amazoncognito.com/oauth2/token"
            )
            .is_err(),
            "another region's domain"
        );
        assert!(
            p.token_endpoint(
                &c,
                "https://a.b.auth.us-east-1.amazoncognito.com/oauth2/token"
            )
            .is_err()
        );
    }

    #[test]
    fn the_discovered_issuer_must_be_the_urls() {
        let p = policy(&["127.0.0.1:9000"], &[]);
        let t = p
            .issuer_of(
                "http://127.0.0.1:9000/good/.well-known/openid-configuration",
                &clients(),
            )
            .expect("trusted host");
        assert!(TrustPolicy::check_discovered_issuer(&t, "http://127.0.0.1:9000/good/").is_ok());
        assert!(TrustPolicy::check_discovered_issuer(&t, "http://127.0.0.1:9000/other").is_err());
    }

    #[test]
    fn unbound_secrets_go_only_where_their_client_is_mapped_or_to_the_only_issuer() {
        let two = policy(&["https://a.example", "https://b.example"], &[]);
        let a = two
            .issuer_of(
                "https://a.example/.well-known/openid-configuration",
                &clients(),
            )
            .expect("a");
        let e = two
            .may_send(
                &a,
                "c1",
                "env OAUTH_CLIENT_SECRET_c1",
                &SecretBinding::Unbound,
            )
            .expect_err("ambiguous");
        assert!(
            e.to_string()
                .contains("--client-issuers c1=https://a.example"),
            "{e}"
        );
        let pairs = vec!["c1=https://a.example/".to_owned()];
        let regions = vec!["us-east-1".to_owned()];
        let trusted = vec![
            "https://a.example".to_owned(),
            "https://b.example".to_owned(),
        ];
        let mapped = TrustPolicy::new(&TrustConfig {
            trusted: &trusted,
            client_issuers: &pairs,
            cognito_regions: &regions,
            cognito_issuer_base: COGNITO_ISSUER_BASE,
            ..TrustConfig::default()
        })
        .expect("valid");
        assert!(
            mapped
                .may_send(&a, "c1", "env", &SecretBinding::Unbound)
                .is_ok()
        );
        let b = mapped
            .issuer_of(
                "https://b.example/.well-known/openid-configuration",
                &clients(),
            )
            .expect("b");
        assert!(
            mapped
                .may_send(&b, "c1", "env", &SecretBinding::Unbound)
                .is_err(),
            "mapped elsewhere"
        );
        let one = policy(&["https://a.example"], &[]);
        let a1 = one
            .issuer_of(
                "https://a.example/.well-known/openid-configuration",
                &clients(),
            )
            .expect("a");
        assert!(
            one.may_send(&a1, "c1", "env", &SecretBinding::Unbound)
                .is_ok(),
            "the only issuer"
        );
    }

    #[test]
    fn the_registrys_own_client_and_idp_never_serve_egress() {
        let regions = vec!["us-east-1".to_owned()];
        let registry_idp = "https://cognito-idp.us-east-1.amazonaws.com/us-east-1_AbC123";
        let p = TrustPolicy::new(&TrustConfig {
            cognito_regions: &regions,
            cognito_issuer_base: COGNITO_ISSUER_BASE,
            registry_client: Some("registrar-ingress"),
            registry_issuer: Some(registry_idp),
            ..TrustConfig::default()
        })
        .expect("valid");
        // The registry's Cognito pool is not trusted by default for egress.
        assert!(matches!(
            p.issuer_of(POOL_URL, &clients()),
            Err(Refusal::UntrustedIssuer { .. })
        ));
        let other = "https://cognito-idp.us-east-1.amazonaws.com/us-east-1_Other/.well-known/openid-configuration";
        let t = p.issuer_of(other, &clients()).expect("another pool");
        let pool = t.cognito.clone().expect("pool");
        let e = p
            .may_send(
                &t,
                "registrar-ingress",
                "cognito",
                &SecretBinding::CognitoPool(pool),
            )
            .expect_err("the registry's client");
        assert!(e.to_string().contains("registry's own client"), "{e}");
    }

    #[test]
    fn only_the_configured_cognito_pools_are_trusted_when_some_are_named() {
        let regions = vec!["us-east-1".to_owned()];
        let pools =
            vec!["arn:aws:cognito-idp:us-east-1:111122223333:userpool/us-east-1_AbC123".to_owned()];
        let p = TrustPolicy::new(&TrustConfig {
            cognito_regions: &regions,
            cognito_issuer_base: COGNITO_ISSUER_BASE,
            cognito_pools: &pools,
            ..TrustConfig::default()
        })
        .expect("valid");
        assert!(p.issuer_of(POOL_URL, &clients()).is_ok());
        let other = "https://cognito-idp.us-east-1.amazonaws.com/us-east-1_Other/.well-known/openid-configuration";
        assert!(p.issuer_of(other, &clients()).is_err());
    }

    #[test]
    fn attacker_strings_are_shown_without_control_characters_and_bounded() {
        assert_eq!(shown("a\u{1b}[31mb\nc"), "a?[31mb?c");
        assert!(shown(&"x".repeat(500)).len() <= 203);
    }

    #[test]
    fn bad_configuration_is_refused_by_name() {
        let t = vec!["not a host/".to_owned()];
        let e = TrustPolicy::new(&TrustConfig {
            trusted: &t,
            cognito_issuer_base: COGNITO_ISSUER_BASE,
            ..TrustConfig::default()
        })
        .expect_err("bad");
        assert!(
            e.contains("--trusted-issuers") && e.contains("not a host/"),
            "{e}"
        );
        let t = vec!["http://idp.example.com".to_owned()];
        let e = TrustPolicy::new(&TrustConfig {
            trusted: &t,
            cognito_issuer_base: COGNITO_ISSUER_BASE,
            ..TrustConfig::default()
        })
        .expect_err("plain http");
        assert!(e.contains("plain http"), "{e}");
        let t = vec!["*.okta.com".to_owned()];
        let e = TrustPolicy::new(&TrustConfig {
            trusted: &t,
            cognito_issuer_base: COGNITO_ISSUER_BASE,
            ..TrustConfig::default()
        })
        .expect_err("wildcard");
        assert!(e.contains("wildcards are not supported"), "{e}");
    }
}
