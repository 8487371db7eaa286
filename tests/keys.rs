//! Accounts and keys over HTTP: every endpoint and state change, effective at once on every connection and
//! core, surviving restarts (SIGTERM and kill -9), isolated between accounts, never logged.
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

/// Keep-alive connections, warmed up, for firing requests right after a change.
struct Conns(Vec<TcpStream>);

impl Conns {
    fn open(gw: &Gateway, n: usize) -> Conns {
        let mut v = Vec::new();
        for _ in 0..n {
            let s = TcpStream::connect(gw.addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            v.push(s);
        }
        Conns(v)
    }

    /// One chat request on every connection at once (a thread each); returns the statuses.
    fn fire(&mut self, key: &str) -> Vec<u16> {
        let body = chat_body("fire", 2, false).to_string();
        std::thread::scope(|scope| {
            let handles: Vec<_> = self
                .0
                .iter_mut()
                .map(|s| {
                    let body = body.clone();
                    scope.spawn(move || {
                        write!(
                            s,
                            "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\nContent-Length: {}\r\n\r\n{body}",
                            body.len()
                        )
                        .unwrap();
                        read_one(s)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        })
    }
}

/// Reads one Content-Length response; returns its status.
fn read_one(s: &mut TcpStream) -> u16 {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut b).unwrap();
        head.push(b[0]);
    }
    let text = String::from_utf8_lossy(&head);
    let len: usize = text
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase().strip_prefix("content-length: ").map(|v| v.trim().parse().unwrap())
        })
        .unwrap();
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).unwrap();
    text[9..12].parse().unwrap()
}

fn chat(gw: &Gateway, key: &str) -> Resp {
    post(gw.addr, "/v1/chat/completions", &format!("Bearer {key}"), &chat_body("hi", 2, false))
}

fn code(r: &Resp) -> String {
    r.json()["error"]["code"].as_str().unwrap_or_default().to_owned()
}

#[test]
fn managed_key_lifecycle_takes_effect_at_once_everywhere() {
    let sim = Sim::start(&[]);
    let gw = Gateway::start(&sim.urls);
    let tok = gw.account_token.clone();
    let r = gw.api(&tok, "POST", "/api/keys", Some(json!({"name": "prod"})));
    assert_eq!(r.status, 201);
    let k = r.json();
    for f in ["id", "name", "kind", "prefix", "status", "created_at", "key"] {
        assert!(k.get(f).is_some(), "{f} in {k}");
    }
    assert_eq!((k["kind"].as_str(), k["status"].as_str()), (Some("managed"), Some("active")));
    let (id, secret) = (k["id"].as_str().unwrap().to_owned(), k["key"].as_str().unwrap().to_owned());
    assert!(secret.starts_with("gk-prx-") && secret.len() >= 7 + 32);
    assert!(secret.starts_with(k["prefix"].as_str().unwrap()));

    let list = gw.api(&tok, "GET", "/api/keys", None).json();
    assert_eq!(list["object"], "list");
    assert!(list["data"].as_array().unwrap().iter().all(|k| k.get("key").is_none()), "secrets never listed");

    let mut conns = Conns::open(&gw, 8);
    assert!(conns.fire(&secret).iter().all(|s| *s == 200));

    let r = gw.api(&tok, "POST", &format!("/api/keys/{id}/pause"), None);
    assert_eq!((r.status, r.json()["status"].as_str()), (200, Some("paused")));
    assert!(r.json().get("key").is_none());
    assert_eq!(conns.fire(&secret), vec![403; 8], "paused on every connection at once");
    assert_eq!(code(&chat(&gw, &secret)), "key_paused");

    assert_eq!(gw.api(&tok, "POST", &format!("/api/keys/{id}/resume"), None).status, 200);
    assert_eq!(conns.fire(&secret), vec![200; 8]);

    let r = gw.api(&tok, "POST", &format!("/api/keys/{id}/rotate"), None);
    assert_eq!(r.status, 200);
    let new_secret = r.json()["key"].as_str().unwrap().to_owned();
    assert_ne!(new_secret, secret);
    assert_eq!(conns.fire(&secret), vec![401; 8], "the old secret is dead at once");
    assert_eq!(code(&chat(&gw, &secret)), "invalid_api_key");
    assert_eq!(chat(&gw, &new_secret).status, 200);

    let r = gw.api(&tok, "POST", &format!("/api/keys/{id}/archive"), None);
    assert_eq!((r.status, r.json()["status"].as_str()), (200, Some("archived")));
    assert_eq!(conns.fire(&new_secret), vec![401; 8]);
    for action in ["resume", "pause", "rotate", "archive"] {
        let r = gw.api(&tok, "POST", &format!("/api/keys/{id}/{action}"), None);
        assert_eq!(r.status, 409, "{action} on an archived key: {}", r.text());
    }
    assert_eq!(chat(&gw, &new_secret).status, 401, "nothing brings it back");
    assert_eq!(gw.api(&tok, "POST", &format!("/api/keys/{id}/explode"), None).status, 404);
}

#[test]
fn management_and_child_keys() {
    let sim = Sim::start(&[]);
    let gw = Gateway::start(&sim.urls);
    let tok = gw.account_token.clone();
    let r = gw.api(&tok, "POST", "/api/management/keys", Some(json!({"name": "saas"})));
    assert_eq!(r.status, 201);
    let (mid, msecret) =
        (r.json()["id"].as_str().unwrap().to_owned(), r.json()["key"].as_str().unwrap().to_owned());
    assert!(msecret.starts_with("gm-"));
    assert_eq!(gw.api(&tok, "GET", "/api/management/keys", None).json()["data"].as_array().unwrap().len(), 1);
    let r = chat(&gw, &msecret);
    assert_eq!((r.status, code(&r).as_str()), (403, "management_key_not_allowed"));

    // Children, created by the account token and by the management key itself.
    let children = format!("/api/management/keys/{mid}/children");
    let r = gw.api(
        &tok,
        "POST",
        &children,
        Some(
            json!({"name": "customer-1", "limit_daily_ngonka": "1000000", "limit_monthly_ngonka": "5000000",
                     "rate_limit_rpm": 30, "expires_at": "2031-01-01T00:00:00Z"}),
        ),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let c1 = r.json();
    assert_eq!(c1["kind"], "child");
    assert_eq!(c1["limit_daily_ngonka"], "1000000");
    assert_eq!(c1["rate_limit_rpm"], 30);
    assert_eq!(c1["expires_at"], "2031-01-01T00:00:00Z");
    assert_eq!(c1["management_key_id"], mid.as_str());
    let (c1id, c1secret) = (c1["id"].as_str().unwrap().to_owned(), c1["key"].as_str().unwrap().to_owned());
    assert!(c1secret.starts_with("gc-"));
    let r = gw.api(&msecret, "POST", &children, Some(json!({"name": "customer-2"})));
    assert_eq!(r.status, 201, "the management key may create its own children");
    let c2secret = r.json()["key"].as_str().unwrap().to_owned();
    assert_eq!(chat(&gw, &c1secret).status, 200);
    assert_eq!(chat(&gw, &c2secret).status, 200);
    let list = gw.api(&msecret, "GET", &children, None).json();
    assert_eq!(list["data"].as_array().unwrap().len(), 2);

    // The management key reaches only its own children; account tokens only their own account.
    let other = gw.api(&tok, "POST", "/api/management/keys", Some(json!({"name": "other"}))).json();
    let other_secret = other["key"].as_str().unwrap();
    assert_eq!(gw.api(other_secret, "GET", &children, None).status, 404);
    assert_eq!(gw.api(&msecret, "GET", "/api/keys", None).status, 401, "management keys only reach children");

    // PATCH: limits, clearing one, pausing takes effect at once.
    let child = format!("{children}/{c1id}");
    let r = gw.api(
        &msecret,
        "PATCH",
        &child,
        Some(json!({"limit_daily_ngonka": "2000000", "rate_limit_rpm": null, "name": "renamed"})),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        (r.json()["limit_daily_ngonka"].as_str(), r.json()["rate_limit_rpm"].is_null()),
        (Some("2000000"), true)
    );
    assert_eq!(r.json()["name"], "renamed");
    let mut conns = Conns::open(&gw, 6);
    assert_eq!(conns.fire(&c1secret), vec![200; 6]);
    assert_eq!(gw.api(&tok, "PATCH", &child, Some(json!({"status": "paused"}))).status, 200);
    assert_eq!(conns.fire(&c1secret), vec![403; 6]);
    assert_eq!(gw.api(&tok, "PATCH", &child, Some(json!({"status": "active"}))).status, 200);
    assert_eq!(conns.fire(&c1secret), vec![200; 6]);
    let r = gw.api(&tok, "DELETE", &child, None);
    assert_eq!((r.status, r.json()["status"].as_str()), (200, Some("archived")));
    assert_eq!(conns.fire(&c1secret), vec![401; 6]);
    assert_eq!(
        gw.api(&tok, "PATCH", &child, Some(json!({"status": "active"}))).status,
        404,
        "archived stays archived"
    );

    // Archiving the management key archives its children.
    let mid_path = format!("/api/keys/{mid}/archive");
    assert_eq!(gw.api(&tok, "POST", &mid_path, None).status, 200);
    assert_eq!(chat(&gw, &c2secret).status, 401);
    assert_eq!(gw.api(&msecret, "GET", &children, None).status, 401);
}

#[test]
fn a_child_key_refusal_shows_a_window_without_a_limit_as_null() {
    let sim = Sim::start(&[]);
    let gw = Gateway::start(&sim.urls);
    let tok = gw.account_token.clone();
    // A daily limit far below any request's hold; no monthly limit.
    let c = gw.create_child(&tok, json!({"name": "c", "limit_daily_ngonka": "1"}));
    let r = chat(&gw, c["key"].as_str().unwrap());
    assert_eq!((r.status, code(&r).as_str()), (402, "child_key_limit"), "{}", r.text());
    let err = &r.json()["error"];
    assert_eq!(err["daily_remaining"], "1", "{err}");
    assert!(err["monthly_remaining"].is_null(), "a window without a limit is null: {err}");
    assert!(!r.text().contains(&u64::MAX.to_string()), "{}", r.text());
}

#[test]
fn bad_fields_are_named() {
    let sim = Sim::start(&[]);
    let gw = Gateway::start(&sim.urls);
    let tok = gw.account_token.clone();
    let mid = gw.api(&tok, "POST", "/api/management/keys", Some(json!({"name": "m"}))).json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let children = format!("/api/management/keys/{mid}/children");
    let cases = [
        (json!({}), "name"),
        (json!({"name": ""}), "name"),
        (json!({"name": "x".repeat(101)}), "name"),
        (json!({"name": 5}), "name"),
        (json!({"name": "c", "limit_daily_ngonka": "-1"}), "limit_daily_ngonka"),
        (json!({"name": "c", "limit_daily_ngonka": "1.5"}), "limit_daily_ngonka"),
        (json!({"name": "c", "limit_monthly_ngonka": "99999999999999999999999"}), "limit_monthly_ngonka"),
        (json!({"name": "c", "rate_limit_rpm": 0}), "rate_limit_rpm"),
        (json!({"name": "c", "rate_limit_rpm": "sixty"}), "rate_limit_rpm"),
        (json!({"name": "c", "expires_at": "2001-01-01T00:00:00Z"}), "expires_at"),
        (json!({"name": "c", "expires_at": "next week"}), "expires_at"),
        (json!({"name": "c", "limit_daily": "5"}), "limit_daily"),
    ];
    for (body, param) in cases {
        let r = gw.api(&tok, "POST", &children, Some(body.clone()));
        assert_eq!(r.status, 400, "{body}: {}", r.text());
        assert_eq!(r.json()["error"]["param"], param, "{body}");
        assert_eq!(r.json()["error"]["code"], "invalid_request_error");
    }
    let c = gw.api(&tok, "POST", &children, Some(json!({"name": "ok"}))).json();
    let child = format!("{children}/{}", c["id"].as_str().unwrap());
    let r = gw.api(&tok, "PATCH", &child, Some(json!({"status": "archived"})));
    assert_eq!((r.status, r.json()["error"]["param"].as_str()), (400, Some("status")));
    let r = gw.api(&tok, "POST", "/api/keys", Some(json!({"name": "k", "kind": "management"})));
    assert_eq!((r.status, r.json()["error"]["param"].as_str()), (400, Some("kind")));
    let r =
        http(gw.addr, "POST", "/api/keys", &[("Authorization", &format!("Bearer {tok}"))], Some(b"{broken"));
    assert_eq!(r.status, 400);
}

#[test]
fn expiry_takes_effect_without_a_restart() {
    let sim = Sim::start(&[]);
    let gw = Gateway::start(&sim.urls);
    let tok = gw.account_token.clone();
    let mid = gw.api(&tok, "POST", "/api/management/keys", Some(json!({"name": "m"}))).json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let expires = time_rfc3339(now + 2);
    let r = gw.api(
        &tok,
        "POST",
        &format!("/api/management/keys/{mid}/children"),
        Some(json!({"name": "brief", "expires_at": expires})),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let secret = r.json()["key"].as_str().unwrap().to_owned();
    assert_eq!(chat(&gw, &secret).status, 200);
    assert!(
        eventually(Duration::from_secs(5), || {
            let r = chat(&gw, &secret);
            r.status == 401 && code(&r) == "key_expired"
        }),
        "expired without a restart"
    );
}

fn time_rfc3339(unix: u64) -> String {
    gonka_gateway::time::rfc3339(unix as i64)
}

#[test]
fn accounts_cannot_see_or_touch_each_other() {
    let sim = Sim::start(&[]);
    let gw = Gateway::start(&sim.urls);
    let (_b_id, b_tok) = gw.create_account("bob");
    let a_tok = gw.account_token.clone();
    let a_key = gw.api(&a_tok, "POST", "/api/keys", Some(json!({"name": "a"}))).json();
    let a_key_id = a_key["id"].as_str().unwrap();
    let a_m = gw.api(&a_tok, "POST", "/api/management/keys", Some(json!({"name": "am"}))).json();
    let a_m_id = a_m["id"].as_str().unwrap();
    let a_child = gw
        .api(&a_tok, "POST", &format!("/api/management/keys/{a_m_id}/children"), Some(json!({"name": "ac"})))
        .json();
    let a_child_id = a_child["id"].as_str().unwrap();

    for action in ["pause", "resume", "rotate", "archive"] {
        assert_eq!(gw.api(&b_tok, "POST", &format!("/api/keys/{a_key_id}/{action}"), None).status, 404);
    }
    assert_eq!(gw.api(&b_tok, "GET", &format!("/api/keys/{a_key_id}"), None).status, 404);
    let children = format!("/api/management/keys/{a_m_id}/children");
    assert_eq!(gw.api(&b_tok, "GET", &children, None).status, 404);
    assert_eq!(gw.api(&b_tok, "POST", &children, Some(json!({"name": "x"}))).status, 404);
    assert_eq!(
        gw.api(&b_tok, "PATCH", &format!("{children}/{a_child_id}"), Some(json!({"status": "paused"})))
            .status,
        404
    );
    assert_eq!(gw.api(&b_tok, "DELETE", &format!("{children}/{a_child_id}"), None).status, 404);
    let b_list = gw.api(&b_tok, "GET", "/api/keys", None).json();
    assert_eq!(b_list["data"].as_array().unwrap().len(), 0);
    assert_eq!(chat(&gw, a_key["key"].as_str().unwrap()).status, 200, "untouched");
    assert_eq!(gw.api("gka-forged0000000000000000000000000000000000", "GET", "/api/keys", None).status, 401);
    assert_eq!(
        gw.api(a_key["key"].as_str().unwrap(), "GET", "/api/keys", None).status,
        401,
        "inference keys are not account tokens"
    );
}

#[test]
fn quota_and_credits() {
    let sim = Sim::start(&[]);
    let gw = Gateway::start_with(GatewayOpts {
        node_urls: sim.urls.clone(),
        keys: "max_keys_per_account = 3".into(),
        ..GatewayOpts::default()
    });
    let tok = gw.account_token.clone();
    // The provisioned key is the first of three.
    let k2 = gw.api(&tok, "POST", "/api/keys", Some(json!({"name": "2"}))).json();
    assert_eq!(gw.api(&tok, "POST", "/api/management/keys", Some(json!({"name": "3"}))).status, 201);
    let r = gw.api(&tok, "POST", "/api/keys", Some(json!({"name": "4"})));
    assert_eq!((r.status, code(&r).as_str()), (403, "key_limit_reached"));
    assert_eq!(
        gw.api(&tok, "POST", &format!("/api/keys/{}/archive", k2["id"].as_str().unwrap()), None).status,
        200
    );
    assert_eq!(
        gw.api(&tok, "POST", "/api/keys", Some(json!({"name": "4"}))).status,
        201,
        "archiving frees a slot"
    );

    let (id, _) = gw.create_account("payer");
    assert_eq!(gw.credit(&id, 700, "invoice-1")["balance_ngonka"], "700");
    let again = gw.credit(&id, 700, "invoice-1");
    assert_eq!((again["balance_ngonka"].as_str(), again["credited"].as_bool()), (Some("700"), Some(false)));
    assert_eq!(gw.credit(&id, 300, "invoice-2")["balance_ngonka"], "1000");
    let a = gw.admin("GET", &format!("/admin/accounts/{id}"), None).json();
    assert_eq!((a["name"].as_str(), a["balance_ngonka"].as_str()), (Some("payer"), Some("1000")));
    assert_eq!(gw.admin("GET", "/admin/accounts/acc_nope", None).status, 404);
    // A negative amount is an adjustment (it takes back); 0 and fractions are refused.
    let r = gw.admin(
        "POST",
        &format!("/admin/accounts/{id}/credits"),
        Some(json!({"amount_ngonka": "-5", "reference": "x"})),
    );
    assert_eq!((r.status, r.json()["balance_ngonka"].as_str()), (200, Some("995")), "{}", r.text());
    assert_eq!(r.json()["entries"][0]["kind"], "adjustment");
    for bad in ["0", "1.5", "-"] {
        let r = gw.admin(
            "POST",
            &format!("/admin/accounts/{id}/credits"),
            Some(json!({"amount_ngonka": bad, "reference": "y"})),
        );
        assert_eq!((r.status, r.json()["error"]["param"].as_str()), (400, Some("amount_ngonka")), "{bad}");
    }
    let r = gw.admin("POST", &format!("/admin/accounts/{id}/credits"), Some(json!({"amount_ngonka": "5"})));
    assert_eq!((r.status, r.json()["error"]["param"].as_str()), (400, Some("reference")));
    let r = http(gw.admin_addr, "GET", "/admin/accounts", &[("Authorization", "Bearer wrong")], None);
    assert_eq!(r.status, 401);
}

/// `POST /admin/accounts/{id}/credits` with `amount` and `reference`.
fn credit_call(gw: &Gateway, id: &str, amount: &str, reference: &str) -> Resp {
    gw.admin(
        "POST",
        &format!("/admin/accounts/{id}/credits"),
        Some(json!({"amount_ngonka": amount, "reference": reference})),
    )
}

#[test]
fn a_zero_credit_is_refused_and_leaves_its_reference_to_the_real_payment() {
    let gw = Gateway::start(&[]);
    let (id, _) = gw.create_account("payer");
    let r = credit_call(&gw, &id, "0", "invoice-7");
    assert_eq!((r.status, r.json()["error"]["param"].as_str()), (400, Some("amount_ngonka")), "{}", r.text());
    let r = credit_call(&gw, &id, "700", "invoice-7");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        (r.json()["credited"].as_bool(), r.json()["balance_ngonka"].as_str()),
        (Some(true), Some("700"))
    );
}

#[test]
fn a_credit_reference_reused_with_another_amount_is_a_409_and_the_same_amount_a_retry() {
    let gw = Gateway::start(&[]);
    let (id, _) = gw.create_account("payer");
    assert_eq!(credit_call(&gw, &id, "700", "invoice-1").status, 200);
    let r = credit_call(&gw, &id, "900", "invoice-1");
    assert_eq!(r.status, 409, "{}", r.text());
    let err = &r.json()["error"];
    assert_eq!(
        (err["code"].as_str(), err["param"].as_str()),
        (Some("credit_reference_conflict"), Some("reference"))
    );
    assert!(err["message"].as_str().unwrap().contains("700"), "{err}");
    let r = credit_call(&gw, &id, "700", "invoice-1");
    assert_eq!(r.status, 200, "the same credit again is an idempotent retry: {}", r.text());
    assert_eq!(
        (r.json()["credited"].as_bool(), r.json()["balance_ngonka"].as_str()),
        (Some(false), Some("700"))
    );
    assert_eq!(gw.balance(&id), 700);
}

#[test]
fn a_credit_that_would_overflow_the_balance_is_a_clear_400() {
    let gw = Gateway::start(&[]);
    let (id, _) = gw.create_account("whale");
    let max = i64::MAX.to_string();
    assert_eq!(credit_call(&gw, &id, &max, "all-of-it").status, 200);
    let r = credit_call(&gw, &id, "1", "one-more");
    assert_eq!((r.status, r.json()["error"]["param"].as_str()), (400, Some("amount_ngonka")), "{}", r.text());
    let message = r.json()["error"]["message"].as_str().unwrap().to_owned();
    for internal in ["store", "sqlite", "SQL", "Real", "column"] {
        assert!(!message.contains(internal), "no store internals in {message:?}");
    }
    assert_eq!(gw.balance(&id), i64::MAX);
    // The refusal recorded nothing under its reference: the same call is refused again, not a retry.
    assert_eq!(credit_call(&gw, &id, "1", "one-more").status, 400);
}

/// Keys in every state, and a balance; returns (active, paused, rotated-away, rotated-new, archived).
fn populate(gw: &Gateway) -> (String, String, String, String, String) {
    let tok = gw.account_token.clone();
    let mk = |name: &str| gw.api(&tok, "POST", "/api/keys", Some(json!({"name": name}))).json();
    let active = mk("active");
    let paused = mk("paused");
    gw.api(&tok, "POST", &format!("/api/keys/{}/pause", paused["id"].as_str().unwrap()), None);
    let rotated = mk("rotated");
    let new =
        gw.api(&tok, "POST", &format!("/api/keys/{}/rotate", rotated["id"].as_str().unwrap()), None).json();
    let archived = mk("archived");
    gw.api(&tok, "POST", &format!("/api/keys/{}/archive", archived["id"].as_str().unwrap()), None);
    gw.credit(&gw.account_id, 12_345, "extra");
    let s = |v: &Value| v["key"].as_str().unwrap().to_owned();
    (s(&active), s(&paused), s(&rotated), s(&new), s(&archived))
}

fn check_populated(gw: &Gateway, keys: &(String, String, String, String, String)) {
    assert_eq!(chat(gw, &keys.0).status, 200, "active key");
    assert_eq!(code(&chat(gw, &keys.1)), "key_paused");
    assert_eq!(code(&chat(gw, &keys.2)), "invalid_api_key", "rotated-away secret");
    assert_eq!(chat(gw, &keys.3).status, 200, "rotated-new secret");
    assert_eq!(code(&chat(gw, &keys.4)), "invalid_api_key", "archived");
    assert_eq!(chat(gw, &gw.api_key).status, 200);
    let balance = gw.api(&gw.account_token, "GET", "/api/balance", None).json();
    assert!(balance["balance_ngonka"].as_str().unwrap().parse::<u64>().unwrap() > 0, "{balance}");
}

#[test]
fn state_survives_sigterm_and_kill_9() {
    let sim = Sim::start(&[]);
    let mut gw = Gateway::start(&sim.urls);
    let keys = populate(&gw);
    gw.proc.signal("TERM");
    assert!(gw.proc.wait_exit(Duration::from_secs(10)).unwrap().success());
    gw.restart();
    check_populated(&gw, &keys);
    assert!(gw.proc.stderr().contains("loaded from the snapshot"), "clean shutdown wrote a current snapshot");

    // Changes right before a kill -9 are in the store, not yet in the snapshot: it is stale and ignored.
    let more = populate(&gw);
    gw.proc.signal("KILL");
    gw.proc.wait_exit(Duration::from_secs(5)).unwrap();
    gw.restart();
    check_populated(&gw, &keys);
    check_populated(&gw, &more);
    assert!(gw.proc.stderr().contains("loaded from the store"), "{}", gw.proc.stderr());
}

#[test]
fn a_corrupt_snapshot_is_ignored_and_rebuilt() {
    let sim = Sim::start(&[]);
    let mut gw = Gateway::start(&sim.urls);
    let keys = populate(&gw);
    gw.proc.signal("TERM");
    gw.proc.wait_exit(Duration::from_secs(10)).unwrap();
    let snap = gw.dir.path().join("data/keys.snapshot");
    let mut bytes = std::fs::read(&snap).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&snap, &bytes).unwrap();
    gw.restart();
    check_populated(&gw, &keys);
    let log = gw.proc.stderr();
    assert!(log.contains("ignoring the key snapshot") && log.contains("corrupt"), "{log}");
    let loaded = keys_loaded(&log, "store").unwrap_or_else(|| panic!("keys come from the store: {log}"));
    // Rebuilt: once stopped, the file is a valid snapshot again, and the next start uses it.
    gw.proc.signal("TERM");
    assert!(gw.proc.wait_exit(Duration::from_secs(10)).unwrap().success());
    let rebuilt = std::fs::read(&snap).unwrap();
    assert!(rebuilt != bytes, "the corrupt snapshot was rewritten");
    let (rows, _) =
        gonka_gateway::store::snapshot::decode(&rebuilt).expect("the rewritten snapshot is valid");
    assert_eq!(rows.len(), loaded);
    gw.restart();
    let log = gw.proc.stderr();
    assert_eq!(keys_loaded(&log, "snapshot"), Some(loaded), "{log}");
    assert!(!log.contains("ignoring the key snapshot"), "{log}");
    check_populated(&gw, &keys);
}

/// How many keys the start that wrote `log` loaded from `source` (`snapshot` or `store`).
fn keys_loaded(log: &str, source: &str) -> Option<usize> {
    let (before, _) = log.split_once(&format!(" keys loaded from the {source}"))?;
    before.rsplit(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

#[test]
fn secrets_appear_in_no_log_line() {
    let sim = Sim::start(&[]);
    let mut gw = Gateway::start_with(GatewayOpts {
        node_urls: sim.urls.clone(),
        extra: "[log]\nlevel = \"trace\"\n".into(),
        ..GatewayOpts::default()
    });
    let tok = gw.account_token.clone();
    let keys = populate(&gw);
    let m = gw.api(&tok, "POST", "/api/management/keys", Some(json!({"name": "m"}))).json();
    let c = gw
        .api(
            &tok,
            "POST",
            &format!("/api/management/keys/{}/children", m["id"].as_str().unwrap()),
            Some(json!({"name": "c"})),
        )
        .json();
    let rotated = gw.admin("POST", &format!("/admin/accounts/{}/token", gw.account_id), None).json();
    let mut secrets = vec![tok.clone(), gw.api_key.clone(), keys.0, keys.1, keys.2, keys.3, keys.4];
    for v in [&m, &c] {
        secrets.push(v["key"].as_str().unwrap().to_owned());
    }
    secrets.push(rotated["token"].as_str().unwrap().to_owned());
    // Failed attempts with secrets too.
    for s in &secrets {
        let _ = chat(&gw, s);
        let _ = gw.api(s, "GET", "/api/keys", None);
    }
    gw.proc.signal("TERM");
    gw.proc.wait_exit(Duration::from_secs(10)).unwrap();
    let log = gw.proc.stderr();
    assert!(log.lines().count() > 20, "the log has lines to check");
    for s in &secrets {
        assert!(!log.contains(s.as_str()), "a secret leaked into the log");
        assert!(!log.contains(&s[s.len() - 20..]), "part of a secret leaked into the log");
    }
    assert!(!log.contains(ADMIN_TOKEN));
}

#[test]
fn the_admin_cli_manages_accounts_credits_and_keys() {
    let sim = Sim::start(&[]);
    let gw = Gateway::start(&sim.urls);
    let admin = |args: &[&str]| gw.admin_cli(args);
    let acc = admin(&["accounts", "create", "--name", "cli"]);
    let id = acc["id"].as_str().unwrap();
    assert!(acc["token"].as_str().unwrap().starts_with("gka-"));
    assert_eq!(
        admin(&["credits", "add", id, "--amount-ngonka", "900000000", "--reference", "r1"])["balance_ngonka"],
        "900000000"
    );
    assert_eq!(
        admin(&["credits", "add", id, "--amount-ngonka", "900000000", "--reference", "r1"])["credited"],
        false
    );
    assert_eq!(admin(&["accounts", "get", id])["balance_ngonka"], "900000000");
    let key = admin(&["keys", "create", id, "--name", "from-cli"]);
    let (kid, secret) = (key["id"].as_str().unwrap(), key["key"].as_str().unwrap());
    assert_eq!(chat(&gw, secret).status, 200);
    assert_eq!(admin(&["keys", "pause", kid])["status"], "paused");
    assert_eq!(chat(&gw, secret).status, 403);
    assert_eq!(admin(&["keys", "resume", kid])["status"], "active");
    let rotated = admin(&["keys", "rotate", kid]);
    assert_eq!(chat(&gw, rotated["key"].as_str().unwrap()).status, 200);
    assert_eq!(admin(&["keys", "archive", kid])["status"], "archived");
    assert_eq!(admin(&["keys", "list", id])["data"].as_array().unwrap().len(), 1);
    assert!(admin(&["accounts", "list"])["data"].as_array().unwrap().len() >= 2);
    let token = admin(&["accounts", "rotate-token", id])["token"].as_str().unwrap().to_owned();
    assert_eq!(gw.api(&token, "GET", "/api/keys", None).status, 200);
    assert_eq!(
        gw.api(acc["token"].as_str().unwrap(), "GET", "/api/keys", None).status,
        401,
        "old token dead"
    );

    let out = std::process::Command::new(BIN)
        .args([
            "admin",
            "--url",
            &format!("http://{}", gw.admin_addr),
            "--token",
            "wrong",
            "accounts",
            "list",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
}
