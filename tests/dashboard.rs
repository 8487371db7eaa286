//! The dashboard: its pages and sessions over HTTP (an independent client), and end to end in Debian's
//! Chromium driven by Playwright (`tests/browser/*.mjs`, installed on first use), against the real
//! binary and simulator. The browser tests write screenshots of every page at 1280 and 390 px under
//! `target/dashboard-screenshots/`.
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

fn gateway() -> (Sim, Gateway) {
    let sim = Sim::start(&["--ttft-ms", "5", "--tokens-per-s", "2000", "--completion-tokens", "8"]);
    let gw = Gateway::start(&sim.urls);
    (sim, gw)
}

/// Signs in with `token` on `addr`'s dashboard; returns the session cookie's value.
fn sign_in(addr: std::net::SocketAddr, token: &str) -> String {
    let r =
        http(addr, "POST", "/dashboard/sign-in", &[], Some(json!({ "token": token }).to_string().as_bytes()));
    assert_eq!(r.status, 200, "{}", r.text());
    let set = r.header("set-cookie").unwrap().to_owned();
    assert!(set.contains("HttpOnly") && set.contains("SameSite=Strict") && set.contains("Max-Age="), "{set}");
    let pair = set.split(';').next().unwrap();
    pair.split_once('=').unwrap().1.to_owned()
}

/// The CSRF token the dashboard's page is given for a session.
fn csrf_of(addr: std::net::SocketAddr, cookie: &str) -> String {
    let r = http(addr, "GET", "/dashboard", &[("Cookie", cookie)], None);
    assert_eq!(r.status, 200, "{}", r.text());
    let html = r.text();
    let start = html.find(r#"<meta name="csrf-token" content=""#).unwrap() + 33;
    html[start..start + 64].to_owned()
}

#[test]
fn pages_need_a_session_and_carry_the_security_headers() {
    let (_sim, gw) = gateway();
    for path in ["/dashboard", "/dashboard/keys", "/dashboard/management", "/dashboard/usage"] {
        let r = http(gw.addr, "GET", path, &[], None);
        // ureq follows the redirect to the sign-in page.
        assert_eq!(r.status, 200, "{path}");
        assert!(r.text().contains(r#"data-page="sign-in""#), "{path}: {}", r.text());
        let csp = r.header("content-security-policy").unwrap();
        assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"), "{csp}");
        assert!(!csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"), "{csp}");
        assert_eq!(r.header("cache-control"), Some("no-store"));
        assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
        assert_eq!(r.header("access-control-allow-origin"), None, "the dashboard is for its own origin only");
    }
    let js = http(gw.addr, "GET", "/dashboard/assets/dashboard.js", &[], None);
    assert_eq!((js.status, js.header("content-type")), (200, Some("text/javascript; charset=utf-8")));
    assert!(!js.text().contains("localStorage.set") && !js.text().contains("sessionStorage.set"));
    let chart = http(gw.addr, "GET", "/dashboard/assets/chart.umd.min.js", &[], None);
    assert!(chart.text().starts_with("/*!\n * Chart.js v4.6.1"));
    assert_eq!(http(gw.addr, "GET", "/dashboard/assets/../Cargo.toml", &[], None).status, 404);
    assert_eq!(http(gw.addr, "GET", "/dashboard/nothing", &[], None).status, 404);
    // Sign-up is off unless `[signup]` enables it: no page, and no link to one.
    assert_eq!(http(gw.addr, "GET", "/dashboard/sign-up", &[], None).status, 404);
    assert!(!http(gw.addr, "GET", "/dashboard/sign-in", &[], None).text().contains("sign-up"));
    assert_eq!(http(gw.addr, "DELETE", "/dashboard/keys", &[], None).status, 405);
    // The admin pages are on the admin listener only.
    let admin = http(gw.admin_addr, "GET", "/dashboard/nodes", &[], None);
    assert!(admin.text().contains(r#"data-side="admin""#), "{}", admin.text());
    assert!(!http(gw.addr, "GET", "/dashboard/nodes", &[], None).text().contains("data-side"));
}

#[test]
fn a_session_stands_for_the_account_token_until_signed_out() {
    let (_sim, gw) = gateway();
    // A wrong token, or a key that is not the account token, signs nothing in.
    for bad in ["gka-wrong", gw.api_key.as_str(), ""] {
        let r = http(
            gw.addr,
            "POST",
            "/dashboard/sign-in",
            &[],
            Some(json!({ "token": bad }).to_string().as_bytes()),
        );
        assert_eq!(r.status, 400, "{bad}: {}", r.text());
        assert_eq!(r.json()["error"]["param"], "token");
        assert!(r.header("set-cookie").is_none());
    }
    let session = sign_in(gw.addr, &gw.account_token);
    assert!(session.starts_with("gds-"), "{session}");
    let cookie = format!("gonka_session={session}");
    let csrf = csrf_of(gw.addr, &cookie);

    // Reads need only the cookie; it is not a key of the account, nor counted as one.
    let r = http(gw.addr, "GET", "/api/balance", &[("Cookie", &cookie)], None);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let listed = gw.admin("GET", &format!("/admin/accounts/{}/keys", gw.account_id), None).json();
    assert!(listed["data"].as_array().unwrap().iter().all(|k| k["kind"] != "dashboard_session"), "{listed}");

    // A write needs the session's CSRF token too, and never from another origin.
    let body = json!({"name": "via cookie"}).to_string();
    let r = http(gw.addr, "POST", "/api/keys", &[("Cookie", &cookie)], Some(body.as_bytes()));
    assert_eq!(
        (r.status, r.json()["error"]["code"].clone()),
        (403, json!("csrf_token_invalid")),
        "{}",
        r.text()
    );
    let wrong = "0".repeat(64);
    let r = http(
        gw.addr,
        "POST",
        "/api/keys",
        &[("Cookie", &cookie), ("X-CSRF-Token", &wrong)],
        Some(body.as_bytes()),
    );
    assert_eq!(r.status, 403);
    let headers =
        [("Cookie", cookie.as_str()), ("X-CSRF-Token", csrf.as_str()), ("Sec-Fetch-Site", "same-site")];
    let r = http(gw.addr, "POST", "/api/keys", &headers, Some(body.as_bytes()));
    assert_eq!(r.json()["error"]["code"], "cross_site_request");
    let headers =
        [("Cookie", cookie.as_str()), ("X-CSRF-Token", csrf.as_str()), ("Sec-Fetch-Site", "same-origin")];
    let r = http(gw.addr, "POST", "/api/keys", &headers, Some(body.as_bytes()));
    assert_eq!(r.status, 201, "{}", r.text());
    let key = r.json()["key"].as_str().unwrap().to_owned();
    assert_eq!(
        post(gw.addr, "/v1/chat/completions", &format!("Bearer {key}"), &chat_body("hi", 8, false)).status,
        200
    );
    // The session is never valid for inference.
    let r = post(gw.addr, "/v1/chat/completions", &format!("Bearer {session}"), &chat_body("hi", 8, false));
    assert_eq!((r.status, r.json()["error"]["code"].clone()), (401, json!("invalid_api_key")));
    // Nor is the admin session valid for the account API, or the account's on the admin listener.
    let r = http(
        gw.admin_addr,
        "GET",
        "/admin/accounts",
        &[("Cookie", &format!("gonka_admin_session={session}"))],
        None,
    );
    assert_eq!(r.status, 401);

    // Signing out ends it: pages send the browser back to the sign-in, the API refuses it.
    let r =
        http(gw.addr, "POST", "/dashboard/sign-out", &[("Cookie", &cookie), ("X-CSRF-Token", &csrf)], None);
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.header("set-cookie").unwrap().contains("Max-Age=0"));
    assert_eq!(http(gw.addr, "GET", "/api/balance", &[("Cookie", &cookie)], None).status, 401);
    let page = http(gw.addr, "GET", "/dashboard/keys", &[("Cookie", &cookie)], None);
    assert!(page.text().contains(r#"data-page="sign-in""#));
}

#[test]
fn rotating_the_account_token_ends_its_sessions_and_sessions_are_bounded() {
    let (_sim, gw) = gateway();
    let first = sign_in(gw.addr, &gw.account_token);
    let cookie = format!("gonka_session={first}");
    assert_eq!(http(gw.addr, "GET", "/api/keys", &[("Cookie", &cookie)], None).status, 200);
    // Signing in again and again keeps at most 20 sessions: the oldest is signed out.
    let mut last = String::new();
    for _ in 0..20 {
        last = sign_in(gw.addr, &gw.account_token);
    }
    assert_eq!(http(gw.addr, "GET", "/api/keys", &[("Cookie", &cookie)], None).status, 401, "the oldest");
    let cookie = format!("gonka_session={last}");
    assert_eq!(http(gw.addr, "GET", "/api/keys", &[("Cookie", &cookie)], None).status, 200);
    // Sessions do not count against the account's key quota either: it can still make keys.
    gw.create_key(&gw.account_token, "after many sign-ins");
    let r = gw.admin("POST", &format!("/admin/accounts/{}/token", gw.account_id), None);
    assert_eq!(r.status, 200);
    assert_eq!(
        http(gw.addr, "GET", "/api/keys", &[("Cookie", &cookie)], None).status,
        401,
        "ended with its token"
    );
}

#[test]
fn the_admin_session_stands_for_the_admin_token() {
    let (_sim, gw) = gateway();
    let r = http(gw.admin_addr, "POST", "/dashboard/sign-in", &[], Some(br#"{"token":"gadm-wrong"}"#));
    assert_eq!(r.status, 400);
    let session = sign_in(gw.admin_addr, ADMIN_TOKEN);
    assert!(session.starts_with("gas-") && !session.contains(ADMIN_TOKEN), "{session}");
    let cookie = format!("gonka_admin_session={session}");
    let csrf = csrf_of(gw.admin_addr, &cookie);
    assert_eq!(http(gw.admin_addr, "GET", "/admin/accounts", &[("Cookie", &cookie)], None).status, 200);
    assert_eq!(http(gw.admin_addr, "GET", "/metrics", &[("Cookie", &cookie)], None).status, 200);
    let nodes = http(gw.admin_addr, "GET", "/admin/nodes", &[("Cookie", &cookie)], None).json();
    assert_eq!(nodes["data"][0]["health"], "up", "{nodes}");
    let body = br#"{"name":"by cookie"}"#;
    let r = http(gw.admin_addr, "POST", "/admin/accounts", &[("Cookie", &cookie)], Some(body));
    assert_eq!(r.json()["error"]["code"], "csrf_token_invalid");
    let r = http(
        gw.admin_addr,
        "POST",
        "/admin/accounts",
        &[("Cookie", &cookie), ("X-CSRF-Token", &csrf)],
        Some(body),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    // A session cookie of the account dashboard is nothing here, and a tampered one is refused.
    let forged = session.replacen("gas-", "gas-9", 1);
    let r = http(
        gw.admin_addr,
        "GET",
        "/admin/accounts",
        &[("Cookie", &format!("gonka_admin_session={forged}"))],
        None,
    );
    assert_eq!(r.status, 401);
    let r = http(
        gw.admin_addr,
        "POST",
        "/dashboard/sign-out",
        &[("Cookie", &cookie), ("X-CSRF-Token", &csrf)],
        None,
    );
    assert_eq!(r.status, 200);
    assert_eq!(http(gw.admin_addr, "GET", "/admin/accounts", &[("Cookie", &cookie)], None).status, 401);
}

#[test]
fn dev_prints_the_dashboard_url_and_a_token_that_signs_in() {
    let dir = tempfile::tempdir().unwrap();
    let start = || {
        let (proc, ports, lines) = spawn_dev(dir.path(), &[], &["DASHBOARD_URL", "ACCOUNT_TOKEN"]);
        assert_eq!(lines["DASHBOARD_URL"], format!("http://127.0.0.1:{}/dashboard", ports[0]));
        (proc, ports, lines["ACCOUNT_TOKEN"].clone())
    };
    let (mut proc, ports, token) = start();
    let addr = format!("127.0.0.1:{}", ports[0]).parse().unwrap();
    let session = sign_in(addr, &token);
    let r = http(addr, "GET", "/api/balance", &[("Cookie", &format!("gonka_session={session}"))], None);
    assert_eq!(r.json()["balance_ngonka"], json!((1_000u64 * 1_000_000_000).to_string()));
    // A restart on the same data prints the same token, and the session survives it.
    proc.signal("TERM");
    assert!(proc.wait_exit(std::time::Duration::from_secs(10)).is_some_and(|s| s.success()));
    let (_proc, ports, again) = start();
    assert_eq!(again, token);
    let addr = format!("127.0.0.1:{}", ports[0]).parse().unwrap();
    let r = http(addr, "GET", "/api/balance", &[("Cookie", &format!("gonka_session={session}"))], None);
    assert_eq!(r.status, 200, "{}", r.text());
}

fn screenshots(report: &Value) -> Vec<String> {
    let mut shots = Vec::new();
    for p in report["pages"].as_array().unwrap() {
        for s in p["screenshots"].as_array().unwrap() {
            let path = s.as_str().unwrap().to_owned();
            let len = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            assert!(len > 5_000, "{path}: {len} bytes");
            shots.push(path);
        }
    }
    shots
}

/// The last line a browser script printed: its report.
fn report_of(stdout: &str) -> Value {
    serde_json::from_str(stdout.lines().last().unwrap_or("")).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

#[test]
fn account_dashboard_in_chromium() {
    // Direct keys on (their chain unreachable: they are listed, never funded).
    let sim = Sim::start(&["--ttft-ms", "5", "--tokens-per-s", "2000", "--completion-tokens", "8"]);
    let gw = Gateway::start_with(GatewayOpts {
        node_urls: sim.urls.clone(),
        extra: format!(
            "[chain]\nenabled = true\nrest_url = \"http://127.0.0.1:{}/chain-api\"\n[signup]\nenabled = true\n",
            free_port()
        ),
        envs: vec![(
            "GONKA_TREASURY_KEY",
            "4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318".to_owned(),
        )],
        ..GatewayOpts::default()
    });
    let out = run_browser_script(
        "account.mjs",
        &[
            ("GATEWAY_URL", format!("http://{}", gw.addr)),
            ("ACCOUNT_TOKEN", gw.account_token.clone()),
            ("MODEL", MODEL.to_owned()),
            ("ATTACKER_PORT", free_port().to_string()),
        ],
    );
    let report = report_of(&out);
    let names: Vec<&str> =
        report["pages"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    for page in [
        "account-sign-in",
        "account-sign-up",
        "account-keys",
        "account-usage",
        "account-management",
        "account-overview",
    ] {
        assert!(names.contains(&page), "{page} not checked: {names:?}");
    }
    assert_eq!(screenshots(&report).len(), 12);
    // What the browser saw, checked again from outside it.
    let old = report["secrets"]["old"].as_str().unwrap();
    let rotated = report["secrets"]["rotated"].as_str().unwrap();
    let child = report["secrets"]["child"].as_str().unwrap();
    for (key, status) in [(old, 401), (rotated, 401), (child, 403)] {
        let r = post(gw.addr, "/v1/chat/completions", &format!("Bearer {key}"), &chat_body("hi", 8, false));
        assert_eq!(r.status, status, "{}", r.text());
    }
    let cookie = format!("gonka_session={}", report["session"].as_str().unwrap());
    assert_eq!(http(gw.addr, "GET", "/api/keys", &[("Cookie", &cookie)], None).status, 401, "signed out");
    let csv = std::fs::read_to_string(report["csv"].as_str().unwrap()).unwrap();
    assert!(csv.starts_with("key,Requests,Prompt tokens,Completion tokens,cost_ngonka\n"), "{csv}");
    // Each key's row: its id and, last, its spend in ngonka, as the usage records add up.
    let mut spend = std::collections::BTreeMap::<String, u64>::new();
    for r in gw.usage_records(&gw.account_id) {
        *spend.entry(r["key_id"].as_str().unwrap().to_owned()).or_default() +=
            r["cost_ngonka"].as_str().unwrap().parse::<u64>().unwrap();
    }
    assert!(spend.len() >= 2, "{spend:?}");
    for (key, cost) in &spend {
        let line =
            csv.lines().find(|l| l.starts_with(&format!("{key},"))).unwrap_or_else(|| panic!("{key}: {csv}"));
        assert!(line.ends_with(&format!(",{cost}")), "{line} for {cost}");
    }
}

#[test]
fn admin_dashboard_in_chromium() {
    let (_sim, gw) = gateway();
    let out = run_browser_script(
        "admin.mjs",
        &[
            ("ADMIN_URL", format!("http://{}", gw.admin_addr)),
            ("ADMIN_TOKEN", ADMIN_TOKEN.to_owned()),
            ("GATEWAY_URL", format!("http://{}", gw.addr)),
            ("API_KEY", gw.api_key.clone()),
            ("MODEL", MODEL.to_owned()),
            ("ATTACKER_PORT", free_port().to_string()),
        ],
    );
    let report = report_of(&out);
    assert_eq!(screenshots(&report).len(), 10);
    let cookie = format!("gonka_admin_session={}", report["session"].as_str().unwrap());
    assert_eq!(http(gw.admin_addr, "GET", "/admin/accounts", &[("Cookie", &cookie)], None).status, 401);
    let accounts = gw.admin("GET", "/admin/accounts", None).json();
    let customer =
        accounts["data"].as_array().unwrap().iter().find(|a| a["name"] == "browser customer").unwrap();
    assert_eq!(customer["balance_ngonka"], "3500000000", "credited once, and 10 % of 10 GNK: {customer}");
    let token = report["account_token"].as_str().unwrap();
    assert_eq!(gw.api(token, "GET", "/api/balance", None).status, 200, "the token the page showed works");
}
