//! Keys as the store keeps them and every layer speaks of them: kinds, states, keyed hashes, rows,
//! the fit policy a key may carry and the models it may use.

/// What a key is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyKind {
    /// `gk-prx-…`: inference, billed to its account; pause, resume, rotate, archive.
    Managed,
    /// `gm-…`: mints child keys; never valid for inference.
    Management,
    /// `gc-…`: inference with its own limits, billed to the management key's account.
    Child,
    /// `gka-…`: the account's own token for the account API.
    AccountToken,
    /// `gds-…`: a dashboard sign-in, standing for the account token while it lasts; only ever
    /// presented as the dashboard's cookie, never valid for inference, not listed with the account's
    /// keys and not counted against its quota.
    DashboardSession,
}

impl KeyKind {
    /// Every kind, `Managed` before `AccountToken` (`gk-prx-` and `gka-` both start with `gk`).
    pub const ALL: [KeyKind; 5] =
        [Self::Managed, Self::AccountToken, Self::Management, Self::Child, Self::DashboardSession];

    pub fn secret_prefix(self) -> &'static str {
        match self {
            Self::Managed => "gk-prx-",
            Self::Management => "gm-",
            Self::Child => "gc-",
            Self::AccountToken => "gka-",
            Self::DashboardSession => "gds-",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Managed => "managed",
            Self::Management => "management",
            Self::Child => "child",
            Self::AccountToken => "account_token",
            Self::DashboardSession => "dashboard_session",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "managed" => Self::Managed,
            "management" => Self::Management,
            "child" => Self::Child,
            "account_token" => Self::AccountToken,
            "dashboard_session" => Self::DashboardSession,
            _ => return None,
        })
    }

    /// The kind a presented secret claims by its prefix (`gk-prx-` before `gka-`: both start with `gk`).
    pub fn of_secret(secret: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| secret.starts_with(k.secret_prefix()))
    }
}

/// A key's lifecycle state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyStatus {
    Active,
    Paused,
    /// Permanent: nothing brings it back.
    Archived,
}

impl KeyStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Paused => "paused",
            Self::Archived => "archived",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "active" => Self::Active,
            "paused" => Self::Paused,
            "archived" => Self::Archived,
            _ => return None,
        })
    }
}

/// HMAC-SHA256 of a key under the server secret: the only form in which keys are stored.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyHash(pub [u8; 32]);

impl KeyHash {
    /// Lowercase hex, 64 characters (a token derived from a hash, never a stored key's hash).
    pub fn to_hex(&self) -> String {
        use std::fmt::Write;
        self.0.iter().fold(String::with_capacity(64), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
    }
}

impl std::fmt::Debug for KeyHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyHash({:02x}{:02x}{:02x}{:02x}…)", self.0[0], self.0[1], self.0[2], self.0[3])
    }
}

/// A key, as stored: never the secret, only its keyed hash and display prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRow {
    pub id: String,
    pub account_id: String,
    pub kind: KeyKind,
    pub name: String,
    pub prefix: String,
    pub hash: KeyHash,
    pub status: KeyStatus,
    /// For a child key: its management key.
    pub parent_id: Option<String>,
    pub limit_daily_ngonka: Option<u64>,
    pub limit_monthly_ngonka: Option<u64>,
    pub rate_limit_rpm: Option<u32>,
    /// Unix seconds.
    pub expires_at: Option<i64>,
    /// Whether its requests' `max_tokens` are fitted to what is left; `None` = the config's default.
    pub fit_max_tokens: Option<FitPolicy>,
    /// The models its requests may name (ids, as configured); `None` = every model. Managed, management
    /// and child keys carry it; a child key's list stays within its management key's.
    pub allowed_models: Option<Vec<String>>,
    pub created_at: i64,
    pub updated_at: i64,
    /// Set by the store on every write; increases store-wide.
    pub version: i64,
}

/// Which requests are fitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FitPolicy {
    /// Only requests that did not set `max_tokens` themselves.
    Unset,
    /// Every request, an explicit `max_tokens` too (coding agents send a large one as a ceiling).
    Always,
    /// None: a request that does not fit is refused.
    Never,
}

impl FitPolicy {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "unset" => Self::Unset,
            "always" => Self::Always,
            "never" => Self::Never,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unset => "unset",
            Self::Always => "always",
            Self::Never => "never",
        }
    }

    /// Whether a request may be fitted, given whether it set `max_tokens` itself.
    pub fn allows(self, explicit_max_tokens: bool) -> bool {
        match self {
            Self::Unset => !explicit_max_tokens,
            Self::Always => true,
            Self::Never => false,
        }
    }
}

/// Most models one key's `allowed_models` may name.
pub const MAX_ALLOWED_MODELS: usize = 64;
/// Longest model id in a key's `allowed_models`, in bytes.
pub const MAX_MODEL_ID_BYTES: usize = 256;

/// Whether a key whose list is `allowed` may use the model `id` (`None`: every model).
pub fn model_allowed(allowed: Option<&[String]>, id: &str) -> bool {
    allowed.is_none_or(|list| list.iter().any(|m| m == id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_parse_back_and_prefixes_do_not_overlap() {
        for k in KeyKind::ALL {
            assert_eq!(KeyKind::parse(k.as_str()), Some(k));
            assert_eq!(KeyKind::of_secret(&format!("{}abcd", k.secret_prefix())), Some(k));
        }
        assert_eq!(KeyKind::of_secret("gx-abcd"), None);
    }

    #[test]
    fn policies() {
        assert!(FitPolicy::Unset.allows(false) && !FitPolicy::Unset.allows(true));
        assert!(FitPolicy::Always.allows(true) && !FitPolicy::Never.allows(false));
        for p in [FitPolicy::Unset, FitPolicy::Always, FitPolicy::Never] {
            assert_eq!(FitPolicy::parse(p.as_str()), Some(p));
        }
        assert_eq!(FitPolicy::parse("sometimes"), None);
    }

    #[test]
    fn model_lists() {
        let list = vec!["a/b".to_owned(), "c".to_owned()];
        assert!(model_allowed(None, "x"));
        assert!(model_allowed(Some(&list), "c") && !model_allowed(Some(&list), "x"));
        assert!(!model_allowed(Some(&[]), "c"), "an empty list allows nothing");
    }
}
