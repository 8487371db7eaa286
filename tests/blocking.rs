//! Zero-balance blocking and the webhooks: an account whose balance is 0 or below is `blocked`, its
//! keys (those made while blocked too) answer 402 `insufficient_balance` without a node call, a top-up
//! unblocks it for the very next request; `balance.low`, `account.blocked`, `account.unblocked` and a
//! child key's `key.limit_reached` (80 and 100) reach a receiver once each, signed, retried when the
//! receiver fails.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods,
    reason = "tests fail loudly and block freely on their own threads"
)]

mod utils;

use serde_json::{Value, json};
use std::time::Duration;
use utils::webhook::{self, SECRET, Webhook};
use utils::*;

fn node_requests(sim: &Sim) -> u64 {
    sim.stats()["nodes"].as_array().unwrap().iter().map(|n| n["requests"].as_u64().unwrap()).sum()
}

fn chat(gw: &Gateway, key: &str) -> Resp {
    post(gw.addr, "/v1/chat/completions", &format!("Bearer {key}"), &chat_body("hi", 10, false))
}

fn status(gw: &Gateway, account: &str) -> (String, String) {
    let v = gw.admin("GET", &format!("/admin/accounts/{account}"), None).json();
    (v["status"].as_str().unwrap().to_owned(), v["balance_ngonka"].as_str().unwrap().to_owned())
}

fn gateway(sim: &Sim, hook: &Webhook, low_balance_ngonka: u64) -> Gateway {
    Gateway::start_with(GatewayOpts {
        node_urls: sim.urls.clone(),
        extra: hook.config(low_balance_ngonka),
        envs: vec![("GATEWAY_WEBHOOK_SECRET", SECRET.to_owned())],
        ..GatewayOpts::default()
    })
}

/// The accepted events of `kind` about `account`.
fn events_of<'a>(got: &'a [webhook::Attempt], kind: &str, account: &str) -> Vec<&'a Value> {
    got.iter().filter(|a| a.event_type == kind && a.body["account_id"] == account).map(|a| &a.body).collect()
}

#[test]
fn a_blocked_account_is_refused_without_a_node_call_until_a_top_up_and_each_crossing_is_told_once() {
    // The node generates 500 tokens past every request's max_tokens: one request takes a small
    // balance below zero (billed in full), as a bill above its hold does.
    let sim = Sim::start(&["--completion-tokens", "10", "--overrun-tokens", "500"]);
    let hook = Webhook::start(true);
    let gw = gateway(&sim, &hook, 5_000);
    let (acc, tok) = gw.create_account("shop");
    assert_eq!(status(&gw, &acc), ("blocked".into(), "0".into()), "never credited: nothing can be held");
    let r = gw.api(&tok, "GET", "/api/balance", None);
    assert_eq!(r.json()["status"], "blocked", "{}", r.text());

    // Keys made while blocked are refused like any, and no node hears of it.
    let key = gw.create_key(&tok, "made while blocked");
    let child = gw.create_child(&tok, json!({"name": "c"}))["key"].as_str().unwrap().to_owned();
    let before = node_requests(&sim);
    for k in [&key, &child] {
        let r = chat(&gw, k);
        assert_eq!((r.status, r.json()["error"]["code"].as_str()), (402, Some("insufficient_balance")));
    }
    let headers = [("x-api-key", key.as_str()), ("anthropic-version", "2023-06-01")];
    let ask = json!({"model": MODEL, "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]});
    let r = http(gw.addr, "POST", "/v1/messages", &headers, Some(ask.to_string().as_bytes()));
    assert_eq!((r.status, r.json()["error"]["type"].as_str()), (402, Some("billing_error")));
    assert_eq!(node_requests(&sim), before, "a blocked account's requests reach no node");

    // A top-up: the very next request is served (and overruns the balance below zero).
    gw.credit(&acc, 6_000, "first");
    assert_eq!(status(&gw, &acc).0, "active");
    let r = chat(&gw, &key);
    assert_eq!(r.status, 200, "{}", r.text());
    let (state, balance) = status(&gw, &acc);
    assert!(state == "blocked" && balance.parse::<i64>().unwrap() < 0, "{state} {balance}");
    let before = node_requests(&sim);
    assert_eq!(chat(&gw, &child).status, 402);
    assert_eq!(node_requests(&sim), before);

    let got = hook.wait_for(2);
    let low = events_of(&got, "balance.low", &acc);
    let blocked = events_of(&got, "account.blocked", &acc);
    assert_eq!((low.len(), blocked.len()), (1, 1), "{got:?}");
    assert_eq!(low[0]["threshold_ngonka"], "5000");
    assert_eq!(blocked[0]["balance_ngonka"], balance);
    assert!(blocked[0]["id"].as_str().unwrap().starts_with("evt_"));
    assert!(gonka_gateway::time::parse_rfc3339(blocked[0]["created_at"].as_str().unwrap()).is_some());

    // Unblocked by the next top-up, at once.
    gw.credit(&acc, 50_000, "second");
    assert_eq!(chat(&gw, &key).status, 200, "the very next request after the top-up");
    let got = hook.wait_for(3);
    assert_eq!(events_of(&got, "account.unblocked", &acc).len(), 1, "{got:?}");

    // Each event was refused once by the receiver, retried, accepted once, and signed every time.
    std::thread::sleep(Duration::from_millis(500));
    let attempts = hook.attempts();
    assert!(attempts.iter().all(|a| a.signed), "{attempts:?}");
    let delivered = hook.delivered();
    let ids: std::collections::HashSet<&str> = delivered.iter().map(|a| a.event_id.as_str()).collect();
    assert_eq!(ids.len(), delivered.len(), "each event accepted once: {delivered:?}");
    assert_eq!(delivered.len(), 3, "{delivered:?}");
    for a in &delivered {
        let tries = attempts.iter().filter(|b| b.event_id == a.event_id).count();
        assert_eq!(tries, 2, "{}: failed once, then delivered", a.event_type);
        assert_eq!(a.body["id"], a.event_id.as_str());
    }
    assert_eq!(gw.metric("gateway_webhooks_delivered_total"), 3.0);
    assert_eq!(gw.metric("gateway_webhook_attempts_failed_total"), 3.0);
    assert_eq!(gw.metric("gateway_webhooks_dropped_total"), 0.0);
}

#[test]
fn a_child_key_reaching_80_and_100_percent_of_its_daily_limit_is_told_once_each() {
    let sim = Sim::start(&["--completion-tokens", "10", "--overrun-tokens", "500"]);
    let hook = Webhook::start(false);
    let gw = gateway(&sim, &hook, 0);
    // One overrunning request costs about 10 500 ngonka: the first takes the key past 80 % of 12 000,
    // the second past 100 %, the third is refused.
    let c = gw.create_child(&gw.account_token, json!({"name": "c", "limit_daily_ngonka": "12000"}));
    let (id, key) = (c["id"].as_str().unwrap(), c["key"].as_str().unwrap());
    assert_eq!(chat(&gw, key).status, 200);
    let got = hook.wait_for(1);
    assert_eq!(got.len(), 1, "{got:?}");
    let e = &got[0].body;
    assert_eq!(
        (e["type"].as_str(), e["key_id"].as_str(), e["window"].as_str(), e["threshold"].as_u64()),
        (Some("key.limit_reached"), Some(id), Some("daily"), Some(80)),
        "{e}"
    );
    assert_eq!(e["limit_ngonka"], "12000");
    assert!(e["spent_ngonka"].as_str().unwrap().parse::<u64>().unwrap() >= 9_600);
    assert_eq!(chat(&gw, key).status, 200);
    assert_eq!(chat(&gw, key).status, 402);
    let got = hook.wait_for(2);
    std::thread::sleep(Duration::from_millis(400));
    let got_later = hook.delivered();
    assert_eq!(got_later.len(), 2, "80 and 100, once each: {got_later:?}");
    assert_eq!(got[1].body["threshold"], 100);
    assert!(got.iter().all(|a| a.signed));
}

#[test]
fn a_receiver_that_never_answers_slows_neither_requests_nor_the_control_plane() {
    // It accepts connections and never reads or answers: every attempt waits out its 2 s timeout.
    let listener = bind_free_port();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for c in listener.incoming() {
            held.push(c);
        }
    });
    let sim = Sim::start(&["--completion-tokens", "10", "--overrun-tokens", "500"]);
    let gw = Gateway::start_with(GatewayOpts {
        node_urls: sim.urls.clone(),
        extra: format!(
            "[limits]\ndefault_rpm = 0\n[notifications]\nurl = \"http://127.0.0.1:{port}/\"\nlow_balance_ngonka = 1000000\n\
             check_interval_ms = 100\ntimeout_ms = 2000\n"
        ),
        envs: vec![("GATEWAY_WEBHOOK_SECRET", SECRET.to_owned())],
        ..GatewayOpts::default()
    });
    // Several accounts cross at once: their events queue behind the hanging delivery.
    let keys: Vec<(String, String)> = (0..4)
        .map(|i| {
            let (acc, tok) = gw.create_account(&format!("a{i}"));
            gw.credit(&acc, 6_000, "first");
            (acc, gw.create_key(&tok, "k"))
        })
        .collect();
    for (_, key) in &keys {
        assert_eq!(chat(&gw, key).status, 200);
    }
    let started = std::time::Instant::now();
    let mut slowest = Duration::ZERO;
    while started.elapsed() < Duration::from_secs(3) {
        for (acc, key) in &keys {
            let t = std::time::Instant::now();
            assert_eq!(status(&gw, acc).0, "blocked");
            assert_eq!(chat(&gw, key).status, 402);
            assert_eq!(chat(&gw, &gw.api_key).status, 200);
            slowest = slowest.max(t.elapsed());
        }
    }
    // Waiting behind a delivery would take one of these rounds most of its 2 s timeout (the attempts
    // follow one another for the whole loop, so some round starts early in one); unblocked, a round is
    // a few milliseconds, and 1.5 s leaves a loaded machine's stalls room without hiding a wait.
    assert!(slowest < Duration::from_millis(1500), "an admin call and two requests took {slowest:?}");
    assert_eq!(gw.metric("gateway_webhooks_delivered_total"), 0.0);
    assert!(gw.metric("gateway_webhook_attempts_failed_total") >= 1.0, "the first attempt timed out");
}
