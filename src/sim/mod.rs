//! The Gonka node simulator: an OpenAI-compatible node over real TCP, for tests, load tests and the
//! `dev` demo. Chat completions (streamed and not), completions, embeddings and models; deterministic
//! text ([`text`]); usage; configurable time to first token, tokens per second and completion length
//! (bounded by `max_tokens`); fault injection (errors, 429 "Transfer Agent capacity reached", drops
//! mid-stream, stalls), changeable at run time through `POST /sim/faults`; counters at `GET /sim/stats`.
//!
//! One simulator process can stand for several nodes, each on its own port.

pub mod server;
pub mod text;

use crate::runtime::{Signal, bind_group, spawn_runtime_thread};
use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::thread::JoinHandle;

/// Behaviour that can change while the simulator runs.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SimParams {
    /// Time to the first token, ms.
    pub ttft_ms: u64,
    /// Tokens per second after the first; 0 = as fast as possible.
    pub tokens_per_s: f64,
    /// Completion length when `max_tokens` does not cut it shorter.
    pub completion_tokens: u64,
    /// Share of requests answered 500.
    pub error_rate: f64,
    /// Share of requests answered 429 "Transfer Agent capacity reached".
    pub capacity_rate: f64,
    /// Share of answers cut off half-way (the connection is closed).
    pub drop_rate: f64,
    /// Share of answers that stop half-way and hang.
    pub stall_rate: f64,
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
        }
    }
}

/// Start-time configuration.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// One address per simulated node (port 0 picks a free port).
    pub listen: Vec<SocketAddr>,
    pub models: Vec<String>,
    /// Require `Authorization: Bearer <key>`.
    pub api_key: Option<String>,
    pub workers: usize,
    pub params: SimParams,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            listen: vec![SocketAddr::from(([127, 0, 0, 1], 0))],
            models: vec!["gonka/sim-small".into()],
            api_key: None,
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
}

impl SimStats {
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "open_connections": self.open_connections.load(Ordering::Relaxed),
            "requests": self.requests.load(Ordering::Relaxed),
            "streams_started": self.streams_started.load(Ordering::Relaxed),
            "streams_completed": self.streams_completed.load(Ordering::Relaxed),
            "streams_aborted": self.streams_aborted.load(Ordering::Relaxed),
            "faults_injected": self.faults_injected.load(Ordering::Relaxed),
        })
    }
}

/// State shared by the simulator's threads.
#[derive(Debug)]
pub struct Sim {
    pub models: Vec<String>,
    pub api_key: Option<String>,
    /// Behaviour of each simulated node (index = listen address order), changed by `POST /sim/faults`.
    pub params: Vec<ArcSwap<SimParams>>,
    /// Counters of the whole process.
    pub stats: SimStats,
}

/// A running simulator.
#[derive(Debug)]
pub struct SimHandle {
    /// The address of each simulated node.
    pub addrs: Vec<SocketAddr>,
    pub sim: Arc<Sim>,
    stop: Arc<Signal>,
    threads: Vec<JoinHandle<()>>,
}

impl SimHandle {
    /// The OpenAI base URL of node `i`.
    pub fn base_url(&self, i: usize) -> String {
        format!("http://{}/v1", self.addrs[i])
    }

    pub fn stop(mut self) {
        self.stop.raise();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Starts the simulator on its own threads.
pub fn start(config: SimConfig) -> io::Result<SimHandle> {
    let workers = config.workers.max(1);
    let sim = Arc::new(Sim {
        models: config.models.clone(),
        api_key: config.api_key.clone(),
        params: config
            .listen
            .iter()
            .map(|_| ArcSwap::from_pointee(config.params.clone()))
            .collect(),
        stats: SimStats::default(),
    });
    let mut addrs = Vec::new();
    let mut per_worker: Vec<Vec<(usize, std::net::TcpListener)>> = (0..workers).map(|_| Vec::new()).collect();
    for (node, addr) in config.listen.iter().enumerate() {
        let (actual, listeners) = bind_group(*addr, workers, 4096)?;
        addrs.push(actual);
        for (w, l) in listeners.into_iter().enumerate() {
            per_worker[w].push((node, l));
        }
    }
    let stop = Arc::new(Signal::default());
    let mut threads = Vec::new();
    for (w, listeners) in per_worker.into_iter().enumerate() {
        let sim = Arc::clone(&sim);
        let stop = Arc::clone(&stop);
        threads.push(spawn_runtime_thread(format!("sim-{w}"), move || {
            server::run(sim, listeners, stop, w as u64)
        })?);
    }
    Ok(SimHandle {
        addrs,
        sim,
        stop,
        threads,
    })
}
