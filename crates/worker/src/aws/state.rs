//! The DynamoDB state table: per resource what we applied, per path a conditional claim, per
//! CUSTOM_JWT resource its manifest fields. Keys: `pk` (S) and `sk` (S).
//!
//! | item | pk | sk |
//! |---|---|---|
//! | resource | `res#<arn>` | `res` |
//! | manifest row | `res#<arn>` | `manifest` |
//! | path claim | `path#<path>` | `claim` |
//! | key pointer | `key#<kind>#<region>#<id>` | `ptr` (attribute `arn`) |
//! | lease | `lease#<name>` | `lease` (attributes `owner`, `version` and `expires_at` epoch ms, `ttl` epoch s for DynamoDB TTL) |
//! | token state | `res#<arn>` | `token` (`next_refresh_at`, `expires_at`, ..., the refresh claim; `due_shard` and `due_at` index it) |
//! | index backfill marker | `meta#token-index` | `meta` |
//!
//! The token loop never scans. Token items carry `due_shard` (S, always `tokens`) and `due_at`
//! (N, [`TokenState::look_at`]), the keys of the sparse global secondary index [`DUE_INDEX`]: no
//! other item has them, so the index holds exactly the token items, sorted by when the loop must
//! look at them, and a look is one Query (`due_at <= now + horizon`) plus a BatchGetItem of the
//! returned tokens' manifest and resource rows. A new manifest row gets a token item at once
//! (`due_at` 0, no state: due), so the loop finds it; deleting the manifest row deletes the token
//! item, and with it the index entry. One partition value is enough for the index: it holds one
//! small item per CUSTOM_JWT resource, written about once per token lifetime.
//!
//! Verified on moto 5.2.5 (what the tests run against): a GSI with a numeric sort key on a
//! PAY_PER_REQUEST table, items without the key attributes left out of it (sparse), Query with
//! `due_at <= :until` and `Limit`/`ExclusiveStartKey` pagination, REMOVE or DeleteItem taking an
//! item out of the index, `if_not_exists` in an upserting UpdateItem, BatchGetItem with
//! `ConsistentRead`. moto does not check the type of a GSI key attribute (AWS refuses an `S`
//! where the index says `N`), so the code writes `due_at` as N in one place only, and moto's GSI
//! reads are immediately consistent where AWS's are eventually consistent: the refresh claim
//! (conditioned on the `next_refresh_at` seen) is what guards against an index that lags.
//!
//! Fencing: a store made by [`StateStore::fenced`] writes `fence` (its lease's version) on the
//! resource rows, pointers, claims and manifest rows it writes, each write conditioned on the
//! item's `fence` being no newer, and deletes by leaving a tombstone (`gone`, the fence, a
//! 7-day `ttl`). Readers skip tombstones. So a worker that stalled past its lease cannot
//! overwrite or resurrect what the lease's next holder did. Unfenced writers (the rescan, the
//! operator's resync) write and delete as before, and so drop fences they write over.

use std::collections::HashMap;
use std::sync::Arc;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, GlobalSecondaryIndex, KeySchemaElement,
    KeyType, KeysAndAttributes, Projection, ProjectionType, PutRequest,
    ReturnValuesOnConditionCheckFailure, ScalarAttributeType, WriteRequest,
};
use registrar_core::desired::{Collection, Pointing};
use registrar_core::identity::{ResourceKey, ResourceKind, ResourceRef};
use registrar_core::plan::RecordedResource;
use registrar_core::ports::{Clock, DueToken, Lease};
use registrar_core::ports::{LeaseStore, ResourceStore, TokenStore};
use registrar_core::refresh::TokenState;
use registrar_core::tokens::{IdpVendor, ManifestFields};
use registrar_core::{ErrorClass, PortError};

use futures::{StreamExt, TryStreamExt};

use super::from_sdk_error;

const PEER: &str = "dynamodb";
type Item = HashMap<String, AttributeValue>;

/// The state table.
#[derive(Debug, Clone)]
pub struct DynamoState {
    client: Client,
    table: String,
    /// The lease whose version fences this store's writes, if any.
    fence: Option<Lease>,
    /// Lease versions and expiries, and when a lease was last confirmed.
    clock: Arc<dyn Clock>,
}

/// How long a tombstone outlives the deletion it records: a worker stalled longer than this
/// could write again.
const TOMBSTONE_TTL_S: u64 = 7 * 24 * 3600;

/// How a conditional put ended.
enum Put {
    Done,
    /// The condition failed; the item as it was.
    Refused(Option<Item>),
}

/// Whether a conditional write was made: `Ok(false)` when its condition refused it (an answer,
/// not an error); any other failure is classified.
fn made<T, E>(
    result: Result<
        T,
        aws_sdk_dynamodb::error::SdkError<E, aws_sdk_dynamodb::config::http::HttpResponse>,
    >,
    operation: &str,
) -> Result<bool, PortError>
where
    E: aws_sdk_dynamodb::error::ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match result {
        Ok(_) => Ok(true),
        Err(e)
            if e.as_service_error().and_then(|s| s.code())
                == Some("ConditionalCheckFailedException") =>
        {
            Ok(false)
        }
        Err(e) => Err(from_sdk_error(PEER, operation, e)),
    }
}

fn is_gone(item: &Item) -> bool {
    item.get("gone")
        .is_some_and(|v| v.as_bool().ok() == Some(&true))
}

/// The table's keys, both strings: the partition key, then the sort key (`registrar doctor`
/// checks a deployed table against this).
pub const KEY_SCHEMA: [(&str, KeyType); 2] = [("pk", KeyType::Hash), ("sk", KeyType::Range)];

/// The sparse index of token items by when the token loop must look at them (the stack's
/// `StateTable` defines it too; `registrar doctor` checks it is there).
pub const DUE_INDEX: &str = "due-tokens";
/// The index's keys: `due_shard` (S, the partition), `due_at` (N, the sort key).
pub const DUE_INDEX_KEYS: [(&str, KeyType, ScalarAttributeType); 2] = [
    (DUE_SHARD_ATTR, KeyType::Hash, ScalarAttributeType::S),
    (DUE_AT_ATTR, KeyType::Range, ScalarAttributeType::N),
];
const DUE_SHARD_ATTR: &str = "due_shard";
const DUE_AT_ATTR: &str = "due_at";
/// The one partition of the index.
const DUE_SHARD: &str = "tokens";
/// BatchGetItem takes at most 100 keys: the manifest and resource rows of 50 tokens.
const BATCH_GET_KEYS: usize = 100;
/// Records that the token items of this table were indexed (see [`DynamoState::backfill_token_index`]).
const BACKFILL_MARKER: (&str, &str) = ("meta#token-index", "meta");

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn list(values: &[String]) -> AttributeValue {
    AttributeValue::L(values.iter().map(|v| s(v.clone())).collect())
}

fn text(item: &Item, key: &str) -> String {
    item.get(key)
        .and_then(|v| v.as_s().ok())
        .cloned()
        .unwrap_or_default()
}

fn texts(item: &Item, key: &str) -> Vec<String> {
    item.get(key)
        .and_then(|v| v.as_l().ok())
        .map(|l| l.iter().filter_map(|v| v.as_s().ok().cloned()).collect())
        .unwrap_or_default()
}

fn item<const N: usize>(attributes: [(&str, AttributeValue); N]) -> Item {
    attributes
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
}

fn resource_pk(arn: &str) -> String {
    format!("res#{arn}")
}

fn pointer_pk(kind: ResourceKind, region: &str, id: &str) -> String {
    format!("key#{}#{region}#{id}", kind.as_str())
}

impl DynamoState {
    pub fn new(config: &aws_config::SdkConfig, table: impl Into<String>) -> Self {
        Self {
            client: super::clients::dynamodb(config),
            table: table.into(),
            fence: None,
            clock: Arc::new(crate::clock::SystemClock::new()),
        }
    }

    /// This store, reading time from `clock`.
    pub fn with_clock(self, clock: Arc<dyn Clock>) -> Self {
        Self { clock, ..self }
    }

    /// Puts `item`, under `condition` (with `values`) and, when fenced, the fence. The item as
    /// it was comes back when a condition refused the write.
    async fn put(
        &self,
        what: &str,
        mut item: Item,
        condition: Option<&str>,
        values: &[(&str, AttributeValue)],
    ) -> Result<Put, PortError> {
        let mut conditions: Vec<String> = condition.map(|c| format!("({c})")).into_iter().collect();
        let mut put = self.client.put_item().table_name(&self.table);
        if let Some(lease) = &self.fence {
            item.insert("fence".into(), AttributeValue::N(lease.version.to_string()));
            conditions.push("(attribute_not_exists(fence) OR fence <= :fence)".into());
            put = put.expression_attribute_values(
                ":fence",
                AttributeValue::N(lease.version.to_string()),
            );
        }
        for (k, v) in values {
            put = put.expression_attribute_values(*k, v.clone());
        }
        if !conditions.is_empty() {
            put = put
                .condition_expression(conditions.join(" AND "))
                .return_values_on_condition_check_failure(
                    ReturnValuesOnConditionCheckFailure::AllOld,
                );
        }
        match put.set_item(Some(item)).send().await {
            Ok(_) => Ok(Put::Done),
            Err(e) => match e.as_service_error() {
                Some(PutItemError::ConditionalCheckFailedException(c)) => {
                    Ok(Put::Refused(c.item().cloned()))
                }
                _ => Err(from_sdk_error(PEER, &format!("PutItem ({what})"), e)),
            },
        }
    }

    /// A fenced put that nothing but the fence can refuse.
    async fn put_fenced(&self, what: &str, item: Item) -> Result<(), PortError> {
        match self.put(what, item, None, &[]).await? {
            Put::Done => Ok(()),
            Put::Refused(old) => Err(self.overtaken(what, old.as_ref())),
        }
    }

    /// The error of a fenced write refused because `old` was written under a newer lease.
    fn overtaken(&self, what: &str, old: Option<&Item>) -> PortError {
        let theirs = old
            .and_then(|i| number(i, "fence"))
            .map_or_else(|| "?".to_owned(), |v| v.to_string());
        match &self.fence {
            Some(lease) => lease.lost(&format!(
                "the {what} was written under a newer lease, version {theirs} > ours {}",
                lease.version
            )),
            None => PortError::new(
                PEER,
                what,
                ErrorClass::Transient,
                "a conditional write was refused",
            ),
        }
    }

    /// Deletes the item; a fenced store leaves a tombstone carrying its fence instead.
    async fn delete_or_tombstone(&self, what: &str, pk: String, sk: &str) -> Result<(), PortError> {
        if self.fence.is_none() {
            return self.delete(pk, sk).await;
        }
        self.put_fenced(what, tombstone(pk, sk, self.clock.now_ms()))
            .await
    }

    /// Creates the table (on-demand billing) if it does not exist. `infra/` creates it in AWS;
    /// this serves local runs and tests.
    pub async fn ensure_table(&self) -> Result<bool, PortError> {
        let attr = |name: &str| {
            AttributeDefinition::builder()
                .attribute_name(name)
                .attribute_type(ScalarAttributeType::S)
                .build()
        };
        let key = |name: &str, kind| {
            KeySchemaElement::builder()
                .attribute_name(name)
                .key_type(kind)
                .build()
        };
        let [(pk, _), (sk, _)] = KEY_SCHEMA;
        let mut due = GlobalSecondaryIndex::builder()
            .index_name(DUE_INDEX)
            .projection(
                Projection::builder()
                    .projection_type(ProjectionType::All)
                    .build(),
            );
        let mut create = self
            .client
            .create_table()
            .table_name(&self.table)
            .billing_mode(BillingMode::PayPerRequest)
            .attribute_definitions(attr(pk).map_err(build_error)?)
            .attribute_definitions(attr(sk).map_err(build_error)?)
            .key_schema(key(pk, KeyType::Hash).map_err(build_error)?)
            .key_schema(key(sk, KeyType::Range).map_err(build_error)?);
        for (name, kind, scalar) in DUE_INDEX_KEYS {
            create = create.attribute_definitions(
                AttributeDefinition::builder()
                    .attribute_name(name)
                    .attribute_type(scalar)
                    .build()
                    .map_err(build_error)?,
            );
            due = due.key_schema(key(name, kind).map_err(build_error)?);
        }
        let result = create
            .global_secondary_indexes(due.build().map_err(build_error)?)
            .send()
            .await;
        match result {
            Ok(_) => {
                // A new table holds no token item to backfill. Best effort: a table still
                // CREATING refuses the write, and the first worker backfills (an empty scan).
                let (pk, sk) = BACKFILL_MARKER;
                let _ = self
                    .client
                    .put_item()
                    .table_name(&self.table)
                    .item("pk", s(pk))
                    .item("sk", s(sk))
                    .item("indexed", AttributeValue::N("0".into()))
                    .send()
                    .await;
                Ok(true)
            }
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_resource_in_use_exception()) =>
            {
                Ok(false)
            }
            Err(e) => Err(from_sdk_error(PEER, "CreateTable", e)),
        }
    }

    async fn scan_sk(&self, sk: &str) -> Result<Vec<Item>, PortError> {
        let mut items = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let out = self
                .client
                .scan()
                .table_name(&self.table)
                .filter_expression("sk = :sk")
                .expression_attribute_values(":sk", s(sk))
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| from_sdk_error(PEER, "Scan", e))?;
            items.extend(out.items().iter().cloned());
            match out.last_evaluated_key() {
                Some(k) if !k.is_empty() => start = Some(k.clone()),
                _ => return Ok(items),
            }
        }
    }

    async fn get(&self, pk: String, sk: &str) -> Result<Option<Item>, PortError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(pk))
            .key("sk", s(sk))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| from_sdk_error(PEER, "GetItem", e))?;
        Ok(out.item().cloned())
    }

    /// Deletes the item if its `attribute` is `holder`; an item held by someone else (or gone)
    /// is left alone.
    async fn delete_if_held(
        &self,
        pk: String,
        sk: &str,
        attribute: &str,
        holder: &str,
    ) -> Result<(), PortError> {
        let result = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key("pk", s(pk))
            .key("sk", s(sk))
            .condition_expression("#held_by = :me")
            .expression_attribute_names("#held_by", attribute)
            .expression_attribute_values(":me", s(holder))
            .send()
            .await;
        made(result, &format!("DeleteItem ({sk})")).map(drop)
    }

    async fn delete(&self, pk: String, sk: &str) -> Result<(), PortError> {
        self.client
            .delete_item()
            .table_name(&self.table)
            .key("pk", s(pk))
            .key("sk", s(sk))
            .send()
            .await
            .map_err(|e| from_sdk_error(PEER, "DeleteItem", e))?;
        Ok(())
    }

    /// Puts `arn`'s token item into the due index if it is not there yet: a new manifest row's
    /// token (no item yet) is created due at once (`due_at` 0); an item written before the
    /// index existed is indexed at its `next_refresh_at`. An item already indexed is left alone.
    async fn index_token(&self, arn: &str) -> Result<(), PortError> {
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(resource_pk(arn)))
            .key("sk", s("token"))
            .update_expression(
                "SET #shard = :shard, arn = :arn, #due = if_not_exists(next_refresh_at, :zero)",
            )
            .condition_expression("attribute_not_exists(#shard)")
            .expression_attribute_names("#shard", DUE_SHARD_ATTR)
            .expression_attribute_names("#due", DUE_AT_ATTR)
            .expression_attribute_values(":shard", s(DUE_SHARD))
            .expression_attribute_values(":arn", s(arn))
            .expression_attribute_values(":zero", AttributeValue::N("0".into()))
            .send()
            .await;
        made(result, "UpdateItem (token index)").map(drop)
    }

    /// Token items with `due_at <= until`, earliest first: (ARN, state, `due_at`).
    async fn query_due(
        &self,
        until: u64,
    ) -> Result<Vec<(String, Option<TokenState>, u64)>, PortError> {
        let mut found = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let out = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(DUE_INDEX)
                .key_condition_expression("#shard = :shard AND #due <= :until")
                .expression_attribute_names("#shard", DUE_SHARD_ATTR)
                .expression_attribute_names("#due", DUE_AT_ATTR)
                .expression_attribute_values(":shard", s(DUE_SHARD))
                .expression_attribute_values(":until", AttributeValue::N(until.to_string()))
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| from_sdk_error(PEER, "Query (tokens due)", e))?;
            for i in out.items() {
                let arn = Some(text(i, "arn"))
                    .filter(|a| !a.is_empty())
                    .unwrap_or_else(|| text(i, "pk").trim_start_matches("res#").to_owned());
                found.push((arn, token_from(i), number(i, DUE_AT_ATTR).unwrap_or(0)));
            }
            match out.last_evaluated_key() {
                Some(k) if !k.is_empty() => start = Some(k.clone()),
                _ => return Ok(found),
            }
        }
    }

    /// The items at `keys` (pk, sk), read by key in batches, consistently; missing ones are
    /// absent from the answer.
    async fn get_many(
        &self,
        keys: Vec<(String, &'static str)>,
    ) -> Result<HashMap<(String, String), Item>, PortError> {
        let mut found = HashMap::new();
        for chunk in keys.chunks(BATCH_GET_KEYS) {
            let mut pending = Some(
                KeysAndAttributes::builder()
                    .set_keys(Some(
                        chunk
                            .iter()
                            .map(|(pk, sk)| item([("pk", s(pk.clone())), ("sk", s(*sk))]))
                            .collect(),
                    ))
                    .consistent_read(true)
                    .build()
                    .map_err(build_error)?,
            );
            let mut attempt = 0u32;
            while let Some(request) = pending.take() {
                let out = self
                    .client
                    .batch_get_item()
                    .request_items(&self.table, request)
                    .send()
                    .await
                    .map_err(|e| {
                        from_sdk_error(PEER, "BatchGetItem (manifest and resource rows)", e)
                    })?;
                for i in out
                    .responses()
                    .and_then(|r| r.get(&self.table))
                    .into_iter()
                    .flatten()
                {
                    found.insert((text(i, "pk"), text(i, "sk")), i.clone());
                }
                pending = out
                    .unprocessed_keys()
                    .and_then(|u| u.get(&self.table))
                    .filter(|k| !k.keys().is_empty())
                    .cloned();
                if pending.is_some() {
                    attempt += 1;
                    if attempt > 4 {
                        return Err(PortError::new(
                            PEER,
                            "BatchGetItem (manifest and resource rows)",
                            ErrorClass::Transient,
                            "keys left unprocessed after 4 attempts",
                        ));
                    }
                    // DynamoDB hands back what it throttled: ask for those again shortly.
                    tokio::time::sleep(std::time::Duration::from_millis(50 << attempt)).await;
                }
            }
        }
        Ok(found)
    }

    /// Takes the token item of a resource whose manifest row is gone out of the index (it was
    /// written after the row was deleted), unless it changed since it was seen; then, should a
    /// manifest row have been written meanwhile, indexes its token again.
    async fn drop_orphan(&self, arn: &str, due_at: u64) -> Result<(), PortError> {
        let result = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key("pk", s(resource_pk(arn)))
            .key("sk", s("token"))
            .condition_expression("#due = :seen")
            .expression_attribute_names("#due", DUE_AT_ATTR)
            .expression_attribute_values(":seen", AttributeValue::N(due_at.to_string()))
            .send()
            .await;
        if !made(result, "DeleteItem (orphan token)")? {
            return Ok(());
        }
        if self.manifest(arn).await?.is_some() {
            self.index_token(arn).await?;
        }
        Ok(())
    }

    /// Indexes the token items written before the due index existed, once per table: the first
    /// worker to start after the upgrade scans the manifest and token items (one read of the
    /// table), indexes every token item that lacks the index keys and gives every manifest row
    /// without a token item one (due at once), then writes a marker; later starts read only the
    /// marker. `Ok(None)` when the marker was already there, else how many items it indexed.
    /// Idempotent: replicas that start together may both do it.
    pub async fn backfill_token_index(&self) -> Result<Option<usize>, PortError> {
        let (marker_pk, marker_sk) = BACKFILL_MARKER;
        if self.get(marker_pk.to_owned(), marker_sk).await?.is_some() {
            return Ok(None);
        }
        let mut manifests = std::collections::BTreeSet::new();
        let mut tokens: HashMap<String, bool> = HashMap::new();
        let mut start: Option<Item> = None;
        loop {
            let out = self
                .client
                .scan()
                .table_name(&self.table)
                .filter_expression("sk IN (:manifest, :token)")
                .projection_expression("pk, sk, gone, #shard")
                .expression_attribute_names("#shard", DUE_SHARD_ATTR)
                .expression_attribute_values(":manifest", s("manifest"))
                .expression_attribute_values(":token", s("token"))
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| from_sdk_error(PEER, "Scan (token index backfill)", e))?;
            for i in out.items() {
                let arn = text(i, "pk").trim_start_matches("res#").to_owned();
                match text(i, "sk").as_str() {
                    "manifest" if !is_gone(i) => {
                        manifests.insert(arn);
                    }
                    "token" => {
                        tokens.insert(arn, i.contains_key(DUE_SHARD_ATTR));
                    }
                    _ => {}
                }
            }
            match out.last_evaluated_key() {
                Some(k) if !k.is_empty() => start = Some(k.clone()),
                _ => break,
            }
        }
        // Token items without a manifest row are left out of the index: nothing reads them.
        let missing: Vec<&String> = manifests
            .iter()
            .filter(|arn| tokens.get(*arn) != Some(&true))
            .collect();
        let indexed = missing.len();
        futures::stream::iter(missing)
            .map(|arn| self.index_token(arn))
            .buffer_unordered(8)
            .try_collect::<Vec<()>>()
            .await?;
        self.client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(marker_pk))
            .item("sk", s(marker_sk))
            .item("indexed", AttributeValue::N(indexed.to_string()))
            .item("at", AttributeValue::N(self.clock.now_s().to_string()))
            .send()
            .await
            .map_err(|e| from_sdk_error(PEER, "PutItem (token index marker)", e))?;
        Ok(Some(indexed))
    }
}

fn build_error(e: aws_sdk_dynamodb::error::BuildError) -> PortError {
    PortError::new(
        PEER,
        "build request",
        registrar_core::ErrorClass::Terminal,
        e.to_string(),
    )
}

fn recorded_from(item: &Item) -> Option<RecordedResource> {
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

fn tombstone(pk: String, sk: &str, now_ms: u64) -> Item {
    item([
        ("pk", s(pk)),
        ("sk", s(sk)),
        ("gone", AttributeValue::Bool(true)),
        (
            "ttl",
            AttributeValue::N((now_ms / 1000 + TOMBSTONE_TTL_S).to_string()),
        ),
    ])
}

fn manifest_from(i: &Item) -> ManifestFields {
    ManifestFields {
        path: text(i, "path"),
        arn: text(i, "arn"),
        url: text(i, "url"),
        discovery_url: text(i, "discovery_url"),
        allowed_clients: texts(i, "allowed_clients"),
        allowed_audience: texts(i, "allowed_audience"),
        allowed_scopes: texts(i, "allowed_scopes"),
        idp_vendor: IdpVendor::detect(&text(i, "discovery_url")),
    }
}

/// The token state of a token item; `None` before a state was recorded (a new manifest row's
/// item, or one holding only a refresh claim).
fn token_from(i: &Item) -> Option<TokenState> {
    Some(TokenState {
        expires_at: number(i, "expires_at"),
        next_refresh_at: number(i, "next_refresh_at")?,
        last_result: text(i, "last_result"),
        failures: number(i, "failures").unwrap_or(0) as u32,
        client_id: Some(text(i, "client_id")).filter(|c| !c.is_empty()),
        refreshed_at: number(i, "refreshed_at"),
    })
}

fn number(item: &Item, key: &str) -> Option<u64> {
    item.get(key)
        .and_then(|v| v.as_n().ok())
        .and_then(|n| n.parse().ok())
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

impl TokenStore for DynamoState {
    async fn manifest(&self, arn: &str) -> Result<Option<ManifestFields>, PortError> {
        Ok(self
            .get(resource_pk(arn), "manifest")
            .await?
            .filter(|i| !is_gone(i))
            .as_ref()
            .map(manifest_from))
    }

    async fn put_manifest(&self, row: &ManifestFields) -> Result<(), PortError> {
        let manifest = item([
            ("pk", s(resource_pk(&row.arn))),
            ("sk", s("manifest")),
            ("arn", s(&row.arn)),
            ("path", s(&row.path)),
            ("url", s(&row.url)),
            ("discovery_url", s(&row.discovery_url)),
            ("allowed_clients", list(&row.allowed_clients)),
            ("allowed_audience", list(&row.allowed_audience)),
            ("allowed_scopes", list(&row.allowed_scopes)),
            ("idp_vendor", s(row.idp_vendor.as_str())),
        ]);
        self.put_fenced("manifest row", manifest).await?;
        // After the row: a token item indexed before its row would be dropped as an orphan.
        self.index_token(&row.arn).await
    }

    async fn delete_manifest(&self, arn: &str) -> Result<(), PortError> {
        // The fenced part first: a stale holder must not get to delete the token state.
        self.delete_or_tombstone("manifest row", resource_pk(arn), "manifest")
            .await?;
        self.delete(resource_pk(arn), "token").await
    }

    async fn manifests(&self) -> Result<Vec<ManifestFields>, PortError> {
        Ok(self
            .scan_sk("manifest")
            .await?
            .iter()
            .filter(|i| !is_gone(i))
            .map(manifest_from)
            .collect())
    }

    async fn record_token(&self, arn: &str, t: &TokenState) -> Result<(), PortError> {
        let mut put = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(resource_pk(arn)))
            .item("sk", s("token"))
            .item("arn", s(arn))
            .item(DUE_SHARD_ATTR, s(DUE_SHARD))
            .item(DUE_AT_ATTR, AttributeValue::N(t.look_at().to_string()))
            .item(
                "next_refresh_at",
                AttributeValue::N(t.next_refresh_at.to_string()),
            )
            .item("last_result", s(&t.last_result))
            .item("failures", AttributeValue::N(t.failures.to_string()));
        if let Some(e) = t.expires_at {
            put = put.item("expires_at", AttributeValue::N(e.to_string()));
        }
        if let Some(c) = &t.client_id {
            put = put.item("client_id", s(c));
        }
        if let Some(r) = t.refreshed_at {
            put = put.item("refreshed_at", AttributeValue::N(r.to_string()));
        }
        put.send()
            .await
            .map_err(|e| from_sdk_error(PEER, "PutItem (token)", e))?;
        Ok(())
    }

    async fn due_tokens(&self, until: u64) -> Result<Vec<DueToken>, PortError> {
        let found = self.query_due(until).await?;
        let keys = found
            .iter()
            .flat_map(|(arn, _, _)| [(resource_pk(arn), "manifest"), (resource_pk(arn), "res")])
            .collect();
        let rows = self.get_many(keys).await?;
        let mut due = Vec::with_capacity(found.len());
        for (arn, token, due_at) in found {
            let pk = resource_pk(&arn);
            let Some(manifest) = rows
                .get(&(pk.clone(), "manifest".to_owned()))
                .filter(|i| !is_gone(i))
            else {
                if let Err(e) = self.drop_orphan(&arn, due_at).await {
                    tracing::warn!(arn, error = %e, "A token item without a manifest row could not be dropped from the index.");
                }
                continue;
            };
            due.push(DueToken {
                manifest: manifest_from(manifest),
                resource: rows.get(&(pk, "res".to_owned())).and_then(recorded_from),
                token,
            });
        }
        Ok(due)
    }

    async fn claim_refresh(
        &self,
        arn: &str,
        seen: Option<u64>,
        owner: &str,
        now: u64,
        until: u64,
    ) -> Result<bool, PortError> {
        let due = match seen {
            Some(_) => "next_refresh_at = :seen",
            None => "attribute_not_exists(next_refresh_at)",
        };
        let mut update = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(resource_pk(arn)))
            .key("sk", s("token"))
            .update_expression("SET claim_owner = :me, claim_until = :until, arn = :arn")
            .condition_expression(format!(
                "({due}) AND (attribute_not_exists(claim_until) OR claim_until < :now)"
            ))
            .expression_attribute_values(":me", s(owner))
            .expression_attribute_values(":until", AttributeValue::N(until.to_string()))
            .expression_attribute_values(":arn", s(arn))
            .expression_attribute_values(":now", AttributeValue::N(now.to_string()));
        if let Some(seen) = seen {
            update =
                update.expression_attribute_values(":seen", AttributeValue::N(seen.to_string()));
        }
        made(update.send().await, "UpdateItem (refresh claim)")
    }
}

impl LeaseStore for DynamoState {
    async fn acquire_lease(
        &self,
        name: &str,
        owner: &str,
        ttl: std::time::Duration,
    ) -> Result<Option<Lease>, PortError> {
        // The version is the acquisition's time; a clock behind the last holder's version
        // takes that version plus one instead (a second, conditional attempt), so versions
        // only grow whatever the clocks say.
        let free = "(attribute_not_exists(pk) OR expires_at < :now OR #owner = :me)";
        let mut attempt = (
            self.clock.now_ms(),
            format!("{free} AND (attribute_not_exists(#version) OR #version < :v)"),
            None,
        );
        for _ in 0..2 {
            let (version, condition, previous) = attempt.clone();
            // Each attempt's own time: a slow first attempt must not stretch the lease the
            // holder believes it has past the one the table records.
            let confirmed = self.clock.elapsed();
            let now = self.clock.now_ms();
            let expires = now + ttl.as_millis() as u64;
            let mut put = self
                .client
                .put_item()
                .table_name(&self.table)
                .item("pk", s(format!("lease#{name}")))
                .item("sk", s("lease"))
                .item("owner", s(owner))
                .item("version", AttributeValue::N(version.to_string()))
                .item("expires_at", AttributeValue::N(expires.to_string()))
                .item(
                    "ttl",
                    AttributeValue::N((expires / 1000 + 3600).to_string()),
                )
                .condition_expression(condition)
                .expression_attribute_names("#owner", "owner")
                .expression_attribute_names("#version", "version")
                .expression_attribute_values(":now", AttributeValue::N(now.to_string()))
                .expression_attribute_values(":me", s(owner))
                .expression_attribute_values(":v", AttributeValue::N(version.to_string()))
                .return_values_on_condition_check_failure(
                    ReturnValuesOnConditionCheckFailure::AllOld,
                );
            if let Some(old) = previous {
                put = put.expression_attribute_values(":old", AttributeValue::N(format!("{old}")));
            }
            match put.send().await {
                Ok(_) => return Ok(Some(Lease::new(name, owner, version, ttl, confirmed))),
                Err(e) => match e.as_service_error() {
                    Some(PutItemError::ConditionalCheckFailedException(c)) => {
                        let old = c.item();
                        let held = old.is_some_and(|i| {
                            number(i, "expires_at").unwrap_or(0) >= now && text(i, "owner") != owner
                        });
                        match old.and_then(|i| number(i, "version")) {
                            Some(v) if !held && previous.is_none() => {
                                attempt = (v + 1, format!("{free} AND #version = :old"), Some(v));
                            }
                            _ => return Ok(None),
                        }
                    }
                    _ => return Err(from_sdk_error(PEER, "PutItem (lease)", e)),
                },
            }
        }
        Ok(None)
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
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(format!("lease#{}", lease.name)))
            .key("sk", s("lease"))
            .update_expression("SET expires_at = :zero")
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
