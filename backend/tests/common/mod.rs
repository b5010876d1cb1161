//! A backend served in-process against real stores from testkit, and small
//! clients for its HTTP API and its NATS request service.

#![allow(dead_code)] // each test file uses a different part

use std::time::Duration;

use oceanchat_backend::{serve, AppState, Config};
use oceanchat_protocol::client::Op;
use oceanchat_protocol::http::{LoginResponse, RegisterResponse};
use oceanchat_protocol::internal::{subjects, RpcContext, RpcRequest};
use oceanchat_testkit::Stack;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The configuration of a backend on `stack`, with a short server
/// selection timeout so tests of a stopped MongoDB do not wait 5 s.
pub fn config(stack: &Stack) -> Config {
    Config {
        redis_url: stack.redis.url(),
        nats_url: stack.nats.url(),
        mongo_url: format!("{}&serverSelectionTimeoutMS=1000", stack.mongo.url()),
        mongo_db: stack.mongo_db.clone(),
        ..Config::default()
    }
}

/// A backend running in this process; stops when dropped or stopped.
pub struct Running {
    pub state: AppState,
    pub http: String,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), oceanchat_backend::BackendError>>>,
}

impl Running {
    pub async fn start(config: Config) -> Running {
        let state = AppState::connect(config).await.expect("backend connects");
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let http = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve(state.clone(), listener, async {
            let _ = stopped.await;
        }));
        // The queue subscription must be registered with the server
        // before a test sends requests.
        wait_until_subscribed(&state).await;
        Running {
            state,
            http,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Stops it gracefully and waits until it has.
    pub async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task
            .take()
            .unwrap()
            .await
            .unwrap()
            .expect("backend stops cleanly");
    }
}

async fn wait_until_subscribed(state: &AppState) {
    // `serve` subscribes right away; a flush round trip after that makes
    // sure the server has the subscription.
    tokio::time::sleep(Duration::from_millis(50)).await;
    state.nats.flush().await.unwrap();
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

pub async fn register(http: &str, username: &str, password: &str) -> String {
    let response = reqwest::Client::new()
        .post(format!("{http}/v1/auth/register"))
        .json(&json!({"username": username, "password": password}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201, "register {username}");
    response.json::<RegisterResponse>().await.unwrap().user_id
}

pub async fn login(http: &str, username: &str, password: &str) -> LoginResponse {
    let response = reqwest::Client::new()
        .post(format!("{http}/v1/auth/login"))
        .json(&json!({"username": username, "password": password}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "login {username}");
    response.json().await.unwrap()
}

/// A unique username for this test run.
pub fn username(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!("{prefix}{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// Registers a user and returns its id.
pub async fn user(http: &str, prefix: &str) -> String {
    register(http, &username(prefix), "password1").await
}

/// Sends `op` to the request service as an authenticated connection of
/// `user` (or an unauthenticated one) and returns the reply body.
pub async fn rpc(nats: &async_nats::Client, user: Option<&str>, op: Op) -> Value {
    let request = RpcRequest {
        ctx: RpcContext {
            gateway_id: "gw-test".into(),
            conn_id: 1,
            user_id: user.map(str::to_string),
            session_id: user.map(|_| "s-test".to_string()),
        },
        op,
    };
    let payload = serde_json::to_vec(&request).unwrap();
    rpc_raw(nats, payload).await
}

pub async fn rpc_raw(nats: &async_nats::Client, payload: Vec<u8>) -> Value {
    let reply = nats
        .request(subjects::RPC, payload.into())
        .await
        .expect("the request service answers");
    serde_json::from_slice(&reply.payload).unwrap()
}

/// The error code of a failed reply; panics on success.
pub fn error_code(reply: &Value) -> &str {
    assert_eq!(reply["ok"], false, "expected an error: {reply}");
    reply["error"]["code"].as_str().unwrap()
}

/// The direct conv of `a` and `b`, opened by `a`.
pub async fn open_dm(nats: &async_nats::Client, a: &str, b: &str) -> String {
    ok(rpc(nats, Some(a), dm_open_op(b)).await)["conv"]
        .as_str()
        .expect("dm.open names its conv")
        .to_string()
}

/// Asserts success and returns the reply.
pub fn ok(reply: Value) -> Value {
    assert_eq!(reply["ok"], true, "expected success: {reply}");
    reply
}

pub fn send_op(conv: &str, client_msg_id: &str, body: &str) -> Op {
    Op::Send {
        conv: conv.into(),
        client_msg_id: client_msg_id.into(),
        body: body.into(),
    }
}

pub fn dm_open_op(other: &str) -> Op {
    Op::DmOpen {
        user_id: other.into(),
    }
}

/// A TCP proxy in front of a store that can misbehave on inserts.
///
/// After [`StoreProxy::cut_next_insert`], the next connection that carries
/// an `insert` gets it through to the store, but the store's answer is
/// dropped and the connection closed, and every new connection is refused
/// until [`StoreProxy::heal`]: the client cannot tell whether the insert
/// was stored, and cannot ask. After [`StoreProxy::hold_inserts`], inserts
/// wait in the proxy until [`StoreProxy::heal`]: a stalled store.
pub struct StoreProxy {
    pub port: u16,
    mode: std::sync::Arc<std::sync::atomic::AtomicU8>,
    task: JoinHandle<()>,
}

const PASS: u8 = 0;
const CUT_NEXT_INSERT: u8 = 1;
const REFUSE: u8 = 2;
const HOLD_INSERTS: u8 = 3;

impl StoreProxy {
    pub async fn start(target_port: u16) -> StoreProxy {
        use std::sync::atomic::{AtomicU8, Ordering};
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let mode = std::sync::Arc::new(AtomicU8::new(PASS));
        let shared = mode.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if shared.load(Ordering::SeqCst) == REFUSE {
                    continue; // dropped: closed at once
                }
                let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", target_port)).await
                else {
                    continue;
                };
                tokio::spawn(proxy_pipe(client, server, shared.clone()));
            }
        });
        StoreProxy { port, mode, task }
    }

    pub fn cut_next_insert(&self) {
        self.mode
            .store(CUT_NEXT_INSERT, std::sync::atomic::Ordering::SeqCst);
    }

    /// The configuration of a backend on `stack` whose MongoDB is reached
    /// through this proxy.
    pub fn config(&self, stack: &Stack) -> Config {
        let direct = config(stack);
        Config {
            mongo_url: direct.mongo_url.replace(
                &format!(":{}/", stack.mongo.port()),
                &format!(":{}/", self.port),
            ),
            ..direct
        }
    }

    pub fn hold_inserts(&self) {
        self.mode
            .store(HOLD_INSERTS, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn heal(&self) {
        self.mode.store(PASS, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for StoreProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn proxy_pipe(
    client: tokio::net::TcpStream,
    server: tokio::net::TcpStream,
    mode: std::sync::Arc<std::sync::atomic::AtomicU8>,
) {
    use std::sync::atomic::{AtomicBool, Ordering};
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let (mut client_in, mut client_out) = client.into_split();
    let (mut server_in, mut server_out) = server.into_split();
    let carried_insert = AtomicBool::new(false);
    let up = async {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = client_in.read(&mut buf).await.unwrap_or(0);
            if n == 0 {
                return;
            }
            // The command name is a BSON key, in plain bytes.
            let insert = buf[..n].windows(7).any(|w| w == b"insert\0");
            if insert && mode.load(Ordering::SeqCst) == CUT_NEXT_INSERT {
                carried_insert.store(true, Ordering::SeqCst);
            }
            while insert && mode.load(Ordering::SeqCst) == HOLD_INSERTS {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            if server_out.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    };
    let down = async {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = server_in.read(&mut buf).await.unwrap_or(0);
            if n == 0 {
                return;
            }
            if carried_insert.load(Ordering::SeqCst) {
                // The store answered the insert: drop the answer, close.
                mode.store(REFUSE, Ordering::SeqCst);
                return;
            }
            if client_out.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    };
    tokio::select! {
        () = up => {}
        () = down => {}
    }
}
