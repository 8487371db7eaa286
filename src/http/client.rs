//! The one small blocking HTTP/1.1 client, for threads that may block (the control plane's probes and
//! discovery, the chain client, the admin command): one request per connection, `Connection: close`,
//! the answer read to its end within a size bound and deadlines, over TLS where the target asks for it.
//! Never used on a core.

use super::body::decode_all;
use super::response::parse_response_head;
use super::tls::ClientTls;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

/// The largest answer read.
const MAX_ANSWER_BYTES: usize = 32 * 1024 * 1024;

/// Where a request goes.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    pub host: &'a str,
    pub port: u16,
    pub tls: bool,
    /// Addresses already resolved; empty: `host` is resolved here.
    pub addrs: &'a [SocketAddr],
}

impl Target<'_> {
    /// The `Host` header value (the port only when it is not the scheme's default).
    pub fn authority(&self) -> String {
        let default = if self.tls { 443 } else { 80 };
        let host = if self.host.contains(':') { format!("[{}]", self.host) } else { self.host.to_owned() };
        if self.port == default { host } else { format!("{host}:{}", self.port) }
    }
}

/// A request: method, path (with its query), extra headers, and a body (sent with its length).
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub headers: &'a [(&'a str, &'a str)],
    pub body: Option<&'a [u8]>,
}

impl<'a> Request<'a> {
    pub fn get(path: &'a str) -> Self {
        Self { method: "GET", path, headers: &[], body: None }
    }
}

/// An answer: status and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// Sends `request` to `target` and reads the whole answer; `timeout` bounds the connect and every read
/// and write. `tls` is needed for a TLS target.
#[expect(clippy::disallowed_methods, reason = "this client blocks by design; it never runs on a core")]
pub fn send(
    target: &Target<'_>,
    request: &Request<'_>,
    timeout: Duration,
    tls: Option<&ClientTls>,
) -> io::Result<Answer> {
    let resolved;
    let addrs = if target.addrs.is_empty() {
        resolved = (target.host, target.port).to_socket_addrs()?.collect::<Vec<_>>();
        &resolved[..]
    } else {
        target.addrs
    };
    let mut last = io::Error::new(io::ErrorKind::NotFound, format!("{} has no address", target.host));
    let mut tcp = None;
    for addr in addrs {
        match TcpStream::connect_timeout(addr, timeout) {
            Ok(s) => {
                tcp = Some(s);
                break;
            }
            Err(e) => last = e,
        }
    }
    let tcp = tcp.ok_or(last)?;
    tcp.set_read_timeout(Some(timeout))?;
    tcp.set_write_timeout(Some(timeout))?;
    let mut head = format!(
        "{} {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nAccept: application/json\r\n",
        request.method,
        request.path,
        target.authority()
    );
    for (k, v) in request.headers {
        if !v.contains(['\r', '\n']) {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
    }
    if let Some(b) = request.body {
        head.push_str(&format!("Content-Type: application/json\r\nContent-Length: {}\r\n", b.len()));
    }
    head.push_str("\r\n");
    let mut wire = head.into_bytes();
    wire.extend_from_slice(request.body.unwrap_or_default());
    let raw = if target.tls {
        let tls = tls.ok_or_else(|| io::Error::other("no TLS configuration"))?;
        let mut stream = tls.blocking_stream(target.host, tcp)?;
        stream.write_all(&wire)?;
        read_all(&mut stream)?
    } else {
        let mut tcp = tcp;
        tcp.write_all(&wire)?;
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
                if out.len() > MAX_ANSWER_BYTES {
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
pub fn parse(raw: &[u8]) -> io::Result<Answer> {
    let bad = |e: String| io::Error::new(io::ErrorKind::InvalidData, e);
    let head = parse_response_head(raw).map_err(|e| bad(e.to_string()))?;
    let body = decode_all(head.framing, raw[head.head_len..].to_vec()).map_err(|e| bad(e.to_string()))?;
    Ok(Answer { status: head.status, body })
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

    #[test]
    fn authorities() {
        let t = |host, port, tls| Target { host, port, tls, addrs: &[] }.authority();
        assert_eq!(t("example.com", 443, true), "example.com");
        assert_eq!(t("example.com", 8443, true), "example.com:8443");
        assert_eq!(t("::1", 80, false), "[::1]");
        assert_eq!(t("127.0.0.1", 9000, false), "127.0.0.1:9000");
    }
}
