//! `oceanchat-loadtest faults`: the chat scenario through nginx while every
//! component is killed with SIGKILL and restarted in turn, then the promise
//! checked from the store and from every client.
//!
//! The system is started here, on free ports of 127.0.0.1 in temporary
//! folders (testkit): Redis (append-only, fsync always, as deployed), a
//! three-node NATS cluster, SecantusDB, two backends and two gateways
//! given every NATS node, and nginx with the shipped `deploy/nginx.conf`.
//! Users chat through [`Session`]s (reconnect with jittered backoff,
//! re-auth, sync from the last seq), each sending at a steady pace, in
//! turn to one group of everyone (fanned out by topic) and to a direct
//! conv with the first user (routed by the user's routes in Redis).
//! Faults, in turn: a gateway, a backend, one NATS node, Redis, SecantusDB.
//! For each: kill, stay down a moment, restart, and time the recovery (from
//! the kill until a probe message sent after the restart has reached every
//! client). At the end: every acknowledged send stored exactly once under
//! the seq its `ok` named, seqs without gaps, and every client holding
//! every stored message exactly once and connected.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use oceanchat_client::{Backoff, HttpApi, Session, SessionConfig};
use oceanchat_protocol::client::Message;
use oceanchat_testkit::{Backend, Gateway, Mongo, Nats, Nginx, Redis, Stack};

/// How a run is sized.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// Rounds of the five faults.
    pub rounds: usize,
    pub users: usize,
    /// Pause between one user's sends.
    pub send_every: Duration,
    /// How long a killed component stays down.
    pub down: Duration,
}

impl Plan {
    /// `--quick`: one round, small load (what CI runs).
    pub fn quick() -> Plan {
        Plan {
            rounds: 1,
            users: 6,
            send_every: Duration::from_millis(250),
            down: Duration::from_secs(1),
        }
    }

    /// The full run: three rounds of each fault.
    pub fn full() -> Plan {
        Plan {
            rounds: 3,
            users: 20,
            send_every: Duration::from_millis(200),
            down: Duration::from_secs(3),
        }
    }
}

/// What a client gets while a send has no answer: it retries with the
/// same `client_msg_id` this long, then counts the send as refused. Past
/// one unanswered attempt ([`oceanchat_client::SEND_ATTEMPT_TIMEOUT`]):
/// a request lost with a killed backend is sent again, as a person's
/// client would, and the message it may have stored is delivered then.
const SEND_PATIENCE: Duration = Duration::from_secs(10);
/// How long recovery may take before the run counts it as failed.
const RECOVERY_LIMIT: Duration = Duration::from_secs(60);
/// How long a probe may take to reach everyone before another is sent:
/// one that left before the fault took hold may never come.
const PROBE_WAIT: Duration = Duration::from_secs(2);
const PASSWORD: &str = "faults-password-1";

/// The components a fault hits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    Gateway,
    Backend,
    NatsNode,
    Redis,
    SecantusDb,
}

const FAULTS: [Fault; 5] = [
    Fault::Gateway,
    Fault::Backend,
    Fault::NatsNode,
    Fault::Redis,
    Fault::SecantusDb,
];

impl Fault {
    fn name(self) -> &'static str {
        match self {
            Fault::Gateway => "gateway gw-a",
            Fault::Backend => "backend 1",
            Fault::NatsNode => "NATS node 1",
            Fault::Redis => "Redis",
            Fault::SecantusDb => "SecantusDB",
        }
    }
}

/// The running system. Its fields stop in the order they are declared
/// (Rust drops them so): the front first and the stores last, as a
/// deployment stops. Stores stopped first left each backend waiting out
/// its drain with nothing to drain to, and killed after 5 s.
struct System {
    nginx: Nginx,
    gateways: Vec<Gateway>,
    backends: Vec<Backend>,
    stack: Stack,
    /// Running for the system's life; stopped when it is dropped.
    _nats_others: Vec<Nats>,
}

impl System {
    fn start() -> System {
        let mut nodes = Nats::cluster(3);
        let nats_url = nodes.iter().map(Nats::url).collect::<Vec<_>>().join(",");
        let first = nodes.remove(0);
        let stack = Stack {
            redis: Redis::start_persistent(),
            nats: first,
            mongo: Mongo::start(),
            mongo_db: format!("oc_faults_{}", std::process::id()),
        };
        let backends = (0..2)
            .map(|_| Backend::start(&stack, &["--nats-url", &nats_url]))
            .collect::<Vec<_>>();
        // A short route TTL: a killed gateway's routes are ignored soon.
        let gateways = ["gw-a", "gw-b"]
            .iter()
            .map(|id| Gateway::start(&stack, id, &["--nats-url", &nats_url, "--route-ttl-s", "6"]))
            .collect::<Vec<_>>();
        let nginx = Nginx::start(
            &gateways.iter().map(|g| g.port()).collect::<Vec<_>>(),
            &backends.iter().map(|b| b.port()).collect::<Vec<_>>(),
        );
        System {
            stack,
            _nats_others: nodes,
            backends,
            gateways,
            nginx,
        }
    }

    /// SIGKILL; returns once the process is gone.
    fn kill(&mut self, fault: Fault) {
        match fault {
            Fault::Gateway => self.gateways[0].kill(),
            Fault::Backend => self.backends[0].kill(),
            Fault::NatsNode => self.stack.nats.kill(),
            Fault::Redis => self.stack.redis.kill(),
            Fault::SecantusDb => self.stack.mongo.kill(),
        }
    }

    /// Starts the killed component again on its port and folder; blocks
    /// until it is ready.
    fn restart(&mut self, fault: Fault) {
        match fault {
            Fault::Gateway => self.gateways[0].restart(),
            Fault::Backend => self.backends[0].restart(),
            Fault::NatsNode => self.stack.nats.restart(),
            Fault::Redis => self.stack.redis.restart(),
            Fault::SecantusDb => self.stack.mongo.restart(),
        }
    }
}

/// The convs of a run: one group of everyone, and a direct conv of each
/// user with the first user (the prober, who reads the store at the end).
#[derive(Debug, Clone)]
struct Convs {
    group: String,
    /// `dms[i]`: user `i` with user 0; `None` for user 0.
    dms: Vec<Option<String>>,
}

impl Convs {
    /// The convs client `i` is a member of.
    fn of(&self, i: usize) -> Vec<&str> {
        let mut convs = vec![self.group.as_str()];
        if i == 0 {
            convs.extend(self.dms.iter().flatten().map(String::as_str));
        } else if let Some(dm) = &self.dms[i] {
            convs.push(dm);
        }
        convs
    }
}

/// What the clients saw, shared by their tasks.
#[derive(Default)]
struct Log {
    /// `client_msg_id` → (conv, seq, when acked).
    acked: HashMap<String, (String, u64, Instant)>,
    /// Sends still unanswered after [`SEND_PATIENCE`], with when.
    refused: Vec<Instant>,
    /// Per client: every (conv, seq, when) its session handed out.
    received: Vec<Vec<(String, u64, Instant)>>,
}

/// One row of the report.
#[derive(Debug, Clone)]
pub struct Row {
    pub fault: String,
    pub recovery: Option<Duration>,
    pub refused: usize,
    pub acked_then_lost: usize,
    pub duplicates: usize,
}

/// The run's outcome.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub rows: Vec<Row>,
    pub acked: usize,
    pub stored: usize,
    /// The clients not caught up or not connected at the end, each with
    /// what it lacked.
    pub stale_clients: Vec<String>,
    /// Problems with the store itself (gaps, a `client_msg_id` twice).
    pub store_problems: Vec<String>,
}

impl Outcome {
    /// True when nothing acknowledged was lost, nothing duplicated and
    /// every client caught up and recovered.
    pub fn passed(&self) -> bool {
        self.stale_clients.is_empty()
            && self.store_problems.is_empty()
            && self
                .rows
                .iter()
                .all(|r| r.recovery.is_some() && r.acked_then_lost == 0 && r.duplicates == 0)
    }

    /// The report: one markdown table row per fault, then the totals.
    pub fn table(&self) -> String {
        let mut out = String::from(
            "| fault | recovery (ms) | sends refused | acked-then-lost | duplicates |\n\
             | --- | --- | --- | --- | --- |\n",
        );
        for r in &self.rows {
            let recovery = r
                .recovery
                .map_or("did not recover".to_string(), |d| d.as_millis().to_string());
            let _ = writeln!(
                out,
                "| {} | {recovery} | {} | {} | {} |",
                r.fault, r.refused, r.acked_then_lost, r.duplicates
            );
        }
        let _ = writeln!(
            out,
            "\n{} sends acknowledged, {} messages stored, {} clients not caught up or not \
             connected at the end{}.",
            self.acked,
            self.stored,
            self.stale_clients.len(),
            if self.store_problems.is_empty() {
                String::new()
            } else {
                format!("; store: {}", self.store_problems.join("; "))
            }
        );
        for stale in &self.stale_clients {
            let _ = writeln!(out, "- {stale}");
        }
        out
    }
}

/// Runs the plan; blocks (it owns a tokio runtime).
pub fn run(plan: Plan) -> anyhow::Result<Outcome> {
    let mut system = System::start();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let ws = system.nginx.ws_url();
    let (sessions, convs) = runtime.block_on(prepare(&system.nginx.http_url(), &ws, plan.users))?;
    let conv = convs.group.clone();
    let sessions: Arc<Vec<Session>> = Arc::new(sessions);
    let log = Arc::new(Mutex::new(Log {
        received: vec![Vec::new(); sessions.len()],
        ..Log::default()
    }));
    let stop = Arc::new(AtomicBool::new(false));

    // Every client records what its session hands out; every client but
    // the first (the prober) sends.
    let mut tasks = Vec::new();
    for i in 0..sessions.len() {
        let (sessions, log, stop) = (sessions.clone(), log.clone(), stop.clone());
        tasks.push(runtime.spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                if let Some(m) = sessions[i].next_msg(Duration::from_millis(200)).await {
                    log.lock().expect("log").received[i].push((m.conv, m.seq, Instant::now()));
                }
            }
        }));
    }
    for i in 1..sessions.len() {
        let (sessions, log, stop, convs) =
            (sessions.clone(), log.clone(), stop.clone(), convs.clone());
        tasks.push(runtime.spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let id = format!("u{i}-{n}");
                // The group and the direct conv in turn.
                let conv = match (n % 2, &convs.dms[i]) {
                    (1, Some(dm)) => dm.as_str(),
                    _ => convs.group.as_str(),
                };
                n += 1;
                match sessions[i].send(conv, &id, &id, SEND_PATIENCE).await {
                    Ok(sent) => {
                        log.lock()
                            .expect("log")
                            .acked
                            .insert(id, (conv.to_string(), sent.seq, Instant::now()));
                    }
                    Err(_) => log.lock().expect("log").refused.push(Instant::now()),
                }
                tokio::time::sleep(plan.send_every).await;
            }
        }));
    }

    // Warm up, then the faults in turn.
    std::thread::sleep(Duration::from_secs(2));
    let mut windows = Vec::new();
    let mut probes = 0u64;
    for round in 0..plan.rounds {
        for fault in FAULTS {
            let started = Instant::now();
            eprintln!("round {}: killing {}", round + 1, fault.name());
            system.kill(fault);
            // Probes go out from the kill on, while the component stays
            // down and restarts: delivery may recover before it is back
            // (the clients moved to another gateway) or only after.
            let system = &mut system;
            let recovery = std::thread::scope(|scope| {
                scope.spawn(move || {
                    std::thread::sleep(plan.down);
                    system.restart(fault);
                });
                runtime.block_on(recover(&sessions, &conv, &mut probes, started))
            });
            eprintln!(
                "  {} recovered: {}",
                fault.name(),
                recovery.map_or("no".into(), |d| format!("{} ms", d.as_millis()))
            );
            windows.push((fault, started, recovery));
            // Let the load run between faults.
            std::thread::sleep(Duration::from_secs(1));
        }
    }
    stop.store(true, Ordering::Relaxed);
    runtime.block_on(async {
        for task in tasks {
            let _ = task.await;
        }
    });

    // The end: a last probe in the group, the store read back, then every
    // client must reach the end of each of its convs (or counts as stale).
    runtime
        .block_on(probe(&sessions, &conv, &mut probes))
        .ok_or_else(|| anyhow::anyhow!("the final probe could not be sent"))?;
    let reader = runtime
        .block_on(sessions[0].connection(Duration::from_secs(10)))
        .ok_or_else(|| anyhow::anyhow!("the prober has no connection to read the store with"))?;
    let mut stored = HashMap::new();
    for conv in convs.of(0) {
        let messages = runtime.block_on(reader.sync_all(conv, 0))?;
        stored.insert(conv.to_string(), messages);
    }
    let end_of = |conv: &str| stored.get(conv).map_or(0, |m| m.len() as u64);
    let mut connected = Vec::new();
    for (i, session) in sessions.iter().enumerate() {
        connected.push(runtime.block_on(async {
            let deadline = Instant::now() + Duration::from_secs(30);
            let behind = || convs.of(i).iter().any(|c| session.last_seq(c) < end_of(c));
            while behind() && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            session.connection(Duration::from_secs(5)).await.is_some()
        }));
    }
    // Drain what the sessions handed out after the recorders stopped.
    runtime.block_on(async {
        for (i, session) in sessions.iter().enumerate() {
            while let Some(m) = session.next_msg(Duration::from_millis(100)).await {
                log.lock().expect("log").received[i].push((m.conv, m.seq, Instant::now()));
            }
        }
    });
    let log = log.lock().expect("log");
    let outcome = judge(&log, &stored, &convs, &windows, &connected);
    drop(system);
    Ok(outcome)
}

/// Registers the users, logs them in, opens a session each through nginx,
/// one group of all of them and each one's direct conv with user 0.
async fn prepare(api_url: &str, ws: &str, users: usize) -> anyhow::Result<(Vec<Session>, Convs)> {
    let mut logins = Vec::new();
    for i in 0..users {
        // Each user from an address of its own, as people are: nginx allows
        // one address 2 auth requests a second with a burst of 20.
        let from = std::net::Ipv4Addr::new(127, 0, 1, 1 + (i % 250) as u8);
        let api = HttpApi::with_local_address(api_url, from.into());
        let name = format!("fault_{i}");
        api.register(&name, PASSWORD, None).await?;
        logins.push(api.login(&name, PASSWORD).await?);
    }
    let mut sessions = Vec::new();
    for login in &logins {
        let session = Session::connect(SessionConfig {
            urls: vec![ws.to_string()],
            token: login.token.clone(),
            backoff: Backoff {
                initial: Duration::from_millis(100),
                max: Duration::from_secs(2),
            },
        })
        .await?;
        sessions.push(session);
    }
    let owner = sessions[0]
        .connection(Duration::from_secs(5))
        .await
        .ok_or_else(|| anyhow::anyhow!("no connection"))?;
    let members: Vec<&str> = logins[1..].iter().map(|l| l.user_id.as_str()).collect();
    let group = owner.group_create("faults", &members).await?;
    let mut dms = vec![None];
    for session in sessions.iter().skip(1) {
        let conn = session
            .connection(Duration::from_secs(5))
            .await
            .ok_or_else(|| anyhow::anyhow!("no connection"))?;
        dms.push(Some(conn.dm_open(&logins[0].user_id).await?));
    }
    let convs = Convs {
        group: group.conv,
        dms,
    };
    for (i, session) in sessions.iter().enumerate() {
        for conv in convs.of(i) {
            session.follow(conv, 0);
        }
    }
    Ok((sessions, convs))
}

/// Sends one probe message from the first client; its seq.
async fn probe(sessions: &[Session], conv: &str, probes: &mut u64) -> Option<u64> {
    let deadline = Instant::now() + RECOVERY_LIMIT;
    while Instant::now() < deadline {
        *probes += 1;
        let id = format!("probe-{probes}");
        if let Ok(sent) = sessions[0].send(conv, &id, &id, SEND_PATIENCE).await {
            return Some(sent.seq);
        }
    }
    None
}

/// Sends probes until one has reached every client within
/// [`PROBE_WAIT`]: the time from `started` until it had, or `None` past
/// [`RECOVERY_LIMIT`].
async fn recover(
    sessions: &[Session],
    conv: &str,
    probes: &mut u64,
    started: Instant,
) -> Option<Duration> {
    while started.elapsed() < RECOVERY_LIMIT {
        let seq = probe(sessions, conv, probes).await?;
        let sent = Instant::now();
        while sent.elapsed() < PROBE_WAIT {
            if sessions.iter().all(|s| s.last_seq(conv) >= seq) {
                return Some(started.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    None
}

/// Compares what was promised with what is stored and what each client
/// got; one row per fault window (from its kill to the next kill). A client
/// is stale when it lacks any stored seq of its convs or has no connection.
fn judge(
    log: &Log,
    stored: &HashMap<String, Vec<Message>>,
    convs: &Convs,
    windows: &[(Fault, Instant, Option<Duration>)],
    connected: &[bool],
) -> Outcome {
    let mut store_problems = Vec::new();
    let mut by_id: HashMap<(&str, &str), u64> = HashMap::new();
    let mut twice = HashSet::new();
    for (conv, messages) in stored {
        for (i, m) in messages.iter().enumerate() {
            if m.seq != i as u64 + 1 {
                store_problems.push(format!(
                    "{conv}: seq {} stored at position {}",
                    m.seq,
                    i + 1
                ));
                break;
            }
            let key = (conv.as_str(), m.client_msg_id.as_str());
            if by_id.insert(key, m.seq).is_some() {
                twice.insert(key);
            }
        }
    }
    let window_of = |t: Instant| windows.iter().rposition(|(_, started, _)| *started <= t);
    let mut rows: Vec<Row> = windows
        .iter()
        .map(|(fault, _, recovery)| Row {
            fault: fault.name().to_string(),
            recovery: *recovery,
            refused: 0,
            acked_then_lost: 0,
            duplicates: 0,
        })
        .collect();
    for (id, (conv, seq, at)) in &log.acked {
        // Acked before the first fault: counted with the first window.
        let w = window_of(*at).unwrap_or(0);
        let key = (conv.as_str(), id.as_str());
        if by_id.get(&key) != Some(seq) {
            rows[w].acked_then_lost += 1;
        }
        if twice.contains(&key) {
            rows[w].duplicates += 1;
        }
    }
    for at in &log.refused {
        rows[window_of(*at).unwrap_or(0)].refused += 1;
    }
    // Each client: every seq once; a second copy counts where it arrived.
    let mut stale_clients = Vec::new();
    for (i, (received, connected)) in log.received.iter().zip(connected).enumerate() {
        let mut seen = HashSet::new();
        for (conv, seq, at) in received {
            if !seen.insert((conv.as_str(), *seq)) {
                rows[window_of(*at).unwrap_or(0)].duplicates += 1;
            }
        }
        let mut lacks = Vec::new();
        if !connected {
            lacks.push("no connection".to_string());
        }
        for conv in convs.of(i) {
            let end = stored.get(conv).map_or(0, |m| m.len() as u64);
            let missing: Vec<u64> = (1..=end)
                .filter(|seq| !seen.contains(&(conv, *seq)))
                .collect();
            if !missing.is_empty() {
                lacks.push(format!(
                    "{} of {end} seqs of {conv} missing (first {:?})",
                    missing.len(),
                    &missing[..missing.len().min(5)]
                ));
            }
        }
        if !lacks.is_empty() {
            stale_clients.push(format!("client {i}: {}", lacks.join(", ")));
        }
    }
    Outcome {
        rows,
        acked: log.acked.len(),
        stored: stored.values().map(Vec::len).sum(),
        stale_clients,
        store_problems,
    }
}
