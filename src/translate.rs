//! The seam client dialects other than OpenAI's plug into. Gonka nodes speak OpenAI's chat completions;
//! a request in another dialect (Anthropic Messages, OpenAI Responses) is made into a chat-completions
//! request, and the node's answer is turned back for the client piece by piece as it arrives
//! ([`Translate`]), with state bounded by what one answer needs. Forwarding, the relay and settlement
//! know only these traits: the node's usage, its events and its bytes are counted the same way for every
//! dialect, so a request costs the same whichever dialect it came in. A dialect that keeps something of
//! a complete answer (OpenAI's stored responses) hands it over with [`Translation::keep`]; the request
//! path stores it, as it journals the usage record, before the answer's final bytes reach the client.

use crate::model::StoredResponse;
use std::time::Duration;

/// One request's translation: made from the client's request when it is read, asked for a fresh
/// translator for each attempt at a node (an attempt that failed before any byte reached the client is
/// retried on another node from scratch).
pub trait Translation {
    /// A translator for one attempt; `node_streams` when the node answers with server-sent events.
    fn translator(&self, node_streams: bool) -> Box<dyn Translate>;
    /// The `Content-Type` of the client's answer.
    fn content_type(&self, node_streams: bool) -> &'static str;
    /// What the request keeps of its answer, asked once the latest attempt's answer is complete (every
    /// event of it translated, its final bytes not yet written); `None`: nothing.
    fn keep(&self) -> Option<StoredResponse> {
        None
    }
}

/// The translation of one chat-completions answer.
pub trait Translate {
    /// One complete event of the node's stream (a chat-completions chunk, or `[DONE]`): appends the
    /// client's bytes for it to `out` (possibly none).
    fn event(&mut self, event: &[u8], out: &mut Vec<u8>);
    /// A piece of a non-streamed answer, in order (translators keep what they need of it).
    fn body(&mut self, piece: &[u8]);
    /// The answer ended, completely (`failure` `None`) or not: appends what closes it for the client
    /// (a non-streamed answer's whole translated body; a stream's closing or error events).
    fn end(&mut self, failure: Option<&str>, out: &mut Vec<u8>);
    /// How long the node may stay silent in a stream before [`Translate::idle`] is asked for bytes that
    /// keep the client's stream alive; `None`: never.
    fn idle_every(&self) -> Option<Duration> {
        None
    }
    /// The node has been silent for [`Translate::idle_every`]: appends what keeps the client waiting
    /// (a ping event).
    fn idle(&mut self, _out: &mut Vec<u8>) {}
}
