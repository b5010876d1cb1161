//! A lean WebSocket client for the comparison protocol: this file does the
//! I/O, `oceanchat_client::wire` the framing (the upgrade request and its
//! checked answer, server frames parsed straight out of one read buffer,
//! client frames masked with the zero key, which makes masking a copy).
//! The load generator shares one core with nothing else, so it must spend
//! little per frame: one read takes every frame that arrived, and one
//! write sends everything queued.

use std::net::{IpAddr, SocketAddr};
use std::ops::Range;

use oceanchat_client::wire::{self, FrameError, FrameHead, Header, UpgradeError as WireError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

pub use oceanchat_client::wire::opcode;

/// The read buffer starts this big and grows only for a larger frame.
const READ_BUFFER: usize = 16 * 1024;

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
    #[error("closed during upgrade")]
    Closed,
    #[error("upgrade refused: {0}")]
    Refused(#[from] WireError),
}

impl UpgradeError {
    /// A short code for error counts.
    pub fn code(&self) -> String {
        match self {
            UpgradeError::Io(e) => format!("connect:{:?}", e.kind()),
            UpgradeError::Closed | UpgradeError::Refused(_) => "upgrade_refused".into(),
        }
    }
}

impl WsClient {
    /// Connects and upgrades.
    pub async fn connect(local: Option<IpAddr>, url: &WsUrl) -> Result<WsClient, UpgradeError> {
        let mut stream = tcp_connect(local, url.addr).await?;
        let request = wire::upgrade_request(&url.host, &url.path, wire::SAMPLE_KEY, &[]);
        stream.write_all(request.as_bytes()).await?;
        let mut buf = vec![0u8; READ_BUFFER];
        let mut end = 0;
        let head = loop {
            let n = stream.read(&mut buf[end..]).await?;
            if n == 0 {
                return Err(UpgradeError::Closed);
            }
            end += n;
            if let Some(head) = wire::parse_response_head(&buf[..end])? {
                break head;
            }
        };
        wire::check_upgrade(&head, wire::SAMPLE_KEY)?;
        Ok(WsClient {
            stream,
            buf,
            start: head.len,
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

    /// [`fill`](Self::fill) with the run's error codes: `peer_closed` when
    /// the peer closed, `read:<kind>` on an error. Cancel safe.
    pub async fn read_more(&mut self) -> Result<(), String> {
        match self.fill().await {
            Ok(0) => Err("peer_closed".into()),
            Ok(_) => Ok(()),
            Err(e) => Err(format!("read:{:?}", e.kind())),
        }
    }

    /// The next complete frame in the buffer: its header, with the
    /// payload's place in the buffer (read it with
    /// [`payload`](Self::payload)); `Ok(None)` until one is complete.
    pub fn next_frame(&mut self) -> Result<Option<FrameHead>, FrameError> {
        let Some(mut head) = wire::parse_server_frame(&self.buf[self.start..self.end])? else {
            return Ok(None);
        };
        head.payload = self.start + head.payload.start..self.start + head.payload.end;
        self.start = head.payload.end;
        Ok(Some(head))
    }

    /// The next complete text or binary frame in the buffer, answering
    /// control frames on the way: a ping's pong is queued in `out`, a pong
    /// is skipped, and a close ends the connection with `Err("close:<code>")`
    /// (an undecodable frame with `Err("frame:...")`). `Ok(None)` until a
    /// data frame is complete.
    pub fn next_message(&mut self, out: &mut Vec<u8>) -> Result<Option<FrameHead>, String> {
        loop {
            let Some(head) = self.next_frame().map_err(|e| format!("frame:{e}"))? else {
                return Ok(None);
            };
            match head.opcode {
                opcode::TEXT | opcode::BINARY => return Ok(Some(head)),
                opcode::PING => push_frame(out, opcode::PONG, &self.buf[head.payload]),
                opcode::CLOSE => {
                    let code = wire::close_code(self.payload(head.payload)).unwrap_or(1005);
                    return Err(format!("close:{code}"));
                }
                _ => {}
            }
        }
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

/// Appends a final client frame of `opcode` (zero mask key) to `out`.
pub fn push_frame(out: &mut Vec<u8>, opcode: u8, payload: &[u8]) {
    wire::write_frame(out, Header::new(opcode), payload);
}

/// Appends a text frame whose payload of `len` bytes `write` appends in
/// place (no copy).
pub fn push_text_with(out: &mut Vec<u8>, len: usize, write: impl FnOnce(&mut Vec<u8>)) {
    wire::write_text_with(out, len, write);
}

#[cfg(test)]
mod tests {
    use super::*;

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
