//! Response heads, written straight into a reusable byte buffer.

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
}
