//! What every state store does: records and pointers, path claims, manifests and token
//! state, refresh claims, versioned leases, and fencing.

use std::time::Duration;

use registrar_core::ErrorClass;
use registrar_core::desired::{DeriveOptions, gateway_entry};
use registrar_core::identity::ResourceKey;
use registrar_core::plan::RecordedResource;
use registrar_core::ports::{Acquired, StateStore};

use crate::fixtures::{gateway, recorded, server_entry, target_server_entry, token};

fn key_of(r: &registrar_core::plan::RecordedResource) -> ResourceKey {
    ResourceKey {
        kind: r.resource.kind,
        account: r.resource.account.clone(),
        region: r.resource.region.clone(),
        id: r.resource.id.clone(),
        gateway_id: r.resource.gateway_id.clone(),
    }
}

fn lease_lost<T: std::fmt::Debug>(r: Result<T, registrar_core::PortError>, what: &str) {
    let e = r.expect_err(what);
    assert_eq!(e.class, ErrorClass::Transient, "{what}: {e}");
    assert!(e.to_string().contains("lease lost"), "{what}: {e}");
}

/// Records, pointers and path claims.
pub async fn resources<S: StateStore>(store: &S) {
    let a = recorded(&server_entry("alpha", "gw-alpha"));
    let b = recorded(&server_entry("beta", "gw-beta"));
    assert_eq!(store.lookup(&key_of(&a)).await.expect("lookup"), None);
    store.record(&a).await.expect("record a");
    store.record(&b).await.expect("record b");
    assert_eq!(
        store.lookup(&key_of(&a)).await.expect("lookup"),
        Some(a.clone())
    );
    let mut changed = a.clone();
    changed.fingerprint = "changed".into();
    changed.enabled_set = false;
    store.record(&changed).await.expect("record again");
    assert_eq!(
        store.lookup(&key_of(&a)).await.expect("lookup"),
        Some(changed.clone())
    );
    store.mark_enabled(&a.resource.arn).await.expect("mark");
    let marked = store
        .lookup(&key_of(&a))
        .await
        .expect("lookup")
        .expect("row");
    assert!(marked.enabled_set, "marked enabled");
    // A write from a snapshot gives way to a row changed since: the stored `enabled_set` is
    // written with the rest. `record` (a decision just made) writes what it is given.
    let enabled_set_of = async |r: &RecordedResource| {
        store
            .lookup(&key_of(r))
            .await
            .expect("lookup")
            .expect("row")
            .enabled_set
    };
    let stale = RecordedResource {
        fingerprint: "changed again".into(),
        ..changed.clone()
    };
    // Seen owing the enable; enabled since (the mark above): kept.
    assert!(
        store
            .record_since(&stale, Some(false))
            .await
            .expect("record since"),
        "the enable made since is kept"
    );
    assert_eq!(
        store.lookup(&key_of(&a)).await.expect("lookup"),
        Some(RecordedResource {
            enabled_set: true,
            ..stale.clone()
        })
    );
    store.record(&stale).await.expect("record");
    assert!(!enabled_set_of(&a).await, "record writes what it is given");
    // Seen as stored: written as given, either way.
    let owed = RecordedResource {
        fingerprint: "owed".into(),
        ..stale.clone()
    };
    assert!(
        !store
            .record_since(&owed, Some(false))
            .await
            .expect("record since"),
        "nothing changed since: as given"
    );
    assert_eq!(
        store.lookup(&key_of(&a)).await.expect("lookup"),
        Some(owed.clone())
    );
    // Seen enabled, or seen with no row at all; owed again since (a registration anew):
    // the owed enable is not lost.
    let done = RecordedResource {
        enabled_set: true,
        ..owed.clone()
    };
    for seen in [Some(true), None] {
        assert!(
            !store.record_since(&done, seen).await.expect("record since"),
            "seen {seen:?}: the enable owed since is kept owed"
        );
        assert!(!enabled_set_of(&a).await, "seen {seen:?}");
    }
    // No row, and none seen: written as given.
    let c = recorded(&server_entry("gamma", "gw-gamma"));
    assert!(
        store.record_since(&c, None).await.expect("record since") == c.enabled_set,
        "a new row as given"
    );
    assert_eq!(
        store.lookup(&key_of(&c)).await.expect("lookup"),
        Some(c.clone())
    );
    store.forget(&c.resource.arn).await.expect("forget");
    let all = store.resources().await.expect("resources");
    assert_eq!(all.len(), 2, "{all:?}");
    store.forget(&a.resource.arn).await.expect("forget");
    assert_eq!(store.lookup(&key_of(&a)).await.expect("lookup"), None);
    // The one enable owed: claimed by one caller only, given back when it could not be made.
    let owing = RecordedResource {
        enabled_set: false,
        ..b.clone()
    };
    store.record(&owing).await.expect("record");
    let arn_b = &b.resource.arn;
    assert!(store.claim_enable(arn_b).await.expect("claim"), "claimed");
    assert!(
        !store.claim_enable(arn_b).await.expect("claim"),
        "made already"
    );
    assert!(
        store
            .lookup(&key_of(&b))
            .await
            .expect("lookup")
            .expect("row")
            .enabled_set
    );
    store.owe_enable_again(arn_b).await.expect("owe again");
    assert!(
        !store
            .lookup(&key_of(&b))
            .await
            .expect("lookup")
            .expect("row")
            .enabled_set
    );
    assert!(
        store.claim_enable(arn_b).await.expect("claim"),
        "owed again"
    );
    store.record(&b).await.expect("record");
    assert!(
        !store.claim_enable(&a.resource.arn).await.expect("claim"),
        "no row: nothing to claim"
    );
    // Seen, then forgotten (deregistered): a write from the snapshot does not bring it back.
    store
        .record_since(&a, Some(true))
        .await
        .expect("record since");
    assert_eq!(store.lookup(&key_of(&a)).await.expect("lookup"), None);
    assert!(
        store.mark_enabled(&a.resource.arn).await.is_err(),
        "no row to mark"
    );
    let left: Vec<String> = store
        .resources()
        .await
        .expect("resources")
        .into_iter()
        .map(|r| r.resource.arn)
        .collect();
    assert_eq!(left, std::slice::from_ref(&b.resource.arn));

    // One resource per path.
    let (one, two) = (a.resource.arn.as_str(), b.resource.arn.as_str());
    assert_eq!(store.claim_path("/shared", one).await.expect("claim"), None);
    assert_eq!(
        store.claim_path("/shared", one).await.expect("again"),
        None,
        "idempotent"
    );
    assert_eq!(
        store.claim_path("/shared", two).await.expect("claim"),
        Some(one.to_owned())
    );
    store
        .release_path("/shared", two)
        .await
        .expect("not its claim");
    assert_eq!(
        store.claim_path("/shared", two).await.expect("claim"),
        Some(one.to_owned()),
        "another resource cannot release it"
    );
    store.release_path("/shared", one).await.expect("release");
    assert_eq!(store.claim_path("/shared", two).await.expect("claim"), None);
}

/// A gateway's recorded targets, found from the gateway's key (its region and id) as the
/// cascade of a deleted gateway needs them: only that gateway's targets (not the gateway, not
/// another gateway's targets, not a gateway of that id in another region), forgotten ones left
/// out, fenced forgets too. And the reads are the targets' pointers and rows: never a scan.
/// `reads` is as for [`due_index`] (the adapter's pointers under a gateway's key read as
/// `target#<id>`).
pub async fn gateway_targets<S: StateStore, R: AsyncFn() -> Vec<String>>(store: &S, reads: R) {
    let gw = recorded(&server_entry("cascade", "gw-cascade"));
    let one = recorded(&target_server_entry("cascade", "gw-cascade", "one", "T1"));
    let two = recorded(&target_server_entry("cascade", "gw-cascade", "two", "T2"));
    let other = recorded(&target_server_entry("other", "gw-other", "one", "T3"));
    let mut elsewhere = recorded(&target_server_entry("cascade", "gw-cascade", "far", "T4"));
    elsewhere.resource = registrar_core::identity::ResourceRef::target(
        &gw.resource.arn.replace("us-east-1", "eu-west-1"),
        "gw-cascade",
        "T4",
    );
    for r in [&gw, &one, &two, &other, &elsewhere] {
        store.record(r).await.expect("record");
    }
    let arns = |found: Vec<registrar_core::plan::RecordedResource>| {
        let mut arns: Vec<String> = found.into_iter().map(|r| r.resource.arn).collect();
        arns.sort();
        arns
    };
    let gateway = key_of(&gw);
    reads().await;
    assert_eq!(
        arns(store.targets_of(&gateway).await.expect("targets")),
        [one.resource.arn.clone(), two.resource.arn.clone()]
    );
    let read = reads().await;
    assert!(
        read.iter()
            .all(|k| k == "res" || k == "ptr" || k.starts_with("target#")),
        "only the targets' pointers and rows are read: {read:?}"
    );
    assert!(read.len() <= 4, "reads grow with the targets: {read:?}");
    assert_eq!(
        store.lookup(&key_of(&one)).await.expect("lookup"),
        Some(one.clone()),
        "a target's own pointer is kept as before"
    );
    let none = ResourceKey {
        id: "gw-none".into(),
        ..gateway.clone()
    };
    assert!(store.targets_of(&none).await.expect("targets").is_empty());

    // Forgotten, unfenced or fenced, a target is no longer found; recorded again, it is.
    store.forget(&one.resource.arn).await.expect("forget");
    assert_eq!(
        arns(store.targets_of(&gateway).await.expect("targets")),
        std::slice::from_ref(&two.resource.arn)
    );
    let lease = store
        .acquire_lease(
            "key#gateway#us-east-1#gw-cascade",
            "w1",
            Duration::from_secs(30),
        )
        .await
        .expect("lease")
        .expect("free");
    store
        .fenced(&lease)
        .forget(&two.resource.arn)
        .await
        .expect("fenced forget");
    assert!(
        store
            .targets_of(&gateway)
            .await
            .expect("targets")
            .is_empty()
    );
    store.release_lease(&lease).await.expect("release");
    store.record(&one).await.expect("record again");
    assert_eq!(
        arns(store.targets_of(&gateway).await.expect("targets")),
        std::slice::from_ref(&one.resource.arn)
    );
    let read = reads().await;
    assert!(!read.iter().any(|k| k == "scan"), "never a scan: {read:?}");
    for r in [&gw, &one, &other, &elsewhere] {
        store.forget(&r.resource.arn).await.expect("forget");
    }
}

/// Manifest rows, token state and the one-refresher claim.
pub async fn tokens<S: StateStore>(store: &S) {
    let d = gateway_entry(
        &gateway("jwt", "gw-jwt", Some("https://idp.example")),
        DeriveOptions::default(),
    )
    .expect("registrable");
    let m = d
        .manifest
        .clone()
        .expect("a CUSTOM_JWT gateway has a manifest row");
    let arn = m.arn.clone();
    assert_eq!(store.manifest(&arn).await.expect("manifest"), None);
    store.put_manifest(&m).await.expect("put");
    assert_eq!(
        store.manifest(&arn).await.expect("manifest"),
        Some(m.clone())
    );
    assert_eq!(
        store.manifests().await.expect("manifests"),
        std::slice::from_ref(&m)
    );
    // Read with the record its key finds, and only with one.
    let rec = recorded(&d);
    assert_eq!(
        store
            .lookup_with_manifest(&key_of(&rec))
            .await
            .expect("lookup"),
        (None, None),
        "no record, so nothing"
    );
    store.record(&rec).await.expect("record");
    assert_eq!(
        store
            .lookup_with_manifest(&key_of(&rec))
            .await
            .expect("lookup"),
        (Some(rec.clone()), Some(m.clone()))
    );

    // Never refreshed: one claim wins until it runs out; a stale view never wins.
    let now = 1_000_000;
    assert!(
        store
            .claim_refresh(&arn, None, "w1", now, now + 60)
            .await
            .expect("claim")
    );
    assert!(
        !store
            .claim_refresh(&arn, None, "w2", now + 1, now + 61)
            .await
            .expect("claim")
    );
    assert!(
        store
            .claim_refresh(&arn, None, "w2", now + 61, now + 121)
            .await
            .expect("claim"),
        "a claim that ran out can be taken"
    );
    // Recording the refreshed state ends the claim; the next claim must have seen it.
    store
        .record_token(&arn, &token(now + 70, now + 3000))
        .await
        .expect("record");
    let tokens = store.due_tokens(u64::MAX).await.expect("tokens");
    assert_eq!(tokens.len(), 1, "{tokens:?}");
    assert_eq!(tokens[0].manifest, m);
    assert_eq!(tokens[0].token, Some(token(now + 70, now + 3000)));
    assert!(
        !store
            .claim_refresh(&arn, None, "w1", now + 3001, now + 3060)
            .await
            .expect("stale")
    );
    assert!(
        !store
            .claim_refresh(&arn, Some(now + 1), "w1", now + 3001, now + 3060)
            .await
            .expect("stale")
    );
    assert!(
        store
            .claim_refresh(&arn, Some(now + 3000), "w1", now + 3001, now + 3060)
            .await
            .expect("due")
    );

    // Rewriting the manifest keeps the token state; deleting it takes both.
    store.put_manifest(&m).await.expect("rewrite");
    let kept = store.due_tokens(u64::MAX).await.expect("tokens");
    assert_eq!(kept[0].token, Some(token(now + 70, now + 3000)), "kept");
    store.delete_manifest(&arn).await.expect("delete");
    assert_eq!(store.manifest(&arn).await.expect("manifest"), None);
    assert_eq!(
        store
            .lookup_with_manifest(&key_of(&rec))
            .await
            .expect("lookup"),
        (Some(rec.clone()), None),
        "a deleted manifest row is no manifest"
    );
    assert!(store.manifests().await.expect("manifests").is_empty());
    assert!(store.due_tokens(u64::MAX).await.expect("tokens").is_empty());
}

fn manifest_of(name: &str, id: &str) -> registrar_core::tokens::ManifestFields {
    gateway_entry(
        &gateway(name, id, Some("https://idp.example")),
        DeriveOptions::default(),
    )
    .expect("registrable")
    .manifest
    .expect("a CUSTOM_JWT gateway has a manifest row")
}

fn arns(due: &[registrar_core::ports::DueToken]) -> Vec<&str> {
    due.iter().map(|d| d.manifest.arn.as_str()).collect()
}

/// The token loop's reads, through the due index: a token is found exactly when it is due (or
/// about to expire unrefreshed), earliest first; a new manifest row's token at once; a claimed
/// token is still found, but a second claim is refused; deleting the manifest row takes it out;
/// a token state written after its row was deleted is not returned (and is dropped). And the
/// reads are only the due tokens' token, manifest and resource items: never a scan, never a
/// lease, pointer or claim. `reads` returns the kinds of the items the store read since it was
/// last called (`res`, `ptr`, `claim`, `manifest`, `token`, `lease`; `scan` for a scan).
pub async fn due_index<S: StateStore, R: AsyncFn() -> Vec<String>>(store: &S, reads: R) {
    let now = 2_000_000;
    // What the loop must not read: resource rows of resources without tokens, their key
    // pointers, path claims and leases.
    for i in 0..3 {
        let r = recorded(&server_entry(&format!("plain{i}"), &format!("gw-plain{i}")));
        store.record(&r).await.expect("record");
        store
            .claim_path(&r.path, &r.resource.arn)
            .await
            .expect("claim");
    }
    let lease = store
        .acquire_lease("rescan", "w0", Duration::from_secs(30))
        .await
        .expect("lease")
        .expect("free");
    let (a, b) = (
        manifest_of("due-a", "gw-due-a"),
        manifest_of("due-b", "gw-due-b"),
    );
    let resource_a = recorded(
        &gateway_entry(
            &gateway("due-a", "gw-due-a", Some("https://idp.example")),
            DeriveOptions::default(),
        )
        .expect("registrable"),
    );
    store.record(&resource_a).await.expect("record a");
    store.put_manifest(&a).await.expect("manifest a");
    store.put_manifest(&b).await.expect("manifest b");
    reads().await;

    // New manifest rows are due at once, with the resource's record where one is kept.
    let due = store.due_tokens(now).await.expect("due");
    assert_eq!(arns(&due).len(), 2, "{due:?}");
    assert!(due.iter().all(|d| d.token.is_none()), "{due:?}");
    let found_a = due.iter().find(|d| d.manifest == a).expect("a is due");
    assert_eq!(found_a.resource.as_ref(), Some(&resource_a));
    assert!(due.iter().any(|d| d.manifest == b && d.resource.is_none()));
    let read = reads().await;
    assert!(
        read.iter()
            .all(|k| ["token", "manifest", "res"].contains(&k.as_str())),
        "the loop reads only due tokens' token, manifest and resource items: {read:?}"
    );
    assert!(
        read.len() <= 3 * due.len(),
        "reads grow with the tokens due: {read:?}"
    );

    // A recorded state is found from its next refresh on, not before.
    store
        .record_token(&a.arn, &token(now, now + 100))
        .await
        .expect("record a");
    assert_eq!(
        arns(&store.due_tokens(now + 99).await.expect("due")),
        [b.arn.as_str()]
    );
    assert_eq!(
        arns(&store.due_tokens(now + 100).await.expect("due")),
        [b.arn.as_str(), a.arn.as_str()],
        "earliest first"
    );
    reads().await;
    assert!(store.due_tokens(now + 99).await.expect("due").len() == 1);
    let read = reads().await;
    assert!(
        read.iter().filter(|k| *k == "token").count() <= 1,
        "a token not due is not read: {read:?}"
    );

    // Claimed, it is still found, and a second claim is refused.
    assert!(
        store
            .claim_refresh(&b.arn, None, "w1", now, now + 60)
            .await
            .expect("claim")
    );
    let due = store.due_tokens(now).await.expect("due");
    assert_eq!(
        arns(&due),
        [b.arn.as_str()],
        "a claimed token is still found"
    );
    assert_eq!(due[0].token, None);
    assert!(
        !store
            .claim_refresh(&b.arn, None, "w2", now + 1, now + 61)
            .await
            .expect("claim")
    );

    // A token whose refresh keeps failing is found a minute before it expires unrefreshed, even
    // when its next attempt is later.
    let mut refused = token(now - 3000, now + 3600);
    refused.expires_at = Some(now + 600);
    refused.last_result = "refused: untrusted issuer".into();
    store
        .record_token(&a.arn, &refused)
        .await
        .expect("record a");
    assert!(!arns(&store.due_tokens(now + 539).await.expect("due")).contains(&a.arn.as_str()));
    assert!(arns(&store.due_tokens(now + 540).await.expect("due")).contains(&a.arn.as_str()));

    // Deleting the manifest row takes the token out; a state recorded after that (a refresh
    // that was in flight) is not returned, and not read again.
    store.delete_manifest(&b.arn).await.expect("delete b");
    assert_eq!(
        arns(&store.due_tokens(u64::MAX).await.expect("due")),
        [a.arn.as_str()]
    );
    store
        .record_token(&b.arn, &token(now, now + 10))
        .await
        .expect("late record");
    assert_eq!(
        arns(&store.due_tokens(u64::MAX).await.expect("due")),
        [a.arn.as_str()]
    );
    reads().await;
    assert_eq!(
        arns(&store.due_tokens(u64::MAX).await.expect("due")),
        [a.arn.as_str()]
    );
    let read = reads().await;
    assert_eq!(
        read.iter().filter(|k| *k == "token").count(),
        1,
        "the orphan was dropped from the index: {read:?}"
    );
    // Written again, the row is due at once.
    store.put_manifest(&b).await.expect("manifest b again");
    let due = store.due_tokens(now).await.expect("due");
    assert_eq!(arns(&due), [b.arn.as_str()]);
    assert_eq!(due[0].token, None);

    store.delete_manifest(&a.arn).await.expect("delete a");
    store.delete_manifest(&b.arn).await.expect("delete b");
    store.release_lease(&lease).await.expect("release");
}

/// Leases and fencing. `pass` lets at least the given time go by (sleeping on a real clock,
/// advancing a paused one).
/// `ttl` must outlast a handful of the store's calls.
pub async fn leases<S: StateStore, F: AsyncFn(Duration)>(store: &S, ttl: Duration, pass: F) {
    let name = "key#gateway#us-east-1#gw-fenced";
    let d = server_entry("fenced", "gw-fenced");
    let row = recorded(&d);
    let m = gateway_entry(
        &gateway("fenced", "gw-fenced", Some("https://idp.example")),
        DeriveOptions::default(),
    )
    .expect("registrable")
    .manifest
    .expect("manifest");
    let arn = row.resource.arn.clone();

    // A holds the lease and writes under it; B cannot take it meanwhile.
    let a = store
        .acquire_lease(name, "worker-a", ttl)
        .await
        .expect("acquire")
        .expect("free");
    assert!(
        store
            .acquire_lease(name, "worker-b", ttl)
            .await
            .expect("acquire")
            .is_none()
    );
    let stale = store.fenced(&a);
    stale.hold().await.expect("held");
    assert_eq!(stale.claim_path(&d.path, &arn).await.expect("claim"), None);
    stale.record(&row).await.expect("record");
    stale.put_manifest(&m).await.expect("manifest");
    stale.mark_enabled(&arn).await.expect("mark");
    assert!(
        store.renew_lease(&a).await.expect("renew"),
        "the holder renews"
    );

    // A stalls past its lease; B takes it (a newer version) and handles the deletion.
    pass(ttl * 2).await;
    let b = store
        .acquire_lease(name, "worker-b", Duration::from_secs(30))
        .await
        .expect("acquire")
        .expect("A's lease ran out");
    assert!(b.version > a.version, "versions only grow");
    let next = store.fenced(&b);
    next.release_path(&d.path, &arn).await.expect("release");
    next.forget(&arn).await.expect("forget");
    next.delete_manifest(&arn).await.expect("delete manifest");

    // A wakes: its lease is gone, and none of its writes lands.
    assert!(
        !store.renew_lease(&a).await.expect("renew"),
        "A's renewal fails"
    );
    lease_lost(stale.hold().await, "hold");
    lease_lost(stale.record(&row).await, "record");
    let owed = RecordedResource {
        enabled_set: false,
        ..row.clone()
    };
    lease_lost(stale.record_since(&owed, Some(false)).await, "record since");
    lease_lost(stale.claim_path(&d.path, &arn).await, "claim");
    lease_lost(stale.put_manifest(&m).await, "manifest");
    assert!(stale.mark_enabled(&arn).await.is_err(), "no row to mark");
    lease_lost(stale.claim_enable(&arn).await, "claim the enable");
    store.release_lease(&a).await.expect("release");
    assert!(
        store.renew_lease(&b).await.expect("renew"),
        "A's release left B's lease alone"
    );

    // Tombstones are invisible to readers.
    let key = key_of(&row);
    assert_eq!(store.lookup(&key).await.expect("lookup"), None);
    assert_eq!(store.manifest(&arn).await.expect("manifest"), None);
    assert!(
        store
            .resources()
            .await
            .expect("resources")
            .iter()
            .all(|r| r.resource.arn != arn)
    );
    assert!(
        store
            .manifests()
            .await
            .expect("manifests")
            .iter()
            .all(|x| x.arn != arn)
    );

    // A write that saw the row does not bring it back; one that saw none lands on the
    // tombstone. The next holder, and an unfenced writer (a rescan), write over them as usual.
    store
        .record_since(&row, Some(row.enabled_set))
        .await
        .expect("record since");
    assert_eq!(store.lookup(&key).await.expect("lookup"), None);
    assert_eq!(
        next.record_since(&row, None)
            .await
            .expect("over a tombstone"),
        row.enabled_set
    );
    assert_eq!(store.lookup(&key).await.expect("lookup"), Some(row.clone()));
    assert_eq!(next.claim_path(&d.path, &arn).await.expect("claim"), None);
    next.record(&row).await.expect("record");
    next.put_manifest(&m).await.expect("manifest");
    next.mark_enabled(&arn).await.expect("mark");
    assert_eq!(store.lookup(&key).await.expect("lookup"), Some(row.clone()));
    // Under the fence too, a write that owed the enable keeps the stored one; an older
    // holder's is refused, whatever the row says.
    let owed_again = RecordedResource {
        enabled_set: false,
        ..row.clone()
    };
    assert!(
        next.record_since(&owed_again, Some(false))
            .await
            .expect("fenced, since a snapshot"),
        "kept under the fence"
    );
    assert_eq!(store.lookup(&key).await.expect("lookup"), Some(row.clone()));
    lease_lost(
        stale.record_since(&owed_again, Some(false)).await,
        "an older holder's write over a row enabled since",
    );
    assert_eq!(
        store.manifest(&arn).await.expect("manifest"),
        Some(m.clone())
    );
    next.forget(&arn).await.expect("forget");
    store
        .record(&row)
        .await
        .expect("an unfenced write over a tombstone");
    assert_eq!(store.lookup(&key).await.expect("lookup"), Some(row));

    // Released, it is free at once, under a newer version.
    store.release_lease(&b).await.expect("release");
    pass(Duration::from_millis(5)).await;
    let c = store
        .acquire_lease(name, "worker-c", ttl)
        .await
        .expect("acquire")
        .expect("released");
    assert!(c.version > b.version);
}

/// Versions only grow, even when the next holder's clock is behind the last one's: `ahead`
/// and `behind` are the same table seen by two processes, `behind`'s clock slower by more
/// than the lease takes.
pub async fn lease_versions_under_skew<S: StateStore>(ahead: &S, behind: &S) {
    let name = "key#runtime#us-east-1#rt-skew";
    let ttl = Duration::from_secs(30);
    let first = ahead
        .acquire_lease(name, "fast", ttl)
        .await
        .expect("acquire")
        .expect("free");
    ahead.release_lease(&first).await.expect("release");
    let second = behind
        .acquire_lease(name, "slow", ttl)
        .await
        .expect("acquire")
        .expect("released, so free");
    assert!(
        second.version > first.version,
        "a clock behind does not take the version back: {} then {}",
        first.version,
        second.version
    );
    assert!(behind.renew_lease(&second).await.expect("renew"));
    assert!(!ahead.renew_lease(&first).await.expect("renew"));
    behind.release_lease(&second).await.expect("release");
    let third = ahead
        .acquire_lease(name, "fast", ttl)
        .await
        .expect("acquire")
        .expect("free");
    assert!(third.version > second.version);

    // The settled mark: recorded at release, kept through later acquisitions (and holders that
    // settle nothing), and shown, instead of the lease, to an acquisition whose `since` it
    // covers, whoever holds the lease.
    assert_eq!(
        behind
            .acquire_lease_unless_settled(name, "slow", ttl, Some(0))
            .await
            .expect("acquire"),
        Acquired::Held,
        "nothing settled yet, and held"
    );
    third.settle(1_000);
    third.settle(900);
    assert_eq!(third.settled_ms(), Some(1_000), "a mark never goes back");
    ahead.release_lease(&third).await.expect("release");
    assert_eq!(
        behind
            .acquire_lease_unless_settled(name, "slow", ttl, Some(1_000))
            .await
            .expect("acquire"),
        Acquired::Settled(1_000),
        "a run begun at `since` covers it"
    );
    let fourth = behind
        .acquire_lease_unless_settled(name, "slow", ttl, Some(1_001))
        .await
        .expect("acquire")
        .taken()
        .expect("a run begun before `since` covers nothing: taken");
    assert!(fourth.version > third.version);
    assert_eq!(
        ahead
            .acquire_lease_unless_settled(name, "fast", ttl, Some(500))
            .await
            .expect("acquire"),
        Acquired::Settled(1_000),
        "kept while another holds the lease, and shown whoever holds it"
    );
    assert_eq!(fourth.settled_ms(), None, "this holder settled nothing");
    behind.release_lease(&fourth).await.expect("release");
    assert_eq!(
        ahead
            .acquire_lease_unless_settled(name, "fast", ttl, Some(1_000))
            .await
            .expect("acquire"),
        Acquired::Settled(1_000),
        "a holder that settled nothing leaves the mark as it was"
    );
    // A mark from a clock far ahead (the year 2096) covers nothing.
    let fifth = ahead
        .acquire_lease(name, "fast", ttl)
        .await
        .expect("acquire")
        .expect("free: without `since` no mark refuses it");
    fifth.settle(4_000_000_000_000);
    ahead.release_lease(&fifth).await.expect("release");
    let sixth = behind
        .acquire_lease_unless_settled(name, "slow", ttl, Some(0))
        .await
        .expect("acquire")
        .taken()
        .expect("a mark later than now is no mark");
    behind.release_lease(&sixth).await.expect("release");
    assert!(
        ahead
            .acquire_lease_unless_settled("key#runtime#us-east-1#rt-none", "fast", ttl, Some(0))
            .await
            .expect("acquire")
            .taken()
            .is_some(),
        "another name has no mark"
    );
}
