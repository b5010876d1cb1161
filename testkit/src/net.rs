//! Free ports and blocking readiness probes (no async runtime needed).

use std::collections::HashSet;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Mutex;
use std::time::Duration;

/// How long one probe may block on connect or read.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// A port on 127.0.0.1 that was free a moment ago.
///
/// The port is found by binding port 0 and releasing it, so another process
/// can take it before the server that is meant to use it binds it. The
/// window is small, and the server starters retry on "address already in
/// use"; the port is also never handed out twice by this process, so
/// parallel tests in one test binary cannot collide with each other.
pub fn free_port() -> u16 {
    static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    for _ in 0..100 {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap_or_else(|e| panic!("testkit: cannot bind 127.0.0.1:0: {e}"));
        let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
        if handed_out.get_or_insert_with(HashSet::new).insert(port) {
            return port;
        }
    }
    panic!("testkit: no new free port after 100 tries");
}

pub(crate) fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn connect(port: u16) -> io::Result<TcpStream> {
    let stream = TcpStream::connect_timeout(&local(port), PROBE_TIMEOUT)?;
    // A free port is in the ephemeral range, so while nothing listens on it
    // the kernel may pick it as the probe's own source port and connect the
    // socket to itself (TCP simultaneous open): that is not a server.
    if connected_to_itself(&stream)? {
        return Err(io::Error::new(
            io::ErrorKind::ConnectionRefused,
            "connected to itself: nothing listens on the port yet",
        ));
    }
    stream.set_read_timeout(Some(PROBE_TIMEOUT))?;
    stream.set_write_timeout(Some(PROBE_TIMEOUT))?;
    Ok(stream)
}

fn connected_to_itself(stream: &TcpStream) -> io::Result<bool> {
    Ok(stream.local_addr()? == stream.peer_addr()?)
}

/// True when something accepts TCP connections on 127.0.0.1:`port`.
pub fn port_accepts(port: u16) -> bool {
    connect(port).is_ok()
}

/// Waits up to `timeout` for something to accept TCP connections on
/// 127.0.0.1:`port`: true once it does, false if it never did. For a
/// server a test starts itself; testkit's own starters already wait.
pub fn wait_for_port(port: u16, timeout: Duration) -> bool {
    crate::process::wait_until(timeout, || port_accepts(port))
}

/// True when a Redis server on `port` answers PING with PONG.
pub(crate) fn redis_ping(port: u16) -> bool {
    let probe = || -> io::Result<bool> {
        let mut stream = connect(port)?;
        stream.write_all(b"PING\r\n")?;
        let mut line = String::new();
        BufReader::new(stream).read_line(&mut line)?;
        Ok(line.starts_with("+PONG"))
    };
    probe().unwrap_or(false)
}

/// True when a NATS server on `port` greets with its INFO line.
pub(crate) fn nats_info(port: u16) -> bool {
    let probe = || -> io::Result<bool> {
        let mut line = String::new();
        BufReader::new(connect(port)?).read_line(&mut line)?;
        Ok(line.starts_with("INFO "))
    };
    probe().unwrap_or(false)
}

/// The status and body of `GET path` on 127.0.0.1:`port` (HTTP/1.1, one
/// request per connection, read until the server closes).
pub fn http_get(port: u16, path: &str) -> io::Result<(u16, String)> {
    http_get_with_headers(port, path, &[])
}

/// [`http_get`] with extra request headers, e.g.
/// `("Authorization", "Bearer x")`.
pub fn http_get_with_headers(
    port: u16,
    path: &str,
    headers: &[(&str, &str)],
) -> io::Result<(u16, String)> {
    let mut stream = connect(port)?;
    let mut request =
        format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes())?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "not an HTTP response"))?;
    let body = response
        .split_once("\r\n\r\n")
        .map_or("", |(_, body)| body)
        .to_string();
    Ok((status, body))
}

/// The status code of `GET path` on 127.0.0.1:`port` (HTTP/1.1, one
/// request per connection).
pub(crate) fn http_get_status(port: u16, path: &str) -> io::Result<u16> {
    let mut stream = connect(port)?;
    // One write: `write!` on the stream would send each piece on its own.
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes())?;
    // The status line is all we need: "HTTP/1.1 200 OK".
    let mut head = [0u8; 64];
    let mut len = 0;
    while len < head.len() && !head[..len].contains(&b'\n') {
        match stream.read(&mut head[len..])? {
            0 => break,
            n => len += n,
        }
    }
    let status_line = String::from_utf8_lossy(&head[..len]);
    status_line
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("not an HTTP status line: {status_line:?}"),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::thread;

    #[test]
    fn free_ports_are_bindable_and_never_repeat() {
        let a = free_port();
        let b = free_port();
        assert_ne!(a, b);
        TcpListener::bind(local(a)).expect("free port should be bindable");
    }

    #[test]
    fn a_socket_connected_to_itself_is_not_a_server() {
        // What a probe of a free port can get by chance, made on purpose.
        let port = free_port();
        let socket =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        socket.bind(&local(port).into()).unwrap();
        socket.connect(&local(port).into()).unwrap();
        let stream: TcpStream = socket.into();
        assert!(connected_to_itself(&stream).unwrap());
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        assert!(!connected_to_itself(&connect(port).unwrap()).unwrap());
        assert!(port_accepts(port));
    }

    /// A server on a free port that reads one request's head, answers
    /// `answer` and hands back the request it read.
    fn answer_once(answer: &'static [u8]) -> (u16, thread::JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            // The whole head before answering: a request that arrives in
            // pieces would otherwise be answered (and closed) midway.
            let mut request = Vec::new();
            let mut buf = [0u8; 1024];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = conn.read(&mut buf).unwrap();
                assert!(n > 0, "the client closed before ending its request");
                request.extend_from_slice(&buf[..n]);
            }
            conn.write_all(answer).unwrap();
            String::from_utf8_lossy(&request).into_owned()
        });
        (port, server)
    }

    #[test]
    fn http_status_is_read_from_the_status_line() {
        let (port, server) =
            answer_once(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n");
        assert_eq!(http_get_status(port, "/healthz").unwrap(), 503);
        assert!(server
            .join()
            .unwrap()
            .starts_with("GET /healthz HTTP/1.1\r\n"));
    }

    #[test]
    fn http_get_sends_its_headers_and_reads_the_body() {
        let (port, server) =
            answer_once(b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 4\r\n\r\nnope");
        let answer = http_get_with_headers(port, "/metrics", &[("Authorization", "Bearer t")]);
        assert_eq!(answer.unwrap(), (401, "nope".to_string()));
        let request = server.join().unwrap();
        assert!(
            request.starts_with("GET /metrics HTTP/1.1\r\n"),
            "{request}"
        );
        assert!(
            request.contains("\r\nAuthorization: Bearer t\r\n"),
            "{request}"
        );
    }

    #[test]
    fn waiting_for_a_port_sees_it_open_or_gives_up() {
        let port = free_port();
        assert!(!wait_for_port(port, Duration::from_millis(60)));
        let listener = TcpListener::bind(local(port)).unwrap();
        assert!(wait_for_port(port, Duration::from_secs(2)));
        drop(listener);
    }

    #[test]
    fn probes_fail_on_a_closed_port() {
        let port = free_port();
        assert!(!port_accepts(port));
        assert!(!redis_ping(port));
        assert!(!nats_info(port));
        assert!(http_get_status(port, "/").is_err());
    }
}
