//! Set-up shared by the end-to-end tests in `tests/`.
//!
//! A [`World`] is one test's own OceanChat: a fresh [`Stack`] (Redis, NATS,
//! the MongoDB-compatible server), one or more backends and gateways, all
//! real processes, all stopped when the `World` is dropped. [`World::user`]
//! registers and logs in a user with a unique name; [`User::connect`] opens
//! an authenticated WebSocket on a chosen gateway.
//!
//! The services are the binaries that `cargo build --workspace --bins`
//! builds; testkit finds them in the target directory.

pub mod push;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use oceanchat_client::{Connection, HttpApi};
use oceanchat_protocol::client::{ConvListResult, ErrorCode, Event, GroupCreateResult, Op};
use oceanchat_testkit::{Backend, Gateway, Stack};

pub use oceanchat_client::{ClientError, CloseInfo, RawResponse};

/// How long a test waits for anything the server should do promptly.
pub const WAIT: Duration = Duration::from_secs(10);

/// How long a test waits to be sure something does *not* happen, where
/// no barrier ([`events_before_round_trip`], or a later event that must
/// arrive) can say so.
pub const QUIET: Duration = Duration::from_millis(500);

/// The password every test user gets.
pub const PASSWORD: &str = "correct-horse-battery";

/// One test's own services.
pub struct World {
    /// The gateways, named `gw-a`, `gw-b`, ...
    pub gateways: Vec<Gateway>,
    pub backends: Vec<Backend>,
    /// Talks to the first backend.
    pub api: HttpApi,
    // Declared last: dropped after the services that use it.
    pub stack: Stack,
}

impl World {
    /// A stack, one backend and two gateways: what most tests need.
    pub fn start() -> World {
        World::with(1, 2)
    }

    /// A stack with `backends` backends and `gateways` gateways.
    pub fn with(backends: usize, gateways: usize) -> World {
        World::with_gateway_args(backends, gateways, &[])
    }

    /// Like [`World::with`], passing `gateway_args` to every gateway.
    pub fn with_gateway_args(backends: usize, gateways: usize, gateway_args: &[&str]) -> World {
        World::with_args(backends, gateways, &[], gateway_args)
    }

    /// Like [`World::with`], passing `backend_args` to every backend and
    /// `gateway_args` to every gateway.
    pub fn with_args(
        backends: usize,
        gateways: usize,
        backend_args: &[&str],
        gateway_args: &[&str],
    ) -> World {
        assert!(backends >= 1, "the HTTP API needs a backend");
        let stack = Stack::start();
        let backends: Vec<Backend> = (0..backends)
            .map(|_| Backend::start(&stack, backend_args))
            .collect();
        let gateways = start_gateways(&stack, gateways, gateway_args);
        World::assemble(stack, backends, gateways)
    }

    /// A world of services already started on `stack`; the HTTP API is
    /// the first backend's.
    pub fn assemble(stack: Stack, backends: Vec<Backend>, gateways: Vec<Gateway>) -> World {
        let api = HttpApi::new(&backends[0].http_url());
        World {
            gateways,
            backends,
            api,
            stack,
        }
    }

    /// The WebSocket URL of gateway `i`.
    pub fn ws_url(&self, i: usize) -> String {
        self.gateways[i].ws_url()
    }

    /// Registers a user with a unique name that starts with `prefix`, and
    /// logs it in.
    pub async fn user(&self, prefix: &str) -> User {
        let username = unique_username(prefix);
        let registered = self
            .api
            .register(&username, PASSWORD, Some(prefix))
            .await
            .unwrap_or_else(|e| panic!("register {username}: {e}"));
        let login = self
            .api
            .login(&username, PASSWORD)
            .await
            .unwrap_or_else(|e| panic!("login {username}: {e}"));
        assert_eq!(login.user_id, registered.user_id);
        User {
            username,
            user_id: login.user_id,
            session_id: login.session_id,
            token: login.token,
        }
    }
}

impl World {
    /// Registers and logs in `n` users (see [`World::user`]), a few at a
    /// time: password hashing is what it costs.
    pub async fn users(&self, prefix: &str, n: usize) -> Vec<User> {
        use futures::StreamExt as _;
        futures::stream::iter((0..n).map(|_| self.user(prefix)))
            .buffered(8)
            .collect()
            .await
    }

    /// The cast of a small group test (see [`Club`]).
    pub async fn club(&self) -> Club {
        let owner = self.user("owner").await;
        let member = self.user("member").await;
        let eve = self.user("eve").await;
        let o = owner.connect(self, 0).await;
        let m = member.connect(self, 0).await;
        let e = eve.connect(self, 0).await;
        let group = o.group_create("club", &[&member.user_id]).await.unwrap();
        Club {
            owner,
            member,
            eve,
            o,
            m,
            e,
            group,
        }
    }

    /// A second login of `user`: the same user in another session, as on
    /// another device.
    pub async fn login_again(&self, user: &User) -> User {
        let login = self
            .api
            .login(&user.username, PASSWORD)
            .await
            .unwrap_or_else(|e| panic!("login {}: {e}", user.username));
        assert_ne!(login.session_id, user.session_id);
        User {
            username: user.username.clone(),
            user_id: login.user_id,
            session_id: login.session_id,
            token: login.token,
        }
    }
}

/// Starts `n` gateways named `gw-a`, `gw-b`, ... with `args`.
pub fn start_gateways(stack: &Stack, n: usize, args: &[&str]) -> Vec<Gateway> {
    (0..n)
        .map(|i| {
            let id = format!("gw-{}", char::from(b'a' + i as u8));
            Gateway::start(stack, &id, args)
        })
        .collect()
}

/// `owner` made the group "club" with `member` in it; `eve` is outside
/// it. Each has one connection on gateway 0: `o`, `m` and `e`.
pub struct Club {
    pub owner: User,
    pub member: User,
    pub eve: User,
    pub o: Connection,
    pub m: Connection,
    pub e: Connection,
    pub group: GroupCreateResult,
}

/// A registered, logged-in user.
#[derive(Debug, Clone)]
pub struct User {
    pub username: String,
    pub user_id: String,
    pub session_id: String,
    pub token: String,
}

impl User {
    /// Opens a WebSocket on gateway `gateway` of `world` and authenticates
    /// it with this user's token.
    pub async fn connect(&self, world: &World, gateway: usize) -> Connection {
        let url = world.ws_url(gateway);
        let conn = Connection::connect(&url)
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", self.username));
        let auth = conn
            .auth(&self.token)
            .await
            .unwrap_or_else(|e| panic!("auth {} on {url}: {e}", self.username));
        assert_eq!(auth.user_id, self.user_id);
        assert_eq!(auth.session_id, self.session_id);
        conn
    }
}

/// `<prefix>_<n>`: unique within this test process, and each test has its
/// own database, so unique where it matters. Valid per PROTOCOL.md
/// (3 to 32 of `[a-z0-9_.-]`) for a short lower-case prefix.
pub fn unique_username(prefix: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let name = format!("{prefix}_{}", NEXT.fetch_add(1, Ordering::Relaxed));
    assert!(
        oceanchat_protocol::limits::valid_username(&name),
        "test username {name:?} is invalid; use a short lower-case prefix"
    );
    name
}

/// The server error code of a failed request; panics if it succeeded or
/// failed for another reason (timeout, closed connection).
pub fn refusal<T: std::fmt::Debug>(result: Result<T, ClientError>) -> ErrorCode {
    match result {
        Err(ClientError::Server { error, .. }) => error.code,
        other => panic!("expected a server refusal, got {other:?}"),
    }
}

/// Asserts that `raw` is an HTTP error with `status` whose body has
/// exactly PROTOCOL.md's shape `{"error": {"code", "message"}}` and the
/// given code.
pub fn assert_error_body(raw: &RawResponse, status: u16, code: &str) {
    assert_eq!(raw.status, status, "status of {raw:?}");
    let json = raw
        .json()
        .unwrap_or_else(|| panic!("error body is not JSON: {raw:?}"));
    let outer = json
        .as_object()
        .unwrap_or_else(|| panic!("error body is not an object: {json}"));
    assert_eq!(outer.len(), 1, "error body has only `error`: {json}");
    let error = outer["error"]
        .as_object()
        .unwrap_or_else(|| panic!("`error` is not an object: {json}"));
    assert_eq!(
        error.get("code").and_then(|c| c.as_str()),
        Some(code),
        "{json}"
    );
    let message = error.get("message").and_then(|m| m.as_str());
    assert!(
        message.is_some_and(|m| !m.is_empty()),
        "`error.message` is a non-empty string: {json}"
    );
}

/// Every message stored in `conv`, oldest first, read with `sync` pages
/// from seq 0 through `conn`.
pub async fn stored_messages(
    conn: &Connection,
    conv: &str,
) -> Vec<oceanchat_protocol::client::Message> {
    conn.sync_all(conv, 0)
        .await
        .unwrap_or_else(|e| panic!("sync {conv}: {e}"))
}

/// `send`, tried again every 100 ms while it fails, for up to [`WAIT`]:
/// for the first send after a dependency came back, which the service
/// serves once it has reconnected on its own schedule. Panics with
/// `what` after that.
pub async fn send_once_served(
    conn: &Connection,
    conv: &str,
    client_msg_id: &str,
    what: &str,
) -> oceanchat_protocol::client::SendResult {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        match conn.send(conv, client_msg_id, client_msg_id).await {
            Ok(sent) => return sent,
            Err(e) if std::time::Instant::now() < deadline => {
                eprintln!("{what}: not served yet: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("{what}: {e}"),
        }
    }
}

/// The promise to senders, checked against what the store holds: seqs run
/// 1, 2, 3... without a gap, no `client_msg_id` is stored twice, and every
/// acknowledged send (`client_msg_id` → the `seq` its `ok` named) is
/// stored under that seq. Returns how many messages are stored.
pub fn assert_acked_stored_once(
    acked: &std::collections::HashMap<String, u64>,
    stored: &[oceanchat_protocol::client::Message],
) -> usize {
    let seqs: Vec<u64> = stored.iter().map(|m| m.seq).collect();
    let expected: Vec<u64> = (1..=stored.len() as u64).collect();
    assert_eq!(seqs, expected, "stored seqs are not 1..=n without gaps");
    let mut by_id = std::collections::HashMap::new();
    for m in stored {
        if let Some(earlier) = by_id.insert(m.client_msg_id.as_str(), m.seq) {
            panic!(
                "client_msg_id {} stored twice (seq {earlier} and {})",
                m.client_msg_id, m.seq
            );
        }
    }
    for (id, seq) in acked {
        assert_eq!(
            by_id.get(id.as_str()),
            Some(seq),
            "acknowledged send {id} (seq {seq}) is not stored as acknowledged"
        );
    }
    stored.len()
}

/// The events that reached `conn` before the reply to a request it sends
/// now (`conv.list`, which goes through the gateway's bridge to the
/// backend and back).
///
/// A barrier for "nothing arrives": an event that another connection on
/// the same gateway has already received was queued for every local
/// follower before that, in each core's ordered queue, and this reply
/// comes through the same queue after it; a connection's frames leave in
/// the order they were queued (docs/internals.md, "NATS"). So an empty
/// result shows the event did not go to `conn`, with no fixed wait.
pub async fn events_before_round_trip(conn: &Connection) -> Vec<Event> {
    let _: ConvListResult = conn
        .request_as(Op::ConvList {})
        .await
        .unwrap_or_else(|e| panic!("conv.list as a barrier: {e}"));
    conn.received_events().await
}
