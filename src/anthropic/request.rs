//! A Messages request made into the chat-completions body a node takes.
//!
//! # What maps to what
//! - `system` (a string or text blocks) and every `role: "system"` entry of `messages` (a string or text
//!   blocks, as Claude Code sends its environment after the first user turn) become the one leading
//!   system message, in that order, joined by blank lines. A system block starting
//!   `x-anthropic-billing-header:` (Claude Code's, different for every conversation) is left out: it
//!   would only defeat the node's prefix cache.
//! - User text blocks become the user message (a string for one block, text parts for several);
//!   `tool_result` blocks become `tool` messages (`tool_call_id` kept, placed before the user's other
//!   blocks as chat completions want them right after the call), their content a string or text blocks
//!   (`tool_reference` blocks as a line naming the tool), with `Error: ` before it when `is_error`.
//! - Assistant text becomes its content, `tool_use` blocks its `tool_calls` (`id` kept, `input` as the
//!   JSON `arguments`), `thinking` blocks its `reasoning_content`; `redacted_thinking` is dropped.
//! - `tools` (`input_schema` → `parameters`, without its `$schema`), `tool_choice` (`auto`, `any` →
//!   `required`, `tool` → the named function, `none`; `disable_parallel_tool_use` →
//!   `parallel_tool_calls: false`), `max_tokens`, `temperature`, `top_p`, `top_k`, `stop_sequences` →
//!   `stop`, `metadata.user_id` → `user`, `thinking` `enabled` / `disabled` →
//!   `chat_template_kwargs.enable_thinking` true / false (how vLLM's chat templates switch reasoning;
//!   `adaptive` leaves the model's default), `stream` (with `stream_options.include_usage`, so the node
//!   reports what it used).
//! - Everything else is accepted and dropped: `cache_control` anywhere, `context_management`,
//!   `output_config`, `container`, `service_tier`, `safeguards`, `thinking.display`, `defer_loading` and
//!   whatever a newer client adds. A client is never refused for a field it may send.
//!
//! # Errors
//! A 400 that names the field or block: `model`, `messages` or `max_tokens` missing or malformed, a role
//! other than user, assistant or system, and blocks a text model cannot take (images, documents, tools
//! Anthropic's own servers run): the Gonka network serves text only.

use crate::error::ApiError;
use serde_json::{Map, Value, json};

/// What a request is translated for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// `POST /v1/messages`: `max_tokens` is required.
    Message,
    /// `POST /v1/messages/count_tokens`: the prompt only.
    Count,
}

/// A Messages request as the node gets it.
#[derive(Debug)]
pub struct ChatRequest {
    /// The chat-completions body.
    pub body: Vec<u8>,
    /// The model as the client named it.
    pub model: String,
    pub stream: bool,
}

/// System blocks Claude Code adds, different in every conversation, that the model has no use for.
const BILLING_HEADER: &str = "x-anthropic-billing-header:";

fn bad(param: &str, message: String) -> ApiError {
    ApiError::bad_request(message, Some(param))
}

fn missing(field: &str) -> ApiError {
    bad(field, format!("`{field}`: field required."))
}

/// A block of a kind a text model cannot take.
fn unsupported(path: &str, kind: &str) -> ApiError {
    let param = path.split('.').next().unwrap_or(path);
    match kind {
        "image" | "document" => bad(
            param,
            format!("`{path}`: {kind} blocks are not supported: the Gonka network serves text models only."),
        ),
        _ => bad(param, format!("`{path}`: `{kind}` blocks are not supported here.")),
    }
}

fn block_type<'a>(block: &'a Value, path: &str) -> Result<&'a str, ApiError> {
    block
        .get("type")
        .and_then(Value::as_str)
        .ok_or_else(|| bad(path.split('.').next().unwrap_or(path), format!("`{path}.type`: field required.")))
}

fn block_text(block: &Value, path: &str) -> Result<String, ApiError> {
    match block.get("text") {
        Some(Value::String(t)) => Ok(t.clone()),
        _ => Err(bad(path.split('.').next().unwrap_or(path), format!("`{path}.text` must be a string."))),
    }
}

/// The text of system content (a string or text blocks) at `path`, appended to `system`; `strip` leaves
/// out Claude Code's billing header blocks.
fn system_text(content: &Value, path: &str, strip: bool, system: &mut Vec<String>) -> Result<(), ApiError> {
    match content {
        Value::String(s) => system.push(s.clone()),
        Value::Array(blocks) => {
            for (j, b) in blocks.iter().enumerate() {
                let p = format!("{path}.{j}");
                match block_type(b, &p)? {
                    "text" => {
                        let t = block_text(b, &p)?;
                        if !(strip && t.starts_with(BILLING_HEADER)) {
                            system.push(t);
                        }
                    }
                    other => return Err(unsupported(&p, other)),
                }
            }
        }
        Value::Null => {}
        _ => {
            let param = path.split('.').next().unwrap_or(path);
            return Err(bad(param, format!("`{path}` must be a string or a list of text blocks.")));
        }
    }
    Ok(())
}

/// A message's content from text parts: a string for one part (or none), text parts for several.
fn text_content(mut parts: Vec<String>) -> Value {
    if parts.len() <= 1 {
        return Value::String(parts.pop().unwrap_or_default());
    }
    Value::Array(parts.into_iter().map(|t| json!({"type": "text", "text": t})).collect())
}

/// A `tool_result` block as a `tool` message.
fn tool_message(block: &Value, path: &str) -> Result<Value, ApiError> {
    let id = match block.get("tool_use_id") {
        Some(Value::String(id)) => id.clone(),
        _ => return Err(bad("messages", format!("`{path}.tool_use_id` must be a string."))),
    };
    let mut text = match block.get("content") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(blocks)) => {
            let mut pieces = Vec::with_capacity(blocks.len());
            for (k, b) in blocks.iter().enumerate() {
                let p = format!("{path}.content.{k}");
                match block_type(b, &p)? {
                    "text" => pieces.push(block_text(b, &p)?),
                    // Claude Code's answer to its ToolSearch tool: the named tool is now defined.
                    "tool_reference" => {
                        let name = b.get("tool_name").and_then(Value::as_str).unwrap_or_default();
                        pieces.push(format!("Tool {name} is now available."));
                    }
                    other => return Err(unsupported(&p, other)),
                }
            }
            pieces.join("\n")
        }
        Some(_) => {
            return Err(bad("messages", format!("`{path}.content` must be a string or a list of blocks.")));
        }
    };
    if block.get("is_error").and_then(Value::as_bool) == Some(true) {
        text.insert_str(0, "Error: ");
    }
    Ok(json!({"role": "tool", "tool_call_id": id, "content": text}))
}

/// The blocks of a message's `content` at `path`; `None` when it is a string, which is then the whole
/// message of `role`, pushed to `chat`.
fn blocks<'a>(
    content: &'a Value,
    role: &str,
    path: &str,
    chat: &mut Vec<Value>,
) -> Result<Option<&'a Vec<Value>>, ApiError> {
    match content {
        Value::String(s) => {
            chat.push(json!({"role": role, "content": s}));
            Ok(None)
        }
        Value::Array(blocks) => Ok(Some(blocks)),
        _ => Err(bad("messages", format!("`{path}` must be a string or a list of blocks."))),
    }
}

/// A user message: its tool results first, then the rest as one user message.
fn user(content: &Value, path: &str, chat: &mut Vec<Value>) -> Result<(), ApiError> {
    let Some(blocks) = blocks(content, "user", path, chat)? else { return Ok(()) };
    let mut parts = Vec::new();
    for (j, b) in blocks.iter().enumerate() {
        let p = format!("{path}.{j}");
        match block_type(b, &p)? {
            "text" => parts.push(block_text(b, &p)?),
            "tool_result" => chat.push(tool_message(b, &p)?),
            other => return Err(unsupported(&p, other)),
        }
    }
    if !parts.is_empty() || blocks.is_empty() {
        chat.push(json!({"role": "user", "content": text_content(parts)}));
    }
    Ok(())
}

/// An assistant message: its text, tool calls and reasoning.
fn assistant(content: &Value, path: &str, chat: &mut Vec<Value>) -> Result<(), ApiError> {
    let Some(blocks) = blocks(content, "assistant", path, chat)? else { return Ok(()) };
    let mut text = String::new();
    let mut reasoning = String::new();
    let mut calls = Vec::new();
    for (j, b) in blocks.iter().enumerate() {
        let p = format!("{path}.{j}");
        match block_type(b, &p)? {
            "text" => text.push_str(&block_text(b, &p)?),
            "tool_use" => {
                let (Some(Value::String(id)), Some(Value::String(name))) = (b.get("id"), b.get("name"))
                else {
                    return Err(bad("messages", format!("`{p}` needs a string `id` and `name`.")));
                };
                let input = b.get("input").unwrap_or(&Value::Null);
                let arguments = if input.is_null() { "{}".to_owned() } else { input.to_string() };
                calls.push(json!({"id": id, "type": "function",
                    "function": {"name": name, "arguments": arguments}}));
            }
            "thinking" => {
                if let Some(t) = b.get("thinking").and_then(Value::as_str) {
                    reasoning.push_str(t);
                }
            }
            "redacted_thinking" => {}
            other => return Err(unsupported(&p, other)),
        }
    }
    let mut m = Map::new();
    m.insert("role".into(), "assistant".into());
    m.insert("content".into(), Value::String(text));
    if !calls.is_empty() {
        m.insert("tool_calls".into(), Value::Array(calls));
    }
    if !reasoning.is_empty() {
        m.insert("reasoning_content".into(), Value::String(reasoning));
    }
    chat.push(Value::Object(m));
    Ok(())
}

/// `tools` as chat-completions functions.
fn tools(tools: Value) -> Result<Vec<Value>, ApiError> {
    let Value::Array(tools) = tools else {
        return Err(bad("tools", "`tools` must be a list.".to_owned()));
    };
    let mut out = Vec::with_capacity(tools.len());
    for (k, t) in tools.into_iter().enumerate() {
        let Value::Object(mut t) = t else {
            return Err(bad("tools", format!("`tools.{k}` must be an object.")));
        };
        if let Some(kind) = t.get("type").and_then(Value::as_str)
            && kind != "custom"
        {
            return Err(bad(
                "tools",
                format!(
                    "`tools.{k}`: `{kind}` is a tool Anthropic's own servers run; models on the Gonka network \
                     call tools defined by `name`, `description` and `input_schema`."
                ),
            ));
        }
        let name = match t.remove("name") {
            Some(Value::String(n)) if !n.is_empty() => n,
            _ => return Err(bad("tools", format!("`tools.{k}.name` must be a non-empty string."))),
        };
        let mut parameters = match t.remove("input_schema") {
            Some(Value::Object(s)) => s,
            None | Some(Value::Null) => Map::new(),
            Some(_) => return Err(bad("tools", format!("`tools.{k}.input_schema` must be an object."))),
        };
        parameters.remove("$schema");
        parameters.entry("type").or_insert_with(|| "object".into());
        let mut function = Map::new();
        function.insert("name".into(), Value::String(name));
        if let Some(Value::String(d)) = t.remove("description") {
            function.insert("description".into(), Value::String(d));
        }
        function.insert("parameters".into(), Value::Object(parameters));
        out.push(json!({"type": "function", "function": function}));
    }
    Ok(out)
}

/// `tool_choice` into `out` (only when there are tools to choose from).
fn tool_choice(choice: &Value, out: &mut Map<String, Value>) -> Result<(), ApiError> {
    let kind = choice
        .get("type")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("tool_choice", "`tool_choice` must be an object with a `type`.".to_owned()))?;
    let mapped = match kind {
        "auto" => json!("auto"),
        "any" => json!("required"),
        "none" => json!("none"),
        "tool" => match choice.get("name") {
            Some(Value::String(name)) => json!({"type": "function", "function": {"name": name}}),
            _ => return Err(bad("tool_choice", "`tool_choice.name` must name a tool.".to_owned())),
        },
        other => {
            return Err(bad(
                "tool_choice",
                format!("`tool_choice.type` must be auto, any, tool or none, not {other:?}."),
            ));
        }
    };
    out.insert("tool_choice".into(), mapped);
    if choice.get("disable_parallel_tool_use").and_then(Value::as_bool) == Some(true) {
        out.insert("parallel_tool_calls".into(), Value::Bool(false));
    }
    Ok(())
}

/// Translates a Messages request body (see the module docs).
pub fn to_chat(body: &[u8], purpose: Purpose) -> Result<ChatRequest, ApiError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("The request body is not valid JSON: {e}"), None))?;
    let Value::Object(mut req) = value else {
        return Err(ApiError::bad_request("The request body must be a JSON object.", None));
    };
    let model = match req.remove("model") {
        Some(Value::String(m)) if !m.is_empty() => m,
        None => return Err(missing("model")),
        Some(_) => return Err(bad("model", "`model` must be a non-empty string.".to_owned())),
    };
    let stream = match req.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b && purpose == Purpose::Message,
        Some(_) => return Err(bad("stream", "`stream` must be a boolean.".to_owned())),
    };
    let mut system = Vec::new();
    if let Some(s) = req.get("system") {
        system_text(s, "system", true, &mut system)?;
    }
    let messages = match req.get("messages") {
        Some(Value::Array(m)) if !m.is_empty() => m,
        None => return Err(missing("messages")),
        Some(_) => return Err(bad("messages", "`messages` must be a non-empty list.".to_owned())),
    };
    let mut chat = Vec::with_capacity(messages.len() + 1);
    for (i, m) in messages.iter().enumerate() {
        let path = format!("messages.{i}");
        let role = m.get("role").and_then(Value::as_str).ok_or_else(|| missing(&format!("{path}.role")))?;
        let content = m.get("content").ok_or_else(|| missing(&format!("{path}.content")))?;
        let path = format!("{path}.content");
        match role {
            "system" => system_text(content, &path, false, &mut system)?,
            "user" => user(content, &path, &mut chat)?,
            "assistant" => assistant(content, &path, &mut chat)?,
            other => {
                return Err(bad(
                    "messages",
                    format!(
                        "`messages.{i}.role` must be \"user\", \"assistant\" or \"system\", not {other:?}."
                    ),
                ));
            }
        }
    }
    if !system.is_empty() {
        chat.insert(0, json!({"role": "system", "content": system.join("\n\n")}));
    }

    let mut out = Map::new();
    out.insert("model".into(), Value::String(model.clone()));
    out.insert("messages".into(), Value::Array(chat));
    if purpose == Purpose::Message {
        match req.get("max_tokens") {
            Some(v) if v.as_u64().is_some_and(|n| n >= 1) => {
                out.insert("max_tokens".into(), v.clone());
            }
            None | Some(Value::Null) => {
                return Err(bad(
                    "max_tokens",
                    "`max_tokens`: field required (the Messages API bounds every answer).".to_owned(),
                ));
            }
            Some(_) => return Err(bad("max_tokens", "`max_tokens` must be a positive integer.".to_owned())),
        }
    }
    if stream {
        out.insert("stream".into(), Value::Bool(true));
        out.insert("stream_options".into(), json!({"include_usage": true}));
    }
    for (from, to) in [("temperature", "temperature"), ("top_p", "top_p"), ("top_k", "top_k")] {
        match req.get(from) {
            None | Some(Value::Null) => {}
            Some(v) if v.is_number() => {
                out.insert(to.into(), v.clone());
            }
            Some(_) => return Err(bad(from, format!("`{from}` must be a number."))),
        }
    }
    match req.get("stop_sequences") {
        None | Some(Value::Null) => {}
        Some(Value::Array(s)) if s.iter().all(Value::is_string) => {
            if !s.is_empty() {
                out.insert("stop".into(), Value::Array(s.clone()));
            }
        }
        Some(_) => {
            return Err(bad("stop_sequences", "`stop_sequences` must be a list of strings.".to_owned()));
        }
    }
    match req.get("metadata").and_then(|m| m.get("user_id")) {
        None | Some(Value::Null) => {}
        Some(Value::String(u)) => {
            out.insert("user".into(), Value::String(u.clone()));
        }
        Some(_) => return Err(bad("metadata", "`metadata.user_id` must be a string.".to_owned())),
    }
    match req.get("thinking") {
        None | Some(Value::Null) => {}
        Some(t @ Value::Object(_)) => match t.get("type").and_then(Value::as_str) {
            Some("enabled") => {
                out.insert("chat_template_kwargs".into(), json!({"enable_thinking": true}));
            }
            Some("disabled") => {
                out.insert("chat_template_kwargs".into(), json!({"enable_thinking": false}));
            }
            // `adaptive` (Claude Code's) and whatever comes next: the model decides.
            _ => {}
        },
        Some(_) => return Err(bad("thinking", "`thinking` must be an object.".to_owned())),
    }
    let tools = match req.remove("tools") {
        None | Some(Value::Null) => Vec::new(),
        Some(t) => tools(t)?,
    };
    if !tools.is_empty() {
        if let Some(choice) = req.get("tool_choice").filter(|c| !c.is_null()) {
            tool_choice(choice, &mut out)?;
        }
        out.insert("tools".into(), Value::Array(tools));
    }
    let body = serde_json::to_vec(&Value::Object(out)).map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(ChatRequest { body, model, stream })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat(body: Value) -> Value {
        let r = to_chat(body.to_string().as_bytes(), Purpose::Message).unwrap();
        serde_json::from_slice(&r.body).unwrap()
    }

    fn refused(body: Value) -> ApiError {
        to_chat(body.to_string().as_bytes(), Purpose::Message).unwrap_err()
    }

    #[test]
    fn system_everywhere_becomes_one_leading_system_message_in_order() {
        let c = chat(json!({
            "model": "m", "max_tokens": 10,
            "system": [{"type": "text", "text": "x-anthropic-billing-header: cc_version=1.2.3.abc;"},
                       {"type": "text", "text": "You are an agent.", "cache_control": {"type": "ephemeral"}}],
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "hi"}, {"type": "text", "text": "there"}]},
                {"role": "system", "content": [{"type": "text", "text": "# Environment"}]},
                {"role": "assistant", "content": "hello"},
                {"role": "system", "content": "later"},
            ],
        }));
        assert_eq!(
            c["messages"][0],
            json!({"role": "system", "content": "You are an agent.\n\n# Environment\n\nlater"})
        );
        assert_eq!(
            c["messages"][1]["content"],
            json!([{"type": "text", "text": "hi"}, {"type": "text", "text": "there"}])
        );
        assert_eq!(c["messages"][2], json!({"role": "assistant", "content": "hello"}));
        assert_eq!(c["messages"].as_array().unwrap().len(), 3);
        assert_eq!((c["max_tokens"].as_u64(), c.get("stream")), (Some(10), None));
    }

    #[test]
    fn tool_use_and_results_become_tool_calls_and_tool_messages_with_their_ids() {
        let c = chat(json!({
            "model": "m", "max_tokens": 10, "stream": true,
            "messages": [
                {"role": "user", "content": "run it"},
                {"role": "assistant", "content": [
                    {"type": "thinking", "thinking": "I should.", "signature": "c2ln"},
                    {"type": "text", "text": "Running."},
                    {"type": "tool_use", "id": "toolu_1", "name": "Bash", "input": {"command": "echo hi"}},
                    {"type": "tool_use", "id": "toolu_2", "name": "Read", "input": {}}]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": "hi", "is_error": false},
                    {"type": "tool_result", "tool_use_id": "toolu_2", "is_error": true,
                     "content": [{"type": "text", "text": "no such file"}, {"type": "tool_reference", "tool_name": "WebFetch"}]},
                    {"type": "text", "text": "and now?"}]},
            ],
        }));
        let m = &c["messages"];
        assert_eq!(m[1]["content"], "Running.");
        assert_eq!(m[1]["reasoning_content"], "I should.");
        assert_eq!(m[1]["tool_calls"][0]["id"], "toolu_1");
        assert_eq!(m[1]["tool_calls"][0]["function"]["arguments"], r#"{"command":"echo hi"}"#);
        assert_eq!(m[2], json!({"role": "tool", "tool_call_id": "toolu_1", "content": "hi"}));
        assert_eq!(m[3]["content"], "Error: no such file\nTool WebFetch is now available.");
        assert_eq!(m[4], json!({"role": "user", "content": "and now?"}));
        assert_eq!(c["stream_options"], json!({"include_usage": true}));
    }

    #[test]
    fn tools_choices_and_parameters_map_to_their_chat_names() {
        let c = chat(json!({
            "model": "m", "max_tokens": 10, "temperature": 0.5, "top_p": 0.9, "top_k": 40,
            "stop_sequences": ["END"], "metadata": {"user_id": "{\"device_id\":\"d\"}"},
            "thinking": {"type": "disabled"}, "context_management": {"edits": []},
            "output_config": {"effort": "high"}, "safeguards": [{"type": "x"}],
            "tools": [{"name": "Bash", "description": "Runs", "defer_loading": true, "cache_control": {},
                       "input_schema": {"$schema": "https://json-schema.org/draft/2020-12/schema",
                                        "type": "object", "properties": {"command": {"type": "string"}}}}],
            "tool_choice": {"type": "any", "disable_parallel_tool_use": true},
            "messages": [{"role": "user", "content": "x"}],
        }));
        assert_eq!(
            c["tools"][0],
            json!({"type": "function", "function": {"name": "Bash", "description": "Runs",
                "parameters": {"type": "object", "properties": {"command": {"type": "string"}}}}})
        );
        assert_eq!(
            (c["tool_choice"].as_str(), c["parallel_tool_calls"].as_bool()),
            (Some("required"), Some(false))
        );
        assert_eq!(
            (c["temperature"].as_f64(), c["top_p"].as_f64(), c["top_k"].as_u64()),
            (Some(0.5), Some(0.9), Some(40))
        );
        assert_eq!(c["stop"], json!(["END"]));
        assert_eq!(c["user"], "{\"device_id\":\"d\"}");
        assert_eq!(c["chat_template_kwargs"], json!({"enable_thinking": false}));
        for dropped in ["context_management", "output_config", "safeguards", "thinking", "stop_sequences"] {
            assert!(c.get(dropped).is_none(), "{dropped}");
        }
        let named = chat(
            json!({"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": "x"}],
            "tools": [{"name": "T", "input_schema": {"type": "object"}}], "tool_choice": {"type": "tool", "name": "T"}}),
        );
        assert_eq!(named["tool_choice"], json!({"type": "function", "function": {"name": "T"}}));
        let adaptive = chat(
            json!({"model": "m", "max_tokens": 1, "thinking": {"type": "adaptive", "display": "omitted"},
            "messages": [{"role": "user", "content": "x"}], "tool_choice": {"type": "auto"}}),
        );
        assert!(adaptive.get("chat_template_kwargs").is_none() && adaptive.get("tool_choice").is_none());
    }

    #[test]
    fn bad_requests_name_the_field_or_block() {
        let cases = [
            (json!({"messages": [{"role": "user", "content": "x"}], "max_tokens": 1}), "model", "`model`"),
            (
                json!({"model": "m", "messages": [{"role": "user", "content": "x"}]}),
                "max_tokens",
                "`max_tokens`",
            ),
            (
                json!({"model": "m", "max_tokens": 0, "messages": [{"role": "user", "content": "x"}]}),
                "max_tokens",
                "positive",
            ),
            (json!({"model": "m", "max_tokens": 1, "messages": []}), "messages", "non-empty"),
            (
                json!({"model": "m", "max_tokens": 1, "messages": [{"role": "robot", "content": "x"}]}),
                "messages",
                "messages.0.role",
            ),
            (
                json!({"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": [
                {"type": "text", "text": "look"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}}]}]}),
                "messages",
                "`messages.0.content.1`: image blocks are not supported: the Gonka network serves text",
            ),
            (
                json!({"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "t", "content": [{"type": "document", "source": {}}]}]}]}),
                "messages",
                "`messages.0.content.0.content.0`: document blocks",
            ),
            (
                json!({"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": "x"}],
                "tools": [{"type": "web_search_20250305", "name": "web_search"}]}),
                "tools",
                "`tools.0`",
            ),
            (
                json!({"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": "x"}],
                "tools": [{"name": "T"}], "tool_choice": {"type": "sometimes"}}),
                "tool_choice",
                "tool_choice.type",
            ),
            (
                json!({"model": "m", "max_tokens": 1, "stream": "yes", "messages": [{"role": "user", "content": "x"}]}),
                "stream",
                "boolean",
            ),
        ];
        for (body, param, says) in cases {
            let e = refused(body.clone());
            assert_eq!((e.status(), e.param()), (400, Some(param)), "{body}");
            assert!(e.to_string().contains(says), "{e} / {says}");
        }
        assert_eq!(to_chat(b"{", Purpose::Message).unwrap_err().status(), 400);
    }

    #[test]
    fn a_count_needs_no_max_tokens_and_never_streams() {
        let body = json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "x"}]});
        let r = to_chat(body.to_string().as_bytes(), Purpose::Count).unwrap();
        let c: Value = serde_json::from_slice(&r.body).unwrap();
        assert!(!r.stream && c.get("max_tokens").is_none() && c.get("stream").is_none());
        assert_eq!(r.model, "m");
    }
}
