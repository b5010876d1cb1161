//! The HTTP API of PROTOCOL.md section 1 (register, login and logout live
//! in [`crate::auth`], the operator's stats in [`crate::stats`]), the
//! health checks, and the web client's files ([`web`]); what the handlers
//! share is in [`extract`].

use std::time::Duration;

pub mod extract;
pub mod web;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;

use oceanchat_protocol::ErrorCode;

pub use extract::MAX_REQUEST_BODY_BYTES;
use extract::{bearer_token, same_secret};

use crate::auth::{login, logout, register};
use crate::error::ServiceError;
use crate::state::AppState;

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
        .route("/metrics", get(metrics))
        .route("/v1/admin/stats", get(crate::stats::get_stats))
        .merge(web::routes())
        .layer(DefaultBodyLimit::max(MAX_REQUEST_BODY_BYTES))
        .layer(axum::middleware::map_response(close_after_unread_body))
        .with_state(state)
}

/// A 413 is sent without reading the body, so the connection cannot
/// carry another request: say so, or a client's pool reuses it and its
/// next request fails.
async fn close_after_unread_body(mut response: Response) -> Response {
    if response.status() == StatusCode::PAYLOAD_TOO_LARGE {
        response.headers_mut().insert(
            header::CONNECTION,
            header::HeaderValue::from_static("close"),
        );
    }
    response
}

/// `GET /metrics`; with `--metrics-token`, only for its bearer.
async fn metrics(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(expected) = state.config.metrics_token.as_deref() {
        if !bearer_token(&headers).is_some_and(|token| same_secret(token, expected)) {
            return StatusCode::UNAUTHORIZED.into_response();
        }
    }
    crate::metrics::render().into_response()
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
