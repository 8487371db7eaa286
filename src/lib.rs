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
//! - [`control`]: the control-plane thread (DNS, node probes; everything that may block).
//! - [`app`]: state shared by all cores (settings, nodes, models, metrics).
//! - [`server`]: the per-core context, the connection loop, one exchange, routing.
//! - [`http`]: request heads, chunked bodies, response heads, SSE, timed socket I/O.
//! - [`api`]: `/v1` inference and models, request-body inspection and rewrite, the admin routes.
//! - [`auth`]: authentication of inference requests.
//! - [`upstream`]: the node pool and its health, per-core keep-alive pools, the HTTP/1.1 client, the relay.
//! - [`billing`]: usage extraction.
//! - [`error`]: the one edge error type (status, OpenAI code, headers, log level).
//! - [`metrics`], [`logging`], [`clock`]: observability and time.
//! - [`sim`]: the Gonka node simulator.
//! - [`dev`]: the zero-setup `dev` command.

pub mod api;
pub mod app;
pub mod auth;
pub mod billing;
pub mod clock;
pub mod config;
pub mod control;
pub mod dev;
pub mod error;
pub mod http;
pub mod logging;
pub mod metrics;
pub mod runtime;
pub mod secret;
pub mod server;
pub mod sim;
pub mod upstream;
