//! The simulator's own HTTP/1.1 framing: request heads through httparse, its own body reader
//! (Content-Length and chunked) and its own response writer. The gateway's `http` layer frames the
//! requests this side reads and reads the answers this side frames, so the two must not share that code:
//! a framing bug in one is then a failing test, not two halves that agree. Only the byte plumbing
//! (timed reads and writes, TLS) is shared.

use crate::http::io::{ReadBuf, Transport};
use std::time::Duration;

/// The largest request head and body the simulator accepts (a real node's limits are in this range).
const MAX_HEAD: usize = 64 * 1024;
const MAX_BODY: usize = 64 * 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
    Other,
}

/// One request as the simulator needs it.
#[derive(Debug)]
pub struct Request {
    pub method: Method,
    pub path: String,
    pub authorization: Option<String>,
    pub requester: Option<String>,
    pub timestamp: Option<String>,
    pub keep_alive: bool,
    pub body: Vec<u8>,
}

enum BodyFraming {
    Length(usize),
    Chunked,
}

/// Reads the next request; `None` when the peer closed, timed out or sent something unreadable (the
/// caller closes the connection).
pub async fn read_request<S: Transport>(
    io: &mut S,
    rbuf: &mut ReadBuf,
    timeout: Duration,
) -> Option<Request> {
    loop {
        if !rbuf.is_empty()
            && let Some((mut req, framing, head_len)) = parse(rbuf.data())?
        {
            rbuf.consume(head_len);
            req.body = match framing {
                BodyFraming::Length(n) => read_exact(io, rbuf, n, timeout).await?,
                BodyFraming::Chunked => read_chunked(io, rbuf, timeout).await?,
            };
            return Some(req);
        }
        more(io, rbuf, MAX_HEAD, timeout).await?;
    }
}

/// `Some(None)`: the head is not complete yet; `None`: it never will be a request this side answers.
#[expect(clippy::option_option, reason = "incomplete vs unreadable vs parsed")]
fn parse(data: &[u8]) -> Option<Option<(Request, BodyFraming, usize)>> {
    let mut storage = [httparse::EMPTY_HEADER; 128];
    let mut parsed = httparse::Request::new(&mut storage);
    let head_len = match parsed.parse(data).ok()? {
        httparse::Status::Partial => return if data.len() > MAX_HEAD { None } else { Some(None) },
        httparse::Status::Complete(n) => n,
    };
    let method = match parsed.method? {
        "GET" => Method::Get,
        "POST" => Method::Post,
        _ => Method::Other,
    };
    let mut req = Request {
        method,
        path: parsed.path?.to_owned(),
        authorization: None,
        requester: None,
        timestamp: None,
        keep_alive: parsed.version? == 1,
        body: Vec::new(),
    };
    let mut framing = BodyFraming::Length(0);
    for h in parsed.headers.iter() {
        let value = std::str::from_utf8(h.value).ok()?.trim();
        let name = h.name.to_ascii_lowercase();
        match name.as_str() {
            "authorization" => req.authorization = Some(value.to_owned()),
            "x-requester-address" => req.requester = Some(value.to_owned()),
            "x-timestamp" => req.timestamp = Some(value.to_owned()),
            "connection" if value.eq_ignore_ascii_case("close") => req.keep_alive = false,
            "connection" if value.eq_ignore_ascii_case("keep-alive") => req.keep_alive = true,
            "content-length" => framing = BodyFraming::Length(value.parse().ok().filter(|n| *n <= MAX_BODY)?),
            "transfer-encoding" if value.eq_ignore_ascii_case("chunked") => framing = BodyFraming::Chunked,
            "transfer-encoding" => return None,
            _ => {}
        }
    }
    Some(Some((req, framing, head_len)))
}

/// Reads more bytes into `rbuf` (kept within `max`); `None` on close, timeout or a full buffer.
async fn more<S: Transport>(io: &mut S, rbuf: &mut ReadBuf, max: usize, timeout: Duration) -> Option<()> {
    match rbuf.fill(io, max, timeout, std::future::pending()).await {
        Ok(n) if n > 0 => Some(()),
        _ => None,
    }
}

async fn read_exact<S: Transport>(
    io: &mut S,
    rbuf: &mut ReadBuf,
    n: usize,
    timeout: Duration,
) -> Option<Vec<u8>> {
    let mut body = Vec::with_capacity(n);
    while body.len() < n {
        if rbuf.is_empty() {
            more(io, rbuf, MAX_HEAD.max(n - body.len()), timeout).await?;
        }
        let take = rbuf.len().min(n - body.len());
        body.extend_from_slice(&rbuf.data()[..take]);
        rbuf.consume(take);
    }
    Some(body)
}

/// One CRLF-terminated line (without the CRLF).
async fn read_line<S: Transport>(io: &mut S, rbuf: &mut ReadBuf, timeout: Duration) -> Option<String> {
    loop {
        if let Some(end) = rbuf.data().windows(2).position(|w| w == b"\r\n") {
            let line = std::str::from_utf8(&rbuf.data()[..end]).ok()?.to_owned();
            rbuf.consume(end + 2);
            return Some(line);
        }
        more(io, rbuf, MAX_HEAD, timeout).await?;
    }
}

async fn read_chunked<S: Transport>(io: &mut S, rbuf: &mut ReadBuf, timeout: Duration) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line = read_line(io, rbuf, timeout).await?;
        let size = line.split(';').next().map(str::trim).filter(|s| !s.is_empty())?;
        let size = usize::from_str_radix(size, 16).ok()?;
        if size == 0 {
            while !read_line(io, rbuf, timeout).await?.is_empty() {}
            return Some(body);
        }
        if body.len() + size > MAX_BODY {
            return None;
        }
        body.extend_from_slice(&read_exact(io, rbuf, size, timeout).await?);
        if !read_line(io, rbuf, timeout).await?.is_empty() {
            return None;
        }
    }
}

/// How an answer's body is framed.
#[derive(Debug, Clone, Copy)]
pub enum Framing {
    Length(usize),
    Chunked,
}

/// Writes a response head with `Content-Type` and the `extra` headers.
pub fn head(out: &mut Vec<u8>, status: u16, content_type: &str, extra: &[(&str, &str)], framing: Framing) {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        402 => "Payment Required",
        404 => "Not Found",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        _ => "Unknown",
    };
    out.extend_from_slice(
        format!("HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\n").as_bytes(),
    );
    for (name, value) in extra {
        out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
    }
    match framing {
        Framing::Length(n) => out.extend_from_slice(format!("Content-Length: {n}\r\n\r\n").as_bytes()),
        Framing::Chunked => out.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n"),
    }
}

/// Appends `data` as one chunk (nothing for empty data, which would end the body).
pub fn chunk(out: &mut Vec<u8>, data: &[u8]) {
    if !data.is_empty() {
        out.extend_from_slice(format!("{:X}\r\n", data.len()).as_bytes());
        out.extend_from_slice(data);
        out.extend_from_slice(b"\r\n");
    }
}

/// Ends a chunked body.
pub fn last_chunk(out: &mut Vec<u8>) {
    out.extend_from_slice(b"0\r\n\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(raw: &[u8]) -> (Request, usize) {
        match parse(raw) {
            Some(Some((req, _, n))) => (req, n),
            _ => panic!("not a complete request"),
        }
    }

    #[test]
    fn heads_are_read_with_the_headers_the_simulator_needs() {
        let raw = b"POST /v1/chat/completions HTTP/1.1\r\nAuthorization: abc\r\nX-Requester-Address: gonka1x\r\nX-Timestamp: 5\r\nContent-Length: 2\r\n\r\n{}";
        let (req, n) = parsed(raw);
        assert_eq!(n, raw.len() - 2);
        assert_eq!(req.method, Method::Post);
        assert_eq!(req.path, "/v1/chat/completions");
        assert_eq!(req.authorization.as_deref(), Some("abc"));
        assert_eq!(req.requester.as_deref(), Some("gonka1x"));
        assert_eq!(req.timestamp.as_deref(), Some("5"));
        assert!(req.keep_alive);
    }

    #[test]
    fn partial_heads_wait_and_bad_ones_close() {
        assert!(matches!(parse(b"GET / HTTP/1.1\r\nHost: a\r\n"), Some(None)));
        assert!(parse(b"GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n").is_none());
        assert!(parse(b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n").is_none());
        assert!(!parsed(b"GET / HTTP/1.0\r\n\r\n").0.keep_alive);
        assert!(!parsed(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n").0.keep_alive);
    }

    #[test]
    fn chunks_are_framed_in_hex_and_empty_data_writes_nothing() {
        let mut out = Vec::new();
        chunk(&mut out, &[b'a'; 26]);
        chunk(&mut out, b"");
        last_chunk(&mut out);
        assert_eq!(out, [b"1A\r\n".as_slice(), &[b'a'; 26], b"\r\n0\r\n\r\n"].concat());
    }
}
