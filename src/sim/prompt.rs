//! What a request gives the simulator to answer: the prompt text of a chat or completions request and
//! the inputs of an embeddings request, read the same way by the answer and by the escrow paid for it.

use serde_json::Value;

/// The prompt text and message count the completion is derived from.
pub fn prompt_of(req: &Value, chat: bool) -> (String, usize) {
    if chat {
        let msgs = req.get("messages").and_then(Value::as_array).cloned().unwrap_or_default();
        let mut text = String::new();
        for m in &msgs {
            match m.get("content") {
                Some(Value::String(s)) => text.push_str(s),
                Some(Value::Array(parts)) => {
                    for p in parts {
                        if let Some(t) = p.get("text").and_then(Value::as_str) {
                            text.push_str(t);
                        }
                    }
                }
                _ => {}
            }
            text.push('\n');
        }
        (text, msgs.len())
    } else {
        let text = match req.get("prompt") {
            Some(Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
            None => String::new(),
        };
        (text, 0)
    }
}

/// The prompts of a completions request, as vLLM takes them: a string, token ids, or a list of either
/// (one completion each).
pub fn completion_prompts(req: &Value) -> Vec<String> {
    match req.get("prompt") {
        Some(Value::Array(items)) if items.iter().any(|i| i.is_string() || i.is_array()) => items
            .iter()
            .map(|i| match i {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(other) => vec![other.to_string()],
        None => vec![String::new()],
    }
}

/// The inputs of an embeddings request (a string or a list; non-strings as their JSON); `None` without
/// an `input`.
pub fn embedding_inputs(req: &Value) -> Option<Vec<String>> {
    match req.get("input") {
        Some(Value::String(s)) => Some(vec![s.clone()]),
        Some(Value::Array(items)) => Some(
            items
                .iter()
                .map(|i| match i {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect(),
        ),
        _ => None,
    }
}
