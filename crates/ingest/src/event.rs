//! EventBridge events carrying CloudTrail records of AgentCore control-plane calls
//! (`aws-facts.md` §2), reduced to the resources they name.
//!
//! Only ids are read, never names or configuration: CloudTrail redacts sensitive fields (`***`),
//! and the reconciler reads the current state anyway (design invariant 1). Only the fields used
//! are read, each on its own: unknown fields, and fields of an unexpected type that we do not
//! use (`requestParameters.name` as a number, `responseElements.tags` as a list), never break
//! parsing.
//!
//! Every id, account and region is checked against the shape AWS gives it ([`is_gateway_id`],
//! [`is_target_id`], [`is_runtime_id`], [`is_account`], [`is_region`]) before it is used: a
//! message is a string anyone allowed to send to the queue may have written, and an id ends up
//! in AWS request paths and logs. An id of the wrong shape is poison, dead-lettered with the
//! field and the (truncated) value.

use registrar_core::identity::{ResourceKey, ResourceKind};
use serde_json::Value;

/// The largest body accepted (the SQS and EventBridge limit since January 2026).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// The CloudTrail `eventSource` of the AgentCore control plane.
const EVENT_SOURCE: &str = "bedrock-agentcore.amazonaws.com";

/// The most target ids one event may name through `targetIdList`. AWS's model allows one per
/// `SynchronizeGatewayTargets` call today; the cap leaves room for that to grow while bounding
/// the reconciles one message can cause. A longer list is poison (no AWS call produces it), and
/// no id of it is used.
pub const MAX_TARGET_IDS: usize = 100;

/// How much of an offending value a rejection shows.
const SHOWN_CHARS: usize = 64;

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
    /// An id, account or region that does not have the shape AWS gives it (or is not a
    /// string). `value` is the offending value, cut to 64 characters.
    #[error("{event_name} event has an invalid {field}: {value}")]
    InvalidIdentifier {
        event_name: String,
        field: String,
        value: String,
    },
    /// `targetIdList` names more than [`MAX_TARGET_IDS`] targets.
    #[error(
        "{event_name} event lists {count} target ids in targetIdList; at most {limit} are accepted"
    )]
    TooManyTargets {
        event_name: String,
        count: usize,
        limit: usize,
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
            Self::InvalidIdentifier { .. } => "invalid-identifier",
            Self::TooManyTargets { .. } => "too-many-targets",
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

/// A string field of an object; absent when missing or of another type (for fields whose
/// absence is harmless: they name nothing).
fn text<'a>(object: Option<&'a Value>, field: &str) -> Option<&'a str> {
    object?.get(field)?.as_str()
}

/// What an identifier field holds.
enum Id<'a> {
    /// Missing, null, empty, or redacted (`***`): look elsewhere.
    Absent,
    /// A value to check and use.
    Value(&'a str),
    /// Not a string: shown as JSON.
    NotText(String),
}

fn id_field<'a>(object: Option<&'a Value>, field: &str) -> Id<'a> {
    match object.and_then(|o| o.get(field)) {
        None | Some(Value::Null) => Id::Absent,
        Some(Value::String(s)) => {
            let s = s.trim();
            if s.is_empty() || s.contains('*') {
                Id::Absent
            } else {
                Id::Value(s)
            }
        }
        Some(other) => Id::NotText(other.to_string()),
    }
}

/// `value` cut to [`SHOWN_CHARS`] characters and quoted (control characters escaped), for a
/// rejection reason.
fn shown(value: &str) -> String {
    let mut cut: String = value.chars().take(SHOWN_CHARS).collect();
    if cut.len() < value.len() {
        cut.push_str("...");
    }
    format!("{cut:?}")
}

fn lower_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

/// `<head>-<10 characters>`: the head and the tail, when `id` ends that way.
fn split_suffix(id: &str) -> Option<(&str, &str)> {
    let at = id.len().checked_sub(11)?;
    let (head, tail) = (id.get(..at)?, id.get(at..)?);
    tail.strip_prefix('-').map(|suffix| (head, suffix))
}

/// A gateway id: AWS's `([0-9a-z][-]?){1,100}-[0-9a-z]{10}` (a slug of the name and ten
/// characters, e.g. `orders-gw-8fb4mo6pqx`), or the ten lower-case characters alone that the
/// local emulator (moto) gives gateways.
pub fn is_gateway_id(id: &str) -> bool {
    if id.len() == 10 && id.bytes().all(lower_alnum) {
        return true;
    }
    let Some((head, suffix)) = split_suffix(id) else {
        return false;
    };
    if !suffix.bytes().all(lower_alnum) {
        return false;
    }
    // ([0-9a-z][-]?){1,100}: 1 to 100 characters, each followed by at most one `-`.
    let mut characters = 0;
    let mut after_dash = true;
    for b in head.bytes() {
        if lower_alnum(b) {
            characters += 1;
            after_dash = false;
        } else if b == b'-' && !after_dash {
            after_dash = true;
        } else {
            return false;
        }
    }
    (1..=100).contains(&characters)
}

/// A gateway target id: `[0-9a-zA-Z]{10}`.
pub fn is_target_id(id: &str) -> bool {
    id.len() == 10 && id.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// An agent runtime id: `[a-zA-Z][a-zA-Z0-9_]{0,99}-[a-zA-Z0-9]{10}` (the name and ten
/// characters, e.g. `sre_agent-Xyz12AbCde`; moto's `a0123abcd-0123456789` has the same shape).
pub fn is_runtime_id(id: &str) -> bool {
    let Some((head, suffix)) = split_suffix(id) else {
        return false;
    };
    let mut head_bytes = head.bytes();
    head_bytes.next().is_some_and(|b| b.is_ascii_alphabetic())
        && head.len() <= 100
        && head_bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
        && suffix.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// An AWS account id: twelve digits.
pub fn is_account(account: &str) -> bool {
    account.len() == 12 && account.bytes().all(|b| b.is_ascii_digit())
}

/// An AWS region as AgentCore ARNs spell it: `[a-z0-9-]{1,20}`.
pub fn is_region(region: &str) -> bool {
    (1..=20).contains(&region.len()) && region.bytes().all(|b| lower_alnum(b) || b == b'-')
}

/// A gateway identifier may be an id or an ARN (`...:gateway/<id>`).
fn gateway_id(identifier: &str) -> &str {
    match identifier.rsplit_once("gateway/") {
        Some((head, id)) if head.starts_with("arn:") => id,
        _ => identifier,
    }
}

/// Where an identifier may be read: a name for messages, the object, the key.
type Source<'a> = (&'static str, Option<&'a Value>, &'static str);

/// The value of the first source that holds one (absent ones are skipped), after `map`, when
/// `valid` accepts it; `Ok(None)` when every source is absent; the rejection otherwise. Only
/// the first value found is considered: a bad one is never passed over for a good one.
fn pick<'a>(
    event_name: &str,
    sources: &[Source<'a>],
    map: fn(&'a str) -> &'a str,
    valid: fn(&str) -> bool,
) -> Result<Option<&'a str>, Rejection> {
    for (field, object, key) in sources {
        match id_field(*object, key) {
            Id::Absent => continue,
            Id::Value(raw) => {
                let id = map(raw);
                return if valid(id) {
                    Ok(Some(id))
                } else {
                    Err(invalid(event_name, field, raw))
                };
            }
            Id::NotText(json) => return Err(invalid(event_name, field, &json)),
        }
    }
    Ok(None)
}

fn invalid(event_name: &str, field: &str, value: &str) -> Rejection {
    Rejection::InvalidIdentifier {
        event_name: event_name.to_owned(),
        field: field.to_owned(),
        value: shown(value),
    }
}

/// The ids of `requestParameters.targetIdList`: at most [`MAX_TARGET_IDS`], each a target id
/// (redacted or empty entries are skipped).
fn target_id_list<'a>(
    event_name: &str,
    request: Option<&'a Value>,
) -> Result<Vec<&'a str>, Rejection> {
    const FIELD: &str = "requestParameters.targetIdList";
    let list = match request.and_then(|r| r.get("targetIdList")) {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(list)) => list,
        Some(other) => return Err(invalid(event_name, FIELD, &other.to_string())),
    };
    if list.len() > MAX_TARGET_IDS {
        return Err(Rejection::TooManyTargets {
            event_name: event_name.to_owned(),
            count: list.len(),
            limit: MAX_TARGET_IDS,
        });
    }
    let mut ids = Vec::with_capacity(list.len());
    for (i, item) in list.iter().enumerate() {
        let field = format!("{FIELD}[{i}]");
        match item {
            Value::Null => {}
            Value::String(s) => {
                let id = s.trim();
                if id.is_empty() || id.contains('*') {
                    continue;
                }
                if !is_target_id(id) {
                    return Err(invalid(event_name, &field, s));
                }
                ids.push(id);
            }
            other => return Err(invalid(event_name, &field, &other.to_string())),
        }
    }
    Ok(ids)
}

fn same(s: &str) -> &str {
    s
}

/// Reads one message body.
pub fn parse(body: &str, opts: ParseOptions) -> Verdict {
    match read(body, opts) {
        Ok(verdict) => verdict,
        Err(rejection) => Verdict::Reject(rejection),
    }
}

fn read(body: &str, opts: ParseOptions) -> Result<Verdict, Rejection> {
    if body.len() > opts.max_bytes {
        return Err(Rejection::Oversized {
            bytes: body.len(),
            limit: opts.max_bytes,
        });
    }
    let envelope = match serde_json::from_str::<Value>(body) {
        Ok(v @ Value::Object(_)) => v,
        Ok(_) => return Err(Rejection::Malformed("top level is not an object".into())),
        Err(e) => return Err(Rejection::Malformed(e.to_string())),
    };
    let Some(record) = envelope.get("detail").filter(|d| d.is_object()) else {
        return Err(Rejection::NotCloudTrail("no `detail` object".into()));
    };
    let (envelope, record) = (Some(&envelope), Some(record));
    let event_source = text(record, "eventSource");
    if event_source != Some(EVENT_SOURCE) {
        let source = event_source
            .or_else(|| text(envelope, "source"))
            .unwrap_or("none");
        return Err(Rejection::NotCloudTrail(format!(
            "event source {}",
            shown(source)
        )));
    }
    let Some(event_name) = text(record, "eventName").filter(|n| !n.is_empty()) else {
        return Err(Rejection::NotCloudTrail("no `eventName`".into()));
    };
    let meta = EventMeta {
        event_name: event_name.to_owned(),
        event_id: text(record, "eventID")
            .or_else(|| text(envelope, "id"))
            .map(str::to_owned),
        event_time: text(record, "eventTime")
            .or_else(|| text(envelope, "time"))
            .map(str::to_owned),
    };
    if record
        .and_then(|r| r.get("errorCode"))
        .is_some_and(|c| !c.is_null())
    {
        return Ok(Verdict::Ignore {
            reason: "the call failed (errorCode present)".into(),
            meta,
        });
    }
    if record
        .and_then(|r| r.get("readOnly"))
        .and_then(Value::as_bool)
        == Some(true)
    {
        return Ok(Verdict::Ignore {
            reason: "read-only call".into(),
            meta,
        });
    }
    let request = record.and_then(|r| r.get("requestParameters"));
    let response = record.and_then(|r| r.get("responseElements"));
    let missing = |field| Rejection::MissingIdentifier {
        event_name: event_name.to_owned(),
        field,
    };

    // (kind, id, parent gateway) of every resource the event names.
    let mut named: Vec<(ResourceKind, String, Option<String>)> = Vec::new();
    match event_name {
        "CreateGateway" | "UpdateGateway" | "DeleteGateway" => {
            let id = pick(
                event_name,
                &[
                    (
                        "requestParameters.gatewayIdentifier",
                        request,
                        "gatewayIdentifier",
                    ),
                    ("responseElements.gatewayId", response, "gatewayId"),
                ],
                gateway_id,
                is_gateway_id,
            )?
            .ok_or_else(|| missing("gatewayIdentifier or gatewayId"))?;
            named.push((ResourceKind::Gateway, id.to_owned(), None));
        }
        "CreateGatewayTarget"
        | "UpdateGatewayTarget"
        | "DeleteGatewayTarget"
        | "SynchronizeGatewayTargets" => {
            let gw = pick(
                event_name,
                &[
                    (
                        "requestParameters.gatewayIdentifier",
                        request,
                        "gatewayIdentifier",
                    ),
                    ("responseElements.gatewayArn", response, "gatewayArn"),
                    ("responseElements.gatewayId", response, "gatewayId"),
                ],
                gateway_id,
                is_gateway_id,
            )?
            .ok_or_else(|| missing("gatewayIdentifier"))?;
            named.push((ResourceKind::Gateway, gw.to_owned(), None));
            if opts.include_targets {
                let mut targets: Vec<&str> = Vec::new();
                if let Some(t) = pick(
                    event_name,
                    &[
                        ("requestParameters.targetId", request, "targetId"),
                        ("responseElements.targetId", response, "targetId"),
                    ],
                    same,
                    is_target_id,
                )? {
                    targets.push(t);
                }
                targets.extend(target_id_list(event_name, request)?);
                targets.sort_unstable();
                targets.dedup();
                named.extend(
                    targets
                        .into_iter()
                        .map(|t| (ResourceKind::Target, t.to_owned(), Some(gw.to_owned()))),
                );
            }
        }
        "CreateAgentRuntime"
        | "UpdateAgentRuntime"
        | "DeleteAgentRuntime"
        | "CreateAgentRuntimeEndpoint"
        | "UpdateAgentRuntimeEndpoint"
        | "DeleteAgentRuntimeEndpoint" => {
            let id = pick(
                event_name,
                &[
                    (
                        "requestParameters.agentRuntimeId",
                        request,
                        "agentRuntimeId",
                    ),
                    (
                        "responseElements.agentRuntimeId",
                        response,
                        "agentRuntimeId",
                    ),
                ],
                same,
                is_runtime_id,
            )?
            .ok_or_else(|| missing("agentRuntimeId"))?;
            named.push((ResourceKind::Runtime, id.to_owned(), None));
        }
        _ => {
            return Ok(Verdict::Ignore {
                reason: format!(
                    "event name {} is not handled",
                    event_name.chars().take(SHOWN_CHARS).collect::<String>()
                ),
                meta,
            });
        }
    }

    // Empty when the event does not say (moto omits the EventBridge `account`).
    let account = pick(
        event_name,
        &[
            ("account", envelope, "account"),
            ("detail.recipientAccountId", record, "recipientAccountId"),
        ],
        same,
        is_account,
    )?
    .unwrap_or_default();
    let region = pick(
        event_name,
        &[
            ("detail.awsRegion", record, "awsRegion"),
            ("region", envelope, "region"),
        ],
        same,
        is_region,
    )?
    .unwrap_or_default();
    let keys = named
        .into_iter()
        .map(|(kind, id, gateway_id)| ResourceKey {
            kind,
            account: account.to_owned(),
            region: region.to_owned(),
            id,
            gateway_id,
        })
        .collect();
    Ok(Verdict::Reconcile { keys, meta })
}
