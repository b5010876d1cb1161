//! The HTTP/1.1 upgrade request and its answers, without I/O.
//!
//! `httparse` reads the request; tungstenite derives the accept key. What
//! is refused gets a short plain HTTP answer and the socket is closed.
//! Plain `GET`s (no upgrade) of `/metrics`, `/healthz` and `/readyz` are
//! the other requests answered.

use oceanchat_protocol::http::forwarded_address;

/// The largest request head accepted; browsers send well under 2 KiB.
pub const MAX_REQUEST_BYTES: usize = 8 * 1024;
const MAX_HEADERS: usize = 32;

/// What the upgrade request said that matters after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upgrade {
    pub path: String,
    pub key: String,
    pub origin: Option<String>,
    /// The client address a proxy named (`X-Real-IP`, else the last
    /// `X-Forwarded-For` hop); believed only from trusted proxies.
    pub forwarded_for: Option<std::net::IpAddr>,
}

/// What a request head asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Upgrade(Upgrade),
    /// A plain `GET /metrics`: the Prometheus counters, with the bearer
    /// token the request carried, if any.
    Metrics {
        bearer: Option<String>,
    },
    /// A plain `GET /healthz` (the process runs) or `GET /readyz` (it can
    /// deliver: see `crate::readiness`).
    Health(Probe),
}

/// Which health question a plain GET asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// `/healthz`: 200 while the process runs.
    Live,
    /// `/readyz`: 200 only while ready, else 503 saying why.
    Ready,
}

/// Why an upgrade was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("malformed HTTP request")]
    Malformed,
    #[error("request head too large")]
    TooLarge,
    #[error("not a WebSocket upgrade")]
    NotUpgrade,
    #[error("unsupported WebSocket version")]
    BadVersion,
    #[error("unknown path")]
    NotFound,
    #[error("origin not allowed")]
    OriginNotAllowed,
    #[error("connection limit reached")]
    AtCapacity,
    #[error("too many connections from this address")]
    TooManyFromAddress,
    #[error("not ready (NATS or its subscriptions are not in place)")]
    NotReady,
}

impl Refusal {
    /// The complete HTTP response for this refusal.
    pub fn response(self) -> &'static [u8] {
        match self {
            Refusal::Malformed | Refusal::NotUpgrade => {
                b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
            }
            Refusal::TooLarge => {
                b"HTTP/1.1 431 Request Header Fields Too Large\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
            }
            Refusal::BadVersion => {
                b"HTTP/1.1 426 Upgrade Required\r\nSec-WebSocket-Version: 13\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
            }
            Refusal::NotFound => {
                b"HTTP/1.1 404 Not Found\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
            }
            Refusal::OriginNotAllowed => {
                b"HTTP/1.1 403 Forbidden\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
            }
            Refusal::AtCapacity => {
                b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
            }
            // Retry-After: a client (or nginx, which tries the next
            // gateway) comes back soon; readiness returns within seconds.
            Refusal::NotReady => {
                b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
            }
            Refusal::TooManyFromAddress => {
                b"HTTP/1.1 429 Too Many Requests\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
            }
        }
    }
}

/// Parses the request head in `buf`. `Ok(None)` means more bytes are
/// needed; on success also returns how many bytes the head took.
pub fn parse(buf: &[u8]) -> Result<Option<(Request, usize)>, Refusal> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let consumed = match request.parse(buf) {
        // A read can bring the end of a head that had not ended below
        // the limit, with more than the limit in all: refused as well.
        Ok(httparse::Status::Complete(n)) if n > MAX_REQUEST_BYTES => {
            return Err(Refusal::TooLarge)
        }
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() >= MAX_REQUEST_BYTES => {
            return Err(Refusal::TooLarge)
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(Refusal::TooLarge),
        Err(_) => return Err(Refusal::Malformed),
    };
    if request.method != Some("GET") || request.version != Some(1) {
        return Err(Refusal::NotUpgrade);
    }
    let header = |name: &str| {
        request
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .and_then(|h| std::str::from_utf8(h.value).ok())
            .map(str::trim)
    };
    let has_token = |value: Option<&str>, token: &str| {
        value.is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    };
    let path = request.path.unwrap_or("/");
    let path = path.split('?').next().unwrap_or(path);
    if header("upgrade").is_none() && path == "/metrics" {
        let bearer = header("authorization")
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim().to_string());
        return Ok(Some((Request::Metrics { bearer }, consumed)));
    }
    if header("upgrade").is_none() {
        match path {
            "/healthz" => return Ok(Some((Request::Health(Probe::Live), consumed))),
            "/readyz" => return Ok(Some((Request::Health(Probe::Ready), consumed))),
            _ => {}
        }
    }
    if !has_token(header("upgrade"), "websocket") || !has_token(header("connection"), "upgrade") {
        return Err(Refusal::NotUpgrade);
    }
    if header("sec-websocket-version") != Some("13") {
        return Err(Refusal::BadVersion);
    }
    let key = header("sec-websocket-key")
        .filter(|k| !k.is_empty())
        .ok_or(Refusal::NotUpgrade)?;
    Ok(Some((
        Request::Upgrade(Upgrade {
            path: path.to_string(),
            key: key.to_string(),
            origin: header("origin").map(str::to_string),
            forwarded_for: forwarded_address(header("x-real-ip"), header("x-forwarded-for")),
        }),
        consumed,
    )))
}

/// The answer to `/metrics` without the configured token.
pub const METRICS_UNAUTHORIZED: &[u8] =
    b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer\r\nConnection: close\r\nContent-Length: 0\r\n\r\n";

/// The `101 Switching Protocols` answer.
pub fn accept_response(key: &str) -> Vec<u8> {
    let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
    format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
    )
    .into_bytes()
}

/// The answer to `GET /healthz` or `GET /readyz`: 200, or 503 with the
/// reason as the body.
pub fn health_response(not_ready: Option<&str>) -> Vec<u8> {
    let (status, body) = match not_ready {
        None => ("200 OK", "ok\n".to_string()),
        Some(why) => ("503 Service Unavailable", format!("{why}\n")),
    };
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// The answer to `GET /metrics`.
pub fn metrics_response(body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &[u8] = b"GET /ws?x=1 HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nOrigin: https://chat.example\r\n\r\n";

    #[test]
    fn parses_a_browser_upgrade() {
        let (request, used) = parse(GOOD).unwrap().unwrap();
        assert_eq!(used, GOOD.len());
        let Request::Upgrade(upgrade) = request else {
            panic!("not an upgrade: {request:?}");
        };
        assert_eq!(upgrade.path, "/ws");
        assert_eq!(upgrade.origin.as_deref(), Some("https://chat.example"));
        let response = String::from_utf8(accept_response(&upgrade.key)).unwrap();
        // The RFC 6455 example key and its accept value.
        assert!(response.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="));
    }

    #[test]
    fn proxies_name_the_client() {
        let with = |extra: &str| {
            let head = String::from_utf8_lossy(GOOD)
                .replace("Host: a\r\n", &format!("Host: a\r\n{extra}"));
            match parse(head.as_bytes()).unwrap().unwrap().0 {
                Request::Upgrade(upgrade) => upgrade.forwarded_for,
                other => panic!("not an upgrade: {other:?}"),
            }
        };
        assert_eq!(with(""), None);
        assert_eq!(
            with("X-Forwarded-For: 198.51.100.1, 203.0.113.9\r\n"),
            Some("203.0.113.9".parse().unwrap())
        );
        assert_eq!(
            with("X-Real-IP: 2001:db8::1\r\nX-Forwarded-For: 203.0.113.9\r\n"),
            Some("2001:db8::1".parse().unwrap())
        );
        assert_eq!(with("X-Real-IP: nonsense\r\n"), None);
    }

    #[test]
    fn partial_then_too_large() {
        assert_eq!(parse(&GOOD[..20]), Ok(None));
        let mut huge = b"GET / HTTP/1.1\r\nX: ".to_vec();
        huge.resize(MAX_REQUEST_BYTES, b'a');
        assert_eq!(parse(&huge), Err(Refusal::TooLarge));
    }

    /// Found by the `handshake` fuzz target: the gateway reads the head
    /// in pieces and parses what it has, so a head that was incomplete
    /// just below the limit could end in a read that took it past the
    /// limit (up to twice the limit) and be accepted.
    #[test]
    fn a_complete_head_over_the_limit_is_too_large() {
        let mut head = GOOD[..GOOD.len() - 2].to_vec();
        let filler = MAX_REQUEST_BYTES + 1 - head.len() - b"X: \r\n\r\n".len();
        head.extend_from_slice(b"X: ");
        head.resize(head.len() + filler, b'a');
        head.extend_from_slice(b"\r\n\r\n");
        assert_eq!(head.len(), MAX_REQUEST_BYTES + 1);
        assert_eq!(parse(&head), Err(Refusal::TooLarge));
        // One byte less is the largest head accepted.
        let mut fits = head.clone();
        fits.remove(GOOD.len() + 1);
        assert!(
            matches!(parse(&fits), Ok(Some((Request::Upgrade(_), n))) if n == MAX_REQUEST_BYTES)
        );
    }

    #[test]
    fn refusals() {
        let plain = b"GET /ws HTTP/1.1\r\nHost: a\r\n\r\n";
        assert_eq!(parse(plain), Err(Refusal::NotUpgrade));
        let metrics = b"GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n";
        assert_eq!(
            parse(metrics),
            Ok(Some((Request::Metrics { bearer: None }, metrics.len())))
        );
        let with_token = b"GET /metrics HTTP/1.1\r\nAuthorization: Bearer s3cret\r\n\r\n";
        assert_eq!(
            parse(with_token),
            Ok(Some((
                Request::Metrics {
                    bearer: Some("s3cret".into())
                },
                with_token.len()
            )))
        );
        let ready = b"GET /readyz HTTP/1.1\r\nHost: a\r\n\r\n";
        assert_eq!(
            parse(ready),
            Ok(Some((Request::Health(Probe::Ready), ready.len())))
        );
        let live = b"GET /healthz?x HTTP/1.1\r\nHost: a\r\n\r\n";
        assert_eq!(
            parse(live),
            Ok(Some((Request::Health(Probe::Live), live.len())))
        );
        assert!(health_response(Some("nats: disconnected"))
            .starts_with(b"HTTP/1.1 503 Service Unavailable\r\n"));
        assert!(health_response(None).starts_with(b"HTTP/1.1 200 OK\r\n"));
        assert!(Refusal::NotReady.response().starts_with(b"HTTP/1.1 503"));
        let v8 = String::from_utf8_lossy(GOOD).replace("Version: 13", "Version: 8");
        assert_eq!(parse(v8.as_bytes()), Err(Refusal::BadVersion));
        assert_eq!(parse(b"\x01\x02 nonsense\r\n\r\n"), Err(Refusal::Malformed));
        assert!(Refusal::OriginNotAllowed
            .response()
            .starts_with(b"HTTP/1.1 403"));
        assert!(Refusal::TooManyFromAddress
            .response()
            .starts_with(b"HTTP/1.1 429"));
    }
}
