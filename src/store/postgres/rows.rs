//! Result rows into model types: the driver's `get` calls, by column index; the decoding rules are the
//! store's (`store::columns`).

use super::pool::err;
use crate::model::CreditRow;
use crate::model::{AccountRow, KeyRow, KeySpend, PriceRow, StoredResponse, UsageRecord, UsageSummaryRow};
use crate::model::{DirectCharge, DirectKeyRow};
use crate::store::backend::{StoreError, StoreResult};
use crate::store::columns::{DirectColumns, KeyColumns, credit_kind, record_status, to_u64};
use postgres::Row;

/// A row of `KEY_COLUMNS`.
pub(super) fn key_from_row(row: &Row) -> StoreResult<KeyRow> {
    KeyColumns {
        id: row.try_get(0).map_err(err)?,
        account_id: row.try_get(1).map_err(err)?,
        kind: row.try_get(2).map_err(err)?,
        name: row.try_get(3).map_err(err)?,
        prefix: row.try_get(4).map_err(err)?,
        hash: row.try_get(5).map_err(err)?,
        status: row.try_get(6).map_err(err)?,
        parent_id: row.try_get(7).map_err(err)?,
        limit_daily_ngonka: row.try_get(8).map_err(err)?,
        limit_monthly_ngonka: row.try_get(9).map_err(err)?,
        rate_limit_rpm: row.try_get(10).map_err(err)?,
        expires_at: row.try_get(11).map_err(err)?,
        created_at: row.try_get(12).map_err(err)?,
        updated_at: row.try_get(13).map_err(err)?,
        version: row.try_get(14).map_err(err)?,
        fit_max_tokens: row.try_get(15).map_err(err)?,
        allowed_models: row.try_get(16).map_err(err)?,
    }
    .decode()
    .map_err(|e| StoreError::Other(format!("{e} in the keys table")))
}

/// A row of `ACCOUNT_COLUMNS`.
pub(super) fn account_from_row(r: &Row) -> StoreResult<AccountRow> {
    Ok(AccountRow {
        id: r.try_get(0).map_err(err)?,
        name: r.try_get(1).map_err(err)?,
        balance_ngonka: r.try_get(2).map_err(err)?,
        created_at: r.try_get(3).map_err(err)?,
        referral_code: r.try_get(4).map_err(err)?,
        referrer_id: r.try_get(5).map_err(err)?,
    })
}

/// A row of `CREDIT_COLUMNS`.
pub(super) fn credit_from_row(r: &Row) -> StoreResult<CreditRow> {
    let kind: String = r.try_get(3).map_err(err)?;
    let level: Option<i32> = r.try_get(9).map_err(err)?;
    Ok(CreditRow {
        seq: r.try_get(0).map_err(err)?,
        account_id: r.try_get(1).map_err(err)?,
        reference: r.try_get(2).map_err(err)?,
        kind: credit_kind(&kind),
        amount_ngonka: r.try_get(4).map_err(err)?,
        paid: r.try_get(5).map_err(err)?,
        withdrawable: r.try_get(6).map_err(err)?,
        source_account_id: r.try_get(7).map_err(err)?,
        source_reference: r.try_get(8).map_err(err)?,
        referral_level: level.and_then(|l| u8::try_from(l).ok()),
        created_at: r.try_get(10).map_err(err)?,
    })
}

/// `key_id, day spend, month spend`.
pub(super) fn spend_row(r: &Row) -> KeySpend {
    KeySpend { key_id: r.get(0), day_spent: to_u64(r.get(1)), month_spent: to_u64(r.get(2)) }
}

/// `model, price_prompt_ngonka, price_completion_ngonka, updated_at`.
pub(super) fn price_from_row(r: &Row) -> PriceRow {
    PriceRow {
        model: r.get(0),
        price_prompt_ngonka: to_u64(r.get(1)),
        price_completion_ngonka: to_u64(r.get(2)),
        updated_at: r.get(3),
    }
}

/// `group, requests, prompt tokens, completion tokens, cost, last finished`.
pub(super) fn summary_from_row(r: &Row) -> UsageSummaryRow {
    UsageSummaryRow {
        group: r.get(0),
        requests: to_u64(r.get(1)),
        prompt_tokens: to_u64(r.get(2)),
        completion_tokens: to_u64(r.get(3)),
        cost_ngonka: to_u64(r.get(4)),
        last_finished_ms: r.get(5),
    }
}

/// `request_id, account_id, key_id, model, prompt_tokens, completion_tokens, cost_ngonka, status,
/// estimated, latency_ms, started_ms, finished_ms, day, month`.
pub(super) fn usage_from_row(r: &Row) -> UsageRecord {
    UsageRecord {
        request_id: r.get(0),
        account_id: r.get(1),
        key_id: r.get(2),
        model: r.get(3),
        prompt_tokens: to_u64(r.get(4)),
        completion_tokens: to_u64(r.get(5)),
        cost_ngonka: to_u64(r.get(6)),
        status: record_status(r.get(7)),
        estimated: r.get(8),
        latency_ms: to_u64(r.get(9)),
        started_ms: r.get(10),
        finished_ms: r.get(11),
        day: r.get(12),
        month: r.get(13),
    }
}

/// A row of `RESPONSE_COLUMNS`.
pub(super) fn response_from_row(r: &Row) -> StoredResponse {
    StoredResponse {
        id: r.get(0),
        account_id: r.get(1),
        key_id: r.get(2),
        created_ms: r.get(3),
        expires_ms: r.get(4),
        response: r.get(5),
        input_items: r.get(6),
    }
}

/// A row of `DIRECT_COLUMNS`.
pub(super) fn direct_from_row(r: &Row) -> StoreResult<DirectKeyRow> {
    DirectColumns {
        id: r.try_get(0).map_err(err)?,
        account_id: r.try_get(1).map_err(err)?,
        name: r.try_get(2).map_err(err)?,
        address: r.try_get(3).map_err(err)?,
        sealed_private_key: r.try_get(4).map_err(err)?,
        status: r.try_get(5).map_err(err)?,
        published: r.try_get(6).map_err(err)?,
        float_target_ngonka: r.try_get(7).map_err(err)?,
        held_ngonka: r.try_get(8).map_err(err)?,
        chain_balance_ngonka: r.try_get(9).map_err(err)?,
        chain_height: r.try_get(10).map_err(err)?,
        spent_ngonka: r.try_get(11).map_err(err)?,
        pending_kind: r.try_get(12).map_err(err)?,
        pending_tx_hash: r.try_get(13).map_err(err)?,
        pending_amount_ngonka: r.try_get(14).map_err(err)?,
        pending_submitted_height: r.try_get(15).map_err(err)?,
        pending_submitted_ms: r.try_get(16).map_err(err)?,
        created_at: r.try_get(17).map_err(err)?,
        updated_at: r.try_get(18).map_err(err)?,
    }
    .decode()
    .map_err(|e| StoreError::Other(format!("{e} in the direct_keys table")))
}

/// A row of `CHARGE_COLUMNS`.
pub(super) fn charge_from_row(r: &Row) -> DirectCharge {
    DirectCharge {
        reference: r.get(0),
        account_id: r.get(1),
        key_id: r.get(2),
        amount_ngonka: to_u64(r.get(3)),
        from_height: to_u64(r.get(4)),
        to_height: to_u64(r.get(5)),
        at_ms: r.get(6),
    }
}
