//! The EventBridge rule(s) that fill the queue: enabled, matching AgentCore's CloudTrail
//! events as the shipped pattern does, and targeting the queue.

use aws_config::SdkConfig;
use aws_sdk_eventbridge::types::RuleState;
use registrar_core::trust::shown;
use serde_json::Value;

use super::access::{AwsError, Grantee, describe};
use super::checklist::Check;

const GROUP: &str = "events";

/// The single source of truth for the rule (infra/README.md); the stack embeds it.
pub const SHIPPED_PATTERN: &str =
    include_str!("../../../../infra/eventbridge/agentcore-api-calls.pattern.json");

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// The AgentCore calls the shipped pattern matches (the calls the worker acts on).
pub fn shipped_event_names() -> Vec<String> {
    serde_json::from_str::<Value>(SHIPPED_PATTERN)
        .map(|p| strings(p.pointer("/detail/eventName")))
        .unwrap_or_default()
}

/// How a rule's pattern compares with the shipped one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PatternVerdict {
    /// The shipped pattern, or one that matches at least its events.
    Matches,
    /// It matches some AgentCore calls but misses these (a rescan repairs what is missed).
    Misses(Vec<String>),
    /// It does not match AgentCore's CloudTrail events at all.
    Wrong(String),
}

/// Compares a rule's `EventPattern` with the shipped pattern.
pub fn pattern_verdict(pattern: &str) -> PatternVerdict {
    let Ok(p) = serde_json::from_str::<Value>(pattern) else {
        return PatternVerdict::Wrong("the pattern is not JSON".into());
    };
    if serde_json::from_str::<Value>(SHIPPED_PATTERN).is_ok_and(|s| s == p) {
        return PatternVerdict::Matches;
    }
    if !strings(p.get("source"))
        .iter()
        .any(|s| s == "aws.bedrock-agentcore")
    {
        return PatternVerdict::Wrong("its source is not aws.bedrock-agentcore".into());
    }
    let kinds = strings(p.get("detail-type"));
    if p.get("detail-type").is_some() && !kinds.iter().any(|k| k == "AWS API Call via CloudTrail") {
        return PatternVerdict::Wrong(
            "its detail-type is not \"AWS API Call via CloudTrail\"".into(),
        );
    }
    match p.pointer("/detail/eventName") {
        None => PatternVerdict::Matches,
        Some(names) => {
            let names = strings(Some(names));
            let missing: Vec<String> = shipped_event_names()
                .into_iter()
                .filter(|n| !names.contains(n))
                .collect();
            if missing.is_empty() {
                PatternVerdict::Matches
            } else {
                PatternVerdict::Misses(missing)
            }
        }
    }
}

const FIX_RULE: &str = "deploy the stack's AgentCoreApiCallsRule (infra/cloudformation/registrar.yaml) on the default event bus with the queue as its target; name a rule of your own with --rule-names (REGISTRAR_RULE_NAMES)";

pub async fn check(
    config: &SdkConfig,
    queue_arn: Option<&str>,
    rule_names: &[String],
) -> Vec<Check> {
    let Some(queue_arn) = queue_arn else {
        return vec![Check::warn(
            GROUP,
            "rules",
            "not checked: the queue could not be read (see above)",
            "fix the queue first",
        )];
    };
    let events = crate::aws::clients::eventbridge(config);
    let named: Vec<String> = rule_names
        .iter()
        .map(|n| n.trim().to_owned())
        .filter(|n| !n.is_empty())
        .collect();
    let (names, listed) = if named.is_empty() {
        match events
            .list_rule_names_by_target()
            .target_arn(queue_arn)
            .send()
            .await
        {
            Ok(out) => (out.rule_names().to_vec(), true),
            Err(e) => {
                let (detail, fix) = describe(
                    &AwsError::from_sdk(&e),
                    "events:ListRuleNamesByTarget",
                    Grantee::Operator,
                    FIX_RULE,
                );
                return vec![Check::fail(
                    GROUP,
                    format!("rules targeting {queue_arn}"),
                    detail,
                    fix,
                )];
            }
        }
    } else {
        (named, false)
    };
    if names.is_empty() {
        return vec![Check::fail(
            GROUP,
            format!("rules targeting {queue_arn}"),
            "no EventBridge rule on the default bus targets the queue: no AgentCore event reaches the worker",
            FIX_RULE,
        )];
    }
    let mut out = Vec::new();
    // Each rule's line fails on its own when it is unusable.
    for name in &names {
        out.push(rule(&events, name, queue_arn, listed).await);
    }
    out
}

async fn rule(
    events: &aws_sdk_eventbridge::Client,
    name: &str,
    queue_arn: &str,
    known_to_target: bool,
) -> Check {
    let subject = format!("rule {}", shown(name));
    let failed = |e: AwsError, call: &str| {
        let (detail, fix) = describe(&e, call, Grantee::Operator, FIX_RULE);
        Check::fail(GROUP, subject.clone(), detail, fix)
    };
    let described = match events.describe_rule().name(name).send().await {
        Ok(d) => d,
        Err(e) => return failed(AwsError::from_sdk(&e), "events:DescribeRule"),
    };
    if described.state() != Some(&RuleState::Enabled) {
        return Check::fail(
            GROUP,
            subject,
            format!(
                "is {}: no event reaches the queue",
                described.state().map_or("in no state", |s| s.as_str())
            ),
            format!("enable it: aws events enable-rule --name {}", shown(name)),
        );
    }
    if !known_to_target {
        let targets = match events.list_targets_by_rule().rule(name).send().await {
            Ok(t) => t,
            Err(e) => return failed(AwsError::from_sdk(&e), "events:ListTargetsByRule"),
        };
        if !targets.targets().iter().any(|t| t.arn() == queue_arn) {
            let shown_targets: Vec<String> =
                targets.targets().iter().map(|t| shown(t.arn())).collect();
            return Check::fail(
                GROUP,
                subject,
                format!(
                    "targets {}, not the queue {queue_arn}",
                    if shown_targets.is_empty() {
                        "nothing".to_owned()
                    } else {
                        shown_targets.join(", ")
                    }
                ),
                "make the queue the rule's target (the stack's AgentCoreApiCallsRule Targets), or point --queue-url at the queue it targets",
            );
        }
    }
    match pattern_verdict(described.event_pattern().unwrap_or_default()) {
        PatternVerdict::Matches => Check::ok(
            GROUP,
            subject,
            "enabled, targets the queue, matches AgentCore's calls",
        ),
        PatternVerdict::Misses(names) => Check::warn(
            GROUP,
            subject,
            format!(
                "enabled and targets the queue, but misses {}: those changes wait for a rescan",
                names.join(", ")
            ),
            "use infra/eventbridge/agentcore-api-calls.pattern.json as the rule's EventPattern",
        ),
        PatternVerdict::Wrong(why) => Check::fail(
            GROUP,
            subject,
            format!("matches no AgentCore call: {why}"),
            "use infra/eventbridge/agentcore-api-calls.pattern.json as the rule's EventPattern",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_pattern_matches_and_names_the_mutating_calls() {
        assert_eq!(pattern_verdict(SHIPPED_PATTERN), PatternVerdict::Matches);
        let names = shipped_event_names();
        assert!(names.contains(&"CreateGateway".to_owned()), "{names:?}");
        assert!(
            names.contains(&"DeleteAgentRuntime".to_owned()),
            "{names:?}"
        );
    }

    #[test]
    fn other_patterns_are_judged_by_what_they_match() {
        let broad =
            r#"{"source":["aws.bedrock-agentcore"],"detail-type":["AWS API Call via CloudTrail"]}"#;
        assert_eq!(pattern_verdict(broad), PatternVerdict::Matches);
        let narrow =
            r#"{"source":["aws.bedrock-agentcore"],"detail":{"eventName":["CreateGateway"]}}"#;
        match pattern_verdict(narrow) {
            PatternVerdict::Misses(m) => assert!(m.contains(&"DeleteGateway".to_owned()), "{m:?}"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            pattern_verdict(r#"{"source":["aws.s3"]}"#),
            PatternVerdict::Wrong(_)
        ));
        assert!(matches!(
            pattern_verdict(
                r#"{"source":["aws.bedrock-agentcore"],"detail-type":["Scheduled Event"]}"#
            ),
            PatternVerdict::Wrong(_)
        ));
        assert!(matches!(pattern_verdict("{"), PatternVerdict::Wrong(_)));
    }
}
