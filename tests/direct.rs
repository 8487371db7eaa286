//! Direct keys end to end, real binaries over TCP: the account and admin routes and the CLI, a chain
//! endpoint that cannot be reached (the cores never wait for it), and, against `gonka-gateway sim` with
//! its chain, the official `gonka-openai` SDK spending a direct key peer-to-peer while the gateway
//! funds, sweeps and bills it.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods,
    reason = "tests fail loudly and block freely on their own threads"
)]

mod utils;

use serde_json::{Value, json};
use std::time::{Duration, Instant};
use utils::*;

/// A treasury key for gateways whose chain is never reached.
const TREASURY_KEY: &str = "4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318";

/// `[chain]` pointing at `rest_url`, polled every `poll_ms`.
fn chain_toml(rest_url: &str, poll_ms: u64) -> String {
    format!(
        "[chain]\nenabled = true\nrest_url = \"{rest_url}\"\nfee_ngonka = 10\nfloat_ngonka = 1000000\n\
         top_up_below_ngonka = 500000\npoll_ms = {poll_ms}\ntimeout_ms = 2000\n"
    )
}

/// A gateway whose `[chain]` points at a port nothing listens on.
fn gateway_with_a_dead_chain(extra: &str) -> Gateway {
    let dead = format!("http://127.0.0.1:{}/chain-api", free_port());
    Gateway::start_with(GatewayOpts {
        extra: format!("{}{extra}", chain_toml(&dead, 100)),
        envs: vec![("GONKA_TREASURY_KEY", TREASURY_KEY.to_owned())],
        ..GatewayOpts::default()
    })
}

fn create_direct(gw: &Gateway, name: &str) -> Value {
    let r = gw.api(&gw.account_token, "POST", "/api/direct-keys", Some(json!({ "name": name })));
    assert_eq!(r.status, 201, "{}", r.text());
    r.json()
}

#[test]
fn direct_key_routes_answer_404_naming_the_option_while_the_chain_is_off() {
    let gw = Gateway::start(&[]);
    for (method, path) in [("POST", "/api/direct-keys"), ("GET", "/api/direct-keys")] {
        let r = gw.api(&gw.account_token, method, path, Some(json!({"name": "x"})));
        assert_eq!(r.status, 404, "{}", r.text());
        assert!(r.json()["error"]["message"].as_str().unwrap().contains("[chain] enabled = true"));
    }
    let r = gw.admin("GET", &format!("/admin/accounts/{}/direct-keys", gw.account_id), None);
    assert_eq!(r.status, 404);
}

#[test]
fn the_gateway_refuses_to_start_with_the_chain_on_and_no_treasury_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gateway.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = \"{}\"\n[server]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n{}",
            dir.path().join("data").display(),
            chain_toml("http://127.0.0.1:9/chain-api", 100)
        ),
    )
    .unwrap();
    let out = std::process::Command::new(BIN)
        .args(["serve", "--config", config.to_str().unwrap()])
        .env_remove("GONKA_TREASURY_KEY")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("GONKA_TREASURY_KEY"), "{err}");
}

#[test]
fn direct_keys_are_created_listed_paused_resumed_and_archived_and_never_rotated() {
    let gw = gateway_with_a_dead_chain("");
    let k = create_direct(&gw, "laptop");
    let id = k["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("dk_"));
    assert_eq!(k["object"], "direct_key");
    assert_eq!((k["name"].as_str(), k["status"].as_str()), (Some("laptop"), Some("active")));
    assert!(k["address"].as_str().unwrap().starts_with("gonka1"));
    let private_key = k["private_key"].as_str().unwrap();
    assert_eq!(private_key.len(), 64);
    assert!(private_key.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!((k["float_ngonka"].as_str(), k["spent_ngonka"].as_str()), (Some("0"), Some("0")));
    assert_eq!(k["published"], false);
    // The private key is in that answer only.
    let listed = gw.api(&gw.account_token, "GET", "/api/direct-keys", None).json();
    assert_eq!(listed["object"], "list");
    assert_eq!(listed["data"][0]["id"], id.as_str());
    assert!(listed["data"][0].get("private_key").is_none());
    let one = gw.api(&gw.account_token, "GET", &format!("/api/direct-keys/{id}"), None);
    assert_eq!((one.status, one.json()["address"].clone()), (200, k["address"].clone()));
    assert!(one.json().get("private_key").is_none());
    assert!(!gw.proc.stderr().contains(private_key), "never logged");
    // Another account sees none of it.
    let (_, other) = gw.create_account("other");
    assert_eq!(gw.api(&other, "GET", &format!("/api/direct-keys/{id}"), None).status, 404);
    assert_eq!(gw.api(&other, "POST", &format!("/api/direct-keys/{id}/pause"), None).status, 404);

    let act = |verb: &str| gw.api(&gw.account_token, "POST", &format!("/api/direct-keys/{id}/{verb}"), None);
    let r = act("rotate");
    assert_eq!(r.status, 409);
    let e = &r.json()["error"];
    assert_eq!(e["code"], "direct_key_cannot_be_rotated");
    let message = e["message"].as_str().unwrap();
    assert!(message.contains("Archive this key") && message.contains("create a new one"), "{message}");
    assert_eq!(act("pause").json()["status"], "paused");
    assert_eq!(act("resume").json()["status"], "active");
    assert_eq!(act("archive").json()["status"], "archived");
    assert_eq!(act("resume").status, 409, "archive is permanent");
    let listed = gw.api(&gw.account_token, "GET", "/api/direct-keys", None).json();
    assert_eq!(listed["data"], json!([]), "an archived key leaves the list");
    let admin_list = gw.admin("GET", &format!("/admin/accounts/{}/direct-keys", gw.account_id), None).json();
    assert_eq!(admin_list["data"][0]["status"], "archived", "the admin sees archived keys too");
}

#[test]
fn direct_keys_count_toward_the_key_quota() {
    // The test gateway makes one managed key; a quota of 3 leaves room for two more keys of any kind.
    let dead = format!("http://127.0.0.1:{}/chain-api", free_port());
    let gw2 = Gateway::start_with(GatewayOpts {
        keys: "max_keys_per_account = 3\n".into(),
        extra: chain_toml(&dead, 100),
        envs: vec![("GONKA_TREASURY_KEY", TREASURY_KEY.to_owned())],
        ..GatewayOpts::default()
    });
    create_direct(&gw2, "one");
    let second = create_direct(&gw2, "two");
    let r = gw2.api(&gw2.account_token, "POST", "/api/direct-keys", Some(json!({"name": "three"})));
    assert_eq!((r.status, r.json()["error"]["code"].as_str()), (403, Some("key_limit_reached")));
    let r = gw2.api(&gw2.account_token, "POST", "/api/keys", Some(json!({"name": "managed"})));
    assert_eq!(r.status, 403, "a managed key counts the direct keys too");
    let id = second["id"].as_str().unwrap();
    gw2.api(&gw2.account_token, "POST", &format!("/api/direct-keys/{id}/archive"), None);
    create_direct(&gw2, "three");
}

#[test]
fn the_admin_api_and_cli_manage_direct_keys() {
    let gw = gateway_with_a_dead_chain("");
    let url = format!("http://{}", gw.admin_addr);
    let admin = |args: &[&str]| -> Value {
        let out = std::process::Command::new(BIN)
            .args(["admin", "--url", &url])
            .args(args)
            .env("GATEWAY_ADMIN_TOKEN", ADMIN_TOKEN)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let acc = gw.account_id.as_str();
    let k = admin(&["direct-keys", "create", acc, "--name", "from-cli"]);
    let id = k["id"].as_str().unwrap();
    assert_eq!(k["private_key"].as_str().unwrap().len(), 64);
    assert_eq!(admin(&["direct-keys", "list", acc])["data"][0]["id"], id);
    assert_eq!(admin(&["direct-keys", "pause", id])["status"], "paused");
    assert_eq!(admin(&["direct-keys", "resume", id])["status"], "active");
    assert_eq!(admin(&["direct-keys", "archive", id])["status"], "archived");
    let r = gw.admin("POST", &format!("/admin/accounts/{acc}/direct-keys"), Some(json!({"name": "api"})));
    assert_eq!(r.status, 201, "{}", r.text());
    let r = gw.admin("POST", "/admin/direct-keys/dk_nope/pause", None);
    assert_eq!(r.status, 404);
}

#[test]
fn a_dead_chain_endpoint_is_retried_with_back_off_and_never_slows_the_cores() {
    let sim = Sim::start(&[]);
    let dead = format!("http://127.0.0.1:{}/chain-api", free_port());
    let gw = Gateway::start_with(GatewayOpts {
        node_urls: sim.urls.clone(),
        extra: chain_toml(&dead, 50),
        envs: vec![("GONKA_TREASURY_KEY", TREASURY_KEY.to_owned())],
        ..GatewayOpts::default()
    });
    create_direct(&gw, "busy");
    assert!(
        eventually(Duration::from_secs(10), || gw.proc.stderr().matches("retrying with back-off").count()
            >= 3),
        "{}",
        gw.proc.stderr()
    );
    let auth = gw.auth();
    for _ in 0..20 {
        let t = Instant::now();
        assert_eq!(http(gw.addr, "GET", "/healthz", &[], None).status, 200);
        let r = post(gw.addr, "/v1/chat/completions", &auth, &chat_body("hi", 5, false));
        assert_eq!(r.status, 200, "{}", r.text());
        assert!(t.elapsed() < Duration::from_secs(2), "a core waited: {:?}", t.elapsed());
    }
    // The back-off grows: the waits it logs double.
    let log = gw.proc.stderr();
    let waits: Vec<u64> = log
        .lines()
        .filter_map(|l| l.split("retrying with back-off in ").nth(1))
        .filter_map(|rest| rest.split(" ms").next()?.parse().ok())
        .collect();
    assert!(waits.windows(2).take(3).all(|w| w[1] == (w[0] * 2).min(60_000)), "{waits:?}");
    // The account API still answers (the direct key is there, unfunded).
    let listed = gw.api(&gw.account_token, "GET", "/api/direct-keys", None).json();
    assert_eq!(listed["data"][0]["float_ngonka"], "0");
}
