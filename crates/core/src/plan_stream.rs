//! Planning while a scan still reads: an entry nothing else of the run can bear on is planned
//! as soon as it is derived, so a rescan holds the entries of the reads in flight, not every
//! entry of the fleet.

use std::collections::{BTreeMap, BTreeSet};

use super::{
    Action, CurrentEntry, Observation, PlanContext, RecordedResource, action_for_winner,
    owned_before, plan_with,
};
use crate::desired::{Collection, DesiredEntry};
use crate::identity::ResourceKind;

/// A listed resource: its kind, account, region and id.
pub type ListedKey = (ResourceKind, String, String, String);

/// Plans a run's entries one at a time as they are derived, when the rest of the run cannot
/// change their action; the others wait for [`Streaming::finish`], which plans them with the
/// whole observation as [`super::plan`] does. An entry is planned on its own when
/// - the run's listings name exactly one resource that wants its path, and it is this entry's
///   (so no entry of the run contends for the path), and
/// - everything the registry listing and the state record at that path is this resource's, in
///   the entry's collection, and everything they record of this resource is at that path (so
///   no deregistration of the run frees that path or moves this resource).
///
/// Its action is then the one [`super::plan`] would give it among all entries: no path
/// contention, no deregistration that interacts with it, and the deletion guard counts it.
#[derive(Debug)]
pub struct Streaming<'a> {
    current: &'a [CurrentEntry],
    recorded: &'a [RecordedResource],
    ctx: PlanContext,
    holders_at: BTreeMap<&'a str, Vec<&'a CurrentEntry>>,
    /// Per path, what the listing and the state bind to it: collection and resource ARN (none
    /// for an entry not naming one of ours or the Python tool's).
    bound_at: BTreeMap<&'a str, Vec<(Collection, Option<String>)>>,
    /// Per resource ARN, the collections and paths the listing and the state bind it to.
    bound_of: BTreeMap<String, Vec<(Collection, &'a str)>>,
    /// Per path the listings' names give, the one resource that wants it (none: several).
    wanted: BTreeMap<String, Option<ListedKey>>,
    owned_before: BTreeSet<String>,
    planned_apart: usize,
}

impl<'a> Streaming<'a> {
    /// A run against the registry's listing `current` and the state's `recorded` rows, whose
    /// AgentCore listings name resources wanting the paths of `wanted` (see
    /// [`crate::desired::listed_path`]). Leave `wanted` empty to plan nothing on its own.
    pub fn new(
        current: &'a [CurrentEntry],
        recorded: &'a [RecordedResource],
        wanted: impl IntoIterator<Item = (String, ListedKey)>,
        ctx: PlanContext,
    ) -> Self {
        let mut holders_at: BTreeMap<&str, Vec<&CurrentEntry>> = BTreeMap::new();
        let mut bound_at: BTreeMap<&str, Vec<(Collection, Option<String>)>> = BTreeMap::new();
        let mut bound_of: BTreeMap<String, Vec<(Collection, &str)>> = BTreeMap::new();
        for e in current {
            holders_at.entry(e.path.as_str()).or_default().push(e);
            let arn = e.owner(true).resource().map(|r| r.arn.clone());
            if let Some(arn) = &arn {
                bound_of
                    .entry(arn.clone())
                    .or_default()
                    .push((e.collection, e.path.as_str()));
            }
            bound_at
                .entry(e.path.as_str())
                .or_default()
                .push((e.collection, arn));
        }
        for r in recorded {
            bound_at
                .entry(r.path.as_str())
                .or_default()
                .push((r.collection, Some(r.resource.arn.clone())));
            bound_of
                .entry(r.resource.arn.clone())
                .or_default()
                .push((r.collection, r.path.as_str()));
        }
        let mut by_path: BTreeMap<String, Option<ListedKey>> = BTreeMap::new();
        for (path, key) in wanted {
            by_path
                .entry(path)
                .and_modify(|one| *one = None)
                .or_insert(Some(key));
        }
        Self {
            current,
            recorded,
            ctx,
            holders_at,
            bound_at,
            bound_of,
            wanted: by_path,
            owned_before: owned_before(current, recorded, ctx.identity),
            planned_apart: 0,
        }
    }

    /// The action of `d` when it can be planned on its own now; else `d` back, to be planned
    /// by [`Streaming::finish`].
    #[expect(
        clippy::result_large_err,
        reason = "the entry given back is moved once, into what waits for the end"
    )]
    pub fn plan_alone(&mut self, d: DesiredEntry) -> Result<Action, DesiredEntry> {
        let r = &d.resource;
        let sole = matches!(
            self.wanted.get(&d.path),
            Some(Some((kind, account, region, id)))
                if *kind == r.kind && *account == r.account && *region == r.region && *id == r.id
        );
        let collection = d.collection();
        let path_is_its = self.bound_at.get(d.path.as_str()).is_none_or(|bound| {
            bound
                .iter()
                .all(|(c, arn)| *c == collection && arn.as_deref() == Some(r.arn.as_str()))
        });
        let it_is_here = self.bound_of.get(&r.arn).is_none_or(|bound| {
            bound
                .iter()
                .all(|(c, path)| *c == collection && *path == d.path)
        });
        if !(sole && path_is_its && it_is_here) {
            return Err(d);
        }
        if !self.owned_before.contains(&r.arn) {
            self.planned_apart += 1;
        }
        let holders = self
            .holders_at
            .get(d.path.as_str())
            .map_or(&[][..], Vec::as_slice);
        Ok(action_for_winner(d, holders, self.recorded, self.ctx))
    }

    /// Plans the rest: `obs` holds the entries [`Streaming::plan_alone`] gave back, and every
    /// resource the run saw present (those planned on their own included) and every scope it
    /// covered.
    pub fn finish(self, obs: Observation) -> Vec<Action> {
        plan_with(
            obs,
            self.current,
            self.recorded,
            self.ctx,
            self.planned_apart,
        )
    }
}
