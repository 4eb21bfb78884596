//! The enable policy (design invariant 6): the enabled state is set once, when we first
//! register an entry; later reconciles never flip it back.

use crate::desired::InboundAuth;

/// Which new entries get enabled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EnablePolicy {
    /// Never enable: operators enable entries themselves.
    None,
    /// Enable AWS_IAM entries at registration and CUSTOM_JWT ones once their egress token is in
    /// place; never an entry with no inbound authorization or an unknown one.
    #[default]
    Authenticated,
    /// Enable every entry at registration.
    All,
}

impl EnablePolicy {
    /// Reads `none`, `authenticated` or `all` (the flag's values).
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "none" => Some(Self::None),
            "authenticated" => Some(Self::Authenticated),
            "all" => Some(Self::All),
            _ => None,
        }
    }

    /// Whether an entry with this inbound auth is enabled right after its registration.
    pub fn at_registration(self, auth: InboundAuth) -> bool {
        match self {
            Self::None => false,
            Self::All => true,
            Self::Authenticated => auth == InboundAuth::Iam,
        }
    }

    /// Whether an entry is enabled once its egress token has been delivered.
    pub fn after_token(self, auth: InboundAuth) -> bool {
        match self {
            Self::None => false,
            Self::All => true,
            Self::Authenticated => matches!(auth, InboundAuth::Iam | InboundAuth::Jwt),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authenticated_never_enables_open_or_unknown_entries() {
        let p = EnablePolicy::Authenticated;
        assert!(p.at_registration(InboundAuth::Iam));
        assert!(!p.at_registration(InboundAuth::Jwt), "waits for the token");
        assert!(p.after_token(InboundAuth::Jwt));
        assert!(!p.at_registration(InboundAuth::Open));
        assert!(!p.after_token(InboundAuth::Open));
        assert!(!p.at_registration(InboundAuth::Unknown));
        assert!(!EnablePolicy::None.at_registration(InboundAuth::Iam));
        assert!(EnablePolicy::All.at_registration(InboundAuth::Open));
    }
}
