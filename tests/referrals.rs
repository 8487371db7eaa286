//! Referrals, credit kinds, refunds and the credit history, against the real binary over HTTP (the admin
//! and account APIs and the admin CLI): on the embedded store, and on PostgreSQL shared by two instances
//! that are both sent the same credit.
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

const GNK: i64 = 1_000_000_000;

fn gateway(extra: &str) -> Gateway {
    Gateway::start_with(GatewayOpts { extra: extra.to_owned(), ..GatewayOpts::default() })
}

fn account(gw: &impl GatewayApi, name: &str, code: Option<&str>) -> Value {
    gw.create_referred_account(name, code)
}

/// `top` ← `mid` ← `new`: each referred by the one before. Their ids.
fn chain(gw: &impl GatewayApi) -> [Value; 3] {
    let top = account(gw, "top", None);
    let mid = account(gw, "mid", top["referral_code"].as_str());
    let new = account(gw, "new", mid["referral_code"].as_str());
    assert_eq!(mid["referrer_id"], top["id"]);
    assert_eq!(new["referrer_id"], mid["id"]);
    [top, mid, new]
}

fn credit(gw: &impl GatewayApi, account: &Value, body: Value) -> Resp {
    gw.admin("POST", &format!("/admin/accounts/{}/credits", account["id"].as_str().unwrap()), Some(body))
}

fn balance_of(gw: &impl GatewayApi, account: &Value) -> i64 {
    gw.balance(account["id"].as_str().unwrap())
}

fn history(gw: &impl GatewayApi, account: &Value, query: &str) -> Value {
    let r =
        gw.admin("GET", &format!("/admin/accounts/{}/credits{query}", account["id"].as_str().unwrap()), None);
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

#[test]
fn a_paid_100_gnk_credit_pays_10_and_3_gnk_once_and_a_refund_claws_them_back_once() {
    let gw = gateway("");
    let [top, mid, new] = chain(&gw);
    let paid = json!({ "amount_ngonka": (100 * GNK).to_string(), "reference": "inv-1", "paid": true });
    let first = credit(&gw, &new, paid.clone());
    assert_eq!(first.status, 200, "{}", first.text());
    let v = first.json();
    assert_eq!((v["credited"].as_bool(), v["balance_ngonka"].as_str()), (Some(true), Some("100000000000")));
    let entries: Vec<_> = v["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (e["kind"].as_str().unwrap(), e["amount_ngonka"].as_str().unwrap(), e["referral_level"].clone())
        })
        .collect();
    assert_eq!(
        entries,
        [
            ("admin", "100000000000", Value::Null),
            ("referral", "10000000000", json!(1)),
            ("referral", "3000000000", json!(2))
        ]
    );
    // A retried call pays nothing more.
    for _ in 0..2 {
        let again = credit(&gw, &new, paid.clone()).json();
        assert_eq!(
            (again["credited"].as_bool(), again["entries"].as_array().unwrap().len()),
            (Some(false), 0)
        );
    }
    assert_eq!(
        [balance_of(&gw, &new), balance_of(&gw, &mid), balance_of(&gw, &top)],
        [100 * GNK, 10 * GNK, 3 * GNK]
    );
    // An unpaid credit pays no referrals.
    let gift = credit(&gw, &new, json!({ "amount_ngonka": (50 * GNK).to_string(), "reference": "gift" }));
    assert_eq!(gift.json()["entries"].as_array().unwrap().len(), 1, "{}", gift.text());
    assert_eq!([balance_of(&gw, &mid), balance_of(&gw, &top)], [10 * GNK, 3 * GNK]);

    // The refund, through the CLI, claws both back, once.
    let refund =
        ["credit", new["id"].as_str().unwrap(), "--amount-ngonka=-100000000000", "--reference", "refund-1"];
    let out = gw.admin_cli(&[&refund[..], &["--refund-of", "inv-1"]].concat());
    assert_eq!(out["credited"], true, "{out}");
    let kinds: Vec<_> =
        out["entries"].as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap().to_owned()).collect();
    assert_eq!(kinds, ["refund", "referral_clawback", "referral_clawback"]);
    let again = gw.admin_cli(&[&refund[..], &["--refund-of", "inv-1"]].concat());
    assert_eq!(again["credited"], false, "{again}");
    assert_eq!([balance_of(&gw, &new), balance_of(&gw, &mid), balance_of(&gw, &top)], [50 * GNK, 0, 0]);
    // Nothing is left of the credit to refund.
    let more =
        credit(&gw, &new, json!({ "amount_ngonka": "-1", "reference": "refund-2", "refund_of": "inv-1" }));
    assert_eq!((more.status, more.json()["error"]["code"].as_str()), (409, Some("refund_exceeds_credit")));
    assert_eq!(more.json()["error"]["refundable_ngonka"], "0");

    // The referrer sees it in its own history (account API), newest first.
    let mid_token = mid["token"].as_str().unwrap();
    let h = gw.api(mid_token, "GET", "/api/credits", None);
    assert_eq!(h.status, 200, "{}", h.text());
    let data = h.json()["data"].as_array().unwrap().clone();
    let seen: Vec<_> = data
        .iter()
        .map(|e| {
            (
                e["kind"].as_str().unwrap(),
                e["amount_ngonka"].as_str().unwrap(),
                e["source_reference"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(seen, [("referral_clawback", "-10000000000", "inv-1"), ("referral", "10000000000", "inv-1")]);
    assert_eq!((data[1]["paid"].as_bool(), data[1]["withdrawable"].as_bool()), (Some(false), Some(true)));
    assert_eq!(data[1]["source_account_id"], new["id"]);
    let me = gw.api(mid_token, "GET", "/api/account", None).json();
    assert_eq!(
        (me["referral_code"].clone(), me["referrer_id"].clone()),
        (mid["referral_code"].clone(), top["id"].clone())
    );
    assert_eq!(me["referred_accounts"], 1);
}

#[test]
fn the_credit_history_lists_newest_first_in_pages_and_refuses_bad_credits() {
    let gw = gateway("[referrals]\nwithdrawable = false\nl1_bps = 2000\n");
    let [_, mid, new] = chain(&gw);
    for i in 1..=5 {
        let r = credit(
            &gw,
            &new,
            json!({ "amount_ngonka": (i * 1000).to_string(), "reference": format!("c{i}"), "paid": i == 5 }),
        );
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let first = history(&gw, &new, "?limit=2");
    let refs = |page: &Value| -> Vec<String> {
        page["data"].as_array().unwrap().iter().map(|e| e["reference"].as_str().unwrap().to_owned()).collect()
    };
    assert_eq!(
        (refs(&first), first["has_more"].as_bool()),
        (vec!["c5".to_owned(), "c4".to_owned()], Some(true))
    );
    let after = first["data"][1]["id"].as_str().unwrap();
    let second = history(&gw, &new, &format!("?limit=2&starting_after={after}"));
    assert_eq!(refs(&second), ["c3", "c2"]);
    let last = history(&gw, &new, &format!("?starting_after={}", second["data"][1]["id"].as_str().unwrap()));
    assert_eq!((refs(&last), last["has_more"].as_bool()), (vec!["c1".to_owned()], Some(false)));
    // [referrals] l1_bps = 2000, withdrawable = false.
    let cli = gw.admin_cli(&["credits", mid["id"].as_str().unwrap()]);
    assert_eq!(cli["data"][0]["amount_ngonka"], "1000", "{cli}");
    assert_eq!(
        (cli["data"][0]["kind"].as_str(), cli["data"][0]["withdrawable"].as_bool()),
        (Some("referral"), Some(false))
    );
    for (body, param) in [
        (json!({ "amount_ngonka": "0", "reference": "z" }), "amount_ngonka"),
        (json!({ "amount_ngonka": "5", "reference": "r", "refund_of": "c1" }), "refund_of"),
        (json!({ "amount_ngonka": "-5", "reference": "r", "paid": true }), "paid"),
        (json!({ "amount_ngonka": "-5", "reference": "r", "refund_of": "nothing" }), "refund_of"),
        (json!({ "amount_ngonka": "5", "reference": "referral:1:x:y" }), "reference"),
        (json!({ "amount_ngonka": "5", "reference": "r", "paid": "yes" }), "paid"),
    ] {
        let r = credit(&gw, &new, body.clone());
        assert_eq!(
            (r.status, r.json()["error"]["param"].as_str()),
            (400, Some(param)),
            "{body}: {}",
            r.text()
        );
    }
    for query in ["?limit=0", "?limit=1001", "?starting_after=c1"] {
        let path = format!("/admin/accounts/{}/credits{query}", new["id"].as_str().unwrap());
        assert_eq!(gw.admin("GET", &path, None).status, 400, "{query}");
    }
}

#[test]
fn a_self_referral_a_circle_and_an_unknown_code_are_refused() {
    let gw = gateway("");
    let [top, mid, new] = chain(&gw);
    let r =
        gw.admin("POST", "/admin/accounts", Some(json!({ "name": "x", "referral_code": "no-such-code" })));
    assert_eq!((r.status, r.json()["error"]["param"].as_str()), (400, Some("referral_code")), "{}", r.text());
    let set = |who: &Value, code: &Value| {
        gw.admin(
            "POST",
            &format!("/admin/accounts/{}/referrer", who["id"].as_str().unwrap()),
            Some(json!({ "referral_code": code })),
        )
    };
    let own = set(&top, &top["referral_code"]);
    assert_eq!(own.status, 400, "{}", own.text());
    assert!(own.json()["error"]["message"].as_str().unwrap().contains("its own referrer"));
    // `top` referred `mid`, which referred `new`: neither may become `top`'s referrer.
    for down in [&mid, &new] {
        assert_eq!(set(&top, &down["referral_code"]).status, 400);
    }
    let twice = set(&new, &top["referral_code"]);
    assert_eq!((twice.status, twice.json()["error"]["code"].as_str()), (409, Some("referrer_already_set")));
    // An account without a referrer gets one, once; a paid credit then pays it.
    let solo = account(&gw, "solo", None);
    let ok = gw.admin_cli(&[
        "accounts",
        "set-referrer",
        solo["id"].as_str().unwrap(),
        "--referral-code",
        top["referral_code"].as_str().unwrap(),
    ]);
    assert_eq!(ok["referrer_id"], top["id"], "{ok}");
    credit(&gw, &solo, json!({ "amount_ngonka": "1000", "reference": "p", "paid": true }));
    assert_eq!(balance_of(&gw, &top), 100);
    let referred =
        gw.admin("GET", &format!("/admin/accounts?referrer_id={}", top["id"].as_str().unwrap()), None);
    let mut names: Vec<String> = referred.json()["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap().into())
        .collect();
    names.sort();
    assert_eq!(names, ["mid", "solo"]);
    let listed = gw.admin("GET", "/admin/accounts", None).json();
    let codes: Vec<_> = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["referral_code"].as_str().unwrap().to_owned())
        .collect();
    assert!(codes.iter().all(|c| c.len() == 12) && codes.len() == 5, "{codes:?}");
}

#[test]
fn sign_up_is_off_by_default_and_when_enabled_takes_a_referral_code_within_its_rate() {
    let off = gateway("");
    let r = http(off.addr, "POST", "/api/signup", &[], Some(br#"{"name":"me"}"#));
    assert_eq!(r.status, 404, "{}", r.text());
    drop(off);

    let gw = gateway("[signup]\nenabled = true\nmax_per_ip_per_hour = 2\n");
    let top = account(&gw, "top", None);
    let code = top["referral_code"].as_str().unwrap();
    let signup = |body: Value| http(gw.addr, "POST", "/api/signup", &[], Some(body.to_string().as_bytes()));
    // A wrong code is a 400 and uses up nothing.
    let bad = signup(json!({ "name": "me", "referral_code": "wrong" }));
    assert_eq!((bad.status, bad.json()["error"]["param"].as_str()), (400, Some("referral_code")));
    let made = signup(json!({ "name": "me", "referral_code": code }));
    assert_eq!(made.status, 201, "{}", made.text());
    let me = made.json();
    assert_eq!(me["referrer_id"], top["id"]);
    let token = me["token"].as_str().unwrap();
    assert_eq!(gw.api(token, "GET", "/api/account", None).json()["id"], me["id"]);
    assert_eq!(gw.api(token, "GET", "/api/balance", None).json()["balance_ngonka"], "0");
    // Its paid credit pays the account whose code it signed up with.
    credit(&gw, &me, json!({ "amount_ngonka": "5000", "reference": "first", "paid": true }));
    assert_eq!(balance_of(&gw, &top), 500);
    assert_eq!(signup(json!({ "name": "second" })).status, 201);
    let third = signup(json!({ "name": "third" }));
    assert_eq!((third.status, third.json()["error"]["code"].as_str()), (429, Some("rate_limit_exceeded")));
    assert!(third.header("retry-after").unwrap().parse::<u32>().unwrap() >= 1);
}

/// A fresh schema name for two instances to share.
fn schema() -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    format!("rf_{}_{nanos}", std::process::id())
}

const PG_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

#[test]
fn two_instances_sent_the_same_paid_credit_pay_the_referrers_once() {
    require_postgres(PG_URL);
    let schema = schema();
    let start = |id: &str| {
        gateway(&format!(
            "[store]\nkind = \"postgres\"\nurl = \"{PG_URL}\"\nschema = \"{schema}\"\n[cluster]\ninstance_id = \"{id}\"\ninstances = 2\n"
        ))
    };
    let a = start("a");
    let b = start("b");
    let [top, mid, new] = chain(&a);
    let body = json!({ "amount_ngonka": (100 * GNK).to_string(), "reference": "tx-1", "paid": true });
    let path = format!("/admin/accounts/{}/credits", new["id"].as_str().unwrap());
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let answers: Vec<Value> = std::thread::scope(|s| {
        let sends: Vec<_> = [a.admin_addr, b.admin_addr, a.admin_addr, b.admin_addr]
            .into_iter()
            .map(|addr| {
                let (path, auth, body) = (&path, &auth, body.to_string());
                s.spawn(move || {
                    http(addr, "POST", path, &[("Authorization", auth)], Some(body.as_bytes())).json()
                })
            })
            .collect();
        sends.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(answers.iter().filter(|v| v["credited"] == true).count(), 1, "{answers:?}");
    for gw in [&a, &b] {
        assert_eq!([balance_of(gw, &mid), balance_of(gw, &top)], [10 * GNK, 3 * GNK]);
    }
    let refund =
        json!({ "amount_ngonka": (-40 * GNK).to_string(), "reference": "rf-1", "refund_of": "tx-1" });
    assert_eq!(credit(&b, &new, refund.clone()).json()["credited"], true);
    assert_eq!(credit(&a, &new, refund).json()["credited"], false);
    assert_eq!(
        [balance_of(&a, &new), balance_of(&a, &mid), balance_of(&a, &top)],
        [60 * GNK, 6 * GNK, 1_800_000_000]
    );
    let h = history(&b, &top, "");
    assert_eq!(h["data"].as_array().unwrap().len(), 2);
    drop((a, b));
    if let Ok(mut client) = postgres::Client::connect(PG_URL, postgres::NoTls) {
        let _ = client.batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"));
    }
}
