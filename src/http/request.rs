//! Request heads: `httparse` for the syntax, then the framing rules of RFC 9112 §6 applied strictly,
//! because a proxy that guesses at framing is a request-smuggling vector.
//!
//! # Errors
//! Ambiguous or malformed framing is refused: Content-Length together with Transfer-Encoding, differing
//! Content-Length values, a Transfer-Encoding other than exactly `chunked`, a head over the size or
//! header-count limit. The caller answers with [`HeadError::status`] and closes the connection.

use super::body::Framing;

/// The largest header count a configuration may allow (the parser's stack array).
pub const MAX_HEADERS_CAP: usize = 256;

/// Size limits for one request.
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    /// Request line plus headers, in bytes.
    pub max_head_bytes: usize,
    /// Number of header fields.
    pub max_headers: usize,
    /// Decoded body, in bytes.
    pub max_body_bytes: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self { max_head_bytes: 16 * 1024, max_headers: 64, max_body_bytes: 10 * 1024 * 1024 }
    }
}

/// Request methods the gateway routes on; anything else is `Other` (answered 405 or 404).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Post,
    Put,
    Patch,
    Delete,
    Options,
    Other,
}

impl Method {
    fn parse(s: &str) -> Self {
        match s {
            "GET" => Self::Get,
            "HEAD" => Self::Head,
            "POST" => Self::Post,
            "PUT" => Self::Put,
            "PATCH" => Self::Patch,
            "DELETE" => Self::Delete,
            "OPTIONS" => Self::Options,
            _ => Self::Other,
        }
    }
}

/// A parsed request head: the few fields the gateway acts on, copied out of the read buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    pub method: Method,
    /// The path without the query string.
    pub path: String,
    /// The raw query string, without `?`.
    pub query: Option<String>,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub version_minor: u8,
    pub framing: Framing,
    /// Whether the client allows the connection to stay open after this exchange.
    pub keep_alive: bool,
    /// `Expect: 100-continue` was sent.
    pub expect_continue: bool,
    /// The raw `Authorization` value.
    pub authorization: Option<String>,
    /// A client's own request id (`X-Client-Request-Id`, as OpenAI's API takes it, else
    /// `X-Request-Id`), when it is short and printable. Echoed and logged; never the id of the usage
    /// record, which the gateway always makes itself.
    pub client_request_id: Option<String>,
    /// The raw `x-api-key` value (Anthropic's clients send their key there).
    pub x_api_key: Option<String>,
    /// The `anthropic-version` value: the client speaks Anthropic's API.
    pub anthropic_version: Option<String>,
    /// The `Content-Encoding` of the body, as sent (several fields joined with `, `).
    pub content_encoding: Option<String>,
    /// The `Origin` value (browsers).
    pub origin: Option<String>,
    /// The `Cookie` value (several fields joined with `; `).
    pub cookie: Option<String>,
    /// The `X-CSRF-Token` value (the dashboard's page sends it with every write).
    pub csrf_token: Option<String>,
    /// The `Sec-Fetch-Site` value (browsers: `same-origin`, `same-site`, `cross-site` or `none`).
    pub fetch_site: Option<String>,
    /// Bytes taken by the head, including the final blank line.
    pub head_len: usize,
}

/// Why a head could not be accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    /// More bytes are needed; not a failure.
    #[error("incomplete request head")]
    Incomplete,
    #[error("request head too large")]
    HeadTooLarge,
    #[error("too many header fields")]
    TooManyHeaders,
    #[error("request body too large")]
    BodyTooLarge,
    #[error("unsupported HTTP version")]
    UnsupportedVersion,
    #[error("unsupported Expect value")]
    UnsupportedExpect,
    #[error("malformed request: {0}")]
    Malformed(&'static str),
}

impl HeadError {
    /// The status to answer before closing the connection.
    pub fn status(self) -> u16 {
        match self {
            Self::HeadTooLarge | Self::TooManyHeaders => 431,
            Self::BodyTooLarge => 413,
            Self::UnsupportedVersion => 505,
            Self::UnsupportedExpect => 417,
            Self::Incomplete | Self::Malformed(_) => 400,
        }
    }
}

const MAX_REQUEST_ID_LEN: usize = 128;

/// Parses one request head from the start of `buf`.
///
/// Returns [`HeadError::Incomplete`] while the head is not complete and still within
/// `limits.max_head_bytes`.
pub fn parse_head(buf: &[u8], limits: &HttpLimits) -> Result<RequestHead, HeadError> {
    let mut storage = [httparse::EMPTY_HEADER; MAX_HEADERS_CAP];
    let max_headers = limits.max_headers.clamp(1, MAX_HEADERS_CAP);
    let mut req = httparse::Request::new(&mut storage[..max_headers]);
    let status = match req.parse(buf) {
        Ok(status) => status,
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooManyHeaders),
        Err(httparse::Error::Version) => return Err(HeadError::UnsupportedVersion),
        Err(_) => return Err(HeadError::Malformed("invalid request line or header")),
    };
    let head_len = match status {
        httparse::Status::Complete(n) => n,
        httparse::Status::Partial => {
            return Err(if buf.len() >= limits.max_head_bytes {
                HeadError::HeadTooLarge
            } else {
                HeadError::Incomplete
            });
        }
    };
    if head_len > limits.max_head_bytes {
        return Err(HeadError::HeadTooLarge);
    }
    let method = Method::parse(req.method.unwrap_or(""));
    let version_minor = req.version.unwrap_or(1);
    let (path, query) = target_path(req.path.unwrap_or(""))
        .ok_or(HeadError::Malformed("request target must be an absolute path or an http(s) URI"))?;
    let (path, query) = (path.to_owned(), query.map(str::to_owned));

    let mut content_length: Option<u64> = None;
    let mut chunked = false;
    let mut transfer_encoding_seen = false;
    let mut conn_close = false;
    let mut conn_keep_alive = false;
    let mut expect_continue = false;
    let mut authorization = None;
    let mut client_request_id = None;
    let mut x_api_key = None;
    let mut anthropic_version = None;
    let mut content_encoding: Option<String> = None;
    let mut origin = None;
    let mut cookie: Option<String> = None;
    let mut csrf_token = None;
    let mut fetch_site = None;
    let mut host_seen = false;
    let text = |v: &[u8]| std::str::from_utf8(trim_ows(v)).ok().map(str::to_owned);
    let join = |into: &mut Option<String>, v: &[u8], sep: &str| {
        if let Some(v) = text(v) {
            match into {
                Some(all) => {
                    all.push_str(sep);
                    all.push_str(&v);
                }
                None => *into = Some(v),
            }
        }
    };

    for h in req.headers.iter() {
        let name = h.name;
        let value = h.value;
        if name.eq_ignore_ascii_case("content-length") {
            let v = parse_content_length(value)?;
            match content_length {
                Some(prev) if prev != v => return Err(HeadError::Malformed("conflicting Content-Length")),
                _ => content_length = Some(v),
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            // Only a single `chunked` coding is accepted; any other coding, list or repetition is refused.
            let v = trim_ows(value);
            if transfer_encoding_seen || !v.eq_ignore_ascii_case(b"chunked") {
                return Err(HeadError::Malformed("unsupported Transfer-Encoding"));
            }
            transfer_encoding_seen = true;
            chunked = true;
        } else if name.eq_ignore_ascii_case("connection") {
            for token in value.split(|&b| b == b',') {
                let token = trim_ows(token);
                if token.eq_ignore_ascii_case(b"close") {
                    conn_close = true;
                } else if token.eq_ignore_ascii_case(b"keep-alive") {
                    conn_keep_alive = true;
                }
            }
        } else if name.eq_ignore_ascii_case("expect") {
            if trim_ows(value).eq_ignore_ascii_case(b"100-continue") {
                expect_continue = true;
            } else {
                return Err(HeadError::UnsupportedExpect);
            }
        } else if name.eq_ignore_ascii_case("authorization") {
            if authorization.is_some() {
                return Err(HeadError::Malformed("repeated Authorization"));
            }
            authorization = std::str::from_utf8(value).ok().map(|s| s.trim().to_owned());
        } else if name.eq_ignore_ascii_case("x-client-request-id")
            || (name.eq_ignore_ascii_case("x-request-id") && client_request_id.is_none())
        {
            let v = trim_ows(value);
            if !v.is_empty()
                && v.len() <= MAX_REQUEST_ID_LEN
                && v.iter().all(|&b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
            {
                client_request_id = std::str::from_utf8(v).ok().map(str::to_owned);
            }
        } else if name.eq_ignore_ascii_case("host") {
            if host_seen {
                return Err(HeadError::Malformed("repeated Host"));
            }
            host_seen = true;
        } else if name.eq_ignore_ascii_case("x-api-key") {
            if x_api_key.is_some() {
                return Err(HeadError::Malformed("repeated x-api-key"));
            }
            x_api_key = text(value);
        } else if name.eq_ignore_ascii_case("anthropic-version") {
            anthropic_version = text(value);
        } else if name.eq_ignore_ascii_case("content-encoding") {
            join(&mut content_encoding, value, ", ");
        } else if name.eq_ignore_ascii_case("origin") {
            origin = origin.or_else(|| text(value));
        } else if name.eq_ignore_ascii_case("cookie") {
            join(&mut cookie, value, "; ");
        } else if name.eq_ignore_ascii_case("x-csrf-token") {
            if csrf_token.is_some() {
                return Err(HeadError::Malformed("repeated X-CSRF-Token"));
            }
            csrf_token = text(value);
        } else if name.eq_ignore_ascii_case("sec-fetch-site") {
            if fetch_site.is_some() {
                return Err(HeadError::Malformed("repeated Sec-Fetch-Site"));
            }
            fetch_site = text(value);
        }
    }

    if version_minor == 1 && !host_seen {
        return Err(HeadError::Malformed("missing Host"));
    }
    if chunked && version_minor == 0 {
        return Err(HeadError::Malformed("Transfer-Encoding in HTTP/1.0"));
    }
    let framing = match (chunked, content_length) {
        (true, Some(_)) => return Err(HeadError::Malformed("both Content-Length and Transfer-Encoding")),
        (true, None) => Framing::Chunked,
        (false, Some(0)) | (false, None) => Framing::Empty,
        (false, Some(n)) => {
            if n > limits.max_body_bytes as u64 {
                return Err(HeadError::BodyTooLarge);
            }
            Framing::Length(n)
        }
    };
    let keep_alive = if version_minor == 0 { conn_keep_alive && !conn_close } else { !conn_close };

    Ok(RequestHead {
        method,
        path,
        query,
        version_minor,
        framing,
        keep_alive,
        expect_continue,
        authorization,
        client_request_id,
        x_api_key,
        anthropic_version,
        content_encoding,
        origin,
        cookie,
        csrf_token,
        fetch_site,
        head_len,
    })
}

/// The path and query of a request target: origin-form (`/v1/models?x=1`) as it is, absolute-form
/// (`http://host:8080/v1/models?x=1`, which RFC 9112 §3.2.2 says a server must accept) without its
/// scheme and authority. `None` for anything else, including an authority with userinfo.
fn target_path(target: &str) -> Option<(&str, Option<&str>)> {
    let origin = if target.starts_with('/') || target == "*" {
        target
    } else {
        let (scheme, rest) = target.split_once("://")?;
        if !(scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https")) {
            return None;
        }
        let end = rest.find(['/', '?']).unwrap_or(rest.len());
        let authority = &rest[..end];
        if authority.is_empty() || authority.contains('@') {
            return None;
        }
        &rest[end..]
    };
    let (path, query) = match origin.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (origin, None),
    };
    Some((if path.is_empty() { "/" } else { path }, query))
}

/// A Content-Length value: digits only, or a list of identical digit strings (RFC 9110 §8.6).
fn parse_content_length(value: &[u8]) -> Result<u64, HeadError> {
    let mut result: Option<u64> = None;
    for part in value.split(|&b| b == b',') {
        let part = trim_ows(part);
        if part.is_empty() || part.len() > 19 || !part.iter().all(u8::is_ascii_digit) {
            return Err(HeadError::Malformed("invalid Content-Length"));
        }
        let mut n: u64 = 0;
        for &d in part {
            n = n * 10 + u64::from(d - b'0');
        }
        match result {
            Some(prev) if prev != n => return Err(HeadError::Malformed("conflicting Content-Length")),
            _ => result = Some(n),
        }
    }
    result.ok_or(HeadError::Malformed("invalid Content-Length"))
}

fn trim_ows(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

/// The value of query parameter `name` in a raw query string, percent-decoded.
pub fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    let query = query?;
    for pair in query.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if percent_decode(k).as_deref() == Some(name) {
            return percent_decode(v);
        }
    }
    None
}

/// Percent-decodes a path or query component (`+` as space).
pub fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<RequestHead, HeadError> {
        parse_head(s.as_bytes(), &HttpLimits::default())
    }

    #[test]
    fn the_dialect_browser_and_encoding_headers_are_kept() {
        let h = parse(
            "POST /v1/messages HTTP/1.1\r\nHost: a\r\nx-api-key: k1\r\nanthropic-version: 2023-06-01\r\n\
             Content-Encoding: gzip\r\nContent-Encoding: zstd\r\nOrigin: http://a\r\nCookie: a=1\r\nCookie: b=2\r\n\r\n",
        )
        .unwrap();
        assert_eq!(h.x_api_key.as_deref(), Some("k1"));
        assert_eq!(h.anthropic_version.as_deref(), Some("2023-06-01"));
        assert_eq!(h.content_encoding.as_deref(), Some("gzip, zstd"));
        assert_eq!(h.origin.as_deref(), Some("http://a"));
        assert_eq!(h.cookie.as_deref(), Some("a=1; b=2"));
        let plain = parse("GET / HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
        assert!(plain.x_api_key.is_none() && plain.content_encoding.is_none() && plain.cookie.is_none());
        assert!(parse("GET / HTTP/1.1\r\nHost: a\r\nx-api-key: a\r\nx-api-key: b\r\n\r\n").is_err());
        assert!(plain.csrf_token.is_none() && plain.fetch_site.is_none());
        let page = parse(
            "POST /api/keys HTTP/1.1\r\nHost: a\r\nX-CSRF-Token: 0af1\r\nSec-Fetch-Site: same-origin\r\n\r\n",
        )
        .unwrap();
        assert_eq!(page.csrf_token.as_deref(), Some("0af1"));
        assert_eq!(page.fetch_site.as_deref(), Some("same-origin"));
        let twice = "GET / HTTP/1.1\r\nHost: a\r\nX-CSRF-Token: a\r\nX-CSRF-Token: b\r\n\r\n";
        assert!(parse(twice).is_err(), "a repeated token is ambiguous");
    }

    #[test]
    fn simple_post_with_length() {
        let h = parse("POST /v1/chat/completions?x=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 12\r\nAuthorization: Bearer k\r\n\r\n")
            .unwrap();
        assert_eq!(h.method, Method::Post);
        assert_eq!(h.path, "/v1/chat/completions");
        assert_eq!(h.query.as_deref(), Some("x=1"));
        assert_eq!(h.framing, Framing::Length(12));
        assert!(h.keep_alive);
        assert_eq!(h.authorization.as_deref(), Some("Bearer k"));
    }

    #[test]
    fn incomplete_is_not_an_error_until_the_limit() {
        assert_eq!(parse("GET / HTTP/1.1\r\nHost: a\r\n"), Err(HeadError::Incomplete));
        let limits = HttpLimits { max_head_bytes: 32, ..HttpLimits::default() };
        let long = format!("GET / HTTP/1.1\r\nHost: {}\r\n", "a".repeat(40));
        assert_eq!(parse_head(long.as_bytes(), &limits), Err(HeadError::HeadTooLarge));
    }

    #[test]
    fn framing_ambiguities_are_refused() {
        let cases = [
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 4\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1x\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999\r\n\r\n",
            "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent Length: 3\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length : 3\r\n\r\n",
            "POST / HTTP/1.1\r\n\r\n",
            "POST ftp://x/ HTTP/1.1\r\nHost: a\r\n\r\n",
            "POST http:///v1/models HTTP/1.1\r\nHost: a\r\n\r\n",
            "POST http://user@x/ HTTP/1.1\r\nHost: a\r\n\r\n",
            "POST v1/models HTTP/1.1\r\nHost: a\r\n\r\n",
        ];
        for c in cases {
            let r = parse(c);
            assert!(matches!(r, Err(HeadError::Malformed(_))), "{c:?} gave {r:?}");
        }
    }

    #[test]
    fn absolute_form_targets_give_their_path_and_query() {
        let h = parse("POST http://127.0.0.1:8080/v1/chat/completions HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
        assert_eq!((h.path.as_str(), h.query), ("/v1/chat/completions", None));
        let h =
            parse("GET HTTPS://gw.example/api/usage?from=2026-01-01 HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
        assert_eq!((h.path.as_str(), h.query.as_deref()), ("/api/usage", Some("from=2026-01-01")));
        let h = parse("GET http://gw.example HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
        assert_eq!((h.path.as_str(), h.query), ("/", None));
        let h = parse("GET http://gw.example?a=1 HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
        assert_eq!((h.path.as_str(), h.query.as_deref()), ("/", Some("a=1")));
    }

    #[test]
    fn repeated_equal_lengths_are_accepted() {
        let h =
            parse("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n").unwrap();
        assert_eq!(h.framing, Framing::Length(3));
    }

    #[test]
    fn limits_map_to_statuses() {
        let limits = HttpLimits { max_headers: 2, max_body_bytes: 10, ..HttpLimits::default() };
        let r = parse_head(b"GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\n\r\n", &limits);
        assert_eq!(r.map_err(HeadError::status), Err(431));
        let r = parse_head(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\n", &limits);
        assert_eq!(r.map_err(HeadError::status), Err(413));
    }

    #[test]
    fn keep_alive_rules() {
        assert!(!parse("GET / HTTP/1.0\r\n\r\n").unwrap().keep_alive);
        assert!(parse("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").unwrap().keep_alive);
        assert!(!parse("GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").unwrap().keep_alive);
    }

    #[test]
    fn client_request_id_is_kept_only_when_safe() {
        let h = parse("GET / HTTP/1.1\r\nHost: a\r\nX-Request-Id: abc-123\r\n\r\n").unwrap();
        assert_eq!(h.client_request_id.as_deref(), Some("abc-123"));
        let h = parse("GET / HTTP/1.1\r\nHost: a\r\nX-Request-Id: a b\r\n\r\n").unwrap();
        assert_eq!(h.client_request_id, None);
        let both = "GET / HTTP/1.1\r\nHost: a\r\nX-Client-Request-Id: mine\r\nX-Request-Id: other\r\n\r\n";
        assert_eq!(parse(both).unwrap().client_request_id.as_deref(), Some("mine"), "OpenAI's header wins");
    }

    #[test]
    fn query_params_decode() {
        assert_eq!(query_param(Some("from=2026-01-01&group_by=day"), "group_by").as_deref(), Some("day"));
        assert_eq!(query_param(Some("a=%41+b"), "a").as_deref(), Some("A b"));
        assert_eq!(query_param(Some("a=%4"), "a"), None);
        assert_eq!(query_param(None, "a"), None);
    }
}
