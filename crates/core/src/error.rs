//! The error taxonomy every adapter maps into: what a caller may do about an error.

use std::fmt;
use std::sync::Arc;

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
    /// The stable name operators see in logs and metrics labels.
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

/// The error a wrapped lower error (SDK, HTTP, JSON) is kept as: shared, so [`PortError`] stays
/// `Clone`.
pub type ErrorSource = Arc<dyn std::error::Error + Send + Sync + 'static>;

/// An error crossing a port: which peer and operation, its class, and the peer's own message.
///
/// `Display` is `"{peer} {operation}: {message}"`, a line complete on its own (logs, reports and
/// state rows show it as it is). The lower error it was made from, when there is one, is kept as
/// [`Error::source`](std::error::Error::source) for callers that inspect it; equality ignores it.
/// No source may hold a secret: adapters attach only errors whose text never carries one.
#[derive(Clone)]
pub struct PortError {
    /// The peer that failed (`registry`, `idp`, `dynamodb`, ...).
    pub peer: &'static str,
    /// What was asked of it (`list servers`, `client_credentials`, ...).
    pub operation: String,
    /// What retrying can do about it.
    pub class: ErrorClass,
    /// What went wrong, in the peer's own words where it gave any.
    pub message: String,
    source: Option<ErrorSource>,
}

impl PortError {
    /// An error without a lower error behind it.
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
            source: None,
        }
    }

    /// Keeps `source` as the lower error this one was made from. `Display` does not change.
    #[must_use]
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Arc::new(source));
        self
    }

    /// [`with_source`](Self::with_source) for a lower error that comes boxed (the AWS SDK's).
    #[must_use]
    pub fn with_boxed_source(mut self, source: Box<dyn std::error::Error + Send + Sync>) -> Self {
        self.source = Some(Arc::from(source));
        self
    }

    /// Whether retrying with backoff can help.
    pub fn is_transient(&self) -> bool {
        self.class == ErrorClass::Transient
    }
}

impl fmt::Display for PortError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.peer, self.operation, self.message)
    }
}

impl std::error::Error for PortError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// The source is shown by its `Display` only: a lower error's `Debug` may hold a raw response.
impl fmt::Debug for PortError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PortError")
            .field("peer", &self.peer)
            .field("operation", &self.operation)
            .field("class", &self.class)
            .field("message", &self.message)
            .field("source", &self.source.as_ref().map(ToString::to_string))
            .finish()
    }
}

/// Equal when peer, operation, class and message are: the source is how it happened, not what.
impl PartialEq for PortError {
    fn eq(&self, other: &Self) -> bool {
        (self.peer, &self.operation, self.class, &self.message)
            == (other.peer, &other.operation, other.class, &other.message)
    }
}

impl Eq for PortError {}

/// An error and its sources on one line, `"error: cause: cause"`, leaving out a cause whose text
/// the line already holds (a message that spelt its cause out, as [`PortError`]s do). What
/// anyhow's `{:#}` prints, without the repeats.
#[derive(Debug, Clone, Copy)]
pub struct Chain<'a>(pub &'a (dyn std::error::Error + 'static));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut line = self.0.to_string();
        let mut next = self.0.source();
        while let Some(cause) = next {
            let text = cause.to_string();
            if !line.contains(&text) {
                line.push_str(": ");
                line.push_str(&text);
            }
            next = cause.source();
        }
        f.write_str(&line)
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("lower")]
    struct Lower;

    #[test]
    fn the_source_is_kept_for_the_chain_but_not_shown_or_compared() {
        let bare = PortError::new("registry", "get", ErrorClass::Transient, "timed out");
        let sourced = bare.clone().with_source(Lower);
        assert_eq!(sourced.to_string(), "registry get: timed out");
        assert_eq!(sourced, bare);
        assert!(bare.source().is_none());
        let source = sourced.source().expect("kept");
        assert!(source.downcast_ref::<Lower>().is_some());
        assert_eq!(
            sourced.clone().source().map(ToString::to_string),
            Some("lower".into())
        );
    }

    #[test]
    fn a_chain_names_each_cause_once() {
        let spelt_out = PortError::new("registry", "get", ErrorClass::Transient, "failed: lower")
            .with_source(Lower);
        assert_eq!(Chain(&spelt_out).to_string(), "registry get: failed: lower");
        let terse =
            PortError::new("registry", "get", ErrorClass::Transient, "failed").with_source(Lower);
        assert_eq!(Chain(&terse).to_string(), "registry get: failed: lower");
    }
}
