//! What an AWS error means for an operator: a missing IAM action (named), bad credentials, a
//! thing that does not exist, or something else. Decided on the error code; the message is read
//! only to name the action AWS says is missing, and only when it has an action's shape.

use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::display::DisplayErrorContext;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use registrar_core::trust::shown;

/// An AWS error, reduced to what the checklist needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsError {
    /// The service's error code (`AccessDeniedException`, ...), when the service answered.
    pub code: Option<String>,
    /// The service's message, or the transport error, shown safely.
    pub message: String,
}

impl AwsError {
    pub fn from_sdk<E, R>(err: &SdkError<E, R>) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
        R: std::fmt::Debug,
    {
        match err {
            SdkError::ServiceError(ctx) => Self {
                code: ctx.err().code().map(str::to_owned),
                message: shown(ctx.err().message().unwrap_or_default()),
            },
            other => Self {
                code: None,
                message: shown(&DisplayErrorContext(other).to_string()),
            },
        }
    }
}

/// What went wrong, for the fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// The caller may not make this call: the IAM action it needs.
    MissingAction(String),
    /// The credentials are invalid, expired or missing.
    Credentials,
    /// The thing asked about does not exist.
    NotFound,
    /// No answer (connection, timeout) or an answer we cannot classify.
    Other,
}

const DENIED: [&str; 6] = [
    "AccessDenied",
    "AccessDeniedException",
    "UnauthorizedOperation",
    "AuthorizationError",
    "AuthorizationErrorException",
    "NotAuthorized",
];

const BAD_CREDENTIALS: [&str; 8] = [
    "InvalidClientTokenId",
    "UnrecognizedClientException",
    "ExpiredToken",
    "ExpiredTokenException",
    "SignatureDoesNotMatch",
    "InvalidAccessKeyId",
    "IncompleteSignature",
    "InvalidSignatureException",
];

/// `service:Action`, as IAM spells actions.
fn is_action(s: &str) -> bool {
    s.split_once(':').is_some_and(|(service, action)| {
        !service.is_empty()
            && service.len() <= 64
            && service
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !action.is_empty()
            && action.len() <= 128
            && action.bytes().all(|b| b.is_ascii_alphanumeric())
    })
}

/// Classifies an error of the call `called` (an IAM action such as `sqs:GetQueueAttributes`).
/// An AccessDenied names the action AWS says is missing (it can differ from the call: a KMS key,
/// an assumed role), else the action called.
pub fn classify(error: &AwsError, called: &str) -> Problem {
    let Some(code) = error.code.as_deref() else {
        return Problem::Other;
    };
    if DENIED.contains(&code) {
        let named = error
            .message
            .split("not authorized to perform: ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .map(|a| a.trim_end_matches([',', '.', ';']))
            .filter(|a| is_action(a));
        return Problem::MissingAction(named.unwrap_or(called).to_owned());
    }
    if BAD_CREDENTIALS.contains(&code) {
        return Problem::Credentials;
    }
    if code.contains("NotFound") || code.contains("NonExistent") || code.contains("DoesNotExist") {
        return Problem::NotFound;
    }
    Problem::Other
}

/// Whose policy must grant an action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grantee {
    /// The operator running doctor (the same policy as `resync`, `list`, `dlq`).
    Operator,
    /// A member account's reader role.
    Member,
}

/// The fix for a missing action.
pub fn grant_fix(action: &str, grantee: Grantee) -> String {
    match grantee {
        Grantee::Operator => format!(
            "allow {action} for the operator: infra/iam/operator-policy.json, or attach the stack's OperatorPolicy (output OperatorPolicyArn)"
        ),
        Grantee::Member => format!(
            "allow {action} in the member account's role (infra/cloudformation/member-account-role.yaml, ReaderRole)"
        ),
    }
}

/// A one-line description of the error and, for the checklist, its fix; `not_found` is the fix
/// when the thing does not exist.
pub fn describe(
    error: &AwsError,
    called: &str,
    grantee: Grantee,
    not_found: &str,
) -> (String, String) {
    match classify(error, called) {
        Problem::MissingAction(action) => (
            format!("access denied: {action} is not allowed"),
            grant_fix(&action, grantee),
        ),
        Problem::Credentials => (
            format!(
                "{} rejected the credentials: {}",
                called,
                error.code.as_deref().unwrap_or_default()
            ),
            "give the process valid AWS credentials (the standard chain: AWS_PROFILE, the role, or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY)".to_owned(),
        ),
        Problem::NotFound => (
            format!(
                "{called}: not found ({})",
                error.code.as_deref().unwrap_or_default()
            ),
            not_found.to_owned(),
        ),
        Problem::Other => (
            format!(
                "{called} failed: {}{}",
                error
                    .code
                    .as_deref()
                    .map(|c| format!("{c}: "))
                    .unwrap_or_default(),
                error.message
            ),
            "check connectivity to the AWS endpoint (AWS_REGION, AWS_ENDPOINT_URL) and retry; the message above says more".to_owned(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(code: &str, message: &str) -> AwsError {
        AwsError {
            code: Some(code.into()),
            message: message.into(),
        }
    }

    #[test]
    fn access_denied_names_the_action_aws_says_is_missing() {
        let e = err(
            "AccessDeniedException",
            "User: arn:aws:sts::123456789012:assumed-role/ops/me is not authorized to perform: bedrock-agentcore:ListAgentRuntimes on resource: arn:aws:bedrock-agentcore:us-east-1:123456789012:runtime/* because no identity-based policy allows the bedrock-agentcore:ListAgentRuntimes action",
        );
        assert_eq!(
            classify(&e, "bedrock-agentcore:ListGateways"),
            Problem::MissingAction("bedrock-agentcore:ListAgentRuntimes".into())
        );
        // A key policy or an assumed role can be what is missing.
        let kms = err(
            "AccessDeniedException",
            "User: x is not authorized to perform: kms:Decrypt on the resource associated with this ciphertext",
        );
        assert_eq!(
            classify(&kms, "dynamodb:DescribeTable"),
            Problem::MissingAction("kms:Decrypt".into())
        );
    }

    #[test]
    fn access_denied_without_a_usable_action_names_the_call() {
        for message in [
            "",
            "Access Denied",
            "not authorized to perform: <script>alert(1)</script>",
            "not authorized to perform: sqs:Get\u{7}Queue",
        ] {
            for code in [
                "AccessDenied",
                "AccessDeniedException",
                "AuthorizationError",
            ] {
                assert_eq!(
                    classify(&err(code, message), "sqs:GetQueueAttributes"),
                    Problem::MissingAction("sqs:GetQueueAttributes".into()),
                    "{code} {message:?}"
                );
            }
        }
    }

    #[test]
    fn other_codes_are_credentials_not_found_or_other() {
        assert_eq!(
            classify(&err("InvalidClientTokenId", "x"), "sts:GetCallerIdentity"),
            Problem::Credentials
        );
        assert_eq!(
            classify(&err("ExpiredToken", "x"), "sts:GetCallerIdentity"),
            Problem::Credentials
        );
        for code in [
            "ResourceNotFoundException",
            "AWS.SimpleQueueService.NonExistentQueue",
            "QueueDoesNotExist",
            "TrailNotFoundException",
        ] {
            assert_eq!(
                classify(&err(code, "x"), "a:B"),
                Problem::NotFound,
                "{code}"
            );
        }
        assert_eq!(
            classify(
                &err("ThrottlingException", "not authorized to perform: a:B"),
                "x:Y"
            ),
            Problem::Other,
            "the message alone never makes an AccessDenied"
        );
        let transport = AwsError {
            code: None,
            message: "dispatch failure".into(),
        };
        assert_eq!(classify(&transport, "x:Y"), Problem::Other);
    }

    #[test]
    fn the_fix_names_the_action_and_where_to_grant_it() {
        let (detail, fix) = describe(
            &err("AccessDeniedException", ""),
            "events:DescribeRule",
            Grantee::Operator,
            "",
        );
        assert_eq!(detail, "access denied: events:DescribeRule is not allowed");
        assert!(fix.contains("allow events:DescribeRule"), "{fix}");
        assert!(fix.contains("OperatorPolicy"), "{fix}");
        let (_, fix) = describe(
            &err("AccessDenied", ""),
            "bedrock-agentcore:ListGateways",
            Grantee::Member,
            "",
        );
        assert!(fix.contains("member-account-role.yaml"), "{fix}");
    }
}
