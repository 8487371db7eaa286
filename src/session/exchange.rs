//! One request and its answer: the request head, reading the body (lengths, chunks, 100-continue,
//! limits, deadlines, its share of the process's body memory), and writing answers that are not relayed.

use super::Conn;
use super::core::Core;
use super::limits::Reservation;
use crate::error::{ApiError, ErrorShape, RateLimitInfo};
use crate::http::body::{BodyDecoder, Framing};
use crate::http::encoding;
use crate::http::io::{ReadError, Transport, read_deadline, write_all_deadline};
use crate::http::request::{Method, RequestHead};
use crate::http::response::{HeadWriter, ResponseFraming};
use crate::model::Usage;
use monoio::buf::IoBufMut;
use std::rc::Rc;
use std::time::Instant;

/// What the access log line says about a request.
#[derive(Debug, Default, Clone)]
pub struct AccessLog {
    pub status: u16,
    pub route: &'static str,
    pub model: Option<String>,
    pub key_id: Option<String>,
    pub usage: Option<Usage>,
    pub usage_estimated: bool,
    pub upstream: Option<std::sync::Arc<str>>,
    pub stream: bool,
    pub ttfb_us: Option<u64>,
    pub outcome: Option<&'static str>,
}

/// A request body in memory. It holds its share of `server.body_memory_bytes` until it is dropped, so
/// keeping it alive (while the request is forwarded) keeps the bytes counted. Derefs to the bytes.
#[derive(Debug, Default)]
pub struct Body {
    bytes: Vec<u8>,
    _reservation: Reservation,
}

impl Body {
    /// The bytes, and the reservation that must be kept as long as they (or a copy of them) are.
    pub fn into_parts(self) -> (Vec<u8>, Reservation) {
        (self.bytes, self._reservation)
    }
}

impl std::ops::Deref for Body {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.bytes
    }
}

/// Chunked bodies reserve their memory in steps of at least this much.
const CHUNKED_RESERVE_STEP: usize = 64 * 1024;

fn no_body_memory() -> ApiError {
    ApiError::Unavailable("the memory for request bodies is in use; retry shortly".into())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyState {
    Unread,
    Read,
    /// Reading failed part-way; the connection cannot carry another request.
    Broken,
}

/// A request being answered.
#[derive(Debug)]
pub struct Exchange<'c, S> {
    pub conn: &'c mut Conn<S>,
    pub head: RequestHead,
    pub request_id: String,
    pub started: Instant,
    /// Whether the connection may carry another request after this one.
    pub keep_alive: bool,
    pub log: AccessLog,
    /// Headers every answer to this request carries (CORS, Anthropic's `request-id`).
    pub headers: Vec<(&'static str, String)>,
    /// The key's rate after admission: every answer to an inference request carries it as the
    /// `x-ratelimit-*` headers, written from the numbers (no string is kept for a stream's length).
    pub rate_limit: Option<RateLimitInfo>,
    /// How errors are written: in the dialect of the route.
    pub error_shape: ErrorShape,
    body: BodyState,
    continue_sent: bool,
}

impl<'c, S: Transport> Exchange<'c, S> {
    pub fn new(conn: &'c mut Conn<S>, head: RequestHead) -> Self {
        let request_id = conn.core.request_id();
        let keep_alive = head.keep_alive;
        Self {
            conn,
            head,
            request_id,
            started: Instant::now(),
            keep_alive,
            log: AccessLog::default(),
            headers: Vec::new(),
            rate_limit: None,
            error_shape: ErrorShape::OpenAi,
            body: BodyState::Unread,
            continue_sent: false,
        }
    }

    pub fn core(&self) -> Rc<Core> {
        Rc::clone(&self.conn.core)
    }

    /// Reads the whole request body (at most `server.max_body_bytes`), after reserving its memory: a
    /// body that finds no room within `server.body_memory_wait_ms` is refused with 503. A body with a
    /// `Content-Encoding` is decoded ([`crate::http::encoding`]): the limit and the memory reserved are
    /// the decoded body's (415 for a coding the gateway does not decode, 400 for bytes that do not
    /// decode).
    pub async fn read_body(&mut self) -> Result<Body, ApiError> {
        if self.body != BodyState::Unread {
            return Err(ApiError::Internal("request body read twice".into()));
        }
        let res = self.read_body_inner().await;
        self.body = if res.is_ok() { BodyState::Read } else { BodyState::Broken };
        if res.is_err() {
            self.keep_alive = false;
        }
        self.decode_body(res?).await
    }

    /// The body with its content coding undone, decoded in steps whose memory is reserved before each
    /// one: the compressed bytes, the decoder's own state and the output so far all count, and the
    /// output never grows past `server.max_body_bytes` and one step.
    async fn decode_body(&self, body: Body) -> Result<Body, ApiError> {
        let Some(value) = self.head.content_encoding.as_deref() else { return Ok(body) };
        let coding = match encoding::parse_content_encoding(value) {
            Ok(Some(coding)) => coding,
            Ok(None) => return Ok(body),
            Err(e) => return Err(ApiError::UnsupportedEncoding(e.to_string())),
        };
        if body.is_empty() {
            return Ok(body);
        }
        let settings = &self.conn.core.app.settings;
        let (max, wait) = (settings.http.max_body_bytes, settings.body_memory_wait);
        let (compressed, mut reservation) = body.into_parts();
        let corrupt = |e: encoding::DecodeError| ApiError::bad_request(e.to_string(), None);
        let mut decoder = encoding::Decompressor::new(coding, &compressed);
        let mut out: Vec<u8> = Vec::new();
        loop {
            let state = decoder.state_bytes().map_err(corrupt)?;
            let room = max + 1 - out.len();
            let step = room.min(encoding::STEP_BYTES);
            // The output's capacity doubles, never past one byte over the limit.
            let capacity = if out.capacity() >= out.len() + step {
                out.capacity()
            } else {
                (out.len() + step).max(out.capacity() * 2).max(CHUNKED_RESERVE_STEP).min(max + 1)
            };
            let needed = compressed.len() + state + capacity;
            if needed > reservation.bytes() && !reservation.grow_to(needed, wait).await {
                return Err(no_body_memory());
            }
            out.reserve_exact(capacity - out.len());
            let done = decoder.step(&mut out, room).map_err(corrupt)?;
            if out.len() > max {
                return Err(ApiError::PayloadTooLarge);
            }
            if done {
                break;
            }
        }
        drop(decoder);
        drop(compressed);
        reservation.shrink_to(out.capacity());
        Ok(Body { bytes: out, _reservation: reservation })
    }

    async fn send_continue(&mut self) -> Result<(), ApiError> {
        if self.head.expect_continue && !self.continue_sent {
            self.continue_sent = true;
            let timeout = self.conn.core.app.settings.timeouts.write;
            let (res, _) =
                write_all_deadline(&mut self.conn.io, &b"HTTP/1.1 100 Continue\r\n\r\n"[..], timeout).await;
            res.map_err(|e| ApiError::bad_request(format!("client connection failed: {e}"), None))?;
        }
        Ok(())
    }

    async fn read_body_inner(&mut self) -> Result<Body, ApiError> {
        let core = Rc::clone(&self.conn.core);
        let settings = &core.app.settings;
        let max = settings.http.max_body_bytes;
        let memory = &core.limits.body_memory;
        let wait = settings.body_memory_wait;
        let framing = self.head.framing;
        let mut decoder = BodyDecoder::new(framing);
        let mut body = Vec::new();
        let mut reservation = match framing {
            Framing::Empty => return Ok(Body::default()),
            Framing::Length(n) => {
                let n = usize::try_from(n).ok().filter(|n| *n <= max).ok_or(ApiError::PayloadTooLarge)?;
                // All of it before a byte is read (and before 100 Continue invites the client to send).
                let r = memory.reserve(n, wait).await.ok_or_else(no_body_memory)?;
                body.reserve_exact(n);
                r
            }
            _ => memory.empty(),
        };
        let deadline = Instant::now() + settings.timeouts.body;
        loop {
            if !self.conn.rbuf.is_empty() {
                let d = decoder
                    .decode_in_place(self.conn.rbuf.data_mut())
                    .map_err(|e| ApiError::bad_request(format!("Invalid request body: {e}"), None))?;
                // What the framing announces counts at once: a chunk size line past the limit is
                // refused before any of its payload is waited for.
                let needed = body.len() + d.payload_len;
                if needed as u64 + decoder.announced() > max as u64 {
                    return Err(ApiError::PayloadTooLarge);
                }
                // A chunked body is reserved as it grows, doubling: its capacity never runs ahead of it.
                if needed > reservation.bytes() {
                    let target =
                        needed.max(reservation.bytes() * 2).max(CHUNKED_RESERVE_STEP).min(max.max(needed));
                    if !reservation.grow_to(target, wait).await {
                        return Err(no_body_memory());
                    }
                    body.reserve_exact(target - body.len());
                }
                body.extend_from_slice(&self.conn.rbuf.data()[..d.payload_len]);
                self.conn.rbuf.consume(d.consumed);
            }
            if decoder.is_done() {
                return Ok(Body { bytes: body, _reservation: reservation });
            }
            self.send_continue().await?;
            let left = deadline.saturating_duration_since(Instant::now());
            if let Framing::Length(n) = framing {
                // The rest of a sized body is read straight into it, not through the read buffer.
                let (len, n) = (body.len(), usize::try_from(n).unwrap_or(usize::MAX));
                let (res, slice) =
                    read_deadline(&mut self.conn.io, body.slice_mut(len..n), left, std::future::pending())
                        .await;
                body = slice.into_inner();
                decoder.read_directly(body_read_result(res)?);
            } else {
                let cap = settings.read_buffer_bytes.max(16 * 1024);
                let res = self.conn.rbuf.fill(&mut self.conn.io, cap, left, std::future::pending()).await;
                body_read_result(res)?;
            }
        }
    }

    /// Called when the handler is done: a body nobody read is skipped when it is already here, otherwise
    /// the connection is closed after the answer.
    pub fn settle_unread_body(&mut self) {
        if self.body != BodyState::Unread {
            return;
        }
        match self.head.framing {
            Framing::Empty => {}
            Framing::Length(n) if !self.continue_sent && (self.conn.rbuf.len() as u64) >= n => {
                self.conn.rbuf.consume(n as usize);
            }
            _ => self.keep_alive = false,
        }
    }

    /// Writes a complete answer that is not relayed. A HEAD request gets the head a GET would get,
    /// `Content-Length` included, and no body (relayed answers are for POST routes only).
    pub async fn respond(
        &mut self,
        status: u16,
        content_type: &str,
        body: &[u8],
        headers: &[(&str, String)],
    ) {
        self.log.status = status;
        let core = Rc::clone(&self.conn.core);
        let mut out = core.take_bytes();
        {
            let mut w = HeadWriter::new(&mut out, status);
            w.header("Content-Type", content_type.as_bytes())
                .header("x-request-id", self.request_id.as_bytes());
            if let Some(id) = &self.head.client_request_id {
                w.header("x-client-request-id", id.as_bytes());
            }
            for (name, value) in headers.iter().chain(self.headers.iter()) {
                w.header(name, value.as_bytes());
            }
            if let Some(info) = &self.rate_limit {
                write_rate_limit(&mut w, info);
            }
            w.finish(ResponseFraming::Length(body.len()), self.keep_alive);
        }
        if self.head.method != Method::Head {
            out.extend_from_slice(body);
        }
        let timeout = core.app.settings.timeouts.write;
        let (res, out) = write_all_deadline(&mut self.conn.io, out, timeout).await;
        core.put_bytes(out);
        if res.is_err() {
            self.keep_alive = false;
        }
    }

    pub async fn respond_json(&mut self, status: u16, value: &serde_json::Value) {
        let body = serde_json::to_vec(value).unwrap_or_default();
        self.respond(status, "application/json", &body, &[]).await;
    }

    pub async fn respond_error(&mut self, err: &ApiError) {
        if err.log_level() <= log::Level::Warn {
            log::log!(target: "request", err.log_level(), "{} {} {}: {err}", self.request_id, self.head.path, err.status());
        }
        let body = err.body_in(self.error_shape);
        let headers: Vec<(&str, String)> = err.headers_in(self.error_shape);
        self.log.outcome.get_or_insert("error");
        self.respond(err.status(), "application/json", &body, &headers).await;
    }
}

fn body_read_result(res: Result<usize, ReadError>) -> Result<usize, ApiError> {
    match res {
        Ok(0) => Err(ApiError::PayloadTooLarge),
        Ok(n) => Ok(n),
        Err(ReadError::TimedOut) => Err(ApiError::RequestTimeout),
        Err(e) => Err(ApiError::bad_request(
            format!("The client connection failed: {}", std::io::Error::from(e)),
            None,
        )),
    }
}

/// Writes the `x-ratelimit-*` headers of `info` into the head ([`RateLimitInfo::for_each_header`]).
pub fn write_rate_limit(w: &mut HeadWriter<'_>, info: &RateLimitInfo) {
    info.for_each_header(|name, value| {
        w.header(name, value);
    });
}
