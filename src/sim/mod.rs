//! The Gonka node simulator: an OpenAI-compatible node over real TCP, for tests, load tests and the
//! `dev` demo. Chat completions (streamed and not), completions, embeddings and models; deterministic
//! text ([`text`]); tool calls and reasoning (`reply`: a request whose last user message names one of
//! its `tools` gets a call to it, streamed as argument fragments; `--reasoning-tokens` makes it think);
//! usage; configurable time to first token, tokens per second and completion length
//! (bounded by `max_tokens`); fault injection (errors, 429 "Transfer Agent capacity reached", drops
//! mid-stream, stalls), changeable per node at run time through `POST /sim/faults`; counters at
//! `GET /sim/stats`.
//!
//! One simulator process stands for several nodes, each on its own port. In gonka mode each node has a
//! `gonka1…` address and checks requests the way a Transfer Agent does: a signature over the body, the
//! timestamp and its own address, made by the key of `X-Requester-Address`; a fresh timestamp (60 s old
//! at most, 30 s ahead); each signature used once. Any node serves the epoch's participants (every
//! simulated node), the Transfer Agent allowlist, and finished completions by id.
//!
//! The same listeners serve a simulated Gonka chain ([`chain`]): the Cosmos REST API (accounts, bank
//! balances, blocks, broadcast and lookup of transactions), and the escrow signed inference pays from.

mod account;
pub mod chain;
mod escrow;
mod node;
mod prompt;
mod reply;
pub use node::{Sim, SimNode, SimParams, SimStats, node_key_hex};
pub mod server;
pub mod text;
mod wire;

use crate::rt::net::bind_group;
use crate::rt::shutdown::Shutdown;
use crate::rt::spawn_runtime_thread;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;

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
    #[command(flatten)]
    pub chain: chain::ChainConfig,
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
            chain: chain::ChainConfig::default(),
        }
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
        let mut node = SimNode::new(i, format!("{scheme}://{host}"), &config.params)?;
        node.allowed = config.allowlist.as_ref().is_none_or(|a| a.contains(&i));
        node.models = config.node_models.0.get(i).cloned().unwrap_or_else(|| config.models.clone());
        nodes.push(node);
    }
    for i in 0..config.dead_participants {
        // A port that was free a moment ago and is closed now: connections to it are refused.
        let port = bind_group(SocketAddr::from(([127, 0, 0, 1], 0)), 1, 1)?.0.port();
        let mut node = SimNode::new(addrs.len() + i, format!("{scheme}://127.0.0.1:{port}"), &config.params)?;
        node.models = config.models.clone();
        node.dead = true;
        nodes.push(node);
    }
    let sim = Arc::new(Sim::new(
        config.models.clone(),
        config.api_key.clone(),
        config.gonka,
        nodes,
        chain::Chain::new(&config.chain),
    ));
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
