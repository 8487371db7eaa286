//! Writing an Anthropic answer: who the message is ([`Reply`]), how a chat completion's end reads as a
//! `stop_reason`, and the events of a stream, each `event: <type>` then its one-line JSON `data:` (both
//! Anthropic's SDKs and Claude Code need the `event:` line).

use crate::http::sse;
use crate::model::Usage;
use serde_json::json;

/// The message being answered: its id (`msg_…`), the model as the client named it, and whether the
/// client asked for a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub id: String,
    pub model: String,
    pub stream: bool,
}

impl Reply {
    /// The message answering the gateway's request `request_id` (`req_…`): `msg_` and the same
    /// characters, so the message id finds its usage record.
    pub fn new(request_id: &str, model: String, stream: bool) -> Self {
        let id = format!("msg_{}", request_id.strip_prefix("req_").unwrap_or(request_id));
        Self { id, model, stream }
    }

    /// The id of the `n`th tool call of the message when the node gave it none.
    pub fn tool_id(&self, n: usize) -> String {
        format!("toolu_{}_{n}", self.id.strip_prefix("msg_").unwrap_or(&self.id))
    }
}

/// How the answer ended: Anthropic's `stop_reason` and the `stop_sequence` that ended it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stop {
    pub reason: &'static str,
    pub sequence: Option<String>,
}

impl Stop {
    /// A chat choice's `finish_reason` (with vLLM's `stop_reason`, the stop string that ended it).
    pub fn of(finish_reason: &str, stop_string: Option<&str>) -> Self {
        let reason = match (finish_reason, stop_string) {
            ("stop", Some(_)) => "stop_sequence",
            ("length", _) => "max_tokens",
            ("tool_calls" | "function_call", _) => "tool_use",
            ("content_filter", _) => "refusal",
            _ => "end_turn",
        };
        let sequence = if reason == "stop_sequence" { stop_string.map(str::to_owned) } else { None };
        Self { reason, sequence }
    }

    /// A node that said nothing about why it stopped.
    pub fn end_turn() -> Self {
        Self { reason: "end_turn", sequence: None }
    }
}

/// A content block's kind, as it starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockKind<'a> {
    Text,
    Thinking,
    ToolUse { id: &'a str, name: &'a str },
}

/// Writes events into a caller's buffer, through a scratch buffer of its own (reused, so writing an
/// event allocates nothing once it has grown).
#[derive(Debug, Default)]
pub struct EventWriter {
    scratch: Vec<u8>,
}

impl EventWriter {
    fn write(&mut self, out: &mut Vec<u8>, name: &str, data: impl FnOnce(&mut Vec<u8>)) {
        self.scratch.clear();
        data(&mut self.scratch);
        sse::write_event(out, Some(name), &self.scratch);
    }

    fn json(&mut self, out: &mut Vec<u8>, name: &str, value: &serde_json::Value) {
        self.write(out, name, |buf| {
            let _ = serde_json::to_writer(buf, value);
        });
    }

    /// `message_start`: the message with no content yet. The node reports the prompt's tokens only at
    /// the end, so `input_tokens` is 0 here and the real count comes in `message_delta`.
    pub fn message_start(&mut self, out: &mut Vec<u8>, reply: &Reply) {
        let message = json!({
            "type": "message_start",
            "message": {
                "id": reply.id, "type": "message", "role": "assistant", "model": reply.model,
                "content": [], "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": 0, "output_tokens": 0},
            },
        });
        self.json(out, "message_start", &message);
    }

    pub fn block_start(&mut self, out: &mut Vec<u8>, index: usize, kind: BlockKind<'_>) {
        let block = match kind {
            BlockKind::Text => json!({"type": "text", "text": ""}),
            BlockKind::Thinking => json!({"type": "thinking", "thinking": "", "signature": ""}),
            // Tool arguments come only as `input_json_delta`s (Claude Code ignores an input given here).
            BlockKind::ToolUse { id, name } => {
                json!({"type": "tool_use", "id": id, "name": name, "input": {}})
            }
        };
        let start = json!({"type": "content_block_start", "index": index, "content_block": block});
        self.json(out, "content_block_start", &start);
    }

    /// A `content_block_delta` of `kind` (`text_delta`, `thinking_delta`, `input_json_delta`) whose `field`
    /// (`text`, `thinking`, `partial_json`) is `value`. The hot event: written without building a value.
    pub fn delta(&mut self, out: &mut Vec<u8>, index: usize, kind: &str, field: &str, value: &str) {
        self.write(out, "content_block_delta", |buf| {
            buf.extend_from_slice(br#"{"type":"content_block_delta","index":"#);
            buf.extend_from_slice(itoa::Buffer::new().format(index).as_bytes());
            buf.extend_from_slice(br#","delta":{"type":""#);
            buf.extend_from_slice(kind.as_bytes());
            buf.extend_from_slice(br#"",""#);
            buf.extend_from_slice(field.as_bytes());
            buf.extend_from_slice(br#"":"#);
            let _ = serde_json::to_writer(&mut *buf, value);
            buf.extend_from_slice(b"}}");
        });
    }

    pub fn block_stop(&mut self, out: &mut Vec<u8>, index: usize) {
        self.json(out, "content_block_stop", &json!({"type": "content_block_stop", "index": index}));
    }

    /// `message_delta`: how the answer stopped and what it used (totals).
    pub fn message_delta(&mut self, out: &mut Vec<u8>, stop: &Stop, usage: Usage) {
        let delta = json!({
            "type": "message_delta",
            "delta": {"stop_reason": stop.reason, "stop_sequence": stop.sequence},
            "usage": {"input_tokens": usage.prompt_tokens, "output_tokens": usage.completion_tokens},
        });
        self.json(out, "message_delta", &delta);
    }

    pub fn message_stop(&mut self, out: &mut Vec<u8>) {
        self.json(out, "message_stop", &json!({"type": "message_stop"}));
    }

    pub fn ping(&mut self, out: &mut Vec<u8>) {
        self.json(out, "ping", &json!({"type": "ping"}));
    }

    /// An `error` event: the stream ends without `message_stop`, and the SDKs raise `kind`.
    pub fn error(&mut self, out: &mut Vec<u8>, kind: &str, message: &str) {
        let error = json!({"type": "error", "error": {"type": kind, "message": message}});
        self.json(out, "error", &error);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finish_reasons_read_as_stop_reasons() {
        assert_eq!(Stop::of("stop", None), Stop::end_turn());
        assert_eq!(Stop::of("length", None).reason, "max_tokens");
        assert_eq!(Stop::of("tool_calls", None).reason, "tool_use");
        assert_eq!(
            Stop::of("stop", Some("END")),
            Stop { reason: "stop_sequence", sequence: Some("END".into()) }
        );
        assert_eq!(Stop::of("whatever", None).reason, "end_turn");
    }

    #[test]
    fn deltas_are_one_line_json_after_their_event_line() {
        let mut w = EventWriter::default();
        let mut out = Vec::new();
        w.delta(&mut out, 3, "text_delta", "text", "a \"quoted\"\nline");
        let text = String::from_utf8(out).unwrap();
        let (event, data) = text.split_once('\n').unwrap();
        assert_eq!(event, "event: content_block_delta");
        let data: serde_json::Value =
            serde_json::from_str(data.strip_prefix("data: ").unwrap().trim_end()).unwrap();
        assert_eq!(
            data,
            json!({"type": "content_block_delta", "index": 3, "delta": {"type": "text_delta", "text": "a \"quoted\"\nline"}})
        );
        assert!(text.ends_with("}}\n\n"));
    }

    #[test]
    fn a_message_id_is_the_request_id_s() {
        let r = Reply::new("req_0123abcd", "m".into(), true);
        assert_eq!((r.id.as_str(), r.tool_id(2).as_str()), ("msg_0123abcd", "toolu_0123abcd_2"));
    }
}
