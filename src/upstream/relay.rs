//! The relay: a node's answer forwarded to the client as it arrives.
//!
//! # Design
//! Every upstream read lands in one buffer laid out as `[HEADROOM][data][TAILROOM]` ([`super::buffer`]).
//! The read is un-framed in place (the one body decoder), filtered in place (an SSE event the client did
//! not ask for is cut out), then framed for the client in place (the chunk-size line written backwards
//! into the headroom, CRLF into the tailroom) and written with one `send` from that same buffer: no copy,
//! no allocation per read. An SSE event split across reads is held back until its blank line arrives (the
//! client could not act on half an event anyway); that rare path copies through a side buffer. A client
//! dialect that is not the node's own ([`BodyMode::Translated`]) gets each complete event translated by
//! its [`Translate`] into a side buffer, chunk by chunk; the pass-through path never pays for that seam.
//!
//! The relay is a state machine the request path drives with [`Relay::next`]: it stops to report
//! progress ([`Step::Progress`], for progress marks), once right before the bytes that complete the answer
//! ([`Step::Final`], so the usage record can be made durable before the client has the whole answer), and
//! at its end ([`Step::End`]). It never calls back into the request's owner.
//!
//! A client that leaves (hangs up, or stops reading until a write times out) does not end the exchange
//! with the node: what the node generated is paid for, so its answer is still read, not relayed, within
//! the drain bound until its usage arrives; past the bound the node connection is closed and what it sent
//! is counted. The client's response head is held until the first payload and sent in the same write;
//! until then nothing has reached the client, so a node that fails first can still be replaced.

use super::attempt::Answer;
use super::buffer::HEADROOM;
use super::client::UpstreamIo;
use super::watch::{ClientSide, UpRead, read_upstream};
use crate::billing::UsageScanner;
use crate::billing::stream::{EventKind, classify};
use crate::http::body::{BodyDecoder, Framing};
use crate::http::chunked::{LAST_CHUNK, write_size_line_backwards};
use crate::http::io::Transport;
use crate::http::sse;
use crate::model::Usage;
use crate::translate::Translate;
use monoio::time::Instant;
use std::io;
use std::time::Duration;

/// A first payload up to this size is copied behind the response head and sent in one write.
const MERGE_WITH_HEAD_MAX: usize = 16 * 1024;
/// An SSE "event" longer than this without a blank line is forwarded as it is (or, when it must be
/// translated, ends the answer: half an event cannot be).
const MAX_HELD_EVENT_BYTES: usize = 1 << 20;

/// How the body is inspected on its way through.
pub enum BodyMode {
    /// Server-sent events, passed on; `cut_usage` removes the usage-only chunk (the client did not ask
    /// for it).
    Sse { cut_usage: bool },
    /// Anything else, passed on untouched while the top-level `usage` is picked out.
    Json,
    /// Translated for another client dialect; `stream` when the node streams.
    Translated { stream: bool, translator: Box<dyn Translate> },
}

impl std::fmt::Debug for BodyMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Sse { cut_usage } => write!(f, "Sse {{ cut_usage: {cut_usage} }}"),
            Self::Json => f.write_str("Json"),
            Self::Translated { stream, .. } => write!(f, "Translated {{ stream: {stream} }}"),
        }
    }
}

impl BodyMode {
    fn is_stream(&self) -> bool {
        matches!(self, Self::Sse { .. } | Self::Translated { stream: true, .. })
    }
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

/// What a relay did, for settlement, metrics and the connection loop.
#[derive(Debug)]
pub struct RelayResult {
    pub end: RelayEnd,
    pub seen: Seen,
    /// Whether any byte (the head included) reached the client.
    pub head_sent: bool,
    /// When the first body byte was written to the client.
    pub first_byte_at: Option<Instant>,
    /// The client connection is in a clean state for another request.
    pub client_keep_alive: bool,
    /// The node connection, when it ended cleanly and may be pooled.
    pub reusable: Option<UpstreamIo>,
}

/// Where the relay stopped.
#[derive(Debug)]
pub enum Step {
    /// Another `progress_every` completion tokens went by (relayed or drained).
    Progress(Seen),
    /// The next bytes written complete the answer: make its record durable now, then call `next` again.
    Final(Seen),
    /// The relay is over; `next` must not be called again.
    End(RelayResult),
}

struct Filter {
    mode: BodyMode,
    held: Vec<u8>,
    /// A translator's output, waiting to be written.
    translated: Vec<u8>,
    scanner: UsageScanner,
    usage: Option<Usage>,
    data_events: u64,
    /// The stream's `[DONE]` event has been seen.
    done_seen: bool,
    /// Payload bytes the node sent.
    bytes: u64,
    /// A translated stream's node sent an event past [`MAX_HELD_EVENT_BYTES`].
    oversized: bool,
}

enum Out {
    /// `buf[start..end]` is ready to frame and send.
    InPlace(usize, usize),
    /// `held[..n]` is ready.
    Held(usize),
    /// `translated` is ready.
    Translated,
}

impl Filter {
    fn new(mode: BodyMode) -> Self {
        Self {
            mode,
            held: Vec::new(),
            translated: Vec::new(),
            scanner: UsageScanner::new(),
            usage: None,
            data_events: 0,
            done_seen: false,
            bytes: 0,
            oversized: false,
        }
    }

    /// Filters the payload at `buf[HEADROOM..HEADROOM + len]`.
    fn filter(&mut self, buf: &mut [u8], len: usize) -> Out {
        let payload = &mut buf[HEADROOM..HEADROOM + len];
        self.bytes += len as u64;
        match &mut self.mode {
            BodyMode::Json => {
                self.scanner.feed(payload);
                Out::InPlace(HEADROOM, HEADROOM + len)
            }
            BodyMode::Translated { stream: false, translator } => {
                self.scanner.feed(payload);
                translator.body(payload);
                Out::Translated
            }
            BodyMode::Sse { cut_usage } => {
                let cut = *cut_usage;
                if self.held.is_empty() {
                    let (complete, total) = self.events(payload, cut);
                    self.held.extend_from_slice(&payload[complete..total]);
                    Out::InPlace(HEADROOM, HEADROOM + complete)
                } else {
                    self.held.extend_from_slice(payload);
                    let mut held = std::mem::take(&mut self.held);
                    let (complete, total) = self.events(&mut held, cut);
                    held.truncate(total);
                    self.held = held;
                    if complete == 0 && self.held.len() > MAX_HELD_EVENT_BYTES {
                        return Out::Held(self.held.len());
                    }
                    Out::Held(complete)
                }
            }
            BodyMode::Translated { stream: true, .. } => {
                self.held.extend_from_slice(payload);
                let mut held = std::mem::take(&mut self.held);
                let complete = self.translate_events(&held);
                held.drain(..complete);
                if held.len() > MAX_HELD_EVENT_BYTES {
                    held = Vec::new();
                    self.oversized = true;
                }
                self.held = held;
                Out::Translated
            }
        }
    }

    /// Counts one complete event of the node's stream; true when it is the usage-only chunk.
    fn count(&mut self, event: &[u8]) -> bool {
        match classify(event) {
            EventKind::Usage { usage, choices_empty } => {
                self.usage = Some(usage);
                if !choices_empty {
                    self.data_events += 1;
                }
                choices_empty
            }
            EventKind::Data => {
                self.data_events += 1;
                false
            }
            EventKind::Done => {
                self.done_seen = true;
                false
            }
            EventKind::Other => false,
        }
    }

    /// Walks the complete events at the front of `region`, cutting where asked. Returns the length of
    /// the complete part and the new total length (cuts shift the rest forward).
    fn events(&mut self, region: &mut [u8], cut_usage: bool) -> (usize, usize) {
        let mut at = 0;
        let mut total = region.len();
        while let Some(len) = sse::event_end(&region[at..total]) {
            let usage_only = self.count(&region[at..at + len]);
            if usage_only && cut_usage {
                region.copy_within(at + len..total, at);
                total -= len;
                continue;
            }
            at += len;
        }
        (at, total)
    }

    /// Counts and translates the complete events at the front of `region`; how many bytes they took.
    fn translate_events(&mut self, region: &[u8]) -> usize {
        let mut at = 0;
        while let Some(len) = sse::event_end(&region[at..]) {
            self.translate_event(&region[at..at + len]);
            at += len;
        }
        at
    }

    /// Counts and translates one event.
    fn translate_event(&mut self, event: &[u8]) {
        self.count(event);
        if let BodyMode::Translated { translator, .. } = &mut self.mode {
            translator.event(event, &mut self.translated);
        }
    }

    /// How long a translated stream's node may be silent before the client is sent something.
    fn idle_every(&self) -> Option<Duration> {
        match &self.mode {
            BodyMode::Translated { stream: true, translator } => translator.idle_every(),
            _ => None,
        }
    }

    /// What keeps a translated stream's client waiting, ready to write.
    fn idle(&mut self) -> Option<Out> {
        match &mut self.mode {
            BodyMode::Translated { stream: true, translator } => {
                translator.idle(&mut self.translated);
                Some(Out::Translated)
            }
            _ => None,
        }
    }

    fn usage(&self) -> Option<Usage> {
        self.usage.or_else(|| self.scanner.usage())
    }

    fn seen(&self) -> Seen {
        Seen { usage: self.usage(), events: self.data_events, bytes: self.bytes }
    }

    /// Completion tokens seen so far: content events of a stream, a quarter of the bytes otherwise.
    fn tokens(&self) -> u64 {
        if self.mode.is_stream() { self.data_events } else { self.bytes / 4 }
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
        let (start, end) = match out {
            Out::InPlace(start, end) => (start, end),
            Out::Held(n) => {
                let held = std::mem::take(&mut filter.held);
                let res = self.write_copy(client, &held[..n]).await;
                filter.held = held;
                filter.held.drain(..n);
                return (res, buf);
            }
            Out::Translated => {
                let out = std::mem::take(&mut filter.translated);
                let res = self.write_copy(client, &out).await;
                filter.translated = out;
                filter.translated.clear();
                return (res, buf);
            }
        };
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
                let res = self.write_head(client).await;
                return (res, buf);
            }
            let res = self.write_head(client).await;
            if res.is_err() {
                return (res, buf);
            }
        }
        client.write(buf, from, to).await
    }

    /// Writes the head buffer as it is.
    async fn write_head<S: Transport>(&mut self, client: &mut ClientSide<'_, S>) -> io::Result<()> {
        let head = std::mem::take(&mut self.head);
        self.write_out(client, head).await
    }

    /// Writes `out` (the head buffer), then keeps it; a stream gives it back to the core's pool instead:
    /// it waits on its node for most of its life, and would only hold it (see [`BufferPool`]).
    async fn write_out<S: Transport>(
        &mut self,
        client: &mut ClientSide<'_, S>,
        out: Vec<u8>,
    ) -> io::Result<()> {
        let len = out.len();
        let (res, out) = client.write(out, 0, len).await;
        match client.buffers {
            Some(pool) => pool.put_small(out),
            None => self.head = out,
        }
        res
    }

    /// The head buffer to write a copied piece or the end through: cleared once the head is sent, and
    /// from the pool when a stream gave its own back.
    fn out_buffer<S>(&mut self, client: &ClientSide<'_, S>) -> Vec<u8> {
        let mut out = std::mem::take(&mut self.head);
        if self.head_sent {
            out.clear();
        }
        if out.capacity() == 0
            && let Some(pool) = client.buffers
        {
            out = pool.take_small();
        }
        out
    }

    /// Writes `data`, framed, through the head buffer (behind the head while it is unsent).
    async fn write_copy<S: Transport>(
        &mut self,
        client: &mut ClientSide<'_, S>,
        data: &[u8],
    ) -> io::Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        let mut out = self.out_buffer(client);
        if !self.head_sent {
            self.head_sent = true;
            self.first_byte_at = Some(Instant::now());
        }
        self.frame_into(&mut out, data);
        self.write_out(client, out).await
    }

    fn frame_into(&self, out: &mut Vec<u8>, data: &[u8]) {
        if self.framing == ClientFraming::Chunked {
            crate::http::chunked::encode_chunk(out, data);
        } else {
            out.extend_from_slice(data);
        }
    }

    /// Ends the body: whatever is still held, the closing bytes, and the last chunk.
    async fn finish<S: Transport>(
        &mut self,
        client: &mut ClientSide<'_, S>,
        filter: &mut Filter,
        closing: &[u8],
    ) -> io::Result<()> {
        let mut out = self.out_buffer(client);
        let held = std::mem::take(&mut filter.held);
        if !matches!(filter.mode, BodyMode::Translated { .. }) {
            self.frame_into(&mut out, &held);
        }
        self.frame_into(&mut out, closing);
        if self.framing == ClientFraming::Chunked {
            out.extend_from_slice(LAST_CHUNK);
        }
        if out.is_empty() {
            self.head = out;
            return Ok(());
        }
        self.head_sent = true;
        self.write_out(client, out).await
    }
}

/// The relay of one answer (see the module docs).
pub struct Relay<'c, 'a, S> {
    client: &'c mut ClientSide<'a, S>,
    up: Option<UpstreamIo>,
    node_keep_alive: bool,
    decoder: BodyDecoder,
    framing: ClientFraming,
    filter: Filter,
    emitter: Emitter,
    buf: Vec<u8>,
    data_len: usize,
    /// A piece filtered but not yet written (the relay stopped to report before writing it).
    pending: Option<Out>,
    final_reported: bool,
    progress_every: u64,
    next_mark: u64,
    /// What the node had sent when the client left: the drain bound counts from there.
    bytes_at_leave: Option<u64>,
    read_timeout: Duration,
    /// When the node last sent body bytes (or the relay started): the read timeout counts from here.
    last_data: Instant,
    trailing_garbage: bool,
    end: Option<RelayEnd>,
}

impl<S> std::fmt::Debug for Relay<'_, '_, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay").field("mode", &self.filter.mode).field("end", &self.end).finish()
    }
}

impl<'c, 'a, S: Transport> Relay<'c, 'a, S> {
    /// A relay of `answer`'s body to the client behind `client_head` (a complete response head whose
    /// framing matches `framing`). `buf` is the relay buffer holding `answer.leftover` body bytes.
    #[expect(clippy::too_many_arguments, reason = "one relay's whole context")]
    pub fn new(
        client: &'c mut ClientSide<'a, S>,
        answer: Answer,
        buf: Vec<u8>,
        mode: BodyMode,
        framing: ClientFraming,
        client_head: Vec<u8>,
        read_timeout: Duration,
        progress_every: u64,
    ) -> Self {
        let Answer { up, head, leftover } = answer;
        let gone = client.is_gone();
        Self {
            client,
            up: Some(up),
            node_keep_alive: head.keep_alive,
            decoder: BodyDecoder::new(head.framing),
            framing,
            filter: Filter::new(mode),
            emitter: Emitter { framing, head: client_head, head_sent: false, first_byte_at: None },
            buf,
            data_len: leftover,
            pending: None,
            final_reported: false,
            progress_every: progress_every.max(1),
            next_mark: progress_every.max(1),
            bytes_at_leave: gone.then_some(0),
            read_timeout,
            last_data: Instant::now(),
            trailing_garbage: false,
            end: None,
        }
    }

    /// The client left: from here on the node's answer is only drained.
    fn leave(&mut self) {
        self.client.leave();
        self.bytes_at_leave.get_or_insert(self.filter.bytes);
    }

    /// Writes the pending piece, if any.
    async fn write_pending(&mut self) {
        let Some(out) = self.pending.take() else { return };
        if self.client.is_gone() {
            if let Out::Held(n) = out {
                self.filter.held.drain(..n);
            }
            self.filter.translated.clear();
        } else {
            let buf = std::mem::take(&mut self.buf);
            let (res, buf) = self.emitter.emit(self.client, &mut self.filter, buf, out).await;
            self.buf = buf;
            if res.is_err() {
                self.leave();
            }
        }
        self.buf.truncate(HEADROOM);
    }

    /// Runs until the next [`Step`].
    pub async fn next(&mut self) -> Step {
        loop {
            self.write_pending().await;
            if let Some(end) = self.end.take() {
                if end == RelayEnd::Complete && !self.final_reported {
                    self.final_reported = true;
                    self.end = Some(end);
                    return Step::Final(self.filter.seen());
                }
                return Step::End(self.finish(end).await);
            }
            if self.data_len > 0 {
                let len = std::mem::take(&mut self.data_len);
                let region = &mut self.buf[HEADROOM..HEADROOM + len];
                let d = match self.decoder.decode_in_place(region) {
                    Ok(d) => d,
                    Err(e) => {
                        self.end = Some(RelayEnd::UpstreamBroken(format!("bad framing from the node: {e}")));
                        continue;
                    }
                };
                self.trailing_garbage |= d.done && d.consumed < len;
                let out = self.filter.filter(&mut self.buf, d.payload_len);
                self.pending = Some(out);
                if self.filter.oversized {
                    self.end = Some(RelayEnd::UpstreamBroken(format!(
                        "the node sent an event larger than {MAX_HELD_EVENT_BYTES} bytes"
                    )));
                    continue;
                }
                let completes = self.filter.done_seen
                    || (d.done && matches!(self.framing, ClientFraming::Length))
                    || (d.done && matches!(self.filter.mode, BodyMode::Translated { stream: false, .. }));
                if !self.client.is_gone() && !self.final_reported && completes {
                    self.final_reported = true;
                    return Step::Final(self.filter.seen());
                }
                if self.filter.tokens() >= self.next_mark {
                    self.next_mark = self.filter.tokens() + self.progress_every;
                    return Step::Progress(self.filter.seen());
                }
                continue;
            }
            if self.decoder.is_done() {
                self.end = Some(if self.client.is_gone() {
                    RelayEnd::ClientGone { drained: true }
                } else {
                    RelayEnd::Complete
                });
                continue;
            }
            if self
                .bytes_at_leave
                .is_some_and(|at| self.filter.bytes.saturating_sub(at) >= self.client.drain.bytes)
            {
                self.end = Some(RelayEnd::ClientGone { drained: false });
                continue;
            }
            let Some(up) = self.up.take() else {
                self.end = Some(RelayEnd::UpstreamBroken("no node connection".into()));
                continue;
            };
            let buf = std::mem::take(&mut self.buf);
            let timeout_at = self.last_data + self.read_timeout;
            // A translated stream whose client must hear something while the node is silent: wake early.
            let idle_at =
                self.filter.idle_every().map(|every| Instant::now() + every).filter(|at| *at < timeout_at);
            let (up, buf, read) = read_upstream(self.client, up, buf, idle_at.unwrap_or(timeout_at)).await;
            self.up = Some(up);
            self.buf = buf;
            match read {
                UpRead::TimedOut if idle_at.is_some() && !self.client.is_gone() => {
                    self.pending = self.filter.idle();
                }
                UpRead::Data(n) => {
                    self.last_data = Instant::now();
                    self.data_len = n;
                }
                UpRead::ClientGone => self.leave(),
                UpRead::Eof if self.decoder.on_eof().is_ok() => {}
                _ if self.client.is_gone() => self.end = Some(RelayEnd::ClientGone { drained: false }),
                UpRead::Eof => {
                    self.end =
                        Some(RelayEnd::UpstreamBroken("the node closed the connection mid-answer".into()));
                }
                UpRead::Failed(e) => {
                    self.end = Some(RelayEnd::UpstreamBroken(format!("reading from the node failed: {e}")));
                }
                UpRead::TimedOut => self.end = Some(RelayEnd::UpstreamTimedOut),
            }
        }
    }

    /// Writes what closes the answer for the client and says how the relay went.
    async fn finish(&mut self, end: RelayEnd) -> RelayResult {
        let stream = self.filter.mode.is_stream();
        let failure = match &end {
            RelayEnd::Complete => None,
            RelayEnd::UpstreamBroken(msg) => Some(msg.clone()),
            RelayEnd::UpstreamTimedOut => Some("the node stopped sending (read timeout)".to_owned()),
            RelayEnd::ClientGone { .. } => Some(String::new()),
        };
        let mut client_keep_alive = true;
        let closes = match (&failure, &mut self.filter.mode) {
            (Some(_), _) if self.client.is_gone() => None,
            (None, BodyMode::Translated { translator, .. }) => {
                let mut out = Vec::new();
                translator.end(None, &mut out);
                Some(out)
            }
            (None, _) => Some(Vec::new()),
            // A stream that reached the client ends with an error event (the client's dialect's).
            (Some(msg), BodyMode::Translated { translator, .. })
                if stream && self.framing != ClientFraming::Length && self.emitter.head_sent =>
            {
                let mut out = Vec::new();
                translator.end(Some(msg), &mut out);
                Some(out)
            }
            (Some(msg), BodyMode::Sse { .. })
                if self.framing != ClientFraming::Length && self.emitter.head_sent =>
            {
                Some(stream_error_event(msg))
            }
            (Some(_), _) => None,
        };
        match closes {
            Some(bytes) => {
                let res = self.emitter.finish(self.client, &mut self.filter, &bytes).await;
                if res.is_err() || failure.is_some() && self.framing == ClientFraming::Close {
                    client_keep_alive = false;
                }
            }
            None => client_keep_alive = false,
        }
        if self.framing == ClientFraming::Close {
            client_keep_alive = false;
        }
        let ended_cleanly = matches!(end, RelayEnd::Complete | RelayEnd::ClientGone { drained: true });
        let up = self.up.take();
        let reusable = up.filter(|_| ended_cleanly && self.node_keep_alive && !self.trailing_garbage);
        RelayResult {
            end,
            seen: self.filter.seen(),
            head_sent: self.emitter.head_sent,
            first_byte_at: self.emitter.first_byte_at,
            client_keep_alive,
            reusable,
        }
    }

    /// The relay buffer and the head buffer, for reuse.
    pub fn into_buffers(self) -> (Vec<u8>, Vec<u8>) {
        (self.buf, self.emitter.head)
    }
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

/// The framing a node's answer gets towards a client speaking HTTP/1.`client_minor`: a passed-on
/// sized JSON answer keeps its length, anything else is chunked (or until close for HTTP/1.0).
pub fn client_framing(mode: &BodyMode, node: Framing, client_minor: u8) -> ClientFraming {
    match (mode, node) {
        (_, Framing::Empty) if !matches!(mode, BodyMode::Translated { .. }) => ClientFraming::Length,
        (BodyMode::Json, Framing::Length(_)) => ClientFraming::Length,
        _ if client_minor >= 1 => ClientFraming::Chunked,
        _ => ClientFraming::Close,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::buffer::relay_buffer;

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
                Out::Translated => {
                    client.extend_from_slice(&filter.translated);
                    filter.translated.clear();
                }
            }
        }
        client.extend_from_slice(&filter.held);
        if let BodyMode::Translated { translator, .. } = &mut filter.mode {
            translator.end(None, &mut client);
        }
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

    /// A dialect that writes each content delta as a line, and `END` at the end.
    struct Lines;
    impl Translate for Lines {
        fn event(&mut self, event: &[u8], out: &mut Vec<u8>) {
            let Some(data) = sse::event_data(event) else { return };
            let v: serde_json::Value = serde_json::from_slice(&data).unwrap_or_default();
            if let Some(t) = v["choices"][0]["delta"]["content"].as_str() {
                out.extend_from_slice(t.as_bytes());
                out.push(b'\n');
            }
        }
        fn body(&mut self, _: &[u8]) {}
        fn end(&mut self, failure: Option<&str>, out: &mut Vec<u8>) {
            out.extend_from_slice(failure.map_or(b"END".as_slice(), |_| b"FAILED"));
        }
    }

    #[test]
    fn a_translator_sees_every_event_whole_and_billing_still_counts() {
        for step in 1..STREAM.len() {
            let mut f = Filter::new(BodyMode::Translated { stream: true, translator: Box::new(Lines) });
            let out = run(&mut f, STREAM, step);
            assert_eq!(out, b"a\nb\nEND", "step {step}");
            assert_eq!(f.usage(), Some(Usage { prompt_tokens: 3, completion_tokens: 2 }));
            assert!(f.done_seen);
        }
    }

    #[test]
    fn an_endless_event_to_translate_is_dropped_not_held() {
        let mut f = Filter::new(BodyMode::Translated { stream: true, translator: Box::new(Lines) });
        let big = vec![b'x'; MAX_HELD_EVENT_BYTES + 10];
        let mut buf = relay_buffer(big.len() + 1024);
        buf.extend_from_slice(&big);
        f.filter(&mut buf, big.len());
        assert!(f.oversized && f.held.is_empty());
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
