//! Key formats: kinds and their prefixes, generation from the OS CSPRNG, and the keyed hash under which
//! a key is stored and looked up (the secret itself is never stored).
//!
//! # Performance
//! The HMAC is keyed once at start; each lookup clones the keyed state (the key schedule is not redone)
//! and hashes ~50 bytes: see `benches/auth.rs`.

use crate::model::{KeyHash, KeyKind};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use std::io;

/// Random characters after a key's prefix.
pub const SECRET_CHARS: usize = 40;

/// The keyed hasher, keyed once.
#[derive(Clone)]
pub struct KeyHasher {
    mac: Hmac<Sha256>,
}

impl std::fmt::Debug for KeyHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyHasher(..)")
    }
}

impl KeyHasher {
    /// `secret` must be at least 32 bytes.
    pub fn new(secret: &[u8]) -> io::Result<Self> {
        if secret.len() < 32 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the key hashing secret must be at least 32 bytes",
            ));
        }
        let mac =
            <Hmac<Sha256> as KeyInit>::new_from_slice(secret).map_err(|e| io::Error::other(e.to_string()))?;
        Ok(Self { mac })
    }

    pub fn hash(&self, key: &str) -> KeyHash {
        let mut mac = self.mac.clone();
        mac.update(key.as_bytes());
        KeyHash(mac.finalize().into_bytes().into())
    }
}

/// A new key: the secret (shown once) and its display prefix (kept).
#[derive(Debug, Clone)]
pub struct NewSecret {
    pub secret: String,
    pub prefix: String,
}

/// Generates a key of `kind`: its prefix and [`SECRET_CHARS`] base62 characters from the OS CSPRNG.
pub fn generate(kind: KeyKind) -> io::Result<NewSecret> {
    let random = crate::secret::random_base62(SECRET_CHARS)?;
    let secret = format!("{}{random}", kind.secret_prefix());
    Ok(NewSecret { prefix: display_prefix(&secret), secret })
}

/// What lists show of a key: its kind prefix and the first 4 random characters.
pub fn display_prefix(secret: &str) -> String {
    let kind_len = KeyKind::of_secret(secret).map_or(0, |k| k.secret_prefix().len());
    secret.chars().take(kind_len + 4).collect()
}

/// The token of an `Authorization: Bearer <token>` value.
pub fn bearer(authorization: Option<&str>) -> Option<&str> {
    let a = authorization?.trim();
    let (scheme, token) = a.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let token = token.trim();
    (!token.is_empty()).then_some(token)
}

/// The key a request presents: `Authorization: Bearer <key>` (OpenAI's SDKs, Anthropic's with an auth
/// token) or `x-api-key: <key>` (Anthropic's with an API key). A client that sends both (Claude Code with
/// `ANTHROPIC_AUTH_TOKEN` and an `ANTHROPIC_API_KEY` left from elsewhere) is served with the one shaped
/// like a gateway key, the bearer when both are.
pub fn presented<'a>(authorization: Option<&'a str>, x_api_key: Option<&'a str>) -> Option<&'a str> {
    let x_api_key = x_api_key.map(str::trim).filter(|k| !k.is_empty());
    match (bearer(authorization), x_api_key) {
        (Some(b), Some(x)) if KeyKind::of_secret(b).is_none() && KeyKind::of_secret(x).is_some() => Some(x),
        (Some(b), _) => Some(b),
        (None, x) => x,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_have_their_prefix_and_length() {
        for kind in KeyKind::ALL {
            let k = generate(kind).unwrap();
            assert!(k.secret.starts_with(kind.secret_prefix()));
            assert_eq!(k.secret.len(), kind.secret_prefix().len() + SECRET_CHARS);
            assert_eq!(KeyKind::of_secret(&k.secret), Some(kind));
            assert!(k.secret.starts_with(&k.prefix) && k.prefix.len() == kind.secret_prefix().len() + 4);
        }
    }

    #[test]
    fn hashing_is_keyed_and_stable() {
        let a = KeyHasher::new(&[1u8; 32]).unwrap();
        let b = KeyHasher::new(&[2u8; 32]).unwrap();
        assert_eq!(a.hash("gk-prx-x"), a.hash("gk-prx-x"));
        assert_ne!(a.hash("gk-prx-x"), a.hash("gk-prx-y"));
        assert_ne!(a.hash("gk-prx-x"), b.hash("gk-prx-x"));
        assert!(KeyHasher::new(&[0u8; 8]).is_err());
    }

    #[test]
    fn bearer_parsing() {
        assert_eq!(bearer(Some("Bearer abc")), Some("abc"));
        assert_eq!(bearer(Some("bearer  abc ")), Some("abc"));
        assert_eq!(bearer(Some("Basic abc")), None);
        assert_eq!(bearer(Some("Bearer ")), None);
        assert_eq!(bearer(None), None);
    }

    #[test]
    fn the_presented_key_is_the_bearer_or_x_api_key_whichever_is_a_gateway_key() {
        let ours = "gk-prx-0123456789012345678901234567890123456789";
        let auth = format!("Bearer {ours}");
        assert_eq!(presented(Some(&auth), None), Some(ours));
        assert_eq!(presented(None, Some(ours)), Some(ours));
        assert_eq!(presented(Some("Bearer sk-ant-other"), Some(ours)), Some(ours), "a stray Anthropic key");
        assert_eq!(presented(Some(&auth), Some("sk-ant-other")), Some(ours));
        let child = "gc-0123456789012345678901234567890123456789";
        assert_eq!(presented(Some(&auth), Some(child)), Some(ours), "both ours: the bearer");
        assert_eq!(presented(Some("Bearer sk-x"), Some("sk-y")), Some("sk-x"));
        assert_eq!(presented(Some("Basic abc"), Some(" ")), None);
    }
}
