//! A lean WebSocket client for the comparison protocol: the upgrade written
//! by hand, server frames parsed straight out of one read buffer, client
//! frames masked with a zero key (valid per RFC 6455 section 5.3, and the
//! XOR is then a no-op). The load generator shares one core with nothing
//! else, so it must spend little per frame: one read takes every frame that
//! arrived, and one write sends everything queued.

use std::net::{IpAddr, SocketAddr};
use std::ops::Range;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

pub const OP_CONTINUATION: u8 = 0x0;
pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xa;

/// The read buffer starts this big and grows only for a larger frame.
const READ_BUFFER: usize = 16 * 1024;
/// The most bytes an upgrade response may take.
const MAX_RESPONSE: usize = 8 * 1024;

/// Opens a TCP connection from `local` (port chosen by the kernel) to
/// `remote`. Binding first is what lets a run use many source addresses.
pub async fn tcp_connect(local: Option<IpAddr>, remote: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = match remote {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    if let Some(local) = local {
        socket.bind(SocketAddr::new(local, 0))?;
    }
    let stream = socket.connect(remote).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// A parsed `ws://host:port/path` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WsUrl {
    pub addr: SocketAddr,
    pub host: String,
    pub path: String,
}

impl WsUrl {
    /// Parses `ws://IP:PORT/path` (an IP, not a name: load runs are local).
    pub fn parse(url: &str) -> Result<WsUrl, String> {
        let rest = url
            .strip_prefix("ws://")
            .ok_or_else(|| format!("{url}: only ws:// URLs are supported"))?;
        let (host, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let addr = host
            .parse::<SocketAddr>()
            .map_err(|e| format!("{url}: host must be IP:PORT ({e})"))?;
        Ok(WsUrl {
            addr,
            host: host.to_string(),
            path: path.to_string(),
        })
    }
}

/// An upgraded connection.
pub struct WsClient {
    stream: TcpStream,
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

/// What went wrong during the upgrade.
#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    #[error("connect: {0}")]
    Io(#[from] std::io::Error),
    #[error("upgrade refused: {0}")]
    Refused(String),
}

impl UpgradeError {
    /// A short code for error counts.
    pub fn code(&self) -> String {
        match self {
            UpgradeError::Io(e) => format!("connect:{:?}", e.kind()),
            UpgradeError::Refused(_) => "upgrade_refused".into(),
        }
    }
}

impl WsClient {
    /// Connects and upgrades.
    pub async fn connect(local: Option<IpAddr>, url: &WsUrl) -> Result<WsClient, UpgradeError> {
        let mut stream = tcp_connect(local, url.addr).await?;
        let request = format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
            url.path, url.host
        );
        stream.write_all(request.as_bytes()).await?;
        let mut buf = vec![0u8; READ_BUFFER];
        let mut end = 0;
        let header_end = loop {
            let n = stream.read(&mut buf[end..]).await?;
            if n == 0 {
                return Err(UpgradeError::Refused("closed during upgrade".into()));
            }
            end += n;
            if let Some(i) = find(&buf[..end], b"\r\n\r\n") {
                break i + 4;
            }
            if end >= MAX_RESPONSE {
                return Err(UpgradeError::Refused("response too long".into()));
            }
        };
        let status_line = buf[..header_end]
            .split(|&b| b == b'\r')
            .next()
            .unwrap_or(&[]);
        if !status_line.starts_with(b"HTTP/1.1 101") {
            return Err(UpgradeError::Refused(
                String::from_utf8_lossy(status_line).into_owned(),
            ));
        }
        Ok(WsClient {
            stream,
            buf,
            start: header_end,
            end,
        })
    }

    /// Waits for bytes and appends them to the buffer; 0 means the peer
    /// closed. Cancel safe (a cancelled read loses nothing).
    pub async fn fill(&mut self) -> std::io::Result<usize> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.end == self.buf.len() {
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            } else {
                // One frame larger than the buffer.
                self.buf.resize(self.buf.len() * 2, 0);
            }
        }
        let n = self.stream.read(&mut self.buf[self.end..]).await?;
        self.end += n;
        Ok(n)
    }

    /// The next complete frame in the buffer: its opcode and where its
    /// payload lies (read it with [`payload`](Self::payload)).
    pub fn next_frame(&mut self) -> Option<(u8, Range<usize>)> {
        let (opcode, payload) = parse_frame(&self.buf[self.start..self.end])?;
        let range = self.start + payload.start..self.start + payload.end;
        self.start = range.end;
        Some((opcode, range))
    }

    pub fn payload(&self, range: Range<usize>) -> &[u8] {
        &self.buf[range]
    }

    /// Writes everything in `out` and clears it.
    pub async fn flush(&mut self, out: &mut Vec<u8>) -> std::io::Result<()> {
        if !out.is_empty() {
            self.stream.write_all(out).await?;
            out.clear();
        }
        Ok(())
    }
}

/// Parses one server frame at the start of `bytes`: opcode and payload
/// range, or `None` if it is not complete yet. A masked frame (servers do
/// not send them) is accepted with its payload left masked.
pub fn parse_frame(bytes: &[u8]) -> Option<(u8, Range<usize>)> {
    if bytes.len() < 2 {
        return None;
    }
    let opcode = bytes[0] & 0x0f;
    let masked = bytes[1] & 0x80 != 0;
    let (len, mut at): (u64, usize) = match bytes[1] & 0x7f {
        126 => {
            let b = bytes.get(2..4)?;
            (u64::from(u16::from_be_bytes([b[0], b[1]])), 4)
        }
        127 => {
            let b = bytes.get(2..10)?;
            (u64::from_be_bytes(b.try_into().ok()?), 10)
        }
        n => (u64::from(n), 2),
    };
    if masked {
        at += 4;
    }
    let end = at.checked_add(usize::try_from(len).ok()?)?;
    if bytes.len() < end {
        return None;
    }
    Some((opcode, at..end))
}

/// Appends a client frame (FIN set, zero mask key) to `out`.
pub fn push_frame(out: &mut Vec<u8>, opcode: u8, payload: &[u8]) {
    push_header(out, opcode, payload.len());
    out.extend_from_slice(payload);
}

/// Appends a text frame whose payload of `len` bytes `write` appends in
/// place (no copy).
pub fn push_text_with(out: &mut Vec<u8>, len: usize, write: impl FnOnce(&mut Vec<u8>)) {
    push_header(out, OP_TEXT, len);
    let payload_start = out.len();
    write(out);
    debug_assert_eq!(out.len() - payload_start, len);
}

fn push_header(out: &mut Vec<u8>, opcode: u8, len: usize) {
    out.push(0x80 | opcode);
    if len < 126 {
        out.push(0x80 | len as u8);
    } else if len <= 0xffff {
        out.push(0x80 | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(&[0, 0, 0, 0]);
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0x80 | opcode];
        match payload.len() {
            n if n < 126 => f.push(n as u8),
            n if n <= 0xffff => {
                f.push(126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn frames_of_every_length_form_parse() {
        for len in [0, 5, 125, 126, 300, 65_535, 65_536, 70_000] {
            let payload = vec![b'a'; len];
            let f = server_frame(OP_TEXT, &payload);
            let (op, range) = parse_frame(&f).unwrap();
            assert_eq!(op, OP_TEXT);
            assert_eq!(range.len(), len);
            assert_eq!(range.end, f.len());
            // One byte short is incomplete, not an error.
            assert!(parse_frame(&f[..f.len() - 1]).is_none());
        }
    }

    #[test]
    fn client_frames_are_masked_and_sized() {
        let mut out = Vec::new();
        push_frame(&mut out, OP_TEXT, b"hi");
        assert_eq!(out, [0x81, 0x82, 0, 0, 0, 0, b'h', b'i']);
        let mut long = Vec::new();
        push_text_with(&mut long, 300, |o| o.resize(o.len() + 300, b'x'));
        assert_eq!(&long[..4], &[0x81, 0x80 | 126, 1, 44]);
        assert_eq!(long.len(), 4 + 4 + 300);
    }

    #[test]
    fn urls_parse() {
        let u = WsUrl::parse("ws://127.0.0.1:9000/ws").unwrap();
        assert_eq!(u.path, "/ws");
        assert_eq!(u.addr.port(), 9000);
        assert_eq!(WsUrl::parse("ws://127.0.0.1:1").unwrap().path, "/");
        assert!(WsUrl::parse("http://127.0.0.1:1/").is_err());
        assert!(WsUrl::parse("ws://localhost:1/").is_err());
    }
}
