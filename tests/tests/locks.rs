//! Edit locks (PROTOCOL.md `lock.*`): one holding connection at a time,
//! the refusal names the holder, watchers hear of every change, and a lock
//! dies with its connection.

mod admin;

use std::time::Duration;

use oceanchat_protocol::client::{ErrorCode, Role};
use oceanchat_tests::{refusal, Club, World, WAIT};

use admin::*;

#[tokio::test]
async fn a_lock_has_one_holding_connection_and_the_refusal_names_it() {
    let world = World::with(1, 2);
    let owner = world.user("owner").await;
    let adm = world.user("adm").await;
    let o = owner.connect(&world, 0).await;
    let a = adm.connect(&world, 1).await;
    let group = o.group_create("club", &[&adm.user_id]).await.unwrap();
    let resource = group_resource(&group.group_id);

    // The owner makes `adm` an admin (under the lock, like every change).
    let lease = o.lock_acquire(&resource).await.unwrap();
    assert_eq!(lease.ttl_ms, 30_000, "the default lease");
    o.group_members_set_role(&group.group_id, &lease.token, &adm.user_id, Role::Admin)
        .await
        .unwrap();

    // Another admin on another gateway is refused with the holder.
    let before = now_ms();
    let holder = acquire_refused(&a, &resource).await;
    assert_eq!(holder.user_id, owner.user_id);
    assert_eq!(holder.display_name, "owner");
    assert_eq!(holder.session_id, owner.session_id);
    assert!(
        holder.since <= before && holder.since + 60_000 > before,
        "since {} is when it was taken (now {before})",
        holder.since
    );

    // A second tab of the very same login session is refused too.
    let o2 = owner.connect(&world, 1).await;
    assert_eq!(
        acquire_refused(&o2, &resource).await.session_id,
        owner.session_id
    );
    // The holding connection asking again keeps its lease.
    assert_eq!(o.lock_acquire(&resource).await.unwrap().token, lease.token);

    // Released: the next editor gets it, with a new token.
    o.lock_release(&resource, &lease.token).await.unwrap();
    let next = a.lock_acquire(&resource).await.unwrap();
    assert_ne!(next.token, lease.token);
    assert_eq!(
        acquire_refused(&o, &resource).await.user_id,
        adm.user_id,
        "now the admin holds it"
    );
}

#[tokio::test]
async fn only_the_owner_and_admins_may_lock_a_group_and_only_groups_lock() {
    let world = World::with(1, 1);
    let Club { o, m, e, group, .. } = world.club().await;
    let resource = group_resource(&group.group_id);

    assert_eq!(
        refusal(m.lock_acquire(&resource).await),
        ErrorCode::Forbidden
    );
    assert_eq!(
        refusal(e.lock_acquire(&resource).await),
        ErrorCode::NotMember
    );
    assert_eq!(refusal(e.lock_watch(&resource).await), ErrorCode::NotMember);
    for bad in ["group:", "user:x", "group:a.b", "nonsense"] {
        assert_eq!(
            refusal(o.lock_acquire(bad).await),
            ErrorCode::BadRequest,
            "{bad}"
        );
    }
    // A member may watch (the read-only view) and sees nobody holds it.
    assert_eq!(m.lock_watch(&resource).await.unwrap(), None);
    // The refusals took nothing.
    o.lock_acquire(&resource).await.unwrap();
}

#[tokio::test]
async fn renew_and_release_are_compare_and_set_on_the_token_and_connection() {
    let world = World::with(1, 1);
    let owner = world.user("owner").await;
    let o = owner.connect(&world, 0).await;
    let o2 = owner.connect(&world, 0).await;
    let group = o.group_create("club", &[]).await.unwrap();
    let resource = group_resource(&group.group_id);

    let lease = o.lock_acquire(&resource).await.unwrap();
    assert_eq!(
        o.lock_renew(&resource, &lease.token).await.unwrap().ttl_ms,
        30_000
    );
    assert_eq!(
        refusal(o.lock_renew(&resource, "not-the-token").await),
        ErrorCode::LockLost
    );
    // The token alone is not enough: the lock is the connection's.
    assert_eq!(
        refusal(o2.lock_renew(&resource, &lease.token).await),
        ErrorCode::LockLost
    );
    o2.lock_release(&resource, &lease.token).await.unwrap();
    assert_eq!(
        acquire_refused(&o2, &resource).await.session_id,
        owner.session_id,
        "another connection's release freed nothing"
    );

    o.lock_release(&resource, &lease.token).await.unwrap();
    assert_eq!(
        refusal(o.lock_renew(&resource, &lease.token).await),
        ErrorCode::LockLost
    );
    // Releasing again is harmless.
    o.lock_release(&resource, &lease.token).await.unwrap();
    o2.lock_acquire(&resource).await.unwrap();
}

#[tokio::test]
async fn watchers_see_every_holder_and_a_disconnect_frees_the_lock_at_once() {
    let world = World::with(1, 2);
    let owner = world.user("owner").await;
    let adm = world.user("adm").await;
    let o = owner.connect(&world, 0).await;
    let group = o.group_create("club", &[&adm.user_id]).await.unwrap();
    let resource = group_resource(&group.group_id);
    let lease = o.lock_acquire(&resource).await.unwrap();
    o.group_members_set_role(&group.group_id, &lease.token, &adm.user_id, Role::Admin)
        .await
        .unwrap();

    // The admin's page: watching, read-only while the owner edits.
    let a = adm.connect(&world, 1).await;
    let seen = a.lock_watch(&resource).await.unwrap().expect("held");
    assert_eq!(seen.user_id, owner.user_id);

    o.lock_release(&resource, &lease.token).await.unwrap();
    assert_eq!(next_lock_event(&a, &resource, WAIT).await, Some(None));
    let lease = o.lock_acquire(&resource).await.unwrap();
    let event = next_lock_event(&a, &resource, WAIT).await.expect("event");
    assert_eq!(event.expect("a holder").session_id, owner.session_id);

    // The holder's connection ends without releasing: freed at once.
    drop(o);
    let freed_in = tokio::time::Instant::now();
    assert_eq!(next_lock_event(&a, &resource, WAIT).await, Some(None));
    assert!(
        freed_in.elapsed() < Duration::from_secs(5),
        "freed by the close, not by the 30 s lease"
    );
    let mine = a.lock_acquire(&resource).await.unwrap();
    assert_ne!(mine.token, lease.token);
}

#[tokio::test]
async fn logout_closes_the_sockets_and_frees_their_locks() {
    let world = World::with(1, 1);
    let owner = world.user("owner").await;
    let member = world.user("member").await;
    let o = owner.connect(&world, 0).await;
    let m = member.connect(&world, 0).await;
    let group = o.group_create("club", &[&member.user_id]).await.unwrap();
    let resource = group_resource(&group.group_id);
    o.lock_acquire(&resource).await.unwrap();
    assert!(m.lock_watch(&resource).await.unwrap().is_some());

    world.api.logout(&owner.token).await.unwrap();
    assert_eq!(o.closed(WAIT).await.map(|c| c.code), Some(4001));
    assert_eq!(next_lock_event(&m, &resource, WAIT).await, Some(None));
    assert_eq!(m.lock_watch(&resource).await.unwrap(), None);
}

#[tokio::test]
async fn a_lapsed_lease_goes_to_the_next_editor_and_watchers_hear_of_it() {
    let world = World::with_args(1, 1, &["--lock-ttl-ms", "1000"], &[]);
    let owner = world.user("owner").await;
    let member = world.user("member").await;
    let o = owner.connect(&world, 0).await;
    let o2 = owner.connect(&world, 0).await;
    let m = member.connect(&world, 0).await;
    let group = o.group_create("club", &[&member.user_id]).await.unwrap();
    let resource = group_resource(&group.group_id);

    let lease = o.lock_acquire(&resource).await.unwrap();
    assert_eq!(lease.ttl_ms, 1000);
    m.lock_watch(&resource).await.unwrap();
    // Renewing keeps it past its first lease.
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        o.lock_renew(&resource, &lease.token).await.unwrap();
    }
    let renewed = tokio::time::Instant::now();
    acquire_refused(&o2, &resource).await;

    // Not renewed: it lapses a lease after the last renewal, and the next
    // editor takes it.
    let lease2 = loop {
        match o2.lock_acquire(&resource).await {
            Ok(lease2) => break lease2,
            Err(e) if e.lock_holder().is_some() => {
                assert!(renewed.elapsed() < WAIT, "the lease never lapsed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("lock.acquire: {e}"),
        }
    };
    let lapsed = renewed.elapsed();
    assert!(
        lapsed >= Duration::from_millis(900),
        "lapsed {lapsed:?} after the renewal, before its 1 s lease"
    );
    let event = next_lock_event(&m, &resource, WAIT).await.expect("event");
    assert!(event.is_some(), "the new holder is announced");
    assert_eq!(
        refusal(o.lock_renew(&resource, &lease.token).await),
        ErrorCode::LockLost
    );
    // Nothing else came for the lapse itself: the next lock events are
    // those of a release and a new acquire after it, in that order.
    o2.lock_release(&resource, &lease2.token).await.unwrap();
    assert_eq!(
        next_lock_event(&m, &resource, WAIT).await,
        Some(None),
        "the release, and nothing before it"
    );
    o2.lock_acquire(&resource).await.unwrap();
    let event = next_lock_event(&m, &resource, WAIT).await.expect("event");
    assert!(event.is_some(), "the acquire after the release");
}
