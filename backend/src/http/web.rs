//! The web client: the files of `web/` (plain ES modules, no build step),
//! compiled into the binary, and `GET /config.json`, which tells the page
//! where the gateway's WebSocket is (`--public-ws-url`).
//!
//! The files are embedded so that a backend binary serves the page that
//! matches its own protocol, with nothing to install beside it; cargo
//! rebuilds the backend when a file under `web/` changes.

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

use crate::state::AppState;

/// One file of the web client.
struct WebFile {
    /// The URL path it is served at.
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

macro_rules! web_files {
    ($($file:literal => $type:expr),* $(,)?) => {
        &[$(WebFile {
            path: concat!("/", $file),
            content_type: $type,
            body: include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/../web/", $file)),
        }),*]
    };
}

const JS: &str = "text/javascript; charset=utf-8";

/// Every file under `web/`; a test checks that none is missing.
const FILES: &[WebFile] = web_files![
    "index.html" => "text/html; charset=utf-8",
    "style.css" => "text/css; charset=utf-8",
    "app.js" => JS,
    "api.js" => JS,
    "protocol.js" => JS,
    "state.js" => JS,
    "names.js" => JS,
    "dom.js" => JS,
    "views/login.js" => JS,
    "views/convlist.js" => JS,
    "views/chat.js" => JS,
    "views/newconv.js" => JS,
    "views/settings.js" => JS,
];

/// What the page reads from `GET /config.json`.
#[derive(Debug, Serialize)]
struct PageConfig<'a> {
    /// Where to open the WebSocket: a `ws(s)://` URL, or a path on the
    /// page's own host.
    ws_url: &'a str,
}

/// The path the page uses when `--public-ws-url` is not set: the `/ws`
/// that nginx in front routes to the gateways.
const SAME_HOST_WS_PATH: &str = "/ws";

/// `GET /` and the client's files, and `GET /config.json`.
pub fn routes() -> Router<AppState> {
    let mut router = Router::new()
        .route(
            "/",
            get(|State(s): State<AppState>| async move { serve(&FILES[0], &s) }),
        )
        .route("/config.json", get(config_json));
    for file in FILES {
        router = router.route(
            file.path,
            get(move |State(s): State<AppState>| async move { serve(file, &s) }),
        );
    }
    router
}

fn serve(file: &'static WebFile, state: &AppState) -> Response {
    let mut response = (StatusCode::OK, file.body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(file.content_type),
    );
    // Revalidate every time: the files are small, and a page and its
    // modules must come from the same build.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if let Ok(csp) = HeaderValue::from_str(&content_security_policy(
        state.config.public_ws_url.as_deref(),
    )) {
        headers.insert(header::CONTENT_SECURITY_POLICY, csp);
    }
    response
}

/// The page may load and connect to nothing but the product itself: its
/// own origin, and the gateway's WebSocket when that is elsewhere.
fn content_security_policy(public_ws_url: Option<&str>) -> String {
    let mut connect = String::from("'self'");
    if let Some(url) = public_ws_url.filter(|u| !u.starts_with('/')) {
        connect.push(' ');
        connect.push_str(url);
    }
    format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
         connect-src {connect}; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )
}

async fn config_json(State(state): State<AppState>) -> Response {
    let ws_url = state
        .config
        .public_ws_url
        .as_deref()
        .unwrap_or(SAME_HOST_WS_PATH);
    let mut response = Json(PageConfig { ws_url }).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// Every file under `web/`, as URL paths.
    fn files_on_disk(dir: &Path, prefix: &str, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let name = entry.file_name().into_string().unwrap();
            if entry.file_type().unwrap().is_dir() {
                files_on_disk(&entry.path(), &format!("{prefix}{name}/"), out);
            } else {
                out.push(format!("{prefix}{name}"));
            }
        }
    }

    #[test]
    fn every_web_file_is_served() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../web");
        let mut on_disk = Vec::new();
        files_on_disk(&dir, "/", &mut on_disk);
        on_disk.sort();
        let mut served: Vec<String> = FILES.iter().map(|f| f.path.to_string()).collect();
        served.sort();
        assert_eq!(on_disk, served, "list each file of web/ in FILES");
        assert_eq!(FILES[0].path, "/index.html", "`/` serves the first file");
    }

    #[test]
    fn the_policy_allows_only_the_product() {
        let same_host = content_security_policy(None);
        assert!(same_host.contains("connect-src 'self';"), "{same_host}");
        assert_eq!(content_security_policy(Some("/ws")), same_host);
        let elsewhere = content_security_policy(Some("ws://127.0.0.1:9000/ws"));
        assert!(
            elsewhere.contains("connect-src 'self' ws://127.0.0.1:9000/ws;"),
            "{elsewhere}"
        );
        assert!(elsewhere.starts_with("default-src 'none';"));
    }
}
