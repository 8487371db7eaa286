//! What the events of an OpenAI stream mean for billing: the `[DONE]` marker, the usage chunk (and
//! whether it carries nothing else, so that it can be cut when the client did not ask for it), content.
//!
//! # Performance
//! Almost every event is a content chunk, recognised by one `memmem` search for `"usage"` that either
//! misses or finds `"usage":null`; only the real usage chunk is parsed (a copy, with simd-json).

use super::usage::parse_usage_object;
use crate::http::sse::event_data;
use crate::model::Usage;
use memchr::memmem::Finder;
use std::sync::LazyLock;

static USAGE_KEY: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"usage\""));
static CHOICES_KEY: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"choices\""));

/// What one complete event is, for billing and filtering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// `data: [DONE]`.
    Done,
    /// A chunk carrying a non-null `usage`; `choices_empty` when it carries nothing else (the chunk
    /// `stream_options.include_usage` adds, which the relay cuts when the client did not ask for it).
    Usage { usage: Usage, choices_empty: bool },
    /// Any other event with data (content, role, finish, error).
    Data,
    /// Comments, keep-alives, events without data.
    Other,
}

/// Classifies one complete event (as delimited by [`crate::http::sse::event_end`]).
pub fn classify(event: &[u8]) -> EventKind {
    let Some(data) = event_data(event) else { return EventKind::Other };
    let data = &*data;
    if data == b"[DONE]" {
        return EventKind::Done;
    }
    if let Some(usage) = usage_of(data) {
        return EventKind::Usage { usage, choices_empty: choices_empty(data) };
    }
    EventKind::Data
}

/// The non-null usage of a data payload, if it has one.
fn usage_of(data: &[u8]) -> Option<Usage> {
    let mut at = 0;
    while let Some(p) = USAGE_KEY.find(&data[at..]) {
        let after = at + p + b"\"usage\"".len();
        let rest = skip_ws(&data[after..]);
        if let Some(rest) = rest.strip_prefix(b":")
            && skip_ws(rest).first() == Some(&b'{')
        {
            return usage_from_json(data);
        }
        at = after;
    }
    None
}

fn usage_from_json(data: &[u8]) -> Option<Usage> {
    use simd_json::prelude::*;
    let mut copy = data.to_vec();
    let value = simd_json::to_borrowed_value(&mut copy).ok()?;
    let usage = value.as_object()?.get("usage")?;
    let mut raw = Vec::new();
    usage.write(&mut raw).ok()?;
    parse_usage_object(&raw)
}

fn choices_empty(data: &[u8]) -> bool {
    let Some(p) = CHOICES_KEY.find(data) else {
        return true;
    };
    let rest = skip_ws(&data[p + b"\"choices\"".len()..]);
    let Some(rest) = rest.strip_prefix(b":") else {
        return false;
    };
    let rest = skip_ws(rest);
    if rest.starts_with(b"null") {
        return true;
    }
    let Some(rest) = rest.strip_prefix(b"[") else {
        return false;
    };
    skip_ws(rest).first() == Some(&b']')
}

fn skip_ws(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t' | b'\r' | b'\n', rest @ ..] = s {
        s = rest;
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_openai_chunks() {
        let content = br#"data: {"id":"c","choices":[{"index":0,"delta":{"content":"hi"}}],"usage":null}

"#;
        assert_eq!(classify(content), EventKind::Data);
        let usage = br#"data: {"id":"c","choices":[],"usage":{"prompt_tokens":5,"completion_tokens":7,"total_tokens":12}}

"#;
        assert_eq!(
            classify(usage),
            EventKind::Usage { usage: Usage { prompt_tokens: 5, completion_tokens: 7 }, choices_empty: true }
        );
        let both = br#"data: {"choices":[{"delta":{}}], "usage" : {"prompt_tokens":1,"completion_tokens":2}}

"#;
        assert!(matches!(classify(both), EventKind::Usage { choices_empty: false, .. }));
        assert_eq!(classify(b"data: [DONE]\n\n"), EventKind::Done);
        assert_eq!(classify(b": keep-alive\n\n"), EventKind::Other);
    }

    #[test]
    fn joins_multi_line_data() {
        let ev =
            b"data: {\"choices\":[],\ndata: \"usage\":{\"prompt_tokens\":1,\"completion_tokens\":1}}\n\n";
        assert!(matches!(classify(ev), EventKind::Usage { choices_empty: true, .. }));
    }

    #[test]
    fn content_mentioning_usage_is_not_usage() {
        let ev = br#"data: {"choices":[{"delta":{"content":"\"usage\": {"}}]}

"#;
        assert_eq!(classify(ev), EventKind::Data);
    }
}
