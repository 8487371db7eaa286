//! The client's side of an exchange with a node, watched while the node is waited on: a client that
//! hangs up is noticed at once, bytes it sends meanwhile (a pipelined request) are kept, and once it
//! has left, reads of the node's answer are bounded by the drain bound.

use super::buffer::{BufferPool, HEADROOM, TAILROOM};
use super::client::UpstreamIo;
use crate::http::io::{ReadBuf, ReadError, Transport, write_all_deadline};
use monoio::buf::IoBufMut;
use monoio::io::{CancelHandle, CancelableAsyncReadRent, Canceller};
use monoio::time::Instant;
use std::io;
use std::time::Duration;

/// How long a readable client socket may take to yield its bytes before the readiness is deemed spurious.
const CLIENT_PROBE_TIMEOUT: Duration = Duration::from_millis(200);

/// How long, and how many bytes of it, a node's answer is still read after the client left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DrainBound {
    pub time: Duration,
    pub bytes: u64,
}

/// The client half of a relay.
pub struct ClientSide<'a, S> {
    pub io: &'a mut S,
    /// Where bytes the client sends meanwhile (a pipelined request) are kept.
    pub rbuf: &'a mut ReadBuf,
    pub rbuf_max: usize,
    pub write_timeout: Duration,
    /// Set for a streamed answer: its waits on the node hold no buffer (see [`BufferPool`]).
    pub buffers: Option<&'a dyn BufferPool>,
    watching: bool,
    pub(super) drain: DrainBound,
    /// When the client went away, if it did.
    gone_at: Option<Instant>,
}

impl<S> std::fmt::Debug for ClientSide<'_, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientSide")
            .field("watching", &self.watching)
            .field("gone_at", &self.gone_at)
            .finish()
    }
}

impl<'a, S: Transport> ClientSide<'a, S> {
    pub fn new(
        io: &'a mut S,
        rbuf: &'a mut ReadBuf,
        rbuf_max: usize,
        write_timeout: Duration,
        drain: DrainBound,
    ) -> Self {
        Self { io, rbuf, rbuf_max, write_timeout, buffers: None, watching: true, drain, gone_at: None }
    }

    /// Whether the client has gone away.
    pub fn is_gone(&self) -> bool {
        self.gone_at.is_some()
    }

    /// The client went away now (or earlier): from here on the node's answer is only drained.
    pub(super) fn leave(&mut self) {
        if self.gone_at.is_none() {
            self.gone_at = Some(Instant::now());
        }
        self.watching = false;
    }

    /// The deadline of a read that must also end within the drain bound once the client is gone.
    pub(super) fn bounded(&self, deadline: Instant) -> Instant {
        match self.gone_at {
            Some(gone) => deadline.min(gone + self.drain.time),
            None => deadline,
        }
    }

    /// The client socket turned readable: take what is there. `false` when the client has gone. Boxed
    /// where it is awaited ([`watching_client`]): it is rare (a pipelined request, a hang-up) and its
    /// future would otherwise add its size to every wait on the node, and so to every held stream's task.
    pub(super) async fn on_readable(&mut self) -> bool {
        match self.rbuf.fill(self.io, self.rbuf_max, CLIENT_PROBE_TIMEOUT, std::future::pending()).await {
            Ok(0) => {
                // Buffer full of pipelined requests: stop watching until this exchange ends.
                self.watching = false;
                true
            }
            Ok(_) | Err(ReadError::TimedOut) => true,
            Err(_) => false,
        }
    }

    pub(super) async fn write(
        &mut self,
        buf: Vec<u8>,
        start: usize,
        end: usize,
    ) -> (io::Result<()>, Vec<u8>) {
        use monoio::buf::IoBuf;
        let (res, slice) = write_all_deadline(self.io, buf.slice(start..end), self.write_timeout).await;
        (res, slice.into_inner())
    }
}

/// What one wait on the node produced.
#[derive(Debug)]
pub(super) enum UpRead {
    Data(usize),
    Eof,
    Failed(io::Error),
    TimedOut,
    ClientGone,
}

async fn read_owned(
    mut up: UpstreamIo,
    buf: Vec<u8>,
    c: CancelHandle,
) -> (UpstreamIo, io::Result<usize>, Vec<u8>) {
    let start = buf.len();
    let end = buf.capacity() - TAILROOM;
    let (res, slice) = up.cancelable_read(buf.slice_mut(start..end), c).await;
    (up, res, slice.into_inner())
}

/// Waits for `node_wait` (what the node is to do), watching the client meanwhile: bytes it sends are
/// kept, and a client that hangs up ends the wait (`Err(ClientGone)`), as does the deadline
/// (`Err(TimedOut)`, bounded by the drain bound once the client is gone). The one wait loop of both the
/// read of the node's answer and the wait for its socket to turn readable.
async fn watching_client<S: Transport, T>(
    client: &mut ClientSide<'_, S>,
    mut node_wait: std::pin::Pin<&mut impl std::future::Future<Output = T>>,
    deadline: Instant,
) -> Result<T, UpRead> {
    let deadline = client.bounded(deadline);
    loop {
        let watching = client.watching && !client.is_gone();
        let client_readable = monoio::select! {
            out = &mut node_wait => return Ok(out),
            _ = crate::rt::sleep_until(deadline) => return Err(UpRead::TimedOut),
            r = client.io.socket().readable(false), if watching => r,
        };
        if client_readable.is_err() || !Box::pin(client.on_readable()).await {
            return Err(UpRead::ClientGone);
        }
    }
}

/// Reads more of the node's answer after `buf`'s current length, watching the client meanwhile.
pub(super) async fn read_upstream<S: Transport>(
    client: &mut ClientSide<'_, S>,
    up: UpstreamIo,
    mut buf: Vec<u8>,
    deadline: Instant,
) -> (UpstreamIo, Vec<u8>, UpRead) {
    if let (Some(pool), UpstreamIo::Plain(node)) = (client.buffers, &up)
        && buf.len() == HEADROOM
    {
        // Nothing held in the buffer: wait for the node without it (a readiness error shows again in
        // the read that follows).
        pool.put(std::mem::take(&mut buf));
        let readable = node.readable(false);
        let woke = watching_client(client, std::pin::pin!(readable), deadline).await;
        buf = pool.take();
        if let Err(why) = woke {
            return (up, buf, why);
        }
    }
    if buf.capacity() < buf.len() + TAILROOM + 512 {
        buf.reserve(buf.capacity().max(4096));
    }
    let canceller = Canceller::new();
    let read = read_owned(up, buf, canceller.handle());
    let mut read = std::pin::pin!(read);
    let why = match watching_client(client, read.as_mut(), deadline).await {
        Ok((up, res, buf)) => {
            let r = match res {
                Ok(0) => UpRead::Eof,
                Ok(n) => UpRead::Data(n),
                Err(e) => UpRead::Failed(e),
            };
            return (up, buf, r);
        }
        Err(why) => why,
    };
    let _fresh = canceller.cancel();
    let (up, _, buf) = read.await;
    (up, buf, why)
}
