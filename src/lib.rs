//! # gonka-gateway
//!
//! An OpenAI-compatible API gateway for the Gonka decentralized GPU network: it authenticates keys,
//! enforces limits, forwards to Gonka nodes or brokers, streams answers back as they are produced and
//! bills in ngonka. See `DESIGN.md` for the contract.
//!
//! # Layout
//! - [`config`]: the config file's shape and the validated [`config::Settings`].
//! - [`runtime`]: thread-per-core start (one monoio runtime per worker, SO_REUSEPORT), signals,
//!   graceful shutdown.
//! - [`control`]: the control-plane thread (store I/O, the only writer of the key cache; account and key
//!   operations) and the node health thread.
//! - [`store`]: the durable store (SQLite) and the key snapshot.
//! - [`data_dir`]: the data directory's lock (one process per directory) and its private modes.
//! - [`app`]: state shared by all cores (settings, nodes, models, metrics).
//! - [`server`]: the per-core context, the connection loop, one exchange, routing, and the budgets all
//!   cores share (connections per listener, request-body memory).
//! - [`http`]: request heads, chunked bodies, response heads, SSE, timed socket I/O.
//! - [`api`]: `/v1` inference and models, request-body inspection and rewrite, the account API
//!   (`/api`), the admin API (`/admin`), strict field parsing.
//! - [`auth`]: key formats, keyed hashing, the key cache, inference and account authentication.
//! - [`upstream`]: the node pool and its health, per-core keep-alive pools, the HTTP/1.1 client, the relay.
//! - [`limits`]: rate limits (GCRA), calendar-window spend counters, balance holds, the injectable clock.
//! - [`billing`]: usage extraction, usage records, the usage journal.
//! - [`error`]: the one edge error type (status, OpenAI code, headers, log level).
//! - [`metrics`], [`logging`], [`clock`]: observability and time.
//! - [`gonka`]: Gonka request signing (SDK-compatible) and node discovery.
//! - [`sim`]: the Gonka node simulator.
//! - [`dev`]: the zero-setup `dev` command; [`cli`]: the `admin` command's client.

pub mod api;
pub mod app;
pub mod auth;
pub mod billing;
pub mod cli;
pub mod config;
pub mod control;
pub mod dev;
pub mod error;
pub mod gateway;
pub mod gonka;
pub mod http;
pub mod json;
pub mod limits;
pub mod logging;
pub mod metrics;
pub mod model;
pub mod rt;
pub mod secret;
pub mod server;
pub mod session;
pub mod sim;
pub mod store;
pub mod time;
pub mod upstream;
