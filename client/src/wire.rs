//! WebSocket framing, client side, without I/O (RFC 6455): the upgrade
//! request and the check of its answer, client frames out, server frames
//! in. Callers own the socket and the buffers; nothing here reads, writes
//! or allocates beyond the `Vec` it is handed.
//!
//! The encoder builds any frame, also ones a client must not send (RSV
//! bits, reserved opcodes, no mask, a fragmented control frame): the
//! gateway's conformance tests send those on purpose. The parser is for
//! what a server sends: it reads one frame header at the front of a
//! buffer and says where the payload lies, or that it needs more bytes.
//! Reassembling fragments, checking UTF-8 and answering pings are the
//! caller's business.
//!
//! [`Connection`](crate::Connection) does not use this module: it runs on
//! tokio-tungstenite, which also validates what the server sends. This is
//! for clients that must see or shape every byte: the load generator's lean
//! client and the gateway's tests.

use std::ops::Range;

use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

/// Opcodes (RFC 6455 section 5.2).
pub mod opcode {
    pub const CONTINUATION: u8 = 0x0;
    pub const TEXT: u8 = 0x1;
    pub const BINARY: u8 = 0x2;
    pub const CLOSE: u8 = 0x8;
    pub const PING: u8 = 0x9;
    pub const PONG: u8 = 0xa;

    /// True for close, ping and pong (and the reserved 0xb-0xf).
    pub const fn is_control(opcode: u8) -> bool {
        opcode & 0x8 != 0
    }
}

/// The `Sec-WebSocket-Key` of RFC 6455's example. A key only has to be
/// unpredictable for clients that run in a browser next to other pages;
/// tools and tests may use this one.
pub const SAMPLE_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

/// The mask key that leaves the payload as it is: valid (RFC 6455 section
/// 5.3 only asks browsers for an unpredictable one), and it makes masking
/// a plain copy.
pub const ZERO_MASK: [u8; 4] = [0; 4];

/// The largest response head [`parse_response_head`] waits for.
pub const MAX_RESPONSE_HEAD: usize = 8 * 1024;

/// Most headers a response head may have.
const MAX_HEADERS: usize = 32;

/// The request head of an upgrade to `path` on `host`, with `key` as
/// `Sec-WebSocket-Key` and `extra` header lines after the standard ones.
pub fn upgrade_request(host: &str, path: &str, key: &str, extra: &[(&str, &str)]) -> String {
    let mut request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
    );
    for (name, value) in extra {
        request.push_str(name);
        request.push_str(": ");
        request.push_str(value);
        request.push_str("\r\n");
    }
    request.push_str("\r\n");
    request
}

/// The `Sec-WebSocket-Accept` a server must answer `key` with.
pub fn accept_key(key: &str) -> String {
    derive_accept_key(key.as_bytes())
}

/// An HTTP response head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    pub status: u16,
    /// Header names as sent, values lossily decoded.
    pub headers: Vec<(String, String)>,
    /// The head's length in bytes, the blank line included: frames start
    /// there.
    pub len: usize,
}

impl ResponseHead {
    /// The first header called `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Why an upgrade did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpgradeError {
    /// The bytes are not an HTTP/1.1 response head.
    #[error("not an HTTP response: {0}")]
    NotHttp(String),
    /// The head is longer than [`MAX_RESPONSE_HEAD`].
    #[error("response head longer than {MAX_RESPONSE_HEAD} bytes")]
    HeadTooLong,
    /// The server answered, but not with 101 (403 for a refused Origin,
    /// 503 at the connection cap...).
    #[error("upgrade refused with HTTP {0}")]
    Refused(u16),
    /// A 101 without the right `Sec-WebSocket-Accept` (or without
    /// `Upgrade: websocket`): not a WebSocket server, or a broken one.
    #[error("bad 101 response: {0}")]
    BadAccept(String),
}

/// Parses the response head at the start of `bytes`: `Ok(None)` while it
/// is incomplete. Any status is a success here; see [`check_upgrade`].
pub fn parse_response_head(bytes: &[u8]) -> Result<Option<ResponseHead>, UpgradeError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    match response.parse(bytes) {
        Ok(httparse::Status::Partial) if bytes.len() >= MAX_RESPONSE_HEAD => {
            Err(UpgradeError::HeadTooLong)
        }
        Ok(httparse::Status::Partial) => Ok(None),
        Ok(httparse::Status::Complete(len)) => Ok(Some(ResponseHead {
            status: response.code.unwrap_or(0),
            headers: response
                .headers
                .iter()
                .map(|h| {
                    (
                        h.name.to_string(),
                        String::from_utf8_lossy(h.value).into_owned(),
                    )
                })
                .collect(),
            len,
        })),
        Err(e) => Err(UpgradeError::NotHttp(e.to_string())),
    }
}

/// Checks that `head` accepts an upgrade requested with `key`: status
/// 101, `Upgrade: websocket` and the `Sec-WebSocket-Accept` that `key`
/// asks for.
pub fn check_upgrade(head: &ResponseHead, key: &str) -> Result<(), UpgradeError> {
    if head.status != 101 {
        return Err(UpgradeError::Refused(head.status));
    }
    if !head
        .header("upgrade")
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
    {
        return Err(UpgradeError::BadAccept("no `Upgrade: websocket`".into()));
    }
    let expected = accept_key(key);
    match head.header("sec-websocket-accept") {
        Some(got) if got == expected => Ok(()),
        Some(got) => Err(UpgradeError::BadAccept(format!(
            "Sec-WebSocket-Accept {got:?}, expected {expected:?}"
        ))),
        None => Err(UpgradeError::BadAccept("no Sec-WebSocket-Accept".into())),
    }
}

/// The first two bytes and the mask of a client frame. [`Header::new`] is
/// a valid frame; change the fields to build an invalid one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub fin: bool,
    /// The three RSV bits, in the low bits (0 unless an extension says).
    pub rsv: u8,
    /// The low four bits are sent.
    pub opcode: u8,
    /// `None` sends the payload unmasked, which a server must refuse.
    pub mask: Option<[u8; 4]>,
}

impl Header {
    /// A final frame of `opcode`, masked with [`ZERO_MASK`].
    pub const fn new(opcode: u8) -> Header {
        Header {
            fin: true,
            rsv: 0,
            opcode,
            mask: Some(ZERO_MASK),
        }
    }

    pub const fn fin(self, fin: bool) -> Header {
        Header { fin, ..self }
    }

    pub const fn mask(self, mask: Option<[u8; 4]>) -> Header {
        Header { mask, ..self }
    }

    /// Appends the header of a frame with `len` payload bytes: the length
    /// in its shortest form, then the mask key.
    pub fn write(&self, out: &mut Vec<u8>, len: usize) {
        out.push((u8::from(self.fin) << 7) | ((self.rsv & 0x7) << 4) | (self.opcode & 0xf));
        let masked = if self.mask.is_some() { 0x80 } else { 0 };
        if len < 126 {
            out.push(masked | len as u8);
        } else if let Ok(short) = u16::try_from(len) {
            out.push(masked | 126);
            out.extend_from_slice(&short.to_be_bytes());
        } else {
            out.push(masked | 127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
        if let Some(mask) = self.mask {
            out.extend_from_slice(&mask);
        }
    }
}

/// Appends a whole client frame: `header`, then `payload` masked with its
/// key (a plain copy with [`ZERO_MASK`] or no mask).
pub fn write_frame(out: &mut Vec<u8>, header: Header, payload: &[u8]) {
    header.write(out, payload.len());
    match header.mask {
        Some(mask) if mask != ZERO_MASK => {
            out.extend(payload.iter().zip(mask.iter().cycle()).map(|(b, m)| b ^ m));
        }
        _ => out.extend_from_slice(payload),
    }
}

/// A whole client frame as its own buffer.
pub fn frame(header: Header, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(14 + payload.len());
    write_frame(&mut out, header, payload);
    out
}

/// Appends a final text frame masked with [`ZERO_MASK`] whose `len`
/// payload bytes `write` appends in place (no copy).
pub fn write_text_with(out: &mut Vec<u8>, len: usize, write: impl FnOnce(&mut Vec<u8>)) {
    Header::new(opcode::TEXT).write(out, len);
    let start = out.len();
    write(out);
    debug_assert_eq!(out.len() - start, len, "payload length as announced");
}

/// The payload of a close frame: `code`, then `reason`.
pub fn close_payload(code: u16, reason: &str) -> Vec<u8> {
    let mut payload = code.to_be_bytes().to_vec();
    payload.extend_from_slice(reason.as_bytes());
    payload
}

/// The code of a close frame's payload; `None` when it carries none.
pub fn close_code(payload: &[u8]) -> Option<u16> {
    match payload {
        [a, b, ..] => Some(u16::from_be_bytes([*a, *b])),
        _ => None,
    }
}

/// One server frame found at the front of a buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameHead {
    pub fin: bool,
    /// The three RSV bits.
    pub rsv: u8,
    pub opcode: u8,
    /// Where the payload lies, relative to the buffer given.
    pub payload: Range<usize>,
}

impl FrameHead {
    /// The whole frame's length: the next frame starts there.
    pub fn len(&self) -> usize {
        self.payload.end
    }

    /// Never true: a frame has at least its two header bytes.
    pub fn is_empty(&self) -> bool {
        false
    }
}

/// A server frame that no server may send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Servers must not mask (RFC 6455 section 5.1).
    #[error("the server masked a frame")]
    Masked,
    /// The length does not fit this machine's memory.
    #[error("frame length {0} does not fit in memory")]
    TooLong(u64),
}

/// Parses the server frame at the start of `bytes`: where its payload
/// lies once all of it is there, `Ok(None)` until then.
#[inline]
pub fn parse_server_frame(bytes: &[u8]) -> Result<Option<FrameHead>, FrameError> {
    let [first, second, ..] = *bytes else {
        return Ok(None);
    };
    if second & 0x80 != 0 {
        return Err(FrameError::Masked);
    }
    let (len, start) = match second & 0x7f {
        126 => match bytes.get(2..4) {
            Some(b) => (u64::from(u16::from_be_bytes([b[0], b[1]])), 4),
            None => return Ok(None),
        },
        127 => match bytes.get(2..10) {
            Some(b) => (u64::from_be_bytes(b.try_into().expect("8 bytes")), 10),
            None => return Ok(None),
        },
        n => (u64::from(n), 2),
    };
    let end = usize::try_from(len)
        .ok()
        .and_then(|len| len.checked_add(start))
        .ok_or(FrameError::TooLong(len))?;
    if bytes.len() < end {
        return Ok(None);
    }
    Ok(Some(FrameHead {
        fin: first & 0x80 != 0,
        rsv: (first >> 4) & 0x7,
        opcode: first & 0x0f,
        payload: start..end,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An unmasked server frame, written out by hand.
    fn server_frame(first: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![first];
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
    fn server_frames_of_every_length_form_parse() {
        for len in [0, 5, 125, 126, 300, 65_535, 65_536, 70_000] {
            let payload = vec![b'a'; len];
            let f = server_frame(0x81, &payload);
            let head = parse_server_frame(&f).unwrap().unwrap();
            assert_eq!((head.fin, head.rsv, head.opcode), (true, 0, opcode::TEXT));
            assert_eq!(head.payload.len(), len);
            assert_eq!(head.len(), f.len());
            // Every proper prefix needs more bytes; none is an error.
            for cut in [0, 1, 2, 3, f.len() - 1] {
                if cut < f.len() {
                    assert_eq!(parse_server_frame(&f[..cut]), Ok(None), "{len} cut {cut}");
                }
            }
        }
    }

    #[test]
    fn many_frames_parse_from_one_buffer() {
        let mut buf = server_frame(0x01, b"he");
        buf.extend(server_frame(0x80, b"llo"));
        buf.extend(server_frame(0x89, b""));
        buf.extend(server_frame(0x88, &close_payload(1002, "bye")));
        let mut at = 0;
        let mut seen = Vec::new();
        while let Some(head) = parse_server_frame(&buf[at..]).unwrap() {
            let payload = &buf[at + head.payload.start..at + head.payload.end];
            seen.push((head.fin, head.opcode, payload.to_vec()));
            at += head.len();
        }
        assert_eq!(at, buf.len());
        assert_eq!(
            seen,
            [
                (false, opcode::TEXT, b"he".to_vec()),
                (true, opcode::CONTINUATION, b"llo".to_vec()),
                (true, opcode::PING, vec![]),
                (true, opcode::CLOSE, close_payload(1002, "bye")),
            ]
        );
        assert_eq!(close_code(&seen[3].2), Some(1002));
        assert_eq!(close_code(&[]), None);
    }

    #[test]
    fn rsv_bits_are_reported() {
        let head = parse_server_frame(&[0xf2, 0]).unwrap().unwrap();
        assert_eq!((head.fin, head.rsv, head.opcode), (true, 7, opcode::BINARY));
    }

    #[test]
    fn masked_or_impossible_server_frames_are_errors() {
        assert_eq!(
            parse_server_frame(&[0x81, 0x82, 1, 2, 3, 4, 0, 0]),
            Err(FrameError::Masked)
        );
        if usize::BITS == 64 {
            let mut f = vec![0x82, 127];
            f.extend_from_slice(&u64::MAX.to_be_bytes());
            assert_eq!(parse_server_frame(&f), Err(FrameError::TooLong(u64::MAX)));
        }
    }

    #[test]
    fn client_frames_are_masked_and_sized() {
        assert_eq!(
            frame(Header::new(opcode::TEXT), b"hi"),
            [0x81, 0x82, 0, 0, 0, 0, b'h', b'i']
        );
        let masked = frame(Header::new(opcode::TEXT).mask(Some([1, 2, 3, 4])), b"hello");
        assert_eq!(
            masked,
            [
                0x81,
                0x85,
                1,
                2,
                3,
                4,
                b'h' ^ 1,
                b'e' ^ 2,
                b'l' ^ 3,
                b'l' ^ 4,
                b'o' ^ 1
            ]
        );
        let mut long = Vec::new();
        write_text_with(&mut long, 300, |o| o.resize(o.len() + 300, b'x'));
        assert_eq!(&long[..4], &[0x81, 0x80 | 126, 1, 44]);
        assert_eq!(long.len(), 4 + 4 + 300);
        let huge = frame(Header::new(opcode::BINARY), &vec![0; 70_000]);
        assert_eq!(&huge[..2], &[0x82, 0x80 | 127]);
        assert_eq!(&huge[2..10], &70_000u64.to_be_bytes());
    }

    #[test]
    fn invalid_client_frames_can_be_built() {
        // Unmasked, not final, RSV1 set, a reserved opcode.
        let header = Header {
            fin: false,
            rsv: 0b100,
            opcode: 0xb,
            mask: None,
        };
        assert_eq!(frame(header, b"x"), [0x4b, 0x01, b'x']);
        assert_eq!(
            frame(Header::new(opcode::CONTINUATION).fin(false), b""),
            [0x00, 0x80, 0, 0, 0, 0]
        );
        assert!(opcode::is_control(opcode::PING) && opcode::is_control(0xb));
        assert!(!opcode::is_control(opcode::BINARY));
    }

    #[test]
    fn upgrade_request_names_the_key_and_extra_headers() {
        let request = upgrade_request("127.0.0.1:9", "/ws", SAMPLE_KEY, &[("Origin", "https://x")]);
        assert!(request.starts_with("GET /ws HTTP/1.1\r\nHost: 127.0.0.1:9\r\n"));
        assert!(request.contains("\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"));
        assert!(request.contains("\r\nSec-WebSocket-Version: 13\r\n"));
        assert!(request.ends_with("\r\nOrigin: https://x\r\n\r\n"));
    }

    #[test]
    fn upgrade_responses_are_checked() {
        // RFC 6455 section 1.3's example key and answer.
        assert_eq!(accept_key(SAMPLE_KEY), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        let good = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
                     Connection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n\x81\x00";
        let head = parse_response_head(good).unwrap().unwrap();
        assert_eq!(head.status, 101);
        assert_eq!(head.len, good.len() - 2, "frames start after the head");
        assert_eq!(check_upgrade(&head, SAMPLE_KEY), Ok(()));
        assert!(matches!(
            check_upgrade(&head, "AQIDBAUGBwgJCgsMDQ4PEA=="),
            Err(UpgradeError::BadAccept(_))
        ));
        assert_eq!(parse_response_head(&good[..20]), Ok(None));

        let refused = b"HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\n\r\n";
        let head = parse_response_head(refused).unwrap().unwrap();
        assert_eq!(
            check_upgrade(&head, SAMPLE_KEY),
            Err(UpgradeError::Refused(403))
        );

        let no_accept = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n";
        let head = parse_response_head(no_accept).unwrap().unwrap();
        assert!(matches!(
            check_upgrade(&head, SAMPLE_KEY),
            Err(UpgradeError::BadAccept(_))
        ));

        assert!(matches!(
            parse_response_head(b"\x16\x03\x01 not http\r\n\r\n"),
            Err(UpgradeError::NotHttp(_))
        ));
        let endless = [
            b"HTTP/1.1 101 OK\r\n".as_slice(),
            &[b'x'; MAX_RESPONSE_HEAD],
        ]
        .concat();
        assert_eq!(
            parse_response_head(&endless),
            Err(UpgradeError::HeadTooLong)
        );
    }
}
