//! The HTTP/1.1 client half: connecting to a node, writing a request, and parsing the response head.
//! Bodies are handled by [`super::relay`], which forwards them as they arrive.

use super::pool::Node;
use monoio::net::TcpStream;
use std::io;
use std::time::Duration;

/// The largest response head accepted from a node.
pub const MAX_RESPONSE_HEAD_BYTES: usize = 64 * 1024;
const MAX_RESPONSE_HEADERS: usize = 128;

/// How a response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseBody {
    /// No body (1xx, 204, 304).
    Empty,
    Length(u64),
    Chunked,
    /// Until the node closes the connection.
    UntilClose,
}

/// A parsed response head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    pub status: u16,
    pub body: ResponseBody,
    /// The node allows another request on this connection.
    pub keep_alive: bool,
    pub content_type: Option<String>,
    pub retry_after: Option<String>,
    pub head_len: usize,
}

impl ResponseHead {
    pub fn is_event_stream(&self) -> bool {
        self.content_type
            .as_deref()
            .is_some_and(|c| c.trim_start().to_ascii_lowercase().starts_with("text/event-stream"))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ResponseHeadError {
    #[error("incomplete response head")]
    Incomplete,
    #[error("response head too large")]
    TooLarge,
    #[error("malformed response: {0}")]
    Malformed(&'static str),
}

/// Parses a response head at the start of `buf`.
pub fn parse_response_head(buf: &[u8]) -> Result<ResponseHead, ResponseHeadError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_RESPONSE_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let head_len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            return Err(if buf.len() >= MAX_RESPONSE_HEAD_BYTES {
                ResponseHeadError::TooLarge
            } else {
                ResponseHeadError::Incomplete
            });
        }
        Err(httparse::Error::TooManyHeaders) => return Err(ResponseHeadError::TooLarge),
        Err(_) => return Err(ResponseHeadError::Malformed("invalid status line or header")),
    };
    let status = resp.code.unwrap_or(0);
    let version_minor = resp.version.unwrap_or(1);
    let mut content_length: Option<u64> = None;
    let mut chunked = false;
    let mut close = false;
    let mut keep_alive_token = false;
    let mut content_type = None;
    let mut retry_after = None;
    for h in resp.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            let s =
                std::str::from_utf8(h.value).map_err(|_| ResponseHeadError::Malformed("Content-Length"))?;
            let n: u64 = s.trim().parse().map_err(|_| ResponseHeadError::Malformed("Content-Length"))?;
            if content_length.is_some_and(|p| p != n) {
                return Err(ResponseHeadError::Malformed("conflicting Content-Length"));
            }
            content_length = Some(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            let last = h.value.rsplit(|&b| b == b',').next().unwrap_or_default();
            if String::from_utf8_lossy(last).trim().eq_ignore_ascii_case("chunked") {
                chunked = true;
            } else {
                return Err(ResponseHeadError::Malformed("unsupported Transfer-Encoding"));
            }
        } else if h.name.eq_ignore_ascii_case("connection") {
            for t in h.value.split(|&b| b == b',') {
                let t = String::from_utf8_lossy(t);
                if t.trim().eq_ignore_ascii_case("close") {
                    close = true;
                } else if t.trim().eq_ignore_ascii_case("keep-alive") {
                    keep_alive_token = true;
                }
            }
        } else if h.name.eq_ignore_ascii_case("content-type") {
            content_type = std::str::from_utf8(h.value).ok().map(str::to_owned);
        } else if h.name.eq_ignore_ascii_case("retry-after") {
            retry_after = std::str::from_utf8(h.value).ok().map(|s| s.trim().to_owned());
        }
    }
    if chunked && content_length.is_some() {
        return Err(ResponseHeadError::Malformed("both Content-Length and Transfer-Encoding"));
    }
    let body = if (100..200).contains(&status) || status == 204 || status == 304 {
        ResponseBody::Empty
    } else if chunked {
        ResponseBody::Chunked
    } else if let Some(n) = content_length {
        if n == 0 { ResponseBody::Empty } else { ResponseBody::Length(n) }
    } else {
        ResponseBody::UntilClose
    };
    let keep_alive =
        body != ResponseBody::UntilClose && if version_minor == 0 { keep_alive_token } else { !close };
    Ok(ResponseHead { status, body, keep_alive, content_type, retry_after, head_len })
}

/// Opens a connection to one of the node's addresses (TLS for `https://` nodes, SNI and certificate
/// checked against `tls`).
pub async fn connect(
    node: &Node,
    timeout: Duration,
    tls: &crate::http::tls::ClientTls,
) -> io::Result<UpstreamIo> {
    let addrs = node.addrs.load();
    let mut last = io::Error::new(io::ErrorKind::NotFound, "node has no resolved address");
    for addr in addrs.iter() {
        match monoio::time::timeout(timeout, TcpStream::connect_addr(*addr)).await {
            Ok(Ok(stream)) => {
                stream.set_nodelay(true)?;
                if !node.url.tls {
                    return Ok(UpstreamIo::Plain(stream));
                }
                return match tls.connect(&node.url.host, stream, timeout).await {
                    Ok(s) => Ok(UpstreamIo::Tls(Box::new(s))),
                    Err(e) => Err(io::Error::new(e.kind(), format!("TLS with {}: {e}", node.url.host))),
                };
            }
            Ok(Err(e)) => last = e,
            Err(_) => last = io::Error::new(io::ErrorKind::TimedOut, "connect timed out"),
        }
    }
    Err(last)
}

/// Writes a request head for `node` into `out` (cleared first).
pub fn write_request_head(
    out: &mut Vec<u8>,
    method: &str,
    path: &str,
    node: &Node,
    content_length: Option<usize>,
    extra: &[(&str, &str)],
) {
    out.clear();
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\nHost: ");
    out.extend_from_slice(node.authority.as_bytes());
    out.extend_from_slice(b"\r\n");
    if let Some(auth) = &node.authorization {
        out.extend_from_slice(b"Authorization: ");
        out.extend_from_slice(auth.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if let Some(n) = content_length {
        out.extend_from_slice(b"Content-Type: application/json\r\nContent-Length: ");
        out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    for (name, value) in extra {
        if value.bytes().any(|b| b == b'\r' || b == b'\n') {
            continue;
        }
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_framings() {
        let h = parse_response_head(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n",
        )
        .unwrap();
        assert_eq!(h.body, ResponseBody::Chunked);
        assert!(h.keep_alive && h.is_event_stream());
        let h = parse_response_head(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello").unwrap();
        assert_eq!((h.body, h.head_len), (ResponseBody::Length(5), 38));
        let h = parse_response_head(b"HTTP/1.1 200 OK\r\n\r\n").unwrap();
        assert_eq!(h.body, ResponseBody::UntilClose);
        assert!(!h.keep_alive);
        let h = parse_response_head(b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n").unwrap();
        assert!(!h.keep_alive);
        let h = parse_response_head(b"HTTP/1.1 204 No Content\r\n\r\n").unwrap();
        assert_eq!(h.body, ResponseBody::Empty);
        let h = parse_response_head(b"HTTP/1.1 429 Too Many\r\nRetry-After: 2\r\nContent-Length: 0\r\n\r\n")
            .unwrap();
        assert_eq!(h.retry_after.as_deref(), Some("2"));
    }

    #[test]
    fn refuses_ambiguous_framing() {
        assert!(
            parse_response_head(
                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
            )
            .is_err()
        );
        assert!(
            parse_response_head(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n")
                .is_err()
        );
        assert!(parse_response_head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n").is_err());
        assert_eq!(parse_response_head(b"HTTP/1.1 200 OK\r\n"), Err(ResponseHeadError::Incomplete));
        assert!(parse_response_head(b"garbage\r\n\r\n").is_err());
    }
}

/// A connection to a node: plain TCP, or TLS for `https://` nodes.
#[derive(Debug)]
pub enum UpstreamIo {
    Plain(TcpStream),
    Tls(Box<crate::http::tls::TlsStream<rustls::ClientConnection>>),
}

mod io_impls {
    use super::UpstreamIo;
    use crate::http::io::Transport;
    use monoio::BufResult;
    use monoio::buf::{IoBuf, IoBufMut, IoVecBuf, IoVecBufMut};
    use monoio::io::{
        AsyncReadRent, AsyncWriteRent, CancelHandle, CancelableAsyncReadRent, CancelableAsyncWriteRent,
    };
    use monoio::net::TcpStream;
    use std::io;

    impl AsyncReadRent for UpstreamIo {
        async fn read<T: IoBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
            match self {
                Self::Plain(s) => s.read(buf).await,
                Self::Tls(s) => s.read(buf).await,
            }
        }
        async fn readv<T: IoVecBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
            match self {
                Self::Plain(s) => s.readv(buf).await,
                Self::Tls(s) => s.readv(buf).await,
            }
        }
    }

    impl CancelableAsyncReadRent for UpstreamIo {
        async fn cancelable_read<T: IoBufMut>(&mut self, buf: T, c: CancelHandle) -> BufResult<usize, T> {
            match self {
                Self::Plain(s) => s.cancelable_read(buf, c).await,
                Self::Tls(s) => s.cancelable_read(buf, c).await,
            }
        }
        async fn cancelable_readv<T: IoVecBufMut>(&mut self, buf: T, c: CancelHandle) -> BufResult<usize, T> {
            match self {
                Self::Plain(s) => s.cancelable_readv(buf, c).await,
                Self::Tls(s) => s.cancelable_readv(buf, c).await,
            }
        }
    }

    impl AsyncWriteRent for UpstreamIo {
        async fn write<T: IoBuf>(&mut self, buf: T) -> BufResult<usize, T> {
            match self {
                Self::Plain(s) => s.write(buf).await,
                Self::Tls(s) => s.write(buf).await,
            }
        }
        async fn writev<T: IoVecBuf>(&mut self, buf: T) -> BufResult<usize, T> {
            match self {
                Self::Plain(s) => s.writev(buf).await,
                Self::Tls(s) => s.writev(buf).await,
            }
        }
        async fn flush(&mut self) -> io::Result<()> {
            match self {
                Self::Plain(s) => s.flush().await,
                Self::Tls(s) => s.flush().await,
            }
        }
        async fn shutdown(&mut self) -> io::Result<()> {
            match self {
                Self::Plain(s) => s.shutdown().await,
                Self::Tls(s) => s.shutdown().await,
            }
        }
    }

    impl CancelableAsyncWriteRent for UpstreamIo {
        async fn cancelable_write<T: IoBuf>(&mut self, buf: T, c: CancelHandle) -> BufResult<usize, T> {
            match self {
                Self::Plain(s) => s.cancelable_write(buf, c).await,
                Self::Tls(s) => s.cancelable_write(buf, c).await,
            }
        }
        async fn cancelable_writev<T: IoVecBuf>(&mut self, buf: T, c: CancelHandle) -> BufResult<usize, T> {
            match self {
                Self::Plain(s) => s.cancelable_writev(buf, c).await,
                Self::Tls(s) => s.cancelable_writev(buf, c).await,
            }
        }
        async fn cancelable_flush(&mut self, c: CancelHandle) -> io::Result<()> {
            match self {
                Self::Plain(s) => s.cancelable_flush(c).await,
                Self::Tls(s) => s.cancelable_flush(c).await,
            }
        }
        async fn cancelable_shutdown(&mut self, c: CancelHandle) -> io::Result<()> {
            match self {
                Self::Plain(s) => s.cancelable_shutdown(c).await,
                Self::Tls(s) => s.cancelable_shutdown(c).await,
            }
        }
    }

    impl Transport for UpstreamIo {
        fn socket(&self) -> &TcpStream {
            match self {
                Self::Plain(s) => s,
                Self::Tls(s) => s.socket(),
            }
        }
    }
}
