//! The official OpenAI Python SDK against the gateway.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods,
    reason = "tests fail loudly and block freely on their own threads"
)]

mod utils;

use utils::*;

#[test]
fn the_python_sdk_streams_through_the_gateway() {
    // A token every 50 ms.
    let sim = Sim::start(&["--tokens-per-s", "20", "--completion-tokens", "20"]);
    let gw = Gateway::start(&sim.urls);
    let out = run_python(
        "sdk_stream.py",
        &[
            ("OPENAI_BASE_URL", gw.base_url()),
            ("OPENAI_API_KEY", gw.api_key()),
            ("SIM_BASE_URL", sim.urls[0].clone()),
            ("MODEL", MODEL.to_owned()),
        ],
    );
    assert!(out.contains("OK"), "{out}");
}

/// Runs `sdk_responses.py`'s `scenario` against `gw` (a fast simulator behind it unless the caller's is
/// slower); `extra` adds to its environment.
fn sdk_responses(
    scenario: &str,
    base_url: String,
    key: String,
    sim: &Sim,
    extra: &[(&str, String)],
) -> String {
    let mut envs = vec![
        ("SCENARIO", scenario.to_owned()),
        ("OPENAI_BASE_URL", base_url),
        ("OPENAI_API_KEY", key),
        ("SIM_BASE_URL", sim.urls[0].clone()),
        ("MODEL", MODEL.to_owned()),
    ];
    envs.extend(extra.iter().map(|(k, v)| (*k, v.clone())));
    run_python("sdk_responses.py", &envs)
}

#[test]
fn the_python_sdk_creates_responses_streamed_and_not() {
    // A token every 50 ms, so the stream's arrival times show it is relayed as it is made.
    let sim = Sim::start(&["--tokens-per-s", "20", "--completion-tokens", "20"]);
    let gw = Gateway::start(&sim.urls);
    let out = sdk_responses("create", gw.base_url(), gw.api_key(), &sim, &[]);
    assert!(out.contains("OK"), "{out}");
    assert_eq!(gw.usage_records(&gw.account_id).len(), 3, "the refusals were not billed");
}

#[test]
fn the_python_sdk_runs_a_function_call_round_trip() {
    let sim = Sim::start(&["--completion-tokens", "16"]);
    let gw = Gateway::start(&sim.urls);
    let out = sdk_responses("tools", gw.base_url(), gw.api_key(), &sim, &[]);
    assert!(out.contains("OK"), "{out}");
}

#[test]
fn the_python_sdk_continues_a_stored_response_that_another_account_cannot_see() {
    let sim = Sim::start(&["--completion-tokens", "6"]);
    let gw = Gateway::start(&sim.urls);
    let (_, other_token) = gw.create_account("other");
    let other = gw.create_key(&other_token, "other key");
    let out = sdk_responses("conversation", gw.base_url(), gw.api_key(), &sim, &[("OTHER_API_KEY", other)]);
    assert!(out.contains("OK"), "{out}");
}

#[test]
fn the_python_sdk_gets_structured_output_through_text_format() {
    let sim = Sim::start(&[]);
    let gw = Gateway::start(&sim.urls);
    let out = sdk_responses("structured", gw.base_url(), gw.api_key(), &sim, &[]);
    assert!(out.contains("OK"), "{out}");
}

#[test]
fn a_stored_response_is_gone_after_its_retention() {
    use gonka_gateway::time::{Clock, DAY_MS, ManualClock};
    use std::sync::Arc;
    let sim = Sim::start(&["--completion-tokens", "4"]);
    let clock = Arc::new(ManualClock::new(gonka_gateway::time::SystemClock.now_ms()));
    let gw = InProc::start(
        GatewayOpts {
            node_urls: sim.urls.clone(),
            extra: "[responses]\nretention_days = 2\n".into(),
            ..GatewayOpts::default()
        },
        |s| s,
        Arc::clone(&clock) as Arc<dyn Clock>,
    );
    let base = format!("http://{}/v1", gw.addr);
    let out = sdk_responses("expire-create", base.clone(), gw.api_key.clone(), &sim, &[]);
    let id = out.lines().find_map(|l| l.strip_prefix("ID=")).unwrap().to_owned();
    // A day later it is still there; past two days it is not.
    clock.set(clock.now_ms() + DAY_MS);
    let r = http(gw.addr, "GET", &format!("/v1/responses/{id}"), &[("Authorization", &gw.auth())], None);
    assert_eq!(r.status, 200, "{}", r.text());
    clock.set(clock.now_ms() + DAY_MS + 1);
    let out = sdk_responses("expire-check", base, gw.api_key.clone(), &sim, &[("RESPONSE_ID", id)]);
    assert!(out.contains("OK"), "{out}");
}

#[test]
fn langchain_chat_openai_on_the_responses_api_invokes_and_streams() {
    let sim = Sim::start(&["--tokens-per-s", "20", "--completion-tokens", "20"]);
    let gw = Gateway::start(&sim.urls);
    let out = run_python(
        "langchain_responses.py",
        &[
            ("OPENAI_BASE_URL", gw.base_url()),
            ("OPENAI_API_KEY", gw.api_key()),
            ("SIM_BASE_URL", sim.urls[0].clone()),
            ("MODEL", MODEL.to_owned()),
        ],
    );
    assert!(out.contains("OK"), "{out}");
    let records = gw.usage_records(&gw.account_id);
    assert_eq!(records.len(), 3, "invoke, stream and the tool call, each billed: {records:?}");
}
