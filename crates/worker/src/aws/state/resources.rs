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
use registrar_core::tokens::ManifestFields;
use registrar_core::{ErrorClass, PortError};

use futures::{StreamExt, TryStreamExt};

use super::tokens::manifest_from;
use super::{
    DynamoState, Item, PEER, Put, build_error, from_sdk_error, is_gone, item, made, resource_pk, s,
    text, tombstone,
};

fn pointer_pk(kind: ResourceKind, region: &str, id: &str) -> String {
    format!("key#{}#{region}#{id}", kind.as_str())
}

/// The sort key of a target's pointer under its gateway's key (`pk` the gateway's
/// [`pointer_pk`]): one Query of the gateway's key finds its targets.
const TARGET_POINTER_PREFIX: &str = "target#";

/// The key of a target's pointer under its gateway's key; `None` for other resources.
fn target_pointer_key(r: &ResourceRef) -> Option<(String, String)> {
    let gateway_id = r.gateway_id.as_deref().filter(|g| !g.is_empty())?;
    (r.kind == ResourceKind::Target).then(|| {
        (
            pointer_pk(ResourceKind::Gateway, &r.region, gateway_id),
            format!("{TARGET_POINTER_PREFIX}{}", r.id),
        )
    })
}

/// Marks a table whose target records all have their pointer under their gateway's key (see
/// [`DynamoState::backfill_target_pointers`]).
pub(super) const TARGET_POINTERS_MARKER: (&str, &str) = ("meta#target-pointers", "meta");

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

/// A resource's row, its key pointer and, for a target, its pointer under its gateway.
fn record_items(r: &RecordedResource) -> (Item, Item, Option<Item>) {
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
    let under_gateway = target_pointer_key(res)
        .map(|(pk, sk)| item([("pk", s(pk)), ("sk", s(sk)), ("arn", s(&res.arn))]));
    (row, pointer, under_gateway)
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
        let (row, pointer, under_gateway) = record_items(r);
        if self.fence.is_some() {
            // A batch cannot carry conditions: under a lease, conditional puts one by one.
            self.put_fenced("resource row", row).await?;
            self.put_fenced("key pointer", pointer).await?;
            if let Some(p) = under_gateway {
                self.put_fenced("target pointer", p).await?;
            }
            return Ok(());
        }
        // All in one call. Not a transaction: moto answers concurrent TransactWriteItems with
        // HTTP 500, and a pointer without its row (or the reverse) is harmless: lookups follow
        // the pointer to the row, and the next write repairs both.
        let mut pending: Vec<WriteRequest> = [Some(row), Some(pointer), under_gateway]
            .into_iter()
            .flatten()
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
                    from_sdk_error(PEER, "BatchWriteItem (resource and key pointers)", e)
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
            "BatchWriteItem (resource and key pointers)",
            ErrorClass::Transient,
            format!(
                "{} item(s) left unprocessed after 4 attempts",
                pending.len()
            ),
        ))
    }

    async fn record_since(
        &self,
        r: &RecordedResource,
        seen: Option<bool>,
    ) -> Result<bool, PortError> {
        let (mut row, pointer, under_gateway) = record_items(r);
        let (mut seen, mut enabled_set) = (seen, r.enabled_set);
        // A few rounds: each refusal reads the row as it is now, and the next write is
        // conditional on that, so no write lands on a row it has not seen.
        let mut rounds = 0;
        loop {
            rounds += 1;
            row.insert("enabled_set".into(), AttributeValue::Bool(enabled_set));
            let condition = match seen {
                None => "attribute_not_exists(pk) OR gone = :t",
                Some(true) => {
                    "attribute_exists(pk) AND attribute_not_exists(gone) AND enabled_set = :t"
                }
                Some(false) => {
                    "attribute_exists(pk) AND attribute_not_exists(gone) AND (attribute_not_exists(enabled_set) OR enabled_set = :f)"
                }
            };
            // Only the values the condition names: DynamoDB refuses unused ones.
            let value = match seen {
                None | Some(true) => (":t", AttributeValue::Bool(true)),
                Some(false) => (":f", AttributeValue::Bool(false)),
            };
            match self
                .put("resource row", row.clone(), Some(condition), &[value])
                .await?
            {
                Put::Done => break,
                Put::Refused(old)
                    if old
                        .as_ref()
                        .is_some_and(|o| self.written_under_newer_lease(o)) =>
                {
                    return Err(self.overtaken("resource row", old.as_ref()));
                }
                Put::Refused(_) if rounds == 3 => {
                    return Err(PortError::new(
                        PEER,
                        format!("resource row {}", r.resource.arn),
                        ErrorClass::Transient,
                        "the row kept changing under three conditional writes",
                    ));
                }
                Put::Refused(old) => {
                    // Changed since the snapshot: what is stored now is the newer fact.
                    let Some(stored) = old.filter(|o| !is_gone(o)).map(|o| {
                        o.get("enabled_set")
                            .is_some_and(|v| v.as_bool().ok() == Some(&true))
                    }) else {
                        // Forgotten since (deregistered): not brought back.
                        return Ok(enabled_set);
                    };
                    enabled_set = stored;
                    seen = Some(stored);
                }
            }
        }
        self.put_fenced("key pointer", pointer).await?;
        if let Some(p) = under_gateway {
            self.put_fenced("target pointer", p).await?;
        }
        Ok(enabled_set)
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
            if let Some((pk, sk)) = target_pointer_key(r) {
                self.delete_or_tombstone("target pointer", pk, &sk).await?;
            }
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

    /// The pointer, then one Query of the record's partition: its row, its manifest row and
    /// its token row (a handful of items) in one call.
    async fn lookup_with_manifest(
        &self,
        key: &ResourceKey,
    ) -> Result<(Option<RecordedResource>, Option<ManifestFields>), PortError> {
        let Some(ptr) = self
            .get(pointer_pk(key.kind, &key.region, &key.id), "ptr")
            .await?
            .filter(|p| !is_gone(p))
        else {
            return Ok((None, None));
        };
        let pk = resource_pk(&text(&ptr, "arn"));
        let items = self
            .query_all("Query (a resource's items)", |q| {
                q.key_condition_expression("pk = :pk")
                    .expression_attribute_values(":pk", s(&pk))
                    .consistent_read(true)
            })
            .await?;
        let of = |sk: &str| items.iter().find(|i| text(i, "sk") == sk && !is_gone(i));
        let Some(recorded) = of("res").and_then(recorded_from) else {
            return Ok((None, None));
        };
        Ok((Some(recorded), of("manifest").map(manifest_from)))
    }

    /// One Query of the gateway's key for the pointers its targets' records keep there (the
    /// gateway's own pointer is not among them), then each target's row by key. Records written
    /// before these pointers existed are found once [`DynamoState::backfill_target_pointers`]
    /// has run.
    async fn targets_of(&self, gateway: &ResourceKey) -> Result<Vec<RecordedResource>, PortError> {
        let pk = pointer_pk(ResourceKind::Gateway, &gateway.region, &gateway.id);
        let arns: Vec<String> = self
            .query_all("Query (a gateway's targets)", |q| {
                q.key_condition_expression("pk = :pk AND begins_with(sk, :targets)")
                    .expression_attribute_values(":pk", s(&pk))
                    .expression_attribute_values(":targets", s(TARGET_POINTER_PREFIX))
                    .consistent_read(true)
            })
            .await?
            .iter()
            .filter(|i| !is_gone(i))
            .map(|i| text(i, "arn"))
            .filter(|a| !a.is_empty())
            .collect();
        let rows: Vec<Option<Item>> = futures::stream::iter(arns)
            .map(|arn| self.get(resource_pk(&arn), "res"))
            .buffered(8)
            .try_collect()
            .await?;
        Ok(rows
            .iter()
            .flatten()
            .filter_map(recorded_from)
            .filter(|r| {
                r.resource.kind == ResourceKind::Target
                    && r.resource.region == gateway.region
                    && r.resource.gateway_id.as_deref() == Some(gateway.id.as_str())
            })
            .collect())
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
        if self.set_enabled_flag(arn, true, false).await? {
            return Ok(());
        }
        Err(PortError::new(
            PEER,
            format!("resource row {arn}"),
            ErrorClass::Transient,
            "no live row to mark enabled",
        ))
    }

    async fn claim_enable(&self, arn: &str) -> Result<bool, PortError> {
        self.set_enabled_flag(arn, true, true).await
    }

    async fn owe_enable_again(&self, arn: &str) -> Result<(), PortError> {
        self.set_enabled_flag(arn, false, true).await.map(|_| ())
    }
}

impl DynamoState {
    /// Sets the live row's `enabled_set` to `to` (with `only_if_changed`, only where it is not
    /// `to` already; absent counts as false): whether it was written. A row written under a
    /// newer lease is a lost lease; a missing or gone row (or one already so) is `false`.
    async fn set_enabled_flag(
        &self,
        arn: &str,
        to: bool,
        only_if_changed: bool,
    ) -> Result<bool, PortError> {
        let mut live = "attribute_exists(pk) AND attribute_not_exists(gone)".to_owned();
        let mut update = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(resource_pk(arn)))
            .key("sk", s("res"))
            .expression_attribute_values(":to", AttributeValue::Bool(to))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        if only_if_changed {
            live.push_str(if to {
                " AND (attribute_not_exists(enabled_set) OR enabled_set = :from)"
            } else {
                " AND enabled_set = :from"
            });
            update = update.expression_attribute_values(":from", AttributeValue::Bool(!to));
        }
        update = match &self.fence {
            Some(lease) => update
                .update_expression("SET enabled_set = :to, fence = :fence")
                .condition_expression(format!(
                    "{live} AND (attribute_not_exists(fence) OR fence <= :fence)"
                ))
                .expression_attribute_values(
                    ":fence",
                    AttributeValue::N(lease.version.to_string()),
                ),
            None => update
                .update_expression("SET enabled_set = :to")
                .condition_expression(live),
        };
        match update.send().await {
            Ok(_) => Ok(true),
            Err(e) => match e.as_service_error() {
                Some(UpdateItemError::ConditionalCheckFailedException(c))
                    if c.item().is_some_and(|i| self.written_under_newer_lease(i)) =>
                {
                    Err(self.overtaken("resource row", c.item()))
                }
                // Gone, or already so.
                Some(UpdateItemError::ConditionalCheckFailedException(_)) => Ok(false),
                _ => Err(from_sdk_error(PEER, "UpdateItem (enabled)", e)),
            },
        }
    }
}

impl DynamoState {
    /// Gives every target record written before targets kept a pointer under their gateway's
    /// key that pointer, once per table: the first worker to start after the upgrade scans the
    /// resource rows (one read of the table), writes the missing pointers (never over an item
    /// there, a tombstone included), then a marker; later starts read only the marker (a new
    /// table gets it at once). `Ok(None)` when the marker was already there, else how many
    /// pointers it wrote. Idempotent: replicas that start together may both do it.
    pub async fn backfill_target_pointers(&self) -> Result<Option<usize>, PortError> {
        if self.upgraded(TARGET_POINTERS_MARKER).await? {
            return Ok(None);
        }
        let mut targets = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let out = self
                .client
                .scan()
                .table_name(&self.table)
                .filter_expression("sk = :res AND #kind = :target")
                .expression_attribute_names("#kind", "kind")
                .expression_attribute_values(":res", s("res"))
                .expression_attribute_values(":target", s(ResourceKind::Target.as_str()))
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| from_sdk_error(PEER, "Scan (target pointer backfill)", e))?;
            targets.extend(out.items().iter().filter_map(recorded_from));
            match out.last_evaluated_key() {
                Some(k) if !k.is_empty() => start = Some(k.clone()),
                _ => break,
            }
        }
        let mut written = 0;
        for r in &targets {
            let Some((pk, sk)) = target_pointer_key(&r.resource) else {
                continue;
            };
            let result = self
                .client
                .put_item()
                .table_name(&self.table)
                .item("pk", s(pk))
                .item("sk", s(sk))
                .item("arn", s(&r.resource.arn))
                .condition_expression("attribute_not_exists(pk)")
                .send()
                .await;
            if made(result, "PutItem (target pointer)")? {
                written += 1;
            }
        }
        self.mark_upgraded(TARGET_POINTERS_MARKER, written).await?;
        Ok(Some(written))
    }
}
