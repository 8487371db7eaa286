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
