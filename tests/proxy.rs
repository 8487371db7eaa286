//! The request path end to end: the real gateway binary in front of the real simulator, over TCP.
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
use std::net::TcpStream;
use std::time::{Duration, Instant};
use utils::*;

#[test]
fn non_stream_and_stream_give_the_simulators_text() {
    let sim = Sim::start(&["--completion-tokens", "12"]);
    let gw = Gateway::start(&sim.urls);
    let direct = post(sim.addr(0), "/v1/chat/completions", "Bearer x", &chat_body("hello there", 50, false));
    assert_eq!(direct.status, 200);
    let expected = direct.json()["choices"][0]["message"]["content"].as_str().unwrap().to_owned();
    assert_eq!(expected.split(' ').count(), 12);

    let r = post(gw.addr, "/v1/chat/completions", &gw.auth(), &chat_body("hello there", 50, false));
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.header("x-request-id").unwrap().starts_with("req_"));
    let v = r.json();
    assert_eq!(v["choices"][0]["message"]["content"], expected.as_str());
    assert_eq!(v["usage"]["completion_tokens"], 12);

    let r = post(gw.addr, "/v1/chat/completions", &gw.auth(), &chat_body("hello there", 50, true));
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/event-stream"));
    let body = r.text();
    assert_eq!(sse_text(&body), expected);
    assert!(body.trim_end().ends_with("data: [DONE]"));
    assert!(!body.contains("\"prompt_tokens\""), "the usage chunk the client did not ask for is cut: {body}");

    let mut with_usage = chat_body("hello there", 50, true);
    with_usage["stream_options"] = json!({"include_usage": true});
    let r = post(gw.addr, "/v1/chat/completions", &gw.auth(), &with_usage);
    let body = r.text();
    assert_eq!(sse_text(&body), expected);
    assert!(body.contains("\"completion_tokens\":12"), "asked-for usage chunk is kept: {body}");
}

#[test]
fn client_request_ids_are_echoed_but_never_replace_the_gateways_own() {
    let sim = Sim::start(&[]);
    let gw = Gateway::start(&sim.urls);
    let body = chat_body("x", 3, false).to_string();
    let mut ids = Vec::new();
    for header in ["X-Request-Id", "X-Client-Request-Id", "X-Request-Id"] {
        let r = http(
            gw.addr,
            "POST",
            "/v1/chat/completions",
            &[("Authorization", &gw.auth()), (header, "my-trace-42")],
            Some(body.as_bytes()),
        );
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-client-request-id"), Some("my-trace-42"));
        let id = r.header("x-request-id").unwrap().to_owned();
        assert!(id.starts_with("req_") && id.len() == 36, "{id}");
        ids.push(id);
    }
    assert!(ids[0][..16] <= ids[1][..16] && ids[1][..16] <= ids[2][..16], "time-ordered: {ids:?}");
    // The same client id three times is still three requests, each billed once.
    let records = gw.usage_records(&gw.account_id);
    for id in &ids {
        assert_eq!(records.iter().filter(|r| r["request_id"] == id.as_str()).count(), 1, "{id}");
    }
}

#[test]
fn models_completions_and_embeddings() {
    let sim = Sim::start(&[]);
    let gw = Gateway::start_with(GatewayOpts {
        node_urls: sim.urls.clone(),
        models: vec![MODEL, "unserved/model"],
        node_models: vec![MODEL],
        ..GatewayOpts::default()
    });
    let r = http(gw.addr, "GET", "/v1/models", &[("Authorization", &gw.auth())], None);
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["object"], "list");
    let ids: Vec<&str> = v["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(ids, [MODEL], "a model no node serves is not listed");
    assert_eq!(v["data"][0]["context_length"], 32768);
    assert_eq!(v["data"][0]["price_prompt_ngonka"], "10");

    let r = post(
        gw.addr,
        "/v1/completions",
        &gw.auth(),
        &json!({"model": MODEL, "prompt": "once upon", "max_tokens": 4}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["usage"]["completion_tokens"], 4);

    let r = post(
        gw.addr,
        "/v1/completions",
        &gw.auth(),
        &json!({"model": MODEL, "prompt": "once upon", "max_tokens": 4, "stream": true}),
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.text().matches("\"text\"").count(), 5, "{}", r.text());

    let r = post(gw.addr, "/v1/embeddings", &gw.auth(), &json!({"model": MODEL, "input": ["a", "b"]}));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["data"].as_array().unwrap().len(), 2);
}

#[test]
fn errors_are_openai_shaped() {
    let sim = Sim::start(&[]);
    let gw = Gateway::start(&sim.urls);
    let check = |r: &Resp, status: u16, code: &str| {
        assert_eq!(r.status, status, "{}", r.text());
        let v = r.json();
        assert_eq!(v["error"]["code"], code, "{v}");
        assert!(v["error"]["message"].is_string());
        assert!(v["error"].get("type").is_some() && v["error"].get("param").is_some());
        assert!(r.header("x-request-id").is_some());
    };
    let r = post(
        gw.addr,
        "/v1/chat/completions",
        &gw.auth(),
        &json!({"model": "nope", "messages": [{"role": "user", "content": "x"}]}),
    );
    check(&r, 404, "model_not_found");
    let r =
        http(gw.addr, "POST", "/v1/chat/completions", &[("Authorization", &gw.auth())], Some(b"{not json"));
    check(&r, 400, "invalid_request_error");
    let r = post(
        gw.addr,
        "/v1/chat/completions",
        &gw.auth(),
        &json!({"model": MODEL, "messages": [{"role": "user", "content": "x"}], "max_tokens": "many"}),
    );
    check(&r, 400, "invalid_request_error");
    assert_eq!(r.json()["error"]["param"], "max_tokens");
    let r = post(gw.addr, "/v1/chat/completions", "", &chat_body("x", 1, false));
    check(&r, 401, "invalid_api_key");
    let r = http(gw.addr, "GET", "/v1/nothing", &[], None);
    check(&r, 404, "not_found");
    let r = http(gw.addr, "GET", "/v1/chat/completions", &[], None);
    check(&r, 405, "method_not_allowed");
}

#[test]
fn a_dead_node_is_skipped_and_ejected() {
    let sim = Sim::start(&[]);
    // A port nobody listens on.
    let dead = format!("http://127.0.0.1:{}/v1", free_port());
    let gw = Gateway::start(&[dead.clone(), sim.urls[0].clone()]);
    for i in 0..20 {
        let r =
            post(gw.addr, "/v1/chat/completions", &gw.auth(), &chat_body(&format!("q{i}"), 3, i % 2 == 0));
        assert_eq!(r.status, 200, "request {i}: {}", r.text());
    }
    let m = gw.metrics();
    let dead_up = format!("gateway_node_up{{node=\"{dead}\"}} 0");
    assert!(m.contains(&dead_up), "dead node ejected:\n{m}");
    assert!(gw.metric("gateway_upstream_retries_total") >= 1.0);
}

#[test]
fn capacity_429_and_5xx_move_to_another_node_and_it_comes_back() {
    let sim = Sim::start(&["--extra-nodes", "1"]);
    sim.set_faults(0, json!({"capacity_rate": 1.0}));
    let gw = Gateway::start(&sim.urls);
    for i in 0..10 {
        let r = post(gw.addr, "/v1/chat/completions", &gw.auth(), &chat_body(&format!("c{i}"), 3, true));
        assert_eq!(r.status, 200, "{}", r.text());
    }
    sim.set_faults(0, json!({"error_rate": 1.0}));
    for i in 0..10 {
        let r = post(gw.addr, "/v1/chat/completions", &gw.auth(), &chat_body(&format!("e{i}"), 3, false));
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let node0 = format!("gateway_node_up{{node=\"{}\"}}", sim.urls[0]);
    assert!(gw.metrics().contains(&format!("{node0} 0")), "failing node ejected");
    // Healthy again: the control plane's probe readmits it.
    sim.set_faults(0, json!({}));
    assert!(
        eventually(Duration::from_secs(5), || gw.metrics().contains(&format!("{node0} 1"))),
        "node probed back"
    );
}

#[test]
fn every_node_failing_gives_503_or_502_in_openai_shape() {
    // Nodes that fail (5xx): 502, after trying each of them, ejected or not.
    let sim = Sim::start(&["--extra-nodes", "1", "--error-rate", "1"]);
    let gw = Gateway::start(&sim.urls);
    for i in 0..6 {
        let r = post(gw.addr, "/v1/chat/completions", &gw.auth(), &chat_body(&format!("f{i}"), 3, false));
        assert_eq!(r.status, 502, "request {i}: {}", r.text());
        assert_eq!(r.json()["error"]["code"], "upstream_unavailable");
        assert!(r.header("retry-after").is_none(), "nothing says a retry soon would help");
    }
    let node_up = |i: usize| format!("gateway_node_up{{node=\"{}\"}} 0", sim.urls[i]);
    let m = gw.metrics();
    assert!(m.contains(&node_up(0)) && m.contains(&node_up(1)), "both ejected:\n{m}");
    let per_node = sim.stats()["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["requests"].as_u64().unwrap())
        .collect::<Vec<_>>();
    assert_eq!(per_node, [6, 6], "every request tried both nodes, ejected or not");

    // No node can take it (every one at capacity): 503 with Retry-After, the node's message kept.
    let sim = Sim::start(&["--capacity-rate", "1"]);
    let gw = Gateway::start(&sim.urls);
    let r = post(gw.addr, "/v1/chat/completions", &gw.auth(), &chat_body("x", 3, false));
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "upstream_unavailable");
    assert!(r.header("retry-after").is_some());
    assert!(r.text().contains("Transfer Agent capacity reached"), "node message kept: {}", r.text());
}

#[test]
fn a_flaky_only_node_keeps_answering_what_it_can_instead_of_503s() {
    // The only node fails half of its requests: it is ejected often, and still serves the other half.
    let sim = Sim::start(&["--error-rate", "0.5"]);
    let gw = Gateway::start_with(GatewayOpts {
        node_urls: sim.urls.clone(),
        extra: "[limits]\ndefault_rpm = 0\n".into(),
        ..GatewayOpts::default()
    });
    let statuses = std::sync::Mutex::new(Vec::new());
    let (addr, auth) = (gw.addr, gw.auth());
    std::thread::scope(|s| {
        for t in 0..8 {
            let (auth, statuses) = (&auth, &statuses);
            s.spawn(move || {
                for i in 0..40 {
                    let body = chat_body(&format!("t{t} r{i}"), 3, i % 2 == 0);
                    let r = post(addr, "/v1/chat/completions", auth, &body);
                    statuses.lock().unwrap().push(r.status);
                }
            });
        }
    });
    let statuses = statuses.into_inner().unwrap();
    let ok = statuses.iter().filter(|s| **s == 200).count();
    let failed = statuses.iter().filter(|s| **s == 502).count();
    println!("one flaky node: {ok} of {} answered, {failed} 502", statuses.len());
    assert_eq!(ok + failed, statuses.len(), "answers or 502 (the node failed), never 503: {statuses:?}");
    assert!(ok >= statuses.len() / 4, "about half are answered: {ok} of {}", statuses.len());
    assert!(gw.metric("gateway_node_failures_total") >= 3.0, "the node did fail, and was ejected at times");
}

#[test]
fn a_node_dropping_mid_stream_ends_the_stream_with_an_error_event() {
    let sim = Sim::start(&["--drop-rate", "1", "--completion-tokens", "10", "--tokens-per-s", "100"]);
    let gw = Gateway::start(&sim.urls);
    let started = Instant::now();
    let r = post(gw.addr, "/v1/chat/completions", &gw.auth(), &chat_body("drop me", 50, true));
    assert!(started.elapsed() < Duration::from_secs(10), "no hang");
    assert_eq!(r.status, 200);
    let body = r.text();
    assert_eq!(sse_text(&body).split(' ').count(), 5, "half the tokens arrived: {body}");
    let last = body.lines().rev().find(|l| l.starts_with("data: ")).unwrap();
    let v: Value = serde_json::from_str(last.trim_start_matches("data: ")).unwrap();
    assert_eq!(v["error"]["code"], "upstream_unavailable", "{body}");
}

/// Opens a stream on a raw socket, reads `events` data events, and returns the socket.
fn open_stream(gw: &Gateway, prompt: &str, events: usize) -> TcpStream {
    let body = chat_body(prompt, 200, true).to_string();
    utils::open_stream(gw.addr, &gw.auth(), "/v1/chat/completions", &body, |seen| {
        seen.matches("data: ").count() >= events
    })
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let sim = Sim::start(&[]);
    let gw = Gateway::start(&sim.urls);
    let body = chat_body("pipelined", 2, true).to_string();
    let req = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n\
         POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: {}\r\nContent-Length: {}\r\n\r\n{body}\
         GET /v1/nothing HTTP/1.1\r\nHost: x\r\n\r\n\
         GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        gw.auth(),
        body.len()
    );
    let (out, closed) = raw(gw.addr, req.as_bytes(), Duration::from_secs(10));
    assert!(closed);
    assert_eq!(statuses(&out), [200, 200, 404, 200], "{}", String::from_utf8_lossy(&out));
    let text = String::from_utf8_lossy(&out);
    assert!(text.find("data: [DONE]").unwrap() < text.find("Unknown path").unwrap());
}

#[test]
fn keep_alive_chunked_bodies_and_100_continue() {
    let sim = Sim::start(&[]);
    let gw = Gateway::start(&sim.urls);
    let body = chat_body("chunky", 2, false).to_string();
    let (a, b) = body.split_at(10);
    let mut s = TcpStream::connect(gw.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    // A chunked body.
    write!(
        s,
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: {}\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{a}\r\n{:x};ext=1\r\n{b}\r\n0\r\n\r\n",
        gw.auth(),
        a.len(),
        b.len()
    )
    .unwrap();
    let first = read_response(&mut s);
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    // Expect: 100-continue on the same connection: the interim answer comes before we send the body.
    write!(
        s,
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: {}\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n",
        gw.auth(),
        body.len()
    )
    .unwrap();
    let mut interim = [0u8; 25];
    s.read_exact(&mut interim).unwrap();
    assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
    s.write_all(body.as_bytes()).unwrap();
    let second = read_response(&mut s);
    assert!(second.starts_with("HTTP/1.1 200"), "{second}");
}

/// Reads one response with a Content-Length body.
fn read_response(s: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let mut byte = [0u8; 1];
    while !out.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).unwrap();
        out.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&out).into_owned();
    let len: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase().strip_prefix("content-length: ").map(|v| v.trim().parse().unwrap())
        })
        .unwrap();
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).unwrap();
    head + &String::from_utf8_lossy(&body)
}

#[test]
fn node_connections_are_kept_alive_and_reused() {
    let sim = Sim::start(&[]);
    let gw = Gateway::start_with(GatewayOpts {
        node_urls: sim.urls.clone(),
        workers: 1,
        ..GatewayOpts::default()
    });
    for i in 0..30 {
        let r =
            post(gw.addr, "/v1/chat/completions", &gw.auth(), &chat_body(&format!("k{i}"), 2, i % 2 == 0));
        assert_eq!(r.status, 200);
    }
    let stats = sim.stats();
    assert_eq!(stats["open_connections"], 2, "one pooled gateway connection plus ours: {stats}");
}

#[test]
fn first_event_arrives_long_before_the_last() {
    let sim = Sim::start(&["--tokens-per-s", "20", "--completion-tokens", "10"]);
    let gw = Gateway::start(&sim.urls);
    let started = Instant::now();
    let s = open_stream(&gw, "timing", 1);
    let first = started.elapsed();
    drop(s);
    assert!(
        first < Duration::from_millis(300),
        "first event after {first:?} (the whole answer takes 500 ms)"
    );
}

#[test]
fn falls_back_to_epoll_where_io_uring_is_unavailable_and_says_so() {
    let sim = Sim::start(&[]);
    let gw = Gateway::start_with(GatewayOpts {
        node_urls: sim.urls.clone(),
        envs: vec![("MONOIO_FORCE_LEGACY_DRIVER", "1".into())],
        ..GatewayOpts::default()
    });
    let r = post(gw.addr, "/v1/chat/completions", &gw.auth(), &chat_body("epoll", 5, true));
    assert_eq!(r.status, 200);
    assert_eq!(sse_text(&r.text()).split(' ').count(), 5);
    assert!(gw.proc.stderr().contains("falling back to the epoll driver"), "{}", gw.proc.stderr());
}
