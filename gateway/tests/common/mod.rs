//! The gateway as a process, and a raw WebSocket client that shows exactly
//! what the server put on the wire.

#![allow(dead_code)] // each test file uses a different part

use std::fs::File;
use std::io::{Read as _, Write};
use std::net::{Shutdown, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub use oceanchat_client::wire::{self, opcode, Header, ResponseHead};

/// Runs `$body` (a fn taking the driver name) once per io driver, as two
/// tests in a module named after the scenario.
#[macro_export]
macro_rules! both_drivers {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[test]
            fn uring() {
                super::$name("uring");
            }
            #[test]
            fn epoll() {
                super::$name("epoll");
            }
        }
    )*};
}

/// A gateway process; killed on drop.
pub struct Gateway {
    child: Child,
    pub port: u16,
    log: PathBuf,
}

impl Gateway {
    /// Starts `--mode bench` with `--driver driver` and `extra` flags and
    /// waits until it accepts connections.
    pub fn bench(driver: &str, extra: &[&str]) -> Gateway {
        let mut args = vec!["--mode", "bench", "--driver", driver];
        args.extend_from_slice(extra);
        Gateway::start(&args)
    }

    /// Starts the gateway with `args` plus a free `--listen` port.
    pub fn start(args: &[&str]) -> Gateway {
        let port = oceanchat_testkit::free_port();
        let log =
            std::env::temp_dir().join(format!("oc-gateway-test-{}-{port}.log", std::process::id()));
        let out = File::create(&log).expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_oceanchat-gateway"))
            .args(args)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .env("NO_COLOR", "1")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log file"))
            .stderr(out)
            .spawn()
            .expect("start the gateway");
        let mut gateway = Gateway { child, port, log };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !oceanchat_testkit::port_accepts(port) {
            if let Ok(Some(status)) = gateway.child.try_wait() {
                panic!("gateway exited with {status}:\n{}", gateway.log());
            }
            assert!(
                Instant::now() < deadline,
                "gateway did not start:\n{}",
                gateway.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        gateway
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn terminate(&self) {
        // SAFETY: kill(2) with our own child's pid and a valid signal.
        unsafe {
            libc::kill(self.pid(), libc::SIGTERM);
        }
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The body of `GET /metrics`.
    pub fn metrics(&self) -> String {
        let (status, body) = http_get(self.port, "/metrics");
        assert_eq!(status, 200, "GET /metrics: {body}");
        body
    }

    /// The value of one sample line of `/metrics`, e.g.
    /// `oc_gateway_connections{core="0"}`.
    pub fn metric(&self, sample: &str) -> u64 {
        metric_value(&self.metrics(), sample)
    }

    /// A metric summed over every core: the samples `name{core="N"...}`
    /// whose labels after `core` are exactly `labels` (e.g. `,code="4008"`,
    /// or empty).
    /// [`metric_sum`](Self::metric_sum) once it reaches `expected`, or its
    /// value after 2 s: counters are updated just after the socket write
    /// that a client may already have read.
    pub fn metric_sum_reaching(&self, name: &str, labels: &str, expected: u64) -> u64 {
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        loop {
            let value = self.metric_sum(name, labels);
            if value == expected || std::time::Instant::now() > deadline {
                return value;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn metric_sum(&self, name: &str, labels: &str) -> u64 {
        self.metrics()
            .lines()
            .filter_map(|line| {
                let rest = line.strip_prefix(name)?.strip_prefix("{core=\"")?;
                let (all_labels, value) = rest.split_once("} ")?;
                let (_core, other) = all_labels.split_once('"')?;
                (other == labels).then(|| value.parse::<u64>().ok())?
            })
            .sum()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("gateway log ({}):\n{}", self.log.display(), self.log());
        } else {
            let _ = std::fs::remove_file(&self.log);
        }
    }
}

pub fn metric_value(body: &str, sample: &str) -> u64 {
    body.lines()
        .find_map(|l| l.strip_prefix(sample)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no sample {sample} in:\n{body}"))
}

/// Sends a plain HTTP GET; returns the status and the body (status 0 if
/// the server answered nothing readable).
pub fn http_get(port: u16, path: &str) -> (u16, String) {
    oceanchat_testkit::http_get(port, path).unwrap_or((0, String::new()))
}

/// A frame the server sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub fin: bool,
    pub opcode: u8,
    pub payload: Vec<u8>,
}

impl Frame {
    /// The close code of a close frame.
    pub fn close_code(&self) -> Option<u16> {
        if self.opcode == opcode::CLOSE {
            wire::close_code(&self.payload)
        } else {
            None
        }
    }
}

/// What a read found.
#[derive(Debug)]
pub enum Read {
    Frame(Frame),
    /// The server closed the TCP connection (or reset it).
    Eof,
    /// Nothing within the timeout.
    Timeout,
}

/// A WebSocket client with full control over the bytes it sends: the
/// framing is `oceanchat_client::wire`, this is only its blocking I/O.
pub struct Client {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

/// The mask key of the client's frames: not zero, so the server's
/// unmasking is exercised.
pub const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// The request head of an upgrade to `path` with `extra` header lines.
pub fn upgrade_request(path: &str, extra: &[(&str, &str)]) -> String {
    wire::upgrade_request("127.0.0.1", path, wire::SAMPLE_KEY, extra)
}

/// The server's answer to a request: its head, if a whole one came, and
/// the bytes after it (the first frames, after a 101).
pub struct Answer {
    pub head: Option<ResponseHead>,
    pub stream: TcpStream,
    pub rest: Vec<u8>,
}

impl Answer {
    /// The status, 0 if the server answered no readable head.
    pub fn status(&self) -> u16 {
        self.head.as_ref().map_or(0, |h| h.status)
    }
}

/// Sends `request` and reads the response head.
pub fn send_request(port: u16, request: &str) -> Answer {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    stream.write_all(request.as_bytes()).expect("write");
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match wire::parse_response_head(&bytes) {
            Ok(Some(head)) => {
                let rest = bytes.split_off(head.len);
                return Answer {
                    head: Some(head),
                    stream,
                    rest,
                };
            }
            Ok(None) => {}
            Err(e) => panic!(
                "unreadable answer ({e}): {:?}",
                String::from_utf8_lossy(&bytes)
            ),
        }
        match stream.read(&mut chunk) {
            Ok(n) if n > 0 => bytes.extend_from_slice(&chunk[..n]),
            _ => {
                return Answer {
                    head: None,
                    stream,
                    rest: bytes,
                }
            }
        }
    }
}

impl Client {
    /// Upgrades to `/bench` on the gateway, checking the 101 and its
    /// `Sec-WebSocket-Accept`.
    pub fn connect(port: u16) -> Client {
        let answer = send_request(port, &upgrade_request("/bench", &[]));
        let head = answer.head.expect("an answer to the upgrade");
        if let Err(e) = wire::check_upgrade(&head, wire::SAMPLE_KEY) {
            panic!("upgrade: {e}: {head:?}");
        }
        Client {
            stream: answer.stream,
            buf: answer.rest,
        }
    }

    /// Sends `bytes` as they are.
    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send");
    }

    /// Sends one frame with `header` (masked with its key, if any).
    pub fn send_with(&mut self, header: Header, payload: &[u8]) {
        self.send_raw(&wire::frame(header, payload));
    }

    /// Sends one frame masked with [`MASK`].
    pub fn send_frame(&mut self, fin: bool, opcode: u8, payload: &[u8]) {
        self.send_raw(&masked_frame(fin, opcode, payload));
    }

    pub fn send_text(&mut self, text: &str) {
        self.send_frame(true, opcode::TEXT, text.as_bytes());
    }

    pub fn send_close(&mut self, code: u16) {
        self.send_frame(true, opcode::CLOSE, &code.to_be_bytes());
    }

    /// Reads one server frame, waiting at most `timeout`.
    pub fn read(&mut self, timeout: Duration) -> Read {
        let deadline = Instant::now() + timeout;
        loop {
            match wire::parse_server_frame(&self.buf) {
                Ok(Some(head)) => {
                    let frame = Frame {
                        fin: head.fin,
                        opcode: head.opcode,
                        payload: self.buf[head.payload.clone()].to_vec(),
                    };
                    assert_eq!(head.rsv, 0, "the server set RSV bits: {frame:?}");
                    self.buf.drain(..head.len());
                    return Read::Frame(frame);
                }
                Ok(None) => {}
                Err(e) => panic!("bad server frame: {e}"),
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Read::Timeout;
            }
            self.stream.set_read_timeout(Some(left)).expect("timeout");
            let mut chunk = [0u8; 64 * 1024];
            match self.stream.read(&mut chunk) {
                Ok(0) => return Read::Eof,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return Read::Timeout
                }
                Err(_) => return Read::Eof,
            }
        }
    }

    /// The next frame, skipping pings; panics on anything else.
    pub fn frame(&mut self) -> Frame {
        loop {
            match self.read(Duration::from_secs(5)) {
                Read::Frame(f) if f.opcode == opcode::PING => continue,
                Read::Frame(f) => return f,
                other => panic!("expected a frame, got {other:?}"),
            }
        }
    }

    /// Expects a text frame with `text`.
    pub fn expect_text(&mut self, text: &str) {
        let frame = self.frame();
        assert_eq!(
            (
                frame.opcode,
                String::from_utf8_lossy(&frame.payload).to_string()
            ),
            (opcode::TEXT, text.to_string())
        );
    }

    /// Expects a close frame and returns its code.
    pub fn expect_close(&mut self) -> Option<u16> {
        let frame = self.frame();
        assert_eq!(
            frame.opcode,
            opcode::CLOSE,
            "expected a close frame, got {frame:?}"
        );
        frame.close_code()
    }

    /// Expects the server to close the TCP connection within `timeout`,
    /// ignoring frames before that.
    pub fn expect_eof(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.read(left) {
                Read::Eof => return,
                Read::Frame(_) => {}
                Read::Timeout => panic!("the server did not close the connection in {timeout:?}"),
            }
        }
    }

    pub fn shutdown(&self) {
        let _ = self.stream.shutdown(Shutdown::Both);
    }
}

/// A final or non-final client frame masked with [`MASK`].
pub fn masked_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    wire::frame(Header::new(opcode).fin(fin).mask(Some(MASK)), payload)
}
