//! Billing: what a request used ([`usage`]), estimates when the node said nothing ([`estimate`]), its
//! record ([`record`]), its settlement ([`settle`]) and the local journal that keeps records until the
//! store has them ([`journal`]).

pub mod estimate;
pub mod journal;
pub mod stream;
pub mod usage;

pub use usage::UsageScanner;
