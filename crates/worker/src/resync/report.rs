//! What a run did, per resource, as the FAQ's summary table or as JSON.

use std::fmt::Write as _;

use registrar_core::ErrorClass;
use registrar_core::desired::{Collection, DesiredEntry};
use registrar_core::identity::{ResourceKind, ResourceRef};
use registrar_core::plan::{Action, Intact};
use serde::Serialize;

/// The result of one resource in a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Registered,
    Updated,
    Unchanged,
    Deregistered,
    Conflict,
    Skipped,
    Failed,
    /// Not READY yet: left alone, re-checked on the next run.
    Waiting,
    /// A target waits for an administrator's OAuth consent.
    NeedsAuthorization,
    /// `--dry-run`: the write that would be made.
    DryRun,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Registered => "registered",
            Self::Updated => "updated",
            Self::Unchanged => "unchanged",
            Self::Deregistered => "deregistered",
            Self::Conflict => "conflict",
            Self::Skipped => "skipped",
            Self::Failed => "failed",
            Self::Waiting => "waiting",
            Self::NeedsAuthorization => "needs_authorization",
            Self::DryRun => "dry_run",
        }
    }
}

/// One row of the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Outcome {
    pub resource_type: &'static str,
    pub resource_name: String,
    pub resource_arn: String,
    pub registration_type: Option<&'static str>,
    pub path: String,
    pub auth_type: String,
    pub status: Status,
    pub message: String,
    /// For failed rows: whether retrying can help.
    #[serde(skip)]
    pub error_class: Option<ErrorClass>,
    /// For skipped rows: why, typed (the message is its text).
    #[serde(skip)]
    pub skip: Option<registrar_core::plan::SkipReason>,
}

fn registration_type(c: Collection) -> &'static str {
    match c {
        Collection::Server => "mcp_server",
        Collection::Agent => "agent",
    }
}

impl Outcome {
    pub fn for_desired(d: &DesiredEntry, status: Status, message: impl Into<String>) -> Self {
        Self {
            resource_type: d.resource.kind.as_str(),
            resource_name: d.name.clone(),
            resource_arn: d.resource.arn.clone(),
            registration_type: Some(registration_type(d.collection())),
            path: d.path.clone(),
            auth_type: d.auth_label.clone(),
            status,
            message: message.into(),
            error_class: None,
            skip: None,
        }
    }

    pub fn for_resource(
        r: &ResourceRef,
        name: &str,
        path: &str,
        status: Status,
        message: impl Into<String>,
    ) -> Self {
        Self {
            resource_type: r.kind.as_str(),
            resource_name: name.to_owned(),
            resource_arn: r.arn.clone(),
            registration_type: None,
            path: path.to_owned(),
            auth_type: String::new(),
            status,
            message: message.into(),
            error_class: None,
            skip: None,
        }
    }

    /// A resource a rescan did not read: listed with the `updatedAt` of its intact entry.
    pub fn unread(i: &Intact) -> Self {
        let r = &i.recorded;
        Self {
            registration_type: Some(registration_type(r.collection)),
            auth_type: r.auth_label.clone(),
            ..Self::for_resource(
                &r.resource,
                &i.name,
                &r.path,
                Status::Unchanged,
                "not read: AgentCore lists it with the updatedAt of its entry",
            )
        }
    }

    pub fn for_kind(
        kind: ResourceKind,
        name: &str,
        arn: &str,
        path: &str,
        status: Status,
        message: impl Into<String>,
    ) -> Self {
        Self {
            resource_type: kind.as_str(),
            resource_name: name.to_owned(),
            resource_arn: arn.to_owned(),
            registration_type: None,
            path: path.to_owned(),
            auth_type: String::new(),
            status,
            message: message.into(),
            error_class: None,
            skip: None,
        }
    }

    /// The row of an action as planned, before it is applied: the dry-run report, and the
    /// final row of actions that write nothing (conflict, skip, unchanged).
    pub fn planned(action: &Action) -> Self {
        match action {
            Action::Register(d) => Self::for_desired(d, Status::DryRun, "would register"),
            Action::Update { desired, .. } => {
                Self::for_desired(desired, Status::DryRun, "would update")
            }
            Action::Unchanged { desired, .. } => Self::for_desired(desired, Status::Unchanged, ""),
            Action::Deregister(d) => Self::for_resource(
                &d.resource,
                &d.name,
                &d.path,
                Status::DryRun,
                "would deregister",
            ),
            Action::Conflict { desired, holder } => {
                Self::for_desired(desired, Status::Conflict, holder.clone())
            }
            Action::Skip {
                resource,
                name,
                path,
                reason,
            } => Self {
                skip: Some(reason.clone()),
                ..Self::for_resource(resource, name, path, Status::Skipped, reason.to_string())
            },
        }
    }

    /// A failed row carrying the error's class.
    pub fn failed(mut self, error: &registrar_core::PortError) -> Self {
        self.status = Status::Failed;
        self.message = format!("{error} ({})", error.class);
        self.error_class = Some(error.class);
        self
    }

    pub fn with(mut self, status: Status, message: impl Into<String>) -> Self {
        self.status = status;
        self.message = message.into();
        self
    }
}

/// A whole run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub dry_run: bool,
    pub registered: usize,
    pub updated: usize,
    pub unchanged: usize,
    pub deregistered: usize,
    pub conflicts: usize,
    pub skipped: usize,
    pub failed: usize,
    pub waiting: usize,
    /// Targets waiting for an administrator's OAuth consent.
    pub needs_authorization: usize,
    pub would_change: usize,
    pub manifest_entries: usize,
    pub planned_writes: usize,
    pub total: usize,
    /// Paths of gateways with no inbound authorization (anyone who can reach them can invoke
    /// their tools).
    pub unauthenticated: Vec<String>,
    /// Errors that were not about one resource (a list that failed, ...).
    pub errors: Vec<String>,
    pub results: Vec<Outcome>,
}

impl Report {
    pub fn new(
        dry_run: bool,
        mut results: Vec<Outcome>,
        errors: Vec<String>,
        manifest_entries: usize,
        planned_writes: usize,
    ) -> Self {
        let type_order = |t: &str| match t {
            "gateway" => 0,
            "target" => 1,
            _ => 2,
        };
        results.sort_by(|a, b| {
            (type_order(a.resource_type), &a.path, &a.resource_arn).cmp(&(
                type_order(b.resource_type),
                &b.path,
                &b.resource_arn,
            ))
        });
        let count = |s: Status| results.iter().filter(|r| r.status == s).count();
        Self {
            dry_run,
            registered: count(Status::Registered),
            updated: count(Status::Updated),
            unchanged: count(Status::Unchanged),
            deregistered: count(Status::Deregistered),
            conflicts: count(Status::Conflict),
            skipped: count(Status::Skipped),
            failed: count(Status::Failed),
            waiting: count(Status::Waiting),
            needs_authorization: count(Status::NeedsAuthorization),
            would_change: count(Status::DryRun),
            manifest_entries,
            planned_writes,
            total: results.len(),
            unauthenticated: Vec::new(),
            errors,
            results,
        }
    }

    /// Whether anything failed: the exit code is non-zero then.
    pub fn has_failures(&self) -> bool {
        self.failed > 0 || !self.errors.is_empty()
    }

    /// The FAQ's summary: header, counts, and the Type/Name/Path/Auth/Status table.
    pub fn to_text(&self) -> String {
        let rule = "=".repeat(95);
        let thin = "-".repeat(95);
        let mut out = String::new();
        let _ = writeln!(out, "{rule}\nAGENTCORE REGISTRAR SUMMARY\n{rule}");
        if self.dry_run {
            let _ = writeln!(
                out,
                "MODE: DRY-RUN (no changes made)\nWould change: {}",
                self.would_change
            );
        } else {
            let _ = writeln!(
                out,
                "Registered: {}  Updated: {}  Unchanged: {}  Deregistered: {}\nConflicts: {}  Skipped: {}  Waiting: {}  Failed: {}\nManifest entries: {}  Planned writes: {}",
                self.registered,
                self.updated,
                self.unchanged,
                self.deregistered,
                self.conflicts,
                self.skipped,
                self.waiting,
                self.failed,
                self.manifest_entries,
                self.planned_writes
            );
        }
        if self.needs_authorization > 0 {
            let _ = writeln!(
                out,
                "Needs authorization: {} (an administrator must complete OAuth consent; see NOTES)",
                self.needs_authorization
            );
        }
        let _ = writeln!(out, "\nDETAILS:\n{thin}");
        let _ = writeln!(
            out,
            "{:<10} {:<30} {:<25} {:<14} {:<12}",
            "Type", "Name", "Path", "Auth", "Status"
        );
        let _ = writeln!(out, "{thin}");
        for r in &self.results {
            let _ = writeln!(
                out,
                "{:<10} {:<30} {:<25} {:<14} {:<12}",
                r.resource_type,
                cut(&r.resource_name, 30),
                cut(&r.path, 25),
                cut(&r.auth_type, 14),
                r.status.as_str()
            );
        }
        let _ = writeln!(out, "{rule}");
        let notes: Vec<&Outcome> = self
            .results
            .iter()
            .filter(|r| {
                !r.message.is_empty() && !matches!(r.status, Status::Registered | Status::Unchanged)
            })
            .collect();
        if !notes.is_empty() {
            let _ = writeln!(out, "NOTES:");
            for r in notes {
                let _ = writeln!(
                    out,
                    "  {} {} [{}]: {}",
                    r.resource_type,
                    r.path,
                    r.status.as_str(),
                    r.message
                );
            }
        }
        for path in &self.unauthenticated {
            let _ = writeln!(
                out,
                "WARNING: gateway {path} has no inbound authorization (authorizerType NONE): anyone who can reach it can invoke its tools"
            );
        }
        for e in &self.errors {
            let _ = writeln!(out, "ERROR: {e}");
        }
        out
    }
}

/// Truncates to `width` characters, as the Python tool's table does.
fn cut(s: &str, width: usize) -> String {
    s.chars().take(width).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_rows_are_truncated_like_the_faq() {
        let row = Outcome::for_kind(
            ResourceKind::Gateway,
            "weather-time-observability-gateway",
            "arn",
            "/weather-time-observability-gateway",
            Status::DryRun,
            "",
        );
        let text = Report::new(true, vec![row], vec![], 0, 0).to_text();
        assert!(
            text.contains("gateway    weather-time-observability-gat /weather-time-observabili"),
            "{text}"
        );
        assert!(text.contains("MODE: DRY-RUN (no changes made)"));
    }
}
