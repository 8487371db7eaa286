//! What a simulated chat answer says, piece by piece: reasoning (`reasoning_content`, when the node is
//! set to think), then either text or one tool call.
//!
//! A request with `tools` (and a `tool_choice` other than `"none"`) gets a tool call when the last
//! message is the user's and it names one of the tools (the first named, in the order of `tools`), or
//! when `tool_choice` names a function or is `"required"` (the named or the first tool). The arguments
//! are the JSON object written right after the tool's name in that message (`run Bash {"command":"ls"}`),
//! else an object with each required property (all of them when none is required) set to a value of its
//! type. After a tool's result (the last message has role `tool`), the answer is text that starts with
//! what the tool returned, so a test can see the round trip reached the node. A `response_format` of
//! `json_schema` gets an object made from its schema the same way (`json_object`: `{"text": …}`),
//! streamed in fragments.
//!
//! As vLLM does, a request's `stop` strings end the text where the first of them appears (the string
//! itself left out; vLLM then names it in the choice's `stop_reason`), and
//! `chat_template_kwargs.enable_thinking: false` turns a thinking model's reasoning off.

use super::text;
use serde_json::{Map, Value, json};

/// One piece of a chat answer, as one streamed chunk carries it.
#[derive(Debug, Clone, PartialEq)]
pub enum Piece {
    Reasoning(String),
    Content(String),
    /// The start of a tool call: its id and function name.
    ToolCall {
        id: String,
        name: String,
    },
    /// A fragment of the tool call's arguments.
    Arguments(String),
}

/// How many fragments a tool call's arguments are streamed in, at most.
const ARGUMENT_FRAGMENTS: usize = 8;

/// The last message, if it is the user's: its text.
fn last_user_text(messages: &[Value]) -> Option<String> {
    let last = messages.last()?;
    if last.get("role").and_then(Value::as_str) != Some("user") {
        return None;
    }
    Some(content_text(last.get("content")))
}

fn content_text(content: Option<&Value>) -> String {
    match content {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => {
            parts.iter().filter_map(|p| p.get("text").and_then(Value::as_str)).collect::<Vec<_>>().join("")
        }
        _ => String::new(),
    }
}

fn tool_names(tools: &[Value]) -> Vec<&str> {
    tools
        .iter()
        .filter_map(|t| t.get("function").and_then(|f| f.get("name")).and_then(Value::as_str))
        .collect()
}

/// Where `name` stands alone in `text` (not inside a longer identifier).
fn find_word(text: &str, name: &str) -> Option<usize> {
    let ident = |c: char| c.is_alphanumeric() || c == '_';
    text.match_indices(name).map(|(at, _)| at).find(|&at| {
        let before = text[..at].chars().next_back().is_none_or(|c| !ident(c));
        let after = text[at + name.len()..].chars().next().is_none_or(|c| !ident(c));
        before && after
    })
}

/// The JSON object starting right after `from` in `text` (spaces and a "with" allowed before it).
fn object_after(text: &str, from: usize) -> Option<Value> {
    let rest = text[from..].trim_start();
    let rest = rest.strip_prefix("with").map_or(rest, str::trim_start);
    if !rest.starts_with('{') {
        return None;
    }
    let mut stream = serde_json::Deserializer::from_str(rest).into_iter::<Value>();
    stream.next()?.ok().filter(Value::is_object)
}

/// Arguments that fit `schema`: each required property (all when none is) with a value of its type.
fn arguments_for(schema: Option<&Value>) -> Value {
    let props = schema.and_then(|s| s.get("properties")).and_then(Value::as_object);
    let required: Vec<&str> = schema
        .and_then(|s| s.get("required"))
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let mut args = Map::new();
    if let Some(props) = props {
        for (name, p) in props {
            if !required.is_empty() && !required.contains(&name.as_str()) {
                continue;
            }
            let value = match p.get("type").and_then(Value::as_str) {
                Some("integer" | "number") => json!(1),
                Some("boolean") => json!(true),
                Some("array") => json!([]),
                Some("object") => json!({}),
                _ => json!("sim"),
            };
            args.insert(name.clone(), value);
        }
    }
    Value::Object(args)
}

/// The tool call a request gets, if any: the function's name and its arguments.
pub fn tool_call(req: &Value) -> Option<(String, Value)> {
    let tools = req.get("tools").and_then(Value::as_array).filter(|t| !t.is_empty())?;
    let choice = req.get("tool_choice");
    if choice.and_then(Value::as_str) == Some("none") {
        return None;
    }
    let messages = req.get("messages").and_then(Value::as_array).cloned().unwrap_or_default();
    let names = tool_names(tools);
    let schema_of = |name: &str| {
        tools
            .iter()
            .filter_map(|t| t.get("function"))
            .find(|f| f.get("name").and_then(Value::as_str) == Some(name))
            .and_then(|f| f.get("parameters"))
            .cloned()
    };
    let user = last_user_text(&messages);
    let named = user.as_deref().and_then(|text| {
        names
            .iter()
            .find_map(|n| find_word(text, n).map(|at| ((*n).to_owned(), object_after(text, at + n.len()))))
    });
    let forced = choice.and_then(|c| c.get("function")).and_then(|f| f.get("name")).and_then(Value::as_str);
    let required = choice.and_then(Value::as_str) == Some("required");
    let (name, given) = match (forced, named) {
        (Some(f), Some((n, args))) if f == n => (n, args),
        (Some(f), _) => (f.to_owned(), None),
        (None, Some(found)) if user.is_some() => found,
        (None, _) if required => ((*names.first()?).to_owned(), None),
        _ => return None,
    };
    let args = given.unwrap_or_else(|| arguments_for(schema_of(&name).as_ref()));
    Some((name, args))
}

/// `text` cut into at most [`ARGUMENT_FRAGMENTS`] pieces.
fn fragments(text: &str) -> impl Iterator<Item = String> {
    let chars: Vec<char> = text.chars().collect();
    let size = chars.len().div_ceil(ARGUMENT_FRAGMENTS).max(1);
    chars.chunks(size).map(|c| c.iter().collect::<String>()).collect::<Vec<_>>().into_iter()
}

/// The JSON text a request's `response_format` asks for, if it asks for JSON: an object that fits the
/// `json_schema`, or `{"text": …}` for `json_object`.
fn structured(req: &Value, text: &str) -> Option<String> {
    let format = req.get("response_format")?;
    match format.get("type").and_then(Value::as_str)? {
        "json_schema" => {
            Some(arguments_for(format.get("json_schema").and_then(|s| s.get("schema"))).to_string())
        }
        "json_object" => Some(json!({"text": text.trim()}).to_string()),
        _ => None,
    }
}

/// The text of the last message when it is a tool's result.
pub fn tool_result(req: &Value) -> Option<String> {
    let last = req.get("messages").and_then(Value::as_array)?.last()?;
    (last.get("role").and_then(Value::as_str) == Some("tool")).then(|| content_text(last.get("content")))
}

/// What choice `index` of a chat answer to `req` says, seeded by `prompt`: `reasoning` thinking tokens,
/// then a tool call or `tokens` tokens of text (an answer to a tool's result starts with that result).
pub fn chat_pieces(req: &Value, prompt: &str, index: usize, reasoning: usize, tokens: usize) -> Vec<Piece> {
    let mut pieces: Vec<Piece> = text::tokens(format!("think:{prompt}").as_bytes(), reasoning)
        .into_iter()
        .map(Piece::Reasoning)
        .collect();
    if let Some((name, args)) = tool_call(req) {
        let seed = text::seed(format!("{prompt}#{index}").as_bytes());
        pieces.push(Piece::ToolCall { id: format!("call_{seed:016x}"), name });
        pieces.extend(fragments(&args.to_string()).map(Piece::Arguments));
        return pieces;
    }
    let seed = if index == 0 { prompt.to_owned() } else { format!("{prompt}#{index}") };
    let mut words = text::tokens(seed.as_bytes(), tokens);
    if let Some(json) = structured(req, &words.concat()) {
        pieces.extend(fragments(&json).map(Piece::Content));
        return pieces;
    }
    if let Some(result) = tool_result(req) {
        let said: String = result.split_whitespace().collect::<Vec<_>>().join(" ").chars().take(80).collect();
        let lead: Vec<String> = format!("The tool returned: {said}.")
            .split(' ')
            .enumerate()
            .map(|(i, w)| if i == 0 { w.to_owned() } else { format!(" {w}") })
            .collect();
        if let Some(first) = words.first_mut() {
            *first = format!(" {first}");
        }
        words = lead.into_iter().chain(words).take(tokens.max(1)).collect();
    }
    pieces.extend(words.into_iter().map(Piece::Content));
    pieces
}

/// The request's `stop` strings (a string or a list of them).
pub fn stop_strings(req: &Value) -> Vec<String> {
    match req.get("stop") {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(list)) => list.iter().filter_map(Value::as_str).map(str::to_owned).collect(),
        _ => Vec::new(),
    }
    .into_iter()
    .filter(|s| !s.is_empty())
    .collect()
}

/// Whether the request turns the model's reasoning off (`chat_template_kwargs.enable_thinking: false`).
pub fn thinking_off(req: &Value) -> bool {
    req.pointer("/chat_template_kwargs/enable_thinking") == Some(&Value::Bool(false))
}

/// Cuts the text of `pieces` before the first of `stops` that it contains; the stop string, if one was
/// found.
pub fn cut_at_stop(pieces: &mut Vec<Piece>, stops: &[String]) -> Option<String> {
    let text: String =
        pieces.iter().map(|p| if let Piece::Content(t) = p { t.as_str() } else { "" }).collect();
    let (at, stop) =
        stops.iter().filter_map(|s| text.find(s.as_str()).map(|at| (at, s))).min_by_key(|(at, _)| *at)?;
    let mut seen = 0;
    let mut kept = Vec::with_capacity(pieces.len());
    for piece in pieces.drain(..) {
        let Piece::Content(t) = piece else {
            kept.push(piece);
            continue;
        };
        if seen >= at {
            break;
        }
        let end = (at - seen).min(t.len());
        seen += t.len();
        kept.push(Piece::Content(t[..end].to_owned()));
        if end < t.len() {
            break;
        }
    }
    kept.retain(|p| !matches!(p, Piece::Content(t) if t.is_empty()));
    *pieces = kept;
    Some(stop.clone())
}

/// The tokens a piece counts as (a tool call's fragments a quarter of their bytes, at least one).
pub fn piece_tokens(piece: &Piece) -> u64 {
    match piece {
        Piece::Arguments(a) => a.len().div_ceil(4).max(1) as u64,
        Piece::ToolCall { .. } => 1,
        _ => 1,
    }
}

/// A non-streamed chat answer's `message`, from its pieces.
pub fn message(pieces: &[Piece]) -> Value {
    let mut content = String::new();
    let mut reasoning = String::new();
    let mut call: Option<(String, String, String)> = None;
    for p in pieces {
        match p {
            Piece::Reasoning(t) => reasoning.push_str(t),
            Piece::Content(t) => content.push_str(t),
            Piece::ToolCall { id, name } => call = Some((id.clone(), name.clone(), String::new())),
            Piece::Arguments(a) => {
                if let Some(c) = call.as_mut() {
                    c.2.push_str(a);
                }
            }
        }
    }
    let mut m = json!({"role": "assistant", "content": if call.is_some() && content.is_empty() { Value::Null } else { Value::String(content) }});
    if !reasoning.is_empty() {
        m["reasoning_content"] = Value::String(reasoning);
    }
    if let Some((id, name, arguments)) = call {
        m["tool_calls"] =
            json!([{"id": id, "type": "function", "function": {"name": name, "arguments": arguments}}]);
    }
    m
}

/// A streamed chunk's `delta` for `piece` (`first`: the choice's first chunk carries the role).
pub fn delta(piece: &Piece, first: bool) -> Value {
    let mut d = match piece {
        Piece::Reasoning(t) => json!({"reasoning_content": t}),
        Piece::Content(t) => json!({"content": t}),
        Piece::ToolCall { id, name } => {
            json!({"tool_calls": [{"index": 0, "id": id, "type": "function", "function": {"name": name, "arguments": ""}}]})
        }
        Piece::Arguments(a) => json!({"tool_calls": [{"index": 0, "function": {"arguments": a}}]}),
    };
    if first {
        d["role"] = json!("assistant");
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(messages: Value, tools: Value) -> Value {
        json!({"model": "m", "messages": messages, "tools": tools})
    }

    fn bash() -> Value {
        json!([{"type": "function", "function": {"name": "Bash", "parameters": {"type": "object",
            "properties": {"command": {"type": "string"}, "timeout": {"type": "integer"}}, "required": ["command"]}}},
            {"type": "function", "function": {"name": "Read", "parameters": {"type": "object",
            "properties": {"path": {"type": "string"}}}}}])
    }

    #[test]
    fn a_named_tool_is_called_with_the_object_written_after_it() {
        let r = req(
            json!([{"role": "user", "content": "please run Bash with {\"command\": \"echo hi\"} now"}]),
            bash(),
        );
        assert_eq!(tool_call(&r), Some(("Bash".into(), json!({"command": "echo hi"}))));
        let r = req(json!([{"role": "user", "content": "Read the file"}]), bash());
        assert_eq!(tool_call(&r), Some(("Read".into(), json!({"path": "sim"}))));
        let r = req(json!([{"role": "user", "content": "Bashful Reader"}]), bash());
        assert_eq!(tool_call(&r), None, "names inside longer words do not count");
    }

    #[test]
    fn tool_choice_forces_or_forbids_and_a_tool_result_gets_text() {
        let mut r = req(json!([{"role": "user", "content": "hello"}]), bash());
        assert_eq!(tool_call(&r), None);
        r["tool_choice"] = json!("required");
        assert_eq!(tool_call(&r), Some(("Bash".into(), json!({"command": "sim"}))));
        r["tool_choice"] = json!({"type": "function", "function": {"name": "Read"}});
        assert_eq!(tool_call(&r).map(|c| c.0), Some("Read".into()));
        r["tool_choice"] = json!("none");
        r["messages"] = json!([{"role": "user", "content": "run Bash"}]);
        assert_eq!(tool_call(&r), None);
        let r = req(
            json!([{"role": "user", "content": "run Bash"}, {"role": "assistant", "tool_calls": []},
                {"role": "tool", "tool_call_id": "x", "content": "hi\nthere"}]),
            bash(),
        );
        assert_eq!(tool_call(&r), None);
        let pieces = chat_pieces(&r, "p", 0, 0, 12);
        let text: String =
            pieces.iter().map(|p| if let Piece::Content(t) = p { t.as_str() } else { "" }).collect();
        assert!(text.starts_with("The tool returned: hi there."), "{text}");
        assert_eq!(pieces.len(), 12);
    }

    #[test]
    fn stop_strings_cut_the_text_before_them() {
        let mut pieces: Vec<Piece> =
            ["Hello", " wor", "ld and", " more"].iter().map(|t| Piece::Content((*t).to_owned())).collect();
        let stops = stop_strings(&json!({"stop": ["more", "ld"]}));
        assert_eq!(cut_at_stop(&mut pieces, &stops).as_deref(), Some("ld"));
        assert_eq!(pieces, [Piece::Content("Hello".into()), Piece::Content(" wor".into())]);
        assert_eq!(cut_at_stop(&mut pieces, &["zzz".to_owned()]), None);
        assert_eq!(stop_strings(&json!({"stop": "x"})), ["x"]);
        assert!(thinking_off(&json!({"chat_template_kwargs": {"enable_thinking": false}})));
        assert!(!thinking_off(&json!({"chat_template_kwargs": {"enable_thinking": true}})));
    }

    #[test]
    fn a_json_response_format_gets_json_that_fits_it() {
        let mut r = req(json!([{"role": "user", "content": "weather?"}]), json!([]));
        r["response_format"] = json!({"type": "json_schema", "json_schema": {"name": "w", "schema": {"type": "object",
            "properties": {"city": {"type": "string"}, "degrees": {"type": "integer"}}, "required": ["city", "degrees"]}}});
        let text = |pieces: Vec<Piece>| -> String {
            pieces.iter().map(|p| if let Piece::Content(t) = p { t.as_str() } else { "" }).collect()
        };
        let pieces = chat_pieces(&r, "p", 0, 0, 16);
        assert!(pieces.len() > 1, "streamed in fragments");
        assert_eq!(
            serde_json::from_str::<Value>(&text(pieces)).unwrap(),
            json!({"city": "sim", "degrees": 1})
        );
        r["response_format"] = json!({"type": "json_object"});
        let v: Value = serde_json::from_str(&text(chat_pieces(&r, "p", 0, 0, 4))).unwrap();
        assert!(v["text"].as_str().is_some_and(|t| !t.is_empty()), "{v}");
    }

    #[test]
    fn a_tool_call_streams_in_fragments_that_add_up_to_its_arguments() {
        let r = req(json!([{"role": "user", "content": "Bash {\"command\": \"ls -la /tmp\"}"}]), bash());
        let pieces = chat_pieces(&r, "p", 0, 3, 16);
        assert!(matches!(&pieces[..3], [Piece::Reasoning(_), Piece::Reasoning(_), Piece::Reasoning(_)]));
        assert!(matches!(&pieces[3], Piece::ToolCall { name, .. } if name == "Bash"));
        let args: String =
            pieces.iter().map(|p| if let Piece::Arguments(a) = p { a.as_str() } else { "" }).collect();
        assert_eq!(serde_json::from_str::<Value>(&args).unwrap(), json!({"command": "ls -la /tmp"}));
        assert!(pieces.len() - 4 > 1 && pieces.len() - 4 <= ARGUMENT_FRAGMENTS);
        let m = message(&pieces);
        assert_eq!(m["content"], Value::Null);
        assert_eq!(m["tool_calls"][0]["function"]["arguments"], args);
        assert!(m["reasoning_content"].as_str().is_some_and(|r| !r.is_empty()));
    }
}
