//! The registry: reachable, the token accepted (a list), and the permissions the registrar
//! needs, proven on a probe entry that is removed again: register (disabled, private), toggle,
//! set then clear its auth credential, remove. The probe is removed whatever fails.

use std::future::Future;
use std::time::Duration;

use registrar_core::desired::{Collection, DesiredEntry, EntryBody, InboundAuth, ServerFields};
use registrar_core::identity::ResourceRef;
use registrar_core::ports::Registry;
use registrar_core::trust::shown;
use registrar_core::{ErrorClass, PortError};

use super::checklist::Check;
use crate::registry::RegistryClient;

const GROUP: &str = "registry";
/// Every probe path starts with this; nothing the registrar derives can (a resource would
/// need this very name), and the registrar never owns such an entry.
pub const PROBE_PREFIX: &str = "/agentcore-registrar-doctor-probe-";
/// What the probe sets as its credential: not a secret, and never sent anywhere but the probe.
const PROBE_CREDENTIAL: &str = "agentcore-registrar-doctor-probe-not-a-token";

/// A fresh probe path: the prefix and 12 random hex digits.
pub fn probe_path() -> String {
    use std::hash::{BuildHasher, Hasher};
    // The std hasher's keys are random per process: enough to keep two probes apart.
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    format!("{PROBE_PREFIX}{:012x}", h.finish() & 0xFFFF_FFFF_FFFF)
}

/// The disabled, private server the probe registers.
pub fn probe_entry(path: &str) -> DesiredEntry {
    let mut metadata = serde_json::Map::new();
    metadata.insert("source".into(), "agentcore-registrar-doctor".into());
    let url = "https://agentcore-registrar-doctor-probe.invalid/mcp".to_owned();
    DesiredEntry {
        resource: ResourceRef::gateway(
            "arn:aws:bedrock-agentcore:us-east-1:000000000000:gateway/doctor-probe",
            "doctor-probe",
        ),
        path: path.to_owned(),
        name: "agentcore-registrar doctor probe".into(),
        auth_label: String::new(),
        inbound_auth: InboundAuth::Unknown,
        body: EntryBody::Server(Box::new(ServerFields {
            name: "agentcore-registrar doctor probe".into(),
            description:
                "A temporary entry of `registrar doctor`, removed at once; safe to delete.".into(),
            proxy_pass_url: url.clone(),
            mcp_endpoint: url,
            auth_provider: "bedrock-agentcore".into(),
            auth_scheme: "bearer".into(),
            supported_transports: "streamable-http".into(),
            tags: vec!["agentcore-registrar-doctor-probe".into()],
            visibility: "private".into(),
            metadata,
        })),
        fingerprint: String::new(),
        aws_updated_at: String::new(),
        aws_created_at: String::new(),
        manifest: None,
    }
}

async fn within<T>(
    deadline: Duration,
    operation: &str,
    call: impl Future<Output = Result<T, PortError>>,
) -> Result<T, PortError> {
    tokio::time::timeout(deadline, call)
        .await
        .unwrap_or_else(|_| {
            Err(PortError::new(
                "registry",
                operation,
                ErrorClass::Transient,
                format!("no answer within {}s", deadline.as_secs()),
            ))
        })
}

fn grant_fix(permission: &str) -> String {
    format!(
        "the registry must grant the registrar's identity (its named API key or IdP client) the {permission} permission: map its group to a scope with {permission} (the registry's mcp_scopes group_mappings)"
    )
}

/// The reach and token lines, then the probe's lines.
pub async fn check(
    registry: &RegistryClient,
    url: &str,
    identity: Option<&str>,
    deadline: Duration,
) -> Vec<Check> {
    let token_fix = "--token-file (REGISTRY_TOKEN_FILE) must hold a token the registry accepts, or use --registry-token-discovery-url with --registry-client-id and REGISTRY_CLIENT_SECRET";
    if let Err(e) = within(deadline, "token", registry.check_token()).await {
        return vec![Check::fail(
            GROUP,
            "token",
            format!("cannot be obtained: {}", shown(&e.message)),
            token_fix,
        )];
    }
    match within(deadline, "list servers", registry.list(Collection::Server)).await {
        Ok(servers) => {
            let mut out = vec![Check::ok(
                GROUP,
                format!("registry {url}"),
                format!(
                    "reachable, token accepted (a list answered; {} servers visible)",
                    servers.len()
                ),
            )];
            out.extend(probe(registry, identity, deadline).await);
            out
        }
        Err(e) if e.class == ErrorClass::Transient => vec![Check::fail(
            GROUP,
            format!("registry {url}"),
            format!("not reachable: {}", shown(&e.message)),
            "--registry-url (REGISTRY_URL) must be the registry's base URL, reachable from here",
        )],
        Err(e) => vec![Check::fail(
            GROUP,
            format!("registry {url}"),
            format!("refused the token: {}", shown(&e.message)),
            format!(
                "{token_fix}; and --registry-url (REGISTRY_URL) must be the registry's base URL"
            ),
        )],
    }
}

async fn probe(
    registry: &RegistryClient,
    identity: Option<&str>,
    deadline: Duration,
) -> Vec<Check> {
    let path = probe_path();
    let entry = probe_entry(&path);
    let mut out = Vec::new();
    let not_checked = |what: &str| {
        Check::warn(
            GROUP,
            format!("permission {what}"),
            "not checked: it needs the probe entry, which could not be registered",
            "fix the register permission first",
        )
    };
    if let Err(e) = within(deadline, "register server", registry.register(&entry)).await {
        out.push(Check::fail(
            GROUP,
            "permission register",
            format!(
                "registering the probe {path} was refused: {}",
                shown(&e.message)
            ),
            grant_fix("register_service"),
        ));
        // In case it was created after all (a timeout): removal is idempotent.
        let _ = within(
            deadline,
            "remove server",
            registry.remove(Collection::Server, &path),
        )
        .await;
        out.extend(["toggle", "auth-credential", "remove"].map(not_checked));
        return out;
    }
    out.push(Check::ok(
        GROUP,
        "permission register",
        format!("registered the probe {path} (disabled, private)"),
    ));
    match within(
        deadline,
        "get server",
        registry.get(Collection::Server, &path),
    )
    .await
    {
        Ok(Some(seen)) => out.extend(identity_check(
            identity,
            seen.registered_by.as_deref(),
            seen.enabled,
        )),
        Ok(None) => out.push(Check::warn(
            GROUP,
            "identity",
            format!("the probe {path} could not be read back"),
            "the registry hides entries the caller registered; check its visibility rules",
        )),
        Err(e) => out.push(Check::warn(
            GROUP,
            "identity",
            format!("reading the probe back failed: {}", shown(&e.message)),
            "retry; the registry answered the registration",
        )),
    }
    match within(
        deadline,
        "toggle server",
        registry.set_enabled(Collection::Server, &path, false),
    )
    .await
    {
        Ok(()) => out.push(Check::ok(
            GROUP,
            "permission toggle",
            "set the probe's enabled state",
        )),
        Err(e) => out.push(Check::fail(
            GROUP,
            "permission toggle",
            format!("refused: {}", shown(&e.message)),
            grant_fix("modify_service"),
        )),
    }
    let credential = async {
        registry
            .set_credential(&path, Some(PROBE_CREDENTIAL))
            .await?;
        registry.set_credential(&path, None).await
    };
    match within(deadline, "set auth credential", credential).await {
        Ok(()) => out.push(Check::ok(
            GROUP,
            "permission auth-credential",
            "set then cleared the probe's credential",
        )),
        Err(e) => out.push(Check::fail(
            GROUP,
            "permission auth-credential",
            format!("refused: {}", shown(&e.message)),
            grant_fix("modify_service"),
        )),
    }
    match within(
        deadline,
        "remove server",
        registry.remove(Collection::Server, &path),
    )
    .await
    {
        Ok(()) => out.push(Check::ok(
            GROUP,
            "permission remove",
            "removed the probe; nothing left behind",
        )),
        Err(e) => out.push(Check::fail(
            GROUP,
            "permission remove",
            format!(
                "refused: {}; the probe {path} is LEFT BEHIND (disabled, private)",
                shown(&e.message)
            ),
            format!(
                "{}; then remove {path} by hand (POST /api/servers/remove, form path={path})",
                grant_fix("delete_service")
            ),
        )),
    }
    out
}

/// Whether the registry records the token as the configured `--registry-identity`.
pub fn identity_check(
    configured: Option<&str>,
    recorded: Option<&str>,
    enabled: bool,
) -> Vec<Check> {
    let recorded = recorded.map(shown);
    let mut out = vec![match (configured, recorded.as_deref()) {
        (Some(c), Some(r)) if c == r => Check::ok(
            GROUP,
            "identity",
            format!("the registry records this token as {r}, as --registry-identity says"),
        ),
        (Some(c), r) => Check::fail(
            GROUP,
            "identity",
            format!(
                "the registry records this token as {}, but --registry-identity is {}: nothing the worker registers would be taken as its own",
                r.unwrap_or("nobody"),
                shown(c)
            ),
            format!(
                "set --registry-identity (REGISTRAR_REGISTRY_IDENTITY; the stack's RegistryIdentity) to {}",
                r.unwrap_or("the registered_by the registry records")
            ),
        ),
        (None, r) => Check::warn(
            GROUP,
            "identity",
            format!(
                "no --registry-identity; the registry records this token as {}",
                r.unwrap_or("nobody")
            ),
            format!(
                "set --registry-identity (REGISTRAR_REGISTRY_IDENTITY) to {} so entries registered by others are never taken as ours",
                r.unwrap_or("the registered_by the registry records")
            ),
        ),
    }];
    if enabled {
        out.push(Check::warn(
            GROUP,
            "new entries",
            "the registry enabled the probe at once: the enable policy assumes new entries start disabled",
            "check the registry version; entries are enabled by the registrar's --enable-policy otherwise",
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::checklist::Status;

    #[test]
    fn probe_paths_are_slugs_under_the_reserved_prefix() {
        let a = probe_path();
        assert!(a.starts_with(PROBE_PREFIX), "{a}");
        assert!(registrar_core::naming::is_slug_path(&a), "{a}");
        let entry = probe_entry(&a);
        let EntryBody::Server(s) = &entry.body else {
            panic!("a server")
        };
        assert_eq!(s.visibility, "private");
        assert_ne!(
            s.metadata.get("source").and_then(|v| v.as_str()),
            Some(registrar_core::identity::SOURCE),
            "the registrar never owns a probe"
        );
    }

    #[test]
    fn the_identity_the_registry_records_must_be_the_configured_one() {
        let ok = identity_check(Some("registrar"), Some("registrar"), false);
        assert_eq!(ok.len(), 1);
        assert_eq!(ok[0].status, Status::Ok);
        let wrong = identity_check(Some("registrar"), Some("network-user"), false);
        assert_eq!(wrong[0].status, Status::Fail);
        assert!(
            wrong[0]
                .fix
                .as_deref()
                .is_some_and(|f| f.contains("network-user"))
        );
        let unset = identity_check(None, Some("network-user"), true);
        assert_eq!(unset[0].status, Status::Warn);
        assert_eq!(
            unset[1].status,
            Status::Warn,
            "enabled at once is worth a warning"
        );
    }
}
