//! The HTTP API: `/v1` inference ([`inference`]), Anthropic's token counts ([`count_tokens`]), models
//! ([`models`]) and stored responses ([`responses`]), health, the account API ([`account`]) with its direct keys ([`direct`]), credits, referrals and sign-up ([`credits`]), the admin
//! listener's routes ([`admin`]), who calls those two ([`credentials`]), and the dashboard over them
//! ([`dashboard`]). Handlers return [`crate::error::ApiError`]; the router answers it.

pub mod account;
pub mod admin;
pub mod count_tokens;
pub mod credentials;
pub mod credits;
pub mod dashboard;
pub mod deposits;
pub mod direct;
pub mod fields;
pub mod inference;
pub mod metrics;
pub mod models;
pub mod responses;
pub mod usage;
pub mod views;

use crate::http::request::Method;

/// The method a request is routed by: `HEAD` is answered by the `GET` handler (the exchange sends its
/// head without the body).
pub fn route_method(method: Method) -> Method {
    match method {
        Method::Head => Method::Get,
        m => m,
    }
}
