//! A conversation of Responses input items as chat messages.
//!
//! - `message` (or an item with a `role` and no `type`): `developer` becomes `system`; text parts
//!   (`input_text`, `output_text`, `text`, an assistant's `refusal`) become the content, a string when
//!   there is one part; `input_image` becomes an `image_url` part.
//! - `function_call`: an assistant message's `tool_calls` (consecutive calls, and the assistant text just
//!   before them, are one message, as chat clients send them).
//! - `function_call_output`: a `tool` message; images in an output (Codex's `view_image`) cannot be in a
//!   tool message, so they follow the tool results in a user message.
//! - `reasoning` items passed back are accepted and not forwarded: chat templates drop earlier turns'
//!   reasoning, and their content is the node's own.
//!
//! Anything else is refused by name. Client-made `id`s and `status`es are accepted and dropped.

use crate::error::ApiError;
use serde_json::{Map, Value, json};

/// A 400 naming `param`.
pub(super) fn bad(message: String, param: &str) -> ApiError {
    ApiError::bad_request(message, Some(param))
}

/// The chat messages of `instructions` (a system message first) and `items`; the first item is
/// `input[first_index]` in error messages.
pub fn chat_messages(
    instructions: Option<&str>,
    items: &[Value],
    first_index: usize,
) -> Result<Vec<Value>, ApiError> {
    let mut messages = Vec::with_capacity(items.len() + 1);
    if let Some(text) = instructions {
        messages.push(json!({"role": "system", "content": text}));
    }
    // Images of tool outputs, sent in a user message once the run of tool results ends.
    let mut tool_images: Vec<Value> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let at = format!("input[{}]", first_index + i);
        let obj = item.as_object().ok_or_else(|| bad(format!("`{at}` must be an object."), &at))?;
        let kind = match obj.get("type") {
            Some(Value::String(t)) => t.as_str(),
            None | Some(Value::Null) if obj.contains_key("role") => "message",
            _ => return Err(bad(format!("`{at}.type` must be a string."), &at)),
        };
        if kind != "function_call_output" && !tool_images.is_empty() {
            messages.push(json!({"role": "user", "content": std::mem::take(&mut tool_images)}));
        }
        match kind {
            "message" => messages.push(message(obj, &at)?),
            "function_call" => function_call(obj, &at, &mut messages)?,
            "function_call_output" => messages.push(function_call_output(obj, &at, &mut tool_images)?),
            "reasoning" => {}
            "item_reference" => {
                return Err(bad(
                    format!("`{at}`: item references are not supported; send the items themselves."),
                    &at,
                ));
            }
            other => {
                return Err(bad(
                    format!(
                        "`{at}`: input items of type `{}` are not supported (messages, function calls and \
                         their outputs, and reasoning are).",
                        bounded(other)
                    ),
                    &at,
                ));
            }
        }
    }
    if !tool_images.is_empty() {
        messages.push(json!({"role": "user", "content": tool_images}));
    }
    Ok(messages)
}

/// A client's string in an error message, cut short.
pub(super) fn bounded(s: &str) -> String {
    s.chars().take(64).collect()
}

fn string_field<'a>(obj: &'a Map<String, Value>, name: &str, at: &str) -> Result<&'a str, ApiError> {
    match obj.get(name) {
        Some(Value::String(s)) => Ok(s),
        _ => Err(bad(format!("`{at}.{name}` must be a string."), &format!("{at}.{name}"))),
    }
}

fn message(obj: &Map<String, Value>, at: &str) -> Result<Value, ApiError> {
    let role = match string_field(obj, "role", at)? {
        "developer" | "system" => "system",
        "user" => "user",
        "assistant" => "assistant",
        other => {
            return Err(bad(
                format!(
                    "`{at}.role` `{}` is not one of user, assistant, system and developer.",
                    bounded(other)
                ),
                &format!("{at}.role"),
            ));
        }
    };
    let content = match obj.get("content") {
        Some(Value::String(s)) => Value::String(s.clone()),
        Some(Value::Array(parts)) => content_parts(parts, role, &format!("{at}.content"))?,
        _ => {
            return Err(bad(
                format!("`{at}.content` must be a string or a list of parts."),
                &format!("{at}.content"),
            ));
        }
    };
    Ok(json!({"role": role, "content": content}))
}

/// A message's parts as chat content: a string for one text part, else a list of chat parts.
fn content_parts(parts: &[Value], role: &str, at: &str) -> Result<Value, ApiError> {
    let mut out: Vec<Value> = Vec::with_capacity(parts.len());
    let mut images = false;
    for (i, part) in parts.iter().enumerate() {
        let at = format!("{at}[{i}]");
        let obj = part.as_object().ok_or_else(|| bad(format!("`{at}` must be an object."), &at))?;
        let kind = string_field(obj, "type", &at)?;
        match kind {
            "input_text" | "output_text" | "text" => {
                out.push(json!({"type": "text", "text": string_field(obj, "text", &at)?}));
            }
            "refusal" if role == "assistant" => {
                out.push(json!({"type": "text", "text": string_field(obj, "refusal", &at)?}));
            }
            "input_image" if role != "assistant" => {
                out.push(image_part(obj, &at)?);
                images = true;
            }
            other => {
                return Err(bad(
                    format!(
                        "`{at}`: {role} content parts of type `{}` are not supported (text and images are).",
                        bounded(other)
                    ),
                    &at,
                ));
            }
        }
    }
    if !images && role == "assistant" {
        let text: String = out.iter().filter_map(|p| p["text"].as_str()).collect();
        return Ok(Value::String(text));
    }
    match out.as_slice() {
        [one] if !images => Ok(one["text"].clone()),
        _ => Ok(Value::Array(out)),
    }
}

fn image_part(obj: &Map<String, Value>, at: &str) -> Result<Value, ApiError> {
    let url = match obj.get("image_url") {
        Some(Value::String(u)) => u,
        _ if obj.contains_key("file_id") => {
            return Err(bad(
                format!("`{at}`: images by `file_id` are not supported; send an image_url."),
                at,
            ));
        }
        _ => return Err(bad(format!("`{at}.image_url` must be a string."), at)),
    };
    let mut image = json!({"url": url});
    if let Some(Value::String(detail)) = obj.get("detail") {
        // Chat completions know low, high and auto.
        image["detail"] = json!(if detail == "original" { "high" } else { detail.as_str() });
    }
    Ok(json!({"type": "image_url", "image_url": image}))
}

fn function_call(obj: &Map<String, Value>, at: &str, messages: &mut Vec<Value>) -> Result<(), ApiError> {
    let call = json!({
        "id": string_field(obj, "call_id", at)?,
        "type": "function",
        "function": {
            "name": string_field(obj, "name", at)?,
            "arguments": match obj.get("arguments") {
                Some(Value::String(a)) => a.as_str(),
                None | Some(Value::Null) => "{}",
                _ => return Err(bad(format!("`{at}.arguments` must be a string."), &format!("{at}.arguments"))),
            },
        },
    });
    match messages.last_mut() {
        Some(m) if m["role"] == "assistant" => match m.get_mut("tool_calls") {
            Some(Value::Array(calls)) => calls.push(call),
            _ => m["tool_calls"] = json!([call]),
        },
        _ => messages.push(json!({"role": "assistant", "content": null, "tool_calls": [call]})),
    }
    Ok(())
}

fn function_call_output(
    obj: &Map<String, Value>,
    at: &str,
    images: &mut Vec<Value>,
) -> Result<Value, ApiError> {
    let call_id = string_field(obj, "call_id", at)?;
    let content = match obj.get("output") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => {
            let mut text = String::new();
            for (i, part) in parts.iter().enumerate() {
                let at = format!("{at}.output[{i}]");
                let p = part.as_object().ok_or_else(|| bad(format!("`{at}` must be an object."), &at))?;
                match string_field(p, "type", &at)? {
                    "input_text" | "output_text" | "text" => text.push_str(string_field(p, "text", &at)?),
                    "input_image" => images.push(image_part(p, &at)?),
                    other => {
                        return Err(bad(
                            format!("`{at}`: output parts of type `{}` are not supported.", bounded(other)),
                            &at,
                        ));
                    }
                }
            }
            text
        }
        _ => {
            return Err(bad(
                format!("`{at}.output` must be a string or a list of parts."),
                &format!("{at}.output"),
            ));
        }
    };
    Ok(json!({"role": "tool", "tool_call_id": call_id, "content": content}))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn messages(items: Value) -> Vec<Value> {
        chat_messages(Some("Be brief."), items.as_array().unwrap(), 0).unwrap()
    }

    fn refused(items: Value) -> ApiError {
        chat_messages(None, items.as_array().unwrap(), 0).unwrap_err()
    }

    #[test]
    fn codex_history_becomes_chat_messages() {
        let m = messages(json!([
            {"type": "message", "id": "msg_1", "role": "developer", "content": [{"type": "input_text", "text": "base"}]},
            {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "a"}, {"type": "input_text", "text": "b"}]},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "run echo hi"}]},
            {"type": "reasoning", "id": "rs_1", "summary": [], "content": null, "encrypted_content": null},
            {"type": "function_call", "status": "completed", "id": "fc_1", "name": "exec_command", "arguments": "{\"cmd\":\"echo hi\"}", "call_id": "call_1"},
            {"type": "function_call_output", "id": "fco_1", "call_id": "call_1", "output": "hi\n"},
            {"type": "message", "status": "completed", "id": "msg_2", "role": "assistant", "content": [{"type": "output_text", "text": "done", "annotations": [], "logprobs": []}]},
            {"role": "user", "content": "thanks"},
        ]));
        assert_eq!(
            Value::Array(m),
            json!([
                {"role": "system", "content": "Be brief."},
                {"role": "system", "content": "base"},
                {"role": "system", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
                {"role": "user", "content": "run echo hi"},
                {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function",
                    "function": {"name": "exec_command", "arguments": "{\"cmd\":\"echo hi\"}"}}]},
                {"role": "tool", "tool_call_id": "call_1", "content": "hi\n"},
                {"role": "assistant", "content": "done"},
                {"role": "user", "content": "thanks"},
            ])
        );
    }

    #[test]
    fn assistant_text_and_parallel_calls_are_one_message_and_tool_images_follow_the_results() {
        let m = messages(json!([
            {"role": "user", "content": "look"},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Looking."}]},
            {"type": "function_call", "name": "view_image", "arguments": "{}", "call_id": "a"},
            {"type": "function_call", "name": "view_image", "call_id": "b"},
            {"type": "function_call_output", "call_id": "a", "output": [{"type": "input_image", "image_url": "data:image/png;base64,AAAA", "detail": "high"}]},
            {"type": "function_call_output", "call_id": "b", "output": [{"type": "input_text", "text": "none"}]},
        ]));
        assert_eq!(m[2]["content"], "Looking.");
        assert_eq!(m[2]["tool_calls"].as_array().unwrap().len(), 2);
        assert_eq!(m[2]["tool_calls"][1]["function"]["arguments"], "{}");
        assert_eq!((m[3]["role"].as_str(), m[3]["content"].as_str()), (Some("tool"), Some("")));
        assert_eq!((m[4]["role"].as_str(), m[4]["content"].as_str()), (Some("tool"), Some("none")));
        assert_eq!(
            m[5],
            json!({"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA", "detail": "high"}}]})
        );
        assert_eq!(m.len(), 6);
    }

    #[test]
    fn what_cannot_be_translated_is_refused_by_name() {
        let e = refused(
            json!([{"type": "custom_tool_call", "call_id": "c", "name": "apply_patch", "input": "x"}]),
        );
        assert!(e.to_string().contains("custom_tool_call"), "{e}");
        assert_eq!(e.param(), Some("input[0]"));
        let e = refused(json!([{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]));
        assert_eq!(e.param(), Some("input[0].content[0]"));
        assert!(e.to_string().contains("input_file"), "{e}");
        let e = refused(json!([{"role": "tool", "content": "x"}]));
        assert_eq!(e.param(), Some("input[0].role"));
        let e = refused(json!([{"type": "function_call", "name": "f"}]));
        assert_eq!(e.param(), Some("input[0].call_id"));
        let e = refused(json!([{"type": "item_reference", "id": "msg_1"}]));
        assert!(e.to_string().contains("item references"), "{e}");
        let e = refused(json!(["just a string"]));
        assert_eq!(e.param(), Some("input[0]"));
        assert_eq!(e.status(), 400);
    }
}
