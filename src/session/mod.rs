//! One client connection's session: the per-core context it runs in ([`Core`]), the connection itself
//! ([`Conn`]), one request and its answer on it ([`exchange::Exchange`]: reading the body, writing
//! answers that are not relayed), and the budgets every core shares ([`limits`]).

pub mod core;
pub mod exchange;
pub mod limits;

pub use core::Core;

use crate::http::io::ReadBuf;
use std::net::SocketAddr;
use std::rc::Rc;

/// Which listener a connection came in on; each has its own routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerKind {
    Public,
    Admin,
}

/// One client connection.
#[derive(Debug)]
pub struct Conn<S> {
    pub io: S,
    pub rbuf: ReadBuf,
    pub peer: SocketAddr,
    pub core: Rc<Core>,
    pub kind: ListenerKind,
}
