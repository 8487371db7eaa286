//! `/metrics` after traffic: the counters and histograms moved, and the gauges say what is true.
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

fn value(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{series} missing from:\n{metrics}"))
}

#[test]
fn metrics_move_with_traffic() {
    let sim = Sim::start(&["--tokens-per-s", "500", "--completion-tokens", "4"]);
    let gw = Gateway::start(&sim.urls);
    let before = gw.metrics();
    for i in 0..5 {
        assert_eq!(
            post(gw.addr, "/v1/chat/completions", &gw.auth(), &chat_body(&format!("m{i}"), 4, i % 2 == 0))
                .status,
            200
        );
    }
    let bad = post(
        gw.addr,
        "/v1/chat/completions",
        &gw.auth(),
        &json!({"model": "nope", "messages": [{"role": "user", "content": "x"}]}),
    );
    assert_eq!(bad.status, 404);
    let unauth = post(gw.addr, "/v1/chat/completions", "Bearer gk-prx-nope", &chat_body("x", 1, false));
    assert_eq!(unauth.status, 401);
    let after = gw.metrics();

    let ok = format!("gateway_requests_total{{route=\"chat_completions\",status=\"200\",model=\"{MODEL}\"}}");
    assert_eq!(value(&after, &ok), 5.0);
    assert!(!before.contains(&ok));
    assert_eq!(
        value(&after, "gateway_requests_total{route=\"chat_completions\",status=\"404\",model=\"other\"}"),
        1.0
    );
    assert_eq!(
        value(&after, "gateway_requests_total{route=\"chat_completions\",status=\"401\",model=\"\"}"),
        1.0
    );
    assert_eq!(value(&after, "gateway_upstream_seconds_count"), 5.0);
    assert_eq!(value(&after, "gateway_first_byte_seconds_count"), 5.0);
    assert!(value(&after, "gateway_first_byte_seconds_sum") > 0.0);
    assert_eq!(value(&after, "gateway_upstream_seconds_bucket{le=\"+Inf\"}"), 5.0);
    assert_eq!(value(&after, "gateway_requests_in_flight"), 0.0);
    assert_eq!(value(&after, "gateway_holds_outstanding"), 0.0);
    assert_eq!(value(&after, "gateway_held_ngonka"), 0.0);
    assert!(value(&after, "gateway_key_cache_entries") >= 2.0, "the account token and the key");
    assert!(after.contains("gateway_journal_lag_records"));
    assert_eq!(value(&after, &format!("gateway_node_up{{node=\"{}\"}}", sim.urls[0])), 1.0);
    assert_eq!(value(&after, &format!("gateway_node_failures_total{{node=\"{}\"}}", sim.urls[0])), 0.0);
    assert!(value(&after, "gateway_connections_open") >= 1.0, "our scrape's own connection");
    // The access log has one JSON line per request, with no secret (written by the log thread, so
    // allow it a moment).
    let access = |log: &str| -> Vec<serde_json::Value> {
        log.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v.get("request_id").is_some() && v["route"] == "chat_completions")
            .collect()
    };
    assert!(
        eventually(std::time::Duration::from_secs(3), || access(&gw.proc.stderr()).len() == 7),
        "{}",
        gw.proc.stderr()
    );
    let log = gw.proc.stderr();
    let lines = access(&log);
    let done = lines.iter().find(|v| v["status"] == 200).unwrap();
    for field in
        ["request_id", "key_id", "model", "status", "prompt_tokens", "completion_tokens", "latency_us"]
    {
        assert!(!done[field].is_null(), "{field} in {done}");
    }
    assert!(!log.contains(&gw.api_key));
}

#[test]
fn unknown_model_names_add_no_metric_series_and_metrics_stay_small() {
    let gw = Gateway::start_with(GatewayOpts {
        extra: "[limits]\ndefault_rpm = 0\n".into(),
        ..GatewayOpts::default()
    });
    // One request with a made-up name first, so `model="other"` exists before the measurement.
    let body = |name: &str| json!({"model": name, "messages": [{"role": "user", "content": "x"}]});
    assert_eq!(post(gw.addr, "/v1/chat/completions", &gw.auth(), &body("warm-up")).status, 404);
    // (Counted just after the answer is written.)
    let other = "gateway_requests_total{route=\"chat_completions\",status=\"404\",model=\"other\"}";
    assert!(eventually(std::time::Duration::from_secs(2), || gw.metrics().contains(other)));
    let before = gw.metrics();
    for i in 0..100 {
        // 1 MiB names, each different.
        let name = format!("{i:03}{}", "x".repeat((1 << 20) - 3));
        let r = post(gw.addr, "/v1/chat/completions", &gw.auth(), &body(&name));
        assert_eq!(r.status, 404, "{}", &r.text()[..r.text().len().min(300)]);
    }
    let mut after = String::new();
    assert!(eventually(std::time::Duration::from_secs(2), || {
        after = gw.metrics();
        after.contains(&format!("{other} 101"))
    }));
    // (Not counting the scrapes' own series, which appear as they are answered.)
    let series = |m: &str| {
        m.lines()
            .filter(|l| l.starts_with("gateway_requests_total{") && !l.contains("route=\"metrics\""))
            .count()
    };
    assert_eq!(series(&after), series(&before), "no new series");
    assert_eq!(
        value(&after, "gateway_requests_total{route=\"chat_completions\",status=\"404\",model=\"other\"}"),
        101.0
    );
    assert!(
        after.len() < before.len() + 1024,
        "/metrics grew from {} to {} bytes",
        before.len(),
        after.len()
    );
    assert!(after.len() < 64 * 1024, "/metrics is {} bytes", after.len());
}

/// A node that fails every request (500) and never answers the health probe (`GET …/models`): once its
/// rest is over it stays `probing`, for as long as each probe takes to time out (1 s here).
fn failing_node_that_hangs_probes() -> String {
    use std::io::{Read, Write};
    let listener = bind_free_port();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut c in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut head = [0u8; 4096];
                let n = c.read(&mut head).unwrap_or(0);
                if head[..n].starts_with(b"GET") {
                    std::thread::sleep(std::time::Duration::from_secs(5));
                } else {
                    let _ = c.write_all(b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
                }
            });
        }
    });
    format!("http://127.0.0.1:{port}/v1")
}

#[test]
fn a_node_whose_rest_is_over_is_not_up_until_it_answers_again() {
    let node = failing_node_that_hangs_probes();
    let gw = Gateway::start(std::slice::from_ref(&node));
    for i in 0..3 {
        let r = post(gw.addr, "/v1/chat/completions", &gw.auth(), &chat_body(&format!("f{i}"), 3, false));
        assert_eq!(r.status, 502, "{}", r.text());
    }
    let health =
        || gw.admin("GET", "/admin/nodes", None).json()["data"][0]["health"].as_str().unwrap().to_owned();
    assert_eq!(health(), "ejected");
    // The rest (500 ms) runs out; the probe of the node then hangs: the admin says `probing`.
    assert!(eventually(std::time::Duration::from_secs(5), || health() == "probing"), "{}", health());
    let up = value(&gw.metrics(), &format!("gateway_node_up{{node=\"{node}\"}}"));
    assert_eq!(up, 0.0, "a node that has not answered since its ejection is not up");
}
