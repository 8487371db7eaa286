//! Per-key model lists (`allowed_models` on managed, management and child keys): a request for another
//! model is 403 `model_not_allowed` on every route, in the route's own error shape, before any hold or
//! node call; `/v1/models` lists only what the key may use; a change takes effect on the very next
//! request; a child key never gets more than its management key.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods,
    reason = "tests fail loudly and block freely on their own threads"
)]

mod utils;

use serde_json::{Value, json};
use utils::*;

const LARGE: &str = "gonka/sim-large";

/// A simulator serving both models, and a gateway configured with both (`gonka/sim-large` also as
/// `large`).
fn two_models() -> (Sim, Gateway) {
    let sim = Sim::start(&["--models", &format!("{MODEL},{LARGE}")]);
    let models = format!(
        "[[models]]\nid = \"{MODEL}\"\ncontext_length = 32768\nprice_prompt_ngonka = 10\nprice_completion_ngonka = 20\n\
         [[models]]\nid = \"{LARGE}\"\ncontext_length = 32768\nprice_prompt_ngonka = 10\nprice_completion_ngonka = 20\naliases = [\"large\"]\n"
    );
    let gw = Gateway::start_with(GatewayOpts {
        node_urls: sim.urls.clone(),
        models: vec![],
        extra: models,
        ..GatewayOpts::default()
    });
    (sim, gw)
}

fn node_requests(sim: &Sim) -> u64 {
    sim.stats()["nodes"].as_array().unwrap().iter().map(|n| n["requests"].as_u64().unwrap()).sum()
}

fn chat(gw: &Gateway, key: &str, model: &str) -> Resp {
    let mut body = chat_body("hi", 2, false);
    body["model"] = json!(model);
    post(gw.addr, "/v1/chat/completions", &format!("Bearer {key}"), &body)
}

fn listed(gw: &Gateway, key: &str) -> Vec<String> {
    let r = http(gw.addr, "GET", "/v1/models", &[("Authorization", &format!("Bearer {key}"))], None);
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap().to_owned()).collect()
}

fn not_allowed(r: &Resp, model: &str) {
    assert_eq!(r.status, 403, "{}", r.text());
    let e = &r.json()["error"];
    assert_eq!(
        (e["code"].as_str(), e["type"].as_str()),
        (Some("model_not_allowed"), Some("permission_error"))
    );
    assert_eq!(e["param"], "model");
    assert!(e["message"].as_str().unwrap().contains(model), "{e}");
}

#[test]
fn a_key_limited_to_one_model_is_refused_the_other_on_every_route_and_lists_one_model() {
    let (sim, mut gw) = two_models();
    let tok = &gw.account_token.clone();
    let r = gw.api(tok, "POST", "/api/keys", Some(json!({"name": "small only", "allowed_models": [MODEL]})));
    assert_eq!(r.status, 201, "{}", r.text());
    let created = r.json();
    assert_eq!(created["allowed_models"], json!([MODEL]));
    let (id, key) = (created["id"].as_str().unwrap().to_owned(), created["key"].as_str().unwrap().to_owned());
    let bearer = format!("Bearer {key}");

    assert_eq!(chat(&gw, &key, MODEL).status, 200);
    let served = node_requests(&sim);
    not_allowed(&chat(&gw, &key, LARGE), LARGE);
    not_allowed(&chat(&gw, &key, "large"), LARGE);
    let completion = json!({"model": LARGE, "prompt": "hi", "max_tokens": 2});
    not_allowed(&post(gw.addr, "/v1/completions", &bearer, &completion), LARGE);
    not_allowed(&post(gw.addr, "/v1/embeddings", &bearer, &json!({"model": LARGE, "input": "hi"})), LARGE);
    not_allowed(&post(gw.addr, "/v1/responses", &bearer, &json!({"model": LARGE, "input": "hi"})), LARGE);

    // Anthropic's routes answer in Anthropic's shape.
    let headers = [("x-api-key", key.as_str()), ("anthropic-version", "2023-06-01")];
    let ask = json!({"model": LARGE, "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]});
    for path in ["/v1/messages", "/v1/messages/count_tokens"] {
        let r = http(gw.addr, "POST", path, &headers, Some(ask.to_string().as_bytes()));
        assert_eq!(r.status, 403, "{path}: {}", r.text());
        let v = r.json();
        assert_eq!(
            (v["type"].as_str(), v["error"]["type"].as_str(), v["error"]["code"].as_str()),
            (Some("error"), Some("permission_error"), Some("model_not_allowed")),
            "{path}: {v}"
        );
        assert_eq!(r.header("x-should-retry"), Some("false"));
    }
    assert_eq!(node_requests(&sim), served, "no refused request reached a node");
    assert_eq!(gw.usage_records(&gw.account_id).len(), 1, "refusals are not billed");

    // Only the allowed model is listed; the other is unknown to this key.
    assert_eq!(listed(&gw, &key), vec![MODEL]);
    assert_eq!(listed(&gw, &gw.api_key), vec![MODEL, LARGE], "a key without a list sees every model");
    let r = http(gw.addr, "GET", &format!("/v1/models/{LARGE}"), &[("Authorization", &bearer)], None);
    assert_eq!((r.status, r.json()["error"]["code"].as_str()), (404, Some("model_not_found")));
    let r = http(gw.addr, "GET", "/v1/models", &headers, None);
    assert_eq!(r.json()["data"].as_array().unwrap().len(), 1, "Anthropic's shape too: {}", r.text());

    // A PATCH takes effect on the very next request; an alias is stored as its model's id.
    let r = gw.api(tok, "PATCH", &format!("/api/keys/{id}"), Some(json!({"allowed_models": ["large"]})));
    assert_eq!((r.status, r.json()["allowed_models"].clone()), (200, json!([LARGE])), "{}", r.text());
    not_allowed(&chat(&gw, &key, MODEL), MODEL);
    assert_eq!(chat(&gw, &key, LARGE).status, 200);
    assert_eq!(listed(&gw, &key), vec![LARGE]);
    let r = gw.api(tok, "GET", &format!("/api/keys/{id}"), None);
    assert_eq!(r.json()["allowed_models"], json!([LARGE]));

    // The list survives a restart.
    gw.restart();
    not_allowed(&chat(&gw, &key, MODEL), MODEL);

    // null: every model again.
    let r = gw.api(tok, "PATCH", &format!("/api/keys/{id}"), Some(json!({"allowed_models": null})));
    assert_eq!((r.status, r.json()["allowed_models"].clone()), (200, Value::Null));
    assert_eq!(chat(&gw, &key, MODEL).status, 200);
    assert_eq!(listed(&gw, &key), vec![MODEL, LARGE]);
}

#[test]
fn a_model_list_is_validated_and_a_typo_is_refused() {
    let (_sim, gw) = two_models();
    let tok = &gw.account_token;
    for (list, what) in [
        (json!([]), "empty"),
        (json!([""]), "empty id"),
        (json!([7]), "not a string"),
        (json!(MODEL), "not an array"),
        (json!(vec![MODEL; 65]), "too many"),
        (json!(["x".repeat(257)]), "too long"),
        (json!(["gonka/sim-smal"]), "not a model of this gateway"),
    ] {
        let r = gw.api(tok, "POST", "/api/keys", Some(json!({"name": "k", "allowed_models": list})));
        assert_eq!(r.status, 400, "{what}: {}", r.text());
        assert_eq!(r.json()["error"]["param"], "allowed_models", "{what}");
    }
    let r = gw.api(tok, "POST", "/api/keys", Some(json!({"name": "k", "allowed_models": [MODEL, MODEL]})));
    assert_eq!(r.json()["allowed_models"], json!([MODEL]), "repeats are dropped");
}

#[test]
fn a_child_key_stays_within_its_management_keys_models() {
    let (sim, gw) = two_models();
    let tok = &gw.account_token;
    let m =
        gw.api(tok, "POST", "/api/management/keys", Some(json!({"name": "m", "allowed_models": [MODEL]})));
    assert_eq!(m.status, 201, "{}", m.text());
    assert_eq!(m.json()["allowed_models"], json!([MODEL]));
    let mid = m.json()["id"].as_str().unwrap().to_owned();
    let children = format!("/api/management/keys/{mid}/children");

    let r = gw.api(tok, "POST", &children, Some(json!({"name": "c", "allowed_models": [LARGE]})));
    assert_eq!(
        (r.status, r.json()["error"]["param"].as_str()),
        (400, Some("allowed_models")),
        "{}",
        r.text()
    );

    // A child without a list gets its management key's.
    let c = gw.api(tok, "POST", &children, Some(json!({"name": "c"}))).json();
    assert_eq!(c["allowed_models"], Value::Null);
    let (cid, ckey) = (c["id"].as_str().unwrap().to_owned(), c["key"].as_str().unwrap().to_owned());
    assert_eq!(chat(&gw, &ckey, MODEL).status, 200);
    let served = node_requests(&sim);
    not_allowed(&chat(&gw, &ckey, LARGE), LARGE);
    assert_eq!(node_requests(&sim), served);
    assert_eq!(listed(&gw, &ckey), vec![MODEL]);

    // A child with its own list, then the management key changes: the child follows at once.
    let r = gw.api(tok, "POST", &children, Some(json!({"name": "own", "allowed_models": [MODEL]})));
    let own = r.json()["key"].as_str().unwrap().to_owned();
    let r = gw.api(tok, "PATCH", &format!("/api/keys/{mid}"), Some(json!({"allowed_models": [LARGE]})));
    assert_eq!(r.status, 200, "{}", r.text());
    not_allowed(&chat(&gw, &ckey, MODEL), MODEL);
    assert_eq!(chat(&gw, &ckey, LARGE).status, 200, "the child without a list follows its management key");
    not_allowed(&chat(&gw, &own, MODEL), MODEL);
    not_allowed(&chat(&gw, &own, LARGE), LARGE);
    assert!(listed(&gw, &own).is_empty(), "its list and its management key's have nothing in common");

    // PATCH of a child's list, within its management key's.
    let path = format!("{children}/{cid}");
    let r = gw.api(tok, "PATCH", &path, Some(json!({"allowed_models": [MODEL]})));
    assert_eq!(r.status, 400, "outside the management key's list: {}", r.text());
    let r = gw.api(tok, "PATCH", &path, Some(json!({"allowed_models": [LARGE]})));
    assert_eq!((r.status, r.json()["allowed_models"].clone()), (200, json!([LARGE])));
    let r = gw.api(tok, "PATCH", &format!("/api/keys/{mid}"), Some(json!({"allowed_models": null})));
    assert_eq!(r.status, 200);
    not_allowed(&chat(&gw, &ckey, MODEL), MODEL);
    assert_eq!(listed(&gw, &ckey), vec![LARGE]);
    let r = gw.api(tok, "PATCH", &format!("/api/keys/{mid}"), Some(json!({"fit_max_tokens": "always"})));
    assert_eq!(r.status, 400, "a management key has no fit policy");
}

#[test]
fn the_admin_api_and_cli_set_and_clear_a_keys_models() {
    let (_sim, gw) = two_models();
    let created = gw.admin_cli(&[
        "keys",
        "create",
        &gw.account_id,
        "--name",
        "cli",
        "--allowed-models",
        &format!("{MODEL},large"),
    ]);
    assert_eq!(created["allowed_models"], json!([MODEL, LARGE]), "{created}");
    let (id, key) = (created["id"].as_str().unwrap(), created["key"].as_str().unwrap());
    let updated = gw.admin_cli(&["keys", "update", id, "--allowed-models", LARGE]);
    assert_eq!(updated["allowed_models"], json!([LARGE]));
    not_allowed(&chat(&gw, key, MODEL), MODEL);
    let listed_keys = gw.admin("GET", &format!("/admin/accounts/{}/keys", gw.account_id), None).json();
    let row = listed_keys["data"].as_array().unwrap().iter().find(|k| k["id"] == id).unwrap().clone();
    assert_eq!(row["allowed_models"], json!([LARGE]));
    let cleared = gw.admin_cli(&["keys", "update", id, "--all-models"]);
    assert_eq!(cleared["allowed_models"], Value::Null);
    assert_eq!(chat(&gw, key, MODEL).status, 200);
}
