//! A CloudTrail trail logging AgentCore's write management events in each region read:
//! EventBridge sees AgentCore calls only through CloudTrail.

use std::collections::BTreeMap;

use aws_config::SdkConfig;
use registrar_core::trust::shown;

use super::access::{AwsError, Grantee, describe};
use super::checklist::Check;

const GROUP: &str = "trail";
const SOURCE: &str = "bedrock-agentcore.amazonaws.com";

/// A basic event selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BasicSelector {
    /// `All`, `ReadOnly` or `WriteOnly` (`None`: the default, All).
    pub read_write: Option<String>,
    /// `None`: the default, true.
    pub include_management: Option<bool>,
    pub exclude_sources: Vec<String>,
}

/// One field condition of an advanced event selector.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector {
    pub field: String,
    pub equals: Vec<String>,
    pub not_equals: Vec<String>,
    pub starts_with: Vec<String>,
    pub not_starts_with: Vec<String>,
    pub ends_with: Vec<String>,
    pub not_ends_with: Vec<String>,
}

impl FieldSelector {
    fn admits(&self, value: &str) -> bool {
        (self.equals.is_empty() || self.equals.iter().any(|v| v == value))
            && !self.not_equals.iter().any(|v| v == value)
            && (self.starts_with.is_empty()
                || self
                    .starts_with
                    .iter()
                    .any(|v| value.starts_with(v.as_str())))
            && !self
                .not_starts_with
                .iter()
                .any(|v| value.starts_with(v.as_str()))
            && (self.ends_with.is_empty()
                || self.ends_with.iter().any(|v| value.ends_with(v.as_str())))
            && !self
                .not_ends_with
                .iter()
                .any(|v| value.ends_with(v.as_str()))
    }
}

/// A trail's selectors as GetEventSelectors returns them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selectors {
    /// Neither kind: the trail logs what a trail logs by default (all management events).
    Default,
    Basic(Vec<BasicSelector>),
    /// Each selector is a list of field conditions, all of which must hold.
    Advanced(Vec<Vec<FieldSelector>>),
}

/// Whether a trail's selectors log AgentCore's mutating calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Coverage {
    Covers,
    Misses(String),
    /// A condition on a field we do not evaluate.
    Unclear(String),
}

/// Whether `selectors` log the write management events of AgentCore named `event_names`.
pub fn coverage(selectors: &Selectors, event_names: &[String]) -> Coverage {
    match selectors {
        Selectors::Default => Coverage::Covers,
        Selectors::Basic(list) => {
            let covering = list.iter().any(|s| {
                s.include_management.unwrap_or(true)
                    && matches!(
                        s.read_write.as_deref().unwrap_or("All"),
                        "All" | "WriteOnly"
                    )
                    && !s.exclude_sources.iter().any(|x| x == SOURCE)
            });
            if covering {
                Coverage::Covers
            } else if list
                .iter()
                .any(|s| s.exclude_sources.iter().any(|x| x == SOURCE))
            {
                Coverage::Misses(format!("its event selectors exclude {SOURCE}"))
            } else {
                Coverage::Misses(
                    "no event selector logs write management events (ReadWriteType All or WriteOnly with IncludeManagementEvents)".into(),
                )
            }
        }
        Selectors::Advanced(list) => {
            let mut unclear = None;
            for selector in list {
                // Only a management-event selector can log AgentCore's calls.
                let management = selector
                    .iter()
                    .any(|f| f.field == "eventCategory" && f.admits("Management"));
                if !management {
                    continue;
                }
                let mut admits = true;
                for f in selector {
                    match f.field.as_str() {
                        "eventCategory" => admits &= f.admits("Management"),
                        "readOnly" => admits &= f.admits("false"),
                        "eventSource" => admits &= f.admits(SOURCE),
                        "eventName" => admits &= event_names.iter().all(|n| f.admits(n)),
                        other => {
                            unclear.get_or_insert_with(|| {
                                format!("an advanced selector filters on {}, which doctor does not evaluate", shown(other))
                            });
                            admits = false;
                        }
                    }
                }
                if admits {
                    return Coverage::Covers;
                }
            }
            match unclear {
                Some(why) => Coverage::Unclear(why),
                None => Coverage::Misses(format!(
                    "no advanced event selector logs the write management events of {SOURCE}"
                )),
            }
        }
    }
}

/// What doctor learnt about one trail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrailFacts {
    pub name: String,
    pub multi_region: bool,
    pub logging: bool,
    pub coverage: Coverage,
}

const FIX_NO_TRAIL: &str = "create a multi-region trail: the stack's CreateTrail=true parameter, or `aws cloudtrail create-trail --is-multi-region-trail` then `start-logging`";

/// The verdict for one region from the trails that apply to it.
pub fn region_verdict(region: &str, trails: &[TrailFacts]) -> Check {
    let subject = format!("region {region}");
    if let Some(t) = trails
        .iter()
        .find(|t| t.logging && t.coverage == Coverage::Covers)
    {
        return Check::ok(
            GROUP,
            subject,
            format!(
                "trail {} logs AgentCore's write management events{}",
                t.name,
                if t.multi_region {
                    " (multi-region)"
                } else {
                    ""
                }
            ),
        );
    }
    if let Some((t, why)) = trails.iter().find_map(|t| match &t.coverage {
        Coverage::Unclear(why) if t.logging => Some((t, why)),
        _ => None,
    }) {
        return Check::warn(
            GROUP,
            subject,
            format!(
                "trail {} is logging, but whether it logs AgentCore's calls is unclear: {why}",
                t.name
            ),
            format!(
                "make sure {} logs management events of {SOURCE} (eventCategory Management, readOnly false)",
                t.name
            ),
        );
    }
    if let Some(t) = trails
        .iter()
        .find(|t| !t.logging && t.coverage == Coverage::Covers)
    {
        return Check::fail(
            GROUP,
            subject,
            format!(
                "trail {} is not logging: EventBridge sees no AgentCore call",
                t.name
            ),
            format!("aws cloudtrail start-logging --name {}", t.name),
        );
    }
    if let Some((t, why)) = trails.iter().find_map(|t| match &t.coverage {
        Coverage::Misses(why) => Some((t, why)),
        _ => None,
    }) {
        return Check::fail(
            GROUP,
            subject,
            format!("trail {} does not log AgentCore's calls: {why}", t.name),
            format!(
                "log write management events on {} (aws cloudtrail put-event-selectors, ReadWriteType All with IncludeManagementEvents), or add a trail that does: the stack's CreateTrail=true",
                t.name
            ),
        );
    }
    if let Some(t) = trails.first() {
        return Check::fail(
            GROUP,
            subject,
            format!("trail {} is not logging", t.name),
            format!("aws cloudtrail start-logging --name {}", t.name),
        );
    }
    Check::fail(
        GROUP,
        subject,
        "no trail logs this region: EventBridge sees no AgentCore call, so only rescans find changes",
        FIX_NO_TRAIL,
    )
}

fn in_region(config: &SdkConfig, region: &str) -> SdkConfig {
    config
        .to_builder()
        .region(aws_config::Region::new(region.to_owned()))
        .build()
}

fn selectors_of(
    out: &aws_sdk_cloudtrail::operation::get_event_selectors::GetEventSelectorsOutput,
) -> Selectors {
    let advanced = out.advanced_event_selectors();
    if !advanced.is_empty() {
        return Selectors::Advanced(
            advanced
                .iter()
                .map(|s| {
                    s.field_selectors()
                        .iter()
                        .map(|f| FieldSelector {
                            field: f.field().to_owned(),
                            equals: f.equals().to_vec(),
                            not_equals: f.not_equals().to_vec(),
                            starts_with: f.starts_with().to_vec(),
                            not_starts_with: f.not_starts_with().to_vec(),
                            ends_with: f.ends_with().to_vec(),
                            not_ends_with: f.not_ends_with().to_vec(),
                        })
                        .collect()
                })
                .collect(),
        );
    }
    let basic = out.event_selectors();
    if basic.is_empty() {
        return Selectors::Default;
    }
    Selectors::Basic(
        basic
            .iter()
            .map(|s| BasicSelector {
                read_write: s.read_write_type().map(|r| r.as_str().to_owned()),
                include_management: s.include_management_events(),
                exclude_sources: s.exclude_management_event_sources().to_vec(),
            })
            .collect(),
    )
}

/// One line per region read.
pub async fn check(config: &SdkConfig, regions: &[String], event_names: &[String]) -> Vec<Check> {
    let per_region = regions.iter().map(|region| async move {
        match region_trails(config, region, event_names).await {
            Ok(trails) => region_verdict(region, &trails),
            Err((call, e)) => {
                let (detail, fix) = describe(&e, call, Grantee::Operator, FIX_NO_TRAIL);
                Check::fail(GROUP, format!("region {region}"), detail, fix)
            }
        }
    });
    futures::future::join_all(per_region).await
}

async fn region_trails(
    config: &SdkConfig,
    region: &str,
    event_names: &[String],
) -> Result<Vec<TrailFacts>, (&'static str, AwsError)> {
    let client = crate::aws::clients::cloudtrail(&in_region(config, region));
    let described = client
        .describe_trails()
        .include_shadow_trails(true)
        .send()
        .await
        .map_err(|e| ("cloudtrail:DescribeTrails", AwsError::from_sdk(&e)))?;
    // A trail's status and selectors are read in its home region.
    let mut home_clients: BTreeMap<String, aws_sdk_cloudtrail::Client> = BTreeMap::new();
    let mut facts = Vec::new();
    for t in described.trail_list() {
        let applies = t.is_multi_region_trail().unwrap_or(false) || t.home_region() == Some(region);
        let (Some(arn), true) = (t.trail_arn(), applies) else {
            continue;
        };
        let home = t.home_region().unwrap_or(region).to_owned();
        let home_client = home_clients
            .entry(home.clone())
            .or_insert_with(|| crate::aws::clients::cloudtrail(&in_region(config, &home)))
            .clone();
        let status = home_client
            .get_trail_status()
            .name(arn)
            .send()
            .await
            .map_err(|e| ("cloudtrail:GetTrailStatus", AwsError::from_sdk(&e)))?;
        let selectors = home_client
            .get_event_selectors()
            .trail_name(arn)
            .send()
            .await
            .map_err(|e| ("cloudtrail:GetEventSelectors", AwsError::from_sdk(&e)))?;
        facts.push(TrailFacts {
            name: shown(t.name().unwrap_or(arn)),
            multi_region: t.is_multi_region_trail().unwrap_or(false),
            logging: status.is_logging().unwrap_or(false),
            coverage: coverage(&selectors_of(&selectors), event_names),
        });
    }
    Ok(facts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Vec<String> {
        ["CreateGateway", "DeleteGateway", "UpdateAgentRuntime"]
            .map(str::to_owned)
            .to_vec()
    }

    fn basic(rw: &str, management: bool, exclude: &[&str]) -> BasicSelector {
        BasicSelector {
            read_write: Some(rw.into()),
            include_management: Some(management),
            exclude_sources: exclude.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    fn field(name: &str, equals: &[&str]) -> FieldSelector {
        FieldSelector {
            field: name.into(),
            equals: equals.iter().map(|s| (*s).to_owned()).collect(),
            ..FieldSelector::default()
        }
    }

    #[test]
    fn basic_selectors_cover_writes_with_management_events_all_or_write_only() {
        assert_eq!(coverage(&Selectors::Default, &names()), Coverage::Covers);
        for rw in ["All", "WriteOnly"] {
            let s = Selectors::Basic(vec![basic(rw, true, &[])]);
            assert_eq!(coverage(&s, &names()), Coverage::Covers, "{rw}");
        }
        let defaults = Selectors::Basic(vec![BasicSelector {
            read_write: None,
            include_management: None,
            exclude_sources: vec![],
        }]);
        assert_eq!(coverage(&defaults, &names()), Coverage::Covers);
        for s in [
            basic("ReadOnly", true, &[]),
            basic("All", false, &[]),
            basic("All", true, &[SOURCE]),
        ] {
            assert!(
                matches!(
                    coverage(&Selectors::Basic(vec![s.clone()]), &names()),
                    Coverage::Misses(_)
                ),
                "{s:?}"
            );
        }
        // One covering selector among others is enough.
        let mixed = Selectors::Basic(vec![
            basic("ReadOnly", true, &[]),
            basic("WriteOnly", true, &[]),
        ]);
        assert_eq!(coverage(&mixed, &names()), Coverage::Covers);
    }

    #[test]
    fn advanced_selectors_are_evaluated_field_by_field() {
        let management = vec![field("eventCategory", &["Management"])];
        assert_eq!(
            coverage(&Selectors::Advanced(vec![management.clone()]), &names()),
            Coverage::Covers
        );
        let writes = vec![
            field("eventCategory", &["Management"]),
            field("readOnly", &["false"]),
        ];
        assert_eq!(
            coverage(&Selectors::Advanced(vec![writes]), &names()),
            Coverage::Covers
        );
        let reads = vec![
            field("eventCategory", &["Management"]),
            field("readOnly", &["true"]),
        ];
        assert!(matches!(
            coverage(&Selectors::Advanced(vec![reads]), &names()),
            Coverage::Misses(_)
        ));
        let data = vec![
            field("eventCategory", &["Data"]),
            field("resources.type", &["AWS::S3::Object"]),
        ];
        assert!(matches!(
            coverage(&Selectors::Advanced(vec![data]), &names()),
            Coverage::Misses(_)
        ));
        let without_agentcore = vec![
            field("eventCategory", &["Management"]),
            FieldSelector {
                field: "eventSource".into(),
                not_equals: vec![SOURCE.into()],
                ..FieldSelector::default()
            },
        ];
        assert!(matches!(
            coverage(&Selectors::Advanced(vec![without_agentcore]), &names()),
            Coverage::Misses(_)
        ));
        let only_creates = vec![
            field("eventCategory", &["Management"]),
            field("eventName", &["CreateGateway"]),
        ];
        assert!(matches!(
            coverage(&Selectors::Advanced(vec![only_creates]), &names()),
            Coverage::Misses(_)
        ));
        let prefixed = vec![
            field("eventCategory", &["Management"]),
            FieldSelector {
                field: "eventSource".into(),
                starts_with: vec!["bedrock-agentcore.".into()],
                ..FieldSelector::default()
            },
        ];
        assert_eq!(
            coverage(&Selectors::Advanced(vec![prefixed]), &names()),
            Coverage::Covers
        );
        let by_user = vec![
            field("eventCategory", &["Management"]),
            field("userIdentity.arn", &["arn:aws:iam::1:user/x"]),
        ];
        assert!(matches!(
            coverage(&Selectors::Advanced(vec![by_user]), &names()),
            Coverage::Unclear(_)
        ));
    }

    fn trail(name: &str, logging: bool, coverage: Coverage) -> TrailFacts {
        TrailFacts {
            name: name.into(),
            multi_region: true,
            logging,
            coverage,
        }
    }

    #[test]
    fn a_region_passes_only_with_a_logging_trail_that_covers_agentcore() {
        let ok = region_verdict("us-east-1", &[trail("main", true, Coverage::Covers)]);
        assert_eq!(ok.status, super::super::checklist::Status::Ok);
        assert!(
            ok.detail.contains("main") && ok.detail.contains("multi-region"),
            "{ok:?}"
        );

        let none = region_verdict("us-east-1", &[]);
        assert_eq!(none.status, super::super::checklist::Status::Fail);
        assert!(
            none.fix
                .as_deref()
                .is_some_and(|f| f.contains("CreateTrail=true")),
            "{none:?}"
        );

        let stopped = region_verdict("us-east-1", &[trail("main", false, Coverage::Covers)]);
        assert_eq!(stopped.status, super::super::checklist::Status::Fail);
        assert!(stopped.detail.contains("not logging"), "{stopped:?}");
        assert_eq!(
            stopped.fix.as_deref(),
            Some("aws cloudtrail start-logging --name main")
        );

        let reads_only = region_verdict(
            "us-east-1",
            &[trail("main", true, Coverage::Misses("reads only".into()))],
        );
        assert_eq!(reads_only.status, super::super::checklist::Status::Fail);
        assert!(reads_only.detail.contains("reads only"), "{reads_only:?}");

        let unclear = region_verdict(
            "us-east-1",
            &[trail("main", true, Coverage::Unclear("x".into()))],
        );
        assert_eq!(unclear.status, super::super::checklist::Status::Warn);

        // One good trail is enough, whatever the others are.
        let mixed = region_verdict(
            "us-east-1",
            &[
                trail("old", false, Coverage::Covers),
                trail("org", true, Coverage::Covers),
            ],
        );
        assert_eq!(mixed.status, super::super::checklist::Status::Ok);
        assert!(mixed.detail.contains("org"), "{mixed:?}");
    }
}
