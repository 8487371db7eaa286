//! The listeners' routes as browsers, SDKs and load balancers meet them: `Allow` on a 405, `HEAD` and
//! the root, CORS preflights and headers (`server.cors_allow_origins`).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods,
    reason = "tests fail loudly and block freely on their own threads"
)]

mod utils;

use std::time::Duration;
use utils::*;

/// What a browser sends before a cross-origin POST with a bearer key.
fn preflight(gw: &Gateway, path: &str) -> Resp {
    http(
        gw.addr,
        "OPTIONS",
        path,
        &[
            ("Origin", "https://chat.example.com"),
            ("Access-Control-Request-Method", "POST"),
            ("Access-Control-Request-Headers", "authorization, content-type, x-stainless-os"),
        ],
        None,
    )
}

#[test]
fn a_405_names_the_methods_of_its_path_in_allow() {
    let gw = Gateway::start(&[]);
    let r = http(gw.addr, "GET", "/v1/chat/completions", &[], None);
    assert_eq!((r.status, r.header("allow")), (405, Some("POST")), "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "method_not_allowed");
    let r = http(gw.addr, "DELETE", "/v1/models", &[("Authorization", &gw.auth())], None);
    assert_eq!((r.status, r.header("allow")), (405, Some("GET, HEAD")));
    let r = http(gw.addr, "POST", &format!("/v1/models/{MODEL}"), &[], Some(b"{}"));
    assert_eq!((r.status, r.header("allow")), (405, Some("GET, HEAD")));
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let r = http(gw.admin_addr, "POST", "/metrics", &[("Authorization", &auth)], Some(b"{}"));
    assert_eq!((r.status, r.header("allow")), (405, Some("GET, HEAD")));
    assert_eq!(http(gw.addr, "GET", "/v1/nothing", &[], None).status, 404, "unknown paths stay 404");
}

#[test]
fn head_is_answered_like_get_and_the_root_answers_200() {
    let sim = Sim::start(&[]);
    let gw = Gateway::start(&sim.urls);
    let r = http(gw.addr, "GET", "/", &[], None);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        (r.json()["status"].as_str(), r.json()["service"].as_str()),
        (Some("ok"), Some("gonka-gateway"))
    );
    assert_eq!(http(gw.addr, "HEAD", "/", &[], None).status, 200);
    let r = http(gw.addr, "HEAD", "/v1/models", &[("Authorization", &gw.auth())], None);
    assert_eq!((r.status, r.header("content-type")), (200, Some("application/json")));
    assert_eq!(http(gw.addr, "HEAD", "/v1/models", &[], None).status, 401, "the same rules as GET");
    assert_eq!(
        http(gw.addr, "HEAD", &format!("/v1/models/{MODEL}"), &[("Authorization", &gw.auth())], None).status,
        200
    );
    assert_eq!(http(gw.addr, "HEAD", "/healthz", &[], None).status, 200);
    assert_eq!(
        http(
            gw.addr,
            "HEAD",
            "/api/balance",
            &[("Authorization", &format!("Bearer {}", gw.account_token))],
            None
        )
        .status,
        200
    );
    let auth = format!("Bearer {ADMIN_TOKEN}");
    assert_eq!(http(gw.admin_addr, "HEAD", "/metrics", &[("Authorization", &auth)], None).status, 200);
    assert_eq!(http(gw.admin_addr, "HEAD", "/admin/accounts", &[("Authorization", &auth)], None).status, 200);
}

#[test]
fn a_cors_preflight_gets_204_and_answers_carry_allow_origin() {
    let sim = Sim::start(&[]);
    let gw = Gateway::start(&sim.urls);
    let r = preflight(&gw, "/v1/chat/completions");
    assert_eq!(r.status, 204, "{}", r.text());
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    assert!(r.header("access-control-allow-credentials").is_none(), "no credentials with *");
    let methods = r.header("access-control-allow-methods").unwrap();
    assert!(methods.contains("POST") && methods.contains("GET"), "{methods}");
    let headers = r.header("access-control-allow-headers").unwrap();
    for h in
        ["authorization", "content-type", "x-api-key", "anthropic-version", "openai-beta", "x-stainless-os"]
    {
        assert!(headers.split(", ").any(|x| x == h), "{h} in {headers}");
    }
    assert!(r.header("access-control-max-age").unwrap().parse::<u64>().unwrap() > 0);
    assert!(r.header("content-length").is_none(), "a 204 has no Content-Length");
    assert!(r.body.is_empty());
    // Preflights need no key, on any public path.
    assert_eq!(preflight(&gw, "/api/keys").status, 204);

    // The real request: its answer lets the page read it and the headers clients look at.
    let body = chat_body("from a browser", 3, false).to_string();
    let r = http(
        gw.addr,
        "POST",
        "/v1/chat/completions",
        &[("Authorization", &gw.auth()), ("Origin", "https://chat.example.com")],
        Some(body.as_bytes()),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    let exposed = r.header("access-control-expose-headers").unwrap();
    for h in ["x-request-id", "x-ratelimit-remaining-requests", "retry-after"] {
        assert!(exposed.contains(h), "{h} in {exposed}");
    }
    // Errors too: a browser must be able to read why it was refused.
    let r = http(gw.addr, "GET", "/v1/models", &[("Origin", "https://chat.example.com")], None);
    assert_eq!((r.status, r.header("access-control-allow-origin")), (401, Some("*")));
}

#[test]
fn cors_names_the_one_configured_origin_and_can_be_turned_off() {
    let gw = Gateway::start_with(GatewayOpts {
        server: "cors_allow_origins = [\"https://chat.example.com\"]".into(),
        ..GatewayOpts::default()
    });
    let r = preflight(&gw, "/v1/chat/completions");
    assert_eq!((r.status, r.header("access-control-allow-origin")), (204, Some("https://chat.example.com")));

    let gw = Gateway::start_with(GatewayOpts {
        server: "cors_allow_origins = []".into(),
        ..GatewayOpts::default()
    });
    let r = preflight(&gw, "/v1/chat/completions");
    assert_eq!((r.status, r.header("allow")), (405, Some("POST")), "no CORS: an OPTIONS is just a method");
    assert!(r.header("access-control-allow-origin").is_none());
    let r = http(gw.addr, "GET", "/", &[("Origin", "https://chat.example.com")], None);
    assert!(r.header("access-control-allow-origin").is_none());
}

#[test]
fn the_access_log_bounds_the_strings_a_client_sends() {
    let gw = Gateway::start(&[]);
    let model = "m".repeat(1 << 20);
    let body = serde_json::json!({"model": model, "messages": [{"role": "user", "content": "x"}]});
    assert_eq!(post(gw.addr, "/v1/chat/completions", &gw.auth(), &body).status, 404);
    let long_path = format!("/v1/{}", "p".repeat(8000));
    assert_eq!(http(gw.addr, "GET", &long_path, &[], None).status, 404);
    let lines = || -> Vec<serde_json::Value> {
        gw.proc
            .stderr()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v.get("request_id").is_some())
            .collect()
    };
    let logged = |route: &str| lines().into_iter().find(|v| v["route"] == route);
    assert!(
        eventually(Duration::from_secs(3), || logged("chat_completions").is_some()
            && logged("unknown").is_some()),
        "{}",
        gw.proc.stderr()
    );
    let lines = lines();
    let chat = lines.iter().find(|v| v["route"] == "chat_completions").unwrap();
    let logged = chat["model"].as_str().unwrap();
    assert!(logged.len() <= 260 && logged.starts_with("mmm"), "model logged as {} bytes", logged.len());
    let unknown = lines.iter().find(|v| v["route"] == "unknown").unwrap();
    assert!(unknown["path"].as_str().unwrap().len() <= 260, "{unknown}");
    assert!(gw.proc.stderr().len() < 64 * 1024, "the log stays small: {} bytes", gw.proc.stderr().len());
}
