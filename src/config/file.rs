//! The file's shape: one struct per table, every field defaulted (`Default` holds the defaults
//! `config/gateway.toml` shows) and unknown fields refused, so a misspelt option is an error rather
//! than a silent default.

use super::error::{ConfigError, invalid};
use crate::http::HttpLimits;
use serde::Deserialize;
use std::path::Path;

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
    pub responses: ResponsesFile,
    pub chain: ChainFile,
    pub referrals: ReferralsFile,
    pub signup: SignupFile,
    pub deposits: DepositsFile,
    pub notifications: NotificationsFile,
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
            responses: ResponsesFile::default(),
            chain: ChainFile::default(),
            referrals: ReferralsFile::default(),
            signup: SignupFile::default(),
            deposits: DepositsFile::default(),
            notifications: NotificationsFile::default(),
            log: LogFile::default(),
        }
    }
}

/// `[notifications]`: webhooks about balances and child keys' limits, off unless `url` is set.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NotificationsFile {
    /// Where events are POSTed (http or https); empty: no webhooks.
    pub url: String,
    /// Environment variable holding the signing secret (at least 16 bytes). Required with `url`.
    pub secret_env: String,
    /// `balance.low` is sent when an account's balance falls below this, ngonka; 0: never.
    pub low_balance_ngonka: u64,
    /// One delivery attempt's timeout (connect, write, read), ms.
    pub timeout_ms: u64,
    /// Attempts per event before it is dropped (with a warning), the first included.
    pub max_attempts: u32,
    /// The wait before the first retry, ms; it doubles after each failure, up to `max_backoff_ms`.
    pub backoff_ms: u64,
    pub max_backoff_ms: u64,
    /// Events waiting for delivery (retries included); past this, new events are dropped (with a
    /// warning and `gateway_webhooks_dropped_total`).
    pub queue_size: usize,
    /// How often balances and child keys' spend are looked at for events, ms.
    pub check_interval_ms: u64,
}

impl Default for NotificationsFile {
    fn default() -> Self {
        Self {
            url: String::new(),
            secret_env: "GATEWAY_WEBHOOK_SECRET".into(),
            low_balance_ngonka: 0,
            timeout_ms: 5_000,
            max_attempts: 8,
            backoff_ms: 1_000,
            max_backoff_ms: 300_000,
            queue_size: 10_000,
            check_interval_ms: 1_000,
        }
    }
}

/// `[chain]`: the Gonka chain that direct keys live on (their funding, sweeping and billing).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChainFile {
    /// Whether direct keys exist (their routes, and the chain worker that funds and bills them).
    pub enabled: bool,
    /// With `enabled`: whether this instance has direct keys (false: the chain is used for deposits
    /// only, as on every instance but one of a cluster).
    pub direct_keys: bool,
    /// The chain's Cosmos REST API, e.g. a node's `http://host:8000/chain-api`. Required when enabled.
    pub rest_url: String,
    pub chain_id: String,
    pub denom: String,
    /// The fee each transfer pays, in `denom`.
    pub fee_ngonka: u64,
    pub gas_limit: u64,
    /// Environment variable holding the treasury's private key (hex): the account that funds direct keys
    /// and receives their sweeps. Required when enabled.
    pub treasury_key_env: String,
    /// The float kept on each active direct key, ngonka (held on its owner's balance).
    pub float_ngonka: u64,
    /// A direct key whose on-chain balance falls below this is topped up to `float_ngonka`.
    pub top_up_below_ngonka: u64,
    /// How often balances and pending transfers are read, ms.
    pub poll_ms: u64,
    /// A chain request's timeout, and how long a submitted transfer may stay out of a block before it
    /// counts as dropped and is sent again, ms.
    pub timeout_ms: u64,
}

impl Default for ChainFile {
    fn default() -> Self {
        Self {
            enabled: false,
            direct_keys: true,
            rest_url: String::new(),
            chain_id: "gonka-mainnet".into(),
            denom: "ngonka".into(),
            fee_ngonka: 200,
            gas_limit: 200_000,
            treasury_key_env: "GONKA_TREASURY_KEY".into(),
            float_ngonka: 1_000_000_000,
            top_up_below_ngonka: 500_000_000,
            poll_ms: 1_000,
            timeout_ms: 30_000,
        }
    }
}

/// `[referrals]`: what the accounts that referred an account earn on its paid credits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReferralsFile {
    /// Whether paid credits (deposits, admin credits marked paid) pay referral credits.
    pub enabled: bool,
    /// The referrer's share of a paid credit, basis points (1000 = 10 %), 0..=10000.
    pub l1_bps: u32,
    /// The referrer's referrer's share, basis points, 0..=10000.
    pub l2_bps: u32,
    /// Whether referral credits are marked withdrawable (`false`: for spending only).
    pub withdrawable: bool,
}

impl Default for ReferralsFile {
    fn default() -> Self {
        Self { enabled: true, l1_bps: 1000, l2_bps: 300, withdrawable: true }
    }
}

/// `[signup]`: self-serve sign-up (`POST /api/signup`), off unless enabled.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SignupFile {
    pub enabled: bool,
    /// Sign-ups one client address may make per hour.
    pub max_per_ip_per_hour: u32,
    /// Sign-ups the gateway takes per hour from everyone together.
    pub max_per_hour: u32,
}

impl Default for SignupFile {
    fn default() -> Self {
        Self { enabled: false, max_per_ip_per_hour: 3, max_per_hour: 100 }
    }
}

/// `[deposits]`: GNK sent on chain to an account's own deposit address is credited to the account
/// (needs `[chain]`, whose REST API and `poll_ms` the watcher uses).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DepositsFile {
    pub enabled: bool,
    /// Environment variable holding the deposit key (64 hex digits): every account's deposit address is
    /// derived from it. Required when enabled; changing it gives every account another address.
    pub key_env: String,
    /// Blocks that must follow a deposit's block before it is credited (0: credited once its block is
    /// seen).
    pub confirmations: u64,
    /// ngonka credited per 1,000,000 ngonka received (1,000,000: 1:1), rounded down.
    pub rate_ppm: u64,
    /// The gateway's fee on a deposit, in basis points of what the rate gives (rounded up).
    pub fee_bps: u32,
    /// Deposits smaller than this are held until an account's held deposits add up to it, then credited
    /// together (0: every deposit is credited at once).
    pub min_ngonka: u64,
    /// The first block scanned when the store has not scanned any yet (0: the latest block then; the
    /// watcher then goes on from where the store says it stopped).
    pub start_height: u64,
}

impl Default for DepositsFile {
    fn default() -> Self {
        Self {
            enabled: false,
            key_env: "GONKA_DEPOSIT_KEY".into(),
            confirmations: 3,
            rate_ppm: 1_000_000,
            fee_bps: 0,
            min_ngonka: 0,
            start_height: 0,
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

/// `[responses]`: responses kept for OpenAI's Responses API (`store`, the default there).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ResponsesFile {
    /// Days a kept response (and the conversation it continues) can be read and continued; after that
    /// it is gone (404) and deleted from the store.
    pub retention_days: u32,
}

impl Default for ResponsesFile {
    fn default() -> Self {
        Self { retention_days: 30 }
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
    /// How long a dashboard sign-in lasts (account and admin), ms.
    pub dashboard_session_ttl_ms: u64,
}

impl Default for KeysFile {
    fn default() -> Self {
        Self {
            hash_secret_env: "GATEWAY_KEY_SECRET".into(),
            max_keys_per_account: 50,
            snapshot_interval_ms: 60_000,
            reconcile_interval_ms: 30_000,
            dashboard_session_ttl_ms: 12 * 3_600_000,
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
    /// closed. 0 = derived from the open-files limit: `(limit - 512 - admin.max_connections) / 2`.
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
    /// Other names requests may give the model (an id without `/`, for clients that refuse slashed
    /// ids); served, billed and recorded as `id`.
    #[serde(default)]
    pub aliases: Vec<String>,
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_example_config_is_valid_and_shows_the_defaults() {
        let text = include_str!("../../config/gateway.toml");
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
        assert_eq!(format!("{:?}", file.responses), format!("{:?}", defaults.responses));
        assert_eq!(format!("{:?}", file.chain), format!("{:?}", defaults.chain));
        assert_eq!(format!("{:?}", file.referrals), format!("{:?}", defaults.referrals));
        assert_eq!(format!("{:?}", file.signup), format!("{:?}", defaults.signup));
        assert_eq!(format!("{:?}", file.deposits), format!("{:?}", defaults.deposits));
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
}
