//! The registry entry a resource should have (`registry-contract.md` §1.3-§1.5), with the
//! deliberate differences `design.md` lists.

use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::fingerprint::fingerprint;
use crate::identity::{ResourceKind, ResourceRef, SOURCE};
use crate::naming::{display_name, is_slug_path, quote_all, registry_path, target_path};
use crate::observed::{
    Arn, AuthorizerType, GatewaySnapshot, JwtAuthorizer, RuntimeSnapshot, ServerProtocol,
    TargetSnapshot, unqualified_runtime_arn,
};
use crate::outbound::check_outbound_url;
use crate::tokens::{IdpVendor, ManifestFields};

/// `auth_provider` sent for every server.
const AUTH_PROVIDER: &str = "bedrock-agentcore";

/// The two collections of the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Collection {
    /// `/api/servers`: MCP servers (gateways, targets, runtimes that speak MCP).
    Server,
    /// `/api/agents`: agents (runtimes that do not speak MCP).
    Agent,
}

impl Collection {
    /// `server` or `agent`: the stable name in state rows, logs and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Server => "server",
            Self::Agent => "agent",
        }
    }
}

/// Registry visibility. `internal` is read as `private`, as the registry itself reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Visibility {
    #[default]
    /// Listed for everyone.
    Public,
    /// Listed only for its owner (`internal` reads as this).
    Private,
    /// Listed for the entry's allowed groups.
    GroupRestricted,
}

impl Visibility {
    /// Reads the flag's value: `public`, `private` (or `internal`), `group-restricted`.
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "public" => Some(Self::Public),
            "private" | "internal" => Some(Self::Private),
            "group-restricted" => Some(Self::GroupRestricted),
            _ => None,
        }
    }

    /// The registry's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Public => "public",
            Self::Private => "private",
            Self::GroupRestricted => "group-restricted",
        }
    }
}

/// How callers authenticate to the resource itself; drives the enable policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InboundAuth {
    /// CUSTOM_JWT: usable once an egress token is in place.
    Jwt,
    /// AWS_IAM (SigV4).
    Iam,
    /// No inbound authorization: anyone who can reach it can invoke it.
    Open,
    /// Not known (an MCP target's upstream, an authorizer type we do not know).
    Unknown,
}

/// Options that shape every desired entry of a run.
#[derive(Debug, Clone, Copy, Default)]
pub struct DeriveOptions {
    /// Visibility of every entry registered (an entry's is never changed after).
    pub visibility: Visibility,
}

/// Form fields of `POST /api/servers/register` (encoding is the adapter's job).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServerFields {
    /// Display name.
    pub name: String,
    /// Description.
    pub description: String,
    /// Where the registry proxies to (the gateway's or runtime's URL).
    pub proxy_pass_url: String,
    /// The MCP endpoint clients call.
    pub mcp_endpoint: String,
    /// Always `bedrock-agentcore`.
    pub auth_provider: String,
    /// `bearer` for JWT-protected resources, else what the authorizer maps to.
    pub auth_scheme: String,
    /// Always `streamable-http`.
    pub supported_transports: String,
    /// Tags (`auto-registered`, the kind, ...).
    pub tags: Vec<String>,
    /// [`Visibility::as_str`].
    pub visibility: String,
    /// Ownership and change-detection metadata (`source`, ARN, `updated_at`, `fingerprint`).
    pub metadata: Map<String, Value>,
}

/// JSON body of `POST /api/agents/register` and `PUT /api/agents/<path>`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentFields {
    /// A2A agent-card protocol version.
    pub protocol_version: String,
    /// Display name.
    pub name: String,
    /// Description.
    pub description: String,
    /// The runtime's invocation URL.
    pub url: String,
    /// Agent version (fixed: AWS gives none).
    pub version: String,
    /// A2A capabilities (none declared).
    pub capabilities: Map<String, Value>,
    /// Input media types.
    pub default_input_modes: Vec<String>,
    /// Output media types.
    pub default_output_modes: Vec<String>,
    /// A2A skills (none declared).
    pub skills: Vec<Value>,
    /// A2A preferred transport.
    pub preferred_transport: String,
    /// How callers authenticate, as A2A security schemes.
    pub security_schemes: Value,
    /// Which of the security schemes apply.
    pub security: Value,
    /// Ownership and change-detection metadata (`source`, ARN, `updated_at`, `fingerprint`).
    pub metadata: Map<String, Value>,
    /// The registry path.
    pub path: String,
    /// Tags (`auto-registered`, the kind, ...).
    pub tags: Vec<String>,
    /// License (unknown: `N/A`).
    pub license: String,
    /// [`Visibility::as_str`].
    pub visibility: String,
    /// Groups that see a group-restricted entry.
    pub allowed_groups: Vec<String>,
    /// The registry's trust level (`unverified`: we do not vouch for the agent).
    pub trust_level: String,
    /// `a2a` when the runtime speaks A2A, else `other`.
    pub supported_protocol: String,
}

/// The fields of an entry, by collection.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum EntryBody {
    /// A server's form fields.
    Server(Box<ServerFields>),
    /// An agent's JSON body.
    Agent(Box<AgentFields>),
}

impl EntryBody {
    /// The collection the body is registered in.
    pub fn collection(&self) -> Collection {
        match self {
            Self::Server(_) => Collection::Server,
            Self::Agent(_) => Collection::Agent,
        }
    }

    /// The body's `metadata` (ownership and fingerprint).
    pub fn metadata(&self) -> &Map<String, Value> {
        match self {
            Self::Server(s) => &s.metadata,
            Self::Agent(a) => &a.metadata,
        }
    }

    fn metadata_mut(&mut self) -> &mut Map<String, Value> {
        match self {
            Self::Server(s) => &mut s.metadata,
            Self::Agent(a) => &mut a.metadata,
        }
    }
}

/// What an entry points at: where the registry sends its clients (and its stored egress
/// credential, for servers). Metadata can be copied by anyone allowed to register; this is what
/// decides whether an entry that claims to be ours really is (design invariant 2).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Pointing {
    /// A server's `proxy_pass_url`, an agent's `url`, without a trailing `/`.
    pub url: String,
    /// A server's `auth_scheme`; agents have none.
    pub auth_scheme: Option<String>,
}

impl Pointing {
    /// A pointing, the URL without a trailing `/`.
    pub fn new(url: &str, auth_scheme: Option<&str>) -> Self {
        Self {
            url: url.trim().trim_end_matches('/').to_owned(),
            auth_scheme: auth_scheme.map(str::to_owned),
        }
    }
}

impl EntryBody {
    /// Where this body points.
    pub fn pointing(&self) -> Pointing {
        match self {
            Self::Server(s) => Pointing::new(&s.proxy_pass_url, Some(&s.auth_scheme)),
            Self::Agent(a) => Pointing::new(&a.url, None),
        }
    }
}

/// The registry entry one resource should have.
#[derive(Debug, Clone, PartialEq)]
pub struct DesiredEntry {
    /// The resource the entry stands for.
    pub resource: ResourceRef,
    /// Its registry path.
    pub path: String,
    /// The resource's own name (for reports).
    pub name: String,
    /// The summary table's Auth column.
    pub auth_label: String,
    /// How callers authenticate to the resource: drives the enable policy.
    pub inbound_auth: InboundAuth,
    /// The body to send; its `metadata.fingerprint` is [`DesiredEntry::fingerprint`].
    pub body: EntryBody,
    /// Hash of the body (before the fingerprint was added): equal means nothing to write.
    pub fingerprint: String,
    /// AWS `updatedAt` of the resource this entry was derived from.
    pub aws_updated_at: String,
    /// AWS `createdAt`: the older resource keeps a contested path.
    pub aws_created_at: String,
    /// Present when the entry needs an egress token.
    pub manifest: Option<ManifestFields>,
}

impl DesiredEntry {
    /// The collection the entry is registered in.
    pub fn collection(&self) -> Collection {
        self.body.collection()
    }

    fn new(
        resource: ResourceRef,
        path: String,
        name: String,
        auth: (String, InboundAuth),
        mut body: EntryBody,
        times: (&str, &str),
        manifest: Option<ManifestFields>,
    ) -> Self {
        let fingerprint = fingerprint(&body);
        let manifest = manifest.map(|m| ManifestFields {
            url: body.pointing().url,
            ..m
        });
        body.metadata_mut()
            .insert("fingerprint".into(), Value::String(fingerprint.clone()));
        Self {
            resource,
            path,
            name,
            auth_label: auth.0,
            inbound_auth: auth.1,
            body,
            fingerprint,
            aws_created_at: times.0.to_owned(),
            aws_updated_at: times.1.to_owned(),
            manifest,
        }
    }
}

/// Why a READY resource gets no entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unregistrable {
    /// The resource.
    pub resource: ResourceRef,
    /// Its name (its id when AWS gave none).
    pub name: String,
    /// The path derived for it.
    pub path: String,
    /// Why it cannot be registered.
    pub reason: String,
}

/// The path a gateway or runtime that AgentCore lists with `name` wants (what its entry's path
/// will be, unless it is renamed before it is read).
pub fn listed_path(name: &str, id: &str, kind: ResourceKind) -> String {
    registry_path(if name.is_empty() { id } else { name }, id, kind)
}

/// Why a derived path cannot be used: a path outside the slug grammar would never be addressed
/// again (the registry client refuses such paths), so nothing is registered there. Only a
/// resource whose name and id both lack ASCII alphanumerics gets one.
/// The name a resource is shown by (its id when AWS gave none) and its registry path; a path
/// outside our grammar makes the resource unregistrable.
#[expect(
    clippy::result_large_err,
    reason = "the error is rare and carries the report row"
)]
fn name_and_path(
    resource: &ResourceRef,
    name: &str,
    id: &str,
    kind: ResourceKind,
) -> Result<(String, String), Unregistrable> {
    let name = if name.is_empty() { id } else { name }.to_owned();
    let path = registry_path(&name, id, kind);
    match unusable_path(&path) {
        None => Ok((name, path)),
        Some(reason) => Err(Unregistrable {
            resource: resource.clone(),
            name,
            path,
            reason,
        }),
    }
}

fn unusable_path(path: &str) -> Option<String> {
    (!is_slug_path(path)).then(|| format!("No usable registry path (derived {path:?})"))
}

/// The AWS description when present and non-empty (the registry rejects an empty one),
/// else the generated one.
fn description(aws: Option<&str>, fallback: impl FnOnce() -> String) -> String {
    match aws.map(str::trim) {
        Some(d) if !d.is_empty() => d.to_owned(),
        _ => fallback(),
    }
}

/// The tag on entries of gateways anyone can invoke (`authorizerType` NONE).
pub const UNAUTHENTICATED_TAG: &str = "unauthenticated";

fn gateway_tags(inbound: InboundAuth) -> Vec<String> {
    let mut t = tags(&["agentcore", "gateway", "auto-registered"]);
    if inbound == InboundAuth::Open {
        t.push(UNAUTHENTICATED_TAG.into());
    }
    t
}

fn tags(words: &[&str]) -> Vec<String> {
    words.iter().map(|w| (*w).to_owned()).collect()
}

fn base_metadata(arn: &Arn) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("source".into(), json!(SOURCE));
    m.insert("region".into(), json!(arn.region));
    m.insert("account_id".into(), json!(arn.account));
    m
}

fn jwt_metadata(m: &mut Map<String, Value>, jwt: &JwtAuthorizer) {
    m.insert("discovery_url".into(), json!(jwt.discovery_url));
    m.insert("allowed_clients".into(), json!(jwt.allowed_clients));
    m.insert(
        "idp_vendor".into(),
        json!(IdpVendor::detect(&jwt.discovery_url).as_str()),
    );
}

fn manifest_for(path: &str, arn: &str, jwt: Option<&JwtAuthorizer>) -> Option<ManifestFields> {
    let jwt = jwt.filter(|j| !j.discovery_url.is_empty())?;
    Some(ManifestFields {
        path: path.to_owned(),
        arn: arn.to_owned(),
        // Set from the body by `DesiredEntry::new`.
        url: String::new(),
        discovery_url: jwt.discovery_url.clone(),
        allowed_clients: jwt.allowed_clients.clone(),
        allowed_audience: jwt.allowed_audience.clone(),
        allowed_scopes: jwt.allowed_scopes.clone(),
        idp_vendor: IdpVendor::detect(&jwt.discovery_url),
    })
}

/// A gateway becomes an MCP server at `/<slug(name)>` pointing at its `gatewayUrl`.
#[expect(
    clippy::result_large_err,
    reason = "the error is rare and carries the report row"
)]
pub fn gateway_entry(
    gw: &GatewaySnapshot,
    opts: DeriveOptions,
) -> Result<DesiredEntry, Unregistrable> {
    let resource = ResourceRef::gateway(&gw.arn, &gw.id);
    let (name, path) = name_and_path(&resource, &gw.name, &gw.id, ResourceKind::Gateway)?;
    let url = match gw.url.as_deref() {
        Some(u) if u.starts_with("https://") => match check_outbound_url(u, false) {
            Ok(_) => u.to_owned(),
            Err(e) => {
                return Err(Unregistrable {
                    resource,
                    name,
                    path,
                    reason: format!("Invalid gateway URL: {e}"),
                });
            }
        },
        _ => {
            return Err(Unregistrable {
                resource,
                name,
                path,
                reason: "Invalid URL (must be HTTPS)".into(),
            });
        }
    };
    let Some(arn) = Arn::parse(&gw.arn) else {
        return Err(Unregistrable {
            resource,
            name,
            path,
            reason: "Unparseable gateway ARN".into(),
        });
    };
    let display = display_name(&name);
    let (scheme, inbound) = match gw.authorizer_type {
        AuthorizerType::CustomJwt => ("bearer", InboundAuth::Jwt),
        AuthorizerType::AwsIam => ("bearer", InboundAuth::Iam),
        AuthorizerType::None => ("none", InboundAuth::Open),
        AuthorizerType::Other(_) => ("none", InboundAuth::Unknown),
    };
    let jwt = match gw.authorizer_type {
        AuthorizerType::CustomJwt => gw.jwt.as_ref(),
        _ => None,
    };
    let mut metadata = base_metadata(&arn);
    metadata.insert("gateway_arn".into(), json!(gw.arn));
    metadata.insert("gateway_id".into(), json!(gw.id));
    metadata.insert("authorizer_type".into(), json!(gw.authorizer_type.as_str()));
    if let Some(jwt) = jwt.filter(|j| !j.discovery_url.is_empty()) {
        jwt_metadata(&mut metadata, jwt);
    }
    metadata.insert("updated_at".into(), json!(gw.updated_at));
    let fields = ServerFields {
        description: description(gw.description.as_deref(), || {
            format!("AgentCore Gateway: {display}")
        }),
        name: display,
        proxy_pass_url: url.clone(),
        mcp_endpoint: url,
        auth_provider: AUTH_PROVIDER.into(),
        auth_scheme: scheme.into(),
        supported_transports: "streamable-http".into(),
        tags: gateway_tags(inbound),
        visibility: opts.visibility.as_str().into(),
        metadata,
    };
    let manifest = manifest_for(&path, &gw.arn, jwt);
    Ok(DesiredEntry::new(
        resource,
        path,
        name,
        (gw.authorizer_type.as_str().to_owned(), inbound),
        EntryBody::Server(Box::new(fields)),
        (&gw.created_at, &gw.updated_at),
        manifest,
    ))
}

/// An `mcpServer` target becomes an MCP server at `/<gateway slug>-<target slug>` pointing at
/// the upstream endpoint. Other target types get no entry (`None`).
///
/// The endpoint is a string whoever created the target typed: it must pass
/// [`check_outbound_url`] without the insecure allowance (https, or http to a loopback host as
/// parsed, never `user:pass@`), or the target is unregistrable with the refused URL in the
/// reason. The registry gets the URL as parsed (`proxy_pass_url`), so it cannot read a
/// different host out of it than we did.
pub fn target_entry(
    t: &TargetSnapshot,
    opts: DeriveOptions,
) -> Option<Result<DesiredEntry, Unregistrable>> {
    let endpoint = t.mcp_endpoint.as_deref().filter(|e| !e.is_empty())?;
    let gw = &t.gateway;
    let resource = ResourceRef::target(&gw.arn, &gw.id, &t.target_id);
    let gw_name = if gw.name.is_empty() {
        gw.id.as_str()
    } else {
        gw.name.as_str()
    };
    let t_name = if t.name.is_empty() {
        t.target_id.as_str()
    } else {
        t.name.as_str()
    };
    let path = target_path(gw_name, &gw.id, t_name, &t.target_id);
    let unregistrable = |reason: String| {
        Some(Err(Unregistrable {
            resource: resource.clone(),
            name: t_name.to_owned(),
            path: path.clone(),
            reason,
        }))
    };
    if let Some(reason) = unusable_path(&path) {
        return unregistrable(reason);
    }
    let Some(arn) = Arn::parse(&gw.arn) else {
        return unregistrable("Unparseable gateway ARN".into());
    };
    let endpoint = match check_outbound_url(endpoint, false) {
        Ok(url) => String::from(url),
        Err(e) => return unregistrable(format!("mcpServer endpoint refused: {e}")),
    };
    let display = format!("{} - {}", display_name(gw_name), display_name(t_name));
    let mut metadata = base_metadata(&arn);
    metadata.insert("gateway_arn".into(), json!(gw.arn));
    metadata.insert("gateway_id".into(), json!(gw.id));
    metadata.insert("target_id".into(), json!(t.target_id));
    metadata.insert("updated_at".into(), json!(t.updated_at));
    let fields = ServerFields {
        description: description(t.description.as_deref(), || {
            format!("MCP Server target: {}", display_name(t_name))
        }),
        name: display,
        proxy_pass_url: endpoint.clone(),
        mcp_endpoint: endpoint,
        auth_provider: AUTH_PROVIDER.into(),
        auth_scheme: "bearer".into(),
        supported_transports: "streamable-http".into(),
        tags: tags(&[
            "agentcore",
            "gateway-target",
            "mcp-server",
            "auto-registered",
        ]),
        visibility: opts.visibility.as_str().into(),
        metadata,
    };
    Some(Ok(DesiredEntry::new(
        resource,
        path,
        format!("{gw_name}/{t_name}"),
        (gw.authorizer_type.as_str().to_owned(), InboundAuth::Unknown),
        EntryBody::Server(Box::new(fields)),
        (&t.created_at, &t.updated_at),
        None,
    )))
}

/// `https://bedrock-agentcore.<region of the ARN>.amazonaws.com/runtimes/<quoted ARN>/invocations`.
pub fn runtime_invocation_url(arn: &Arn) -> String {
    format!(
        "https://bedrock-agentcore.{}.amazonaws.com/runtimes/{}/invocations",
        arn.region,
        quote_all(&arn.to_string())
    )
}

/// An MCP runtime becomes an MCP server; any other runtime becomes an agent.
#[expect(
    clippy::result_large_err,
    reason = "the error is rare and carries the report row"
)]
pub fn runtime_entry(
    rt: &RuntimeSnapshot,
    opts: DeriveOptions,
) -> Result<DesiredEntry, Unregistrable> {
    let unqualified = unqualified_runtime_arn(&rt.arn);
    let resource = ResourceRef::runtime(&unqualified, &rt.id);
    let (name, path) = name_and_path(&resource, &rt.name, &rt.id, ResourceKind::Runtime)?;
    let Some(arn) = Arn::parse(&unqualified) else {
        return Err(Unregistrable {
            resource,
            name,
            path,
            reason: "Unparseable runtime ARN".into(),
        });
    };
    let display = display_name(&name);
    let url = runtime_invocation_url(&arn);
    let jwt = rt.jwt.as_ref().filter(|j| !j.discovery_url.is_empty());
    let (auth_label, inbound) = match jwt {
        Some(_) => ("CUSTOM_JWT", InboundAuth::Jwt),
        None => ("IAM", InboundAuth::Iam),
    };
    let mut metadata = base_metadata(&arn);
    metadata.insert("runtime_arn".into(), json!(unqualified));
    metadata.insert("runtime_id".into(), json!(rt.id));
    metadata.insert("server_protocol".into(), json!(rt.protocol.as_str()));
    if let Some(jwt) = jwt {
        metadata.insert("authorizer_type".into(), json!("CUSTOM_JWT"));
        jwt_metadata(&mut metadata, jwt);
    }
    metadata.insert("updated_at".into(), json!(rt.updated_at));
    let body = if rt.protocol == ServerProtocol::Mcp {
        EntryBody::Server(Box::new(ServerFields {
            description: description(rt.description.as_deref(), || {
                format!("AgentCore MCP Server: {display}")
            }),
            name: display,
            proxy_pass_url: url.clone(),
            mcp_endpoint: url,
            auth_provider: AUTH_PROVIDER.into(),
            auth_scheme: "bearer".into(),
            supported_transports: "streamable-http".into(),
            tags: tags(&["agentcore", "runtime", "mcp-server", "auto-registered"]),
            visibility: opts.visibility.as_str().into(),
            metadata,
        }))
    } else {
        let a2a = rt.protocol == ServerProtocol::A2a;
        let mut agent_tags = tags(&["agentcore", "runtime", "agent", "auto-registered"]);
        if a2a {
            agent_tags.push("a2a".into());
        }
        let (schemes, security) = if jwt.is_some() {
            (
                json!({"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                                  "description": "OAuth2 JWT from the runtime's identity provider"}}),
                json!([{"bearer": []}]),
            )
        } else {
            (
                json!({"sigv4": {"type": "http", "scheme": "AWS4-HMAC-SHA256",
                                 "description": "AWS SigV4 request signing (IAM auth)"}}),
                json!([{"sigv4": []}]),
            )
        };
        EntryBody::Agent(Box::new(AgentFields {
            protocol_version: "1.0".into(),
            description: description(rt.description.as_deref(), || {
                format!("AgentCore Agent: {display}")
            }),
            name: display,
            url,
            version: "1.0.0".into(),
            capabilities: Map::new(),
            default_input_modes: vec!["text/plain".into()],
            default_output_modes: vec!["text/plain".into()],
            skills: Vec::new(),
            preferred_transport: "JSONRPC".into(),
            security_schemes: schemes,
            security,
            metadata,
            path: path.clone(),
            tags: agent_tags,
            license: "N/A".into(),
            visibility: opts.visibility.as_str().into(),
            allowed_groups: Vec::new(),
            trust_level: "unverified".into(),
            supported_protocol: if a2a { "a2a" } else { "other" }.into(),
        }))
    };
    let manifest = manifest_for(&path, &unqualified, jwt);
    Ok(DesiredEntry::new(
        resource,
        path,
        name,
        (auth_label.to_owned(), inbound),
        body,
        (&rt.created_at, &rt.updated_at),
        manifest,
    ))
}

#[cfg(test)]
#[path = "desired_tests.rs"]
mod tests;
