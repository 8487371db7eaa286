//! Response heads: written straight into a reusable byte buffer (our answers), and parsed strictly (a
//! node's answers), because a proxy that guesses at framing is a smuggling vector in both directions.

use super::body::Framing;
use super::date::with_http_date;

/// The reason phrase for the statuses the gateway sends.
pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        402 => "Payment Required",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        413 => "Content Too Large",
        417 => "Expectation Failed",
        422 => "Unprocessable Content",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

/// How the response body is delimited on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseFraming {
    Length(usize),
    Chunked,
    /// Until the connection closes (HTTP/1.0 clients of a stream).
    Close,
}

/// Builds a response head in `out` (cleared first).
#[derive(Debug)]
pub struct HeadWriter<'a> {
    out: &'a mut Vec<u8>,
}

impl<'a> HeadWriter<'a> {
    pub fn new(out: &'a mut Vec<u8>, status: u16) -> Self {
        out.clear();
        out.extend_from_slice(b"HTTP/1.1 ");
        let mut b = itoa::Buffer::new();
        out.extend_from_slice(b.format(status).as_bytes());
        out.push(b' ');
        out.extend_from_slice(reason(status).as_bytes());
        out.extend_from_slice(b"\r\nDate: ");
        with_http_date(|d| out.extend_from_slice(d));
        out.extend_from_slice(b"\r\n");
        Self { out }
    }

    pub fn header(&mut self, name: &str, value: &[u8]) -> &mut Self {
        // Values come from our own code or upstream heads httparse accepted; CR/LF would split the head.
        if value.iter().any(|&b| b == b'\r' || b == b'\n') {
            return self;
        }
        self.out.extend_from_slice(name.as_bytes());
        self.out.extend_from_slice(b": ");
        self.out.extend_from_slice(value);
        self.out.extend_from_slice(b"\r\n");
        self
    }

    pub fn header_u64(&mut self, name: &str, value: u64) -> &mut Self {
        let mut b = itoa::Buffer::new();
        self.header(name, b.format(value).as_bytes())
    }

    /// Writes the framing headers and, when `keep_alive` is false, `Connection: close`; ends the head.
    pub fn finish(&mut self, framing: ResponseFraming, keep_alive: bool) {
        match framing {
            ResponseFraming::Length(n) => {
                self.header_u64("Content-Length", n as u64);
            }
            ResponseFraming::Chunked => {
                self.header("Transfer-Encoding", b"chunked");
            }
            ResponseFraming::Close => {}
        }
        if !keep_alive || framing == ResponseFraming::Close {
            self.header("Connection", b"close");
        }
        self.out.extend_from_slice(b"\r\n");
    }
}

/// The largest response head accepted from a node.
pub const MAX_RESPONSE_HEAD_BYTES: usize = 64 * 1024;

const MAX_RESPONSE_HEADERS: usize = 128;

/// A parsed response head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    pub status: u16,
    pub framing: Framing,
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
        Framing::Empty
    } else if chunked {
        Framing::Chunked
    } else if let Some(n) = content_length {
        if n == 0 { Framing::Empty } else { Framing::Length(n) }
    } else {
        Framing::UntilClose
    };
    let keep_alive =
        body != Framing::UntilClose && if version_minor == 0 { keep_alive_token } else { !close };
    Ok(ResponseHead { status, framing: body, keep_alive, content_type, retry_after, head_len })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_a_parseable_head() {
        let mut out = Vec::new();
        HeadWriter::new(&mut out, 429)
            .header("Retry-After", b"3")
            .header("X-Bad", b"a\r\nInjected: 1")
            .finish(ResponseFraming::Length(5), false);
        let mut headers = [httparse::EMPTY_HEADER; 16];
        let mut resp = httparse::Response::new(&mut headers);
        let n = resp.parse(&out).unwrap();
        assert!(n.is_complete());
        assert_eq!(resp.code, Some(429));
        let names: Vec<_> = resp.headers.iter().map(|h| h.name).collect();
        assert_eq!(names, ["Date", "Retry-After", "Content-Length", "Connection"]);
    }

    #[test]
    fn parses_framings() {
        let h = parse_response_head(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n",
        )
        .unwrap();
        assert_eq!(h.framing, Framing::Chunked);
        assert!(h.keep_alive && h.is_event_stream());
        let h = parse_response_head(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello").unwrap();
        assert_eq!((h.framing, h.head_len), (Framing::Length(5), 38));
        let h = parse_response_head(b"HTTP/1.1 200 OK\r\n\r\n").unwrap();
        assert_eq!(h.framing, Framing::UntilClose);
        assert!(!h.keep_alive);
        let h = parse_response_head(b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n").unwrap();
        assert!(!h.keep_alive);
        let h = parse_response_head(b"HTTP/1.1 204 No Content\r\n\r\n").unwrap();
        assert_eq!(h.framing, Framing::Empty);
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
