//! Group administration (`group.update`, `group.members.*`): every write
//! needs the live lock token, roles decide who may do what, each change
//! bumps the version once and is announced with a `group` event.

mod admin;

use oceanchat_protocol::client::{ErrorCode, Event, GroupPatch, Op, Role};
use oceanchat_tests::{events_before_round_trip, refusal, World, WAIT};

use admin::*;

#[tokio::test]
async fn writes_need_the_live_lock_token() {
    let world = World::with(1, 1);
    let owner = world.user("owner").await;
    let x = world.user("x").await;
    let o = owner.connect(&world, 0).await;
    let o2 = owner.connect(&world, 0).await;
    let group = o.group_create("club", &[&x.user_id]).await.unwrap();
    let gid = &group.group_id;
    let v0 = o.group_get(gid).await.unwrap().group.version;

    // Nobody holds the lock: every write is `lock_required`.
    assert_eq!(
        refusal(o.group_members_remove(gid, "", &[&x.user_id]).await),
        ErrorCode::LockRequired
    );
    assert_eq!(
        refusal(o.group_members_remove(gid, "made-up", &[&x.user_id]).await),
        ErrorCode::LockRequired
    );

    let lease = o.lock_acquire(&group_resource(gid)).await.unwrap();
    // Held, but not with this token, or not by this connection.
    assert_eq!(
        refusal(o.group_members_mute(gid, "made-up", &x.user_id, true).await),
        ErrorCode::LockLost
    );
    assert_eq!(
        refusal(
            o2.group_members_mute(gid, &lease.token, &x.user_id, true)
                .await
        ),
        ErrorCode::LockLost
    );
    assert_eq!(
        refusal(o.group_update(gid, "", GroupPatch::default(), None).await),
        ErrorCode::BadRequest,
        "an empty patch is refused before anything else"
    );
    let after = o.group_get(gid).await.unwrap();
    assert_eq!(after.group.version, v0, "refused writes changed nothing");
    assert!(after.members.iter().all(|m| !m.muted));

    // With the token, from the holding connection: it applies.
    let v1 = o
        .group_members_mute(gid, &lease.token, &x.user_id, true)
        .await
        .unwrap();
    assert_eq!(v1, v0 + 1);
    o.lock_release(&group_resource(gid), &lease.token)
        .await
        .unwrap();
    assert_eq!(
        refusal(
            o.group_members_mute(gid, &lease.token, &x.user_id, false)
                .await
        ),
        ErrorCode::LockRequired,
        "a released token writes nothing"
    );
}

#[tokio::test]
async fn update_changes_settings_once_per_version() {
    let world = World::with(1, 1);
    let owner = world.user("owner").await;
    let o = owner.connect(&world, 0).await;
    let group = o.group_create("club", &[]).await.unwrap();
    let gid = &group.group_id;
    let lease = o.lock_acquire(&group_resource(gid)).await.unwrap();
    let v0 = o.group_get(gid).await.unwrap().group.version;

    let patch = GroupPatch {
        name: Some("the club".into()),
        announcement: Some("meet on fridays".into()),
        join_policy: Some("approval".into()),
    };
    let v1 = o
        .group_update(gid, &lease.token, patch, Some(v0))
        .await
        .unwrap();
    assert_eq!(v1, v0 + 1);

    // A page that read version v0 and saves over v1 is told so.
    let stale = GroupPatch {
        name: Some("old view".into()),
        ..GroupPatch::default()
    };
    assert_eq!(
        refusal(o.group_update(gid, &lease.token, stale, Some(v0)).await),
        ErrorCode::VersionConflict
    );
    // Without expected_version a patch touches only its own fields.
    let only_announcement = GroupPatch {
        announcement: Some("and saturdays".into()),
        ..GroupPatch::default()
    };
    let v2 = o
        .group_update(gid, &lease.token, only_announcement, None)
        .await
        .unwrap();
    assert_eq!(v2, v1 + 1);
    let bad = GroupPatch {
        join_policy: Some("whoever".into()),
        ..GroupPatch::default()
    };
    assert_eq!(
        refusal(o.group_update(gid, &lease.token, bad, None).await),
        ErrorCode::BadRequest
    );

    let got = o.group_get(gid).await.unwrap().group;
    assert_eq!(got.name, "the club");
    assert_eq!(got.announcement, "and saturdays");
    assert_eq!(got.join_policy, "approval");
    assert_eq!(got.version, v2);
}

#[tokio::test]
async fn roles_decide_who_may_change_whom() {
    let world = World::with(1, 1);
    let owner = world.user("owner").await;
    let adm = world.user("adm").await;
    let adm2 = world.user("admtwo").await;
    let member = world.user("member").await;
    let o = owner.connect(&world, 0).await;
    let a = adm.connect(&world, 0).await;
    let m = member.connect(&world, 0).await;
    let group = o
        .group_create("club", &[&adm.user_id, &adm2.user_id, &member.user_id])
        .await
        .unwrap();
    let gid = &group.group_id;
    let resource = group_resource(gid);

    // The owner makes two admins.
    let lease = o.lock_acquire(&resource).await.unwrap();
    for u in [&adm.user_id, &adm2.user_id] {
        o.group_members_set_role(gid, &lease.token, u, Role::Admin)
            .await
            .unwrap();
    }
    assert_eq!(
        refusal(
            o.group_members_set_role(gid, &lease.token, &member.user_id, Role::Owner)
                .await
        ),
        ErrorCode::BadRequest,
        "ownership is not given away"
    );
    assert_eq!(
        refusal(
            o.group_members_remove(gid, &lease.token, &[&owner.user_id])
                .await
        ),
        ErrorCode::Forbidden,
        "nobody removes the owner"
    );
    o.lock_release(&resource, &lease.token).await.unwrap();

    // An admin manages members, not admins and not the owner.
    let lease = a.lock_acquire(&resource).await.unwrap();
    let forbidden = [
        a.group_members_set_role(gid, &lease.token, &adm2.user_id, Role::Member)
            .await,
        a.group_members_set_role(gid, &lease.token, &owner.user_id, Role::Member)
            .await,
        a.group_transfer(gid, &lease.token, &adm2.user_id).await,
        a.group_members_remove(gid, &lease.token, &[&adm2.user_id])
            .await,
        a.group_members_remove(gid, &lease.token, &[&owner.user_id])
            .await,
        a.group_members_mute(gid, &lease.token, &adm2.user_id, true)
            .await,
        a.group_members_mute(gid, &lease.token, &owner.user_id, true)
            .await,
    ];
    for result in forbidden {
        assert_eq!(refusal(result), ErrorCode::Forbidden);
    }
    let outsider = world.user("outsider").await;
    assert_eq!(
        refusal(
            a.group_members_mute(gid, &lease.token, &outsider.user_id, true)
                .await
        ),
        ErrorCode::NotMember
    );
    assert_eq!(
        refusal(
            a.group_members_add(gid, &lease.token, &["no-such-user"])
                .await
                .map(|added| added.version)
        ),
        ErrorCode::NotFound
    );

    // Muted members cannot send; unmuted they can again.
    a.group_members_mute(gid, &lease.token, &member.user_id, true)
        .await
        .unwrap();
    assert_eq!(
        refusal(m.send(&group.conv, "m-1", "hello?").await),
        ErrorCode::Muted
    );
    // Nor does its typing reach the others.
    assert_eq!(
        refusal(
            m.request(Op::Typing {
                conv: group.conv.clone()
            })
            .await
        ),
        ErrorCode::Muted
    );
    a.group_members_mute(gid, &lease.token, &member.user_id, false)
        .await
        .unwrap();
    m.send(&group.conv, "m-2", "hello").await.unwrap();

    // A plain member cannot even take the lock.
    assert_eq!(
        refusal(m.lock_acquire(&resource).await),
        ErrorCode::Forbidden
    );

    let got = o.group_get(gid).await.unwrap();
    assert_eq!(role_in(&got, &owner.user_id), Some(Role::Owner));
    assert_eq!(role_in(&got, &adm.user_id), Some(Role::Admin));
    assert_eq!(role_in(&got, &adm2.user_id), Some(Role::Admin));
    assert_eq!(role_in(&got, &member.user_id), Some(Role::Member));
}

#[tokio::test]
async fn admins_make_co_admins_and_only_the_owner_hands_on_ownership() {
    let world = World::with(1, 1);
    let owner = world.user("owner").await;
    let adm = world.user("adm").await;
    let y = world.user("y").await;
    let o = owner.connect(&world, 0).await;
    let a = adm.connect(&world, 0).await;
    let yc = y.connect(&world, 0).await;
    let group = o
        .group_create("club", &[&adm.user_id, &y.user_id])
        .await
        .unwrap();
    let gid = &group.group_id;
    let resource = group_resource(gid);
    let lease = o.lock_acquire(&resource).await.unwrap();
    o.group_members_set_role(gid, &lease.token, &adm.user_id, Role::Admin)
        .await
        .unwrap();
    o.lock_release(&resource, &lease.token).await.unwrap();

    // The seed's scenario: admin 2 promotes Y to co-admin.
    let lease = a.lock_acquire(&resource).await.unwrap();
    let v = a
        .group_members_set_role(gid, &lease.token, &y.user_id, Role::Admin)
        .await
        .unwrap();
    // Y first hears of adm's promotion, then of its own.
    let change = loop {
        let (version, change) = next_group_event(&yc, gid, WAIT)
            .await
            .expect("Y hears of the promotion");
        if version == v {
            break change;
        }
    };
    assert_eq!(change["kind"], "role_set");
    assert_eq!(change["role"], "admin");
    // ... but cannot take it back: only the owner demotes.
    assert_eq!(
        refusal(
            a.group_members_set_role(gid, &lease.token, &y.user_id, Role::Member)
                .await
        ),
        ErrorCode::Forbidden
    );
    assert_eq!(
        refusal(
            a.group_members_remove(gid, &lease.token, &[&y.user_id])
                .await
        ),
        ErrorCode::Forbidden
    );
    a.lock_release(&resource, &lease.token).await.unwrap();

    // The owner hands ownership to Y and becomes an admin.
    let lease = o.lock_acquire(&resource).await.unwrap();
    assert_eq!(
        refusal(o.group_transfer(gid, &lease.token, &owner.user_id).await),
        ErrorCode::BadRequest
    );
    let outsider = world.user("outsider").await;
    assert_eq!(
        refusal(o.group_transfer(gid, &lease.token, &outsider.user_id).await),
        ErrorCode::NotMember
    );
    let v = o
        .group_transfer(gid, &lease.token, &y.user_id)
        .await
        .unwrap();
    let (version, change) = next_group_event(&yc, gid, WAIT)
        .await
        .expect("members hear of the transfer");
    assert_eq!(version, v);
    assert_eq!(change["kind"], "transferred");
    assert_eq!(change["from"], owner.user_id.as_str());
    assert_eq!(change["to"], y.user_id.as_str());
    // The former owner is an admin now and cannot demote anybody.
    assert_eq!(
        refusal(
            o.group_members_set_role(gid, &lease.token, &adm.user_id, Role::Member)
                .await
        ),
        ErrorCode::Forbidden
    );
    o.lock_release(&resource, &lease.token).await.unwrap();

    let got = o.group_get(gid).await.unwrap();
    assert_eq!(got.group.owner, y.user_id);
    assert_eq!(role_in(&got, &y.user_id), Some(Role::Owner));
    assert_eq!(role_in(&got, &owner.user_id), Some(Role::Admin));
    assert_eq!(role_in(&got, &adm.user_id), Some(Role::Admin));

    // The new owner demotes the admin it no longer wants.
    let lease = yc.lock_acquire(&resource).await.unwrap();
    yc.group_members_set_role(gid, &lease.token, &adm.user_id, Role::Member)
        .await
        .unwrap();
    let got = o.group_get(gid).await.unwrap();
    assert_eq!(role_in(&got, &adm.user_id), Some(Role::Member));
}

#[tokio::test]
async fn membership_changes_reach_members_and_move_their_subscriptions() {
    let world = World::with(1, 2);
    let owner = world.user("owner").await;
    let x = world.user("x").await;
    let newbie = world.user("newbie").await;
    let o = owner.connect(&world, 0).await;
    let group = o.group_create("club", &[&x.user_id]).await.unwrap();
    let gid = &group.group_id;
    // Connected after the group exists: they follow its topic from auth.
    let xc = x.connect(&world, 1).await;
    let nc = newbie.connect(&world, 1).await;
    let lease = o.lock_acquire(&group_resource(gid)).await.unwrap();

    let v = o
        .group_members_add(gid, &lease.token, &[&newbie.user_id])
        .await
        .unwrap()
        .version;
    let (version, change) = next_group_event(&nc, gid, WAIT)
        .await
        .expect("the new member hears of its addition");
    assert_eq!(version, v);
    assert_eq!(change["kind"], "members_added");
    assert_eq!(change["user_ids"][0], newbie.user_id.as_str());
    let (version, _) = next_group_event(&xc, gid, WAIT)
        .await
        .expect("existing members hear of it");
    assert_eq!(version, v);

    // The new member now gets the group's messages.
    o.send(&group.conv, "o-1", "welcome").await.unwrap();
    assert_eq!(nc.next_msg(WAIT).await.expect("msg").body, "welcome");

    // Removed: x hears of it, then no longer follows the group.
    let v = o
        .group_members_remove(gid, &lease.token, &[&x.user_id])
        .await
        .unwrap();
    let (version, change) = next_group_event(&xc, gid, WAIT)
        .await
        .expect("the removed member hears of its removal");
    assert_eq!(version, v);
    assert_eq!(change["kind"], "members_removed");
    // The unsubscribe travels to the gateway apart from the event, so
    // messages stop reaching x once it is applied: within WAIT, and for
    // good. Newbie, on x's gateway, has each message before the barrier
    // asks whether x was sent it too.
    let removed = tokio::time::Instant::now();
    let mut quiet_in_a_row = 0;
    for i in 2.. {
        let body = format!("members only {i}");
        o.send(&group.conv, &format!("o-{i}"), &body).await.unwrap();
        assert_eq!(nc.next_msg(WAIT).await.expect("msg").body, body);
        let reached_x = events_before_round_trip(&xc)
            .await
            .into_iter()
            .any(|event| matches!(event, Event::Msg(_)));
        if reached_x {
            assert_eq!(quiet_in_a_row, 0, "x followed the group again");
            assert!(
                removed.elapsed() < WAIT,
                "a removed member still gets messages"
            );
        } else {
            quiet_in_a_row += 1;
            if quiet_in_a_row == 3 {
                break;
            }
        }
    }
    assert_eq!(
        refusal(xc.send(&group.conv, "x-1", "still here?").await),
        ErrorCode::NotMember
    );
}
