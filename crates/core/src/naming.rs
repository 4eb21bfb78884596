//! Registry paths, display names and URL quoting, as the Python tool derives them
//! (`registry-contract.md` §1.3), so registries it filled keep their paths; plus the two rules
//! the Python tool lacks: a path never takes a name the registry or its nginx serves itself
//! ([`RESERVED`]), and every path we address is in the slug grammar ([`is_slug_path`]).

use crate::identity::ResourceKind;

/// Words written in upper case by [`display_name`].
const ACRONYMS: &[&str] = &[
    "mcp", "a2a", "sre", "api", "http", "https", "aws", "iam", "jwt", "oidc", "sso", "idp", "llm",
    "ai", "ml",
];

/// The Python tool's `_slugify`: lower-case; spaces and `_` become `-`; every character outside
/// `[a-z0-9-]` is dropped; runs of `-` collapse; leading and trailing `-` are stripped.
pub fn slugify(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for ch in name.chars().flat_map(char::to_lowercase) {
        let ch = if ch == ' ' || ch == '_' { '-' } else { ch };
        let keep = ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '-';
        if !keep || (ch == '-' && out.ends_with('-')) {
            continue;
        }
        out.push(ch);
    }
    out.trim_matches('-').to_owned()
}

/// First path segments the registry, its auth server or its nginx answer themselves, so an
/// entry there would be shadowed by (or shadow) the registry's own routes.
///
/// From `registry-contract.md` §2: `/api/...` (servers, agents, tokens, internal, refresh,
/// toggle), `/v0.1/...` (not a slug, listed for completeness), `/validate`, `/health`; from the
/// registry's nginx configuration and UI: `/oauth2/...`, `/static/`, `/login`, `/logout`,
/// `/mcpgw` (the registry's own MCP server), `/mcp-proxy/`, the Keycloak and PingFederate
/// proxies (`/keycloak/`, `/realms/`, `/resources/`, `/as/`, `/assets/`, `/pf/`, `/ext/`,
/// `/idp/`); and, kept free to be safe, names the registry's app and UI use for its own pages
/// and sub-routes (`/servers`, `/agents`, `/skills`, `/tokens`, `/auth`, `/version`, FastAPI's
/// `/docs` and `/redoc`, `/metrics`). `/.well-known` is not a slug, so no resource can take it.
///
/// Adding or dropping a name moves the entries of the resources it names (one deregistration
/// and one registration each).
pub const RESERVED: &[&str] = &[
    "api",
    "v0.1",
    "validate",
    "health",
    "oauth2",
    "static",
    "login",
    "logout",
    "mcpgw",
    "mcp-proxy",
    "keycloak",
    "realms",
    "resources",
    "as",
    "assets",
    "pf",
    "ext",
    "idp",
    "servers",
    "agents",
    "skills",
    "tokens",
    "auth",
    "version",
    "docs",
    "redoc",
    "metrics",
];

/// Whether `/<slug>` would be one of the registry's own routes.
pub fn is_reserved(slug: &str) -> bool {
    RESERVED.contains(&slug)
}

/// Whether `path` is `/` followed by our slug grammar, `[a-z0-9]+(-[a-z0-9]+)*`: the only paths
/// we derive, and the only paths we ever address in the registry. Anything else (`/Weird
/// Path_1`, `/a/../b`, `/`, `/x-`) was not written by us and is never read or written.
pub fn is_slug_path(path: &str) -> bool {
    let Some(slug) = path.strip_prefix('/') else {
        return false;
    };
    !slug.is_empty()
        && slug.split('-').all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        })
}

/// `slug(name)`, or `slug(fallback_id)` when the name has no ASCII alphanumerics.
fn slug_or_fallback(name: &str, fallback_id: &str) -> String {
    let slug = slugify(name);
    if slug.is_empty() {
        slugify(fallback_id)
    } else {
        slug
    }
}

/// `path` itself, or `<path>-<kind>` (`-gateway`, `-target`, `-runtime`) when its slug is
/// [`RESERVED`]; the suffix is repeated in the (impossible, see the tests) case that the
/// result is reserved too.
fn unreserved(mut path: String, kind: ResourceKind) -> String {
    while path.strip_prefix('/').is_some_and(is_reserved) {
        path = format!("{path}-{}", kind.as_str());
    }
    path
}

/// The registry path of a gateway or runtime: `/<slug(name)>`.
///
/// Deliberate differences from the Python tool:
/// - a name with no ASCII alphanumerics would give the path `/`; we fall back to the slug of
///   the resource id instead;
/// - a slug that is one of the registry's own routes ([`RESERVED`]) gets the resource kind as
///   a suffix: a gateway named `api` is registered at `/api-gateway`, a runtime named `health`
///   at `/health-runtime`. Every other name keeps the Python tool's path.
pub fn registry_path(name: &str, fallback_id: &str, kind: ResourceKind) -> String {
    unreserved(format!("/{}", slug_or_fallback(name, fallback_id)), kind)
}

/// The registry path of an `mcpServer` target: `/<slug(gateway name)>-<slug(target name)>`,
/// each slug falling back to its id, and suffixed with `-target` when the whole is reserved
/// (gateway `mcp`, target `proxy` would otherwise be `/mcp-proxy`).
pub fn target_path(
    gateway_name: &str,
    gateway_id: &str,
    target_name: &str,
    target_id: &str,
) -> String {
    let path = format!(
        "/{}-{}",
        slug_or_fallback(gateway_name, gateway_id),
        slug_or_fallback(target_name, target_id)
    );
    unreserved(path, ResourceKind::Target)
}

/// The Python tool's display name: split on `-`, `_` and whitespace, capitalize each word
/// (rest lower-cased), and write known acronyms in upper case.
pub fn display_name(name: &str) -> String {
    name.split(|c: char| c == '-' || c == '_' || c.is_whitespace())
        .filter(|w| !w.is_empty())
        .map(|word| {
            let lower = word.to_lowercase();
            if ACRONYMS.contains(&lower.as_str()) {
                lower.to_uppercase()
            } else {
                let mut chars = lower.chars();
                chars.next().map_or_else(String::new, |first| {
                    first.to_uppercase().chain(chars).collect()
                })
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Python's `urllib.parse.quote(s, safe="")`: every byte outside `A-Za-z0-9_.-~` is
/// percent-encoded (so `:` becomes `%3A` and `/` becomes `%2F`).
pub fn quote_all(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_match_the_faq_paths() {
        for (name, slug) in [
            ("customersupport-gw", "customersupport-gw"),
            ("SRE-Gateway", "sre-gateway"),
            ("TestGWforLambda", "testgwforlambda"),
            (
                "weather_time_observability_agent",
                "weather-time-observability-agent",
            ),
            ("simple_a2a_strands_agent", "simple-a2a-strands-agent"),
            ("  Weird__Name!!--x ", "weird-name-x"),
            ("geo_mcp", "geo-mcp"),
        ] {
            assert_eq!(slugify(name), slug, "{name}");
        }
    }

    #[test]
    fn empty_slug_falls_back_to_the_resource_id() {
        assert_eq!(
            registry_path("***", "gw-1a2b", ResourceKind::Gateway),
            "/gw-1a2b"
        );
        assert_eq!(
            registry_path("geo-mcp", "gw-1a2b", ResourceKind::Gateway),
            "/geo-mcp"
        );
        assert_eq!(
            target_path("***", "gw1", "", "T1A2B3C4D5"),
            "/gw1-t1a2b3c4d5"
        );
    }

    #[test]
    fn a_reserved_slug_gets_its_kind_as_suffix() {
        assert_eq!(
            registry_path("api", "x", ResourceKind::Gateway),
            "/api-gateway"
        );
        assert_eq!(
            registry_path("Health", "x", ResourceKind::Gateway),
            "/health-gateway"
        );
        assert_eq!(
            registry_path("mcpgw", "x", ResourceKind::Runtime),
            "/mcpgw-runtime"
        );
        assert_eq!(
            registry_path("OAuth2", "x", ResourceKind::Runtime),
            "/oauth2-runtime"
        );
        assert_eq!(
            registry_path("***", "login", ResourceKind::Gateway),
            "/login-gateway",
            "the id fallback is checked too"
        );
        assert_eq!(target_path("mcp", "g", "proxy", "t"), "/mcp-proxy-target");
        // Names that merely contain a reserved word keep the Python tool's path.
        assert_eq!(
            registry_path("api-gw", "x", ResourceKind::Gateway),
            "/api-gw"
        );
        assert_eq!(target_path("api", "g", "docs", "t"), "/api-docs");
    }

    #[test]
    fn no_suffixed_path_is_reserved_and_every_derived_path_is_in_the_grammar() {
        for kind in [
            ResourceKind::Gateway,
            ResourceKind::Target,
            ResourceKind::Runtime,
        ] {
            for reserved in RESERVED {
                let path = registry_path(reserved, "fallback-1", kind);
                assert!(!is_reserved(&path[1..]), "{path}");
                assert_ne!(&path[1..], *reserved);
                if reserved.contains('.') {
                    // `v0.1` cannot be produced by a slug: no suffix needed.
                    continue;
                }
                assert_eq!(path, format!("/{reserved}-{}", kind.as_str()));
                assert!(is_slug_path(&path), "{path}");
            }
        }
    }

    #[test]
    fn the_slug_grammar_admits_only_our_paths() {
        for ok in [
            "/a",
            "/geo-mcp",
            "/sre-gateway-docs-search",
            "/s0001",
            "/api-gateway",
        ] {
            assert!(is_slug_path(ok), "{ok}");
        }
        for bad in [
            "",
            "/",
            "geo-mcp",
            "/Geo",
            "/Weird Path_1",
            "/a/../b",
            "/..",
            "/a/b",
            "/-a",
            "/a-",
            "/a--b",
            "/a%2Fb",
            "/a.b",
            "/é",
            "//a",
            "/a?x=1",
        ] {
            assert!(!is_slug_path(bad), "{bad:?}");
        }
    }

    #[test]
    fn display_names_follow_the_python_rules() {
        assert_eq!(display_name("geo-mcp"), "Geo MCP");
        assert_eq!(display_name("customersupport-gw"), "Customersupport Gw");
        assert_eq!(display_name("TestGWforLambda"), "Testgwforlambda");
        assert_eq!(display_name("sre_agent"), "SRE Agent");
        assert_eq!(
            display_name("simple_a2a_strands_agent"),
            "Simple A2A Strands Agent"
        );
    }

    #[test]
    fn quote_all_encodes_arn_separators() {
        assert_eq!(
            quote_all("arn:aws:bedrock-agentcore:us-east-1:1:runtime/sre_agent-X"),
            "arn%3Aaws%3Abedrock-agentcore%3Aus-east-1%3A1%3Aruntime%2Fsre_agent-X"
        );
    }
}
