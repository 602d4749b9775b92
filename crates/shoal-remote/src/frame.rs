//! The wire format: every byte on a connection belongs to a frame.
//!
//! ```text
//! offset  size  field
//!      0     4  magic          b"SHOL"
//!      4     1  version        PROTOCOL_VERSION (1)
//!      5     1  kind           1 Hello, 2 Challenge, 3 Proof, 4 Accept, 5 Reject, 6 Data
//!      6     2  reserved       0 (anything else is malformed)
//!      8     4  body length    big-endian u32; header + body <= the configured frame limit
//!     12     …  body
//! ```
//!
//! A `Data` body is the recipient's incarnation (big-endian u64; 0 = whichever incarnation
//! listens at the address) followed by the payload. The handshake bodies are described in
//! the crate docs (Handshake).
//!
//! A reader that meets a wrong magic, another version, an unknown kind, non-zero reserved
//! bits or a length over its limit closes that connection and logs why; the node goes on.

use std::io;
use std::ops::Range;

use tokio::io::{AsyncRead, AsyncReadExt};

/// The first four bytes of every frame.
pub const MAGIC: [u8; 4] = *b"SHOL";

/// The protocol version every frame carries. A peer speaking another version is refused.
pub const PROTOCOL_VERSION: u8 = 1;

/// Bytes in a frame header.
pub const HEADER_LEN: usize = 12;

/// Bytes a `Data` frame spends before its payload (the recipient's incarnation).
pub const DATA_PREFIX_LEN: usize = 8;

/// The limit on frames before the handshake has completed (handshake frames are small).
pub(crate) const HANDSHAKE_FRAME_LIMIT: usize = 4096;

/// What a frame is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameKind {
    /// Handshake, dialer → acceptor: cluster name, identity, nonce.
    Hello = 1,
    /// Handshake, acceptor → dialer: identity, nonce, the acceptor's proof.
    Challenge = 2,
    /// Handshake, dialer → acceptor: the dialer's proof.
    Proof = 3,
    /// Handshake, acceptor → dialer: the connection is established.
    Accept = 4,
    /// Handshake, either way: refused, with a reason; the connection closes.
    Reject = 5,
    /// A message: recipient incarnation, then the payload.
    Data = 6,
}

impl FrameKind {
    fn from_u8(b: u8) -> Option<Self> {
        Some(match b {
            1 => Self::Hello,
            2 => Self::Challenge,
            3 => Self::Proof,
            4 => Self::Accept,
            5 => Self::Reject,
            6 => Self::Data,
            _ => return None,
        })
    }
}

/// A frame that breaks the wire format. The connection it arrived on is closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The frame does not start with [`MAGIC`] (not a Shoal peer, or a desynchronised stream).
    #[error("bad magic {0:02x?}")]
    BadMagic([u8; 4]),
    /// The peer speaks another protocol version.
    #[error("unsupported protocol version {0} (this node speaks {PROTOCOL_VERSION})")]
    UnsupportedVersion(u8),
    /// The kind byte is not a known [`FrameKind`].
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
    /// Reserved header bits are set.
    #[error("reserved header bits set: {0:#06x}")]
    ReservedBits(u16),
    /// The frame is longer than the limit.
    #[error("frame of {len} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Header plus body, as announced.
        len: u64,
        /// The reader's limit.
        limit: usize,
    },
    /// The body does not parse.
    #[error("malformed {0} frame")]
    Malformed(&'static str),
}

/// Appends a header for a frame of `kind` whose body length is patched by [`finish`].
/// Returns the frame's start offset in `out`.
pub(crate) fn begin(out: &mut Vec<u8>, kind: FrameKind) -> usize {
    let start = out.len();
    out.extend_from_slice(&MAGIC);
    out.push(PROTOCOL_VERSION);
    out.push(kind as u8);
    out.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    start
}

/// Appends the header and incarnation prefix of a `Data` frame (length patched by
/// [`finish`]); returns the frame's start offset.
pub(crate) fn begin_data(out: &mut Vec<u8>, incarnation: u64) -> usize {
    let start = out.len();
    let mut head = [0u8; HEADER_LEN + DATA_PREFIX_LEN];
    head[..4].copy_from_slice(&MAGIC);
    head[4] = PROTOCOL_VERSION;
    head[5] = FrameKind::Data as u8;
    head[HEADER_LEN..].copy_from_slice(&incarnation.to_be_bytes());
    out.extend_from_slice(&head);
    start
}

/// Patches the body length of the frame that starts at `start`; returns the frame's length
/// (header included).
pub(crate) fn finish(out: &mut [u8], start: usize) -> usize {
    let len = out.len() - start;
    let body = (len - HEADER_LEN) as u32;
    out[start + 8..start + 12].copy_from_slice(&body.to_be_bytes());
    len
}

/// A whole frame of `kind` around `body`, in a fresh buffer (handshake frames; tests and
/// tools that speak the wire format).
pub fn encode(kind: FrameKind, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + body.len());
    let start = begin(&mut out, kind);
    out.extend_from_slice(body);
    finish(&mut out, start);
    out
}

/// Checks a header; returns the kind and the body length.
pub(crate) fn parse_header(
    h: &[u8; HEADER_LEN],
    limit: usize,
) -> Result<(FrameKind, usize), FrameError> {
    let magic = [h[0], h[1], h[2], h[3]];
    if magic != MAGIC {
        return Err(FrameError::BadMagic(magic));
    }
    if h[4] != PROTOCOL_VERSION {
        return Err(FrameError::UnsupportedVersion(h[4]));
    }
    let kind = FrameKind::from_u8(h[5]).ok_or(FrameError::UnknownKind(h[5]))?;
    let reserved = u16::from_be_bytes([h[6], h[7]]);
    if reserved != 0 {
        return Err(FrameError::ReservedBits(reserved));
    }
    let body = u32::from_be_bytes([h[8], h[9], h[10], h[11]]) as usize;
    let total = HEADER_LEN as u64 + body as u64;
    if total > limit as u64 {
        return Err(FrameError::TooLarge { len: total, limit });
    }
    Ok((kind, body))
}

/// Why reading frames stopped.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReadError {
    #[error("{0}")]
    Frame(#[from] FrameError),
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
    #[error("connection closed by peer")]
    Eof,
}

/// Reads frames out of a byte stream with one reusable buffer: `fill` reads as much as the
/// stream has, `next` hands out the complete frames in it (no copy, no allocation).
pub(crate) struct FrameReader {
    buf: Vec<u8>,
    start: usize,
    end: usize,
    limit: usize,
}

const READ_CHUNK: usize = 64 * 1024;

impl FrameReader {
    pub(crate) fn new(limit: usize) -> Self {
        Self {
            buf: vec![0; READ_CHUNK.min(limit.max(HEADER_LEN))],
            start: 0,
            end: 0,
            limit,
        }
    }

    /// Changes the frame limit (raised after the handshake).
    pub(crate) fn set_limit(&mut self, limit: usize) {
        self.limit = limit;
    }

    /// The next complete frame in the buffer, as its kind and body range, or `None` if more
    /// bytes are needed.
    pub(crate) fn next(&mut self) -> Result<Option<(FrameKind, Range<usize>)>, FrameError> {
        let avail = self.end - self.start;
        if avail < HEADER_LEN {
            return Ok(None);
        }
        let header: &[u8; HEADER_LEN] = self.buf[self.start..self.start + HEADER_LEN]
            .try_into()
            .expect("header slice has the header length");
        let (kind, body) = parse_header(header, self.limit)?;
        if avail < HEADER_LEN + body {
            return Ok(None);
        }
        let body_start = self.start + HEADER_LEN;
        self.start = body_start + body;
        Ok(Some((kind, body_start..body_start + body)))
    }

    /// The bytes of a range returned by [`next`](Self::next) (valid until the next `fill`).
    pub(crate) fn body(&self, range: Range<usize>) -> &[u8] {
        &self.buf[range]
    }

    /// Reads more bytes from `r`; makes room for the pending frame first.
    pub(crate) async fn fill<R: AsyncRead + Unpin + ?Sized>(
        &mut self,
        r: &mut R,
    ) -> Result<(), ReadError> {
        let pending = self.end - self.start;
        // How much the frame being assembled needs (at least a header).
        let needed = if pending >= HEADER_LEN {
            let header: &[u8; HEADER_LEN] = self.buf[self.start..self.start + HEADER_LEN]
                .try_into()
                .expect("header slice has the header length");
            let (_, body) = parse_header(header, self.limit)?;
            HEADER_LEN + body
        } else {
            HEADER_LEN
        };
        if pending == 0 {
            self.start = 0;
            self.end = 0;
        } else if self.buf.len() - self.start < needed || self.buf.len() - self.end < READ_CHUNK / 4
        {
            self.buf.copy_within(self.start..self.end, 0);
            self.start = 0;
            self.end = pending;
        }
        if self.buf.len() - self.start < needed {
            // start is 0 here; the frame needs a bigger buffer.
            self.buf.resize(needed.max(READ_CHUNK), 0);
        } else if self.buf.len() > 4 * READ_CHUNK && self.end <= READ_CHUNK && needed <= READ_CHUNK
        {
            // A large frame passed; give the memory back.
            self.buf.truncate(READ_CHUNK);
            self.buf.shrink_to_fit();
        }
        let n = r.read(&mut self.buf[self.end..]).await?;
        if n == 0 {
            return Err(ReadError::Eof);
        }
        self.end += n;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_round_trip_through_the_reader() {
        let mut wire = Vec::new();
        for i in 0..100u32 {
            let start = begin(&mut wire, FrameKind::Data);
            wire.extend_from_slice(&i.to_be_bytes().repeat(i as usize));
            finish(&mut wire, start);
        }
        // Feed it in awkward pieces.
        let (mut tx, mut rx) = tokio::io::duplex(7);
        let writer = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            tx.write_all(&wire).await.unwrap();
        });
        let mut reader = FrameReader::new(1 << 20);
        let mut seen = 0u32;
        while seen < 100 {
            while let Some((kind, range)) = reader.next().unwrap() {
                assert_eq!(kind, FrameKind::Data);
                assert_eq!(reader.body(range), seen.to_be_bytes().repeat(seen as usize));
                seen += 1;
            }
            if seen < 100 {
                reader.fill(&mut rx).await.unwrap();
            }
        }
        writer.await.unwrap();
    }

    #[test]
    fn bad_headers_are_named() {
        let good = encode(FrameKind::Data, &[0; 8]);
        let h = |f: &dyn Fn(&mut Vec<u8>)| {
            let mut v = good.clone();
            f(&mut v);
            parse_header(v[..HEADER_LEN].try_into().unwrap(), 100)
        };
        assert_eq!(h(&|_| {}), Ok((FrameKind::Data, 8)));
        assert_eq!(h(&|v| v[0] = b'X'), Err(FrameError::BadMagic(*b"XHOL")));
        assert_eq!(h(&|v| v[4] = 9), Err(FrameError::UnsupportedVersion(9)));
        assert_eq!(h(&|v| v[5] = 77), Err(FrameError::UnknownKind(77)));
        assert_eq!(h(&|v| v[7] = 1), Err(FrameError::ReservedBits(1)));
        assert_eq!(
            h(&|v| v[8..12].copy_from_slice(&u32::MAX.to_be_bytes())),
            Err(FrameError::TooLarge {
                len: HEADER_LEN as u64 + u32::MAX as u64,
                limit: 100
            })
        );
    }
}
