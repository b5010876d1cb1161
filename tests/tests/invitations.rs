//! Consent before being put in a group: a user's `groups_from` setting,
//! invitations in place of direct adds, `group.join` and
//! `group.decline`, and the cap on pending invitations.

mod admin;

use oceanchat_client::Connection;
use oceanchat_protocol::client::{
    ConvListResult, Event, GroupCreateResult, GroupsFrom, Invitation, Op, Settings,
};
use oceanchat_protocol::ErrorCode;
use oceanchat_tests::{refusal, World, WAIT};

async fn set_groups_from(c: &Connection, groups_from: GroupsFrom) {
    let settings: Settings = c
        .request_as(Op::SettingsUpdate {
            groups_from: Some(groups_from),
        })
        .await
        .unwrap();
    assert_eq!(settings.groups_from, groups_from);
}

async fn create(c: &Connection, name: &str, members: &[&str]) -> GroupCreateResult {
    c.group_create(name, members).await.unwrap()
}

async fn invitations(c: &Connection) -> Vec<Invitation> {
    c.group_invitations().await.unwrap()
}

/// The next `invitation` event, skipping others.
async fn next_invitation(c: &Connection) -> Option<Invitation> {
    while let Some(event) = c.next_event(WAIT).await {
        if let Event::Invitation(invitation) = event {
            return Some(invitation);
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread")]
async fn a_user_who_asks_for_it_is_invited_not_added_and_joins_by_choice() {
    let world = World::with(1, 1);
    let alice = world.user("alice").await;
    let bob = world.user("bob").await;
    let carol = world.user("carol").await;
    let a = alice.connect(&world, 0).await;
    let b = bob.connect(&world, 0).await;
    let c = carol.connect(&world, 0).await;

    let defaults: Settings = b.request_as(Op::SettingsGet {}).await.unwrap();
    assert_eq!(defaults.groups_from, GroupsFrom::Anyone);
    set_groups_from(&b, GroupsFrom::Nobody).await;

    let created = create(&a, "plans", &[&bob.user_id, &carol.user_id]).await;
    assert_eq!(created.invited, vec![bob.user_id.clone()]);

    // Carol (the default, anyone) is a member; bob only has an invitation.
    let invitation = next_invitation(&b).await.expect("bob hears of it");
    assert_eq!(invitation.group_id, created.group_id);
    assert_eq!(invitation.name, "plans");
    assert_eq!(invitation.inviter, alice.user_id);
    assert_eq!(invitations(&b).await, [invitation]);
    let bobs: ConvListResult = b.request_as(Op::ConvList {}).await.unwrap();
    assert!(bobs.convs.iter().all(|conv| conv.conv != created.conv));
    assert_eq!(
        refusal(b.send(&created.conv, "early", "not yet").await),
        ErrorCode::NotMember
    );
    a.send(&created.conv, "m1", "before bob").await.unwrap();
    assert_eq!(c.next_msg(WAIT).await.unwrap().body, "before bob");

    // Joining makes bob a member, live from the reply on.
    let joined = b.group_join(&created.group_id).await.unwrap();
    assert_eq!(joined.conv, created.conv);
    assert!(invitations(&b).await.is_empty());
    a.send(&created.conv, "m2", "after bob").await.unwrap();
    assert_eq!(b.next_msg(WAIT).await.unwrap().body, "after bob");
    let synced = b.sync(&[(&created.conv, 0)], None).await.unwrap();
    assert_eq!(
        synced.messages.len(),
        2,
        "history is the group's, all of it"
    );

    // An invitation is needed: a second join, or one to a group nobody
    // invited him to, is `not_found`.
    let again = b.group_join(&created.group_id).await;
    assert_eq!(refusal(again), ErrorCode::NotFound);
    let other = create(&a, "other", &[]).await;
    let uninvited = b.group_join(&other.group_id).await;
    assert_eq!(refusal(uninvited), ErrorCode::NotFound);
}

#[tokio::test(flavor = "multi_thread")]
async fn known_lets_in_direct_contacts_and_decline_turns_an_invitation_down() {
    let world = World::with(1, 1);
    let alice = world.user("alice").await;
    let dave = world.user("dave").await;
    let erin = world.user("erin").await;
    let a = alice.connect(&world, 0).await;
    let d = dave.connect(&world, 0).await;
    let e = erin.connect(&world, 0).await;
    set_groups_from(&d, GroupsFrom::Known).await;
    set_groups_from(&e, GroupsFrom::Known).await;
    // Alice and erin have talked; alice and dave have not.
    a.dm_open(&erin.user_id).await.unwrap();

    let group = create(&a, "team", &[]).await;
    let resource = admin::group_resource(&group.group_id);
    let lock = a.lock_acquire(&resource).await.unwrap();
    let added = a
        .group_members_add(
            &group.group_id,
            &lock.token,
            &[&dave.user_id, &erin.user_id],
        )
        .await
        .unwrap();
    assert_eq!(added.invited, vec![dave.user_id.clone()]);
    a.send(&group.conv, "m1", "hello team").await.unwrap();
    assert_eq!(e.next_msg(WAIT).await.unwrap().body, "hello team");
    assert_eq!(next_invitation(&d).await.unwrap().group_id, group.group_id);

    d.group_decline(&group.group_id).await.unwrap();
    assert!(invitations(&d).await.is_empty());
    let join = d.group_join(&group.group_id).await;
    assert_eq!(refusal(join), ErrorCode::NotFound);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_flood_of_invitations_keeps_the_newest_and_costs_the_victim_no_group() {
    let world = World::with(1, 1);
    let mallory = world.user("mallory").await;
    let victim = world.user("victim").await;
    let m = mallory.connect(&world, 0).await;
    let v = victim.connect(&world, 0).await;
    set_groups_from(&v, GroupsFrom::Nobody).await;

    let cap = 100;
    let mut groups = Vec::new();
    for i in 0..cap + 5 {
        let created = create(&m, &format!("spam-{i}"), &[&victim.user_id]).await;
        assert_eq!(created.invited, vec![victim.user_id.clone()]);
        groups.push(created.group_id);
    }
    let pending = invitations(&v).await;
    assert_eq!(pending.len(), cap);
    // Newest first; the five oldest were dropped.
    let newest: Vec<&String> = groups.iter().rev().take(cap).collect();
    let listed: Vec<&String> = pending.iter().map(|i| &i.group_id).collect();
    assert_eq!(listed, newest);

    // None of it made the victim a member of anything: a new connection
    // follows no group, and the victim's list is empty.
    let again = victim.connect(&world, 0).await;
    let convs: ConvListResult = again.request_as(Op::ConvList {}).await.unwrap();
    assert!(convs.convs.is_empty(), "{:?}", convs.convs);
}
