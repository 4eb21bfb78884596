//! The error taxonomy every adapter maps into: what a caller may do about an error.

use std::fmt;

/// What retrying can do about an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// Throttling, 5xx, timeouts, connection failures: retry with backoff.
    Transient,
    /// Bad input, 4xx, missing permission: retrying cannot fix it.
    Terminal,
    /// The thing already exists or is held by someone else (HTTP 409, a lost conditional write).
    Conflict,
}

impl ErrorClass {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Transient => "transient",
            Self::Terminal => "terminal",
            Self::Conflict => "conflict",
        }
    }
}

impl fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error crossing a port: which peer and operation, its class, and the peer's own message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{peer} {operation}: {message}")]
pub struct PortError {
    pub peer: &'static str,
    pub operation: String,
    pub class: ErrorClass,
    pub message: String,
}

impl PortError {
    pub fn new(
        peer: &'static str,
        operation: impl Into<String>,
        class: ErrorClass,
        message: impl Into<String>,
    ) -> Self {
        Self {
            peer,
            operation: operation.into(),
            class,
            message: message.into(),
        }
    }

    pub fn is_transient(&self) -> bool {
        self.class == ErrorClass::Transient
    }
}
