//! Balance, usage and the spend shown on child keys.

use crate::app::App;
use crate::error::ApiError;
use crate::http::io::Transport;
use crate::server::exchange::Exchange;
use crate::store::KeyRow;
use serde_json::{Value, json};

/// A child key as listed, with its spend.
pub fn child_json(_app: &App, row: &KeyRow, secret: Option<&str>) -> Value {
    super::account::key_json(row, secret)
}

/// `GET /api/balance`.
pub async fn balance<S: Transport>(ex: &mut Exchange<'_, S>) -> Result<(), ApiError> {
    let core = ex.core();
    let account = match crate::auth::authenticate_account(
        &core.app,
        ex.head.authorization.as_deref(),
        false,
        crate::clock::unix_secs() as i64,
    )? {
        crate::auth::Caller::Account { account_id } => account_id,
        crate::auth::Caller::ManagementKey { .. } => return Err(ApiError::InvalidApiKey),
    };
    let row = core.app.control.call(move |st| st.account(&account)).await??;
    ex.respond_json(
        200,
        &json!({"balance_ngonka": row.balance_ngonka.to_string(), "held_ngonka": "0"}),
    )
    .await;
    Ok(())
}

/// `GET /api/usage`.
pub async fn usage<S: Transport>(ex: &mut Exchange<'_, S>) -> Result<(), ApiError> {
    Err(ApiError::NotFound(format!("Unknown path: {}", ex.head.path)))
}
