//! The outer layer of protocol v2: many byte streams multiplexed over the
//! one byte stream a sandbox offers (an inherited unix socket for
//! bubblewrap, a virtio-serial port for a VM).
//!
//! Wire format of a mux frame: `stream: u32 BE`, `kind: u8`, `len: u32 BE`,
//! then `len` bytes (at most [`MAX_MUX_PAYLOAD`]). Stream 0 carries the
//! handshake; the host opens every other stream (ids it chooses, never
//! reused within a session), and each stream then carries the inner frames
//! of [`crate`] (one request, its events) as opaque bytes.
//!
//! Flow control is per stream and per direction: a side may send at most
//! [`INITIAL_WINDOW`] bytes of `Data` that the other side has not yet
//! returned as `Credit`. A receiver returns credit only once the bytes have
//! left its buffers, so one flooding stream can never fill memory or starve
//! the others; a sender that exceeds its window is a protocol error.

use std::io;

use serde::{Deserialize, Serialize};

/// Bytes of `Data` a side may have in flight per stream.
pub const INITIAL_WINDOW: u32 = 256 * 1024;
/// Largest payload of one mux frame.
pub const MAX_MUX_PAYLOAD: usize = 64 * 1024;
/// Size of the frame header.
pub const HEADER_LEN: usize = 9;
/// The stream that carries the handshake.
pub const CONTROL_STREAM: u32 = 0;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum MuxKind {
    /// JSON [`Hello`], on stream 0: the host's opens a session (and resets
    /// any previous one on the same transport), the agent's answers it.
    Hello = 1,
    /// Host -> agent: a new stream with this id; no payload.
    Open = 2,
    /// Bytes of the stream.
    Data = 3,
    /// `u32 BE`: the receiver has consumed that many more bytes.
    Credit = 4,
    /// The sender will send no more data on this stream (half close).
    Close = 5,
    /// Abort the stream in both directions.
    Reset = 6,
}

impl MuxKind {
    pub fn from_u8(b: u8) -> Option<Self> {
        Some(match b {
            1 => Self::Hello,
            2 => Self::Open,
            3 => Self::Data,
            4 => Self::Credit,
            5 => Self::Close,
            6 => Self::Reset,
            _ => return None,
        })
    }
}

/// The handshake message both sides send on stream 0.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub version: u32,
    /// The agent's pid (0 from the host).
    #[serde(default)]
    pub pid: u32,
    /// Set by the agent when it refuses the session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// What the agent can do beyond the version's base requests (see
    /// [`crate::FEATURES`]); an older agent sends none, so the host can
    /// refuse a request clearly instead of sending one the agent cannot
    /// decode.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub features: Vec<String>,
}

/// One decoded mux frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub stream: u32,
    pub kind: MuxKind,
    pub len: usize,
}

pub fn encode_header(stream: u32, kind: MuxKind, len: usize) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..4].copy_from_slice(&stream.to_be_bytes());
    h[4] = kind as u8;
    h[5..].copy_from_slice(&(len as u32).to_be_bytes());
    h
}

/// A whole frame as one buffer.
pub fn encode_frame(stream: u32, kind: MuxKind, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(HEADER_LEN + payload.len());
    v.extend_from_slice(&encode_header(stream, kind, payload.len()));
    v.extend_from_slice(payload);
    v
}

pub fn credit_frame(stream: u32, n: u32) -> Vec<u8> {
    encode_frame(stream, MuxKind::Credit, &n.to_be_bytes())
}

pub fn hello_frame(hello: &Hello) -> Vec<u8> {
    encode_frame(CONTROL_STREAM, MuxKind::Hello, &serde_json::to_vec(hello).expect("hello always serialises"))
}

/// Validates a header: known kind, payload within [`MAX_MUX_PAYLOAD`].
pub fn parse_header(h: &[u8; HEADER_LEN]) -> io::Result<Header> {
    let stream = u32::from_be_bytes([h[0], h[1], h[2], h[3]]);
    let kind = MuxKind::from_u8(h[4]).ok_or_else(|| bad(format!("unknown mux frame kind {}", h[4])))?;
    let len = u32::from_be_bytes([h[5], h[6], h[7], h[8]]) as usize;
    if len > MAX_MUX_PAYLOAD {
        return Err(bad(format!("mux frame of {len} bytes exceeds the {MAX_MUX_PAYLOAD}-byte limit")));
    }
    Ok(Header { stream, kind, len })
}

pub fn parse_credit(payload: &[u8]) -> io::Result<u32> {
    <[u8; 4]>::try_from(payload).map(u32::from_be_bytes).map_err(|_| bad("credit frame must carry 4 bytes".into()))
}

pub fn parse_hello(payload: &[u8]) -> io::Result<Hello> {
    serde_json::from_slice(payload).map_err(|e| bad(format!("bad hello: {e}")))
}

/// Largest `Hello` payload a hunting decoder accepts (real ones are ~40 bytes).
const MAX_HELLO: usize = 1024;

/// Incremental decoder: feed it bytes as they arrive, take whole frames out.
#[derive(Default)]
pub struct Decoder {
    buf: Vec<u8>,
    start: usize,
    /// Skipping bytes until a valid `Hello` frame: see [`Decoder::hunting`].
    hunting: bool,
}

impl Decoder {
    /// A decoder for a transport that may carry leftovers of an earlier
    /// session (a serial port outlives the host that spoke on it, and a
    /// hang-up can cut a frame in half): it discards bytes until it finds a
    /// whole, valid `Hello` frame on the control stream, then decodes
    /// normally from there.
    pub fn hunting() -> Self {
        Decoder { hunting: true, ..Decoder::default() }
    }

    /// Drops everything buffered and hunts for the next `Hello` (after a
    /// hang-up or a framing error).
    pub fn resync(&mut self) {
        *self = Decoder::hunting();
    }

    /// Bytes buffered but not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    pub fn feed(&mut self, bytes: &[u8]) {
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete frame, if one is buffered.
    pub fn next_frame(&mut self) -> io::Result<Option<(Header, Vec<u8>)>> {
        if self.hunting && !self.hunt() {
            return Ok(None);
        }
        let avail = &self.buf[self.start..];
        if avail.len() < HEADER_LEN {
            self.compact();
            return Ok(None);
        }
        let header = parse_header(avail[..HEADER_LEN].try_into().expect("length checked"))?;
        if avail.len() < HEADER_LEN + header.len {
            self.compact();
            return Ok(None);
        }
        let payload = avail[HEADER_LEN..HEADER_LEN + header.len].to_vec();
        self.start += HEADER_LEN + header.len;
        Ok(Some((header, payload)))
    }

    /// Moves `start` to the first whole, valid `Hello` frame. False when
    /// none is buffered yet; bytes that cannot begin one are dropped.
    fn hunt(&mut self) -> bool {
        let prefix = encode_header(CONTROL_STREAM, MuxKind::Hello, 0);
        let mut at = self.start;
        while at < self.buf.len() {
            let rest = &self.buf[at..];
            let n = rest.len().min(5);
            if rest[..n] != prefix[..n] {
                at += 1;
                continue;
            }
            if rest.len() < HEADER_LEN {
                break; // a possible start: wait for more bytes
            }
            let len = u32::from_be_bytes([rest[5], rest[6], rest[7], rest[8]]) as usize;
            if len > MAX_HELLO {
                at += 1;
                continue;
            }
            if rest.len() < HEADER_LEN + len {
                break;
            }
            if parse_hello(&rest[HEADER_LEN..HEADER_LEN + len]).is_ok() {
                self.start = at;
                self.hunting = false;
                return true;
            }
            at += 1;
        }
        self.start = at;
        self.compact();
        false
    }

    fn compact(&mut self) {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
    }
}

fn bad(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hunting_decoder_skips_leftovers_up_to_the_next_hello() {
        let hello = Hello { version: 2, pid: 7, ..Hello::default() };
        // Half a data frame, garbage that looks like a Hello header, then a
        // real Hello and a frame of the new session.
        let mut wire = encode_frame(3, MuxKind::Data, b"old session bytes")[..12].to_vec();
        wire.extend_from_slice(&encode_header(CONTROL_STREAM, MuxKind::Hello, 3));
        wire.extend_from_slice(b"{x}");
        wire.extend(hello_frame(&hello));
        wire.extend(encode_frame(1, MuxKind::Open, b""));
        for chunk_len in [1, 4, 9, wire.len()] {
            let mut d = Decoder::hunting();
            let mut got = Vec::new();
            for chunk in wire.chunks(chunk_len) {
                d.feed(chunk);
                while let Some(f) = d.next_frame().unwrap() {
                    got.push(f);
                }
            }
            assert_eq!(got.len(), 2, "chunks of {chunk_len}");
            assert_eq!(parse_hello(&got[0].1).unwrap(), hello);
            assert_eq!((got[1].0.stream, got[1].0.kind), (1, MuxKind::Open));
        }
    }

    #[test]
    fn a_hunting_decoder_does_not_hoard_garbage() {
        let mut d = Decoder::hunting();
        for _ in 0..1000 {
            d.feed(&[0xAB; 4096]);
            assert!(d.next_frame().unwrap().is_none());
        }
        assert!(d.buffered() < HEADER_LEN, "kept {} bytes of garbage", d.buffered());
    }

    #[test]
    fn resync_forgets_a_half_frame() {
        let mut d = Decoder::default();
        d.feed(&encode_frame(5, MuxKind::Data, b"cut short")[..11]);
        assert!(d.next_frame().unwrap().is_none());
        d.resync();
        d.feed(&hello_frame(&Hello { version: 2, ..Hello::default() }));
        let (h, _) = d.next_frame().unwrap().expect("the hello");
        assert_eq!((h.stream, h.kind), (CONTROL_STREAM, MuxKind::Hello));
    }

    #[test]
    fn decoder_reassembles_split_frames() {
        let mut wire = encode_frame(7, MuxKind::Data, b"hello");
        wire.extend(credit_frame(7, 1234));
        wire.extend(encode_frame(9, MuxKind::Close, b""));
        let mut d = Decoder::default();
        let mut got = Vec::new();
        for chunk in wire.chunks(3) {
            d.feed(chunk);
            while let Some(f) = d.next_frame().unwrap() {
                got.push(f);
            }
        }
        assert_eq!(got.len(), 3);
        assert_eq!((got[0].0.stream, got[0].0.kind, got[0].1.as_slice()), (7, MuxKind::Data, &b"hello"[..]));
        assert_eq!(parse_credit(&got[1].1).unwrap(), 1234);
        assert_eq!((got[2].0.stream, got[2].0.kind), (9, MuxKind::Close));
    }

    #[test]
    fn rejects_oversized_and_unknown_frames() {
        assert!(parse_header(&encode_header(1, MuxKind::Data, MAX_MUX_PAYLOAD + 1)).is_err());
        let mut h = encode_header(1, MuxKind::Data, 1);
        h[4] = 42;
        assert!(parse_header(&h).is_err());
        assert!(parse_credit(b"abc").is_err());
    }

    /// The byte layout is the protocol: a change here breaks deployed agents.
    #[test]
    fn wire_snapshot() {
        assert_eq!(encode_frame(0x0102_0304, MuxKind::Data, b"ab"), [1, 2, 3, 4, 3, 0, 0, 0, 2, b'a', b'b']);
        assert_eq!(credit_frame(5, 65536), [0, 0, 0, 5, 4, 0, 0, 0, 4, 0, 1, 0, 0]);
        let hello = Hello { version: 2, pid: 42, ..Hello::default() };
        assert_eq!(serde_json::to_string(&hello).unwrap(), r#"{"version":2,"pid":42}"#);
        let hello = Hello { version: 2, pid: 42, features: vec!["files".into()], ..Hello::default() };
        assert_eq!(serde_json::to_string(&hello).unwrap(), r#"{"version":2,"pid":42,"features":["files"]}"#);
        // An older agent's hello (no features) still decodes.
        assert_eq!(parse_hello(br#"{"version":2,"pid":1}"#).unwrap().features, Vec::<String>::new());
        assert_eq!(
            [MuxKind::Hello, MuxKind::Open, MuxKind::Data, MuxKind::Credit, MuxKind::Close, MuxKind::Reset].map(|k| k as u8),
            [1, 2, 3, 4, 5, 6]
        );
    }
}
