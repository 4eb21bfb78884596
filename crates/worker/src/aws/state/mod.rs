//! The DynamoDB state table and what all its parts share: the store and its construction, the
//! table's creation, the item keys and attribute helpers, conditional writes (`made`) and
//! fencing. Each port is implemented in its own file: `resources.rs` (ResourceStore),
//! `tokens.rs` (TokenStore), `leases.rs` (LeaseStore).
//!
//! Per resource what we applied, per path a conditional claim, per CUSTOM_JWT resource its
//! manifest fields. Keys: `pk` (S) and `sk` (S).
//!
//! | item | pk | sk |
//! |---|---|---|
//! | resource | `res#<arn>` | `res` |
//! | manifest row | `res#<arn>` | `manifest` |
//! | path claim | `path#<path>` | `claim` |
//! | key pointer | `key#<kind>#<region>#<id>` | `ptr` (attribute `arn`) |
//! | target pointer, under its gateway's key | `key#gateway#<region>#<gatewayId>` | `target#<targetId>` (attribute `arn`) |
//! | lease | `lease#<name>` | `lease` (attributes `owner`, `version` and `expires_at` epoch ms, `ttl` epoch s for DynamoDB TTL) |
//! | token state | `res#<arn>` | `token` (`next_refresh_at`, `expires_at`, ..., the refresh claim; `due_shard` and `due_at` index it) |
//! | index backfill marker | `meta#token-index` | `meta` |
//! | target pointer backfill marker | `meta#target-pointers` | `meta` |
//!
//! Token items are also keyed by the sparse index [`DUE_INDEX`]; `tokens.rs` says how the token
//! loop reads it. A gateway's targets are found by one Query of the gateway's key pointer
//! partition (`resources.rs`, for the cascade of a deleted gateway).
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
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, GlobalSecondaryIndex, KeySchemaElement,
    KeyType, Projection, ProjectionType, ReturnValuesOnConditionCheckFailure, ScalarAttributeType,
};
use registrar_core::ports::{Clock, Lease};
use registrar_core::{ErrorClass, PortError};

use super::from_sdk_error;
use aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder;

mod leases;
mod resources;
mod tokens;

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

    /// Whether `old` was written under a newer lease than this store's fence.
    fn written_under_newer_lease(&self, old: &Item) -> bool {
        self.fence
            .as_ref()
            .zip(number(old, "fence"))
            .is_some_and(|(lease, theirs)| theirs > lease.version)
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
                // A new table holds no token item or target record to backfill. Best effort: a
                // table still CREATING refuses the writes, and the first worker backfills (an
                // empty scan).
                for marker in [BACKFILL_MARKER, resources::TARGET_POINTERS_MARKER] {
                    let _ = self.mark_upgraded(marker, 0).await;
                }
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

    /// Every item a Query finds, page after page; `shape` gives it what is its own (index, key
    /// condition, values, consistency).
    async fn query_all(
        &self,
        what: &str,
        shape: impl Fn(QueryFluentBuilder) -> QueryFluentBuilder,
    ) -> Result<Vec<Item>, PortError> {
        let mut items = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let out = shape(self.client.query().table_name(&self.table))
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| from_sdk_error(PEER, what, e))?;
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
}

fn build_error(e: aws_sdk_dynamodb::error::BuildError) -> PortError {
    PortError::new(
        PEER,
        "build request",
        registrar_core::ErrorClass::Terminal,
        e.to_string(),
    )
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

fn number(item: &Item, key: &str) -> Option<u64> {
    item.get(key)
        .and_then(|v| v.as_n().ok())
        .and_then(|n| n.parse().ok())
}

/// One-time upgrades of a table written by an older version, each remembered by a marker item
/// so that later starts read one item instead of the table.
impl DynamoState {
    /// Whether the upgrade `marker` names was done (or the table was created without need).
    async fn upgraded(&self, marker: (&str, &str)) -> Result<bool, PortError> {
        Ok(self.get(marker.0.to_owned(), marker.1).await?.is_some())
    }

    /// Records that the upgrade `marker` names was done, writing `count` items.
    async fn mark_upgraded(&self, marker: (&str, &str), count: usize) -> Result<(), PortError> {
        self.client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(marker.0))
            .item("sk", s(marker.1))
            .item("written", AttributeValue::N(count.to_string()))
            .item("at", AttributeValue::N(self.clock.now_s().to_string()))
            .send()
            .await
            .map_err(|e| from_sdk_error(PEER, "PutItem (upgrade marker)", e))?;
        Ok(())
    }
}
