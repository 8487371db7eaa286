//! Anthropic's Messages API on the nodes' chat completions: a `POST /v1/messages` body is made into a
//! chat-completions body ([`request`]), and the node's answer is turned back into an Anthropic message
//! ([`message`]) or its event stream ([`stream`]) as it arrives.
//!
//! # Design
//! The translation plugs into the request path at its dialect seam ([`crate::translate`]): keys,
//! limits, holds, forwarding, the relay and settlement are those of chat completions, and the relay
//! counts the node's own events and usage whatever the dialect, so a request costs the same whichever
//! API it came in by. The request is translated once, in full, before it is inspected (it is bounded by
//! the body limit); the answer is translated event by event with bounded state, so the first text reaches
//! the client with the node's first chunk. What the client named as the model is echoed in the answer.
//!
//! # Errors
//! A request is refused only for what the node could not serve (see [`request`]); errors are written in
//! Anthropic's shape by the exchange. A node that fails mid-stream ends the stream with an `error`
//! event ([`stream`]).

pub mod events;
pub mod message;
pub mod node;
pub mod request;
pub mod stream;

use crate::error::ApiError;
use crate::translate::{Translate, Translation};
use events::Reply;
use request::Purpose;
use std::rc::Rc;

/// One `/v1/messages` request's translation.
#[derive(Debug)]
pub struct Messages {
    reply: Rc<Reply>,
}

impl Translation for Messages {
    fn translator(&self, node_streams: bool) -> Box<dyn Translate> {
        if node_streams {
            Box::new(stream::StreamTranslator::new(Rc::clone(&self.reply)))
        } else {
            Box::new(message::MessageTranslator::new(Rc::clone(&self.reply)))
        }
    }

    fn content_type(&self, _node_streams: bool) -> &'static str {
        if self.reply.stream { "text/event-stream" } else { "application/json" }
    }
}

/// The chat-completions body for a `/v1/messages` request `body`, and the translation of its answer;
/// `request_id` (the gateway's `req_…`) makes the message id.
pub fn prepare(body: &[u8], request_id: &str) -> Result<(Vec<u8>, Messages), ApiError> {
    let chat = request::to_chat(body, Purpose::Message)?;
    let reply = Reply::new(request_id, chat.model, chat.stream);
    Ok((chat.body, Messages { reply: Rc::new(reply) }))
}
