//! Billing: what a request used ([`usage`]), its record ([`record`]) and the local journal that keeps
//! records until the store has them ([`journal`]).

pub mod journal;
pub mod record;
pub mod settle;
pub mod usage;

pub use usage::{Usage, UsageScanner};
