//! One attempt at a node: the request written on a pooled or fresh connection, the answer's head
//! awaited while the client is watched, and, when the node answers an error, its error read. A failure
//! carries its retry decision ([`Retry`], as Pingora's `RetryType` does), so the loop that tries nodes
//! keeps no bookkeeping of its own.
//!
//! # Errors
//! What the client gets when no node helps is [`AttemptError::to_api`]: 502 when nodes failed, 503 with
//! `Retry-After` when they are at capacity, 504 when one did not answer in time, a node's own 4xx as it
//! is.

use super::buffer::HEADROOM;
use super::client::{self, UpstreamIo};
use super::pool::Node;
use super::watch::{ClientSide, UpRead, read_upstream};
use crate::error::ApiError;
use crate::http::body::BodyDecoder;
use crate::http::io::{Transport, write_all_deadline};
use crate::http::response::{MAX_RESPONSE_HEAD_BYTES, ResponseHead, ResponseHeadError, parse_response_head};
use crate::http::tls::ClientTls;
use monoio::time::Instant;
use std::io;
use std::time::Duration;

/// The largest error body read from a node.
const MAX_NODE_ERROR_BYTES: usize = 64 * 1024;

/// What may be tried after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Nothing: the answer stands (a node's own 4xx, a node too slow to wait for again, a client gone).
    Never,
    /// The same node on a fresh connection: a pooled one the node had closed while it was idle.
    SameNode,
    /// Another node.
    OtherNode,
}

/// What went wrong.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    #[error("could not connect to a node: {0}")]
    Connect(io::Error),
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
    #[error("the client went away before the node answered")]
    ClientGone,
    /// The node answered an error status.
    #[error("the node answered {status}: {error}")]
    Status { status: u16, error: ApiError, retry_after_secs: Option<u32> },
}

/// A failed attempt: why, what may be tried next, whether it counts against the node's health, and the
/// connection when it can still be pooled (a cleanly read error answer).
#[derive(Debug)]
pub struct AttemptError {
    pub failure: Failure,
    pub retry: Retry,
    pub node_failed: bool,
    pub reusable: Option<UpstreamIo>,
}

impl AttemptError {
    fn new(failure: Failure, reused: bool, client_gone: bool) -> Self {
        let stale = |e: &io::Error| {
            matches!(
                e.kind(),
                io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionAborted
            )
        };
        let (retry, node_failed) = match &failure {
            // A pooled connection failing like this was most likely closed by the node while idle.
            Failure::Closed if reused => (Retry::SameNode, false),
            Failure::Send(e) | Failure::Read(e) if reused && stale(e) => (Retry::SameNode, false),
            Failure::Connect(_)
            | Failure::Send(_)
            | Failure::Closed
            | Failure::Read(_)
            | Failure::BadHead(_) => (Retry::OtherNode, true),
            Failure::HeadTimeout => (Retry::Never, true),
            Failure::ClientGone => (Retry::Never, false),
            Failure::Status { status: 429, .. } => (Retry::OtherNode, false),
            Failure::Status { status, .. } if *status >= 500 => (Retry::OtherNode, true),
            Failure::Status { .. } => (Retry::Never, false),
        };
        // Nobody is waiting for another node's answer.
        let retry = if client_gone { Retry::Never } else { retry };
        Self { failure, retry, node_failed, reusable: None }
    }

    /// The error the client gets when no other node helps.
    pub fn to_api(&self) -> ApiError {
        let unavailable =
            |status, message| ApiError::UpstreamUnavailable { status, message, retry_after_secs: None };
        match &self.failure {
            Failure::HeadTimeout => ApiError::UpstreamTimeout,
            Failure::Status { status: 429, error, retry_after_secs } => ApiError::UpstreamUnavailable {
                status: 503,
                message: format!("Nodes are at capacity: {error}"),
                retry_after_secs: Some(retry_after_secs.unwrap_or(1)),
            },
            Failure::Status { status, error, .. } if *status >= 500 => {
                unavailable(502, format!("A node failed: {error}"))
            }
            Failure::Status { error, .. } => error.clone(),
            Failure::Connect(e) => unavailable(502, format!("Could not connect to a node: {e}")),
            other => unavailable(502, format!("A node failed: {other}")),
        }
    }
}

/// The node's response head (2xx), with `leftover` body bytes already in the relay buffer.
#[derive(Debug)]
pub struct Answer {
    pub up: UpstreamIo,
    pub head: ResponseHead,
    pub leftover: usize,
}

/// What one attempt needs to know.
#[derive(Debug, Clone, Copy)]
pub struct AttemptParams<'a> {
    pub connect_timeout: Duration,
    pub head_timeout: Duration,
    pub read_timeout: Duration,
    pub tls: &'a ClientTls,
}

/// Tries `node` once: on `pooled` when given, else on a fresh connection; writes `request` (the head, and
/// the body too unless it comes as `body`, a large one sent from where it is); waits for the answer's
/// head (skipping 1xx heads). A client that leaves meanwhile does not end the wait: the node's answer is
/// still due and is drained; only past the drain bound does the wait end with [`Failure::ClientGone`].
/// `buf` must come from [`super::buffer::relay_buffer`]; it comes back with any body bytes after its
/// headroom. `request` comes back too, for reuse.
pub async fn attempt<S: Transport>(
    client: &mut ClientSide<'_, S>,
    node: &Node,
    pooled: Option<UpstreamIo>,
    request: Vec<u8>,
    body: Option<bytes::Bytes>,
    mut buf: Vec<u8>,
    params: &AttemptParams<'_>,
) -> (Result<Answer, AttemptError>, Vec<u8>, Vec<u8>) {
    let reused = pooled.is_some();
    let fail = |f: Failure, client: &ClientSide<'_, S>| AttemptError::new(f, reused, client.is_gone());
    let mut up = match pooled {
        Some(c) => c,
        // Boxed, like the error body's read below: their futures are large and rarely alive, and inline
        // they would size every connection's task (a held stream) by them.
        None => match Box::pin(client::connect(node, params.connect_timeout, params.tls)).await {
            Ok(c) => c,
            Err(e) => return (Err(fail(Failure::Connect(e), client)), request, buf),
        },
    };
    let (res, request) = write_all_deadline(&mut up, request, client.write_timeout).await;
    if let Err(e) = res {
        return (Err(fail(Failure::Send(e), client)), request, buf);
    }
    if let Some(body) = body {
        let (res, _) = write_all_deadline(&mut up, body, client.write_timeout).await;
        if let Err(e) = res {
            return (Err(fail(Failure::Send(e), client)), request, buf);
        }
    }
    buf.truncate(HEADROOM);
    let deadline = Instant::now() + params.head_timeout;
    let answer = loop {
        let (u, b, r) = read_upstream(client, up, buf, deadline).await;
        up = u;
        buf = b;
        match r {
            UpRead::Data(_) => {}
            UpRead::Eof => return (Err(fail(Failure::Closed, client)), request, buf),
            UpRead::Failed(e) => return (Err(fail(Failure::Read(e), client)), request, buf),
            UpRead::TimedOut if client.is_gone() => {
                return (Err(fail(Failure::ClientGone, client)), request, buf);
            }
            UpRead::TimedOut => return (Err(fail(Failure::HeadTimeout, client)), request, buf),
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
                break Answer { up, head, leftover };
            }
            Err(ResponseHeadError::Incomplete) => {
                if buf.len() >= HEADROOM + MAX_RESPONSE_HEAD_BYTES {
                    return (Err(fail(Failure::BadHead(ResponseHeadError::TooLarge), client)), request, buf);
                }
            }
            Err(e) => return (Err(fail(Failure::BadHead(e), client)), request, buf),
        }
    };
    if (200..300).contains(&answer.head.status) {
        return (Ok(answer), request, buf);
    }
    // An error answer: read it (bounded) for its message, then decide.
    let status = answer.head.status;
    let retry_after_secs = answer.head.retry_after.as_deref().and_then(|r| r.parse().ok());
    let (read, b) = Box::pin(read_error_body(client, answer, buf, params.read_timeout)).await;
    buf = b;
    let (error_body, reusable) = match read {
        Ok(r) => r,
        Err(f) => return (Err(fail(f, client)), request, buf),
    };
    let failure = Failure::Status { status, error: node_error(status, &error_body), retry_after_secs };
    let mut e = fail(failure, client);
    e.reusable = reusable;
    (Err(e), request, buf)
}

/// Reads the whole (small) body of an error answer, up to [`MAX_NODE_ERROR_BYTES`]: the body, and the
/// connection when it ended cleanly and may be pooled.
async fn read_error_body<S: Transport>(
    client: &mut ClientSide<'_, S>,
    answer: Answer,
    mut buf: Vec<u8>,
    read_timeout: Duration,
) -> (Result<(Vec<u8>, Option<UpstreamIo>), Failure>, Vec<u8>) {
    let Answer { mut up, head, leftover } = answer;
    let mut decoder = BodyDecoder::new(head.framing);
    let mut body = Vec::new();
    let mut data_len = leftover;
    let deadline = Instant::now() + read_timeout;
    loop {
        if data_len > 0 {
            let region = &mut buf[HEADROOM..HEADROOM + std::mem::take(&mut data_len)];
            let d = match decoder.decode_in_place(region) {
                Ok(d) => d,
                Err(_) => return (Err(Failure::BadHead(ResponseHeadError::Malformed("chunked"))), buf),
            };
            let room = MAX_NODE_ERROR_BYTES.saturating_sub(body.len());
            body.extend_from_slice(&buf[HEADROOM..HEADROOM + d.payload_len.min(room)]);
            buf.truncate(HEADROOM);
        }
        if decoder.is_done() || body.len() >= MAX_NODE_ERROR_BYTES {
            let reusable = (decoder.is_done() && head.keep_alive).then_some(up);
            return (Ok((body, reusable)), buf);
        }
        let (u, b, r) = read_upstream(client, up, buf, deadline).await;
        up = u;
        buf = b;
        match r {
            UpRead::Data(n) => data_len = n,
            UpRead::Eof => return (Ok((body, None)), buf),
            UpRead::Failed(e) => return (Err(Failure::Read(e)), buf),
            UpRead::TimedOut => return (Err(Failure::HeadTimeout), buf),
            UpRead::ClientGone => return (Err(Failure::ClientGone), buf),
        }
    }
}

/// A node's error answer in the OpenAI shape, its message kept: `{"error":{…}}` passes as it is,
/// `{"error":"…"}` (Gonka nodes) and `{"detail":"…"}` are wrapped, anything else becomes the message.
pub fn node_error(status: u16, body: &[u8]) -> ApiError {
    use serde_json::Value;
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let field = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
    let (message, kind, code) = match &parsed {
        Some(v) => match v.get("error") {
            Some(Value::String(s)) => (s.clone(), None, None),
            Some(e @ Value::Object(_)) => (
                field(e, "message").unwrap_or_else(|| e.to_string()),
                field(e, "type"),
                field(e, "code").or_else(|| e.get("code").filter(|c| c.is_number()).map(Value::to_string)),
            ),
            _ => match v.get("detail") {
                Some(Value::String(s)) => (s.clone(), None, None),
                Some(d) => (d.to_string(), None, None),
                None => (v.to_string(), None, None),
            },
        },
        None => {
            let text = String::from_utf8_lossy(body);
            let text = text.trim();
            let mut msg: String = text.chars().take(1000).collect();
            if msg.is_empty() {
                msg = format!("The node answered {status}.");
            }
            (msg, None, None)
        }
    };
    let kind =
        kind.unwrap_or_else(|| if status < 500 { "invalid_request_error" } else { "upstream_error" }.into());
    ApiError::Upstream { status, message, kind, code }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_errors_keep_their_message() {
        let e = node_error(400, br#"{"error":"AuthKey has already been used"}"#);
        assert_eq!(e.to_string(), "AuthKey has already been used");
        assert_eq!(e.status(), 400);
        let e = node_error(400, br#"{"error":{"message":"bad","type":"invalid_request_error","code":"x"}}"#);
        assert_eq!((e.to_string().as_str(), e.code()), ("bad", Some("x")));
        let e = node_error(422, br#"{"detail":[{"loc":["body"],"msg":"field required"}]}"#);
        assert!(e.to_string().contains("field required"));
        let e = node_error(400, b"plain text");
        assert_eq!(e.to_string(), "plain text");
        let e = node_error(404, b"");
        assert!(e.to_string().contains("404"));
    }

    #[test]
    fn each_failure_carries_its_retry_decision() {
        let status =
            |s: u16| Failure::Status { status: s, error: node_error(s, b""), retry_after_secs: None };
        let reset = || Failure::Read(io::Error::from(io::ErrorKind::ConnectionReset));
        let case = |f, reused, gone| {
            let e = AttemptError::new(f, reused, gone);
            (e.retry, e.node_failed)
        };
        assert_eq!(case(Failure::Closed, true, false), (Retry::SameNode, false), "a stale pooled connection");
        assert_eq!(case(reset(), true, false), (Retry::SameNode, false));
        assert_eq!(case(reset(), false, false), (Retry::OtherNode, true));
        assert_eq!(
            case(Failure::Connect(io::Error::other("refused")), false, false),
            (Retry::OtherNode, true)
        );
        assert_eq!(case(status(429), false, false), (Retry::OtherNode, false), "capacity is not a failure");
        assert_eq!(case(status(500), false, false), (Retry::OtherNode, true));
        assert_eq!(case(status(400), false, false), (Retry::Never, false), "the node's answer stands");
        assert_eq!(case(Failure::HeadTimeout, false, false), (Retry::Never, true));
        assert_eq!(case(status(500), false, true), (Retry::Never, true), "nobody waits for another node");
        let e = AttemptError::new(status(429), false, false);
        assert_eq!((e.to_api().status(), e.to_api().code()), (503, Some("upstream_unavailable")));
        assert_eq!(AttemptError::new(status(500), false, false).to_api().status(), 502);
        assert_eq!(AttemptError::new(status(404), false, false).to_api().status(), 404);
        assert_eq!(AttemptError::new(Failure::HeadTimeout, false, false).to_api().status(), 504);
    }
}
