//! Registry paths, display names and URL quoting, as the Python tool derives them
//! (`registry-contract.md` §1.3), so registries it filled keep their paths.

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

/// The registry path for a resource name: `/<slug(name)>`.
///
/// Deliberate difference from the Python tool: a name with no ASCII alphanumerics would give
/// the path `/`; we fall back to the slug of the resource id instead.
pub fn registry_path(name: &str, fallback_id: &str) -> String {
    let slug = slugify(name);
    if slug.is_empty() {
        format!("/{}", slugify(fallback_id))
    } else {
        format!("/{slug}")
    }
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
        assert_eq!(registry_path("***", "gw-1a2b"), "/gw-1a2b");
        assert_eq!(registry_path("geo-mcp", "gw-1a2b"), "/geo-mcp");
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
