//! The state table's schema, as `crates/worker/src/aws/state/mod.rs` defines it.

use aws_config::SdkConfig;
use aws_sdk_dynamodb::types::{KeyType, ScalarAttributeType, TableStatus};
use registrar_core::trust::shown;

use super::access::{AwsError, Grantee, describe};
use super::checklist::Check;
use crate::aws::state::{DUE_INDEX, DUE_INDEX_KEYS, KEY_SCHEMA};

const GROUP: &str = "state";

/// What is wrong with a table's keys: `keys` as (attribute, key type), `types` as (attribute,
/// scalar type) from its attribute definitions. Empty when it is the registrar's schema.
pub fn schema_problems(
    keys: &[(String, KeyType)],
    types: &[(String, ScalarAttributeType)],
) -> Vec<String> {
    let mut problems = Vec::new();
    let expected: Vec<(&str, &KeyType)> = KEY_SCHEMA.iter().map(|(n, k)| (*n, k)).collect();
    let found: Vec<(&str, &KeyType)> = keys.iter().map(|(n, k)| (n.as_str(), k)).collect();
    if found != expected {
        let show = |keys: &[(&str, &KeyType)]| {
            keys.iter()
                .map(|(n, k)| format!("{} ({})", shown(n), k.as_str()))
                .collect::<Vec<_>>()
                .join(", ")
        };
        problems.push(format!(
            "keys are {}, not {}",
            if found.is_empty() {
                "none".to_owned()
            } else {
                show(&found)
            },
            show(&expected)
        ));
    }
    for (name, _) in &KEY_SCHEMA {
        match types.iter().find(|(n, _)| n == name) {
            Some((_, ScalarAttributeType::S)) | None => {}
            Some((_, other)) => {
                problems.push(format!("{name} is of type {}, not S", other.as_str()))
            }
        }
    }
    problems
}

pub async fn check(config: &SdkConfig, table: &str) -> Check {
    let subject = format!("table {table}");
    let fix_table = "point --table (REGISTRAR_TABLE) at the stack's TableName output (or run `registrar state init` for a local table)";
    let described = crate::aws::clients::dynamodb(config)
        .describe_table()
        .table_name(table)
        .send()
        .await;
    let t = match described {
        Ok(out) => out.table,
        Err(e) => {
            let (detail, fix) = describe(
                &AwsError::from_sdk(&e),
                "dynamodb:DescribeTable",
                Grantee::Operator,
                fix_table,
            );
            return Check::fail(GROUP, subject, detail, fix);
        }
    };
    let Some(t) = t else {
        return Check::fail(GROUP, subject, "DescribeTable returned no table", fix_table);
    };
    let keys: Vec<(String, KeyType)> = t
        .key_schema()
        .iter()
        .map(|k| (k.attribute_name().to_owned(), k.key_type().clone()))
        .collect();
    let types: Vec<(String, ScalarAttributeType)> = t
        .attribute_definitions()
        .iter()
        .map(|a| (a.attribute_name().to_owned(), a.attribute_type().clone()))
        .collect();
    let problems = schema_problems(&keys, &types);
    if !problems.is_empty() {
        return Check::fail(
            GROUP,
            subject,
            format!("not the registrar's schema: {}", problems.join("; ")),
            format!(
                "{fix_table}; the registrar's table has keys pk (S, HASH) and sk (S, RANGE), as the stack's StateTable"
            ),
        );
    }
    let due_index_keys: Option<Vec<(String, KeyType)>> = t
        .global_secondary_indexes()
        .iter()
        .find(|g| g.index_name() == Some(DUE_INDEX))
        .map(|g| {
            g.key_schema()
                .iter()
                .map(|k| (k.attribute_name().to_owned(), k.key_type().clone()))
                .collect()
        });
    let expected_index: Vec<(String, KeyType)> = DUE_INDEX_KEYS
        .iter()
        .map(|(n, k, _)| ((*n).to_owned(), k.clone()))
        .collect();
    if due_index_keys.as_ref() != Some(&expected_index) {
        return Check::fail(
            GROUP,
            subject,
            format!(
                "{} the index {DUE_INDEX} (due_shard HASH, due_at RANGE): the token loop finds due tokens through it",
                if due_index_keys.is_some() {
                    "another schema for"
                } else {
                    "no"
                }
            ),
            "update the stack: CloudFormation adds the index to the existing table in place (a local table: delete it and run `registrar state init`)",
        );
    }
    match t.table_status() {
        Some(TableStatus::Active) | None => Check::ok(
            GROUP,
            subject,
            format!("keys pk (S, HASH), sk (S, RANGE), index {DUE_INDEX}; ACTIVE"),
        ),
        Some(other) => Check::warn(
            GROUP,
            subject,
            format!("keys as expected, status {}", other.as_str()),
            "wait until the table is ACTIVE",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(k: &[(&str, KeyType)]) -> Vec<(String, KeyType)> {
        k.iter()
            .map(|(n, t)| ((*n).to_owned(), t.clone()))
            .collect()
    }

    #[test]
    fn the_registrars_schema_passes_and_others_are_named() {
        let s = |n: &str| (n.to_owned(), ScalarAttributeType::S);
        let ours = keys(&[("pk", KeyType::Hash), ("sk", KeyType::Range)]);
        assert!(schema_problems(&ours, &[s("pk"), s("sk")]).is_empty());

        let id_only = keys(&[("id", KeyType::Hash)]);
        assert_eq!(
            schema_problems(&id_only, &[s("id")]),
            ["keys are id (HASH), not pk (HASH), sk (RANGE)"]
        );
        let swapped = keys(&[("sk", KeyType::Hash), ("pk", KeyType::Range)]);
        assert_eq!(schema_problems(&swapped, &[s("pk"), s("sk")]).len(), 1);
        let numeric = vec![s("pk"), ("sk".to_owned(), ScalarAttributeType::N)];
        assert_eq!(schema_problems(&ours, &numeric), ["sk is of type N, not S"]);
        assert_eq!(
            schema_problems(&[], &[]),
            ["keys are none, not pk (HASH), sk (RANGE)"]
        );
    }
}
