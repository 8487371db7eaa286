//! Models: `GET /v1/models` and `GET /v1/models/{id}` as the OpenAI SDK reads them, and the admin's
//! model prices (set only for models the gateway has, deleted back to the config's).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods,
    reason = "tests fail loudly and block freely on their own threads"
)]

mod utils;

use gonka_gateway::config::Synchronous;
use gonka_gateway::model::PriceRow;
use gonka_gateway::store::Store;
use gonka_gateway::store::sqlite::SqliteStore;
use serde_json::{Value, json};
use std::time::Duration;
use utils::*;

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

fn get(gw: &Gateway, path: &str) -> Resp {
    http(gw.addr, "GET", path, &[("Authorization", &gw.auth())], None)
}

fn admin_ids(gw: &Gateway) -> Vec<String> {
    let r = gw.admin("GET", "/admin/models", None);
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap().to_owned()).collect()
}

#[test]
fn a_model_is_retrieved_by_its_id_with_slashes_or_percent_encoded() {
    let sim = Sim::start(&[]);
    let gw = Gateway::start_with(GatewayOpts {
        node_urls: sim.urls.clone(),
        models: vec![MODEL, "unserved/model"],
        node_models: vec![MODEL],
        ..GatewayOpts::default()
    });
    let listed = get(&gw, "/v1/models").json();
    let r = get(&gw, &format!("/v1/models/{MODEL}"));
    assert_eq!(r.status, 200, "{}", r.text());
    let m = r.json();
    assert_eq!(m, listed["data"][0], "the same object as in the list");
    assert_eq!((m["id"].as_str(), m["object"].as_str()), (Some(MODEL), Some("model")));
    assert_eq!(m["price_prompt_ngonka"], "10");
    let r = get(&gw, &format!("/v1/models/{}", MODEL.replace('/', "%2F")));
    assert_eq!((r.status, r.json()), (200, m));

    let not_found = |r: Resp| {
        assert_eq!(r.status, 404, "{}", r.text());
        assert_eq!(r.json()["error"]["code"], "model_not_found");
    };
    not_found(get(&gw, "/v1/models/no/such-model"));
    not_found(get(&gw, "/v1/models/unserved/model"));
    not_found(get(&gw, &format!("/v1/models/{}", "x".repeat(4000))));
    assert_eq!(http(gw.addr, "GET", &format!("/v1/models/{MODEL}"), &[], None).status, 401);
}

#[test]
fn models_show_a_real_created_timestamp() {
    let started = now();
    let sim = Sim::start(&[]);
    let gw = Gateway::start(&sim.urls);
    let created = get(&gw, "/v1/models").json()["data"][0]["created"].as_i64().unwrap();
    assert!(created >= started - 1 && created <= now(), "created {created}: the process start");
    assert_eq!(get(&gw, &format!("/v1/models/{MODEL}")).json()["created"], created);
}

#[test]
fn prices_for_a_model_that_is_neither_configured_nor_listed_by_a_node_are_refused() {
    let sim = Sim::start(&[]);
    let gw = Gateway::start(&sim.urls);
    let r = gw.admin(
        "PUT",
        "/admin/models/gonka/sim-smal",
        Some(json!({"price_prompt_ngonka": "1", "price_completion_ngonka": "2"})),
    );
    assert_eq!(r.status, 404, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "model_not_found");
    assert!(r.json()["error"]["message"].as_str().unwrap().contains("[[models]]"), "says how: {}", r.text());
    assert_eq!(admin_ids(&gw), [MODEL], "the typo is no model");
    let listed = get(&gw, "/v1/models").json();
    assert_eq!(listed["data"].as_array().unwrap().len(), 1);
    // A configured model can be priced, also when its id comes percent-encoded.
    let r = gw.admin(
        "PUT",
        &format!("/admin/models/{}", MODEL.replace('/', "%2F")),
        Some(json!({"price_prompt_ngonka": "1", "price_completion_ngonka": "2"})),
    );
    assert_eq!((r.status, r.json()["price_completion_ngonka"].as_str()), (200, Some("2")), "{}", r.text());
}

#[test]
fn deleting_a_models_price_falls_back_to_the_config_or_removes_a_stored_only_model() {
    let sim = Sim::start(&[]);
    let mut gw = Gateway::start(&sim.urls);
    let set = gw.admin(
        "PUT",
        &format!("/admin/models/{MODEL}"),
        Some(json!({"price_prompt_ngonka": "7", "price_completion_ngonka": "70"})),
    );
    assert_eq!(set.status, 200, "{}", set.text());
    assert_eq!(get(&gw, "/v1/models").json()["data"][0]["price_completion_ngonka"], "70");

    // A configured model goes back to its config prices (10 and 20) and stays.
    let r = gw.admin("DELETE", &format!("/admin/models/{MODEL}"), None);
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!((v["deleted"].as_bool(), v["price_override_removed"].as_bool()), (Some(false), Some(true)));
    assert_eq!(
        (v["price_prompt_ngonka"].as_str(), v["price_completion_ngonka"].as_str()),
        (Some("10"), Some("20"))
    );
    assert_eq!(get(&gw, "/v1/models").json()["data"][0]["price_completion_ngonka"], "20");
    let r = gw.admin("DELETE", &format!("/admin/models/{MODEL}"), None);
    assert_eq!((r.status, r.json()["price_override_removed"].as_bool()), (200, Some(false)));
    let r = gw.admin("DELETE", "/admin/models/no/such-model", None);
    assert_eq!((r.status, r.json()["error"]["code"].as_str()), (404, Some("model_not_found")));

    // A model only the store knows (a typo stored by an older version): listed, and deletable from the CLI.
    gw.proc.signal("TERM");
    assert!(gw.proc.wait_exit(Duration::from_secs(10)).is_some());
    let mut store = SqliteStore::open(&gw.dir.path().join("data/gateway.db"), Synchronous::Full).unwrap();
    let typo = "gonka/sim-smal";
    store
        .upsert_price(&PriceRow {
            model: typo.into(),
            price_prompt_ngonka: 1,
            price_completion_ngonka: 2,
            updated_at: 1_750_000_000,
        })
        .unwrap();
    drop(store);
    gw.restart();
    let models = gw.admin("GET", "/admin/models", None).json();
    let stored: &Value = models["data"].as_array().unwrap().iter().find(|m| m["id"] == typo).unwrap();
    assert_eq!(
        (stored["configured"].as_bool(), stored["created"].as_i64()),
        (Some(false), Some(1_750_000_000))
    );
    let out = std::process::Command::new(BIN)
        .args(["admin", "--url", &format!("http://{}", gw.admin_addr), "models", "delete", typo])
        .env("GATEWAY_ADMIN_TOKEN", ADMIN_TOKEN)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((v["id"].as_str(), v["deleted"].as_bool()), (Some(typo), Some(true)));
    assert_eq!(admin_ids(&gw), [MODEL], "gone");
}

#[test]
fn a_model_that_a_discovered_node_lists_can_be_priced_and_is_then_served() {
    const KEY: &str = "8a7b6c5d4e3f201112131415161718191a1b1c1d1e1f20212223242526272829";
    let sim = Sim::start(&["--gonka", "--models", "gonka/listed"]);
    let gw = Gateway::start_with(GatewayOpts {
        node_urls: Vec::new(),
        extra: format!(
            "[upstream.gonka]\nseeds = [\"{}\"]\nuse_allowlist = true\nrefresh_ms = 500\n",
            sim.root(0)
        ),
        envs: vec![("GONKA_PRIVATE_KEY", KEY.to_owned())],
        ..GatewayOpts::default()
    });
    let price = json!({"price_prompt_ngonka": "3", "price_completion_ngonka": "4"});
    let mut r = None;
    assert!(
        eventually(Duration::from_secs(5), || {
            let resp = gw.admin("PUT", "/admin/models/gonka/listed", Some(price.clone()));
            let ok = resp.status == 200;
            r = Some(resp);
            ok
        }),
        "the node lists it: {}",
        r.map(|r| r.text()).unwrap_or_default()
    );
    let priced_at = now();
    let m = get(&gw, "/v1/models/gonka/listed").json();
    assert_eq!((m["id"].as_str(), m["price_completion_ngonka"].as_str()), (Some("gonka/listed"), Some("4")));
    let created = m["created"].as_i64().unwrap();
    assert!((priced_at - 2..=priced_at).contains(&created), "created {created}: when its price was stored");
    let r = post(
        gw.addr,
        "/v1/chat/completions",
        &gw.auth(),
        &json!({"model": "gonka/listed", "messages": [{"role": "user", "content": "x"}], "max_tokens": 2}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
}
