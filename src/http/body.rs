//! The one body decoder: a message body framed by length, by chunks, or by the connection's end,
//! un-framed incrementally and in place.
//!
//! # Design
//! [`BodyDecoder::decode_in_place`] takes the bytes that arrived, moves the payload to the front of the
//! same slice (chunked framing is only ever removed, so the move is always forward) and says how much
//! input it consumed and whether the body is complete. Bytes past the end of the body belong to
//! whatever follows it (a pipelined request, a reused connection's next answer) and are left alone.
//! Every reader of a body uses it: request bodies on the cores, the relay of a node's answer, a node's
//! error answer, the simulator, the blocking client.

use super::chunked::{ChunkedDecoder, ChunkedError};

/// How a message body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body.
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Until the peer closes the connection (responses only).
    UntilClose,
}

/// Why a body could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    #[error("bad chunked framing: {0}")]
    Chunked(#[from] ChunkedError),
    #[error("the connection closed before the body ended")]
    Truncated,
}

/// What one call decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decoded {
    /// Input bytes consumed.
    pub consumed: usize,
    /// The payload now at the front of the buffer.
    pub payload_len: usize,
    /// The body is complete.
    pub done: bool,
}

/// An incremental decoder of one body.
#[derive(Debug, Clone)]
pub struct BodyDecoder {
    framing: Framing,
    /// Length framing: bytes still expected.
    remaining: u64,
    chunked: Option<ChunkedDecoder>,
    done: bool,
}

impl BodyDecoder {
    pub fn new(framing: Framing) -> Self {
        Self {
            framing,
            remaining: match framing {
                Framing::Length(n) => n,
                _ => 0,
            },
            chunked: (framing == Framing::Chunked).then(ChunkedDecoder::new),
            done: matches!(framing, Framing::Empty | Framing::Length(0)),
        }
    }

    pub fn framing(&self) -> Framing {
        self.framing
    }

    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Payload bytes still to come that the framing already announced: the rest of a Content-Length,
    /// or what the current chunk's size line declares (so a size past a limit is refused at once).
    pub fn announced(&self) -> u64 {
        match (&self.chunked, self.framing) {
            (Some(c), _) => c.chunk_remaining(),
            (None, Framing::Length(_)) => self.remaining,
            _ => 0,
        }
    }

    /// Decodes the bytes at the start of `buf` (see the module docs).
    pub fn decode_in_place(&mut self, buf: &mut [u8]) -> Result<Decoded, BodyError> {
        if self.done {
            return Ok(Decoded { consumed: 0, payload_len: 0, done: true });
        }
        match &mut self.chunked {
            Some(c) => {
                let d = c.decode_in_place(buf)?;
                self.done = d.done;
                Ok(Decoded { consumed: d.consumed, payload_len: d.payload_len, done: d.done })
            }
            None => {
                let take = match self.framing {
                    Framing::Length(_) => {
                        usize::try_from(self.remaining).map_or(buf.len(), |r| r.min(buf.len()))
                    }
                    _ => buf.len(),
                };
                if let Framing::Length(_) = self.framing {
                    self.remaining -= take as u64;
                    self.done = self.remaining == 0;
                }
                Ok(Decoded { consumed: take, payload_len: take, done: self.done })
            }
        }
    }

    /// `n` payload bytes of a Content-Length body arrived straight into the payload's buffer (read there
    /// without passing through this decoder).
    pub fn read_directly(&mut self, n: usize) {
        if let Framing::Length(_) = self.framing {
            self.remaining = self.remaining.saturating_sub(n as u64);
            self.done = self.remaining == 0;
        }
    }

    /// The peer closed the connection: the end of an until-close body, a truncation of any other.
    pub fn on_eof(&mut self) -> Result<(), BodyError> {
        if self.done {
            return Ok(());
        }
        if self.framing == Framing::UntilClose {
            self.done = true;
            return Ok(());
        }
        Err(BodyError::Truncated)
    }
}

/// Decodes a whole body held in `buf` (a complete answer read to its end): the payload, or why not.
pub fn decode_all(framing: Framing, mut buf: Vec<u8>) -> Result<Vec<u8>, BodyError> {
    let mut d = BodyDecoder::new(framing);
    let out = d.decode_in_place(&mut buf)?;
    if !out.done {
        d.on_eof()?;
    }
    buf.truncate(out.payload_len);
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_framing_decodes_across_every_split() {
        let cases: [(Framing, &[u8], &[u8]); 3] = [
            (Framing::Length(5), b"helloNEXT", b"hello"),
            (Framing::Chunked, b"2\r\nhe\r\n3;x=1\r\nllo\r\n0\r\n\r\nNEXT", b"hello"),
            (Framing::UntilClose, b"hello", b"hello"),
        ];
        for (framing, wire, want) in cases {
            for step in 1..=wire.len() {
                let mut d = BodyDecoder::new(framing);
                let mut got = Vec::new();
                let mut pending: Vec<u8> = Vec::new();
                for piece in wire.chunks(step) {
                    pending.extend_from_slice(piece);
                    let out = d.decode_in_place(&mut pending).unwrap();
                    got.extend_from_slice(&pending[..out.payload_len]);
                    pending.drain(..out.consumed);
                    if out.done {
                        break;
                    }
                }
                if !d.is_done() {
                    d.on_eof().unwrap();
                }
                assert_eq!(got, want, "{framing:?} step {step}");
            }
        }
    }

    #[test]
    fn truncation_and_announced_sizes() {
        let mut d = BodyDecoder::new(Framing::Length(10));
        let mut b = b"abc".to_vec();
        d.decode_in_place(&mut b).unwrap();
        assert_eq!(d.announced(), 7);
        assert_eq!(d.on_eof(), Err(BodyError::Truncated));
        let mut c = BodyDecoder::new(Framing::Chunked);
        let mut b = b"FFFF\r\n".to_vec();
        c.decode_in_place(&mut b).unwrap();
        assert_eq!(c.announced(), 0xFFFF);
        assert!(BodyDecoder::new(Framing::Empty).is_done());
        assert_eq!(decode_all(Framing::Chunked, b"2\r\nhi\r\n0\r\n\r\n".to_vec()).unwrap(), b"hi");
        assert!(decode_all(Framing::Length(5), b"hi".to_vec()).is_err());
    }
}
