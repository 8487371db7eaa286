//! Inference request bodies: what the gateway needs to know from them, and the few rewrites it makes.
//!
//! # Design
//! simd-json parses in place, so it parses a copy (into a per-core scratch buffer that is reused). The
//! original bytes are what the node receives, except where a field must change: `stream_options.
//! include_usage` is forced on for streams (so the stream can be billed), and a default `max_tokens` is
//! added where the client sent none (so the hold is a true upper bound). A rewrite appends members before
//! the closing brace; only when `stream_options` already exists is the document re-serialized.

use crate::error::ApiError;
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
    /// `max_completion_tokens`, else `max_tokens`.
    pub max_tokens: Option<u64>,
    /// The client asked for `stream_options.include_usage: true`.
    pub include_usage: bool,
    /// A `stream_options` member exists at all.
    pub has_stream_options: bool,
    /// `n` (number of choices), 1 when absent.
    pub n: u64,
}

fn bad(message: &str, param: &str) -> ApiError {
    ApiError::bad_request(message, Some(param))
}

/// Reusable parse state: the copy simd-json parses in place, its buffers and tape. One per core.
#[derive(Default)]
pub struct JsonScratch {
    copy: Vec<u8>,
    buffers: simd_json::Buffers,
    tape: Option<simd_json::Tape<'static>>,
}

impl JsonScratch {
    /// Frees the parse state when it grew past `keep` bytes (after a large body), so a core does not keep
    /// three copies of the largest body it ever parsed.
    pub fn shrink(&mut self, keep: usize) {
        if self.copy.capacity() > keep {
            *self = Self::default();
        }
    }
}

impl std::fmt::Debug for JsonScratch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JsonScratch").field("copy_capacity", &self.copy.capacity()).finish()
    }
}

/// Members the gateway acts on: a duplicate would let the gateway and the node read different values
/// (simd-json keeps the first, most node servers the last), so duplicates are refused.
const WATCHED: [&str; 7] =
    ["model", "stream", "max_tokens", "max_completion_tokens", "stream_options", "n", "messages"];

/// Parses a copy of `body` and validates the fields the gateway depends on.
pub fn inspect(endpoint: Endpoint, body: &[u8], scratch: &mut JsonScratch) -> Result<Inspected, ApiError> {
    scratch.copy.clear();
    scratch.copy.extend_from_slice(body);
    let mut tape = scratch.tape.take().unwrap_or_else(simd_json::Tape::null).reset();
    let result = match simd_json::fill_tape(&mut scratch.copy, &mut scratch.buffers, &mut tape) {
        Ok(()) => inspect_value(endpoint, tape.as_value()),
        Err(e) => Err(ApiError::bad_request(format!("The request body is not valid JSON: {e}"), None)),
    };
    scratch.tape = Some(tape.reset());
    result
}

fn inspect_value(endpoint: Endpoint, value: simd_json::tape::Value<'_, '_>) -> Result<Inspected, ApiError> {
    let obj = value
        .as_object()
        .ok_or_else(|| ApiError::bad_request("The request body must be a JSON object.", None))?;
    let mut seen = [0u8; WATCHED.len()];
    for (k, _) in obj.iter() {
        if let Some(i) = WATCHED.iter().position(|w| *w == k) {
            seen[i] += 1;
            if seen[i] > 1 {
                return Err(bad(&format!("`{k}` appears more than once."), k));
            }
        }
    }
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
    let max_tokens = match token_field("max_completion_tokens")? {
        Some(n) => Some(n),
        None => token_field("max_tokens")?,
    };
    let n = match obj.get("n") {
        None => 1,
        Some(v) if v.is_null() => 1,
        Some(v) => match v.as_u64() {
            Some(n) if (1..=128).contains(&n) => n,
            _ => return Err(bad("`n` must be an integer from 1 to 128.", "n")),
        },
    };
    let (has_stream_options, include_usage) = match obj.get("stream_options") {
        None => (false, false),
        Some(v) if v.is_null() => (true, false),
        Some(v) => {
            let o =
                v.as_object().ok_or_else(|| bad("`stream_options` must be an object.", "stream_options"))?;
            let inc = match o.get("include_usage") {
                None => false,
                Some(b) => b.as_bool().ok_or_else(|| {
                    bad("`stream_options.include_usage` must be a boolean.", "stream_options")
                })?,
            };
            (true, inc)
        }
    };
    match endpoint {
        Endpoint::ChatCompletions => match obj.get("messages") {
            Some(m) if m.as_array().is_some_and(|a| !a.is_empty()) => {}
            _ => return Err(bad("`messages` must be a non-empty array.", "messages")),
        },
        Endpoint::Completions => {
            if obj.get("prompt").is_none() {
                return Err(bad("You must provide a prompt.", "prompt"));
            }
        }
        Endpoint::Embeddings => {
            if obj.get("input").is_none() {
                return Err(bad("You must provide an input.", "input"));
            }
        }
    }
    Ok(Inspected { model, stream, max_tokens, include_usage, has_stream_options, n })
}

/// The changes to make before forwarding.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rewrite {
    /// Set `stream_options.include_usage` to true.
    pub force_include_usage: bool,
    /// Add `max_tokens` with this value.
    pub add_max_tokens: Option<u64>,
}

impl Rewrite {
    pub fn is_noop(&self) -> bool {
        !self.force_include_usage && self.add_max_tokens.is_none()
    }
}

/// Applies `rw` to `body`, writing the result into `out` (cleared first).
pub fn rewrite(body: &[u8], inspected: &Inspected, rw: Rewrite, out: &mut Vec<u8>) -> Result<(), ApiError> {
    out.clear();
    if rw.force_include_usage && inspected.has_stream_options {
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
    if let Some(n) = rw.add_max_tokens {
        out.extend_from_slice(sep.as_bytes());
        out.extend_from_slice(br#""max_tokens":"#);
        out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
    }
    out.extend_from_slice(&body[end..]);
    Ok(())
}

fn reserialize(body: &[u8], rw: Rewrite, out: &mut Vec<u8>) -> Result<(), ApiError> {
    let mut v: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("Invalid JSON body: {e}"), None))?;
    let obj = v.as_object_mut().ok_or_else(|| ApiError::bad_request("Invalid JSON body.", None))?;
    if rw.force_include_usage {
        let so = obj.entry("stream_options").or_insert_with(|| serde_json::json!({}));
        if !so.is_object() {
            *so = serde_json::json!({});
        }
        if let Some(so) = so.as_object_mut() {
            so.insert("include_usage".into(), serde_json::Value::Bool(true));
        }
    }
    if let Some(n) = rw.add_max_tokens {
        obj.insert("max_tokens".into(), n.into());
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
        assert_eq!((i.max_tokens, i.include_usage, i.has_stream_options), (Some(7), true, true));
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
    fn shrink_frees_a_scratch_grown_by_a_large_body() {
        let mut scratch = JsonScratch::default();
        let body =
            format!(r#"{{"model":"m","messages":[{{"role":"user","content":"{}"}}]}}"#, "x".repeat(4 << 20));
        inspect(Endpoint::ChatCompletions, body.as_bytes(), &mut scratch).unwrap();
        scratch.shrink(8 << 20);
        assert!(scratch.copy.capacity() >= 4 << 20, "kept while within the bound");
        scratch.shrink(1 << 20);
        assert_eq!(scratch.copy.capacity(), 0);
        assert_eq!(inspect(Endpoint::ChatCompletions, body.as_bytes(), &mut scratch).unwrap().model, "m");
    }

    #[test]
    fn appends_members_and_keeps_the_rest() {
        let body = br#"{"model":"m","stream":true,"messages":[{"role":"user","content":"}"}]}  "#;
        let i = inspect(Endpoint::ChatCompletions, body, &mut JsonScratch::default()).unwrap();
        let mut out = Vec::new();
        rewrite(body, &i, Rewrite { force_include_usage: true, add_max_tokens: Some(9) }, &mut out).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["stream_options"]["include_usage"], true);
        assert_eq!(v["max_tokens"], 9);
        assert_eq!(v["messages"][0]["content"], "}");
        assert!(out.starts_with(br#"{"model":"m","stream":true,"messages""#));
    }

    #[test]
    fn reserializes_existing_stream_options() {
        let body =
            br#"{"model":"m","stream":true,"messages":[1],"stream_options":{"include_usage":false,"x":1}}"#;
        let i = inspect(Endpoint::ChatCompletions, body, &mut JsonScratch::default()).unwrap();
        let mut out = Vec::new();
        rewrite(body, &i, Rewrite { force_include_usage: true, add_max_tokens: None }, &mut out).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["stream_options"], serde_json::json!({"include_usage": true, "x": 1}));
    }
}
