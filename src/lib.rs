//! # gonka-gateway
//!
//! An OpenAI- and Anthropic-compatible API gateway for the Gonka decentralized GPU network: it
//! authenticates keys, enforces rate and spend limits, forwards to Gonka nodes or brokers, streams
//! answers back as they are produced and bills the key's owner in ngonka.
//!
//! # Layout
//! Layers, bottom to top. A module imports only from layers below its own (never from its own layer or
//! above); `tests/architecture.rs` reads the imports and holds the code to this list, and to no circle
//! between files.
//!
//! 1. [`time`], [`rt`]: the one clock (injectable, calendar windows, RFC 3339); runtime helpers (the
//!    monoio runtime of a thread, listeners, the data directory's lock, the one shutdown primitive).
//! 2. [`model`], [`secret`], [`json`]: plain data every layer shares (keys, accounts, models, usage
//!    records); secrets and their files; JSON validated in one pass, a few members read from it.
//! 3. [`error`], [`metrics`], [`logging`]: the one edge error type; counters and histograms; logs.
//! 4. [`http`]: HTTP/1.1 only (heads, one body decoder, chunks, SSE framing, timed I/O, TLS, one small
//!    blocking client).
//! 5. [`gonka`]: the Gonka network's own rules (request signing as the SDK does it, node discovery,
//!    Cosmos transactions, the blocking chain client).
//! 6. [`config`], [`sim`]: the config file and the validated settings made from it; the node (and chain)
//!    simulator, an independent peer that shares only byte plumbing and the transaction codec with the
//!    gateway.
//! 7. [`limits`], [`store`], [`translate`]: rates, spend windows, holds and their admission policy; the
//!    durable store (SQLite embedded, PostgreSQL shared) and the key snapshot; the seam client dialects
//!    other than OpenAI's plug into.
//! 8. [`auth`], [`billing`], [`anthropic`], [`openai`]: keys and who a bearer is; what a request used,
//!    and the usage journal; Anthropic's Messages API and OpenAI's Responses API translated to and from
//!    chat completions.
//! 9. [`upstream`]: the node pool, keep-alive connections, one attempt with its retry decision, the relay.
//! 10. [`control`]: the control-plane thread (the store's only user, the key cache's only writer, leases,
//!     direct keys' floats and billing, deposits credited), the node health thread and the chain worker
//!     (direct keys, and the deposit watcher).
//! 11. [`app`]: read-mostly state shared by the cores.
//! 12. [`session`]: one core's context, a connection, one exchange on it, the budgets cores share.
//! 13. [`api`]: the handlers; [`api::inference`] is the request path, phase by phase.
//! 14. [`server`]: accept loops, the connection loop, the router.
//! 15. [`gateway`]: the composition root that builds the whole stack.
//! 16. [`dev`], [`cli`]: the `dev` demo; the shell commands (`admin`, `gonka`).

pub mod anthropic;
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
pub mod openai;
pub mod rt;
pub mod secret;
pub mod server;
pub mod session;
pub mod sim;
pub mod store;
pub mod time;
pub mod translate;
pub mod upstream;
