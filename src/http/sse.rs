//! Server-sent events as OpenAI streams them: event boundaries, and which event is the usage chunk.
//!
//! # Design
//! The relay keeps an incomplete trailing event until its blank line arrives (a client cannot act on half
//! an event, so this costs no latency) and hands complete events here. [`classify`] looks at one event:
//! almost all are content chunks, recognised by one `memmem` search for `"usage"` that either misses or
//! finds `"usage":null`; only the real usage chunk is parsed (a copy, with simd-json).

use crate::billing::usage::parse_usage_object;

use crate::model::Usage;
use memchr::memmem::Finder;
use std::sync::LazyLock;

static USAGE_KEY: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"usage\""));
static CHOICES_KEY: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"choices\""));

/// The index just past the blank line that ends the first complete event in `buf`, if any.
/// Lines end in LF or CRLF.
pub fn event_end(buf: &[u8]) -> Option<usize> {
    let mut from = 0;
    while let Some(p) = memchr::memchr(b'\n', &buf[from..]) {
        let nl = from + p;
        match buf.get(nl + 1) {
            Some(b'\n') => return Some(nl + 2),
            Some(b'\r') => match buf.get(nl + 2) {
                Some(b'\n') => return Some(nl + 3),
                None => return None,
                Some(_) => {}
            },
            None => return None,
            Some(_) => {}
        }
        from = nl + 1;
    }
    None
}

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

/// Classifies one complete event (as delimited by [`event_end`]).
pub fn classify(event: &[u8]) -> EventKind {
    let mut data: Option<&[u8]> = None;
    let mut joined: Vec<u8> = Vec::new();
    let mut lines = 0;
    for line in event.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(rest) = line.strip_prefix(b"data:") else {
            continue;
        };
        let rest = rest.strip_prefix(b" ").unwrap_or(rest);
        lines += 1;
        match lines {
            1 => data = Some(rest),
            2 => {
                // Multi-line data is joined with LF, per the SSE spec. Rare; only then do we copy.
                joined.extend_from_slice(data.unwrap_or_default());
                joined.push(b'\n');
                joined.extend_from_slice(rest);
            }
            _ => {
                joined.push(b'\n');
                joined.extend_from_slice(rest);
            }
        }
    }
    let data = if lines > 1 { joined.as_slice() } else { data.unwrap_or_default() };
    if lines == 0 {
        return EventKind::Other;
    }
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
    fn finds_event_ends() {
        assert_eq!(event_end(b"data: a\n\ndata: b"), Some(9));
        assert_eq!(event_end(b"data: a\r\n\r\nx"), Some(11));
        assert_eq!(event_end(b"data: a\n"), None);
        assert_eq!(event_end(b"data: a\r\n\r"), None);
        assert_eq!(event_end(b"data: a\r\nb\n\n"), Some(12));
        assert_eq!(event_end(b""), None);
    }

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
