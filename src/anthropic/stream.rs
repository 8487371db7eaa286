//! A node's chat-completions stream as Anthropic's event stream, chunk by chunk: each chunk becomes the
//! client's events as it arrives (a tool call's argument fragments are `input_json_delta`s as they
//! come, never collected), with state bounded by one open block and the tool calls' names.
//!
//! The sequence is Anthropic's: `message_start` (at the node's first chunk, so a node that fails before
//! it can still be replaced by another), then per block `content_block_start`, its deltas and
//! `content_block_stop` (thinking from the node's reasoning, text, one `tool_use` per tool call, indexes
//! 0, 1, 2… in order), then `message_delta` with the stop reason and the node's usage, then
//! `message_stop`. While the node is silent a `ping` goes out every [`PING_EVERY`]. A stream that fails
//! after `message_start` ends with an `error` event, never with `message_stop`.
//!
//! Tool calls are expected one after another, as vLLM and OpenAI stream them: Anthropic's blocks cannot
//! be reopened, so fragments of a call that resume after another call's began go into a block of their
//! own (with the call's id and name), not back into the closed one.

use super::events::{BlockKind, EventWriter, Reply, Stop};
use super::node::{self, Chunk};
use crate::http::sse;
use crate::model::Usage;
use crate::translate::Translate;
use std::rc::Rc;
use std::time::Duration;

/// How long the node may be silent before the client gets a `ping` (well within Claude Code's idle
/// limit of 5 minutes and the usual 60 s of proxies in between).
pub const PING_EVERY: Duration = Duration::from_secs(10);

/// The block being written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Open {
    Text,
    Thinking,
    /// A tool call: the node's index of it.
    Tool(u32),
}

/// A tool call seen in this answer: the node's index, its id and name (to name it again should its
/// fragments come back after another call's).
#[derive(Debug)]
struct Call {
    node_index: u32,
    id: String,
    name: String,
}

/// The translation of one streamed answer.
#[derive(Debug)]
pub struct StreamTranslator {
    reply: Rc<Reply>,
    w: EventWriter,
    started: bool,
    /// The open block and its index.
    open: Option<(Open, usize)>,
    next_index: usize,
    calls: Vec<Call>,
    stop: Option<Stop>,
    usage: Usage,
    /// `message_stop` or an `error` event was written: nothing follows.
    ended: bool,
}

impl StreamTranslator {
    pub fn new(reply: Rc<Reply>) -> Self {
        Self {
            reply,
            w: EventWriter::default(),
            started: false,
            open: None,
            next_index: 0,
            calls: Vec::new(),
            stop: None,
            usage: Usage::default(),
            ended: false,
        }
    }

    fn start(&mut self, out: &mut Vec<u8>) {
        if !self.started {
            self.started = true;
            self.w.message_start(out, &self.reply);
        }
    }

    fn close(&mut self, out: &mut Vec<u8>) {
        if let Some((_, index)) = self.open.take() {
            self.w.block_stop(out, index);
        }
    }

    /// The index of an open block of `kind`, opening it (and closing another) when needed.
    fn block(&mut self, out: &mut Vec<u8>, kind: Open) -> usize {
        if let Some((open, index)) = self.open
            && open == kind
        {
            return index;
        }
        self.close(out);
        let index = self.next_index;
        self.next_index += 1;
        self.open = Some((kind, index));
        let block = match kind {
            Open::Text => BlockKind::Text,
            Open::Thinking => BlockKind::Thinking,
            Open::Tool(n) => match self.calls.iter().find(|c| c.node_index == n) {
                Some(c) => BlockKind::ToolUse { id: &c.id, name: &c.name },
                None => BlockKind::ToolUse { id: "", name: "" },
            },
        };
        self.w.block_start(out, index, block);
        index
    }

    fn tool_call(&mut self, out: &mut Vec<u8>, call: &node::ToolCallDelta<'_>) {
        let n = call.index.unwrap_or(0);
        let function = call.function.as_ref();
        if !self.calls.iter().any(|c| c.node_index == n) {
            let id = match call.id.as_deref() {
                Some(id) if !id.is_empty() => id.to_owned(),
                _ => self.reply.tool_id(self.calls.len()),
            };
            let name = function.and_then(|f| f.name.as_deref()).unwrap_or_default().to_owned();
            self.calls.push(Call { node_index: n, id, name });
        }
        let index = self.block(out, Open::Tool(n));
        if let Some(args) = function.and_then(|f| f.arguments.as_deref()).filter(|a| !a.is_empty()) {
            self.w.delta(out, index, "input_json_delta", "partial_json", args);
        }
    }

    fn chunk(&mut self, chunk: Chunk<'_>, out: &mut Vec<u8>) {
        if let Some(error) = chunk.error {
            // The node reports a failure in the stream itself.
            let message = error.get("message").and_then(|m| m.as_str()).unwrap_or("the node failed");
            self.fail(out, &format!("The node failed mid-answer: {message}"));
            return;
        }
        self.start(out);
        if let Some(u) = chunk.usage {
            self.usage = u.into();
        }
        for choice in chunk.choices.iter().flatten().filter(|c| c.index == 0) {
            if let Some(delta) = &choice.delta {
                if let Some(r) = delta.reasoning().filter(|r| !r.is_empty()) {
                    let index = self.block(out, Open::Thinking);
                    self.w.delta(out, index, "thinking_delta", "thinking", r);
                }
                if let Some(t) = delta.content.as_deref().filter(|t| !t.is_empty()) {
                    let index = self.block(out, Open::Text);
                    self.w.delta(out, index, "text_delta", "text", t);
                }
                for call in delta.tool_calls.iter().flatten() {
                    self.tool_call(out, call);
                }
            }
            if let Some(f) = &choice.finish_reason {
                self.stop = Some(Stop::of(f, node::stop_string(choice.stop_reason.as_ref())));
            }
        }
    }

    /// Closes the message: the open block, `message_delta`, `message_stop`.
    fn finish(&mut self, out: &mut Vec<u8>) {
        self.start(out);
        self.close(out);
        let stop = self.stop.take().unwrap_or_else(Stop::end_turn);
        self.w.message_delta(out, &stop, self.usage);
        self.w.message_stop(out);
        self.ended = true;
    }

    /// Ends the stream with an `error` event.
    fn fail(&mut self, out: &mut Vec<u8>, message: &str) {
        self.w.error(out, "overloaded_error", message);
        self.ended = true;
    }
}

impl Translate for StreamTranslator {
    fn event(&mut self, event: &[u8], out: &mut Vec<u8>) {
        if self.ended {
            return;
        }
        let Some(data) = sse::event_data(event) else { return };
        if &*data == b"[DONE]" {
            self.finish(out);
            return;
        }
        match serde_json::from_slice::<Chunk<'_>>(&data) {
            Ok(chunk) => self.chunk(chunk, out),
            Err(e) => log::debug!(target: "anthropic", "a node event that is not a chunk: {e}"),
        }
    }

    fn body(&mut self, _piece: &[u8]) {}

    fn end(&mut self, failure: Option<&str>, out: &mut Vec<u8>) {
        if self.ended {
            return;
        }
        match failure {
            // A node that ends its stream without `[DONE]` but cleanly.
            None => self.finish(out),
            Some(why) => self.fail(out, &format!("The answer broke off: {why}. Retry the request.")),
        }
    }

    fn idle_every(&self) -> Option<Duration> {
        Some(PING_EVERY)
    }

    fn idle(&mut self, out: &mut Vec<u8>) {
        if self.ended {
            return;
        }
        // A ping is never the first event: the SDKs want `message_start` first.
        self.start(out);
        self.w.ping(out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn reply() -> Rc<Reply> {
        Rc::new(Reply::new("req_abc", "org/model".into(), true))
    }

    fn chunk(delta: Value, finish: Value) -> Vec<u8> {
        let c = json!({"id": "c", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]});
        format!("data: {c}\n\n").into_bytes()
    }

    /// The events of `out`: (name, data).
    fn events(out: &[u8]) -> Vec<(String, Value)> {
        let text = String::from_utf8(out.to_vec()).unwrap();
        text.split("\n\n")
            .filter(|e| !e.is_empty())
            .map(|e| {
                let (name, data) = e.split_once('\n').unwrap();
                let name = name.strip_prefix("event: ").unwrap().to_owned();
                (name, serde_json::from_str(data.strip_prefix("data: ").unwrap()).unwrap())
            })
            .collect()
    }

    #[test]
    fn reasoning_text_and_a_tool_call_become_blocks_in_order() {
        let mut t = StreamTranslator::new(reply());
        let mut out = Vec::new();
        let input = [
            chunk(json!({"role": "assistant", "content": ""}), Value::Null),
            chunk(json!({"reasoning_content": "Let me"}), Value::Null),
            chunk(json!({"reasoning_content": " think."}), Value::Null),
            chunk(json!({"content": "Running"}), Value::Null),
            chunk(json!({"content": " it."}), Value::Null),
            chunk(
                json!({"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                    "function": {"name": "Bash", "arguments": ""}}]}),
                Value::Null,
            ),
            chunk(
                json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"command\":"}}]}),
                Value::Null,
            ),
            chunk(json!({"tool_calls": [{"index": 0, "function": {"arguments": "\"ls\"}"}}]}), Value::Null),
            chunk(json!({}), json!("tool_calls")),
            b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":9}}\n\n".to_vec(),
            b"data: [DONE]\n\n".to_vec(),
        ];
        let mut first_event_at = Vec::new();
        for ev in &input {
            let before = out.len();
            t.event(ev, &mut out);
            first_event_at.push(out.len() > before);
        }
        // Every chunk with content writes its events at once; the finish and usage chunks wait for [DONE].
        assert_eq!(first_event_at, [true, true, true, true, true, true, true, true, false, false, true]);
        t.end(None, &mut out);
        let ev = events(&out);
        let names: Vec<&str> = ev.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "message_start",
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop",
            ]
        );
        assert_eq!(ev[0].1["message"]["id"], "msg_abc");
        assert_eq!(ev[0].1["message"]["model"], "org/model");
        assert_eq!(ev[1].1["content_block"]["type"], "thinking");
        assert_eq!(ev[2].1["delta"], json!({"type": "thinking_delta", "thinking": "Let me"}));
        assert_eq!(ev[5].1["index"], 1);
        assert_eq!(ev[7].1["delta"], json!({"type": "text_delta", "text": " it."}));
        assert_eq!(
            ev[9].1["content_block"],
            json!({"type": "tool_use", "id": "call_1", "name": "Bash", "input": {}})
        );
        let args: String =
            ev[10..12].iter().map(|(_, d)| d["delta"]["partial_json"].as_str().unwrap()).collect();
        assert_eq!(args, r#"{"command":"ls"}"#);
        assert_eq!(ev[12].1, json!({"type": "content_block_stop", "index": 2}));
        assert_eq!(
            ev[13].1,
            json!({"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": null},
                "usage": {"input_tokens": 12, "output_tokens": 9}})
        );
    }

    #[test]
    fn a_stop_string_is_the_stop_sequence_and_the_length_is_max_tokens() {
        for (finish, stop_reason, reason, sequence) in [
            (json!("stop"), json!("END"), "stop_sequence", json!("END")),
            (json!("stop"), json!(128001), "end_turn", Value::Null),
            (json!("length"), Value::Null, "max_tokens", Value::Null),
        ] {
            let mut t = StreamTranslator::new(reply());
            let mut out = Vec::new();
            let c = json!({"choices": [{"index": 0, "delta": {"content": "x"}, "finish_reason": finish,
                "stop_reason": stop_reason}]});
            t.event(format!("data: {c}\n\n").as_bytes(), &mut out);
            t.event(b"data: [DONE]\n\n", &mut out);
            let ev = events(&out);
            let delta = &ev.iter().find(|(n, _)| n == "message_delta").unwrap().1["delta"];
            assert_eq!((delta["stop_reason"].as_str(), &delta["stop_sequence"]), (Some(reason), &sequence));
        }
    }

    #[test]
    fn a_failure_after_the_start_is_an_error_event_never_a_message_stop() {
        let mut t = StreamTranslator::new(reply());
        let mut out = Vec::new();
        t.event(&chunk(json!({"content": "half"}), Value::Null), &mut out);
        t.end(Some("the node closed the connection mid-answer"), &mut out);
        t.end(None, &mut out);
        let names: Vec<String> = events(&out).into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["message_start", "content_block_start", "content_block_delta", "error"]);
        let ev = events(&out);
        assert_eq!(ev[3].1["error"]["type"], "overloaded_error");

        // A node that reports an error in its stream.
        let mut t = StreamTranslator::new(reply());
        let mut out = Vec::new();
        t.event(&chunk(json!({"content": "a"}), Value::Null), &mut out);
        t.event(b"data: {\"error\":{\"message\":\"out of memory\"}}\n\n", &mut out);
        t.event(b"data: [DONE]\n\n", &mut out);
        let ev = events(&out);
        assert_eq!(ev.last().unwrap().0, "error");
        assert!(ev.last().unwrap().1["error"]["message"].as_str().unwrap().contains("out of memory"));
    }

    #[test]
    fn silence_gets_pings_after_a_message_start() {
        let mut t = StreamTranslator::new(reply());
        let mut out = Vec::new();
        assert_eq!(t.idle_every(), Some(PING_EVERY));
        t.idle(&mut out);
        t.idle(&mut out);
        t.event(&chunk(json!({"content": "hi"}), json!("stop")), &mut out);
        t.end(None, &mut out);
        let names: Vec<String> = events(&out).into_iter().map(|(n, _)| n).collect();
        assert_eq!(names[..3], ["message_start", "ping", "ping"]);
        assert_eq!(names.iter().filter(|n| *n == "message_start").count(), 1);
        assert_eq!(names.last().map(String::as_str), Some("message_stop"));
    }

    #[test]
    fn an_empty_stream_still_starts_and_stops() {
        let mut t = StreamTranslator::new(reply());
        let mut out = Vec::new();
        t.event(b": keep-alive\n\n", &mut out);
        t.end(None, &mut out);
        let names: Vec<String> = events(&out).into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["message_start", "message_delta", "message_stop"]);
    }
}
