//! Carries out a plan: registry writes, then the state they leave behind. A GET of the path is
//! authoritative before any create or delete (lists hide some entries).

use std::collections::BTreeMap;

use registrar_core::PortError;
use registrar_core::desired::{Collection, DesiredEntry, Pointing};
use registrar_core::enable::EnablePolicy;
use registrar_core::identity::{Owner, ResourceKind, ResourceRef};
use registrar_core::observed::Lifecycle;
use registrar_core::plan::{
    Action, CurrentEntry, DeregisterReason, Deregistration, Observation, PlanContext,
    RecordedResource, plan,
};
use registrar_core::ports::{AgentCore, Registry, StateStore};
use registrar_core::tokens::ManifestFields;

use crate::aws::fleet::Fleet;
use crate::resync::report::{Outcome, Status};

/// Everything the applier needs besides the action.
#[derive(Debug)]
pub struct Applier<'a, A, R, S> {
    pub agentcore: &'a Fleet<A>,
    pub registry: &'a R,
    pub state: &'a S,
    pub ctx: PlanContext,
    pub enable: EnablePolicy,
    pub recorded: BTreeMap<String, RecordedResource>,
    pub manifests: BTreeMap<String, ManifestFields>,
    /// Where the entries it creates or overwrites are noted, before each such write.
    pub written: &'a super::WriteLog,
}

fn fail(outcome: Outcome, e: &PortError) -> Outcome {
    outcome.failed(e)
}

impl<A: AgentCore, R: Registry, S: StateStore> Applier<'_, A, R, S> {
    /// Applies one action and reports what happened.
    pub async fn apply(&self, action: Action) -> Outcome {
        match action {
            Action::Register(d) => {
                let outcome = self.register(d.clone(), true).await;
                if outcome.status != Status::Conflict {
                    return outcome;
                }
                match self.free_abandoned_claim(&d).await {
                    Ok(true) => self.register(d, true).await,
                    Ok(false) => outcome,
                    Err(e) => fail(outcome, &e),
                }
            }
            Action::Update { desired, current } => self.update(desired, current).await,
            Action::Unchanged { desired, current } => self.unchanged(desired, current).await,
            Action::Deregister(d) => self.deregister(d).await,
            report_only @ (Action::Conflict { .. } | Action::Skip { .. }) => {
                Outcome::planned(&report_only)
            }
        }
    }

    /// No registry write; the state and manifest rows are brought up to date if needed.
    async fn unchanged(&self, desired: DesiredEntry, current: CurrentEntry) -> Outcome {
        let outcome = Outcome::for_desired(&desired, Status::Unchanged, "");
        match self.after_write(&desired, current.enabled, None).await {
            Ok(()) => outcome,
            Err(e) => fail(outcome, &e),
        }
    }

    /// Claims the path, confirms it is free with a GET, then creates the entry.
    async fn register(&self, d: DesiredEntry, first_try: bool) -> Outcome {
        let outcome = Outcome::for_desired(&d, Status::Registered, "");
        if let Err(e) = self.state.hold().await {
            return fail(outcome, &e);
        }
        match self.state.claim_path(&d.path, &d.resource.arn).await {
            Ok(None) => {}
            Ok(Some(holder)) => {
                return outcome.with(Status::Conflict, format!("path claimed by {holder}"));
            }
            Err(e) => return fail(outcome, &e),
        }
        match self.registry.get(d.collection(), &d.path).await {
            Ok(None) => {}
            Ok(Some(found)) => return Box::pin(self.replan(d, found)).await,
            Err(e) => return fail(outcome, &e),
        }
        if let Err(e) = self.state.hold().await {
            return fail(outcome, &e);
        }
        self.written.note(&d);
        match self.registry.register(&d).await {
            Ok(()) => {
                if let Err(e) = self.state.hold().await {
                    return fail(outcome, &e);
                }
            }
            // Someone registered the path since our GET: decide again on what is there now.
            Err(e) if e.class == registrar_core::ErrorClass::Conflict && first_try => {
                return match self.registry.get(d.collection(), &d.path).await {
                    Ok(Some(found)) => Box::pin(self.replan(d, found)).await,
                    Ok(None) => Box::pin(self.register(d, false)).await,
                    Err(e) => fail(outcome, &e),
                };
            }
            Err(e) => {
                self.release(&d).await;
                return fail(outcome, &e);
            }
        }
        let mut enabled = false;
        let mut message = String::new();
        if self.enable.at_registration(d.inbound_auth) {
            if let Err(e) = self.state.hold().await {
                return fail(outcome, &e);
            }
            match self
                .registry
                .set_enabled(d.collection(), &d.path, true)
                .await
            {
                Ok(()) => enabled = true,
                Err(e) => message = format!("registered, but enabling failed: {e}"),
            }
        }
        // Settled unless an enable failed or waits for the egress token (CUSTOM_JWT).
        let owed = if self.enable.at_registration(d.inbound_auth) {
            !enabled
        } else {
            self.enable.after_token(d.inbound_auth)
        };
        match self.after_write(&d, enabled, Some(!owed)).await {
            Ok(()) if message.is_empty() => outcome.with(
                Status::Registered,
                if enabled { "enabled" } else { "disabled" },
            ),
            Ok(()) => outcome.with(Status::Failed, message),
            Err(e) => fail(outcome, &e),
        }
    }

    /// The path turned out to be taken: plan again against what the GET returned.
    async fn replan(&self, d: DesiredEntry, found: CurrentEntry) -> Outcome {
        let obs = Observation {
            desired: vec![d.clone()],
            ..Observation::default()
        };
        let recorded: Vec<RecordedResource> = self
            .recorded
            .get(&d.resource.arn)
            .cloned()
            .into_iter()
            .collect();
        let action = plan(&obs, std::slice::from_ref(&found), &recorded, self.ctx)
            .into_iter()
            .find(|a| !matches!(a, Action::Deregister(_)));
        match action {
            Some(Action::Update { desired, current }) => self.update(desired, current).await,
            Some(Action::Unchanged { desired, current }) => self.unchanged(desired, current).await,
            Some(conflict @ Action::Conflict { .. }) => {
                if let Action::Conflict { desired, .. } = &conflict {
                    self.release(desired).await;
                }
                Outcome::planned(&conflict)
            }
            Some(skip @ Action::Skip { .. }) => Outcome::planned(&skip),
            _ => Outcome::for_desired(
                &d,
                Status::Failed,
                "registry answered 409 but GET shows no entry",
            ),
        }
    }

    async fn update(&self, d: DesiredEntry, current: CurrentEntry) -> Outcome {
        let outcome = Outcome::for_desired(&d, Status::Updated, "");
        let adopted = matches!(current.owner(self.ctx.adopt_legacy), Owner::Legacy(_));
        if let Err(e) = self.state.claim_path(&d.path, &d.resource.arn).await {
            return fail(outcome, &e);
        }
        if let Err(e) = self.state.hold().await {
            return fail(outcome, &e);
        }
        self.written.note(&d);
        if let Err(e) = self.registry.update(&d, &current).await {
            return fail(outcome, &e);
        }
        // A lease lost while the write was in flight: it may have landed after the next
        // holder's work, which the caller then looks at again (see WriteLog).
        if let Err(e) = self.state.hold().await {
            return fail(outcome, &e);
        }
        match self.after_write(&d, current.enabled, None).await {
            Ok(()) => outcome.with(
                Status::Updated,
                if adopted {
                    "adopted from agentcore-sync"
                } else {
                    ""
                },
            ),
            Err(e) => fail(outcome, &e),
        }
    }

    /// Records the applied entry and its manifest row. `decided` is `Some` when this run just
    /// registered the entry (whether its enabled state is now settled); `None` for an existing
    /// entry, whose record says whether an enable is still owed (invariant 6: set once).
    async fn after_write(
        &self,
        d: &DesiredEntry,
        enabled: bool,
        decided: Option<bool>,
    ) -> Result<(), PortError> {
        let previous = self.recorded.get(&d.resource.arn);
        let enabled_set = match (decided, previous) {
            (Some(settled), _) => settled,
            (None, Some(p)) if p.enabled_set => true,
            (None, Some(_)) if enabled => true,
            (None, Some(_)) if self.enable.at_registration(d.inbound_auth) => {
                // The enable after our registration failed earlier: owed once, done now.
                self.state.hold().await?;
                self.registry
                    .set_enabled(d.collection(), &d.path, true)
                    .await?;
                true
            }
            (None, Some(_)) => false,
            // Adopted, or our state was lost: the operator owns the enabled state.
            (None, None) => true,
        };
        let row = RecordedResource::written(d, enabled_set);
        if previous != Some(&row) {
            self.state.record(&row).await?;
        }
        match (&d.manifest, self.manifests.get(&d.resource.arn)) {
            (Some(want), have) if have != Some(want) => self.state.put_manifest(want).await?,
            (None, Some(_)) => self.state.delete_manifest(&d.resource.arn).await?,
            _ => {}
        }
        Ok(())
    }

    async fn release(&self, d: &DesiredEntry) {
        if let Err(e) = self.state.release_path(&d.path, &d.resource.arn).await {
            tracing::warn!(path = %d.path, error = %e, "Path claim could not be released.");
        }
    }

    /// After a registration ended in a conflict: releases the claim on `d`'s path when another
    /// resource holds it that AgentCore answers NotFound for and that has no entry of ours at
    /// the path (it claimed the path and was deleted before it registered, or its entry was
    /// removed by hand), so the registration can be tried again (`Ok(true)`). Such a claim
    /// would otherwise block the path until removed by hand. A holder that exists in any state,
    /// whose ARN does not say how to read it again, or that is outside what this worker reads
    /// keeps its claim (`Ok(false)`: the conflict stands); a holder that cannot be read now
    /// (throttling, an outage) keeps it too, and the error is returned so the key is retried.
    /// The conflict may have been the registry's (an entry at the path): then no other resource
    /// holds the claim, and the claim this call takes to find out is given back.
    async fn free_abandoned_claim(&self, d: &DesiredEntry) -> Result<bool, PortError> {
        let Some(holder) = self.state.claim_path(&d.path, &d.resource.arn).await? else {
            self.release(d).await;
            return Ok(false);
        };
        let Some(resource) = ResourceRef::from_arn(&holder) else {
            return Ok(false);
        };
        let agentcore = match self
            .agentcore
            .route(&resource.account, &resource.region)
            .await
        {
            Ok(agentcore) => agentcore,
            Err(e) if e.class == registrar_core::ErrorClass::Terminal => return Ok(false),
            Err(e) => return Err(e),
        };
        let found = match resource.kind {
            ResourceKind::Gateway => agentcore.get_gateway(&resource.id).await?.is_some(),
            ResourceKind::Runtime => agentcore.get_runtime(&resource.id).await?.is_some(),
            ResourceKind::Target => {
                let gateway_id = resource.gateway_id.clone().unwrap_or_default();
                match agentcore.get_gateway(&gateway_id).await? {
                    Some(gw) => agentcore.get_target(&gw, &resource.id).await?.is_some(),
                    None => false,
                }
            }
        };
        if found {
            return Ok(false);
        }
        // Servers and agents share paths: the holder's entry may be in either collection.
        for collection in [Collection::Server, Collection::Agent] {
            if let Some(entry) = self.registry.get(collection, &d.path).await?
                && entry
                    .owner(self.ctx.adopt_legacy)
                    .resource()
                    .is_some_and(|r| r.arn == holder)
            {
                // Its deregistration (its own Delete event, or a rescan) frees the path.
                return Ok(false);
            }
        }
        self.state.release_path(&d.path, &holder).await?;
        tracing::info!(path = %d.path, holder = %holder, "Released the path claim of a resource that is gone and has no entry of ours.");
        Ok(true)
    }

    /// Deregisters only on authority: AgentCore must confirm the resource is gone, and a GET
    /// must show the entry is still ours.
    async fn deregister(&self, d: Deregistration) -> Outcome {
        let outcome =
            Outcome::for_resource(&d.resource, &d.name, &d.path, Status::Deregistered, "");
        if d.reason == DeregisterReason::Gone {
            match self.still_exists(&d.resource).await {
                Ok(Some(status)) => {
                    return outcome.with(
                        Status::Skipped,
                        format!("kept: AgentCore still reports it {status}"),
                    );
                }
                Ok(None) => {}
                Err(e) => return fail(outcome, &e),
            }
        }
        let expected: Vec<Pointing> = self
            .recorded
            .get(&d.resource.arn)
            .and_then(|r| r.pointing.clone())
            .into_iter()
            .collect();
        match self.registry.get(d.collection, &d.path).await {
            Ok(Some(found)) => {
                match found.verify(&d.resource.arn, &expected, self.ctx.identity, false) {
                    Ok(()) => {
                        if let Err(e) = self.state.hold().await {
                            return fail(outcome, &e);
                        }
                        if let Err(e) = self.registry.remove(d.collection, &d.path).await {
                            return fail(outcome, &e);
                        }
                    }
                    Err(why) => {
                        return outcome.with(
                            Status::Conflict,
                            format!("kept: the entry at this path is not verified as ours: {why}"),
                        );
                    }
                }
            }
            Ok(None) => {}
            Err(e) => return fail(outcome, &e),
        }
        let cleanup = async {
            self.state.release_path(&d.path, &d.resource.arn).await?;
            if matches!(d.reason, DeregisterReason::Gone) {
                self.state.forget(&d.resource.arn).await?;
                self.state.delete_manifest(&d.resource.arn).await?;
            }
            Ok::<(), PortError>(())
        };
        match cleanup.await {
            Ok(()) => {
                let why = match &d.reason {
                    DeregisterReason::Gone => "resource gone from AgentCore".to_owned(),
                    DeregisterReason::Moved { to } => format!("moved to {to}"),
                };
                outcome.with(Status::Deregistered, why)
            }
            Err(e) => fail(outcome, &e),
        }
    }

    /// `Some(status)` when the resource still exists and is not FAILED or DELETING.
    async fn still_exists(&self, r: &ResourceRef) -> Result<Option<String>, PortError> {
        let agentcore = self.agentcore.route(&r.account, &r.region).await?;
        let lifecycle = match r.kind {
            ResourceKind::Gateway => agentcore.get_gateway(&r.id).await?.map(|g| g.lifecycle),
            ResourceKind::Runtime => agentcore.get_runtime(&r.id).await?.map(|g| g.lifecycle),
            ResourceKind::Target => {
                let gateway_id = r.gateway_id.clone().unwrap_or_default();
                match agentcore.get_gateway(&gateway_id).await? {
                    Some(gw) => agentcore.get_target(&gw, &r.id).await?.map(|t| t.lifecycle),
                    None => None,
                }
            }
        };
        Ok(lifecycle
            .filter(|l| !matches!(l, Lifecycle::Failed(_) | Lifecycle::Deleting))
            .map(|l| l.as_str().to_owned()))
    }
}
