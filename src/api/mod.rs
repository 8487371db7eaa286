//! The HTTP API: `/v1` inference ([`inference`]) and models ([`models`]), health, and the admin
//! listener's routes ([`admin`]). Handlers return [`crate::error::ApiError`]; the router answers it.

pub mod account;
pub mod admin;
pub mod body;
pub mod fields;
pub mod inference;
pub mod models;
pub mod usage;
