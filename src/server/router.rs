//! Routing: one match per listener from (method, path) to a handler. A handler's error becomes its
//! OpenAI-shaped answer here; every exchange ends with one access-log line.

use super::ListenerKind;
use super::conn::Conn;
use super::exchange::Exchange;
use crate::api::body::Endpoint;
use crate::api::{admin, inference, models};
use crate::error::ApiError;
use crate::http::io::Transport;
use crate::http::request::{Method, RequestHead};
use crate::metrics::ModelLabel;
use serde_json::json;
use std::sync::atomic::Ordering;

/// Answers one request. Returns whether the connection may carry another.
pub async fn dispatch<S: Transport>(conn: &mut Conn<S>, head: RequestHead) -> bool {
    let kind = conn.kind;
    let mut ex = Exchange::new(conn, head);
    let result = match kind {
        ListenerKind::Public => public(&mut ex).await,
        ListenerKind::Admin => admin_routes(&mut ex).await,
    };
    if let Err(e) = result {
        ex.respond_error(&e).await;
    }
    ex.settle_unread_body();
    finish(&ex);
    ex.keep_alive
}

async fn public<S: Transport>(ex: &mut Exchange<'_, S>) -> Result<(), ApiError> {
    let method = ex.head.method;
    if let Some(rest) = ex.head.path.strip_prefix("/api/") {
        let path = rest.to_owned();
        let segs: Vec<&str> = path.split('/').collect();
        return crate::api::account::route(ex, &segs).await;
    }
    match (method, ex.head.path.as_str()) {
        (Method::Post, "/v1/chat/completions") => inference::handle(ex, Endpoint::ChatCompletions).await,
        (Method::Post, "/v1/completions") => inference::handle(ex, Endpoint::Completions).await,
        (Method::Post, "/v1/embeddings") => inference::handle(ex, Endpoint::Embeddings).await,
        (Method::Get, "/v1/models") => {
            ex.log.route = "models";
            let core = ex.core();
            let now = crate::clock::unix_secs() as i64;
            crate::auth::authenticate_inference(&core.app, ex.head.authorization.as_deref(), now)?;
            let body = models::list(&core.app);
            ex.respond_json(200, &body).await;
            Ok(())
        }
        (Method::Get, path) if path.starts_with("/v1/models/") => {
            ex.log.route = "models";
            let core = ex.core();
            let now = crate::clock::unix_secs() as i64;
            crate::auth::authenticate_inference(&core.app, ex.head.authorization.as_deref(), now)?;
            let raw = &path["/v1/models/".len()..];
            let id = models::id_from_path(raw)
                .ok_or_else(|| ApiError::ModelNotFound(raw.chars().take(256).collect()))?;
            let body = models::retrieve(&core.app, &id).ok_or(ApiError::ModelNotFound(id))?;
            ex.respond_json(200, &body).await;
            Ok(())
        }
        (Method::Get, "/healthz") => health(ex).await,
        (Method::Get, "/readyz") => ready(ex).await,
        (_, path) => {
            ex.log.route = "unknown";
            let known = [
                "/v1/chat/completions",
                "/v1/completions",
                "/v1/embeddings",
                "/v1/models",
                "/healthz",
                "/readyz",
            ];
            if known.contains(&path) {
                Err(ApiError::MethodNotAllowed)
            } else {
                Err(ApiError::NotFound(format!("Unknown path: {path}")))
            }
        }
    }
}

async fn admin_routes<S: Transport>(ex: &mut Exchange<'_, S>) -> Result<(), ApiError> {
    let core = ex.core();
    let method = ex.head.method;
    if (method, ex.head.path.as_str()) == (Method::Get, "/healthz") {
        return health(ex).await;
    }
    ex.log.route = "admin";
    admin::check_token(&core.app, ex.head.authorization.as_deref())?;
    if let Some(rest) = ex.head.path.strip_prefix("/admin/") {
        let path = rest.to_owned();
        let segs: Vec<&str> = path.split('/').collect();
        return admin::route(ex, &segs).await;
    }
    match (method, ex.head.path.as_str()) {
        (Method::Get, "/metrics") => {
            ex.log.route = "metrics";
            let text = admin::metrics(&core.app);
            ex.respond(200, "text/plain; version=0.0.4", text.as_bytes(), &[]).await;
            Ok(())
        }
        (_, path) => Err(ApiError::NotFound(format!("Unknown admin path: {path}"))),
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
    if core.app.draining.load(Ordering::Relaxed) || core.drain.is_draining() {
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
    if !core.app.settings.access_log || route == "health" {
        return;
    }
    let latency_us = u64::try_from(ex.started.elapsed().as_micros()).unwrap_or(u64::MAX);
    let line = json!({
        "ts": crate::clock::unix_secs(),
        "request_id": ex.request_id,
        "client_request_id": ex.head.client_request_id,
        "method": format!("{:?}", ex.head.method).to_uppercase(),
        "path": ex.head.path,
        "status": ex.log.status,
        "route": route,
        "key_id": ex.log.key_id,
        "model": ex.log.model,
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
