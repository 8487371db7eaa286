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
//!
//! OpenAI's Responses API ([`Dialect::Responses`]) becomes a chat completion too
//! ([`crate::openai::responses`]); a `previous_response_id` is read from the store through the control
//! plane here, where the key that owns it is known.

use super::inspect::Endpoint;
use crate::app::App;
use crate::auth::cache::KeyEntry;
use crate::error::{ApiError, ErrorShape};
use crate::openai::responses::request::Request;
use crate::openai::responses::translation::{KeepFor, ResponsesTranslation, continuation};
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
    /// OpenAI's Responses API, translated to chat completions.
    Responses,
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
            Self::Responses => "responses",
        }
    }

    /// What the node is asked.
    pub fn endpoint(self) -> Endpoint {
        match self {
            Self::OpenAi(e) => e,
            Self::AnthropicMessages | Self::Responses => Endpoint::ChatCompletions,
        }
    }

    /// How errors on this route are written.
    pub fn error_shape(self) -> ErrorShape {
        match self {
            Self::OpenAi(_) | Self::Responses => ErrorShape::OpenAi,
            Self::AnthropicMessages => ErrorShape::Anthropic,
        }
    }

    /// Whether a `max_tokens` the client sent is its choice (the `fit_max_tokens = "unset"` policy
    /// leaves it alone) or a ceiling the API makes every client send (fitted like a missing one).
    pub fn client_chooses_max_tokens(self) -> bool {
        match self {
            Self::OpenAi(_) | Self::Responses => true,
            Self::AnthropicMessages => false,
        }
    }

    /// The request as the node gets it, made from the client's `body` for `key` (authenticated and
    /// admitted); `request_id` is the gateway's id of the request.
    pub async fn prepare(
        self,
        app: &App,
        key: &KeyEntry,
        body: bytes::Bytes,
        request_id: &str,
    ) -> Result<Prepared, ApiError> {
        match self {
            Self::OpenAi(_) => Ok(Prepared { body, translation: None }),
            Self::AnthropicMessages => {
                let (chat, messages) = crate::anthropic::prepare(&body, request_id)?;
                Ok(Prepared { body: bytes::Bytes::from(chat), translation: Some(Rc::new(messages)) })
            }
            Self::Responses => responses(app, key, &body).await,
        }
    }
}

/// A Responses request as a chat completion: the conversation it continues (read from the store when it
/// names a `previous_response_id` of the key's account), then its input.
async fn responses(app: &App, key: &KeyEntry, body: &[u8]) -> Result<Prepared, ApiError> {
    let request = Request::parse(body)?;
    let account_id = key.account_id().to_string();
    let history = match &request.previous_response_id {
        None => Vec::new(),
        Some(id) => {
            let (account, wanted) = (account_id.clone(), id.clone());
            let stored = app
                .control
                .call(move |st| st.live_response(&account, &wanted))
                .await??
                .ok_or_else(|| ApiError::PreviousResponseNotFound(id.chars().take(128).collect()))?;
            continuation(&stored)?
        }
    };
    let history_len = history.len();
    let conversation = request.conversation(history);
    let chat = request.chat_body(&conversation, history_len)?;
    if !request.dropped_tools.is_empty() {
        log::info!(
            target: "responses",
            "key {}: dropped tools a node cannot run: {}",
            key.id(),
            request.dropped_tools.join(", ")
        );
    }
    let now_ms = app.clock.now_ms();
    let retention_ms = i64::try_from(app.settings.responses_retention.as_millis()).unwrap_or(i64::MAX);
    let keep = request.store.then(|| KeepFor {
        account_id,
        key_id: key.id().to_string(),
        expires_ms: now_ms.saturating_add(retention_ms),
    });
    let translation = ResponsesTranslation::new(&request, &conversation, now_ms, keep)?;
    Ok(Prepared { body: bytes::Bytes::from(chat), translation: Some(Rc::new(translation)) })
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

    /// What the dialect keeps of the complete answer (a stored response), if anything.
    pub fn keep(&self) -> Option<crate::model::StoredResponse> {
        self.translation.as_ref().and_then(|t| t.keep())
    }

    /// The client's content type, when it is not the node's own.
    pub fn content_type(&self, node_streams: bool) -> Option<&'static str> {
        self.translation.as_ref().map(|t| t.content_type(node_streams))
    }
}
