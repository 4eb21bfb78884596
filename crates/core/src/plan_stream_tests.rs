//! Planning as the scan streams ([`Streaming`]) against the plan of the whole observation: the
//! same actions, except where a rename race leaves the entry planned on its own its path.

use std::cell::Cell;
use std::sync::OnceLock;

use proptest::test_runner::{Config, TestRunner};

use super::*;
use crate::desired::listed_path;

const OTHER_ACCT: &str = "444455556666";

fn us() -> RegistryIdentity {
    static US: OnceLock<RegistryIdentity> = OnceLock::new();
    *US.get_or_init(|| RegistryIdentity::configured("registrar".into()))
}

fn key(d: &DesiredEntry) -> ListedKey {
    let r = &d.resource;
    (r.kind, r.account.clone(), r.region.clone(), r.id.clone())
}

/// A rescan: what its listings named, what its reads derived (in read order), and what the
/// registry listing and the state held before it.
#[derive(Debug, Clone)]
struct Run {
    desired: Vec<DesiredEntry>,
    /// The path each listed resource's listed name gives, and the resource.
    listed: Vec<(String, ListedKey)>,
    /// ARNs of resources read under a name whose path is not the listed one.
    renamed: BTreeSet<String>,
    current: Vec<CurrentEntry>,
    recorded: Vec<RecordedResource>,
    covered: BTreeSet<Scope>,
    ctx: PlanContext,
}

impl Run {
    /// What the scan saw, with `desired` as the entries: every read resource is present.
    fn observation(&self, desired: Vec<DesiredEntry>) -> Observation {
        Observation {
            desired,
            present: self
                .desired
                .iter()
                .map(|d| d.resource.arn.clone())
                .collect(),
            covered: self.covered.clone(),
        }
    }
}

/// Plans `run` as a rescan streams it: each entry on its own when it can be, the rest at the
/// end. Also returns the path and ARN of each entry planned on its own.
fn plan_streamed(run: &Run) -> (Vec<Action>, Vec<(String, String)>) {
    let mut planner = Streaming::new(&run.current, &run.recorded, run.listed.clone(), run.ctx);
    let mut actions = Vec::new();
    let mut alone = Vec::new();
    let mut waiting = Vec::new();
    for d in run.desired.iter().cloned() {
        let at = (d.path.clone(), d.resource.arn.clone());
        match planner.plan_alone(d) {
            Ok(a) => {
                alone.push(at);
                actions.push(a);
            }
            Err(d) => waiting.push(d),
        }
    }
    actions.extend(planner.finish(run.observation(waiting)));
    (actions, alone)
}

fn sorted(actions: &[Action]) -> Vec<String> {
    let mut out: Vec<String> = actions.iter().map(|a| format!("{a:?}")).collect();
    out.sort();
    out
}

fn run_of(desired: Vec<DesiredEntry>, current: Vec<CurrentEntry>) -> Run {
    Run {
        listed: desired.iter().map(|d| (d.path.clone(), key(d))).collect(),
        desired,
        renamed: BTreeSet::new(),
        current,
        recorded: Vec::new(),
        covered: covered_all(),
        ctx: PlanContext::default(),
    }
}

#[test]
fn a_fleet_of_new_resources_is_planned_entry_by_entry() {
    let run = run_of(
        vec![
            gw("alpha", "g1", "2026-01"),
            gw("beta", "g2", "2026-01"),
            rt("gamma", "r1-0123456789", ServerProtocol::A2a, "2026-01"),
        ],
        Vec::new(),
    );
    let (actions, alone) = plan_streamed(&run);
    assert_eq!(alone.len(), 3, "nothing else of the run bears on them");
    let whole = plan(run.observation(run.desired.clone()), &[], &[], run.ctx);
    assert_eq!(sorted(&actions), sorted(&whole));
}

#[test]
fn a_resource_renamed_onto_a_path_planned_on_its_own_loses_it_and_keeps_its_entry() {
    // Listed: X as "alpha" (newer), Y as "beta" (older, its entry at /beta). Y is renamed
    // "alpha" after the listing, before its read.
    let x = gw("alpha", "gwx", "2026-02");
    let y_listed = gw("beta", "gwy", "2026-01");
    let y = gw("alpha", "gwy", "2026-01");
    let run = Run {
        listed: vec![
            (x.path.clone(), key(&x)),
            (y_listed.path.clone(), key(&y_listed)),
        ],
        renamed: [y.resource.arn.clone()].into(),
        recorded: vec![recorded_as_written(&y_listed)],
        ..run_of(vec![x.clone(), y.clone()], vec![written(&y_listed)])
    };
    // Whichever is read first, X (the resource the listing named at /alpha) keeps the path.
    for desired in [vec![x.clone(), y.clone()], vec![y.clone(), x.clone()]] {
        let run = Run {
            desired,
            ..run.clone()
        };
        let (actions, alone) = plan_streamed(&run);
        assert_eq!(alone, [(x.path.clone(), x.resource.arn.clone())]);
        let [
            Action::Register(registered),
            Action::Conflict { desired, holder },
        ] = actions.as_slice()
        else {
            panic!("{actions:?}")
        };
        assert_eq!(registered.resource, x.resource);
        assert_eq!(desired.resource, y.resource);
        assert_eq!(
            holder,
            &format!("path wanted by {} (alpha)", x.resource.arn)
        );
        // Y's entry at /beta is neither deregistered nor moved: Y keeps it until a run whose
        // listing names Y by its new name.
    }
    // The whole observation would give /alpha to the older Y and move it off /beta.
    let whole = plan(
        run.observation(run.desired.clone()),
        &run.current,
        &run.recorded,
        run.ctx,
    );
    assert_eq!(kinds(&whole), ["deregister", "conflict", "register"]);
}

#[test]
fn a_resource_that_lost_a_rename_race_still_counts_for_the_deletion_guard() {
    // X (new) is planned on its own at /alpha; Y (new, listed as "beta") is read as "alpha";
    // two recorded gateways are gone. The guard counts both gone ones and every resource the
    // run wants, X and Y, as the plan of the whole observation does: two of four may go (limit
    // 50%); without Y, two of three would trip it.
    let x = gw("alpha", "gwx", "2026-02");
    let y_listed = gw("beta", "gwy", "2026-01");
    let y = gw("alpha", "gwy", "2026-01");
    let gone = [gw("old1", "gwo1", "2025"), gw("old2", "gwo2", "2025")];
    let run = Run {
        listed: vec![
            (x.path.clone(), key(&x)),
            (y_listed.path.clone(), key(&y_listed)),
        ],
        renamed: [y.resource.arn.clone()].into(),
        recorded: gone.iter().map(recorded_as_written).collect(),
        ..run_of(vec![x.clone(), y], gone.iter().map(written).collect())
    };
    let (actions, alone) = plan_streamed(&run);
    assert_eq!(alone.len(), 1);
    assert_eq!(
        kinds(&actions),
        ["register", "deregister", "deregister", "conflict"]
    );
    let whole = plan(
        run.observation(run.desired.clone()),
        &run.current,
        &run.recorded,
        run.ctx,
    );
    assert_eq!(
        kinds(&whole),
        ["deregister", "deregister", "conflict", "register"]
    );
}

// ---- property test --------------------------------------------------------------------------

const NAMES: [&str; 7] = [
    "alpha", "beta", "geo-mcp", "geo_mcp", "Alpha", "gamma", "delta",
];

/// Resource `i` of the run: a gateway (`kind` 0) or a runtime speaking MCP (1) or A2A (2).
fn resource(account: &str, name: &str, i: usize, kind: u8, created: &str) -> DesiredEntry {
    let id = format!("res{i}");
    match kind {
        0 => gw_in(account, name, &id, created),
        1 => rt_in(
            account,
            name,
            &format!("{id}-0123456789"),
            ServerProtocol::Mcp,
            created,
        ),
        _ => rt_in(
            account,
            name,
            &format!("{id}-0123456789"),
            ServerProtocol::A2a,
            created,
        ),
    }
}

fn run() -> impl Strategy<Value = Run> {
    // Few names so that paths collide often; some resources were listed by another name.
    let read = (
        0..NAMES.len(),
        prop::option::weighted(0.25, 0..NAMES.len()),
        0..3u8,
        0..5u8,
        any::<bool>(),
    );
    // Resources listed and gone before their read.
    let vanished = (0..NAMES.len(), any::<bool>());
    // A registry entry and a state row (`who`, a name, `flags`): `who` 0 is someone else's entry,
    // 1 the Python tool's entry of a vanished gateway, 2 ours of a vanished gateway (gone), 3..
    // ours of read resource `who - 3` (at its path, or moved: at the path of another name, or
    // in the other collection). The bits of `flags`: 1 the other account, 2 hidden from the
    // registry's listing, 4 recorded in the state, 8 registered by someone else, 16 an older
    // fingerprint, 32 and 64 where the entry of read resource `who - 3` is.
    let who = prop_oneof![1 => Just(2usize), 3 => 0..10usize];
    let existing = (who, 0..NAMES.len(), any::<u8>());
    (
        prop::collection::vec(read, 0..7),
        prop::collection::vec(vanished, 0..3),
        prop::collection::vec(existing, 0..8),
        prop::collection::vec(any::<bool>(), 7),
        any::<bool>(),
        prop::sample::select(vec![
            Policy::Sync,
            Policy::Sync,
            Policy::Sync,
            Policy::UpsertOnly,
            Policy::CreateOnly,
        ]),
        prop::bool::weighted(0.2),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(
            |(reads, vanished, existing, record, adopt, policy, force, identity, other_listed)| {
                let account = |other: bool| if other { OTHER_ACCT } else { ACCT };
                let mut specs = Vec::new();
                let mut desired: Vec<DesiredEntry> = Vec::new();
                let mut listed = Vec::new();
                let mut renamed = BTreeSet::new();
                for (i, (name, listed_as, kind, created, other)) in reads.into_iter().enumerate() {
                    let created = format!("2026-0{}", created + 1);
                    let d = resource(account(other), NAMES[name], i, kind, &created);
                    let r = &d.resource;
                    let was = listed_as.map(|n| NAMES[n]);
                    let path = listed_path(was.unwrap_or(NAMES[name]), &r.id, r.kind);
                    if path != d.path {
                        renamed.insert(r.arn.clone());
                    }
                    listed.push((path, key(&d)));
                    specs.push((account(other), i, kind, created, was));
                    desired.push(d);
                }
                for (i, (name, other)) in vanished.into_iter().enumerate() {
                    let id = format!("vanished{i}");
                    listed.push((
                        listed_path(NAMES[name], &id, ResourceKind::Gateway),
                        (
                            ResourceKind::Gateway,
                            account(other).into(),
                            REGION.into(),
                            id,
                        ),
                    ));
                }
                let identity = identity.then(us);
                let mut current: Vec<CurrentEntry> = Vec::new();
                let mut recorded: Vec<RecordedResource> = Vec::new();
                for (n, (who, name, flags)) in existing.into_iter().enumerate() {
                    let name = NAMES[name];
                    let bit = |b: u8| flags & b != 0;
                    let ours_at = match who {
                        0 | 1 => None,
                        2 => Some(gw_in(account(bit(1)), name, &format!("gone{n}"), "2025")),
                        k => specs.get(k - 3).map(|(acct, i, kind, created, was)| {
                            let d: &DesiredEntry = &desired[k - 3];
                            match ((flags >> 5) & 3, kind) {
                                (0 | 1, _) => d.clone(),
                                // Moved: renamed since it was listed (or since it was written),
                                (2, _) | (_, 0) => {
                                    resource(acct, was.unwrap_or(name), *i, *kind, created)
                                }
                                // or a runtime whose protocol changed.
                                _ => resource(acct, &d.name, *i, 3 - kind, created),
                            }
                        }),
                    };
                    let (entry, row) = match (who, ours_at) {
                        (0, _) => {
                            let path = listed_path(name, "x", ResourceKind::Gateway);
                            let collection = if bit(1) {
                                Collection::Agent
                            } else {
                                Collection::Server
                            };
                            (Some(foreign(collection, &path)), None)
                        }
                        (1, _) => {
                            let python = gw_in(account(bit(1)), name, &format!("py{n}"), "2025");
                            let mut e = written(&python);
                            e.metadata.insert("source".into(), json!("agentcore-sync"));
                            (Some(e), None)
                        }
                        (_, None) => {
                            let path = listed_path(name, "x", ResourceKind::Runtime);
                            (Some(foreign(Collection::Agent, &path)), None)
                        }
                        (_, Some(at)) => {
                            let mut e = written(&at);
                            if identity.is_some() {
                                e.registered_by =
                                    Some(if bit(8) { "mallory" } else { "registrar" }.into());
                            }
                            if bit(16) {
                                e.metadata.insert("fingerprint".into(), json!("older"));
                            }
                            (
                                (!bit(2)).then_some(e),
                                bit(4).then(|| recorded_as_written(&at)),
                            )
                        }
                    };
                    if let Some(e) = entry
                        && !current
                            .iter()
                            .any(|c| c.path == e.path && c.collection == e.collection)
                    {
                        current.push(e);
                    }
                    // The state holds one row per resource and one claim per path.
                    if let Some(row) = row
                        && !recorded
                            .iter()
                            .any(|r| r.resource.arn == row.resource.arn || r.path == row.path)
                    {
                        recorded.push(row);
                    }
                }
                for (d, _) in desired.iter().zip(record).filter(|(_, r)| *r) {
                    let row = recorded_as_written(d);
                    if !recorded
                        .iter()
                        .any(|r| r.resource.arn == row.resource.arn || r.path == row.path)
                    {
                        recorded.push(row);
                    }
                }
                let covered = covered_all()
                    .into_iter()
                    .flat_map(|s| {
                        let other = Scope {
                            account: OTHER_ACCT.into(),
                            ..s.clone()
                        };
                        [Some(s), other_listed.then_some(other)]
                    })
                    .flatten()
                    .collect();
                Run {
                    desired,
                    listed,
                    renamed,
                    current,
                    recorded,
                    covered,
                    ctx: PlanContext {
                        policy,
                        adopt_legacy: adopt,
                        guard: DeleteGuard {
                            force,
                            ..DeleteGuard::default()
                        },
                        identity,
                    },
                }
            },
        )
}

/// What the cases of the property test covered.
#[derive(Debug, Default)]
struct Covered {
    alone: Cell<usize>,
    waiting: Cell<usize>,
    gone: Cell<usize>,
    moved: Cell<usize>,
    guarded: Cell<usize>,
    lost: Cell<usize>,
    alone_with_identity: Cell<usize>,
}

fn bump(c: &Cell<usize>, by: usize) {
    c.set(c.get() + by);
}

/// The plan as the scan streams it is the plan of the whole observation; when a resource renamed
/// after the listings is read with the path of an entry planned on its own, it is the documented
/// one instead: that entry keeps the path, the renamed resource is a conflict naming it and is
/// planned as neither gone nor moved, and the deletion guard still counts it.
#[test]
fn planning_as_the_scan_streams_gives_the_plan_of_the_whole_observation() {
    let covered = Covered::default();
    let config = Config::default();
    let mut runner = TestRunner::new(Config {
        // Cheap cases; enough of them that every kind of case below turns up.
        cases: config.cases.max(1024),
        source_file: Some(file!()),
        ..config
    });
    let outcome = runner.run(&run(), |run| {
        let (streamed, alone) = plan_streamed(&run);
        let lost: Vec<&DesiredEntry> = run
            .desired
            .iter()
            .filter(|d| {
                alone
                    .iter()
                    .any(|(path, arn)| *path == d.path && *arn != d.resource.arn)
            })
            .collect();
        for d in &lost {
            prop_assert!(
                run.renamed.contains(&d.resource.arn),
                "only a rename race puts an entry at the path of one planned on its own: {d:?}"
            );
        }
        let expected = if lost.is_empty() {
            plan(
                run.observation(run.desired.clone()),
                &run.current,
                &run.recorded,
                run.ctx,
            )
        } else {
            let is_lost = |d: &DesiredEntry| lost.iter().any(|l| l.resource == d.resource);
            let owned = owned_before(&run.current, &run.recorded, run.ctx.identity);
            let wanted_too = lost
                .iter()
                .filter(|d| !owned.contains(d.resource.arn.as_str()))
                .count();
            let rest = run
                .desired
                .iter()
                .filter(|d| !is_lost(d))
                .cloned()
                .collect();
            let mut expected = plan_with(
                run.observation(rest),
                &run.current,
                &run.recorded,
                run.ctx,
                wanted_too,
            );
            for d in &lost {
                let winner = run
                    .desired
                    .iter()
                    .find(|w| w.path == d.path && !is_lost(w))
                    .expect("the entry planned on its own");
                expected.push(Action::Conflict {
                    desired: (*d).clone(),
                    holder: format!("path wanted by {} ({})", winner.resource.arn, winner.name),
                });
            }
            expected
        };
        prop_assert_eq!(sorted(&streamed), sorted(&expected));

        bump(&covered.alone, alone.len());
        bump(&covered.waiting, run.desired.len() - alone.len());
        bump(&covered.lost, lost.len());
        if run.ctx.identity.is_some() {
            bump(&covered.alone_with_identity, alone.len());
        }
        for a in &streamed {
            match a {
                Action::Deregister(d) if d.reason == DeregisterReason::Gone => {
                    bump(&covered.gone, 1)
                }
                Action::Deregister(_) => bump(&covered.moved, 1),
                Action::Skip { reason, .. } if reason.is_blocked_deletion() => {
                    bump(&covered.guarded, 1)
                }
                _ => {}
            }
        }
        Ok(())
    });
    if let Err(e) = outcome {
        panic!("{e}");
    }
    eprintln!("{covered:?}");
    // The cases must exercise what they are to compare: entries planned on their own, and
    // around them the deregistrations, guard trips and rename races of the whole plan.
    for (what, count) in [
        ("planned on its own", &covered.alone),
        ("waiting for the end", &covered.waiting),
        ("gone", &covered.gone),
        ("moved", &covered.moved),
        ("held back by the guard", &covered.guarded),
        ("lost to a rename race", &covered.lost),
        (
            "planned on its own with an identity",
            &covered.alone_with_identity,
        ),
    ] {
        assert!(count.get() > 0, "no case had an entry {what}: {covered:?}");
    }
}
