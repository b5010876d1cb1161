//! Accounts and logins: the register, login and logout handlers of the
//! HTTP API, password hashing ([`passwords`]), guess throttling
//! ([`throttle`]) and login sessions in Redis ([`sessions`]).

pub mod passwords;
pub mod sessions;
pub mod throttle;

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use mongodb::bson::DateTime;

use oceanchat_protocol::client::CloseCode;
use oceanchat_protocol::http::{LoginRequest, LoginResponse, RegisterRequest, RegisterResponse};
use oceanchat_protocol::internal::{encode_gateway_message, subjects, GatewayCommand};
use oceanchat_protocol::{limits, ErrorCode};

use crate::clock::now_ms;
use crate::delivery;
use crate::error::ServiceError;
use crate::http::extract::{bearer_token, ApiJson};
use crate::state::AppState;
use crate::store::{is_duplicate_key, new_id, UserDoc};
use passwords::{dummy_hash, hash_password, off_the_runtime, verify_password, Pool};
use sessions::SessionRecord;

/// The longest `device` name a login may give.
pub const MAX_DEVICE_CHARS: usize = 64;

pub(crate) async fn register(
    State(mut state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<RegisterRequest>,
) -> Result<(StatusCode, Json<RegisterResponse>), ServiceError> {
    if !limits::valid_username(&req.username) {
        return Err(ServiceError::bad_request(
            "username must be 3 to 32 characters of a-z 0-9 _ . -",
        ));
    }
    if !limits::valid_password(&req.password) {
        return Err(ServiceError::bad_request("password must be 8 to 256 bytes"));
    }
    let display_name = req.display_name.unwrap_or_else(|| req.username.clone());
    if display_name.chars().count() > limits::MAX_DISPLAY_NAME_CHARS {
        return Err(ServiceError::bad_request(format!(
            "display_name must be at most {} characters",
            limits::MAX_DISPLAY_NAME_CHARS
        )));
    }

    let ip = throttle::client_ip(peer, &headers, &state.config.throttle());
    throttle::check_registration(&mut state.redis, &state.config.throttle(), ip).await?;

    let password = req.password;
    let password_hash = off_the_runtime(Pool::Other, move || hash_password(&password)).await??;
    let user = UserDoc {
        id: new_id(),
        username: req.username,
        password_hash,
        display_name,
        created_at: DateTime::now(),
        groups_from: Default::default(),
    };
    // The unique index decides who gets a name, so two concurrent
    // registrations cannot both succeed.
    match state.store.insert_user(&user).await {
        Ok(_) => {}
        Err(e) if is_duplicate_key(&e) => {
            return Err(ServiceError::refused(
                ErrorCode::UsernameTaken,
                "username is taken",
            ))
        }
        Err(e) => return Err(e.into()),
    }
    tracing::info!(user_id = %user.id, username = %user.username, "user registered");
    Ok((
        StatusCode::CREATED,
        Json(RegisterResponse { user_id: user.id }),
    ))
}

pub(crate) async fn login(
    State(mut state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<LoginRequest>,
) -> Result<Json<LoginResponse>, ServiceError> {
    if let Some(device) = &req.device {
        if device.chars().count() > MAX_DEVICE_CHARS {
            return Err(ServiceError::bad_request(format!(
                "device must be at most {MAX_DEVICE_CHARS} characters"
            )));
        }
    }
    let limits = state.config.throttle();
    let ip = throttle::client_ip(peer, &headers, &limits);
    let failures = throttle::check_login(&mut state.redis, &limits, &req.username, ip).await?;
    let user = state.store.user_by_username(&req.username).await?;
    // An unknown user costs a hash check too, so that the answer's timing
    // does not tell which usernames exist.
    let stored_hash = user
        .as_ref()
        .map(|u| u.password_hash.clone())
        .unwrap_or_else(|| dummy_hash().to_string());
    let pool = if user.is_some() && failures == 0 {
        Pool::KnownUser
    } else {
        Pool::Other
    };
    let password = req.password;
    let matches = off_the_runtime(pool, move || verify_password(&password, &stored_hash)).await?;
    let user = match user {
        Some(user) if matches => user,
        _ => {
            throttle::login_failed(&mut state.redis, &limits, &req.username, ip).await?;
            return Err(ServiceError::refused(
                ErrorCode::BadCredentials,
                "wrong username or password",
            ));
        }
    };
    if failures > 0 {
        throttle::login_succeeded(&mut state.redis, &req.username).await?;
    }

    let token = sessions::new_token();
    let ttl_s = state.config.session_ttl_s;
    let record = SessionRecord {
        user_id: user.id.clone(),
        session_id: new_id(),
        device: req.device,
        expires_at: now_ms() + ttl_s * 1000,
    };
    let max_sessions = state.config.max_sessions_per_user;
    let evicted = sessions::create(&mut state.redis, &token, &record, ttl_s, max_sessions).await?;
    for old in &evicted {
        tracing::info!(user_id = %old.user_id, session_id = %old.session_id, "oldest session ended: too many sessions");
        close_session_sockets(&state, &old.user_id, &old.session_id).await?;
    }
    tracing::info!(user_id = %record.user_id, session_id = %record.session_id, "logged in");
    Ok(Json(LoginResponse {
        token,
        user_id: record.user_id,
        session_id: record.session_id,
        expires_at: record.expires_at,
    }))
}

pub(crate) async fn logout(
    State(mut state): State<AppState>,
    headers: HeaderMap,
) -> Result<StatusCode, ServiceError> {
    let token = bearer_token(&headers).ok_or_else(ServiceError::unauthenticated)?;
    let record = sessions::remove(&mut state.redis, token)
        .await?
        .ok_or_else(ServiceError::unauthenticated)?;
    // The key is gone first, so no socket can authenticate with the token
    // after the gateways have closed the session's sockets.
    close_session_sockets(&state, &record.user_id, &record.session_id).await?;
    tracing::info!(user_id = %record.user_id, session_id = %record.session_id, "logged out");
    Ok(StatusCode::NO_CONTENT)
}

/// Tells every gateway to close the sockets of a session that ended, with
/// 4001. Retried a few times: the session is already gone from Redis, so a
/// lost command would leave its sockets open until they reconnect.
async fn close_session_sockets(
    state: &AppState,
    user_id: &str,
    session_id: &str,
) -> Result<(), ServiceError> {
    let command = GatewayCommand::CloseSession {
        user_id: user_id.to_string(),
        session_id: session_id.to_string(),
        code: CloseCode::UNAUTHENTICATED,
    };
    let message = encode_gateway_message(&command, b"");
    let mut pause = std::time::Duration::from_millis(100);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let sent = delivery::publish(state, subjects::ALL_GATEWAYS.into(), None, message.clone())
            .await
            .map_err(|e| e.to_string());
        let flushed = match sent {
            Ok(()) => {
                match tokio::time::timeout(delivery::PUBLISH_TIMEOUT, state.nats.flush()).await {
                    Ok(flushed) => flushed.map_err(|e| e.to_string()),
                    Err(_) => Err("flush timed out".to_string()),
                }
            }
            Err(e) => Err(e),
        };
        match flushed {
            Ok(()) => return Ok(()),
            Err(error) if attempt >= 3 => {
                tracing::error!(%error, session_id, "could not tell the gateways to close a session's sockets");
                return Err(ServiceError::Unavailable {
                    store: "nats",
                    detail: error,
                });
            }
            Err(error) => {
                tracing::warn!(%error, session_id, attempt, "closing a session's sockets failed; retrying");
                tokio::time::sleep(pause).await;
                pause *= 2;
            }
        }
    }
}
