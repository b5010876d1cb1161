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
