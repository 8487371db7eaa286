//! Prompt estimates, for the rare request whose node gave no usage (it failed, or the client left and
//! the node's answer was cut off before its usage arrived).
//!
//! # Design
//! Only the prompt's *text* counts: message contents (strings and text parts), tool call arguments,
//! completion prompts and embedding inputs. Whatever else a body carries (base64 images, documents,
//! tool schemas, sampling parameters) is never counted as prompt text, so a request with a 5 MB image is
//! not billed as 1.3 M tokens. With a model's `tokenizer.json` configured the text is counted exactly by
//! [`Tokenizers`], on a thread of its own (tokenizing a 200 KiB prompt takes milliseconds, which a core
//! must not spend); without one it is a quarter of the text's bytes, plus a few tokens per message for
//! the chat template.
//!
//! Counting a prompt for a client (Anthropic's `count_tokens`) is the other use, and errs the other way:
//! the tool definitions count too (the chat template renders them into the prompt), and without a
//! tokenizer the estimate is a third of the bytes ([`PromptText::estimate_high`]), since a client that
//! compacts its context by this number (Claude Code) must not be told it has more room than it has.

use serde_json::Value;
use std::collections::HashMap;
use std::io;
use std::path::Path;
use std::sync::Arc;

/// Tokens a chat template adds around each message, when estimating.
pub const TEMPLATE_TOKENS_PER_MESSAGE: u64 = 4;

/// The text of a request's prompt, as the estimate sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PromptText {
    /// Every piece of prompt text, concatenated.
    pub text: String,
    /// Prompts given as token ids: counted exactly.
    pub token_ids: u64,
    /// Chat messages (each adds template tokens).
    pub messages: u64,
}

impl PromptText {
    /// The prompt of a chat (`messages`), completions (`prompt`) or embeddings (`input`) body. A body
    /// that is not JSON has no text.
    pub fn of_body(body: &[u8]) -> Self {
        Self::of(body, false)
    }

    /// The prompt of a chat body as the node's chat template lays it out, for counting: the `tools` it
    /// defines (names, descriptions and parameter schemas, as JSON text) and [`PromptText::of_body`]'s
    /// text, each tool and each message on lines of its own (so that words of two messages are never
    /// counted as one).
    pub fn of_body_and_tools(body: &[u8]) -> Self {
        Self::of(body, true)
    }

    fn of(body: &[u8], for_count: bool) -> Self {
        let mut out = Self::default();
        let Ok(Value::Object(obj)) = serde_json::from_slice::<Value>(body) else { return out };
        if for_count && let Some(Value::Array(tools)) = obj.get("tools") {
            for t in tools {
                if let Some(f) = t.get("function") {
                    out.text.push_str(&f.to_string());
                    out.text.push('\n');
                }
            }
        }
        if let Some(Value::Array(messages)) = obj.get("messages") {
            for m in messages {
                out.messages += 1;
                if let Some(c) = m.get("content") {
                    out.add_content(c);
                }
                if let Some(Value::Array(calls)) = m.get("tool_calls") {
                    for call in calls {
                        if let Some(Value::String(args)) = call.pointer("/function/arguments") {
                            out.text.push_str(args);
                        }
                        if let Some(Value::String(name)) = call.pointer("/function/name") {
                            out.text.push_str(name);
                        }
                    }
                }
                if for_count {
                    out.text.push('\n');
                }
            }
        }
        for field in ["prompt", "input"] {
            if let Some(v) = obj.get(field) {
                out.add_prompt(v);
            }
        }
        out
    }

    /// A message's `content`: a string, or parts of which only text parts count.
    fn add_content(&mut self, content: &Value) {
        match content {
            Value::String(s) => self.text.push_str(s),
            Value::Array(parts) => {
                for p in parts {
                    let is_text =
                        matches!(p.get("type").and_then(Value::as_str), None | Some("text" | "input_text"));
                    if is_text && let Some(Value::String(t)) = p.get("text") {
                        self.text.push_str(t);
                    }
                }
            }
            _ => {}
        }
    }

    /// A completion prompt or embedding input: a string, token ids, or a list of either.
    fn add_prompt(&mut self, v: &Value) {
        match v {
            Value::String(s) => self.text.push_str(s),
            Value::Number(_) => self.token_ids += 1,
            Value::Array(items) => {
                for item in items {
                    self.add_prompt(item);
                }
            }
            _ => {}
        }
    }

    /// The estimate without a tokenizer: a quarter of the text's bytes, token ids exactly, and the
    /// template's tokens per message.
    pub fn estimate(&self) -> u64 {
        (self.text.len() as u64).div_ceil(4) + self.token_ids + self.messages * TEMPLATE_TOKENS_PER_MESSAGE
    }

    /// The estimate that errs high, for a client that plans by it: a third of the text's bytes (English
    /// runs about four bytes a token, code and JSON three or more, CJK text about three), token ids
    /// exactly, the template's tokens per message, and never 0.
    pub fn estimate_high(&self) -> u64 {
        ((self.text.len() as u64).div_ceil(3) + self.token_ids + self.messages * TEMPLATE_TOKENS_PER_MESSAGE)
            .max(1)
    }

    /// The count with `tokenizer`: the text exactly, token ids exactly, the template's tokens per message.
    pub fn count_with(&self, tokenizer: &tokenizers::Tokenizer) -> Option<u64> {
        let encoding = tokenizer.encode(self.text.as_str(), false).ok()?;
        Some(encoding.len() as u64 + self.token_ids + self.messages * TEMPLATE_TOKENS_PER_MESSAGE)
    }
}

type Job = Box<dyn FnOnce() + Send>;

/// The tokenizers of the models that have one, and the thread that runs them.
pub struct Tokenizers {
    by_model: HashMap<String, Arc<tokenizers::Tokenizer>>,
    tx: Option<crossbeam_channel::Sender<Job>>,
}

impl std::fmt::Debug for Tokenizers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizers").field("models", &self.by_model.keys().collect::<Vec<_>>()).finish()
    }
}

/// Counting jobs waiting for the tokenizer thread; past this a count falls back to the estimate.
const QUEUE: usize = 1024;

impl Tokenizers {
    /// No tokenizer at all: every count is an estimate.
    pub fn none() -> Self {
        Self { by_model: HashMap::new(), tx: None }
    }

    /// Loads each `(model, tokenizer.json)` and starts the counting thread (when there is any). Runs at
    /// start, before the cores.
    pub fn load<'a>(models: impl IntoIterator<Item = (&'a str, &'a Path)>) -> io::Result<Self> {
        let mut by_model = HashMap::new();
        for (model, path) in models {
            let t = tokenizers::Tokenizer::from_file(path).map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("the tokenizer of model {model} ({}): {e}", path.display()),
                )
            })?;
            by_model.insert(model.to_owned(), Arc::new(t));
        }
        if by_model.is_empty() {
            return Ok(Self::none());
        }
        let (tx, rx) = crossbeam_channel::bounded::<Job>(QUEUE);
        std::thread::Builder::new().name("tokenizer".into()).spawn(move || {
            crate::rt::make_background_thread();
            for job in rx {
                job();
            }
        })?;
        Ok(Self { by_model, tx: Some(tx) })
    }

    /// Whether `model` has a tokenizer.
    pub fn has(&self, model: &str) -> bool {
        self.by_model.contains_key(model)
    }

    /// The prompt's tokens for `model`: counted by its tokenizer (off the core) when it has one and the
    /// tokenizer thread keeps up, else estimated. The flag says whether the count is exact.
    pub async fn count(&self, model: &str, prompt: PromptText) -> (u64, bool) {
        let fallback = prompt.estimate();
        match self.count_exact(model, prompt).await {
            Some(n) => (n, true),
            None => (fallback, false),
        }
    }

    /// The prompt's exact tokens for `model`, counted by its tokenizer off the core; `None` when it has
    /// none or the tokenizer thread does not keep up.
    pub async fn count_exact(&self, model: &str, prompt: PromptText) -> Option<u64> {
        let (Some(tokenizer), Some(tx)) = (self.by_model.get(model), &self.tx) else { return None };
        let tokenizer = Arc::clone(tokenizer);
        let (done, answer) = futures_channel::oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = done.send(prompt.count_with(&tokenizer));
        });
        tx.try_send(job).ok()?;
        answer.await.ok().flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_text_counts() {
        let image = format!("data:image/png;base64,{}", "A".repeat(400_000));
        let body = serde_json::json!({
            "model": "m",
            "messages": [
                {"role": "system", "content": "12345678"},
                {"role": "user", "content": [
                    {"type": "text", "text": "abcd"},
                    {"type": "image_url", "image_url": {"url": image}},
                ]},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{\"a\":1}"}}
                ]},
            ],
        });
        let p = PromptText::of_body(body.to_string().as_bytes());
        assert_eq!(p.text, "12345678abcd{\"a\":1}f");
        assert_eq!(p.messages, 3);
        assert_eq!(p.estimate(), 20_u64.div_ceil(4) + 3 * TEMPLATE_TOKENS_PER_MESSAGE);
        assert!(p.estimate() < 50, "the image is never prompt text");
    }

    #[test]
    fn a_count_for_the_client_adds_the_tools_and_errs_high() {
        let body = serde_json::json!({
            "model": "m",
            "messages": [{"role": "user", "content": "abcdef"}],
            "tools": [{"type": "function", "function": {"name": "Bash", "parameters": {"type": "object"}}}],
        });
        let bytes = body.to_string().into_bytes();
        let billed = PromptText::of_body(&bytes);
        let counted = PromptText::of_body_and_tools(&bytes);
        assert_eq!(billed.text, "abcdef", "tool schemas are never billed as prompt text");
        assert!(
            counted.text.starts_with('{')
                && counted.text.contains("Bash")
                && counted.text.ends_with("}\nabcdef\n")
        );
        assert!(counted.estimate_high() > counted.estimate());
        assert_eq!(PromptText::default().estimate_high(), 1, "never 0");
    }

    #[test]
    fn prompts_and_inputs() {
        let p = PromptText::of_body(br#"{"model":"m","prompt":["abcd","efgh"]}"#);
        assert_eq!((p.text.as_str(), p.estimate()), ("abcdefgh", 2));
        let p = PromptText::of_body(br#"{"model":"m","prompt":[[1,2,3],[4]]}"#);
        assert_eq!(p.estimate(), 4, "token ids count exactly");
        let p = PromptText::of_body(br#"{"model":"m","input":"abcdefgh"}"#);
        assert_eq!(p.estimate(), 2);
        assert_eq!(PromptText::of_body(b"not json").estimate(), 0);
    }

    #[test]
    fn a_tokenizer_counts_exactly() {
        // A word-level tokenizer: one token per whitespace-separated word.
        let json = r#"{"version":"1.0","truncation":null,"padding":null,"added_tokens":[],"normalizer":null,
            "pre_tokenizer":{"type":"Whitespace"},"post_processor":null,"decoder":null,
            "model":{"type":"WordLevel","vocab":{"[UNK]":0,"hello":1,"gonka":2},"unk_token":"[UNK]"}}"#;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokenizer.json");
        #[expect(clippy::disallowed_methods, reason = "a test writes its fixture")]
        std::fs::write(&path, json).unwrap();
        let t = Tokenizers::load([("m", path.as_path())]).unwrap();
        assert!(t.has("m") && !t.has("other"));
        let prompt =
            PromptText::of_body(br#"{"messages":[{"role":"user","content":"hello gonka hello x"}]}"#);
        let mut rt = monoio::RuntimeBuilder::<monoio::FusionDriver>::new().build().unwrap();
        let (n, exact) = rt.block_on(t.count("m", prompt.clone()));
        assert_eq!((n, exact), (4 + TEMPLATE_TOKENS_PER_MESSAGE, true));
        let (n, exact) = rt.block_on(t.count("other", prompt.clone()));
        assert_eq!((n, exact), (prompt.estimate(), false));
        assert!(Tokenizers::load([("m", dir.path().join("missing.json").as_path())]).is_err());
    }
}
