//! AWS adapters: SDK configuration and error classification shared by every client.

pub mod agentcore;
pub mod state;

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_dynamodb::config::http::HttpResponse;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_smithy_types::error::display::DisplayErrorContext;
use registrar_core::{ErrorClass, PortError};

/// Loads the SDK configuration from the standard chain (`AWS_ENDPOINT_URL` points every client
/// at a local emulator), with an explicit region when one is given.
pub async fn load_config(region: Option<&str>) -> SdkConfig {
    let mut loader = aws_config::defaults(BehaviorVersion::latest());
    if let Some(region) = region {
        loader = loader.region(Region::new(region.to_owned()));
    }
    loader.load().await
}

/// Maps any SDK error to a [`PortError`] that knows whether retrying can help.
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
            let class = match code {
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
            };
            PortError::new(
                peer,
                operation,
                class,
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
