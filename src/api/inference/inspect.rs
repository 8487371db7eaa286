//! Inference request bodies: what the gateway needs to know from them, and the few rewrites it makes.
//!
//! # Design
//! The body is checked as JSON and its few watched members found in one pass that copies nothing
//! ([`json::pick`]). The original bytes are what the node receives, except where a field must change:
//! `stream_options.include_usage` is forced on for streams (so the stream can be billed), and a default
//! `max_tokens` is added where the client sent none (so the hold is a true upper bound). A rewrite
//! changes a member's value where [`inspect`] found it and adds missing members before the closing
//! brace: it costs a copy of the body, never a parse and a serialization of it.

use crate::error::ApiError;
use crate::json::{self, PickError, Value};
use std::borrow::Cow;
use std::ops::Range;

/// Which OpenAI endpoint a body is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    ChatCompletions,
    Completions,
    Embeddings,
}

impl Endpoint {
    /// The path under a node's base URL.
    pub fn path(self) -> &'static str {
        match self {
            Self::ChatCompletions => "/chat/completions",
            Self::Completions => "/completions",
            Self::Embeddings => "/embeddings",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::ChatCompletions => "chat_completions",
            Self::Completions => "completions",
            Self::Embeddings => "embeddings",
        }
    }
}

/// What the gateway reads from a request body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inspected {
    pub model: String,
    pub stream: bool,
    /// `max_tokens`, as sent.
    pub max_tokens: Option<u64>,
    /// `max_completion_tokens`, as sent.
    pub max_completion_tokens: Option<u64>,
    /// The client asked for `stream_options.include_usage: true`.
    pub include_usage: bool,
    /// `n` (number of choices), 1 when absent.
    pub n: u64,
    /// `/v1/completions`: the prompts of the request (a list of prompts gets a completion each); 1
    /// otherwise.
    pub prompts: u64,
    /// `/v1/completions`: `best_of` (completions generated per prompt, of which `n` are returned).
    pub best_of: Option<u64>,
    /// Where the members a [`rewrite`] may change are in the body.
    pub places: Places,
}

/// Byte ranges, in the body inspected, of the values of the members a [`rewrite`] may change (each
/// present only when the member is, `null` included).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Places {
    pub model: Range<usize>,
    pub max_tokens: Option<Range<usize>>,
    pub max_completion_tokens: Option<Range<usize>>,
    pub stream_options: Option<Range<usize>>,
    /// `stream_options.include_usage`.
    pub include_usage: Option<Range<usize>>,
}

impl Inspected {
    /// The completions the node generates, each up to the request's completion limit.
    pub fn choices(&self, endpoint: Endpoint) -> u64 {
        match endpoint {
            Endpoint::ChatCompletions => self.n,
            Endpoint::Completions => self.prompts.saturating_mul(self.n.max(self.best_of.unwrap_or(1))),
            Endpoint::Embeddings => 0,
        }
    }

    /// The completion limit the client asked for, as the endpoint's nodes read it: chat nodes honour
    /// `max_completion_tokens` or `max_tokens` (which one differs between servers, so the larger counts);
    /// completion nodes read only `max_tokens` (a lone `max_completion_tokens` is taken as what the
    /// client meant, and forwarded as `max_tokens`).
    pub fn client_max_tokens(&self, endpoint: Endpoint) -> Option<u64> {
        match endpoint {
            Endpoint::ChatCompletions => match (self.max_tokens, self.max_completion_tokens) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            },
            Endpoint::Completions => self.max_tokens.or(self.max_completion_tokens),
            Endpoint::Embeddings => None,
        }
    }

    /// Whether the body, as it is, keeps every node of `endpoint` within `limit` completion tokens per
    /// choice: `max_tokens` must say at most `limit` (every node reads it), and a chat body's
    /// `max_completion_tokens`, when present, too.
    pub fn bounded_by(&self, endpoint: Endpoint, limit: u64) -> bool {
        let within = |v: Option<u64>| v.is_some_and(|v| v <= limit);
        match endpoint {
            Endpoint::ChatCompletions => {
                within(self.max_tokens) && self.max_completion_tokens.is_none_or(|v| v <= limit)
            }
            Endpoint::Completions => within(self.max_tokens),
            Endpoint::Embeddings => true,
        }
    }
}

fn bad(message: &str, param: &str) -> ApiError {
    ApiError::bad_request(message, Some(param))
}

/// Members the gateway acts on: a duplicate would let the gateway and the node read different values
/// (parsers differ on which one they keep), so duplicates are refused.
const WATCHED: [&str; 10] = [
    "model",
    "stream",
    "max_tokens",
    "max_completion_tokens",
    "stream_options",
    "n",
    "messages",
    "prompt",
    "best_of",
    "input",
];

/// The members of `stream_options` the gateway reads or rewrites.
const WATCHED_STREAM_OPTIONS: [&str; 1] = ["include_usage"];

/// Validates `body` as JSON and reads the fields the gateway depends on, without copying it.
pub fn inspect(endpoint: Endpoint, body: &[u8]) -> Result<Inspected, ApiError> {
    let picked = json::pick(body, &WATCHED).map_err(|e| picked_error(e, &WATCHED, ""))?;
    let [
        model,
        stream,
        max_tokens,
        max_completion_tokens,
        stream_options,
        n,
        messages,
        prompt,
        best_of,
        input,
    ] = picked;
    let place = |v: Value<'_>| {
        let start = v.bytes().as_ptr() as usize - body.as_ptr() as usize;
        start..start + v.bytes().len()
    };
    let mut places = Places {
        model: model.map(place).unwrap_or_default(),
        max_tokens: max_tokens.map(place),
        max_completion_tokens: max_completion_tokens.map(place),
        stream_options: stream_options.map(place),
        include_usage: None,
    };
    let model = match model {
        Some(m) => m
            .as_str()
            .filter(|s| !s.is_empty())
            .map(Cow::into_owned)
            .ok_or_else(|| bad("`model` must be a non-empty string.", "model"))?,
        None => return Err(bad("You must provide a model parameter.", "model")),
    };
    let stream = match stream {
        None => false,
        Some(v) if v.is_null() => false,
        Some(v) => v.as_bool().ok_or_else(|| bad("`stream` must be a boolean.", "stream"))?,
    };
    if stream && endpoint == Endpoint::Embeddings {
        return Err(bad("Embeddings cannot be streamed.", "stream"));
    }
    let token_field = |value: Option<Value<'_>>, name: &str| -> Result<Option<u64>, ApiError> {
        match value {
            None => Ok(None),
            Some(v) if v.is_null() => Ok(None),
            Some(v) => match v.as_u64() {
                Some(n) if n >= 1 => Ok(Some(n)),
                _ => Err(bad(&format!("`{name}` must be a positive integer."), name)),
            },
        }
    };
    let max_tokens = token_field(max_tokens, "max_tokens")?;
    let max_completion_tokens = token_field(max_completion_tokens, "max_completion_tokens")?;
    let count_field = |value: Option<Value<'_>>, name: &str| -> Result<Option<u64>, ApiError> {
        match value {
            None => Ok(None),
            Some(v) if v.is_null() => Ok(None),
            Some(v) => match v.as_u64() {
                Some(n) if (1..=128).contains(&n) => Ok(Some(n)),
                _ => Err(bad(&format!("`{name}` must be an integer from 1 to 128."), name)),
            },
        }
    };
    let n = count_field(n, "n")?.unwrap_or(1);
    let best_of = if endpoint == Endpoint::Completions { count_field(best_of, "best_of")? } else { None };
    let include_usage = match stream_options {
        None => false,
        Some(v) if v.is_null() => false,
        Some(v) => {
            if !v.is_object() {
                return Err(bad("`stream_options` must be an object.", "stream_options"));
            }
            let [inc] = v
                .pick(&WATCHED_STREAM_OPTIONS)
                .map_err(|e| picked_error(e, &WATCHED_STREAM_OPTIONS, "stream_options"))?;
            places.include_usage = inc.map(place);
            match inc {
                None => false,
                Some(b) if b.is_null() => false,
                Some(b) => b.as_bool().ok_or_else(|| {
                    bad("`stream_options.include_usage` must be a boolean.", "stream_options")
                })?,
            }
        }
    };
    let mut prompts = 1;
    match endpoint {
        Endpoint::ChatCompletions => match messages {
            Some(m) if m.is_filled_array() => {}
            _ => return Err(bad("`messages` must be a non-empty array.", "messages")),
        },
        Endpoint::Completions => match prompt {
            None => return Err(bad("You must provide a prompt.", "prompt")),
            Some(p) if p.is_array() => {
                let (mut items, mut texts) = (0u64, false);
                for item in p.elements() {
                    items += 1;
                    texts |= item.as_str().is_some() || item.is_array();
                }
                if items == 0 {
                    return Err(bad("`prompt` must not be an empty list.", "prompt"));
                }
                // A list of strings, or of token lists, is one prompt each; a list of token ids is one
                // prompt.
                if texts {
                    prompts = items;
                }
            }
            Some(_) => {}
        },
        Endpoint::Embeddings => {
            if input.is_none() {
                return Err(bad("You must provide an input.", "input"));
            }
        }
    }
    Ok(Inspected {
        model,
        stream,
        max_tokens,
        max_completion_tokens,
        include_usage,
        n,
        prompts,
        best_of,
        places,
    })
}

/// The client's error for a body [`json::pick`] refused; `what` names the object (empty: the body).
fn picked_error(e: PickError, watched: &[&str], what: &str) -> ApiError {
    match e {
        PickError::Syntax(e) => {
            ApiError::bad_request(format!("The request body is not valid JSON: {e}"), None)
        }
        PickError::NotObject if what.is_empty() => {
            ApiError::bad_request("The request body must be a JSON object.", None)
        }
        PickError::NotObject => bad(&format!("`{what}` must be an object."), what),
        PickError::Duplicate(i) => {
            let k = watched[i];
            let name = if what.is_empty() { k.to_owned() } else { format!("{what}.{k}") };
            bad(&format!("`{name}` appears more than once."), if what.is_empty() { k } else { what })
        }
    }
}

/// The changes to make before forwarding.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rewrite<'a> {
    /// Set `stream_options.include_usage` to true.
    pub force_include_usage: bool,
    /// Bound the node to this many completion tokens per choice: `max_tokens` is set to it (and a chat
    /// body's `max_completion_tokens`, when it says more).
    pub max_tokens: Option<u64>,
    /// Name the model by this id: the request named it by an alias, which nodes do not know.
    pub model: Option<&'a str>,
}

impl<'a> Rewrite<'a> {
    /// What must change in a body so that the node streams usage (when `stream`), is held to `limit`
    /// completion tokens per choice (when the endpoint generates) and is asked for `model_id` (the id of
    /// the model the request named).
    pub fn for_body(
        endpoint: Endpoint,
        inspected: &Inspected,
        limit: Option<u64>,
        model_id: &'a str,
    ) -> Self {
        Self {
            force_include_usage: inspected.stream && !inspected.include_usage,
            max_tokens: limit.filter(|l| !inspected.bounded_by(endpoint, *l)),
            model: (inspected.model != model_id).then_some(model_id),
        }
    }

    pub fn is_noop(&self) -> bool {
        !self.force_include_usage && self.max_tokens.is_none() && self.model.is_none()
    }
}

/// The most [`rewrite`] adds to a body besides a new model id: `,"stream_options":{"include_usage":true}`
/// and `,"max_tokens":` with a 20-digit number.
pub const APPENDED_MAX: usize = 96;

/// Applies `rw` to `body` (the body `inspected` was read from), writing the result into `out` (cleared
/// first). Members are changed where they are and added before the closing brace; every other byte is
/// the client's.
pub fn rewrite(
    body: &[u8],
    inspected: &Inspected,
    rw: Rewrite<'_>,
    out: &mut Vec<u8>,
) -> Result<(), ApiError> {
    out.clear();
    let at = &inspected.places;
    // (range replaced, text put there), at most one per member; and the members added at the end.
    let mut edits: Vec<(Range<usize>, Vec<u8>)> = Vec::new();
    let mut added: Vec<&[u8]> = Vec::new();
    let number = |n: u64| itoa::Buffer::new().format(n).as_bytes().to_vec();
    if let Some(model) = rw.model {
        let text = serde_json::to_vec(model).map_err(|e| ApiError::Internal(e.to_string()))?;
        edits.push((at.model.clone(), text));
    }
    if rw.force_include_usage {
        match (&at.include_usage, &at.stream_options) {
            (Some(inc), _) => edits.push((inc.clone(), b"true".to_vec())),
            // An object without the member gets it before its closing brace.
            (None, Some(so)) if body[so.start] == b'{' => {
                let close = so.end - 1;
                let text = if opens_empty(&body[so.start..close]) {
                    &br#""include_usage":true"#[..]
                } else {
                    br#","include_usage":true"#
                };
                edits.push((close..close, text.to_vec()));
            }
            // `null`.
            (None, Some(so)) => edits.push((so.clone(), br#"{"include_usage":true}"#.to_vec())),
            (None, None) => added.push(br#""stream_options":{"include_usage":true}"#),
        }
    }
    let max_text;
    if let Some(n) = rw.max_tokens {
        match &at.max_tokens {
            // Replaced even when `null`: a second member would leave the node a choice.
            Some(place) => edits.push((place.clone(), number(n))),
            None => {
                max_text = [&br#""max_tokens":"#[..], &number(n)].concat();
                added.push(&max_text);
            }
        }
        if let (Some(place), Some(m)) = (&at.max_completion_tokens, inspected.max_completion_tokens)
            && m > n
        {
            edits.push((place.clone(), number(n)));
        }
    }
    edits.sort_by_key(|(range, _)| range.start);
    let mut from = 0;
    for (range, text) in &edits {
        out.extend_from_slice(&body[from..range.start]);
        out.extend_from_slice(text);
        from = range.end;
    }
    if added.is_empty() {
        out.extend_from_slice(&body[from..]);
        return Ok(());
    }
    // Members added before the object's closing brace (only whitespace follows it).
    let end = body
        .iter()
        .rposition(|&b| b == b'}')
        .filter(|&end| end >= from)
        .ok_or_else(|| ApiError::bad_request("Invalid JSON body.", None))?;
    out.extend_from_slice(&body[from..end]);
    let empty = opens_empty(&body[..end]);
    for (i, member) in added.iter().enumerate() {
        if i > 0 || !empty {
            out.push(b',');
        }
        out.extend_from_slice(member);
    }
    out.extend_from_slice(&body[end..]);
    Ok(())
}

/// Whether an object's text up to its closing brace has no member (only whitespace after its `{`).
fn opens_empty(before_close: &[u8]) -> bool {
    before_close.iter().rev().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn insp(body: &str) -> Result<Inspected, ApiError> {
        inspect(Endpoint::ChatCompletions, body.as_bytes())
    }

    #[test]
    fn reads_the_fields() {
        let i =
            insp(r#"{"model":"m","stream":true,"max_tokens":5,"messages":[{"role":"user","content":"hi"}]}"#)
                .unwrap();
        assert_eq!((i.model.as_str(), i.stream, i.max_tokens, i.include_usage), ("m", true, Some(5), false));
        let i = insp(r#"{"model":"m","max_completion_tokens":7,"max_tokens":5,"messages":[1],"stream_options":{"include_usage":true}}"#).unwrap();
        assert_eq!((i.max_tokens, i.max_completion_tokens), (Some(5), Some(7)));
        assert_eq!((i.include_usage, i.places.stream_options.is_some()), (true, true));
        let chat = Endpoint::ChatCompletions;
        assert_eq!(i.client_max_tokens(chat), Some(7), "a chat node may honour either: the larger counts");
        assert!(i.bounded_by(chat, 7) && !i.bounded_by(chat, 6));
    }

    fn completions(body: &str) -> Inspected {
        inspect(Endpoint::Completions, body.as_bytes()).unwrap()
    }

    #[test]
    fn a_completions_prompt_list_gets_a_completion_per_prompt() {
        let c = Endpoint::Completions;
        assert_eq!(completions(r#"{"model":"m","prompt":"one"}"#).choices(c), 1);
        assert_eq!(completions(r#"{"model":"m","prompt":["a","b","c"],"n":2}"#).choices(c), 6);
        assert_eq!(completions(r#"{"model":"m","prompt":[[1,2],[3]]}"#).choices(c), 2);
        assert_eq!(completions(r#"{"model":"m","prompt":[1,2,3]}"#).choices(c), 1, "one prompt of token ids");
        assert_eq!(completions(r#"{"model":"m","prompt":"x","n":2,"best_of":5}"#).choices(c), 5);
        assert_eq!(inspect(c, br#"{"model":"m","prompt":[]}"#).unwrap_err().param(), Some("prompt"));
    }

    #[test]
    fn an_appended_rewrite_adds_at_most_appended_max() {
        let body = br#"{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
        let i = insp(std::str::from_utf8(body).unwrap()).unwrap();
        let rw = Rewrite { force_include_usage: true, max_tokens: Some(u64::MAX), model: None };
        let mut out = Vec::new();
        rewrite(body, &i, rw, &mut out).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            (v["stream_options"]["include_usage"].as_bool(), v["max_tokens"].as_u64()),
            (Some(true), Some(u64::MAX))
        );
        assert!(out.len() <= body.len() + APPENDED_MAX, "{} > {} + {APPENDED_MAX}", out.len(), body.len());
    }

    #[test]
    fn completion_nodes_read_only_max_tokens() {
        let c = Endpoint::Completions;
        let i = completions(r#"{"model":"m","prompt":"x","max_completion_tokens":50}"#);
        assert_eq!(i.client_max_tokens(c), Some(50), "what the client meant");
        assert!(!i.bounded_by(c, 50), "the node does not read max_completion_tokens");
        let rw = Rewrite::for_body(c, &i, Some(50), "m");
        assert_eq!(rw.max_tokens, Some(50));
        let mut out = Vec::new();
        rewrite(br#"{"model":"m","prompt":"x","max_completion_tokens":50}"#, &i, rw, &mut out).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["max_tokens"], 50);
        let i = completions(r#"{"model":"m","prompt":"x","max_tokens":9,"max_completion_tokens":50}"#);
        assert_eq!(i.client_max_tokens(c), Some(9));
        assert!(Rewrite::for_body(c, &i, Some(9), "m").is_noop());
    }

    #[test]
    fn a_fitted_limit_replaces_what_the_client_sent() {
        let chat = Endpoint::ChatCompletions;
        let body = br#"{"model":"m","messages":[1],"max_tokens":32000,"max_completion_tokens":32000}"#;
        let i = inspect(chat, body).unwrap();
        let rw = Rewrite::for_body(chat, &i, Some(700), "m");
        let mut out = Vec::new();
        rewrite(body, &i, rw, &mut out).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!((v["max_tokens"].as_u64(), v["max_completion_tokens"].as_u64()), (Some(700), Some(700)));
        let unset = inspect(chat, br#"{"model":"m","messages":[1]}"#).unwrap();
        assert_eq!(Rewrite::for_body(chat, &unset, Some(4096), "m").max_tokens, Some(4096));
        assert!(Rewrite::for_body(Endpoint::Embeddings, &unset, None, "m").is_noop());
    }

    #[test]
    fn names_the_bad_field() {
        let cases = [
            (r#"{"messages":[1]}"#, "model"),
            (r#"{"model":3,"messages":[1]}"#, "model"),
            (r#"{"model":"m","stream":"yes","messages":[1]}"#, "stream"),
            (r#"{"model":"m","max_tokens":0,"messages":[1]}"#, "max_tokens"),
            (r#"{"model":"m","max_tokens":-1,"messages":[1]}"#, "max_tokens"),
            (r#"{"model":"m","messages":[]}"#, "messages"),
            (r#"{"model":"m","messages":[1],"n":0}"#, "n"),
            (r#"{"model":"cheap","messages":[1],"model":"expensive"}"#, "model"),
            (r#"{"model":"m","messages":[1],"max_tokens":1,"max_tokens":100000}"#, "max_tokens"),
            (
                r#"{"model":"m","messages":[1],"stream":true,"stream_options":{"include_usage":true,"include_usage":false}}"#,
                "stream_options",
            ),
            (r#"{"model":"m","messages":[1],"n":129}"#, "n"),
        ];
        for (body, param) in cases {
            let e = insp(body).unwrap_err();
            assert_eq!(e.param(), Some(param), "{body}");
            assert_eq!(e.status(), 400);
        }
        assert_eq!(insp("not json").unwrap_err().status(), 400);
        assert_eq!(insp("[1]").unwrap_err().status(), 400);
    }

    #[test]
    fn the_whole_body_is_checked_and_only_watched_members_are_read() {
        let long = "x\\\"y\\n".repeat(20_000);
        let body = format!(
            r#"{{"messages":[{{"role":"user","content":"{long}","model":"not this"}}],"model":"m","max_tokens":3}}"#
        );
        let i = insp(&body).unwrap();
        assert_eq!((i.model.as_str(), i.max_tokens), ("m", Some(3)), "a nested `model` is not the request's");
        for broken in [
            r#"{"model":"m","messages":[{"role":"user","content":"hi",}]}"#,
            r#"{"model":"m","messages":[{"role":"user","content":"a\qb"}]}"#,
            r#"{"model":"m","messages":[1 2]}"#,
            r#"{"model":"m","messages":[1]} trailing"#,
            r#"{"model":"m","messages":[1]"#,
        ] {
            let e = insp(broken).unwrap_err();
            assert_eq!((e.status(), e.param()), (400, None), "{broken}");
            assert!(e.to_string().contains("not valid JSON"), "{broken}: {e}");
        }
        assert_eq!(
            insp(r#"{"\u006dodel":"m","messages":[1]}"#).unwrap().model,
            "m",
            "keys are read unescaped"
        );
        let e = insp(r#"{"model":"m","messages":[1],"stream_options":[true]}"#).unwrap_err();
        assert_eq!(e.param(), Some("stream_options"));
    }

    #[test]
    fn appends_members_and_keeps_the_rest() {
        let body = br#"{"model":"m","stream":true,"messages":[{"role":"user","content":"}"}]}  "#;
        let i = inspect(Endpoint::ChatCompletions, body).unwrap();
        let mut out = Vec::new();
        rewrite(body, &i, Rewrite { force_include_usage: true, max_tokens: Some(9), model: None }, &mut out)
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["stream_options"]["include_usage"], true);
        assert_eq!(v["max_tokens"], 9);
        assert_eq!(v["messages"][0]["content"], "}");
        assert!(out.starts_with(br#"{"model":"m","stream":true,"messages""#));
    }

    #[test]
    fn a_model_named_by_its_alias_is_sent_by_its_id() {
        let body = br#"{"model":"kimi","messages":[1]}"#;
        let i = inspect(Endpoint::ChatCompletions, body).unwrap();
        assert!(Rewrite::for_body(Endpoint::ChatCompletions, &i, None, "kimi").is_noop());
        let rw = Rewrite::for_body(Endpoint::ChatCompletions, &i, None, "moonshotai/Kimi-K2.6");
        let mut out = Vec::new();
        rewrite(body, &i, rw, &mut out).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v, serde_json::json!({"model": "moonshotai/Kimi-K2.6", "messages": [1]}));
    }

    /// Every rewrite keeps the client's bytes outside the members it changes, and yields one member of
    /// each name: a body that inspects again, with what was asked.
    #[test]
    fn rewrites_change_members_where_they_are() {
        let chat = Endpoint::ChatCompletions;
        let cases: [(&str, Rewrite<'_>, &str); 6] = [
            (
                r#"{ "model" : "kimi", "messages":[1], "max_tokens" : null }"#,
                Rewrite { force_include_usage: false, max_tokens: Some(9), model: Some("a/\"b\"") },
                r#"{ "model" : "a/\"b\"", "messages":[1], "max_tokens" : 9 }"#,
            ),
            (
                r#"{"model":"m","stream":true,"messages":[1],"stream_options":null}"#,
                Rewrite { force_include_usage: true, max_tokens: None, model: None },
                r#"{"model":"m","stream":true,"messages":[1],"stream_options":{"include_usage":true}}"#,
            ),
            (
                r#"{"model":"m","stream":true,"messages":[1],"stream_options":{ }}"#,
                Rewrite { force_include_usage: true, max_tokens: None, model: None },
                r#"{"model":"m","stream":true,"messages":[1],"stream_options":{ "include_usage":true}}"#,
            ),
            (
                r#"{"model":"m","stream":true,"messages":[1],"stream_options":{"x":1}}"#,
                Rewrite { force_include_usage: true, max_tokens: Some(5), model: None },
                r#"{"model":"m","stream":true,"messages":[1],"stream_options":{"x":1,"include_usage":true},"max_tokens":5}"#,
            ),
            (
                r#"{"model":"m","messages":[1],"max_completion_tokens":50,"max_tokens":40} "#,
                Rewrite { force_include_usage: false, max_tokens: Some(30), model: None },
                r#"{"model":"m","messages":[1],"max_completion_tokens":30,"max_tokens":30} "#,
            ),
            (
                r#"{"model":"m","messages":[1],"max_completion_tokens":20}"#,
                Rewrite { force_include_usage: false, max_tokens: Some(30), model: None },
                r#"{"model":"m","messages":[1],"max_completion_tokens":20,"max_tokens":30}"#,
            ),
        ];
        for (body, rw, expected) in cases {
            let i = insp(body).unwrap();
            let mut out = Vec::new();
            rewrite(body.as_bytes(), &i, rw, &mut out).unwrap();
            assert_eq!(std::str::from_utf8(&out).unwrap(), expected);
            let again = insp(expected).unwrap();
            assert_eq!(again.model, rw.model.unwrap_or(&i.model));
            if let Some(n) = rw.max_tokens {
                assert!(again.bounded_by(chat, n), "{expected}");
            }
            assert!(!rw.force_include_usage || again.include_usage, "{expected}");
        }
    }

    #[test]
    fn changes_existing_stream_options_in_place() {
        let body =
            br#"{"model":"m","stream":true,"messages":[1],"stream_options":{"include_usage":false,"x":1}}"#;
        let i = inspect(Endpoint::ChatCompletions, body).unwrap();
        let mut out = Vec::new();
        rewrite(body, &i, Rewrite { force_include_usage: true, max_tokens: None, model: None }, &mut out)
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["stream_options"], serde_json::json!({"include_usage": true, "x": 1}));
    }
}
