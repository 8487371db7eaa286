//! The simulated chain's HTTP answers: the Cosmos REST routes and the `POST /sim/chain` control, as
//! status and JSON body (the server frames them).

use super::ledger::{Account, BlockView, valid_address};
use super::state::Chain;
use crate::sim::wire::Method;
use base64::Engine as _;
use serde_json::{Value, json};

fn not_found(message: String) -> (u16, String) {
    (404, json!({"code": 5, "message": message, "details": []}).to_string())
}

fn bad_request(message: String) -> (u16, String) {
    (400, json!({"code": 3, "message": message, "details": []}).to_string())
}

fn account_json(address: &str, a: &Account) -> Value {
    let pub_key = a.pub_key.as_ref().map_or(Value::Null, |k| {
        json!({"@type": "/cosmos.crypto.secp256k1.PubKey", "key": base64::engine::general_purpose::STANDARD.encode(k)})
    });
    json!({"account": {"@type": "/cosmos.auth.v1beta1.BaseAccount", "address": address, "pub_key": pub_key,
        "account_number": a.number.to_string(), "sequence": a.sequence.to_string()}})
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A block as `GetBlockByHeight` answers it (bytes in base64, as gRPC-gateway JSON writes them): the
/// block id, and the block with its header and its transactions' bytes, under `block` and `sdk_block`.
fn block_json(chain_id: &str, b: &BlockView) -> Value {
    let part_set = |hash: &[u8]| json!({"total": 1, "hash": b64(hash)});
    let header = json!({
        "version": {"block": "11", "app": "0"},
        "chain_id": chain_id,
        "height": b.height.to_string(),
        "time": crate::time::rfc3339(b.time_ms / 1000),
        "last_block_id": {"hash": b64(&b.previous_hash), "part_set_header": part_set(&b.previous_hash)},
        "last_commit_hash": "", "data_hash": "", "validators_hash": "", "next_validators_hash": "",
        "consensus_hash": "", "app_hash": "", "last_results_hash": "", "evidence_hash": "",
        "proposer_address": "",
    });
    let txs: Vec<String> = b.txs.iter().map(|t| b64(t)).collect();
    let block = json!({
        "header": header,
        "data": {"txs": txs},
        "evidence": {"evidence": []},
        "last_commit": {"height": b.height.saturating_sub(1).to_string(), "round": 0,
            "block_id": {"hash": b64(&b.previous_hash), "part_set_header": part_set(&b.previous_hash)},
            "signatures": []},
    });
    json!({"block_id": {"hash": b64(&b.hash), "part_set_header": part_set(&b.hash)}, "block": block,
        "sdk_block": block})
}

/// The value of `name` in a query string.
fn query_param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query.split('&').find_map(|kv| kv.split_once('=').filter(|(k, _)| *k == name).map(|(_, v)| v))
}

/// The answer to a chain request, or `None` when `path` is not one of the chain's.
pub fn answer(chain: &Chain, method: Method, path: &str, body: &[u8]) -> Option<(u16, String)> {
    if method == Method::Post && path == "/sim/chain" {
        return Some(control(chain, body));
    }
    let rest = path.strip_prefix("/chain-api").unwrap_or(path);
    if !rest.starts_with("/cosmos/") {
        return None;
    }
    if chain.is_down() {
        return Some((
            503,
            json!({"code": 14, "message": "the simulated chain is down", "details": []}).to_string(),
        ));
    }
    let (route, query) = rest.split_once('?').unwrap_or((rest, ""));
    let Some(l) = chain.ledger() else {
        return Some((500, json!({"code": 13, "message": "chain state lost", "details": []}).to_string()));
    };
    let denom = l.params.denom.clone();
    let answer = match (method, route) {
        (Method::Get, r) if r.starts_with("/cosmos/auth/v1beta1/accounts/") => {
            let address = &r["/cosmos/auth/v1beta1/accounts/".len()..];
            match l.account(address) {
                Some(a) => (200, account_json(address, a).to_string()),
                None if valid_address(address) => not_found(format!("account {address} not found")),
                None => bad_request(format!("invalid address {address}: decoding bech32 failed")),
            }
        }
        (Method::Get, r) if r.starts_with("/cosmos/bank/v1beta1/balances/") => {
            let tail = &r["/cosmos/bank/v1beta1/balances/".len()..];
            let (address, by_denom) = match tail.strip_suffix("/by_denom") {
                Some(a) => (a, true),
                None => (tail, false),
            };
            if !valid_address(address) {
                bad_request(format!("invalid address {address}: decoding bech32 failed"))
            } else {
                let balance = l.account(address).map_or(0, |a| a.balance);
                if by_denom {
                    let asked = query_param(query, "denom").unwrap_or_default();
                    let amount = if asked == denom { balance } else { 0 };
                    (200, json!({"balance": {"denom": asked, "amount": amount.to_string()}}).to_string())
                } else {
                    let balances: Vec<Value> = if balance > 0 {
                        vec![json!({"denom": denom, "amount": balance.to_string()})]
                    } else {
                        Vec::new()
                    };
                    let total = balances.len().to_string();
                    (
                        200,
                        json!({"balances": balances, "pagination": {"next_key": null, "total": total}})
                            .to_string(),
                    )
                }
            }
        }
        (Method::Get, "/cosmos/base/tendermint/v1beta1/blocks/latest") => match l.block(l.height()) {
            Some(b) => (200, block_json(&l.params.chain_id, &b).to_string()),
            None => not_found("no block yet".into()),
        },
        (Method::Get, r) if r.starts_with("/cosmos/base/tendermint/v1beta1/blocks/") => {
            let height = &r["/cosmos/base/tendermint/v1beta1/blocks/".len()..];
            match height.parse::<u64>() {
                Ok(h) if h > l.height() => {
                    bad_request("requested block height is bigger then the chain length".into())
                }
                Ok(h) if h > 0 => match l.block(h) {
                    Some(b) => (200, block_json(&l.params.chain_id, &b).to_string()),
                    None => not_found(format!("block {h} not found")),
                },
                _ => bad_request(format!("invalid height {height:?}")),
            }
        }
        (Method::Get, r) if r.starts_with("/cosmos/tx/v1beta1/txs/") => {
            let hash = &r["/cosmos/tx/v1beta1/txs/".len()..];
            match l.included(hash) {
                Some(i) => {
                    let codespace = if i.code == 0 { "" } else { "sdk" };
                    let r = json!({"height": i.height.to_string(), "txhash": hash.to_ascii_uppercase(),
                        "codespace": codespace, "code": i.code, "data": "", "raw_log": i.raw_log, "logs": [],
                        "info": "", "gas_wanted": i.gas_wanted.to_string(), "gas_used": i.gas_used.to_string(),
                        "timestamp": "", "events": []});
                    (200, json!({"tx_response": r}).to_string())
                }
                None => not_found(format!("tx not found: {hash}")),
            }
        }
        (Method::Post, "/cosmos/tx/v1beta1/txs") => {
            drop(l);
            return Some(broadcast(chain, body));
        }
        _ => (
            501,
            json!({"code": 12, "message": format!("Not Implemented: {route}"), "details": []}).to_string(),
        ),
    };
    Some(answer)
}

fn broadcast(chain: &Chain, body: &[u8]) -> (u16, String) {
    let Ok(req) = serde_json::from_slice::<Value>(body) else {
        return bad_request("the body is not JSON".into());
    };
    // Protobuf JSON names the field `tx_bytes` or `txBytes` (what cosmpy sends); a gRPC gateway reads both.
    let Some(bytes) = req
        .get("tx_bytes")
        .or_else(|| req.get("txBytes"))
        .and_then(Value::as_str)
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
    else {
        return bad_request("tx_bytes must be base64".into());
    };
    let Some(mut l) = chain.ledger() else {
        return (500, json!({"code": 13, "message": "chain state lost", "details": []}).to_string());
    };
    let r = l.check_tx(&bytes);
    let codespace = if r.code == 0 { "" } else { "sdk" };
    let response = json!({"height": "0", "txhash": r.hash, "codespace": codespace, "code": r.code, "data": "",
        "raw_log": r.raw_log, "logs": [], "info": "", "gas_wanted": r.gas_wanted.to_string(), "gas_used": "0",
        "tx": null, "timestamp": "", "events": []});
    (200, json!({"tx_response": response}).to_string())
}

/// `POST /sim/chain`: `{"fund": {"address", "amount"}}`, `{"down": bool}`, `{"forget_pending": true}`,
/// `{"reorg": N}` (the last N blocks replaced by empty ones, their transactions gone; answers their
/// hashes as `"reorganised"`), any of them in one body.
fn control(chain: &Chain, body: &[u8]) -> (u16, String) {
    let Ok(req) = serde_json::from_slice::<Value>(body) else {
        return (400, json!({"error": "the body is not JSON"}).to_string());
    };
    let mut out = json!({"ok": true});
    if let Some(fund) = req.get("fund") {
        let address = fund.get("address").and_then(Value::as_str).unwrap_or_default();
        let amount = match fund.get("amount") {
            Some(Value::String(s)) => s.parse::<u128>().ok(),
            Some(Value::Number(n)) => n.as_u64().map(u128::from),
            _ => None,
        };
        let Some(amount) = amount.filter(|_| valid_address(address)) else {
            return (400, json!({"error": "fund needs a gonka1… address and an amount"}).to_string());
        };
        if let Some(mut l) = chain.ledger() {
            l.fund(address, amount);
            out["balance"] = json!(l.account(address).map_or(0, |a| a.balance).to_string());
        }
    }
    if let Some(down) = req.get("down").and_then(Value::as_bool) {
        chain.set_down(down);
    }
    if req.get("forget_pending").and_then(Value::as_bool) == Some(true)
        && let Some(mut l) = chain.ledger()
    {
        out["forgotten"] = json!(l.forget_pending());
    }
    if let Some(depth) = req.get("reorg") {
        let Some(depth) = depth.as_u64() else {
            return (400, json!({"error": "reorg needs a number of blocks"}).to_string());
        };
        if let Some(mut l) = chain.ledger() {
            out["reorganised"] = json!(l.reorg(depth));
        }
    }
    if let Some(l) = chain.ledger() {
        out["height"] = json!(l.height());
    }
    (200, out.to_string())
}
