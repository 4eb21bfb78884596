//! AWS adapters: SDK configuration and error classification shared by every client.

pub mod agentcore;
pub mod clients;
pub mod fleet;
pub mod state;

use aws_config::{BehaviorVersion, Region, SdkConfig};
pub use registrar_ingest::sdk_error::from_sdk_error;

/// Loads the SDK configuration from the standard chain (`AWS_ENDPOINT_URL` points every client
/// at a local emulator), with an explicit region when one is given.
pub async fn load_config(region: Option<&str>) -> SdkConfig {
    let mut loader = aws_config::defaults(BehaviorVersion::latest());
    if let Some(region) = region {
        loader = loader.region(Region::new(region.to_owned()));
    }
    loader.load().await
}
