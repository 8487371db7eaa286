//! The upstream side: which node serves a request ([`pool`]), keep-alive connections to it on each core
//! ([`conns`]), the HTTP/1.1 client ([`client`]) and the relay of its answer back to the client
//! ([`relay`]).

pub mod client;
pub mod conns;
pub mod pool;
pub mod relay;

pub use pool::{Node, NodeId, NodePool, Pick};
