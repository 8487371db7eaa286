//! A small blocking HTTP/1.1 client for the health thread (probes, discovery): one request per
//! connection, `Connection: close`, bodies by length, chunks or close, a size bound and deadlines.

use crate::config::NodeUrl;
use crate::http::chunked::ChunkedDecoder;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// The largest answer read.
const MAX_BODY: usize = 32 * 1024 * 1024;

/// An answer: status and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    pub status: u16,
    pub body: Vec<u8>,
}

/// `GET {url.base_path}{path}` (when `path` starts with `/v1` it replaces the base path's `/v1`).
#[expect(clippy::disallowed_methods, reason = "the health thread may block")]
pub fn get(
    url: &NodeUrl,
    addrs: &[SocketAddr],
    path: &str,
    headers: &[(&str, &str)],
    timeout: Duration,
    tls: Option<&crate::http::tls::ClientTls>,
) -> io::Result<Fetched> {
    let addr = addrs
        .first()
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("{} has no address", url.host)))?;
    let tcp = TcpStream::connect_timeout(addr, timeout)?;
    tcp.set_read_timeout(Some(timeout))?;
    tcp.set_write_timeout(Some(timeout))?;
    let mut req = format!(
        "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nAccept: application/json\r\n",
        url.authority()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    let raw = if url.tls {
        let tls = tls.ok_or_else(|| io::Error::other("no TLS configuration"))?;
        let mut stream = tls.blocking_stream(&url.host, tcp)?;
        stream.write_all(req.as_bytes())?;
        read_all(&mut stream)?
    } else {
        let mut tcp = tcp;
        tcp.write_all(req.as_bytes())?;
        read_all(&mut tcp)?
    };
    parse(&raw)
}

fn read_all(r: &mut impl Read) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        match r.read(&mut buf) {
            Ok(0) => return Ok(out),
            Ok(n) => {
                out.extend_from_slice(&buf[..n]);
                if out.len() > MAX_BODY {
                    return Err(io::Error::other("answer too large"));
                }
            }
            // A TLS peer that closes without close_notify: what arrived is what there is.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(out),
            Err(e) => return Err(e),
        }
    }
}

/// Parses a whole `Connection: close` answer.
pub fn parse(raw: &[u8]) -> io::Result<Fetched> {
    let head = crate::upstream::client::parse_response_head(raw)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
    let mut body = raw[head.head_len..].to_vec();
    match head.body {
        crate::upstream::client::ResponseBody::Chunked => {
            let d = ChunkedDecoder::new()
                .decode_in_place(&mut body)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
            if !d.done {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "truncated chunked answer"));
            }
            body.truncate(d.payload_len);
        }
        crate::upstream::client::ResponseBody::Length(n) => {
            let n = usize::try_from(n).unwrap_or(usize::MAX);
            if body.len() < n {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "truncated answer"));
            }
            body.truncate(n);
        }
        crate::upstream::client::ResponseBody::Empty => body.clear(),
        crate::upstream::client::ResponseBody::UntilClose => {}
    }
    Ok(Fetched { status: head.status, body })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_answers() {
        let f = parse(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhixx").unwrap();
        assert_eq!((f.status, f.body.as_slice()), (200, &b"hi"[..]));
        let f = parse(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n").unwrap();
        assert_eq!(f.body, b"hi");
        let f = parse(b"HTTP/1.1 503 Busy\r\n\r\nall of it").unwrap();
        assert_eq!((f.status, f.body.as_slice()), (503, &b"all of it"[..]));
        assert!(parse(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhi").is_err());
    }
}
