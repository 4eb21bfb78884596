//! Which AWS resource an entry stands for, and whether the entry is ours (design invariant 2).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::observed::{Arn, unqualified_runtime_arn};

/// `metadata.source` of every entry this service writes: with the resource's ARN, what makes an
/// entry ours ([`Owner::Us`]).
pub const SOURCE: &str = "agentcore-registrar";
/// `metadata.source` of entries written by the registry's Python tool ([`Owner::Legacy`],
/// adoptable).
pub const LEGACY_SOURCE: &str = "agentcore-sync";

/// The kinds of AgentCore resource the registrar registers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResourceKind {
    /// An AgentCore Gateway: an MCP server in the registry.
    Gateway,
    /// A gateway target: an MCP server of its own, behind its gateway.
    Target,
    /// An Agent Runtime: an agent, or an MCP server when it speaks MCP.
    Runtime,
}

impl ResourceKind {
    /// `gateway`, `target` or `runtime`: the stable name in state rows, logs and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Gateway => "gateway",
            Self::Target => "target",
            Self::Runtime => "runtime",
        }
    }

    /// The inverse of [`as_str`](Self::as_str).
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "gateway" => Some(Self::Gateway),
            "target" => Some(Self::Target),
            "runtime" => Some(Self::Runtime),
            _ => None,
        }
    }
}

/// One AWS resource: its identity (`arn`) and what is needed to read it again.
///
/// For a target the identity is `<gatewayArn>:target:<targetId>`, as the Python tool reports
/// it; for a runtime it is the ARN without a version qualifier.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ResourceRef {
    /// What kind of resource.
    pub kind: ResourceKind,
    /// Its identity (see above).
    pub arn: String,
    /// The account, from the ARN (empty when the ARN does not parse).
    pub account: String,
    /// The region, from the ARN: a resource carries its own region.
    pub region: String,
    /// Gateway id, runtime id, or target id.
    pub id: String,
    /// The parent gateway id of a target.
    pub gateway_id: Option<String>,
}

impl ResourceRef {
    fn with_arn(kind: ResourceKind, arn: String, id: &str, gateway_id: Option<&str>) -> Self {
        let parsed = Arn::parse(&arn);
        Self {
            kind,
            account: parsed
                .as_ref()
                .map(|a| a.account.clone())
                .unwrap_or_default(),
            region: parsed.map(|a| a.region).unwrap_or_default(),
            arn,
            id: id.to_owned(),
            gateway_id: gateway_id.map(str::to_owned),
        }
    }

    /// A gateway by ARN and id.
    pub fn gateway(arn: &str, id: &str) -> Self {
        Self::with_arn(ResourceKind::Gateway, arn.to_owned(), id, None)
    }

    /// A target: `<gatewayArn>:target:<targetId>`.
    pub fn target(gateway_arn: &str, gateway_id: &str, target_id: &str) -> Self {
        let arn = format!("{gateway_arn}:target:{target_id}");
        Self::with_arn(ResourceKind::Target, arn, target_id, Some(gateway_id))
    }

    /// A runtime, its ARN without a version qualifier.
    pub fn runtime(arn: &str, id: &str) -> Self {
        Self::with_arn(
            ResourceKind::Runtime,
            unqualified_runtime_arn(arn),
            id,
            None,
        )
    }

    /// The resource an identity names, when the identity alone says enough to read it again:
    /// a gateway (`...:gateway/<id>`), a target (`<gatewayArn>:target:<targetId>`) or a runtime
    /// (`...:runtime/<id>`, a version qualifier dropped). `None` for anything else, among them
    /// the local emulator's runtime ARNs (`...:agent/<uuid>`), which do not carry the runtime id.
    pub fn from_arn(arn: &str) -> Option<Self> {
        let parsed = Arn::parse(arn)?;
        let id_like = |id: &str| !id.is_empty() && !id.contains([':', '/']);
        if let Some((gateway, target_id)) = parsed.resource.split_once(":target:") {
            let gateway_id = gateway.strip_prefix("gateway/").filter(|g| id_like(g))?;
            let gateway_arn = arn.strip_suffix(&format!(":target:{target_id}"))?;
            return id_like(target_id).then(|| Self::target(gateway_arn, gateway_id, target_id));
        }
        if let Some(id) = parsed.resource.strip_prefix("gateway/") {
            return id_like(id).then(|| Self::gateway(arn, id));
        }
        let unqualified = unqualified_runtime_arn(arn);
        let id = Arn::parse(&unqualified)?
            .resource
            .strip_prefix("runtime/")
            .filter(|id| id_like(id))?
            .to_owned();
        Some(Self::runtime(&unqualified, &id))
    }

    /// Reads the resource an entry stands for from its metadata (the keys both this service
    /// and the Python tool write).
    pub fn from_metadata(metadata: &Map<String, Value>) -> Option<Self> {
        let text = |key: &str| {
            metadata
                .get(key)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
        };
        if let Some(arn) = text("runtime_arn") {
            let id = text("runtime_id").unwrap_or_default();
            return Some(Self::runtime(arn, id));
        }
        let gateway_arn = text("gateway_arn")?;
        let gateway_id = text("gateway_id")
            .map(str::to_owned)
            .or_else(|| {
                gateway_arn
                    .rsplit_once("gateway/")
                    .map(|(_, id)| id.to_owned())
            })
            .unwrap_or_default();
        Some(match text("target_id") {
            Some(target_id) => Self::target(gateway_arn, &gateway_id, target_id),
            None => Self::gateway(gateway_arn, &gateway_id),
        })
    }

    /// The scope whose complete listing is authoritative for this resource's absence.
    pub fn scope(&self) -> Scope {
        Scope {
            kind: self.kind,
            account: self.account.clone(),
            region: self.region.clone(),
        }
    }
}

/// What an event names (design invariant 1): the resource to reconcile, by id only. The ARN may
/// not be known yet (a DeleteGateway event carries only the identifier).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ResourceKey {
    /// What kind of resource.
    pub kind: ResourceKind,
    /// Empty when the event did not say (moto omits the EventBridge `account`).
    pub account: String,
    /// The region the event came from.
    pub region: String,
    /// Gateway id, runtime id, or target id.
    pub id: String,
    /// The parent gateway id of a target.
    pub gateway_id: Option<String>,
}

/// A (kind, account, region) that a scan can list completely.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Scope {
    /// What kind of resource is listed.
    pub kind: ResourceKind,
    /// The account listed.
    pub account: String,
    /// The region listed.
    pub region: String,
}

/// Who an existing registry entry belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    /// Written by this service for that resource.
    Us(ResourceRef),
    /// Written by the Python tool for that resource; adopted when adoption is on.
    Legacy(ResourceRef),
    /// Anything else: never changed, enabled or deleted.
    Foreign,
}

impl Owner {
    /// Classifies an entry from its metadata and tags (`registry-contract.md` §3).
    pub fn classify(metadata: &Map<String, Value>, tags: &[String], adopt_legacy: bool) -> Self {
        let source = metadata.get("source").and_then(Value::as_str);
        let resource = ResourceRef::from_metadata(metadata);
        match (source, resource) {
            (Some(SOURCE), Some(r)) => Self::Us(r),
            (Some(LEGACY_SOURCE), Some(r))
                if adopt_legacy && tags.iter().any(|t| t == "auto-registered") =>
            {
                Self::Legacy(r)
            }
            _ => Self::Foreign,
        }
    }

    /// The resource, when the entry is ours or adoptable.
    pub fn resource(&self) -> Option<&ResourceRef> {
        match self {
            Self::Us(r) | Self::Legacy(r) => Some(r),
            Self::Foreign => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn meta(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    const GW: &str = "arn:aws:bedrock-agentcore:us-east-1:111122223333:gateway/gw-abc";

    #[test]
    fn our_entries_are_ours() {
        let m = meta(json!({"source": SOURCE, "gateway_arn": GW, "gateway_id": "gw-abc"}));
        assert_eq!(
            Owner::classify(&m, &[], false),
            Owner::Us(ResourceRef::gateway(GW, "gw-abc"))
        );
    }

    #[test]
    fn python_entries_are_adopted_only_when_allowed_and_tagged() {
        let m = meta(json!({"source": LEGACY_SOURCE, "gateway_arn": GW}));
        let tags = vec!["agentcore".to_owned(), "auto-registered".to_owned()];
        assert_eq!(
            Owner::classify(&m, &tags, true),
            Owner::Legacy(ResourceRef::gateway(GW, "gw-abc"))
        );
        assert_eq!(Owner::classify(&m, &tags, false), Owner::Foreign);
        assert_eq!(Owner::classify(&m, &[], true), Owner::Foreign);
    }

    #[test]
    fn federated_and_unmarked_entries_are_foreign() {
        let federated = meta(json!({"source": "agentcore", "gateway_arn": GW}));
        assert_eq!(Owner::classify(&federated, &[], true), Owner::Foreign);
        assert_eq!(Owner::classify(&Map::new(), &[], true), Owner::Foreign);
        let no_arn = meta(json!({"source": SOURCE}));
        assert_eq!(Owner::classify(&no_arn, &[], true), Owner::Foreign);
    }

    #[test]
    fn identities_that_say_enough_name_their_resource() {
        let gateway = ResourceRef::gateway(GW, "gw-abc");
        assert_eq!(ResourceRef::from_arn(GW), Some(gateway));
        let target = ResourceRef::target(GW, "gw-abc", "T1");
        assert_eq!(ResourceRef::from_arn(&target.arn), Some(target));
        let rt = "arn:aws:bedrock-agentcore:eu-west-1:111122223333:runtime/sre_agent-Xyz12AbCde";
        let runtime = ResourceRef::runtime(rt, "sre_agent-Xyz12AbCde");
        assert_eq!(ResourceRef::from_arn(rt), Some(runtime.clone()));
        assert_eq!(
            ResourceRef::from_arn(&format!("{rt}:3")),
            Some(runtime),
            "a version qualifier names the same runtime"
        );
        for unknown in [
            "arn:aws:bedrock-agentcore:us-east-1:1:agent/6a8e-uuid:1",
            "arn:aws:bedrock-agentcore:us-east-1:1:gateway/",
            "arn:aws:bedrock-agentcore:us-east-1:1:gateway/gw:target:",
            "arn:aws:bedrock-agentcore:us-east-1:1:memory/m-1",
            "another resource",
        ] {
            assert_eq!(ResourceRef::from_arn(unknown), None, "{unknown}");
        }
    }

    #[test]
    fn target_and_runtime_identities_round_trip_through_metadata() {
        let t = meta(
            json!({"source": SOURCE, "gateway_arn": GW, "gateway_id": "gw-abc", "target_id": "T1"}),
        );
        let r = ResourceRef::from_metadata(&t).expect("target");
        assert_eq!(r.kind, ResourceKind::Target);
        assert_eq!(r.arn, format!("{GW}:target:T1"));
        assert_eq!(r.gateway_id.as_deref(), Some("gw-abc"));
        let rt = meta(
            json!({"runtime_arn": "arn:aws:bedrock-agentcore:eu-west-1:1:agent/u:7", "runtime_id": "x-1"}),
        );
        let r = ResourceRef::from_metadata(&rt).expect("runtime");
        assert_eq!(r.arn, "arn:aws:bedrock-agentcore:eu-west-1:1:agent/u");
        assert_eq!(r.region, "eu-west-1");
    }
}
