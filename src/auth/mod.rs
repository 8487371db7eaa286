//! Authentication: key formats and hashing ([`keys`]), the in-memory key cache ([`cache`]), the
//! dashboard's admin sign-ins ([`admin_session`]), and [`Keys`], which checks an inference or account
//! request's bearer, or a dashboard session, against them.

pub mod admin_session;
pub mod cache;
pub mod keys;

use crate::error::ApiError;
use crate::model::{KeyHash, KeyKind, KeyStatus};
use cache::{KeyCache, KeyEntry};
use keys::{KeyHasher, bearer, presented};
use std::sync::Arc;

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

/// Every live key, and how a presented secret is looked up (its keyed hash).
#[derive(Debug)]
pub struct Keys {
    cache: KeyCache,
    hasher: KeyHasher,
}

impl Keys {
    pub fn new(hasher: KeyHasher) -> Self {
        Self { cache: KeyCache::new(), hasher }
    }

    /// The keyed hash a secret is stored and looked up by.
    pub fn hash(&self, secret: &str) -> KeyHash {
        self.hasher.hash(secret)
    }

    /// The entry of a key by its hash.
    pub fn get(&self, hash: &KeyHash) -> Option<Arc<KeyEntry>> {
        self.cache.get(hash)
    }

    /// Control plane only: the key's entry, replacing any before it.
    pub fn put(&self, hash: KeyHash, entry: Arc<KeyEntry>) {
        self.cache.put(hash, entry);
    }

    /// Control plane only.
    pub fn remove(&self, hash: &KeyHash) {
        self.cache.remove(hash);
    }

    pub fn len(&self) -> u64 {
        self.cache.entry_count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lookup(&self, token: &str) -> Option<Arc<KeyEntry>> {
        // A token that does not look like any of our keys is refused without hashing.
        KeyKind::of_secret(token)?;
        self.cache.get(&self.hasher.hash(token))
    }

    /// Checks an inference request's key: unknown, rotated away or archived → 401 `invalid_api_key`;
    /// expired → 401 `key_expired`; paused → 403 `key_paused`; a management key → 403
    /// `management_key_not_allowed`.
    pub fn authenticate_inference(
        &self,
        authorization: Option<&str>,
        now_unix: i64,
    ) -> Result<Arc<KeyEntry>, ApiError> {
        self.authenticate_key(bearer(authorization), now_unix)
    }

    /// The same for a request that may present its key as a bearer or in `x-api-key` (see
    /// [`keys::presented`]).
    pub fn authenticate_presented(
        &self,
        authorization: Option<&str>,
        x_api_key: Option<&str>,
        now_unix: i64,
    ) -> Result<Arc<KeyEntry>, ApiError> {
        self.authenticate_key(presented(authorization, x_api_key), now_unix)
    }

    fn authenticate_key(&self, token: Option<&str>, now_unix: i64) -> Result<Arc<KeyEntry>, ApiError> {
        let token = token.ok_or(ApiError::InvalidApiKey)?;
        let key = self.lookup(token).ok_or(ApiError::InvalidApiKey)?;
        match key.kind {
            KeyKind::Management => return Err(ApiError::ManagementKeyNotAllowed),
            KeyKind::AccountToken | KeyKind::DashboardSession => return Err(ApiError::InvalidApiKey),
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
        Ok(key)
    }

    /// Checks an account-API bearer: the account token (`gka-`), or, where `allow_management` (the
    /// children endpoints), an active management key (`gm-`).
    pub fn authenticate_account(
        &self,
        authorization: Option<&str>,
        allow_management: bool,
        now_unix: i64,
    ) -> Result<Caller, ApiError> {
        let token = bearer(authorization).ok_or(ApiError::InvalidApiKey)?;
        self.account_token(token, allow_management, now_unix)
    }

    /// [`Self::authenticate_account`] for a token already taken out of its header (the dashboard's
    /// sign-in form).
    pub fn account_token(
        &self,
        token: &str,
        allow_management: bool,
        now_unix: i64,
    ) -> Result<Caller, ApiError> {
        let key = self.lookup(token).ok_or(ApiError::InvalidApiKey)?;
        if key.status == KeyStatus::Archived {
            return Err(ApiError::InvalidApiKey);
        }
        match key.kind {
            KeyKind::AccountToken => Ok(Caller::Account { account_id: Arc::clone(key.account_id()) }),
            KeyKind::Management if allow_management => {
                if key.is_expired(now_unix) {
                    return Err(ApiError::KeyExpired);
                }
                if key.status == KeyStatus::Paused {
                    return Err(ApiError::KeyPaused);
                }
                Ok(Caller::ManagementKey {
                    account_id: Arc::clone(key.account_id()),
                    key_id: Arc::clone(key.id()),
                })
            }
            _ => Err(ApiError::InvalidApiKey),
        }
    }

    /// The account a dashboard session cookie (`gds-…`) signs in: refused (401 `invalid_api_key`)
    /// once it is signed out (archived), expired, or anything but a session.
    pub fn authenticate_session(&self, secret: &str, now_unix: i64) -> Result<Arc<str>, ApiError> {
        let key = self.lookup(secret).ok_or(ApiError::InvalidApiKey)?;
        if key.kind != KeyKind::DashboardSession
            || key.status != KeyStatus::Active
            || key.expires_at.is_none_or(|t| t <= now_unix)
        {
            return Err(ApiError::InvalidApiKey);
        }
        Ok(Arc::clone(key.account_id()))
    }

    /// The token the dashboard's page sends back with every write (`X-CSRF-Token`) for the session
    /// whose secret is `session`: derived from it under the server secret, so nothing stores it, a page
    /// of the same session can be given it, and no other site can compute it.
    pub fn csrf_token(&self, session: &str) -> String {
        self.hasher.hash(&format!("dashboard-csrf\n{session}")).to_hex()
    }
}
