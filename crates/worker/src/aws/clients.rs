//! Every AWS SDK client is built here: one place for what all of them share, deadlines on every
//! call (design invariant 4) and the call log that proves the IAM policies (invariant 9). With
//! `REGISTRAR_AWS_CALL_LOG=<file>` each process appends one line per AWS call it starts,
//! `<principal>\t<iam action>`, where the principal is the role the call would be made with in
//! AWS (`task`, `operator`, `member`); `scripts/iam-check.py` evaluates every line against the
//! policies the stack ships.

use std::io::Write;
use std::sync::OnceLock;

use aws_config::SdkConfig;
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::BeforeSerializationInterceptorContextRef;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;
use aws_smithy_types::timeout::TimeoutConfig;

/// Connect, attempt and whole-operation deadlines. An SQS receive long-polls up to 20 s, so its
/// attempts get longer.
fn timeouts(long_poll: bool) -> TimeoutConfig {
    let (attempt, operation) = if long_poll { (30, 60) } else { (15, 45) };
    TimeoutConfig::builder()
        .connect_timeout(std::time::Duration::from_secs(3))
        .operation_attempt_timeout(std::time::Duration::from_secs(attempt))
        .operation_timeout(std::time::Duration::from_secs(operation))
        .build()
}

/// Whose credentials a call is made with, as the stack assigns them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Principal {
    /// The worker's task role.
    Task,
    /// An operator running `resync`, `list`, `dlq`, `tokens`, `manifest`, `state`, `doctor`.
    Operator,
    /// A member account's role, assumed by the worker or an operator.
    Member,
    /// Local runs only (`state init`: in AWS the stack creates the table).
    Local,
}

impl Principal {
    fn as_str(self) -> &'static str {
        match self {
            Self::Task => "task",
            Self::Operator => "operator",
            Self::Member => "member",
            Self::Local => "local",
        }
    }
}

static PROCESS_PRINCIPAL: OnceLock<Principal> = OnceLock::new();

/// Sets who this process runs as (once, from the command).
pub fn set_principal(principal: Principal) {
    let _ = PROCESS_PRINCIPAL.set(principal);
}

fn process_principal() -> Principal {
    PROCESS_PRINCIPAL
        .get()
        .copied()
        .unwrap_or(Principal::Operator)
}

/// Appends `<principal>\t<prefix>:<operation>` for every call started.
#[derive(Debug)]
struct CallLog {
    path: std::path::PathBuf,
    prefix: &'static str,
    principal: Principal,
}

impl Intercept for CallLog {
    fn name(&self) -> &'static str {
        "CallLog"
    }

    // Once per call; the operation's metadata is in the bag from here on (not yet when
    // `read_before_execution` runs for client interceptors).
    fn read_before_serialization(
        &self,
        _context: &BeforeSerializationInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if let Some(op) = cfg.load::<Metadata>() {
            record(&self.path, self.principal, self.prefix, op.name());
        }
        Ok(())
    }
}

fn record(path: &std::path::Path, principal: Principal, prefix: &str, operation: &str) {
    let line = format!("{}\t{prefix}:{operation}\n", principal.as_str());
    // One short write with O_APPEND: lines of concurrent processes never interleave.
    let written = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .and_then(|mut f| f.write_all(line.as_bytes()));
    if let Err(e) = written {
        tracing::warn!(path = %path.display(), error = %e, "AWS call log not written.");
    }
}

fn call_log(prefix: &'static str, principal: Principal) -> Option<CallLog> {
    std::env::var_os("REGISTRAR_AWS_CALL_LOG")
        .filter(|p| !p.is_empty())
        .map(|path| CallLog {
            path: path.into(),
            prefix,
            principal,
        })
}

/// Logs a call the SDK makes on our behalf outside a client of ours (the AssumeRole of a
/// member account's credentials provider).
pub fn note_call(prefix: &'static str, operation: &str) {
    if let Some(log) = call_log(prefix, process_principal()) {
        record(&log.path, log.principal, prefix, operation);
    }
}

macro_rules! client {
    ($(#[$doc:meta])* $name:ident, $krate:ident, $prefix:literal, $long_poll:literal) => {
        $(#[$doc])*
        pub fn $name(config: &SdkConfig) -> $krate::Client {
            let mut builder =
                $krate::config::Builder::from(config).timeout_config(timeouts($long_poll));
            if let Some(log) = call_log($prefix, process_principal()) {
                builder = builder.interceptor(log);
            }
            $krate::Client::from_conf(builder.build())
        }
    };
}

client!(
    /// DynamoDB (the state table).
    dynamodb, aws_sdk_dynamodb, "dynamodb", false
);
client!(
    /// SQS (the event queue and its dead-letter queue).
    sqs, aws_sdk_sqs, "sqs", true
);
client!(
    /// Secrets Manager (egress client secrets).
    secretsmanager, aws_sdk_secretsmanager, "secretsmanager", false
);
client!(
    /// Cognito user pools (app client secrets).
    cognito, aws_sdk_cognitoidentityprovider, "cognito-idp", false
);
client!(
    /// EventBridge (`registrar doctor` reads the rule that fills the queue).
    eventbridge, aws_sdk_eventbridge, "events", false
);
client!(
    /// CloudTrail (`registrar doctor` reads the trails that feed EventBridge).
    cloudtrail, aws_sdk_cloudtrail, "cloudtrail", false
);

fn principal(member: bool) -> Principal {
    if member {
        Principal::Member
    } else {
        process_principal()
    }
}

/// The AgentCore control plane, as the process's principal or a member account's role.
pub fn agentcore(config: &SdkConfig, member: bool) -> aws_sdk_bedrockagentcorecontrol::Client {
    let mut builder = aws_sdk_bedrockagentcorecontrol::config::Builder::from(config)
        .timeout_config(timeouts(false));
    if let Some(log) = call_log("bedrock-agentcore", principal(member)) {
        builder = builder.interceptor(log);
    }
    aws_sdk_bedrockagentcorecontrol::Client::from_conf(builder.build())
}

/// STS, as the process's principal or a member account's role.
pub fn sts(config: &SdkConfig, member: bool) -> aws_sdk_sts::Client {
    let mut builder = aws_sdk_sts::config::Builder::from(config).timeout_config(timeouts(false));
    if let Some(log) = call_log("sts", principal(member)) {
        builder = builder.interceptor(log);
    }
    aws_sdk_sts::Client::from_conf(builder.build())
}
