//! The event queue, its dead-letter queue and the redrive between them.

use std::collections::HashMap;

use aws_config::SdkConfig;
use aws_sdk_sqs::types::QueueAttributeName;
use registrar_core::trust::shown;
use serde_json::Value;

use super::access::{AwsError, Grantee, describe};
use super::checklist::Check;

const GROUP: &str = "queue";

/// A queue's redrive policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redrive {
    pub dead_letter_target_arn: String,
    pub max_receive_count: u32,
}

/// Parses SQS's `RedrivePolicy` attribute (`maxReceiveCount` as a number or, as CloudFormation
/// and some SDKs write it, a string).
pub fn parse_redrive(raw: &str) -> Result<Redrive, String> {
    let v: Value =
        serde_json::from_str(raw).map_err(|_| "the redrive policy is not JSON".to_owned())?;
    let arn = v
        .get("deadLetterTargetArn")
        .and_then(Value::as_str)
        .filter(|a| a.starts_with("arn:"))
        .ok_or("the redrive policy names no deadLetterTargetArn")?;
    let count = match v.get("maxReceiveCount") {
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(s)) => s.trim().parse::<u64>().ok(),
        _ => None,
    }
    .and_then(|n| u32::try_from(n).ok())
    .filter(|n| (1..=1000).contains(n))
    .ok_or("the redrive policy's maxReceiveCount is not 1..=1000")?;
    Ok(Redrive {
        dead_letter_target_arn: arn.to_owned(),
        max_receive_count: count,
    })
}

/// What the queue checks found; the queue's ARN for the rule checks.
#[derive(Debug, Default)]
pub struct Found {
    pub checks: Vec<Check>,
    pub queue_arn: Option<String>,
}

async fn attributes(
    sqs: &aws_sdk_sqs::Client,
    url: &str,
) -> Result<HashMap<QueueAttributeName, String>, AwsError> {
    sqs.get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::All)
        .send()
        .await
        .map(|out| out.attributes().cloned().unwrap_or_default())
        .map_err(|e| AwsError::from_sdk(&e))
}

fn is_url(u: &str) -> bool {
    u.starts_with("https://") || u.starts_with("http://")
}

pub async fn check(config: &SdkConfig, queue_url: Option<&str>, dlq_url: Option<&str>) -> Found {
    let mut found = Found::default();
    let Some(queue_url) = queue_url.filter(|u| is_url(u)) else {
        found.checks.push(Check::fail(
            GROUP,
            "event queue",
            match queue_url {
                None => "no queue named".to_owned(),
                Some(u) => format!("{:?} is not a queue URL", shown(u)),
            },
            "--queue-url (REGISTRAR_QUEUE_URL): the stack's QueueUrl output",
        ));
        return found;
    };
    let sqs = crate::aws::clients::sqs(config);
    let subject = format!("queue {queue_url}");
    let queue = match attributes(&sqs, queue_url).await {
        Ok(a) => a,
        Err(e) => {
            let (detail, fix) = describe(
                &e,
                "sqs:GetQueueAttributes",
                Grantee::Operator,
                "--queue-url (REGISTRAR_QUEUE_URL): the stack's QueueUrl output",
            );
            found.checks.push(Check::fail(GROUP, subject, detail, fix));
            return found;
        }
    };
    found.queue_arn = queue.get(&QueueAttributeName::QueueArn).cloned();
    found
        .checks
        .push(Check::ok(GROUP, subject.clone(), "readable"));

    let redrive_fix = "give the queue a RedrivePolicy to its dead-letter queue (the stack's EventsQueue: maxReceiveCount 12 to EventsDlq)";
    let redrive = match queue.get(&QueueAttributeName::RedrivePolicy) {
        None => {
            found.checks.push(Check::fail(
                GROUP,
                format!("redrive of {queue_url}"),
                "no redrive policy: a message that keeps failing is retried until it expires, never dead-lettered",
                redrive_fix,
            ));
            None
        }
        Some(raw) => match parse_redrive(raw) {
            Ok(r) => Some(r),
            Err(why) => {
                found.checks.push(Check::fail(
                    GROUP,
                    format!("redrive of {queue_url}"),
                    why,
                    redrive_fix,
                ));
                None
            }
        },
    };

    let Some(dlq_url) = dlq_url.filter(|u| !u.trim().is_empty()) else {
        if let Some(r) = &redrive {
            found.checks.push(Check::ok(
                GROUP,
                format!("redrive of {queue_url}"),
                format!(
                    "to {} after {} receives",
                    shown(&r.dead_letter_target_arn),
                    r.max_receive_count
                ),
            ));
        }
        found.checks.push(Check::warn(
            GROUP,
            "dead-letter queue",
            "no --dlq-url: the worker cannot dead-letter a poison message at once (it waits for the redrive)",
            "--dlq-url (REGISTRAR_DLQ_URL): the stack's DlqUrl output",
        ));
        return found;
    };
    let dlq_subject = format!("dead-letter queue {dlq_url}");
    let dlq_arn = match attributes(&sqs, dlq_url).await {
        Ok(a) => a.get(&QueueAttributeName::QueueArn).cloned(),
        Err(e) => {
            let (detail, fix) = describe(
                &e,
                "sqs:GetQueueAttributes",
                Grantee::Operator,
                "--dlq-url (REGISTRAR_DLQ_URL): the stack's DlqUrl output",
            );
            found
                .checks
                .push(Check::fail(GROUP, dlq_subject, detail, fix));
            return found;
        }
    };
    found.checks.push(Check::ok(GROUP, dlq_subject, "readable"));
    if let Some(r) = &redrive {
        let subject = format!("redrive of {queue_url}");
        if dlq_arn.as_deref() == Some(r.dead_letter_target_arn.as_str()) {
            found.checks.push(Check::ok(
                GROUP,
                subject,
                format!(
                    "to the dead-letter queue after {} receives",
                    r.max_receive_count
                ),
            ));
        } else {
            found.checks.push(Check::fail(
                GROUP,
                subject,
                format!(
                    "redrives to {}, not to --dlq-url ({})",
                    shown(&r.dead_letter_target_arn),
                    shown(dlq_arn.as_deref().unwrap_or("?"))
                ),
                "point --dlq-url (REGISTRAR_DLQ_URL) at the queue the redrive names, or fix the queue's RedrivePolicy",
            ));
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redrive_policies_parse_with_numeric_or_string_counts() {
        let want = Redrive {
            dead_letter_target_arn: "arn:aws:sqs:us-east-1:123456789012:q-dlq".into(),
            max_receive_count: 12,
        };
        assert_eq!(
            parse_redrive(
                r#"{"deadLetterTargetArn":"arn:aws:sqs:us-east-1:123456789012:q-dlq","maxReceiveCount":12}"#
            ),
            Ok(want.clone())
        );
        assert_eq!(
            parse_redrive(
                r#"{"deadLetterTargetArn":"arn:aws:sqs:us-east-1:123456789012:q-dlq","maxReceiveCount":"12"}"#
            ),
            Ok(want)
        );
    }

    #[test]
    fn broken_redrive_policies_say_what_is_wrong() {
        for (raw, why) in [
            ("not json", "not JSON"),
            (r#"{"maxReceiveCount":3}"#, "no deadLetterTargetArn"),
            (
                r#"{"deadLetterTargetArn":"q-dlq","maxReceiveCount":3}"#,
                "no deadLetterTargetArn",
            ),
            (
                r#"{"deadLetterTargetArn":"arn:aws:sqs:r:a:q"}"#,
                "maxReceiveCount",
            ),
            (
                r#"{"deadLetterTargetArn":"arn:aws:sqs:r:a:q","maxReceiveCount":0}"#,
                "maxReceiveCount",
            ),
            (
                r#"{"deadLetterTargetArn":"arn:aws:sqs:r:a:q","maxReceiveCount":"x"}"#,
                "maxReceiveCount",
            ),
        ] {
            let err = parse_redrive(raw).expect_err(raw);
            assert!(err.contains(why), "{raw}: {err}");
        }
    }
}
