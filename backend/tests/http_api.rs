//! The HTTP API of PROTOCOL.md section 1 against real stores.

mod common;

use std::time::Duration;

use common::{config, login, register, username, Running};
use futures::StreamExt as _;
use oceanchat_backend::Config;
use oceanchat_protocol::internal::{decode_gateway_message, subjects, GatewayCommand};
use oceanchat_testkit::Stack;
use serde_json::{json, Value};

async fn post(http: &str, path: &str, body: Value) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(format!("{http}{path}"))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body)
}

fn error_of(body: &Value) -> (&str, &str) {
    (
        body["error"]["code"].as_str().expect("error.code"),
        body["error"]["message"].as_str().expect("error.message"),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn register_then_a_taken_username_is_409() {
    let stack = Stack::start();
    let backend = Running::start(config(&stack)).await;
    let name = username("alice");
    let (status, body) = post(
        &backend.http,
        "/v1/auth/register",
        json!({"username": name, "password": "password1", "display_name": "Alice"}),
    )
    .await;
    assert_eq!(status, 201);
    assert!(!body["user_id"].as_str().unwrap().is_empty());

    let (status, body) = post(
        &backend.http,
        "/v1/auth/register",
        json!({"username": name, "password": "password2"}),
    )
    .await;
    assert_eq!(status, 409);
    assert_eq!(error_of(&body).0, "username_taken");
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_registrations_of_one_name_give_one_user() {
    let stack = Stack::start();
    let backend = Running::start(config(&stack)).await;
    let name = username("race");
    let attempts = (0..8).map(|_| {
        post(
            &backend.http,
            "/v1/auth/register",
            json!({"username": name, "password": "password1"}),
        )
    });
    let statuses: Vec<u16> = futures::future::join_all(attempts)
        .await
        .into_iter()
        .map(|(status, _)| status)
        .collect();
    assert_eq!(
        statuses.iter().filter(|&&s| s == 201).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|&&s| s == 409).count(),
        7,
        "{statuses:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_is_400_in_the_error_shape() {
    let stack = Stack::start();
    let backend = Running::start(config(&stack)).await;
    let http = &backend.http;
    let client = reqwest::Client::new();

    for body in [
        json!({"username": "ab", "password": "password1"}),
        json!({"username": "Upper", "password": "password1"}),
        json!({"username": "fine_name", "password": "short"}),
        json!({"username": "fine_name"}),
        json!({"username": "fine_name", "password": "password1", "display_name": "x".repeat(65)}),
        json!([1, 2]),
    ] {
        let (status, reply) = post(http, "/v1/auth/register", body.clone()).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(error_of(&reply).0, "bad_request", "{body}");
    }

    // Malformed JSON, and JSON without the JSON content type.
    for (content_type, body) in [
        ("application/json", "{not json"),
        (
            "text/plain",
            r#"{"username":"fine_name","password":"password1"}"#,
        ),
    ] {
        let response = client
            .post(format!("{http}/v1/auth/login"))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{content_type} {body}");
        let reply: Value = response.json().await.unwrap();
        assert_eq!(error_of(&reply).0, "bad_request");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn login_gives_a_session_and_bad_credentials_say_nothing_more() {
    let stack = Stack::start();
    let backend = Running::start(config(&stack)).await;
    let name = username("bob");
    let user_id = register(&backend.http, &name, "password1").await;

    let session = login(&backend.http, &name, "password1").await;
    assert_eq!(session.user_id, user_id);
    assert_eq!(session.token.len(), 43, "32 bytes in unpadded base64url");
    let week_ms = 7 * 24 * 3600 * 1000;
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    assert!(session.expires_at.abs_diff(now_ms + week_ms) < 60_000);

    let (status, wrong_password) = post(
        &backend.http,
        "/v1/auth/login",
        json!({"username": name, "password": "password2"}),
    )
    .await;
    assert_eq!(status, 401);
    let (status, unknown_user) = post(
        &backend.http,
        "/v1/auth/login",
        json!({"username": username("nobody"), "password": "password1"}),
    )
    .await;
    assert_eq!(status, 401);
    assert_eq!(error_of(&wrong_password).0, "bad_credentials");
    assert_eq!(wrong_password, unknown_user);
}

#[tokio::test(flavor = "multi_thread")]
async fn logout_ends_the_session_and_closes_its_sockets() {
    let stack = Stack::start();
    let backend = Running::start(config(&stack)).await;
    let name = username("carol");
    register(&backend.http, &name, "password1").await;
    let session = login(&backend.http, &name, "password1").await;

    let watcher = async_nats::connect(stack.nats.url()).await.unwrap();
    let mut commands = watcher.subscribe(subjects::ALL_GATEWAYS).await.unwrap();
    watcher.flush().await.unwrap();

    let client = reqwest::Client::new();
    let logout = |token: String| {
        client
            .post(format!("{}/v1/auth/logout", backend.http))
            .bearer_auth(token)
            .send()
    };
    let response = logout(session.token.clone()).await.unwrap();
    assert_eq!(response.status(), 204);

    let message = tokio::time::timeout(Duration::from_secs(5), commands.next())
        .await
        .expect("a command to the gateways")
        .unwrap();
    let (command, frame) = decode_gateway_message(&message.payload).unwrap();
    assert_eq!(
        command,
        GatewayCommand::CloseSession {
            user_id: session.user_id.clone(),
            session_id: session.session_id.clone(),
            code: 4001
        }
    );
    assert!(frame.is_empty());

    // The token is dead now, for logout and for auth alike.
    let response = logout(session.token.clone()).await.unwrap();
    assert_eq!(response.status(), 401);
    let reply: Value = response.json().await.unwrap();
    assert_eq!(error_of(&reply).0, "unauthenticated");
    let reply = common::rpc(
        &backend.state.nats,
        None,
        oceanchat_protocol::client::Op::Auth {
            token: session.token,
        },
    )
    .await;
    assert_eq!(common::error_code(&reply), "unauthenticated");

    let response = client
        .post(format!("{}/v1/auth/logout", backend.http))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
}

#[tokio::test(flavor = "multi_thread")]
async fn readyz_names_the_store_that_does_not_answer() {
    let mut stack = Stack::start();
    let backend = Running::start(config(&stack)).await;
    let get = |path: &'static str| {
        let url = format!("{}{path}", backend.http);
        async move { reqwest::get(url).await.unwrap() }
    };
    assert_eq!(get("/healthz").await.status(), 200);
    assert_eq!(get("/readyz").await.status(), 200);

    tokio::task::block_in_place(|| stack.redis.stop());
    let response = get("/readyz").await;
    assert_eq!(response.status(), 503);
    let reply: Value = response.json().await.unwrap();
    let (code, message) = error_of(&reply);
    assert_eq!(code, "unavailable");
    assert!(message.contains("redis"), "{message}");
    assert!(
        !message.contains("mongodb") && !message.contains("nats"),
        "{message}"
    );
    assert_eq!(get("/healthz").await.status(), 200);

    tokio::task::block_in_place(|| stack.redis.restart());
    let mut ready = false;
    for _ in 0..50 {
        if get("/readyz").await.status() == 200 {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ready, "readyz recovers once redis is back");
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_need_the_metrics_token_once_one_is_set() {
    let stack = Stack::start();
    let backend = Running::start(Config {
        metrics_token: Some("scrape-me".into()),
        ..config(&stack)
    })
    .await;
    let client = reqwest::Client::new();
    let url = format!("{}/metrics", backend.http);
    let bare = client.get(&url).send().await.unwrap();
    assert_eq!(bare.status(), 401);
    let wrong = client.get(&url).bearer_auth("guess").send().await.unwrap();
    assert_eq!(wrong.status(), 401);
    let right = client
        .get(&url)
        .bearer_auth("scrape-me")
        .send()
        .await
        .unwrap();
    assert_eq!(right.status(), 200);
    let text = right.text().await.unwrap();
    assert!(
        text.contains("# TYPE oc_backend_store_write_seconds histogram"),
        "{text}"
    );
}
