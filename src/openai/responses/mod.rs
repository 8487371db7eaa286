//! OpenAI's Responses API (`POST /v1/responses`) on a chat-completions node.
//!
//! # Design
//! - [`request`] reads and checks a Responses request: the fields it translates, the ones the response
//!   object echoes, and the ones it refuses by name (hosted tools, background mode, conversations).
//! - [`items`] turns a conversation of Responses items (messages, function calls and their outputs,
//!   reasoning passed back) into chat messages.
//! - [`output`] builds the response from the node's answer, delta by delta: its output items, the
//!   stream's events (each with its `sequence_number`, written as the node's chunk arrives) and the
//!   response object.
//! - [`translation`] is the seam's side: a [`crate::translate::Translation`] per request, a translator
//!   per attempt at a node, and the response it keeps when the request asked to `store` it.
//!
//! A stored response keeps the conversation it answered (its input items) and its output, so
//! `previous_response_id` continues from one read of the store, whichever instance wrote it.
//!
//! # Errors
//! Bad input is a 400 in OpenAI's shape naming the parameter (`input[2].content[0].type`,
//! `tools[4]`); tools a client sends by default that a node cannot run (`namespace`, `web_search`) are
//! dropped with a log line instead.

pub mod items;
pub mod output;
pub mod request;
pub mod translation;
