//! Measures a WebSocket server's memory per idle connection: opens
//! connections in steps, reads the server's RSS after each step and prints
//! the least-squares slope in bytes per connection.
//!
//! ```text
//! cargo run --release -p oceanchat-gateway --example idle_rss -- \
//!     --addr 127.0.0.1:9100 --pid <server pid> --connections 19000
//! ```
//!
//! Each connection upgrades, sends one text message and reads the echo
//! (so read buffers were used and had the chance to be released), then
//! stays idle. Source addresses rotate over 127.0.0.2..=127.0.0.254 so that
//! tens of thousands of connections never run out of ephemeral ports. The
//! client needs one file descriptor per connection: raise `ulimit -n`.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use oceanchat_client::wire;
use socket2::{Domain, Socket, Type};

struct Args {
    addr: SocketAddr,
    pid: u32,
    connections: usize,
    step: usize,
    settle: Duration,
    echo: bool,
}

fn parse_args() -> Args {
    let mut args = Args {
        addr: "127.0.0.1:9100".parse().expect("valid"),
        pid: 0,
        connections: 19_000,
        step: 1_000,
        settle: Duration::from_millis(500),
        echo: true,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .unwrap_or_else(|| usage(&format!("{flag} needs a value")))
        };
        match flag.as_str() {
            "--addr" => args.addr = value().parse().unwrap_or_else(|_| usage("bad --addr")),
            "--pid" => args.pid = value().parse().unwrap_or_else(|_| usage("bad --pid")),
            "--connections" => {
                args.connections = value()
                    .parse()
                    .unwrap_or_else(|_| usage("bad --connections"))
            }
            "--step" => args.step = value().parse().unwrap_or_else(|_| usage("bad --step")),
            "--settle-ms" => {
                args.settle = Duration::from_millis(
                    value().parse().unwrap_or_else(|_| usage("bad --settle-ms")),
                )
            }
            "--no-echo" => args.echo = false,
            other => usage(&format!("unknown flag {other}")),
        }
    }
    if args.pid == 0 {
        usage("--pid of the server is required");
    }
    args
}

fn usage(problem: &str) -> ! {
    eprintln!(
        "idle_rss: {problem}\nusage: idle_rss --addr HOST:PORT --pid PID [--connections N] [--step N] [--settle-ms MS] [--no-echo]"
    );
    std::process::exit(2);
}

/// Resident set size of `pid` in bytes.
fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("cannot read /proc/{pid}/status: {e}"));
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .expect("VmRSS line");
    let kb: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .expect("VmRSS value");
    kb * 1024
}

/// A masked client text frame.
fn client_text(payload: &[u8]) -> Vec<u8> {
    let header = wire::Header::new(wire::opcode::TEXT).mask(Some([0x11, 0x22, 0x33, 0x44]));
    wire::frame(header, payload)
}

/// Reads until `buf` ends with `suffix` (or holds `want` bytes when given).
fn read_until(stream: &mut TcpStream, done: impl Fn(&[u8]) -> bool) -> std::io::Result<Vec<u8>> {
    let mut got = Vec::new();
    let mut chunk = [0u8; 512];
    while !done(&got) {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::Error::other("server closed"));
        }
        got.extend_from_slice(&chunk[..n]);
    }
    Ok(got)
}

fn open(addr: SocketAddr, source: Ipv4Addr, echo: bool) -> std::io::Result<TcpStream> {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    if addr.ip().is_loopback() {
        socket.bind(&SocketAddr::new(IpAddr::V4(source), 0).into())?;
    }
    socket.connect(&addr.into())?;
    let mut stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let request = wire::upgrade_request(&addr.to_string(), "/ws", wire::SAMPLE_KEY, &[]);
    stream.write_all(request.as_bytes())?;
    let head = read_until(&mut stream, |b| b.windows(4).any(|w| w == b"\r\n\r\n"))?;
    let upgraded = wire::parse_response_head(&head)
        .and_then(|head| wire::check_upgrade(&head.expect("a whole head"), wire::SAMPLE_KEY));
    if let Err(e) = upgraded {
        return Err(std::io::Error::other(e));
    }
    if echo {
        stream.write_all(&client_text(b"hello"))?;
        read_until(&mut stream, |b| b.len() >= 7)?;
    }
    Ok(stream)
}

/// Least-squares slope of y over x.
fn slope(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    let (sx, sy) = points
        .iter()
        .fold((0.0, 0.0), |(sx, sy), (x, y)| (sx + x, sy + y));
    let (mx, my) = (sx / n, sy / n);
    let num: f64 = points.iter().map(|(x, y)| (x - mx) * (y - my)).sum();
    let den: f64 = points.iter().map(|(x, _)| (x - mx) * (x - mx)).sum();
    num / den
}

fn main() {
    let args = parse_args();
    let mut conns = Vec::with_capacity(args.connections);
    let mut points = Vec::new();
    let started = Instant::now();
    let base = rss_bytes(args.pid);
    println!("connections rss_kib");
    println!("{:>11} {:>8}", 0, base / 1024);
    while conns.len() < args.connections {
        let target = (conns.len() + args.step).min(args.connections);
        while conns.len() < target {
            let i = conns.len();
            let source = Ipv4Addr::new(127, 0, 0, 2 + (i % 253) as u8);
            match open(args.addr, source, args.echo) {
                Ok(stream) => conns.push(stream),
                Err(e) => {
                    eprintln!("idle_rss: connection {i} failed: {e}");
                    std::process::exit(1);
                }
            }
        }
        std::thread::sleep(args.settle);
        let rss = rss_bytes(args.pid);
        println!("{:>11} {:>8}", conns.len(), rss / 1024);
        points.push((conns.len() as f64, rss as f64));
    }
    let last = points.last().expect("at least one step").1;
    println!(
        "opened {} connections in {:.1} s",
        conns.len(),
        started.elapsed().as_secs_f64()
    );
    println!(
        "slope: {:.0} bytes per idle connection (least squares over {} steps); \
         (last - empty) / n: {:.0} bytes",
        slope(&points),
        points.len(),
        (last - base as f64) / conns.len() as f64
    );
}
