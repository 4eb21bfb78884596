//! The worker's key metrics in CloudWatch's embedded metric format: one JSON line per interval
//! on stderr, which the container's log driver ships and CloudWatch turns into metrics, so no
//! scraper of `/metrics` is needed.

use serde_json::{Map, Value, json};

/// The CloudWatch namespace the stack's dashboard and alarms read.
pub const NAMESPACE: &str = "AgentCoreRegistrar";

/// One metric of a line.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    pub name: &'static str,
    pub value: f64,
    /// `Count`, `Milliseconds`, `Seconds`, or `None`.
    pub unit: &'static str,
}

/// An embedded-metric-format document: the metrics under `service`, at `now_ms`.
pub fn document(now_ms: u64, service: &str, samples: &[Sample]) -> Value {
    let mut root = Map::new();
    root.insert(
        "_aws".into(),
        json!({
            "Timestamp": now_ms,
            "CloudWatchMetrics": [{
                "Namespace": NAMESPACE,
                "Dimensions": [["Service"]],
                "Metrics": samples.iter().map(|s| json!({"Name": s.name, "Unit": s.unit})).collect::<Vec<_>>(),
            }],
        }),
    );
    root.insert("Service".into(), json!(service));
    for s in samples {
        root.insert(s.name.into(), json!(s.value));
    }
    Value::Object(root)
}

/// Counters turn into what changed since the last line (a `Count` per interval).
#[derive(Debug, Default)]
pub struct Deltas(std::collections::HashMap<&'static str, u64>);

impl Deltas {
    /// `now - previous` for `name` (0 the first time a counter is seen smaller, after a restart).
    pub fn of(&mut self, name: &'static str, now: u64) -> f64 {
        let before = self.0.insert(name, now).unwrap_or(0);
        now.saturating_sub(before) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_declares_every_metric_it_carries_under_the_namespace() {
        let doc = document(
            1_700_000_000_000,
            "worker",
            &[
                Sample {
                    name: "ReconcilesFailed",
                    value: 2.0,
                    unit: "Count",
                },
                Sample {
                    name: "LastRescanAgeSeconds",
                    value: 30.0,
                    unit: "Seconds",
                },
            ],
        );
        assert_eq!(doc["_aws"]["Timestamp"], json!(1_700_000_000_000u64));
        let directive = &doc["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(directive["Namespace"], json!(NAMESPACE));
        assert_eq!(directive["Dimensions"], json!([["Service"]]));
        assert_eq!(
            directive["Metrics"],
            json!([{"Name": "ReconcilesFailed", "Unit": "Count"}, {"Name": "LastRescanAgeSeconds", "Unit": "Seconds"}])
        );
        assert_eq!(doc["ReconcilesFailed"], json!(2.0));
        assert_eq!(doc["Service"], json!("worker"));
    }

    #[test]
    fn counters_become_what_changed_since_the_last_line() {
        let mut d = Deltas::default();
        assert_eq!(d.of("x", 5), 5.0);
        assert_eq!(d.of("x", 7), 2.0);
        assert_eq!(d.of("x", 7), 0.0);
        assert_eq!(
            d.of("x", 3),
            0.0,
            "a smaller value (restart) is not negative"
        );
    }
}
