//! Carries out a plan: registry writes, then the state they leave behind. Lists hide some
//! entries, so what a path holds is learnt from the path itself before any create or delete: a
//! create from its registration, which never overwrites and answers 409 for any taken path (a
//! GET then says by what); a delete from a GET.

use std::collections::BTreeMap;

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
use registrar_core::{ErrorClass, PortError};

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
    /// The state's rows, by resource ARN (borrowed: a rescan holds one copy of the fleet's).
    pub recorded: BTreeMap<&'a str, &'a RecordedResource>,
    pub manifests: Manifests,
    /// Where the entries it creates or overwrites are noted, before each such write.
    pub written: &'a super::WriteLog,
}

/// The manifest rows writes compare with, by resource ARN: every row there is (a rescan reads
/// them all at once), or those known so far (a key reconcile's, read with its record), the rest
/// read when first needed, before any registry write of the entry, and kept.
#[derive(Debug, Default)]
pub struct Manifests {
    rows: std::sync::Mutex<BTreeMap<String, Option<ManifestFields>>>,
    complete: bool,
}

impl Manifests {
    /// Every row there is: an ARN not among them has none.
    pub fn all(rows: BTreeMap<String, ManifestFields>) -> Self {
        Self {
            rows: std::sync::Mutex::new(rows.into_iter().map(|(k, v)| (k, Some(v))).collect()),
            complete: true,
        }
    }

    /// What is known of some ARNs (`None`: no row); the others are read when needed.
    pub fn known(rows: BTreeMap<String, Option<ManifestFields>>) -> Self {
        Self {
            rows: std::sync::Mutex::new(rows),
            complete: false,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Option<ManifestFields>>> {
        self.rows
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether a row is known to exist for `arn`.
    pub fn contains_key(&self, arn: &str) -> bool {
        matches!(self.lock().get(arn), Some(Some(_)))
    }

    /// The row of `arn`: as known, or read now (and kept).
    async fn of<S: StateStore>(
        &self,
        state: &S,
        arn: &str,
    ) -> Result<Option<ManifestFields>, PortError> {
        if let Some(known) = self.lock().get(arn) {
            return Ok(known.clone());
        }
        if self.complete {
            return Ok(None);
        }
        let read = state.manifest(arn).await?;
        self.lock().insert(arn.to_owned(), read.clone());
        Ok(read)
    }
}

/// Which of a registration's one-time retries it has made: after freeing an abandoned claim on
/// its path, and after a 409 that the GET showed nothing behind (each a race with another
/// writer).
#[derive(Debug, Clone, Copy, Default)]
struct Retries {
    freed: bool,
    vanished: bool,
}

/// The event key that finds `resource`'s record.
fn key_of(
    resource: &registrar_core::identity::ResourceRef,
) -> registrar_core::identity::ResourceKey {
    registrar_core::identity::ResourceKey {
        kind: resource.kind,
        account: resource.account.clone(),
        region: resource.region.clone(),
        id: resource.id.clone(),
        gateway_id: resource.gateway_id.clone(),
    }
}

fn fail(outcome: Outcome, e: &PortError) -> Outcome {
    outcome.failed(e)
}

impl<A: AgentCore, R: Registry, S: StateStore> Applier<'_, A, R, S> {
    /// Applies one action and reports what happened.
    pub async fn apply(&self, action: Action) -> Outcome {
        match action {
            Action::Register(d) => self.register(d, Retries::default()).await,
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

    /// Claims the path, then creates the entry with a registration that never overwrites: one
    /// call when the path is free. The registry answers 409 for any taken path, whoever holds
    /// it and whatever its state (a draft or an entry the caller may not list included), so
    /// only then does a GET, which is authoritative, say what holds it, and the plan is made
    /// again on that: our own entry (its record lost) is taken back, left as it is or updated,
    /// an entry of the Python tool adopted when adoption is on, anything else is a conflict and
    /// never overwritten.
    ///
    /// A claim held by another resource that is gone is freed and the registration tried again,
    /// as is one whose 409 shows nothing there by the GET: each once (`retries`).
    async fn register(&self, d: DesiredEntry, retries: Retries) -> Outcome {
        let outcome = Outcome::for_desired(&d, Status::Registered, "");
        if let Err(e) = self.state.hold().await {
            return fail(outcome, &e);
        }
        // The manifest row is read with the claim: known before the registry write, as
        // `after_write` compares with it.
        let (claimed, manifest) = futures::join!(
            self.state.claim_path(&d.path, &d.resource.arn),
            self.manifests.of(self.state, &d.resource.arn)
        );
        match claimed {
            Ok(None) => {}
            Ok(Some(holder)) => {
                let conflict = outcome.with(Status::Conflict, format!("path claimed by {holder}"));
                if retries.freed {
                    return conflict;
                }
                return match self.free_abandoned_claim(&d, &holder).await {
                    Ok(true) => {
                        let retries = Retries {
                            freed: true,
                            ..retries
                        };
                        Box::pin(self.register(d, retries)).await
                    }
                    Ok(false) => conflict,
                    Err(e) => fail(conflict, &e),
                };
            }
            Err(e) => return fail(outcome, &e),
        }
        // The claim stays: it may be an earlier attempt's, whose entry is registered (its record
        // not yet written), and the retry takes it again as its own.
        if let Err(e) = manifest {
            return fail(outcome, &e);
        }
        if let Err(e) = self.state.hold().await {
            return fail(outcome, &e);
        }
        // Noted even if the answer is a 409: a retried registration whose first attempt landed
        // answers 409 too.
        self.written.note(&d);
        match self.registry.register(&d).await {
            Ok(()) => {
                if let Err(e) = self.state.hold().await {
                    return fail(outcome, &e);
                }
            }
            // The path is taken: decide on what a GET shows is there.
            Err(taken) if taken.class == ErrorClass::Conflict => {
                return match self.registry.get(d.collection(), &d.path).await {
                    Ok(Some(found)) => Box::pin(self.replan(d, found)).await,
                    // Removed since the 409: once more.
                    Ok(None) if !retries.vanished => {
                        let retries = Retries {
                            vanished: true,
                            ..retries
                        };
                        Box::pin(self.register(d, retries)).await
                    }
                    Ok(None) => {
                        self.release(&d).await;
                        fail(outcome, &taken)
                    }
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
            .get(d.resource.arn.as_str())
            .map(|r| (*r).clone())
            .into_iter()
            .collect();
        // The action about this path: the record may hold another (a renamed resource's old
        // path, which the policy may keep with a Skip of its own), or this path in the other
        // collection (a runtime whose protocol changed), kept with a Skip too. A write or
        // conflict about the entry wins over such a Skip.
        let mut about: Vec<Action> = plan(obs, std::slice::from_ref(&found), &recorded, self.ctx)
            .into_iter()
            .filter(|a| !matches!(a, Action::Deregister(_)) && a.path() == d.path)
            .collect();
        about.sort_by_key(|a| matches!(a, Action::Skip { .. }));
        let action = about.into_iter().next();
        match action {
            Some(Action::Update { desired, current }) => self.update(desired, current).await,
            Some(Action::Unchanged { desired, current }) => self.unchanged(desired, current).await,
            Some(conflict @ Action::Conflict { .. }) => {
                if let Action::Conflict { desired, .. } = &conflict {
                    self.release(desired).await;
                }
                Outcome::planned(&conflict)
            }
            Some(skip @ Action::Skip { .. }) => {
                // The claim the registration took stays only with this resource's own entry.
                let its_own = found
                    .owner(self.ctx.adopt_legacy)
                    .resource()
                    .is_some_and(|r| r.arn == d.resource.arn);
                if !its_own {
                    self.release(&d).await;
                }
                Outcome::planned(&skip)
            }
            _ => {
                self.release(&d).await;
                Outcome::for_desired(
                    &d,
                    Status::Failed,
                    "registry answered 409 but GET shows no entry",
                )
            }
        }
    }

    async fn update(&self, d: DesiredEntry, current: CurrentEntry) -> Outcome {
        let outcome = Outcome::for_desired(&d, Status::Updated, "");
        let adopted = matches!(current.owner(self.ctx.adopt_legacy), Owner::Legacy(_));
        // The manifest row is known before the registry write, as `after_write` compares with it.
        let (claimed, manifest) = futures::join!(
            self.state.claim_path(&d.path, &d.resource.arn),
            self.manifests.of(self.state, &d.resource.arn)
        );
        if let Err(e) = claimed.map(drop).and(manifest.map(drop)) {
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
        let previous = self.recorded.get(d.resource.arn.as_str()).copied();
        // `made_now`: an enable this run just made (or a registration that owes none). Every
        // other value comes from the snapshot, which can be minutes old (a rescan's), and gives
        // way to a row changed since: the token loop enabled the entry, or a reconcile
        // registered it again and owes its enable.
        let (enabled_set, made_now) = match (decided, previous) {
            (Some(settled), _) => (settled, settled),
            (None, Some(p)) if p.enabled_set => (true, false),
            (None, Some(_)) if enabled => (true, false),
            (None, Some(_)) if self.enable.at_registration(d.inbound_auth) => {
                // The enable after our registration failed earlier: owed once, done now, by
                // whoever claims it. Another writer may have made it since the snapshot (an
                // operator may have disabled the entry since): then it is not made again.
                self.state.hold().await?;
                if !self.state.claim_enable(&d.resource.arn).await? {
                    (true, false)
                } else if let Err(e) = self
                    .registry
                    .set_enabled(d.collection(), &d.path, true)
                    .await
                {
                    if let Err(again) = self.state.owe_enable_again(&d.resource.arn).await {
                        tracing::warn!(arn = %d.resource.arn, error = %again, "The enable failed and could not be recorded as still owed; it will not be retried.");
                    }
                    return Err(e);
                } else {
                    (true, true)
                }
            }
            (None, Some(_)) => (false, false),
            // Adopted, or our state was lost: the operator owns the enabled state.
            (None, None) => (true, false),
        };
        // The manifest row before the record: a record carrying this fingerprint then always
        // means the row matches this body.
        match (
            &d.manifest,
            self.manifests.of(self.state, &d.resource.arn).await?,
        ) {
            (Some(want), have) if have.as_ref() != Some(want) => {
                self.state.put_manifest(want).await?
            }
            (None, Some(_)) => self.state.delete_manifest(&d.resource.arn).await?,
            _ => {}
        }
        let row = RecordedResource::written(d, enabled_set);
        if previous == Some(&row) {
            return Ok(());
        }
        if made_now {
            self.state.record(&row).await?;
        } else {
            // Conditional on the stored row being as the snapshot saw it (invariant 6).
            self.state
                .record_since(&row, previous.map(|p| p.enabled_set))
                .await?;
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
    async fn free_abandoned_claim(
        &self,
        d: &DesiredEntry,
        holder: &str,
    ) -> Result<bool, PortError> {
        let holder = holder.to_owned();
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
        // What else was kept for it at this path goes first: its record would make a later
        // Delete event of it plan the removal of the new entry, and its manifest row be refused
        // hourly. The claim goes last, so that a failure part-way leaves a retry something to
        // find: the claim still held, the record still there.
        if let Some(record) = self.state.lookup(&key_of(&resource)).await?
            && record.resource.arn == holder
            && record.path == d.path
        {
            self.state.delete_manifest(&holder).await?;
            self.state.forget(&holder).await?;
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
            .get(d.resource.arn.as_str())
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
        // The manifest row, then the record, then the claim: once the record is forgotten a
        // retry finds nothing to deregister, and would leave the row behind; a claim left by a
        // failure after that is released when another resource wants the path (its holder is
        // gone, with no entry of ours).
        let cleanup = async {
            if matches!(d.reason, DeregisterReason::Gone) {
                self.state.delete_manifest(&d.resource.arn).await?;
                self.state.forget(&d.resource.arn).await?;
            }
            self.state.release_path(&d.path, &d.resource.arn).await?;
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::Duration;

    use registrar_core::desired::{Collection, DeriveOptions, gateway_entry};
    use registrar_core::ports::{LeaseStore, ResourceStore};
    use registrar_testkit::fixtures::{agent_entry, gateway, server_entry};
    use registrar_testkit::{MemoryAgentCore, MemoryRegistry, MemoryState, TestClock};

    use super::*;
    use crate::engine::WriteLog;

    struct World<R = MemoryRegistry> {
        fleet: Fleet<MemoryAgentCore>,
        registry: R,
        state: MemoryState,
        written: WriteLog,
    }

    fn world() -> World {
        world_with(MemoryRegistry::new("registrar"))
    }

    fn world_with<R>(registry: R) -> World<R> {
        use registrar_testkit::fixtures::{ACCOUNT, REGION};
        World {
            fleet: Fleet::one(MemoryAgentCore::new(ACCOUNT, REGION)),
            registry,
            state: MemoryState::new(Arc::new(TestClock::standard())),
            written: WriteLog::default(),
        }
    }

    impl<R: Registry> World<R> {
        fn applier(&self, enable: EnablePolicy) -> Applier<'_, MemoryAgentCore, R, MemoryState> {
            self.applier_on(&self.state, enable)
        }

        fn applier_on<'a>(
            &'a self,
            state: &'a MemoryState,
            enable: EnablePolicy,
        ) -> Applier<'a, MemoryAgentCore, R, MemoryState> {
            Applier {
                agentcore: &self.fleet,
                registry: &self.registry,
                state,
                ctx: PlanContext {
                    adopt_legacy: true,
                    ..PlanContext::default()
                },
                enable,
                recorded: BTreeMap::new(),
                manifests: Manifests::default(),
                written: &self.written,
            }
        }

        /// Registers `d` under the default enable policy.
        async fn register(&self, d: &DesiredEntry) {
            let o = self
                .applier(EnablePolicy::Authenticated)
                .apply(Action::Register(d.clone()))
                .await;
            assert_eq!(o.status, Status::Registered, "{o:?}");
        }

        /// Applies `desired` as an update of the entry now registered, from a snapshot in
        /// which its record was `stale` (a rescan's, minutes old).
        async fn update_from(&self, stale: &RecordedResource, desired: DesiredEntry) {
            let current = self
                .registry
                .get(Collection::Server, &desired.path)
                .await
                .expect("registry")
                .expect("entry");
            let mut applier = self.applier(EnablePolicy::Authenticated);
            applier.recorded = BTreeMap::from([(stale.resource.arn.as_str(), stale)]);
            let o = applier.apply(Action::Update { desired, current }).await;
            assert_eq!(o.status, Status::Updated, "{o:?}");
        }

        async fn recorded(&self, arn: &str) -> Option<RecordedResource> {
            let rows = self.state.resources().await.expect("state");
            rows.into_iter().find(|r| r.resource.arn == arn)
        }

        /// Whether the path is free to claim for another resource (our claim was released).
        async fn claim_free(&self, path: &str) -> bool {
            let other = "arn:aws:bedrock-agentcore:us-east-1:123456789012:gateway/gw-other0000";
            let free = self.state.claim_path(path, other).await.expect("state");
            self.state.release_path(path, other).await.expect("state");
            free.is_none()
        }
    }

    /// The entry of gateway `name` (`id`, CUSTOM_JWT when `issuer`), with `description`.
    fn described(name: &str, id: &str, issuer: Option<&str>, description: &str) -> DesiredEntry {
        let mut gw = gateway(name, id, issuer);
        gw.description = Some(description.into());
        gateway_entry(&gw, DeriveOptions::default()).expect("registrable")
    }

    /// A CUSTOM_JWT gateway's entry (its enable waits for a token), described as `description`.
    fn secured(description: &str) -> DesiredEntry {
        described(
            "secured",
            "gw-secured",
            Some("https://idp.example.com"),
            description,
        )
    }

    fn calls(pairs: &[(&'static str, u64)]) -> BTreeMap<&'static str, u64> {
        pairs.iter().copied().collect()
    }

    /// Another publisher's entry at `path`.
    fn foreign(collection: Collection, path: &str, status: Option<&str>) -> CurrentEntry {
        CurrentEntry {
            collection,
            path: path.to_owned(),
            name: "Not Ours".into(),
            metadata: serde_json::json!({"source": "someone-else"})
                .as_object()
                .cloned()
                .unwrap_or_default(),
            tags: vec!["mine".into()],
            enabled: false,
            status: status.map(str::to_owned),
            pointing: Some(Pointing::new("https://elsewhere.example.com/mcp", None)),
            registered_by: Some("mallory".into()),
            mcp_endpoint: None,
        }
    }

    #[tokio::test]
    async fn an_update_from_a_stale_snapshot_never_takes_back_an_enable_the_token_loop_made() {
        let w = world();
        let d = secured("first");
        w.register(&d).await;
        // A rescan's snapshot: the enable still owed (a CUSTOM_JWT entry waits for its token).
        let stale = w.recorded(&d.resource.arn).await.expect("recorded");
        assert!(!stale.enabled_set);
        // Meanwhile the token loop delivers the first token and enables the entry.
        w.state.mark_enabled(&d.resource.arn).await.expect("mark");
        w.update_from(&stale, secured("second")).await;
        let row = w.recorded(&d.resource.arn).await.expect("recorded");
        assert!(row.enabled_set, "the token loop's enable stays recorded");
    }

    #[tokio::test]
    async fn an_update_from_a_stale_snapshot_never_loses_an_enable_owed_since() {
        let w = world();
        let d = secured("first");
        w.register(&d).await;
        w.state.mark_enabled(&d.resource.arn).await.expect("mark");
        // A rescan's snapshot: enabled.
        let stale = w.recorded(&d.resource.arn).await.expect("recorded");
        assert!(stale.enabled_set);
        // Meanwhile a reconcile registers the entry anew (an operator removed it): its enable
        // is owed again.
        let anew = RecordedResource {
            enabled_set: false,
            ..stale.clone()
        };
        w.state.record(&anew).await.expect("record");
        w.update_from(&stale, secured("second")).await;
        let row = w.recorded(&d.resource.arn).await.expect("recorded");
        assert!(!row.enabled_set, "the enable owed since stays owed");
    }

    #[tokio::test]
    async fn a_stale_snapshot_never_makes_an_enable_made_since_again() {
        let w = world();
        let iam = |description: &str| described("open", "gw-open", None, description);
        let d = iam("first");
        w.register(&d).await;
        let done = w.recorded(&d.resource.arn).await.expect("recorded");
        assert!(done.enabled_set, "enabled at registration");
        // A rescan's snapshot from before the enable was made: still owed.
        let stale = RecordedResource {
            enabled_set: false,
            ..done.clone()
        };
        // Since then an operator disabled the entry.
        w.registry
            .set_enabled(Collection::Server, &d.path, false)
            .await
            .expect("disable");
        w.registry.clear_calls();
        w.update_from(&stale, iam("second")).await;
        assert_eq!(
            w.registry.calls().get("toggle"),
            None,
            "the operator's disable stands"
        );
        let row = w.recorded(&d.resource.arn).await.expect("recorded");
        assert!(row.enabled_set, "the enable stays made");
    }

    #[tokio::test]
    async fn a_new_resource_costs_one_registration_and_the_enable_its_policy_asks_for() {
        let w = world();
        let d = server_entry("orders", "gw-orders");
        let o = w
            .applier(EnablePolicy::Authenticated)
            .apply(Action::Register(d.clone()))
            .await;
        assert_eq!(
            (o.status, o.message.as_str()),
            (Status::Registered, "enabled")
        );
        assert_eq!(
            w.registry.calls(),
            calls(&[("register", 1), ("toggle", 1)]),
            "no GET: the registration itself says whether the path is free"
        );
        let row = w.recorded(&d.resource.arn).await.expect("recorded");
        assert!(row.enabled_set, "the enable is settled");
        assert!(!w.claim_free(&d.path).await, "the path stays claimed");

        let a = agent_entry("sre", "rt_sre-0123456789");
        w.registry.clear_calls();
        let o = w
            .applier(EnablePolicy::Authenticated)
            .apply(Action::Register(a.clone()))
            .await;
        assert_eq!(o.status, Status::Registered);
        assert_eq!(w.registry.calls(), calls(&[("register", 1), ("toggle", 1)]));

        // Nothing to enable: the registration alone.
        let quiet = server_entry("quiet", "gw-quiet");
        w.registry.clear_calls();
        let o = w
            .applier(EnablePolicy::None)
            .apply(Action::Register(quiet.clone()))
            .await;
        assert_eq!(
            (o.status, o.message.as_str()),
            (Status::Registered, "disabled")
        );
        assert_eq!(w.registry.calls(), calls(&[("register", 1)]));

        // CUSTOM_JWT: enabled once its token is delivered, not at registration.
        let jwt = gateway_entry(
            &gateway("secured", "gw-secured", Some("https://idp.example.com")),
            DeriveOptions::default(),
        )
        .expect("registrable");
        w.registry.clear_calls();
        let o = w
            .applier(EnablePolicy::Authenticated)
            .apply(Action::Register(jwt.clone()))
            .await;
        assert_eq!(
            (o.status, o.message.as_str()),
            (Status::Registered, "disabled")
        );
        assert_eq!(w.registry.calls(), calls(&[("register", 1)]));
        let row = w.recorded(&jwt.resource.arn).await.expect("recorded");
        assert!(
            !row.enabled_set,
            "the enable is owed until the token is in place"
        );
    }

    #[tokio::test]
    async fn another_publishers_entry_listed_or_a_hidden_draft_is_a_conflict_found_by_the_409() {
        for hidden in [false, true] {
            let w = world();
            let d = server_entry("orders", "gw-orders");
            let theirs = foreign(Collection::Server, &d.path, hidden.then_some("draft"));
            w.registry.seed(theirs.clone());
            if hidden {
                w.registry.hide(&d.path);
            }
            let o = w
                .applier(EnablePolicy::All)
                .apply(Action::Register(d.clone()))
                .await;
            assert_eq!(o.status, Status::Conflict, "hidden {hidden}: {o:?}");
            assert_eq!(
                w.registry.calls(),
                calls(&[("register", 1), ("get", 1)]),
                "hidden {hidden}: refused, then one GET to see by what"
            );
            assert_eq!(w.registry.writes(), 0, "never overwritten, never enabled");
            assert_eq!(
                w.registry
                    .get(Collection::Server, &d.path)
                    .await
                    .expect("get"),
                Some(theirs)
            );
            assert!(w.recorded(&d.resource.arn).await.is_none());
            assert!(w.claim_free(&d.path).await, "the claim is released");
        }

        // The same for an agent path.
        let w = world();
        let a = agent_entry("sre", "rt_sre-0123456789");
        w.registry
            .seed(foreign(Collection::Agent, &a.path, Some("draft")));
        let o = w
            .applier(EnablePolicy::All)
            .apply(Action::Register(a.clone()))
            .await;
        assert_eq!(o.status, Status::Conflict);
        assert_eq!(w.registry.writes(), 0);
    }

    #[tokio::test]
    async fn our_own_entry_whose_record_was_lost_is_taken_back_through_the_409() {
        let w = world();
        let d = server_entry("orders", "gw-orders");
        w.registry
            .register(&d)
            .await
            .expect("an earlier run registered it");
        w.registry.hide(&d.path);
        w.registry.clear_calls();
        let o = w
            .applier(EnablePolicy::All)
            .apply(Action::Register(d.clone()))
            .await;
        assert_eq!(o.status, Status::Unchanged, "{o:?}");
        assert_eq!(
            w.registry.calls(),
            calls(&[("register", 1), ("get", 1)]),
            "no toggle: without a record the operator owns the enabled state"
        );
        let row = w.recorded(&d.resource.arn).await.expect("recorded again");
        assert!(row.enabled_set);

        // Changed since: updated in place.
        let w = world();
        w.registry.register(&d).await.expect("registered");
        w.registry.clear_calls();
        let mut changed = d.clone();
        changed.fingerprint = format!("{}-2", d.fingerprint);
        if let registrar_core::desired::EntryBody::Server(s) = &mut changed.body {
            s.description = "changed".into();
            s.metadata
                .insert("fingerprint".into(), changed.fingerprint.clone().into());
        }
        let o = w
            .applier(EnablePolicy::All)
            .apply(Action::Register(changed.clone()))
            .await;
        assert_eq!(o.status, Status::Updated, "{o:?}");
        assert_eq!(
            w.registry.calls(),
            calls(&[("register", 1), ("get", 1), ("update", 1)])
        );
    }

    #[tokio::test]
    async fn a_409_for_a_renamed_resource_is_replanned_for_its_new_path() {
        // Recorded at its old path, which upsert-only keeps; its registration at the new path
        // landed before (its answer lost), so this one answers 409 and the GET shows it.
        let w = world();
        let old = server_entry("orders", "gw-orders");
        let renamed = server_entry("orders-v2", "gw-orders");
        assert_eq!(old.resource.arn, renamed.resource.arn);
        w.registry.register(&old).await.expect("registered");
        w.registry.register(&renamed).await.expect("registered");
        let stale = RecordedResource::written(&old, true);
        w.state.record(&stale).await.expect("state");
        let mut applier = w.applier(EnablePolicy::All);
        applier.ctx.policy = registrar_core::plan::Policy::UpsertOnly;
        applier.recorded = BTreeMap::from([(stale.resource.arn.as_str(), &stale)]);
        let o = applier.apply(Action::Register(renamed.clone())).await;
        assert_eq!(o.status, Status::Unchanged, "{o:?}");
        assert_eq!(o.path, renamed.path);
        let row = w.recorded(&renamed.resource.arn).await.expect("recorded");
        assert_eq!(row.path, renamed.path, "recorded at the new path");
    }

    #[tokio::test]
    async fn a_409_for_a_runtime_whose_protocol_changed_is_replanned_for_its_new_entry() {
        // Recorded as an MCP server; now A2A, an agent at the same path, whose registration
        // landed before (its answer lost). Upsert-only keeps the old server entry with a Skip
        // of the same path, which must not stand for the agent's outcome.
        let w = world();
        let agent = agent_entry("sre", "rt_sre-0123456789");
        let server = registrar_core::desired::runtime_entry(
            &registrar_core::observed::RuntimeSnapshot {
                protocol: registrar_core::observed::ServerProtocol::Mcp,
                ..registrar_testkit::fixtures::runtime("sre", "rt_sre-0123456789")
            },
            registrar_core::desired::DeriveOptions::default(),
        )
        .expect("registrable");
        assert_eq!(
            (server.path.as_str(), server.collection()),
            (agent.path.as_str(), Collection::Server)
        );
        w.registry.register(&agent).await.expect("registered");
        let stale = RecordedResource::written(&server, true);
        w.state.record(&stale).await.expect("state");
        let mut applier = w.applier(EnablePolicy::All);
        applier.ctx.policy = registrar_core::plan::Policy::UpsertOnly;
        applier.recorded = BTreeMap::from([(stale.resource.arn.as_str(), &stale)]);
        let o = applier.apply(Action::Register(agent.clone())).await;
        assert_eq!(o.status, Status::Unchanged, "{o:?}");
        let row = w.recorded(&agent.resource.arn).await.expect("recorded");
        assert_eq!(row.collection, Collection::Agent, "recorded as the agent");
    }

    #[tokio::test]
    async fn an_entry_of_the_python_tool_is_adopted_through_the_409() {
        let w = world();
        let d = server_entry("orders", "gw-orders");
        let mut legacy = CurrentEntry::written(&d, false, None);
        legacy
            .metadata
            .insert("source".into(), "agentcore-sync".into());
        w.registry.seed(legacy);
        let o = w
            .applier(EnablePolicy::All)
            .apply(Action::Register(d.clone()))
            .await;
        assert_eq!(
            (o.status, o.message.as_str()),
            (Status::Updated, "adopted from agentcore-sync")
        );
        assert_eq!(
            w.registry.calls(),
            calls(&[("register", 1), ("get", 1), ("update", 1)])
        );
    }

    #[tokio::test]
    async fn a_path_claimed_by_another_resource_costs_no_registry_call() {
        let w = world();
        let d = server_entry("orders", "gw-orders");
        let other = server_entry("Orders", "gw-orders-2");
        assert_eq!(d.path, other.path);
        // A live holder (a gone, never-registered one's claim is released).
        w.fleet.members()[0].put_gateway(registrar_testkit::fixtures::gateway(
            "Orders",
            "gw-orders-2",
            None,
        ));
        w.state
            .claim_path(&other.path, &other.resource.arn)
            .await
            .expect("state");
        let o = w
            .applier(EnablePolicy::All)
            .apply(Action::Register(d.clone()))
            .await;
        assert_eq!(o.status, Status::Conflict);
        assert!(w.registry.calls().is_empty(), "{:?}", w.registry.calls());
    }

    #[tokio::test(start_paused = true)]
    async fn a_lost_lease_stops_a_registration_before_any_registry_call() {
        let w = world();
        let ttl = Duration::from_secs(3);
        let lease = w
            .state
            .acquire_lease("k", "a", ttl)
            .await
            .expect("store")
            .expect("free");
        let fenced = w.state.fenced(&lease);
        tokio::time::sleep(ttl * 2).await;
        w.state
            .acquire_lease("k", "b", ttl)
            .await
            .expect("store")
            .expect("expired, so free");
        let d = server_entry("orders", "gw-orders");
        let o = w
            .applier_on(&fenced, EnablePolicy::All)
            .apply(Action::Register(d))
            .await;
        assert_eq!(o.status, Status::Failed, "{o:?}");
        assert!(w.registry.calls().is_empty());
    }

    /// A registry whose path is taken for the next `phantoms` registrations by an entry that is
    /// gone by the time a GET looks (removed in between).
    struct Vanishing {
        inner: MemoryRegistry,
        phantoms: AtomicU32,
    }

    impl Registry for Vanishing {
        async fn list(&self, c: Collection) -> Result<Vec<CurrentEntry>, PortError> {
            self.inner.list(c).await
        }
        async fn get(&self, c: Collection, path: &str) -> Result<Option<CurrentEntry>, PortError> {
            self.inner.get(c, path).await
        }
        async fn register(&self, d: &DesiredEntry) -> Result<(), PortError> {
            let taken = self
                .phantoms
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
            if taken {
                self.inner.seed(CurrentEntry::written(d, false, None));
                let answer = self.inner.register(d).await;
                self.inner.remove(d.collection(), &d.path).await?;
                return answer;
            }
            self.inner.register(d).await
        }
        async fn update(&self, d: &DesiredEntry, current: &CurrentEntry) -> Result<(), PortError> {
            self.inner.update(d, current).await
        }
        async fn set_enabled(&self, c: Collection, path: &str, on: bool) -> Result<(), PortError> {
            self.inner.set_enabled(c, path, on).await
        }
        async fn remove(&self, c: Collection, path: &str) -> Result<(), PortError> {
            self.inner.remove(c, path).await
        }
        async fn set_credential(&self, path: &str, bearer: Option<&str>) -> Result<(), PortError> {
            self.inner.set_credential(path, bearer).await
        }
    }

    #[tokio::test]
    async fn a_409_with_nothing_there_by_the_get_is_registered_again_once() {
        let vanishing = |phantoms| Vanishing {
            inner: MemoryRegistry::new("registrar"),
            phantoms: AtomicU32::new(phantoms),
        };
        let w = world_with(vanishing(1));
        let d = server_entry("orders", "gw-orders");
        let o = w
            .applier(EnablePolicy::None)
            .apply(Action::Register(d.clone()))
            .await;
        assert_eq!(o.status, Status::Registered, "{o:?}");
        assert!(
            w.registry
                .inner
                .get(Collection::Server, &d.path)
                .await
                .expect("get")
                .is_some()
        );

        let w = world_with(vanishing(2));
        let o = w
            .applier(EnablePolicy::None)
            .apply(Action::Register(d.clone()))
            .await;
        assert_eq!(o.status, Status::Failed, "{o:?}");
        assert_eq!(o.error_class, Some(ErrorClass::Conflict));
        assert!(w.claim_free(&d.path).await, "the claim is released");
        assert!(w.recorded(&d.resource.arn).await.is_none());
    }
}
