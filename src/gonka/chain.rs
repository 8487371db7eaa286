//! The blocking client of the Gonka chain's Cosmos SDK REST API (gRPC-gateway JSON, as a node serves it
//! under `/chain-api`): accounts (number, sequence, public key), bank balances, the latest height, a
//! block by height (its id hash and its transactions' bytes), broadcast of a signed bank transfer
//! ([`super::tx`]) and its confirmation by hash.
//!
//! # Design
//! One request per call on the one blocking HTTP client (`crate::http::client`), so it runs on the
//! control plane, never on a core. The REST URL is used as given: a node's `http://host:port/chain-api`
//! or a bare Cosmos REST endpoint (`http://host:1317`); `https` goes through the gateway's TLS roots.
//! Cosmos JSON writes 64-bit and larger integers as decimal strings; both strings and numbers are read.
//!
//! # Errors
//! [`ChainError::Unreachable`] (connect, timeout, 5xx: retry with back-off), [`ChainError::Rejected`]
//! (CheckTx refused a transaction, with the SDK's code and log), [`ChainError::Malformed`] (an answer
//! this client cannot read, or a status it does not expect). "Not found" (HTTP 404, or gRPC code 5 in
//! the body) is `Ok(None)` for accounts and transactions.

use super::signer::GonkaSigner;
use super::tx;
use crate::http::client::{self, Answer, Request, Target};
use crate::http::tls::ClientTls;
use base64::Engine as _;
use serde_json::Value;
use std::time::Duration;

/// The chain's REST API at one URL.
#[derive(Debug, Clone)]
pub struct ChainClient {
    host: String,
    port: u16,
    tls: bool,
    /// The URL's path without its trailing `/` (`/chain-api`, or empty).
    prefix: String,
    chain_id: String,
    denom: String,
    client_tls: ClientTls,
    timeout: Duration,
}

/// An account as the auth module knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountInfo {
    pub account_number: u64,
    pub sequence: u64,
    /// The compressed secp256k1 public key (33 bytes), once the account has signed a transaction.
    pub pub_key: Option<Vec<u8>>,
}

/// A transaction included in a block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxResult {
    pub height: u64,
    /// 0 when it was applied; the SDK's error code when its execution failed.
    pub code: u32,
    pub raw_log: String,
}

/// A block: its id hash (as the API writes it: base64) and its transactions' `TxRaw` bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    pub height: u64,
    pub hash: String,
    pub txs: Vec<Vec<u8>>,
}

#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    /// Connect, timeout or 5xx: retry with back-off.
    #[error("chain unreachable: {0}")]
    Unreachable(String),
    /// CheckTx refused the transaction (its code is not 0).
    #[error("chain refused the transaction (code {code}): {log}")]
    Rejected { code: u32, log: String },
    #[error("chain answer unreadable: {0}")]
    Malformed(String),
}

/// A JSON integer written as a string (Cosmos) or a number.
fn integer(v: &Value) -> Option<u128> {
    match v {
        Value::String(s) => s.parse().ok(),
        Value::Number(n) => n.as_u64().map(u128::from),
        _ => None,
    }
}

fn integer_u64(v: &Value) -> Option<u64> {
    integer(v).and_then(|n| u64::try_from(n).ok())
}

/// The start of a body, for error messages.
fn snippet(body: &[u8]) -> String {
    String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned()
}

/// Whether an answer says "not found": HTTP 404, or gRPC's NotFound (5) in the body.
fn not_found(answer: &Answer) -> bool {
    answer.status == 404
        || serde_json::from_slice::<Value>(&answer.body)
            .is_ok_and(|v| v.get("code").and_then(integer) == Some(5))
}

/// The `BaseAccount` inside an account answer (also inside module and vesting accounts).
fn base_account(account: &Value) -> &Value {
    if let Some(base) = account.get("base_account") {
        return base;
    }
    if let Some(vesting) = account.get("base_vesting_account") {
        return vesting.get("base_account").unwrap_or(vesting);
    }
    account
}

fn parse_account(body: &Value) -> Result<AccountInfo, ChainError> {
    let bad = || ChainError::Malformed(format!("not an account: {body}"));
    let account = base_account(body.get("account").ok_or_else(bad)?);
    let account_number = account.get("account_number").map_or(Some(0), integer_u64).ok_or_else(bad)?;
    let sequence = account.get("sequence").map_or(Some(0), integer_u64).ok_or_else(bad)?;
    let pub_key = match account.get("pub_key") {
        None | Some(Value::Null) => None,
        Some(key) => {
            let b64 = key.get("key").and_then(Value::as_str).ok_or_else(bad)?;
            let raw = base64::engine::general_purpose::STANDARD.decode(b64).map_err(|_| bad())?;
            Some(raw)
        }
    };
    Ok(AccountInfo { account_number, sequence, pub_key })
}

fn parse_tx_response(body: &Value) -> Result<TxResult, ChainError> {
    let r =
        body.get("tx_response").ok_or_else(|| ChainError::Malformed(format!("no tx_response: {body}")))?;
    Ok(TxResult {
        height: r.get("height").and_then(integer_u64).unwrap_or(0),
        code: r.get("code").and_then(integer).and_then(|c| u32::try_from(c).ok()).unwrap_or(0),
        raw_log: r.get("raw_log").and_then(Value::as_str).unwrap_or_default().to_owned(),
    })
}

/// A `GetBlockByHeight` answer: `block_id.hash`, and the header's height and the data's transactions
/// under `block` (or `sdk_block`, which newer SDKs add).
fn parse_block(v: &Value) -> Result<Block, ChainError> {
    let bad = |what: &str| {
        ChainError::Malformed(format!(
            "not a block ({what}): {}",
            v.to_string().chars().take(300).collect::<String>()
        ))
    };
    let hash = v
        .get("block_id")
        .and_then(|b| b.get("hash"))
        .and_then(Value::as_str)
        .filter(|h| !h.is_empty())
        .ok_or_else(|| bad("no block_id.hash"))?
        .to_owned();
    let block = ["block", "sdk_block"].iter().find_map(|k| v.get(k)).ok_or_else(|| bad("no block"))?;
    let height = block
        .get("header")
        .and_then(|h| h.get("height"))
        .and_then(integer_u64)
        .ok_or_else(|| bad("no height"))?;
    let txs = match block.get("data").and_then(|d| d.get("txs")) {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(txs)) => txs
            .iter()
            .map(|t| {
                t.as_str()
                    .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
                    .ok_or_else(|| bad("a transaction is not base64"))
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(bad("data.txs is not a list")),
    };
    Ok(Block { height, hash, txs })
}

impl ChainClient {
    /// A client of the REST API at `rest_url` (`http(s)://host[:port][/path]`) for `chain_id`, whose
    /// amounts are in `denom`; `timeout` bounds the connect and every read and write.
    pub fn new(
        rest_url: &str,
        chain_id: &str,
        denom: &str,
        tls: ClientTls,
        timeout: Duration,
    ) -> Result<Self, ChainError> {
        let url = url::Url::parse(rest_url.trim())
            .map_err(|e| ChainError::Malformed(format!("chain REST URL {rest_url}: {e}")))?;
        let secure = match url.scheme() {
            "http" => false,
            "https" => true,
            other => return Err(ChainError::Malformed(format!("chain REST URL {rest_url}: scheme {other}"))),
        };
        let host = url
            .host_str()
            .ok_or_else(|| ChainError::Malformed(format!("chain REST URL {rest_url} has no host")))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = url.port_or_known_default().unwrap_or(if secure { 443 } else { 80 });
        Ok(Self {
            host,
            port,
            tls: secure,
            prefix: url.path().trim_end_matches('/').to_owned(),
            chain_id: chain_id.to_owned(),
            denom: denom.to_owned(),
            client_tls: tls,
            timeout,
        })
    }

    pub fn chain_id(&self) -> &str {
        &self.chain_id
    }

    pub fn denom(&self) -> &str {
        &self.denom
    }

    /// One request; a failure to connect or a 5xx is [`ChainError::Unreachable`].
    fn call(&self, method: &str, path: &str, body: Option<&[u8]>) -> Result<Answer, ChainError> {
        let path = format!("{}{path}", self.prefix);
        let target = Target { host: &self.host, port: self.port, tls: self.tls, addrs: &[] };
        let request = Request { method, path: &path, headers: &[], body };
        let answer = client::send(&target, &request, self.timeout, Some(&self.client_tls))
            .map_err(|e| ChainError::Unreachable(format!("{}:{}: {e}", self.host, self.port)))?;
        if answer.status >= 500 && !(answer.status == 500 && not_found(&answer)) {
            return Err(ChainError::Unreachable(format!(
                "{path}: {} {}",
                answer.status,
                snippet(&answer.body)
            )));
        }
        Ok(answer)
    }

    fn json(answer: &Answer) -> Result<Value, ChainError> {
        serde_json::from_slice(&answer.body)
            .map_err(|e| ChainError::Malformed(format!("{e}: {}", snippet(&answer.body))))
    }

    fn unexpected(path: &str, answer: &Answer) -> ChainError {
        ChainError::Malformed(format!("{path}: {} {}", answer.status, snippet(&answer.body)))
    }

    /// The account at `address`; `None` when the chain does not know it (it never received funds).
    pub fn account(&self, address: &str) -> Result<Option<AccountInfo>, ChainError> {
        let path = format!("/cosmos/auth/v1beta1/accounts/{address}");
        let answer = self.call("GET", &path, None)?;
        if !answer.is_success() {
            return if not_found(&answer) { Ok(None) } else { Err(Self::unexpected(&path, &answer)) };
        }
        parse_account(&Self::json(&answer)?).map(Some)
    }

    /// The balance of `address` in the client's denom (0 for an account the chain does not know).
    pub fn balance(&self, address: &str) -> Result<u128, ChainError> {
        let path = format!("/cosmos/bank/v1beta1/balances/{address}/by_denom?denom={}", self.denom);
        let answer = self.call("GET", &path, None)?;
        if !answer.is_success() {
            return Err(Self::unexpected(&path, &answer));
        }
        let v = Self::json(&answer)?;
        match v.get("balance") {
            None | Some(Value::Null) => Ok(0),
            Some(b) => b
                .get("amount")
                .and_then(integer)
                .ok_or_else(|| ChainError::Malformed(format!("not a balance: {v}"))),
        }
    }

    /// The height of the latest block.
    pub fn latest_height(&self) -> Result<u64, ChainError> {
        let path = "/cosmos/base/tendermint/v1beta1/blocks/latest";
        let answer = self.call("GET", path, None)?;
        if !answer.is_success() {
            return Err(Self::unexpected(path, &answer));
        }
        let v = Self::json(&answer)?;
        ["block", "sdk_block"]
            .iter()
            .find_map(|k| v.get(k)?.get("header")?.get("height").and_then(integer_u64))
            .ok_or_else(|| ChainError::Malformed(format!("no block height: {}", snippet(&answer.body))))
    }

    /// Block `height`; `None` while the chain is not that high yet (the SDK answers 400, code 3).
    pub fn block(&self, height: u64) -> Result<Option<Block>, ChainError> {
        let path = format!("/cosmos/base/tendermint/v1beta1/blocks/{height}");
        let answer = self.call("GET", &path, None)?;
        if answer.status == 400 || not_found(&answer) {
            return Ok(None);
        }
        if !answer.is_success() {
            return Err(Self::unexpected(&path, &answer));
        }
        let block = parse_block(&Self::json(&answer)?)?;
        if block.height != height {
            return Err(ChainError::Malformed(format!("{path}: the answer is block {}", block.height)));
        }
        Ok(Some(block))
    }

    /// Builds `MsgSend(from → to, amount denom)` with fee `fee` denom and `gas_limit`, signs it
    /// (SIGN_MODE_DIRECT) for `account_number` and `sequence`, and broadcasts it in sync mode: the tx
    /// hash (upper hex) once CheckTx accepted it.
    #[expect(clippy::too_many_arguments, reason = "the interface of the transfer, field by field")]
    pub fn send(
        &self,
        from: &GonkaSigner,
        account_number: u64,
        sequence: u64,
        to: &str,
        amount: u128,
        fee: u128,
        gas_limit: u64,
        memo: &str,
    ) -> Result<String, ChainError> {
        let send = tx::Send {
            chain_id: &self.chain_id,
            account_number,
            sequence,
            to_address: to,
            amount,
            denom: &self.denom,
            fee,
            gas_limit,
            memo,
        };
        let bytes = tx::build_send(from, &send);
        self.broadcast(&bytes)
    }

    /// Broadcasts signed `TxRaw` bytes (BROADCAST_MODE_SYNC): their hash once CheckTx accepted them.
    pub fn broadcast(&self, tx_bytes: &[u8]) -> Result<String, ChainError> {
        let hash = tx::tx_hash(tx_bytes);
        let body = serde_json::json!({
            "tx_bytes": base64::engine::general_purpose::STANDARD.encode(tx_bytes),
            "mode": "BROADCAST_MODE_SYNC",
        })
        .to_string();
        let path = "/cosmos/tx/v1beta1/txs";
        let answer = self.call("POST", path, Some(body.as_bytes()))?;
        if !answer.is_success() {
            return Err(Self::unexpected(path, &answer));
        }
        let result = parse_tx_response(&Self::json(&answer)?)?;
        if result.code != 0 {
            return Err(ChainError::Rejected { code: result.code, log: result.raw_log });
        }
        Ok(hash)
    }

    /// The transaction `hash` once it is in a block; `None` while it is not (or never will be).
    pub fn tx(&self, hash: &str) -> Result<Option<TxResult>, ChainError> {
        let path = format!("/cosmos/tx/v1beta1/txs/{hash}");
        let answer = self.call("GET", &path, None)?;
        if !answer.is_success() {
            return if not_found(&answer) { Ok(None) } else { Err(Self::unexpected(&path, &answer)) };
        }
        parse_tx_response(&Self::json(&answer)?).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn tls() -> ClientTls {
        ClientTls::new(false, None).unwrap()
    }

    #[test]
    fn rest_urls_keep_their_path() {
        let c = ChainClient::new(
            "http://127.0.0.1:9000/chain-api/",
            "gonka-mainnet",
            "ngonka",
            tls(),
            Duration::from_secs(1),
        )
        .unwrap();
        assert_eq!(
            (c.host.as_str(), c.port, c.tls, c.prefix.as_str()),
            ("127.0.0.1", 9000, false, "/chain-api")
        );
        let c = ChainClient::new("https://node.example", "c", "d", tls(), Duration::from_secs(1)).unwrap();
        assert_eq!((c.host.as_str(), c.port, c.tls, c.prefix.as_str()), ("node.example", 443, true, ""));
        let c = ChainClient::new("http://[::1]:1317", "c", "d", tls(), Duration::from_secs(1)).unwrap();
        assert_eq!(c.host, "::1");
        assert!(ChainClient::new("ftp://x", "c", "d", tls(), Duration::from_secs(1)).is_err());
        assert!(ChainClient::new("not a url", "c", "d", tls(), Duration::from_secs(1)).is_err());
    }

    #[test]
    fn accounts_are_read_with_and_without_a_key() {
        let key = base64::engine::general_purpose::STANDARD.encode([2u8; 33]);
        let with = json!({"account": {"@type": "/cosmos.auth.v1beta1.BaseAccount", "address": "gonka1x",
            "pub_key": {"@type": "/cosmos.crypto.secp256k1.PubKey", "key": key}, "account_number": "7", "sequence": "3"}});
        assert_eq!(
            parse_account(&with).unwrap(),
            AccountInfo { account_number: 7, sequence: 3, pub_key: Some(vec![2u8; 33]) }
        );
        let without = json!({"account": {"@type": "/cosmos.auth.v1beta1.BaseAccount", "address": "gonka1x",
            "pub_key": null, "account_number": "12", "sequence": "0"}});
        assert_eq!(
            parse_account(&without).unwrap(),
            AccountInfo { account_number: 12, sequence: 0, pub_key: None }
        );
        let module = json!({"account": {"@type": "/cosmos.auth.v1beta1.ModuleAccount",
            "base_account": {"account_number": "1", "sequence": "0", "pub_key": null}, "name": "fee"}});
        assert_eq!(parse_account(&module).unwrap().account_number, 1);
        assert!(parse_account(&json!({"nope": 1})).is_err());
        assert!(parse_account(&json!({"account": {"account_number": "x"}})).is_err());
    }

    #[test]
    fn not_found_is_a_404_or_grpc_code_5() {
        let a = |status, body: &str| Answer { status, body: body.as_bytes().to_vec() };
        assert!(not_found(&a(404, "")));
        assert!(not_found(&a(500, r#"{"code":5,"message":"key not found"}"#)));
        assert!(!not_found(&a(400, r#"{"code":3,"message":"invalid address"}"#)));
    }

    #[test]
    fn tx_responses_read_strings_and_numbers() {
        let r = parse_tx_response(
            &json!({"tx_response": {"txhash": "AB", "height": "12", "code": 32, "raw_log": "x"}}),
        )
        .unwrap();
        assert_eq!(r, TxResult { height: 12, code: 32, raw_log: "x".into() });
        assert!(parse_tx_response(&json!({})).is_err());
    }

    #[test]
    fn blocks_are_read_with_their_hash_and_transactions() {
        let b = parse_block(&json!({"block_id": {"hash": "qrs=", "part_set_header": {}},
            "block": {"header": {"height": "9"}, "data": {"txs": ["AQI=", "Aw=="]}}}))
        .unwrap();
        assert_eq!(b, Block { height: 9, hash: "qrs=".into(), txs: vec![vec![1, 2], vec![3]] });
        let empty = parse_block(&json!({"block_id": {"hash": "x"}, "sdk_block": {"header": {"height": 3},
            "data": {"txs": null}}}))
        .unwrap();
        assert!(empty.txs.is_empty());
        assert!(
            parse_block(&json!({"block_id": {"hash": ""}, "block": {"header": {"height": "1"}}})).is_err()
        );
        assert!(
            parse_block(&json!({"block_id": {"hash": "x"}, "block": {"header": {"height": "1"},
            "data": {"txs": ["%%%"]}}}))
            .is_err()
        );
    }

    #[test]
    fn a_closed_port_is_unreachable() {
        // Port 1 (tcpmux) is not served here: the connection is refused.
        let c = ChainClient::new("http://127.0.0.1:1/chain-api", "c", "d", tls(), Duration::from_secs(1))
            .unwrap();
        assert!(matches!(c.latest_height(), Err(ChainError::Unreachable(_))));
        assert!(matches!(c.account("gonka1x"), Err(ChainError::Unreachable(_))));
    }
}
