//! The SQS queue the EventBridge rule fills, and its dead-letter queue: the four ways a message
//! can end (design invariant 8) as operations.
//!
//! - done: [`Queue::delete_batch`] (batched, with per-entry failures reported, not dropped);
//! - waiting: [`Queue::requeue_delayed`] sends a delayed copy, then deletes the original, so the
//!   receive count is not burned (invariant 5);
//! - failing: [`Queue::set_visibility`] backs the message off; the queue's redrive policy moves it
//!   to the DLQ after `maxReceiveCount` receives;
//! - poison: [`Queue::dead_letter`] sends it to the DLQ at once with the reason attached.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_sqs::Client;
use aws_sdk_sqs::types::{
    DeleteMessageBatchRequestEntry, MessageAttributeValue, MessageSystemAttributeName,
};
use registrar_core::{ErrorClass, PortError};

use crate::sdk_error::from_sdk_error;

const PEER: &str = "sqs";
/// SQS's largest `DelaySeconds`.
pub const MAX_DELAY: Duration = Duration::from_secs(900);
/// SQS's largest visibility timeout.
pub const MAX_VISIBILITY: Duration = Duration::from_secs(12 * 60 * 60);

/// Attribute names the registrar sets on messages it sends.
pub mod attr {
    /// Stable code of why a message was dead-lettered (`malformed`, `not-cloudtrail`, ...).
    pub const REASON_CODE: &str = "registrar-reason-code";
    /// The reason in words.
    pub const REASON: &str = "registrar-reason";
    /// When the resource was first seen waiting (epoch ms), carried across delayed copies.
    pub const WAITING_SINCE: &str = "registrar-waiting-since";
    /// When the event's first message was queued (epoch ms), carried across delayed copies:
    /// what a copy counts from when a finished reconcile may cover it.
    pub const FIRST_QUEUED: &str = "registrar-first-queued";
    /// How many delayed copies preceded this one.
    pub const WAIT_COUNT: &str = "registrar-wait-count";
    /// How many times `dlq replay` moved this message back.
    pub const REPLAY_COUNT: &str = "registrar-replay-count";
    /// The SQS message id of the event's first message, carried by every copy the registrar
    /// makes (delayed, dead-lettered, moved back by the portable replay; SQS's move task keeps
    /// it too). A message handled twice (SQS delivered it twice, or it was not deleted after
    /// its copy was sent: a worker stopped, a failed delete) leaves two copies with the same
    /// origin: `dlq inspect` counts the second as a duplicate.
    pub const ORIGIN_ID: &str = "registrar-origin-id";
}

/// One received message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub message_id: String,
    pub receipt_handle: String,
    pub body: String,
    /// `ApproximateReceiveCount` (1 on first delivery).
    pub receive_count: u32,
    /// `SentTimestamp`, epoch milliseconds.
    pub sent_at_ms: Option<u64>,
    /// `ApproximateFirstReceiveTimestamp` (SQS's clock when it first handed the message out),
    /// epoch milliseconds.
    pub first_received_at_ms: Option<u64>,
    /// String message attributes.
    pub attributes: HashMap<String, String>,
}

impl Received {
    /// The id of the event's first message ([`attr::ORIGIN_ID`]), else its own: what every
    /// copy the registrar makes of it (delayed, dead-lettered, replayed) carries along.
    pub fn origin(&self) -> &str {
        self.attributes
            .get(attr::ORIGIN_ID)
            .map_or(&self.message_id, String::as_str)
    }
}

/// A message whose batch delete failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeleteFailure {
    pub message_id: String,
    pub code: String,
    pub message: String,
}

/// A queue and, when configured, its dead-letter queue.
#[derive(Debug, Clone)]
pub struct Queue {
    client: Client,
    url: String,
    dlq_url: Option<String>,
}

fn string_attr(value: &str) -> Result<MessageAttributeValue, PortError> {
    MessageAttributeValue::builder()
        .data_type("String")
        .string_value(value)
        .build()
        .map_err(|e| {
            PortError::new(PEER, "build attribute", ErrorClass::Terminal, e.to_string())
                .with_source(e)
        })
}

fn secs(d: Duration) -> i32 {
    i32::try_from(d.as_secs()).unwrap_or(i32::MAX)
}

impl Queue {
    pub fn new(client: Client, url: impl Into<String>, dlq_url: Option<String>) -> Self {
        Self {
            client,
            url: url.into(),
            dlq_url,
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Long-polls for up to `max` (1..=10) messages, hiding them for `visibility`.
    pub async fn receive(
        &self,
        max: i32,
        wait: Duration,
        visibility: Duration,
    ) -> Result<Vec<Received>, PortError> {
        let out = self
            .client
            .receive_message()
            .queue_url(&self.url)
            .max_number_of_messages(max.clamp(1, 10))
            .wait_time_seconds(secs(wait).clamp(0, 20))
            .visibility_timeout(secs(visibility))
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .message_system_attribute_names(MessageSystemAttributeName::SentTimestamp)
            .message_system_attribute_names(
                MessageSystemAttributeName::ApproximateFirstReceiveTimestamp,
            )
            .message_attribute_names("All")
            .send()
            .await
            .map_err(|e| from_sdk_error(PEER, "ReceiveMessage", e))?;
        Ok(out
            .messages()
            .iter()
            .map(|m| {
                let system = m.attributes();
                let sys = |name: MessageSystemAttributeName| {
                    system
                        .and_then(|a| a.get(&name))
                        .and_then(|v| v.parse::<u64>().ok())
                };
                Received {
                    message_id: m.message_id().unwrap_or_default().to_owned(),
                    receipt_handle: m.receipt_handle().unwrap_or_default().to_owned(),
                    body: m.body().unwrap_or_default().to_owned(),
                    receive_count: sys(MessageSystemAttributeName::ApproximateReceiveCount)
                        .and_then(|c| u32::try_from(c).ok())
                        .unwrap_or(1),
                    sent_at_ms: sys(MessageSystemAttributeName::SentTimestamp),
                    first_received_at_ms: sys(
                        MessageSystemAttributeName::ApproximateFirstReceiveTimestamp,
                    ),
                    attributes: m
                        .message_attributes()
                        .map(|a| {
                            a.iter()
                                .filter_map(|(k, v)| {
                                    v.string_value().map(|s| (k.clone(), s.to_owned()))
                                })
                                .collect()
                        })
                        .unwrap_or_default(),
                }
            })
            .collect())
    }

    /// Deletes up to ten messages in one call. Entries SQS refused are returned, not dropped.
    pub async fn delete_batch(
        &self,
        messages: &[&Received],
    ) -> Result<Vec<DeleteFailure>, PortError> {
        let mut failures = Vec::new();
        for chunk in messages.chunks(10) {
            let entries = chunk
                .iter()
                .enumerate()
                .map(|(i, m)| {
                    DeleteMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .receipt_handle(&m.receipt_handle)
                        .build()
                        .map_err(|e| {
                            PortError::new(
                                PEER,
                                "build delete entry",
                                ErrorClass::Terminal,
                                e.to_string(),
                            )
                            .with_source(e)
                        })
                })
                .collect::<Result<Vec<_>, _>>()?;
            let out = self
                .client
                .delete_message_batch()
                .queue_url(&self.url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(|e| from_sdk_error(PEER, "DeleteMessageBatch", e))?;
            for f in out.failed() {
                let message_id = f
                    .id()
                    .parse::<usize>()
                    .ok()
                    .and_then(|i| chunk.get(i))
                    .map(|m| m.message_id.clone());
                failures.push(DeleteFailure {
                    message_id: message_id.unwrap_or_else(|| f.id().to_owned()),
                    code: f.code().to_owned(),
                    message: f.message().unwrap_or_default().to_owned(),
                });
            }
        }
        Ok(failures)
    }

    /// The queue's ARN.
    pub async fn arn(&self) -> Result<String, PortError> {
        let out = self
            .client
            .get_queue_attributes()
            .queue_url(&self.url)
            .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
            .send()
            .await
            .map_err(|e| from_sdk_error(PEER, "GetQueueAttributes", e))?;
        out.attributes()
            .and_then(|a| {
                a.get(&aws_sdk_sqs::types::QueueAttributeName::QueueArn)
                    .cloned()
            })
            .ok_or_else(|| {
                PortError::new(
                    PEER,
                    "GetQueueAttributes",
                    ErrorClass::Terminal,
                    format!("{} has no QueueArn", self.url),
                )
            })
    }

    /// Approximate number of messages waiting (visible) in the queue.
    pub async fn depth(&self) -> Result<u64, PortError> {
        let name = aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages;
        let out = self
            .client
            .get_queue_attributes()
            .queue_url(&self.url)
            .attribute_names(name.clone())
            .send()
            .await
            .map_err(|e| from_sdk_error(PEER, "GetQueueAttributes", e))?;
        Ok(out
            .attributes()
            .and_then(|a| a.get(&name))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0))
    }

    /// Sends a message with string attributes.
    pub async fn send(
        &self,
        body: &str,
        attributes: &HashMap<String, String>,
    ) -> Result<(), PortError> {
        let mut send = self
            .client
            .send_message()
            .queue_url(&self.url)
            .message_body(body);
        for (k, v) in attributes {
            send = send.message_attributes(k, string_attr(v)?);
        }
        send.send()
            .await
            .map_err(|e| from_sdk_error(PEER, "SendMessage", e))?;
        Ok(())
    }

    /// SQS's own redrive of this queue (a DLQ) back to `destination_arn`: StartMessageMoveTask.
    pub async fn start_move_task(
        &self,
        destination_arn: &str,
        per_second: Option<i32>,
    ) -> Result<String, PortError> {
        let source = self.arn().await?;
        let mut req = self
            .client
            .start_message_move_task()
            .source_arn(source)
            .destination_arn(destination_arn);
        if let Some(rate) = per_second {
            req = req.max_number_of_messages_per_second(rate);
        }
        let out = req
            .send()
            .await
            .map_err(|e| from_sdk_error(PEER, "StartMessageMoveTask", e))?;
        Ok(out.task_handle().unwrap_or_default().to_owned())
    }

    /// Deletes one message.
    pub async fn delete(&self, message: &Received) -> Result<(), PortError> {
        self.client
            .delete_message()
            .queue_url(&self.url)
            .receipt_handle(&message.receipt_handle)
            .send()
            .await
            .map_err(|e| from_sdk_error(PEER, "DeleteMessage", e))?;
        Ok(())
    }

    /// Hides the message for `visibility` from now: the heartbeat of a long reconcile, the
    /// backoff of a failing one, or (zero) a release for another worker to take.
    pub async fn set_visibility(
        &self,
        message: &Received,
        visibility: Duration,
    ) -> Result<(), PortError> {
        self.client
            .change_message_visibility()
            .queue_url(&self.url)
            .receipt_handle(&message.receipt_handle)
            .visibility_timeout(secs(visibility.min(MAX_VISIBILITY)))
            .send()
            .await
            .map_err(|e| from_sdk_error(PEER, "ChangeMessageVisibility", e))?;
        Ok(())
    }

    /// Sends a copy delayed by `delay` (at most 15 minutes) with `attributes`, then deletes the
    /// original: a waiting resource is re-checked later without burning the receive count.
    /// If the send fails the original is kept (it reappears after its visibility timeout).
    pub async fn requeue_delayed(
        &self,
        message: &Received,
        delay: Duration,
        attributes: &HashMap<String, String>,
    ) -> Result<(), PortError> {
        let mut send = self
            .client
            .send_message()
            .queue_url(&self.url)
            .message_body(&message.body)
            .delay_seconds(secs(delay.min(MAX_DELAY)));
        for (k, v) in attributes {
            send = send.message_attributes(k, string_attr(v)?);
        }
        send = send.message_attributes(attr::ORIGIN_ID, string_attr(message.origin())?);
        send.send()
            .await
            .map_err(|e| from_sdk_error(PEER, "SendMessage (delayed copy)", e))?;
        self.delete(message).await
    }

    /// Sends the message to the dead-letter queue with the reason and its origin attached, then
    /// deletes it. Stopped in between, the message is dead-lettered again when it reappears:
    /// the copies share [`attr::ORIGIN_ID`]. Without a configured DLQ the message is left to
    /// the redrive policy (it reappears and is dead-lettered by SQS after `maxReceiveCount`).
    pub async fn dead_letter(
        &self,
        message: &Received,
        code: &str,
        reason: &str,
    ) -> Result<(), PortError> {
        let Some(dlq) = &self.dlq_url else {
            return Err(PortError::new(
                PEER,
                "dead-letter",
                ErrorClass::Terminal,
                "no dead-letter queue configured",
            ));
        };
        let mut send = self
            .client
            .send_message()
            .queue_url(dlq)
            .message_body(&message.body);
        for (k, v) in &message.attributes {
            send = send.message_attributes(k, string_attr(v)?);
        }
        send = send
            .message_attributes(attr::ORIGIN_ID, string_attr(message.origin())?)
            .message_attributes(attr::REASON_CODE, string_attr(code)?)
            .message_attributes(
                attr::REASON,
                string_attr(&reason.chars().take(1000).collect::<String>())?,
            );
        send.send()
            .await
            .map_err(|e| from_sdk_error(PEER, "SendMessage (dead-letter)", e))?;
        self.delete(message).await
    }
}
