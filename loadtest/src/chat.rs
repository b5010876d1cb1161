//! The chat protocol of PROTOCOL.md: preparing users, groups and convs
//! (in the parent), and one connection of a run (in a worker).
//!
//! Users are `lt_<n>` with a password derived from the name, registered
//! once per backend and cached with their tokens in a JSON file keyed by
//! the API URL, because registering hashes a password (slow on purpose).

use std::collections::BTreeMap;
use std::path::Path;
use std::rc::Rc;
use std::time::Duration;

use anyhow::Context;
use futures::StreamExt;
use oceanchat_client::{ClientError, Connection, HttpApi};
use oceanchat_protocol::client::Event;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::bench::source_addr;
use crate::body;
use crate::receiver;
use crate::scenario::Scenario;
use crate::shared::Shared;
use crate::wire::ChatConn;
use crate::wsraw::{self, WsClient, WsUrl};

/// Registrations and logins in flight at once: the backend hashes each
/// password, which takes a core for tens of milliseconds.
const HTTP_CONCURRENCY: usize = 8;
/// Members per `group.create` or `group.members.add` request.
const MEMBER_BATCH: usize = 500;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CachedUser {
    pub username: String,
    pub user_id: String,
    pub token: String,
}

/// The cache file: API URL to its users, in order.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct UserCache {
    pub by_api: BTreeMap<String, Vec<CachedUser>>,
}

impl UserCache {
    pub fn load(path: &Path) -> UserCache {
        std::fs::read_to_string(path)
            .ok()
            .and_then(|text| serde_json::from_str(&text).ok())
            .unwrap_or_default()
    }

    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let text = serde_json::to_string(self)?;
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
    }
}

fn username(n: u32) -> String {
    format!("lt_{n}")
}

fn password(username: &str) -> String {
    format!("loadtest-{username}-pw")
}

/// A code for an error count.
pub fn error_code(e: &ClientError) -> String {
    match e {
        ClientError::Server { error, .. } => serde_json::to_value(error.code)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_else(|| "server".into()),
        ClientError::Timeout { .. } => "timeout".into(),
        ClientError::Closed(info) => format!("close:{}", info.code),
        ClientError::Rejected { status, .. } => format!("http:{status}"),
        ClientError::Connect { .. } => "connect".into(),
        ClientError::BadRequest { .. } => "bad_url".into(),
        ClientError::Decode { .. } => "decode".into(),
    }
}

/// Makes sure the scenario's users exist and have tokens, creates its
/// groups and direct convs, and returns every connection to open.
pub async fn prepare(s: &Scenario, cache_path: &Path) -> anyhow::Result<Vec<ChatConn>> {
    let api = HttpApi::new(&s.api);
    let mut cache = UserCache::load(cache_path);
    let mut users = cache.by_api.remove(&s.api).unwrap_or_default();
    // Cached tokens are only good if this is still the same store: try one.
    if let Some(first) = users.first() {
        if !token_works(&s.targets[0], &first.token).await {
            eprintln!(
                "cached users of {} do not work here any more: logging in again",
                s.api
            );
            users.clear();
        }
    }
    if users.len() < s.users as usize {
        let started = std::time::Instant::now();
        let from = users.len() as u32;
        let new: Vec<anyhow::Result<CachedUser>> = futures::stream::iter(from..s.users)
            .map(|n| register_or_login(&api, n))
            .buffered(HTTP_CONCURRENCY)
            .collect()
            .await;
        for user in new {
            users.push(user?);
        }
        eprintln!(
            "registered or logged in {} users in {:.1}s",
            s.users - from,
            started.elapsed().as_secs_f64()
        );
        cache.by_api.insert(s.api.clone(), users.clone());
        cache.save(cache_path)?;
    } else {
        cache.by_api.insert(s.api.clone(), users.clone());
    }
    let users = &users[..s.users as usize];

    // Groups of consecutive users; each user's first group is where it sends.
    let online = s.online();
    let online_conns = |members: &mut dyn Iterator<Item = u32>| -> u32 {
        members.filter(|&m| m < online).count() as u32 * s.connections_per_user
    };
    let mut first_group: BTreeMap<u32, (String, u32)> = BTreeMap::new();
    let mut offset = 0u32;
    for (kind, spec) in s.groups.iter().enumerate() {
        for g in 0..spec.count {
            let members: Vec<u32> = (0..spec.size).map(|i| (offset + i) % s.users).collect();
            offset = (offset + spec.size) % s.users;
            let conv = create_group(s, users, &members, &format!("lt-{kind}-{g}")).await?;
            let fanout = online_conns(&mut members.iter().copied());
            for m in members {
                first_group
                    .entry(m)
                    .or_insert_with(|| (conv.clone(), fanout));
            }
        }
    }

    // Senders outside every group write to a direct conv with the next
    // user; the convs are opened a few at a time (one connection each).
    let senders = s.sender_count();
    let lonely: Vec<u32> = (0..senders)
        .filter(|u| !first_group.contains_key(u))
        .collect();
    let opened: Vec<anyhow::Result<(u32, String)>> = futures::stream::iter(lonely)
        .map(|u| async move {
            let peer = &users[((u + 1) % s.users) as usize];
            let conn = connect_authed(&s.targets[0], &users[u as usize].token).await?;
            let conv = conn.dm_open(&peer.user_id).await?;
            Ok((u, conv))
        })
        .buffer_unordered(HTTP_CONCURRENCY)
        .collect()
        .await;
    let mut send_to: BTreeMap<u32, (String, u32)> = BTreeMap::new();
    for dm in opened {
        let (u, conv) = dm.context("opening a direct conv")?;
        let fanout = online_conns(&mut [u, (u + 1) % s.users].into_iter());
        send_to.insert(u, (conv, fanout));
    }
    for u in 0..senders {
        if let Some(group) = first_group.get(&u) {
            send_to.insert(u, group.clone());
        }
    }

    let mut conns = Vec::new();
    for u in 0..s.online() {
        for c in 0..s.connections_per_user {
            let target = ((u * s.connections_per_user + c) as usize % s.targets.len()) as u32;
            conns.push(ChatConn {
                user: u,
                token: users[u as usize].token.clone(),
                target,
                send_to: if c == 0 {
                    send_to.get(&u).map(|(conv, _)| conv.clone())
                } else {
                    None
                },
                sender_index: u,
                fanout: send_to.get(&u).map_or(0, |(_, fanout)| *fanout),
            });
        }
    }
    Ok(conns)
}

async fn token_works(target: &str, token: &str) -> bool {
    match Connection::connect(target).await {
        Ok(conn) => conn.auth(token).await.is_ok(),
        Err(_) => false,
    }
}

async fn register_or_login(api: &HttpApi, n: u32) -> anyhow::Result<CachedUser> {
    let name = username(n);
    let pw = password(&name);
    match api.register(&name, &pw, None).await {
        Ok(_) => {}
        Err(e) if e.status() == Some(409) => {}
        Err(e) => return Err(e).context("registering a load-test user"),
    }
    let login = api
        .login(&name, &pw)
        .await
        .context("logging in a load-test user")?;
    Ok(CachedUser {
        username: name,
        user_id: login.user_id,
        token: login.token,
    })
}

async fn connect_authed(target: &str, token: &str) -> anyhow::Result<Connection> {
    let conn = Connection::connect(target).await?;
    conn.auth(token).await?;
    Ok(conn)
}

/// Creates a group owned by its first member: `group.create` with the
/// first batch of members, then the rest in batches under the group lock.
async fn create_group(
    s: &Scenario,
    users: &[CachedUser],
    members: &[u32],
    name: &str,
) -> anyhow::Result<String> {
    let owner = &users[members[0] as usize];
    let conn = connect_authed(&s.targets[0], &owner.token).await?;
    let ids: Vec<&str> = members
        .iter()
        .map(|&m| users[m as usize].user_id.as_str())
        .collect();
    let first = ids.len().min(MEMBER_BATCH);
    let created = conn.group_create(name, &ids[1..first]).await?;
    if ids.len() > first {
        let resource = format!("group:{}", created.group_id);
        let lock = conn.lock_acquire(&resource).await?;
        for batch in ids[first..].chunks(MEMBER_BATCH) {
            conn.group_members_add(&created.group_id, &lock.token, batch)
                .await?;
        }
        conn.lock_release(&resource, &lock.token).await?;
    }
    Ok(created.conv)
}

/// Runs chat connection `k` of this worker, from connect to the end.
pub async fn connection(shared: Rc<Shared>, k: usize, connect_at: Instant) {
    let s = &shared.task.scenario;
    let plan = &shared.task.chat[k];
    let url = &s.targets[plan.target as usize];
    let global = k as u32 * shared.task.workers + shared.task.index;

    let opened = {
        let _permit = shared.connect_limit.acquire().await;
        tokio::time::sleep_until(connect_at).await;
        let sender = plan.send_to.is_some();
        match tokio::time::timeout(
            Duration::from_secs(15),
            open(url, global, s, &plan.token, sender),
        )
        .await
        {
            Ok(Ok(opened)) => Some(opened),
            Ok(Err(code)) => {
                shared.local.borrow_mut().connect_failed(&code);
                None
            }
            Err(_) => {
                shared.local.borrow_mut().connect_failed("connect:timeout");
                None
            }
        }
    };
    shared.attempt_done();
    let Some(opened) = opened else { return };
    shared.local.borrow_mut().counters.connected += 1;
    let Some(go) = shared.wait_go().await else {
        return;
    };
    let conn = match opened {
        Opened::Sender(conn) => conn,
        Opened::Receiver(mut client) => {
            let received = receiver::receive(&mut client, go.end, |latency| {
                shared.local.borrow_mut().record(latency)
            })
            .await;
            let mut local = shared.local.borrow_mut();
            local.counters.duplicates += received.duplicates;
            if let Some(code) = received.ended {
                local.counters.dropped += 1;
                local.counters.error(&code);
            }
            return;
        }
    };
    let conn = Rc::new(conn);

    if plan.send_to.is_some() {
        tokio::task::spawn_local(send_loop(shared.clone(), conn.clone(), k, go));
    }

    // Receive until the end of the drain. Delivery is at least once, so a
    // (conv, seq) this connection has seen counts as a duplicate.
    let mut seen = receiver::Seen::default();
    loop {
        let left = go.end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        match conn.next_event(left).await {
            Some(Event::Msg(m)) => {
                let Some((b'L', sent_ns, _)) = body::read(m.body.as_bytes()) else {
                    continue;
                };
                let latency = body::latency_us(sent_ns, body::now_ns());
                let first = seen.first(&m.conv, m.seq);
                let mut local = shared.local.borrow_mut();
                if first {
                    local.record(latency);
                } else {
                    local.counters.duplicates += 1;
                }
            }
            #[allow(unreachable_patterns)] // other event kinds may come
            Some(_) => {}
            None => {
                // Either the time is up or the connection ended; for the
                // latter, wait for its close code (the events end first).
                if Instant::now() >= go.end {
                    break;
                }
                let info = conn
                    .closed(go.end.saturating_duration_since(Instant::now()))
                    .await;
                if let Some(info) = info {
                    let mut local = shared.local.borrow_mut();
                    local.counters.dropped += 1;
                    local.counters.error(&format!("close:{}", info.code));
                    return;
                }
            }
        }
    }
    let _ = conn.close();
}

/// A chat connection of a run: senders go through the full client (they
/// need its replies); the others only receive, on the lean client.
enum Opened {
    Sender(Connection),
    Receiver(WsClient),
}

async fn open(
    url: &str,
    global: u32,
    s: &Scenario,
    token: &str,
    sender: bool,
) -> Result<Opened, String> {
    let parsed = WsUrl::parse(url)?;
    let local = parsed
        .addr
        .ip()
        .is_loopback()
        .then(|| source_addr(global, s.source_addrs));
    if !sender {
        return receiver::open(local, &parsed, token)
            .await
            .map(Opened::Receiver);
    }
    let stream = wsraw::tcp_connect(local, parsed.addr)
        .await
        .map_err(|e| format!("connect:{:?}", e.kind()))?;
    let conn = Connection::connect_over(stream, url)
        .await
        .map_err(|e| error_code(&e))?;
    conn.auth(token)
        .await
        .map_err(|e| format!("auth:{}", error_code(&e)))?;
    Ok(Opened::Sender(conn))
}

/// Sends to the conv of chat connection `plan` on the scenario's schedule
/// until the stop time.
async fn send_loop(shared: Rc<Shared>, conn: Rc<Connection>, plan: usize, go: crate::shared::Go) {
    let s = &shared.task.scenario;
    let sender_index = shared.task.chat[plan].sender_index;
    let rate = s.sender_rate();
    let senders = s.sender_count().max(1);
    if rate > 0.0 {
        // Open loop: message k is due at first + k / rate, whatever the
        // replies do; the due time is what the body carries.
        let interval = Duration::from_secs_f64(1.0 / rate);
        let offset = interval.mul_f64(f64::from(sender_index % senders) / f64::from(senders));
        let mut k: u32 = 0;
        loop {
            let due = go.start + offset + interval * k;
            if due >= go.stop_sending {
                return;
            }
            tokio::time::sleep_until(due).await;
            let due_ns = go.start_ns + (offset + interval * k).as_nanos() as u64;
            tokio::task::spawn_local(send_one(
                shared.clone(),
                conn.clone(),
                plan,
                k,
                due_ns,
                go.end,
            ));
            k += 1;
        }
    }
    // Closed loop: `window` sends in flight, each followed by the think time.
    let mut tasks = Vec::new();
    for w in 0..s.window.max(1) {
        let (shared, conn) = (shared.clone(), conn.clone());
        tasks.push(tokio::task::spawn_local(async move {
            let think = Duration::from_millis(shared.task.scenario.think_time_ms);
            let mut k = w;
            while Instant::now() < go.stop_sending {
                send_one(
                    shared.clone(),
                    conn.clone(),
                    plan,
                    k,
                    body::now_ns(),
                    go.end,
                )
                .await;
                k += shared.task.scenario.window.max(1);
                tokio::time::sleep(think).await;
            }
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
}

/// Sends message `k` of chat connection `plan`, stamped `sent_ns`, and
/// counts its reply. The connection is closed at `end`: a send still
/// waiting then counts as `unanswered_at_end`, not as a close.
async fn send_one(
    shared: Rc<Shared>,
    conn: Rc<Connection>,
    plan: usize,
    k: u32,
    sent_ns: u64,
    end: Instant,
) {
    let s = &shared.task.scenario;
    let plan = &shared.task.chat[plan];
    let (sender_index, fanout) = (plan.sender_index, plan.fanout);
    let conv = plan.send_to.as_deref().expect("only senders send");
    let text = body::string(b'L', sent_ns, sender_index, s.message_size);
    let client_msg_id = format!("lt{sender_index}-{}-{k}", shared.task.t0_ns);
    shared.local.borrow_mut().counters.sent += 1;
    let started = Instant::now();
    let result = conn.send(conv, &client_msg_id, &text).await;
    let mut local = shared.local.borrow_mut();
    match result {
        Ok(_) => {
            local.counters.acked += 1;
            local.counters.expected += u64::from(fanout);
            let us = started.elapsed().as_micros() as u64;
            local.ack_latency.saturating_record(us.max(1));
        }
        Err(ClientError::Closed(_)) if Instant::now() >= end => {
            local.counters.error("unanswered_at_end")
        }
        Err(e) => local.counters.error(&error_code(&e)),
    }
}
