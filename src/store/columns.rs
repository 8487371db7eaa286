//! How model values are kept in the store's columns, the same for every backend: the key column list,
//! kinds, statuses and fit policies as text, unsigned amounts in signed integer columns, and the errors
//! for a value that does not fit or does not decode. A backend only moves values between its driver's
//! rows and these.

use super::backend::{StoreError, StoreResult};
use crate::model::{DirectKeyRow, PendingTransfer, TransferKind};
use crate::model::{FitPolicy, KeyHash, KeyKind, KeyRow, KeyStatus, RecordStatus, UsageRecord};

/// The columns of `keys` that make a [`KeyRow`], in the order of [`KeyColumns`].
pub(super) const KEY_COLUMNS: &str = "id, account_id, kind, name, prefix, hash, status, parent_id, limit_daily_ngonka, \
     limit_monthly_ngonka, rate_limit_rpm, expires_at, created_at, updated_at, version, fit_max_tokens, \
     allowed_models";

/// The columns of `responses` that make a [`StoredResponse`](crate::model::StoredResponse), in its
/// fields' order.
pub(super) const RESPONSE_COLUMNS: &str =
    "id, account_id, key_id, created_ms, expires_ms, response, input_items";

/// The columns of `direct_keys` that make a [`DirectKeyRow`], in the order of [`DirectColumns`].
pub(super) const DIRECT_COLUMNS: &str = "id, account_id, name, address, sealed_private_key, status, published, \
     float_target_ngonka, held_ngonka, chain_balance_ngonka, chain_height, spent_ngonka, pending_kind, \
     pending_tx_hash, pending_amount_ngonka, pending_submitted_height, pending_submitted_ms, created_at, updated_at";

/// The columns of `direct_charges` that make a [`DirectCharge`](crate::model::DirectCharge), in its
/// fields' order.
pub(super) const CHARGE_COLUMNS: &str =
    "reference, account_id, key_id, amount_ngonka, from_height, to_height, at_ms";

/// The columns of `accounts` that make an [`AccountRow`](crate::model::AccountRow), in its fields'
/// order.
pub(super) const ACCOUNT_COLUMNS: &str = "id, name, balance_ngonka, created_at, referral_code, referrer_id";

/// The columns of `credits` that make a [`CreditRow`](crate::model::CreditRow), in its fields' order.
pub(super) const CREDIT_COLUMNS: &str = "seq, account_id, reference, kind, amount_ngonka, paid, withdrawable, \
     source_account_id, source_reference, referral_level, created_at";
/// The columns of `deposits` that make a [`DepositRow`](crate::model::DepositRow), in the order of
/// [`DepositColumns`].
pub(super) const DEPOSIT_COLUMNS: &str = "account_id, tx_hash, address, amount_ngonka, credit_ngonka, height, \
     block_hash, status, credit_reference, seen_at, credited_at";

/// One row of [`DEPOSIT_COLUMNS`] as a driver reads it.
#[derive(Debug)]
pub(super) struct DepositColumns {
    pub account_id: String,
    pub tx_hash: String,
    pub address: String,
    pub amount_ngonka: i64,
    pub credit_ngonka: i64,
    pub height: i64,
    pub block_hash: String,
    pub status: String,
    pub credit_reference: Option<String>,
    pub seen_at: i64,
    pub credited_at: Option<i64>,
}

impl DepositColumns {
    /// The deposit these columns hold; a status this build does not know is refused.
    pub fn decode(self) -> Result<crate::model::DepositRow, BadColumn> {
        let status = crate::model::DepositStatus::parse(&self.status)
            .ok_or_else(|| BadColumn { what: "deposit status", value: self.status.clone() })?;
        Ok(crate::model::DepositRow {
            account_id: self.account_id,
            tx_hash: self.tx_hash,
            address: self.address,
            amount_ngonka: self.amount_ngonka,
            credit_ngonka: self.credit_ngonka,
            height: to_u64(self.height),
            block_hash: self.block_hash,
            status,
            credit_reference: self.credit_reference,
            seen_at: self.seen_at,
            credited_at: self.credited_at,
        })
    }
}

/// One row of [`DIRECT_COLUMNS`], as a driver reads and writes it.
#[derive(Debug)]
pub(super) struct DirectColumns {
    pub id: String,
    pub account_id: String,
    pub name: String,
    pub address: String,
    pub sealed_private_key: String,
    pub status: String,
    pub published: bool,
    pub float_target_ngonka: i64,
    pub held_ngonka: i64,
    pub chain_balance_ngonka: i64,
    pub chain_height: i64,
    pub spent_ngonka: i64,
    pub pending_kind: Option<String>,
    pub pending_tx_hash: Option<String>,
    pub pending_amount_ngonka: Option<i64>,
    pub pending_submitted_height: Option<i64>,
    pub pending_submitted_ms: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
}

impl DirectColumns {
    /// The columns of `row`; an amount past `i64::MAX` is refused.
    pub fn of(row: &DirectKeyRow) -> StoreResult<Self> {
        let p = row.pending.as_ref();
        Ok(Self {
            id: row.id.clone(),
            account_id: row.account_id.clone(),
            name: row.name.clone(),
            address: row.address.clone(),
            sealed_private_key: row.sealed_private_key.clone(),
            status: row.status.as_str().to_owned(),
            published: row.published,
            float_target_ngonka: to_i64(row.float_target_ngonka, "float_target_ngonka")?,
            held_ngonka: to_i64(row.held_ngonka, "held_ngonka")?,
            chain_balance_ngonka: to_i64(row.chain_balance_ngonka, "chain_balance_ngonka")?,
            chain_height: to_i64(row.chain_height, "chain_height")?,
            spent_ngonka: to_i64(row.spent_ngonka, "spent_ngonka")?,
            pending_kind: p.map(|p| p.kind.as_str().to_owned()),
            pending_tx_hash: p.map(|p| p.tx_hash.clone()),
            pending_amount_ngonka: p.map(|p| to_i64(p.amount_ngonka, "pending amount")).transpose()?,
            pending_submitted_height: p.map(|p| to_i64(p.submitted_height, "pending height")).transpose()?,
            pending_submitted_ms: p.map(|p| p.submitted_ms),
            created_at: row.created_at,
            updated_at: row.updated_at,
        })
    }

    /// The direct key these columns hold; a status or transfer kind this build does not know is refused.
    pub fn decode(self) -> Result<DirectKeyRow, BadColumn> {
        let bad = |what, value: &str| BadColumn { what, value: value.to_owned() };
        let pending = match (self.pending_kind, self.pending_tx_hash) {
            (Some(kind), Some(tx_hash)) => Some(PendingTransfer {
                kind: TransferKind::parse(&kind).ok_or_else(|| bad("pending_kind", &kind))?,
                tx_hash,
                amount_ngonka: to_u64(self.pending_amount_ngonka.unwrap_or(0)),
                submitted_height: to_u64(self.pending_submitted_height.unwrap_or(0)),
                submitted_ms: self.pending_submitted_ms.unwrap_or(0),
            }),
            _ => None,
        };
        Ok(DirectKeyRow {
            id: self.id,
            account_id: self.account_id,
            name: self.name,
            address: self.address,
            sealed_private_key: self.sealed_private_key,
            status: KeyStatus::parse(&self.status).ok_or_else(|| bad("status", &self.status))?,
            published: self.published,
            float_target_ngonka: to_u64(self.float_target_ngonka),
            held_ngonka: to_u64(self.held_ngonka),
            chain_balance_ngonka: to_u64(self.chain_balance_ngonka),
            chain_height: to_u64(self.chain_height),
            spent_ngonka: to_u64(self.spent_ngonka),
            pending,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

/// One row of [`KEY_COLUMNS`] as a driver reads it, not yet decoded.
#[derive(Debug)]
pub(super) struct KeyColumns {
    pub id: String,
    pub account_id: String,
    pub kind: String,
    pub name: String,
    pub prefix: String,
    pub hash: Vec<u8>,
    pub status: String,
    pub parent_id: Option<String>,
    pub limit_daily_ngonka: Option<i64>,
    pub limit_monthly_ngonka: Option<i64>,
    pub rate_limit_rpm: Option<i64>,
    pub expires_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
    pub version: i64,
    pub fit_max_tokens: Option<String>,
    pub allowed_models: Option<String>,
}

/// A stored key value this build cannot decode.
#[derive(Debug, thiserror::Error)]
#[error("bad {what} {value:?}")]
pub(super) struct BadColumn {
    what: &'static str,
    value: String,
}

impl KeyColumns {
    /// The key these columns hold. A negative limit reads as 0 and an rpm past `u32::MAX` as `u32::MAX`;
    /// a hash that is not 32 bytes or a kind, status or fit policy this build does not know is refused.
    pub fn decode(self) -> Result<KeyRow, BadColumn> {
        let bad = |what, value: &str| BadColumn { what, value: value.to_owned() };
        let hash: [u8; 32] = self.hash.as_slice().try_into().map_err(|_| bad("hash", "length"))?;
        Ok(KeyRow {
            id: self.id,
            account_id: self.account_id,
            kind: KeyKind::parse(&self.kind).ok_or_else(|| bad("kind", &self.kind))?,
            name: self.name,
            prefix: self.prefix,
            hash: KeyHash(hash),
            status: KeyStatus::parse(&self.status).ok_or_else(|| bad("status", &self.status))?,
            parent_id: self.parent_id,
            limit_daily_ngonka: self.limit_daily_ngonka.map(to_u64),
            limit_monthly_ngonka: self.limit_monthly_ngonka.map(to_u64),
            rate_limit_rpm: self.rate_limit_rpm.map(|v| v.clamp(0, i64::from(u32::MAX)) as u32),
            expires_at: self.expires_at,
            created_at: self.created_at,
            updated_at: self.updated_at,
            version: self.version,
            fit_max_tokens: match self.fit_max_tokens {
                Some(p) => Some(FitPolicy::parse(&p).ok_or_else(|| bad("fit_max_tokens", &p))?),
                None => None,
            },
            allowed_models: match self.allowed_models {
                Some(list) => Some(serde_json::from_str(&list).map_err(|_| bad("allowed_models", &list))?),
                None => None,
            },
        })
    }
}

/// A key's `allowed_models` as its column holds it: a JSON array of ids, `NULL` for every model.
pub(super) fn allowed_models_column(row: &KeyRow) -> Option<String> {
    row.allowed_models.as_ref().map(|list| serde_json::Value::from(list.clone()).to_string())
}

/// A key's limits as their signed columns hold them.
#[derive(Debug)]
pub(super) struct LimitColumns {
    pub limit_daily_ngonka: Option<i64>,
    pub limit_monthly_ngonka: Option<i64>,
    pub rate_limit_rpm: Option<i64>,
}

impl LimitColumns {
    /// Refuses a spend limit past `i64::MAX`.
    pub fn of(row: &KeyRow) -> StoreResult<Self> {
        let limit = |v: Option<u64>, what: &str| v.map(|v| to_i64(v, what)).transpose();
        Ok(Self {
            limit_daily_ngonka: limit(row.limit_daily_ngonka, "limit_daily_ngonka")?,
            limit_monthly_ngonka: limit(row.limit_monthly_ngonka, "limit_monthly_ngonka")?,
            rate_limit_rpm: row.rate_limit_rpm.map(i64::from),
        })
    }
}

/// A usage record's amounts as their signed columns hold them.
#[derive(Debug)]
pub(super) struct UsageColumns {
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub cost_ngonka: i64,
    pub latency_ms: i64,
}

impl UsageColumns {
    /// Refuses an amount past `i64::MAX`.
    pub fn of(r: &UsageRecord) -> StoreResult<Self> {
        Ok(Self {
            cost_ngonka: to_i64(r.cost_ngonka, "cost")?,
            prompt_tokens: to_i64(r.prompt_tokens, "tokens")?,
            completion_tokens: to_i64(r.completion_tokens, "tokens")?,
            latency_ms: to_i64(r.latency_ms, "latency")?,
        })
    }
}

/// An unsigned amount (tokens, ngonka, milliseconds) for a signed integer column; one past `i64::MAX`
/// is refused rather than wrapped.
pub(super) fn to_i64(v: u64, what: &str) -> StoreResult<i64> {
    i64::try_from(v).map_err(|_| StoreError::Other(format!("{what} {v} does not fit the store")))
}

/// An unsigned amount read back from a signed integer column; a negative one (never written) reads as 0.
pub(super) fn to_u64(v: i64) -> u64 {
    v.max(0) as u64
}

/// A usage record's stored status; one this build does not know reads as `Completed`.
pub(super) fn record_status(s: &str) -> RecordStatus {
    RecordStatus::parse(s).unwrap_or(RecordStatus::Completed)
}

/// A credit's stored kind; one this build does not know reads as `Admin`.
pub(super) fn credit_kind(s: &str) -> crate::model::CreditKind {
    crate::model::CreditKind::parse(s).unwrap_or(crate::model::CreditKind::Admin)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn columns() -> KeyColumns {
        KeyColumns {
            id: "key_1".into(),
            account_id: "acc_1".into(),
            kind: "child".into(),
            name: "k".into(),
            prefix: "gc-abcd".into(),
            hash: vec![7; 32],
            status: "paused".into(),
            parent_id: Some("key_0".into()),
            limit_daily_ngonka: Some(5),
            limit_monthly_ngonka: None,
            rate_limit_rpm: Some(60),
            expires_at: Some(1_900_000_000),
            created_at: 1,
            updated_at: 2,
            version: 3,
            fit_max_tokens: Some("never".into()),
            allowed_models: Some(r#"["a/b","c"]"#.into()),
        }
    }

    #[test]
    fn a_key_round_trips_through_its_columns() {
        let row = columns().decode().unwrap();
        assert_eq!(
            (row.kind, row.status, row.fit_max_tokens),
            (KeyKind::Child, KeyStatus::Paused, Some(FitPolicy::Never))
        );
        let limits = LimitColumns::of(&row).unwrap();
        assert_eq!(
            (limits.limit_daily_ngonka, limits.limit_monthly_ngonka, limits.rate_limit_rpm),
            (Some(5), None, Some(60))
        );
        assert_eq!((row.kind.as_str(), row.status.as_str()), ("child", "paused"));
        assert_eq!(row.allowed_models.as_deref(), Some(&["a/b".to_owned(), "c".to_owned()][..]));
        assert_eq!(allowed_models_column(&row).as_deref(), Some(r#"["a/b","c"]"#));
        let all = KeyColumns { allowed_models: None, ..columns() }.decode().unwrap();
        assert_eq!((all.allowed_models.as_ref(), allowed_models_column(&all)), (None, None));
    }

    #[test]
    fn out_of_range_numbers_are_clamped_on_read_and_refused_on_write() {
        let row = KeyColumns { limit_daily_ngonka: Some(-1), rate_limit_rpm: Some(i64::MAX), ..columns() }
            .decode()
            .unwrap();
        assert_eq!((row.limit_daily_ngonka, row.rate_limit_rpm), (Some(0), Some(u32::MAX)));
        let too_big = KeyRow { limit_monthly_ngonka: Some(u64::MAX), ..row };
        let e = LimitColumns::of(&too_big).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("store error: limit_monthly_ngonka {} does not fit the store", u64::MAX)
        );
        assert_eq!(to_u64(-5), 0);
    }

    #[test]
    fn an_unknown_usage_status_reads_as_completed() {
        assert_eq!(record_status("timeout"), RecordStatus::Timeout);
        assert_eq!(record_status("no such status"), RecordStatus::Completed);
    }

    #[test]
    fn unknown_values_are_refused_by_name() {
        let e = |c: KeyColumns| c.decode().unwrap_err().to_string();
        assert_eq!(e(KeyColumns { kind: "robot".into(), ..columns() }), r#"bad kind "robot""#);
        assert_eq!(e(KeyColumns { status: "gone".into(), ..columns() }), r#"bad status "gone""#);
        assert_eq!(
            e(KeyColumns { fit_max_tokens: Some("x".into()), ..columns() }),
            r#"bad fit_max_tokens "x""#
        );
        assert_eq!(
            e(KeyColumns { allowed_models: Some("[1]".into()), ..columns() }),
            r#"bad allowed_models "[1]""#
        );
        assert_eq!(e(KeyColumns { hash: vec![0; 31], ..columns() }), r#"bad hash "length""#);
    }
}
