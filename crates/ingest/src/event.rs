//! EventBridge events carrying CloudTrail records of AgentCore control-plane calls
//! (`aws-facts.md` §2), reduced to the resources they name.
//!
//! Only ids are read, never names or configuration: CloudTrail redacts sensitive fields (`***`),
//! and the reconciler reads the current state anyway (design invariant 1). Every field is
//! optional and unknown fields are ignored, so new AWS fields never break parsing.

use registrar_core::identity::{ResourceKey, ResourceKind};
use serde::Deserialize;
use serde_json::Value;

/// The largest body accepted (the SQS and EventBridge limit since January 2026).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// The CloudTrail `eventSource` of the AgentCore control plane.
const EVENT_SOURCE: &str = "bedrock-agentcore.amazonaws.com";

/// How to read events.
#[derive(Debug, Clone, Copy)]
pub struct ParseOptions {
    /// Emit target keys for gateway-target events (targets are registered only when asked).
    pub include_targets: bool,
    pub max_bytes: usize,
}

impl Default for ParseOptions {
    fn default() -> Self {
        Self {
            include_targets: false,
            max_bytes: MAX_BODY_BYTES,
        }
    }
}

/// Where an event came from, for logs and spans (never names or configuration).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventMeta {
    pub event_name: String,
    /// CloudTrail `eventID`, else the EventBridge `id`.
    pub event_id: Option<String>,
    /// CloudTrail `eventTime`, else the EventBridge `time`.
    pub event_time: Option<String>,
}

/// Why a message can never be processed: it goes to the dead-letter queue at once, with
/// [`Rejection::code`] and the text as message attributes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// Larger than [`ParseOptions::max_bytes`].
    #[error("body of {bytes} bytes exceeds the {limit}-byte limit")]
    Oversized { bytes: usize, limit: usize },
    /// Not JSON, or not a JSON object.
    #[error("body is not a JSON object: {0}")]
    Malformed(String),
    /// JSON, but not an EventBridge event carrying an AgentCore CloudTrail record.
    #[error("not an AgentCore CloudTrail event: {0}")]
    NotCloudTrail(String),
    /// A known event without the identifier it must carry.
    #[error("{event_name} event has no {field}")]
    MissingIdentifier {
        event_name: String,
        field: &'static str,
    },
}

impl Rejection {
    /// A stable code for the DLQ message attribute and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Oversized { .. } => "oversized",
            Self::Malformed(_) => "malformed",
            Self::NotCloudTrail(_) => "not-cloudtrail",
            Self::MissingIdentifier { .. } => "missing-identifier",
        }
    }
}

/// What to do with a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Reconcile these resources.
    Reconcile {
        keys: Vec<ResourceKey>,
        meta: EventMeta,
    },
    /// Nothing to do (a failed call, a read-only call, an event name we do not handle): log and
    /// delete.
    Ignore { reason: String, meta: EventMeta },
    /// Can never be processed: dead-letter at once.
    Reject(Rejection),
}

#[derive(Debug, Deserialize)]
struct Envelope {
    #[serde(rename = "detail-type")]
    detail_type: Option<String>,
    source: Option<String>,
    account: Option<String>,
    region: Option<String>,
    id: Option<String>,
    time: Option<String>,
    detail: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Record {
    event_source: Option<String>,
    event_name: Option<String>,
    aws_region: Option<String>,
    #[serde(rename = "eventID")]
    event_id: Option<String>,
    event_time: Option<String>,
    error_code: Option<Value>,
    read_only: Option<bool>,
    recipient_account_id: Option<String>,
    request_parameters: Option<Value>,
    response_elements: Option<Value>,
}

/// A string field of an optional object, ignoring empty and redacted values.
fn id_field<'a>(object: Option<&'a Value>, field: &str) -> Option<&'a str> {
    object?
        .get(field)?
        .as_str()
        .map(str::trim)
        .filter(|s| !s.is_empty() && !s.contains('*'))
}

/// A gateway identifier may be an id or an ARN (`...:gateway/<id>`).
fn gateway_id(identifier: &str) -> String {
    match identifier.rsplit_once("gateway/") {
        Some((head, id)) if head.starts_with("arn:") => id.to_owned(),
        _ => identifier.to_owned(),
    }
}

/// Reads one message body.
pub fn parse(body: &str, opts: ParseOptions) -> Verdict {
    if body.len() > opts.max_bytes {
        return Verdict::Reject(Rejection::Oversized {
            bytes: body.len(),
            limit: opts.max_bytes,
        });
    }
    let envelope: Envelope = match serde_json::from_str::<Value>(body) {
        Ok(v @ Value::Object(_)) => match serde_json::from_value(v) {
            Ok(e) => e,
            Err(e) => return Verdict::Reject(Rejection::NotCloudTrail(e.to_string())),
        },
        Ok(_) => return Verdict::Reject(Rejection::Malformed("top level is not an object".into())),
        Err(e) => return Verdict::Reject(Rejection::Malformed(e.to_string())),
    };
    let Some(detail) = envelope.detail.filter(Value::is_object) else {
        return Verdict::Reject(Rejection::NotCloudTrail("no `detail` object".into()));
    };
    let record: Record = match serde_json::from_value(detail) {
        Ok(r) => r,
        Err(e) => {
            return Verdict::Reject(Rejection::NotCloudTrail(format!(
                "unreadable `detail`: {e}"
            )));
        }
    };
    if record.event_source.as_deref() != Some(EVENT_SOURCE) {
        let source = record
            .event_source
            .or(envelope.source)
            .unwrap_or_else(|| "none".into());
        return Verdict::Reject(Rejection::NotCloudTrail(format!("event source {source}")));
    }
    let Some(event_name) = record.event_name.clone().filter(|n| !n.is_empty()) else {
        return Verdict::Reject(Rejection::NotCloudTrail("no `eventName`".into()));
    };
    let meta = EventMeta {
        event_name: event_name.clone(),
        event_id: record.event_id.clone().or(envelope.id),
        event_time: record.event_time.clone().or(envelope.time),
    };
    if record.error_code.as_ref().is_some_and(|c| !c.is_null()) {
        return Verdict::Ignore {
            reason: "the call failed (errorCode present)".into(),
            meta,
        };
    }
    if record.read_only == Some(true) {
        return Verdict::Ignore {
            reason: "read-only call".into(),
            meta,
        };
    }
    let _ = envelope.detail_type; // any detail-type is accepted; the record decides
    let account = envelope
        .account
        .or(record.recipient_account_id.clone())
        .unwrap_or_default();
    let region = record
        .aws_region
        .clone()
        .or(envelope.region)
        .unwrap_or_default();
    let key = |kind, id: String, gateway: Option<String>| ResourceKey {
        kind,
        account: account.clone(),
        region: region.clone(),
        id,
        gateway_id: gateway,
    };
    let request = record.request_parameters.as_ref();
    let response = record.response_elements.as_ref();
    let missing = |field| {
        Verdict::Reject(Rejection::MissingIdentifier {
            event_name: event_name.clone(),
            field,
        })
    };

    let keys = match event_name.as_str() {
        "CreateGateway" | "UpdateGateway" | "DeleteGateway" => {
            let Some(id) =
                id_field(request, "gatewayIdentifier").or_else(|| id_field(response, "gatewayId"))
            else {
                return missing("gatewayIdentifier or gatewayId");
            };
            vec![key(ResourceKind::Gateway, gateway_id(id), None)]
        }
        "CreateGatewayTarget"
        | "UpdateGatewayTarget"
        | "DeleteGatewayTarget"
        | "SynchronizeGatewayTargets" => {
            let Some(gw) = id_field(request, "gatewayIdentifier").or_else(|| {
                id_field(response, "gatewayArn").or_else(|| id_field(response, "gatewayId"))
            }) else {
                return missing("gatewayIdentifier");
            };
            let gw = gateway_id(gw);
            let mut keys = vec![key(ResourceKind::Gateway, gw.clone(), None)];
            if opts.include_targets {
                let mut targets: Vec<String> = Vec::new();
                if let Some(t) =
                    id_field(request, "targetId").or_else(|| id_field(response, "targetId"))
                {
                    targets.push(t.to_owned());
                }
                if let Some(list) = request
                    .and_then(|r| r.get("targetIdList"))
                    .and_then(Value::as_array)
                {
                    targets.extend(list.iter().filter_map(Value::as_str).map(str::to_owned));
                }
                targets.sort();
                targets.dedup();
                keys.extend(
                    targets
                        .into_iter()
                        .map(|t| key(ResourceKind::Target, t, Some(gw.clone()))),
                );
            }
            keys
        }
        "CreateAgentRuntime"
        | "UpdateAgentRuntime"
        | "DeleteAgentRuntime"
        | "CreateAgentRuntimeEndpoint"
        | "UpdateAgentRuntimeEndpoint"
        | "DeleteAgentRuntimeEndpoint" => {
            let Some(id) = id_field(request, "agentRuntimeId")
                .or_else(|| id_field(response, "agentRuntimeId"))
            else {
                return missing("agentRuntimeId");
            };
            vec![key(ResourceKind::Runtime, id.to_owned(), None)]
        }
        _ => {
            return Verdict::Ignore {
                reason: format!("event name {event_name} is not handled"),
                meta,
            };
        }
    };
    Verdict::Reconcile { keys, meta }
}
