//! AWS SDK errors mapped to [`PortError`]s that know whether retrying can help. Shared by every
//! AWS adapter (SQS here; AgentCore, STS, DynamoDB, Secrets Manager and Cognito in the worker).

use aws_sdk_sqs::config::http::HttpResponse;
use aws_sdk_sqs::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use registrar_core::{ErrorClass, PortError};

/// Maps any SDK error (every `aws-sdk-*` crate shares `SdkError` and `HttpResponse`).
pub fn classify_sdk_error<E>(
    peer: &'static str,
    operation: &str,
    err: &SdkError<E, HttpResponse>,
) -> PortError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match err {
        SdkError::ServiceError(ctx) => {
            let status = ctx.raw().status().as_u16();
            let code = ctx.err().code().unwrap_or("UnknownError");
            let message = ctx.err().message().unwrap_or_default();
            PortError::new(
                peer,
                operation,
                class_of(code, status),
                format!("{code} (HTTP {status}): {message}"),
            )
        }
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            PortError::new(
                peer,
                operation,
                ErrorClass::Transient,
                DisplayErrorContext(err).to_string(),
            )
        }
        _ => PortError::new(
            peer,
            operation,
            ErrorClass::Terminal,
            DisplayErrorContext(err).to_string(),
        ),
    }
}

/// [`classify_sdk_error`], keeping what the SDK error wraps (the modelled service error, or the
/// dispatch, timeout or parse failure) as the source. The raw HTTP response is dropped: for
/// `GetSecretValue` or `DescribeUserPoolClient` its body may hold a secret.
pub fn from_sdk_error<E>(
    peer: &'static str,
    operation: &str,
    err: SdkError<E, HttpResponse>,
) -> PortError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let classified = classify_sdk_error(peer, operation, &err);
    match err.into_source() {
        Ok(source) => classified.with_boxed_source(source),
        Err(_) => classified,
    }
}

/// The class of a service error from its code and HTTP status.
pub fn class_of(code: &str, status: u16) -> ErrorClass {
    match code {
        "ConflictException" | "ConditionalCheckFailedException" => ErrorClass::Conflict,
        c if c.contains("Throttl")
            || c.contains("ProvisionedThroughputExceeded")
            || c.contains("RequestLimitExceeded")
            || c == "InternalServerException"
            || c == "ServiceUnavailable" =>
        {
            ErrorClass::Transient
        }
        _ if status >= 500 || status == 429 => ErrorClass::Transient,
        _ => ErrorClass::Terminal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_statuses_map_to_classes() {
        assert_eq!(class_of("ThrottlingException", 400), ErrorClass::Transient);
        assert_eq!(
            class_of("ProvisionedThroughputExceededException", 400),
            ErrorClass::Transient
        );
        assert_eq!(class_of("AccessDeniedException", 403), ErrorClass::Terminal);
        assert_eq!(class_of("ValidationException", 400), ErrorClass::Terminal);
        assert_eq!(
            class_of("ConditionalCheckFailedException", 400),
            ErrorClass::Conflict
        );
        assert_eq!(class_of("Whatever", 503), ErrorClass::Transient);
        assert_eq!(class_of("TooManyRequests", 429), ErrorClass::Transient);
    }
}
