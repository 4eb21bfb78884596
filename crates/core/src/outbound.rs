//! Which URLs the registrar may send requests (and with them tokens or secrets) to.
//!
//! Every URL comes from somewhere that may be hostile: AWS (an `mcpServer` target endpoint, a
//! discovery document), an event, the registry. Trust is decided here from the parsed URL and
//! the operator's configuration (`allow_insecure`), never from how the string looks: the host is
//! read with the same WHATWG parser the HTTP client uses, so `http://localhost:80@evil.example/`
//! is a URL for `evil.example` with the user name `localhost`, not a loopback URL.

use url::{Host, Url};

/// Why a URL is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OutboundUrlError {
    /// Not an absolute `http`/`https` URL with a host, or it carries `user:password@`. The URL
    /// is given with any user info replaced by `***`.
    #[error(
        "URL {0:?} is not usable: it must be an absolute https (or loopback http) URL with a host and without user:password@"
    )]
    Malformed(String),
    /// Plain `http` to a host that is not loopback, and insecure URLs were not allowed.
    #[error("URL {0} uses plain http to a non-loopback host; use https")]
    Insecure(String),
}

impl OutboundUrlError {
    /// The refused URL, with any user info replaced by `***`.
    pub fn url(&self) -> &str {
        match self {
            Self::Malformed(u) | Self::Insecure(u) => u,
        }
    }
}

/// Checks a URL we are about to send requests to: `https`, or `http` when the host is loopback
/// (see [`is_loopback`]) or `allow_insecure` is set. User info (`user:pass@`) is always refused,
/// and so is a URL without a host.
pub fn check_outbound_url(raw: &str, allow_insecure: bool) -> Result<Url, OutboundUrlError> {
    let malformed = || OutboundUrlError::Malformed(redact_userinfo(raw));
    let url = Url::parse(raw.trim()).map_err(|_| malformed())?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(malformed());
    }
    if url.host().is_none() {
        return Err(malformed());
    }
    match url.scheme() {
        "https" => Ok(url),
        "http" if allow_insecure || is_loopback(&url) => Ok(url),
        "http" => Err(OutboundUrlError::Insecure(redact_userinfo(raw))),
        _ => Err(malformed()),
    }
}

/// Whether the URL's host, as parsed, is loopback: the name `localhost`, an IPv4 address in
/// 127.0.0.0/8, `::1`, or `::1`'s IPv4-mapped form of a 127/8 address. Names that merely start
/// with `127.` or `localhost` are not loopback.
pub fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        Some(Host::Ipv4(ip)) => ip.is_loopback(),
        Some(Host::Ipv6(ip)) => {
            ip.is_loopback() || ip.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
        None => false,
    }
}

/// `raw` with everything between `://` and the last `@` of the authority replaced by `***`, so
/// a refused URL can be shown without the password it may carry.
fn redact_userinfo(raw: &str) -> String {
    let Some((scheme, rest)) = raw.split_once("://") else {
        return raw.to_owned();
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..end].rfind('@') {
        Some(at) => format!("{scheme}://***{}", &rest[at..]),
        None => raw.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(raw: &str) -> bool {
        check_outbound_url(raw, false).is_ok()
    }

    #[test]
    fn https_is_accepted_anywhere() {
        assert!(ok("https://registry.example.com/"));
        assert!(ok("https://mcp.example.com:8443/mcp?x=1"));
        assert!(ok("https://203.0.113.7/mcp"));
    }

    #[test]
    fn plain_http_is_accepted_only_to_loopback_as_parsed() {
        for loopback in [
            "http://localhost/",
            "http://LOCALHOST:8080/x",
            "http://127.0.0.1:8080",
            "http://127.9.9.9/",
            "http://[::1]:8080/x",
            "http://[::ffff:127.0.0.1]/",
        ] {
            assert!(ok(loopback), "{loopback}");
        }
        for hostile in [
            "http://registry.example.com",
            "http://127.0.0.1.evil.example/",
            "http://localhost.evil.example/",
            "http://evil.example/?localhost",
            "http://evil.example#@localhost",
            "http://[::2]/",
            "http://10.0.0.1/",
        ] {
            assert_eq!(
                check_outbound_url(hostile, false),
                Err(OutboundUrlError::Insecure(hostile.into())),
                "{hostile}"
            );
        }
    }

    #[test]
    fn a_loopback_user_name_does_not_make_a_url_loopback() {
        let err = check_outbound_url("http://localhost:80@evil.example/", false)
            .expect_err("user info is refused");
        assert!(matches!(err, OutboundUrlError::Malformed(_)), "{err}");
        let parsed = Url::parse("http://localhost:80@evil.example/").expect("parses");
        assert!(!is_loopback(&parsed), "the host is evil.example");
        assert_eq!(parsed.host_str(), Some("evil.example"));
        // Refused even when insecure URLs are allowed, and even over https.
        assert!(check_outbound_url("http://localhost:80@evil.example/", true).is_err());
        assert!(check_outbound_url("https://user:pw@host/", true).is_err());
    }

    #[test]
    fn user_info_never_appears_in_the_message() {
        let err = check_outbound_url("https://user:pw@host/", false).expect_err("refused");
        assert_eq!(err, OutboundUrlError::Malformed("https://***@host/".into()));
        assert!(!err.to_string().contains("pw"), "{err}");
        assert!(err.to_string().contains("https://***@host/"), "{err}");
        assert_eq!(err.url(), "https://***@host/");
    }

    #[test]
    fn insecure_http_is_accepted_only_when_the_operator_allows_it() {
        assert!(check_outbound_url("http://registry.internal/", true).is_ok());
        assert!(check_outbound_url("http://registry.internal/", false).is_err());
    }

    #[test]
    fn other_schemes_relative_urls_and_missing_hosts_are_malformed() {
        for bad in [
            "registry.example.com",
            "/api/servers",
            "ftp://x/",
            "file:///etc/passwd",
            "javascript:alert(1)",
            "https://",
            "https://:443/",
            "",
        ] {
            assert!(
                matches!(
                    check_outbound_url(bad, true),
                    Err(OutboundUrlError::Malformed(_))
                ),
                "{bad}"
            );
        }
    }
}
