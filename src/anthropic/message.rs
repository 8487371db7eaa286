//! A node's whole (non-streamed) chat completion as an Anthropic `message`: a thinking block from its
//! reasoning, a text block, a `tool_use` block per tool call (the arguments parsed into `input`), the
//! stop reason and the usage. When the client asked for a stream and the node answered in one piece, the
//! same message goes out as the full event sequence.

use super::events::{BlockKind, EventWriter, Reply, Stop};
use super::node::{self, Completion};
use crate::model::Usage;
use crate::translate::Translate;
use serde_json::{Map, Value, json};
use std::rc::Rc;

/// The largest node answer kept for translation (a 32,000-token answer is well under 1 MiB).
pub const MAX_ANSWER_BYTES: usize = 32 << 20;

/// A content block of the message.
#[derive(Debug, Clone, PartialEq)]
enum Block {
    Thinking(String),
    Text(String),
    /// A tool call: the arguments as the node wrote them.
    ToolUse {
        id: String,
        name: String,
        arguments: String,
    },
}

/// The message a completion makes.
#[derive(Debug, Clone, PartialEq)]
struct Message {
    blocks: Vec<Block>,
    stop: Stop,
    usage: Usage,
}

fn read(body: &[u8], reply: &Reply) -> Result<Message, String> {
    let completion: Completion = serde_json::from_slice(body)
        .map_err(|e| format!("the node's answer is not a chat completion: {e}"))?;
    let usage = completion.usage.map(Usage::from).unwrap_or_default();
    let choice = completion.choices.into_iter().next().ok_or("the node's answer has no choice")?;
    let mut blocks = Vec::new();
    if let Some(m) = choice.message {
        if let Some(r) = m.reasoning_content.or(m.reasoning).filter(|r| !r.is_empty()) {
            blocks.push(Block::Thinking(r));
        }
        if let Some(t) = m.content.filter(|t| !t.is_empty()) {
            blocks.push(Block::Text(t));
        }
        for (n, call) in m.tool_calls.into_iter().flatten().enumerate() {
            let (name, arguments) = call.function.map(|f| (f.name, f.arguments)).unwrap_or_default();
            blocks.push(Block::ToolUse {
                id: call.id.filter(|id| !id.is_empty()).unwrap_or_else(|| reply.tool_id(n)),
                name: name.unwrap_or_default(),
                arguments: arguments.unwrap_or_default(),
            });
        }
    }
    let stop = match choice.finish_reason.as_deref() {
        Some(f) => Stop::of(f, node::stop_string(choice.stop_reason.as_ref())),
        None => Stop::end_turn(),
    };
    Ok(Message { blocks, stop, usage })
}

/// A tool call's `input`: its arguments as a JSON object; `{}` when they are empty or not an object
/// (a model's malformed call reaches the client as a call with no arguments, which it reports back).
fn input(arguments: &str) -> Value {
    match serde_json::from_str::<Value>(arguments) {
        Ok(v @ Value::Object(_)) => v,
        _ => Value::Object(Map::new()),
    }
}

fn message_json(reply: &Reply, m: &Message) -> Value {
    let content: Vec<Value> = m
        .blocks
        .iter()
        .map(|b| match b {
            Block::Thinking(t) => json!({"type": "thinking", "thinking": t, "signature": ""}),
            Block::Text(t) => json!({"type": "text", "text": t}),
            Block::ToolUse { id, name, arguments } => {
                json!({"type": "tool_use", "id": id, "name": name, "input": input(arguments)})
            }
        })
        .collect();
    json!({
        "id": reply.id, "type": "message", "role": "assistant", "model": reply.model,
        "content": content, "stop_reason": m.stop.reason, "stop_sequence": m.stop.sequence,
        "usage": {"input_tokens": m.usage.prompt_tokens, "output_tokens": m.usage.completion_tokens},
    })
}

fn write_events(w: &mut EventWriter, out: &mut Vec<u8>, reply: &Reply, m: &Message) {
    w.message_start(out, reply);
    for (index, b) in m.blocks.iter().enumerate() {
        let (kind, delta, field, value) = match b {
            Block::Thinking(t) => (BlockKind::Thinking, "thinking_delta", "thinking", t.as_str()),
            Block::Text(t) => (BlockKind::Text, "text_delta", "text", t.as_str()),
            Block::ToolUse { id, name, arguments } => {
                (BlockKind::ToolUse { id, name }, "input_json_delta", "partial_json", arguments.as_str())
            }
        };
        w.block_start(out, index, kind);
        if !value.is_empty() {
            w.delta(out, index, delta, field, value);
        }
        w.block_stop(out, index);
    }
    w.message_delta(out, &m.stop, m.usage);
    w.message_stop(out);
}

/// The translation of one answer the node sent in one piece.
#[derive(Debug)]
pub struct MessageTranslator {
    reply: Rc<Reply>,
    body: Vec<u8>,
    too_large: bool,
}

impl MessageTranslator {
    pub fn new(reply: Rc<Reply>) -> Self {
        Self { reply, body: Vec::new(), too_large: false }
    }

    fn fail(&self, out: &mut Vec<u8>, message: &str) {
        if self.reply.stream {
            EventWriter::default().error(out, "api_error", message);
        } else {
            let body = json!({"type": "error", "error": {"type": "api_error", "message": message}});
            let _ = serde_json::to_writer(out, &body);
        }
    }
}

impl Translate for MessageTranslator {
    fn event(&mut self, _event: &[u8], _out: &mut Vec<u8>) {}

    fn body(&mut self, piece: &[u8]) {
        if self.body.len() + piece.len() > MAX_ANSWER_BYTES {
            self.too_large = true;
            self.body = Vec::new();
        }
        if !self.too_large {
            self.body.extend_from_slice(piece);
        }
    }

    fn end(&mut self, failure: Option<&str>, out: &mut Vec<u8>) {
        if let Some(why) = failure {
            self.fail(out, &format!("The answer broke off: {why}. Retry the request."));
            return;
        }
        if self.too_large {
            self.fail(out, &format!("The node's answer is larger than {MAX_ANSWER_BYTES} bytes."));
            return;
        }
        match read(&self.body, &self.reply) {
            Ok(m) if self.reply.stream => write_events(&mut EventWriter::default(), out, &self.reply, &m),
            Ok(m) => {
                let _ = serde_json::to_writer(out, &message_json(&self.reply, &m));
            }
            Err(why) => self.fail(out, &why),
        }
        self.body = Vec::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn translate(stream: bool, completion: &Value) -> Vec<u8> {
        let mut t = MessageTranslator::new(Rc::new(Reply::new("req_x", "alias".into(), stream)));
        let bytes = completion.to_string().into_bytes();
        for piece in bytes.chunks(7) {
            t.body(piece);
        }
        let mut out = Vec::new();
        t.end(None, &mut out);
        out
    }

    fn completion() -> Value {
        json!({"id": "c", "object": "chat.completion", "choices": [{"index": 0, "finish_reason": "tool_calls",
            "message": {"role": "assistant", "content": "Running.", "reasoning_content": "Plan.",
                "tool_calls": [{"id": "call_9", "type": "function",
                    "function": {"name": "Bash", "arguments": "{\"command\":\"ls\"}"}}]}}],
            "usage": {"prompt_tokens": 30, "completion_tokens": 12, "total_tokens": 42}})
    }

    #[test]
    fn a_completion_is_a_message_with_its_blocks_stop_and_usage() {
        let m: Value = serde_json::from_slice(&translate(false, &completion())).unwrap();
        assert_eq!(
            m,
            json!({"id": "msg_x", "type": "message", "role": "assistant", "model": "alias",
                "content": [
                    {"type": "thinking", "thinking": "Plan.", "signature": ""},
                    {"type": "text", "text": "Running."},
                    {"type": "tool_use", "id": "call_9", "name": "Bash", "input": {"command": "ls"}}],
                "stop_reason": "tool_use", "stop_sequence": null,
                "usage": {"input_tokens": 30, "output_tokens": 12}})
        );
    }

    #[test]
    fn a_streaming_client_gets_the_whole_message_as_events() {
        let out = String::from_utf8(translate(true, &completion())).unwrap();
        let names: Vec<&str> = out.lines().filter_map(|l| l.strip_prefix("event: ")).collect();
        assert_eq!(names.first(), Some(&"message_start"));
        assert_eq!(names.iter().filter(|n| **n == "content_block_start").count(), 3);
        assert_eq!(names[names.len() - 2..], ["message_delta", "message_stop"]);
        assert!(out.contains(r#""partial_json":"{\"command\":\"ls\"}""#), "{out}");
    }

    #[test]
    fn an_unreadable_answer_is_an_api_error() {
        let out: Value = serde_json::from_slice(&translate(false, &json!({"choices": "?"}))).unwrap();
        assert_eq!((out["type"].as_str(), out["error"]["type"].as_str()), (Some("error"), Some("api_error")));
        assert_eq!(input("not json"), json!({}));
        assert_eq!(input("[1]"), json!({}));
    }
}
