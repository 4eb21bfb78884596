//! Findings as a checklist: one line per check, `ok`/`warn`/`FAIL`, the thing named, and a
//! `fix:` line under each failure and warning. Pure: no I/O.

use serde::Serialize;

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    /// Worth knowing, but the deployment works: does not fail the run.
    Warn,
    Fail,
}

impl Status {
    pub fn label(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Warn => "warn",
            Self::Fail => "FAIL",
        }
    }
}

/// One line of the checklist.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    pub status: Status,
    /// The group (`aws`, `agentcore`, `state`, `queue`, `events`, `trail`, `registry`, `issuer`).
    pub group: &'static str,
    /// The thing checked, named (a table, a queue URL, a region, an action, an issuer).
    pub subject: String,
    /// What was found. Strings from AWS, the registry or an IdP are passed through
    /// [`registrar_core::trust::shown`] before they get here.
    pub detail: String,
    /// What to change: a flag, a policy action, a stack parameter. Present on failures.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Check {
    pub fn ok(group: &'static str, subject: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            status: Status::Ok,
            group,
            subject: subject.into(),
            detail: detail.into(),
            fix: None,
        }
    }

    pub fn fail(
        group: &'static str,
        subject: impl Into<String>,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Self {
            status: Status::Fail,
            group,
            subject: subject.into(),
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }

    pub fn warn(
        group: &'static str,
        subject: impl Into<String>,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Self {
            status: Status::Warn,
            ..Self::fail(group, subject, detail, fix)
        }
    }
}

/// Counts by status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Tally {
    pub ok: usize,
    pub warn: usize,
    pub fail: usize,
}

pub fn tally(checks: &[Check]) -> Tally {
    checks.iter().fold(Tally::default(), |mut t, c| {
        match c.status {
            Status::Ok => t.ok += 1,
            Status::Warn => t.warn += 1,
            Status::Fail => t.fail += 1,
        }
        t
    })
}

/// Passed: no failure (warnings allowed).
pub fn passed(checks: &[Check]) -> bool {
    tally(checks).fail == 0
}

/// The text checklist: one line per check, a `fix:` line under each failure and warning, then
/// a summary line.
pub fn render_text(checks: &[Check]) -> String {
    let mut out = String::new();
    for c in checks {
        out.push_str(&format!(
            "{:<4}  {:<9} {}: {}\n",
            c.status.label(),
            c.group,
            c.subject,
            c.detail
        ));
        if c.status != Status::Ok
            && let Some(fix) = &c.fix
        {
            out.push_str(&format!("      fix: {fix}\n"));
        }
    }
    let t = tally(checks);
    out.push_str(&format!(
        "{} checks: {} ok, {} warn, {} FAIL{}\n",
        checks.len(),
        t.ok,
        t.warn,
        t.fail,
        if t.fail == 0 {
            " (warnings do not fail the run)"
        } else {
            ""
        }
    ));
    out
}

/// The same as JSON: `{"passed", "tally", "checks": [...]}`.
pub fn render_json(checks: &[Check]) -> serde_json::Value {
    serde_json::json!({
        "passed": passed(checks),
        "tally": tally(checks),
        "checks": checks,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_and_warnings_carry_their_fix_and_only_failures_fail_the_run() {
        let checks = vec![
            Check::ok(
                "state",
                "table agentcore-registrar",
                "keys pk (S, HASH), sk (S, RANGE)",
            ),
            Check::warn(
                "issuer",
                "idp.example.com",
                "a host cannot be probed",
                "list issuer URLs",
            ),
        ];
        assert!(passed(&checks));
        let text = render_text(&checks);
        assert!(
            text.starts_with("ok    state     table agentcore-registrar: keys"),
            "{text}"
        );
        assert!(text.contains("warn  issuer    idp.example.com: a host cannot be probed\n      fix: list issuer URLs\n"), "{text}");
        assert!(
            text.ends_with("2 checks: 1 ok, 1 warn, 0 FAIL (warnings do not fail the run)\n"),
            "{text}"
        );

        let mut checks = checks;
        checks.push(Check::fail(
            "queue",
            "queue q",
            "no redrive policy",
            "set RedrivePolicy",
        ));
        assert!(!passed(&checks));
        let text = render_text(&checks);
        assert!(
            text.contains(
                "FAIL  queue     queue q: no redrive policy\n      fix: set RedrivePolicy\n"
            ),
            "{text}"
        );
        assert!(text.ends_with("3 checks: 1 ok, 1 warn, 1 FAIL\n"), "{text}");
        let json = render_json(&checks);
        assert_eq!(json["passed"], false);
        assert_eq!(json["tally"]["fail"], 1);
        assert_eq!(json["checks"][2]["status"], "fail");
        assert_eq!(json["checks"][2]["fix"], "set RedrivePolicy");
        assert!(json["checks"][0].get("fix").is_none());
    }
}
