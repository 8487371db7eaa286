//! Billing: what a request used ([`usage`], read from the events of a stream by [`stream`]), estimates
//! when the node said nothing ([`estimate`]), and the local journal that keeps usage records until the
//! store has them ([`journal`], written by the cores themselves: `group_commit`). A request is settled once, on its path ([`crate::api::inference`]).

pub mod estimate;
mod group_commit;
pub mod journal;
mod journal_files;
pub mod stream;
pub mod usage;

pub use usage::UsageScanner;
