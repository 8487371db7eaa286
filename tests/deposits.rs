//! GNK deposits end to end, real binaries over TCP: a gateway with `[deposits]` watching the chain of
//! `gonka-gateway sim`, and transfers to an account's deposit address signed by the gateway's own chain
//! client (`gonka::chain::ChainClient`) or by cosmpy. A deposit is credited once after its
//! confirmations, not before, also across a restart and with two instances watching (PostgreSQL +
//! Redis); one dropped before its confirmations (never included, or reorganised away) credits nothing;
//! deposits below the minimum are held until they add up.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods,
    reason = "tests fail loudly and block freely on their own threads"
)]

mod utils;

use gonka_gateway::gonka::chain::ChainClient;
use gonka_gateway::gonka::signer::GonkaSigner;
use gonka_gateway::http::tls::ClientTls;
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use utils::*;

/// The treasury of `[chain]` (no direct keys here: it never sends).
const TREASURY_KEY: &str = "4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318";
const DEPOSIT_KEY: &str = "9d2f0c1be4a35687f0e1d2c3b4a5968778695a4b3c2d1e0f1f2e3d4c5b6a7988";
/// Funded at genesis: the depositor of the Rust tests, and cosmpy's.
const PAYER_KEY: &str = "3131313131313131313131313131313131313131313131313131313131313131";
const COSMPY_KEY: &str = "3232323232323232323232323232323232323232323232323232323232323232";

fn payer() -> GonkaSigner {
    GonkaSigner::from_hex(PAYER_KEY).unwrap()
}

fn sim_with_chain(block_ms: u64) -> Sim {
    let fund = |k: &str| format!("{}=1000000000000", GonkaSigner::from_hex(k).unwrap().address());
    let (a, b) = (fund(PAYER_KEY), fund(COSMPY_KEY));
    let block_ms = block_ms.to_string();
    Sim::start(&["--chain-block-ms", &block_ms, "--chain-fund", &a, "--chain-fund", &b])
}

fn rest_url(sim: &Sim) -> String {
    format!("{}/chain-api", sim.root(0))
}

fn chain_client(sim: &Sim) -> ChainClient {
    ChainClient::new(
        &rest_url(sim),
        "gonka-mainnet",
        "ngonka",
        ClientTls::new(false, None).unwrap(),
        Duration::from_secs(5),
    )
    .unwrap()
}

/// `[chain]` and `[deposits]` (scanning from block 1) with `extra` deposit options.
fn deposits_toml(sim: &Sim, extra: &str) -> String {
    format!(
        "[chain]\nenabled = true\nrest_url = \"{}\"\nfee_ngonka = 10\npoll_ms = 100\ntimeout_ms = 2000\n\
         [deposits]\nenabled = true\nstart_height = 1\n{extra}\n",
        rest_url(sim)
    )
}

fn envs() -> Vec<(&'static str, String)> {
    vec![("GONKA_TREASURY_KEY", TREASURY_KEY.to_owned()), ("GONKA_DEPOSIT_KEY", DEPOSIT_KEY.to_owned())]
}

fn gateway(sim: &Sim, extra: &str) -> Gateway {
    Gateway::start_with(GatewayOpts {
        extra: deposits_toml(sim, extra),
        envs: envs(),
        ..GatewayOpts::default()
    })
}

/// A new account with nothing on it: its id, token and deposit address.
fn depositor(gw: &impl GatewayApi) -> (String, String, String) {
    let (id, token) = gw.create_account("depositor");
    let r = gw.api(&token, "GET", "/api/deposit-address", None);
    assert_eq!(r.status, 200, "{}", r.text());
    let address = r.json()["address"].as_str().unwrap().to_owned();
    (id, token, address)
}

/// Broadcasts `amount` ngonka from the payer to `to`, signed by the gateway's chain client: the tx hash.
fn broadcast(chain: &ChainClient, to: &str, amount: u128) -> String {
    let p = payer();
    let info = chain.account(p.address()).unwrap().unwrap();
    chain.send(&p, info.account_number, info.sequence, to, amount, 10, 200_000, "deposit").unwrap()
}

/// [`broadcast`], then waits for its block (so the payer's next transfer has the next sequence).
fn send(chain: &ChainClient, to: &str, amount: u128) -> String {
    let hash = broadcast(chain, to, amount);
    assert!(
        eventually(Duration::from_secs(10), || chain.tx(&hash).unwrap().is_some()),
        "{hash} not included"
    );
    hash
}

fn sim_control(sim: &Sim, body: Value) -> Value {
    let r = http(sim.addr(0), "POST", "/sim/chain", &[], Some(body.to_string().as_bytes()));
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

fn deposits(gw: &impl GatewayApi, token: &str) -> Vec<Value> {
    let r = gw.api(token, "GET", "/api/deposits", None);
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["data"].as_array().unwrap().clone()
}

fn deposit(gw: &impl GatewayApi, token: &str, tx_hash: &str) -> Option<Value> {
    deposits(gw, token).into_iter().find(|d| d["tx_hash"] == tx_hash)
}

/// Waits until the deposit `tx_hash` has `status`; the deposit then.
fn wait_status(gw: &impl GatewayApi, token: &str, tx_hash: &str, status: &str, timeout: Duration) -> Value {
    let mut last = None;
    let ok = eventually(timeout, || {
        last = deposit(gw, token, tx_hash);
        last.as_ref().is_some_and(|d| d["status"] == status)
    });
    assert!(ok, "{tx_hash} never {status}: {last:?}");
    last.unwrap()
}

#[test]
fn deposit_routes_answer_404_naming_the_option_while_deposits_are_off() {
    let gw = Gateway::start(&[]);
    for path in ["/api/deposit-address", "/api/deposits"] {
        let r = gw.api(&gw.account_token, "GET", path, None);
        assert_eq!(r.status, 404, "{}", r.text());
        assert!(r.json()["error"]["message"].as_str().unwrap().contains("[deposits] enabled = true"));
    }
    assert_eq!(gw.admin("GET", "/admin/deposits", None).status, 404);
    let account = gw.admin("GET", &format!("/admin/accounts/{}", gw.account_id), None).json();
    assert_eq!(account["deposit_address"], Value::Null);
}

#[test]
fn a_transfer_to_the_deposit_address_is_credited_once_after_its_confirmations() {
    let sim = sim_with_chain(250);
    let gw = gateway(&sim, "confirmations = 3");
    let chain = chain_client(&sim);
    let (id, token, address) = depositor(&gw);
    assert!(address.starts_with("gonka1"));
    let terms = gw.api(&token, "GET", "/api/deposit-address", None).json();
    assert_eq!(terms["object"], "deposit_address");
    assert_eq!((terms["denom"].as_str(), terms["confirmations"].as_u64()), (Some("ngonka"), Some(3)));
    assert_eq!((terms["rate_ppm"].as_u64(), terms["fee_bps"].as_u64()), (Some(1_000_000), Some(0)));
    // The same address wherever it is shown: the admin API, the CLI; another account has another one.
    let admin = gw.admin("GET", &format!("/admin/accounts/{id}"), None).json();
    assert_eq!(admin["deposit_address"], address.as_str());
    assert_eq!(gw.admin_cli(&["accounts", "get", &id])["deposit_address"], address.as_str());
    let (_, other_token, other_address) = depositor(&gw);
    assert_ne!(other_address, address);

    let hash = send(&chain, &address, 5_000_000);
    // Seen in its block, not yet credited.
    let mut seen_early = false;
    let ok = eventually(Duration::from_secs(10), || {
        let Some(d) = deposit(&gw, &token, &hash) else { return false };
        if d["status"] == "pending" && d["confirmations"].as_u64().unwrap() < 3 {
            assert_eq!(gw.balance(&id), 0, "credited before its confirmations: {d}");
            seen_early = true;
        }
        d["status"] == "credited"
    });
    assert!(ok, "never credited: {:?}\n{}", deposit(&gw, &token, &hash), gw.proc.stderr());
    assert!(seen_early, "the deposit was never seen pending");
    let d = deposit(&gw, &token, &hash).unwrap();
    let included = chain.tx(&hash).unwrap().unwrap();
    assert_eq!(
        (d["height"].as_u64(), d["address"].as_str()),
        (Some(included.height), Some(address.as_str()))
    );
    assert_eq!(
        (d["amount_ngonka"].as_str(), d["credit_ngonka"].as_str()),
        (Some("5000000"), Some("5000000"))
    );
    assert_eq!((d["credit_reference"].as_str(), d["confirmations"].as_u64()), (Some(hash.as_str()), Some(3)));
    assert!(d["credited_at"].is_string());
    assert_eq!(gw.balance(&id), 5_000_000);
    // The credit's reference is the tx hash: the same credit again is a retry that credits nothing.
    assert_eq!(gw.credit(&id, 5_000_000, &hash)["credited"], false);
    // More blocks pass: still credited once.
    let h = chain.latest_height().unwrap();
    assert!(eventually(Duration::from_secs(10), || chain.latest_height().unwrap() >= h + 4));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(gw.balance(&id), 5_000_000);
    assert_eq!(deposits(&gw, &token).len(), 1);
    // Every account sees its own only; the admin sees both lists.
    assert!(deposits(&gw, &other_token).is_empty());
    let all = gw.admin("GET", "/admin/deposits", None).json();
    assert_eq!(all["data"][0]["account_id"], id.as_str());
    let of_account = gw.admin("GET", &format!("/admin/accounts/{id}/deposits"), None).json();
    assert_eq!(of_account["data"][0]["tx_hash"], hash.as_str());
    assert_eq!(gw.admin_cli(&["accounts", "deposits", &id])["data"][0]["tx_hash"], hash.as_str());
}

#[test]
fn a_restart_between_inclusion_and_confirmations_credits_once_and_misses_nothing() {
    let sim = sim_with_chain(200);
    let mut gw = gateway(&sim, "confirmations = 6");
    let chain = chain_client(&sim);
    let (id, token, address) = depositor(&gw);
    let first = send(&chain, &address, 1_000);
    wait_status(&gw, &token, &first, "pending", Duration::from_secs(10));
    assert_eq!(gw.balance(&id), 0);
    // Killed; a second deposit is made and included while it is down; then it starts again.
    gw.proc.signal("KILL");
    gw.proc.wait_exit(Duration::from_secs(10)).unwrap();
    let second = send(&chain, &address, 2_000);
    gw.restart();
    wait_status(&gw, &token, &first, "credited", Duration::from_secs(15));
    wait_status(&gw, &token, &second, "credited", Duration::from_secs(15));
    assert_eq!(gw.balance(&id), 3_000);
    // And again, after both were credited: nothing is credited twice.
    gw.restart();
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(gw.balance(&id), 3_000);
    assert_eq!(deposits(&gw, &token).len(), 2);
}

#[test]
fn a_transaction_that_never_reaches_a_block_credits_nothing() {
    // Slow blocks: the transfer is still in the mempool when the test makes it disappear.
    let sim = sim_with_chain(1_500);
    let gw = gateway(&sim, "confirmations = 1");
    let chain = chain_client(&sim);
    let (id, token, address) = depositor(&gw);
    let h = chain.latest_height().unwrap();
    assert!(eventually(Duration::from_secs(5), || chain.latest_height().unwrap() > h), "just after a block");
    let hash = broadcast(&chain, &address, 7_000);
    assert_eq!(sim_control(&sim, json!({"forget_pending": true}))["forgotten"], 1);
    let later = chain.latest_height().unwrap() + 3;
    assert!(eventually(Duration::from_secs(10), || chain.latest_height().unwrap() >= later));
    std::thread::sleep(Duration::from_millis(300));
    assert!(chain.tx(&hash).unwrap().is_none());
    assert!(deposit(&gw, &token, &hash).is_none());
    assert_eq!(gw.balance(&id), 0);
}

#[test]
fn a_deposit_reorganised_away_before_its_confirmations_is_dropped_and_never_credited() {
    let sim = sim_with_chain(200);
    let gw = gateway(&sim, "confirmations = 8");
    let chain = chain_client(&sim);
    let (id, token, address) = depositor(&gw);
    let hash = send(&chain, &address, 9_000);
    let d = wait_status(&gw, &token, &hash, "pending", Duration::from_secs(10));
    let height = d["height"].as_u64().unwrap();
    let depth = chain.latest_height().unwrap() - height + 1;
    let r = sim_control(&sim, json!({ "reorg": depth }));
    assert!(r["reorganised"].as_array().unwrap().contains(&json!(hash)), "{r}");
    assert!(chain.tx(&hash).unwrap().is_none(), "the chain no longer has it");
    assert_eq!(chain.balance(&address).unwrap(), 0);
    wait_status(&gw, &token, &hash, "dropped", Duration::from_secs(10));
    // Well past the confirmations it would have had: nothing credited.
    let later = height + 8 + 3;
    assert!(eventually(Duration::from_secs(10), || chain.latest_height().unwrap() >= later));
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(deposit(&gw, &token, &hash).unwrap()["status"], "dropped");
    assert_eq!(gw.balance(&id), 0);
    // The watcher goes on: a deposit after the reorganisation is credited.
    let after = send(&chain, &address, 1_234);
    wait_status(&gw, &token, &after, "credited", Duration::from_secs(15));
    assert_eq!(gw.balance(&id), 1_234);
}

#[test]
fn deposits_below_the_minimum_are_held_until_they_add_up_then_credited_together() {
    let sim = sim_with_chain(150);
    // 2 ngonka credited per ngonka received, less 2.5%.
    let gw = gateway(&sim, "confirmations = 1\nmin_ngonka = 1000\nrate_ppm = 2000000\nfee_bps = 250");
    let chain = chain_client(&sim);
    let (id, token, address) = depositor(&gw);
    let a = send(&chain, &address, 400);
    wait_status(&gw, &token, &a, "held", Duration::from_secs(10));
    let b = send(&chain, &address, 500);
    wait_status(&gw, &token, &b, "held", Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(gw.balance(&id), 0, "900 received: below the minimum");
    let c = send(&chain, &address, 300);
    wait_status(&gw, &token, &c, "credited", Duration::from_secs(10));
    // 400 → 800 less 20; 500 → 1000 less 25; 300 → 600 less 15.
    assert_eq!(gw.balance(&id), 780 + 975 + 585);
    for (hash, credit) in [(&a, "780"), (&b, "975"), (&c, "585")] {
        let d = deposit(&gw, &token, hash).unwrap();
        assert_eq!((d["status"].as_str(), d["credit_ngonka"].as_str()), (Some("credited"), Some(credit)));
        assert_eq!(d["credit_reference"], c.as_str(), "one credit, named by the last deposit's hash");
    }
}

#[test]
fn a_deposit_whose_hash_another_credit_took_is_not_credited_again_and_is_warned_about_once() {
    let sim = sim_with_chain(150);
    let gw = gateway(&sim, "confirmations = 4");
    let chain = chain_client(&sim);
    let (id, token, address) = depositor(&gw);
    let hash = send(&chain, &address, 8_000);
    // An operator's credit under that reference first, of another amount.
    gw.credit(&id, 1, &hash);
    wait_status(&gw, &token, &hash, "crediting", Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(gw.balance(&id), 1, "the reference credits once");
    assert_eq!(deposit(&gw, &token, &hash).unwrap()["status"], "crediting", "left for the operator to see");
    let warned = gw.proc.stderr().matches(&format!("deposit claim {hash}")).count();
    assert_eq!(warned, 1, "{}", gw.proc.stderr());
}

#[test]
fn a_deposit_signed_by_cosmpy_is_credited() {
    let sim = sim_with_chain(100);
    let gw = gateway(&sim, "confirmations = 2");
    let (id, token, address) = depositor(&gw);
    let out = run_python(
        "deposit_cosmpy.py",
        &[
            ("CHAIN_REST_URL", rest_url(&sim)),
            ("CHAIN_ID", "gonka-mainnet".to_owned()),
            ("COSMPY_KEY_HEX", COSMPY_KEY.to_owned()),
            ("DEPOSIT_ADDRESS", address.clone()),
            ("AMOUNT", "4242".to_owned()),
        ],
    );
    assert!(out.contains("OK"), "{out}");
    let hash = out.lines().find_map(|l| l.strip_prefix("TX_HASH=")).unwrap().to_owned();
    let d = wait_status(&gw, &token, &hash, "credited", Duration::from_secs(15));
    assert_eq!(d["amount_ngonka"], "4242");
    assert_eq!(gw.balance(&id), 4242);
}

#[test]
fn the_dashboards_show_the_deposit_address_and_the_deposits_in_chromium() {
    let sim = sim_with_chain(100);
    let gw = gateway(&sim, "confirmations = 1");
    let (_, token, address) = depositor(&gw);
    let hash = send(&chain_client(&sim), &address, 3_000);
    wait_status(&gw, &token, &hash, "credited", Duration::from_secs(10));
    let out = run_browser_script(
        "deposits.mjs",
        &[
            ("GATEWAY_URL", format!("http://{}", gw.addr)),
            ("ADMIN_URL", format!("http://{}", gw.admin_addr)),
            ("ACCOUNT_TOKEN", token),
            ("ADMIN_TOKEN", gw.admin_token.clone()),
            ("DEPOSIT_ADDRESS", address),
            ("TX_HASH", hash),
        ],
    );
    let report: Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    let pages: Vec<&str> =
        report["pages"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(pages, ["account-overview-deposits", "admin-accounts-deposits"], "{out}");
}

/// The PostgreSQL and Redis of the cluster tests.
const PG_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// A gateway instance of a two-instance deployment on one PostgreSQL schema with Redis leases.
struct Instance {
    proc: Proc,
    public: std::net::SocketAddr,
    admin: std::net::SocketAddr,
    _dir: tempfile::TempDir,
}

impl GatewayApi for Instance {
    fn public(&self) -> std::net::SocketAddr {
        self.public
    }
    fn admin_address(&self) -> std::net::SocketAddr {
        self.admin
    }
}

fn instance(sim: &Sim, schema: &str, id: &str) -> Instance {
    with_free_ports(2, |p| {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("gateway.toml");
        std::fs::write(
            &config,
            format!(
                "workers = 2\ndata_dir = \"{data}\"\n[server]\nlisten = \"127.0.0.1:{}\"\n[admin]\n\
                 listen = \"127.0.0.1:{}\"\ntoken_env = \"TEST_ADMIN_TOKEN\"\n[store]\nkind = \"postgres\"\n\
                 url = \"{PG_URL}\"\nschema = \"{schema}\"\n[cluster]\ninstance_id = \"{id}\"\ninstances = 2\n\
                 [limits]\nredis_url = \"redis://127.0.0.1:6379/\"\n{}",
                p[0],
                p[1],
                // Direct keys on one instance only, as a cluster runs them; both watch for deposits.
                deposits_toml(sim, "confirmations = 3")
                    .replace("[chain]\nenabled = true\n", &format!("[chain]\nenabled = true\ndirect_keys = {}\n", id == "a")),
                data = dir.path().join("data").display(),
            ),
        )
        .unwrap();
        let mut all = vec![
            ("TEST_ADMIN_TOKEN", ADMIN_TOKEN.to_owned()),
            ("GATEWAY_KEY_SECRET", "deposits-two-instances-key-secret-0123456789".to_owned()),
        ];
        all.extend(envs());
        let all: Vec<(&str, &str)> = all.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let mut proc = Proc::spawn(&["serve", "--config", config.to_str().unwrap()], dir.path(), &all);
        let public = proc.try_wait_line("GATEWAY_LISTEN=")?.parse().unwrap();
        let admin = proc.try_wait_line("GATEWAY_ADMIN_LISTEN=")?.parse().unwrap();
        Ok(Instance { proc, public, admin, _dir: dir })
    })
}

struct DropSchema(String);

impl Drop for DropSchema {
    fn drop(&mut self) {
        if let Ok(mut c) = postgres::Client::connect(PG_URL, postgres::NoTls) {
            let _ = c.batch_execute(&format!("DROP SCHEMA IF EXISTS \"{}\" CASCADE", self.0));
        }
        if let Ok(mut r) = redis::Client::open("redis://127.0.0.1:6379/").and_then(|c| c.get_connection()) {
            let keys: Vec<String> =
                redis::cmd("KEYS").arg(format!("gw:{}:*", self.0)).query(&mut r).unwrap_or_default();
            if !keys.is_empty() {
                let _: redis::RedisResult<()> = redis::cmd("DEL").arg(keys).query(&mut r);
            }
        }
    }
}

#[test]
fn with_two_instances_watching_every_deposit_is_credited_once() {
    require_postgres(PG_URL);
    require_redis();
    let schema = format!(
        "dep_{}_{}",
        std::process::id(),
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos()
    );
    let _cleanup = DropSchema(schema.clone());
    let sim = sim_with_chain(150);
    let chain = chain_client(&sim);
    let mut a = instance(&sim, &schema, "a");
    let b = instance(&sim, &schema, "b");
    let (id, token, address) = depositor(&a);
    // The account's token reaches b through the change feed (within a second, as every key does).
    assert!(
        eventually(Duration::from_secs(5), || b.api(&token, "GET", "/api/direct-keys", None).status != 401),
        "b never learned the account token"
    );
    assert_eq!(b.api(&token, "GET", "/api/direct-keys", None).status, 404, "no direct keys on b");
    assert_eq!(a.api(&token, "GET", "/api/direct-keys", None).status, 200);
    // Both instances show the one address, derived from the one deposit key.
    assert_eq!(b.api(&token, "GET", "/api/deposit-address", None).json()["address"], address.as_str());
    let mut hashes = Vec::new();
    for amount in [1_000u128, 2_000, 3_000, 4_000] {
        hashes.push(send(&chain, &address, amount));
    }
    for h in &hashes {
        wait_status(&a, &token, h, "credited", Duration::from_secs(20));
    }
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(1) {
        assert_eq!(a.balance(&id), 10_000);
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(b.balance(&id), 10_000);
    assert_eq!(deposits(&b, &token).len(), 4);
    // One credit per deposit in the store, whichever instance made it.
    let mut pg = postgres::Client::connect(PG_URL, postgres::NoTls).unwrap();
    let credits: i64 = pg
        .query_one(&format!("SELECT COUNT(*) FROM \"{schema}\".credits WHERE account_id = $1"), &[&id])
        .unwrap()
        .get(0);
    assert_eq!(credits, 4);
    // b watches on its own too: with a gone, the next deposit is credited all the same.
    a.proc.signal("KILL");
    a.proc.wait_exit(Duration::from_secs(10)).unwrap();
    let last = send(&chain, &address, 5_000);
    wait_status(&b, &token, &last, "credited", Duration::from_secs(20));
    assert_eq!(b.balance(&id), 15_000);
}

#[test]
fn a_deposit_to_a_referred_account_is_in_its_credit_history_and_pays_its_referrers_once() {
    let sim = sim_with_chain(200);
    let gw = gateway(&sim, "confirmations = 1");
    let chain = chain_client(&sim);
    let top = gw.create_referred_account("top", None);
    let mid = gw.create_referred_account("mid", top["referral_code"].as_str());
    let new = gw.create_referred_account("new", mid["referral_code"].as_str());
    let id = |a: &Value| a["id"].as_str().unwrap().to_owned();
    let token = new["token"].as_str().unwrap();
    let address =
        gw.api(token, "GET", "/api/deposit-address", None).json()["address"].as_str().unwrap().to_owned();

    let hash = send(&chain, &address, 100_000_000_000);
    wait_status(&gw, token, &hash, "credited", Duration::from_secs(20));
    assert_eq!(gw.balance(&id(&new)), 100_000_000_000);
    // 10 % to the referrer, 3 % to the referrer's referrer, as referral credits sourced by the deposit.
    assert!(eventually(Duration::from_secs(5), || gw.balance(&id(&mid)) == 10_000_000_000));
    assert_eq!(gw.balance(&id(&top)), 3_000_000_000);
    let history = gw.api(token, "GET", "/api/credits", None).json();
    let entry = &history["data"][0];
    assert_eq!(
        (entry["kind"].as_str(), entry["reference"].as_str(), entry["paid"].as_bool()),
        (Some("deposit"), Some(hash.as_str()), Some(true)),
        "{history}"
    );
    let mid_history = gw.admin("GET", &format!("/admin/accounts/{}/credits", id(&mid)), None).json();
    let referral = &mid_history["data"][0];
    assert_eq!(
        (referral["kind"].as_str(), referral["source_reference"].as_str()),
        (Some("referral"), Some(hash.as_str())),
        "{mid_history}"
    );
    // More blocks: nothing is paid twice.
    let h = chain.latest_height().unwrap();
    assert!(eventually(Duration::from_secs(10), || chain.latest_height().unwrap() >= h + 3));
    std::thread::sleep(Duration::from_millis(300));
    let balances = [gw.balance(&id(&new)), gw.balance(&id(&mid)), gw.balance(&id(&top))];
    assert_eq!(balances, [100_000_000_000, 10_000_000_000, 3_000_000_000]);
}
