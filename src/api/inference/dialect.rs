//! Client dialects: how a client's request becomes the body a node gets, and how the node's answer goes
//! back. Gonka nodes speak OpenAI's chat completions, completions and embeddings; the OpenAI dialect
//! passes bytes through untouched (only what billing needs is rewritten, in [`super::inspect`]). Other
//! dialects plug in here, and only here: [`Dialect::prepare`] turns the client's body into a
//! chat-completions body before it is inspected, with a [`Translation`] that gives the relay a
//! translator of the node's answer for each attempt. Authentication, admission, holds, forwarding, the
//! relay and settlement are the same for all.
//!
//! Anthropic's Messages API ([`crate::anthropic`]) differs in one rule of admission: its `max_tokens` is
//! required, so it is a ceiling every client must send (Claude Code sends 32000 on every request), not a
//! choice; the key's `fit_max_tokens = "unset"` therefore fits it as it fits an OpenAI request without
//! one ([`Dialect::client_chooses_max_tokens`]).

use super::inspect::Endpoint;
use crate::app::App;
use crate::auth::cache::KeyEntry;
use crate::error::{ApiError, ErrorShape};
use crate::translate::Translation;
use crate::upstream::relay::BodyMode;
use std::rc::Rc;

/// The dialect a route speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// OpenAI's own API, passed through: the endpoint is the node's.
    OpenAi(Endpoint),
    /// Anthropic's Messages API (`POST /v1/messages`), translated to and from chat completions.
    AnthropicMessages,
}

/// A request made ready for a node.
pub struct Prepared {
    /// The body the node gets (before the rewrite of what billing needs).
    pub body: bytes::Bytes,
    /// How the answer is turned back; `None`: passed through.
    pub translation: Option<Rc<dyn Translation>>,
}

impl Dialect {
    /// The route's name in the access log and the metrics.
    pub fn route(self) -> &'static str {
        match self {
            Self::OpenAi(e) => e.name(),
            Self::AnthropicMessages => "messages",
        }
    }

    /// What the node is asked.
    pub fn endpoint(self) -> Endpoint {
        match self {
            Self::OpenAi(e) => e,
            Self::AnthropicMessages => Endpoint::ChatCompletions,
        }
    }

    /// How errors on this route are written.
    pub fn error_shape(self) -> ErrorShape {
        match self {
            Self::OpenAi(_) => ErrorShape::OpenAi,
            Self::AnthropicMessages => ErrorShape::Anthropic,
        }
    }

    /// Whether a `max_tokens` the client sent is its choice (the `fit_max_tokens = "unset"` policy
    /// leaves it alone) or a ceiling the API makes every client send (fitted like a missing one).
    pub fn client_chooses_max_tokens(self) -> bool {
        match self {
            Self::OpenAi(_) => true,
            Self::AnthropicMessages => false,
        }
    }

    /// The request as the node gets it, made from the client's `body` for `key` (authenticated and
    /// admitted); `request_id` is the gateway's id of the request.
    pub async fn prepare(
        self,
        _app: &App,
        _key: &KeyEntry,
        body: bytes::Bytes,
        request_id: &str,
    ) -> Result<Prepared, ApiError> {
        match self {
            Self::OpenAi(_) => Ok(Prepared { body, translation: None }),
            Self::AnthropicMessages => {
                let (chat, messages) = crate::anthropic::prepare(&body, request_id)?;
                Ok(Prepared { body: bytes::Bytes::from(chat), translation: Some(Rc::new(messages)) })
            }
        }
    }
}

impl Prepared {
    /// How the node's answer is relayed: `node_streams` when it answers with server-sent events,
    /// `cut_usage` when the usage chunk the gateway asked for must not reach the client.
    pub fn body_mode(&self, node_streams: bool, cut_usage: bool) -> BodyMode {
        match &self.translation {
            Some(t) => BodyMode::Translated { stream: node_streams, translator: t.translator(node_streams) },
            None if node_streams => BodyMode::Sse { cut_usage },
            None => BodyMode::Json,
        }
    }

    /// The client's content type, when it is not the node's own.
    pub fn content_type(&self, node_streams: bool) -> Option<&'static str> {
        self.translation.as_ref().map(|t| t.content_type(node_streams))
    }
}
