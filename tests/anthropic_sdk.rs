//! The official Anthropic Python SDK (`tests/python/anthropic_sdk.py`) against the gateway, as its users
//! point it: `ANTHROPIC_BASE_URL` at the gateway's root and a gateway key as `ANTHROPIC_API_KEY`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods,
    reason = "tests fail loudly and block freely on their own threads"
)]

mod utils;

use serde_json::json;
use utils::*;

fn run_scenario(gw: &Gateway, scenario: &str, extra: &[(&str, String)]) -> String {
    let mut envs = vec![
        ("ANTHROPIC_BASE_URL", format!("http://{}", gw.addr)),
        ("ANTHROPIC_API_KEY", gw.api_key()),
        ("MODEL", MODEL.to_owned()),
    ];
    envs.extend(extra.iter().cloned());
    let out = run_python_args("anthropic_sdk.py", &[scenario], &envs);
    assert!(out.starts_with("OK"), "{out}");
    out
}

#[test]
fn the_anthropic_sdk_creates_streams_counts_and_lists() {
    // A token every 50 ms.
    let sim = Sim::start(&["--tokens-per-s", "20", "--completion-tokens", "20"]);
    let gw = Gateway::start(&sim.urls);
    run_scenario(&gw, "basics", &[]);
    let records = gw.usage_records(&gw.account_id);
    assert_eq!(records.len(), 2, "the create and the stream, billed; counting is free: {records:?}");
    assert!(
        records.iter().all(|r| r["completion_tokens"] == 20 && r["status"] == "completed"),
        "{records:?}"
    );
}

#[test]
fn the_anthropic_sdk_round_trips_a_tool_call_streamed_and_not() {
    let sim = Sim::start(&[]);
    let gw = Gateway::start(&sim.urls);
    run_scenario(&gw, "tools", &[]);
}

#[test]
fn the_anthropic_sdk_raises_its_exception_for_each_refusal() {
    let sim = Sim::start(&[]);
    let gw = Gateway::start(&sim.urls);
    let token = gw.account_token.clone();
    let paused = gw.api(&token, "POST", "/api/keys", Some(json!({"name": "paused"}))).json();
    let r = gw.api(&token, "POST", &format!("/api/keys/{}/pause", paused["id"].as_str().unwrap()), None);
    assert_eq!(r.status, 200, "{}", r.text());
    let management = gw.api(&token, "POST", "/api/management/keys", Some(json!({"name": "m"}))).json();
    let child = gw.create_child(&token, json!({"name": "spent", "limit_daily_ngonka": "1"}));
    run_scenario(
        &gw,
        "errors",
        &[
            ("PAUSED_KEY", paused["key"].as_str().unwrap().to_owned()),
            ("MANAGEMENT_KEY", management["key"].as_str().unwrap().to_owned()),
            ("CHILD_KEY", child["key"].as_str().unwrap().to_owned()),
        ],
    );
}

#[test]
fn the_anthropic_sdk_retries_an_rpm_refusal_as_retry_after_says() {
    let sim = Sim::start(&[]);
    let gw = Gateway::start(&sim.urls);
    // 20 requests at once, then one every 3 s.
    let child = gw.create_child(&gw.account_token, json!({"name": "paced", "rate_limit_rpm": 20}));
    let out = run_scenario(
        &gw,
        "rpm",
        &[("RPM_KEY", child["key"].as_str().unwrap().to_owned()), ("RPM", "20".to_owned())],
    );
    // The burst, the refusal, the SDK's refused first try, and its retry.
    let served = gw.usage_records(&gw.account_id).len();
    assert_eq!(served, 21, "{out}");
}
