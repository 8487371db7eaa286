//! Responding: the client's response head for a node's answer, in the client's dialect, and how its body
//! is framed towards the client. The head is written here and sent by the relay with the first payload.

use super::dialect::Prepared;
use crate::http::request::RequestHead;
use crate::http::response::{HeadWriter, ResponseFraming, ResponseHead};
use crate::upstream::relay::{BodyMode, ClientFraming, client_framing};

/// What the client's answer carries besides the node's status and body.
#[derive(Debug, Clone, Copy)]
pub struct ResponseContext<'a> {
    pub request: &'a RequestHead,
    pub request_id: &'a str,
    /// Headers every answer of the exchange carries.
    pub headers: &'a [(&'static str, String)],
    /// The key's rate, written as the `x-ratelimit-*` headers.
    pub rate_limit: Option<&'a crate::error::RateLimitInfo>,
    pub keep_alive: bool,
}

/// Writes into `out` the head of the client's answer to `node`'s answer, relayed as `mode`; returns the
/// client framing the relay must use.
pub fn head(
    out: &mut Vec<u8>,
    node: &ResponseHead,
    prepared: &Prepared,
    mode: &BodyMode,
    cx: &ResponseContext<'_>,
) -> ClientFraming {
    let framing = client_framing(mode, node.framing, cx.request.version_minor);
    let response_framing = match (framing, node.framing) {
        (ClientFraming::Length, crate::http::body::Framing::Length(n)) => {
            ResponseFraming::Length(usize::try_from(n).unwrap_or(usize::MAX))
        }
        (ClientFraming::Length, _) => ResponseFraming::Length(0),
        (ClientFraming::Chunked, _) => ResponseFraming::Chunked,
        (ClientFraming::Close, _) => ResponseFraming::Close,
    };
    let streams = node.is_event_stream();
    let content_type = prepared
        .content_type(streams)
        .unwrap_or_else(|| node.content_type.as_deref().unwrap_or("application/json"));
    let mut w = HeadWriter::new(out, node.status);
    w.header("Content-Type", content_type.as_bytes()).header("x-request-id", cx.request_id.as_bytes());
    if let Some(id) = &cx.request.client_request_id {
        w.header("x-client-request-id", id.as_bytes());
    }
    for (name, value) in cx.headers {
        w.header(name, value.as_bytes());
    }
    if let Some(info) = cx.rate_limit {
        crate::session::exchange::write_rate_limit(&mut w, info);
    }
    if streams {
        w.header("Cache-Control", b"no-cache");
    }
    w.finish(response_framing, cx.keep_alive);
    framing
}
