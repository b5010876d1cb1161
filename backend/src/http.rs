//! The HTTP API of PROTOCOL.md section 1 (register, login and logout live
//! in [`crate::auth`]), the health checks, and how errors become HTTP
//! answers.

use std::time::Duration;

use axum::extract::{DefaultBodyLimit, FromRequest, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;

use oceanchat_protocol::http::ErrorResponse;
use oceanchat_protocol::ErrorCode;

use crate::auth::{login, logout, register};
use crate::error::ServiceError;
use crate::state::AppState;

/// The largest HTTP request body accepted: register and login bodies
/// are well under 1 KiB (a 256-byte password, names of 32 and 64
/// characters). Larger ones get 413 `too_large` before they are read.
pub const MAX_REQUEST_BODY_BYTES: usize = 16 * 1024;

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
        .route("/v1/admin/stats", get(crate::stats::get_stats))
        .merge(crate::web::routes())
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
pub(crate) struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ServiceError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(value)) => Ok(ApiJson(value)),
            // A body over the limit stays a 413, in the API's shape.
            Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                Err(ServiceError::refused(
                    ErrorCode::TooLarge,
                    format!("request body over {MAX_REQUEST_BODY_BYTES} bytes"),
                ))
            }
            Err(rejection) => Err(ServiceError::bad_request(rejection.body_text())),
        }
    }
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
pub(crate) fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
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
}
