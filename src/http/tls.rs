//! TLS with rustls, driven over the gateway's own cancelable socket I/O.
//!
//! # Design
//! [`TlsStream`] owns the TCP socket, the rustls session and two byte buffers (ciphertext in and out).
//! Reads and writes of ciphertext use the socket's cancelable operations with the caller's cancel
//! handle, so a deadline or a drain cancels a TLS read exactly like a plain one: the operation is
//! cancelled and awaited, the ciphertext buffer comes back, and bytes of a partly received record stay
//! in rustls for the next read. (monoio-rustls hands its buffer to a read that cannot be cancelled, so a
//! timed-out read there would lose TLS bytes.) [`TlsStream`] implements [`Transport`], so the server,
//! the relay and the upstream client use it unchanged.
//!
//! [`ServerTls`] holds the listener's certificate; [`ClientTls`] the roots upstream certificates are
//! checked against (Mozilla's via webpki-roots, the system's, and an optional extra CA file), with SNI and
//! hostname checks always on.
//!
//! # Safety
//! Moving plaintext between rustls and a caller's [`IoBuf`]/[`IoBufMut`] needs their raw pointers: that
//! is the one audited `unsafe` of the crate (`readable`, `writable`, `commit`).

use super::io::Transport;
use monoio::BufResult;
use monoio::buf::{IoBuf, IoBufMut, IoVecBuf, IoVecBufMut};
use monoio::io::{
    AsyncReadRent, AsyncWriteRent, CancelHandle, CancelableAsyncReadRent, CancelableAsyncWriteRent, Canceller,
};
use monoio::net::TcpStream;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{
    ClientConfig, ClientConnection, ConnectionCommon, RootCertStore, ServerConfig, ServerConnection, SideData,
};
use std::io::{self, Read, Write};
use std::ops::{Deref, DerefMut};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// Ciphertext read from the socket at once (a TLS record is at most ~16.7 KiB).
const CIPHERTEXT_BUF: usize = 18 * 1024;
/// Plaintext handed to a caller at most per read (bounds the zeroing of its buffer).
const MAX_PLAINTEXT_PER_READ: usize = 64 * 1024;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn tls_err(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}

#[expect(clippy::disallowed_methods, reason = "certificates are read at start-up")]
fn read_pem(path: &Path) -> io::Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}

fn certs(path: &Path) -> io::Result<Vec<CertificateDer<'static>>> {
    let pem = read_pem(path)?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut pem.as_slice()).collect::<Result<_, _>>()?;
    if certs.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("no certificate in {}", path.display()),
        ));
    }
    Ok(certs)
}

/// The public listener's TLS: certificate chain and key (PEM).
#[derive(Clone)]
pub struct ServerTls {
    config: Arc<ServerConfig>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServerTls")
    }
}

impl ServerTls {
    pub fn from_pem_files(cert_path: &Path, key_path: &Path) -> io::Result<Self> {
        let chain = certs(cert_path)?;
        let key_pem = read_pem(key_path)?;
        let key: PrivateKeyDer<'static> =
            rustls_pemfile::private_key(&mut key_pem.as_slice())?.ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("no private key in {}", key_path.display()),
                )
            })?;
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(tls_err)?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(tls_err)?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self { config: Arc::new(config) })
    }

    /// Completes the handshake on an accepted connection within `timeout`.
    pub async fn accept(&self, tcp: TcpStream, timeout: Duration) -> io::Result<TlsStream<ServerConnection>> {
        let session = ServerConnection::new(Arc::clone(&self.config)).map_err(tls_err)?;
        let mut stream = TlsStream::new(tcp, session);
        stream.handshake(timeout).await?;
        Ok(stream)
    }
}

/// How upstream certificates are checked.
#[derive(Clone)]
pub struct ClientTls {
    config: Arc<ClientConfig>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientTls")
    }
}

impl ClientTls {
    /// Mozilla's roots, plus the system's when `system_roots`, plus the certificates in `extra_ca`.
    pub fn new(system_roots: bool, extra_ca: Option<&Path>) -> io::Result<Self> {
        let mut roots = RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        if system_roots {
            let native = rustls_native_certs::load_native_certs();
            for cert in native.certs {
                let _ = roots.add(cert);
            }
        }
        if let Some(path) = extra_ca {
            for cert in certs(path)? {
                roots.add(cert).map_err(tls_err)?;
            }
        }
        let mut config = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(tls_err)?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self { config: Arc::new(config) })
    }

    fn session(&self, host: &str) -> io::Result<ClientConnection> {
        let name = ServerName::try_from(host.to_owned()).map_err(tls_err)?;
        ClientConnection::new(Arc::clone(&self.config), name).map_err(tls_err)
    }

    /// Connects TLS over `tcp` to `host` (SNI and certificate checked) within `timeout`.
    pub async fn connect(
        &self,
        host: &str,
        tcp: TcpStream,
        timeout: Duration,
    ) -> io::Result<TlsStream<ClientConnection>> {
        let mut stream = TlsStream::new(tcp, self.session(host)?);
        stream.handshake(timeout).await?;
        Ok(stream)
    }

    /// A blocking TLS stream (health and discovery threads).
    pub fn blocking_stream(
        &self,
        host: &str,
        tcp: std::net::TcpStream,
    ) -> io::Result<rustls::StreamOwned<ClientConnection, std::net::TcpStream>> {
        Ok(rustls::StreamOwned::new(self.session(host)?, tcp))
    }
}

/// A TLS connection over a TCP socket.
pub struct TlsStream<C> {
    tcp: TcpStream,
    session: C,
    /// Ciphertext received and not yet taken by rustls.
    incoming: Vec<u8>,
    /// Ciphertext to send.
    outgoing: Vec<u8>,
}

impl<C> std::fmt::Debug for TlsStream<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsStream").field("tcp", &self.tcp).finish()
    }
}

impl<C, D> TlsStream<C>
where
    C: DerefMut + Deref<Target = ConnectionCommon<D>> + 'static,
    D: SideData,
{
    fn new(tcp: TcpStream, session: C) -> Self {
        Self { tcp, session, incoming: Vec::with_capacity(CIPHERTEXT_BUF), outgoing: Vec::new() }
    }

    /// Drives the handshake to its end, within `timeout`.
    async fn handshake(&mut self, timeout: Duration) -> io::Result<()> {
        let canceller = Canceller::new();
        let handle = canceller.handle();
        let work = async {
            while self.session.is_handshaking() {
                self.flush_tls(&handle).await?;
                if self.session.is_handshaking()
                    && self.session.wants_read()
                    && self.read_tls(&handle).await? == 0
                {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "connection closed during the TLS handshake",
                    ));
                }
            }
            self.flush_tls(&handle).await
        };
        let mut work = std::pin::pin!(work);
        monoio::select! {
            r = &mut work => return r,
            _ = crate::rt::sleep(timeout) => {}
        }
        let _fresh = canceller.cancel();
        let _ = work.await;
        Err(io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out"))
    }

    /// Reads ciphertext into rustls and processes it. `Ok(0)` at end of stream.
    async fn read_tls(&mut self, c: &CancelHandle) -> io::Result<usize> {
        if self.incoming.is_empty() {
            let buf = std::mem::take(&mut self.incoming);
            let cap = buf.capacity().max(CIPHERTEXT_BUF);
            let mut buf = buf;
            buf.reserve(cap);
            let end = buf.capacity();
            let (res, slice) = self.tcp.cancelable_read(buf.slice_mut(0..end), c.clone()).await;
            self.incoming = slice.into_inner();
            if res? == 0 {
                // End of stream: rustls learns of it from an empty read.
                self.session.read_tls(&mut io::empty())?;
                return Ok(0);
            }
        }
        let mut pending = &self.incoming[..];
        let taken = self.session.read_tls(&mut pending)?;
        self.incoming.drain(..taken);
        if let Err(e) = self.session.process_new_packets() {
            // Tell the peer why (an alert), best effort, then fail.
            let _ = self.flush_tls(c).await;
            return Err(tls_err(e));
        }
        Ok(taken.max(1))
    }

    /// Sends everything rustls has queued.
    async fn flush_tls(&mut self, c: &CancelHandle) -> io::Result<()> {
        while self.session.wants_write() {
            self.outgoing.clear();
            self.session.write_tls(&mut self.outgoing)?;
            let mut buf = std::mem::take(&mut self.outgoing);
            let mut written = 0;
            let len = buf.len();
            while written < len {
                let (res, slice) = self.tcp.cancelable_write(buf.slice(written..len), c.clone()).await;
                buf = slice.into_inner();
                match res {
                    Ok(0) => {
                        self.outgoing = buf;
                        return Err(io::ErrorKind::WriteZero.into());
                    }
                    Ok(n) => written += n,
                    Err(e) => {
                        self.outgoing = buf;
                        return Err(e);
                    }
                }
            }
            self.outgoing = buf;
        }
        Ok(())
    }

    async fn read_plain<T: IoBufMut>(&mut self, mut buf: T, c: CancelHandle) -> BufResult<usize, T> {
        loop {
            let read = {
                let dst = writable(&mut buf, MAX_PLAINTEXT_PER_READ);
                self.session.reader().read(dst)
            };
            match read {
                Ok(n) => {
                    commit(&mut buf, n);
                    return (Ok(n), buf);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // A peer that closes without close_notify: for HTTP, framing tells whether anything is missing.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return (Ok(0), buf),
                Err(e) => return (Err(e), buf),
            }
            if self.session.wants_write()
                && let Err(e) = self.flush_tls(&c).await
            {
                return (Err(e), buf);
            }
            if let Err(e) = self.read_tls(&c).await {
                return (Err(e), buf);
            }
        }
    }

    async fn write_plain<T: IoBuf>(&mut self, buf: T, c: CancelHandle) -> BufResult<usize, T> {
        let n = match self.session.writer().write(readable(&buf)) {
            Ok(n) => n,
            Err(e) => return (Err(e), buf),
        };
        let res = self.flush_tls(&c).await;
        (res.map(|()| n), buf)
    }
}

fn unsupported<T>(buf: T) -> BufResult<usize, T> {
    (Err(io::Error::new(io::ErrorKind::Unsupported, "vectored I/O is not used over TLS")), buf)
}

impl<C, D> AsyncReadRent for TlsStream<C>
where
    C: DerefMut + Deref<Target = ConnectionCommon<D>> + 'static,
    D: SideData,
{
    async fn read<T: IoBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
        self.read_plain(buf, Canceller::new().handle()).await
    }

    async fn readv<T: IoVecBufMut>(&mut self, buf: T) -> BufResult<usize, T> {
        unsupported(buf)
    }
}

impl<C, D> CancelableAsyncReadRent for TlsStream<C>
where
    C: DerefMut + Deref<Target = ConnectionCommon<D>> + 'static,
    D: SideData,
{
    async fn cancelable_read<T: IoBufMut>(&mut self, buf: T, c: CancelHandle) -> BufResult<usize, T> {
        self.read_plain(buf, c).await
    }

    async fn cancelable_readv<T: IoVecBufMut>(&mut self, buf: T, _c: CancelHandle) -> BufResult<usize, T> {
        unsupported(buf)
    }
}

impl<C, D> AsyncWriteRent for TlsStream<C>
where
    C: DerefMut + Deref<Target = ConnectionCommon<D>> + 'static,
    D: SideData,
{
    async fn write<T: IoBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        self.write_plain(buf, Canceller::new().handle()).await
    }

    async fn writev<T: IoVecBuf>(&mut self, buf: T) -> BufResult<usize, T> {
        unsupported(buf)
    }

    async fn flush(&mut self) -> io::Result<()> {
        self.flush_tls(&Canceller::new().handle()).await
    }

    async fn shutdown(&mut self) -> io::Result<()> {
        self.session.send_close_notify();
        let _ = self.flush_tls(&Canceller::new().handle()).await;
        self.tcp.shutdown().await
    }
}

impl<C, D> CancelableAsyncWriteRent for TlsStream<C>
where
    C: DerefMut + Deref<Target = ConnectionCommon<D>> + 'static,
    D: SideData,
{
    async fn cancelable_write<T: IoBuf>(&mut self, buf: T, c: CancelHandle) -> BufResult<usize, T> {
        self.write_plain(buf, c).await
    }

    async fn cancelable_writev<T: IoVecBuf>(&mut self, buf: T, _c: CancelHandle) -> BufResult<usize, T> {
        unsupported(buf)
    }

    async fn cancelable_flush(&mut self, c: CancelHandle) -> io::Result<()> {
        self.flush_tls(&c).await
    }

    async fn cancelable_shutdown(&mut self, c: CancelHandle) -> io::Result<()> {
        self.session.send_close_notify();
        let _ = self.flush_tls(&c).await;
        self.tcp.shutdown().await
    }
}

impl<C, D> Transport for TlsStream<C>
where
    C: DerefMut + Deref<Target = ConnectionCommon<D>> + 'static,
    D: SideData,
{
    fn socket(&self) -> &TcpStream {
        &self.tcp
    }
}

// ---------------------------------------------------------------------------------------------------
// The audited unsafe: writing decrypted bytes into a caller's buffer.
// ---------------------------------------------------------------------------------------------------

/// The first `max` bytes of `buf`'s writable region, zeroed so they may be handed out as `&mut [u8]`.
#[expect(unsafe_code, reason = "IoBufMut exposes its writable region only as a raw pointer and length")]
fn writable<T: IoBufMut>(buf: &mut T, max: usize) -> &mut [u8] {
    let len = buf.bytes_total().min(max);
    let ptr = buf.write_ptr();
    // SAFETY: `IoBufMut` guarantees `write_ptr()` is valid for writes of `bytes_total()` bytes while the
    // buffer is alive and not moved; the slice borrows `buf` mutably, so it can be neither. Every byte is
    // written (zeroed) before the slice is formed, so the slice covers initialized memory only.
    unsafe {
        std::ptr::write_bytes(ptr, 0, len);
        std::slice::from_raw_parts_mut(ptr, len)
    }
}

/// The initialized bytes of `buf`.
#[expect(unsafe_code, reason = "IoBuf exposes its bytes only as a raw pointer and length")]
fn readable<T: IoBuf>(buf: &T) -> &[u8] {
    // SAFETY: `IoBuf` guarantees `read_ptr()` is valid for reads of `bytes_init()` initialized bytes while
    // the buffer is alive and not moved; the slice borrows `buf`, so it can be neither.
    unsafe { std::slice::from_raw_parts(buf.read_ptr(), buf.bytes_init()) }
}

/// Marks the first `n` bytes of `buf`'s writable region as filled.
#[expect(unsafe_code, reason = "IoBufMut::set_init is unsafe: the caller vouches the bytes are written")]
fn commit<T: IoBufMut>(buf: &mut T, n: usize) {
    // SAFETY: `n` bytes were just written into the region returned by `writable` (n ≤ its length).
    unsafe { buf.set_init(n) }
}
