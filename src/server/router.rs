//! Routing: one match per listener from (method, path) to a handler. A handler's error becomes its
//! answer here, in the shape of the route's dialect (OpenAI's, or Anthropic's on `/v1/messages`); every
//! exchange ends with one access-log line (but health checks and Claude Code's telemetry).
//!
//! `HEAD` is routed to the `GET` handlers (the exchange then sends the head without the body); a 405
//! names the methods of its path in `Allow`. On the public listener, with `server.cors_allow_origins`
//! set, every answer carries `Access-Control-Allow-Origin` and exposes the headers clients read, and an
//! `OPTIONS` preflight is answered 204 with what browsers ask before calling the API. `/dashboard` is
//! matched only after every API path, so it costs those requests nothing.

use crate::api::inference::dialect::Dialect;
use crate::api::inference::inspect::Endpoint;
use crate::api::{admin, credentials, dashboard, inference, models, responses, route_method};
use crate::error::{ApiError, ErrorShape};
use crate::http::io::{Transport, write_all_deadline};
use crate::http::request::Method;
use crate::http::response::HeadWriter;
use crate::metrics::ModelLabel;
use crate::session::ListenerKind;
use crate::session::exchange::Exchange;
use serde_json::json;
use std::borrow::Cow;
use std::sync::atomic::Ordering;

/// Answers one request. Returns whether the connection may carry another.
///
/// It borrows the exchange its caller made: an `async fn` keeps each argument it takes by value twice in
/// its state (as given and as moved into its body), and the head or the exchange so kept would be held
/// for the request's whole length, a stream's included.
pub async fn dispatch<S: Transport>(ex: &mut Exchange<'_, S>) -> bool {
    let kind = ex.conn.kind;
    let result = match kind {
        ListenerKind::Public => public(ex).await,
        ListenerKind::Admin => admin_routes(ex).await,
    };
    if let Err(e) = result {
        ex.respond_error(&e).await;
    }
    ex.settle_unread_body();
    finish(ex);
    ex.keep_alive
}

/// The methods a public path answers (a 405's `Allow`); `None` for a path the gateway does not have.
fn public_methods(path: &str) -> Option<&'static str> {
    match path {
        "/v1/chat/completions" | "/v1/completions" | "/v1/embeddings" | "/v1/responses" => Some("POST"),
        "/v1/messages" | "/v1/messages/count_tokens" | "/api/event_logging/batch" => Some("POST"),
        p if p.strip_prefix("/v1/responses/").is_some_and(|id| !id.is_empty() && !id.contains('/')) => {
            Some("GET, HEAD, DELETE")
        }
        "/" | "/v1/models" | "/healthz" | "/readyz" => Some("GET, HEAD"),
        p if p.starts_with("/v1/models/") => Some("GET, HEAD"),
        _ => None,
    }
}

/// What browsers may read of an answer besides the CORS-safelisted headers.
const CORS_EXPOSE_HEADERS: &str = "x-request-id, x-client-request-id, x-ratelimit-limit-requests, \
    x-ratelimit-remaining-requests, x-ratelimit-reset-requests, retry-after";
/// Every method of the public API.
const CORS_ALLOW_METHODS: &str = "GET, HEAD, POST, PATCH, DELETE, OPTIONS";
/// The request headers the OpenAI and Anthropic SDKs (Stainless-generated) and browser chat clients
/// send. `authorization` must be named (the `*` wildcard never covers it); `*` covers the rest in
/// browsers that know it, since a preflight's `Access-Control-Request-Headers` is not read.
const CORS_ALLOW_HEADERS: &str = "authorization, content-type, content-encoding, x-api-key, \
    anthropic-version, anthropic-beta, anthropic-dangerous-direct-browser-access, openai-beta, \
    openai-organization, openai-project, x-client-request-id, x-request-id, idempotency-key, \
    x-stainless-arch, x-stainless-async, x-stainless-custom-poll-interval, x-stainless-helper-method, \
    x-stainless-lang, x-stainless-os, x-stainless-package-version, x-stainless-poll-helper, \
    x-stainless-read-timeout, x-stainless-retry-count, x-stainless-runtime, x-stainless-runtime-version, \
    x-stainless-timeout, *";
/// How long a browser may cache a preflight's answer (browsers cap it lower: Chromium at 2 h).
const CORS_MAX_AGE_SECS: &str = "86400";

async fn public<S: Transport>(ex: &mut Exchange<'_, S>) -> Result<(), ApiError> {
    let core = ex.core();
    if let Some(origin) = core.app.settings.cors_allow_origin.as_deref() {
        ex.headers.push(("Access-Control-Allow-Origin", origin.to_owned()));
        ex.headers.push(("Access-Control-Expose-Headers", CORS_EXPOSE_HEADERS.to_owned()));
        if ex.head.method == Method::Options {
            return preflight(ex).await;
        }
    }
    let method = route_method(ex.head.method);
    if (method, ex.head.path.as_str()) == (Method::Post, "/api/event_logging/batch") {
        return event_logging(ex).await;
    }
    if let Some(rest) = ex.head.path.strip_prefix("/api/") {
        let path = rest.to_owned();
        let segs: Vec<&str> = path.split('/').collect();
        return crate::api::account::route(ex, &segs).await;
    }
    match (method, ex.head.path.as_str()) {
        (Method::Post, "/v1/chat/completions") => {
            inference::handle(ex, Dialect::OpenAi(Endpoint::ChatCompletions)).await
        }
        (Method::Post, "/v1/completions") => {
            inference::handle(ex, Dialect::OpenAi(Endpoint::Completions)).await
        }
        (Method::Post, "/v1/embeddings") => {
            inference::handle(ex, Dialect::OpenAi(Endpoint::Embeddings)).await
        }
        (Method::Post, "/v1/messages") => inference::handle(ex, Dialect::AnthropicMessages).await,
        (Method::Post, "/v1/messages/count_tokens") => crate::api::count_tokens::handle(ex).await,
        (Method::Post, "/v1/responses") => inference::handle(ex, Dialect::Responses).await,
        (Method::Get | Method::Delete, path)
            if path.strip_prefix("/v1/responses/").is_some_and(|id| !id.is_empty() && !id.contains('/')) =>
        {
            let id = path["/v1/responses/".len()..].to_owned();
            responses::route(ex, method, id).await
        }
        (Method::Get, "/v1/models") => {
            let shape = models_shape(ex);
            let now = crate::time::unix_secs() as i64;
            let auth = (ex.head.authorization.as_deref(), ex.head.x_api_key.as_deref());
            let key = core.app.keys.authenticate_presented(auth.0, auth.1, now)?;
            let body = models::list(&core.app, shape, key.allowed_models.as_deref());
            ex.respond_json(200, &body).await;
            Ok(())
        }
        (Method::Get, path) if path.starts_with("/v1/models/") => {
            let raw = path["/v1/models/".len()..].to_owned();
            let shape = models_shape(ex);
            let now = crate::time::unix_secs() as i64;
            let auth = (ex.head.authorization.as_deref(), ex.head.x_api_key.as_deref());
            let key = core.app.keys.authenticate_presented(auth.0, auth.1, now)?;
            let raw = raw.as_str();
            let id = models::id_from_path(raw)
                .ok_or_else(|| ApiError::ModelNotFound(raw.chars().take(256).collect()))?;
            let body = models::retrieve(&core.app, &id, shape, key.allowed_models.as_deref())
                .ok_or(ApiError::ModelNotFound(id))?;
            ex.respond_json(200, &body).await;
            Ok(())
        }
        (Method::Get, "/") => {
            ex.log.route = "health";
            ex.respond_json(200, &json!({"status": "ok", "service": "gonka-gateway"})).await;
            Ok(())
        }
        (Method::Get, "/healthz") => health(ex).await,
        (Method::Get, "/readyz") => ready(ex).await,
        (_, path) if dashboard::is_dashboard(path) => dashboard::public(ex).await,
        (_, path) => {
            ex.log.route = "unknown";
            if path.starts_with("/v1/messages") || ex.head.anthropic_version.is_some() {
                ex.error_shape = ErrorShape::Anthropic;
            }
            match public_methods(path) {
                Some(allow) => Err(ApiError::MethodNotAllowed { allow }),
                // A 404 would read as "There's an issue with the selected model" in Claude Code.
                None if misplaced_messages(path) => Err(ApiError::bad_request(
                    format!(
                        "There is no {} here: the Anthropic base URL (ANTHROPIC_BASE_URL) must be the gateway's \
                         root, without /v1.",
                        bounded(path)
                    ),
                    None,
                )),
                None => Err(ApiError::NotFound(format!("Unknown path: {}", bounded(path)))),
            }
        }
    }
}

/// A Messages path under a prefix (`/v1/v1/messages`): a client whose Anthropic base URL ends in `/v1`.
fn misplaced_messages(path: &str) -> bool {
    ["/v1/messages", "/v1/messages/count_tokens"].iter().any(|p| path.len() > p.len() && path.ends_with(p))
}

/// The models routes answer in Anthropic's shape to a client that speaks its API (it sends
/// `anthropic-version`, or its key in `x-api-key`), in OpenAI's otherwise; errors too.
fn models_shape<S: Transport>(ex: &mut Exchange<'_, S>) -> ErrorShape {
    ex.log.route = "models";
    if ex.head.anthropic_version.is_some() || ex.head.x_api_key.is_some() {
        ex.error_shape = ErrorShape::Anthropic;
    }
    ex.error_shape
}

/// Claude Code's telemetry (sent when `CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC` is not set): read and
/// dropped unlogged, so it neither fails nor costs a connection.
async fn event_logging<S: Transport>(ex: &mut Exchange<'_, S>) -> Result<(), ApiError> {
    ex.log.route = "event_logging";
    drop(ex.read_body().await?);
    respond_no_content(ex, &[]).await;
    Ok(())
}

/// A CORS preflight: 204 with what the browser may send. Preflights carry no credentials, so none are
/// asked for.
async fn preflight<S: Transport>(ex: &mut Exchange<'_, S>) -> Result<(), ApiError> {
    ex.log.route = "preflight";
    let mut headers = vec![
        ("Access-Control-Allow-Methods", CORS_ALLOW_METHODS.to_owned()),
        ("Access-Control-Allow-Headers", CORS_ALLOW_HEADERS.to_owned()),
        ("Access-Control-Max-Age", CORS_MAX_AGE_SECS.to_owned()),
    ];
    if let Some(allow) = public_methods(&ex.head.path) {
        headers.push(("Allow", allow.to_owned()));
    }
    respond_no_content(ex, &headers).await;
    Ok(())
}

/// A 204: the head `Exchange::respond` writes, without `Content-Type` and `Content-Length` (RFC 9110
/// §8.6 forbids a Content-Length on a 204).
async fn respond_no_content<S: Transport>(ex: &mut Exchange<'_, S>, headers: &[(&str, String)]) {
    ex.log.status = 204;
    let core = ex.core();
    let mut out = core.take_bytes();
    {
        let mut w = HeadWriter::new(&mut out, 204);
        w.header("x-request-id", ex.request_id.as_bytes());
        if let Some(id) = &ex.head.client_request_id {
            w.header("x-client-request-id", id.as_bytes());
        }
        for (name, value) in headers.iter().chain(ex.headers.iter()) {
            w.header(name, value.as_bytes());
        }
        if !ex.keep_alive {
            w.header("Connection", b"close");
        }
    }
    out.extend_from_slice(b"\r\n");
    let (res, out) = write_all_deadline(&mut ex.conn.io, out, core.app.settings.timeouts.write).await;
    core.put_bytes(out);
    if res.is_err() {
        ex.keep_alive = false;
    }
}

async fn admin_routes<S: Transport>(ex: &mut Exchange<'_, S>) -> Result<(), ApiError> {
    let core = ex.core();
    let method = route_method(ex.head.method);
    if (method, ex.head.path.as_str()) == (Method::Get, "/healthz") {
        return health(ex).await;
    }
    if dashboard::is_dashboard(&ex.head.path) {
        return dashboard::admin(ex).await;
    }
    ex.log.route = "admin";
    credentials::admin(ex)?;
    if let Some(rest) = ex.head.path.strip_prefix("/admin/") {
        let path = rest.to_owned();
        let segs: Vec<&str> = path.split('/').collect();
        return admin::route(ex, &segs).await;
    }
    match (method, ex.head.path.as_str()) {
        (Method::Get, "/metrics") => {
            ex.log.route = "metrics";
            let text = crate::api::metrics::render(&core.app);
            ex.respond(200, "text/plain; version=0.0.4", text.as_bytes(), &[]).await;
            Ok(())
        }
        (_, "/metrics" | "/healthz") => Err(ApiError::MethodNotAllowed { allow: "GET, HEAD" }),
        (_, path) => Err(ApiError::NotFound(format!("Unknown admin path: {}", bounded(path)))),
    }
}

async fn health<S: Transport>(ex: &mut Exchange<'_, S>) -> Result<(), ApiError> {
    ex.log.route = "health";
    ex.respond_json(200, &json!({"status": "ok"})).await;
    Ok(())
}

async fn ready<S: Transport>(ex: &mut Exchange<'_, S>) -> Result<(), ApiError> {
    ex.log.route = "health";
    let core = ex.core();
    if core.app.draining.load(Ordering::Relaxed) || core.shutdown.is_triggered() {
        return Err(ApiError::Unavailable("shutting down".into()));
    }
    ex.respond_json(200, &json!({"status": "ready"})).await;
    Ok(())
}

/// Metrics and the access-log line.
fn finish<S: Transport>(ex: &Exchange<'_, S>) {
    let core = &ex.conn.core;
    let route = if ex.log.route.is_empty() { "unknown" } else { ex.log.route };
    // Only the gateway's own models become metric labels; a client's made-up name counts as `other`.
    let model = ModelLabel::of(ex.log.model.as_deref(), |m| core.app.models.load().get(m).is_some());
    core.app.metrics.record(route, ex.log.status, model);
    if !core.app.settings.access_log || route == "health" || route == "event_logging" {
        return;
    }
    let latency_us = u64::try_from(ex.started.elapsed().as_micros()).unwrap_or(u64::MAX);
    let line = json!({
        "ts": crate::time::unix_secs(),
        "request_id": ex.request_id,
        "client_request_id": ex.head.client_request_id.as_deref().map(bounded),
        "method": format!("{:?}", ex.head.method).to_uppercase(),
        "path": bounded(&ex.head.path),
        "status": ex.log.status,
        "route": route,
        "key_id": ex.log.key_id,
        "model": ex.log.model.as_deref().map(bounded),
        "stream": ex.log.stream,
        "prompt_tokens": ex.log.usage.map(|u| u.prompt_tokens),
        "completion_tokens": ex.log.usage.map(|u| u.completion_tokens),
        "usage_estimated": ex.log.usage_estimated,
        "upstream": ex.log.upstream.as_deref(),
        "outcome": ex.log.outcome,
        "ttfb_us": ex.log.ttfb_us,
        "latency_us": latency_us,
        "peer": ex.conn.peer.to_string(),
    });
    log::info!(target: "access", "{line}");
}

/// The longest client-supplied string an access-log line (or an error message) repeats, in bytes.
const MAX_LOGGED_BYTES: usize = 256;

/// `s` cut to [`MAX_LOGGED_BYTES`] on a character boundary, `…` marking the cut: a client's strings
/// (a model name can be megabytes) never make a log line unbounded.
fn bounded(s: &str) -> Cow<'_, str> {
    if s.len() <= MAX_LOGGED_BYTES {
        return Cow::Borrowed(s);
    }
    Cow::Owned(format!("{}…", &s[..s.floor_char_boundary(MAX_LOGGED_BYTES)]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logged_client_strings_are_bounded_on_a_char_boundary() {
        assert_eq!(bounded("gonka/sim-small"), "gonka/sim-small");
        let long = "é".repeat(1000);
        let cut = bounded(&long);
        assert!(cut.len() <= MAX_LOGGED_BYTES + "…".len(), "{}", cut.len());
        assert!(cut.ends_with('…') && cut.starts_with("éé"));
        assert_eq!(bounded(&"x".repeat(MAX_LOGGED_BYTES)).len(), MAX_LOGGED_BYTES, "no cut at the limit");
    }

    #[test]
    fn every_routed_public_path_has_its_methods() {
        for p in ["/", "/v1/models", "/v1/models/a/b", "/healthz", "/readyz"] {
            assert_eq!(public_methods(p), Some("GET, HEAD"), "{p}");
        }
        assert_eq!(public_methods("/v1/chat/completions"), Some("POST"));
        assert_eq!(public_methods("/v1/messages"), Some("POST"));
        assert_eq!(public_methods("/v1/messages/count_tokens"), Some("POST"));
        assert_eq!(public_methods("/v1/responses"), Some("POST"));
        assert_eq!(public_methods("/v1/responses/resp_1"), Some("GET, HEAD, DELETE"));
        assert_eq!(public_methods("/v1/nothing"), None);
        assert_eq!(public_methods("/v1/responses/resp_1/input_items"), None);
    }

    #[test]
    fn a_messages_path_under_a_prefix_is_a_misplaced_base_url() {
        assert!(misplaced_messages("/v1/v1/messages") && misplaced_messages("/v1/v1/messages/count_tokens"));
        assert!(!misplaced_messages("/v1/messages") && !misplaced_messages("/v1/messages/count_tokens"));
        assert!(!misplaced_messages("/v1/chat/completions"));
    }
}
