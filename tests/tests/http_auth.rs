//! The HTTP API: register, login and their errors (PROTOCOL.md section 1).

use std::time::{SystemTime, UNIX_EPOCH};

use oceanchat_protocol::client::ErrorCode;
use oceanchat_tests::{assert_error_body, unique_username, World, PASSWORD};

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

#[tokio::test]
async fn register_then_login_returns_a_session() {
    let world = World::with(1, 0);
    let name = unique_username("reg");

    let raw = world
        .api
        .post_raw(
            "/v1/auth/register",
            &format!(r#"{{"username":"{name}","password":"{PASSWORD}","display_name":"Reg"}}"#),
        )
        .await
        .unwrap();
    assert_eq!(raw.status, 201, "{raw:?}");
    let user_id = raw.json().unwrap()["user_id"].as_str().unwrap().to_string();
    assert!(!user_id.is_empty());

    let login = world.api.login(&name, PASSWORD).await.unwrap();
    assert_eq!(login.user_id, user_id);
    assert!(!login.token.is_empty());
    assert!(!login.session_id.is_empty());
    assert!(login.expires_at > now_ms(), "expires_at is in the future");

    // A second login is a second session.
    let again = world.api.login(&name, PASSWORD).await.unwrap();
    assert_eq!(again.user_id, user_id);
    assert_ne!(again.session_id, login.session_id);
    assert_ne!(again.token, login.token);
}

#[tokio::test]
async fn register_with_a_taken_username_is_409_username_taken() {
    let world = World::with(1, 0);
    let name = unique_username("taken");
    world.api.register(&name, PASSWORD, None).await.unwrap();

    let err = world
        .api
        .register(&name, "another-password", None)
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(409), "{err}");
    assert_eq!(err.code(), Some(ErrorCode::UsernameTaken), "{err}");

    let raw = world
        .api
        .post_raw(
            "/v1/auth/register",
            &format!(r#"{{"username":"{name}","password":"{PASSWORD}"}}"#),
        )
        .await
        .unwrap();
    assert_error_body(&raw, 409, "username_taken");
}

#[tokio::test]
async fn login_with_a_bad_password_or_unknown_user_is_401_bad_credentials() {
    let world = World::with(1, 0);
    let name = unique_username("login");
    world.api.register(&name, PASSWORD, None).await.unwrap();

    let err = world.api.login(&name, "wrong-password").await.unwrap_err();
    assert_eq!(err.status(), Some(401), "{err}");
    assert_eq!(err.code(), Some(ErrorCode::BadCredentials), "{err}");

    // An unknown user gets the same answer, so logins reveal no usernames.
    let raw = world
        .api
        .post_raw(
            "/v1/auth/login",
            &format!(
                r#"{{"username":"{}","password":"{PASSWORD}"}}"#,
                unique_username("nobody")
            ),
        )
        .await
        .unwrap();
    assert_error_body(&raw, 401, "bad_credentials");
}

#[tokio::test]
async fn malformed_auth_bodies_are_400_bad_request() {
    let world = World::with(1, 0);
    let cases = [
        ("/v1/auth/register", "not json".to_string()),
        ("/v1/auth/register", "[]".to_string()),
        (
            "/v1/auth/register",
            format!(r#"{{"password":"{PASSWORD}"}}"#),
        ),
        ("/v1/auth/register", r#"{"username":"someone"}"#.to_string()),
        // Invalid usernames: upper case, too short, too long, bad character.
        (
            "/v1/auth/register",
            format!(r#"{{"username":"Alice","password":"{PASSWORD}"}}"#),
        ),
        (
            "/v1/auth/register",
            format!(r#"{{"username":"ab","password":"{PASSWORD}"}}"#),
        ),
        (
            "/v1/auth/register",
            format!(
                r#"{{"username":"{}","password":"{PASSWORD}"}}"#,
                "a".repeat(33)
            ),
        ),
        (
            "/v1/auth/register",
            format!(r#"{{"username":"a b c","password":"{PASSWORD}"}}"#),
        ),
        // A password under 8 bytes.
        (
            "/v1/auth/register",
            r#"{"username":"shortpw","password":"1234567"}"#.to_string(),
        ),
        ("/v1/auth/login", "not json".to_string()),
        ("/v1/auth/login", r#"{"username":"someone"}"#.to_string()),
    ];
    for (path, body) in cases {
        let raw = world.api.post_raw(path, &body).await.unwrap();
        assert_eq!(raw.status, 400, "POST {path} {body} gave {raw:?}");
        assert_error_body(&raw, 400, "bad_request");
    }
}

#[tokio::test]
async fn an_oversized_body_is_413_too_large_and_the_api_carries_on() {
    let world = World::with(1, 0);
    let name = unique_username("big");
    let padding = "x".repeat(64 * 1024);
    let raw = world
        .api
        .post_raw(
            "/v1/auth/register",
            &format!(
                r#"{{"username":"{name}","password":"{PASSWORD}","display_name":"{padding}"}}"#
            ),
        )
        .await
        .unwrap();
    assert_error_body(&raw, 413, "too_large");
    // Nothing was stored, and the next request is served as usual.
    world.api.register(&name, PASSWORD, None).await.unwrap();
}
