//! The HTTP API of PROTOCOL.md section 1: register, login, logout and the
//! health checks.

use std::sync::OnceLock;
use std::time::Duration;

use argon2::password_hash::{rand_core::OsRng, PasswordHash, PasswordHasher, SaltString};
use argon2::{Argon2, PasswordVerifier};
use axum::extract::{FromRequest, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use mongodb::bson::{doc, DateTime};
use serde::de::DeserializeOwned;

use oceanchat_protocol::client::CloseCode;
use oceanchat_protocol::http::{
    ErrorResponse, LoginRequest, LoginResponse, RegisterRequest, RegisterResponse,
};
use oceanchat_protocol::internal::{encode_gateway_message, subjects, GatewayCommand};
use oceanchat_protocol::{limits, ErrorCode};

use crate::error::ServiceError;
use crate::sessions::{self, SessionRecord};
use crate::state::AppState;
use crate::store::{is_duplicate_key, new_id, UserDoc};

/// How long `/readyz` waits for each store.
const READY_TIMEOUT: Duration = Duration::from_secs(1);

/// The HTTP routes, ready to serve.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/v1/auth/register", post(register))
        .route("/v1/auth/login", post(login))
        .route("/v1/auth/logout", post(logout))
        .route("/healthz", get(|| async { StatusCode::OK }))
        .route("/readyz", get(readyz))
        .merge(crate::web::routes())
        .with_state(state)
}

impl IntoResponse for ServiceError {
    fn into_response(self) -> Response {
        self.log("http");
        let status = StatusCode::from_u16(self.code().http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = ErrorResponse { error: self.body() };
        (status, Json(body)).into_response()
    }
}

/// `axum::Json`, but a body that is not the expected JSON (bad syntax, a
/// missing field, a wrong content type) is a `bad_request` in the API's
/// error shape rather than axum's plain-text rejection.
struct ApiJson<T>(T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ServiceError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(value)) => Ok(ApiJson(value)),
            Err(rejection) => Err(ServiceError::bad_request(rejection.body_text())),
        }
    }
}

async fn register(
    State(state): State<AppState>,
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

    let password = req.password;
    let password_hash = off_the_runtime(move || hash_password(&password)).await??;
    let user = UserDoc {
        id: new_id(),
        username: req.username,
        password_hash,
        display_name,
        created_at: DateTime::now(),
    };
    // The unique index decides who gets a name, so two concurrent
    // registrations cannot both succeed.
    match state.store.users.insert_one(&user).await {
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

async fn login(
    State(mut state): State<AppState>,
    ApiJson(req): ApiJson<LoginRequest>,
) -> Result<Json<LoginResponse>, ServiceError> {
    let user = state
        .store
        .users
        .find_one(doc! {"username": &req.username})
        .await?;
    // An unknown user costs a hash check too, so that the answer's timing
    // does not tell which usernames exist.
    let stored_hash = user
        .as_ref()
        .map(|u| u.password_hash.clone())
        .unwrap_or_else(|| dummy_hash().to_string());
    let password = req.password;
    let matches = off_the_runtime(move || verify_password(&password, &stored_hash)).await?;
    let user = match user {
        Some(user) if matches => user,
        _ => {
            return Err(ServiceError::refused(
                ErrorCode::BadCredentials,
                "wrong username or password",
            ))
        }
    };

    let token = sessions::new_token();
    let ttl_s = state.config.session_ttl_s;
    let record = SessionRecord {
        user_id: user.id.clone(),
        session_id: new_id(),
        device: req.device,
        expires_at: now_ms() + ttl_s * 1000,
    };
    sessions::create(&mut state.redis, &token, &record, ttl_s).await?;
    tracing::info!(user_id = %record.user_id, session_id = %record.session_id, "logged in");
    Ok(Json(LoginResponse {
        token,
        user_id: record.user_id,
        session_id: record.session_id,
        expires_at: record.expires_at,
    }))
}

async fn logout(
    State(mut state): State<AppState>,
    headers: HeaderMap,
) -> Result<StatusCode, ServiceError> {
    let token = bearer_token(&headers).ok_or_else(ServiceError::unauthenticated)?;
    let record = sessions::remove(&mut state.redis, token)
        .await?
        .ok_or_else(ServiceError::unauthenticated)?;
    // The key is gone first, so no socket can authenticate with the token
    // after the gateways have closed the session's sockets.
    let command = GatewayCommand::CloseSession {
        session_id: record.session_id.clone(),
        code: CloseCode::UNAUTHENTICATED,
    };
    state
        .nats
        .publish(
            subjects::ALL_GATEWAYS,
            encode_gateway_message(&command, b""),
        )
        .await?;
    tracing::info!(user_id = %record.user_id, session_id = %record.session_id, "logged out");
    Ok(StatusCode::NO_CONTENT)
}

/// 200 while every store answers; otherwise 503 naming those that do not.
async fn readyz(State(state): State<AppState>) -> Result<StatusCode, ServiceError> {
    let mut redis = state.redis.clone();
    let redis_ok = async move {
        redis::cmd("PING")
            .query_async::<String>(&mut redis)
            .await
            .is_ok()
    };
    let nats = state.nats.clone();
    let nats_ok = async move {
        nats.connection_state() == async_nats::connection::State::Connected
            && nats.flush().await.is_ok()
    };
    let store = state.store.clone();
    let mongo_ok = async move { store.ping().await.is_ok() };

    let (redis_ok, nats_ok, mongo_ok) = tokio::join!(
        answers_in_time(redis_ok),
        answers_in_time(nats_ok),
        answers_in_time(mongo_ok)
    );
    let down: Vec<&str> = [
        ("redis", redis_ok),
        ("nats", nats_ok),
        ("mongodb", mongo_ok),
    ]
    .into_iter()
    .filter(|(_, ok)| !ok)
    .map(|(name, _)| name)
    .collect();
    if down.is_empty() {
        Ok(StatusCode::OK)
    } else {
        Err(ServiceError::refused(
            ErrorCode::Unavailable,
            format!("not answering: {}", down.join(", ")),
        ))
    }
}

async fn answers_in_time(check: impl std::future::Future<Output = bool>) -> bool {
    tokio::time::timeout(READY_TIMEOUT, check)
        .await
        .unwrap_or(false)
}

/// The token of an `Authorization: Bearer <token>` header.
fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Runs a password hash or check on a blocking thread, at most one per
/// core at a time. Each takes 19 MiB and tens of milliseconds of a core:
/// running more at once only adds latency, and memory, since every
/// blocking thread keeps the allocator arena it hashed in (a burst of 1,000
/// logins left the process at 1.4 GB before this limit).
async fn off_the_runtime<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, tokio::task::JoinError> {
    static SLOTS: std::sync::OnceLock<tokio::sync::Semaphore> = std::sync::OnceLock::new();
    let slots = SLOTS.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        tokio::sync::Semaphore::new(cores)
    });
    let _slot = slots
        .acquire()
        .await
        .expect("the semaphore is never closed");
    tokio::task::spawn_blocking(work).await
}

/// argon2id with the crate's default parameters, in PHC string form.
fn hash_password(password: &str) -> Result<String, ServiceError> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| ServiceError::Internal(format!("password hashing failed: {e}")))
}

fn verify_password(password: &str, phc: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(hash) => Argon2::default()
            .verify_password(password.as_bytes(), &hash)
            .is_ok(),
        Err(e) => {
            tracing::error!(error = %e, "stored password hash is unreadable");
            false
        }
    }
}

/// A hash of nothing anyone knows, checked against when the user does not
/// exist.
fn dummy_hash() -> &'static str {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| {
        hash_password(&crate::sessions::new_token()).expect("hashing a fresh password works")
    })
}

pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn bearer_tokens() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer_token(&h), None);
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer abc"),
        );
        assert_eq!(bearer_token(&h), Some("abc"));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("bearer  abc "),
        );
        assert_eq!(bearer_token(&h), Some("abc"));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert_eq!(bearer_token(&h), None);
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer "));
        assert_eq!(bearer_token(&h), None);
    }

    #[test]
    fn passwords_hash_and_verify() {
        let hash = hash_password("correct horse").unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(verify_password("correct horse", &hash));
        assert!(!verify_password("wrong horse", &hash));
        assert!(!verify_password("correct horse", "not a hash"));
    }
}
