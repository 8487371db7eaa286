//! The simulator's HTTP side: a small keep-alive server on its own framing (`sim::wire`).

use super::node::{Sim, SimParams};
use super::prompt;
use super::reply::{self, Piece};
use super::text;
use super::wire::{self, Framing, Method, Request};
use crate::http::io::Transport;
use crate::http::io::{ReadBuf, ReadError, write_all_deadline};
use crate::http::tls::ServerTls;
use crate::rt::shutdown::Shutdown;
use monoio::net::TcpListener;
use serde_json::{Value, json};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

const IO_TIMEOUT: Duration = Duration::from_secs(120);
const STALL_LIMIT: Duration = Duration::from_secs(600);

/// One simulator worker: accepts on its listeners until `stop`.
pub async fn run(
    sim: Arc<Sim>,
    listeners: Vec<(usize, std::net::TcpListener)>,
    stop: Shutdown,
    seed: u64,
    tls: Option<ServerTls>,
) {
    for (node, l) in listeners {
        match TcpListener::from_std(l) {
            Ok(l) => {
                monoio::spawn(accept_loop(Arc::clone(&sim), node, l, seed ^ node as u64, tls.clone()));
            }
            Err(e) => log::error!(target: "sim", "cannot use listener: {e}"),
        }
    }
    stop.wait().await;
}

async fn accept_loop(sim: Arc<Sim>, node: usize, listener: TcpListener, seed: u64, tls: Option<ServerTls>) {
    let rng = Rc::new(std::cell::Cell::new(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1));
    loop {
        match listener.accept().await {
            Ok((io, _)) => {
                let _ = io.set_nodelay(true);
                let (sim, rng) = (Arc::clone(&sim), Rc::clone(&rng));
                match &tls {
                    None => {
                        monoio::spawn(connection(sim, node, io, rng));
                    }
                    Some(tls) => {
                        let tls = tls.clone();
                        monoio::spawn(async move {
                            if let Ok(io) = tls.accept(io, IO_TIMEOUT).await {
                                connection(sim, node, io, rng).await;
                            }
                        });
                    }
                }
            }
            Err(_) => monoio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

fn next_f64(rng: &std::cell::Cell<u64>) -> f64 {
    let mut x = rng.get();
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    rng.set(x);
    (x >> 11) as f64 / (1u64 << 53) as f64
}

struct Open<'a>(&'a Sim);
impl Drop for Open<'_> {
    fn drop(&mut self) {
        self.0.stats.open_connections.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn connection<S: Transport>(sim: Arc<Sim>, node: usize, mut io: S, rng: Rc<std::cell::Cell<u64>>) {
    sim.stats.open_connections.fetch_add(1, Ordering::Relaxed);
    let _open = Open(&sim);
    let mut rbuf = ReadBuf::with_capacity(8192);
    let mut out = Vec::with_capacity(4096);
    while let Some(req) = wire::read_request(&mut io, &mut rbuf, IO_TIMEOUT).await {
        sim.stats.requests.fetch_add(1, Ordering::Relaxed);
        let keep = handle(&sim, node, &mut io, &req, &rng, &mut out).await;
        if !keep || !req.keep_alive {
            return;
        }
    }
}

async fn send<S: Transport>(io: &mut S, out: &mut Vec<u8>) -> bool {
    let buf = std::mem::take(out);
    let (res, buf) = write_all_deadline(io, buf, IO_TIMEOUT).await;
    *out = buf;
    out.clear();
    res.is_ok()
}

async fn respond<S: Transport>(
    io: &mut S,
    out: &mut Vec<u8>,
    status: u16,
    body: &[u8],
    extra: &[(&str, &str)],
) -> bool {
    wire::head(out, status, "application/json", extra, Framing::Length(body.len()));
    out.extend_from_slice(body);
    send(io, out).await
}

/// Answers one request; `false` closes the connection.
async fn handle<S: Transport>(
    sim: &Sim,
    node: usize,
    io: &mut S,
    head: &Request,
    rng: &std::cell::Cell<u64>,
    out: &mut Vec<u8>,
) -> bool {
    let path = head.path.as_str();
    let body = head.body.as_slice();
    match (head.method, path) {
        (Method::Get, "/healthz") => return respond(io, out, 200, br#"{"status":"ok"}"#, &[]).await,
        (Method::Get, "/sim/stats") => {
            let mut stats = sim.stats.to_json();
            stats["nodes"] = sim
                .nodes
                .iter()
                .map(|n| {
                    json!({"address": n.address, "url": n.inference_url, "requests": n.requests.load(Ordering::Relaxed)})
                })
                .collect();
            let body = stats.to_string();
            return respond(io, out, 200, body.as_bytes(), &[]).await;
        }
        (Method::Get, "/v1/epochs/current/participants") => {
            return respond(io, out, 200, sim.participants_json().to_string().as_bytes(), &[]).await;
        }
        (Method::Get, "/chain-api/productscience/inference/inference/params") => {
            return respond(io, out, 200, sim.params_json().to_string().as_bytes(), &[]).await;
        }
        (Method::Get, p) if p.starts_with("/v1/chat/completions/") => {
            let id = &p["/v1/chat/completions/".len()..];
            return match sim.completion(id) {
                Some(body) => respond(io, out, 200, body.as_bytes(), &[]).await,
                None => respond(io, out, 404, br#"{"error":"inference not found"}"#, &[]).await,
            };
        }
        (Method::Post, "/sim/faults") => {
            return match serde_json::from_slice::<SimParams>(body) {
                Ok(p) => {
                    sim.nodes[node].params.store(Arc::new(p));
                    respond(io, out, 200, br#"{"ok":true}"#, &[]).await
                }
                Err(e) => {
                    respond(io, out, 400, json!({"error": e.to_string()}).to_string().as_bytes(), &[]).await
                }
            };
        }
        _ => {}
    }
    if let Some((status, answer)) = super::chain::rest_answer(&sim.chain, head.method, path, body) {
        return respond(io, out, status, answer.as_bytes(), &[]).await;
    }
    if let Some(key) = &sim.api_key
        && !sim.gonka
    {
        let ok = head.authorization.as_deref().and_then(|a| a.strip_prefix("Bearer ")) == Some(key.as_str());
        if !ok {
            let e = json!({"error": {"message": "Incorrect API key provided.", "type": "invalid_request_error", "code": "invalid_api_key", "param": null}});
            return respond(io, out, 401, e.to_string().as_bytes(), &[]).await;
        }
    }
    match (head.method, path) {
        (Method::Get, "/v1/models") => {
            let data: Vec<Value> = sim.nodes[node]
                .models
                .iter()
                .map(|m| json!({"id": m, "object": "model", "created": 0, "owned_by": "sim"}))
                .collect();
            respond(io, out, 200, json!({"object": "list", "data": data}).to_string().as_bytes(), &[]).await
        }
        (Method::Post, "/v1/chat/completions" | "/v1/completions" | "/v1/embeddings") => {
            if sim.gonka
                && let Err((status, message)) = check_signature(sim, node, head)
            {
                sim.stats.auth_refused.fetch_add(1, Ordering::Relaxed);
                return respond(io, out, status, json!({"error": message}).to_string().as_bytes(), &[]).await;
            }
            sim.nodes[node].requests.fetch_add(1, Ordering::Relaxed);
            let params = sim.nodes[node].params.load_full();
            let roll = next_f64(rng);
            if roll < params.error_rate {
                sim.stats.faults_injected.fetch_add(1, Ordering::Relaxed);
                return respond(io, out, 500, br#"{"error":"simulated internal error"}"#, &[]).await;
            }
            if roll < params.error_rate + params.capacity_rate {
                sim.stats.faults_injected.fetch_add(1, Ordering::Relaxed);
                return respond(
                    io,
                    out,
                    429,
                    br#"{"error":"Transfer Agent capacity reached"}"#,
                    &[("Retry-After", "1")],
                )
                .await;
            }
            let req: Value = match serde_json::from_slice(body) {
                Ok(v) => v,
                Err(e) => {
                    let e = json!({"error": {"message": format!("invalid JSON: {e}"), "type": "invalid_request_error", "param": null, "code": null}});
                    return respond(io, out, 400, e.to_string().as_bytes(), &[]).await;
                }
            };
            let model = req.get("model").and_then(Value::as_str).unwrap_or_default().to_owned();
            if !sim.nodes[node].models.contains(&model) {
                let e = json!({"error": {"message": format!("model {model} is not served here"), "type": "invalid_request_error", "param": "model", "code": "model_not_found"}});
                return respond(io, out, 404, e.to_string().as_bytes(), &[]).await;
            }
            let fault_roll = next_f64(rng);
            let mid_fault = if fault_roll < params.drop_rate {
                MidFault::Drop
            } else if fault_roll < params.drop_rate + params.stall_rate {
                MidFault::Stall
            } else {
                MidFault::None
            };
            if mid_fault != MidFault::None {
                sim.stats.faults_injected.fetch_add(1, Ordering::Relaxed);
            }
            // Tokens generated so far, which the bill (if the chain governs the requester) charges.
            let meter = std::cell::Cell::new(0u64);
            let _bill = match head.requester.as_deref().filter(|_| sim.gonka) {
                Some(requester) => {
                    let node_address = sim.nodes[node].address.as_str();
                    match super::escrow::open(&sim.chain, node_address, requester, &req, path, &meter) {
                        Ok(bill) => bill,
                        Err(refusal) => {
                            let body = json!({"error": refusal.message}).to_string();
                            return respond(io, out, refusal.status, body.as_bytes(), &[]).await;
                        }
                    }
                }
                None => None,
            };
            if path == "/v1/embeddings" {
                return embeddings(io, out, &req, &model, &meter).await;
            }
            let chat = path == "/v1/chat/completions";
            generate(sim, io, out, &req, &model, chat, &params, mid_fault, rng, &meter).await
        }
        _ => respond(io, out, 404, br#"{"error":"not found"}"#, &[]).await,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MidFault {
    None,
    Drop,
    Stall,
}

/// What each choice of an answer says.
struct Choice {
    index: usize,
    pieces: Vec<Piece>,
    /// The stop string that cut it short.
    stop: Option<String>,
}

#[expect(clippy::too_many_arguments, reason = "one request's whole context")]
async fn generate<S: Transport>(
    sim: &Sim,
    io: &mut S,
    out: &mut Vec<u8>,
    req: &Value,
    model: &str,
    chat: bool,
    params: &SimParams,
    fault: MidFault,
    rng: &std::cell::Cell<u64>,
    meter: &std::cell::Cell<u64>,
) -> bool {
    // vLLM's semantics: chat honours `max_completion_tokens`, else `max_tokens`; completions read only
    // `max_tokens`. `n` choices per prompt (`best_of` generated on completions); a completions prompt
    // list gets choices per prompt. Reasoning tokens count as completion tokens.
    let max_tokens = if chat {
        req.get("max_completion_tokens")
            .and_then(Value::as_u64)
            .or_else(|| req.get("max_tokens").and_then(Value::as_u64))
    } else {
        req.get("max_tokens").and_then(Value::as_u64)
    }
    .unwrap_or(u64::MAX);
    let n_per_prompt = req.get("n").and_then(Value::as_u64).unwrap_or(1).clamp(1, 128) as usize;
    let generated_per_prompt =
        req.get("best_of").and_then(Value::as_u64).map_or(n_per_prompt, |b| (b as usize).max(n_per_prompt));
    let reasoning =
        if chat && !reply::thinking_off(req) { params.reasoning_tokens.min(max_tokens) } else { 0 };
    let stops = if chat { reply::stop_strings(req) } else { Vec::new() };
    let content_budget = max_tokens - reasoning;
    let per_choice = params.completion_tokens.min(content_budget).saturating_add(params.overrun_tokens);
    let prompts: Vec<(String, usize)> = if chat {
        vec![prompt::prompt_of(req, true)]
    } else {
        prompt::completion_prompts(req).into_iter().map(|p| (p, 0)).collect()
    };
    let mut choices = Vec::new();
    let mut prompt_tokens = 0u64;
    for (p, (prompt, messages)) in prompts.iter().enumerate() {
        prompt_tokens += text::prompt_tokens(prompt.len(), *messages);
        for c in 0..n_per_prompt {
            let mut pieces = if chat {
                reply::chat_pieces(req, prompt, c, reasoning as usize, per_choice as usize)
            } else {
                let seed = if c == 0 { prompt.clone() } else { format!("{prompt}#{c}") };
                text::tokens(seed.as_bytes(), per_choice as usize).into_iter().map(Piece::Content).collect()
            };
            let stop = reply::cut_at_stop(&mut pieces, &stops);
            choices.push(Choice { index: p * n_per_prompt + c, pieces, stop });
        }
    }
    let calls_tool = choices.iter().any(|c| c.pieces.iter().any(|p| matches!(p, Piece::ToolCall { .. })));
    let finish_of = |c: &Choice| {
        if calls_tool {
            "tool_calls"
        } else if c.stop.is_some() {
            "stop"
        } else if content_budget < params.completion_tokens {
            "length"
        } else {
            "stop"
        }
    };
    // vLLM's `stop_reason`: the stop string that ended the choice.
    let stop_reason_of = |c: &Choice| c.stop.as_ref().map_or(Value::Null, |s| Value::String(s.clone()));
    let completion_tokens = if chat {
        choices.iter().flat_map(|c| &c.pieces).map(reply::piece_tokens).sum::<u64>()
    } else {
        per_choice * (prompts.len() * generated_per_prompt) as u64
    };
    let n = choices.iter().map(|c| c.pieces.len() as u64).max().unwrap_or(0);
    let mut usage = json!({"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens});
    if reasoning > 0 {
        usage["completion_tokens_details"] = json!({"reasoning_tokens": reasoning * choices.len() as u64});
    }
    let stream = req.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let include_usage = req
        .get("stream_options")
        .and_then(|o| o.get("include_usage"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let id = format!("{}-{:016x}", if chat { "chatcmpl" } else { "cmpl" }, (next_f64(rng) * 1e18) as u64);
    let created = crate::time::unix_secs();
    let start = monoio::time::Instant::now();
    let ttft = Duration::from_millis(params.ttft_ms);
    let per_token = if params.tokens_per_s > 0.0 {
        Duration::from_secs_f64(1.0 / params.tokens_per_s)
    } else {
        Duration::ZERO
    };

    // The finished answer, kept for `GET /v1/chat/completions/{id}` (streamed answers too).
    let choice_json: Vec<Value> = choices
        .iter()
        .map(|c| {
            if chat {
                json!({"index": c.index, "message": reply::message(&c.pieces), "finish_reason": finish_of(c),
                    "stop_reason": stop_reason_of(c)})
            } else {
                let text: String = c
                    .pieces
                    .iter()
                    .map(|p| if let Piece::Content(t) = p { t.as_str() } else { "" })
                    .collect();
                json!({"index": c.index, "text": text, "logprobs": null, "finish_reason": finish_of(c)})
            }
        })
        .collect();
    let object = if chat { "chat.completion" } else { "text_completion" };
    let body = json!({"id": id, "object": object, "created": created, "model": model,
        "choices": choice_json, "usage": usage})
    .to_string();
    if fault == MidFault::None {
        sim.remember(&id, body.clone());
    }
    if !stream {
        meter.set(prompt_tokens + completion_tokens);
        let total = ttft + per_token * (n.saturating_sub(1) as u32);
        if !total.is_zero() {
            monoio::time::sleep_until(start + total).await;
        }
        if fault == MidFault::None {
            return respond(io, out, 200, body.as_bytes(), &[]).await;
        }
        wire::head(out, 200, "application/json", &[], Framing::Length(body.len()));
        out.extend_from_slice(&body.as_bytes()[..body.len() / 2]);
        let _ = send(io, out).await;
        if fault == MidFault::Stall {
            stall(io).await;
        }
        return false;
    }

    sim.stats.streams_started.fetch_add(1, Ordering::Relaxed);
    wire::head(out, 200, "text/event-stream", &[("Cache-Control", "no-cache")], Framing::Chunked);
    if !send(io, out).await {
        sim.stats.streams_aborted.fetch_add(1, Ordering::Relaxed);
        return false;
    }
    let usage_null = if include_usage { r#","usage":null"# } else { "" };
    let model_json = Value::String(model.to_owned()).to_string();
    let chunk_object = if chat { "chat.completion.chunk" } else { "text_completion" };
    let mut event = Vec::with_capacity(512);
    meter.set(prompt_tokens);
    for i in 0..n as usize {
        monoio::time::sleep_until(start + ttft + per_token * i as u32).await;
        if fault != MidFault::None && i as u64 == n / 2 {
            if fault == MidFault::Stall {
                stall(io).await;
            }
            return false;
        }
        event.clear();
        for c in &choices {
            let Some(piece) = c.pieces.get(i) else { continue };
            let index = c.index;
            if chat {
                let delta = match piece {
                    // The common piece, written without building a JSON value.
                    Piece::Content(t) => {
                        let role = if i == 0 { r#""role":"assistant","# } else { "" };
                        format!(r#"{{{role}"content":{}}}"#, Value::String(t.clone()))
                    }
                    other => reply::delta(other, i == 0).to_string(),
                };
                event.extend_from_slice(
                    format!(
                        r#"data: {{"id":"{id}","object":"{chunk_object}","created":{created},"model":{model_json},"choices":[{{"index":{index},"delta":{delta},"finish_reason":null}}]{usage_null}}}"#
                    )
                    .as_bytes(),
                );
            } else {
                let Piece::Content(t) = piece else { continue };
                let tok_json = Value::String(t.clone()).to_string();
                event.extend_from_slice(
                    format!(
                        r#"data: {{"id":"{id}","object":"{chunk_object}","created":{created},"model":{model_json},"choices":[{{"index":{index},"text":{tok_json},"logprobs":null,"finish_reason":null}}]{usage_null}}}"#
                    )
                    .as_bytes(),
                );
            }
            event.extend_from_slice(b"\n\n");
        }
        // Generated, whether or not the client is still there to read it.
        let tokens: u64 = choices.iter().filter_map(|c| c.pieces.get(i)).map(reply::piece_tokens).sum();
        meter.set(meter.get() + tokens);
        wire::chunk(out, &event);
        if !send(io, out).await {
            sim.stats.streams_aborted.fetch_add(1, Ordering::Relaxed);
            return false;
        }
    }
    meter.set(prompt_tokens + completion_tokens);
    event.clear();
    for c in &choices {
        let index = c.index;
        let finish = finish_of(c);
        if chat {
            let stop_reason = stop_reason_of(c);
            event.extend_from_slice(format!(r#"data: {{"id":"{id}","object":"{chunk_object}","created":{created},"model":{model_json},"choices":[{{"index":{index},"delta":{{}},"finish_reason":"{finish}","stop_reason":{stop_reason}}}]{usage_null}}}"#).as_bytes());
        } else {
            event.extend_from_slice(format!(r#"data: {{"id":"{id}","object":"{chunk_object}","created":{created},"model":{model_json},"choices":[{{"index":{index},"text":"","logprobs":null,"finish_reason":"{finish}"}}]{usage_null}}}"#).as_bytes());
        }
        event.extend_from_slice(b"\n\n");
    }
    if include_usage {
        event.extend_from_slice(
            format!(r#"data: {{"id":"{id}","object":"{chunk_object}","created":{created},"model":{model_json},"choices":[],"usage":{usage}}}"#)
                .as_bytes(),
        );
        event.extend_from_slice(b"\n\n");
    }
    event.extend_from_slice(b"data: [DONE]\n\n");
    wire::chunk(out, &event);
    wire::last_chunk(out);
    if !send(io, out).await {
        sim.stats.streams_aborted.fetch_add(1, Ordering::Relaxed);
        return false;
    }
    sim.stats.streams_completed.fetch_add(1, Ordering::Relaxed);
    true
}

/// Hangs until the peer closes (or a long limit passes).
async fn stall<S: Transport>(io: &mut S) {
    let mut rbuf = ReadBuf::with_capacity(1024);
    loop {
        match rbuf.fill(io, 1024, STALL_LIMIT, std::future::pending()).await {
            Ok(n) if n > 0 => rbuf.consume(n),
            Ok(_) | Err(ReadError::Eof | ReadError::TimedOut | ReadError::Interrupted | ReadError::Io(_)) => {
                return;
            }
        }
    }
}

async fn embeddings<S: Transport>(
    io: &mut S,
    out: &mut Vec<u8>,
    req: &Value,
    model: &str,
    meter: &std::cell::Cell<u64>,
) -> bool {
    let Some(inputs) = prompt::embedding_inputs(req) else {
        let e = json!({"error": {"message": "input is required", "type": "invalid_request_error", "param": "input", "code": null}});
        return respond(io, out, 400, e.to_string().as_bytes(), &[]).await;
    };
    let prompt_tokens: u64 = inputs.iter().map(|s| text::prompt_tokens(s.len(), 0)).sum();
    meter.set(prompt_tokens);
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(i, s)| json!({"object": "embedding", "index": i, "embedding": text::embedding(s.as_bytes(), 16)}))
        .collect();
    let body = json!({"object": "list", "data": data, "model": model,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}});
    respond(io, out, 200, body.to_string().as_bytes(), &[]).await
}

/// A Transfer Agent's checks, with its answers: `Err((status, message))`.
fn check_signature(sim: &Sim, node: usize, head: &Request) -> Result<(), (u16, &'static str)> {
    let Some(signature) = head.authorization.as_deref().filter(|a| !a.is_empty()) else {
        return Err((401, "Authorization is required"));
    };
    let Some(requester) = head.requester.as_deref() else {
        return Err((401, "X-Requester-Address is required"));
    };
    let Some(timestamp) = head.timestamp.as_deref().and_then(|t| t.parse::<u64>().ok()) else {
        return Err((400, "X-Timestamp is required (Unix nanoseconds)"));
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    if now.saturating_sub(timestamp) > 60_000_000_000 {
        return Err((400, "Request timestamp is too old"));
    }
    if timestamp.saturating_sub(now) > 30_000_000_000 {
        return Err((400, "Request timestamp is too far in the future"));
    }
    let me = &sim.nodes[node];
    if !super::account::signature_is_valid(&head.body, timestamp, &me.address, requester, signature) {
        return Err((401, "Unable to validate request against PubKey"));
    }
    if !me.claim(signature, timestamp, now) {
        sim.stats.replays_refused.fetch_add(1, Ordering::Relaxed);
        return Err((400, "AuthKey has already been used"));
    }
    Ok(())
}
