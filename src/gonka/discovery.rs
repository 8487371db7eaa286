//! Discovery of the Gonka nodes of the current epoch, as the official SDK does it:
//! `GET {seed}/v1/epochs/current/participants` lists `active_participants.participants[]` with `index`
//! (the node's `gonka1…` address, which is the transfer address requests are signed for),
//! `inference_url` and `models`, minus `excluded_participants`; optionally only the addresses in the
//! chain's Transfer Agent allowlist (`/chain-api/productscience/inference/inference/params`,
//! `params.transfer_agent_access_params.allowed_transfer_addresses`).

use serde_json::Value;
use std::collections::HashSet;

/// The participants path under a seed.
pub const PARTICIPANTS_PATH: &str = "/v1/epochs/current/participants";
/// The chain parameters path under a seed.
pub const PARAMS_PATH: &str = "/chain-api/productscience/inference/inference/params";

/// One node of the epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Participant {
    /// Its `gonka1…` address: the transfer address requests to it are signed for.
    pub address: String,
    pub inference_url: String,
    /// Models it serves (a model it lists that the gateway does not price is refused anyway).
    pub models: Vec<String>,
}

impl Participant {
    /// Its OpenAI base URL (the inference URL ending in `/v1`).
    pub fn base_url(&self) -> String {
        ensure_v1(&self.inference_url)
    }
}

/// The usable participants of a participants answer.
pub fn parse_participants(body: &[u8]) -> Result<Vec<Participant>, String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("participants are not JSON: {e}"))?;
    let excluded: HashSet<&str> = v
        .get("excluded_participants")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|p| p.get("address").and_then(Value::as_str)).collect())
        .unwrap_or_default();
    let list = v
        .get("active_participants")
        .and_then(|a| a.get("participants"))
        .and_then(Value::as_array)
        .ok_or("no active_participants.participants")?;
    Ok(list
        .iter()
        .filter_map(|p| {
            let address = p.get("index")?.as_str()?;
            let url = p.get("inference_url")?.as_str()?;
            if address.is_empty() || url.is_empty() || excluded.contains(address) {
                return None;
            }
            let models = p
                .get("models")
                .and_then(Value::as_array)
                .map(|m| m.iter().filter_map(Value::as_str).map(str::to_owned).collect())
                .unwrap_or_default();
            Some(Participant { address: address.to_owned(), inference_url: url.to_owned(), models })
        })
        .collect())
}

/// The allowed transfer addresses of a chain parameters answer.
pub fn parse_allowlist(body: &[u8]) -> Result<HashSet<String>, String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("params are not JSON: {e}"))?;
    let list = v
        .pointer("/params/transfer_agent_access_params/allowed_transfer_addresses")
        .and_then(Value::as_array)
        .ok_or("no params.transfer_agent_access_params.allowed_transfer_addresses")?;
    Ok(list.iter().filter_map(Value::as_str).map(str::to_owned).collect())
}

/// An inference URL as an OpenAI base URL (ending in `/v1`).
pub fn ensure_v1(url: &str) -> String {
    let u = url.trim_end_matches('/');
    if u.ends_with("/v1") { u.to_owned() } else { format!("{u}/v1") }
}

/// Runs discovery against the seeds in order; the first seed that answers decides. `get` fetches a
/// path under a seed and returns the body of a 2xx answer.
pub fn discover<S: std::fmt::Display>(
    seeds: &[S],
    use_allowlist: bool,
    get: impl Fn(&S, &str) -> Result<Vec<u8>, String>,
) -> Result<Vec<Participant>, String> {
    let mut last = "no seeds configured".to_owned();
    for seed in seeds {
        let participants = match get(seed, PARTICIPANTS_PATH).and_then(|b| parse_participants(&b)) {
            Ok(p) => p,
            Err(e) => {
                last = format!("{seed}: {e}");
                continue;
            }
        };
        let allowlist = if use_allowlist {
            match get(seed, PARAMS_PATH).and_then(|b| parse_allowlist(&b)) {
                Ok(a) => Some(a),
                Err(e) => {
                    last = format!("{seed}: {e}");
                    continue;
                }
            }
        } else {
            None
        };
        return Ok(participants
            .into_iter()
            .filter(|p| allowlist.as_ref().is_none_or(|a| a.contains(&p.address)))
            .collect());
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PARTICIPANTS: &str = r#"{
        "active_participants": {"participants": [
            {"index": "gonka1aaa", "inference_url": "http://10.0.0.1:8000", "models": ["m1", "m2"], "weight": 10},
            {"index": "gonka1bbb", "inference_url": "https://node-b.example/", "models": ["m2"]},
            {"index": "gonka1ccc", "inference_url": "http://10.0.0.3:8000/v1", "models": ["m1"]},
            {"index": "", "inference_url": "http://10.0.0.4:8000"},
            {"index": "gonka1eee"}
        ], "epoch_id": 7},
        "excluded_participants": [{"address": "gonka1ccc"}],
        "addresses": [], "active_participants_bytes": "", "proof_ops": {"ops": []}, "validators": [], "block": {}
    }"#;

    #[test]
    fn parses_participants_like_the_sdk() {
        let p = parse_participants(PARTICIPANTS.as_bytes()).unwrap();
        assert_eq!(p.len(), 2, "excluded and incomplete participants are skipped");
        assert_eq!(
            p[0],
            Participant {
                address: "gonka1aaa".into(),
                inference_url: "http://10.0.0.1:8000".into(),
                models: vec!["m1".into(), "m2".into()]
            }
        );
        assert_eq!(p[0].base_url(), "http://10.0.0.1:8000/v1");
        assert_eq!(p[1].base_url(), "https://node-b.example/v1");
        assert!(parse_participants(b"{}").is_err());
        assert!(parse_participants(b"nope").is_err());
    }

    #[test]
    fn the_allowlist_filters() {
        let a = parse_allowlist(
            br#"{"params":{"transfer_agent_access_params":{"allowed_transfer_addresses":["gonka1bbb"]}}}"#,
        )
        .unwrap();
        assert!(a.contains("gonka1bbb") && a.len() == 1);
        let allowed = discover(&["seed"], true, |_, path| {
            Ok(if path == PARAMS_PATH {
                br#"{"params":{"transfer_agent_access_params":{"allowed_transfer_addresses":["gonka1bbb"]}}}"#
                    .to_vec()
            } else {
                PARTICIPANTS.as_bytes().to_vec()
            })
        })
        .unwrap();
        assert_eq!(allowed.len(), 1);
        assert_eq!(allowed[0].address, "gonka1bbb");
        assert!(parse_allowlist(br#"{"params":{}}"#).is_err());
    }

    #[test]
    fn discovery_falls_through_dead_seeds() {
        let seeds = ["http://dead:1", "http://live:2"];
        let specs = discover(&seeds, false, |seed, path| {
            assert_eq!(path, PARTICIPANTS_PATH);
            if seed.contains("dead") { Err("refused".into()) } else { Ok(PARTICIPANTS.as_bytes().to_vec()) }
        })
        .unwrap();
        assert_eq!(specs.len(), 2);
        assert!(discover(&seeds[..1], false, |_, _| Err("refused".into())).is_err());
    }
}
