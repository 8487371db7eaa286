//! The JSON shapes the account and admin APIs answer with: accounts, keys as listed, child keys with their spend,
//! lists. Money is a decimal string of ngonka; a limit that is not set is `null`.

use crate::control::ControlState;
use crate::model::{AccountRow, KeyKind, KeyRow};
use serde_json::{Value, json};

fn opt_amount(v: Option<u64>) -> Value {
    v.map_or(Value::Null, |v| Value::String(v.to_string()))
}

/// The public shape of a key; `secret` only in the answer that creates or rotates it.
pub fn key_json(row: &KeyRow, secret: Option<&str>) -> Value {
    let mut v = json!({
        "id": row.id,
        "object": "key",
        "name": row.name,
        "kind": row.kind.as_str(),
        "prefix": row.prefix,
        "status": row.status.as_str(),
        "created_at": crate::time::rfc3339(row.created_at),
    });
    if matches!(row.kind, KeyKind::Managed | KeyKind::Child) {
        v["fit_max_tokens"] = json!(row.fit_max_tokens.map(|p| p.as_str()));
    }
    if matches!(row.kind, KeyKind::Managed | KeyKind::Management | KeyKind::Child) {
        v["allowed_models"] = json!(row.allowed_models);
    }
    if row.kind == KeyKind::Child {
        v["management_key_id"] = json!(row.parent_id);
        v["limit_daily_ngonka"] = opt_amount(row.limit_daily_ngonka);
        v["limit_monthly_ngonka"] = opt_amount(row.limit_monthly_ngonka);
        v["rate_limit_rpm"] = json!(row.rate_limit_rpm);
        v["expires_at"] = row.expires_at.map_or(Value::Null, |t| Value::String(crate::time::rfc3339(t)));
    }
    if let Some(s) = secret {
        v["key"] = Value::String(s.to_owned());
    }
    v
}

pub fn list(data: Vec<Value>) -> Value {
    json!({ "object": "list", "data": data })
}

/// A child key as listed: its fields and its spend in the current UTC day and month (control plane).
pub fn child_json(st: &mut ControlState, row: &KeyRow, secret: Option<&str>) -> Value {
    let mut v = key_json(row, secret);
    let (daily_spent, monthly_spent, daily_remaining, monthly_remaining) = st.key_usage(row);

    v["daily_spent_ngonka"] = Value::String(daily_spent.to_string());
    v["monthly_spent_ngonka"] = Value::String(monthly_spent.to_string());
    v["daily_remaining"] = opt_amount(daily_remaining);
    v["monthly_remaining"] = opt_amount(monthly_remaining);
    v
}

/// An account with its live balance (the store's lags behind the journal), holds and status (`active`,
/// or `blocked` at a balance of 0 or below), its referral code, its referrer and its deposit address
/// (`null` while deposits are not enabled).
pub fn account_json(st: &mut ControlState, a: &AccountRow) -> Value {
    let (balance, held) = st.account_balance(&a.id).unwrap_or((a.balance_ngonka, 0));
    json!({
        "id": a.id,
        "object": "account",
        "name": a.name,
        "balance_ngonka": balance.to_string(),
        "held_ngonka": held.to_string(),
        "status": crate::model::AccountStatus::of_balance(balance).as_str(),
        "created_at": crate::time::rfc3339(a.created_at),
        "referral_code": a.referral_code,
        "referrer_id": a.referrer_id,
        "deposit_address": st.deposit_address(&a.id),
    })
}
