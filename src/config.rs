//! Configuration: the file's shape (serde, `deny_unknown_fields`, every field defaulted and documented)
//! converted into validated [`Settings`] (`SocketAddr`, `Duration`, `NonZero*`). `config/gateway.toml`
//! shows every option with its default.

use crate::http::{HttpLimits, request::MAX_HEADERS_CAP};
use crate::model::ModelSpec;
use serde::Deserialize;
use std::net::SocketAddr;
use std::num::{NonZeroU32, NonZeroUsize};
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("invalid config {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid config: {0}")]
    Invalid(String),
}

fn invalid(msg: impl Into<String>) -> ConfigError {
    ConfigError::Invalid(msg.into())
}

// ---------------------------------------------------------------------------------------------------
// File shape
// ---------------------------------------------------------------------------------------------------

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

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConfigFile {
    /// Worker threads, one monoio runtime each. 0 = one per CPU.
    pub workers: usize,
    /// Directory for the embedded store, the usage journal and generated secrets.
    pub data_dir: String,
    pub server: ServerFile,
    pub admin: AdminFile,
    pub upstream: UpstreamFile,
    /// The models this gateway serves (`[[models]]`).
    pub models: Vec<ModelFile>,
    pub store: StoreFile,
    pub cluster: ClusterFile,
    pub keys: KeysFile,
    pub limits: LimitsFile,
    pub billing: BillingFile,
    pub journal: JournalFile,
    pub log: LogFile,
}

impl Default for ConfigFile {
    fn default() -> Self {
        Self {
            workers: 0,
            data_dir: "data".into(),
            server: ServerFile::default(),
            admin: AdminFile::default(),
            upstream: UpstreamFile::default(),
            models: Vec::new(),
            store: StoreFile::default(),
            cluster: ClusterFile::default(),
            keys: KeysFile::default(),
            limits: LimitsFile::default(),
            billing: BillingFile::default(),
            journal: JournalFile::default(),
            log: LogFile::default(),
        }
    }
}

/// `[store]`: where accounts, keys, credits and usage live.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreFile {
    /// `sqlite` (embedded, the default) or `postgres` (shared by several instances).
    pub kind: String,
    /// SQLite file; empty = `<data_dir>/gateway.db`.
    pub path: String,
    /// `full`: every commit survives a power loss (WAL fsync per commit). `normal`: survives a crash of
    /// the process; a power loss may lose the last commits.
    pub sqlite_synchronous: String,
    /// PostgreSQL connection URL (`postgres://user@host:port/db`); `kind = "postgres"` only.
    pub url: String,
    /// PostgreSQL schema for the tables (created when missing).
    pub schema: String,
    /// PostgreSQL connections in the control plane's pool.
    pub pool_size: u32,
}

impl Default for StoreFile {
    fn default() -> Self {
        Self {
            kind: "sqlite".into(),
            path: String::new(),
            sqlite_synchronous: "full".into(),
            url: String::new(),
            schema: "gateway".into(),
            pool_size: 4,
        }
    }
}

/// `[cluster]`: several instances sharing one PostgreSQL store.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterFile {
    /// This instance's id, unique among the instances and stable across its restarts (its journal
    /// position and its spend are kept under it). Empty = `default`.
    pub instance_id: String,
    /// How many instances share the store. Each one holds `1/instances` of every budget (balances,
    /// daily and monthly limits, requests per minute), so together they never exceed one.
    pub instances: u32,
}

impl Default for ClusterFile {
    fn default() -> Self {
        Self { instance_id: String::new(), instances: 1 }
    }
}

/// Validated `[cluster]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSettings {
    pub instance_id: String,
    pub instances: u32,
    /// `limits.redis_url`: budgets are partly leased between instances through Redis.
    pub redis_url: Option<String>,
}

impl ClusterFile {
    fn validate(&self) -> Result<ClusterSettings, ConfigError> {
        let id = if self.instance_id.is_empty() { "default" } else { self.instance_id.as_str() };
        if id.len() > 64 || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
            return Err(invalid(format!(
                "cluster.instance_id {id:?} must be 1-64 of A-Z, a-z, 0-9, - and _"
            )));
        }
        if self.instances == 0 || self.instances > 1024 {
            return Err(invalid("cluster.instances must be between 1 and 1024"));
        }
        Ok(ClusterSettings { instance_id: id.to_owned(), instances: self.instances, redis_url: None })
    }
}

/// `[limits]`: rate limits and the worst case a request holds.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsFile {
    /// Requests per minute of a key without its own `rate_limit_rpm` (managed keys, and child keys
    /// created without one). 0 = no limit.
    pub default_rpm: u32,
    /// Completion tokens held (and forwarded as `max_tokens`) for a request that sets no
    /// `max_tokens`/`max_completion_tokens`.
    pub default_max_tokens: u64,
    /// When a request's worst case does not fit what is left of its budgets, lower the `max_tokens`
    /// sent to the node to what fits: `unset` (only for requests that did not set one), `always` (an
    /// explicit `max_tokens` too) or `never`. Keys may override it (`fit_max_tokens`).
    pub fit_max_tokens: String,
    /// The fewest completion tokens a fitted request is sent with; below that it is refused.
    pub min_fit_tokens: u64,
    /// Several instances: Redis through which they lease budgets from each other (`redis://host:port`).
    /// Empty = each instance keeps a fixed share of every budget.
    pub redis_url: String,
}

impl Default for LimitsFile {
    fn default() -> Self {
        Self {
            default_rpm: 60,
            default_max_tokens: 4096,
            fit_max_tokens: "unset".into(),
            min_fit_tokens: 256,
            redis_url: String::new(),
        }
    }
}

/// `[billing]`: what a request pays when it does not end normally.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BillingFile {
    /// After a client leaves, the node's answer is still read (not relayed) for up to this long, ms, to
    /// learn its usage: what the node generated is paid for.
    pub drain_after_client_gone_ms: u64,
    /// ... and up to this many bytes of it.
    pub drain_after_client_gone_bytes: u64,
}

impl Default for BillingFile {
    fn default() -> Self {
        Self { drain_after_client_gone_ms: 10_000, drain_after_client_gone_bytes: 16 * 1024 * 1024 }
    }
}

/// `[journal]`: the local usage journal.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JournalFile {
    /// Directory; empty = `<data_dir>/journal`.
    pub dir: String,
    /// What a request's last bytes wait for: `write` (its usage record is written to the journal, so it
    /// survives `kill -9`) or `fsync` (also fsync'd, so it survives a power loss; slower).
    pub wait: String,
    /// Group fsync period of the journal, ms.
    pub fsync_interval_ms: u64,
    /// A request still being relayed journals a progress mark (what it has cost so far) every this many
    /// completion tokens relayed, so a crash of the process loses at most that many per answer.
    pub progress_tokens: u64,
}

impl Default for JournalFile {
    fn default() -> Self {
        Self { dir: String::new(), wait: "write".into(), fsync_interval_ms: 20, progress_tokens: 512 }
    }
}

/// `[keys]`: API keys.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KeysFile {
    /// Environment variable holding the secret keys are hashed under (at least 32 bytes). When unset, one
    /// is generated on first start and kept in `<data_dir>/key_secret` (mode 0600). Changing it
    /// invalidates every key.
    pub hash_secret_env: String,
    /// Keys an account may hold (managed, management and child keys that are not archived). Over it: 403
    /// `key_limit_reached`.
    pub max_keys_per_account: usize,
    /// How often the key snapshot is rewritten when keys changed, ms (it is also written at shutdown).
    pub snapshot_interval_ms: u64,
    /// How often the key cache is reconciled against the store, ms.
    pub reconcile_interval_ms: u64,
}

impl Default for KeysFile {
    fn default() -> Self {
        Self {
            hash_secret_env: "GATEWAY_KEY_SECRET".into(),
            max_keys_per_account: 50,
            snapshot_interval_ms: 60_000,
            reconcile_interval_ms: 30_000,
        }
    }
}

/// `[server]`: the public listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerFile {
    /// Address of the public (inference and account) listener.
    pub listen: String,
    /// Largest request head (request line and headers), bytes. Over it: 431.
    pub max_head_bytes: usize,
    /// Most header fields in a request. Over it: 431.
    pub max_headers: usize,
    /// Largest request body, bytes (the Gonka network's own limit is 10 MiB). Over it: 413.
    pub max_body_bytes: usize,
    /// Time allowed to receive a complete request head once its first byte arrived, ms.
    pub head_timeout_ms: u64,
    /// Time allowed to receive a request body, ms.
    pub body_timeout_ms: u64,
    /// How long an idle keep-alive connection is kept, ms.
    pub idle_timeout_ms: u64,
    /// Time allowed for one write to a client to complete, ms.
    pub write_timeout_ms: u64,
    /// On SIGTERM/SIGINT, how long in-flight requests may take to finish, ms.
    pub shutdown_grace_ms: u64,
    /// Initial read buffer per connection, bytes (it grows for large heads and bodies, then shrinks back).
    pub read_buffer_bytes: usize,
    /// Upstream read buffer per in-flight request, bytes.
    pub relay_buffer_bytes: usize,
    /// Listen backlog.
    pub backlog: i32,
    /// Browser origins allowed to call the public listener (CORS): `["*"]` any origin (never with
    /// credentials), one origin such as `"https://app.example.com"`, or `[]` for no CORS at all.
    pub cors_allow_origins: Vec<String>,
    /// Client connections the public listener holds at once; past it a connection is answered 503 and
    /// closed. 0 = derived from the open-files limit (see [`crate::server::limits`]).
    pub max_connections: usize,
    /// Memory for request bodies being read or held, all connections together, bytes. At least
    /// `max_body_bytes`.
    pub body_memory_bytes: usize,
    /// How long a body that does not fit in `body_memory_bytes` waits for room before it is refused
    /// (503, `Retry-After: 1`), ms.
    pub body_memory_wait_ms: u64,
    /// `[server.tls]`: serve HTTPS on the public listener.
    pub tls: ServerTlsFile,
}

/// `[server.tls]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerTlsFile {
    /// PEM certificate chain; with `key_path`, the public listener speaks HTTPS only. Empty = plain HTTP.
    pub cert_path: String,
    /// PEM private key.
    pub key_path: String,
}

/// `[upstream.tls]`: how `https://` nodes are checked.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamTlsFile {
    /// Trust the system's root certificates besides Mozilla's (always trusted).
    pub system_roots: bool,
    /// A PEM file of extra CA certificates (a private CA); empty = none.
    pub extra_ca_path: String,
}

impl Default for UpstreamTlsFile {
    fn default() -> Self {
        Self { system_roots: true, extra_ca_path: String::new() }
    }
}

impl Default for ServerFile {
    fn default() -> Self {
        let limits = HttpLimits::default();
        Self {
            listen: "0.0.0.0:8080".into(),
            max_head_bytes: limits.max_head_bytes,
            max_headers: limits.max_headers,
            max_body_bytes: limits.max_body_bytes,
            head_timeout_ms: 10_000,
            body_timeout_ms: 60_000,
            idle_timeout_ms: 60_000,
            write_timeout_ms: 60_000,
            shutdown_grace_ms: 30_000,
            read_buffer_bytes: 4096,
            relay_buffer_bytes: 8192,
            backlog: 4096,
            cors_allow_origins: vec!["*".into()],
            max_connections: 0,
            body_memory_bytes: 256 * 1024 * 1024,
            body_memory_wait_ms: 2000,
            tls: ServerTlsFile::default(),
        }
    }
}

/// `[admin]`: the admin listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminFile {
    /// Address of the admin listener; keep it on loopback or a private network.
    pub listen: String,
    /// Environment variable holding the admin token. When unset, a token is generated on first start and
    /// kept in `<data_dir>/admin_token`.
    pub token_env: String,
    /// Connections the admin listener holds at once; their descriptors are kept out of the public
    /// listener's budget, so a flood of public connections never takes the admin listener down.
    pub max_connections: usize,
}

impl Default for AdminFile {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8081".into(),
            token_env: "GATEWAY_ADMIN_TOKEN".into(),
            max_connections: 256,
        }
    }
}

/// `[upstream]`: how nodes are reached.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamFile {
    /// TCP connect timeout, ms.
    pub connect_timeout_ms: u64,
    /// Time from sending a request until the node's response head arrives, ms.
    pub response_head_timeout_ms: u64,
    /// Longest silence between two reads of a response body (a stalled stream), ms.
    pub read_timeout_ms: u64,
    /// Nodes tried for one request (first try included) on connect failure, 5xx or 429.
    pub max_attempts: u32,
    /// Idle keep-alive connections kept per node on each core.
    pub pool_max_idle_per_node: usize,
    /// Idle keep-alive connections older than this are closed, ms.
    pub pool_idle_timeout_ms: u64,
    /// Consecutive failures after which a node is ejected.
    pub eject_after_failures: u32,
    /// How long an ejected node rests before it is probed, ms.
    pub eject_ms: u64,
    /// How often ejected nodes are probed (`GET {base}/models`), ms.
    pub probe_interval_ms: u64,
    /// The nodes (`[[upstream.nodes]]`).
    pub nodes: Vec<NodeFile>,
    /// `[upstream.gonka]`: signing and discovery for Gonka nodes.
    pub gonka: GonkaFile,
    /// `[upstream.tls]`.
    pub tls: UpstreamTlsFile,
}

/// `[upstream.gonka]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GonkaFile {
    /// Environment variable holding the Gonka account's private key (hex) that signs requests to `gonka`
    /// nodes. Required when any node is of kind `gonka` or `seeds` is set.
    pub private_key_env: String,
    /// Node URLs to discover the current epoch's participants from (`GET {seed}/v1/epochs/current/
    /// participants`). Discovered nodes serve the models they list.
    pub seeds: Vec<String>,
    /// Keep only participants in the chain's Transfer Agent allowlist
    /// (`/chain-api/productscience/inference/inference/params`).
    pub use_allowlist: bool,
    /// How often discovery runs, ms.
    pub refresh_ms: u64,
}

impl Default for GonkaFile {
    fn default() -> Self {
        Self {
            private_key_env: "GONKA_PRIVATE_KEY".into(),
            seeds: Vec::new(),
            use_allowlist: false,
            refresh_ms: 60_000,
        }
    }
}

impl Default for UpstreamFile {
    fn default() -> Self {
        Self {
            connect_timeout_ms: 3_000,
            response_head_timeout_ms: 120_000,
            read_timeout_ms: 120_000,
            max_attempts: 3,
            pool_max_idle_per_node: 128,
            pool_idle_timeout_ms: 30_000,
            eject_after_failures: 3,
            eject_ms: 5_000,
            probe_interval_ms: 1_000,
            nodes: Vec::new(),
            gonka: GonkaFile::default(),
            tls: UpstreamTlsFile::default(),
        }
    }
}

/// One `[[upstream.nodes]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeFile {
    /// The node's OpenAI base URL, e.g. `http://10.0.0.5:8000/v1`; requests go to `{url}/chat/completions`.
    pub url: String,
    /// `openai` (Bearer key) or `gonka` (signed requests).
    #[serde(default = "default_kind")]
    pub kind: String,
    /// For `openai` nodes: the environment variable holding the Bearer key, if the node needs one.
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// Models the node serves; empty = every configured model.
    #[serde(default)]
    pub models: Vec<String>,
    /// For `gonka` nodes: the node's transfer address (`gonka1…`), which requests are signed for.
    #[serde(default)]
    pub transfer_address: Option<String>,
}

fn default_kind() -> String {
    "openai".into()
}

/// One `[[models]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelFile {
    /// The model id clients send (`"model"`).
    pub id: String,
    /// Context window in tokens, shown in `GET /v1/models`.
    #[serde(default)]
    pub context_length: Option<u64>,
    /// Price per prompt token, ngonka.
    #[serde(default)]
    pub price_prompt_ngonka: u64,
    /// Price per completion token, ngonka.
    #[serde(default)]
    pub price_completion_ngonka: u64,
    /// A Hugging Face `tokenizer.json` for the model: prompt estimates (a request whose node gave no
    /// usage) count its tokens exactly. Empty = estimated from the text's length.
    #[serde(default)]
    pub tokenizer: String,
}

/// `[log]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogFile {
    /// `error`, `warn`, `info`, `debug` or `trace`.
    pub level: String,
    /// One JSON line per request.
    pub access_log: bool,
}

impl Default for LogFile {
    fn default() -> Self {
        Self { level: "info".into(), access_log: true }
    }
}

// ---------------------------------------------------------------------------------------------------
// Validated settings
// ---------------------------------------------------------------------------------------------------

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

/// Validated `[limits]` and `[journal]`.
#[derive(Debug, Clone)]
pub struct BillingSettings {
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

/// Validated `[keys]`.
#[derive(Debug, Clone)]
pub struct KeySettings {
    /// From `hash_secret_env` when set; otherwise the runtime loads or generates one.
    pub hash_secret: Option<String>,
    pub max_keys_per_account: usize,
    pub snapshot_interval: Duration,
    pub reconcile_interval: Duration,
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
    pub log_level: log::LevelFilter,
    pub access_log: bool,
    /// The `Access-Control-Allow-Origin` of public answers (`*` or one origin); `None`: no CORS.
    pub cors_allow_origin: Option<String>,
}

/// `server.cors_allow_origins` as the one `Access-Control-Allow-Origin` value it gives.
fn cors_allow_origin(origins: &[String]) -> Result<Option<String>, ConfigError> {
    match origins {
        [] => Ok(None),
        [one] if one == "*" => Ok(Some(one.clone())),
        [one] => {
            let (scheme, host) = one.split_once("://").unwrap_or(("", ""));
            let valid = matches!(scheme, "http" | "https")
                && !host.is_empty()
                && host.bytes().all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b));
            if valid {
                Ok(Some(one.clone()))
            } else {
                Err(invalid(format!(
                    "server.cors_allow_origins: {one:?} is not an origin (scheme://host[:port], no path)"
                )))
            }
        }
        // The answer must name the request's own origin when several are allowed, and the gateway does
        // not read a request's Origin header (yet).
        _ => Err(invalid(
            "server.cors_allow_origins: give [\"*\"], one origin, or [] (several origins are not supported)",
        )),
    }
}

fn ms(v: u64, name: &str) -> Result<Duration, ConfigError> {
    if v == 0 {
        return Err(invalid(format!("{name} must be greater than 0")));
    }
    Ok(Duration::from_millis(v))
}

fn addr(s: &str, name: &str) -> Result<SocketAddr, ConfigError> {
    s.parse().map_err(|_| invalid(format!("{name} {s:?} is not an IP:port address")))
}

impl ConfigFile {
    /// Reads and parses a TOML file. Runs before any core starts.
    #[expect(clippy::disallowed_methods, reason = "read once at start, before the cores exist")]
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        Self::parse(&text).map_err(|e| match e {
            ConfigError::Invalid(message) => ConfigError::Parse { path: path.to_owned(), message },
            other => other,
        })
    }

    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| invalid(e.to_string()))
    }

    /// Validates and converts.
    pub fn validate(&self) -> Result<Settings, ConfigError> {
        let workers = match self.workers {
            0 => std::thread::available_parallelism().unwrap_or(NonZeroUsize::MIN),
            n => NonZeroUsize::new(n).unwrap_or(NonZeroUsize::MIN),
        };
        let s = &self.server;
        if s.max_headers == 0 || s.max_headers > MAX_HEADERS_CAP {
            return Err(invalid(format!("server.max_headers must be 1..={MAX_HEADERS_CAP}")));
        }
        if s.max_head_bytes < 256 {
            return Err(invalid("server.max_head_bytes must be at least 256"));
        }
        if s.body_memory_bytes < s.max_body_bytes {
            return Err(invalid("server.body_memory_bytes must be at least server.max_body_bytes"));
        }
        if self.admin.max_connections == 0 {
            return Err(invalid("admin.max_connections must be at least 1"));
        }
        if s.read_buffer_bytes < 512 || s.relay_buffer_bytes < 1024 {
            return Err(invalid("server.read_buffer_bytes must be ≥ 512 and relay_buffer_bytes ≥ 1024"));
        }
        let http = HttpLimits {
            max_head_bytes: s.max_head_bytes,
            max_headers: s.max_headers,
            max_body_bytes: s.max_body_bytes,
        };
        let timeouts = ServerTimeouts {
            head: ms(s.head_timeout_ms, "server.head_timeout_ms")?,
            body: ms(s.body_timeout_ms, "server.body_timeout_ms")?,
            idle: ms(s.idle_timeout_ms, "server.idle_timeout_ms")?,
            write: ms(s.write_timeout_ms, "server.write_timeout_ms")?,
            shutdown_grace: Duration::from_millis(s.shutdown_grace_ms),
        };

        let mut models = Vec::new();
        for m in &self.models {
            if m.id.is_empty() || m.id.len() > 256 {
                return Err(invalid("models.id must be 1–256 characters"));
            }
            if models.iter().any(|x: &ModelSpec| x.id == m.id) {
                return Err(invalid(format!("model {:?} is listed twice", m.id)));
            }
            models.push(ModelSpec {
                id: m.id.clone(),
                context_length: m.context_length,
                price_prompt_ngonka: m.price_prompt_ngonka,
                price_completion_ngonka: m.price_completion_ngonka,
                tokenizer: (!m.tokenizer.is_empty()).then(|| PathBuf::from(&m.tokenizer)),
            });
        }

        let u = &self.upstream;
        let mut nodes = Vec::new();
        for n in &u.nodes {
            let kind = match n.kind.as_str() {
                "openai" => NodeKind::OpenAi,
                "gonka" => NodeKind::Gonka,
                other => return Err(invalid(format!("node kind {other:?} is not openai or gonka"))),
            };
            let api_key = match &n.api_key_env {
                Some(var) => Some(Secret(std::env::var(var).map_err(|_| {
                    invalid(format!("node {}: environment variable {var} is not set", n.url))
                })?)),
                None => None,
            };
            if kind == NodeKind::Gonka
                && !n.transfer_address.as_deref().is_some_and(|a| a.starts_with("gonka1") && a.len() > 10)
            {
                return Err(invalid(format!("gonka node {} needs its transfer_address (gonka1…)", n.url)));
            }
            for m in &n.models {
                if !models.iter().any(|x| &x.id == m) {
                    return Err(invalid(format!("node {} serves {m:?}, which is not in [[models]]", n.url)));
                }
            }
            nodes.push(NodeSpec {
                url: NodeUrl::parse(&n.url)?,
                kind,
                api_key,
                models: n.models.clone(),
                transfer_address: n.transfer_address.clone(),
            });
        }
        let g = &u.gonka;
        let gonka = if nodes.iter().any(|n| n.kind == NodeKind::Gonka) || !g.seeds.is_empty() {
            let key = std::env::var(&g.private_key_env)
                .map_err(|_| invalid(format!("gonka nodes need a signing key in {}", g.private_key_env)))?;
            crate::gonka::signer::GonkaSigner::from_hex(&key)
                .map_err(|e| invalid(format!("{}: {e}", g.private_key_env)))?;
            Some(GonkaSettings {
                private_key: Secret(key),
                seeds: g.seeds.iter().map(|s| NodeUrl::parse(s)).collect::<Result<_, _>>()?,
                use_allowlist: g.use_allowlist,
                refresh: ms(g.refresh_ms, "upstream.gonka.refresh_ms")?,
            })
        } else {
            None
        };
        let upstream = UpstreamSettings {
            connect_timeout: ms(u.connect_timeout_ms, "upstream.connect_timeout_ms")?,
            head_timeout: ms(u.response_head_timeout_ms, "upstream.response_head_timeout_ms")?,
            read_timeout: ms(u.read_timeout_ms, "upstream.read_timeout_ms")?,
            max_attempts: NonZeroU32::new(u.max_attempts)
                .ok_or_else(|| invalid("upstream.max_attempts must be at least 1"))?,
            pool_max_idle_per_node: u.pool_max_idle_per_node,
            pool_idle_timeout: ms(u.pool_idle_timeout_ms, "upstream.pool_idle_timeout_ms")?,
            eject_after_failures: NonZeroU32::new(u.eject_after_failures)
                .ok_or_else(|| invalid("upstream.eject_after_failures must be at least 1"))?,
            eject_for: ms(u.eject_ms, "upstream.eject_ms")?,
            probe_interval: ms(u.probe_interval_ms, "upstream.probe_interval_ms")?,
            nodes,
            gonka,
            tls_system_roots: u.tls.system_roots,
            tls_extra_ca: (!u.tls.extra_ca_path.is_empty()).then(|| PathBuf::from(&u.tls.extra_ca_path)),
        };

        let log_level = match self.log.level.as_str() {
            "error" => log::LevelFilter::Error,
            "warn" => log::LevelFilter::Warn,
            "info" => log::LevelFilter::Info,
            "debug" => log::LevelFilter::Debug,
            "trace" => log::LevelFilter::Trace,
            other => return Err(invalid(format!("log.level {other:?} is not a level"))),
        };
        let admin_token = std::env::var(&self.admin.token_env).ok().filter(|t| !t.is_empty());
        let data_dir = PathBuf::from(&self.data_dir);
        let mut cluster = self.cluster.validate()?;
        if !self.limits.redis_url.is_empty() {
            if cluster.instances < 2 || self.store.kind != "postgres" {
                return Err(invalid(
                    "limits.redis_url shares budgets between instances: it needs cluster.instances > 1 \
                     and store.kind = \"postgres\"",
                ));
            }
            cluster.redis_url = Some(self.limits.redis_url.clone());
        }
        let store = match self.store.kind.as_str() {
            "sqlite" => {
                let path = if self.store.path.is_empty() {
                    data_dir.join("gateway.db")
                } else {
                    PathBuf::from(&self.store.path)
                };
                let synchronous = match self.store.sqlite_synchronous.as_str() {
                    "full" => Synchronous::Full,
                    "normal" => Synchronous::Normal,
                    other => {
                        return Err(invalid(format!(
                            "store.sqlite_synchronous {other:?} is not full or normal"
                        )));
                    }
                };
                StoreSettings::Sqlite { path, synchronous }
            }
            "postgres" => {
                if self.store.url.is_empty() {
                    return Err(invalid("store.url must be set when store.kind is postgres"));
                }
                let schema_ok = !self.store.schema.is_empty()
                    && self.store.schema.len() <= 48
                    && self
                        .store
                        .schema
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
                    && !self.store.schema.as_bytes()[0].is_ascii_digit();
                if !schema_ok {
                    return Err(invalid(format!(
                        "store.schema {:?} must be 1-48 of a-z, 0-9 and _, not starting with a digit",
                        self.store.schema
                    )));
                }
                if self.store.pool_size == 0 {
                    return Err(invalid("store.pool_size must be at least 1"));
                }
                StoreSettings::Postgres(PostgresSettings {
                    url: self.store.url.clone(),
                    schema: self.store.schema.clone(),
                    instance_id: cluster.instance_id.clone(),
                    pool_size: self.store.pool_size,
                })
            }
            other => return Err(invalid(format!("store.kind {other:?} is not sqlite or postgres"))),
        };
        if cluster.instances > 1 && matches!(store, StoreSettings::Sqlite { .. }) {
            return Err(invalid("cluster.instances > 1 needs a shared store: store.kind = \"postgres\""));
        }
        let hash_secret = std::env::var(&self.keys.hash_secret_env).ok().filter(|t| !t.is_empty());
        if hash_secret.as_ref().is_some_and(|s| s.len() < 32) {
            return Err(invalid(format!("{} must hold at least 32 bytes", self.keys.hash_secret_env)));
        }
        if self.limits.default_max_tokens == 0 {
            return Err(invalid("limits.default_max_tokens must be at least 1"));
        }
        let billing = BillingSettings {
            // Several instances without Redis: each enforces its share of the rate (`limits::share`);
            // with Redis, a fixed share plus leases of each minute (`limits::lease`).
            default_rpm: if cluster.redis_url.is_some() {
                self.limits.default_rpm
            } else {
                crate::limits::share::Share::new(cluster.instances).rpm(self.limits.default_rpm)
            },
            default_max_tokens: self.limits.default_max_tokens,
            fit_max_tokens: crate::model::FitPolicy::parse(&self.limits.fit_max_tokens).ok_or_else(|| {
                invalid(format!(
                    "limits.fit_max_tokens {:?} is not unset, always or never",
                    self.limits.fit_max_tokens
                ))
            })?,
            min_fit_tokens: self.limits.min_fit_tokens.max(1),
            drain_after_client_gone: Duration::from_millis(self.billing.drain_after_client_gone_ms),
            drain_after_client_gone_bytes: self.billing.drain_after_client_gone_bytes,
            progress_tokens: if self.journal.progress_tokens == 0 {
                return Err(invalid("journal.progress_tokens must be at least 1"));
            } else {
                self.journal.progress_tokens
            },
            journal_dir: if self.journal.dir.is_empty() {
                data_dir.join("journal")
            } else {
                PathBuf::from(&self.journal.dir)
            },
            journal_wait: match self.journal.wait.as_str() {
                "write" => WaitFor::Write,
                "fsync" => WaitFor::Fsync,
                other => return Err(invalid(format!("journal.wait {other:?} is not write or fsync"))),
            },
            journal_fsync_interval: ms(self.journal.fsync_interval_ms, "journal.fsync_interval_ms")?,
        };
        let keys = KeySettings {
            hash_secret,
            max_keys_per_account: self.keys.max_keys_per_account,
            snapshot_interval: ms(self.keys.snapshot_interval_ms, "keys.snapshot_interval_ms")?,
            reconcile_interval: ms(self.keys.reconcile_interval_ms, "keys.reconcile_interval_ms")?,
        };

        Ok(Settings {
            workers,
            data_dir,
            listen: addr(&s.listen, "server.listen")?,
            admin_listen: addr(&self.admin.listen, "admin.listen")?,
            admin_token,
            http,
            timeouts,
            read_buffer_bytes: s.read_buffer_bytes,
            relay_buffer_bytes: s.relay_buffer_bytes,
            backlog: s.backlog,
            max_connections: s.max_connections,
            admin_max_connections: self.admin.max_connections,
            body_memory_bytes: s.body_memory_bytes,
            body_memory_wait: Duration::from_millis(s.body_memory_wait_ms),
            tls: match (s.tls.cert_path.is_empty(), s.tls.key_path.is_empty()) {
                (true, true) => None,
                (false, false) => Some((PathBuf::from(&s.tls.cert_path), PathBuf::from(&s.tls.key_path))),
                _ => return Err(invalid("server.tls needs both cert_path and key_path")),
            },
            upstream,
            models,
            store,
            cluster,
            keys,
            billing,
            log_level,
            access_log: self.log.access_log,
            cors_allow_origin: cors_allow_origin(&s.cors_allow_origins)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_example_config_is_valid_and_shows_the_defaults() {
        let text = include_str!("../config/gateway.toml");
        let file = ConfigFile::parse(text).unwrap();
        let defaults = ConfigFile::default();
        assert_eq!(format!("{:?}", file.server), format!("{:?}", defaults.server));
        assert_eq!(format!("{:?}", file.admin), format!("{:?}", defaults.admin));
        assert_eq!(format!("{:?}", file.log), format!("{:?}", defaults.log));
        assert_eq!(format!("{:?}", file.store), format!("{:?}", defaults.store));
        assert_eq!(format!("{:?}", file.keys), format!("{:?}", defaults.keys));
        assert_eq!(format!("{:?}", file.limits), format!("{:?}", defaults.limits));
        assert_eq!(format!("{:?}", file.journal), format!("{:?}", defaults.journal));
        assert_eq!(format!("{:?}", file.billing), format!("{:?}", defaults.billing));
        let u = &file.upstream;
        let d = &defaults.upstream;
        assert_eq!(format!("{:?}", u.gonka), format!("{:?}", d.gonka));
        assert_eq!(format!("{:?}", u.tls), format!("{:?}", d.tls));
        assert_eq!(
            (u.connect_timeout_ms, u.response_head_timeout_ms, u.read_timeout_ms, u.max_attempts),
            (d.connect_timeout_ms, d.response_head_timeout_ms, d.read_timeout_ms, d.max_attempts)
        );
        assert_eq!(
            (
                u.pool_max_idle_per_node,
                u.pool_idle_timeout_ms,
                u.eject_after_failures,
                u.eject_ms,
                u.probe_interval_ms
            ),
            (
                d.pool_max_idle_per_node,
                d.pool_idle_timeout_ms,
                d.eject_after_failures,
                d.eject_ms,
                d.probe_interval_ms
            )
        );
        file.validate().unwrap();
    }

    #[test]
    fn unknown_fields_are_refused() {
        assert!(ConfigFile::parse("[server]\nlisten_addr = \"x\"\n").is_err());
        assert!(ConfigFile::parse("bogus = 1\n").is_err());
    }

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

    #[test]
    fn cors_allow_origins_give_one_allow_origin_or_none() {
        let cors = |v: &[&str]| cors_allow_origin(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(cors(&["*"]).unwrap().as_deref(), Some("*"));
        assert_eq!(cors(&[]).unwrap(), None);
        assert_eq!(
            cors(&["https://app.example.com:8443"]).unwrap().as_deref(),
            Some("https://app.example.com:8443")
        );
        assert!(cors(&["https://app.example.com/"]).is_err(), "a path is no origin");
        assert!(cors(&["app.example.com"]).is_err());
        assert!(cors(&["*", "https://a.example"]).is_err());
        assert_eq!(ConfigFile::default().validate().unwrap().cors_allow_origin.as_deref(), Some("*"));
    }

    #[test]
    fn nodes_must_serve_known_models() {
        let text = r#"
            [[models]]
            id = "a"
            [[upstream.nodes]]
            url = "http://127.0.0.1:1/v1"
            models = ["b"]
        "#;
        let err = ConfigFile::parse(text).unwrap().validate().unwrap_err();
        assert!(err.to_string().contains("not in [[models]]"), "{err}");
    }
}
