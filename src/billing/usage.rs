//! Token usage as the upstream reports it: the `usage` object of a completion body or of a stream's
//! usage chunk.
//!
//! # Design
//! [`UsageScanner`] finds the top-level `"usage"` member of a JSON document as its bytes pass, without
//! holding the document: it tracks only string/escape state and nesting depth, and copies just the value
//! of that one member (bounded by [`MAX_USAGE_BYTES`]). So a multi-megabyte embeddings answer is forwarded
//! as it arrives and still billed from its usage.
//!
//! # Performance
//! Inside strings (where almost all bytes of a completion are) it skips ahead with `memchr2`.
use crate::model::Usage;

/// A usage object longer than this is not a usage object.
pub const MAX_USAGE_BYTES: usize = 4096;

/// Parses a usage object (`{"prompt_tokens":…,"completion_tokens":…}`, also accepting the
/// `input_tokens`/`output_tokens` spelling). `None` for `null`, non-objects or missing counts.
pub fn parse_usage_object(bytes: &[u8]) -> Option<Usage> {
    use simd_json::prelude::*;
    let mut copy = bytes.to_vec();
    let value = simd_json::to_borrowed_value(&mut copy).ok()?;
    let obj = value.as_object()?;
    let get = |a: &str, b: &str| obj.get(a).or_else(|| obj.get(b)).and_then(|v| v.as_u64());
    let prompt_tokens = get("prompt_tokens", "input_tokens");
    let completion_tokens = get("completion_tokens", "output_tokens");
    if prompt_tokens.is_none() && completion_tokens.is_none() {
        return None;
    }
    Some(Usage {
        prompt_tokens: prompt_tokens.unwrap_or(0),
        completion_tokens: completion_tokens.unwrap_or(0),
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// Before the top-level value.
    Start,
    /// Inside the top-level object, where a key may start.
    Key,
    /// Inside a top-level key string.
    InKey,
    /// After a top-level key, before its `:`.
    Colon,
    /// Inside a top-level member's value (possibly nested), until `,` or `}` at depth 1.
    Value,
    /// The top-level value ended (or was not an object): ignore the rest.
    End,
}

/// Streaming extractor of the top-level `usage` member. Feed every body byte in order, then
/// read [`UsageScanner::usage`].
#[derive(Debug, Clone)]
pub struct UsageScanner {
    expect: Expect,
    depth: u32,
    in_string: bool,
    escape: bool,
    key: [u8; 8],
    key_len: usize,
    capturing: bool,
    captured: Vec<u8>,
    result: Option<Usage>,
}

impl Default for UsageScanner {
    fn default() -> Self {
        Self::new()
    }
}

impl UsageScanner {
    pub fn new() -> Self {
        Self {
            expect: Expect::Start,
            depth: 0,
            in_string: false,
            escape: false,
            key: [0; 8],
            key_len: 0,
            capturing: false,
            captured: Vec::new(),
            result: None,
        }
    }

    /// Scans the next piece of the document.
    pub fn feed(&mut self, mut input: &[u8]) {
        while !input.is_empty() {
            if self.expect == Expect::End {
                return;
            }
            if self.in_string && !self.escape && self.expect != Expect::InKey {
                // Fast path: jump to the next quote or backslash.
                match memchr::memchr2(b'"', b'\\', input) {
                    None => {
                        self.capture(input);
                        return;
                    }
                    Some(p) => {
                        self.capture(&input[..p]);
                        input = &input[p..];
                    }
                }
            }
            let b = input[0];
            input = &input[1..];
            self.step(b);
        }
    }

    fn capture(&mut self, bytes: &[u8]) {
        if self.capturing {
            if self.captured.len() + bytes.len() > MAX_USAGE_BYTES {
                self.capturing = false;
                self.captured.clear();
            } else {
                self.captured.extend_from_slice(bytes);
            }
        }
    }

    fn step(&mut self, b: u8) {
        if self.in_string {
            if self.expect == Expect::InKey {
                self.step_key(b);
                return;
            }
            self.capture(&[b]);
            if self.escape {
                self.escape = false;
            } else if b == b'\\' {
                self.escape = true;
            } else if b == b'"' {
                self.in_string = false;
            }
            return;
        }
        match self.expect {
            Expect::Start => match b {
                b'{' => {
                    self.depth = 1;
                    self.expect = Expect::Key;
                }
                b' ' | b'\t' | b'\r' | b'\n' => {}
                _ => self.expect = Expect::End,
            },
            Expect::Key => match b {
                b'"' => {
                    self.in_string = true;
                    self.expect = Expect::InKey;
                    self.key_len = 0;
                }
                b'}' => self.expect = Expect::End,
                _ => {}
            },
            Expect::InKey => {}
            Expect::Colon => {
                if b == b':' {
                    self.expect = Expect::Value;
                    if self.key_len == 5 && &self.key[..5] == b"usage" {
                        self.capturing = true;
                        self.captured.reserve(256);
                        self.captured.clear();
                    }
                }
            }
            Expect::Value => self.step_value(b),
            Expect::End => {}
        }
    }

    fn step_key(&mut self, b: u8) {
        if self.escape {
            self.escape = false;
            self.key_len = usize::MAX;
        } else if b == b'\\' {
            self.escape = true;
        } else if b == b'"' {
            self.in_string = false;
            self.expect = Expect::Colon;
        } else if self.key_len < self.key.len() {
            self.key[self.key_len] = b;
            self.key_len += 1;
        } else {
            self.key_len = usize::MAX;
        }
    }

    fn step_value(&mut self, b: u8) {
        match b {
            b'"' => {
                self.in_string = true;
                self.capture(&[b]);
            }
            b'{' | b'[' => {
                self.depth += 1;
                self.capture(&[b]);
            }
            b'}' | b']' if self.depth > 1 => {
                self.depth -= 1;
                self.capture(&[b]);
            }
            b',' | b'}' if self.depth == 1 => {
                if self.capturing {
                    self.capturing = false;
                    if let Some(u) = parse_usage_object(&self.captured) {
                        self.result = Some(u);
                    }
                    self.captured.clear();
                }
                self.expect = if b == b',' { Expect::Key } else { Expect::End };
            }
            _ => self.capture(&[b]),
        }
    }

    /// The last top-level usage seen so far.
    pub fn usage(&self) -> Option<Usage> {
        self.result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(doc: &[u8], step: usize) -> Option<Usage> {
        let mut s = UsageScanner::new();
        for piece in doc.chunks(step.max(1)) {
            s.feed(piece);
        }
        s.usage()
    }

    #[test]
    fn finds_top_level_usage_across_every_split() {
        let doc = br#"{"id":"x","choices":[{"message":{"content":"a \"usage\": {\"prompt_tokens\": 99} }"}}],
            "usage" : { "prompt_tokens": 12, "completion_tokens": 34, "total_tokens": 46 }, "z": [1,{"usage":{"prompt_tokens":7}}]}"#;
        for step in 1..doc.len() {
            assert_eq!(
                scan(doc, step),
                Some(Usage { prompt_tokens: 12, completion_tokens: 34 }),
                "step {step}"
            );
        }
    }

    #[test]
    fn ignores_nested_and_null_usage() {
        assert_eq!(scan(br#"{"a":{"usage":{"prompt_tokens":1}}}"#, 100), None);
        assert_eq!(scan(br#"{"usage":null}"#, 100), None);
        assert_eq!(scan(br#"[{"usage":{"prompt_tokens":1}}]"#, 100), None);
        assert_eq!(scan(b"", 100), None);
        assert_eq!(scan(b"not json", 100), None);
    }

    #[test]
    fn escaped_keys_do_not_match() {
        assert_eq!(scan(br#"{"usag\u0065":{"prompt_tokens":1}}"#, 100), None);
        assert_eq!(scan(br#"{"usage_x":{"prompt_tokens":1}}"#, 100), None);
    }

    #[test]
    fn last_member_without_trailing_comma() {
        assert_eq!(
            scan(br#"{"usage":{"input_tokens":3,"output_tokens":4}}"#, 3),
            Some(Usage { prompt_tokens: 3, completion_tokens: 4 })
        );
    }

    #[test]
    fn oversized_usage_is_dropped() {
        let big = format!(r#"{{"usage":{{"prompt_tokens":1,"pad":"{}"}}}}"#, "x".repeat(MAX_USAGE_BYTES));
        assert_eq!(scan(big.as_bytes(), 64), None);
    }
}
