//! Authentication: key formats and hashing ([`keys`]), the in-memory key cache ([`cache`]), and the
//! checks an inference or account request goes through.

pub mod cache;
pub mod keys;

use crate::app::App;
use crate::error::ApiError;
use crate::model::{KeyKind, KeyStatus};
use cache::KeyEntry;
use keys::bearer;
use std::sync::Arc;

/// The key an inference request is made with.
#[derive(Debug, Clone)]
pub struct Principal {
    pub key: Arc<KeyEntry>,
}

impl Principal {
    pub fn key_id(&self) -> &str {
        &self.key.id
    }
}

fn lookup(app: &App, token: &str) -> Option<Arc<KeyEntry>> {
    // A token that does not look like any of our keys is refused without hashing.
    KeyKind::of_secret(token)?;
    app.keys.get(&app.hasher.hash(token))
}

/// Checks an inference request's key (DESIGN §1): unknown, rotated away or archived → 401
/// `invalid_api_key`; expired → 401 `key_expired`; paused → 403 `key_paused`; a management key → 403
/// `management_key_not_allowed`.
pub fn authenticate_inference(
    app: &App,
    authorization: Option<&str>,
    now_unix: i64,
) -> Result<Principal, ApiError> {
    let token = bearer(authorization).ok_or(ApiError::InvalidApiKey)?;
    let key = lookup(app, token).ok_or(ApiError::InvalidApiKey)?;
    match key.kind {
        KeyKind::Management => return Err(ApiError::ManagementKeyNotAllowed),
        KeyKind::AccountToken => return Err(ApiError::InvalidApiKey),
        KeyKind::Managed | KeyKind::Child => {}
    }
    if key.status == KeyStatus::Archived {
        return Err(ApiError::InvalidApiKey);
    }
    if key.is_expired(now_unix) {
        return Err(ApiError::KeyExpired);
    }
    if key.status == KeyStatus::Paused {
        return Err(ApiError::KeyPaused);
    }
    Ok(Principal { key })
}

/// Who calls the account API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// The account's own token: the whole account.
    Account { account_id: Arc<str> },
    /// A management key: only its own children.
    ManagementKey { account_id: Arc<str>, key_id: Arc<str> },
}

impl Caller {
    pub fn account_id(&self) -> &Arc<str> {
        match self {
            Self::Account { account_id } | Self::ManagementKey { account_id, .. } => account_id,
        }
    }
}

/// Checks an account-API bearer: the account token (`gka-`), or, where `allow_management` (the children
/// endpoints), an active management key (`gm-`).
pub fn authenticate_account(
    app: &App,
    authorization: Option<&str>,
    allow_management: bool,
    now_unix: i64,
) -> Result<Caller, ApiError> {
    let token = bearer(authorization).ok_or(ApiError::InvalidApiKey)?;
    let key = lookup(app, token).ok_or(ApiError::InvalidApiKey)?;
    if key.status == KeyStatus::Archived {
        return Err(ApiError::InvalidApiKey);
    }
    match key.kind {
        KeyKind::AccountToken => Ok(Caller::Account { account_id: Arc::clone(&key.account_id) }),
        KeyKind::Management if allow_management => {
            if key.is_expired(now_unix) {
                return Err(ApiError::KeyExpired);
            }
            if key.status == KeyStatus::Paused {
                return Err(ApiError::KeyPaused);
            }
            Ok(Caller::ManagementKey { account_id: Arc::clone(&key.account_id), key_id: Arc::clone(&key.id) })
        }
        _ => Err(ApiError::InvalidApiKey),
    }
}
