//! The Gonka network upstream: the official SDK against the simulator's verifier, and the gateway's
//! signed requests end to end (discovery, model routing, failover, no replayed signature).
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
use std::time::Duration;
use utils::*;

/// The gateway's Gonka account key in these tests.
const KEY: &str = "8a7b6c5d4e3f201112131415161718191a1b1c1d1e1f20212223242526272829";

#[test]
fn the_official_sdk_and_the_simulator_agree_on_signatures() {
    let sim = Sim::start(&["--gonka"]);
    let out = run_python(
        "gonka_sdk.py",
        &[
            ("SIM_NODE_URL", sim.urls[0].clone()),
            ("SIM_NODE_ADDRESS", sim.addresses[0].clone()),
            ("MODEL", MODEL.to_owned()),
            ("GATEWAY_BIN", BIN.to_owned()),
        ],
    );
    assert!(out.contains("OK"), "{out}");
    assert_eq!(sim.stats()["replays_refused"], 1);
}

fn gonka_gateway(sim: &Sim, extra_models: &[&'static str]) -> Gateway {
    let mut models = vec![MODEL];
    models.extend_from_slice(extra_models);
    Gateway::start_with(GatewayOpts {
        node_urls: Vec::new(),
        models,
        extra: format!(
            "[upstream.gonka]\nseeds = [\"{}\"]\nuse_allowlist = true\nrefresh_ms = 500\n[limits]\ndefault_rpm = 0\n",
            sim.root(0)
        ),
        envs: vec![("GONKA_PRIVATE_KEY", KEY.to_owned())],
        ..GatewayOpts::default()
    })
}

fn node_requests(sim: &Sim) -> Vec<u64> {
    sim.stats()["nodes"].as_array().unwrap().iter().map(|n| n["requests"].as_u64().unwrap()).collect()
}

#[test]
fn signed_requests_with_discovery_routing_and_failover() {
    // Node 0 serves m1, node 1 both, node 2 only m2; node 3 is listed but down; node 2 is not allowed.
    let sim = Sim::start(&[
        "--gonka",
        "--extra-nodes",
        "3",
        "--models",
        "gonka/sim-small,gonka/sim-large",
        "--node-models",
        "gonka/sim-small;gonka/sim-small,gonka/sim-large;gonka/sim-large;gonka/sim-large",
        "--allowlist",
        "0,1,2,4",
        "--dead-participants",
        "1",
        "--tokens-per-s",
        "200",
        "--completion-tokens",
        "6",
    ]);
    let gw = gonka_gateway(&sim, &["gonka/sim-large"]);
    let metrics = gw.metrics();
    let listed = metrics.lines().filter(|l| l.starts_with("gateway_node_up{")).count();
    assert_eq!(listed, 4, "three allowed live nodes and the dead participant:\n{metrics}");
    assert!(
        !metrics.contains(&sim.urls[3].trim_end_matches("/v1").to_string()),
        "node 3 is not on the allowlist"
    );

    let large = |i: usize| {
        json!({"model": "gonka/sim-large", "stream": true, "max_tokens": 6,
                                   "messages": [{"role": "user", "content": format!("large {i}")}]})
    };
    for i in 0..12 {
        let r = post(gw.addr, "/v1/chat/completions", &gw.auth(), &large(i));
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(sse_text(&r.text()).split(' ').count(), 6);
    }
    let per_node = node_requests(&sim);
    assert_eq!(per_node[0], 0, "node 0 does not serve gonka/sim-large: {per_node:?}");
    assert_eq!(per_node[1] + per_node[2], 12, "{per_node:?}");
    assert!(per_node[1] > 0 && per_node[2] > 0, "spread over both: {per_node:?}");

    // Capacity on node 2: everything for sim-large goes to node 1, none fails.
    sim.set_faults(2, json!({"capacity_rate": 1.0, "tokens_per_s": 200.0, "completion_tokens": 6}));
    let before = node_requests(&sim);
    for i in 0..10 {
        let r = post(gw.addr, "/v1/chat/completions", &gw.auth(), &large(100 + i));
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let after = node_requests(&sim);
    assert_eq!(after[1] - before[1], 10, "node 1 served all: {before:?} → {after:?}");

    // sim-small: nodes 0, 1 and the dead one; the dead one is skipped and ejected.
    for i in 0..10 {
        let body = json!({"model": MODEL, "max_tokens": 3, "messages": [{"role": "user", "content": format!("small {i}")}]});
        let r = post(gw.addr, "/v1/chat/completions", &gw.auth(), &body);
        assert_eq!(r.status, 200, "{}", r.text());
    }
    assert!(
        gw.metrics().lines().any(|l| l.starts_with("gateway_node_up{") && l.ends_with(" 0")),
        "the dead node is ejected"
    );
    let stats = sim.stats();
    assert_eq!(
        (stats["auth_refused"].as_u64(), stats["replays_refused"].as_u64()),
        (Some(0), Some(0)),
        "{stats}"
    );
    // The node keeps finished completions by id.
    let r = post(
        gw.addr,
        "/v1/chat/completions",
        &gw.auth(),
        &json!({"model": MODEL, "max_tokens": 2, "messages": [{"role": "user", "content": "by id"}]}),
    );
    let id = r.json()["id"].as_str().unwrap().to_owned();
    let fetched = http(sim.addr(0), "GET", &format!("/v1/chat/completions/{id}"), &[], None);
    let fetched = if fetched.status == 200 {
        fetched
    } else {
        http(sim.addr(1), "GET", &format!("/v1/chat/completions/{id}"), &[], None)
    };
    assert_eq!(fetched.status, 200);
    assert_eq!(fetched.json()["id"], id.as_str());
}

#[test]
fn a_thousand_concurrent_signed_requests_never_reuse_a_signature() {
    let sim =
        Sim::start(&["--gonka", "--extra-nodes", "2", "--completion-tokens", "3", "--tokens-per-s", "100"]);
    let gw = gonka_gateway(&sim, &[]);
    let n = 1000;
    // Every request is written before any answer is read: all are in flight at once.
    let mut conns: Vec<TcpStream> = (0..n)
        .map(|i| {
            let mut s = TcpStream::connect(gw.addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
            let body = json!({"model": MODEL, "stream": i % 2 == 0, "max_tokens": 3,
                              "messages": [{"role": "user", "content": format!("concurrent {i}")}]})
            .to_string();
            write!(
                s,
                "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: {}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
                gw.auth(),
                body.len()
            )
            .unwrap();
            s
        })
        .collect();
    let mut ok = 0;
    for s in &mut conns {
        let mut out = Vec::new();
        s.read_to_end(&mut out).unwrap();
        let text = String::from_utf8_lossy(&out);
        assert!(text.starts_with("HTTP/1.1 200"), "{}", &text[..text.len().min(400)]);
        ok += 1;
    }
    assert_eq!(ok, n);
    let stats = sim.stats();
    assert_eq!(stats["auth_refused"], 0, "{stats}");
    assert_eq!(stats["replays_refused"], 0, "{stats}");
    let served: u64 = node_requests(&sim).iter().sum();
    assert_eq!(served, n as u64);
}

#[test]
fn node_errors_reach_the_client_in_the_openai_shape() {
    let sim = Sim::start(&["--gonka"]);
    let gw = gonka_gateway(&sim, &["gonka/unserved"]);
    // A model the gateway prices but the node does not serve: the node's own {"error": ...} comes back
    // as an OpenAI error with its message (the node is the only one and lists no such model, so the
    // gateway refuses it first).
    let r = post(
        gw.addr,
        "/v1/chat/completions",
        &gw.auth(),
        &json!({"model": "gonka/unserved", "messages": [{"role": "user", "content": "x"}]}),
    );
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"]["code"], "model_not_found");
    // A node error passed through: every node at capacity.
    sim.set_faults(0, json!({"capacity_rate": 1.0}));
    let r = post(gw.addr, "/v1/chat/completions", &gw.auth(), &chat_body("x", 2, false));
    assert_eq!(r.status, 503, "{}", r.text());
    let v: Value = r.json();
    assert!(v["error"]["message"].as_str().unwrap().contains("Transfer Agent capacity reached"), "{v}");
}
