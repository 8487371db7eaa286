//! The simulated chain of `gonka-gateway sim`, driven over TCP by the gateway's own chain client
//! (`gonka::chain::ChainClient`): a transfer it builds is accepted and applied in a block, the refusals
//! carry the Cosmos SDK's codes and logs, the first transaction publishes the account's public key, and
//! the test control takes the chain down and makes pending transactions disappear; blocks are served by
//! height with their transactions, and a reorganisation replaces the last ones and undoes what they held. The fidelity of both
//! against an independent library (cosmpy) is `tests/python/chain_fidelity.py`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods,
    reason = "tests fail loudly and block freely on their own threads"
)]

mod utils;

use gonka_gateway::gonka::chain::{AccountInfo, ChainClient, ChainError, TxResult};
use gonka_gateway::gonka::signer::GonkaSigner;
use gonka_gateway::http::tls::ClientTls;
use serde_json::{Value, json};
use std::time::Duration;
use utils::*;

const GAS: u64 = 200_000;

fn key(n: u8) -> GonkaSigner {
    GonkaSigner::from_hex(&format!("{n:02x}").repeat(32)).unwrap()
}

fn client(sim: &Sim, path: &str) -> ChainClient {
    let url = format!("{}{path}", sim.root(0));
    ChainClient::new(
        &url,
        "gonka-mainnet",
        "ngonka",
        ClientTls::new(false, None).unwrap(),
        Duration::from_secs(5),
    )
    .unwrap()
}

fn control(sim: &Sim, body: Value) -> Value {
    let r = http(sim.addr(0), "POST", "/sim/chain", &[], Some(body.to_string().as_bytes()));
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

/// Waits for `hash` to be in a block.
fn included(chain: &ChainClient, hash: &str) -> TxResult {
    let mut found = None;
    assert!(
        eventually(Duration::from_secs(10), || {
            found = chain.tx(hash).unwrap();
            found.is_some()
        }),
        "{hash} never included"
    );
    found.unwrap()
}

fn rejected(r: Result<String, ChainError>) -> (u32, String) {
    match r {
        Err(ChainError::Rejected { code, log }) => (code, log),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn a_transfer_is_accepted_applied_and_publishes_the_public_key() {
    let (alice, bob) = (key(0x11), key(0x22));
    let fund = format!("{}=1000000", alice.address());
    let sim =
        Sim::start(&["--gonka", "--chain-fund", &fund, "--chain-block-ms", "50", "--chain-min-fee", "10"]);
    // The node's path (/chain-api) and a bare Cosmos REST root both work.
    let chain = client(&sim, "/chain-api");
    let bare = client(&sim, "");
    let before = chain.account(alice.address()).unwrap().unwrap();
    assert_eq!(before.sequence, 0);
    assert_eq!(before.pub_key, None, "no transaction yet: no public key on chain");
    assert_eq!(chain.balance(alice.address()).unwrap(), 1_000_000);
    assert_eq!(chain.account(bob.address()).unwrap(), None);
    assert_eq!(chain.balance(bob.address()).unwrap(), 0);
    let h0 = chain.latest_height().unwrap();

    let hash =
        chain.send(&alice, before.account_number, 0, bob.address(), 250_000, 10, GAS, "first").unwrap();
    assert_eq!(hash.len(), 64);
    assert!(hash.chars().all(|c| c.is_ascii_digit() || c.is_ascii_uppercase()));
    let result = included(&bare, &hash);
    assert_eq!(result.code, 0, "{}", result.raw_log);
    assert!(result.height > h0);
    assert!(chain.latest_height().unwrap() >= result.height);
    assert_eq!(chain.balance(alice.address()).unwrap(), 1_000_000 - 250_000 - 10);
    assert_eq!(bare.balance(bob.address()).unwrap(), 250_000);
    let after = chain.account(alice.address()).unwrap().unwrap();
    assert_eq!(
        after,
        AccountInfo {
            account_number: before.account_number,
            sequence: 1,
            pub_key: Some(alice.public_key().to_vec())
        }
    );
    let bob_account = chain.account(bob.address()).unwrap().unwrap();
    assert_ne!(bob_account.account_number, before.account_number, "receiving funds creates the account");
    assert_eq!(bob_account.pub_key, None);

    // Two transfers in one block: the mempool counts the first's sequence.
    let a = chain.send(&alice, after.account_number, 1, bob.address(), 1, 10, GAS, "").unwrap();
    let b = chain.send(&alice, after.account_number, 2, bob.address(), 2, 10, GAS, "").unwrap();
    assert_eq!(included(&chain, &a).code, 0);
    assert_eq!(included(&chain, &b).code, 0);
    assert_eq!(chain.balance(bob.address()).unwrap(), 250_003);
    // The same bytes again are refused (code 19): the signature covers the sequence, so a
    // rebroadcast cannot spend twice.
    let (code, _) = rejected(chain.send(&alice, after.account_number, 2, bob.address(), 2, 10, GAS, ""));
    assert_eq!(code, 19);
}

#[test]
fn refusals_carry_the_sdk_codes_and_logs() {
    let (alice, bob, carol) = (key(0x31), key(0x32), key(0x33));
    let funds = [format!("{}=1000", alice.address()), format!("{}=10", carol.address())];
    let sim = Sim::start(&[
        "--gonka",
        "--chain-fund",
        &funds[0],
        "--chain-fund",
        &funds[1],
        "--chain-block-ms",
        "50",
        "--chain-min-fee",
        "5",
    ]);
    let chain = client(&sim, "/chain-api");
    let n = chain.account(alice.address()).unwrap().unwrap().account_number;

    // Another account number (or chain id) than the account's: the signature does not verify.
    let (code, log) = rejected(chain.send(&alice, n + 40, 0, bob.address(), 1, 5, GAS, ""));
    assert_eq!(code, 4);
    assert_eq!(
        log,
        format!(
            "signature verification failed; please verify account number ({n}) and chain-id (gonka-mainnet): unauthorized"
        )
    );
    let other_chain = ChainClient::new(
        &format!("{}/chain-api", sim.root(0)),
        "gonka-testnet",
        "ngonka",
        ClientTls::new(false, None).unwrap(),
        Duration::from_secs(5),
    )
    .unwrap();
    assert_eq!(rejected(other_chain.send(&alice, n, 0, bob.address(), 1, 5, GAS, "")).0, 4);

    // A sequence that is not the account's.
    let (code, log) = rejected(chain.send(&alice, n, 2, bob.address(), 1, 5, GAS, ""));
    assert_eq!(
        (code, log.as_str()),
        (32, "account sequence mismatch, expected 0, got 2: incorrect account sequence")
    );

    // More than the spendable balance (carol has 10: a 20 transfer with its fee cannot be covered).
    let c = chain.account(carol.address()).unwrap().unwrap().account_number;
    let (code, log) = rejected(chain.send(&carol, c, 0, bob.address(), 20, 5, GAS, ""));
    assert_eq!(
        (code, log.as_str()),
        (5, "spendable balance 10ngonka is smaller than 25ngonka: insufficient funds")
    );

    // A fee under the minimum; an account the chain does not know; too little gas.
    let (code, log) = rejected(chain.send(&alice, n, 0, bob.address(), 1, 4, GAS, ""));
    assert_eq!(
        (code, log.as_str()),
        (13, "insufficient fees; got: 4ngonka required: 5ngonka: insufficient fee")
    );
    let (code, log) = rejected(chain.send(&bob, 0, 0, alice.address(), 1, 5, GAS, ""));
    assert_eq!(code, 9, "{log}");
    assert!(log.ends_with(": unknown address"), "{log}");
    assert_eq!(rejected(chain.send(&alice, n, 0, bob.address(), 1, 5, 1_000, "")).0, 11);
    // Not a transaction at all.
    let r = http(
        sim.addr(0),
        "POST",
        "/cosmos/tx/v1beta1/txs",
        &[],
        Some(json!({"tx_bytes": "//79", "mode": "BROADCAST_MODE_SYNC"}).to_string().as_bytes()),
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["tx_response"]["code"], 2, "{}", r.text());
    assert_eq!(r.json()["tx_response"]["codespace"], "sdk");

    // Nothing refused moved funds or sequences; a right one still goes through.
    assert_eq!(chain.balance(alice.address()).unwrap(), 1000);
    let hash = chain.send(&alice, n, 0, bob.address(), 1, 5, GAS, "").unwrap();
    assert_eq!(included(&chain, &hash).code, 0);
}

#[test]
fn down_answers_503_and_forgotten_transactions_never_land() {
    let (alice, bob) = (key(0x41), key(0x42));
    let fund = format!("{}=1000", alice.address());
    // Long blocks, so a transaction is still pending when it is forgotten.
    let sim = Sim::start(&["--gonka", "--chain-fund", &fund, "--chain-block-ms", "1500"]);
    let chain = client(&sim, "/chain-api");
    let n = chain.account(alice.address()).unwrap().unwrap().account_number;
    let hash = chain.send(&alice, n, 0, bob.address(), 100, 0, GAS, "").unwrap();
    let forgot = control(&sim, json!({"forget_pending": true}));
    assert_eq!(forgot["forgotten"], 1, "{forgot}");
    std::thread::sleep(Duration::from_millis(3200));
    assert_eq!(chain.tx(&hash).unwrap(), None, "a forgotten transaction is never included");
    assert_eq!(chain.balance(alice.address()).unwrap(), 1000);
    assert_eq!(chain.account(alice.address()).unwrap().unwrap().sequence, 0);

    control(&sim, json!({"down": true}));
    assert!(matches!(chain.latest_height(), Err(ChainError::Unreachable(_))));
    assert!(matches!(chain.account(alice.address()), Err(ChainError::Unreachable(_))));
    assert!(matches!(
        chain.send(&alice, n, 0, bob.address(), 1, 0, GAS, ""),
        Err(ChainError::Unreachable(_))
    ));
    let r = http(sim.addr(0), "GET", "/cosmos/base/tendermint/v1beta1/blocks/latest", &[], None);
    assert_eq!(r.status, 503);
    // Funding works while it is down (the test control is not the chain's REST).
    let funded = control(&sim, json!({"fund": {"address": bob.address(), "amount": "77"}}));
    assert_eq!(funded["balance"], "77");
    control(&sim, json!({"down": false}));
    assert_eq!(chain.balance(bob.address()).unwrap(), 77);
    let hash = chain.send(&alice, n, 0, bob.address(), 3, 0, GAS, "").unwrap();
    assert_eq!(included(&chain, &hash).code, 0);
    assert_eq!(chain.balance(bob.address()).unwrap(), 80);
}

/// Publishes `who`'s public key with its first transaction (1 ngonka to `to`), and waits for the block.
fn publish(chain: &ChainClient, who: &GonkaSigner, to: &str) {
    let n = chain.account(who.address()).unwrap().unwrap().account_number;
    let hash = chain.send(who, n, 0, to, 1, 0, GAS, "publish").unwrap();
    assert_eq!(included(chain, &hash).code, 0);
    assert_eq!(chain.account(who.address()).unwrap().unwrap().pub_key, Some(who.public_key().to_vec()));
}

#[test]
fn cosmpy_and_the_simulated_chain_agree_both_ways() {
    let cosmpy_key = "6a1f0c9e8d7b6a5f4e3d2c1b0a9f8e7d6c5b4a3f2e1d0c9b8a7f6e5d4c3b2a19";
    let cosmpy = GonkaSigner::from_hex(cosmpy_key).unwrap();
    let recipient = key(0x52);
    let fund = format!("{}=5000000", cosmpy.address());
    let sim = Sim::start(&["--gonka", "--chain-fund", &fund, "--chain-block-ms", "50"]);
    // A transfer the gateway builds, for cosmpy to decode and verify.
    let ours = key(0x51);
    let send = gonka_gateway::gonka::tx::Send {
        chain_id: "gonka-mainnet",
        account_number: 5,
        sequence: 3,
        to_address: recipient.address(),
        amount: 777,
        denom: "ngonka",
        fee: 9,
        gas_limit: GAS,
        memo: "gateway",
    };
    let bytes = gonka_gateway::gonka::tx::build_send(&ours, &send);
    use base64::Engine as _;
    let out = run_python(
        "chain_fidelity.py",
        &[
            ("CHAIN_REST_URL", format!("{}/chain-api", sim.root(0))),
            ("CHAIN_ID", "gonka-mainnet".to_owned()),
            ("COSMPY_KEY_HEX", cosmpy_key.to_owned()),
            ("RECIPIENT", recipient.address().to_owned()),
            ("RUST_TX_B64", base64::engine::general_purpose::STANDARD.encode(&bytes)),
            ("RUST_FROM", ours.address().to_owned()),
            ("RUST_TO", recipient.address().to_owned()),
            ("RUST_AMOUNT", "777".to_owned()),
            ("RUST_FEE", "9".to_owned()),
            ("RUST_MEMO", "gateway".to_owned()),
            ("RUST_SEQUENCE", "3".to_owned()),
            ("RUST_ACCOUNT_NUMBER", "5".to_owned()),
        ],
    );
    assert!(out.contains("OK"), "{out}");
    // What cosmpy did is what the gateway's client sees.
    let chain = client(&sim, "/chain-api");
    assert_eq!(chain.balance(recipient.address()).unwrap(), 12_345);
    assert_eq!(chain.account(cosmpy.address()).unwrap().unwrap().pub_key, Some(cosmpy.public_key().to_vec()));
}

#[test]
fn the_official_sdk_pays_for_inference_from_the_chain() {
    let (funded, poor, unpublished, sink) = (key(0x61), key(0x62), key(0x63), key(0x64));
    let funds = [
        format!("{}=1000000", funded.address()),
        format!("{}=60", poor.address()),
        format!("{}=1000000", unpublished.address()),
    ];
    let mut args = vec!["--gonka", "--chain-price", "3", "--chain-block-ms", "50"];
    for f in &funds {
        args.extend(["--chain-fund", f.as_str()]);
    }
    let sim = Sim::start(&args);
    let chain = client(&sim, "/chain-api");
    publish(&chain, &funded, sink.address());
    publish(&chain, &poor, sink.address());
    let out = run_python(
        "chain_sdk.py",
        &[
            ("SIM_NODE_URL", sim.urls[0].clone()),
            ("SIM_NODE_ADDRESS", sim.addresses[0].clone()),
            ("CHAIN_REST_URL", format!("{}/chain-api", sim.root(0))),
            ("MODEL", MODEL.to_owned()),
            ("CHAIN_PRICE", "3".to_owned()),
            ("FUNDED_KEY", funded.private_key_hex()),
            ("FUNDED_ADDRESS", funded.address().to_owned()),
            ("POOR_KEY", poor.private_key_hex()),
            ("POOR_ADDRESS", poor.address().to_owned()),
            ("UNPUBLISHED_KEY", unpublished.private_key_hex()),
            ("UNPUBLISHED_ADDRESS", unpublished.address().to_owned()),
            ("UNPUBLISHED_FUNDS", "1000000".to_owned()),
        ],
    );
    assert!(out.contains("OK"), "{out}");
}

#[test]
fn a_client_that_leaves_mid_stream_pays_for_what_was_generated() {
    let (who, sink) = (key(0x71), key(0x72));
    let fund = format!("{}=1000000", who.address());
    let sim = Sim::start(&[
        "--gonka",
        "--chain-fund",
        &fund,
        "--chain-block-ms",
        "50",
        "--tokens-per-s",
        "20",
        "--completion-tokens",
        "200",
    ]);
    let chain = client(&sim, "/chain-api");
    publish(&chain, &who, sink.address());
    let before = chain.balance(who.address()).unwrap();
    let node = sim.addresses[0].clone();
    let body = json!({"model": MODEL, "stream": true, "max_tokens": 200,
        "messages": [{"role": "user", "content": "tell me a long story"}]})
    .to_string();
    let ts = who.next_timestamp_ns();
    let signature = who.sign(body.as_bytes(), ts, &node);
    let mut s = std::net::TcpStream::connect(sim.addr(0)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    use std::io::{Read, Write};
    write!(
        s,
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: {signature}\r\nX-Requester-Address: {}\r\nX-Timestamp: {ts}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        who.address(),
        body.len()
    )
    .unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while String::from_utf8_lossy(&seen).matches("data: ").count() < 3 {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "{}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&buf[..n]);
    }
    // In flight, the whole worst case is escrowed: the prompt (the message and its line end, 21 bytes →
    // 6, + 4 for the message) and max_tokens.
    let prompt = 10u128;
    assert_eq!(chain.balance(who.address()).unwrap(), before - (prompt + 200));
    drop(s);
    assert!(eventually(Duration::from_secs(10), || sim.stats()["streams_aborted"] == 1), "{}", sim.stats());
    let charged = before - chain.balance(who.address()).unwrap();
    assert!(charged >= prompt + 3 && charged < prompt + 200, "charged {charged} for a stream left early");
    assert_eq!(chain.balance(&node).unwrap(), charged, "the node got what the requester paid");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(before - chain.balance(who.address()).unwrap(), charged, "settled once, nothing more moves");
}

#[test]
fn blocks_are_served_by_height_with_their_transactions_and_a_reorganisation_replaces_them() {
    let alice = key(0x41);
    let fund = format!("{}=1000000", alice.address());
    let sim = Sim::start(&["--chain-fund", &fund, "--chain-block-ms", "100"]);
    let chain = client(&sim, "/chain-api");
    let info = chain.account(alice.address()).unwrap().unwrap();
    let to = key(0x42);
    let hash = chain.send(&alice, info.account_number, 0, to.address(), 500, 0, GAS, "to a block").unwrap();
    let at = included(&chain, &hash).height;
    let block = chain.block(at).unwrap().unwrap();
    assert_eq!(block.height, at);
    assert_eq!(
        block.txs.iter().map(|t| gonka_gateway::gonka::tx::tx_hash(t)).collect::<Vec<_>>(),
        std::slice::from_ref(&hash)
    );
    assert_eq!(chain.block(at).unwrap().unwrap().hash, block.hash, "a block keeps its hash");
    assert!(chain.block(at - 1).unwrap().unwrap().txs.is_empty());
    let latest = chain.latest_height().unwrap();
    assert_eq!(chain.block(latest + 1000).unwrap(), None, "not that high yet");
    // The raw answer has the SDK's shape: the block id, the header, the transactions in base64.
    let r = http(sim.addr(0), "GET", &format!("/cosmos/base/tendermint/v1beta1/blocks/{at}"), &[], None);
    let v = r.json();
    assert_eq!(v["block"]["header"]["height"], at.to_string());
    assert_eq!(v["block"]["header"]["chain_id"], "gonka-mainnet");
    assert_eq!(v["sdk_block"], v["block"]);
    assert_eq!(v["block_id"]["hash"], block.hash.as_str());
    let previous = chain.block(at - 1).unwrap().unwrap().hash;
    assert_eq!(v["block"]["header"]["last_block_id"]["hash"], previous.as_str());
    let r = http(sim.addr(0), "GET", "/cosmos/base/tendermint/v1beta1/blocks/99999999", &[], None);
    assert_eq!((r.status, r.json()["code"].as_u64()), (400, Some(3)));

    let depth = chain.latest_height().unwrap() - at + 1;
    let r = control(&sim, json!({ "reorg": depth }));
    assert_eq!(r["reorganised"], json!([hash]));
    let after = chain.block(at).unwrap().unwrap();
    assert!(after.txs.is_empty());
    assert_ne!(after.hash, block.hash);
    assert_eq!(chain.tx(&hash).unwrap(), None);
    assert_eq!(chain.balance(to.address()).unwrap(), 0);
    assert_eq!(chain.balance(alice.address()).unwrap(), 1_000_000, "the transfer is undone");
    let r = http(sim.addr(0), "POST", "/sim/chain", &[], Some(br#"{"reorg": "x"}"#));
    assert_eq!(r.status, 400);
}
