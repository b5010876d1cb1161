//! What the HTTP handlers share: the JSON body extractor, the bearer
//! token, and how a [`ServiceError`] becomes an HTTP answer in the API's
//! error shape.

use axum::extract::{FromRequest, Request};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::de::DeserializeOwned;

use oceanchat_protocol::http::ErrorResponse;
use oceanchat_protocol::ErrorCode;

use crate::error::ServiceError;

/// The largest HTTP request body accepted: register and login bodies
/// are well under 1 KiB (a 256-byte password, names of 32 and 64
/// characters). Larger ones get 413 `too_large` before they are read.
pub const MAX_REQUEST_BODY_BYTES: usize = 16 * 1024;

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

/// The token of an `Authorization: Bearer <token>` header.
pub(crate) fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Compares without stopping at the first difference.
pub fn same_secret(given: &str, expected: &str) -> bool {
    given.len() == expected.len()
        && given
            .bytes()
            .zip(expected.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
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
