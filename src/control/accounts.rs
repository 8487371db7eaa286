//! Account and key operations, run on the control plane: each validates against the key mirror, writes
//! the store, then updates the mirror and the cache, in that order, before its caller answers.

use super::ControlState;
use crate::auth::keys;
use crate::error::ApiError;
use crate::model::{AccountRow, KeyRow};
use crate::model::{KeyKind, KeyStatus};

fn now() -> i64 {
    crate::time::unix_secs() as i64
}

fn new_id(prefix: &str) -> Result<String, ApiError> {
    Ok(format!(
        "{prefix}{}",
        crate::secret::random_base62(20).map_err(|e| ApiError::Internal(e.to_string()))?
    ))
}

fn new_secret(kind: KeyKind) -> Result<keys::NewSecret, ApiError> {
    keys::generate(kind).map_err(|e| ApiError::Internal(e.to_string()))
}

fn key_not_found(id: &str) -> ApiError {
    ApiError::NotFound(format!("No key with id {id}."))
}

/// What to create.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeySpec {
    pub name: String,
    pub limit_daily_ngonka: Option<u64>,
    pub limit_monthly_ngonka: Option<u64>,
    pub rate_limit_rpm: Option<u32>,
    pub expires_at: Option<i64>,
    pub fit_max_tokens: Option<crate::model::FitPolicy>,
    /// Model ids or aliases, as the caller gave them (`None`: every model).
    pub allowed_models: Option<Vec<String>>,
}

/// A change to a key: `None` leaves a field, `Some(None)` clears it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyPatch {
    pub name: Option<String>,
    pub limit_daily_ngonka: Option<Option<u64>>,
    pub limit_monthly_ngonka: Option<Option<u64>>,
    pub rate_limit_rpm: Option<Option<u32>>,
    pub expires_at: Option<Option<i64>>,
    pub status: Option<KeyStatus>,
    pub fit_max_tokens: Option<Option<crate::model::FitPolicy>>,
    pub allowed_models: Option<Option<Vec<String>>>,
}

/// A lifecycle action on a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyAction {
    Pause,
    Resume,
    Rotate,
    Archive,
}

impl KeyAction {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pause" => Self::Pause,
            "resume" => Self::Resume,
            "rotate" => Self::Rotate,
            "archive" => Self::Archive,
            _ => return None,
        })
    }
}

/// What a credit answers: whether it credited now (false: a retry of one already made), and the
/// account's live balance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Credited {
    pub applied: bool,
    pub balance_ngonka: i64,
}

/// A key row and, when it was just created or rotated, its secret (shown once).
#[derive(Debug, Clone)]
pub struct KeyWithSecret {
    pub row: KeyRow,
    pub secret: Option<String>,
}

impl ControlState {
    /// Creates an account and its account token.
    pub fn create_account(&mut self, name: &str) -> Result<(AccountRow, KeyWithSecret), ApiError> {
        self.create_account_row(name, None)
    }

    /// Creates an account (referred by `referrer_id`, an account that exists) with a new referral code,
    /// and its account token.
    pub(super) fn create_account_row(
        &mut self,
        name: &str,
        referrer_id: Option<String>,
    ) -> Result<(AccountRow, KeyWithSecret), ApiError> {
        let at = now();
        let account = AccountRow {
            id: new_id("acc_")?,
            name: name.to_owned(),
            balance_ngonka: 0,
            created_at: at,
            // 48 random bits: short enough to type, and a clash (refused by the store) is never seen.
            referral_code: crate::secret::random_hex(6).map_err(|e| ApiError::Internal(e.to_string()))?,
            referrer_id,
        };
        let (token, secret) = self.new_account_token(&account.id, at)?;
        let stored = self.store.insert_account(&account, &token)?;
        self.store_deposit_address(&account.id);
        self.account_counters(&account.id);
        self.apply_rows(std::slice::from_ref(&stored));
        Ok((account, KeyWithSecret { row: stored, secret: Some(secret) }))
    }

    pub fn account(&mut self, id: &str) -> Result<AccountRow, ApiError> {
        self.store.account(id)?.ok_or_else(|| ApiError::NotFound(format!("No account with id {id}.")))
    }

    pub fn accounts(&mut self) -> Result<Vec<AccountRow>, ApiError> {
        Ok(self.store.accounts()?)
    }

    /// A new key row of `kind` with defaults (not yet stored), and its secret.
    fn new_key_row(
        &self,
        account_id: &str,
        kind: KeyKind,
        name: &str,
        at: i64,
    ) -> Result<(KeyRow, String), ApiError> {
        let secret = new_secret(kind)?;
        let row = KeyRow {
            id: new_id("key_")?,
            account_id: account_id.to_owned(),
            kind,
            name: name.to_owned(),
            prefix: secret.prefix,
            hash: self.keys.hash(&secret.secret),
            status: KeyStatus::Active,
            parent_id: None,
            limit_daily_ngonka: None,
            limit_monthly_ngonka: None,
            rate_limit_rpm: None,
            expires_at: None,
            fit_max_tokens: None,
            allowed_models: None,
            created_at: at,
            updated_at: at,
            version: 0,
        };
        Ok((row, secret.secret))
    }

    /// A new account token's row (not yet stored) and its secret.
    fn new_account_token(&self, account_id: &str, at: i64) -> Result<(KeyRow, String), ApiError> {
        self.new_key_row(account_id, KeyKind::AccountToken, "account token", at)
    }

    /// Issues a new account token; the old one stops working at once, and so do the dashboard sessions
    /// signed in with it.
    pub fn rotate_account_token(&mut self, account_id: &str) -> Result<KeyWithSecret, ApiError> {
        self.account(account_id)?;
        let at = now();
        let mut rows: Vec<KeyRow> = self
            .rows
            .values()
            .filter(|k| {
                k.account_id == account_id
                    && matches!(k.kind, KeyKind::AccountToken | KeyKind::DashboardSession)
                    && k.status != KeyStatus::Archived
            })
            .map(|k| KeyRow { status: KeyStatus::Archived, updated_at: at, ..k.clone() })
            .collect();
        let (token, secret) = self.new_account_token(account_id, at)?;
        rows.push(token);
        let stored = self.write_keys(&rows)?;
        let row = stored.into_iter().last().ok_or_else(|| ApiError::Internal("no row written".into()))?;
        Ok(KeyWithSecret { row, secret: Some(secret) })
    }

    /// Creates a managed or management key, or (with `parent`) a child key of that management key.
    pub fn create_key(
        &mut self,
        account_id: &str,
        kind: KeyKind,
        parent: Option<&str>,
        spec: KeySpec,
    ) -> Result<KeyWithSecret, ApiError> {
        if matches!(kind, KeyKind::AccountToken | KeyKind::DashboardSession) {
            return Err(ApiError::bad_request(
                "Account tokens are issued with the account, sessions by signing in.",
                Some("kind"),
            ));
        }
        if !self.rows.values().any(|k| k.account_id == account_id)
            && self.store.account(account_id)?.is_none()
        {
            return Err(ApiError::NotFound(format!("No account with id {account_id}.")));
        }
        let parent_id = match (kind, parent) {
            (KeyKind::Child, Some(p)) => {
                let parent = self
                    .rows
                    .get(p)
                    .filter(|k| k.account_id == account_id && k.kind == KeyKind::Management)
                    .ok_or_else(|| key_not_found(p))?;
                if parent.status == KeyStatus::Archived {
                    return Err(key_not_found(p));
                }
                Some(p.to_owned())
            }
            (KeyKind::Child, None) => {
                return Err(ApiError::Internal("a child key needs its management key".into()));
            }
            _ => None,
        };
        if self.live_key_count(account_id) >= self.max_keys_per_account {
            return Err(ApiError::Forbidden(
                "key_limit_reached",
                format!("This account already holds the maximum of {} keys.", self.max_keys_per_account),
            ));
        }
        let allowed_models = self.allowed_models(spec.allowed_models, parent_id.as_deref())?;
        let (mut row, secret) = self.new_key_row(account_id, kind, &spec.name, now())?;
        row.allowed_models = allowed_models;
        row.parent_id = parent_id;
        row.limit_daily_ngonka = spec.limit_daily_ngonka;
        row.limit_monthly_ngonka = spec.limit_monthly_ngonka;
        row.rate_limit_rpm = spec.rate_limit_rpm;
        row.expires_at = spec.expires_at;
        row.fit_max_tokens = spec.fit_max_tokens;
        let stored = self.write_keys(&[row])?;
        let row = stored.into_iter().next().ok_or_else(|| ApiError::Internal("no row written".into()))?;
        Ok(KeyWithSecret { row, secret: Some(secret) })
    }

    /// The account's keys of `kind` (children: of management key `parent`), oldest first.
    pub fn list_keys(
        &self,
        account_id: &str,
        kind: KeyKind,
        parent: Option<&str>,
    ) -> Result<Vec<KeyRow>, ApiError> {
        if let Some(p) = parent {
            self.rows
                .get(p)
                .filter(|k| k.account_id == account_id && k.kind == KeyKind::Management)
                .ok_or_else(|| key_not_found(p))?;
        }
        let mut rows: Vec<KeyRow> = self
            .rows
            .values()
            .filter(|k| {
                k.account_id == account_id
                    && k.kind == kind
                    && (parent.is_none() || k.parent_id.as_deref() == parent)
            })
            .cloned()
            .collect();
        rows.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(rows)
    }

    /// One of the account's keys whose kind is in `kinds`; anything else is a 404.
    pub fn owned_key(&self, account_id: &str, key_id: &str, kinds: &[KeyKind]) -> Result<KeyRow, ApiError> {
        self.rows
            .get(key_id)
            .filter(|k| k.account_id == account_id && kinds.contains(&k.kind))
            .cloned()
            .ok_or_else(|| key_not_found(key_id))
    }

    /// Pause, resume, rotate or archive a managed or management key (archiving a management key archives
    /// its children too).
    pub fn key_action(
        &mut self,
        account_id: &str,
        key_id: &str,
        action: KeyAction,
        kinds: &[KeyKind],
    ) -> Result<KeyWithSecret, ApiError> {
        let key = self.owned_key(account_id, key_id, kinds)?;
        if key.status == KeyStatus::Archived {
            return Err(ApiError::Conflict("This key is archived; nothing brings it back.".into()));
        }
        let at = now();
        let mut secret = None;
        let mut rows = Vec::new();
        let mut updated = KeyRow { updated_at: at, ..key.clone() };
        match action {
            KeyAction::Pause => updated.status = KeyStatus::Paused,
            KeyAction::Resume => updated.status = KeyStatus::Active,
            KeyAction::Rotate => {
                let s = new_secret(key.kind)?;
                updated.hash = self.keys.hash(&s.secret);
                updated.prefix = s.prefix;
                secret = Some(s.secret);
            }
            KeyAction::Archive => {
                updated.status = KeyStatus::Archived;
                if key.kind == KeyKind::Management {
                    rows.extend(
                        self.rows
                            .values()
                            .filter(|k| {
                                k.parent_id.as_deref() == Some(key_id) && k.status != KeyStatus::Archived
                            })
                            .map(|k| KeyRow { status: KeyStatus::Archived, updated_at: at, ..k.clone() }),
                    );
                }
            }
        }
        rows.insert(0, updated);
        let stored = self.write_keys(&rows)?;
        let row = stored.into_iter().next().ok_or_else(|| ApiError::Internal("no row written".into()))?;
        Ok(KeyWithSecret { row, secret })
    }

    /// A key's model list as it is stored: each name resolved to its model's id (an alias to the id it
    /// names), without repeats; a name the model table does not have is a 400. A child key's list must
    /// stay within its management key's (`parent`), when that one has a list.
    fn allowed_models(
        &self,
        names: Option<Vec<String>>,
        parent: Option<&str>,
    ) -> Result<Option<Vec<String>>, ApiError> {
        let Some(names) = names else { return Ok(None) };
        let bad = |m: String| ApiError::bad_request(m, Some("allowed_models"));
        let table = self.models.load();
        let mut ids: Vec<String> = Vec::with_capacity(names.len());
        for name in names {
            let id = table.get(&name).map(|m| m.id.clone()).ok_or_else(|| {
                bad(format!("`allowed_models` names `{name}`, which is not a model of this gateway."))
            })?;
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
        let parent_list = parent.and_then(|p| self.rows.get(p)).and_then(|p| p.allowed_models.as_ref());
        if let Some(outside) = parent_list.and_then(|list| ids.iter().find(|id| !list.contains(id))) {
            return Err(bad(format!(
                "`allowed_models` names `{outside}`, which its management key may not use."
            )));
        }
        Ok(Some(ids))
    }

    /// Changes a managed or management key (a child key: [`Self::update_child`]). Narrowing a
    /// management key's models narrows what its children may use at once.
    pub fn update_key(
        &mut self,
        account_id: &str,
        key_id: &str,
        kinds: &[KeyKind],
        patch: KeyPatch,
    ) -> Result<KeyRow, ApiError> {
        let key = self.owned_key(account_id, key_id, kinds)?;
        if key.status == KeyStatus::Archived {
            return Err(key_not_found(key_id));
        }
        if key.kind == KeyKind::Child {
            let parent = key.parent_id.clone().unwrap_or_default();
            return self.update_child(account_id, &parent, key_id, patch);
        }
        self.patch(key, patch)
    }

    /// Changes a child key of management key `parent`.
    pub fn update_child(
        &mut self,
        account_id: &str,
        parent: &str,
        child_id: &str,
        patch: KeyPatch,
    ) -> Result<KeyRow, ApiError> {
        let child = self.child(account_id, parent, child_id)?;
        self.patch(child, patch)
    }

    /// Writes `patch` over `key`.
    fn patch(&mut self, key: KeyRow, patch: KeyPatch) -> Result<KeyRow, ApiError> {
        let mut row = KeyRow { updated_at: now(), ..key };
        if let Some(list) = patch.allowed_models {
            row.allowed_models = self.allowed_models(list, row.parent_id.as_deref())?;
        }
        if let Some(name) = patch.name {
            row.name = name;
        }
        if let Some(v) = patch.limit_daily_ngonka {
            row.limit_daily_ngonka = v;
        }
        if let Some(v) = patch.limit_monthly_ngonka {
            row.limit_monthly_ngonka = v;
        }
        if let Some(v) = patch.rate_limit_rpm {
            row.rate_limit_rpm = v;
        }
        if let Some(v) = patch.expires_at {
            row.expires_at = v;
        }
        if let Some(s) = patch.status {
            row.status = s;
        }
        if let Some(p) = patch.fit_max_tokens {
            row.fit_max_tokens = p;
        }
        let stored = self.write_keys(&[row])?;
        stored.into_iter().next().ok_or_else(|| ApiError::Internal("no row written".into()))
    }

    /// Archives a child key.
    pub fn delete_child(
        &mut self,
        account_id: &str,
        parent: &str,
        child_id: &str,
    ) -> Result<KeyRow, ApiError> {
        let child = self.child(account_id, parent, child_id)?;
        let row = KeyRow { status: KeyStatus::Archived, updated_at: now(), ..child };
        let stored = self.write_keys(&[row])?;
        stored.into_iter().next().ok_or_else(|| ApiError::Internal("no row written".into()))
    }

    fn child(&self, account_id: &str, parent: &str, child_id: &str) -> Result<KeyRow, ApiError> {
        self.owned_key(account_id, parent, &[KeyKind::Management])?;
        let child = self
            .rows
            .get(child_id)
            .filter(|k| {
                k.account_id == account_id
                    && k.kind == KeyKind::Child
                    && k.parent_id.as_deref() == Some(parent)
            })
            .cloned()
            .ok_or_else(|| key_not_found(child_id))?;
        if child.status == KeyStatus::Archived {
            return Err(key_not_found(child_id));
        }
        Ok(child)
    }
}

/// Live dashboard sessions an account may hold; one more sign-in signs the oldest out.
pub const MAX_SESSIONS_PER_ACCOUNT: usize = 20;

/// Dashboard sessions: a session is a key row of kind `dashboard_session` that expires, so the store,
/// the change feed and the key cache carry it to every core and instance like any key, and signing
/// out (archiving it) ends it everywhere at once.
impl ControlState {
    /// Signs `account_id` in until `expires_at` (Unix seconds): a new session, its secret (the cookie)
    /// returned once. The account's expired sessions are archived, and past
    /// [`MAX_SESSIONS_PER_ACCOUNT`] the oldest, in the same write.
    pub fn create_session(&mut self, account_id: &str, expires_at: i64) -> Result<KeyWithSecret, ApiError> {
        let at = now();
        let mut live: Vec<&KeyRow> = self
            .rows
            .values()
            .filter(|k| {
                k.account_id == account_id
                    && k.kind == KeyKind::DashboardSession
                    && k.status != KeyStatus::Archived
            })
            .collect();
        // Expired ones first, then the oldest (versions order sessions made in the same second).
        live.sort_by_key(|k| (k.expires_at.unwrap_or(0) > at, k.created_at, k.version));
        let ended = live.iter().filter(|k| k.expires_at.is_none_or(|t| t <= at)).count();
        let over = (live.len() + 1).saturating_sub(MAX_SESSIONS_PER_ACCOUNT);
        let mut rows: Vec<KeyRow> = live
            .iter()
            .take(ended.max(over))
            .map(|k| KeyRow { status: KeyStatus::Archived, updated_at: at, ..(*k).clone() })
            .collect();
        let (mut session, secret) =
            self.new_key_row(account_id, KeyKind::DashboardSession, "dashboard session", at)?;
        session.expires_at = Some(expires_at);
        rows.push(session);
        let stored = self.write_keys(&rows)?;
        let row = stored.into_iter().last().ok_or_else(|| ApiError::Internal("no row written".into()))?;
        Ok(KeyWithSecret { row, secret: Some(secret) })
    }

    /// Signs out the session whose secret is `secret`: whether it was signed in.
    pub fn end_session(&mut self, secret: &str) -> Result<bool, ApiError> {
        let hash = self.keys.hash(secret);
        let Some(row) = self
            .rows
            .values()
            .find(|k| {
                k.hash == hash && k.kind == KeyKind::DashboardSession && k.status != KeyStatus::Archived
            })
            .cloned()
        else {
            return Ok(false);
        };
        self.write_keys(&[KeyRow { status: KeyStatus::Archived, updated_at: now(), ..row }])?;
        Ok(true)
    }
}
