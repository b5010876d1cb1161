//! The seed's "Concurrency Conflicts" scenario, run with real concurrency:
//! admin 1 removes user X while admin 2 promotes user Y, both starting
//! from the same view of the group. Without the server's rule one change
//! could erase the other; with it the second admin is told who is editing,
//! waits, and both changes survive. A client that skips the lock, or whose
//! lease lapsed while it was paused, cannot write at all.

mod admin;

use std::sync::Arc;
use std::time::Duration;

use oceanchat_client::Connection;
use oceanchat_protocol::client::{ErrorCode, Role};
use oceanchat_tests::{refusal, User, World, WAIT};
use tokio::sync::{oneshot, Barrier};

use admin::*;

/// The seed's cast: a group whose owner made two admins ("admin 1" and
/// "admin 2"), with users X and Y as members. Returns the group id, the
/// users (admin 2, admin 1, X, Y) and the connections of admin 2 and
/// admin 1, on different gateways. Neither admin is the owner: admin 2
/// promoting Y to co-admin is the seed's own scenario.
async fn cast(world: &World) -> (String, [User; 4], Connection, Connection) {
    let owner = world.user("owner").await;
    let adm2 = world.user("admtwo").await;
    let adm = world.user("adm").await;
    let x = world.user("x").await;
    let y = world.user("y").await;
    let o = owner.connect(world, 0).await;
    let group = o
        .group_create(
            "club",
            &[&adm2.user_id, &adm.user_id, &x.user_id, &y.user_id],
        )
        .await
        .unwrap();
    let gid = group.group_id;
    let resource = group_resource(&gid);
    let lease = o.lock_acquire(&resource).await.unwrap();
    for admin in [&adm2.user_id, &adm.user_id] {
        o.group_members_set_role(&gid, &lease.token, admin, Role::Admin)
            .await
            .unwrap();
    }
    o.lock_release(&resource, &lease.token).await.unwrap();
    let a2 = adm2.connect(world, 0).await;
    let a = adm.connect(world, world.gateways.len() - 1).await;
    (gid, [adm2, adm, x, y], a2, a)
}

/// One admin's page: open it (read the group, watch the lock), try to take
/// the lock; if someone else holds it, show who, wait until it is free and
/// try again. Then make the one change and leave.
async fn edit_page<F, Fut>(
    page: Arc<Connection>,
    gid: String,
    start: Arc<Barrier>,
    refused: Option<oneshot::Sender<()>>,
    holder_gone: Option<oneshot::Receiver<()>>,
    change: F,
) -> (u64, Vec<oceanchat_protocol::client::LockHolder>, u64)
where
    F: FnOnce(Arc<Connection>, String) -> Fut,
    Fut: std::future::Future<Output = u64>,
{
    let resource = group_resource(&gid);
    let view = page.group_get(&gid).await.unwrap().group.version;
    page.lock_watch(&resource).await.unwrap();
    start.wait().await;
    let mut refused = refused;
    let mut seen_holders = Vec::new();
    let lease = loop {
        match page.lock_acquire(&resource).await {
            Ok(lease) => break lease,
            Err(e) => {
                let error = e.server_error().expect("a refusal").clone();
                seen_holders.push(holder_of(&error));
                if let Some(tx) = refused.take() {
                    let _ = tx.send(());
                }
                // Read-only until the lock is free.
                while next_lock_event(&page, &resource, WAIT)
                    .await
                    .expect("a lock event")
                    .is_some()
                {}
            }
        }
    };
    // The winner keeps the page open until the other admin has been
    // refused, so the two really overlap.
    if let Some(gone) = holder_gone {
        let _ = gone.await;
    }
    let version = change(page.clone(), lease.token.clone()).await;
    page.lock_release(&resource, &lease.token).await.unwrap();
    (view, seen_holders, version)
}

#[tokio::test]
async fn with_the_lock_the_second_admin_waits_and_both_changes_survive() {
    // Two backends: the two admins' requests are served by either, so
    // nothing rests on one process's memory.
    let world = World::with(2, 2);
    let (gid, [adm2, adm, x, y], o, a) = cast(&world).await;
    let (o, a) = (Arc::new(o), Arc::new(a));
    let before = o.group_get(&gid).await.unwrap();
    assert_eq!(role_in(&before, &x.user_id), Some(Role::Member));
    assert_eq!(role_in(&before, &y.user_id), Some(Role::Member));

    // Both pages open at once and both admins press "edit" at once. The
    // one that gets the lock waits until the other was refused.
    let start = Arc::new(Barrier::new(2));
    let (o_refused, o_refused_rx) = oneshot::channel();
    let (a_refused, a_refused_rx) = oneshot::channel();
    let remove_x = {
        let (gid, x) = (gid.clone(), x.user_id.clone());
        move |c: Arc<Connection>, token: String| async move {
            c.group_members_remove(&gid, &token, &[&x]).await.unwrap()
        }
    };
    let promote_y = {
        let (gid, y) = (gid.clone(), y.user_id.clone());
        move |c: Arc<Connection>, token: String| async move {
            c.group_members_set_role(&gid, &token, &y, Role::Admin)
                .await
                .unwrap()
        }
    };
    // Each page is told "the other was refused" through the other's
    // sender; only the winner ever waits for it.
    let admin_one = tokio::spawn(edit_page(
        a.clone(),
        gid.clone(),
        start.clone(),
        Some(a_refused),
        Some(o_refused_rx),
        remove_x,
    ));
    let admin_two = tokio::spawn(edit_page(
        o.clone(),
        gid.clone(),
        start.clone(),
        Some(o_refused),
        Some(a_refused_rx),
        promote_y,
    ));
    let (view_1, refusals_1, version_1) = admin_one.await.unwrap();
    let (view_2, refusals_2, version_2) = admin_two.await.unwrap();

    // Same starting view; exactly one admin was refused, and it saw the
    // other one's name, session and since.
    assert_eq!(view_1, before.group.version);
    assert_eq!(view_2, before.group.version);
    let (refused, holder_expected) = match (refusals_1.is_empty(), refusals_2.is_empty()) {
        (false, true) => (&refusals_1, &adm2),
        (true, false) => (&refusals_2, &adm),
        other => panic!("exactly one admin is refused, got {other:?}"),
    };
    let holder = &refused[0];
    assert_eq!(holder.user_id, holder_expected.user_id);
    assert_eq!(holder.session_id, holder_expected.session_id);
    assert_eq!(
        holder.display_name,
        if holder_expected.user_id == adm2.user_id {
            "admtwo"
        } else {
            "adm"
        }
    );
    assert!(holder.since > 0);

    // Both changes applied, one version each, and both survive.
    let mut versions = [version_1, version_2];
    versions.sort();
    assert_eq!(
        versions,
        [before.group.version + 1, before.group.version + 2]
    );
    let after = o.group_get(&gid).await.unwrap();
    assert_eq!(after.group.version, before.group.version + 2);
    assert_eq!(role_in(&after, &x.user_id), None, "X is gone");
    assert_eq!(role_in(&after, &y.user_id), Some(Role::Admin), "Y is admin");
    assert_eq!(role_in(&after, &adm.user_id), Some(Role::Admin));
}

#[tokio::test]
async fn a_client_that_skips_the_lock_cannot_write() {
    let world = World::with(1, 2);
    let (gid, [_adm2, _adm, x, y], o, a) = cast(&world).await;
    let before = o.group_get(&gid).await.unwrap();

    // Nobody holds the lock: both writes are refused.
    assert_eq!(
        refusal(a.group_members_remove(&gid, "", &[&x.user_id]).await),
        ErrorCode::LockRequired
    );
    assert_eq!(
        refusal(
            o.group_members_set_role(&gid, "", &y.user_id, Role::Admin)
                .await
        ),
        ErrorCode::LockRequired
    );
    // Admin 1 holds it; admin 2, skipping it, still cannot write, even
    // with a token it made up.
    let lease = a.lock_acquire(&group_resource(&gid)).await.unwrap();
    assert_eq!(
        refusal(
            o.group_members_set_role(&gid, "guess", &y.user_id, Role::Admin)
                .await
        ),
        ErrorCode::LockLost
    );
    assert_eq!(
        o.group_get(&gid).await.unwrap(),
        before,
        "nothing changed by the refused writes"
    );
    a.group_members_remove(&gid, &lease.token, &[&x.user_id])
        .await
        .unwrap();
}

#[tokio::test]
async fn a_holder_paused_past_its_lease_cannot_write_once_another_took_the_lock() {
    let world = World::with_args(1, 2, &["--lock-ttl-ms", "700"], &[]);
    let (gid, [_adm2, adm, x, y], o, a) = cast(&world).await;
    let resource = group_resource(&gid);

    // Admin 1 takes the lock, reads the group, then freezes (a stopped
    // laptop, a long GC pause) without renewing.
    let stale = a.lock_acquire(&resource).await.unwrap();
    assert_eq!(stale.ttl_ms, 700);
    let before = a.group_get(&gid).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1_000)).await;

    // Meanwhile the lease lapsed and admin 2 took the lock.
    let fresh = o.lock_acquire(&resource).await.unwrap();
    let holder = acquire_refused(&a, &resource).await;
    assert_ne!(holder.user_id, adm.user_id);

    // Admin 1 wakes and writes with its old token: refused, no effect.
    assert_eq!(
        refusal(
            a.group_members_remove(&gid, &stale.token, &[&x.user_id])
                .await
        ),
        ErrorCode::LockLost
    );
    assert_eq!(
        refusal(a.lock_renew(&resource, &stale.token).await),
        ErrorCode::LockLost
    );
    let unchanged = o.group_get(&gid).await.unwrap();
    assert_eq!(unchanged, before, "the stale write changed nothing");

    // Admin 2's writes go through.
    let v = o
        .group_members_set_role(&gid, &fresh.token, &y.user_id, Role::Admin)
        .await
        .unwrap();
    assert_eq!(v, before.group.version + 1);
    let after = o.group_get(&gid).await.unwrap();
    assert_eq!(role_in(&after, &x.user_id), Some(Role::Member));
    assert_eq!(role_in(&after, &y.user_id), Some(Role::Admin));
}
