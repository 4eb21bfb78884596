//! What the registry client and the IdP client share, and nothing either of them owns: the
//! transport rules (no redirects, timeouts, how a failed exchange is classified) in [`http`],
//! and OIDC discovery with the client_credentials grant in [`oauth`]. Imports neither
//! `registry` nor `tokens`, so both can build on it without reaching into each other.

pub mod http;
pub mod oauth;
