//! The server: per core, accept on the listeners ([`accept`]), serve each connection ([`conn`]: read a
//! head, route, answer, keep alive) and route a request to its handler ([`router`]).

pub mod accept;
pub mod conn;
pub mod router;
