//! The HTTP API of PROTOCOL.md section 1.
//!
//! A non-success status becomes [`ApiError::Status`], which keeps the
//! status, the raw body and the parsed `{"error": {...}}` (when the body is
//! one), so a caller can check all three.

use std::time::Duration;

use oceanchat_protocol::client::{ErrorBody, ErrorCode};
use oceanchat_protocol::http::{
    ErrorResponse, LoginRequest, LoginResponse, RegisterRequest, RegisterResponse,
};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// How long one HTTP call may take. Register and login hash a password,
/// which is slow on purpose, so this is generous.
const HTTP_TIMEOUT: Duration = Duration::from_secs(30);

/// Everything that can go wrong calling the HTTP API.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The server answered with a status other than the expected one.
    #[error("{method} {url}: HTTP {status}: {body}")]
    Status {
        method: &'static str,
        url: String,
        status: u16,
        /// The body as sent.
        body: String,
        /// The body's `error`, when it is `{"error": {...}}` (boxed: it is large).
        error: Option<Box<ErrorBody>>,
    },
    /// No answer (connection refused, timeout, ...).
    #[error("{method} {url} failed: {source}")]
    Transport {
        method: &'static str,
        url: String,
        #[source]
        source: reqwest::Error,
    },
    /// A success status whose body is not what the endpoint returns.
    #[error("{method} {url}: unexpected body {body:?}: {reason}")]
    Decode {
        method: &'static str,
        url: String,
        body: String,
        reason: String,
    },
}

impl ApiError {
    /// The HTTP status, when the server answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            ApiError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The error code from the body, when it had one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ApiError::Status {
                error: Some(error), ..
            } => Some(error.code),
            _ => None,
        }
    }
}

/// A response taken as is: for requests the typed methods cannot make
/// (malformed bodies) and for checking a body's exact shape.
#[derive(Debug, Clone)]
pub struct RawResponse {
    pub status: u16,
    pub content_type: Option<String>,
    pub body: String,
}

impl RawResponse {
    /// The body as JSON, if it is JSON.
    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_str(&self.body).ok()
    }
}

/// A client of one backend's HTTP API.
#[derive(Debug, Clone)]
pub struct HttpApi {
    base_url: String,
    http: reqwest::Client,
}

impl HttpApi {
    /// `base_url` is e.g. `http://127.0.0.1:8080` (no trailing slash needed).
    pub fn new(base_url: &str) -> HttpApi {
        HttpApi::build(base_url, reqwest::Client::builder())
    }

    /// Like [`HttpApi::new`], with every request sent from the source
    /// address `local` (e.g. `127.0.0.2`): a client of its own behind a
    /// proxy that names client addresses.
    pub fn with_local_address(base_url: &str, local: std::net::IpAddr) -> HttpApi {
        HttpApi::build(base_url, reqwest::Client::builder().local_address(local))
    }

    fn build(base_url: &str, builder: reqwest::ClientBuilder) -> HttpApi {
        let http = builder
            .timeout(HTTP_TIMEOUT)
            .build()
            .expect("a plain HTTP client always builds");
        HttpApi {
            base_url: base_url.trim_end_matches('/').to_string(),
            http,
        }
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// `POST /v1/auth/register`; expects 201.
    pub async fn register(
        &self,
        username: &str,
        password: &str,
        display_name: Option<&str>,
    ) -> Result<RegisterResponse, ApiError> {
        let body = RegisterRequest {
            username: username.into(),
            password: password.into(),
            display_name: display_name.map(Into::into),
        };
        self.post_json("/v1/auth/register", &body, 201).await
    }

    /// `POST /v1/auth/login`; expects 200.
    pub async fn login(&self, username: &str, password: &str) -> Result<LoginResponse, ApiError> {
        self.login_as(username, password, None).await
    }

    /// `POST /v1/auth/login` naming the device the session is for.
    pub async fn login_with_device(
        &self,
        username: &str,
        password: &str,
        device: &str,
    ) -> Result<LoginResponse, ApiError> {
        self.login_as(username, password, Some(device)).await
    }

    async fn login_as(
        &self,
        username: &str,
        password: &str,
        device: Option<&str>,
    ) -> Result<LoginResponse, ApiError> {
        let body = LoginRequest {
            username: username.into(),
            password: password.into(),
            device: device.map(Into::into),
        };
        self.post_json("/v1/auth/login", &body, 200).await
    }

    /// `POST /v1/auth/logout` with the session's token; expects 204.
    pub async fn logout(&self, token: &str) -> Result<(), ApiError> {
        let url = self.url("/v1/auth/logout");
        let sent = self.http.post(&url).bearer_auth(token).send().await;
        let raw = read(sent, "POST", &url).await?;
        expect_status(raw, 204, "POST", &url).map(drop)
    }

    /// `GET /healthz`: the status.
    pub async fn healthz(&self) -> Result<u16, ApiError> {
        self.get_raw("/healthz").await.map(|raw| raw.status)
    }

    /// `GET /readyz`: the status (200 ready, 503 a dependency is down).
    pub async fn readyz(&self) -> Result<u16, ApiError> {
        self.get_raw("/readyz").await.map(|raw| raw.status)
    }

    /// `POST path` with `body` sent as is, with `Content-Type:
    /// application/json`; any status is returned, not turned into an error.
    pub async fn post_raw(&self, path: &str, body: &str) -> Result<RawResponse, ApiError> {
        let url = self.url(path);
        let sent = self
            .http
            .post(&url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_string())
            .send()
            .await;
        read(sent, "POST", &url).await
    }

    /// `GET path`; any status is returned, not turned into an error.
    pub async fn get_raw(&self, path: &str) -> Result<RawResponse, ApiError> {
        let url = self.url(path);
        let sent = self.http.get(&url).send().await;
        read(sent, "GET", &url).await
    }

    async fn post_json<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
        expected: u16,
    ) -> Result<T, ApiError> {
        let url = self.url(path);
        let sent = self.http.post(&url).json(body).send().await;
        let raw = expect_status(read(sent, "POST", &url).await?, expected, "POST", &url)?;
        serde_json::from_str(&raw.body).map_err(|e| ApiError::Decode {
            method: "POST",
            url,
            body: raw.body,
            reason: e.to_string(),
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base_url, path)
    }
}

async fn read(
    sent: Result<reqwest::Response, reqwest::Error>,
    method: &'static str,
    url: &str,
) -> Result<RawResponse, ApiError> {
    let transport = |source| ApiError::Transport {
        method,
        url: url.to_string(),
        source,
    };
    let response = sent.map_err(transport)?;
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = response.text().await.map_err(transport)?;
    Ok(RawResponse {
        status,
        content_type,
        body,
    })
}

fn expect_status(
    raw: RawResponse,
    expected: u16,
    method: &'static str,
    url: &str,
) -> Result<RawResponse, ApiError> {
    if raw.status == expected {
        return Ok(raw);
    }
    let error = serde_json::from_str::<ErrorResponse>(&raw.body)
        .ok()
        .map(|e| Box::new(e.error));
    Err(ApiError::Status {
        method,
        url: url.to_string(),
        status: raw.status,
        body: raw.body,
        error,
    })
}
