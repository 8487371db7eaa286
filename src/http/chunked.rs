//! `Transfer-Encoding: chunked`, decoded incrementally and in place.
//!
//! # Design
//! [`ChunkedDecoder::decode_in_place`] takes the bytes that arrived, moves the payload to the front of the
//! same slice and reports how much input it consumed. Payload is never longer than the framing around it,
//! so the move is always forward and needs no second buffer; the relay uses that to forward a decoded
//! read from the buffer it arrived in.
//!
//! # Errors
//! Strict: a size line is 1–16 hex digits, optionally followed by extensions, and ends in CRLF; data is
//! followed by CRLF; trailers are bounded. Anything else is a [`ChunkedError`] and the message is dropped.

/// Size-line and trailer bounds, generous for real clients, tight enough that framing cannot hold memory.
const MAX_LINE_BYTES: usize = 4096;
const MAX_TRAILER_BYTES: usize = 16 * 1024;
const MAX_SIZE_DIGITS: u8 = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ChunkedError {
    #[error("invalid chunk size")]
    BadSize,
    #[error("chunk size line too long")]
    LineTooLong,
    #[error("missing CRLF in chunked framing")]
    MissingCrlf,
    #[error("chunked trailer too large")]
    TrailerTooLarge,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading hex digits of a size line.
    Size,
    /// Inside `;ext` (or whitespace before it) until CR.
    Extension,
    /// Saw CR of a size line, expecting LF.
    SizeLf,
    /// Payload bytes of the current chunk remain.
    Data,
    /// Expecting CR after payload.
    DataCr,
    /// Expecting LF after payload.
    DataLf,
    /// At the start of a trailer line (after the last chunk).
    TrailerStart,
    /// Inside a trailer line.
    TrailerLine,
    /// Saw CR of a trailer line, expecting LF.
    TrailerLf,
    /// Saw CR of the final empty line, expecting LF.
    FinalLf,
    Done,
}

/// The incremental decoder; one per message.
#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    state: State,
    size: u64,
    digits: u8,
    line_bytes: usize,
    trailer_bytes: usize,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        Self::new()
    }
}

/// What one call to [`ChunkedDecoder::decode_in_place`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decoded {
    /// Input bytes consumed; after the message ends, the rest belongs to whatever follows it.
    pub consumed: usize,
    /// Decoded payload now occupies `buf[..payload_len]`.
    pub payload_len: usize,
    /// The terminating chunk and trailers have been seen.
    pub done: bool,
}

impl ChunkedDecoder {
    pub fn new() -> Self {
        Self { state: State::Size, size: 0, digits: 0, line_bytes: 0, trailer_bytes: 0 }
    }

    /// Whether the whole message has been decoded.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Payload bytes the chunk being read still declares: what is left of its data, or on its size line
    /// the size read so far (a lower bound while digits arrive). A reader with a body limit refuses as
    /// soon as this would take the body past it, instead of waiting for payload it will never accept.
    pub fn chunk_remaining(&self) -> u64 {
        match self.state {
            State::Size | State::Extension | State::SizeLf | State::Data => self.size,
            _ => 0,
        }
    }

    /// Decodes `buf` in place. See the module docs.
    pub fn decode_in_place(&mut self, buf: &mut [u8]) -> Result<Decoded, ChunkedError> {
        let mut read = 0;
        let mut write = 0;
        while read < buf.len() {
            if self.state == State::Done {
                break;
            }
            if self.state == State::Data {
                let avail = buf.len() - read;
                let take = usize::try_from(self.size).map_or(avail, |s| s.min(avail));
                if write != read {
                    buf.copy_within(read..read + take, write);
                }
                read += take;
                write += take;
                self.size -= take as u64;
                if self.size == 0 {
                    self.state = State::DataCr;
                }
                continue;
            }
            let b = buf[read];
            read += 1;
            self.step(b)?;
        }
        Ok(Decoded { consumed: read, payload_len: write, done: self.state == State::Done })
    }

    fn step(&mut self, b: u8) -> Result<(), ChunkedError> {
        match self.state {
            State::Size => {
                if let Some(d) = hex_value(b) {
                    if self.digits >= MAX_SIZE_DIGITS {
                        return Err(ChunkedError::BadSize);
                    }
                    self.digits += 1;
                    self.size = (self.size << 4) | u64::from(d);
                    self.bump_line()?;
                } else if self.digits == 0 {
                    return Err(ChunkedError::BadSize);
                } else if b == b'\r' {
                    self.state = State::SizeLf;
                } else if b == b';' || b == b' ' || b == b'\t' {
                    self.state = State::Extension;
                    self.bump_line()?;
                } else {
                    return Err(ChunkedError::BadSize);
                }
            }
            State::Extension => {
                if b == b'\r' {
                    self.state = State::SizeLf;
                } else if b == b'\n' || (b < 0x20 && b != b'\t') || b == 0x7f {
                    return Err(ChunkedError::BadSize);
                } else {
                    self.bump_line()?;
                }
            }
            State::SizeLf => {
                if b != b'\n' {
                    return Err(ChunkedError::MissingCrlf);
                }
                self.line_bytes = 0;
                self.digits = 0;
                if self.size == 0 {
                    self.state = State::TrailerStart;
                } else {
                    self.state = State::Data;
                }
            }
            State::DataCr => {
                if b != b'\r' {
                    return Err(ChunkedError::MissingCrlf);
                }
                self.state = State::DataLf;
            }
            State::DataLf => {
                if b != b'\n' {
                    return Err(ChunkedError::MissingCrlf);
                }
                self.state = State::Size;
            }
            State::TrailerStart => {
                if b == b'\r' {
                    self.state = State::FinalLf;
                } else if b == b'\n' {
                    return Err(ChunkedError::MissingCrlf);
                } else {
                    self.state = State::TrailerLine;
                    self.bump_trailer()?;
                }
            }
            State::TrailerLine => {
                if b == b'\r' {
                    self.state = State::TrailerLf;
                } else if b == b'\n' {
                    return Err(ChunkedError::MissingCrlf);
                } else {
                    self.bump_trailer()?;
                }
            }
            State::TrailerLf => {
                if b != b'\n' {
                    return Err(ChunkedError::MissingCrlf);
                }
                self.state = State::TrailerStart;
            }
            State::FinalLf => {
                if b != b'\n' {
                    return Err(ChunkedError::MissingCrlf);
                }
                self.state = State::Done;
            }
            // `decode_in_place` moves payload itself and stops at Done, so neither is stepped.
            State::Data | State::Done => {}
        }
        Ok(())
    }

    fn bump_line(&mut self) -> Result<(), ChunkedError> {
        self.line_bytes += 1;
        if self.line_bytes > MAX_LINE_BYTES { Err(ChunkedError::LineTooLong) } else { Ok(()) }
    }

    fn bump_trailer(&mut self) -> Result<(), ChunkedError> {
        self.trailer_bytes += 1;
        if self.trailer_bytes > MAX_TRAILER_BYTES { Err(ChunkedError::TrailerTooLarge) } else { Ok(()) }
    }
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Writes the chunk-size line for a chunk of `len` bytes (`{len:x}\r\n`) into the end of `dst` and
/// returns where it starts; `dst` must hold at least [`CHUNK_HEADER_MAX`] bytes.
pub fn write_size_line_backwards(dst: &mut [u8], len: usize) -> usize {
    let mut pos = dst.len();
    pos -= 2;
    dst[pos] = b'\r';
    dst[pos + 1] = b'\n';
    let mut n = len;
    loop {
        pos -= 1;
        dst[pos] = b"0123456789abcdef"[n & 0xf];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    pos
}

/// The longest chunk-size line [`write_size_line_backwards`] writes: 16 hex digits and CRLF.
pub const CHUNK_HEADER_MAX: usize = 18;

/// Appends one chunk (`size CRLF data CRLF`) to `out`; an empty `data` writes nothing.
pub fn encode_chunk(out: &mut Vec<u8>, data: &[u8]) {
    if data.is_empty() {
        return;
    }
    let mut line = [0u8; CHUNK_HEADER_MAX];
    let start = write_size_line_backwards(&mut line, data.len());
    out.extend_from_slice(&line[start..]);
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

/// The terminating chunk with no trailers.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes `input` delivered in pieces of `step` bytes, the way reads arrive.
    fn decode_stepped(input: &[u8], step: usize) -> Result<(Vec<u8>, usize, bool), ChunkedError> {
        let mut dec = ChunkedDecoder::new();
        let mut out = Vec::new();
        let mut pending: Vec<u8> = Vec::new();
        let mut total_consumed = 0;
        for piece in input.chunks(step.max(1)) {
            pending.extend_from_slice(piece);
            let d = dec.decode_in_place(&mut pending)?;
            out.extend_from_slice(&pending[..d.payload_len]);
            total_consumed += d.consumed;
            pending.drain(..d.consumed);
            if d.done {
                return Ok((out, total_consumed, true));
            }
        }
        Ok((out, total_consumed, false))
    }

    #[test]
    fn decodes_across_every_split() {
        let input = b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nX-T: 1\r\n\r\nNEXT";
        for step in 1..input.len() {
            let (out, consumed, done) = decode_stepped(input, step).unwrap();
            assert_eq!(out, b"hello, world", "step {step}");
            assert!(done);
            assert_eq!(consumed, input.len() - 4);
        }
    }

    #[test]
    fn uppercase_hex_and_leading_zeros() {
        let (out, _, done) = decode_stepped(b"000A\r\n0123456789\r\n0\r\n\r\n", 64).unwrap();
        assert_eq!(out, b"0123456789");
        assert!(done);
    }

    #[test]
    fn rejects_bad_framing() {
        let cases: &[&[u8]] = &[
            b"x\r\n",
            b"\r\n",
            b"5\nhello\r\n",
            b"5\r\nhelloX\r\n",
            b"5\r\nhello\n0\r\n\r\n",
            b"11111111111111111\r\n",
            b"-1\r\n",
            b"0\r\n\n",
            b"5 \n",
        ];
        for c in cases {
            assert!(decode_stepped(c, 64).is_err(), "{:?}", String::from_utf8_lossy(c));
        }
    }

    #[test]
    fn bounds_extensions_and_trailers() {
        let mut long = b"1;".to_vec();
        long.extend(std::iter::repeat_n(b'a', MAX_LINE_BYTES + 1));
        assert_eq!(decode_stepped(&long, 64), Err(ChunkedError::LineTooLong));
        let mut trailer = b"0\r\n".to_vec();
        trailer.extend(std::iter::repeat_n(b'a', MAX_TRAILER_BYTES + 1));
        assert_eq!(decode_stepped(&trailer, 64), Err(ChunkedError::TrailerTooLarge));
    }

    #[test]
    fn chunk_remaining_is_the_declared_size_from_the_size_line_on() {
        let mut d = ChunkedDecoder::new();
        let mut buf = b"FFFF".to_vec();
        d.decode_in_place(&mut buf).unwrap();
        assert_eq!(d.chunk_remaining(), 0xFFFF, "digits so far, before the line ends");
        let mut buf = b"FFFF\r\n".to_vec();
        d.decode_in_place(&mut buf).unwrap();
        assert_eq!(d.chunk_remaining(), 0xFFFF_FFFF);
        let mut d = ChunkedDecoder::new();
        let mut buf = b"5\r\nhel".to_vec();
        let r = d.decode_in_place(&mut buf).unwrap();
        assert_eq!((r.payload_len, d.chunk_remaining()), (3, 2));
        let mut buf = b"lo\r\n".to_vec();
        d.decode_in_place(&mut buf).unwrap();
        assert_eq!(d.chunk_remaining(), 0);
    }

    #[test]
    fn huge_size_does_not_overflow() {
        let (out, _, done) = decode_stepped(b"ffffffffffffffff\r\nabc", 64).unwrap();
        assert_eq!(out, b"abc");
        assert!(!done);
    }

    #[test]
    fn encoder_round_trips() {
        let mut wire = Vec::new();
        encode_chunk(&mut wire, b"hello");
        encode_chunk(&mut wire, b"");
        encode_chunk(&mut wire, &[7u8; 300]);
        wire.extend_from_slice(LAST_CHUNK);
        let (out, consumed, done) = decode_stepped(&wire, 7).unwrap();
        assert!(done);
        assert_eq!(consumed, wire.len());
        assert_eq!(&out[..5], b"hello");
        assert_eq!(out.len(), 305);
    }
}
