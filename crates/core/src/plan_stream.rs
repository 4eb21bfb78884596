//! Planning while a scan still reads: an entry nothing else of the run can bear on is planned
//! as soon as it is derived, so a rescan holds the entries of the reads in flight, not every
//! entry of the fleet.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};

use super::{
    Action, CurrentEntry, Observation, PlanContext, RecordedResource, action_for_winner,
    owned_before, owner_arn, plan_with,
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
///
/// One exception, a rename race: a resource renamed after the listings and before its read
/// wants a path the listings gave another resource. When that other resource's entry was
/// planned on its own, it may already be applied, so it keeps the path whichever of the two is
/// older (where [`super::plan`] would give the path to the older one): the renamed resource is a
/// conflict ("path wanted by" the other), and its entry at its old path is neither deregistered
/// nor moved this run; the next run, whose listing names it by its new name, plans it as usual.
#[derive(Debug)]
pub struct Streaming<'a> {
    current: &'a [CurrentEntry],
    recorded: &'a [RecordedResource],
    ctx: PlanContext,
    holders_at: BTreeMap<&'a str, Vec<&'a CurrentEntry>>,
    /// Per path, what the listing and the state bind to it: collection and resource ARN (none
    /// for an entry not naming one of ours or the Python tool's).
    bound_at: BTreeMap<&'a str, Vec<Binding<'a>>>,
    /// Per resource ARN, the collections and paths the listing and the state bind it to.
    bound_of: BTreeMap<Cow<'a, str>, Vec<(Collection, &'a str)>>,
    /// Per path the listings' names give, who wants it.
    wanted: BTreeMap<String, Wanter>,
    owned_before: BTreeSet<Cow<'a, str>>,
    planned_apart: usize,
}

/// What a registry entry or a state row binds to its path: its collection and the ARN of the
/// resource it names (borrowed where the entry or row holds it verbatim).
type Binding<'a> = (Collection, Option<Cow<'a, str>>);

/// Who wants a path the listings' names give.
#[derive(Debug)]
enum Wanter {
    /// One listed resource, whose entry is not planned yet.
    One(ListedKey),
    /// More than one listed resource: their entries wait for the end.
    Several,
    /// The entry of the one listed resource, planned on its own: it keeps the path against any
    /// entry derived later with that path (its resource renamed after the listing).
    Streamed {
        /// Its resource's ARN.
        arn: String,
        /// Its name, for the conflict a later contender is reported as.
        name: String,
    },
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
        let mut bound_at: BTreeMap<&str, Vec<Binding<'a>>> = BTreeMap::new();
        let mut bound_of: BTreeMap<Cow<'a, str>, Vec<(Collection, &str)>> = BTreeMap::new();
        for e in current {
            holders_at.entry(e.path.as_str()).or_default().push(e);
            let arn = owner_arn(e, true);
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
            let arn = r.resource.arn.as_str();
            bound_at
                .entry(r.path.as_str())
                .or_default()
                .push((r.collection, Some(Cow::Borrowed(arn))));
            bound_of
                .entry(Cow::Borrowed(arn))
                .or_default()
                .push((r.collection, r.path.as_str()));
        }
        let mut by_path: BTreeMap<String, Wanter> = BTreeMap::new();
        for (path, key) in wanted {
            by_path
                .entry(path)
                .and_modify(|one| *one = Wanter::Several)
                .or_insert(Wanter::One(key));
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
            Some(Wanter::One((kind, account, region, id)))
                if *kind == r.kind && *account == r.account && *region == r.region && *id == r.id
        );
        let collection = d.collection();
        let path_is_its = self.bound_at.get(d.path.as_str()).is_none_or(|bound| {
            bound
                .iter()
                .all(|(c, arn)| *c == collection && arn.as_deref() == Some(r.arn.as_str()))
        });
        let it_is_here = self.bound_of.get(r.arn.as_str()).is_none_or(|bound| {
            bound
                .iter()
                .all(|(c, path)| *c == collection && *path == d.path)
        });
        if !(sole && path_is_its && it_is_here) {
            return Err(d);
        }
        if !self.owned_before.contains(r.arn.as_str()) {
            self.planned_apart += 1;
        }
        if let Some(wanter) = self.wanted.get_mut(&d.path) {
            *wanter = Wanter::Streamed {
                arn: r.arn.clone(),
                name: d.name.clone(),
            };
        }
        let holders = self
            .holders_at
            .get(d.path.as_str())
            .map_or(&[][..], Vec::as_slice);
        Ok(action_for_winner(d, holders, self.recorded, self.ctx))
    }

    /// Plans the rest: `obs` holds the entries [`Streaming::plan_alone`] gave back, and every
    /// resource the run saw present (those planned on their own included) and every scope it
    /// covered. An entry given back at the path of one planned on its own is a conflict (see
    /// the rename race above); the others are planned as [`super::plan`] plans them.
    pub fn finish(mut self, mut obs: Observation) -> Vec<Action> {
        let wanted = &self.wanted;
        let mut lost: Vec<Action> = Vec::new();
        for d in obs
            .desired
            .extract_if(.., |d| streamed_at(wanted, d).is_some())
        {
            // Still present, and no longer among what the run wants: its entry where it was is
            // neither gone nor moved. The guard counts it as wanted, as plan() counts every
            // entry it makes a conflict.
            if !self.owned_before.contains(d.resource.arn.as_str()) {
                self.planned_apart += 1;
            }
            if let Some((arn, name)) = streamed_at(wanted, &d) {
                let holder = format!("path wanted by {arn} ({name})");
                lost.push(Action::Conflict { desired: d, holder });
            }
        }
        let mut actions = plan_with(
            obs,
            self.current,
            self.recorded,
            self.ctx,
            self.planned_apart,
        );
        actions.append(&mut lost);
        actions
    }
}

/// The resource whose entry was planned on its own at `d`'s path, when it is not `d`'s: its ARN
/// and name.
fn streamed_at<'w>(
    wanted: &'w BTreeMap<String, Wanter>,
    d: &DesiredEntry,
) -> Option<(&'w str, &'w str)> {
    match wanted.get(&d.path)? {
        Wanter::Streamed { arn, name } if *arn != d.resource.arn => Some((arn, name)),
        _ => None,
    }
}
