//! The upstream side: which node serves a request ([`pool`]), keep-alive connections to it on each core
//! ([`conns`]), connecting and writing requests ([`client`]), one attempt at a node with its retry
//! decision ([`attempt`]), the client watched meanwhile ([`watch`]), and the relay of the node's answer
//! back to the client ([`relay`], in buffers laid out by [`buffer`]).

pub mod attempt;
pub mod buffer;
pub mod client;
pub mod conns;
pub mod pool;
pub mod relay;
pub mod watch;

pub use pool::{Node, NodeId, NodePool, Pick};
