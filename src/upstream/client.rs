//! The HTTP/1.1 client half: connecting to a node, writing a request, and parsing the response head.
//! Bodies are handled by [`super::relay`], which forwards them as they arrive.

use super::pool::Node;
use monoio::net::TcpStream;
use std::io;
use std::time::Duration;

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

/// A connection to a node: plain TCP, or TLS for `https://` nodes.
#[derive(Debug)]
pub enum UpstreamIo {
    Plain(TcpStream),
    Tls(Box<crate::http::tls::TlsStream<rustls::ClientConnection>>),
}

/// The TLS arms box their futures: a TLS read or write future is 600–800 bytes, and inline it sized the
/// plain arm's future too, and with it every future that waits on a node, down to each connection's task.
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
                Self::Tls(s) => Box::pin(s.read(buf)).await,
            }
        }
        async fn readv<T: IoVecBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
            match self {
                Self::Plain(s) => s.readv(buf).await,
                Self::Tls(s) => Box::pin(s.readv(buf)).await,
            }
        }
    }

    impl CancelableAsyncReadRent for UpstreamIo {
        async fn cancelable_read<T: IoBufMut>(&mut self, buf: T, c: CancelHandle) -> BufResult<usize, T> {
            match self {
                Self::Plain(s) => s.cancelable_read(buf, c).await,
                Self::Tls(s) => Box::pin(s.cancelable_read(buf, c)).await,
            }
        }
        async fn cancelable_readv<T: IoVecBufMut>(&mut self, buf: T, c: CancelHandle) -> BufResult<usize, T> {
            match self {
                Self::Plain(s) => s.cancelable_readv(buf, c).await,
                Self::Tls(s) => Box::pin(s.cancelable_readv(buf, c)).await,
            }
        }
    }

    impl AsyncWriteRent for UpstreamIo {
        async fn write<T: IoBuf>(&mut self, buf: T) -> BufResult<usize, T> {
            match self {
                Self::Plain(s) => s.write(buf).await,
                Self::Tls(s) => Box::pin(s.write(buf)).await,
            }
        }
        async fn writev<T: IoVecBuf>(&mut self, buf: T) -> BufResult<usize, T> {
            match self {
                Self::Plain(s) => s.writev(buf).await,
                Self::Tls(s) => Box::pin(s.writev(buf)).await,
            }
        }
        async fn flush(&mut self) -> io::Result<()> {
            match self {
                Self::Plain(s) => s.flush().await,
                Self::Tls(s) => Box::pin(s.flush()).await,
            }
        }
        async fn shutdown(&mut self) -> io::Result<()> {
            match self {
                Self::Plain(s) => s.shutdown().await,
                Self::Tls(s) => Box::pin(s.shutdown()).await,
            }
        }
    }

    impl CancelableAsyncWriteRent for UpstreamIo {
        async fn cancelable_write<T: IoBuf>(&mut self, buf: T, c: CancelHandle) -> BufResult<usize, T> {
            match self {
                Self::Plain(s) => s.cancelable_write(buf, c).await,
                Self::Tls(s) => Box::pin(s.cancelable_write(buf, c)).await,
            }
        }
        async fn cancelable_writev<T: IoVecBuf>(&mut self, buf: T, c: CancelHandle) -> BufResult<usize, T> {
            match self {
                Self::Plain(s) => s.cancelable_writev(buf, c).await,
                Self::Tls(s) => Box::pin(s.cancelable_writev(buf, c)).await,
            }
        }
        async fn cancelable_flush(&mut self, c: CancelHandle) -> io::Result<()> {
            match self {
                Self::Plain(s) => s.cancelable_flush(c).await,
                Self::Tls(s) => Box::pin(s.cancelable_flush(c)).await,
            }
        }
        async fn cancelable_shutdown(&mut self, c: CancelHandle) -> io::Result<()> {
            match self {
                Self::Plain(s) => s.cancelable_shutdown(c).await,
                Self::Tls(s) => Box::pin(s.cancelable_shutdown(c)).await,
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
