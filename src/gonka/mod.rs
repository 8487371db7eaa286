//! The Gonka network: request signing as the official SDK does it ([`signer`]), and discovery of the
//! nodes of the current epoch ([`discovery`]).

pub mod discovery;
pub mod signer;
