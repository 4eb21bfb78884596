//! The ResourceStore on the state table: resource rows, the key pointers that find them, and
//! path claims.

use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{
    AttributeValue, PutRequest, ReturnValuesOnConditionCheckFailure, WriteRequest,
};
use registrar_core::desired::{Collection, Pointing};
use registrar_core::identity::{ResourceKey, ResourceKind, ResourceRef};
use registrar_core::plan::RecordedResource;
use registrar_core::ports::ResourceStore;
use registrar_core::{ErrorClass, PortError};

use super::{
    DynamoState, Item, PEER, Put, build_error, from_sdk_error, is_gone, item, resource_pk, s, text,
    tombstone,
};

fn pointer_pk(kind: ResourceKind, region: &str, id: &str) -> String {
    format!("key#{}#{region}#{id}", kind.as_str())
}

pub(super) fn recorded_from(item: &Item) -> Option<RecordedResource> {
    if is_gone(item) {
        return None;
    }
    let kind = ResourceKind::parse(&text(item, "kind"))?;
    let collection = match text(item, "collection").as_str() {
        "server" => Collection::Server,
        "agent" => Collection::Agent,
        _ => return None,
    };
    let gateway_id = Some(text(item, "gateway_id")).filter(|g| !g.is_empty());
    Some(RecordedResource {
        resource: ResourceRef {
            kind,
            arn: text(item, "arn"),
            account: text(item, "account"),
            region: text(item, "region"),
            id: text(item, "id"),
            gateway_id,
        },
        collection,
        path: text(item, "path"),
        fingerprint: text(item, "fingerprint"),
        aws_updated_at: text(item, "aws_updated_at"),
        enabled_set: item
            .get("enabled_set")
            .and_then(|v| v.as_bool().ok())
            .copied()
            .unwrap_or(false),
        name: text(item, "name"),
        auth_label: text(item, "auth_label"),
        pointing: Some(text(item, "url"))
            .filter(|u| !u.is_empty())
            .map(|url| {
                let scheme = Some(text(item, "auth_scheme")).filter(|a| !a.is_empty());
                Pointing::new(&url, scheme.as_deref())
            }),
    })
}

impl ResourceStore for DynamoState {
    async fn resources(&self) -> Result<Vec<RecordedResource>, PortError> {
        Ok(self
            .scan_sk("res")
            .await?
            .iter()
            .filter_map(recorded_from)
            .collect())
    }

    async fn record(&self, r: &RecordedResource) -> Result<(), PortError> {
        let res = &r.resource;
        let mut row = item([
            ("pk", s(resource_pk(&res.arn))),
            ("sk", s("res")),
            ("kind", s(res.kind.as_str())),
            ("arn", s(&res.arn)),
            ("account", s(&res.account)),
            ("region", s(&res.region)),
            ("id", s(&res.id)),
            ("collection", s(r.collection.as_str())),
            ("path", s(&r.path)),
            ("fingerprint", s(&r.fingerprint)),
            ("aws_updated_at", s(&r.aws_updated_at)),
            ("enabled_set", AttributeValue::Bool(r.enabled_set)),
            ("name", s(&r.name)),
            ("auth_label", s(&r.auth_label)),
        ]);
        if let Some(g) = &res.gateway_id {
            row.insert("gateway_id".into(), s(g));
        }
        if let Some(p) = &r.pointing {
            row.insert("url".into(), s(&p.url));
            if let Some(scheme) = &p.auth_scheme {
                row.insert("auth_scheme".into(), s(scheme));
            }
        }
        let pointer = item([
            ("pk", s(pointer_pk(res.kind, &res.region, &res.id))),
            ("sk", s("ptr")),
            ("arn", s(&res.arn)),
        ]);
        if self.fence.is_some() {
            // A batch cannot carry conditions: under a lease, two conditional puts.
            self.put_fenced("resource row", row).await?;
            return self.put_fenced("key pointer", pointer).await;
        }
        // Both in one call. Not a transaction: moto answers concurrent TransactWriteItems with
        // HTTP 500, and a pointer without its row (or the reverse) is harmless: lookups follow
        // the pointer to the row, and the next write repairs both.
        let mut pending: Vec<WriteRequest> = [row, pointer]
            .into_iter()
            .map(|item| {
                PutRequest::builder()
                    .set_item(Some(item))
                    .build()
                    .map(|put| WriteRequest::builder().put_request(put).build())
                    .map_err(build_error)
            })
            .collect::<Result<_, _>>()?;
        for attempt in 1..=4u32 {
            let out = self
                .client
                .batch_write_item()
                .request_items(&self.table, pending)
                .send()
                .await
                .map_err(|e| {
                    from_sdk_error(PEER, "BatchWriteItem (resource and key pointer)", e)
                })?;
            pending = out
                .unprocessed_items()
                .and_then(|u| u.get(&self.table))
                .cloned()
                .unwrap_or_default();
            if pending.is_empty() {
                return Ok(());
            }
            // DynamoDB hands back what it throttled: try those again shortly.
            tokio::time::sleep(std::time::Duration::from_millis(50 << attempt)).await;
        }
        Err(PortError::new(
            PEER,
            "BatchWriteItem (resource and key pointer)",
            ErrorClass::Transient,
            format!(
                "{} item(s) left unprocessed after 4 attempts",
                pending.len()
            ),
        ))
    }

    async fn forget(&self, arn: &str) -> Result<(), PortError> {
        if let Some(row) = self
            .get(resource_pk(arn), "res")
            .await?
            .as_ref()
            .and_then(recorded_from)
        {
            let r = &row.resource;
            self.delete_or_tombstone("key pointer", pointer_pk(r.kind, &r.region, &r.id), "ptr")
                .await?;
        }
        self.delete_or_tombstone("resource row", resource_pk(arn), "res")
            .await
    }

    async fn lookup(&self, key: &ResourceKey) -> Result<Option<RecordedResource>, PortError> {
        let Some(ptr) = self
            .get(pointer_pk(key.kind, &key.region, &key.id), "ptr")
            .await?
            .filter(|p| !is_gone(p))
        else {
            return Ok(None);
        };
        let arn = text(&ptr, "arn");
        Ok(self
            .get(resource_pk(&arn), "res")
            .await?
            .as_ref()
            .and_then(recorded_from))
    }

    async fn claim_path(&self, path: &str, arn: &str) -> Result<Option<String>, PortError> {
        let claim = item([
            ("pk", s(format!("path#{path}"))),
            ("sk", s("claim")),
            ("holder", s(arn)),
        ]);
        match self
            .put(
                "path claim",
                claim,
                Some("attribute_not_exists(holder) OR holder = :me"),
                &[(":me", s(arn))],
            )
            .await?
        {
            Put::Done => Ok(None),
            Put::Refused(old) => {
                let holder = old.as_ref().map(|i| text(i, "holder"));
                match holder {
                    Some(h) if !h.is_empty() && h != arn => Ok(Some(h)),
                    None if self.fence.is_none() => Ok(Some("another resource".into())),
                    _ => Err(self.overtaken("path claim", old.as_ref())),
                }
            }
        }
    }

    async fn release_path(&self, path: &str, arn: &str) -> Result<(), PortError> {
        if self.fence.is_none() {
            return self
                .delete_if_held(format!("path#{path}"), "claim", "holder", arn)
                .await;
        }
        let pk = format!("path#{path}");
        match self
            .put(
                "path claim",
                tombstone(pk, "claim", self.clock.now_ms()),
                Some("holder = :me"),
                &[(":me", s(arn))],
            )
            .await?
        {
            Put::Done => Ok(()),
            // Held by another resource (or already released): not ours to release.
            Put::Refused(old) if old.as_ref().is_none_or(|i| text(i, "holder") != arn) => Ok(()),
            Put::Refused(old) => Err(self.overtaken("path claim", old.as_ref())),
        }
    }

    async fn mark_enabled(&self, arn: &str) -> Result<(), PortError> {
        let mut update = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(resource_pk(arn)))
            .key("sk", s("res"))
            .expression_attribute_values(":t", AttributeValue::Bool(true))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        let live = "attribute_exists(pk) AND attribute_not_exists(gone)";
        update = match &self.fence {
            Some(lease) => update
                .update_expression("SET enabled_set = :t, fence = :fence")
                .condition_expression(format!(
                    "{live} AND (attribute_not_exists(fence) OR fence <= :fence)"
                ))
                .expression_attribute_values(
                    ":fence",
                    AttributeValue::N(lease.version.to_string()),
                ),
            None => update
                .update_expression("SET enabled_set = :t")
                .condition_expression(live),
        };
        match update.send().await {
            Ok(_) => Ok(()),
            Err(e) => match e.as_service_error() {
                Some(UpdateItemError::ConditionalCheckFailedException(c))
                    if self.fence.is_some() && c.item().is_some_and(|i| !is_gone(i)) =>
                {
                    Err(self.overtaken("resource row", c.item()))
                }
                _ => Err(from_sdk_error(PEER, "UpdateItem (enabled)", e)),
            },
        }
    }
}
