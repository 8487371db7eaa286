//! Billing: what a request used, and (in later issues) what it costs and who pays.

pub mod usage;

pub use usage::{Usage, UsageScanner};
