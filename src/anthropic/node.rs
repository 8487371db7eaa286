//! What the translators read of a node's chat-completions answer: a streamed chunk or a whole
//! completion. Fields the translation does not use are skipped by the parser; strings of a chunk borrow
//! from the event where they can (no copy unless they hold escapes).

use crate::model::Usage;
use serde::Deserialize;
use serde_json::Value;
use std::borrow::Cow;

/// The node's `usage`.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
pub struct NodeUsage {
    #[serde(default)]
    pub prompt_tokens: u64,
    #[serde(default)]
    pub completion_tokens: u64,
}

impl From<NodeUsage> for Usage {
    fn from(u: NodeUsage) -> Self {
        Usage { prompt_tokens: u.prompt_tokens, completion_tokens: u.completion_tokens }
    }
}

/// One event of a chat-completions stream.
#[derive(Debug, Deserialize)]
pub struct Chunk<'a> {
    #[serde(borrow, default)]
    pub choices: Option<Vec<ChunkChoice<'a>>>,
    #[serde(default)]
    pub usage: Option<NodeUsage>,
    /// An error the node reports in the stream instead of a chunk.
    #[serde(default)]
    pub error: Option<Value>,
}

#[derive(Debug, Deserialize)]
pub struct ChunkChoice<'a> {
    #[serde(default)]
    pub index: u32,
    #[serde(borrow, default)]
    pub delta: Option<Delta<'a>>,
    #[serde(borrow, default)]
    pub finish_reason: Option<Cow<'a, str>>,
    /// vLLM's: the stop string that ended the choice (a token id when a stop token did).
    #[serde(default)]
    pub stop_reason: Option<Value>,
}

#[derive(Debug, Deserialize)]
pub struct Delta<'a> {
    #[serde(borrow, default)]
    pub content: Option<Cow<'a, str>>,
    /// Reasoning, as vLLM's reasoning parsers (and DeepSeek's API) name it.
    #[serde(borrow, default)]
    pub reasoning_content: Option<Cow<'a, str>>,
    /// Reasoning, as newer vLLM and some brokers name it.
    #[serde(borrow, default)]
    pub reasoning: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub tool_calls: Option<Vec<ToolCallDelta<'a>>>,
}

impl<'a> Delta<'a> {
    pub fn reasoning(&self) -> Option<&str> {
        self.reasoning_content.as_deref().or(self.reasoning.as_deref())
    }
}

#[derive(Debug, Deserialize)]
pub struct ToolCallDelta<'a> {
    #[serde(default)]
    pub index: Option<u32>,
    #[serde(borrow, default)]
    pub id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub function: Option<FunctionDelta<'a>>,
}

#[derive(Debug, Deserialize)]
pub struct FunctionDelta<'a> {
    #[serde(borrow, default)]
    pub name: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub arguments: Option<Cow<'a, str>>,
}

/// A whole (non-streamed) chat completion.
#[derive(Debug, Deserialize)]
pub struct Completion {
    #[serde(default)]
    pub choices: Vec<CompletionChoice>,
    #[serde(default)]
    pub usage: Option<NodeUsage>,
}

#[derive(Debug, Deserialize)]
pub struct CompletionChoice {
    #[serde(default)]
    pub message: Option<NodeMessage>,
    #[serde(default)]
    pub finish_reason: Option<String>,
    #[serde(default)]
    pub stop_reason: Option<Value>,
}

#[derive(Debug, Deserialize)]
pub struct NodeMessage {
    #[serde(default)]
    pub content: Option<String>,
    #[serde(default)]
    pub reasoning_content: Option<String>,
    #[serde(default)]
    pub reasoning: Option<String>,
    #[serde(default)]
    pub tool_calls: Option<Vec<NodeToolCall>>,
}

#[derive(Debug, Deserialize)]
pub struct NodeToolCall {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub function: Option<NodeFunction>,
}

#[derive(Debug, Deserialize)]
pub struct NodeFunction {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub arguments: Option<String>,
}

/// The stop string a choice ended on, as vLLM reports it next to `finish_reason: "stop"`.
pub fn stop_string(stop_reason: Option<&Value>) -> Option<&str> {
    stop_reason.and_then(Value::as_str)
}
