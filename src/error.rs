//! The one error type at the edge: each variant knows its HTTP status, its OpenAI `type` and `code`, the
//! extra headers it carries, and how loudly to log it. Handlers return it; nobody writes error JSON by hand.

use serde_json::{Map, Value, json};

/// What the `x-ratelimit-*` headers and `Retry-After` say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimitInfo {
    pub limit: u32,
    pub remaining: u32,
    /// Seconds until the limit has fully reset.
    pub reset_secs: u32,
    /// Seconds until the next request would be admitted.
    pub retry_after_secs: u32,
}

/// How an error's body is written: in the client's dialect, so its SDK raises the right exception.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ErrorShape {
    /// `{"error":{"message","type","code","param",…}}`
    #[default]
    OpenAi,
    /// `{"type":"error","error":{"type","message",…}}`, with the types Anthropic's SDKs map by status.
    Anthropic,
}

/// Which side of the gateway a failure came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Downstream,
    Upstream,
    Internal,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    #[error("Invalid API key provided.")]
    InvalidApiKey,
    #[error("This API key has expired.")]
    KeyExpired,
    #[error("This API key is paused.")]
    KeyPaused,
    #[error("Management keys cannot be used for inference; create a child key.")]
    ManagementKeyNotAllowed,
    /// The model (an id, aliases resolved) is not in the key's `allowed_models`.
    #[error("This API key may not use the model `{0}`.")]
    ModelNotAllowed(String),
    /// What is left of the key's daily and monthly limits; `None`: that window has no limit.
    #[error("This child key has reached its spending limit.")]
    /// What remains of each window; `None` for a window without a limit.
    ChildKeyLimit { daily_remaining: Option<u64>, monthly_remaining: Option<u64> },
    /// Only holds of requests in flight stand in the way; they are released as those requests end.
    #[error(
        "This request's budget is taken by requests in flight ({held_ngonka} ngonka held); retry once they finish."
    )]
    BudgetInFlight { held_ngonka: u64 },
    #[error("The account balance cannot cover this request.")]
    InsufficientBalance,
    #[error("Rate limit reached: {} requests per minute.", .0.limit)]
    RateLimited(RateLimitInfo),
    #[error("{message}")]
    BadRequest { message: String, param: Option<String> },
    #[error("The model `{0}` does not exist or is not served by this gateway.")]
    ModelNotFound(String),
    /// Prices set for a model that is neither configured nor listed by a node.
    #[error(
        "The model `{0}` is not in the config's [[models]] and no node lists it. To add a model, add a \
         [[models]] entry (id, context_length, prices) to the config file and restart; a model served \
         by a node that lists its models can be priced here directly."
    )]
    ModelNotConfigured(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Forbidden(&'static str, String),
    /// `allow`: the methods the path answers, the `Allow` header of the 405 (`"GET, HEAD"`).
    #[error("Method not allowed; this path answers {allow}.")]
    MethodNotAllowed { allow: &'static str },
    #[error("Request body too large.")]
    PayloadTooLarge,
    /// A `Content-Encoding` the gateway does not decode (the message names it).
    #[error("{0}")]
    UnsupportedEncoding(String),
    /// A `previous_response_id` that names no stored response of the key's account (or an expired one).
    #[error("Previous response with id '{0}' not found.")]
    PreviousResponseNotFound(String),
    #[error("Timed out reading the request.")]
    RequestTimeout,
    #[error("{0}")]
    Conflict(String),
    /// A direct key is a chain account: its private key cannot be replaced.
    #[error(
        "A direct key cannot be rotated: its private key is the Gonka account itself. Archive this key \
         (POST /api/direct-keys/{{id}}/archive sweeps its float back) and create a new one."
    )]
    DirectKeyCannotBeRotated,
    /// A credit's reference was used before with another amount.
    #[error(
        "This reference already credited {credited_ngonka} ngonka to this account; a credit of another \
         amount needs a reference of its own."
    )]
    CreditReferenceConflict { credited_ngonka: i64 },
    /// A refund would take back more than what is left of the credit it refunds.
    #[error(
        "This refund is more than what is left of the credit it refunds ({refundable_ngonka} ngonka can \
         still be refunded)."
    )]
    RefundExceedsCredit { refundable_ngonka: i64 },
    /// An account's referrer is set once.
    #[error("This account already has a referrer; a referrer is set once.")]
    ReferrerAlreadySet,
    /// No node could serve: 502 when nodes failed, 503 (with `Retry-After`) when none was available.
    #[error("{message}")]
    UpstreamUnavailable { status: u16, message: String, retry_after_secs: Option<u32> },
    #[error("The upstream did not answer in time.")]
    UpstreamTimeout,
    /// A node's own 4xx answer, passed on with its status and message.
    #[error("{message}")]
    Upstream { status: u16, message: String, kind: String, code: Option<String> },
    #[error("Internal error: {0}")]
    Internal(String),
    #[error("Service is temporarily unavailable: {0}")]
    Unavailable(String),
}

impl ApiError {
    pub fn bad_request(message: impl Into<String>, param: Option<&str>) -> Self {
        Self::BadRequest { message: message.into(), param: param.map(str::to_owned) }
    }

    pub fn status(&self) -> u16 {
        match self {
            Self::InvalidApiKey | Self::KeyExpired => 401,
            Self::ChildKeyLimit { .. } | Self::InsufficientBalance => 402,
            Self::KeyPaused
            | Self::ManagementKeyNotAllowed
            | Self::ModelNotAllowed(_)
            | Self::Forbidden(..) => 403,
            Self::ModelNotFound(_)
            | Self::ModelNotConfigured(_)
            | Self::NotFound(_)
            | Self::PreviousResponseNotFound(_) => 404,
            Self::MethodNotAllowed { .. } => 405,
            Self::Conflict(_)
            | Self::CreditReferenceConflict { .. }
            | Self::RefundExceedsCredit { .. }
            | Self::ReferrerAlreadySet
            | Self::DirectKeyCannotBeRotated => 409,
            Self::PayloadTooLarge => 413,
            Self::UnsupportedEncoding(_) => 415,
            Self::RequestTimeout => 408,
            Self::RateLimited(_) | Self::BudgetInFlight { .. } => 429,
            Self::BadRequest { .. } => 400,
            Self::UpstreamUnavailable { status, .. } => *status,
            Self::UpstreamTimeout => 504,
            Self::Upstream { status, .. } => *status,
            Self::Internal(_) => 500,
            Self::Unavailable(_) => 503,
        }
    }

    /// The OpenAI `error.type`.
    pub fn kind(&self) -> &str {
        match self {
            Self::InvalidApiKey | Self::KeyExpired => "invalid_request_error",
            Self::KeyPaused
            | Self::ManagementKeyNotAllowed
            | Self::ModelNotAllowed(_)
            | Self::Forbidden(..) => "permission_error",
            Self::ChildKeyLimit { .. } => "child_key_limit",
            Self::InsufficientBalance => "insufficient_quota",
            Self::RateLimited(_) | Self::BudgetInFlight { .. } => "rate_limit_error",
            Self::BadRequest { .. }
            | Self::ModelNotFound(_)
            | Self::ModelNotConfigured(_)
            | Self::NotFound(_)
            | Self::MethodNotAllowed { .. }
            | Self::PayloadTooLarge
            | Self::UnsupportedEncoding(_)
            | Self::PreviousResponseNotFound(_)
            | Self::RequestTimeout
            | Self::Conflict(_)
            | Self::CreditReferenceConflict { .. }
            | Self::RefundExceedsCredit { .. }
            | Self::ReferrerAlreadySet
            | Self::DirectKeyCannotBeRotated => "invalid_request_error",
            Self::UpstreamUnavailable { .. } | Self::UpstreamTimeout => "upstream_error",
            Self::Upstream { kind, .. } => kind,
            Self::Internal(_) | Self::Unavailable(_) => "server_error",
        }
    }

    /// The OpenAI `error.code`.
    pub fn code(&self) -> Option<&str> {
        Some(match self {
            Self::InvalidApiKey => "invalid_api_key",
            Self::KeyExpired => "key_expired",
            Self::KeyPaused => "key_paused",
            Self::ManagementKeyNotAllowed => "management_key_not_allowed",
            Self::ModelNotAllowed(_) => "model_not_allowed",
            Self::ChildKeyLimit { .. } => "child_key_limit",
            Self::InsufficientBalance => "insufficient_balance",
            Self::RateLimited(_) => "rate_limit_exceeded",
            Self::BudgetInFlight { .. } => "budget_in_flight",
            Self::BadRequest { .. } => "invalid_request_error",
            Self::ModelNotFound(_) | Self::ModelNotConfigured(_) => "model_not_found",
            Self::NotFound(_) => "not_found",
            Self::Forbidden(code, _) => code,
            Self::MethodNotAllowed { .. } => "method_not_allowed",
            Self::PayloadTooLarge => "request_too_large",
            Self::UnsupportedEncoding(_) => "unsupported_encoding",
            Self::PreviousResponseNotFound(_) => "previous_response_not_found",
            Self::RequestTimeout => "request_timeout",
            Self::Conflict(_) => "conflict",
            Self::CreditReferenceConflict { .. } => "credit_reference_conflict",
            Self::RefundExceedsCredit { .. } => "refund_exceeds_credit",
            Self::ReferrerAlreadySet => "referrer_already_set",
            Self::DirectKeyCannotBeRotated => "direct_key_cannot_be_rotated",
            Self::UpstreamUnavailable { .. } => "upstream_unavailable",
            Self::UpstreamTimeout => "upstream_timeout",
            Self::Upstream { code, .. } => return code.as_deref(),
            Self::Internal(_) => "internal_error",
            Self::Unavailable(_) => "unavailable",
        })
    }

    pub fn param(&self) -> Option<&str> {
        match self {
            Self::BadRequest { param, .. } => param.as_deref(),
            Self::ModelNotFound(_) | Self::ModelNotAllowed(_) => Some("model"),
            Self::PreviousResponseNotFound(_) => Some("previous_response_id"),
            Self::CreditReferenceConflict { .. } => Some("reference"),
            Self::RefundExceedsCredit { .. } => Some("amount_ngonka"),
            _ => None,
        }
    }

    pub fn source(&self) -> Source {
        match self {
            Self::UpstreamUnavailable { .. } | Self::UpstreamTimeout | Self::Upstream { .. } => {
                Source::Upstream
            }
            Self::Internal(_) | Self::Unavailable(_) => Source::Internal,
            _ => Source::Downstream,
        }
    }

    /// How loudly to log it: client mistakes are routine, our own failures are not.
    pub fn log_level(&self) -> log::Level {
        match self.source() {
            Source::Downstream => log::Level::Debug,
            Source::Upstream => log::Level::Warn,
            Source::Internal => log::Level::Error,
        }
    }

    /// Headers the answer carries besides the body's.
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        match self {
            Self::RateLimited(info) => {
                let mut h = rate_limit_headers(info);
                h.push(("Retry-After", info.retry_after_secs.max(1).to_string()));
                h
            }
            Self::UpstreamUnavailable { retry_after_secs: Some(s), .. } => {
                vec![("Retry-After", s.to_string())]
            }
            Self::Unavailable(_) | Self::BudgetInFlight { .. } => vec![("Retry-After", "1".to_owned())],
            Self::MethodNotAllowed { allow } => vec![("Allow", (*allow).to_owned())],
            _ => Vec::new(),
        }
    }

    /// Whether the same request sent again may be answered otherwise: past a rate or a hold of requests in
    /// flight, a timeout, the gateway's or the nodes' failure. A bad key, a spent budget, a bad request or
    /// an unknown model can only fail again.
    pub fn retry_helps(&self) -> bool {
        matches!(self.status(), 408 | 429) || self.status() >= 500
    }

    /// [`ApiError::headers`] of an answer in `shape`. Anthropic's clients also get `x-should-retry: false`
    /// when retrying cannot help: Claude Code otherwise retries a 401 ten times over three minutes.
    pub fn headers_in(&self, shape: ErrorShape) -> Vec<(&'static str, String)> {
        let mut h = self.headers();
        if shape == ErrorShape::Anthropic && !self.retry_helps() {
            h.push(("x-should-retry", "false".to_owned()));
        }
        h
    }

    /// The JSON body in OpenAI's shape: `{"error":{"message","type","code","param",…}}`.
    pub fn body(&self) -> Vec<u8> {
        self.body_in(ErrorShape::OpenAi)
    }

    /// The JSON body in `shape`. Both carry the message, the OpenAI `code` and what a refusal leaves
    /// (`daily_remaining`/`monthly_remaining` of a child key's limit, `held_ngonka` of holds in flight).
    pub fn body_in(&self, shape: ErrorShape) -> Vec<u8> {
        let mut err = Map::new();
        let kind = match shape {
            ErrorShape::OpenAi => self.kind(),
            ErrorShape::Anthropic => self.anthropic_kind(),
        };
        err.insert("type".into(), Value::String(kind.to_owned()));
        err.insert("message".into(), Value::String(self.to_string()));
        err.insert("code".into(), self.code().map_or(Value::Null, |c| Value::String(c.to_owned())));
        if shape == ErrorShape::OpenAi {
            err.insert("param".into(), self.param().map_or(Value::Null, |p| Value::String(p.to_owned())));
        }
        let amount = |v: &Option<u64>| v.map_or(Value::Null, |n| Value::String(n.to_string()));
        if let Self::ChildKeyLimit { daily_remaining, monthly_remaining } = self {
            err.insert("daily_remaining".into(), amount(daily_remaining));
            err.insert("monthly_remaining".into(), amount(monthly_remaining));
        }
        if let Self::BudgetInFlight { held_ngonka } = self {
            err.insert("held_ngonka".into(), Value::String(held_ngonka.to_string()));
        }
        if let Self::RefundExceedsCredit { refundable_ngonka } = self {
            err.insert("refundable_ngonka".into(), Value::String(refundable_ngonka.to_string()));
        }
        let body = match shape {
            ErrorShape::OpenAi => json!({ "error": err }),
            ErrorShape::Anthropic => json!({ "type": "error", "error": err }),
        };
        serde_json::to_vec(&body).unwrap_or_default()
    }

    /// Anthropic's `error.type`, by status as its SDKs map them; a child key's limit keeps its own.
    pub fn anthropic_kind(&self) -> &str {
        match self {
            Self::ChildKeyLimit { .. } => "child_key_limit",
            _ => match self.status() {
                401 => "authentication_error",
                402 => "billing_error",
                403 => "permission_error",
                404 => "not_found_error",
                413 => "request_too_large",
                429 => "rate_limit_error",
                503 | 529 => "overloaded_error",
                504 => "timeout_error",
                s if s >= 500 => "api_error",
                _ => "invalid_request_error",
            },
        }
    }
}

impl RateLimitInfo {
    /// Gives `f` each `x-ratelimit-*-requests` header this stands for, name and value, formatted without
    /// an allocation: the one definition of those headers, on refusals and on successful answers alike.
    pub fn for_each_header(&self, mut f: impl FnMut(&'static str, &[u8])) {
        let mut digits = itoa::Buffer::new();
        f("x-ratelimit-limit-requests", digits.format(self.limit).as_bytes());
        f("x-ratelimit-remaining-requests", digits.format(self.remaining).as_bytes());
        let reset = digits.format(self.reset_secs).as_bytes();
        // A u32's digits and the `s` of seconds.
        let mut value = [0u8; 11];
        value[..reset.len()].copy_from_slice(reset);
        value[reset.len()] = b's';
        f("x-ratelimit-reset-requests", &value[..=reset.len()]);
    }
}

/// The `x-ratelimit-*-requests` headers of `info` as strings (a refusal's headers).
pub fn rate_limit_headers(info: &RateLimitInfo) -> Vec<(&'static str, String)> {
    let mut headers = Vec::with_capacity(4);
    info.for_each_header(|name, value| headers.push((name, String::from_utf8_lossy(value).into_owned())));
    headers
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn child_key_limit_body_is_exact() {
        let e = ApiError::ChildKeyLimit { daily_remaining: Some(0), monthly_remaining: Some(500_000_000) };
        let v: Value = serde_json::from_slice(&e.body()).unwrap();
        assert_eq!(e.status(), 402);
        assert_eq!(v["error"]["type"], "child_key_limit");
        assert_eq!(v["error"]["code"], "child_key_limit");
        assert_eq!(v["error"]["daily_remaining"], "0");
        assert_eq!(v["error"]["monthly_remaining"], "500000000");
        assert!(v["error"]["message"].is_string());
        let unlimited = ApiError::ChildKeyLimit { daily_remaining: Some(0), monthly_remaining: None };
        let v: Value = serde_json::from_slice(&unlimited.body()).unwrap();
        assert_eq!(v["error"]["monthly_remaining"], Value::Null, "a window without a limit is null");
    }

    #[test]
    fn a_budget_held_in_flight_is_a_retryable_429() {
        let e = ApiError::BudgetInFlight { held_ngonka: 1234 };
        assert_eq!((e.status(), e.code()), (429, Some("budget_in_flight")));
        assert!(e.headers().contains(&("Retry-After", "1".to_owned())));
        let v: Value = serde_json::from_slice(&e.body()).unwrap();
        assert_eq!(v["error"]["held_ngonka"], "1234");
    }

    #[test]
    fn child_key_limit_body_shows_a_window_without_a_limit_as_null() {
        let e = ApiError::ChildKeyLimit { daily_remaining: Some(0), monthly_remaining: None };
        let v: Value = serde_json::from_slice(&e.body()).unwrap();
        assert_eq!(v["error"]["daily_remaining"], "0");
        assert!(v["error"]["monthly_remaining"].is_null(), "{v}");
        assert!(!String::from_utf8_lossy(&e.body()).contains(&u64::MAX.to_string()));
    }

    #[test]
    fn anthropic_shaped_errors_carry_the_types_its_sdks_map() {
        let cases = [
            (ApiError::InvalidApiKey, 401, "authentication_error"),
            (ApiError::KeyPaused, 403, "permission_error"),
            (ApiError::ModelNotFound("m".into()), 404, "not_found_error"),
            (ApiError::bad_request("no", None), 400, "invalid_request_error"),
            (ApiError::InsufficientBalance, 402, "billing_error"),
            (ApiError::BudgetInFlight { held_ngonka: 1 }, 429, "rate_limit_error"),
            (ApiError::Unavailable("busy".into()), 503, "overloaded_error"),
            (ApiError::UpstreamTimeout, 504, "timeout_error"),
            (ApiError::Internal("x".into()), 500, "api_error"),
        ];
        for (e, status, kind) in cases {
            let v: Value = serde_json::from_slice(&e.body_in(ErrorShape::Anthropic)).unwrap();
            assert_eq!(
                (e.status(), v["type"].as_str(), v["error"]["type"].as_str()),
                (status, Some("error"), Some(kind))
            );
            assert_eq!(v["error"]["message"], e.to_string());
        }
        let e = ApiError::ChildKeyLimit { daily_remaining: Some(7), monthly_remaining: None };
        let v: Value = serde_json::from_slice(&e.body_in(ErrorShape::Anthropic)).unwrap();
        assert_eq!(
            (v["error"]["type"].as_str(), v["error"]["daily_remaining"].as_str()),
            (Some("child_key_limit"), Some("7"))
        );
        assert!(v["error"]["monthly_remaining"].is_null());
    }

    #[test]
    fn anthropic_clients_are_told_not_to_retry_what_cannot_change() {
        let no_retry = ("x-should-retry", "false".to_owned());
        for e in [ApiError::InvalidApiKey, ApiError::KeyPaused, ApiError::InsufficientBalance] {
            assert!(e.headers_in(ErrorShape::Anthropic).contains(&no_retry), "{e:?}");
            assert!(!e.headers_in(ErrorShape::OpenAi).contains(&no_retry), "{e:?}");
        }
        for e in [ApiError::BudgetInFlight { held_ngonka: 1 }, ApiError::Unavailable("x".into())] {
            assert!(!e.headers_in(ErrorShape::Anthropic).contains(&no_retry), "{e:?}");
        }
    }

    #[test]
    fn a_model_the_key_may_not_use_is_a_403_naming_the_model() {
        let e = ApiError::ModelNotAllowed("m".into());
        assert_eq!((e.status(), e.code(), e.param()), (403, Some("model_not_allowed"), Some("model")));
        let v: Value = serde_json::from_slice(&e.body_in(ErrorShape::Anthropic)).unwrap();
        assert_eq!(v["error"]["type"], "permission_error");
        assert!(!e.retry_helps());
    }

    #[test]
    fn budget_errors_are_402_not_429() {
        assert_eq!(ApiError::InsufficientBalance.status(), 402);
        assert_eq!(ApiError::InsufficientBalance.code(), Some("insufficient_balance"));
    }

    #[test]
    fn method_not_allowed_carries_allow() {
        let e = ApiError::MethodNotAllowed { allow: "GET, HEAD" };
        assert_eq!((e.status(), e.headers()), (405, vec![("Allow", "GET, HEAD".to_owned())]));
    }

    #[test]
    fn rate_limit_carries_headers() {
        let e = ApiError::RateLimited(RateLimitInfo {
            limit: 60,
            remaining: 0,
            reset_secs: 60,
            retry_after_secs: 2,
        });
        let h = e.headers();
        assert!(h.contains(&("Retry-After", "2".to_owned())));
        assert!(h.contains(&("x-ratelimit-limit-requests", "60".to_owned())));
        assert_eq!(e.status(), 429);
    }

    #[test]
    fn rate_limit_headers_hold_the_largest_numbers() {
        let info = RateLimitInfo { limit: u32::MAX, remaining: 7, reset_secs: u32::MAX, retry_after_secs: 1 };
        assert_eq!(
            rate_limit_headers(&info),
            vec![
                ("x-ratelimit-limit-requests", "4294967295".to_owned()),
                ("x-ratelimit-remaining-requests", "7".to_owned()),
                ("x-ratelimit-reset-requests", "4294967295s".to_owned()),
            ]
        );
    }
}
