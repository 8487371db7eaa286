//! The relay buffer's layout, `[HEADROOM][data][TAILROOM]`: a chunk-size line is written backwards into
//! the headroom and its CRLF into the tailroom, so a read is framed for the client where it landed.

use crate::http::chunked::CHUNK_HEADER_MAX;

/// Room before the data for the chunk-size line.
pub const HEADROOM: usize = CHUNK_HEADER_MAX;
/// Room after the data for the chunk's CRLF.
pub const TAILROOM: usize = 2;

/// Where relay buffers come from and go back to (the core's pool). A streamed answer waits on its node
/// without a buffer: it gives its empty buffer back, waits until the node's socket is readable, and takes
/// one again to read into, so ten thousand slow streams hold ten thousand waits, not ten thousand buffers.
pub trait BufferPool {
    /// A relay buffer with its headroom in place (see [`relay_buffer`]).
    fn take(&self) -> Vec<u8>;
    fn put(&self, buf: Vec<u8>);
    /// A small buffer for a response head or a copied piece, empty; and its way back. A stream gives its
    /// head's buffer back once the head is sent, and takes one again only for a copied piece or its end.
    fn take_small(&self) -> Vec<u8>;
    fn put_small(&self, buf: Vec<u8>);
}

/// A fresh relay buffer of `capacity` bytes with its headroom in place.
pub fn relay_buffer(capacity: usize) -> Vec<u8> {
    let mut buf = Vec::with_capacity(capacity.max(HEADROOM + TAILROOM + 512));
    buf.resize(HEADROOM, 0);
    buf
}
