//! The transport rules every outbound HTTP client follows: no redirects (a redirect could carry
//! a bearer token or a client secret to another host), a timeout on every request, and how a
//! failed exchange maps to a [`PortError`] that keeps the `reqwest` error as its source.

use std::time::Duration;

use registrar_core::{ErrorClass, PortError};
use reqwest::StatusCode;

/// A client builder that never follows redirects and gives up on a request after `timeout`.
/// Callers add what is theirs (user agent, connect timeout) and build.
pub fn client_builder(timeout: Duration) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
}

/// A client that could not be built (TLS backend, bad settings): nothing was sent.
pub fn client_error(peer: &'static str, e: reqwest::Error) -> PortError {
    PortError::new(peer, "client", ErrorClass::Terminal, e.to_string()).with_source(e)
}

/// A request that got no response (timeout, connection refused, TLS): transient. The message
/// says which and spells out the `reqwest` chain; the error itself is kept as the source.
///
/// The chain names the request's URL. Requests never carry a secret in their URL (tokens go in
/// headers, client secrets in bodies, and URLs with `user:password@` are refused before use).
pub fn transport_error(peer: &'static str, operation: &str, e: reqwest::Error) -> PortError {
    PortError::new(
        peer,
        operation,
        ErrorClass::Transient,
        transport_message(&e),
    )
    .with_source(e)
}

/// `"<timed out|connection failed|request failed>: <error>: <cause>: ..."`.
pub fn transport_message(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    let mut msg = format!("{kind}: {e}");
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        msg.push_str(&format!(": {s}"));
        source = s.source();
    }
    msg
}

/// An answer that says "later" rather than "no": 408, 425, 429 and every 5xx.
pub fn is_transient_status(status: StatusCode) -> bool {
    matches!(status.as_u16(), 408 | 425 | 429 | 500..=599)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_and_broken_answers_are_transient_refusals_are_not() {
        for code in [408, 425, 429, 500, 502, 503, 504] {
            assert!(
                is_transient_status(StatusCode::from_u16(code).expect("code")),
                "{code}"
            );
        }
        for code in [400, 401, 403, 404, 409, 422] {
            assert!(
                !is_transient_status(StatusCode::from_u16(code).expect("code")),
                "{code}"
            );
        }
    }

    #[tokio::test]
    async fn a_refused_connection_is_transient_and_keeps_the_reqwest_error() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}/x", listener.local_addr().expect("addr"));
        drop(listener);
        let client = client_builder(Duration::from_secs(5))
            .build()
            .expect("client");
        let e = client.get(&url).send().await.expect_err("refused");
        let e = transport_error("registry", "get", e);
        assert!(e.is_transient());
        assert!(
            e.message.starts_with("connection failed: "),
            "{}",
            e.message
        );
        let source = std::error::Error::source(&e).expect("source");
        assert!(source.downcast_ref::<reqwest::Error>().is_some());
    }
}
