//! Client dialects: how a client's request becomes the body a node gets, and how the node's answer goes
//! back. Gonka nodes speak OpenAI's chat completions, completions and embeddings; the OpenAI dialect
//! passes bytes through untouched (only what billing needs is rewritten, in [`super::inspect`]). Other
//! dialects plug in here, and only here: they turn the client's body into a chat-completions body before
//! it is inspected, and give the relay a [`Translate`](crate::upstream::relay::Translate) that turns the
//! node's answer back, chunk by chunk. Forwarding, the relay and settlement are the same for all.

use super::inspect::Endpoint;
use crate::error::ApiError;
use crate::upstream::relay::BodyMode;

/// The dialect a route speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// OpenAI's own API, passed through: the endpoint is the node's.
    OpenAi(Endpoint),
}

impl Dialect {
    /// The route's name in the access log and the metrics.
    pub fn route(self) -> &'static str {
        match self {
            Self::OpenAi(e) => e.name(),
        }
    }

    /// What the node is asked.
    pub fn endpoint(self) -> Endpoint {
        match self {
            Self::OpenAi(e) => e,
        }
    }

    /// The body the node gets, made from the client's.
    pub fn node_body(self, body: bytes::Bytes) -> Result<bytes::Bytes, ApiError> {
        match self {
            Self::OpenAi(_) => Ok(body),
        }
    }

    /// How the node's answer is relayed: `node_streams` when it answers with server-sent events,
    /// `cut_usage` when the usage chunk the gateway asked for must not reach the client.
    pub fn body_mode(self, node_streams: bool, cut_usage: bool) -> BodyMode {
        match self {
            Self::OpenAi(_) if node_streams => BodyMode::Sse { cut_usage },
            Self::OpenAi(_) => BodyMode::Json,
        }
    }

    /// The client's content type, when it is not the node's own.
    pub fn content_type(self, _node_streams: bool) -> Option<&'static str> {
        match self {
            Self::OpenAi(_) => None,
        }
    }
}
