//! Every answer is paid for: a client that leaves (streamed or not) pays for what the node generated,
//! holds follow what the node will actually do (prompt lists, `n`, the parameter the endpoint's nodes
//! honour), a bill above its hold is billed in full, estimates count text only, a request that does not
//! fit is sent shorter instead of refused, and holds in flight give a retryable 429, not a 402.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods,
    reason = "tests fail loudly and block freely on their own threads"
)]

mod utils;

use serde_json::{Value, json};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};
use utils::*;

/// The one usage record of `account` once it is there.
fn only_record(gw: &Gateway, account: &str) -> Value {
    let mut records = Vec::new();
    let ok = eventually(Duration::from_secs(20), || {
        records = gw.usage_records(account);
        !records.is_empty()
    });
    assert!(ok, "no usage record");
    assert_eq!(records.len(), 1, "{records:?}");
    records.remove(0)
}

fn tokens(r: &Value, field: &str) -> u64 {
    r[field].as_u64().unwrap()
}

/// A fresh account with `credit` and a managed key: (account id, key).
fn funded(gw: &Gateway, credit: u64) -> (String, String) {
    let (acc, tok) = gw.create_account("paid");
    gw.credit(&acc, credit, "paid-initial");
    let key = gw.create_key(&tok, "k");
    (acc, key)
}

/// Sends a request on a raw socket with a small receive buffer and returns it with the response head
/// read (and whatever body bytes came with it).
fn send_raw(addr: SocketAddr, key: &str, body: &Value) -> (TcpStream, String, Vec<u8>) {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    sock.set_recv_buffer_size(16 * 1024).unwrap();
    sock.connect(&addr.into()).unwrap();
    let mut s: TcpStream = sock.into();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let body = body.to_string();
    write!(
        s,
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "closed before the head");
        got.extend_from_slice(&buf[..n]);
        if let Some(p) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&got[..p]).into_owned();
            return (s, head, got[p + 4..].to_vec());
        }
    }
}

fn content_length(head: &str) -> usize {
    head.lines()
        .find_map(|l| l.strip_prefix("Content-Length: ").or_else(|| l.strip_prefix("content-length: ")))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn a_non_stream_client_that_reads_half_a_large_answer_pays_for_the_whole_generated_answer() {
    // About 12 MB of answer: half of it is far more than the socket buffers between the gateway and the
    // client hold (4 MiB here).
    let sim = Sim::start(&["--completion-tokens", "2000000"]);
    let gw = Gateway::start_with(GatewayOpts {
        node_urls: sim.urls.clone(),
        server: "write_timeout_ms = 500\n".into(),
        extra: "[limits]\ndefault_rpm = 0\n".into(),
        ..GatewayOpts::default()
    });
    let (acc, key) = funded(&gw, 1_000_000_000_000);
    let body = json!({"model": MODEL, "max_tokens": 2_000_000,
        "messages": [{"role": "user", "content": "a very long answer please"}]});
    let (mut s, head, mut got) = send_raw(gw.addr, &key, &body);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let len = content_length(&head);
    assert!(len > 10_000_000, "a large answer: {len} bytes");
    let mut buf = [0u8; 65536];
    while got.len() < len / 2 {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0);
        got.extend_from_slice(&buf[..n]);
    }
    // Stop reading, with the connection still open, past the gateway's write timeout.
    std::thread::sleep(Duration::from_secs(2));
    drop(s);
    let r = only_record(&gw, &acc);
    assert_eq!(r["status"], "client_gone", "{r}");
    assert_eq!(tokens(&r, "completion_tokens"), 2_000_000, "the whole generated answer: {r}");
    assert_eq!(r["estimated"], false, "billed from the node's own usage: {r}");
    let cost: u64 = r["cost_ngonka"].as_str().unwrap().parse().unwrap();
    assert!(cost >= 2_000_000 * 20, "{cost}");
}

/// A stream of `events` data events read, then the connection dropped.
fn leave_stream_after(gw: &Gateway, key: &str, body: &Value, events: usize) -> usize {
    let (mut s, head, mut got) = send_raw(gw.addr, key, body);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let mut buf = [0u8; 4096];
    let count = |b: &[u8]| String::from_utf8_lossy(b).matches("data: {").count();
    while count(&got) < events {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "the stream ended early");
        got.extend_from_slice(&buf[..n]);
    }
    drop(s);
    count(&got)
}

fn stream_body(max_tokens: u64) -> Value {
    json!({"model": MODEL, "stream": true, "max_tokens": max_tokens,
        "messages": [{"role": "user", "content": "stream to me"}]})
}

#[test]
fn a_client_that_hangs_up_mid_stream_pays_for_what_the_node_generated() {
    let sim = Sim::start(&["--tokens-per-s", "200", "--completion-tokens", "200"]);
    let gw = Gateway::start_with(GatewayOpts { node_urls: sim.urls.clone(), ..GatewayOpts::default() });
    let (acc, key) = funded(&gw, 1_000_000_000_000);
    leave_stream_after(&gw, &key, &stream_body(500), 3);
    let r = only_record(&gw, &acc);
    assert_eq!(r["status"], "client_gone", "{r}");
    assert_eq!(tokens(&r, "completion_tokens"), 200, "the node's usage, drained after the client left: {r}");
    assert_eq!(r["estimated"], false);
    assert_eq!(sim.stats()["streams_completed"], 1, "the node's answer was read to its end");
    assert!(gw.metric("gateway_client_disconnects_total") >= 1.0);
    assert!(eventually(Duration::from_secs(3), || gw.metric("gateway_requests_in_flight") == 0.0));
}

#[test]
fn a_node_still_generating_after_the_client_left_is_cut_at_the_drain_bound() {
    let sim = Sim::start(&["--tokens-per-s", "20", "--completion-tokens", "400"]);
    let gw = Gateway::start_with(GatewayOpts {
        node_urls: sim.urls.clone(),
        extra: "[billing]\ndrain_after_client_gone_ms = 300\n".into(),
        ..GatewayOpts::default()
    });
    let (acc, key) = funded(&gw, 1_000_000_000_000);
    let read = leave_stream_after(&gw, &key, &stream_body(500), 3);
    let left = Instant::now();
    assert!(
        eventually(Duration::from_secs(3), || sim.stats()["open_connections"] == 1),
        "the gateway closed its node connection at the bound: {}",
        sim.stats()
    );
    assert!(left.elapsed() < Duration::from_secs(3));
    assert_eq!(sim.stats()["streams_aborted"], 1);
    let r = only_record(&gw, &acc);
    assert_eq!((r["status"].as_str(), r["estimated"].as_bool()), (Some("client_gone"), Some(true)), "{r}");
    let completion = tokens(&r, "completion_tokens");
    assert!(completion >= read as u64 && completion < 400, "what the node sent, counted: {completion}");
    assert!(tokens(&r, "prompt_tokens") > 0);
    assert!(eventually(Duration::from_secs(3), || gw.metric("gateway_connections_open") == 1.0));
}

#[test]
fn a_client_leaving_while_the_node_stalls_is_cut_at_the_drain_bound() {
    let sim = Sim::start(&["--stall-rate", "1", "--tokens-per-s", "50", "--completion-tokens", "10"]);
    let gw = Gateway::start_with(GatewayOpts {
        node_urls: sim.urls.clone(),
        extra: "[billing]\ndrain_after_client_gone_ms = 300\n".into(),
        ..GatewayOpts::default()
    });
    let (acc, key) = funded(&gw, 1_000_000_000_000);
    leave_stream_after(&gw, &key, &stream_body(500), 2);
    assert!(
        eventually(Duration::from_secs(2), || sim.stats()["open_connections"] == 1),
        "node connection closed although the node sends nothing: {}",
        sim.stats()
    );
    assert_eq!(gw.metric("gateway_requests_in_flight"), 0.0);
    let r = only_record(&gw, &acc);
    assert_eq!(r["status"], "client_gone");
}

#[test]
fn a_completions_prompt_list_is_held_and_billed_per_prompt() {
    let sim = Sim::start(&["--completion-tokens", "50"]);
    let gw = Gateway::start_with(GatewayOpts {
        node_urls: sim.urls.clone(),
        extra: "[limits]\ndefault_rpm = 0\n".into(),
        ..GatewayOpts::default()
    });
    let (acc, key) = funded(&gw, 1_000_000_000_000);
    // Completion nodes read only max_tokens: the gateway writes it, and holds 4 prompts × n 2 of it.
    let body = json!({"model": MODEL, "prompt": ["one", "two", "three", "four"], "n": 2,
        "max_completion_tokens": 5});
    let r = post(gw.addr, "/v1/completions", &format!("Bearer {key}"), &body);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["choices"].as_array().unwrap().len(), 8);
    let rec = only_record(&gw, &acc);
    assert_eq!(tokens(&rec, "completion_tokens"), 4 * 2 * 5, "every prompt's completions: {rec}");
    assert_eq!(gw.metric("gateway_billed_over_hold_total"), 0.0, "the hold covered all of it");

    // A child key whose limit covers one prompt's worst case but not four.
    let tok = gw.account_token.clone();
    let text = body.to_string();
    let limit = text.len() as u64 * 10 + 2 * 5 * 20 * 2;
    let c = gw.create_child(&tok, json!({"name": "c", "limit_daily_ngonka": limit.to_string()}));
    let r = post(gw.addr, "/v1/completions", &format!("Bearer {}", c["key"].as_str().unwrap()), &body);
    assert_eq!(r.status, 402, "four prompts do not fit: {}", r.text());
    assert_eq!(r.json()["error"]["code"], "child_key_limit");
}

#[test]
fn a_bill_above_its_hold_is_billed_in_full_and_counted() {
    let sim = Sim::start(&["--completion-tokens", "10", "--overrun-tokens", "500"]);
    let gw = Gateway::start(&sim.urls);
    let (acc, key) = funded(&gw, 1_000_000_000_000);
    let r = post(gw.addr, "/v1/chat/completions", &format!("Bearer {key}"), &chat_body("overrun", 10, false));
    assert_eq!(r.status, 200, "{}", r.text());
    let rec = only_record(&gw, &acc);
    assert_eq!(tokens(&rec, "completion_tokens"), 510, "what the node generated: {rec}");
    let cost: u64 = rec["cost_ngonka"].as_str().unwrap().parse().unwrap();
    assert_eq!(cost, tokens(&rec, "prompt_tokens") * 10 + 510 * 20, "never capped at the hold");
    assert_eq!(gw.metric("gateway_billed_over_hold_total"), 1.0);
    assert!(gw.metric("gateway_billed_over_hold_ngonka_total") > 0.0);
}

#[test]
fn an_aborted_request_with_an_image_sized_body_is_billed_by_text() {
    let sim = Sim::start(&["--drop-rate", "1", "--tokens-per-s", "200", "--completion-tokens", "20"]);
    let gw = Gateway::start(&sim.urls);
    let (acc, key) = funded(&gw, 1_000_000_000_000);
    let image = format!("data:image/png;base64,{}", "iVBORw0KGgo".repeat(300_000));
    let body = json!({"model": MODEL, "stream": true, "max_tokens": 20, "messages": [{"role": "user", "content": [
        {"type": "text", "text": "what is in this picture?"},
        {"type": "image_url", "image_url": {"url": image}},
    ]}]});
    let r = post(gw.addr, "/v1/chat/completions", &format!("Bearer {key}"), &body);
    assert_eq!(r.status, 200);
    assert!(r.text().contains("upstream_unavailable"), "the stream ends with an error event");
    let rec = only_record(&gw, &acc);
    assert_eq!(
        (rec["status"].as_str(), rec["estimated"].as_bool()),
        (Some("upstream_failed"), Some(true)),
        "{rec}"
    );
    let prompt = tokens(&rec, "prompt_tokens");
    assert!(prompt < 32, "the text, not the {} base64 bytes: {prompt}", image.len());
    assert!(tokens(&rec, "completion_tokens") >= 5, "the content relayed before the cut: {rec}");
}

#[test]
fn a_duplicate_key_inside_stream_options_is_refused() {
    let sim = Sim::start(&[]);
    let gw = Gateway::start(&sim.urls);
    let body = format!(
        r#"{{"model":"{MODEL}","stream":true,"messages":[{{"role":"user","content":"x"}}],"stream_options":{{"include_usage":true,"include_usage":false}}}}"#
    );
    let r = http(
        gw.addr,
        "POST",
        "/v1/chat/completions",
        &[("Authorization", &gw.auth())],
        Some(body.as_bytes()),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.json()["error"]["param"], "stream_options");
    assert_eq!(sim.stats()["nodes"][0]["requests"], 0, "never reached a node");
}

/// A child key of the gateway's account with a daily limit (and its own fields); its secret.
fn child(gw: &Gateway, limit: u64, extra: Value) -> String {
    let tok = gw.account_token.clone();
    let mut spec = json!({"name": "c", "limit_daily_ngonka": limit.to_string()});
    for (k, v) in extra.as_object().unwrap() {
        spec[k] = v.clone();
    }
    gw.create_child(&tok, spec)["key"].as_str().unwrap().to_owned()
}

#[test]
fn a_child_with_a_daily_limit_below_the_default_worst_case_still_gets_shorter_answers() {
    let sim = Sim::start(&["--completion-tokens", "4096"]);
    let gw = Gateway::start_with(GatewayOpts {
        node_urls: sim.urls.clone(),
        extra: "[limits]\ndefault_rpm = 0\n".into(),
        ..GatewayOpts::default()
    });
    // The default worst case is 4096 × 20 = 81,920 ngonka of completion alone.
    let limit = 30_000u64;
    let key = child(&gw, limit, json!({}));
    let body = json!({"model": MODEL, "messages": [{"role": "user", "content": "as long as you like"}]});
    let r = post(gw.addr, "/v1/chat/completions", &format!("Bearer {key}"), &body);
    assert_eq!(r.status, 200, "fitted, not refused: {}", r.text());
    let v = r.json();
    assert_eq!(v["choices"][0]["finish_reason"], "length", "shorter: the node was sent a lower max_tokens");
    let completion = v["usage"]["completion_tokens"].as_u64().unwrap();
    assert!(completion < 4096 && completion * 20 <= limit, "{completion}");
    assert_eq!(gw.metric("gateway_fitted_requests_total"), 1.0);
    // Spend goes on until what is left pays for fewer than limits.min_fit_tokens: then 402.
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(post(gw.addr, "/v1/chat/completions", &format!("Bearer {key}"), &body).status);
    }
    assert_eq!(statuses.last(), Some(&402), "{statuses:?}");
    assert!(!statuses.contains(&429), "nothing was in flight: {statuses:?}");

    // An explicit max_tokens is fitted only when the key says "always".
    let explicit =
        json!({"model": MODEL, "max_tokens": 32000, "messages": [{"role": "user", "content": "x"}]});
    let unset = child(&gw, limit, json!({}));
    assert_eq!(post(gw.addr, "/v1/chat/completions", &format!("Bearer {unset}"), &explicit).status, 402);
    let always = child(&gw, limit, json!({"fit_max_tokens": "always"}));
    let r = post(gw.addr, "/v1/chat/completions", &format!("Bearer {always}"), &explicit);
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.json()["usage"]["completion_tokens"].as_u64().unwrap() * 20 <= limit);
}

#[test]
fn four_hundred_concurrent_requests_whose_total_fits_get_no_402() {
    let sim = Sim::start(&["--tokens-per-s", "20", "--completion-tokens", "8"]);
    let gw = Gateway::start_with(GatewayOpts {
        node_urls: sim.urls.clone(),
        extra: "[limits]\ndefault_rpm = 0\n".into(),
        ..GatewayOpts::default()
    });
    // Each request costs about 15 prompt tokens × 10 + 8 × 20 ≈ 310 ngonka, and holds its worst case,
    // about 160 body bytes × 10 + 100 × 20 ≈ 3,600: 400 of them cost about 124,000 and would hold
    // 1.4 million. The balance covers twice what they cost, a tenth of what they would hold at once.
    let balance = 250_000u64;
    let (acc, key) = funded(&gw, balance);
    // All 400 start together, so on a fast machine too the first are still streaming when the last ask.
    let start = std::sync::Barrier::new(400);
    let outcomes: Vec<(u16, u32)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..400)
            .map(|i| {
                let key = key.clone();
                let start = &start;
                scope.spawn(move || {
                    start.wait();
                    let body = json!({"model": MODEL, "stream": true, "max_tokens": 100,
                        "messages": [{"role": "user", "content": format!("concurrent request {i:03}")}]});
                    retry_in_flight(500, || {
                        post(gw.addr, "/v1/chat/completions", &format!("Bearer {key}"), &body)
                    })
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let statuses: Vec<u16> = outcomes.iter().map(|o| o.0).collect();
    assert!(!statuses.contains(&402), "no 402 while spend leaves room: {statuses:?}");
    assert!(statuses.iter().all(|s| *s == 200), "retried, every one succeeds: {statuses:?}");
    let retried = outcomes.iter().filter(|o| o.1 > 0).count();
    assert!(
        retried > 0,
        "holds in flight did block some: the 429 path was exercised ({} records so far)",
        gw.usage_records(&acc).len()
    );
    let records = gw.usage_records(&acc);
    assert_eq!(records.len(), 400);
    let billed: u64 =
        records.iter().map(|r| r["cost_ngonka"].as_str().unwrap().parse::<u64>().unwrap()).sum();
    assert!(billed <= balance / 2 + 10_000, "the total fits: {billed}");
    assert_eq!(gw.balance(&acc), (balance - billed) as i64);
}

#[test]
fn a_kill_9_mid_stream_loses_at_most_progress_tokens_of_the_answer() {
    let sim = Sim::start(&["--tokens-per-s", "400", "--completion-tokens", "2000"]);
    let mut gw = Gateway::start_with(GatewayOpts {
        node_urls: sim.urls.clone(),
        extra: "[journal]\nprogress_tokens = 50\n".into(),
        ..GatewayOpts::default()
    });
    let (acc, key) = funded(&gw, 1_000_000_000_000);
    let (mut s, head, mut got) = send_raw(gw.addr, &key, &stream_body(5000));
    assert!(head.starts_with("HTTP/1.1 200"));
    let mut buf = [0u8; 8192];
    let count = |b: &[u8]| String::from_utf8_lossy(b).matches("data: {").count();
    while count(&got) < 500 {
        let n = s.read(&mut buf).unwrap();
        got.extend_from_slice(&buf[..n]);
    }
    gw.proc.signal("KILL");
    // What the client received before the kill.
    s.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    let relayed = count(&got) as u64;
    gw.restart();
    let r = only_record(&gw, &acc);
    assert_eq!(r["status"], "interrupted", "{r}");
    let billed = tokens(&r, "completion_tokens");
    assert!(billed + 50 >= relayed && billed <= relayed + 50, "billed {billed} of {relayed} relayed tokens");
}
