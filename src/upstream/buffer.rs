//! The relay buffer's layout, `[HEADROOM][data][TAILROOM]`: a chunk-size line is written backwards into
//! the headroom and its CRLF into the tailroom, so a read is framed for the client where it landed.

use crate::http::chunked::CHUNK_HEADER_MAX;

/// Room before the data for the chunk-size line.
pub const HEADROOM: usize = CHUNK_HEADER_MAX;
/// Room after the data for the chunk's CRLF.
pub const TAILROOM: usize = 2;

/// A fresh relay buffer of `capacity` bytes with its headroom in place.
pub fn relay_buffer(capacity: usize) -> Vec<u8> {
    let mut buf = Vec::with_capacity(capacity.max(HEADROOM + TAILROOM + 512));
    buf.resize(HEADROOM, 0);
    buf
}
