//! The planner's guarantees (ownership, deletion only on authority, one resource per path,
//! policies and the deletion guard), unit and property tested.

use super::*;
use crate::desired::{DeriveOptions, gateway_entry, runtime_entry};
use crate::identity::ResourceKind;
use crate::observed::{
    AuthorizerType, GatewaySnapshot, Lifecycle, RuntimeSnapshot, ServerProtocol,
};
use proptest::prelude::*;
use serde_json::json;

const ACCT: &str = "111122223333";
const REGION: &str = "us-east-1";

fn gw(name: &str, id: &str, created: &str) -> DesiredEntry {
    gw_in(ACCT, name, id, created)
}

fn gw_in(account: &str, name: &str, id: &str, created: &str) -> DesiredEntry {
    let snap = GatewaySnapshot {
        id: id.into(),
        arn: format!("arn:aws:bedrock-agentcore:{REGION}:{account}:gateway/{id}"),
        name: name.into(),
        description: None,
        lifecycle: Lifecycle::Ready,
        url: Some(format!(
            "https://{id}.gateway.bedrock-agentcore.{REGION}.amazonaws.com/mcp"
        )),
        authorizer_type: AuthorizerType::AwsIam,
        jwt: None,
        created_at: created.into(),
        updated_at: created.into(),
    };
    gateway_entry(&snap, DeriveOptions::default()).expect("registrable")
}

fn rt(name: &str, id: &str, protocol: ServerProtocol, created: &str) -> DesiredEntry {
    rt_in(ACCT, name, id, protocol, created)
}

fn rt_in(
    account: &str,
    name: &str,
    id: &str,
    protocol: ServerProtocol,
    created: &str,
) -> DesiredEntry {
    let snap = RuntimeSnapshot {
        id: id.into(),
        arn: format!("arn:aws:bedrock-agentcore:{REGION}:{account}:runtime/{id}"),
        name: name.into(),
        description: None,
        lifecycle: Lifecycle::Ready,
        protocol,
        jwt: None,
        created_at: created.into(),
        updated_at: created.into(),
    };
    runtime_entry(&snap, DeriveOptions::default()).expect("registrable")
}

fn covered_all() -> BTreeSet<Scope> {
    [
        ResourceKind::Gateway,
        ResourceKind::Runtime,
        ResourceKind::Target,
    ]
    .into_iter()
    .map(|kind| Scope {
        kind,
        account: ACCT.into(),
        region: REGION.into(),
    })
    .collect()
}

fn observe(desired: Vec<DesiredEntry>) -> Observation {
    let present = desired.iter().map(|d| d.resource.arn.clone()).collect();
    Observation {
        desired,
        present,
        covered: covered_all(),
    }
}

fn foreign(collection: Collection, path: &str) -> CurrentEntry {
    CurrentEntry {
        collection,
        path: path.into(),
        name: "Hand Made".into(),
        metadata: json!({"source": "someone-else"})
            .as_object()
            .cloned()
            .unwrap_or_default(),
        tags: vec!["auto-registered".into()],
        enabled: true,
        status: None,
        pointing: Some(Pointing::new(
            "https://someone-else.example/mcp",
            Some("none"),
        )),
        registered_by: Some("someone-else".into()),
        mcp_endpoint: None,
    }
}

fn written(d: &DesiredEntry) -> CurrentEntry {
    CurrentEntry::written(d, false, None)
}

fn kinds(actions: &[Action]) -> Vec<&'static str> {
    actions
        .iter()
        .map(|a| match a {
            Action::Register(_) => "register",
            Action::Update { .. } => "update",
            Action::Unchanged { .. } => "unchanged",
            Action::Deregister(_) => "deregister",
            Action::Conflict { .. } => "conflict",
            Action::Skip { .. } => "skip",
        })
        .collect()
}

#[test]
fn free_paths_are_registered_and_owned_equal_entries_are_unchanged() {
    let a = gw("alpha", "gwa", "1");
    let b = gw("beta", "gwb", "1");
    let actions = plan(
        observe(vec![a.clone(), b.clone()]),
        &[written(&a)],
        &[],
        PlanContext::default(),
    );
    assert_eq!(kinds(&actions), ["unchanged", "register"]);
}

#[test]
fn a_changed_owned_entry_is_updated_but_not_under_create_only() {
    let a = gw("alpha", "gwa", "1");
    let mut old = written(&a);
    old.metadata.insert("fingerprint".into(), json!("stale"));
    let actions = plan(
        observe(vec![a.clone()]),
        &[old.clone()],
        &[],
        PlanContext::default(),
    );
    assert_eq!(kinds(&actions), ["update"]);
    let ctx = PlanContext {
        policy: Policy::CreateOnly,
        ..PlanContext::default()
    };
    assert_eq!(kinds(&plan(observe(vec![a]), &[old], &[], ctx)), ["skip"]);
}

#[test]
fn a_foreign_entry_at_a_wanted_path_is_a_conflict() {
    let a = gw("alpha", "gwa", "1");
    let actions = plan(
        observe(vec![a]),
        &[foreign(Collection::Server, "/alpha")],
        &[],
        PlanContext::default(),
    );
    let [Action::Conflict { holder, .. }] = actions.as_slice() else {
        panic!("{actions:?}")
    };
    assert!(
        holder.contains("not owned by agentcore-registrar"),
        "{holder}"
    );
}

#[test]
fn gateway_and_mcp_runtime_with_the_same_slug_do_not_share_a_path() {
    let gateway = gw("geo-mcp", "gw1", "2026-01-01");
    let runtime = rt(
        "geo_mcp",
        "geo_mcp-0123456789",
        ServerProtocol::Mcp,
        "2026-02-01",
    );
    let actions = plan(
        observe(vec![runtime.clone(), gateway.clone()]),
        &[],
        &[],
        PlanContext::default(),
    );
    assert_eq!(kinds(&actions), ["conflict", "register"]);
    let Action::Register(winner) = &actions[1] else {
        panic!()
    };
    assert_eq!(
        winner.resource, gateway.resource,
        "the older resource keeps the path"
    );
    // Once the runtime holds the path, it keeps it even though it is younger.
    let actions = plan(
        observe(vec![runtime.clone(), gateway]),
        &[written(&runtime)],
        &[],
        PlanContext::default(),
    );
    assert_eq!(kinds(&actions), ["conflict", "unchanged"]);
}

#[test]
fn python_entries_are_adopted_only_when_adoption_is_on() {
    let a = gw("alpha", "gwa", "1");
    let mut legacy = written(&a);
    legacy
        .metadata
        .insert("source".into(), json!("agentcore-sync"));
    let adopt = PlanContext {
        adopt_legacy: true,
        ..PlanContext::default()
    };
    assert_eq!(
        kinds(&plan(
            observe(vec![a.clone()]),
            &[legacy.clone()],
            &[],
            adopt
        )),
        ["update"]
    );
    assert_eq!(
        kinds(&plan(
            observe(vec![a]),
            &[legacy],
            &[],
            PlanContext::default()
        )),
        ["conflict"]
    );
}

#[test]
fn a_gone_resource_is_deregistered_only_when_its_scope_was_listed_completely() {
    let a = gw("alpha", "gwa", "1");
    let b = gw("beta", "gwb", "1");
    let c = gw("gamma", "gwc", "1");
    let current = [written(&a), written(&b), written(&c)];
    let recorded = [recorded_as_written(&c)];
    let actions = plan(
        observe(vec![a.clone(), b.clone()]),
        &current,
        &recorded,
        PlanContext::default(),
    );
    assert_eq!(kinds(&actions), ["deregister", "unchanged", "unchanged"]);
    // Nothing recorded about the entry (state lost): not verified as ours, never removed.
    let actions = plan(
        observe(vec![a.clone(), b.clone()]),
        &current,
        &[],
        PlanContext::default(),
    );
    assert_eq!(kinds(&actions), ["unchanged", "unchanged"]);

    let mut partial = observe(vec![a.clone(), b.clone()]);
    partial.covered.clear();
    let actions = plan(partial, &current, &recorded, PlanContext::default());
    assert_eq!(
        kinds(&actions),
        ["unchanged", "unchanged"],
        "an incomplete list deletes nothing"
    );

    let mut pending = observe(vec![a, b]);
    pending.present.insert(c.resource.arn.clone());
    let actions = plan(pending, &current, &recorded, PlanContext::default());
    assert_eq!(
        kinds(&actions),
        ["unchanged", "unchanged"],
        "CREATING/UPDATING is not gone"
    );
}

#[test]
fn the_deletion_guard_refuses_mass_deletion_unless_forced() {
    let entries: Vec<DesiredEntry> = (0..4)
        .map(|i| gw(&format!("g{i}"), &format!("id{i}"), "1"))
        .collect();
    let current: Vec<CurrentEntry> = entries.iter().map(written).collect();
    let recorded: Vec<RecordedResource> = entries.iter().map(recorded_as_written).collect();
    let empty = observe(vec![]);
    let actions = plan(empty.clone(), &current, &recorded, PlanContext::default());
    assert_eq!(kinds(&actions), ["skip"; 4]);
    let forced = PlanContext {
        guard: DeleteGuard {
            force: true,
            ..DeleteGuard::default()
        },
        ..PlanContext::default()
    };
    assert_eq!(
        kinds(&plan(empty.clone(), &current, &recorded, forced)),
        ["deregister"; 4]
    );
    let upsert = PlanContext {
        policy: Policy::UpsertOnly,
        ..forced
    };
    assert_eq!(
        kinds(&plan(empty, &current, &recorded, upsert)),
        ["skip"; 4]
    );
}

#[test]
fn a_renamed_resource_moves_to_its_new_path() {
    let old = gw("old-name", "gwa", "1");
    let new = gw("new-name", "gwa", "1");
    let actions = plan(
        observe(vec![new]),
        &[written(&old)],
        &[],
        PlanContext::default(),
    );
    assert_eq!(kinds(&actions), ["deregister", "register"]);
    let Action::Deregister(d) = &actions[0] else {
        panic!()
    };
    assert_eq!(
        d.reason,
        DeregisterReason::Moved {
            to: "/new-name".into()
        }
    );
}

#[test]
fn a_recorded_entry_hidden_from_lists_is_still_a_deletion_candidate() {
    let a = gw("alpha", "gwa", "1");
    let b = gw("beta", "gwb", "1");
    let recorded = RecordedResource {
        resource: b.resource.clone(),
        collection: Collection::Server,
        path: b.path.clone(),
        fingerprint: b.fingerprint.clone(),
        aws_updated_at: String::new(),
        enabled_set: true,
        pointing: Some(b.body.pointing()),
        name: b.name.clone(),
        auth_label: b.auth_label.clone(),
    };
    let actions = plan(
        observe(vec![a.clone()]),
        &[written(&a)],
        &[recorded],
        PlanContext::default(),
    );
    assert_eq!(kinds(&actions), ["deregister", "unchanged"]);
}

fn recorded_as_written(d: &DesiredEntry) -> RecordedResource {
    RecordedResource::written(d, true)
}

#[test]
fn only_entries_exactly_as_we_wrote_them_may_skip_the_read() {
    let a = gw("alpha", "gwa", "1");
    let recorded = recorded_as_written(&a);
    let found = intact(std::slice::from_ref(&recorded), &[written(&a)], None);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].recorded, recorded);
    assert_eq!(found[0].name, "alpha", "the AWS name, not the display name");
    assert!(!found[0].unauthenticated);

    // Missing from the list (deleted in the registry, or hidden): read it.
    assert!(intact(std::slice::from_ref(&recorded), &[], None).is_empty());
    // Another fingerprint at the path (edited in the registry, or written by an older version).
    let mut edited = written(&a);
    edited
        .metadata
        .insert("fingerprint".into(), json!("something else"));
    assert!(intact(std::slice::from_ref(&recorded), &[edited], None).is_empty());
    // Someone else's entry at the path.
    assert!(
        intact(
            std::slice::from_ref(&recorded),
            &[foreign(Collection::Server, &a.path)],
            None
        )
        .is_empty()
    );
    // An enable still owed, or no updatedAt recorded: read it.
    for r in [
        RecordedResource {
            enabled_set: false,
            ..recorded.clone()
        },
        RecordedResource {
            aws_updated_at: String::new(),
            ..recorded.clone()
        },
    ] {
        assert!(intact(&[r], &[written(&a)], None).is_empty());
    }
    // A row recorded before pointing was kept: read it (which records it).
    let old = RecordedResource {
        pointing: None,
        ..recorded.clone()
    };
    assert!(intact(&[old], &[written(&a)], None).is_empty());
    // Our metadata copied onto an entry that points elsewhere, or registered by someone else.
    let mut hijacked = written(&a);
    hijacked.pointing = Some(Pointing::new("https://evil.example/mcp", Some("bearer")));
    assert!(intact(std::slice::from_ref(&recorded), &[hijacked], None).is_empty());
    let mut overwritten = written(&a);
    overwritten.registered_by = Some("mallory".into());
    let us = Some(RegistryIdentity::configured("registrar".into()));
    assert!(
        intact(
            std::slice::from_ref(&recorded),
            std::slice::from_ref(&overwritten),
            us
        )
        .is_empty()
    );
    overwritten.registered_by = Some("registrar".into());
    assert_eq!(
        intact(std::slice::from_ref(&recorded), &[overwritten], us).len(),
        1
    );
}

#[test]
fn an_entry_with_our_metadata_that_points_elsewhere_is_a_conflict_never_written_or_removed() {
    let a = gw("alpha", "gwa", "1");
    let mut hijacked = written(&a);
    hijacked.pointing = Some(Pointing::new("https://evil.example/mcp", Some("bearer")));
    hijacked
        .metadata
        .insert("fingerprint".into(), json!("stale"));
    let actions = plan(
        observe(vec![a.clone()]),
        std::slice::from_ref(&hijacked),
        &[recorded_as_written(&a)],
        PlanContext::default(),
    );
    assert_eq!(kinds(&actions), ["conflict"]);
    let Action::Conflict { holder, .. } = &actions[0] else {
        unreachable!()
    };
    assert!(holder.contains("https://evil.example/mcp"), "{holder}");

    // The same entry, the resource gone: never removed.
    let gone = Observation {
        covered: covered_all(),
        ..Observation::default()
    };
    let actions = plan(gone, &[hijacked], &[], PlanContext::default());
    assert!(!actions.iter().any(Action::writes), "{actions:?}");

    // Registered by someone else, pointing where we would: a conflict when the identity is set.
    let mut overwritten = written(&a);
    overwritten.registered_by = Some("mallory".into());
    let ctx = PlanContext {
        identity: Some(RegistryIdentity::configured("registrar".into())),
        ..PlanContext::default()
    };
    let actions = plan(observe(vec![a.clone()]), &[overwritten.clone()], &[], ctx);
    assert_eq!(kinds(&actions), ["conflict"]);
    // Without an identity configured, the URL decides.
    let actions = plan(
        observe(vec![a.clone()]),
        &[overwritten],
        &[],
        PlanContext::default(),
    );
    assert_eq!(kinds(&actions), ["unchanged"]);
}

#[test]
fn an_endpoint_that_moved_in_aws_is_still_ours_by_what_we_recorded_writing() {
    let a = gw("alpha", "gwa", "1");
    let before = written(&a);
    let recorded = recorded_as_written(&a);
    // AWS now wants another URL (a target's endpoint changed): the entry points where we last
    // wrote it, so it is ours and is updated.
    let mut moved = a.clone();
    if let EntryBody::Server(s) = &mut moved.body {
        s.proxy_pass_url = "https://new.example/mcp".into();
    }
    moved.fingerprint = "changed".into();
    let actions = plan(
        observe(vec![moved]),
        &[before],
        &[recorded],
        PlanContext::default(),
    );
    assert_eq!(kinds(&actions), ["update"]);
}

// ---- property tests -------------------------------------------------------------------------

/// The registry after `actions` were applied to `current`.
fn apply(current: &[CurrentEntry], actions: &[Action]) -> Vec<CurrentEntry> {
    let mut reg: Vec<CurrentEntry> = current.to_vec();
    for a in actions {
        match a {
            Action::Deregister(d) => {
                reg.retain(|e| !(e.path == d.path && e.collection == d.collection))
            }
            Action::Register(d) | Action::Update { desired: d, .. } => {
                reg.retain(|e| !(e.path == d.path && e.collection == d.collection()));
                reg.push(written(d));
            }
            _ => {}
        }
    }
    reg
}

#[derive(Debug, Clone)]
struct World {
    desired: Vec<DesiredEntry>,
    current: Vec<CurrentEntry>,
    adopt: bool,
    policy: Policy,
    force: bool,
}

fn world() -> impl Strategy<Value = World> {
    // Few names so that paths collide often; ids are unique per resource.
    let names = prop::sample::select(vec!["alpha", "beta", "geo-mcp", "geo_mcp", "Alpha"]);
    let resource = (names, 0..3u8, 0..5u8);
    let existing = (
        0..6u8,
        prop::sample::select(vec!["alpha", "beta", "geo-mcp", "gone", "x"]),
        any::<bool>(),
    );
    (
        prop::collection::vec(resource, 0..6),
        prop::collection::vec(existing, 0..6),
        any::<bool>(),
        prop::sample::select(vec![Policy::Sync, Policy::UpsertOnly, Policy::CreateOnly]),
        any::<bool>(),
    )
        .prop_map(|(res, existing, adopt, policy, force)| {
            let mut desired: Vec<DesiredEntry> = Vec::new();
            for (i, (name, kind, created)) in res.into_iter().enumerate() {
                let id = format!("res{i}");
                let created = format!("2026-0{}", created + 1);
                desired.push(match kind {
                    0 => gw(name, &id, &created),
                    1 => rt(
                        name,
                        &format!("{id}-0123456789"),
                        ServerProtocol::Mcp,
                        &created,
                    ),
                    _ => rt(
                        name,
                        &format!("{id}-0123456789"),
                        ServerProtocol::A2a,
                        &created,
                    ),
                });
            }
            let mut current: Vec<CurrentEntry> = Vec::new();
            for (who, path_name, stale) in existing {
                let path = format!("/{path_name}");
                let entry = match (who as usize).checked_sub(3) {
                    // 0..=2: foreign, legacy, or ours-for-a-vanished-resource
                    None => {
                        let mut e =
                            written(&gw(path_name, &format!("old{who}{path_name}"), "2025"));
                        match who {
                            0 => e = foreign(Collection::Server, &path),
                            1 => {
                                e.metadata.insert("source".into(), json!("agentcore-sync"));
                            }
                            _ => {}
                        }
                        e
                    }
                    // 3..: ours for one of the desired resources, maybe at a stale path
                    Some(k) => match desired.get(k) {
                        Some(d) => {
                            let mut e = written(d);
                            if stale {
                                e.metadata.insert("fingerprint".into(), json!("stale"));
                            }
                            e
                        }
                        None => foreign(Collection::Agent, &path),
                    },
                };
                if !current
                    .iter()
                    .any(|c| c.path == entry.path && c.collection == entry.collection)
                {
                    current.push(entry);
                }
            }
            World {
                desired,
                current,
                adopt,
                policy,
                force,
            }
        })
}

fn ctx(w: &World) -> PlanContext {
    PlanContext {
        policy: w.policy,
        adopt_legacy: w.adopt,
        guard: DeleteGuard {
            force: w.force,
            ..DeleteGuard::default()
        },
        identity: None,
    }
}

proptest! {
    #[test]
    fn never_touches_an_entry_it_does_not_own(w in world()) {
        let actions = plan(observe(w.desired.clone()), &w.current, &[], ctx(&w));
        for a in &actions {
            let (collection, path) = match a {
                Action::Register(d) | Action::Update { desired: d, .. } => (d.collection(), d.path.clone()),
                Action::Deregister(d) => (d.collection, d.path.clone()),
                _ => continue,
            };
            let freed = |e: &CurrentEntry| actions.iter().any(|x| matches!(x,
                Action::Deregister(d) if d.path == e.path && d.collection == e.collection));
            for e in w.current.iter().filter(|e| e.path == path) {
                let ok = match (a, e.owner(w.adopt)) {
                    (Action::Register(_), _) => freed(e),
                    (Action::Update { desired, .. }, Owner::Us(r) | Owner::Legacy(r)) =>
                        e.collection != collection || r.arn == desired.resource.arn,
                    (Action::Deregister(_), Owner::Us(_)) => true,
                    (_, _) => e.collection != collection,
                };
                prop_assert!(ok, "{a:?} touches {e:?}");
            }
        }
    }

    #[test]
    fn applying_a_plan_then_planning_again_yields_no_writes(w in world()) {
        let obs = observe(w.desired.clone());
        let first = plan(obs.clone(), &w.current, &[], ctx(&w));
        let after = apply(&w.current, &first);
        let second = plan(obs, &after, &[], ctx(&w));
        let writes: Vec<&Action> = second.iter().filter(|a| a.writes()).collect();
        prop_assert!(writes.is_empty(), "second plan still writes: {writes:?}");
    }

    #[test]
    fn a_path_held_by_another_resource_is_a_conflict(w in world()) {
        let actions = plan(observe(w.desired.clone()), &w.current, &[], ctx(&w));
        for d in &w.desired {
            let held_by_other = w.current.iter().any(|e| e.path == d.path
                && e.owner(w.adopt).resource().is_none_or(|r| r.arn != d.resource.arn)
                && !actions.iter().any(|x| matches!(x, Action::Deregister(g) if g.path == e.path && g.collection == e.collection)));
            let mine = actions.iter().find(|a| match a {
                Action::Register(x) | Action::Update { desired: x, .. } | Action::Unchanged { desired: x, .. }
                | Action::Conflict { desired: x, .. } => x.resource == d.resource,
                Action::Skip { resource, .. } => resource == &d.resource,
                Action::Deregister(_) => false,
            });
            let owns_it = w.current.iter().any(|e| e.path == d.path && e.collection == d.collection()
                && e.owner(w.adopt).resource().is_some_and(|r| r.arn == d.resource.arn));
            if held_by_other && !owns_it {
                prop_assert!(matches!(mine, Some(Action::Conflict { .. })), "{d:?} -> {mine:?}");
            }
            // Every desired resource gets exactly one decision.
            prop_assert!(mine.is_some());
        }
    }
}

#[test]
fn a_row_recorded_before_pointing_was_kept_is_verified_by_identity_alone() {
    let gone = gw("gone", "gwg", "1");
    let old_row = RecordedResource {
        pointing: None,
        ..recorded_as_written(&gone)
    };
    let mut ours = written(&gone);
    ours.registered_by = Some("registrar".into());
    let obs = Observation {
        covered: covered_all(),
        ..Observation::default()
    };
    let forced = DeleteGuard {
        force: true,
        ..DeleteGuard::default()
    };
    let with_identity = PlanContext {
        identity: Some(RegistryIdentity::configured("registrar".into())),
        guard: forced,
        ..PlanContext::default()
    };
    let actions = plan(
        obs.clone(),
        std::slice::from_ref(&ours),
        std::slice::from_ref(&old_row),
        with_identity,
    );
    assert_eq!(kinds(&actions), ["deregister"]);
    // Without an identity nothing tells where it should point: kept.
    let without = PlanContext {
        guard: forced,
        ..PlanContext::default()
    };
    let actions = plan(obs, &[ours], &[old_row], without);
    assert!(!actions.iter().any(Action::writes), "{actions:?}");
}

#[path = "plan_stream_tests.rs"]
mod stream;
