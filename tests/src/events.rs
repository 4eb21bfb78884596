//! The event path on moto: a queue with redrive to a DLQ, the EventBridge rule built from the
//! shipped pattern file targeting the queue, and CloudTrail events put through `PutEvents`.

use std::time::Duration;

use aws_sdk_sqs::types::QueueAttributeName;
use registrar_ingest::sqs::{Queue, Received};
use serde_json::{Value, json};

use crate::moto::workspace_root;

/// Queue, DLQ and rule.
#[derive(Debug, Clone)]
pub struct EventPath {
    pub queue_url: String,
    pub dlq_url: String,
    pub sqs: aws_sdk_sqs::Client,
    events: aws_sdk_eventbridge::Client,
}

async fn queue_arn(sqs: &aws_sdk_sqs::Client, url: &str) -> anyhow::Result<String> {
    let out = sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await?;
    Ok(out
        .attributes()
        .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
        .unwrap_or_default())
}

impl EventPath {
    /// A queue and DLQ that already exist (deployed by the CloudFormation template), reached
    /// through whatever rule routes to them.
    pub fn existing(config: &aws_config::SdkConfig, queue_url: &str, dlq_url: &str) -> Self {
        Self {
            queue_url: queue_url.to_owned(),
            dlq_url: dlq_url.to_owned(),
            sqs: aws_sdk_sqs::Client::new(config),
            events: aws_sdk_eventbridge::Client::new(config),
        }
    }

    /// Creates `<name>` and `<name>-dlq` (redrive after `max_receives`) and the rule.
    pub async fn create(
        config: &aws_config::SdkConfig,
        name: &str,
        max_receives: u32,
        visibility_secs: u32,
    ) -> anyhow::Result<Self> {
        let sqs = aws_sdk_sqs::Client::new(config);
        let events = aws_sdk_eventbridge::Client::new(config);
        let dlq_url = sqs
            .create_queue()
            .queue_name(format!("{name}-dlq"))
            .send()
            .await?
            .queue_url()
            .unwrap_or_default()
            .to_owned();
        let redrive = json!({"deadLetterTargetArn": queue_arn(&sqs, &dlq_url).await?, "maxReceiveCount": max_receives.to_string()});
        let queue_url = sqs
            .create_queue()
            .queue_name(name)
            .attributes(QueueAttributeName::RedrivePolicy, redrive.to_string())
            .attributes(
                QueueAttributeName::VisibilityTimeout,
                visibility_secs.to_string(),
            )
            .send()
            .await?
            .queue_url()
            .unwrap_or_default()
            .to_owned();
        let pattern = std::fs::read_to_string(
            workspace_root().join("infra/eventbridge/agentcore-api-calls.pattern.json"),
        )?;
        let rule = format!("{name}-rule");
        events
            .put_rule()
            .name(&rule)
            .event_pattern(pattern)
            .send()
            .await?;
        let target = aws_sdk_eventbridge::types::Target::builder()
            .id("queue")
            .arn(queue_arn(&sqs, &queue_url).await?)
            .build()?;
        events
            .put_targets()
            .rule(&rule)
            .targets(target)
            .send()
            .await?;
        Ok(Self {
            queue_url,
            dlq_url,
            sqs,
            events,
        })
    }

    /// Puts one CloudTrail management event for an AgentCore call through EventBridge.
    pub async fn put(
        &self,
        event_name: &str,
        request: Value,
        response: Value,
    ) -> anyhow::Result<()> {
        let detail = json!({
            "eventVersion": "1.09", "eventSource": "bedrock-agentcore.amazonaws.com", "eventName": event_name,
            "awsRegion": crate::REGION, "eventTime": "2026-11-21T10:00:00Z", "eventID": format!("evt-{}", uuid_ish()),
            "readOnly": false, "eventType": "AwsApiCall", "managementEvent": true,
            "recipientAccountId": crate::ACCOUNT, "requestParameters": request, "responseElements": response,
        });
        self.put_event(
            "aws.bedrock-agentcore",
            "AWS API Call via CloudTrail",
            &detail,
        )
        .await
    }

    /// Puts any event through EventBridge (the rule decides whether it reaches the queue).
    pub async fn put_event(
        &self,
        source: &str,
        detail_type: &str,
        detail: &Value,
    ) -> anyhow::Result<()> {
        let entry = aws_sdk_eventbridge::types::PutEventsRequestEntry::builder()
            .source(source)
            .detail_type(detail_type)
            .detail(detail.to_string())
            .build();
        let out = self.events.put_events().entries(entry).send().await?;
        anyhow::ensure!(out.failed_entry_count() == 0, "PutEvents failed");
        Ok(())
    }

    /// Sends a raw body straight to the queue (poison messages).
    pub async fn send_raw(&self, body: &str) -> anyhow::Result<()> {
        self.sqs
            .send_message()
            .queue_url(&self.queue_url)
            .message_body(body)
            .send()
            .await?;
        Ok(())
    }

    /// The main queue, for the queue operations under test.
    pub fn queue(&self) -> Queue {
        Queue::new(
            self.sqs.clone(),
            self.queue_url.clone(),
            Some(self.dlq_url.clone()),
        )
    }

    /// Everything in the DLQ now (received with a long visibility so a second call sees none).
    pub async fn dead_letters(&self) -> anyhow::Result<Vec<Received>> {
        drain(&Queue::new(self.sqs.clone(), self.dlq_url.clone(), None)).await
    }

    /// Polls the DLQ until something arrives or `limit` passes.
    pub async fn wait_for_dead_letters(&self, limit: Duration) -> anyhow::Result<Vec<Received>> {
        let started = std::time::Instant::now();
        loop {
            let dead = self.dead_letters().await?;
            if !dead.is_empty() || started.elapsed() > limit {
                return Ok(dead);
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// The dead-letter queue, for the DLQ tools under test.
    pub fn dlq(&self) -> Queue {
        Queue::new(self.sqs.clone(), self.dlq_url.clone(), None)
    }

    /// Messages in the DLQ, visible, held or delayed.
    pub async fn dlq_total(&self) -> anyhow::Result<u64> {
        total(&self.sqs, &self.dlq_url).await
    }

    /// Polls the DLQ until it holds `at_least` messages or `limit` passes; what it holds then.
    pub async fn wait_for_dlq_total(&self, at_least: u64, limit: Duration) -> anyhow::Result<u64> {
        let started = std::time::Instant::now();
        loop {
            let total = self.dlq_total().await?;
            if total >= at_least || started.elapsed() > limit {
                return Ok(total);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Approximate number of messages visible or in flight in the main queue.
    pub async fn depth(&self) -> anyhow::Result<u64> {
        total(&self.sqs, &self.queue_url).await
    }

    /// Waits up to `limit` for the main queue to hold nothing; false if it never did.
    pub async fn drained(&self, limit: std::time::Duration) -> anyhow::Result<bool> {
        let started = std::time::Instant::now();
        loop {
            if self.depth().await? == 0 {
                return Ok(true);
            }
            if started.elapsed() >= limit {
                return Ok(false);
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    }
}

async fn total(sqs: &aws_sdk_sqs::Client, url: &str) -> anyhow::Result<u64> {
    let out = sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesDelayed)
        .send()
        .await?;
    Ok(out
        .attributes()
        .map(|a| a.values().filter_map(|v| v.parse::<u64>().ok()).sum())
        .unwrap_or(0))
}

/// Receives until the queue answers empty (a long visibility keeps received messages away).
pub async fn drain(queue: &Queue) -> anyhow::Result<Vec<Received>> {
    let mut all = Vec::new();
    loop {
        let batch = queue
            .receive(10, Duration::from_millis(500), Duration::from_secs(300))
            .await?;
        if batch.is_empty() {
            return Ok(all);
        }
        all.extend(batch);
    }
}

fn uuid_ish() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    format!("{:016x}", h.finish())
}
