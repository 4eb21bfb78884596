//! Credentials and account, then each AgentCore list call in each account and region the
//! worker reads (one page each: enough to prove the permission).

use aws_config::SdkConfig;
use registrar_core::ports::AgentCore;
use registrar_core::trust::shown;

use super::access::{AwsError, Grantee, describe};
use super::checklist::Check;
use crate::aws::agentcore::AgentCoreAws;
use crate::aws::fleet::Fleet;
use crate::pace::Paced;

const GROUP: &str = "aws";

/// `sts:GetCallerIdentity` with the process's credentials.
pub async fn credentials(config: &SdkConfig) -> Check {
    let subject = "credentials";
    match crate::aws::clients::sts(config, false)
        .get_caller_identity()
        .send()
        .await
    {
        Ok(me) => Check::ok(
            GROUP,
            subject,
            format!(
                "account {} as {}",
                shown(me.account().unwrap_or("?")),
                shown(me.arn().unwrap_or("?"))
            ),
        ),
        Err(e) => {
            let (detail, fix) = describe(
                &AwsError::from_sdk(&e),
                "sts:GetCallerIdentity",
                Grantee::Operator,
                "",
            );
            Check::fail(GROUP, subject, detail, fix)
        }
    }
}

/// Each list call in each (account, region) of the fleet.
pub async fn agentcore(fleet: &Fleet<Paced<AgentCoreAws>>, role_name: &str) -> Vec<Check> {
    let scopes = fleet.members().iter().map(|m| scope(m.inner(), role_name));
    futures::future::join_all(scopes)
        .await
        .into_iter()
        .flatten()
        .collect()
}

async fn scope(member: &AgentCoreAws, role_name: &str) -> Vec<Check> {
    const GROUP: &str = "agentcore";
    let region = member.region().to_owned();
    let grantee = if member.expected_account().is_some() {
        Grantee::Member
    } else {
        Grantee::Operator
    };
    let account = match member.account().await {
        Ok(a) => a,
        Err(e) => {
            let Some(expected) = member.expected_account() else {
                // The credentials line says why; list anyway, the lines below say what works.
                return lists(member, "own account", &region, grantee).await;
            };
            return vec![Check::fail(
                GROUP,
                format!("member account {expected} in {region}"),
                format!("cannot act in it: {}", shown(&e.message)),
                format!(
                    "the role {role_name} must exist in {expected} and trust the operator (member-account-role.yaml, OperatorRoleArns), the operator needs sts:AssumeRole on it, and --member-external-id-file must hold its external id if it requires one"
                ),
            )];
        }
    };
    lists(member, &account, &region, grantee).await
}

async fn lists(member: &AgentCoreAws, account: &str, region: &str, grantee: Grantee) -> Vec<Check> {
    const GROUP: &str = "agentcore";
    let client = member.control_plane();
    let subject = |call: &str| format!("{call} in {account}/{region}");
    let failed = |call: &str, e: AwsError| {
        let (detail, fix) = describe(&e, &format!("bedrock-agentcore:{call}"), grantee, "");
        Check::fail(GROUP, subject(call), detail, fix)
    };
    let mut out = Vec::new();
    let mut a_gateway = None;
    match client.list_gateways().max_results(1).send().await {
        Ok(page) => {
            a_gateway = page.items().first().map(|g| g.gateway_id().to_owned());
            out.push(Check::ok(GROUP, subject("ListGateways"), "allowed"));
        }
        Err(e) => out.push(failed("ListGateways", AwsError::from_sdk(&e))),
    }
    // Targets are listed per gateway: proven on one when there is one.
    if let Some(id) = a_gateway {
        match client
            .list_gateway_targets()
            .gateway_identifier(&id)
            .max_results(1)
            .send()
            .await
        {
            Ok(_) => out.push(Check::ok(
                GROUP,
                subject("ListGatewayTargets"),
                format!("allowed (on gateway {})", shown(&id)),
            )),
            Err(e) => out.push(failed("ListGatewayTargets", AwsError::from_sdk(&e))),
        }
    }
    match client.list_agent_runtimes().max_results(1).send().await {
        Ok(_) => out.push(Check::ok(GROUP, subject("ListAgentRuntimes"), "allowed")),
        Err(e) => out.push(failed("ListAgentRuntimes", AwsError::from_sdk(&e))),
    }
    out
}
