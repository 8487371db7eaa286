//! Server-sent events, as framing only: where an event ends, what its data is, how to write one. What an
//! event *means* (a usage chunk, a content delta) is for the layers that speak a dialect.
//!
//! # Design
//! The relay keeps an incomplete trailing event until its blank line arrives (a client cannot act on half
//! an event, so this costs no latency) and hands complete events on.

use std::borrow::Cow;

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

/// The data of one complete event: its `data:` lines, joined with LF when there are several (per the
/// SSE spec; rare, and only then copied). `None` for an event without data (comments, keep-alives).
pub fn event_data(event: &[u8]) -> Option<Cow<'_, [u8]>> {
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
    match lines {
        0 => None,
        1 => data.map(Cow::Borrowed),
        _ => Some(Cow::Owned(joined)),
    }
}

/// Appends one event to `out`: an `event:` line when `name` is given, the data (one `data:` line per
/// line of it), and the blank line that ends it.
pub fn write_event(out: &mut Vec<u8>, name: Option<&str>, data: &[u8]) {
    if let Some(name) = name {
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(name.as_bytes());
        out.push(b'\n');
    }
    for line in data.split(|&b| b == b'\n') {
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(line);
        out.push(b'\n');
    }
    out.push(b'\n');
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
    fn data_lines_are_joined_and_events_written() {
        assert_eq!(event_data(b"data: {}\n\n").as_deref(), Some(&b"{}"[..]));
        assert_eq!(event_data(b"data:a\r\ndata: b\r\n\r\n").as_deref(), Some(&b"a\nb"[..]));
        assert_eq!(event_data(b": keep-alive\n\n"), None);
        let mut out = Vec::new();
        write_event(&mut out, Some("message_start"), b"{\"a\":1}");
        assert_eq!(out, b"event: message_start\ndata: {\"a\":1}\n\n");
        assert_eq!(event_end(&out), Some(out.len()));
    }
}
