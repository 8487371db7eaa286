//! Random secrets (tokens and keys) from the operating system's CSPRNG, secret files kept in the data
//! directory, and the sealing of secrets the gateway must keep readable (a direct key's private key).
//!
//! # Sealing
//! [`SealingKey`] is HMAC-SHA256 of a fixed label under the server secret (the secret keyed hashes are
//! made with, used here for another purpose by its label, so neither use can stand for the other).
//! A sealed value is `base64(nonce ‖ ciphertext ‖ tag)`: ChaCha20-Poly1305 with a random 96-bit nonce
//! per seal, so sealing the same text twice gives two different strings, and any change to a sealed
//! string, or another server secret, makes [`SealingKey::open`] fail instead of returning other bytes.

use base64::Engine as _;
use chacha20poly1305::aead::{Aead, KeyInit as _};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use hmac::{Hmac, KeyInit as _, Mac as _};
use sha2::{Digest as _, Sha256};
use std::io;
use std::path::Path;

/// What the sealing key is derived for (changing it makes every sealed value unreadable).
const SEALING_LABEL: &[u8] = b"gonka-gateway/sealing-key/v1";
const NONCE_BYTES: usize = 12;
const TAG_BYTES: usize = 16;

/// Why a sealed value does not open.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error("the sealed value is not base64 of a nonce and a ciphertext")]
    Malformed,
    #[error("the sealed value was changed or sealed under another server secret")]
    Forged,
}

/// The key secrets are sealed under, derived from the server secret.
#[derive(Clone)]
pub struct SealingKey {
    cipher: ChaCha20Poly1305,
}

impl std::fmt::Debug for SealingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SealingKey(..)")
    }
}

impl SealingKey {
    /// HMAC-SHA256(server secret, fixed label).
    pub fn from_server_secret(secret: &[u8]) -> Self {
        let derived: [u8; 32] = match <Hmac<Sha256>>::new_from_slice(secret) {
            Ok(mut mac) => {
                mac.update(SEALING_LABEL);
                mac.finalize().into_bytes().into()
            }
            // HMAC takes keys of any length, so this arm is never taken; it still derives a key from
            // both inputs rather than a constant one.
            Err(_) => Sha256::new().chain_update(SEALING_LABEL).chain_update(secret).finalize().into(),
        };
        Self { cipher: ChaCha20Poly1305::new(Key::from_slice(&derived)) }
    }

    /// `plaintext` sealed under a fresh random nonce: `base64(nonce ‖ ciphertext ‖ tag)`. (The empty
    /// string, which [`SealingKey::open`] refuses, for a plaintext over ChaCha20-Poly1305's 256 GiB
    /// limit, far beyond any secret kept.)
    pub fn seal(&self, plaintext: &[u8]) -> String {
        let mut nonce = [0u8; NONCE_BYTES];
        // A reused nonce would expose the plaintexts: never seal without fresh randomness (`getrandom`
        // fails only on a broken system; it waits for the pool at boot by itself).
        while getrandom::fill(&mut nonce).is_err() {}
        let Ok(ciphertext) = self.cipher.encrypt(Nonce::from_slice(&nonce), plaintext) else {
            return String::new();
        };
        let mut out = Vec::with_capacity(NONCE_BYTES + ciphertext.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ciphertext);
        base64::engine::general_purpose::STANDARD.encode(out)
    }

    /// The plaintext of a value [`SealingKey::seal`] made under the same server secret.
    pub fn open(&self, sealed: &str) -> Result<Vec<u8>, SealError> {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(sealed.trim())
            .map_err(|_| SealError::Malformed)?;
        if raw.len() < NONCE_BYTES + TAG_BYTES {
            return Err(SealError::Malformed);
        }
        let (nonce, ciphertext) = raw.split_at(NONCE_BYTES);
        self.cipher.decrypt(Nonce::from_slice(nonce), ciphertext).map_err(|_| SealError::Forged)
    }
}

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// `n` base62 characters from the OS CSPRNG (rejection sampling, so every character is uniform).
pub fn random_base62(n: usize) -> io::Result<String> {
    let mut out = String::with_capacity(n);
    let mut bytes = [0u8; 64];
    while out.len() < n {
        getrandom::fill(&mut bytes).map_err(|e| io::Error::other(e.to_string()))?;
        for &b in &bytes {
            // 248 = 4 * 62: values at or above it would bias the first characters.
            if b < 248 && out.len() < n {
                out.push(BASE62[(b % 62) as usize] as char);
            }
        }
    }
    Ok(out)
}

/// `n` random bytes from the OS CSPRNG, as lowercase hex.
pub fn random_hex(n: usize) -> io::Result<String> {
    let mut bytes = vec![0u8; n];
    getrandom::fill(&mut bytes).map_err(|e| io::Error::other(e.to_string()))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Equal-length comparison that does not stop at the first difference (secrets, MACs).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Reads the secret in `path`, or creates it (mode 0600) with `make` when the file does not exist.
#[expect(clippy::disallowed_methods, reason = "start-up, before the cores exist")]
pub fn load_or_create(path: &Path, make: impl FnOnce() -> io::Result<String>) -> io::Result<String> {
    match std::fs::read_to_string(path) {
        Ok(s) if !s.trim().is_empty() => return Ok(s.trim().to_owned()),
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        crate::rt::data_dir::create_private(dir)?;
    }
    let secret = make()?;
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
    f.write_all(secret.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    Ok(secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base62_has_the_length_and_alphabet() {
        let s = random_base62(40).unwrap();
        assert_eq!(s.len(), 40);
        assert!(s.bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_ne!(s, random_base62(40).unwrap());
    }

    #[test]
    fn sealed_secrets_open_only_untouched_and_under_their_secret() {
        let key = SealingKey::from_server_secret(&[7u8; 32]);
        let secret = b"5f1d3c2b4a69788796a5b4c3d2e1f00112233445566778899aabbccddeeff001";
        let a = key.seal(secret);
        let b = key.seal(secret);
        assert_ne!(a, b, "a fresh nonce per seal");
        assert!(!a.contains("5f1d3c2b"));
        assert_eq!(key.open(&a).unwrap(), secret);
        assert_eq!(key.open(&b).unwrap(), secret);
        assert_eq!(key.open(&key.seal(b"")).unwrap(), b"");
        // Each byte changed in turn (nonce, ciphertext and tag) is refused.
        let raw = base64::engine::general_purpose::STANDARD.decode(&a).unwrap();
        for i in 0..raw.len() {
            let mut t = raw.clone();
            t[i] ^= 0x01;
            let t = base64::engine::general_purpose::STANDARD.encode(t);
            assert_eq!(key.open(&t), Err(SealError::Forged), "byte {i}");
        }
        assert_eq!(
            key.open(&base64::engine::general_purpose::STANDARD.encode(&raw[..raw.len() - 1])),
            Err(SealError::Forged)
        );
        let other = SealingKey::from_server_secret(&[8u8; 32]);
        assert_eq!(other.open(&a), Err(SealError::Forged));
        assert_eq!(key.open("not base64!"), Err(SealError::Malformed));
        assert_eq!(key.open("AAAA"), Err(SealError::Malformed));
    }

    #[test]
    fn secret_files_persist() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x/secret");
        let a = load_or_create(&p, || Ok("abc".into())).unwrap();
        let b = load_or_create(&p, || Ok("def".into())).unwrap();
        assert_eq!((a.as_str(), b.as_str()), ("abc", "abc"));
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
    }
}
