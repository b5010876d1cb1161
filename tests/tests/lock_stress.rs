//! Twenty sessions race for one group's lock and apply 500 member changes
//! in all. Some holders pause past their (short) lease and write with the
//! stale token; some clients write without holding the lock at all. The
//! group must end with exactly the acknowledged changes: their versions
//! are exactly the next 500 numbers, and replaying them in version order
//! from the starting state gives the final member list.

mod admin;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use oceanchat_client::{ClientError, Connection};
use oceanchat_protocol::client::{ErrorCode, GroupGetResult, Role};
use oceanchat_tests::{User, World, PASSWORD};

use admin::*;

const SESSIONS_PER_USER: usize = 4;
const EDITORS: usize = 5; // the owner and four admins: 20 sessions
const TARGETS: usize = 8;
const CHANGES: u64 = 500;
const LEASE_MS: u64 = 1_500;

/// One member change a session may try.
#[derive(Debug, Clone)]
enum Change {
    Add(String),
    Remove(String),
    Mute(String, bool),
    SetRole(String, Role),
}

/// Per target: `None` when not a member, else its role and mute state.
type Members = BTreeMap<String, Option<(Role, bool)>>;

fn apply(members: &mut Members, change: &Change) {
    match change {
        Change::Add(u) => {
            let slot = members.get_mut(u).unwrap();
            if slot.is_none() {
                *slot = Some((Role::Member, false));
            }
        }
        Change::Remove(u) => *members.get_mut(u).unwrap() = None,
        Change::Mute(u, muted) => members.get_mut(u).unwrap().as_mut().unwrap().1 = *muted,
        Change::SetRole(u, role) => members.get_mut(u).unwrap().as_mut().unwrap().0 = *role,
    }
}

fn targets_in(group: &GroupGetResult, targets: &[String]) -> Members {
    targets
        .iter()
        .map(|t| {
            let member = group.members.iter().find(|m| &m.user_id == t);
            (t.clone(), member.map(|m| (m.role, m.muted)))
        })
        .collect()
}

/// A small deterministic generator per session (no shared RNG state, and
/// a failing run can be read back from its seed).
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

struct Shared {
    gid: String,
    targets: Vec<String>,
    acked: AtomicU64,
    /// Acknowledged changes with the version each reply named.
    log: Mutex<Vec<(u64, Change)>>,
    /// Refusals of writes made with a stale token or none.
    fenced: AtomicU64,
    rogue_refused: AtomicU64,
}

async fn write(
    c: &Connection,
    gid: &str,
    token: &str,
    change: &Change,
) -> Result<u64, ClientError> {
    match change {
        Change::Add(u) => c
            .group_members_add(gid, token, &[u])
            .await
            .map(|added| added.version),
        Change::Remove(u) => c.group_members_remove(gid, token, &[u]).await,
        Change::Mute(u, m) => c.group_members_mute(gid, token, u, *m).await,
        Change::SetRole(u, r) => c.group_members_set_role(gid, token, u, *r).await,
    }
}

fn pick(rng: &mut Lcg, targets: &[String], is_owner: bool) -> Change {
    let t = targets[rng.below(targets.len() as u64) as usize].clone();
    match rng.below(if is_owner { 5 } else { 4 }) {
        0 => Change::Add(t),
        1 => Change::Remove(t),
        2 => Change::Mute(t, true),
        3 => Change::Mute(t, false),
        _ => Change::SetRole(
            t,
            if rng.below(2) == 0 {
                Role::Admin
            } else {
                Role::Member
            },
        ),
    }
}

/// One session's loop. A `pauser` certainly freezes past its lease once,
/// in its first batch of two or more changes.
async fn session(c: Connection, is_owner: bool, pauser: bool, seed: u64, shared: Arc<Shared>) {
    let mut rng = Lcg(seed);
    let mut must_pause = pauser;
    let gid = shared.gid.clone();
    let resource = group_resource(&gid);
    c.lock_watch(&resource).await.unwrap();
    while shared.acked.load(Ordering::SeqCst) < CHANGES {
        // Now and then, a client that skips the lock.
        if rng.below(50) == 0 {
            let change = pick(&mut rng, &shared.targets, is_owner);
            match write(&c, &gid, "no-lock-taken", &change).await {
                Err(e) => {
                    let code = e.server_error().map(|e| e.code);
                    assert!(
                        matches!(code, Some(ErrorCode::LockRequired | ErrorCode::LockLost)),
                        "{e}"
                    );
                    shared.rogue_refused.fetch_add(1, Ordering::SeqCst);
                }
                Ok(v) => panic!("a write without the lock was applied at version {v}"),
            }
        }
        let lease = match c.lock_acquire(&resource).await {
            Ok(lease) => lease,
            Err(e) => {
                let error = e.server_error().unwrap_or_else(|| panic!("{e}"));
                assert_eq!(error.code, ErrorCode::Locked, "{error:?}");
                // Wait for a release (or a moment, for a lapse, which is
                // not announced), then try again after a little jitter.
                let _ = next_lock_event(&c, &resource, Duration::from_millis(300)).await;
                tokio::time::sleep(Duration::from_millis(rng.below(15))).await;
                continue;
            }
        };
        let batch = 1 + rng.below(5);
        let mut paused = false;
        for i in 0..batch {
            if shared.acked.load(Ordering::SeqCst) >= CHANGES {
                break;
            }
            // Rarely, the holder freezes past its lease mid-batch.
            if i > 0 && !paused && (must_pause || rng.below(80) == 0) {
                tokio::time::sleep(Duration::from_millis(LEASE_MS + 300)).await;
                paused = true;
                must_pause = false;
            }
            let change = pick(&mut rng, &shared.targets, is_owner);
            match write(&c, &gid, &lease.token, &change).await {
                Ok(version) => {
                    shared.acked.fetch_add(1, Ordering::SeqCst);
                    shared.log.lock().unwrap().push((version, change));
                }
                Err(e) => match e.server_error().map(|e| e.code) {
                    // The change makes no sense in the current state.
                    Some(ErrorCode::NotMember | ErrorCode::Forbidden) => {}
                    Some(ErrorCode::LockLost | ErrorCode::LockRequired) => {
                        assert!(paused, "only a paused holder loses its lock: {e}");
                        shared.fenced.fetch_add(1, Ordering::SeqCst);
                        break;
                    }
                    _ => panic!("{change:?}: {e}"),
                },
            }
        }
        c.lock_release(&resource, &lease.token).await.unwrap();
    }
}

async fn connect_as(world: &World, user: &User, gateway: usize) -> Connection {
    let login = world.api.login(&user.username, PASSWORD).await.unwrap();
    let c = Connection::connect(&world.ws_url(gateway)).await.unwrap();
    c.auth(&login.token).await.unwrap();
    c
}

#[tokio::test]
async fn twenty_sessions_racing_end_with_exactly_the_acknowledged_changes() {
    let world = World::with_args(1, 2, &["--lock-ttl-ms", &LEASE_MS.to_string()], &[]);
    let mut editors = Vec::new();
    for i in 0..EDITORS {
        editors.push(world.user(if i == 0 { "owner" } else { "adm" }).await);
    }
    let mut targets = Vec::new();
    for _ in 0..TARGETS {
        targets.push(world.user("t").await.user_id);
    }
    let o = editors[0].connect(&world, 0).await;
    let initial: Vec<&str> = editors[1..]
        .iter()
        .map(|u| u.user_id.as_str())
        .chain(targets.iter().map(String::as_str))
        .collect();
    let group = o.group_create("stress", &initial).await.unwrap();
    let gid = group.group_id.clone();
    let resource = group_resource(&gid);
    let lease = o.lock_acquire(&resource).await.unwrap();
    for admin in &editors[1..] {
        o.group_members_set_role(&gid, &lease.token, &admin.user_id, Role::Admin)
            .await
            .unwrap();
    }
    o.lock_release(&resource, &lease.token).await.unwrap();
    let start = o.group_get(&gid).await.unwrap();

    let shared = Arc::new(Shared {
        gid: gid.clone(),
        targets: targets.clone(),
        acked: AtomicU64::new(0),
        log: Mutex::new(Vec::new()),
        fenced: AtomicU64::new(0),
        rogue_refused: AtomicU64::new(0),
    });
    let mut tasks = Vec::new();
    let mut n = 0u64;
    for (i, editor) in editors.iter().enumerate() {
        for _ in 0..SESSIONS_PER_USER {
            let c = connect_as(&world, editor, (n % 2) as usize).await;
            n += 1;
            let pauser = n == 1;
            tasks.push(tokio::spawn(session(
                c,
                i == 0,
                pauser,
                n * 7919,
                shared.clone(),
            )));
        }
    }
    assert_eq!(tasks.len(), 20);
    let began = Instant::now();
    for task in tasks {
        tokio::time::timeout(Duration::from_secs(300), task)
            .await
            .expect("the race ends")
            .unwrap();
    }
    let elapsed = began.elapsed();

    let mut log = std::mem::take(&mut *shared.log.lock().unwrap());
    assert_eq!(log.len() as u64, CHANGES);
    log.sort_by_key(|(v, _)| *v);
    let versions: Vec<u64> = log.iter().map(|(v, _)| *v).collect();
    let expected: Vec<u64> = (start.group.version + 1..=start.group.version + CHANGES).collect();
    assert_eq!(
        versions, expected,
        "one version per acknowledged change, no other"
    );

    let mut members = targets_in(&start, &targets);
    for (_, change) in &log {
        apply(&mut members, change);
    }
    let end = o.group_get(&gid).await.unwrap();
    assert_eq!(end.group.version, start.group.version + CHANGES);
    assert_eq!(targets_in(&end, &targets), members);
    for editor in &editors[1..] {
        assert_eq!(role_in(&end, &editor.user_id), Some(Role::Admin));
    }
    assert!(
        shared.fenced.load(Ordering::SeqCst) >= 1,
        "the paused holder's stale write was refused"
    );
    eprintln!(
        "{CHANGES} changes by 20 sessions in {elapsed:?}; {} stale writes fenced, {} lockless writes refused",
        shared.fenced.load(Ordering::SeqCst),
        shared.rogue_refused.load(Ordering::SeqCst)
    );
}
