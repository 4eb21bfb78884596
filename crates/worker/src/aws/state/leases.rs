//! The LeaseStore on the state table: lease items whose versions only grow, their renewal and
//! release, and the store fenced by a lease (`fenced`, `hold`).

use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValuesOnConditionCheckFailure};
use registrar_core::PortError;
use registrar_core::ports::{Acquired, Lease, LeaseStore};

use super::{DynamoState, PEER, from_sdk_error, made, number, s, text};

impl LeaseStore for DynamoState {
    async fn acquire_lease_unless_settled(
        &self,
        name: &str,
        owner: &str,
        ttl: std::time::Duration,
        since_ms: Option<u64>,
    ) -> Result<Acquired, PortError> {
        // The version is the acquisition's time; a clock behind the last holder's version
        // takes that version plus one instead (a second, conditional attempt), so versions
        // only grow whatever the clocks say.
        let free = "(attribute_not_exists(pk) OR expires_at < :now OR #owner = :me)";
        // With `since_ms`, a settled mark that covers it refuses the update: the caller learns
        // it from the refusal, in the same call.
        let unsettled = if since_ms.is_some() {
            " AND (attribute_not_exists(settled_ms) OR settled_ms < :since OR settled_ms > :now)"
        } else {
            ""
        };
        let mut attempt = (
            self.clock.now_ms(),
            format!("{free}{unsettled} AND (attribute_not_exists(#version) OR #version < :v)"),
            None,
        );
        for _ in 0..2 {
            let (version, condition, previous) = attempt.clone();
            // Each attempt's own time: a slow first attempt must not stretch the lease the
            // holder believes it has past the one the table records.
            let confirmed = self.clock.elapsed();
            let now = self.clock.now_ms();
            let expires = now + ttl.as_millis() as u64;
            // An update, not a put: the settled mark earlier holders left stays with the item.
            let mut put = self
                .client
                .update_item()
                .table_name(&self.table)
                .key("pk", s(format!("lease#{name}")))
                .key("sk", s("lease"))
                .update_expression(
                    "SET #owner = :me, #version = :v, expires_at = :expires, #ttl = :ttl",
                )
                .condition_expression(condition)
                .expression_attribute_names("#owner", "owner")
                .expression_attribute_names("#version", "version")
                .expression_attribute_names("#ttl", "ttl")
                .expression_attribute_values(":now", AttributeValue::N(now.to_string()))
                .expression_attribute_values(":me", s(owner))
                .expression_attribute_values(":v", AttributeValue::N(version.to_string()))
                .expression_attribute_values(":expires", AttributeValue::N(expires.to_string()))
                .expression_attribute_values(
                    ":ttl",
                    AttributeValue::N((expires / 1000 + 3600).to_string()),
                )
                .return_values_on_condition_check_failure(
                    ReturnValuesOnConditionCheckFailure::AllOld,
                );
            if let Some(since) = since_ms {
                put =
                    put.expression_attribute_values(":since", AttributeValue::N(since.to_string()));
            }
            if let Some(old) = previous {
                put = put.expression_attribute_values(":old", AttributeValue::N(format!("{old}")));
            }
            match put.send().await {
                Ok(_) => {
                    return Ok(Acquired::Taken(Lease::new(
                        name, owner, version, ttl, confirmed,
                    )));
                }
                Err(e) => match e.as_service_error() {
                    Some(UpdateItemError::ConditionalCheckFailedException(c)) => {
                        let old = c.item();
                        if let Some(mark) = old.and_then(|i| number(i, "settled_ms"))
                            && since_ms.is_some_and(|since| since <= mark && mark <= now)
                        {
                            return Ok(Acquired::Settled(mark));
                        }
                        let held = old.is_some_and(|i| {
                            number(i, "expires_at").unwrap_or(0) >= now && text(i, "owner") != owner
                        });
                        match old.and_then(|i| number(i, "version")) {
                            Some(v) if !held && previous.is_none() => {
                                attempt = (
                                    v + 1,
                                    format!("{free}{unsettled} AND #version = :old"),
                                    Some(v),
                                );
                            }
                            _ => return Ok(Acquired::Held),
                        }
                    }
                    _ => return Err(from_sdk_error(PEER, "UpdateItem (lease)", e)),
                },
            }
        }
        Ok(Acquired::Held)
    }

    async fn renew_lease(&self, lease: &Lease) -> Result<bool, PortError> {
        let confirmed = self.clock.elapsed();
        let expires = self.clock.now_ms() + lease.ttl.as_millis() as u64;
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(format!("lease#{}", lease.name)))
            .key("sk", s("lease"))
            .update_expression("SET expires_at = :expires, #ttl = :ttl")
            .condition_expression("#owner = :me AND #version = :version")
            .expression_attribute_names("#owner", "owner")
            .expression_attribute_names("#version", "version")
            .expression_attribute_names("#ttl", "ttl")
            .expression_attribute_values(":expires", AttributeValue::N(expires.to_string()))
            .expression_attribute_values(
                ":ttl",
                AttributeValue::N((expires / 1000 + 3600).to_string()),
            )
            .expression_attribute_values(":me", s(&lease.owner))
            .expression_attribute_values(":version", AttributeValue::N(lease.version.to_string()))
            .send()
            .await;
        let renewed = made(result, "UpdateItem (lease renewal)")?;
        if renewed {
            lease.confirm(confirmed);
        }
        Ok(renewed)
    }

    async fn release_lease(&self, lease: &Lease) -> Result<(), PortError> {
        // The item stays (expired) so that the next acquisition's version exceeds this one.
        let mut update = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(format!("lease#{}", lease.name)))
            .key("sk", s("lease"))
            .update_expression("SET expires_at = :zero");
        if let Some(settled) = lease.settled_ms() {
            update = update
                .update_expression("SET expires_at = :zero, settled_ms = :settled")
                .expression_attribute_values(":settled", AttributeValue::N(settled.to_string()));
        }
        let result = update
            .condition_expression("#owner = :me AND #version = :version")
            .expression_attribute_names("#owner", "owner")
            .expression_attribute_names("#version", "version")
            .expression_attribute_values(":zero", AttributeValue::N("0".into()))
            .expression_attribute_values(":me", s(&lease.owner))
            .expression_attribute_values(":version", AttributeValue::N(lease.version.to_string()))
            .send()
            .await;
        made(result, "UpdateItem (lease release)").map(drop)
    }

    fn fenced(&self, lease: &Lease) -> Self {
        Self {
            fence: Some(lease.clone()),
            ..self.clone()
        }
    }

    async fn hold(&self) -> Result<(), PortError> {
        let Some(lease) = &self.fence else {
            return Ok(());
        };
        let now = self.clock.elapsed();
        if lease.surely_held(now) {
            return Ok(());
        }
        match self.renew_lease(lease).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(lease.lost(
                "it ran out and another worker took it, or it was released, while this work paused",
            )),
            Err(e) => Err(lease.lost(&format!("it could not be renewed: {e}"))),
        }
    }
}
