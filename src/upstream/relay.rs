//! The relay: a node's answer forwarded to the client as it arrives.
//!
//! # Design
//! Every upstream read lands in one buffer laid out as `[HEADROOM][data][TAILROOM]`. The read is un-framed
//! in place (chunked payload compacted forward), filtered in place (an SSE event the client did not ask
//! for is cut out), then framed for the client in place (the chunk-size line written backwards into the
//! headroom, CRLF into the tailroom) and written with one `send` from that same buffer: no copy, no
//! allocation per read. An SSE event split across reads is held back until its blank line arrives (the
//! client could not act on half an event anyway); that rare path copies through a side buffer.
//!
//! While it waits on the node, the relay also watches the client socket for readability: a hang-up is
//! noticed at once (the upstream read is cancelled and awaited, so buffers come back). Bytes of a
//! pipelined next request are kept. A client that leaves (hangs up, or stops reading until a write times
//! out) does not end the exchange with the node: what the node generated is paid for, so its answer is
//! still read, not relayed, within a bound ([`DrainBound`]) until its usage arrives; past the bound the
//! node connection is closed and what it sent is counted.
//!
//! The client's response head is held until the first payload and sent in the same write. Until then
//! nothing has reached the client, so a node that fails first can still be replaced by another.

use super::client::UpstreamIo;
use super::client::{
    MAX_RESPONSE_HEAD_BYTES, ResponseBody, ResponseHead, ResponseHeadError, parse_response_head,
};
use crate::billing::UsageScanner;
use crate::http::chunked::{CHUNK_HEADER_MAX, ChunkedDecoder, LAST_CHUNK, write_size_line_backwards};
use crate::http::io::{ReadBuf, ReadError, Transport, write_all_deadline};
use crate::http::sse::{self, EventKind};
use crate::model::Usage;
use monoio::buf::IoBufMut;
use monoio::io::{CancelHandle, CancelableAsyncReadRent, Canceller};
use monoio::time::Instant;
use std::io;
use std::time::Duration;

/// Room before the data for the chunk-size line.
pub const HEADROOM: usize = CHUNK_HEADER_MAX;
/// Room after the data for the chunk's CRLF.
pub const TAILROOM: usize = 2;
/// A first payload up to this size is copied behind the response head and sent in one write.
const MERGE_WITH_HEAD_MAX: usize = 16 * 1024;
/// An SSE "event" longer than this without a blank line is forwarded as it is.
const MAX_HELD_EVENT_BYTES: usize = 1 << 20;
/// How long a readable client socket may take to yield its bytes before the readiness is deemed spurious.
const CLIENT_PROBE_TIMEOUT: Duration = Duration::from_millis(200);

/// A fresh relay buffer of `capacity` bytes with its headroom in place.
pub fn relay_buffer(capacity: usize) -> Vec<u8> {
    let mut buf = Vec::with_capacity(capacity.max(HEADROOM + TAILROOM + 512));
    buf.resize(HEADROOM, 0);
    buf
}

/// How long, and how many bytes of it, a node's answer is still read after the client left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DrainBound {
    pub time: Duration,
    pub bytes: u64,
}

/// The client half of a relay.
#[derive(Debug)]
pub struct ClientSide<'a, S> {
    pub io: &'a mut S,
    /// Where bytes the client sends meanwhile (a pipelined request) are kept.
    pub rbuf: &'a mut ReadBuf,
    pub rbuf_max: usize,
    pub write_timeout: Duration,
    watching: bool,
    drain: DrainBound,
    /// When the client went away, if it did.
    gone_at: Option<Instant>,
}

impl<'a, S: Transport> ClientSide<'a, S> {
    pub fn new(
        io: &'a mut S,
        rbuf: &'a mut ReadBuf,
        rbuf_max: usize,
        write_timeout: Duration,
        drain: DrainBound,
    ) -> Self {
        Self { io, rbuf, rbuf_max, write_timeout, watching: true, drain, gone_at: None }
    }

    /// Whether the client has gone away.
    pub fn is_gone(&self) -> bool {
        self.gone_at.is_some()
    }

    /// The client went away now (or earlier): from here on the node's answer is only drained.
    fn leave(&mut self) {
        if self.gone_at.is_none() {
            self.gone_at = Some(Instant::now());
        }
        self.watching = false;
    }

    /// The deadline of a read that must also end within the drain bound once the client is gone.
    fn bounded(&self, deadline: Instant) -> Instant {
        match self.gone_at {
            Some(gone) => deadline.min(gone + self.drain.time),
            None => deadline,
        }
    }

    /// The client socket turned readable: take what is there. `false` when the client has gone.
    async fn on_readable(&mut self) -> bool {
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

    async fn write(&mut self, buf: Vec<u8>, start: usize, end: usize) -> (io::Result<()>, Vec<u8>) {
        use monoio::buf::IoBuf;
        let (res, slice) = write_all_deadline(self.io, buf.slice(start..end), self.write_timeout).await;
        (res, slice.into_inner())
    }
}

/// What one wait on the node produced.
#[derive(Debug)]
enum UpRead {
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

/// Reads more of the node's answer after `buf`'s current length, watching the client meanwhile.
async fn read_upstream<S: Transport>(
    client: &mut ClientSide<'_, S>,
    up: UpstreamIo,
    mut buf: Vec<u8>,
    deadline: Instant,
) -> (UpstreamIo, Vec<u8>, UpRead) {
    if buf.capacity() < buf.len() + TAILROOM + 512 {
        buf.reserve(buf.capacity().max(4096));
    }
    let canceller = Canceller::new();
    let read = read_owned(up, buf, canceller.handle());
    let mut read = std::pin::pin!(read);
    enum Woke {
        Read(UpstreamIo, io::Result<usize>, Vec<u8>),
        Deadline,
        Client(io::Result<()>),
    }
    let deadline = client.bounded(deadline);
    let why = loop {
        let watching = client.watching && !client.is_gone();
        let woke = monoio::select! {
            (up, res, buf) = &mut read => Woke::Read(up, res, buf),
            _ = monoio::time::sleep_until(deadline) => Woke::Deadline,
            r = client.io.socket().readable(false), if watching => Woke::Client(r),
        };
        match woke {
            Woke::Read(up, res, buf) => {
                let r = match res {
                    Ok(0) => UpRead::Eof,
                    Ok(n) => UpRead::Data(n),
                    Err(e) => UpRead::Failed(e),
                };
                return (up, buf, r);
            }
            Woke::Deadline => break UpRead::TimedOut,
            Woke::Client(Err(_)) => break UpRead::ClientGone,
            Woke::Client(Ok(())) => {
                if !client.on_readable().await {
                    break UpRead::ClientGone;
                }
            }
        }
    };
    let _fresh = canceller.cancel();
    let (up, _, buf) = read.await;
    (up, buf, why)
}

/// Why an attempt at a node failed before any byte reached the client.
#[derive(Debug, thiserror::Error)]
pub enum AttemptError {
    #[error("writing the request failed: {0}")]
    Send(io::Error),
    #[error("the node closed the connection before answering")]
    Closed,
    #[error("reading the answer failed: {0}")]
    Read(io::Error),
    #[error("the node did not answer in time")]
    HeadTimeout,
    #[error("bad answer from the node: {0}")]
    BadHead(ResponseHeadError),
    #[error("the client went away")]
    ClientGone,
}

impl AttemptError {
    /// A pooled connection that fails like this was most likely closed by the node while idle: retry on
    /// a fresh connection to the same node without counting a failure.
    pub fn is_stale_connection(&self) -> bool {
        match self {
            Self::Closed => true,
            Self::Send(e) | Self::Read(e) => matches!(
                e.kind(),
                io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionAborted
            ),
            _ => false,
        }
    }
}

/// The node's response head, with `leftover` body bytes already in the relay buffer.
#[derive(Debug)]
pub struct Answer {
    pub up: UpstreamIo,
    pub head: ResponseHead,
    pub leftover: usize,
}

/// Sends `request` (the head, and the body too unless it comes as `body`) on `up` and waits for the response
/// head (skipping 1xx heads). A client that leaves meanwhile does not end the wait: the node's answer is
/// still due, and is drained (see the module docs); only past the drain bound does the wait end with
/// [`AttemptError::ClientGone`]. `buf` must come from [`relay_buffer`]; it is returned with any body bytes
/// after its headroom.
pub async fn exchange<S: Transport>(
    client: &mut ClientSide<'_, S>,
    mut up: UpstreamIo,
    request: Vec<u8>,
    body: Option<bytes::Bytes>,
    mut buf: Vec<u8>,
    head_timeout: Duration,
) -> (Result<Answer, AttemptError>, Vec<u8>, Vec<u8>) {
    let (res, request) = write_all_deadline(&mut up, request, client.write_timeout).await;
    if let Err(e) = res {
        return (Err(AttemptError::Send(e)), request, buf);
    }
    if let Some(body) = body {
        // A large body goes from where it is (shared, not copied) after the head.
        let (res, _) = write_all_deadline(&mut up, body, client.write_timeout).await;
        if let Err(e) = res {
            return (Err(AttemptError::Send(e)), request, buf);
        }
    }
    buf.truncate(HEADROOM);
    let deadline = Instant::now() + head_timeout;
    loop {
        let (u, b, r) = read_upstream(client, up, buf, deadline).await;
        up = u;
        buf = b;
        match r {
            UpRead::Data(_) => {}
            UpRead::Eof => return (Err(AttemptError::Closed), request, buf),
            UpRead::Failed(e) => return (Err(AttemptError::Read(e)), request, buf),
            UpRead::TimedOut if client.is_gone() => return (Err(AttemptError::ClientGone), request, buf),
            UpRead::TimedOut => return (Err(AttemptError::HeadTimeout), request, buf),
            UpRead::ClientGone => {
                client.leave();
                continue;
            }
        }
        match parse_response_head(&buf[HEADROOM..]) {
            Ok(head) if (100..200).contains(&head.status) => {
                buf.drain(HEADROOM..HEADROOM + head.head_len);
            }
            Ok(head) => {
                let body_start = HEADROOM + head.head_len;
                let leftover = buf.len() - body_start;
                buf.copy_within(body_start.., HEADROOM);
                buf.truncate(HEADROOM + leftover);
                return (Ok(Answer { up, head, leftover }), request, buf);
            }
            Err(ResponseHeadError::Incomplete) => {
                if buf.len() >= HEADROOM + MAX_RESPONSE_HEAD_BYTES {
                    return (Err(AttemptError::BadHead(ResponseHeadError::TooLarge)), request, buf);
                }
            }
            Err(e) => return (Err(AttemptError::BadHead(e)), request, buf),
        }
    }
}

/// How the body is inspected on its way through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyMode {
    /// Server-sent events; `cut_usage` removes the usage-only chunk (the client did not ask for it).
    Sse { cut_usage: bool },
    /// Anything else: forwarded untouched while the top-level `usage` is picked out.
    Json,
}

/// How the body is delimited towards the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientFraming {
    /// The node's Content-Length is kept (the body passes unchanged).
    Length,
    Chunked,
    /// Until close (HTTP/1.0 clients).
    Close,
}

/// How a relay ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RelayEnd {
    Complete,
    /// The client left; `drained` when the node's answer was still read to its end afterwards.
    ClientGone {
        drained: bool,
    },
    UpstreamBroken(String),
    UpstreamTimedOut,
}

/// What a relay did, for settlement, metrics and the connection loop.
#[derive(Debug)]
pub struct RelayResult {
    pub end: RelayEnd,
    pub usage: Option<Usage>,
    /// SSE data events the node sent (content, role, finish): the completion tokens it generated, when it
    /// gave no usage.
    pub data_events: u64,
    /// Body bytes the node sent (relayed, or drained after the client left).
    pub bytes: u64,
    /// `before_final` ran (the usage record was settled before the last bytes).
    pub final_ran: bool,
    /// Whether any byte (the head included) reached the client.
    pub head_sent: bool,
    /// When the first body byte was written to the client.
    pub first_byte_at: Option<Instant>,
    /// The client connection is in a clean state for another request.
    pub client_keep_alive: bool,
    /// The node connection, when it ended cleanly and may be pooled.
    pub reusable: Option<UpstreamIo>,
}

struct Filter {
    mode: BodyMode,
    held: Vec<u8>,
    scanner: UsageScanner,
    usage: Option<Usage>,
    data_events: u64,
    /// The stream's `[DONE]` event has been seen.
    done_seen: bool,
    /// Payload bytes relayed.
    bytes: u64,
}

enum Out {
    /// `buf[start..end]` is ready to frame and send.
    InPlace(usize, usize),
    /// `held[..n]` is ready.
    Held(usize),
}

impl Filter {
    fn new(mode: BodyMode) -> Self {
        Self {
            mode,
            held: Vec::new(),
            scanner: UsageScanner::new(),
            usage: None,
            data_events: 0,
            done_seen: false,
            bytes: 0,
        }
    }

    /// Filters the payload at `buf[HEADROOM..HEADROOM + len]`.
    fn filter(&mut self, buf: &mut [u8], len: usize) -> Out {
        let payload = &mut buf[HEADROOM..HEADROOM + len];
        match self.mode {
            BodyMode::Json => {
                self.scanner.feed(payload);
                Out::InPlace(HEADROOM, HEADROOM + len)
            }
            BodyMode::Sse { cut_usage } => {
                if self.held.is_empty() {
                    let (complete, total) = self.events(payload, cut_usage);
                    self.held.extend_from_slice(&payload[complete..total]);
                    Out::InPlace(HEADROOM, HEADROOM + complete)
                } else {
                    self.held.extend_from_slice(payload);
                    let mut held = std::mem::take(&mut self.held);
                    let (complete, total) = self.events(&mut held, cut_usage);
                    held.truncate(total);
                    self.held = held;
                    if complete == 0 && self.held.len() > MAX_HELD_EVENT_BYTES {
                        return Out::Held(self.held.len());
                    }
                    Out::Held(complete)
                }
            }
        }
    }

    /// Walks the complete events at the front of `region`, cutting where asked. Returns the length of
    /// the complete part and the new total length (cuts shift the rest forward).
    fn events(&mut self, region: &mut [u8], cut_usage: bool) -> (usize, usize) {
        let mut at = 0;
        let mut total = region.len();
        while let Some(len) = sse::event_end(&region[at..total]) {
            match sse::classify(&region[at..at + len]) {
                EventKind::Usage { usage, choices_empty } => {
                    self.usage = Some(usage);
                    if choices_empty && cut_usage {
                        region.copy_within(at + len..total, at);
                        total -= len;
                        continue;
                    }
                    if !choices_empty {
                        self.data_events += 1;
                    }
                }
                EventKind::Data => self.data_events += 1,
                EventKind::Done => self.done_seen = true,
                EventKind::Other => {}
            }
            at += len;
        }
        (at, total)
    }

    fn usage(&self) -> Option<Usage> {
        self.usage.or_else(|| self.scanner.usage())
    }
}

/// Frames and writes one piece, merging it behind the response head while the head is unsent.
struct Emitter {
    framing: ClientFraming,
    head: Vec<u8>,
    head_sent: bool,
    first_byte_at: Option<Instant>,
}

impl Emitter {
    async fn emit<S: Transport>(
        &mut self,
        client: &mut ClientSide<'_, S>,
        filter: &mut Filter,
        mut buf: Vec<u8>,
        out: Out,
    ) -> (io::Result<()>, Vec<u8>) {
        match out {
            Out::InPlace(start, end) => {
                if start == end {
                    return (Ok(()), buf);
                }
                let (from, to) = if self.framing == ClientFraming::Chunked {
                    let from = write_size_line_backwards(&mut buf[..start], end - start);
                    buf.truncate(end);
                    buf.extend_from_slice(b"\r\n");
                    (from, end + 2)
                } else {
                    (start, end)
                };
                if !self.head_sent {
                    self.head_sent = true;
                    self.first_byte_at = Some(Instant::now());
                    if to - from <= MERGE_WITH_HEAD_MAX {
                        self.head.extend_from_slice(&buf[from..to]);
                        let head = std::mem::take(&mut self.head);
                        let len = head.len();
                        let (res, head) = client.write(head, 0, len).await;
                        self.head = head;
                        return (res, buf);
                    }
                    let head = std::mem::take(&mut self.head);
                    let len = head.len();
                    let (res, head) = client.write(head, 0, len).await;
                    self.head = head;
                    if res.is_err() {
                        return (res, buf);
                    }
                }
                client.write(buf, from, to).await
            }
            Out::Held(n) => {
                if n == 0 {
                    return (Ok(()), buf);
                }
                let mut out = std::mem::take(&mut self.head);
                if self.head_sent {
                    out.clear();
                } else {
                    self.head_sent = true;
                    self.first_byte_at = Some(Instant::now());
                }
                self.frame_into(&mut out, &filter.held[..n]);
                filter.held.drain(..n);
                let len = out.len();
                let (res, out) = client.write(out, 0, len).await;
                self.head = out;
                (res, buf)
            }
        }
    }

    fn frame_into(&self, out: &mut Vec<u8>, data: &[u8]) {
        if self.framing == ClientFraming::Chunked {
            crate::http::chunked::encode_chunk(out, data);
        } else {
            out.extend_from_slice(data);
        }
    }

    /// Ends the body: whatever is still held, an optional final SSE event, and the last chunk.
    async fn finish<S: Transport>(
        &mut self,
        client: &mut ClientSide<'_, S>,
        filter: &mut Filter,
        final_event: Option<&[u8]>,
    ) -> io::Result<()> {
        let mut out = std::mem::take(&mut self.head);
        if self.head_sent {
            out.clear();
        }
        let held = std::mem::take(&mut filter.held);
        self.frame_into(&mut out, &held);
        if let Some(ev) = final_event {
            self.frame_into(&mut out, ev);
        }
        if self.framing == ClientFraming::Chunked {
            out.extend_from_slice(LAST_CHUNK);
        }
        if out.is_empty() {
            self.head = out;
            return Ok(());
        }
        self.head_sent = true;
        let len = out.len();
        let (res, out) = client.write(out, 0, len).await;
        self.head = out;
        res
    }
}

/// What the node has sent so far, for settlement and progress marks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Seen {
    /// The node's reported usage, once it came.
    pub usage: Option<Usage>,
    /// SSE data events (≈ completion tokens of a stream).
    pub events: u64,
    /// Body bytes.
    pub bytes: u64,
}

/// What the relay tells the request's owner while it runs.
#[expect(async_fn_in_trait, reason = "implemented and awaited on one core; no Send bound is wanted")]
pub trait RelayHooks {
    /// Runs once, right before the client is sent the bytes that complete the answer (the `[DONE]`
    /// event of a stream, the end of a Content-Length body, or the last chunk): settlement journals the
    /// usage record there, so a client that received a complete answer always has a record. It does not
    /// run when the answer breaks off or the client has left.
    async fn before_final(&mut self, seen: Seen);

    /// Runs as the answer goes on, at least every `progress_every` completion tokens (content events of
    /// a stream, a quarter of the bytes of anything else), relayed or drained.
    fn progress(&mut self, seen: Seen);
}

/// Relays the body of `answer` to the client behind `client_head` (a complete response head whose
/// framing matches `framing`). `buf` is the relay buffer holding `answer.leftover` body bytes. When the
/// client has left (or leaves), the rest of the answer is drained within the client side's bound.
#[expect(clippy::too_many_arguments, reason = "one relay's whole context")]
pub async fn relay_body<S: Transport>(
    client: &mut ClientSide<'_, S>,
    answer: Answer,
    mut buf: Vec<u8>,
    mode: BodyMode,
    framing: ClientFraming,
    client_head: Vec<u8>,
    read_timeout: Duration,
    progress_every: u64,
    hooks: &mut impl RelayHooks,
) -> (RelayResult, Vec<u8>, Vec<u8>) {
    let Answer { mut up, head, leftover } = answer;
    let mut decoder = (head.body == ResponseBody::Chunked).then(ChunkedDecoder::new);
    let mut remaining = match head.body {
        ResponseBody::Length(n) => n,
        _ => u64::MAX,
    };
    let mut filter = Filter::new(mode);
    let mut final_ran = false;
    let mut emitter = Emitter { framing, head: client_head, head_sent: false, first_byte_at: None };
    let mut data_len = leftover;
    let mut body_done = head.body == ResponseBody::Empty;
    let mut trailing_garbage = false;
    let is_sse = matches!(mode, BodyMode::Sse { .. });
    let tokens_seen = |f: &Filter| if is_sse { f.data_events } else { f.bytes / 4 };
    let mut next_mark = progress_every.max(1);
    // Bytes the node had sent when the client left: the drain bound counts from there.
    let mut bytes_at_leave = client.is_gone().then_some(0u64);

    let end = loop {
        if data_len > 0 {
            let region = &mut buf[HEADROOM..HEADROOM + data_len];
            let payload_len = match (&mut decoder, head.body) {
                (Some(d), _) => match d.decode_in_place(region) {
                    Ok(done) => {
                        body_done = done.done;
                        trailing_garbage |= done.done && done.consumed < data_len;
                        done.payload_len
                    }
                    Err(e) => break RelayEnd::UpstreamBroken(format!("bad chunked framing from node: {e}")),
                },
                (None, ResponseBody::Length(_)) => {
                    let take = usize::try_from(remaining).map_or(data_len, |r| r.min(data_len));
                    remaining -= take as u64;
                    body_done = remaining == 0;
                    trailing_garbage |= take < data_len;
                    take
                }
                _ => data_len,
            };
            let out = filter.filter(&mut buf, payload_len);
            filter.bytes += payload_len as u64;
            let seen = Seen { usage: filter.usage(), events: filter.data_events, bytes: filter.bytes };
            if tokens_seen(&filter) >= next_mark {
                hooks.progress(seen);
                next_mark = tokens_seen(&filter) + progress_every.max(1);
            }
            if client.is_gone() {
                // Nobody to relay to: what the node sends is only counted.
                if let Out::Held(n) = out {
                    filter.held.drain(..n);
                }
            } else {
                if !final_ran && (filter.done_seen || (body_done && framing == ClientFraming::Length)) {
                    hooks.before_final(seen).await;
                    final_ran = true;
                }
                let (res, b) = emitter.emit(client, &mut filter, buf, out).await;
                buf = b;
                if res.is_err() {
                    client.leave();
                    bytes_at_leave = Some(filter.bytes);
                }
            }
            buf.truncate(HEADROOM);
            data_len = 0;
        }
        if body_done {
            break if client.is_gone() { RelayEnd::ClientGone { drained: true } } else { RelayEnd::Complete };
        }
        if bytes_at_leave.is_some_and(|at| filter.bytes.saturating_sub(at) >= client.drain.bytes) {
            break RelayEnd::ClientGone { drained: false };
        }
        let (u, b, r) = read_upstream(client, up, buf, Instant::now() + read_timeout).await;
        up = u;
        buf = b;
        match r {
            UpRead::Data(n) => data_len = n,
            UpRead::Eof if head.body == ResponseBody::UntilClose => {
                break if client.is_gone() {
                    RelayEnd::ClientGone { drained: true }
                } else {
                    RelayEnd::Complete
                };
            }
            UpRead::ClientGone => {
                client.leave();
                bytes_at_leave = Some(filter.bytes);
            }
            _ if client.is_gone() => break RelayEnd::ClientGone { drained: false },
            UpRead::Eof => {
                break RelayEnd::UpstreamBroken("the node closed the connection mid-answer".into());
            }
            UpRead::Failed(e) => {
                break RelayEnd::UpstreamBroken(format!("reading from the node failed: {e}"));
            }
            UpRead::TimedOut => break RelayEnd::UpstreamTimedOut,
        }
    };

    let mut client_keep_alive = true;
    match &end {
        RelayEnd::Complete => {
            if !final_ran {
                let seen = Seen { usage: filter.usage(), events: filter.data_events, bytes: filter.bytes };
                hooks.before_final(seen).await;
                final_ran = true;
            }
            if emitter.finish(client, &mut filter, None).await.is_err() {
                client_keep_alive = false;
            }
        }
        RelayEnd::UpstreamBroken(msg) if is_sse && framing != ClientFraming::Length && emitter.head_sent => {
            let event = stream_error_event(msg);
            if emitter.finish(client, &mut filter, Some(&event)).await.is_err()
                || framing == ClientFraming::Close
            {
                client_keep_alive = false;
            }
        }
        RelayEnd::UpstreamTimedOut if is_sse && framing != ClientFraming::Length && emitter.head_sent => {
            let event = stream_error_event("the node stopped sending (read timeout)");
            if emitter.finish(client, &mut filter, Some(&event)).await.is_err()
                || framing == ClientFraming::Close
            {
                client_keep_alive = false;
            }
        }
        _ => client_keep_alive = false,
    }
    if framing == ClientFraming::Close {
        client_keep_alive = false;
    }
    let ended_cleanly = matches!(end, RelayEnd::Complete | RelayEnd::ClientGone { drained: true });
    let reusable = (ended_cleanly && head.keep_alive && !trailing_garbage).then_some(up);
    let result = RelayResult {
        end,
        usage: filter.usage(),
        data_events: filter.data_events,
        bytes: filter.bytes,
        final_ran,
        head_sent: emitter.head_sent,
        first_byte_at: emitter.first_byte_at,
        client_keep_alive,
        reusable,
    };
    (result, buf, emitter.head)
}

/// The event that ends a stream whose node failed: OpenAI's error shape, as the SDKs expect it.
pub fn stream_error_event(message: &str) -> Vec<u8> {
    let body = serde_json::json!({
        "error": {
            "message": message,
            "type": "upstream_error",
            "code": "upstream_unavailable",
            "param": null,
        }
    });
    let mut ev = b"data: ".to_vec();
    ev.extend_from_slice(body.to_string().as_bytes());
    ev.extend_from_slice(b"\n\n");
    ev
}

/// Reads a whole (small) body of a non-success answer, e.g. a node's error JSON, up to `max` bytes.
/// Returns the body and the connection when it may be reused.
pub async fn read_small_body<S: Transport>(
    client: &mut ClientSide<'_, S>,
    answer: Answer,
    mut buf: Vec<u8>,
    max: usize,
    read_timeout: Duration,
) -> (Result<(Vec<u8>, Option<UpstreamIo>), AttemptError>, Vec<u8>) {
    let Answer { mut up, head, leftover } = answer;
    let mut body = Vec::new();
    let mut decoder = (head.body == ResponseBody::Chunked).then(ChunkedDecoder::new);
    let mut remaining = match head.body {
        ResponseBody::Length(n) => n,
        _ => u64::MAX,
    };
    let mut data_len = leftover;
    let mut done = head.body == ResponseBody::Empty;
    let deadline = Instant::now() + read_timeout;
    loop {
        if data_len > 0 {
            let len = std::mem::take(&mut data_len);
            let region = &mut buf[HEADROOM..HEADROOM + len];
            let n = match &mut decoder {
                Some(d) => match d.decode_in_place(region) {
                    Ok(r) => {
                        done = r.done;
                        r.payload_len
                    }
                    Err(_) => {
                        return (Err(AttemptError::BadHead(ResponseHeadError::Malformed("chunked"))), buf);
                    }
                },
                None => {
                    let take = usize::try_from(remaining).map_or(len, |r| r.min(len));
                    if head.body != ResponseBody::UntilClose {
                        remaining -= take as u64;
                        done = remaining == 0;
                    }
                    take
                }
            };
            let room = max.saturating_sub(body.len());
            body.extend_from_slice(&buf[HEADROOM..HEADROOM + n.min(room)]);
            buf.truncate(HEADROOM);
        }
        if done || body.len() >= max {
            let reusable = (done && head.keep_alive).then_some(up);
            return (Ok((body, reusable)), buf);
        }
        let (u, b, r) = read_upstream(client, up, buf, deadline).await;
        up = u;
        buf = b;
        match r {
            UpRead::Data(n) => data_len = n,
            UpRead::Eof => return (Ok((body, None)), buf),
            UpRead::Failed(e) => return (Err(AttemptError::Read(e)), buf),
            UpRead::TimedOut => return (Err(AttemptError::HeadTimeout), buf),
            UpRead::ClientGone => return (Err(AttemptError::ClientGone), buf),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sse_filter(cut: bool) -> Filter {
        Filter::new(BodyMode::Sse { cut_usage: cut })
    }

    /// Runs the filter over `input` split into reads of `step` bytes; returns what the client gets.
    fn run(filter: &mut Filter, input: &[u8], step: usize) -> Vec<u8> {
        let mut client = Vec::new();
        for piece in input.chunks(step) {
            let mut buf = relay_buffer(64 * 1024);
            buf.extend_from_slice(piece);
            match filter.filter(&mut buf, piece.len()) {
                Out::InPlace(s, e) => client.extend_from_slice(&buf[s..e]),
                Out::Held(n) => {
                    client.extend_from_slice(&filter.held[..n]);
                    filter.held.drain(..n);
                }
            }
        }
        client.extend_from_slice(&filter.held);
        client
    }

    const STREAM: &[u8] = b"data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}],\"usage\":null}\n\n\
data: {\"choices\":[{\"delta\":{\"content\":\"b\"}}],\"usage\":null}\n\n\
data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":2}}\n\n\
data: [DONE]\n\n";

    #[test]
    fn cuts_the_usage_chunk_at_every_split() {
        let usage_event =
            "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":2}}\n\n";
        let expected = String::from_utf8_lossy(STREAM).replace(usage_event, "").into_bytes();
        assert_eq!(expected.len(), STREAM.len() - usage_event.len());
        for step in 1..STREAM.len() {
            let mut f = sse_filter(true);
            let out = run(&mut f, STREAM, step);
            assert_eq!(String::from_utf8_lossy(&out), String::from_utf8_lossy(&expected), "step {step}");
            assert_eq!(f.usage(), Some(Usage { prompt_tokens: 3, completion_tokens: 2 }));
            assert_eq!(f.data_events, 2);
        }
    }

    #[test]
    fn keeps_the_usage_chunk_when_asked() {
        for step in [1, 7, STREAM.len()] {
            let mut f = sse_filter(false);
            assert_eq!(run(&mut f, STREAM, step), STREAM);
            assert!(f.usage().is_some());
        }
    }

    #[test]
    fn oversized_event_without_boundary_is_forwarded() {
        let mut f = sse_filter(true);
        let big = vec![b'x'; MAX_HELD_EVENT_BYTES + 10];
        let out = run(&mut f, &big, 4096);
        assert_eq!(out.len(), big.len());
    }

    #[test]
    fn error_event_is_openai_shaped() {
        let ev = stream_error_event("boom");
        assert!(ev.starts_with(b"data: {"));
        assert!(ev.ends_with(b"\n\n"));
        let v: serde_json::Value = serde_json::from_slice(&ev[6..ev.len() - 2]).unwrap();
        assert_eq!(v["error"]["message"], "boom");
    }
}
