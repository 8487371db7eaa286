//! Inference request bodies: what the gateway needs to know from them, and the few rewrites it makes.
//!
//! # Design
//! simd-json parses in place, so it parses a copy (into a per-core scratch buffer that is reused). The
//! original bytes are what the node receives, except where a field must change: `stream_options.
//! include_usage` is forced on for streams (so the stream can be billed), and a default `max_tokens` is
//! added where the client sent none (so the hold is a true upper bound). A rewrite appends members before
//! the closing brace; only when `stream_options` already exists is the document re-serialized.

use crate::error::ApiError;
pub use crate::json::JsonScratch;
use simd_json::prelude::*;

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
    /// A `stream_options` member exists at all.
    pub has_stream_options: bool,
    /// `n` (number of choices), 1 when absent.
    pub n: u64,
    /// `/v1/completions`: the prompts of the request (a list of prompts gets a completion each); 1
    /// otherwise.
    pub prompts: u64,
    /// `/v1/completions`: `best_of` (completions generated per prompt, of which `n` are returned).
    pub best_of: Option<u64>,
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
/// (simd-json keeps the first, most node servers the last), so duplicates are refused.
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

/// Parses a copy of `body` and validates the fields the gateway depends on.
pub fn inspect(endpoint: Endpoint, body: &[u8], scratch: &mut JsonScratch) -> Result<Inspected, ApiError> {
    match scratch.parse(body, |value| inspect_value(endpoint, value)) {
        Ok(result) => result,
        Err(e) => Err(ApiError::bad_request(format!("The request body is not valid JSON: {e}"), None)),
    }
}

/// Refuses an object in which one of `watched` appears more than once; `what` names the object.
fn refuse_duplicates<'a>(
    members: impl Iterator<Item = &'a str>,
    watched: &[&str],
    what: &str,
) -> Result<(), ApiError> {
    let mut seen = [false; 16];
    for k in members {
        if let Some(i) = watched.iter().position(|w| *w == k) {
            if seen[i] {
                let name = if what.is_empty() { k.to_owned() } else { format!("{what}.{k}") };
                return Err(bad(
                    &format!("`{name}` appears more than once."),
                    if what.is_empty() { k } else { what },
                ));
            }
            seen[i] = true;
        }
    }
    Ok(())
}

fn inspect_value(endpoint: Endpoint, value: simd_json::tape::Value<'_, '_>) -> Result<Inspected, ApiError> {
    let obj = value
        .as_object()
        .ok_or_else(|| ApiError::bad_request("The request body must be a JSON object.", None))?;
    refuse_duplicates(obj.iter().map(|(k, _)| k), &WATCHED, "")?;
    let model = match obj.get("model") {
        Some(m) => m
            .as_str()
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .ok_or_else(|| bad("`model` must be a non-empty string.", "model"))?,
        None => return Err(bad("You must provide a model parameter.", "model")),
    };
    let stream = match obj.get("stream") {
        None => false,
        Some(v) if v.is_null() => false,
        Some(v) => v.as_bool().ok_or_else(|| bad("`stream` must be a boolean.", "stream"))?,
    };
    if stream && endpoint == Endpoint::Embeddings {
        return Err(bad("Embeddings cannot be streamed.", "stream"));
    }
    let token_field = |name: &str| -> Result<Option<u64>, ApiError> {
        match obj.get(name) {
            None => Ok(None),
            Some(v) if v.is_null() => Ok(None),
            Some(v) => match v.as_u64() {
                Some(n) if n >= 1 => Ok(Some(n)),
                _ => Err(bad(&format!("`{name}` must be a positive integer."), name)),
            },
        }
    };
    let max_tokens = token_field("max_tokens")?;
    let max_completion_tokens = token_field("max_completion_tokens")?;
    let count_field = |name: &str| -> Result<Option<u64>, ApiError> {
        match obj.get(name) {
            None => Ok(None),
            Some(v) if v.is_null() => Ok(None),
            Some(v) => match v.as_u64() {
                Some(n) if (1..=128).contains(&n) => Ok(Some(n)),
                _ => Err(bad(&format!("`{name}` must be an integer from 1 to 128."), name)),
            },
        }
    };
    let n = count_field("n")?.unwrap_or(1);
    let best_of = if endpoint == Endpoint::Completions { count_field("best_of")? } else { None };
    let (has_stream_options, include_usage) = match obj.get("stream_options") {
        None => (false, false),
        Some(v) if v.is_null() => (true, false),
        Some(v) => {
            let o =
                v.as_object().ok_or_else(|| bad("`stream_options` must be an object.", "stream_options"))?;
            refuse_duplicates(o.iter().map(|(k, _)| k), &WATCHED_STREAM_OPTIONS, "stream_options")?;
            let inc = match o.get("include_usage") {
                None => false,
                Some(b) if b.is_null() => false,
                Some(b) => b.as_bool().ok_or_else(|| {
                    bad("`stream_options.include_usage` must be a boolean.", "stream_options")
                })?,
            };
            (true, inc)
        }
    };
    let mut prompts = 1;
    match endpoint {
        Endpoint::ChatCompletions => match obj.get("messages") {
            Some(m) if m.as_array().is_some_and(|a| !a.is_empty()) => {}
            _ => return Err(bad("`messages` must be a non-empty array.", "messages")),
        },
        Endpoint::Completions => match obj.get("prompt") {
            None => return Err(bad("You must provide a prompt.", "prompt")),
            Some(p) => {
                if let Some(list) = p.as_array() {
                    if list.is_empty() {
                        return Err(bad("`prompt` must not be an empty list.", "prompt"));
                    }
                    // A list of strings, or of token lists, is one prompt each; a list of token ids is
                    // one prompt.
                    if list.iter().any(|item| item.as_str().is_some() || item.as_array().is_some()) {
                        prompts = list.len() as u64;
                    }
                }
            }
        },
        Endpoint::Embeddings => {
            if obj.get("input").is_none() {
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
        has_stream_options,
        n,
        prompts,
        best_of,
    })
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

/// The most [`rewrite`] appends to a body it does not reserialize: `,"stream_options":{"include_usage":true}`
/// and `,"max_tokens":` with a 20-digit number.
pub const APPENDED_MAX: usize = 96;

/// Applies `rw` to `body`, writing the result into `out` (cleared first).
pub fn rewrite(
    body: &[u8],
    inspected: &Inspected,
    rw: Rewrite<'_>,
    out: &mut Vec<u8>,
) -> Result<(), ApiError> {
    out.clear();
    // Appending members is enough unless a member that exists must change.
    let changes_member = (rw.force_include_usage && inspected.has_stream_options)
        || rw.model.is_some()
        || rw.max_tokens.is_some_and(|n| {
            inspected.max_tokens.is_some() || inspected.max_completion_tokens.is_some_and(|m| m > n)
        });
    if changes_member {
        return reserialize(body, rw, out);
    }
    // Append members before the object's closing brace.
    let end = body
        .iter()
        .rposition(|&b| b == b'}')
        .ok_or_else(|| ApiError::bad_request("Invalid JSON body.", None))?;
    let before = &body[..end];
    let empty = before.iter().rev().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
    out.extend_from_slice(before);
    let mut sep = if empty { "" } else { "," };
    if rw.force_include_usage {
        out.extend_from_slice(sep.as_bytes());
        out.extend_from_slice(br#""stream_options":{"include_usage":true}"#);
        sep = ",";
    }
    if let Some(n) = rw.max_tokens {
        out.extend_from_slice(sep.as_bytes());
        out.extend_from_slice(br#""max_tokens":"#);
        out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
    }
    out.extend_from_slice(&body[end..]);
    Ok(())
}

fn reserialize(body: &[u8], rw: Rewrite<'_>, out: &mut Vec<u8>) -> Result<(), ApiError> {
    let mut v: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("Invalid JSON body: {e}"), None))?;
    let obj = v.as_object_mut().ok_or_else(|| ApiError::bad_request("Invalid JSON body.", None))?;
    if let Some(model) = rw.model {
        obj.insert("model".into(), model.into());
    }
    if rw.force_include_usage {
        let so = obj.entry("stream_options").or_insert_with(|| serde_json::json!({}));
        if !so.is_object() {
            *so = serde_json::json!({});
        }
        if let Some(so) = so.as_object_mut() {
            so.insert("include_usage".into(), serde_json::Value::Bool(true));
        }
    }
    if let Some(n) = rw.max_tokens {
        obj.insert("max_tokens".into(), n.into());
        if let Some(m) = obj.get_mut("max_completion_tokens")
            && m.as_u64().is_some_and(|v| v > n)
        {
            *m = n.into();
        }
    }
    serde_json::to_writer(&mut *out, &v).map_err(|e| ApiError::Internal(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn insp(body: &str) -> Result<Inspected, ApiError> {
        inspect(Endpoint::ChatCompletions, body.as_bytes(), &mut JsonScratch::default())
    }

    #[test]
    fn reads_the_fields() {
        let i =
            insp(r#"{"model":"m","stream":true,"max_tokens":5,"messages":[{"role":"user","content":"hi"}]}"#)
                .unwrap();
        assert_eq!((i.model.as_str(), i.stream, i.max_tokens, i.include_usage), ("m", true, Some(5), false));
        let i = insp(r#"{"model":"m","max_completion_tokens":7,"max_tokens":5,"messages":[1],"stream_options":{"include_usage":true}}"#).unwrap();
        assert_eq!((i.max_tokens, i.max_completion_tokens), (Some(5), Some(7)));
        assert_eq!((i.include_usage, i.has_stream_options), (true, true));
        let chat = Endpoint::ChatCompletions;
        assert_eq!(i.client_max_tokens(chat), Some(7), "a chat node may honour either: the larger counts");
        assert!(i.bounded_by(chat, 7) && !i.bounded_by(chat, 6));
    }

    fn completions(body: &str) -> Inspected {
        inspect(Endpoint::Completions, body.as_bytes(), &mut JsonScratch::default()).unwrap()
    }

    #[test]
    fn a_completions_prompt_list_gets_a_completion_per_prompt() {
        let c = Endpoint::Completions;
        assert_eq!(completions(r#"{"model":"m","prompt":"one"}"#).choices(c), 1);
        assert_eq!(completions(r#"{"model":"m","prompt":["a","b","c"],"n":2}"#).choices(c), 6);
        assert_eq!(completions(r#"{"model":"m","prompt":[[1,2],[3]]}"#).choices(c), 2);
        assert_eq!(completions(r#"{"model":"m","prompt":[1,2,3]}"#).choices(c), 1, "one prompt of token ids");
        assert_eq!(completions(r#"{"model":"m","prompt":"x","n":2,"best_of":5}"#).choices(c), 5);
        assert_eq!(
            inspect(c, br#"{"model":"m","prompt":[]}"#, &mut JsonScratch::default()).unwrap_err().param(),
            Some("prompt")
        );
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
        let i = inspect(chat, body, &mut JsonScratch::default()).unwrap();
        let rw = Rewrite::for_body(chat, &i, Some(700), "m");
        let mut out = Vec::new();
        rewrite(body, &i, rw, &mut out).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!((v["max_tokens"].as_u64(), v["max_completion_tokens"].as_u64()), (Some(700), Some(700)));
        let unset = inspect(chat, br#"{"model":"m","messages":[1]}"#, &mut JsonScratch::default()).unwrap();
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
    fn scratch_is_reused_across_documents() {
        let mut scratch = JsonScratch::default();
        for i in 0..3 {
            let body = format!(
                r#"{{"model":"m{i}","messages":[{{"role":"user","content":"{}"}}]}}"#,
                "x".repeat(i * 100)
            );
            assert_eq!(
                inspect(Endpoint::ChatCompletions, body.as_bytes(), &mut scratch).unwrap().model,
                format!("m{i}")
            );
        }
        assert!(inspect(Endpoint::ChatCompletions, b"{", &mut scratch).is_err());
        assert_eq!(
            inspect(Endpoint::ChatCompletions, br#"{"model":"z","messages":[1]}"#, &mut scratch)
                .unwrap()
                .model,
            "z"
        );
    }

    #[test]
    fn appends_members_and_keeps_the_rest() {
        let body = br#"{"model":"m","stream":true,"messages":[{"role":"user","content":"}"}]}  "#;
        let i = inspect(Endpoint::ChatCompletions, body, &mut JsonScratch::default()).unwrap();
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
        let i = inspect(Endpoint::ChatCompletions, body, &mut JsonScratch::default()).unwrap();
        assert!(Rewrite::for_body(Endpoint::ChatCompletions, &i, None, "kimi").is_noop());
        let rw = Rewrite::for_body(Endpoint::ChatCompletions, &i, None, "moonshotai/Kimi-K2.6");
        let mut out = Vec::new();
        rewrite(body, &i, rw, &mut out).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v, serde_json::json!({"model": "moonshotai/Kimi-K2.6", "messages": [1]}));
    }

    #[test]
    fn reserializes_existing_stream_options() {
        let body =
            br#"{"model":"m","stream":true,"messages":[1],"stream_options":{"include_usage":false,"x":1}}"#;
        let i = inspect(Endpoint::ChatCompletions, body, &mut JsonScratch::default()).unwrap();
        let mut out = Vec::new();
        rewrite(body, &i, Rewrite { force_include_usage: true, max_tokens: None, model: None }, &mut out)
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["stream_options"], serde_json::json!({"include_usage": true, "x": 1}));
    }
}
