//! The admin dashboard's sign-ins.
//!
//! # Design
//! The admin listener has no account to keep a session row under, so an admin session is a signed
//! cookie value, `gas-<expires>.<nonce>.<mac>`: the MAC is HMAC-SHA256 under the server's key secret
//! over the expiry, a random nonce and the admin token. Nothing is stored, so it holds across restarts
//! and on every instance sharing the key secret and admin token, until it expires
//! (`keys.dashboard_session_ttl_ms`). Signing out revokes its nonce in this process's memory until the
//! session would have expired anyway; changing the admin token (or the key secret) ends every admin
//! session at once.

use super::Keys;
use std::collections::HashMap;
use std::io;
use std::sync::Mutex;

const PREFIX: &str = "gas-";
/// Random characters of a session's nonce.
const NONCE_CHARS: usize = 32;
/// Revoked sessions kept at most: past it the ones closest to their expiry are dropped first (a
/// flood of sign-outs cannot grow memory without bound).
const MAX_REVOKED: usize = 10_000;

/// A verified admin session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminSession {
    pub nonce: String,
    /// Unix seconds.
    pub expires_at: i64,
}

/// Issues, checks and revokes admin sessions.
#[derive(Debug, Default)]
pub struct AdminSessions {
    /// Signed-out nonces and when they would have expired.
    revoked: Mutex<HashMap<String, i64>>,
}

fn mac(keys: &Keys, admin_token: &str, expires_at: i64, nonce: &str) -> String {
    keys.hash(&format!("dashboard-admin-session\n{expires_at}\n{nonce}\n{admin_token}")).to_hex()
}

impl AdminSessions {
    pub fn new() -> Self {
        Self::default()
    }

    /// A new session's cookie value, valid until `expires_at` (Unix seconds).
    pub fn issue(&self, keys: &Keys, admin_token: &str, expires_at: i64) -> io::Result<String> {
        let nonce = crate::secret::random_base62(NONCE_CHARS)?;
        let mac = mac(keys, admin_token, expires_at, &nonce);
        Ok(format!("{PREFIX}{expires_at}.{nonce}.{mac}"))
    }

    /// The session a cookie value stands for: `None` when it is malformed, forged, expired or signed
    /// out.
    pub fn verify(&self, keys: &Keys, admin_token: &str, value: &str, now_unix: i64) -> Option<AdminSession> {
        let mut parts = value.strip_prefix(PREFIX)?.split('.');
        let (expires, nonce, given) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some()
            || nonce.len() != NONCE_CHARS
            || !nonce.bytes().all(|b| b.is_ascii_alphanumeric())
        {
            return None;
        }
        let expires_at: i64 = expires.parse().ok()?;
        let expected = mac(keys, admin_token, expires_at, nonce);
        if !crate::secret::constant_time_eq(given.as_bytes(), expected.as_bytes()) || expires_at <= now_unix {
            return None;
        }
        if self.revoked.lock().ok()?.contains_key(nonce) {
            return None;
        }
        Some(AdminSession { nonce: nonce.to_owned(), expires_at })
    }

    /// Signs `session` out on this instance.
    pub fn revoke(&self, session: &AdminSession, now_unix: i64) {
        let Ok(mut revoked) = self.revoked.lock() else { return };
        revoked.retain(|_, expires| *expires > now_unix);
        if revoked.len() >= MAX_REVOKED
            && let Some(soonest) = revoked.iter().min_by_key(|(_, e)| **e).map(|(n, _)| n.clone())
        {
            revoked.remove(&soonest);
        }
        revoked.insert(session.nonce.clone(), session.expires_at);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::keys::KeyHasher;

    fn keys(secret: u8) -> Keys {
        Keys::new(KeyHasher::new(&[secret; 32]).unwrap())
    }

    #[test]
    fn a_session_holds_until_it_expires_or_is_revoked() {
        let (k, sessions) = (keys(1), AdminSessions::new());
        let value = sessions.issue(&k, "gadm-t", 1_000).unwrap();
        let s = sessions.verify(&k, "gadm-t", &value, 999).expect("valid before its expiry");
        assert_eq!(s.expires_at, 1_000);
        assert_eq!(sessions.verify(&k, "gadm-t", &value, 1_000), None, "expired");
        let other = sessions.issue(&k, "gadm-t", 1_000).unwrap();
        sessions.revoke(&s, 500);
        assert_eq!(sessions.verify(&k, "gadm-t", &value, 600), None, "signed out");
        assert!(sessions.verify(&k, "gadm-t", &other, 600).is_some(), "another session is not");
    }

    #[test]
    fn forged_or_foreign_values_are_refused() {
        let (k, sessions) = (keys(1), AdminSessions::new());
        let value = sessions.issue(&k, "gadm-t", 1_000).unwrap();
        assert_eq!(sessions.verify(&k, "gadm-other", &value, 0), None, "another admin token");
        assert_eq!(sessions.verify(&keys(2), "gadm-t", &value, 0), None, "another key secret");
        let later = value.replacen("gas-1000.", "gas-9000.", 1);
        assert_eq!(sessions.verify(&k, "gadm-t", &later, 0), None, "a changed expiry");
        for bad in ["", "gas-", "gas-1.2.3", "gds-abc", &format!("{value}.x")] {
            assert_eq!(sessions.verify(&k, "gadm-t", bad, 0), None, "{bad}");
        }
    }

    #[test]
    fn revocations_are_bounded() {
        let sessions = AdminSessions::new();
        for i in 0..(MAX_REVOKED + 5) {
            let s = AdminSession { nonce: format!("{i:032}"), expires_at: 10_000 + i as i64 };
            sessions.revoke(&s, 0);
        }
        let revoked = sessions.revoked.lock().unwrap();
        assert_eq!(revoked.len(), MAX_REVOKED);
        assert!(revoked.contains_key(&format!("{:032}", MAX_REVOKED + 4)), "the latest is kept");
    }
}
