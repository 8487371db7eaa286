//! The validated settings the gateway runs with: plain data in the types the code uses (`SocketAddr`,
//! `Duration`, `NonZero*`, enums), each option checked once at start so nothing later parses or
//! re-checks it.

use super::error::{ConfigError, invalid};
use crate::http::HttpLimits;
use crate::model::ModelSpec;
use std::net::SocketAddr;
use std::num::{NonZeroU32, NonZeroUsize};
use std::path::PathBuf;
use std::time::Duration;

/// A secret value (key, token): its `Debug` never shows it, so settings can be printed safely.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// Node protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeKind {
    /// OpenAI-compatible with an optional Bearer key (brokers, devshard gateways).
    OpenAi,
    /// A Gonka Transfer Agent, reached with signed requests.
    Gonka,
}

/// A node URL, split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeUrl {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    /// Path prefix without a trailing slash (`/v1`), possibly empty.
    pub base_path: String,
}

impl NodeUrl {
    pub fn parse(s: &str) -> Result<Self, ConfigError> {
        let url = url::Url::parse(s).map_err(|e| invalid(format!("node url {s:?}: {e}")))?;
        let tls = match url.scheme() {
            "http" => false,
            "https" => true,
            other => {
                return Err(invalid(format!("node url {s:?}: scheme {other} is not http or https")));
            }
        };
        let host = match url.host() {
            Some(url::Host::Ipv6(a)) => a.to_string(),
            Some(h) => h.to_string(),
            None => return Err(invalid(format!("node url {s:?} has no host"))),
        };
        let port = url.port_or_known_default().unwrap_or(if tls { 443 } else { 80 });
        if url.query().is_some() || url.fragment().is_some() {
            return Err(invalid(format!("node url {s:?}: no query or fragment allowed")));
        }
        let base_path = url.path().trim_end_matches('/').to_owned();
        Ok(Self { tls, host, port, base_path })
    }

    /// Where the blocking client sends to, at `addrs` (empty: resolved when sending).
    pub fn target<'a>(&'a self, addrs: &'a [SocketAddr]) -> crate::http::client::Target<'a> {
        crate::http::client::Target { host: &self.host, port: self.port, tls: self.tls, addrs }
    }

    /// The `Host` header value.
    pub fn authority(&self) -> String {
        self.target(&[]).authority()
    }
}

impl std::fmt::Display for NodeUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}://{}{}", if self.tls { "https" } else { "http" }, self.authority(), self.base_path)
    }
}

/// A validated node.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    pub url: NodeUrl,
    pub kind: NodeKind,
    /// The Bearer key, read from the environment at start. Never logged.
    pub api_key: Option<Secret>,
    pub models: Vec<String>,
    /// For `gonka` nodes: the address requests are signed for.
    pub transfer_address: Option<String>,
}

/// Validated `[upstream.gonka]`.
#[derive(Debug, Clone)]
pub struct GonkaSettings {
    /// The signing key (hex). Never logged.
    pub private_key: Secret,
    pub seeds: Vec<NodeUrl>,
    pub use_allowlist: bool,
    pub refresh: Duration,
}

/// Validated `[notifications]` (present only when `url` is set).
#[derive(Debug, Clone)]
pub struct NotificationSettings {
    pub url: NodeUrl,
    /// The HMAC-SHA256 key the bodies are signed with, from `secret_env`. Never logged.
    pub secret: Secret,
    /// 0: no `balance.low`.
    pub low_balance_ngonka: u64,
    pub timeout: Duration,
    pub max_attempts: u32,
    pub backoff: Duration,
    pub max_backoff: Duration,
    pub queue_size: usize,
    pub check_interval: Duration,
}

/// Validated `[chain]` (present only when `enabled`).
#[derive(Debug, Clone)]
pub struct ChainSettings {
    /// Whether this instance has direct keys (`chain.direct_keys`).
    pub direct_keys: bool,
    /// The Cosmos REST API's base, without a trailing slash.
    pub rest_url: String,
    pub chain_id: String,
    pub denom: String,
    pub fee_ngonka: u64,
    pub gas_limit: u64,
    /// The treasury's private key (hex), read from `treasury_key_env`. Never logged.
    pub treasury_key: Secret,
    pub float_ngonka: u64,
    pub top_up_below_ngonka: u64,
    pub poll: Duration,
    pub timeout: Duration,
}

/// Validated `[deposits]` (present only when enabled, which needs `[chain]`).
#[derive(Debug, Clone)]
pub struct DepositSettings {
    /// The deposit key (64 hex digits), read from `key_env`. Never logged.
    pub key: Secret,
    pub confirmations: u64,
    pub rate_ppm: u64,
    pub fee_bps: u32,
    pub min_ngonka: u64,
    /// 0: the latest block at the first start.
    pub start_height: u64,
}

/// How SQLite syncs commits (`store.synchronous`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Synchronous {
    Full,
    Normal,
}

/// What a core waits for before it sends a request's last bytes (`journal.wait_for`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitFor {
    /// The record is written (survives `kill -9`).
    Write,
    /// The record is written and fsync'd (survives a power loss).
    Fsync,
}

/// A PostgreSQL store shared by several instances.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostgresSettings {
    /// `postgres://user@host:port/db` (libpq URL or key=value form).
    pub url: String,
    /// Schema the tables live in (created when missing); also names the change-feed channel
    /// (`<schema>_changes`).
    pub schema: String,
    /// This instance's id: its journal position and its spend are kept under it.
    pub instance_id: String,
    /// Connections in the pool.
    pub pool_size: u32,
}

/// The validated store choice.
#[derive(Debug, Clone)]
pub enum StoreSettings {
    Sqlite { path: PathBuf, synchronous: Synchronous },
    Postgres(PostgresSettings),
}

/// Validated `[cluster]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSettings {
    pub instance_id: String,
    pub instances: u32,
    /// `limits.redis_url`: budgets are partly leased between instances through Redis.
    pub redis_url: Option<String>,
}

/// Validated `[limits]` and `[journal]`.
#[derive(Debug, Clone)]
pub struct BillingSettings {
    /// Requests per minute of a key without its own limit (0: none), as written (`limits.default_rpm`):
    /// the whole cluster's rate. With several instances each enforces a share of it, split where the
    /// limits are built from these settings.
    pub default_rpm: u32,
    pub default_max_tokens: u64,
    /// The fit policy of keys without their own.
    pub fit_max_tokens: crate::model::FitPolicy,
    pub min_fit_tokens: u64,
    /// How long, and how many bytes of it, a node's answer is still read after the client left.
    pub drain_after_client_gone: Duration,
    pub drain_after_client_gone_bytes: u64,
    /// Completion tokens relayed between two progress marks of an answer.
    pub progress_tokens: u64,
    pub journal_dir: PathBuf,
    pub journal_wait: WaitFor,
    pub journal_fsync_interval: Duration,
}

/// Validated `[signup]` (enabled).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignupSettings {
    pub max_per_ip_per_hour: u32,
    pub max_per_hour: u32,
}

/// Validated `[keys]`.
#[derive(Debug, Clone)]
pub struct KeySettings {
    /// From `hash_secret_env` when set; otherwise the runtime loads or generates one.
    pub hash_secret: Option<String>,
    pub max_keys_per_account: usize,
    pub snapshot_interval: Duration,
    pub reconcile_interval: Duration,
    /// How long a dashboard sign-in lasts.
    pub dashboard_session_ttl: Duration,
}

#[derive(Debug, Clone, Copy)]
pub struct ServerTimeouts {
    pub head: Duration,
    pub body: Duration,
    pub idle: Duration,
    pub write: Duration,
    pub shutdown_grace: Duration,
}

#[derive(Debug, Clone)]
pub struct UpstreamSettings {
    pub connect_timeout: Duration,
    pub head_timeout: Duration,
    pub read_timeout: Duration,
    pub max_attempts: NonZeroU32,
    pub pool_max_idle_per_node: usize,
    pub pool_idle_timeout: Duration,
    pub eject_after_failures: NonZeroU32,
    pub eject_for: Duration,
    pub probe_interval: Duration,
    pub nodes: Vec<NodeSpec>,
    /// Present when any node is of kind `gonka` or discovery seeds are set.
    pub gonka: Option<GonkaSettings>,
    pub tls_system_roots: bool,
    pub tls_extra_ca: Option<PathBuf>,
}

/// Everything the gateway runs with, validated.
#[derive(Debug, Clone)]
pub struct Settings {
    pub workers: NonZeroUsize,
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    /// From `admin.token_env` when set; otherwise the runtime generates or loads one.
    pub admin_token: Option<String>,
    pub http: HttpLimits,
    pub timeouts: ServerTimeouts,
    pub read_buffer_bytes: usize,
    pub relay_buffer_bytes: usize,
    pub backlog: i32,
    /// `server.max_connections`: 0 = derived from the open-files limit at start.
    pub max_connections: usize,
    pub admin_max_connections: usize,
    /// Memory for request bodies, all cores together, bytes (≥ `http.max_body_bytes`).
    pub body_memory_bytes: usize,
    /// How long a body waits for room in `body_memory_bytes` before it is refused.
    pub body_memory_wait: Duration,
    /// `(certificate chain, key)` PEM paths when the public listener speaks HTTPS.
    pub tls: Option<(PathBuf, PathBuf)>,
    pub upstream: UpstreamSettings,
    pub models: Vec<ModelSpec>,
    pub store: StoreSettings,
    pub cluster: ClusterSettings,
    pub keys: KeySettings,
    pub billing: BillingSettings,
    /// `responses.retention_days`: how long a kept response lives.
    pub responses_retention: Duration,
    /// `[chain]` when enabled: direct keys exist.
    pub chain: Option<ChainSettings>,
    /// `[referrals]`.
    pub referrals: crate::model::ReferralPolicy,
    /// `[signup]` when enabled.
    pub signup: Option<SignupSettings>,
    /// `[deposits]` when enabled: deposits are watched for and credited.
    pub deposits: Option<DepositSettings>,
    /// `[notifications]` when a `url` is set: webhooks are sent.
    pub notifications: Option<NotificationSettings>,
    pub log_level: log::LevelFilter,
    pub access_log: bool,
    /// The `Access-Control-Allow-Origin` of public answers (`*` or one origin); `None`: no CORS.
    pub cors_allow_origin: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_urls_split() {
        let u = NodeUrl::parse("https://broker.example.com/v1/").unwrap();
        assert_eq!(
            (u.tls, u.host.as_str(), u.port, u.base_path.as_str()),
            (true, "broker.example.com", 443, "/v1")
        );
        assert_eq!(u.authority(), "broker.example.com");
        let u = NodeUrl::parse("http://[::1]:9000").unwrap();
        assert_eq!(u.authority(), "[::1]:9000");
        assert_eq!(u.base_path, "");
        assert!(NodeUrl::parse("ftp://x").is_err());
    }
}
