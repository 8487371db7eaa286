//! A response built from a chat-completions answer as it arrives: output items, stream events and the
//! response object.
//!
//! # Design
//! [`Output`] takes the node's answer a piece at a time ([`Output::apply`]: a streamed chunk, or a whole
//! answer's `message`) and keeps the output items it makes: a `reasoning` item for `reasoning_content`,
//! a `message` for `content`, a `function_call` per tool call. When the client streams, each piece
//! becomes its events at once (`response.output_item.added` before an item's first delta, its `.done`
//! events when the next item starts or the answer ends; `response.created` and
//! `response.in_progress` before the first), each numbered by `sequence_number`. What it keeps is what
//! the protocol's closing events and a stored response must repeat: each item's text, the node's finish
//! reason and usage.
//!
//! A finish reason of `length` makes the response `incomplete` (`max_output_tokens`), as does
//! `content_filter`; an answer that breaks off makes it `failed`.

use serde_json::{Map, Value, json};
use std::rc::Rc;

/// What every response object of one request carries.
#[derive(Debug)]
pub struct ResponseHead {
    /// `resp_…`.
    pub id: String,
    /// Unix seconds.
    pub created_at: i64,
    /// The request's fields the object echoes.
    pub echo: Map<String, Value>,
}

impl ResponseHead {
    /// The response object with `status`, `output` and `usage`, and `extra` members.
    fn object(&self, status: &str, output: Vec<Value>, usage: Value, extra: &[(&str, Value)]) -> Value {
        let mut o = self.echo.clone();
        o.insert("id".into(), Value::String(self.id.clone()));
        o.insert("object".into(), json!("response"));
        o.insert("created_at".into(), json!(self.created_at));
        o.insert("status".into(), json!(status));
        o.insert("error".into(), Value::Null);
        o.insert("incomplete_details".into(), Value::Null);
        o.insert("output".into(), Value::Array(output));
        o.insert("usage".into(), usage);
        for (k, v) in extra {
            o.insert((*k).to_owned(), v.clone());
        }
        Value::Object(o)
    }
}

/// How the answer ended, by the node's finish reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    Completed,
    /// `incomplete_details.reason`.
    Incomplete(&'static str),
}

#[derive(Debug)]
enum Kind {
    Reasoning,
    Message,
    Call { call_id: String, name: String },
}

#[derive(Debug)]
struct Item {
    kind: Kind,
    id: String,
    /// The reasoning, the text, or the arguments.
    text: String,
    /// Its status once its `.done` events went out.
    closed: Option<&'static str>,
}

impl Item {
    fn json(&self, status: &str) -> Value {
        match &self.kind {
            Kind::Reasoning => json!({"id": self.id, "type": "reasoning", "status": status, "summary": [],
                "content": [{"type": "reasoning_text", "text": self.text}]}),
            Kind::Message => json!({"id": self.id, "type": "message", "role": "assistant", "status": status,
                "content": [output_text(&self.text)]}),
            Kind::Call { call_id, name } => json!({"id": self.id, "type": "function_call", "status": status,
                "call_id": call_id, "name": name, "arguments": self.text}),
        }
    }
}

fn output_text(text: &str) -> Value {
    json!({"type": "output_text", "text": text, "annotations": [], "logprobs": []})
}

/// Responses usage from a chat completion's.
fn usage(chat: &Value) -> Value {
    let n = |v: &Value| v.as_u64().unwrap_or(0);
    let (input, output) = (n(&chat["prompt_tokens"]), n(&chat["completion_tokens"]));
    json!({
        "input_tokens": input,
        "input_tokens_details": {"cached_tokens": n(&chat["prompt_tokens_details"]["cached_tokens"])},
        "output_tokens": output,
        "output_tokens_details": {"reasoning_tokens": n(&chat["completion_tokens_details"]["reasoning_tokens"])},
        "total_tokens": chat["total_tokens"].as_u64().unwrap_or(input + output),
    })
}

/// One attempt's response, built as the node's answer arrives (see the module docs).
#[derive(Debug)]
pub struct Output {
    head: Rc<ResponseHead>,
    /// The events not yet taken; `None` when the client does not stream.
    events: Option<Vec<u8>>,
    sequence_number: u64,
    started: bool,
    items: Vec<Item>,
    /// The reasoning or message item deltas go to.
    open_text: Option<usize>,
    /// The node's tool-call index → the item.
    calls: Vec<(u64, usize)>,
    finish_reason: Option<String>,
    usage: Option<Value>,
    /// The answer broke off, or was not a chat completion.
    failure: Option<String>,
    ended: bool,
    /// When the response completed (Unix seconds), fixed the first time the finished object is made.
    completed_at: std::cell::Cell<Option<u64>>,
    /// A whole (not streamed) answer's bytes, applied once complete.
    pub body: Vec<u8>,
    body_applied: bool,
}

impl Output {
    /// `events`: the client streams, so every piece is written as events too.
    pub fn new(head: Rc<ResponseHead>, events: bool) -> Self {
        Self {
            head,
            events: events.then(Vec::new),
            sequence_number: 0,
            started: false,
            items: Vec::new(),
            open_text: None,
            calls: Vec::new(),
            finish_reason: None,
            usage: None,
            failure: None,
            ended: false,
            completed_at: std::cell::Cell::new(None),
            body: Vec::new(),
            body_applied: false,
        }
    }

    /// Moves the events written so far to `out`.
    pub fn take_events(&mut self, out: &mut Vec<u8>) {
        if let Some(events) = &mut self.events {
            out.append(events);
        }
    }

    fn emit(&mut self, kind: &str, fields: Value) {
        let Some(events) = &mut self.events else { return };
        let mut event = match fields {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        event.insert("type".into(), json!(kind));
        event.insert("sequence_number".into(), json!(self.sequence_number));
        self.sequence_number += 1;
        events.extend_from_slice(b"event: ");
        events.extend_from_slice(kind.as_bytes());
        events.extend_from_slice(b"\ndata: ");
        // A map of JSON values always serializes.
        let _ = serde_json::to_writer(&mut *events, &event);
        events.extend_from_slice(b"\n\n");
    }

    fn start(&mut self) {
        if self.started {
            return;
        }
        self.started = true;
        let response = self.head.object("in_progress", Vec::new(), Value::Null, &[]);
        self.emit("response.created", json!({"response": response}));
        self.emit("response.in_progress", json!({"response": response}));
    }

    fn item_id(&self, prefix: &str) -> String {
        let suffix = self.head.id.strip_prefix("resp_").unwrap_or(&self.head.id);
        format!("{prefix}_{suffix}_{}", self.items.len())
    }

    /// Opens an item, with its `output_item.added` (and `content_part.added`) events.
    fn open(&mut self, kind: Kind) -> usize {
        let prefix = match kind {
            Kind::Reasoning => "rs",
            Kind::Message => "msg",
            Kind::Call { .. } => "fc",
        };
        let item = Item { id: self.item_id(prefix), kind, text: String::new(), closed: None };
        let index = self.items.len();
        let mut added = item.json("in_progress");
        let part = match item.kind {
            Kind::Reasoning => Some(json!({"type": "reasoning_text", "text": ""})),
            Kind::Message => Some(output_text("")),
            Kind::Call { .. } => None,
        };
        if part.is_some() {
            added["content"] = json!([]);
        }
        let item_id = item.id.clone();
        self.items.push(item);
        self.emit("response.output_item.added", json!({"output_index": index, "item": added}));
        if let Some(part) = part {
            self.emit(
                "response.content_part.added",
                json!({"item_id": item_id, "output_index": index, "content_index": 0, "part": part}),
            );
        }
        index
    }

    /// Closes an item, with its `.done` events.
    fn close(&mut self, index: usize, status: &'static str) {
        let item = &mut self.items[index];
        if item.closed.is_some() {
            return;
        }
        item.closed = Some(status);
        let (id, text) = (item.id.clone(), item.text.clone());
        let done = item.json(status);
        let name = match &item.kind {
            Kind::Call { name, .. } => Some(name.clone()),
            _ => None,
        };
        match self.items[index].kind {
            Kind::Reasoning => {
                let part = json!({"type": "reasoning_text", "text": text});
                self.emit(
                    "response.reasoning_text.done",
                    json!({"item_id": id, "output_index": index, "content_index": 0, "text": text}),
                );
                self.emit(
                    "response.content_part.done",
                    json!({"item_id": id, "output_index": index, "content_index": 0, "part": part}),
                );
            }
            Kind::Message => {
                self.emit(
                    "response.output_text.done",
                    json!({"item_id": id, "output_index": index, "content_index": 0, "text": text, "logprobs": []}),
                );
                self.emit(
                    "response.content_part.done",
                    json!({"item_id": id, "output_index": index, "content_index": 0, "part": output_text(&text)}),
                );
            }
            Kind::Call { .. } => {
                self.emit(
                    "response.function_call_arguments.done",
                    json!({"item_id": id, "output_index": index, "name": name, "arguments": text}),
                );
            }
        }
        self.emit("response.output_item.done", json!({"output_index": index, "item": done}));
    }

    /// A delta of reasoning (`reasoning`) or of the message's text.
    fn text_delta(&mut self, delta: &str, reasoning: bool) {
        if delta.is_empty() {
            return;
        }
        self.start();
        let current = self.open_text.filter(|&i| matches!(self.items[i].kind, Kind::Reasoning) == reasoning);
        let index = match current {
            Some(i) => i,
            None => {
                if let Some(i) = self.open_text.take() {
                    self.close(i, "completed");
                }
                let i = self.open(if reasoning { Kind::Reasoning } else { Kind::Message });
                self.open_text = Some(i);
                i
            }
        };
        let item = &mut self.items[index];
        item.text.push_str(delta);
        let id = item.id.clone();
        if reasoning {
            self.emit(
                "response.reasoning_text.delta",
                json!({"item_id": id, "output_index": index, "content_index": 0, "delta": delta}),
            );
        } else {
            self.emit(
                "response.output_text.delta",
                json!({"item_id": id, "output_index": index, "content_index": 0, "delta": delta, "logprobs": []}),
            );
        }
    }

    /// A fragment of the node's tool call `index`.
    fn call_delta(&mut self, index: u64, id: Option<&str>, name: Option<&str>, arguments: Option<&str>) {
        self.start();
        let item = match self.calls.iter().find(|(i, _)| *i == index) {
            Some(&(_, item)) => {
                if let (Some(more), Kind::Call { name, .. }) = (name, &mut self.items[item].kind) {
                    name.push_str(more);
                }
                item
            }
            None => {
                if let Some(i) = self.open_text.take() {
                    self.close(i, "completed");
                }
                let call_id = match id.filter(|s| !s.is_empty()) {
                    Some(id) => id.to_owned(),
                    None => self.item_id("call"),
                };
                let item = self.open(Kind::Call { call_id, name: name.unwrap_or_default().to_owned() });
                self.calls.push((index, item));
                item
            }
        };
        if let Some(delta) = arguments.filter(|a| !a.is_empty()) {
            self.items[item].text.push_str(delta);
            let item_id = self.items[item].id.clone();
            self.emit(
                "response.function_call_arguments.delta",
                json!({"item_id": item_id, "output_index": item, "delta": delta}),
            );
        }
    }

    /// One piece of the node's answer: a streamed chunk, or a whole answer.
    pub fn apply(&mut self, chunk: &Value) {
        if self.ended {
            return;
        }
        if let Some(error) = chunk.get("error").filter(|e| !e.is_null()) {
            let message = error["message"].as_str().map_or_else(|| error.to_string(), str::to_owned);
            self.fail(&format!("the node failed: {message}"));
            return;
        }
        for choice in chunk["choices"].as_array().into_iter().flatten() {
            if choice["index"].as_u64().unwrap_or(0) != 0 {
                continue;
            }
            let delta = if choice["delta"].is_object() { &choice["delta"] } else { &choice["message"] };
            let reasoning = delta["reasoning_content"].as_str().or_else(|| delta["reasoning"].as_str());
            if let Some(r) = reasoning {
                self.text_delta(r, true);
            }
            for key in ["content", "refusal"] {
                if let Some(t) = delta[key].as_str() {
                    self.text_delta(t, false);
                }
            }
            for (position, call) in delta["tool_calls"].as_array().into_iter().flatten().enumerate() {
                let f = &call["function"];
                self.call_delta(
                    call["index"].as_u64().unwrap_or(position as u64),
                    call["id"].as_str(),
                    f["name"].as_str(),
                    f["arguments"].as_str(),
                );
            }
            if let Some(reason) = choice["finish_reason"].as_str() {
                self.finish_reason = Some(reason.to_owned());
            }
        }
        if chunk["usage"].is_object() {
            self.usage = Some(usage(&chunk["usage"]));
        }
    }

    /// A whole answer's body, once: applied as one piece.
    pub fn apply_body(&mut self) {
        if self.body_applied {
            return;
        }
        self.body_applied = true;
        match serde_json::from_slice::<Value>(&self.body) {
            Ok(answer) if answer["choices"].is_array() || answer.get("error").is_some() => {
                self.apply(&answer)
            }
            _ => self.fail("the node's answer was not a chat completion"),
        }
        self.body = Vec::new();
    }

    fn ending(&self) -> Ending {
        match self.finish_reason.as_deref() {
            Some("length") => Ending::Incomplete("max_output_tokens"),
            Some("content_filter") => Ending::Incomplete("content_filter"),
            _ => Ending::Completed,
        }
    }

    /// The answer broke off or failed: `response.failed` (once).
    pub fn fail(&mut self, message: &str) {
        if self.ended {
            return;
        }
        self.start();
        self.failure = Some(message.to_owned());
        self.ended = true;
        let response = self.object();
        self.emit("response.failed", json!({"response": response}));
    }

    /// The answer is complete: every open item's `.done` events, then `response.completed` (or
    /// `response.incomplete`), once.
    pub fn end(&mut self) {
        if self.ended {
            return;
        }
        self.start();
        let status = match self.ending() {
            Ending::Completed => "completed",
            Ending::Incomplete(_) => "incomplete",
        };
        for i in 0..self.items.len() {
            self.close(i, status);
        }
        self.ended = true;
        let response = self.object();
        let kind = if status == "completed" { "response.completed" } else { "response.incomplete" };
        self.emit(kind, json!({"response": response}));
    }

    /// Whether the answer failed.
    pub fn failed(&self) -> bool {
        self.failure.is_some()
    }

    /// The response object as the answer stands: failed, or complete with every item as it will be
    /// once closed.
    pub fn object(&self) -> Value {
        let usage = self.usage.clone().unwrap_or(Value::Null);
        if let Some(message) = &self.failure {
            let output = self.items.iter().map(|i| i.json(i.closed.unwrap_or("incomplete"))).collect();
            let error = json!({"code": "server_error", "message": message});
            return self.head.object("failed", output, usage, &[("error", error)]);
        }
        let (status, details) = match self.ending() {
            Ending::Completed => ("completed", Value::Null),
            Ending::Incomplete(reason) => ("incomplete", json!({"reason": reason})),
        };
        let output = self.items.iter().map(|i| i.json(i.closed.unwrap_or(status))).collect();
        let completed_at = self.completed_at.get().unwrap_or_else(crate::time::unix_secs);
        self.completed_at.set(Some(completed_at));
        let completed_at = json!(completed_at);
        self.head.object(
            status,
            output,
            usage,
            &[("incomplete_details", details), ("completed_at", completed_at)],
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head() -> Rc<ResponseHead> {
        let mut echo = Map::new();
        echo.insert("model".into(), json!("m"));
        Rc::new(ResponseHead { id: "resp_abc".into(), created_at: 7, echo })
    }

    /// The events in `sse`, parsed, each checked to say its type in its `event:` line too.
    fn events(sse: &[u8]) -> Vec<Value> {
        let text = std::str::from_utf8(sse).unwrap();
        text.split("\n\n")
            .filter(|e| !e.is_empty())
            .map(|e| {
                let (name, data) = e.split_once('\n').unwrap();
                let v: Value = serde_json::from_str(data.strip_prefix("data: ").unwrap()).unwrap();
                assert_eq!(name.strip_prefix("event: "), v["type"].as_str());
                v
            })
            .collect()
    }

    fn chunk(delta: Value) -> Value {
        json!({"choices": [{"index": 0, "delta": delta, "finish_reason": null}]})
    }

    #[test]
    fn reasoning_then_text_streams_as_items_with_numbered_events() {
        let mut o = Output::new(head(), true);
        let mut out = Vec::new();
        o.apply(&chunk(json!({"role": "assistant", "reasoning_content": "hm"})));
        o.take_events(&mut out);
        let first = events(&out);
        assert_eq!(
            first.iter().map(|e| e["type"].as_str().unwrap()).collect::<Vec<_>>(),
            [
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.content_part.added",
                "response.reasoning_text.delta"
            ],
            "each piece is written as it comes"
        );
        o.apply(&chunk(json!({"content": "Hel"})));
        o.apply(&chunk(json!({"content": "lo"})));
        o.apply(&json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}));
        o.apply(
            &json!({"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8,
            "completion_tokens_details": {"reasoning_tokens": 1}}}),
        );
        o.end();
        o.end();
        o.take_events(&mut out);
        let all = events(&out);
        for (i, e) in all.iter().enumerate() {
            assert_eq!(e["sequence_number"], i as u64);
        }
        let types: Vec<&str> = all.iter().map(|e| e["type"].as_str().unwrap()).collect();
        assert_eq!(
            &types[5..],
            [
                "response.reasoning_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.output_item.added",
                "response.content_part.added",
                "response.output_text.delta",
                "response.output_text.delta",
                "response.output_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.completed"
            ]
        );
        let done = all.last().unwrap();
        let r = &done["response"];
        assert_eq!(
            (r["id"].as_str(), r["status"].as_str(), r["model"].as_str()),
            (Some("resp_abc"), Some("completed"), Some("m"))
        );
        assert_eq!(r["output"][0]["content"][0]["text"], "hm");
        assert_eq!(r["output"][1]["content"][0]["text"], "Hello");
        assert_eq!(r["output"][1]["id"], "msg_abc_1");
        assert_eq!(
            r["usage"],
            json!({"input_tokens": 5, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": 3,
                   "output_tokens_details": {"reasoning_tokens": 1}, "total_tokens": 8})
        );
        assert_eq!(all[12]["text"], "Hello");
        assert_eq!(r, &o.object(), "the stored object is the one the client got");
    }

    #[test]
    fn tool_calls_stream_their_arguments_and_end_with_them_whole() {
        let mut o = Output::new(head(), true);
        o.apply(&chunk(json!({"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
            "function": {"name": "exec_command", "arguments": ""}}]})));
        o.apply(&chunk(json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"cmd\":"}}]})));
        o.apply(&chunk(json!({"tool_calls": [{"index": 0, "function": {"arguments": "\"ls\"}"}}]})));
        o.apply(&chunk(json!({"tool_calls": [{"index": 1, "function": {"name": "f", "arguments": "{}"}}]})));
        o.apply(&json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}));
        o.end();
        let mut out = Vec::new();
        o.take_events(&mut out);
        let all = events(&out);
        let deltas: Vec<&str> = all
            .iter()
            .filter(|e| e["type"] == "response.function_call_arguments.delta" && e["output_index"] == 0)
            .map(|e| e["delta"].as_str().unwrap())
            .collect();
        assert_eq!(deltas, ["{\"cmd\":", "\"ls\"}"]);
        let added = &all[2];
        assert_eq!(added["item"]["call_id"], "call_1");
        assert_eq!(added["item"]["arguments"], "");
        let r = &all.last().unwrap()["response"];
        assert_eq!(r["status"], "completed");
        assert_eq!(r["output"][0]["arguments"], "{\"cmd\":\"ls\"}");
        assert_eq!(r["output"][1]["name"], "f");
        assert_eq!(r["output"][1]["call_id"], "call_abc_1", "a call without an id gets one");
        let done: Vec<&Value> = all.iter().filter(|e| e["type"] == "response.output_item.done").collect();
        assert_eq!(done.len(), 2, "every item is closed before the response completes");
    }

    #[test]
    fn a_whole_answer_makes_the_same_items_without_events() {
        let mut o = Output::new(head(), false);
        o.body = serde_json::to_vec(&json!({"choices": [{"index": 0, "finish_reason": "length",
            "message": {"role": "assistant", "content": "cut sh", "reasoning_content": "think",
            "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}}],
            "usage": {"prompt_tokens": 2, "completion_tokens": 9}}))
        .unwrap();
        o.apply_body();
        o.apply_body();
        o.end();
        let mut out = Vec::new();
        o.take_events(&mut out);
        assert!(out.is_empty());
        let r = o.object();
        assert_eq!(
            (r["status"].as_str(), r["incomplete_details"]["reason"].as_str()),
            (Some("incomplete"), Some("max_output_tokens"))
        );
        let types: Vec<&str> =
            r["output"].as_array().unwrap().iter().map(|i| i["type"].as_str().unwrap()).collect();
        assert_eq!(types, ["reasoning", "message", "function_call"]);
        assert_eq!(r["output"][1]["status"], "completed", "closed when the call started");
        assert_eq!(r["output"][2]["status"], "incomplete");
        assert_eq!(r["usage"]["total_tokens"], 11);
    }

    #[test]
    fn a_broken_answer_fails_once() {
        let mut o = Output::new(head(), true);
        o.apply(&chunk(json!({"content": "par"})));
        o.fail("the node closed the connection mid-answer");
        o.end();
        let mut out = Vec::new();
        o.take_events(&mut out);
        let all = events(&out);
        let last = all.last().unwrap();
        assert_eq!(last["type"], "response.failed");
        assert_eq!(last["response"]["error"]["code"], "server_error");
        assert_eq!(last["response"]["output"][0]["content"][0]["text"], "par");
        assert!(o.failed());
        let mut bad = Output::new(head(), false);
        bad.body = b"<html>".to_vec();
        bad.apply_body();
        assert_eq!(bad.object()["status"], "failed");
        let mut err = Output::new(head(), true);
        err.apply(&json!({"error": {"message": "overloaded"}}));
        assert!(err.object()["error"]["message"].as_str().unwrap().contains("overloaded"));
    }
}
