//! JSON documents of which only a few members matter: one validating pass over the bytes that finds
//! where each top-level member's value is, and reads only the values asked for.
//!
//! # Design
//! A request body is mostly the conversation (a coding agent's is 20-200 KiB), and the gateway needs
//! five small members of it; the node receives the original bytes. [`pick`] checks the whole document
//! against the JSON grammar (RFC 8259: UTF-8, escapes, numbers, nesting), so a body the gateway accepts
//! is one every node parses the same way, but it builds nothing: no tape, no copy, no unescaped string.
//! A string's text is crossed eight bytes at a time to its next quote, backslash or (only in a document
//! that has any) control byte, the bytes that end it or must be looked at. The values picked are
//! [`Value`]s: slices of the document, read on demand.
//!
//! Before this, simd-json parsed a copy of every body (it parses in place): on a 64 KiB prompt its two
//! stages and the copy were about 30 % of the gateway's CPU per request (perf, `loadtest/run`'s
//! `prompt_64k`). `cargo bench --bench body`, four runs on one machine: `inspect_64k` 19.6-21.8 µs
//! against `simd_json_64k` (that copy and parse) 28.1-30.9 µs in the same run, 0.66-0.73 of it;
//! `inspect_small` 148 ns.

use std::borrow::Cow;

/// How deeply arrays and objects may nest: as deeply as serde_json reads (the tests and the fuzz target
/// hold the two to the same answers).
pub const MAX_DEPTH: usize = 127;

/// Where and why a document is not JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Syntax {
    /// Byte offset of the fault.
    pub at: usize,
    pub what: &'static str,
}

impl std::fmt::Display for Syntax {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} at byte {}", self.what, self.at)
    }
}

/// Why [`pick`] found nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PickError {
    /// Not JSON.
    Syntax(Syntax),
    /// JSON, but not an object.
    NotObject,
    /// The member of this index of the names asked for appears more than once.
    Duplicate(usize),
}

/// A value of a document that [`pick`] validated: its bytes, without surrounding whitespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Value<'a>(&'a [u8]);

impl<'a> Value<'a> {
    pub fn bytes(&self) -> &'a [u8] {
        self.0
    }

    pub fn is_null(&self) -> bool {
        self.0 == b"null"
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self.0 {
            b"true" => Some(true),
            b"false" => Some(false),
            _ => None,
        }
    }

    /// An integer from 0 to `u64::MAX` written without fraction or exponent.
    pub fn as_u64(&self) -> Option<u64> {
        if self.0.is_empty() || !self.0.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(self.0).ok()?.parse().ok()
    }

    /// A string's text, borrowed unless it has escapes.
    pub fn as_str(&self) -> Option<Cow<'a, str>> {
        let inner = self.0.strip_prefix(b"\"")?.strip_suffix(b"\"")?;
        if memchr::memchr(b'\\', inner).is_none() {
            // The document was checked to be UTF-8.
            return std::str::from_utf8(inner).ok().map(Cow::Borrowed);
        }
        serde_json::from_slice::<String>(self.0).ok().map(Cow::Owned)
    }

    pub fn is_object(&self) -> bool {
        self.0.first() == Some(&b'{')
    }

    pub fn is_array(&self) -> bool {
        self.0.first() == Some(&b'[')
    }

    /// An array with at least one element.
    pub fn is_filled_array(&self) -> bool {
        self.is_array() && self.0[1..].iter().find(|b| !b.is_ascii_whitespace()) != Some(&b']')
    }

    /// The elements of an array (none for anything else).
    pub fn elements(&self) -> Elements<'a> {
        // Past the `[` (when there is one to be past).
        Elements { scan: Scan { i: 1, ..Scan::checked(self.0) }, done: !self.is_filled_array() }
    }

    /// The members of an object named in `names`, as [`pick`] finds them in a document.
    pub fn pick<const N: usize>(&self, names: &[&str; N]) -> Result<[Option<Value<'a>>; N], PickError> {
        pick(self.0, names)
    }
}

/// The elements of an array [`Value`].
#[derive(Debug)]
pub struct Elements<'a> {
    scan: Scan<'a>,
    done: bool,
}

impl<'a> Iterator for Elements<'a> {
    type Item = Value<'a>;

    fn next(&mut self) -> Option<Value<'a>> {
        if self.done {
            return None;
        }
        self.scan.ws();
        let start = self.scan.i;
        // Validated already: an error here cannot happen, and ends the iteration if it did.
        if self.scan.value().is_err() {
            self.done = true;
            return None;
        }
        let item = Value(&self.scan.b[start..self.scan.i]);
        self.scan.ws();
        match self.scan.peek() {
            Some(b',') => self.scan.i += 1,
            _ => self.done = true,
        }
        Some(item)
    }
}

/// Checks that `doc` is one JSON object and returns the values of its members named in `names`
/// (keys compared after unescaping, as a node reads them). A name given twice in the document is
/// refused: a node might read the other one.
pub fn pick<'a, const N: usize>(
    doc: &'a [u8],
    names: &[&str; N],
) -> Result<[Option<Value<'a>>; N], PickError> {
    let mut s = Scan::start(doc).map_err(PickError::Syntax)?;
    s.ws();
    if s.peek() != Some(b'{') {
        // A report of what is wrong: not JSON at all, or JSON of another kind.
        s.value().map_err(PickError::Syntax)?;
        s.end().map_err(PickError::Syntax)?;
        return Err(PickError::NotObject);
    }
    let mut found = [None; N];
    s.i += 1;
    s.ws();
    if s.peek() == Some(b'}') {
        s.i += 1;
        s.end().map_err(PickError::Syntax)?;
        return Ok(found);
    }
    loop {
        s.ws();
        let key_start = s.i;
        let escaped = s.key().map_err(PickError::Syntax)?;
        // With its quotes.
        let key = &doc[key_start..s.i];
        s.ws();
        s.expect(b':', "expected ':'").map_err(PickError::Syntax)?;
        s.ws();
        let start = s.i;
        // Inside the object: one level down.
        s.value_within(1).map_err(PickError::Syntax)?;
        let value = Value(&doc[start..s.i]);
        let index = if escaped {
            Value(key).as_str().and_then(|k| names.iter().position(|n| *n == k))
        } else {
            names.iter().position(|n| n.as_bytes() == &key[1..key.len() - 1])
        };
        if let Some(i) = index {
            if found[i].is_some() {
                return Err(PickError::Duplicate(i));
            }
            found[i] = Some(value);
        }
        s.ws();
        match s.peek() {
            Some(b',') => s.i += 1,
            Some(b'}') => {
                s.i += 1;
                break;
            }
            _ => return Err(PickError::Syntax(s.fault("expected ',' or '}'"))),
        }
    }
    s.end().map_err(PickError::Syntax)?;
    Ok(found)
}

/// Checks that `doc` is one JSON value.
pub fn validate(doc: &[u8]) -> Result<(), Syntax> {
    let mut s = Scan::start(doc)?;
    s.ws();
    s.value()?;
    s.end()
}

/// A position in a document that was checked to be UTF-8.
#[derive(Debug)]
struct Scan<'a> {
    b: &'a [u8],
    i: usize,
    /// The document has bytes below 0x20 somewhere (whitespace between tokens, or a fault in a string):
    /// only then are strings searched for them. A compact document, as clients send, has none.
    controls: bool,
}

impl<'a> Scan<'a> {
    /// At the start of `doc`, which is checked to be UTF-8 (when it is not ASCII).
    fn start(doc: &'a [u8]) -> Result<Self, Syntax> {
        // One pass that the compiler turns into vector instructions: which kinds of byte are there.
        let (mut controls, mut high) = (false, false);
        for block in doc.chunks(64) {
            let (low, all) =
                block.iter().fold((0u8, 0u8), |(low, all), &b| (low | u8::from(b < 0x20), all | b));
            controls |= low != 0;
            high |= all >= 0x80;
        }
        if high && let Err(e) = std::str::from_utf8(doc) {
            return Err(Syntax { at: e.valid_up_to(), what: "invalid UTF-8" });
        }
        Ok(Self { b: doc, i: 0, controls })
    }

    /// At the start of a value found in a checked document.
    fn checked(value: &'a [u8]) -> Self {
        Self { b: value, i: 0, controls: false }
    }
}

impl Scan<'_> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn fault(&self, what: &'static str) -> Syntax {
        Syntax { at: self.i, what }
    }

    fn ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.peek() {
            self.i += 1;
        }
    }

    fn expect(&mut self, byte: u8, what: &'static str) -> Result<(), Syntax> {
        if self.peek() == Some(byte) {
            self.i += 1;
            Ok(())
        } else {
            Err(self.fault(what))
        }
    }

    /// Nothing but whitespace is left.
    fn end(&mut self) -> Result<(), Syntax> {
        self.ws();
        if self.i == self.b.len() {
            Ok(())
        } else {
            Err(self.fault("unexpected characters after the document"))
        }
    }

    /// A member's key: a string. Whether it has escapes.
    fn key(&mut self) -> Result<bool, Syntax> {
        if self.peek() != Some(b'"') {
            return Err(self.fault("expected a string key"));
        }
        self.string()
    }

    /// A string, from its opening quote to past its closing one. Whether it has escapes.
    fn string(&mut self) -> Result<bool, Syntax> {
        self.i += 1;
        let mut escaped = false;
        loop {
            let rest = &self.b[self.i..];
            let Some(n) = string_stop(rest, self.controls) else {
                self.i = self.b.len();
                return Err(self.fault("unterminated string"));
            };
            self.i += n;
            match self.b[self.i] {
                b'"' => {
                    self.i += 1;
                    return Ok(escaped);
                }
                b'\\' => {}
                _ => return Err(self.fault("control character in a string")),
            }
            escaped = true;
            match self.b.get(self.i + 1) {
                Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => self.i += 2,
                Some(b'u') => {
                    let unit = self.hex4(self.i + 2)?;
                    self.i += 6;
                    if (0xD800..0xDC00).contains(&unit) {
                        // A high surrogate: its low half must follow.
                        let low = if self.b[self.i..].starts_with(b"\\u") {
                            Some(self.hex4(self.i + 2)?)
                        } else {
                            None
                        };
                        if !low.is_some_and(|l| (0xDC00..0xE000).contains(&l)) {
                            return Err(self.fault("unpaired surrogate in a string"));
                        }
                        self.i += 6;
                    } else if (0xDC00..0xE000).contains(&unit) {
                        return Err(self.fault("unpaired surrogate in a string"));
                    }
                }
                _ => return Err(self.fault("invalid escape in a string")),
            }
        }
    }

    fn hex4(&self, at: usize) -> Result<u32, Syntax> {
        let digits = self.b.get(at..at + 4).ok_or(Syntax { at, what: "invalid \\u escape" })?;
        digits.iter().try_fold(0u32, |acc, &d| {
            let v = (d as char).to_digit(16).ok_or(Syntax { at, what: "invalid \\u escape" })?;
            Ok(acc * 16 + v)
        })
    }

    fn digits(&mut self) -> usize {
        let start = self.i;
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.i += 1;
        }
        self.i - start
    }

    fn number(&mut self) -> Result<(), Syntax> {
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        match self.peek() {
            Some(b'0') => self.i += 1,
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => return Err(self.fault("invalid number")),
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            if self.digits() == 0 {
                return Err(self.fault("invalid number"));
            }
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.i += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.i += 1;
            }
            if self.digits() == 0 {
                return Err(self.fault("invalid number"));
            }
        }
        Ok(())
    }

    fn literal(&mut self, word: &[u8]) -> Result<(), Syntax> {
        if self.b[self.i..].starts_with(word) {
            self.i += word.len();
            Ok(())
        } else {
            Err(self.fault("expected a value"))
        }
    }

    /// One value of any kind, from its first byte to past its last; containers without recursion.
    fn value(&mut self) -> Result<(), Syntax> {
        self.value_within(0)
    }

    /// [`Self::value`] inside `outer` open containers.
    fn value_within(&mut self, outer: usize) -> Result<(), Syntax> {
        // Open containers, innermost last: a bit each, set for an object.
        let mut open = [0u64; MAX_DEPTH.div_ceil(64)];
        let mut depth = 0usize;
        loop {
            // A value starts here.
            self.ws();
            let closed = match self.peek() {
                Some(c @ (b'{' | b'[')) => {
                    if outer + depth == MAX_DEPTH {
                        return Err(self.fault("nested too deeply"));
                    }
                    self.i += 1;
                    self.ws();
                    let (object, close) = if c == b'{' { (true, b'}') } else { (false, b']') };
                    if self.peek() == Some(close) {
                        self.i += 1;
                        true
                    } else {
                        let (word, bit) = (depth / 64, 1u64 << (depth % 64));
                        open[word] = if object { open[word] | bit } else { open[word] & !bit };
                        depth += 1;
                        if object {
                            self.key()?;
                            self.ws();
                            self.expect(b':', "expected ':'")?;
                        }
                        false
                    }
                }
                Some(b'"') => {
                    self.string()?;
                    true
                }
                Some(b'-' | b'0'..=b'9') => {
                    self.number()?;
                    true
                }
                Some(b't') => self.literal(b"true").map(|()| true)?,
                Some(b'f') => self.literal(b"false").map(|()| true)?,
                Some(b'n') => self.literal(b"null").map(|()| true)?,
                _ => return Err(self.fault("expected a value")),
            };
            if !closed {
                continue;
            }
            // A value ended: close what it ends, or move to the next one.
            loop {
                if depth == 0 {
                    return Ok(());
                }
                let top = depth - 1;
                let object = open[top / 64] & (1 << (top % 64)) != 0;
                self.ws();
                match self.peek() {
                    Some(b',') => {
                        self.i += 1;
                        if object {
                            self.ws();
                            self.key()?;
                            self.ws();
                            self.expect(b':', "expected ':'")?;
                        }
                        break;
                    }
                    Some(b'}') if object => {
                        self.i += 1;
                        depth -= 1;
                    }
                    Some(b']') if !object => {
                        self.i += 1;
                        depth -= 1;
                    }
                    _ => {
                        return Err(self.fault(if object {
                            "expected ',' or '}'"
                        } else {
                            "expected ',' or ']'"
                        }));
                    }
                }
            }
        }
    }
}

/// The offset in a string's text of the first byte that ends it or needs a look: a quote, a backslash
/// or (when `controls`) a byte below 0x20. Eight bytes at a time in a word: escapes in source code
/// come every few dozen bytes, too close together for a vector search to pay for its start.
fn string_stop(text: &[u8], controls: bool) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // The high bit of each byte of `v` below `n`; exact for the lowest such byte, which is the one read.
    let below = |v: u64, n: u8| v.wrapping_sub(ONES * n as u64) & !v & HIGH;
    let words = text.chunks_exact(8);
    let tail = words.remainder();
    for (k, word) in words.enumerate() {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(word);
        let v = u64::from_le_bytes(bytes);
        let mut hits = below(v ^ (ONES * b'"' as u64), 1) | below(v ^ (ONES * b'\\' as u64), 1);
        if controls {
            hits |= below(v, 0x20);
        }
        if hits != 0 {
            return Some(k * 8 + (hits.trailing_zeros() / 8) as usize);
        }
    }
    let at = text.len() - tail.len();
    tail.iter().position(|&b| b == b'"' || b == b'\\' || (controls && b < 0x20)).map(|p| at + p)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// serde_json is the reference: every document either accepts, both do.
    fn agrees(doc: &str) {
        let theirs = serde_json::from_str::<serde_json::Value>(doc).is_ok();
        assert_eq!(validate(doc.as_bytes()).is_ok(), theirs, "{doc:?}: serde_json says {theirs}");
    }

    #[test]
    fn accepts_and_refuses_what_serde_json_does() {
        for doc in [
            "{}",
            " { } ",
            "[]",
            "[1, -0, 0.5, -1.5e3, 2E+2, 3e-1, 1e10]",
            r#"{"a":[{"b":null,"c":true,"d":false}],"e":"x\"y\\z\/\b\f\n\r\t\u00e9\ud83d\ude00"}"#,
            r#""é 日本 😀""#,
            "[[[[[]]]]]",
            "{\"a\":1}\n",
            "",
            " ",
            "{",
            "}",
            "[1,]",
            "[,1]",
            "{\"a\":1,}",
            "{\"a\" 1}",
            "{a:1}",
            "{\"a\":1 \"b\":2}",
            "[01]",
            "[1.]",
            "[.5]",
            "[1e]",
            "[-]",
            "[+1]",
            "[tru]",
            "[nul]",
            "[True]",
            "\"a\nb\"",
            "\"a\tb\"",
            r#""\x""#,
            r#""\u12""#,
            r#""\u12g4""#,
            r#""\ud83d""#,
            r#""\ude00""#,
            r#""\ud83dx""#,
            r#""unterminated"#,
            "[1] [2]",
            "{\"a\":1}}",
            "[1]]",
            "{\"a\":[1}",
            "[\"a\":1]",
            "NaN",
            "[Infinity]",
        ] {
            agrees(doc);
        }
    }

    /// Documents damaged at random (a byte changed, inserted, removed, the end cut off) are refused or
    /// accepted as serde_json does.
    #[test]
    fn damaged_documents_agree_with_serde_json() {
        let seeds: [&[u8]; 3] = [
            br#"{"model":"m","stream":true,"messages":[{"role":"user","content":"a \"q\" \u00e9\n"}],"n":2}"#,
            br#"[1, -2.5e+3, 0, true, false, null, {"k": [[], {}]}, "\ud83d\ude00"]"#,
            br#"{"a":{"b":{"c":[1,2,{"d":"x\\y\/z"}]}},"e":0.25E-2}"#,
        ];
        let alphabet = b" \t\n{}[]:,\"\\/-+.0123456789eEutrfalsn\x01\x7f\xc3\xa9";
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move |n: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % n as u64) as usize
        };
        for _ in 0..20_000 {
            let mut doc = seeds[next(seeds.len())].to_vec();
            for _ in 0..1 + next(3) {
                let at = next(doc.len());
                match next(4) {
                    0 => doc[at] = alphabet[next(alphabet.len())],
                    1 => doc.insert(at, alphabet[next(alphabet.len())]),
                    2 => drop(doc.remove(at)),
                    _ => doc.truncate(at),
                }
                if doc.is_empty() {
                    break;
                }
            }
            let theirs = serde_json::from_slice::<serde_json::Value>(&doc).is_ok();
            assert_eq!(validate(&doc).is_ok(), theirs, "{:?}", String::from_utf8_lossy(&doc));
        }
    }

    #[test]
    fn refuses_invalid_utf8_and_deep_nesting() {
        assert_eq!(validate(b"\"\xff\"").unwrap_err().what, "invalid UTF-8");
        let deep = "[".repeat(MAX_DEPTH + 1) + &"]".repeat(MAX_DEPTH + 1);
        assert_eq!(validate(deep.as_bytes()).unwrap_err().what, "nested too deeply");
        let fits = "[".repeat(MAX_DEPTH) + &"]".repeat(MAX_DEPTH);
        assert!(validate(fits.as_bytes()).is_ok());
        agrees(&deep);
        agrees(&fits);
        // The object a member is in counts: its value nests one level less.
        let member = |levels: usize| format!(r#"{{"a":{}{}}}"#, "[".repeat(levels), "]".repeat(levels));
        assert!(pick(member(MAX_DEPTH - 1).as_bytes(), &["a"]).is_ok());
        assert!(pick(member(MAX_DEPTH).as_bytes(), &["a"]).is_err());
        agrees(&member(MAX_DEPTH - 1));
        agrees(&member(MAX_DEPTH));
    }

    #[test]
    fn picks_members_by_their_unescaped_name() {
        let doc = br#"{"model":"m","messages":[{"content":"}\"{"}],"\u006dax":7,"x":{"model":"inner"}}"#;
        let [model, max, messages, missing] = pick(doc, &["model", "max", "messages", "none"]).unwrap();
        assert_eq!(model.and_then(|v| v.as_str()).as_deref(), Some("m"));
        assert_eq!(max.and_then(|v| v.as_u64()), Some(7), "a key written with escapes is the same key");
        assert!(messages.is_some_and(|v| v.is_array()));
        assert_eq!(missing, None);
        assert_eq!(pick(br#"{"a":1,"\u0061":2}"#, &["a"]), Err(PickError::Duplicate(0)));
        assert_eq!(pick(b"[1]", &["a"]), Err(PickError::NotObject));
        assert!(matches!(pick(b"{\"a\":", &["a"]), Err(PickError::Syntax(_))));
        assert!(matches!(pick(b"[1", &["a"]), Err(PickError::Syntax(_))), "broken JSON is a syntax error");
    }

    #[test]
    fn reads_values() {
        let [a, b, c, d, e, f] = pick(
            br#"{"a":"x\u00e9","b":18446744073709551615,"c":18446744073709551616,"d":1.0,"e":-1,"f":null}"#,
            &["a", "b", "c", "d", "e", "f"],
        )
        .unwrap()
        .map(Option::unwrap);
        assert_eq!(a.as_str().as_deref(), Some("xé"));
        assert_eq!(b.as_u64(), Some(u64::MAX));
        assert_eq!((c.as_u64(), d.as_u64(), e.as_u64()), (None, None, None));
        assert!(f.is_null() && f.as_bool().is_none() && f.as_str().is_none());
    }

    #[test]
    fn iterates_elements() {
        let [list] = pick(br#"{"l":[ "a" , [1,2] ,{"k":[]}, 3 ]}"#, &["l"]).unwrap();
        let items: Vec<&[u8]> = list.unwrap().elements().map(|v| v.bytes()).collect();
        assert_eq!(items, [&b"\"a\""[..], b"[1,2]", br#"{"k":[]}"#, b"3"]);
        let [empty, scalar] = pick(br#"{"e":[ ],"s":5}"#, &["e", "s"]).unwrap();
        assert_eq!(empty.unwrap().elements().count(), 0);
        assert_eq!(scalar.unwrap().elements().count(), 0);
    }
}
