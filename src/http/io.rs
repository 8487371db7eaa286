//! Socket I/O with deadlines, on owned buffers.
//!
//! # Design
//! monoio's I/O takes a buffer by value and gives it back with the result. A deadline is a race between
//! the operation and a timer; when the timer wins, the operation is cancelled *and awaited*, so the buffer
//! comes back (the style rule: never drop an in-flight read without getting its buffer back) and any bytes
//! that raced in are kept.

use monoio::BufResult;
use monoio::buf::{IoBuf, IoBufMut};
use monoio::io::{CancelableAsyncReadRent, CancelableAsyncWriteRent, Canceller};
use monoio::net::TcpStream;
use std::future::Future;
use std::io;
use std::time::Duration;

/// A client or upstream connection: cancelable reads and writes, and the TCP socket underneath (for
/// readiness checks, which work the same under TLS).
pub trait Transport: CancelableAsyncReadRent + CancelableAsyncWriteRent + 'static {
    fn socket(&self) -> &TcpStream;
}

impl Transport for TcpStream {
    fn socket(&self) -> &TcpStream {
        self
    }
}

/// Why a read ended without data.
#[derive(Debug)]
pub enum ReadError {
    /// The peer closed its side.
    Eof,
    /// The deadline passed.
    TimedOut,
    /// The interrupt future completed (shutdown).
    Interrupted,
    Io(io::Error),
}

impl From<ReadError> for io::Error {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::Eof => io::Error::new(io::ErrorKind::UnexpectedEof, "peer closed the connection"),
            ReadError::TimedOut => io::Error::new(io::ErrorKind::TimedOut, "read timed out"),
            ReadError::Interrupted => io::Error::new(io::ErrorKind::Interrupted, "shutting down"),
            ReadError::Io(e) => e,
        }
    }
}

/// Reads once into `buf`, giving up after `timeout` or when `interrupt` completes.
pub async fn read_deadline<R, T, F>(
    io: &mut R,
    buf: T,
    timeout: Duration,
    interrupt: F,
) -> (Result<usize, ReadError>, T)
where
    R: CancelableAsyncReadRent + ?Sized,
    T: IoBufMut,
    F: Future<Output = ()>,
{
    let canceller = Canceller::new();
    let read = io.cancelable_read(buf, canceller.handle());
    let mut read = std::pin::pin!(read);
    let why = monoio::select! {
        r = &mut read => return map_read(r),
        _ = crate::rt::sleep(timeout) => ReadError::TimedOut,
        _ = interrupt => ReadError::Interrupted,
    };
    let _fresh = canceller.cancel();
    let (res, buf) = read.await;
    match res {
        // The read completed before the cancellation reached it: keep those bytes.
        Ok(n) if n > 0 => (Ok(n), buf),
        _ => (Err(why), buf),
    }
}

fn map_read<T>((res, buf): BufResult<usize, T>) -> (Result<usize, ReadError>, T) {
    match res {
        Ok(0) => (Err(ReadError::Eof), buf),
        Ok(n) => (Ok(n), buf),
        Err(e) => (Err(ReadError::Io(e)), buf),
    }
}

/// Writes all of `buf` within `timeout`.
pub async fn write_all_deadline<W, T>(io: &mut W, mut buf: T, timeout: Duration) -> BufResult<(), T>
where
    W: CancelableAsyncWriteRent + ?Sized,
    T: IoBuf,
{
    let len = buf.bytes_init();
    let mut written = 0;
    let deadline = monoio::time::Instant::now() + timeout;
    let canceller = Canceller::new();
    while written < len {
        let slice = buf.slice(written..len);
        let write = io.cancelable_write(slice, canceller.handle());
        let mut write = std::pin::pin!(write);
        let timed_out = monoio::select! {
            r = &mut write => {
                let (res, slice) = r;
                buf = slice.into_inner();
                match res {
                    Ok(0) => return (Err(io::ErrorKind::WriteZero.into()), buf),
                    Ok(n) => { written += n; continue; }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return (Err(e), buf),
                }
            }
            _ = crate::rt::sleep_until(deadline) => true,
        };
        debug_assert!(timed_out);
        let _fresh = canceller.cancel();
        let (_, slice) = write.await;
        return (Err(io::Error::new(io::ErrorKind::TimedOut, "write timed out")), slice.into_inner());
    }
    (Ok(()), buf)
}

/// A connection's read buffer: `buf[start..]` holds received bytes not yet consumed.
#[derive(Debug, Default)]
pub struct ReadBuf {
    buf: Vec<u8>,
    start: usize,
}

impl ReadBuf {
    pub fn with_capacity(capacity: usize) -> Self {
        Self { buf: Vec::with_capacity(capacity), start: 0 }
    }

    /// The unconsumed bytes.
    pub fn data(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    pub fn data_mut(&mut self) -> &mut [u8] {
        &mut self.buf[self.start..]
    }

    pub fn len(&self) -> usize {
        self.buf.len() - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// Marks `n` bytes as consumed.
    pub fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.buf.len());
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
    }

    /// Drops everything after the first `n` unconsumed bytes.
    pub fn truncate(&mut self, n: usize) {
        self.buf.truncate(self.start + n);
    }

    /// Makes room for at least `want` more bytes without letting the buffer exceed `max` in total
    /// (when it would, only what fits). Returns the spare room now available.
    fn make_room(&mut self, want: usize, max: usize) -> usize {
        if self.start > 0 && self.buf.capacity() - self.buf.len() < want {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        let spare = self.buf.capacity() - self.buf.len();
        if spare < want && self.buf.capacity() < max {
            let target = (self.buf.len() + want).min(max);
            self.buf.reserve_exact(target.saturating_sub(self.buf.len()));
        }
        self.buf.capacity() - self.buf.len()
    }

    /// Reads more bytes from `io` (at most so that the buffer stays within `max` bytes).
    /// `Ok(0)` means the buffer is full.
    pub async fn fill<R, F>(
        &mut self,
        io: &mut R,
        max: usize,
        timeout: Duration,
        interrupt: F,
    ) -> Result<usize, ReadError>
    where
        R: CancelableAsyncReadRent + ?Sized,
        F: Future<Output = ()>,
    {
        let want = (self.buf.capacity() / 2).max(4096);
        if self.make_room(want, max) == 0 {
            return Ok(0);
        }
        let vec = std::mem::take(&mut self.buf);
        let len = vec.len();
        let (res, slice) = read_deadline(io, vec.slice_mut(len..), timeout, interrupt).await;
        self.buf = slice.into_inner();
        res
    }

    /// Hands the whole buffer out (for an I/O operation that must own it), leaving this one empty.
    pub fn take(&mut self) -> (Vec<u8>, usize) {
        let start = std::mem::take(&mut self.start);
        (std::mem::take(&mut self.buf), start)
    }

    /// Puts back a buffer taken with [`ReadBuf::take`].
    pub fn restore(&mut self, buf: Vec<u8>, start: usize) {
        self.buf = buf;
        self.start = start.min(self.buf.len());
    }

    /// Gives back memory beyond `keep` bytes of capacity when the buffer is empty (after a large body).
    pub fn shrink_idle(&mut self, keep: usize) {
        if self.is_empty() && self.buf.capacity() > keep {
            self.buf = Vec::with_capacity(keep);
            self.start = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consume_and_truncate_track_the_window() {
        let mut rb = ReadBuf::with_capacity(16);
        rb.buf.extend_from_slice(b"hello world");
        rb.consume(6);
        assert_eq!(rb.data(), b"world");
        rb.truncate(3);
        assert_eq!(rb.data(), b"wor");
        rb.consume(3);
        assert!(rb.is_empty());
        assert_eq!(rb.start, 0);
    }

    #[test]
    fn make_room_compacts_before_growing() {
        let mut rb = ReadBuf::with_capacity(8);
        rb.buf.extend_from_slice(b"abcdefgh");
        rb.consume(6);
        let spare = rb.make_room(4, 8);
        assert!(spare >= 4);
        assert_eq!(rb.data(), b"gh");
        assert_eq!(rb.capacity(), 8);
        rb.buf.extend_from_slice(b"ijklmn");
        assert_eq!(rb.make_room(4096, 8), 0, "never past max");
    }
}
