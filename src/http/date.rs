//! The `Date` header value, formatted once per second per thread rather than once per response.

use std::cell::RefCell;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

struct Cached {
    second: u64,
    value: [u8; 29],
}

thread_local! {
    static CACHE: RefCell<Cached> = const { RefCell::new(Cached { second: u64::MAX, value: [b' '; 29] }) };
}

/// Calls `f` with the current IMF-fixdate (`Sun, 22 Nov 2026 10:00:00 GMT`).
pub fn with_http_date<R>(f: impl FnOnce(&[u8]) -> R) -> R {
    let now = SystemTime::now();
    let second = now.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO).as_secs();
    CACHE.with(|c| {
        let mut c = c.borrow_mut();
        if c.second != second {
            let text = httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(second));
            let bytes = text.as_bytes();
            let n = bytes.len().min(29);
            c.value[..n].copy_from_slice(&bytes[..n]);
            c.second = second;
        }
        f(&c.value)
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn formats_an_imf_fixdate() {
        super::with_http_date(|d| {
            let s = std::str::from_utf8(d).unwrap();
            assert!(s.ends_with(" GMT"), "{s}");
            assert!(httpdate::parse_http_date(s).is_ok());
        });
    }
}
