//! The Gonka node simulator: an OpenAI-compatible node over real TCP, for tests, load tests and the
//! `dev` demo. Chat completions (streamed and not), completions, embeddings and models; deterministic
//! text ([`text`]); usage; configurable time to first token, tokens per second and completion length
//! (bounded by `max_tokens`); fault injection (errors, 429 "Transfer Agent capacity reached", drops
//! mid-stream, stalls), changeable per node at run time through `POST /sim/faults`; counters at
//! `GET /sim/stats`.
//!
//! One simulator process stands for several nodes, each on its own port. In gonka mode each node has a
//! `gonka1…` address and checks requests the way a Transfer Agent does: a signature over the body, the
//! timestamp and its own address, made by the key of `X-Requester-Address`; a fresh timestamp (60 s old
//! at most, 30 s ahead); each signature used once. Any node serves the epoch's participants (every
//! simulated node), the Transfer Agent allowlist, and finished completions by id.

mod account;
pub mod server;
pub mod text;
mod wire;

use crate::rt::net::bind_group;
use crate::rt::shutdown::Shutdown;
use crate::rt::spawn_runtime_thread;
use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

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
        }
    }
}

/// The models of each node: nodes separated by `;`, models by `,` (`a;a,b;b`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeModels(pub Vec<Vec<String>>);

impl std::str::FromStr for NodeModels {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.trim().is_empty() {
            return Ok(Self::default());
        }
        let node =
            |n: &str| n.split(',').map(str::trim).filter(|m| !m.is_empty()).map(str::to_owned).collect();
        Ok(Self(s.split(';').map(node).collect()))
    }
}

/// Start-time configuration (the `sim` command's flags).
#[derive(Debug, Clone, clap::Args)]
pub struct SimConfig {
    /// Address of a simulated node; repeat for several nodes (port 0 picks a free port).
    #[arg(long, required = true)]
    pub listen: Vec<SocketAddr>,
    /// Additional simulated nodes on free ports of the first address's host.
    #[arg(long, default_value_t = 0)]
    pub extra_nodes: usize,
    /// Models served, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "gonka/sim-small")]
    pub models: Vec<String>,
    /// Require this Bearer key (openai mode).
    #[arg(long)]
    pub api_key: Option<String>,
    /// Check Gonka signatures (each node has a gonka1… address; participants and the allowlist are served).
    #[arg(long)]
    pub gonka: bool,
    /// Gonka mode: the nodes (by index, comma separated) on the Transfer Agent allowlist; default all.
    #[arg(long, value_delimiter = ',')]
    pub allowlist: Option<Vec<usize>>,
    /// Serve HTTPS with this PEM certificate chain (with --tls-key).
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key for --tls-cert.
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Models of each node, nodes separated by `;`, models by `,` (e.g. `a;a,b;b`); a node without an
    /// entry serves --models.
    #[arg(long, default_value = "", hide_default_value = true)]
    pub node_models: NodeModels,
    /// Gonka mode: participants listed at addresses where nothing runs (nodes that are down).
    #[arg(long, default_value_t = 0)]
    pub dead_participants: usize,
    /// Worker threads, each with its own runtime and a listener on every node's port.
    #[arg(long, default_value_t = 1)]
    pub workers: usize,
    #[command(flatten)]
    pub params: SimParams,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            listen: vec![SocketAddr::from(([127, 0, 0, 1], 0))],
            extra_nodes: 0,
            models: vec!["gonka/sim-small".into()],
            api_key: None,
            gonka: false,
            allowlist: None,
            tls_cert: None,
            tls_key: None,
            node_models: NodeModels::default(),
            dead_participants: 0,
            workers: 1,
            params: SimParams::default(),
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
    account::address_of_key(&node_key_hex(i)).ok_or_else(|| io::Error::other("a node key is not a valid key"))
}

impl SimNode {
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
    /// Counters of the whole process.
    pub stats: SimStats,
    /// Finished completions by id (the latest ones), for `GET /v1/chat/completions/{id}`.
    completions: Mutex<VecDeque<(String, String)>>,
}

const KEPT_COMPLETIONS: usize = 10_000;

impl Sim {
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

/// A running simulator.
#[derive(Debug)]
pub struct SimHandle {
    /// The address of each simulated node.
    pub addrs: Vec<SocketAddr>,
    pub sim: Arc<Sim>,
    stop: Shutdown,
    threads: Vec<JoinHandle<()>>,
}

impl SimHandle {
    /// The OpenAI base URL of node `i`.
    pub fn base_url(&self, i: usize) -> String {
        format!("{}/v1", self.sim.nodes[i].inference_url)
    }

    pub fn stop(mut self) {
        self.stop.trigger();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Starts the simulator on its own threads.
pub fn start(config: SimConfig) -> io::Result<SimHandle> {
    let workers = config.workers.max(1);
    let tls = match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => Some(crate::http::tls::ServerTls::from_pem_files(cert, key)?),
        _ => None,
    };
    let mut listen = config.listen.clone();
    if let Some(first) = config.listen.first() {
        listen.extend((0..config.extra_nodes).map(|_| SocketAddr::new(first.ip(), 0)));
    }
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mut addrs = Vec::new();
    let mut per_worker: Vec<Vec<(usize, std::net::TcpListener)>> = (0..workers).map(|_| Vec::new()).collect();
    for (node, addr) in listen.iter().enumerate() {
        let (actual, listeners) = bind_group(*addr, workers, 4096)?;
        addrs.push(actual);
        for (w, l) in listeners.into_iter().enumerate() {
            per_worker[w].push((node, l));
        }
    }
    let mut nodes = Vec::new();
    for (i, addr) in addrs.iter().enumerate() {
        // Over TLS a loopback node is named "localhost", which test certificates are made for.
        let host = if tls.is_some() && addr.ip().is_loopback() {
            format!("localhost:{}", addr.port())
        } else {
            addr.to_string()
        };
        nodes.push(SimNode {
            params: ArcSwap::from_pointee(config.params.clone()),
            address: node_address(i)?,
            inference_url: format!("{scheme}://{host}"),
            allowed: config.allowlist.as_ref().is_none_or(|a| a.contains(&i)),
            models: config.node_models.0.get(i).cloned().unwrap_or_else(|| config.models.clone()),
            dead: false,
            used: Mutex::new(HashMap::new()),
            requests: AtomicU64::new(0),
        });
    }
    for i in 0..config.dead_participants {
        // A port that was free a moment ago and is closed now: connections to it are refused.
        let port = bind_group(SocketAddr::from(([127, 0, 0, 1], 0)), 1, 1)?.0.port();
        nodes.push(SimNode {
            params: ArcSwap::from_pointee(config.params.clone()),
            address: node_address(addrs.len() + i)?,
            inference_url: format!("{scheme}://127.0.0.1:{port}"),
            allowed: true,
            models: config.models.clone(),
            dead: true,
            used: Mutex::new(HashMap::new()),
            requests: AtomicU64::new(0),
        });
    }
    let sim = Arc::new(Sim {
        models: config.models.clone(),
        api_key: config.api_key.clone(),
        gonka: config.gonka,
        nodes,
        stats: SimStats::default(),
        completions: Mutex::new(VecDeque::new()),
    });
    let stop = Shutdown::new();
    let mut threads = Vec::new();
    for (w, listeners) in per_worker.into_iter().enumerate() {
        let sim = Arc::clone(&sim);
        let stop = stop.clone();
        let tls = tls.clone();
        threads.push(spawn_runtime_thread(format!("sim-{w}"), move || {
            server::run(sim, listeners, stop, w as u64, tls)
        })?);
    }
    Ok(SimHandle { addrs, sim, stop, threads })
}
