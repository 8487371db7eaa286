//! A Responses request, read and checked: what becomes the chat-completions body, what the response
//! object echoes back, and what is refused by name.
//!
//! | Responses | chat completions |
//! |---|---|
//! | `instructions` | a first `system` message (not carried over by `previous_response_id`, as OpenAI does) |
//! | `input` (a string, or items: see [`super::items`]) | `messages` |
//! | `tools` (function tools) | `tools` (`{"type":"function","function":{…}}`) |
//! | `tool_choice`, `parallel_tool_calls` | the same (dropped when no tool is left) |
//! | `max_output_tokens` | `max_tokens` |
//! | `temperature`, `top_p`, `user`, `stream` | the same |
//! | `reasoning.effort` | `reasoning_effort` (`minimal` as `low`, `xhigh` as `high`, `none` left out) |
//! | `text.format` json_object / json_schema | `response_format` |
//!
//! `metadata`, `prompt_cache_key`, `include`, `store`, `truncation` and `reasoning.summary` are kept
//! for the response object; fields the gateway has no use for (`client_metadata`, `service_tier`, …)
//! are ignored. `background`, `conversation` and `prompt` are refused: the gateway runs requests in the
//! foreground and continues conversations by `previous_response_id`.

use super::items::{bad, bounded, chat_messages};
use crate::error::ApiError;
use serde_json::{Map, Value, json};

/// Tool kinds clients send by default that a chat node cannot run: dropped with a log line, not refused
/// (Codex sends a `namespace` of sub-agent tools and `web_search` on every request).
fn dropped_tool(kind: &str) -> bool {
    kind == "namespace" || kind.starts_with("web_search")
}

/// A checked Responses request.
#[derive(Debug, Clone)]
pub struct Request {
    pub model: String,
    pub stream: bool,
    /// Keep the response (OpenAI's default).
    pub store: bool,
    pub previous_response_id: Option<String>,
    /// This request's input as items (a string input is one user message).
    pub input: Vec<Value>,
    instructions: Option<String>,
    /// The chat body's members besides `model`, `messages` and `stream`.
    chat: Map<String, Value>,
    /// What the response object echoes of the request.
    pub echo: Map<String, Value>,
    /// Tools dropped (kind and name), for the log.
    pub dropped_tools: Vec<String>,
}

/// The member `name` of `obj` unless it is absent or null.
fn given<'a>(obj: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    obj.get(name).filter(|v| !v.is_null())
}

fn optional_str(obj: &Map<String, Value>, name: &str) -> Result<Option<String>, ApiError> {
    match given(obj, name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(bad(format!("`{name}` must be a string."), name)),
    }
}

fn optional_bool(obj: &Map<String, Value>, name: &str) -> Result<Option<bool>, ApiError> {
    match given(obj, name) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(bad(format!("`{name}` must be a boolean."), name)),
    }
}

fn optional_number(obj: &Map<String, Value>, name: &str) -> Result<Option<Value>, ApiError> {
    match given(obj, name) {
        None => Ok(None),
        Some(v) if v.is_number() => Ok(Some(v.clone())),
        Some(_) => Err(bad(format!("`{name}` must be a number."), name)),
    }
}

impl Request {
    /// Reads a `POST /v1/responses` body.
    pub fn parse(body: &[u8]) -> Result<Self, ApiError> {
        let value: Value = serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("The request body is not valid JSON: {e}"), None))?;
        let Value::Object(obj) = value else {
            return Err(ApiError::bad_request("The request body must be a JSON object.", None));
        };
        Self::from_object(obj)
    }

    fn from_object(mut obj: Map<String, Value>) -> Result<Self, ApiError> {
        for (name, what) in [
            ("background", "background mode is not supported; requests run in the foreground"),
            ("conversation", "conversations are not supported; continue with `previous_response_id`"),
            ("prompt", "prompt templates are not supported; send `instructions` and `input`"),
        ] {
            match given(&obj, name) {
                None | Some(Value::Bool(false)) => {}
                Some(_) => return Err(bad(format!("`{name}`: {what}."), name)),
            }
        }
        let model = match given(&obj, "model") {
            Some(Value::String(m)) if !m.is_empty() => m.clone(),
            Some(_) => return Err(bad("`model` must be a non-empty string.".into(), "model")),
            None => return Err(bad("You must provide a model parameter.".into(), "model")),
        };
        let stream = optional_bool(&obj, "stream")?.unwrap_or(false);
        let store = optional_bool(&obj, "store")?.unwrap_or(true);
        let previous_response_id = optional_str(&obj, "previous_response_id")?;
        let instructions = optional_str(&obj, "instructions")?;
        let input = match obj.remove("input") {
            Some(Value::String(s)) => vec![json!({"type": "message", "role": "user", "content": s})],
            Some(Value::Array(items)) => items,
            None | Some(Value::Null) if previous_response_id.is_some() => Vec::new(),
            _ => return Err(bad("`input` must be a string or a list of input items.".into(), "input")),
        };
        let mut chat = Map::new();
        let mut echo = Map::new();
        let mut dropped_tools = Vec::new();

        let mut function_tools = Vec::new();
        let mut echoed_tools = Vec::new();
        if let Some(tools) = given(&obj, "tools") {
            let tools = tools.as_array().ok_or_else(|| bad("`tools` must be a list.".into(), "tools"))?;
            for (i, tool) in tools.iter().enumerate() {
                let at = format!("tools[{i}]");
                let t = tool.as_object().ok_or_else(|| bad(format!("`{at}` must be an object."), &at))?;
                let kind = t.get("type").and_then(Value::as_str).unwrap_or("");
                let name = t.get("name").and_then(Value::as_str).unwrap_or("");
                match kind {
                    "function" => {
                        function_tools.push(function_tool(t, &at)?);
                        echoed_tools.push(tool.clone());
                    }
                    k if dropped_tool(k) => {
                        dropped_tools.push(if name.is_empty() {
                            k.to_owned()
                        } else {
                            format!("{k} {name}")
                        });
                    }
                    k => {
                        let named =
                            if name.is_empty() { String::new() } else { format!(" (`{}`)", bounded(name)) };
                        return Err(bad(
                            format!(
                                "`{at}`: tools of type `{}`{named} are not supported; this gateway's models \
                                 run function tools only.",
                                bounded(k)
                            ),
                            &at,
                        ));
                    }
                }
            }
        }
        let tool_choice = match given(&obj, "tool_choice") {
            None => None,
            Some(Value::String(c)) if ["auto", "none", "required"].contains(&c.as_str()) => {
                Some(Value::String(c.clone()))
            }
            Some(Value::Object(c)) if c.get("type").and_then(Value::as_str) == Some("function") => {
                let name = c
                    .get("name")
                    .and_then(Value::as_str)
                    .ok_or_else(|| bad("`tool_choice.name` must name a function.".into(), "tool_choice"))?;
                Some(json!({"type": "function", "function": {"name": name}}))
            }
            Some(_) => {
                return Err(bad(
                    "`tool_choice` must be auto, none, required or {\"type\":\"function\",\"name\":…}."
                        .into(),
                    "tool_choice",
                ));
            }
        };
        let parallel_tool_calls = optional_bool(&obj, "parallel_tool_calls")?;
        if !function_tools.is_empty() {
            chat.insert("tools".into(), Value::Array(function_tools));
            if let Some(c) = &tool_choice {
                chat.insert("tool_choice".into(), c.clone());
            }
            if let Some(p) = parallel_tool_calls {
                chat.insert("parallel_tool_calls".into(), Value::Bool(p));
            }
        }
        echo.insert("tools".into(), Value::Array(echoed_tools));
        echo.insert(
            "tool_choice".into(),
            given(&obj, "tool_choice").cloned().unwrap_or_else(|| Value::String("auto".into())),
        );
        echo.insert("parallel_tool_calls".into(), Value::Bool(parallel_tool_calls.unwrap_or(true)));

        let max_output_tokens = match given(&obj, "max_output_tokens") {
            None => None,
            Some(v) => match v.as_u64() {
                Some(n) if n >= 1 => Some(n),
                _ => {
                    return Err(bad(
                        "`max_output_tokens` must be a positive integer.".into(),
                        "max_output_tokens",
                    ));
                }
            },
        };
        if let Some(n) = max_output_tokens {
            chat.insert("max_tokens".into(), json!(n));
        }
        echo.insert("max_output_tokens".into(), json!(max_output_tokens));
        for name in ["temperature", "top_p"] {
            let v = optional_number(&obj, name)?;
            if let Some(v) = &v {
                chat.insert(name.into(), v.clone());
            }
            echo.insert(name.into(), v.unwrap_or(Value::Null));
        }
        let user = optional_str(&obj, "user")?;
        if let Some(u) = &user {
            chat.insert("user".into(), Value::String(u.clone()));
        }
        echo.insert("user".into(), json!(user));

        let reasoning = match given(&obj, "reasoning") {
            None => None,
            Some(Value::Object(r)) => Some(r),
            Some(_) => return Err(bad("`reasoning` must be an object.".into(), "reasoning")),
        };
        let effort = match reasoning.and_then(|r| given(r, "effort")) {
            None => None,
            Some(Value::String(e)) => Some(e.as_str()),
            Some(_) => return Err(bad("`reasoning.effort` must be a string.".into(), "reasoning")),
        };
        if let Some(e) = effort {
            let chat_effort = match e {
                "none" => None,
                "minimal" | "low" => Some("low"),
                "medium" => Some("medium"),
                "high" | "xhigh" | "max" => Some("high"),
                other => {
                    return Err(bad(
                        format!(
                            "`reasoning.effort` `{}` is not one of none, minimal, low, medium, high and xhigh.",
                            bounded(other)
                        ),
                        "reasoning",
                    ));
                }
            };
            if let Some(c) = chat_effort {
                chat.insert("reasoning_effort".into(), json!(c));
            }
        }
        echo.insert(
            "reasoning".into(),
            json!({"effort": effort, "summary": reasoning.and_then(|r| given(r, "summary"))}),
        );

        let text = match given(&obj, "text") {
            None => Map::new(),
            Some(Value::Object(t)) => t.clone(),
            Some(_) => return Err(bad("`text` must be an object.".into(), "text")),
        };
        let format = match given(&text, "format") {
            None => json!({"type": "text"}),
            Some(f) => {
                if let Some(rf) = response_format(f)? {
                    chat.insert("response_format".into(), rf);
                }
                f.clone()
            }
        };
        let mut echoed_text = json!({"format": format});
        if let Some(v) = given(&text, "verbosity") {
            echoed_text["verbosity"] = v.clone();
        }
        echo.insert("text".into(), echoed_text);

        match given(&obj, "metadata") {
            None => echo.insert("metadata".into(), json!({})),
            Some(m @ Value::Object(_)) => echo.insert("metadata".into(), m.clone()),
            Some(_) => return Err(bad("`metadata` must be an object.".into(), "metadata")),
        };
        let prompt_cache_key = optional_str(&obj, "prompt_cache_key")?;
        echo.insert("prompt_cache_key".into(), json!(prompt_cache_key));
        if let Some(include) = given(&obj, "include")
            && !include.as_array().is_some_and(|a| a.iter().all(Value::is_string))
        {
            return Err(bad("`include` must be a list of strings.".into(), "include"));
        }
        let truncation = match optional_str(&obj, "truncation")?.as_deref() {
            None | Some("disabled") => "disabled",
            Some("auto") => "auto",
            Some(_) => return Err(bad("`truncation` must be auto or disabled.".into(), "truncation")),
        };
        echo.insert("truncation".into(), json!(truncation));
        echo.insert("instructions".into(), json!(instructions));
        echo.insert("previous_response_id".into(), json!(previous_response_id));
        echo.insert("store".into(), Value::Bool(store));
        echo.insert("model".into(), Value::String(model.clone()));
        echo.insert("background".into(), Value::Bool(false));

        Ok(Self {
            model,
            stream,
            store,
            previous_response_id,
            input,
            instructions,
            chat,
            echo,
            dropped_tools,
        })
    }

    /// The chat-completions body that answers `conversation` (the items before this request's input,
    /// then its input, as [`Request::conversation`] makes them). `history_len`: how many of them came
    /// before this input (so errors name this request's own `input[i]`).
    pub fn chat_body(&self, conversation: &[Value], history_len: usize) -> Result<Vec<u8>, ApiError> {
        let (history, input) = conversation.split_at(history_len.min(conversation.len()));
        let mut messages = chat_messages(self.instructions.as_deref(), history, 0)
            .map_err(|e| ApiError::Internal(format!("a stored conversation does not translate: {e}")))?;
        let system_only = messages.len();
        let mut own = chat_messages(None, input, 0)?;
        messages.append(&mut own);
        if messages.len() == system_only && history.is_empty() {
            return Err(bad("`input` must hold at least one message.".into(), "input"));
        }
        let mut body = Map::new();
        body.insert("model".into(), Value::String(self.model.clone()));
        body.insert("messages".into(), Value::Array(messages));
        body.insert("stream".into(), Value::Bool(self.stream));
        body.extend(self.chat.iter().map(|(k, v)| (k.clone(), v.clone())));
        serde_json::to_vec(&Value::Object(body)).map_err(|e| ApiError::Internal(e.to_string()))
    }

    /// The conversation this request answers: a continued response's items (`history`), then this
    /// request's input.
    pub fn conversation(&self, mut history: Vec<Value>) -> Vec<Value> {
        history.extend(self.input.iter().cloned());
        history
    }
}

/// A function tool as chat completions take it.
fn function_tool(t: &Map<String, Value>, at: &str) -> Result<Value, ApiError> {
    let name = match t.get("name") {
        Some(Value::String(n)) if !n.is_empty() => n,
        _ => return Err(bad(format!("`{at}.name` must be a non-empty string."), at)),
    };
    let mut function = Map::new();
    function.insert("name".into(), Value::String(name.clone()));
    match given(t, "description") {
        None => {}
        Some(d @ Value::String(_)) => {
            function.insert("description".into(), d.clone());
        }
        Some(_) => return Err(bad(format!("`{at}.description` must be a string."), at)),
    }
    match given(t, "parameters") {
        None => {}
        Some(p @ Value::Object(_)) => {
            function.insert("parameters".into(), p.clone());
        }
        Some(_) => return Err(bad(format!("`{at}.parameters` must be a JSON schema object."), at)),
    }
    if let Some(strict) = given(t, "strict") {
        let s = strict.as_bool().ok_or_else(|| bad(format!("`{at}.strict` must be a boolean."), at))?;
        function.insert("strict".into(), Value::Bool(s));
    }
    Ok(json!({"type": "function", "function": function}))
}

/// `text.format` as the chat API's `response_format` (`None` for plain text).
fn response_format(format: &Value) -> Result<Option<Value>, ApiError> {
    let f = format.as_object().ok_or_else(|| bad("`text.format` must be an object.".into(), "text"))?;
    match f.get("type").and_then(Value::as_str) {
        Some("text") => Ok(None),
        Some("json_object") => Ok(Some(json!({"type": "json_object"}))),
        Some("json_schema") => {
            let name = match f.get("name") {
                Some(Value::String(n)) if !n.is_empty() => n,
                _ => return Err(bad("`text.format.name` must be a non-empty string.".into(), "text")),
            };
            let schema = match f.get("schema") {
                Some(s @ Value::Object(_)) => s,
                _ => return Err(bad("`text.format.schema` must be a JSON schema object.".into(), "text")),
            };
            let mut json_schema = json!({"name": name, "schema": schema});
            for field in ["strict", "description"] {
                if let Some(v) = given(f, field) {
                    json_schema[field] = v.clone();
                }
            }
            Ok(Some(json!({"type": "json_schema", "json_schema": json_schema})))
        }
        _ => Err(bad("`text.format.type` must be text, json_object or json_schema.".into(), "text")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat(body: Value) -> Value {
        let r = Request::parse(body.to_string().as_bytes()).unwrap();
        let conversation = r.conversation(Vec::new());
        serde_json::from_slice(&r.chat_body(&conversation, 0).unwrap()).unwrap()
    }

    fn refused(body: Value) -> ApiError {
        Request::parse(body.to_string().as_bytes()).unwrap_err()
    }

    #[test]
    fn a_full_request_translates_field_by_field() {
        let c = chat(json!({
            "model": "m", "instructions": "Be brief.", "input": "hi", "stream": true,
            "max_output_tokens": 64, "temperature": 0.5, "top_p": 0.9, "user": "u1",
            "tools": [{"type": "function", "name": "get_weather", "description": "d", "strict": null,
                       "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}],
            "tool_choice": {"type": "function", "name": "get_weather"}, "parallel_tool_calls": false,
            "reasoning": {"effort": "minimal", "summary": "auto"},
            "text": {"format": {"type": "json_schema", "name": "w", "schema": {"type": "object"}, "strict": true}},
            "metadata": {"k": "v"}, "prompt_cache_key": "thread", "include": ["reasoning.encrypted_content"],
            "store": false, "client_metadata": {"x": 1}, "service_tier": "auto",
        }));
        assert_eq!(
            c,
            json!({
                "model": "m", "stream": true,
                "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}],
                "max_tokens": 64, "temperature": 0.5, "top_p": 0.9, "user": "u1",
                "tools": [{"type": "function", "function": {"name": "get_weather", "description": "d",
                    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}],
                "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
                "parallel_tool_calls": false, "reasoning_effort": "low",
                "response_format": {"type": "json_schema", "json_schema": {"name": "w", "schema": {"type": "object"}, "strict": true}},
            })
        );
    }

    #[test]
    fn the_response_object_echoes_the_request_and_its_defaults() {
        let r = Request::parse(br#"{"model":"m","input":"hi","text":{}}"#).unwrap();
        assert!(r.store && !r.stream);
        let e = Value::Object(r.echo);
        assert_eq!(e["tool_choice"], "auto");
        assert_eq!(e["parallel_tool_calls"], true);
        assert_eq!(e["text"], json!({"format": {"type": "text"}}));
        assert_eq!(e["metadata"], json!({}));
        assert_eq!((e["store"].as_bool(), e["truncation"].as_str()), (Some(true), Some("disabled")));
        assert_eq!(e["tools"], json!([]));
        let c = chat(json!({"model": "m", "input": "hi", "text": {"format": {"type": "json_object"}}}));
        assert_eq!(c["response_format"], json!({"type": "json_object"}));
        assert!(c.get("max_tokens").is_none(), "the gateway fills in what the client left out");
    }

    #[test]
    fn codexs_default_tools_are_dropped_and_other_hosted_tools_refused_by_name() {
        let body = json!({"model": "m", "input": "hi", "tool_choice": "auto", "parallel_tool_calls": true, "tools": [
            {"type": "namespace", "name": "multi_agent_v1", "tools": [{"type": "function", "name": "close_agent"}]},
            {"type": "web_search", "external_web_access": false},
        ]});
        let r = Request::parse(body.to_string().as_bytes()).unwrap();
        assert_eq!(r.dropped_tools, ["namespace multi_agent_v1", "web_search"]);
        let c = chat(body);
        assert!(
            c.get("tools").is_none()
                && c.get("tool_choice").is_none()
                && c.get("parallel_tool_calls").is_none(),
            "{c}"
        );
        let e = refused(json!({"model": "m", "input": "hi", "tools": [
            {"type": "function", "name": "f"},
            {"type": "custom", "name": "apply_patch", "format": {"type": "grammar"}},
        ]}));
        assert_eq!(e.param(), Some("tools[1]"));
        assert!(e.to_string().contains("`custom` (`apply_patch`)"), "{e}");
        let e = refused(
            json!({"model": "m", "input": "hi", "tools": [{"type": "file_search", "vector_store_ids": []}]}),
        );
        assert!(e.to_string().contains("file_search"), "{e}");
    }

    #[test]
    fn bad_parameters_are_400s_that_name_them() {
        let cases = [
            (json!({"input": "hi"}), "model"),
            (json!({"model": "m"}), "input"),
            (json!({"model": "m", "input": 5}), "input"),
            (json!({"model": "m", "input": "hi", "max_output_tokens": 0}), "max_output_tokens"),
            (json!({"model": "m", "input": "hi", "stream": "yes"}), "stream"),
            (json!({"model": "m", "input": "hi", "temperature": "hot"}), "temperature"),
            (json!({"model": "m", "input": "hi", "reasoning": {"effort": "huge"}}), "reasoning"),
            (
                json!({"model": "m", "input": "hi", "text": {"format": {"type": "json_schema", "schema": {}}}}),
                "text",
            ),
            (json!({"model": "m", "input": "hi", "tool_choice": {"type": "allowed_tools"}}), "tool_choice"),
            (json!({"model": "m", "input": "hi", "background": true}), "background"),
            (json!({"model": "m", "input": "hi", "conversation": "conv_1"}), "conversation"),
            (json!({"model": "m", "input": "hi", "include": "all"}), "include"),
        ];
        for (body, param) in cases {
            let e = refused(body.clone());
            assert_eq!((e.status(), e.param()), (400, Some(param)), "{body}: {e}");
        }
        let r = Request::parse(br#"{"model":"m","input":[]}"#).unwrap();
        let e = r.chat_body(&r.conversation(Vec::new()), 0).unwrap_err();
        assert_eq!(e.param(), Some("input"));
        assert!(Request::parse(b"[1]").is_err() && Request::parse(b"{").is_err());
    }

    #[test]
    fn a_continuation_starts_from_the_stored_conversation_without_its_instructions() {
        let r = Request::parse(
            br#"{"model":"m","instructions":"New rules.","previous_response_id":"resp_1","input":"and now?"}"#,
        )
        .unwrap();
        let history = vec![
            json!({"type": "message", "role": "user", "content": "hi"}),
            json!({"type": "message", "id": "msg_1", "role": "assistant", "status": "completed",
                   "content": [{"type": "output_text", "text": "hello", "annotations": []}]}),
        ];
        let conversation = r.conversation(history);
        let c: Value = serde_json::from_slice(&r.chat_body(&conversation, 2).unwrap()).unwrap();
        assert_eq!(
            c["messages"],
            json!([{"role": "system", "content": "New rules."}, {"role": "user", "content": "hi"},
                   {"role": "assistant", "content": "hello"}, {"role": "user", "content": "and now?"}])
        );
        let r = Request::parse(br#"{"model":"m","previous_response_id":"resp_1"}"#).unwrap();
        assert!(r.input.is_empty(), "input is optional when continuing");
    }
}
