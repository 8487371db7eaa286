//! `POST /v1/chat/completions`, `/v1/completions`, `/v1/embeddings`: authenticate, inspect the body,
//! admit, forward to a node (retrying another one while nothing has reached the client), relay the
//! answer as it arrives, settle.

use super::body::{self, Endpoint, Rewrite};
use crate::app::App;
use crate::auth::cache::KeyEntry;
use crate::billing::settle::Settler;
use crate::config::NodeKind;
use crate::error::{ApiError, RateLimitInfo, rate_limit_headers};
use crate::http::io::Transport;
use crate::http::response::{HeadWriter, ResponseFraming};
use crate::limits;
use crate::limits::fit::Quote;
use crate::limits::share::Share;
use crate::model::ModelSpec;
use crate::model::usage::RecordStatus;
use crate::server::Core;
use crate::server::exchange::Exchange;
use crate::upstream::client::{self, ResponseBody};
use crate::upstream::pool::InFlight;
use crate::upstream::relay::{
    self, AttemptError, BodyMode, ClientFraming, ClientSide, DrainBound, RelayEnd, Seen,
};
use crate::upstream::{NodeId, Pick};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// The largest error body read from a node.
const MAX_NODE_ERROR_BYTES: usize = 64 * 1024;

/// How a forwarded request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// The whole answer reached the client.
    Completed,
    /// The client left before the end.
    ClientGone,
    /// The node failed after part of the answer was relayed.
    UpstreamFailed,
    /// The node stopped sending part-way.
    Timeout,
}

impl Ending {
    fn status(self) -> RecordStatus {
        match self {
            Self::Completed => RecordStatus::Completed,
            Self::ClientGone => RecordStatus::ClientGone,
            Self::UpstreamFailed => RecordStatus::UpstreamFailed,
            Self::Timeout => RecordStatus::Timeout,
        }
    }
}

/// What a forwarded request did.
#[derive(Debug, Clone)]
pub struct Forwarded {
    pub ending: Ending,
    pub seen: Seen,
    pub status: u16,
}

/// Bodies up to this size are copied behind the request head and sent in one write; larger ones are
/// sent from where they are.
const MERGE_BODY_MAX: usize = 16 * 1024;

pub async fn handle<S: Transport>(ex: &mut Exchange<'_, S>, endpoint: Endpoint) -> Result<(), ApiError> {
    let core = ex.core();
    let app = Arc::clone(&core.app);
    ex.log.route = endpoint.name();
    let billing = &app.settings.billing;
    let now_ms = app.clock.now_ms();
    let principal =
        crate::auth::authenticate_inference(&app, ex.head.authorization.as_deref(), now_ms.div_euclid(1000))?;
    let key = Arc::clone(&principal.key);
    ex.log.key_id = Some(key.id.to_string());
    // The rate is checked before the body is read: a refused request costs almost nothing.
    let rate = admit_rate(&app, &key, now_ms).await?;
    if let Some(info) = rate {
        ex.headers.extend(rate_limit_headers(&info));
    }
    // The reservation of the body's memory is kept until the request ends (the body is forwarded from it).
    let (body, mut body_memory) = ex.read_body().await?.into_parts();
    let body = bytes::Bytes::from(body);
    let inspected = {
        let mut scratch = core.json_scratch.borrow_mut();
        body::inspect(endpoint, &body, &mut scratch)?
    };
    ex.log.model = Some(inspected.model.clone());
    ex.log.stream = inspected.stream;
    let model = app
        .models
        .load()
        .get(&inspected.model)
        .cloned()
        .filter(|m| app.nodes.serves(&m.id))
        .ok_or_else(|| ApiError::ModelNotFound(inspected.model.clone()))?;

    // Hold the worst case before any node is called; without a working journal it could not be billed.
    if !app.journal.is_healthy() {
        return Err(ApiError::Unavailable("the usage journal cannot be written".into()));
    }
    let has_completion = endpoint != Endpoint::Embeddings;
    // The default cap never asks for more than the model's whole context.
    let default_max_tokens =
        model.context_length.map_or(billing.default_max_tokens, |c| c.min(billing.default_max_tokens)).max(1);
    let client_max = inspected.client_max_tokens(endpoint);
    let asked = if has_completion { client_max.unwrap_or(default_max_tokens) } else { 0 };
    let policy = key.fit_max_tokens.unwrap_or(billing.fit_max_tokens);
    let floor = (has_completion && policy.allows(client_max.is_some())).then_some(billing.min_fit_tokens);
    let quote = limits::quote(&model, body.len(), inspected.choices(endpoint), asked, floor);
    let admission = admit_hold(&app, &key, &quote, now_ms).await?;
    // The node is held to what was held for: the fitted (or default) limit is written into the body.
    let rewrite = Rewrite::for_body(endpoint, &inspected, has_completion.then_some(admission.max_tokens));
    let upstream_body = if rewrite.is_noop() {
        body.clone()
    } else {
        // The rewritten copy counts against the body memory too.
        let copy = body.len() + 4096;
        if !body_memory.grow_to(body_memory.bytes() + copy, app.settings.body_memory_wait).await {
            return Err(ApiError::Unavailable(
                "the memory for request bodies is in use; retry shortly".into(),
            ));
        }
        let mut out = Vec::with_capacity(copy);
        body::rewrite(&body, &inspected, rewrite, &mut out)?;
        bytes::Bytes::from(out)
    };
    let mut settler = Settler::new(
        Arc::clone(&app),
        key,
        model.clone(),
        admission.hold,
        ex.request_id.clone(),
        now_ms,
        ex.started,
        inspected.stream,
        upstream_body.clone(),
    );

    app.metrics.requests_in_flight.fetch_add(1, Ordering::Relaxed);
    let cut_usage = rewrite.force_include_usage;
    let result =
        forward(ex, &core, &model, endpoint, inspected.stream, cut_usage, &upstream_body, &mut settler).await;
    app.metrics.requests_in_flight.fetch_sub(1, Ordering::Relaxed);
    // Every ending settles; a request that never reached a node bills nothing.
    let (status, seen) = match &result {
        Ok(f) => (f.ending.status(), f.seen),
        Err(_) => (RecordStatus::UpstreamFailed, Seen::default()),
    };
    settler.settle(status, seen).await;
    if let Some((usage, _, estimated)) = settler.billed {
        ex.log.usage = Some(usage);
        ex.log.usage_estimated = estimated;
    }
    drop(body_memory);
    let forwarded = result?;
    ex.log.status = forwarded.status;
    ex.log.outcome = Some(match forwarded.ending {
        Ending::Completed => "completed",
        Ending::ClientGone => "client_gone",
        Ending::UpstreamFailed => "upstream_failed",
        Ending::Timeout => "timeout",
    });
    Ok(())
}

/// Several instances with Redis use leases for what this instance's share does not cover.
fn leases_on(app: &App) -> bool {
    app.settings.cluster.redis_url.is_some()
}

/// The key's rate. With leases, a refusal asks the control plane, which leases what this request needs
/// and admits it there (so requests queued behind one another never count one lease twice).
async fn admit_rate(
    app: &Arc<App>,
    key: &Arc<KeyEntry>,
    now_ms: i64,
) -> Result<Option<RateLimitInfo>, ApiError> {
    if !leases_on(app) {
        return limits::check_rate(key, app.settings.billing.default_rpm, now_ms);
    }
    let rpm = key.rate_limit_rpm.unwrap_or(app.settings.billing.default_rpm);
    let share =
        u32::try_from(Share::with_leases(app.settings.cluster.instances).of(u64::from(rpm))).unwrap_or(0);
    match limits::check_rate_leased(key, rpm, share, now_ms) {
        Err(refused @ ApiError::RateLimited(_)) => {
            let k = Arc::clone(key);
            app.control.call(move |st| st.lease_rate(&k, rpm, share, now_ms)).await.unwrap_or(Err(refused))
        }
        other => other,
    }
}

/// The request's hold. With leases, a refusal asks the control plane, which leases what this request
/// needs and takes the hold there.
async fn admit_hold(
    app: &Arc<App>,
    key: &Arc<KeyEntry>,
    quote: &Quote,
    now_ms: i64,
) -> Result<limits::Admission, ApiError> {
    match limits::hold(key, quote, now_ms, &app.holds) {
        Err(
            refused @ (ApiError::ChildKeyLimit { .. }
            | ApiError::InsufficientBalance
            | ApiError::BudgetInFlight { .. }),
        ) if leases_on(app) => {
            let (k, q, holds) = (Arc::clone(key), *quote, Arc::clone(&app.holds));
            app.control.call(move |st| st.lease_for(&k, &q, now_ms, &holds)).await.unwrap_or(Err(refused))
        }
        other => other,
    }
}

/// Sends the request to nodes until one answers, and relays that answer.
#[expect(clippy::too_many_arguments, reason = "one request's whole context")]
async fn forward<S: Transport>(
    ex: &mut Exchange<'_, S>,
    core: &Rc<Core>,
    model: &ModelSpec,
    endpoint: Endpoint,
    stream: bool,
    cut_usage: bool,
    upstream_body: &bytes::Bytes,
    settler: &mut Settler,
) -> Result<Forwarded, ApiError> {
    let app: &App = &core.app;
    let settings = &app.settings;
    let up = &settings.upstream;
    let billing = &settings.billing;
    let drain =
        DrainBound { time: billing.drain_after_client_gone, bytes: billing.drain_after_client_gone_bytes };
    let max_attempts = up.max_attempts.get();
    let mut tried: Vec<NodeId> = Vec::new();
    let mut attempts = 0u32;
    let mut fresh_only = false;
    let mut last_error: Option<ApiError> = None;
    let mut buf = core.take_relay_buffer();
    let mut request = core.take_bytes();

    let outcome = loop {
        if attempts >= max_attempts {
            break Err(last_error.take());
        }
        let node = match app.nodes.pick(&model.id, &tried, core.rotation()) {
            Pick::Node(n) => n,
            Pick::NoneServes => break Err(Some(ApiError::ModelNotFound(model.id.clone()))),
            Pick::NoneAvailable => break Err(last_error.take()),
        };
        attempts += 1;
        if attempts > 1 {
            app.metrics.upstream_retries.fetch_add(1, Ordering::Relaxed);
        }
        let in_flight = InFlight::new(Arc::clone(&node));
        let attempt_started = std::time::Instant::now();
        let pooled = if fresh_only { None } else { core.upstream_conns.borrow_mut().take(node.id) };
        let reused = pooled.is_some();
        let conn = match pooled {
            Some(s) => s,
            None => match client::connect(&node, up.connect_timeout, &app.upstream_tls).await {
                Ok(s) => s,
                Err(e) => {
                    app.nodes.report_failure(&node, "connect failed");
                    tried.push(node.id);
                    last_error = Some(unavailable(502, format!("Could not connect to a node: {e}")));
                    continue;
                }
            },
        };

        let accept = if stream { "text/event-stream" } else { "application/json" };
        let mut headers: Vec<(&str, String)> =
            vec![("Accept", accept.to_owned()), ("X-Request-Id", ex.request_id.clone())];
        if node.kind == NodeKind::Gonka {
            // Signed per attempt: each node has its own transfer address, and a signature is single-use.
            let (Some(signer), Some(transfer)) = (app.gonka.as_deref(), node.transfer_address.as_deref())
            else {
                break Err(Some(ApiError::Internal("a gonka node without a signing key or address".into())));
            };
            let ts = signer.next_timestamp_ns();
            headers.push(("Authorization", signer.sign(upstream_body, ts, transfer)));
            headers.push(("X-Requester-Address", signer.address().to_owned()));
            headers.push(("X-Timestamp", ts.to_string()));
        }
        let header_refs: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        client::write_request_head(
            &mut request,
            "POST",
            &node.path(endpoint.path()),
            &node,
            Some(upstream_body.len()),
            &header_refs,
        );
        let separate_body = if upstream_body.len() <= MERGE_BODY_MAX {
            request.extend_from_slice(upstream_body);
            None
        } else {
            Some(upstream_body.clone())
        };

        let rbuf_max = settings.read_buffer_bytes + settings.http.max_head_bytes;
        let write_timeout = settings.timeouts.write;
        let mut client_side =
            ClientSide::new(&mut ex.conn.io, &mut ex.conn.rbuf, rbuf_max, write_timeout, drain);
        let (res, req_back, buf_back) =
            relay::exchange(&mut client_side, conn, request, separate_body, buf, up.head_timeout).await;
        request = req_back;
        buf = buf_back;
        let client_gone = client_side.is_gone();
        if client_gone {
            app.metrics.client_disconnects.fetch_add(1, Ordering::Relaxed);
        }
        let answer = match res {
            Ok(a) => a,
            Err(AttemptError::ClientGone) => break Ok(None),
            Err(e) if reused && e.is_stale_connection() && !client_gone => {
                // The node had closed this idle connection; not the node's fault.
                app.metrics.upstream_stale_connections.fetch_add(1, Ordering::Relaxed);
                attempts -= 1;
                fresh_only = true;
                continue;
            }
            Err(AttemptError::HeadTimeout) => {
                app.nodes.report_failure(&node, "no answer in time");
                break Err(Some(ApiError::UpstreamTimeout));
            }
            Err(e) => {
                app.nodes.report_failure(&node, "request failed");
                if client_gone {
                    break Ok(None);
                }
                tried.push(node.id);
                last_error = Some(unavailable(502, format!("A node failed: {e}")));
                continue;
            }
        };

        let status = answer.head.status;
        if !(200..300).contains(&status) {
            let retry_after = answer.head.retry_after.clone();
            let (res, b) =
                relay::read_small_body(&mut client_side, answer, buf, MAX_NODE_ERROR_BYTES, up.read_timeout)
                    .await;
            buf = b;
            let (err_body, reusable) = match res {
                Ok(r) => r,
                Err(AttemptError::ClientGone) => break Ok(None),
                Err(_) => (Vec::new(), None),
            };
            if let Some(c) = reusable {
                core.upstream_conns.borrow_mut().put(node.id, c);
            }
            let node_err = node_error(status, &err_body);
            if status == 429 || status >= 500 {
                if status >= 500 {
                    app.nodes.report_failure(&node, "5xx answer");
                }
                if client_gone {
                    break Ok(None);
                }
                tried.push(node.id);
                last_error = Some(match status {
                    429 => ApiError::UpstreamUnavailable {
                        status: 503,
                        message: format!("Nodes are at capacity: {node_err}"),
                        retry_after_secs: Some(retry_after.and_then(|r| r.parse().ok()).unwrap_or(1)),
                    },
                    _ => unavailable(502, format!("A node failed: {node_err}")),
                });
                continue;
            }
            app.nodes.report_success(&node);
            break Err(Some(node_err));
        }

        // A success: relay it.
        let is_sse = stream && answer.head.is_event_stream();
        let mode = if is_sse { BodyMode::Sse { cut_usage } } else { BodyMode::Json };
        let (framing, response_framing) = match (mode, answer.head.body) {
            (_, ResponseBody::Empty) => (ClientFraming::Length, ResponseFraming::Length(0)),
            (BodyMode::Json, ResponseBody::Length(n)) => {
                (ClientFraming::Length, ResponseFraming::Length(usize::try_from(n).unwrap_or(usize::MAX)))
            }
            _ if ex.head.version_minor >= 1 => (ClientFraming::Chunked, ResponseFraming::Chunked),
            _ => (ClientFraming::Close, ResponseFraming::Close),
        };
        let mut head = core.take_bytes();
        {
            let content_type = answer.head.content_type.as_deref().unwrap_or("application/json");
            let mut w = HeadWriter::new(&mut head, status);
            w.header("Content-Type", content_type.as_bytes())
                .header("x-request-id", ex.request_id.as_bytes());
            if let Some(id) = &ex.head.client_request_id {
                w.header("x-client-request-id", id.as_bytes());
            }
            for (name, value) in &ex.headers {
                w.header(name, value.as_bytes());
            }
            if is_sse {
                w.header("Cache-Control", b"no-cache");
            }
            w.finish(response_framing, ex.keep_alive);
        }
        let (result, b, head) = relay::relay_body(
            &mut client_side,
            answer,
            buf,
            mode,
            framing,
            head,
            up.read_timeout,
            billing.progress_tokens,
            settler,
        )
        .await;
        buf = b;
        core.put_bytes(head);
        if let Some(c) = result.reusable {
            core.upstream_conns.borrow_mut().put(node.id, c);
        }
        app.metrics.latencies().upstream.observe(attempt_started.elapsed());
        if let Some(t) = result.first_byte_at {
            app.metrics.latencies().first_byte.observe(t.into_std().duration_since(ex.started));
            ex.log.ttfb_us =
                Some(u64::try_from(t.into_std().duration_since(ex.started).as_micros()).unwrap_or(0));
        }
        ex.log.upstream = Some(Arc::clone(&node.label));
        drop(in_flight);
        let seen = Seen { usage: result.usage, events: result.data_events, bytes: result.bytes };
        let ending = match &result.end {
            RelayEnd::Complete => {
                app.nodes.report_success(&node);
                Ending::Completed
            }
            RelayEnd::ClientGone { drained } => {
                if *drained {
                    app.nodes.report_success(&node);
                }
                if !client_gone {
                    app.metrics.client_disconnects.fetch_add(1, Ordering::Relaxed);
                }
                Ending::ClientGone
            }
            RelayEnd::UpstreamBroken(why) => {
                app.nodes.report_failure(&node, "broke mid-answer");
                if !result.head_sent && !client_gone {
                    tried.push(node.id);
                    last_error = Some(unavailable(502, format!("A node failed: {why}")));
                    continue;
                }
                Ending::UpstreamFailed
            }
            RelayEnd::UpstreamTimedOut => {
                app.nodes.report_failure(&node, "stalled mid-answer");
                if !result.head_sent && !client_gone {
                    break Err(Some(ApiError::UpstreamTimeout));
                }
                Ending::Timeout
            }
        };
        if !result.client_keep_alive {
            ex.keep_alive = false;
        }
        break Ok(Some(Forwarded { ending, seen, status }));
    };
    core.put_relay_buffer(buf);
    core.put_bytes(request);
    match outcome {
        Ok(Some(f)) => Ok(f),
        Ok(None) => {
            // The client left before any answer came (within the drain bound).
            ex.keep_alive = false;
            Ok(Forwarded { ending: Ending::ClientGone, seen: Seen::default(), status: 499 })
        }
        Err(Some(e)) => Err(e),
        Err(None) => Err(ApiError::UpstreamUnavailable {
            status: 503,
            message: "No node is available to serve this model right now.".into(),
            retry_after_secs: Some(1),
        }),
    }
}

fn unavailable(status: u16, message: String) -> ApiError {
    ApiError::UpstreamUnavailable { status, message, retry_after_secs: None }
}

/// A node's error answer in the OpenAI shape, its message kept: `{"error":{…}}` passes as it is,
/// `{"error":"…"}` (Gonka nodes) and `{"detail":"…"}` are wrapped, anything else becomes the message.
pub fn node_error(status: u16, body: &[u8]) -> ApiError {
    use serde_json::Value;
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let field = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
    let (message, kind, code) = match &parsed {
        Some(v) => match v.get("error") {
            Some(Value::String(s)) => (s.clone(), None, None),
            Some(e @ Value::Object(_)) => (
                field(e, "message").unwrap_or_else(|| e.to_string()),
                field(e, "type"),
                field(e, "code").or_else(|| e.get("code").filter(|c| c.is_number()).map(Value::to_string)),
            ),
            _ => match v.get("detail") {
                Some(Value::String(s)) => (s.clone(), None, None),
                Some(d) => (d.to_string(), None, None),
                None => (v.to_string(), None, None),
            },
        },
        None => {
            let text = String::from_utf8_lossy(body);
            let text = text.trim();
            let mut msg: String = text.chars().take(1000).collect();
            if msg.is_empty() {
                msg = format!("The node answered {status}.");
            }
            (msg, None, None)
        }
    };
    let kind =
        kind.unwrap_or_else(|| if status < 500 { "invalid_request_error" } else { "upstream_error" }.into());
    ApiError::Upstream { status, message, kind, code }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_errors_keep_their_message() {
        let e = node_error(400, br#"{"error":"AuthKey has already been used"}"#);
        assert_eq!(e.to_string(), "AuthKey has already been used");
        assert_eq!(e.status(), 400);
        let e = node_error(400, br#"{"error":{"message":"bad","type":"invalid_request_error","code":"x"}}"#);
        assert_eq!((e.to_string().as_str(), e.code()), ("bad", Some("x")));
        let e = node_error(422, br#"{"detail":[{"loc":["body"],"msg":"field required"}]}"#);
        assert!(e.to_string().contains("field required"));
        let e = node_error(400, b"plain text");
        assert_eq!(e.to_string(), "plain text");
        let e = node_error(404, b"");
        assert!(e.to_string().contains("404"));
    }
}
