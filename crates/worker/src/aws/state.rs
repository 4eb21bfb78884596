//! The DynamoDB state table: per resource what we applied, per path a conditional claim, per
//! CUSTOM_JWT resource its manifest fields. Keys: `pk` (S) and `sk` (S).
//!
//! | item | pk | sk |
//! |---|---|---|
//! | resource | `res#<arn>` | `res` |
//! | manifest row | `res#<arn>` | `manifest` |
//! | path claim | `path#<path>` | `claim` |
//! | key pointer | `key#<kind>#<region>#<id>` | `ptr` (attribute `arn`) |
//! | lease | `lease#<name>` | `lease` (attributes `owner`, `expires_at` epoch ms, `ttl` epoch s for DynamoDB TTL) |

use std::collections::HashMap;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType, PutRequest,
    ReturnValuesOnConditionCheckFailure, ScalarAttributeType, WriteRequest,
};
use registrar_core::PortError;
use registrar_core::desired::{Collection, Pointing};
use registrar_core::identity::{ResourceKey, ResourceKind, ResourceRef};
use registrar_core::plan::RecordedResource;
use registrar_core::ports::StateStore;
use registrar_core::tokens::{IdpVendor, ManifestFields};

use super::classify_sdk_error;

const PEER: &str = "dynamodb";
type Item = HashMap<String, AttributeValue>;

/// The state table.
#[derive(Debug, Clone)]
pub struct DynamoState {
    client: Client,
    table: String,
}

/// The table's keys, both strings: the partition key, then the sort key (`registrar doctor`
/// checks a deployed table against this).
pub const KEY_SCHEMA: [(&str, KeyType); 2] = [("pk", KeyType::Hash), ("sk", KeyType::Range)];

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
        }
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
        let result = self
            .client
            .create_table()
            .table_name(&self.table)
            .billing_mode(BillingMode::PayPerRequest)
            .attribute_definitions(attr(pk).map_err(build_error)?)
            .attribute_definitions(attr(sk).map_err(build_error)?)
            .key_schema(key(pk, KeyType::Hash).map_err(build_error)?)
            .key_schema(key(sk, KeyType::Range).map_err(build_error)?)
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_resource_in_use_exception()) =>
            {
                Ok(false)
            }
            Err(e) => Err(classify_sdk_error(PEER, "CreateTable", &e)),
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
                .map_err(|e| classify_sdk_error(PEER, "Scan", &e))?;
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
            .map_err(|e| classify_sdk_error(PEER, "GetItem", &e))?;
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
        match result {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_conditional_check_failed_exception()) =>
            {
                Ok(())
            }
            Err(e) => Err(classify_sdk_error(PEER, &format!("DeleteItem ({sk})"), &e)),
        }
    }

    async fn delete(&self, pk: String, sk: &str) -> Result<(), PortError> {
        self.client
            .delete_item()
            .table_name(&self.table)
            .key("pk", s(pk))
            .key("sk", s(sk))
            .send()
            .await
            .map_err(|e| classify_sdk_error(PEER, "DeleteItem", &e))?;
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

fn recorded_from(item: &Item) -> Option<RecordedResource> {
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

fn epoch_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn number(item: &Item, key: &str) -> Option<u64> {
    item.get(key)
        .and_then(|v| v.as_n().ok())
        .and_then(|n| n.parse().ok())
}

impl StateStore for DynamoState {
    async fn record_token(
        &self,
        arn: &str,
        t: &registrar_core::refresh::TokenState,
    ) -> Result<(), PortError> {
        let mut put = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(resource_pk(arn)))
            .item("sk", s("token"))
            .item("arn", s(arn))
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
            .map_err(|e| classify_sdk_error(PEER, "PutItem (token)", &e))?;
        Ok(())
    }

    async fn tokens(
        &self,
    ) -> Result<Vec<(String, registrar_core::refresh::TokenState)>, PortError> {
        Ok(self
            .scan_sk("token")
            .await?
            .iter()
            .map(|i| {
                let state = registrar_core::refresh::TokenState {
                    expires_at: number(i, "expires_at"),
                    next_refresh_at: number(i, "next_refresh_at").unwrap_or(0),
                    last_result: text(i, "last_result"),
                    failures: number(i, "failures").unwrap_or(0) as u32,
                    client_id: Some(text(i, "client_id")).filter(|c| !c.is_empty()),
                    refreshed_at: number(i, "refreshed_at"),
                };
                (text(i, "arn"), state)
            })
            .collect())
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
        match update.send().await {
            Ok(_) => Ok(true),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_conditional_check_failed_exception()) =>
            {
                Ok(false)
            }
            Err(e) => Err(classify_sdk_error(PEER, "UpdateItem (refresh claim)", &e)),
        }
    }

    async fn mark_enabled(&self, arn: &str) -> Result<(), PortError> {
        self.client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(resource_pk(arn)))
            .key("sk", s("res"))
            .update_expression("SET enabled_set = :t")
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_values(":t", AttributeValue::Bool(true))
            .send()
            .await
            .map_err(|e| classify_sdk_error(PEER, "UpdateItem (enabled)", &e))?;
        Ok(())
    }

    async fn acquire_lease(
        &self,
        name: &str,
        owner: &str,
        ttl: std::time::Duration,
    ) -> Result<bool, PortError> {
        let now = epoch_ms();
        let expires = now + ttl.as_millis() as u64;
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(format!("lease#{name}")))
            .item("sk", s("lease"))
            .item("owner", s(owner))
            .item("expires_at", AttributeValue::N(expires.to_string()))
            .item(
                "ttl",
                AttributeValue::N((expires / 1000 + 3600).to_string()),
            )
            .condition_expression("attribute_not_exists(pk) OR expires_at < :now OR #owner = :me")
            .expression_attribute_names("#owner", "owner")
            .expression_attribute_values(":now", AttributeValue::N(now.to_string()))
            .expression_attribute_values(":me", s(owner))
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_conditional_check_failed_exception()) =>
            {
                Ok(false)
            }
            Err(e) => Err(classify_sdk_error(PEER, "PutItem (lease)", &e)),
        }
    }

    async fn release_lease(&self, name: &str, owner: &str) -> Result<(), PortError> {
        self.delete_if_held(format!("lease#{name}"), "lease", "owner", owner)
            .await
    }

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
                    classify_sdk_error(PEER, "BatchWriteItem (resource and key pointer)", &e)
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
            registrar_core::ErrorClass::Transient,
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
            self.delete(pointer_pk(r.kind, &r.region, &r.id), "ptr")
                .await?;
        }
        self.delete(resource_pk(arn), "res").await
    }

    async fn lookup(&self, key: &ResourceKey) -> Result<Option<RecordedResource>, PortError> {
        let Some(ptr) = self
            .get(pointer_pk(key.kind, &key.region, &key.id), "ptr")
            .await?
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

    async fn manifest(&self, arn: &str) -> Result<Option<ManifestFields>, PortError> {
        Ok(self
            .get(resource_pk(arn), "manifest")
            .await?
            .as_ref()
            .map(manifest_from))
    }

    async fn claim_path(&self, path: &str, arn: &str) -> Result<Option<String>, PortError> {
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(format!("path#{path}")))
            .item("sk", s("claim"))
            .item("holder", s(arn))
            .condition_expression("attribute_not_exists(pk) OR holder = :me")
            .expression_attribute_values(":me", s(arn))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match result {
            Ok(_) => Ok(None),
            Err(e) => match e.as_service_error() {
                Some(aws_sdk_dynamodb::operation::put_item::PutItemError::ConditionalCheckFailedException(c)) => {
                    Ok(Some(c.item().map(|i| text(i, "holder")).unwrap_or_else(|| "another resource".into())))
                }
                _ => Err(classify_sdk_error(PEER, "PutItem (path claim)", &e)),
            },
        }
    }

    async fn release_path(&self, path: &str, arn: &str) -> Result<(), PortError> {
        self.delete_if_held(format!("path#{path}"), "claim", "holder", arn)
            .await
    }

    async fn put_manifest(&self, row: &ManifestFields) -> Result<(), PortError> {
        self.client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(resource_pk(&row.arn)))
            .item("sk", s("manifest"))
            .item("arn", s(&row.arn))
            .item("path", s(&row.path))
            .item("url", s(&row.url))
            .item("discovery_url", s(&row.discovery_url))
            .item("allowed_clients", list(&row.allowed_clients))
            .item("allowed_audience", list(&row.allowed_audience))
            .item("allowed_scopes", list(&row.allowed_scopes))
            .item("idp_vendor", s(row.idp_vendor.as_str()))
            .send()
            .await
            .map_err(|e| classify_sdk_error(PEER, "PutItem (manifest)", &e))?;
        Ok(())
    }

    async fn delete_manifest(&self, arn: &str) -> Result<(), PortError> {
        self.delete(resource_pk(arn), "token").await?;
        self.delete(resource_pk(arn), "manifest").await
    }

    async fn manifests(&self) -> Result<Vec<ManifestFields>, PortError> {
        Ok(self
            .scan_sk("manifest")
            .await?
            .iter()
            .map(manifest_from)
            .collect())
    }
}
