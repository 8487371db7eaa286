//! The listeners and the connection loop: accept on every core (SO_REUSEPORT), read request heads,
//! route, answer, keep alive; the connection budgets every core shares.

pub mod conn;
pub mod core;
pub mod exchange;
pub mod limits;
pub mod router;

pub use core::Core;

/// Which listener a connection came in on; each has its own routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerKind {
    Public,
    Admin,
}
