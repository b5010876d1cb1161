//! Only members may send to or sync a conv.

use oceanchat_protocol::client::{ErrorCode, Op};
use oceanchat_tests::{refusal, Club, World};

#[tokio::test]
async fn a_non_member_gets_not_member_for_send_and_sync_of_a_dm() {
    let world = World::with(1, 1);
    let alice = world.user("alice").await;
    let bob = world.user("bob").await;
    let eve = world.user("eve").await;
    let a = alice.connect(&world, 0).await;
    let e = eve.connect(&world, 0).await;
    let conv = a.dm_open(&bob.user_id).await.unwrap();
    a.send(&conv, "a-1", "private").await.unwrap();

    assert_eq!(
        refusal(e.send(&conv, "e-1", "let me in").await),
        ErrorCode::NotMember
    );
    assert_eq!(
        refusal(e.sync(&[(&conv, 0)], None).await),
        ErrorCode::NotMember
    );

    // A sync naming one foreign conv fails as a whole, even with an own one.
    let own = e.dm_open(&alice.user_id).await.unwrap();
    e.send(&own, "e-2", "hi alice").await.unwrap();
    assert_eq!(
        refusal(e.sync(&[(&own, 0), (&conv, 0)], None).await),
        ErrorCode::NotMember
    );

    // The refused send stored nothing.
    let synced = a.sync(&[(&conv, 0)], None).await.unwrap();
    assert_eq!(synced.messages.len(), 1);
    assert_eq!(synced.messages[0].body, "private");
}

#[tokio::test]
async fn a_non_member_gets_not_member_for_send_and_sync_of_a_group() {
    let world = World::with(1, 1);
    let owner = world.user("owner").await;
    let member = world.user("member").await;
    let eve = world.user("eve").await;
    let o = owner.connect(&world, 0).await;
    let e = eve.connect(&world, 0).await;
    let group = o.group_create("club", &[&member.user_id]).await.unwrap();
    o.send(&group.conv, "o-1", "members only").await.unwrap();

    assert_eq!(
        refusal(e.send(&group.conv, "e-1", "let me in").await),
        ErrorCode::NotMember
    );
    assert_eq!(
        refusal(e.sync(&[(&group.conv, 0)], None).await),
        ErrorCode::NotMember
    );

    let synced = o.sync(&[(&group.conv, 0)], None).await.unwrap();
    assert_eq!(synced.messages.len(), 1);
}

#[tokio::test]
async fn users_are_found_by_name_and_convs_name_their_peer_or_group() {
    use oceanchat_protocol::client::{ConvListResult, UserInfo, UsersResult};
    let world = World::with(1, 1);
    let alice = world.user("alice").await;
    let bob = world.user("bob").await;
    let a = alice.connect(&world, 0).await;

    let found: UserInfo = a
        .request_as(Op::UserLookup {
            username: bob.username.clone(),
        })
        .await
        .unwrap();
    assert_eq!(found.user_id, bob.user_id);
    assert_eq!(found.username, bob.username);
    assert_eq!(
        refusal(
            a.request(Op::UserLookup {
                username: "nobody-here".into()
            })
            .await
        ),
        ErrorCode::NotFound
    );
    let got: UsersResult = a
        .request_as(Op::UsersGet {
            user_ids: vec![bob.user_id.clone(), "unknownid".into()],
        })
        .await
        .unwrap();
    assert_eq!(got.users, vec![found.clone()]);

    let dm = a.dm_open(&found.user_id).await.unwrap();
    let group = a.group_create("club", &[&bob.user_id]).await.unwrap();
    let list: ConvListResult = a.request_as(Op::ConvList {}).await.unwrap();
    let of = |conv: &str| list.convs.iter().find(|c| c.conv == conv).unwrap().clone();
    assert_eq!(of(&dm).peer.as_deref(), Some(bob.user_id.as_str()));
    assert_eq!(of(&dm).group_id, None);
    assert_eq!(
        of(&group.conv).group_id.as_deref(),
        Some(group.group_id.as_str())
    );
    assert_eq!(of(&group.conv).peer, None);
}

/// Sends `n` messages to `conv` on `conn`; the error code of each refusal,
/// `None` for a stored one.
async fn refusals(
    conn: &oceanchat_client::Connection,
    conv: &str,
    label: &str,
    n: usize,
) -> Vec<Option<ErrorCode>> {
    let mut codes = Vec::new();
    for i in 0..n {
        let sent = conn.send(conv, &format!("{label}-{i}"), label).await;
        codes.push(sent.err().map(|e| refusal::<()>(Err(e))));
    }
    codes
}

// With two backends, each request goes to either; each backend remembers
// who may speak where. A member change made through one must be obeyed
// by both from the moment it is answered: 20 sends each time make it all
// but certain that both backends answer some of them.
#[tokio::test]
async fn member_changes_bind_every_backend_at_once() {
    let world = World::with(2, 1);
    let Club {
        owner,
        member,
        eve,
        o,
        m,
        e,
        group,
    } = world.club().await;
    let gid = &group.group_id;
    let n = 20;
    assert_eq!(refusals(&m, &group.conv, "warm", n).await, vec![None; n]);

    let lease = o.lock_acquire(&format!("group:{gid}")).await.unwrap();
    o.group_members_mute(gid, &lease.token, &member.user_id, true)
        .await
        .unwrap();
    let muted = refusals(&m, &group.conv, "muted", n).await;
    assert_eq!(muted, vec![Some(ErrorCode::Muted); n]);
    o.group_members_mute(gid, &lease.token, &member.user_id, false)
        .await
        .unwrap();
    assert_eq!(refusals(&m, &group.conv, "unmuted", n).await, vec![None; n]);
    o.group_members_remove(gid, &lease.token, &[&member.user_id])
        .await
        .unwrap();
    let removed = refusals(&m, &group.conv, "removed", n).await;
    assert_eq!(removed, vec![Some(ErrorCode::NotMember); n]);

    // A refusal is remembered too, and a new member is let in at once.
    let dm = oceanchat_protocol::conv::dm_conv(&eve.user_id, &owner.user_id);
    let early = refusals(&e, &dm, "early", n).await;
    assert_eq!(early, vec![Some(ErrorCode::NotMember); n]);
    assert_eq!(e.dm_open(&owner.user_id).await.unwrap(), dm);
    assert_eq!(refusals(&e, &dm, "opened", n).await, vec![None; n]);
}
