//! The Gonka network: request signing as the official SDK does it ([`signer`]), discovery of the
//! nodes of the current epoch ([`discovery`]), Cosmos SDK transactions ([`tx`]) and the blocking client
//! of the chain's REST API ([`chain`]).

pub mod chain;
pub mod discovery;
pub mod signer;
pub mod tx;
