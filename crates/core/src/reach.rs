//! Which accounts and regions one worker reads: its own account in each listed region, plus
//! member accounts reached by AssumeRole. Cross-account reads fail closed: every member account
//! must be on an explicit allowlist, and a malformed id is refused rather than skipped.

use std::collections::BTreeSet;

/// The validated reach of one worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reach {
    /// Regions read in every account, the home region first.
    pub regions: Vec<String>,
    /// Member accounts read through their role (never the worker's own account).
    pub members: Vec<String>,
}

/// What the operator asked for.
#[derive(Debug, Clone, Default)]
pub struct ReachRequest<'a> {
    /// The worker's own region (its SDK configuration's).
    pub home_region: &'a str,
    /// Extra regions (the home region may be repeated; duplicates are dropped).
    pub regions: &'a [String],
    /// Accounts to read through `AssumeRole`, besides the worker's own.
    pub member_accounts: &'a [String],
    /// The allowlist every member account must be in (fail closed: empty admits no member).
    pub allowed_accounts: &'a [String],
}

/// `us-east-1`, `eu-central-2`, `us-gov-west-1`, `ap-southeast-5`: lowercase words joined by
/// dashes, a two-letter first word and a trailing number.
pub fn is_region_code(region: &str) -> bool {
    let parts: Vec<&str> = region.split('-').collect();
    parts.len() >= 3
        && parts[0].len() == 2
        && parts[..parts.len() - 1]
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase()))
        && parts[parts.len() - 1].parse::<u8>().is_ok()
}

/// Twelve digits.
pub fn is_account_id(id: &str) -> bool {
    id.len() == 12 && id.bytes().all(|b| b.is_ascii_digit())
}

/// The ARN partition of a region (`aws-cn` for China, `aws-us-gov` for GovCloud).
pub fn partition(region: &str) -> &'static str {
    if region.starts_with("cn-") {
        "aws-cn"
    } else if region.starts_with("us-gov-") {
        "aws-us-gov"
    } else {
        "aws"
    }
}

/// The role a member account provides (`infra/cloudformation/member-account-role.yaml`).
pub fn member_role_arn(region: &str, account: &str, role_name: &str) -> String {
    format!("arn:{}:iam::{account}:role/{role_name}", partition(region))
}

impl ReachRequest<'_> {
    /// Validates the request; `home_account` (the worker's own, from STS) is dropped from the
    /// members because it is read with the worker's own credentials.
    pub fn validate(&self, home_account: &str) -> Result<Reach, String> {
        let mut regions = vec![self.home_region.to_owned()];
        for r in self.regions {
            let r = r.trim();
            if r.is_empty() {
                continue;
            }
            if !is_region_code(r) {
                return Err(format!(
                    "unknown AWS region {r:?} in --regions: expected a region code such as us-east-1"
                ));
            }
            if !regions.iter().any(|have| have == r) {
                regions.push(r.to_owned());
            }
        }
        let clean = |ids: &[String], flag: &str| -> Result<BTreeSet<String>, String> {
            ids.iter()
                .map(|id| id.trim())
                .filter(|id| !id.is_empty())
                .map(|id| {
                    if is_account_id(id) {
                        Ok(id.to_owned())
                    } else {
                        Err(format!(
                            "{flag}: {id:?} is not an AWS account id (12 digits)"
                        ))
                    }
                })
                .collect()
        };
        let members = clean(self.member_accounts, "--member-accounts")?;
        let allowed = clean(self.allowed_accounts, "--allowed-accounts")?;
        let outside: Vec<&str> = members
            .iter()
            .filter(|m| !allowed.contains(*m))
            .map(String::as_str)
            .collect();
        if !outside.is_empty() {
            return Err(format!(
                "member account(s) {} not in --allowed-accounts ({}): cross-account reads are \
                 refused unless every account is allowlisted",
                outside.join(", "),
                if allowed.is_empty() {
                    "empty".to_owned()
                } else {
                    allowed.iter().cloned().collect::<Vec<_>>().join(", ")
                }
            ));
        }
        Ok(Reach {
            regions,
            members: members.into_iter().filter(|m| m != home_account).collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn region_codes_are_recognised() {
        for ok in [
            "us-east-1",
            "eu-central-2",
            "us-gov-west-1",
            "ap-southeast-5",
            "il-central-1",
        ] {
            assert!(is_region_code(ok), "{ok}");
        }
        for bad in [
            "mars",
            "us-east",
            "US-EAST-1",
            "us_east_1",
            "us-east-x",
            "",
            "useast-1",
        ] {
            assert!(!is_region_code(bad), "{bad}");
        }
    }

    #[test]
    fn members_must_all_be_allowlisted() {
        let members = ids(&["111111111111", "222222222222"]);
        let allowed = ids(&["111111111111"]);
        let err = ReachRequest {
            home_region: "us-east-1",
            member_accounts: &members,
            allowed_accounts: &allowed,
            ..Default::default()
        }
        .validate("123456789012")
        .expect_err("refused");
        assert!(err.contains("222222222222"), "{err}");
        assert!(!err.contains("111111111111 not"), "{err}");
    }

    #[test]
    fn an_empty_allowlist_refuses_every_member() {
        let members = ids(&["111111111111"]);
        let err = ReachRequest {
            home_region: "us-east-1",
            member_accounts: &members,
            ..Default::default()
        }
        .validate("123456789012")
        .expect_err("refused");
        assert!(err.contains("empty"), "{err}");
    }

    #[test]
    fn malformed_ids_and_regions_are_refused() {
        let bad = ids(&["12345"]);
        let err = ReachRequest {
            home_region: "us-east-1",
            member_accounts: &bad,
            allowed_accounts: &bad,
            ..Default::default()
        }
        .validate("123456789012")
        .expect_err("refused");
        assert!(
            err.contains("\"12345\"") && err.contains("--member-accounts"),
            "{err}"
        );
        let regions = ids(&["eu-west-1", "moon-1"]);
        let err = ReachRequest {
            home_region: "us-east-1",
            regions: &regions,
            ..Default::default()
        }
        .validate("123456789012")
        .expect_err("refused");
        assert!(err.contains("moon-1"), "{err}");
    }

    #[test]
    fn home_region_first_duplicates_and_own_account_dropped() {
        let regions = ids(&["eu-west-1", "us-east-1", " eu-west-1 ", ""]);
        let members = ids(&["111111111111", "123456789012"]);
        let allowed = ids(&["111111111111", "123456789012", "999999999999"]);
        let reach = ReachRequest {
            home_region: "us-east-1",
            regions: &regions,
            member_accounts: &members,
            allowed_accounts: &allowed,
        }
        .validate("123456789012")
        .expect("valid");
        assert_eq!(reach.regions, ids(&["us-east-1", "eu-west-1"]));
        assert_eq!(reach.members, ids(&["111111111111"]));
    }

    #[test]
    fn role_arns_carry_the_partition() {
        assert_eq!(
            member_role_arn("eu-west-1", "111111111111", "r"),
            "arn:aws:iam::111111111111:role/r"
        );
        assert_eq!(
            member_role_arn("cn-north-1", "111111111111", "r"),
            "arn:aws-cn:iam::111111111111:role/r"
        );
        assert_eq!(
            member_role_arn("us-gov-west-1", "111111111111", "r"),
            "arn:aws-us-gov:iam::111111111111:role/r"
        );
    }
}
