//! RFC 6455 framing, server side, without I/O.
//!
//! [`Decoder`] takes the bytes a client sent and yields whole messages and
//! control frames; it reassembles fragments, unmasks, checks UTF-8 of text
//! (also across fragments) and close codes, and enforces size limits. Frame
//! headers are parsed by tungstenite's `FrameHeader`. The encoders build
//! unmasked server frames as one `Bytes` each, so a frame for many
//! recipients is encoded once and shared.
//!
//! An idle decoder holds no buffer: the partial-frame buffer is released as
//! soon as it is empty.

use std::io::Cursor;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tungstenite::protocol::frame::coding::{CloseCode as WsCloseCode, Control, Data, OpCode};
use tungstenite::protocol::frame::FrameHeader;

/// What the client sent, one whole message or control frame at a time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// A complete text message, valid UTF-8.
    Text(Bytes),
    /// A complete binary message.
    Binary(Bytes),
    Ping(Bytes),
    Pong(Bytes),
    /// A close frame: the code (absent when the client sent none) and the
    /// reason.
    Close(Option<u16>, Bytes),
}

/// Why the connection must be closed, with the close code to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("protocol error: {0}")]
    Protocol(&'static str),
    #[error("text is not valid UTF-8")]
    InvalidUtf8,
    #[error("message larger than the limit")]
    TooLarge,
}

impl DecodeError {
    /// The close code RFC 6455 asks for.
    pub fn close_code(self) -> u16 {
        match self {
            DecodeError::Protocol(_) => 1002,
            DecodeError::InvalidUtf8 => 1007,
            DecodeError::TooLarge => 1009,
        }
    }
}

/// Limits the decoder enforces.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest payload of one frame.
    pub max_frame_bytes: usize,
    /// Largest message after reassembly.
    pub max_message_bytes: usize,
}

/// A message being reassembled from fragments.
#[derive(Debug)]
struct Fragments {
    is_text: bool,
    payload: BytesMut,
}

/// Incremental frame decoder for one connection.
#[derive(Debug)]
pub struct Decoder {
    /// The limits, as `u32` to keep the decoder (one per connection) small.
    max_frame_bytes: u32,
    max_message_bytes: u32,
    /// Bytes received and not yet decoded (at most one partial frame after
    /// [`Decoder::next`] returned `None`).
    pending: BytesMut,
    /// Boxed: rarely present, and the decoder lives in every connection.
    fragments: Option<Box<Fragments>>,
}

impl Decoder {
    pub fn new(limits: Limits) -> Self {
        Decoder {
            max_frame_bytes: u32::try_from(limits.max_frame_bytes).unwrap_or(u32::MAX),
            max_message_bytes: u32::try_from(limits.max_message_bytes).unwrap_or(u32::MAX),
            pending: BytesMut::new(),
            fragments: None,
        }
    }

    /// Adds received bytes.
    pub fn feed(&mut self, data: &[u8]) {
        self.pending.extend_from_slice(data);
    }

    /// True when nothing is buffered: the decoder then owns no memory.
    pub fn is_idle(&self) -> bool {
        self.pending.capacity() == 0 && self.fragments.is_none()
    }

    /// The next complete message or control frame, `Ok(None)` when more
    /// bytes are needed.
    pub fn decode(&mut self) -> Result<Option<Incoming>, DecodeError> {
        loop {
            let Some((header, payload)) = self.next_frame()? else {
                if self.pending.is_empty() {
                    // Release the buffer: idle connections keep none.
                    self.pending = BytesMut::new();
                }
                return Ok(None);
            };
            if let Some(incoming) = self.on_frame(header, payload)? {
                return Ok(Some(incoming));
            }
        }
    }

    /// Splits one whole, unmasked frame off `pending`.
    fn next_frame(&mut self) -> Result<Option<(FrameHeader, BytesMut)>, DecodeError> {
        let mut cursor = Cursor::new(&self.pending[..]);
        let (header, len) = match FrameHeader::parse(&mut cursor) {
            Ok(Some(parsed)) => parsed,
            Ok(None) => return Ok(None),
            Err(_) => return Err(DecodeError::Protocol("bad frame header")),
        };
        if len > u64::from(self.max_frame_bytes) {
            return Err(DecodeError::TooLarge);
        }
        let header_len = cursor.position() as usize;
        let len = len as usize;
        if self.pending.len() < header_len + len {
            self.pending.reserve(header_len + len - self.pending.len());
            return Ok(None);
        }
        self.pending.advance(header_len);
        let mut payload = self.pending.split_to(len);
        let Some(mask) = header.mask else {
            return Err(DecodeError::Protocol("client frames must be masked"));
        };
        unmask(&mut payload, mask);
        Ok(Some((header, payload)))
    }

    fn on_frame(
        &mut self,
        header: FrameHeader,
        payload: BytesMut,
    ) -> Result<Option<Incoming>, DecodeError> {
        if header.rsv1 || header.rsv2 || header.rsv3 {
            return Err(DecodeError::Protocol(
                "reserved bits set without an extension",
            ));
        }
        match header.opcode {
            OpCode::Control(control) => {
                if !header.is_final {
                    return Err(DecodeError::Protocol("fragmented control frame"));
                }
                if payload.len() > 125 {
                    return Err(DecodeError::Protocol("control frame over 125 bytes"));
                }
                let payload = payload.freeze();
                match control {
                    Control::Ping => Ok(Some(Incoming::Ping(payload))),
                    Control::Pong => Ok(Some(Incoming::Pong(payload))),
                    Control::Close => parse_close(payload).map(Some),
                    Control::Reserved(_) => Err(DecodeError::Protocol("reserved opcode")),
                }
            }
            OpCode::Data(Data::Reserved(_)) => Err(DecodeError::Protocol("reserved opcode")),
            OpCode::Data(Data::Continue) => {
                let Some(fragments) = self.fragments.as_mut() else {
                    return Err(DecodeError::Protocol("continuation without a message"));
                };
                if fragments.payload.len() + payload.len() > self.max_message_bytes as usize {
                    return Err(DecodeError::TooLarge);
                }
                fragments.payload.unsplit(payload);
                if !header.is_final {
                    return Ok(None);
                }
                let Fragments { is_text, payload } = *self.fragments.take().expect("checked above");
                finish(is_text, payload).map(Some)
            }
            OpCode::Data(kind) => {
                if self.fragments.is_some() {
                    return Err(DecodeError::Protocol("new message inside a fragmented one"));
                }
                if payload.len() > self.max_message_bytes as usize {
                    return Err(DecodeError::TooLarge);
                }
                let is_text = kind == Data::Text;
                if header.is_final {
                    return finish(is_text, payload).map(Some);
                }
                self.fragments = Some(Box::new(Fragments { is_text, payload }));
                Ok(None)
            }
        }
    }
}

fn finish(is_text: bool, payload: BytesMut) -> Result<Incoming, DecodeError> {
    let payload = payload.freeze();
    if !is_text {
        return Ok(Incoming::Binary(payload));
    }
    if std::str::from_utf8(&payload).is_err() {
        return Err(DecodeError::InvalidUtf8);
    }
    Ok(Incoming::Text(payload))
}

fn parse_close(payload: Bytes) -> Result<Incoming, DecodeError> {
    match payload.len() {
        0 => Ok(Incoming::Close(None, Bytes::new())),
        1 => Err(DecodeError::Protocol("close frame with a one-byte payload")),
        _ => {
            let code = u16::from_be_bytes([payload[0], payload[1]]);
            if !WsCloseCode::from(code).is_allowed() {
                return Err(DecodeError::Protocol("close code not allowed"));
            }
            let reason = payload.slice(2..);
            if std::str::from_utf8(&reason).is_err() {
                return Err(DecodeError::InvalidUtf8);
            }
            Ok(Incoming::Close(Some(code), reason))
        }
    }
}

/// XORs `data` with the 4-byte `mask`, eight bytes at a time.
pub fn unmask(data: &mut [u8], mask: [u8; 4]) {
    let mask64 = u64::from_ne_bytes([
        mask[0], mask[1], mask[2], mask[3], mask[0], mask[1], mask[2], mask[3],
    ]);
    let mut chunks = data.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let word = u64::from_ne_bytes(chunk.try_into().expect("8 bytes")) ^ mask64;
        chunk.copy_from_slice(&word.to_ne_bytes());
    }
    for (i, byte) in chunks.into_remainder().iter_mut().enumerate() {
        *byte ^= mask[i & 3];
    }
}

/// An unmasked server frame with the FIN bit set.
fn server_frame(opcode: OpCode, payload: &[u8]) -> Bytes {
    let header = FrameHeader {
        opcode,
        ..FrameHeader::default()
    };
    let mut out = BytesMut::with_capacity(header.len(payload.len() as u64) + payload.len());
    let mut writer = (&mut out).writer();
    header
        .format(payload.len() as u64, &mut writer)
        .expect("writing to memory cannot fail");
    out.put_slice(payload);
    out.freeze()
}

/// A text frame. Encode once, then share the `Bytes` among recipients.
pub fn text_frame(payload: &[u8]) -> Bytes {
    server_frame(OpCode::Data(Data::Text), payload)
}

pub fn binary_frame(payload: &[u8]) -> Bytes {
    server_frame(OpCode::Data(Data::Binary), payload)
}

pub fn ping_frame(payload: &[u8]) -> Bytes {
    server_frame(OpCode::Control(Control::Ping), payload)
}

pub fn pong_frame(payload: &[u8]) -> Bytes {
    server_frame(OpCode::Control(Control::Pong), payload)
}

/// A close frame with `code` and a reason cut to fit a control frame.
pub fn close_frame(code: u16, reason: &str) -> Bytes {
    let mut cut = reason.len().min(123);
    while !reason.is_char_boundary(cut) {
        cut -= 1;
    }
    let mut payload = Vec::with_capacity(2 + cut);
    payload.extend_from_slice(&code.to_be_bytes());
    payload.extend_from_slice(&reason.as_bytes()[..cut]);
    server_frame(OpCode::Control(Control::Close), &payload)
}

/// A masked client-to-server frame with first byte `first_byte` (FIN,
/// RSV and opcode): what a browser sends. The server never sends one;
/// tests, fuzz targets and tools build their input with it.
pub fn masked_client_frame(first_byte: u8, mask: [u8; 4], payload: &[u8]) -> Vec<u8> {
    let mut out = vec![first_byte];
    match payload.len() {
        n if n < 126 => out.push(0x80 | n as u8),
        n if n < 65536 => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        max_frame_bytes: 1 << 16,
        max_message_bytes: 1 << 17,
    };

    /// A masked client frame.
    fn client_frame(first_byte: u8, payload: &[u8]) -> Vec<u8> {
        masked_client_frame(first_byte, [1, 2, 3, 4], payload)
    }

    fn decode_all(bytes: &[u8]) -> Result<Vec<Incoming>, DecodeError> {
        let mut decoder = Decoder::new(LIMITS);
        decoder.feed(bytes);
        let mut out = Vec::new();
        while let Some(m) = decoder.decode()? {
            out.push(m);
        }
        Ok(out)
    }

    #[test]
    fn text_message() {
        let got = decode_all(&client_frame(0x81, b"hello")).unwrap();
        assert_eq!(got, vec![Incoming::Text(Bytes::from_static(b"hello"))]);
    }

    #[test]
    fn byte_at_a_time_then_idle() {
        let frame = client_frame(0x82, &[7u8; 300]);
        let mut decoder = Decoder::new(LIMITS);
        let mut got = Vec::new();
        for b in &frame {
            decoder.feed(std::slice::from_ref(b));
            while let Some(m) = decoder.decode().unwrap() {
                got.push(m);
            }
        }
        assert_eq!(got, vec![Incoming::Binary(Bytes::from(vec![7u8; 300]))]);
        assert!(decoder.is_idle());
    }

    #[test]
    fn fragments_with_a_ping_between() {
        let mut bytes = client_frame(0x01, "héllo ".as_bytes());
        bytes.extend(client_frame(0x89, b"p"));
        bytes.extend(client_frame(0x80, "wörld".as_bytes()));
        let got = decode_all(&bytes).unwrap();
        assert_eq!(
            got,
            vec![
                Incoming::Ping(Bytes::from_static(b"p")),
                Incoming::Text(Bytes::from("héllo wörld")),
            ]
        );
    }

    #[test]
    fn utf8_split_across_fragments_is_valid() {
        let text = "é".as_bytes();
        let mut bytes = client_frame(0x01, &text[..1]);
        bytes.extend(client_frame(0x80, &text[1..]));
        assert_eq!(
            decode_all(&bytes).unwrap(),
            vec![Incoming::Text(Bytes::from("é"))]
        );
    }

    #[test]
    fn invalid_utf8_is_1007() {
        let err = decode_all(&client_frame(0x81, &[0xff, 0xfe])).unwrap_err();
        assert_eq!(err.close_code(), 1007);
    }

    #[test]
    fn unmasked_frame_is_1002() {
        let err = decode_all(&[0x81, 0x01, b'a']).unwrap_err();
        assert_eq!(err.close_code(), 1002);
    }

    #[test]
    fn protocol_violations() {
        // Continuation with nothing to continue.
        assert!(decode_all(&client_frame(0x80, b"x")).is_err());
        // Reserved bit.
        assert!(decode_all(&client_frame(0xC1, b"x")).is_err());
        // Reserved opcode.
        assert!(decode_all(&client_frame(0x83, b"x")).is_err());
        // Fragmented ping.
        assert!(decode_all(&client_frame(0x09, b"x")).is_err());
        // Ping over 125 bytes.
        assert!(decode_all(&client_frame(0x89, &[0; 126])).is_err());
        // New text while a fragmented one is open.
        let mut bytes = client_frame(0x01, b"a");
        bytes.extend(client_frame(0x81, b"b"));
        assert!(decode_all(&bytes).is_err());
    }

    #[test]
    fn close_frames() {
        assert_eq!(
            decode_all(&client_frame(0x88, &[])).unwrap(),
            vec![Incoming::Close(None, Bytes::new())]
        );
        let mut ok = 1000u16.to_be_bytes().to_vec();
        ok.extend_from_slice(b"bye");
        assert_eq!(
            decode_all(&client_frame(0x88, &ok)).unwrap(),
            vec![Incoming::Close(Some(1000), Bytes::from_static(b"bye"))]
        );
        assert!(decode_all(&client_frame(0x88, &[3])).is_err());
        assert!(decode_all(&client_frame(0x88, &999u16.to_be_bytes())).is_err());
        assert!(decode_all(&client_frame(0x88, &1005u16.to_be_bytes())).is_err());
        let mut bad_reason = 1000u16.to_be_bytes().to_vec();
        bad_reason.push(0xff);
        assert_eq!(
            decode_all(&client_frame(0x88, &bad_reason)).unwrap_err(),
            DecodeError::InvalidUtf8
        );
    }

    #[test]
    fn size_limits_are_1009() {
        let small = Limits {
            max_frame_bytes: 10,
            max_message_bytes: 15,
        };
        let mut decoder = Decoder::new(small);
        decoder.feed(&client_frame(0x81, &[b'a'; 11]));
        assert_eq!(decoder.decode().unwrap_err().close_code(), 1009);

        let mut decoder = Decoder::new(small);
        decoder.feed(&client_frame(0x01, &[b'a'; 10]));
        decoder.feed(&client_frame(0x80, &[b'a'; 10]));
        assert_eq!(decoder.decode().unwrap_err(), DecodeError::TooLarge);
    }

    #[test]
    fn server_frames() {
        assert_eq!(&text_frame(b"hi")[..], &[0x81, 2, b'h', b'i']);
        let long = text_frame(&[b'x'; 300]);
        assert_eq!(&long[..4], &[0x81, 126, 1, 44]);
        assert_eq!(&close_frame(4001, "")[..], &[0x88, 2, 0x0f, 0xa1]);
        assert_eq!(close_frame(1000, &"é".repeat(100)).len(), 2 + 2 + 122);
    }

    #[test]
    fn unmask_matches_bytewise() {
        let mask = [0xa1, 0xb2, 0xc3, 0xd4];
        let data: Vec<u8> = (0..37u8).collect();
        let mut fast = data.clone();
        unmask(&mut fast, mask);
        let slow: Vec<u8> = data
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ mask[i % 4])
            .collect();
        assert_eq!(fast, slow);
    }
}
