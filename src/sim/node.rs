//! The simulated network's state: each node (its address, models, faults, the signatures it has seen)
//! and what the whole simulator counts and remembers.

use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{HashMap, VecDeque};
use std::io;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// Behaviour that can change while the simulator runs (also the command line's flags).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, clap::Args)]
#[serde(deny_unknown_fields, default)]
pub struct SimParams {
    /// Time to the first token, ms.
    #[arg(long, default_value_t = 0)]
    pub ttft_ms: u64,
    /// Tokens per second after the first; 0 = as fast as possible.
    #[arg(long, default_value_t = 0.0)]
    pub tokens_per_s: f64,
    /// Completion length when `max_tokens` does not cut it shorter.
    #[arg(long, default_value_t = 16)]
    pub completion_tokens: u64,
    /// Share of requests answered 500.
    #[arg(long, default_value_t = 0.0)]
    pub error_rate: f64,
    /// Share of requests answered 429 "Transfer Agent capacity reached".
    #[arg(long, default_value_t = 0.0)]
    pub capacity_rate: f64,
    /// Share of answers cut off half-way (the connection is closed).
    #[arg(long, default_value_t = 0.0)]
    pub drop_rate: f64,
    /// Share of answers that stop half-way and hang.
    #[arg(long, default_value_t = 0.0)]
    pub stall_rate: f64,
    /// A misbehaving node: completion tokens generated past the `max_tokens` it was sent.
    #[arg(long, default_value_t = 0)]
    pub overrun_tokens: u64,
    /// A thinking model: chat answers start with this many tokens of `reasoning_content`.
    #[arg(long, default_value_t = 0)]
    pub reasoning_tokens: u64,
}

impl Default for SimParams {
    fn default() -> Self {
        Self {
            ttft_ms: 0,
            tokens_per_s: 0.0,
            completion_tokens: 16,
            error_rate: 0.0,
            capacity_rate: 0.0,
            drop_rate: 0.0,
            stall_rate: 0.0,
            overrun_tokens: 0,
            reasoning_tokens: 0,
        }
    }
}

/// Counters, shared by every simulated node of the process.
#[derive(Debug, Default)]
pub struct SimStats {
    pub open_connections: AtomicI64,
    pub requests: AtomicU64,
    pub streams_started: AtomicU64,
    pub streams_completed: AtomicU64,
    /// Streams whose client went away before the end.
    pub streams_aborted: AtomicU64,
    pub faults_injected: AtomicU64,
    /// Gonka mode: requests refused for their signature, timestamp or a reused signature.
    pub auth_refused: AtomicU64,
    pub replays_refused: AtomicU64,
}

impl SimStats {
    pub fn to_json(&self) -> serde_json::Value {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        serde_json::json!({
            "open_connections": self.open_connections.load(Ordering::Relaxed),
            "requests": get(&self.requests),
            "streams_started": get(&self.streams_started),
            "streams_completed": get(&self.streams_completed),
            "streams_aborted": get(&self.streams_aborted),
            "faults_injected": get(&self.faults_injected),
            "auth_refused": get(&self.auth_refused),
            "replays_refused": get(&self.replays_refused),
        })
    }
}

/// One simulated node.
#[derive(Debug)]
pub struct SimNode {
    pub params: ArcSwap<SimParams>,
    /// Its `gonka1…` address (the transfer address requests to it are signed for).
    pub address: String,
    /// `http(s)://host:port`, as a participant's `inference_url`.
    pub inference_url: String,
    pub allowed: bool,
    /// The models it serves.
    pub models: Vec<String>,
    /// Listed as a participant but not running (its address refuses connections).
    pub dead: bool,
    /// Signatures seen, with their timestamps (ns), kept while they could still be fresh.
    used: Mutex<HashMap<String, u64>>,
    /// Requests this node served.
    pub requests: AtomicU64,
}

/// The deterministic key of simulated node `i`.
pub fn node_key_hex(i: usize) -> String {
    Sha256::digest(format!("gonka-sim-node/{i}").as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// The account address of node `i`.
fn node_address(i: usize) -> io::Result<String> {
    super::account::address_of_key(&node_key_hex(i))
        .ok_or_else(|| io::Error::other("a node key is not a valid key"))
}

impl SimNode {
    /// Node `i` at `inference_url`: allowed, serving no model until told, alive.
    pub(super) fn new(i: usize, inference_url: String, params: &SimParams) -> io::Result<Self> {
        Ok(Self {
            params: ArcSwap::from_pointee(params.clone()),
            address: node_address(i)?,
            inference_url,
            allowed: true,
            models: Vec::new(),
            dead: false,
            used: Mutex::new(HashMap::new()),
            requests: AtomicU64::new(0),
        })
    }

    /// Records `signature` as used; `false` when it was used before.
    pub fn claim(&self, signature: &str, timestamp_ns: u64, now_ns: u64) -> bool {
        let Ok(mut used) = self.used.lock() else { return false };
        if used.len() > 100_000 {
            // Signatures older than the freshness window can never be accepted again anyway.
            used.retain(|_, ts| now_ns.saturating_sub(*ts) < 120_000_000_000);
        }
        used.insert(signature.to_owned(), timestamp_ns).is_none()
    }
}

/// State shared by the simulator's threads.
#[derive(Debug)]
pub struct Sim {
    pub models: Vec<String>,
    pub api_key: Option<String>,
    pub gonka: bool,
    pub nodes: Vec<SimNode>,
    /// The simulated chain.
    pub chain: super::chain::Chain,
    /// Counters of the whole process.
    pub stats: SimStats,
    /// Finished completions by id (the latest ones), for `GET /v1/chat/completions/{id}`.
    completions: Mutex<VecDeque<(String, String)>>,
}

const KEPT_COMPLETIONS: usize = 10_000;

impl Sim {
    pub(super) fn new(
        models: Vec<String>,
        api_key: Option<String>,
        gonka: bool,
        nodes: Vec<SimNode>,
        chain: super::chain::Chain,
    ) -> Self {
        Self {
            models,
            api_key,
            gonka,
            nodes,
            chain,
            stats: SimStats::default(),
            completions: Mutex::new(VecDeque::new()),
        }
    }

    pub fn remember(&self, id: &str, body: String) {
        if let Ok(mut c) = self.completions.lock() {
            if c.len() >= KEPT_COMPLETIONS {
                c.pop_front();
            }
            c.push_back((id.to_owned(), body));
        }
    }

    pub fn completion(&self, id: &str) -> Option<String> {
        self.completions.lock().ok()?.iter().rev().find(|(i, _)| i == id).map(|(_, b)| b.clone())
    }

    /// The participants answer, as a node of the network serves it.
    pub fn participants_json(&self) -> serde_json::Value {
        let participants: Vec<serde_json::Value> = self
            .nodes
            .iter()
            .map(|n| {
                serde_json::json!({
                    "index": n.address,
                    "validator_key": "",
                    "weight": 1,
                    "inference_url": n.inference_url,
                    "models": n.models,
                })
            })
            .collect();
        serde_json::json!({
            "active_participants": {"participants": participants, "epoch_id": 1, "epoch_group_id": 1},
            "addresses": self.nodes.iter().map(|n| n.address.clone()).collect::<Vec<_>>(),
            "active_participants_bytes": "",
            "proof_ops": {"ops": []},
            "validators": [],
            "block": {},
            "excluded_participants": [],
        })
    }

    /// The chain parameters answer with the Transfer Agent allowlist.
    pub fn params_json(&self) -> serde_json::Value {
        let allowed: Vec<&str> =
            self.nodes.iter().filter(|n| n.allowed).map(|n| n.address.as_str()).collect();
        serde_json::json!({"params": {"transfer_agent_access_params": {"allowed_transfer_addresses": allowed}}})
    }
}
