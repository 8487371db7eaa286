//! HTTP/1.1, by hand: request heads (httparse), bodies framed by length or chunks, response heads,
//! server-sent events, and the timed, cancelable socket I/O both sides of the gateway share.
//!
//! # Design
//! Every parser here has a plain `&[u8]` entry point (fuzzed in `fuzz/`, measured in `benches/`); the
//! socket side only moves bytes between a [`io::ReadBuf`] and those parsers. `Incomplete` is ordinary
//! control flow, not an error.

pub mod body;
pub mod chunked;
pub mod client;
pub mod date;
pub mod encoding;
pub mod io;
pub mod request;
pub mod response;
pub mod sse;
pub mod tls;

pub use body::{BodyDecoder, Framing};
pub use request::{HeadError, HttpLimits, Method, RequestHead};
