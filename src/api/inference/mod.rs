//! The inference request path, in the order its phases run:
//!
//! 1. **authenticate** the key (keyed hash → the key cache);
//! 2. **admit** its rate, before the body is read, so a refused request costs almost nothing;
//! 3. **read and inspect** the body: the client's dialect turns it into the body a node gets
//!    ([`dialect`]), and only the fields the gateway needs are read ([`inspect`]); the model (aliases
//!    resolved) must be one the key may use;
//! 4. **hold** the worst case against the key's limits and the account's balance, fitting `max_tokens`
//!    to what is left when the key's policy allows it; the limit the node is held to is written into the
//!    body;
//! 5. **forward** to the least busy node serving the model, trying another while nothing has reached the
//!    client ([`forward`]);
//! 6. **respond** with the client's head ([`respond`]);
//! 7. **relay** the answer as it arrives, journaling progress marks as it goes;
//! 8. **settle** once: right before the final bytes of a complete answer, else when the relay ends
//!    ([`settle`]);
//! 9. **keep** what the dialect keeps of a complete answer (a stored response of the Responses API),
//!    through the control plane, also before the answer's final bytes, so a client that continues from
//!    it at once finds it;
//! 10. **log**.
//!
//! Every ending settles: a request whose hold was taken always gets its record, and a hold is never
//! left behind.

pub mod dialect;
pub mod forward;
pub mod inspect;
pub mod respond;
pub mod settle;

use crate::app::App;
use crate::auth::cache::KeyEntry;
use crate::error::{ApiError, ErrorShape};
use crate::http::io::Transport;
use crate::limits::{self, admit, fit::Quote};
use crate::model::{ModelSpec, RecordStatus};
use crate::session::exchange::Exchange;
use crate::upstream::relay::{Relay, RelayEnd, Seen, Step};
use crate::upstream::watch::{ClientSide, DrainBound};
use dialect::{Dialect, Prepared};
use forward::{NodeRequest, NotAnswered, Tries};
use inspect::{Endpoint, Inspected, Rewrite};
use settle::Settlement;
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// Answers one inference request in `dialect`.
pub async fn handle<S: Transport>(ex: &mut Exchange<'_, S>, dialect: Dialect) -> Result<(), ApiError> {
    let core = ex.core();
    let app = Arc::clone(&core.app);
    ex.log.route = dialect.route();
    ex.error_shape = dialect.error_shape();
    if ex.error_shape == ErrorShape::Anthropic {
        // Anthropic's SDKs read the request id from here.
        ex.headers.push(("request-id", ex.request_id.clone()));
    }
    let now_ms = app.clock.now_ms();

    // 1. Authenticate.
    let key = app.keys.authenticate_presented(
        ex.head.authorization.as_deref(),
        ex.head.x_api_key.as_deref(),
        now_ms.div_euclid(1000),
    )?;
    ex.log.key_id = Some(key.id().to_string());

    // 2. Admit the rate.
    let policy = app.admit_policy();
    ex.rate_limit = admit::admit_rate(&key.budget, &policy, now_ms, &app.control).await?;

    // 3. Read and inspect. The body's memory stays reserved until the request ends (it is forwarded
    // from where it is).
    let (body, mut body_memory) = ex.read_body().await?.into_parts();
    let prepared = dialect.prepare(&app, &key, bytes::Bytes::from(body), &ex.request_id).await?;
    if prepared.translation.is_some() {
        // A translated body is held to the same limits (a continued conversation makes it larger than
        // what the client sent), and the memory counts what is kept.
        if prepared.body.len() > app.settings.http.max_body_bytes {
            return Err(ApiError::PayloadTooLarge);
        }
        let held = body_memory.bytes() + prepared.body.len();
        if !body_memory.grow_to(held, app.settings.body_memory_wait).await {
            return Err(ApiError::Unavailable(
                "the memory for request bodies is in use; retry shortly".into(),
            ));
        }
    }
    let body = prepared.body.clone();
    let endpoint = dialect.endpoint();
    let inspected = inspect::inspect(endpoint, &body)?;
    ex.log.model = Some(inspected.model.clone());
    ex.log.stream = inspected.stream;
    let model = app
        .models
        .load()
        .get(&inspected.model)
        .cloned()
        .filter(|m| app.nodes.serves(&m.id))
        .ok_or_else(|| ApiError::ModelNotFound(inspected.model.clone()))?;
    if model.id != inspected.model {
        // Named by an alias: logged, counted and billed by its id.
        ex.log.model = Some(model.id.clone());
    }
    // A key's model list names ids, so an alias is allowed when its model is.
    if !key.allows_model(&model.id) {
        return Err(ApiError::ModelNotAllowed(model.id.clone()));
    }

    // 4. Hold, then write what the node is held to into the body.
    if !app.journal.is_healthy() {
        // Without a working journal it could not be billed.
        return Err(ApiError::Unavailable("the usage journal cannot be written".into()));
    }
    let quote = quote(&app, &key, &model, dialect, &inspected, body.len());
    let admission = admit::admit_hold(&key.budget, &quote, now_ms, &app.holds, &policy, &app.control).await?;
    let generates = endpoint != Endpoint::Embeddings;
    let rewrite =
        Rewrite::for_body(endpoint, &inspected, generates.then_some(admission.max_tokens), &model.id);
    let node_body = if rewrite.is_noop() {
        body.clone()
    } else {
        // The rewritten copy counts against the body memory too.
        let copy = body.len() + 4096;
        if !body_memory.grow_to(body_memory.bytes() + copy, app.settings.body_memory_wait).await {
            return Err(ApiError::Unavailable(
                "the memory for request bodies is in use; retry shortly".into(),
            ));
        }
        // Allocated for what an appended rewrite adds, not for the reservation's bound: the copy lives as
        // long as the request (a stream's whole life), and a rewrite that adds more (a longer model id)
        // grows it.
        let mut out = Vec::with_capacity(body.len() + inspect::APPENDED_MAX);
        inspect::rewrite(&body, &inspected, rewrite, &mut out)?;
        bytes::Bytes::from(out)
    };
    let mut settlement = Settlement::new(
        Arc::clone(&app),
        key,
        model.clone(),
        admission.hold,
        ex.request_id.clone(),
        now_ms,
        ex.started,
        inspected.stream,
        node_body.clone(),
    );

    // 5–8. Forward, respond, relay and settle.
    app.metrics.requests_in_flight.fetch_add(1, Ordering::Relaxed);
    let to_node = ToNode {
        path: endpoint.path(),
        body: &node_body,
        stream: inspected.stream,
        cut_usage: rewrite.force_include_usage,
    };
    let served = serve(ex, &core, &model, &prepared, to_node, &mut settlement).await;
    app.metrics.requests_in_flight.fetch_sub(1, Ordering::Relaxed);
    let (status, seen) = match &served {
        Ok(s) => (s.status, s.seen),
        Err(_) => (RecordStatus::UpstreamFailed, Seen::default()),
    };
    settlement.settle(status, seen).await;
    drop(body_memory);

    // 10. Log.
    if let Some((usage, _, estimated)) = settlement.billed {
        ex.log.usage = Some(usage);
        ex.log.usage_estimated = estimated;
    }
    let served = served?;
    ex.log.status = served.http_status;
    ex.log.outcome = Some(served.status.as_str());
    Ok(())
}

/// The worst case the request asks of its budgets (see [`crate::limits`]). Whether a `max_tokens` the
/// client sent may be fitted is the key's policy, applied to what the dialect says that number is
/// ([`Dialect::client_chooses_max_tokens`]).
fn quote(
    app: &App,
    key: &KeyEntry,
    model: &ModelSpec,
    dialect: Dialect,
    inspected: &Inspected,
    body_len: usize,
) -> Quote {
    let billing = &app.settings.billing;
    let endpoint = dialect.endpoint();
    let generates = endpoint != Endpoint::Embeddings;
    // The default never asks for more than the model's whole context.
    let default_max_tokens =
        model.context_length.map_or(billing.default_max_tokens, |c| c.min(billing.default_max_tokens)).max(1);
    let client_max = inspected.client_max_tokens(endpoint);
    let asked = if generates { client_max.unwrap_or(default_max_tokens) } else { 0 };
    let policy = key.budget.fit_max_tokens.unwrap_or(billing.fit_max_tokens);
    let chosen = client_max.is_some() && dialect.client_chooses_max_tokens();
    let floor = (generates && policy.allows(chosen)).then_some(billing.min_fit_tokens);
    limits::quote(model, body_len, inspected.choices(endpoint), asked, floor)
}

/// Keeps what the dialect keeps of a complete answer (phase 9). A store that cannot take it costs the
/// client nothing but the stored copy: the answer is still sent, and the failure logged.
async fn keep(app: &App, prepared: &Prepared) {
    let Some(kept) = prepared.keep() else { return };
    let id = kept.id.clone();
    match app.control.call(move |st| st.put_response(&kept)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) | Err(e) => log::error!(target: "responses", "{id}: the response was not stored: {e}"),
    }
}

/// What goes to the node, and whether the usage chunk the gateway asked for is cut from the answer.
#[derive(Debug, Clone, Copy)]
struct ToNode<'a> {
    path: &'static str,
    body: &'a bytes::Bytes,
    stream: bool,
    cut_usage: bool,
}

/// How a served request went.
#[derive(Debug, Clone, Copy)]
struct Served {
    status: RecordStatus,
    seen: Seen,
    /// The status the client got.
    http_status: u16,
}

/// Runs `relay` to its end, settling before the answer's final bytes; gives back the relay and head
/// buffers.
///
/// A future of its own, not a loop in [`serve`]: the relay's state then shares its room in `serve`'s
/// future with the wait for the node's answer instead of being kept beside it, and that future is part
/// of each connection's task for a stream's whole life. It takes the relay made, and is an `async`
/// block rather than an `async fn`, so that nothing it is given is kept twice (an `async fn` keeps its
/// arguments as given and as moved into its body).
#[expect(clippy::manual_async_fn, reason = "an async fn would keep the relay twice in its state")]
fn relay<S: Transport>(
    mut relay: Relay<'_, '_, S>,
    app: &App,
    prepared: &Prepared,
    settlement: &mut Settlement,
) -> impl std::future::Future<Output = (crate::upstream::relay::RelayResult, Vec<u8>, Vec<u8>)> {
    async move {
        let result = loop {
            match relay.next().await {
                Step::Progress(seen) => settlement.progress(seen),
                Step::Final(seen) => {
                    settlement.settle(RecordStatus::Completed, seen).await;
                    keep(app, prepared).await;
                }
                Step::End(result) => break result,
            }
        };
        let (buf, head) = relay.into_buffers();
        (result, buf, head)
    }
}

/// Forwards, responds and relays, settling right before the final bytes of a complete answer.
async fn serve<S: Transport>(
    ex: &mut Exchange<'_, S>,
    core: &crate::session::Core,
    model: &ModelSpec,
    prepared: &Prepared,
    to_node: ToNode<'_>,
    settlement: &mut Settlement,
) -> Result<Served, ApiError> {
    let app = &core.app;
    let settings = &app.settings;
    let drain = DrainBound {
        time: settings.billing.drain_after_client_gone,
        bytes: settings.billing.drain_after_client_gone_bytes,
    };
    let rbuf_max = settings.read_buffer_bytes + settings.http.max_head_bytes;
    let context = respond::ResponseContext {
        request: &ex.head,
        request_id: &ex.request_id,
        headers: &ex.headers,
        rate_limit: ex.rate_limit.as_ref(),
        keep_alive: ex.keep_alive,
    };
    let request = NodeRequest {
        path: to_node.path,
        body: to_node.body,
        stream: to_node.stream,
        request_id: &ex.request_id,
    };
    // A stream spends most of its life waiting on the node: it waits without a relay buffer (the core's
    // pool keeps it meanwhile), and without the connection's read buffer when nothing is in it (freed: the
    // next read allocates one again, one allocation against 4 KiB held by every stream).
    if to_node.stream && ex.conn.rbuf.is_empty() {
        drop(ex.conn.rbuf.take());
    }
    let mut client =
        ClientSide::new(&mut ex.conn.io, &mut ex.conn.rbuf, rbuf_max, settings.timeouts.write, drain);
    if to_node.stream {
        client.buffers = Some(core);
    }
    let mut tries = Tries::new(core, model);
    let mut buf = core.take_relay_buffer();
    let mut head = core.take_bytes();
    let outcome = loop {
        // 5. Forward.
        let answered = match tries.forward(&mut client, &request, &mut buf, &mut head).await {
            Ok(a) => a,
            Err(NotAnswered::ClientGone) => {
                app.metrics.client_disconnects.fetch_add(1, Ordering::Relaxed);
                break Ok((
                    Served { status: RecordStatus::ClientGone, seen: Seen::default(), http_status: 499 },
                    false,
                ));
            }
            Err(NotAnswered::Failed(e)) => break Err(e),
        };
        // 6. Respond, and 7. relay (8. settling and 9. keeping at its final step). The relay is made in
        // the call's argument: what it is made of is not kept beside it while it runs.
        let forward::Answered { node, answer, in_flight: _in_flight, started } = answered;
        let status = answer.head.status;
        let result;
        (result, buf, head) = relay(
            {
                let stream = request.stream && answer.head.is_event_stream();
                let mode = prepared.body_mode(stream, to_node.cut_usage);
                let framing = respond::head(&mut head, &answer.head, prepared, &mode, &context);
                Relay::new(
                    &mut client,
                    answer,
                    std::mem::take(&mut buf),
                    mode,
                    framing,
                    std::mem::take(&mut head),
                    settings.upstream.read_timeout,
                    settings.billing.progress_tokens,
                )
            },
            app,
            prepared,
            settlement,
        )
        .await;
        if let Some(c) = result.reusable {
            core.upstream_conns.borrow_mut().put(node.id, c);
        }
        app.metrics.latencies().upstream.observe(started.elapsed());
        ex.log.upstream = Some(Arc::clone(&node.label));
        if let Some(t) = result.first_byte_at {
            node.observe_first_byte(t.into_std().saturating_duration_since(started));
            let ttfb = t.into_std().duration_since(ex.started);
            app.metrics.latencies().first_byte.observe(ttfb);
            ex.log.ttfb_us = Some(u64::try_from(ttfb.as_micros()).unwrap_or(u64::MAX));
        }
        let ending = match &result.end {
            RelayEnd::Complete => {
                app.nodes.report_success(&node);
                RecordStatus::Completed
            }
            RelayEnd::ClientGone { drained } => {
                if *drained {
                    app.nodes.report_success(&node);
                }
                app.metrics.client_disconnects.fetch_add(1, Ordering::Relaxed);
                RecordStatus::ClientGone
            }
            RelayEnd::UpstreamBroken(why) if !result.head_sent && !client.is_gone() => {
                // Nothing reached the client: another node may still answer.
                tries.broke_before_reply(&node, why);
                continue;
            }
            RelayEnd::UpstreamBroken(_) => {
                app.nodes.report_failure(&node, "broke mid-answer");
                RecordStatus::UpstreamFailed
            }
            RelayEnd::UpstreamTimedOut => {
                app.nodes.report_failure(&node, "stalled mid-answer");
                if !result.head_sent && !client.is_gone() {
                    break Err(ApiError::UpstreamTimeout);
                }
                RecordStatus::Timeout
            }
        };
        break Ok((
            Served { status: ending, seen: result.seen, http_status: status },
            result.client_keep_alive,
        ));
    };
    core.put_relay_buffer(buf);
    core.put_bytes(head);
    match outcome {
        Ok((served, keep_alive)) => {
            if !keep_alive {
                ex.keep_alive = false;
            }
            Ok(served)
        }
        Err(e) => Err(e),
    }
}
