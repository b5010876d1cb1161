//! The web client (`web/`) in Debian's headless Chromium, against the real
//! stack: each test starts a World whose backend serves the page and points
//! it at the first gateway (`--public-ws-url`), then runs one scenario of
//! `tests/web/` with node (playwright-core), doing on request the steps a
//! page cannot (restarting a gateway, sending as a user on another
//! gateway, checking what the server stored). The scenario prints
//! `@step <name> <json>` and reads the answer as one JSON line; it ends with
//! `@ok` and exit status 0.
//!
//! Needs `chromium` (apt) and `npm ci` in `tests/web`, which `scripts/test`
//! installs; without them these tests fail, they do not skip. Screenshots
//! go to `target/web-artifacts/`.

mod admin;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::mpsc;

use oceanchat_client::Connection;
use oceanchat_protocol::client::{HistoryResult, Op, Role};
use oceanchat_testkit::{Backend, Stack};
use oceanchat_tests::{start_gateways, World, PASSWORD};

use admin::role_in;

/// How long one scenario may take, steps included.
const SCENARIO_TIMEOUT: Duration = Duration::from_secs(240);

/// Browsers are heavy on a small machine: one scenario at a time.
static ONE_BROWSER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A stack, `gateways` gateways, and a backend whose page connects to the
/// first one.
fn web_world(gateways: usize) -> World {
    web_world_with(gateways, &[])
}

/// Like [`web_world`], with more flags for the backend.
fn web_world_with(gateways: usize, backend_args: &[&str]) -> World {
    let stack = Stack::start();
    let gateways = start_gateways(&stack, gateways, &[]);
    let ws_url = gateways[0].ws_url();
    let mut args = vec!["--public-ws-url", &ws_url];
    args.extend_from_slice(backend_args);
    let backends = vec![Backend::start(&stack, &args)];
    World::assemble(stack, backends, gateways)
}

/// The workspace this test was built from.
fn workspace_root() -> PathBuf {
    let tests_crate = Path::new(env!("CARGO_MANIFEST_DIR"));
    tests_crate.parent().unwrap_or(tests_crate).to_path_buf()
}

fn web_dir() -> PathBuf {
    workspace_root().join("tests/web")
}

fn artifacts_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(|d| workspace_root().join(d))
        .unwrap_or_else(|| workspace_root().join("target"));
    target.join("web-artifacts")
}

fn chromium() -> PathBuf {
    std::env::var_os("OC_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"))
}

/// Panics (the test fails) when the browser or the node packages are
/// missing: a browser test that skips itself proves nothing.
fn require_browser() {
    let browser = chromium();
    assert!(
        browser.is_file(),
        "{} not found: install it with `apt-get install -y chromium` (scripts/test does), \
         or set OC_CHROMIUM",
        browser.display()
    );
    let module = web_dir().join("node_modules/playwright-core/package.json");
    assert!(
        module.is_file(),
        "{} not found: run `npm ci` in tests/web (scripts/test does)",
        module.display()
    );
    let node = std::process::Command::new("node").arg("--version").output();
    assert!(
        node.as_ref().is_ok_and(|o| o.status.success()),
        "node not found (scripts/test installs it): {node:?}"
    );
}

/// One running scenario: its requests for steps, then its outcome.
struct Scenario {
    name: String,
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::UnboundedReceiver<String>,
    output: Vec<String>,
    deadline: tokio::time::Instant,
}

impl Scenario {
    fn start(name: &str, world: &World, env: &[(&str, &str)]) -> Scenario {
        require_browser();
        let script = web_dir().join(format!("{name}.mjs"));
        let mut command = Command::new("node");
        command
            .arg(&script)
            .current_dir(workspace_root())
            .env("OC_WEB_URL", world.backends[0].http_url())
            .env("OC_WEB_ARTIFACTS", artifacts_dir())
            .env("OC_CHROMIUM", chromium())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run node {}: {e}", script.display()));
        let stdin = child.stdin.take().expect("piped stdin");
        let (tx, lines) = mpsc::unbounded_channel();
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        for (stream, prefix) in [
            (
                Box::new(stdout) as Box<dyn tokio::io::AsyncRead + Unpin + Send>,
                "",
            ),
            (Box::new(stderr), "stderr: "),
        ] {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut reader = BufReader::new(stream).lines();
                while let Ok(Some(line)) = reader.next_line().await {
                    if tx.send(format!("{prefix}{line}")).is_err() {
                        break;
                    }
                }
            });
        }
        Scenario {
            name: name.to_string(),
            child,
            stdin,
            lines,
            output: Vec::new(),
            deadline: tokio::time::Instant::now() + SCENARIO_TIMEOUT,
        }
    }

    /// The next `@step`: its name and data; `None` once the script's output
    /// has ended.
    async fn next_step(&mut self) -> Option<(String, Value)> {
        loop {
            let line = match tokio::time::timeout_at(self.deadline, self.lines.recv()).await {
                Ok(Some(line)) => line,
                Ok(None) => return None,
                Err(_) => {
                    let _ = self.child.start_kill();
                    panic!(
                        "scenario {} did not finish in {SCENARIO_TIMEOUT:?}; its output:\n{}",
                        self.name,
                        self.output.join("\n")
                    );
                }
            };
            eprintln!("[{}] {line}", self.name);
            self.output.push(line.clone());
            if let Some(rest) = line.strip_prefix("@step ") {
                let (name, data) = rest.split_once(' ').unwrap_or((rest, "{}"));
                let data = serde_json::from_str(data)
                    .unwrap_or_else(|e| panic!("bad step data {data:?}: {e}"));
                return Some((name.to_string(), data));
            }
        }
    }

    async fn reply(&mut self, reply: Value) {
        let mut line = reply.to_string();
        line.push('\n');
        self.stdin
            .write_all(line.as_bytes())
            .await
            .expect("the scenario reads its answers");
    }

    /// Waits for the script to exit and asserts that it passed.
    async fn assert_passed(mut self) -> Duration {
        if let Some((step, _)) = self.next_step().await {
            panic!(
                "scenario {} asked for step {step}, which nobody answers",
                self.name
            );
        }
        let status = tokio::time::timeout_at(self.deadline, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("scenario {} did not exit", self.name))
            .expect("wait for node");
        let output = self.output.join("\n");
        assert!(
            status.success() && self.output.iter().any(|l| l.starts_with("@ok ")),
            "scenario {} failed ({status}); screenshots in {}; its output:\n{output}",
            self.name,
            artifacts_dir().display()
        );
        SCENARIO_TIMEOUT
            - self
                .deadline
                .saturating_duration_since(tokio::time::Instant::now())
    }
}

/// A string field of a step's data.
fn field<'a>(data: &'a Value, key: &str) -> &'a str {
    data[key]
        .as_str()
        .unwrap_or_else(|| panic!("step data without {key}: {data}"))
}

/// Logs in `username` (registered by the page) and connects on gateway `gw`.
async fn connect_as(world: &World, username: &str, gw: usize) -> Connection {
    let login = world
        .api
        .login(username, PASSWORD)
        .await
        .unwrap_or_else(|e| panic!("login {username}: {e}"));
    let conn = Connection::connect(&world.ws_url(gw))
        .await
        .unwrap_or_else(|e| panic!("connect {username}: {e}"));
    conn.auth(&login.token).await.expect("auth");
    conn
}

/// Asserts that the page showed (`data["shown"]`, oldest first) exactly
/// the bodies the server stored, in order, each once.
fn assert_shown_as_stored(data: &Value, stored: &[(u64, String)]) {
    let bodies: Vec<&str> = stored.iter().map(|(_, b)| b.as_str()).collect();
    let shown: Vec<&str> = data["shown"]
        .as_array()
        .expect("shown")
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(bodies, shown, "stored and shown messages differ");
}

/// Answers the scenario's `check-conv` step: what the page showed is what
/// the server stored, once each, in order.
async fn check_conv_when_asked(run: &mut Scenario, world: &World) {
    if let Some((name, data)) = run.next_step().await {
        assert_eq!(name, "check-conv", "{data}");
        let conn = connect_as(world, field(&data, "username"), 0).await;
        let stored = stored_messages(&conn, field(&data, "conv")).await;
        assert_shown_as_stored(&data, &stored);
        run.reply(json!({"stored": stored.len()})).await;
    }
}

/// Every stored message of `conv`, oldest first, as `(seq, body)`.
async fn stored_messages(conn: &Connection, conv: &str) -> Vec<(u64, String)> {
    let mut all = Vec::new();
    let mut before = None;
    loop {
        let page: HistoryResult = conn
            .request_as(Op::History {
                conv: conv.to_string(),
                before_seq: before,
                limit: Some(500),
            })
            .await
            .expect("history");
        if page.messages.is_empty() {
            break;
        }
        before = page.messages.last().map(|m| m.seq);
        all.extend(page.messages.into_iter().map(|m| (m.seq, m.body)));
        if before == Some(1) {
            break;
        }
    }
    all.reverse();
    all
}

/// Alice and bob register in two browser contexts, open a direct
/// conversation, exchange messages both ways, see each other typing and a
/// read receipt; bob reloads and scrolls back through the history.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_between_two_browsers() {
    let _one = ONE_BROWSER.lock().await;
    let world = web_world(1);
    let mut run = Scenario::start("chat", &world, &[]);
    check_conv_when_asked(&mut run, &world).await;
    let took = run.assert_passed().await;
    eprintln!("chat scenario: {took:?}");
}

/// The server refuses alice's sends for a while on a live connection, as
/// when its store is behind; the page sends them again by itself, in
/// order, and shows them once each, as stored. Then a stored send's reply
/// and deliveries are lost; the page sends it again on its own, and bob
/// gets it once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_refused_while_the_server_is_busy_are_sent_again_in_order() {
    let _one = ONE_BROWSER.lock().await;
    let world = web_world(1);
    let mut run = Scenario::start("busy", &world, &[]);
    check_conv_when_asked(&mut run, &world).await;
    run.assert_passed().await;
}

/// The seed's page: two admins open the same group's settings; the second
/// is read-only with a banner naming the first until the first closes the
/// page, then edits by itself. The server ends with X gone and Y an admin;
/// then the second admin leaves the group.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_settings_one_editor_at_a_time() {
    let _one = ONE_BROWSER.lock().await;
    let world = web_world(1);
    let mut run = Scenario::start("settings", &world, &[]);
    while let Some((name, data)) = run.next_step().await {
        let owner = connect_as(&world, field(&data, "owner"), 0).await;
        let group = owner.group_get(field(&data, "group_id")).await.unwrap();
        if name == "check-left" {
            assert_eq!(role_in(&group, field(&data, "left")), None, "B left");
            run.reply(json!({"members": group.members.len()})).await;
            continue;
        }
        assert_eq!(name, "check-group", "{data}");
        assert_eq!(group.group.name, field(&data, "name"));
        assert_eq!(role_in(&group, field(&data, "gone")), None, "X was removed");
        assert_eq!(
            role_in(&group, field(&data, "admin")),
            Some(Role::Admin),
            "Y was promoted"
        );
        let muted = group
            .members
            .iter()
            .find(|m| m.user_id == field(&data, "muted"))
            .expect("the muted member is in the group");
        assert!(muted.muted && muted.role == Role::Member);
        run.reply(json!({"members": group.members.len()})).await;
    }
    let took = run.assert_passed().await;
    eprintln!("settings scenario: {took:?}");
}

/// The page's gateway is stopped while a chat is open, bob (on another
/// gateway) sends meanwhile and alice writes while offline; the gateway
/// comes back: the page reconnects, syncs and shows every message once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnect_after_a_gateway_restart() {
    let _one = ONE_BROWSER.lock().await;
    let mut world = web_world(2);
    let bob = world.user("bob").await;
    let mut bob_conn: Option<(Connection, String)> = None;
    let mut run = Scenario::start("reconnect", &world, &[("OC_BOB_NAME", &bob.username)]);
    while let Some((name, data)) = run.next_step().await {
        let reply = match name.as_str() {
            // Bob, on the second gateway, opens the conversation and writes.
            "bob-joins" => {
                let conn = bob.connect(&world, 1).await;
                let conv = conn.dm_open(field(&data, "alice_id")).await.unwrap();
                conn.send(&conv, "bob-1", "Hi from bob").await.unwrap();
                bob_conn = Some((conn, conv.clone()));
                json!({"conv": conv})
            }
            "stop-gateway" => {
                tokio::task::block_in_place(|| world.gateways[0].stop());
                let (conn, conv) = bob_conn.as_ref().expect("bob joined");
                for i in 1..=3 {
                    conn.send(conv, &format!("bob-down-{i}"), &format!("while down {i}"))
                        .await
                        .unwrap();
                }
                json!({})
            }
            "start-gateway" => {
                tokio::task::block_in_place(|| world.gateways[0].restart());
                json!({})
            }
            "bob-sends" => {
                let (conn, conv) = bob_conn.as_ref().expect("bob joined");
                let body = field(&data, "body");
                conn.send(conv, &format!("bob-{body}"), body).await.unwrap();
                json!({})
            }
            "check-conv" => {
                let (conn, conv) = bob_conn.as_ref().expect("bob joined");
                let stored = stored_messages(conn, conv).await;
                assert_shown_as_stored(&data, &stored);
                let seqs: Vec<u64> = stored.iter().map(|(s, _)| *s).collect();
                let expected: Vec<u64> = (1..=stored.len() as u64).collect();
                assert_eq!(seqs, expected, "seqs are gap-free");
                json!({"stored": stored.len()})
            }
            other => panic!("unknown step {other}: {data}"),
        };
        run.reply(reply).await;
    }
    let took = run.assert_passed().await;
    eprintln!("reconnect scenario: {took:?}");
}

/// An edit lock that lapses under the page (a short lease, renewals held
/// back): the page says so, turns read-only, and can take the lock again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_lock_turns_the_page_read_only() {
    let _one = ONE_BROWSER.lock().await;
    let world = web_world_with(1, &["--lock-ttl-ms", "1500"]);
    let run = Scenario::start("expiry", &world, &[]);
    let took = run.assert_passed().await;
    eprintln!("expiry scenario: {took:?}");
}
