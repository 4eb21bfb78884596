//! Every (account, region) one worker reads, and which of them serves a given resource.

use std::sync::Arc;

use aws_config::SdkConfig;
use aws_config::sts::AssumeRoleProvider;
use aws_credential_types::provider::SharedCredentialsProvider;
use registrar_core::ports::{AgentCore, Clock};
use registrar_core::reach::{ReachRequest, member_role_arn};
use registrar_core::{ErrorClass, PortError};

use super::agentcore::AgentCoreAws;
use crate::pace::{Limits, Paced, Rates};

/// The AgentCore control planes a worker reads: its own account in each region first, then
/// each allowlisted member account in each region.
#[derive(Debug, Clone)]
pub struct Fleet<A> {
    members: Vec<A>,
}

impl<A> Fleet<A> {
    /// These accounts and regions, in this order (the first of a region answers for events
    /// that name no account).
    pub fn of(members: Vec<A>) -> Self {
        Self { members }
    }

    pub fn members(&self) -> &[A] {
        &self.members
    }

    /// Every account and region behind limiters of its own, at `rates` (per process): the
    /// quotas are per account and region, so scopes never wait for one another.
    pub fn paced(self, rates: Rates, clock: Arc<dyn Clock>) -> Fleet<Paced<A>> {
        Fleet {
            members: self
                .members
                .into_iter()
                .map(|m| Paced::new(m, Arc::new(Limits::new(rates, Arc::clone(&clock)))))
                .collect(),
        }
    }
}

impl<A: AgentCore> Fleet<A> {
    /// One account and region.
    pub fn one(agentcore: A) -> Self {
        Self {
            members: vec![agentcore],
        }
    }

    /// Asks each member which account it acts in (STS, once; kept), so the first event need
    /// not wait for it. Those that cannot say now, with why; they are asked again when needed.
    pub async fn learn_accounts(&self) -> Vec<(String, PortError)> {
        let answers =
            futures::future::join_all(self.members.iter().map(|m| async move {
                m.account().await.err().map(|e| (m.region().to_owned(), e))
            }))
            .await;
        answers.into_iter().flatten().collect()
    }

    /// The control plane of `account` in `region`. An empty account (an event that did not say)
    /// picks the first in the region, the worker's own account. A resource outside the fleet is
    /// a terminal error: this worker must never read or register it.
    pub async fn route(&self, account: &str, region: &str) -> Result<&A, PortError> {
        let mut served = Vec::new();
        let mut unanswered = None;
        for m in &self.members {
            let in_region = region.is_empty() || m.region().is_empty() || m.region() == region;
            if in_region && account.is_empty() {
                return Ok(m);
            }
            match m.account().await {
                Ok(a) if in_region && a == account => return Ok(m),
                Ok(a) => served.push(format!("{a}/{}", m.region())),
                Err(e) if in_region => unanswered = Some(e),
                Err(_) => {}
            }
        }
        // A member of the region could not say which account it is: it may be the one.
        if let Some(e) = unanswered {
            return Err(e);
        }
        Err(PortError::new(
            "worker",
            "route",
            ErrorClass::Terminal,
            format!(
                "resource in account {} region {region} is outside what this worker reads ({}); \
                 add the account to --member-accounts and --allowed-accounts, or the region to --regions",
                if account.is_empty() { "?" } else { account },
                served.join(", ")
            ),
        ))
    }
}

/// Why the fleet could not be built.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    /// Member accounts were asked for, and STS could not say which account is the worker's own.
    #[error("cannot tell this worker's own account")]
    OwnAccount(#[source] PortError),
    /// The accounts and regions asked for are refused (fail closed); says which and why.
    #[error("{0}")]
    Reach(String),
}

/// Builds the fleet: validates the request (fail closed), then one client per account and
/// region, each paced at `rates` by limiters of its own; member accounts through AssumeRole of
/// `role_name` (with `external_id` if set).
pub async fn build(
    base: &SdkConfig,
    request: ReachRequest<'_>,
    role_name: &str,
    external_id: Option<&str>,
    rates: Rates,
    clock: Arc<dyn Clock>,
) -> Result<Fleet<Paced<AgentCoreAws>>, FleetError> {
    let home = AgentCoreAws::new(base);
    let home_account = if request.member_accounts.iter().any(|a| !a.trim().is_empty()) {
        home.account().await.map_err(FleetError::OwnAccount)?
    } else {
        String::new()
    };
    let reach = request.validate(&home_account).map_err(FleetError::Reach)?;
    let in_region = |config: &SdkConfig, region: &str| {
        config
            .to_builder()
            .region(aws_config::Region::new(region.to_owned()))
            .build()
    };
    let mut members: Vec<AgentCoreAws> = reach
        .regions
        .iter()
        .map(|r| AgentCoreAws::new(&in_region(base, r)))
        .collect();
    for account in &reach.members {
        let mut role =
            AssumeRoleProvider::builder(member_role_arn(request.home_region, account, role_name))
                .session_name("agentcore-registrar")
                .configure(base);
        if let Some(id) = external_id {
            role = role.external_id(id);
        }
        let credentials = SharedCredentialsProvider::new(role.build().await);
        // Made by the credentials provider, outside our clients: noted once per member.
        super::clients::note_call("sts", "AssumeRole");
        let assumed = base.to_builder().credentials_provider(credentials).build();
        members.extend(
            reach
                .regions
                .iter()
                .map(|r| AgentCoreAws::member(&in_region(&assumed, r), account.clone())),
        );
    }
    Ok(Fleet { members }.paced(rates, clock))
}
