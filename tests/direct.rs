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
    let admin = |args: &[&str]| gw.admin_cli(args);
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

/// Runs the official SDK with a direct key against `endpoints`: `n` chats, one JSON outcome each.
fn sdk(endpoints: &str, private_key: &str, n: usize, tag: &str) -> Vec<Value> {
    let out = run_python_args(
        "direct_keys.py",
        &[&n.to_string()],
        &[
            ("GONKA_PRIVATE_KEY", private_key.to_owned()),
            ("GONKA_ENDPOINTS", endpoints.to_owned()),
            ("MODEL", MODEL.to_owned()),
            ("TAG", tag.to_owned()),
            ("MAX_TOKENS", "20".to_owned()),
        ],
    );
    out.lines().filter(|l| l.starts_with('{')).map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// The account's `(balance_ngonka, held_ngonka)` from `GET /api/balance`.
fn balance(addr: std::net::SocketAddr, account_token: &str) -> (i64, i64) {
    let auth = format!("Bearer {account_token}");
    let b = http(addr, "GET", "/api/balance", &[("Authorization", &auth)], None).json();
    let n = |f: &str| b[f].as_str().unwrap().parse::<i64>().unwrap();
    (n("balance_ngonka"), n("held_ngonka"))
}

/// The simulator with its chain (the treasury funded at genesis), a plain node for managed keys, and a
/// gateway whose `[chain]` is the simulator's `/chain-api`.
struct ChainSetup {
    sim: Sim,
    plain: Sim,
    gw: Gateway,
    chain: gonka_gateway::gonka::chain::ChainClient,
}

const FLOAT: u64 = 1_000_000;

impl ChainSetup {
    fn start(credit_ngonka: u64, price: &str) -> ChainSetup {
        Self::start_with_blocks(credit_ngonka, price, "100")
    }

    fn start_with_blocks(credit_ngonka: u64, price: &str, block_ms: &str) -> ChainSetup {
        Self::start_with_sim(credit_ngonka, price, block_ms, &[])
    }

    fn start_with_sim(credit_ngonka: u64, price: &str, block_ms: &str, sim_args: &[&str]) -> ChainSetup {
        let treasury = gonka_gateway::gonka::signer::GonkaSigner::from_hex(TREASURY_KEY).unwrap();
        let fund = format!("{}=1000000000000", treasury.address());
        let mut args =
            vec!["--gonka", "--chain-block-ms", block_ms, "--chain-price", price, "--chain-fund", &fund];
        args.extend_from_slice(sim_args);
        let sim = Sim::start(&args);
        let plain = Sim::start(&[]);
        let rest = format!("{}/chain-api", sim.root(0));
        let gw = Gateway::start_with(GatewayOpts {
            node_urls: plain.urls.clone(),
            extra: chain_toml(&rest, 100),
            envs: vec![("GONKA_TREASURY_KEY", TREASURY_KEY.to_owned())],
            credit_ngonka,
            ..GatewayOpts::default()
        });
        let chain = gonka_gateway::gonka::chain::ChainClient::new(
            &rest,
            "gonka-mainnet",
            "ngonka",
            gonka_gateway::http::tls::ClientTls::new(false, None).unwrap(),
            Duration::from_secs(5),
        )
        .unwrap();
        ChainSetup { sim, plain, gw, chain }
    }

    fn key(&self, id: &str) -> Value {
        let r = self.gw.api(&self.gw.account_token, "GET", &format!("/api/direct-keys/{id}"), None);
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()
    }

    /// Waits until the key is settled: nothing pending, its float as given, published.
    fn wait_float(&self, id: &str, float: u64) -> Value {
        let mut last = Value::Null;
        let ok = eventually(Duration::from_secs(20), || {
            last = self.key(id);
            last["pending"].is_null()
                && last["float_ngonka"] == json!(float.to_string())
                && last["published"] == true
        });
        assert!(ok, "float {float} never reached: {last}\n{}", self.gw.proc.stderr());
        last
    }

    fn on_chain(&self, address: &str) -> u64 {
        u64::try_from(self.chain.balance(address).unwrap()).unwrap()
    }

    /// What the simulated node was paid by signed inference: its transfer address's balance.
    fn node_charged(&self) -> u64 {
        self.on_chain(&self.sim.addresses[0])
    }

    /// The SDK's `GONKA_ENDPOINTS`: the simulated node and its transfer address.
    fn endpoints(&self) -> String {
        format!("{};{}", self.sim.urls[0], self.sim.addresses[0])
    }

    fn sdk(&self, private_key: &str, n: usize, tag: &str) -> Vec<Value> {
        sdk(&self.endpoints(), private_key, n, tag)
    }

    fn balance(&self) -> (i64, i64) {
        balance(self.gw.addr, &self.gw.account_token)
    }

    fn direct_usage(&self) -> u64 {
        let records = self.gw.usage_records(&self.gw.account_id);
        records
            .iter()
            .filter(|r| r["status"] == "direct")
            .map(|r| r["cost_ngonka"].as_str().unwrap().parse::<u64>().unwrap())
            .sum()
    }

    /// Waits until the gateway billed exactly what the node was paid.
    fn wait_billed(&self, charged: u64) {
        let ok = eventually(Duration::from_secs(20), || self.direct_usage() == charged);
        assert!(ok, "billed {} of {charged}\n{}", self.direct_usage(), self.gw.proc.stderr());
    }
}

#[test]
fn the_official_sdk_spends_a_direct_key_peer_to_peer_and_the_owner_is_billed_what_the_node_charged() {
    const CREDIT: u64 = 50_000_000;
    let c = ChainSetup::start(CREDIT, "100");
    let k = create_direct(&c.gw, "laptop");
    let (id, address) = (k["id"].as_str().unwrap().to_owned(), k["address"].as_str().unwrap().to_owned());
    let private_key = k["private_key"].as_str().unwrap().to_owned();
    c.wait_float(&id, FLOAT);
    assert_eq!(c.balance(), (CREDIT as i64, FLOAT as i64), "the float is held on the owner's balance");
    assert!(c.chain.account(&address).unwrap().unwrap().pub_key.is_some(), "published before first use");

    // (a) The SDK, straight to the node; the gateway bills what the node charged, exactly.
    let served_before = c.plain.stats()["nodes"][0]["requests"].clone();
    let outcomes = c.sdk(&private_key, 3, "a");
    assert!(outcomes.iter().all(|o| o["ok"] == true), "{outcomes:?}");
    assert_eq!(c.plain.stats()["nodes"][0]["requests"], served_before, "the gateway's nodes saw nothing");
    let charged = c.node_charged();
    assert!(charged > 0);
    c.wait_billed(charged);
    let records: Vec<Value> =
        c.gw.usage_records(&c.gw.account_id).into_iter().filter(|r| r["status"] == "direct").collect();
    assert!(records.iter().all(|r| r["key_id"] == id.as_str() && r["model"] == "direct"), "{records:?}");
    let charges =
        c.gw.api(&c.gw.account_token, "GET", &format!("/api/direct-keys/{id}/charges"), None).json();
    let charges = charges["data"].as_array().unwrap().clone();
    assert_eq!(charges.len(), records.len(), "one record per observed drop");
    assert!(charges.iter().all(|ch| ch["to_height"].as_u64() >= ch["from_height"].as_u64()), "{charges:?}");
    let (balance, held) = c.balance();
    assert_eq!(balance, (CREDIT - charged) as i64, "balance = credits − what the node charged");
    assert_eq!(held, c.on_chain(&address) as i64, "the hold is what is left on chain");
    assert_eq!(c.key(&id)["spent_ngonka"], charged.to_string());
    let by_key = c.gw.api(&c.gw.account_token, "GET", "/api/usage?group_by=key", None).json();
    let row = by_key["data"].as_array().unwrap().iter().find(|r| r["key_id"] == id.as_str()).unwrap().clone();
    assert_eq!(row["cost_ngonka"], charged.to_string());

    // (b) Pause: the float is swept back, the node refuses the SDK (402), nothing more is charged.
    let act =
        |verb: &str| c.gw.api(&c.gw.account_token, "POST", &format!("/api/direct-keys/{id}/{verb}"), None);
    assert_eq!(act("pause").json()["status"], "paused");
    assert!(
        eventually(Duration::from_secs(20), || {
            let k = c.key(&id);
            k["pending"].is_null() && k["float_ngonka"] == "0"
        }),
        "{}",
        c.key(&id)
    );
    assert_eq!(c.on_chain(&address), 0);
    assert_eq!(c.balance(), ((CREDIT - charged) as i64, 0), "the hold ended; nothing billed for the sweep");
    let refused = c.sdk(&private_key, 1, "b");
    assert_eq!(
        (refused[0]["ok"].clone(), refused[0]["status"].clone()),
        (json!(false), json!(402)),
        "{refused:?}"
    );
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(c.node_charged(), charged);
    assert_eq!(c.direct_usage(), charged, "charged nothing more");
    // Resume: funded again, works again.
    assert_eq!(act("resume").json()["status"], "active");
    c.wait_float(&id, FLOAT);
    assert!(c.sdk(&private_key, 1, "c")[0]["ok"] == true);
    let charged = c.node_charged();
    c.wait_billed(charged);
    // Rotate is refused; archive sweeps the float and forgets the key.
    let r = act("rotate");
    assert_eq!((r.status, r.json()["error"]["code"].clone()), (409, json!("direct_key_cannot_be_rotated")));
    assert_eq!(act("archive").json()["status"], "archived");
    assert!(eventually(Duration::from_secs(20), || c.on_chain(&address) == 0), "never swept");
    assert!(eventually(Duration::from_secs(5), || c.balance().1 == 0), "{:?}", c.balance());
    let listed = c.gw.api(&c.gw.account_token, "GET", "/api/direct-keys", None).json();
    assert_eq!(listed["data"], json!([]));
    assert_eq!(c.balance().0, (CREDIT - charged) as i64);
    assert_eq!(c.direct_usage(), charged);
}

#[test]
fn a_chain_outage_under_direct_key_traffic_stalls_no_core_bills_once_and_top_ups_resume() {
    const CREDIT: u64 = 50_000_000;
    let c = ChainSetup::start(CREDIT, "2000");
    let k = create_direct(&c.gw, "agent");
    let (id, private_key) =
        (k["id"].as_str().unwrap().to_owned(), k["private_key"].as_str().unwrap().to_owned());
    let address = k["address"].as_str().unwrap().to_owned();
    c.wait_float(&id, FLOAT);
    let control = |body: Value| {
        let r = http(c.sim.addr(0), "POST", "/sim/chain", &[], Some(body.to_string().as_bytes()));
        assert_eq!(r.status, 200, "{}", r.text());
    };
    let before_outage = c.on_chain(&address);
    control(json!({"down": true}));
    // Direct-key traffic goes on (the node serves from balances); the gateway's cores stay fast.
    let endpoints = c.endpoints();
    std::thread::scope(|s| {
        let traffic = s.spawn(|| sdk(&endpoints, &private_key, 20, "outage"));
        let auth = c.gw.auth();
        for _ in 0..20 {
            let t = Instant::now();
            assert_eq!(http(c.gw.addr, "GET", "/healthz", &[], None).status, 200);
            let r = post(c.gw.addr, "/v1/chat/completions", &auth, &chat_body("managed", 5, false));
            assert_eq!(r.status, 200, "{}", r.text());
            assert!(t.elapsed() < Duration::from_secs(2), "a core waited: {:?}", t.elapsed());
        }
        let outcomes = traffic.join().unwrap();
        assert!(outcomes.iter().filter(|o| o["ok"] == true).count() >= 1, "{outcomes:?}");
    });
    assert!(eventually(Duration::from_secs(10), || c.gw.proc.stderr().contains("retrying with back-off")));
    assert_eq!(c.key(&id)["spent_ngonka"], "0", "nothing billed while the chain cannot be read");
    control(json!({"down": false}));
    // Billed once, exactly what the node charged; the float dropped below the threshold and is topped up.
    let charged = c.node_charged();
    assert!(before_outage - charged < 500_000, "the traffic took the float below top_up_below");
    c.wait_billed(charged);
    c.wait_float(&id, FLOAT);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(c.direct_usage(), charged, "never billed twice");
    // The managed key's chats are billed to the same account, through the journal.
    let managed: u64 =
        c.gw.usage_records(&c.gw.account_id)
            .iter()
            .filter(|r| r["status"] != "direct")
            .map(|r| r["cost_ngonka"].as_str().unwrap().parse::<u64>().unwrap())
            .sum();
    assert!(managed > 0);
    assert_eq!(c.balance(), ((CREDIT - charged - managed) as i64, FLOAT as i64));
}

#[test]
fn a_dropped_top_up_is_sent_again_and_counted_once() {
    // Blocks every 1.5 s: the first top-up sits pending long enough to be made to disappear.
    let c = ChainSetup::start_with_blocks(50_000_000, "100", "1500");
    let k = create_direct(&c.gw, "dropped");
    let id = k["id"].as_str().unwrap().to_owned();
    assert!(eventually(Duration::from_secs(10), || c.key(&id)["pending"]["kind"] == "fund"));
    let r = http(c.sim.addr(0), "POST", "/sim/chain", &[], Some(br#"{"forget_pending": true}"#));
    assert_eq!(r.json()["forgotten"], 1, "{}", r.text());
    let k = c.wait_float(&id, FLOAT);
    assert!(c.gw.proc.stderr().contains("dropped, sending it again"), "{}", c.gw.proc.stderr());
    assert_eq!(k["held_ngonka"], FLOAT.to_string(), "held once");
    assert_eq!(c.balance(), (50_000_000, FLOAT as i64));
    assert_eq!(c.on_chain(k["address"].as_str().unwrap()), FLOAT, "funded once");
}

#[test]
fn several_direct_keys_of_one_account_used_at_once_never_take_its_balance_below_zero() {
    // Three floats of 1 000 000 cannot all be held from 2 500 000: the third gets what is left.
    const CREDIT: u64 = 2_500_000;
    let c = ChainSetup::start(CREDIT, "5000");
    let keys: Vec<Value> = (0..3).map(|i| create_direct(&c.gw, &format!("k{i}"))).collect();
    assert!(eventually(Duration::from_secs(30), || {
        keys.iter().all(|k| {
            let k = c.key(k["id"].as_str().unwrap());
            k["published"] == true && k["pending"].is_null()
        })
    }));
    let (_, held) = c.balance();
    assert!(held <= CREDIT as i64, "floats never pass the balance: {held}");
    let watching = std::sync::atomic::AtomicBool::new(true);
    let (endpoints, gw_addr, token) = (c.endpoints(), c.gw.addr, c.gw.account_token.clone());
    std::thread::scope(|s| {
        let watcher = s.spawn(|| {
            let mut lowest = i64::MAX;
            while watching.load(std::sync::atomic::Ordering::Relaxed) {
                lowest = lowest.min(balance(gw_addr, &token).0);
                std::thread::sleep(Duration::from_millis(20));
            }
            lowest
        });
        let users: Vec<_> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| {
                let pk = k["private_key"].as_str().unwrap().to_owned();
                let endpoints = &endpoints;
                s.spawn(move || sdk(endpoints, &pk, 40, &format!("user{i}")))
            })
            .collect();
        let outcomes: Vec<Value> = users.into_iter().flat_map(|u| u.join().unwrap()).collect();
        assert!(outcomes.iter().any(|o| o["ok"] == false && o["status"] == 402), "the floats ran out");
        let charged = c.node_charged();
        c.wait_billed(charged);
        std::thread::sleep(Duration::from_millis(500));
        watching.store(false, std::sync::atomic::Ordering::Relaxed);
        let lowest = watcher.join().unwrap();
        assert!(lowest >= 0, "the balance went below zero: {lowest}");
        let (balance, held) = c.balance();
        assert_eq!(balance, CREDIT as i64 - charged as i64);
        assert!(balance >= 0 && held >= 0 && held <= balance, "{balance} {held}");
    });
}

#[test]
fn after_a_kill_the_floats_are_held_again_and_nothing_is_billed_twice() {
    const CREDIT: u64 = 50_000_000;
    let mut c = ChainSetup::start(CREDIT, "100");
    let k = create_direct(&c.gw, "kept");
    let (id, private_key) =
        (k["id"].as_str().unwrap().to_owned(), k["private_key"].as_str().unwrap().to_owned());
    let address = k["address"].as_str().unwrap().to_owned();
    c.wait_float(&id, FLOAT);
    assert!(c.sdk(&private_key, 2, "before").iter().all(|o| o["ok"] == true));
    let charged = c.node_charged();
    c.wait_billed(charged);
    let before = c.balance();
    c.gw.restart(); // kill -9, then the same data directory
    assert_eq!(c.balance(), before, "the float is held again at start");
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(c.direct_usage(), charged, "nothing billed twice");
    assert!(c.sdk(&private_key, 2, "after").iter().all(|o| o["ok"] == true));
    let charged = c.node_charged();
    c.wait_billed(charged);
    assert_eq!(c.balance(), ((CREDIT - charged) as i64, c.on_chain(&address) as i64));
}

#[test]
fn an_escrow_seen_while_its_request_runs_is_refunded_to_the_owner() {
    // Answers take about a second (20 tokens/s): the node's escrow is on the account for several polls.
    const CREDIT: u64 = 50_000_000;
    let c = ChainSetup::start_with_sim(CREDIT, "1000", "100", &["--tokens-per-s", "20"]);
    let k = create_direct(&c.gw, "slow");
    let (id, private_key) =
        (k["id"].as_str().unwrap().to_owned(), k["private_key"].as_str().unwrap().to_owned());
    c.wait_float(&id, FLOAT);
    assert!(c.sdk(&private_key, 2, "slow").iter().all(|o| o["ok"] == true));
    let charged = c.node_charged();
    let ok = eventually(Duration::from_secs(20), || {
        c.key(&id)["spent_ngonka"] == json!(charged.to_string()) && c.balance().0 == (CREDIT - charged) as i64
    });
    assert!(ok, "{} {:?} charged {charged}\n{}", c.key(&id), c.balance(), c.gw.proc.stderr());
    assert!(c.gw.proc.stderr().contains("refunded to the owner"), "an escrow was seen mid-request");
}
