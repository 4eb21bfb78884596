//! The TokenStore on the state table: manifest rows, token state and the due-tokens index.
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

use std::collections::HashMap;

use aws_sdk_dynamodb::types::{AttributeValue, KeysAndAttributes};
use registrar_core::ports::{DueToken, TokenStore};
use registrar_core::refresh::TokenState;
use registrar_core::tokens::{IdpVendor, ManifestFields};
use registrar_core::{ErrorClass, PortError};

use futures::{StreamExt, TryStreamExt};

use super::resources::recorded_from;
use super::{
    BACKFILL_MARKER, DUE_AT_ATTR, DUE_INDEX, DUE_SHARD_ATTR, DynamoState, Item, PEER, build_error,
    from_sdk_error, is_gone, item, list, made, number, resource_pk, s, text, texts,
};

/// The one partition of the index.
const DUE_SHARD: &str = "tokens";
/// BatchGetItem takes at most 100 keys: the manifest and resource rows of 50 tokens.
const BATCH_GET_KEYS: usize = 100;

impl DynamoState {
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
        let until = AttributeValue::N(until.to_string());
        let items = self
            .query_all("Query (tokens due)", |q| {
                q.index_name(DUE_INDEX)
                    .key_condition_expression("#shard = :shard AND #due <= :until")
                    .expression_attribute_names("#shard", DUE_SHARD_ATTR)
                    .expression_attribute_names("#due", DUE_AT_ATTR)
                    .expression_attribute_values(":shard", s(DUE_SHARD))
                    .expression_attribute_values(":until", until.clone())
            })
            .await?;
        Ok(items
            .iter()
            .map(|i| {
                let arn = Some(text(i, "arn"))
                    .filter(|a| !a.is_empty())
                    .unwrap_or_else(|| text(i, "pk").trim_start_matches("res#").to_owned());
                (arn, token_from(i), number(i, DUE_AT_ATTR).unwrap_or(0))
            })
            .collect())
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
        if self.upgraded(BACKFILL_MARKER).await? {
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
        self.mark_upgraded(BACKFILL_MARKER, indexed).await?;
        Ok(Some(indexed))
    }
}

pub(super) fn manifest_from(i: &Item) -> ManifestFields {
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
