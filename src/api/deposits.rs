//! Deposits in the account API (`GET /api/deposit-address`, `GET /api/deposits`) and the admin API
//! (`GET /admin/accounts/{id}/deposits`, `GET /admin/deposits`). Read only: deposits are made on chain
//! and credited by the deposit watcher. While `[deposits]` is not enabled every route answers 404
//! saying so.

use super::views::list;
use crate::control::deposits::DepositList;
use crate::error::ApiError;
use crate::http::io::Transport;
use crate::http::request::Method;
use crate::model::DepositRow;
use crate::session::exchange::Exchange;
use serde_json::{Value, json};
use std::sync::Arc;

/// A deposit as listed: `confirmations` is how many blocks followed its block when the watcher last
/// looked (counting stops at `confirmations_required`); `credit_reference` names the credit it is part
/// of (the hash of the last transaction of a group of held deposits).
pub fn deposit_json(d: &DepositRow, latest_height: u64, required: u64) -> Value {
    json!({
        "object": "deposit",
        "account_id": d.account_id,
        "tx_hash": d.tx_hash,
        "address": d.address,
        "amount_ngonka": d.amount_ngonka.to_string(),
        "credit_ngonka": d.credit_ngonka.to_string(),
        "height": d.height,
        "confirmations": latest_height.saturating_sub(d.height).min(required),
        "confirmations_required": required,
        "status": d.status.as_str(),
        "credit_reference": d.credit_reference,
        "seen_at": crate::time::rfc3339(d.seen_at),
        "credited_at": d.credited_at.map(crate::time::rfc3339),
    })
}

fn list_json(l: &DepositList) -> Value {
    list(l.rows.iter().map(|d| deposit_json(d, l.latest_height, l.confirmations)).collect())
}

/// `GET /api/deposit-address` and `GET /api/deposits` for `account`; `segs` are the path segments
/// after `api`. `None` for another path.
pub async fn account_route<S: Transport>(
    ex: &mut Exchange<'_, S>,
    account: Arc<str>,
    segs: &[&str],
) -> Option<Result<(), ApiError>> {
    let method = super::route_method(ex.head.method);
    let control = ex.core().app.control.clone();
    let denom = ex.core().app.settings.chain.as_ref().map(|c| c.denom.clone()).unwrap_or_default();
    let answer = match (method, segs) {
        (Method::Get, ["deposit-address"]) => {
            control.call(move |st| st.deposit_terms(&account)).await.and_then(|r| r).map(|(address, s)| {
                json!({
                    "object": "deposit_address",
                    "address": address,
                    "denom": denom,
                    "confirmations": s.confirmations,
                    "rate_ppm": s.rate_ppm,
                    "fee_bps": s.fee_bps,
                    "min_ngonka": s.min_ngonka.to_string(),
                })
            })
        }
        (Method::Get, ["deposits"]) => control
            .call(move |st| st.list_deposits(Some(&account)))
            .await
            .and_then(|r| r)
            .map(|l| list_json(&l)),
        _ => return None,
    };
    Some(match answer {
        Ok(body) => {
            ex.respond_json(200, &body).await;
            Ok(())
        }
        Err(e) => Err(e),
    })
}

/// `GET /admin/accounts/{id}/deposits` and `GET /admin/deposits` (every account's, newest first);
/// `segs` are the segments after `admin`. `None` for another path.
pub async fn admin_route<S: Transport>(
    ex: &mut Exchange<'_, S>,
    segs: &[&str],
) -> Option<Result<(), ApiError>> {
    let account = match (super::route_method(ex.head.method), segs) {
        (Method::Get, ["accounts", id, "deposits"]) => Some((*id).to_owned()),
        (Method::Get, ["deposits"]) => None,
        _ => return None,
    };
    let control = ex.core().app.control.clone();
    Some(match control.call(move |st| st.list_deposits(account.as_deref())).await.and_then(|r| r) {
        Ok(l) => {
            ex.respond_json(200, &list_json(&l)).await;
            Ok(())
        }
        Err(e) => Err(e),
    })
}
