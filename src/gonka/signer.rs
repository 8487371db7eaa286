//! Gonka request signing, compatible bit for bit with the official SDK (gonka-openai 0.2.6):
//! `Authorization` is the base64 of `r‖s`, a deterministic ECDSA secp256k1 signature (RFC 6979, SHA-256,
//! low-S) over the ASCII string `hex(sha256(body)) + decimal(timestamp_ns) + transfer_address`;
//! `X-Requester-Address` is the bech32 (`gonka`) of `ripemd160(sha256(compressed public key))`.
//!
//! # Design
//! Uses k256 (RustCrypto) for the curve; no hand-rolled curve code. Timestamps come from one atomic
//! shared by every core, so two requests never carry the same one (the network refuses a reused
//! signature, and consecutive requests need distinct timestamps).
//!
//! The verifier ([`verify`]) recovers the public key from the signature and compares its address with
//! `X-Requester-Address`, which is what a node's check against the requester's on-chain key amounts to.

use base64::Engine as _;
use k256::ecdsa::signature::Signer as _;
use k256::ecdsa::{RecoveryId, Signature, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};
use std::sync::atomic::{AtomicU64, Ordering};

/// The bech32 prefix of Gonka addresses.
pub const ADDRESS_PREFIX: &str = "gonka";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignerError {
    #[error("the private key must be 32 bytes of hex")]
    BadKey,
}

/// Why a signature was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VerifyError {
    #[error("malformed signature")]
    Malformed,
    #[error("the signature does not match the requester's key")]
    Mismatch,
}

/// The string that is signed.
pub fn signed_string(body: &[u8], timestamp_ns: u64, transfer_address: &str) -> String {
    let mut s = hex(&Sha256::digest(body));
    s.push_str(&timestamp_ns.to_string());
    s.push_str(transfer_address);
    s
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    s
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    let s = s.strip_prefix("0x").unwrap_or(s);
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

/// The `gonka1…` address of a public key.
pub fn address_of(key: &VerifyingKey) -> String {
    let compressed = key.to_sec1_point(true);
    let sha = Sha256::digest(compressed.as_bytes());
    let rip = ripemd::Ripemd160::digest(sha);
    match bech32::Hrp::parse(ADDRESS_PREFIX) {
        Ok(hrp) => bech32::encode::<bech32::Bech32>(hrp, &rip).unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// A Gonka account key that signs requests.
pub struct GonkaSigner {
    key: SigningKey,
    address: String,
    last_timestamp_ns: AtomicU64,
}

impl std::fmt::Debug for GonkaSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GonkaSigner").field("address", &self.address).finish()
    }
}

impl GonkaSigner {
    /// From the private key in hex (optionally `0x`-prefixed).
    pub fn from_hex(private_key_hex: &str) -> Result<Self, SignerError> {
        let bytes = unhex(private_key_hex.trim()).filter(|b| b.len() == 32).ok_or(SignerError::BadKey)?;
        let key = SigningKey::from_slice(&bytes).map_err(|_| SignerError::BadKey)?;
        let address = address_of(key.verifying_key());
        Ok(Self { key, address, last_timestamp_ns: AtomicU64::new(0) })
    }

    /// A fresh random key from the OS CSPRNG (a new Gonka account).
    ///
    /// A random 32-byte string is a valid scalar unless it is 0 or at least the curve order (a chance of
    /// about 2^-128), so the loop draws again only then, or when the OS refuses randomness (`getrandom`
    /// already waits for the pool at boot, so that means a broken system): a weak key is never made.
    pub fn generate() -> Self {
        loop {
            let mut bytes = [0u8; 32];
            if getrandom::fill(&mut bytes).is_ok()
                && let Ok(key) = SigningKey::from_slice(&bytes)
            {
                let address = address_of(key.verifying_key());
                return Self { key, address, last_timestamp_ns: AtomicU64::new(0) };
            }
        }
    }

    /// The key derived from `secret` for `info`: HMAC-SHA256(secret, `info` ‖ counter as 4 big-endian
    /// bytes) for the first counter from 0 whose output is a valid scalar (not 0, below the curve order;
    /// another counter is needed with a chance of about 2^-128). The same inputs always give the same key,
    /// so a key derived for a purpose need never be stored.
    pub fn derived(secret: &[u8], info: &[u8]) -> Self {
        use hmac::{KeyInit as _, Mac as _};
        let mut counter: u32 = 0;
        loop {
            // HMAC takes keys of any length: `new_from_slice` never fails.
            if let Ok(mut mac) = <hmac::Hmac<Sha256>>::new_from_slice(secret) {
                mac.update(info);
                mac.update(&counter.to_be_bytes());
                let bytes: [u8; 32] = mac.finalize().into_bytes().into();
                if let Ok(key) = SigningKey::from_slice(&bytes) {
                    let address = address_of(key.verifying_key());
                    return Self { key, address, last_timestamp_ns: AtomicU64::new(0) };
                }
            }
            counter = counter.wrapping_add(1);
        }
    }

    /// The private key, 64 lower-hex digits (what `GONKA_PRIVATE_KEY` holds).
    pub fn private_key_hex(&self) -> String {
        hex(&self.key.to_bytes())
    }

    /// The compressed (33-byte) public key.
    pub fn public_key(&self) -> [u8; 33] {
        let point = self.key.verifying_key().to_sec1_point(true);
        let mut out = [0u8; 33];
        out.copy_from_slice(point.as_bytes());
        out
    }

    /// A Cosmos SIGN_MODE_DIRECT signature of `msg` (the encoded sign doc): ECDSA over `sha256(msg)`,
    /// deterministic (RFC 6979), low-S, `r‖s`.
    pub fn sign_bytes(&self, msg: &[u8]) -> [u8; 64] {
        let sig: Signature = self.key.sign(msg);
        let sig = sig.normalize_s();
        let mut out = [0u8; 64];
        out.copy_from_slice(&sig.to_bytes());
        out
    }

    /// The requester address (`X-Requester-Address`).
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The compressed public key, hex.
    pub fn public_key_hex(&self) -> String {
        hex(self.key.verifying_key().to_sec1_point(true).as_bytes())
    }

    /// The `Authorization` value for `body` sent to `transfer_address` at `timestamp_ns`.
    pub fn sign(&self, body: &[u8], timestamp_ns: u64, transfer_address: &str) -> String {
        let msg = signed_string(body, timestamp_ns, transfer_address);
        let sig: Signature = self.key.sign(msg.as_bytes());
        let sig = sig.normalize_s();
        base64::engine::general_purpose::STANDARD.encode(sig.to_bytes())
    }

    /// A timestamp for the next request: now, but always later than every one handed out before.
    pub fn next_timestamp_ns(&self) -> u64 {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        let mut last = self.last_timestamp_ns.load(Ordering::Acquire);
        loop {
            let next = now.max(last + 1);
            match self.last_timestamp_ns.compare_exchange_weak(
                last,
                next,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return next,
                Err(actual) => last = actual,
            }
        }
    }
}

/// Checks a request's signature: it must be valid for the key whose address is `requester_address`.
pub fn verify(
    body: &[u8],
    timestamp_ns: u64,
    transfer_address: &str,
    requester_address: &str,
    signature_b64: &str,
) -> Result<(), VerifyError> {
    let raw = base64::engine::general_purpose::STANDARD
        .decode(signature_b64.trim())
        .map_err(|_| VerifyError::Malformed)?;
    let sig = Signature::from_slice(&raw).map_err(|_| VerifyError::Malformed)?;
    if sig.normalize_s() != sig {
        // High-S signatures are malleated copies; the network refuses them.
        return Err(VerifyError::Malformed);
    }
    let msg = signed_string(body, timestamp_ns, transfer_address);
    let prehash = Sha256::digest(msg.as_bytes());
    for id in 0..4u8 {
        let Some(recovery) = RecoveryId::from_byte(id) else { continue };
        if let Ok(key) = VerifyingKey::recover_from_prehash(&prehash, &sig, recovery)
            && address_of(&key) == requester_address
        {
            return Ok(());
        }
    }
    Err(VerifyError::Mismatch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn derived_keys_are_hmac_of_the_secret_and_the_same_every_time() {
        let secret = [0xab; 32];
        let k = GonkaSigner::derived(&secret, b"gonka-gateway deposit\0acc_1");
        // HMAC-SHA256(secret, info || 0u32), computed by Python's hmac module.
        assert_eq!(k.private_key_hex(), "19efc3026251256215c5af786cd993d9aac609f62c14d72804e70530074ab0c1");
        assert_eq!(k.address(), GonkaSigner::derived(&secret, b"gonka-gateway deposit\0acc_1").address());
        assert_ne!(k.address(), GonkaSigner::derived(&secret, b"gonka-gateway deposit\0acc_2").address());
        assert_ne!(k.address(), GonkaSigner::derived(&[0xac; 32], b"gonka-gateway deposit\0acc_1").address());
        assert!(k.address().starts_with("gonka1"));
    }

    fn vectors() -> Vec<Value> {
        let text = include_str!("../../tests/data/gonka_signing.json");
        let v: Value = serde_json::from_str(text).unwrap();
        v["vectors"].as_array().unwrap().clone()
    }

    #[test]
    fn every_sdk_vector_matches_bit_for_bit_and_verifies() {
        let vectors = vectors();
        assert!(vectors.len() >= 5);
        for v in vectors {
            let s = |k: &str| v[k].as_str().unwrap();
            let signer = GonkaSigner::from_hex(s("private_key_hex")).unwrap();
            assert_eq!(signer.address(), s("requester_address"));
            assert_eq!(signer.public_key_hex(), s("public_key_compressed_hex"));
            let body = s("body_utf8").as_bytes();
            assert_eq!(hex(&Sha256::digest(body)), s("body_sha256_hex"));
            let ts: u64 = s("timestamp_ns").parse().unwrap();
            assert_eq!(signed_string(body, ts, s("transfer_address")), s("signed_string"));
            let sig = signer.sign(body, ts, s("transfer_address"));
            assert_eq!(sig, s("signature_b64"));
            verify(body, ts, s("transfer_address"), s("requester_address"), &sig).unwrap();
        }
    }

    #[test]
    fn verification_refuses_any_change() {
        let v = &vectors()[0];
        let s = |k: &str| v[k].as_str().unwrap();
        let body = s("body_utf8").as_bytes();
        let ts: u64 = s("timestamp_ns").parse().unwrap();
        let (ta, who, sig) = (s("transfer_address"), s("requester_address"), s("signature_b64"));
        let mut other = body.to_vec();
        other[3] ^= 1;
        assert_eq!(verify(&other, ts, ta, who, sig), Err(VerifyError::Mismatch));
        assert_eq!(verify(body, ts + 1, ta, who, sig), Err(VerifyError::Mismatch));
        assert_eq!(verify(body, ts, who, who, sig), Err(VerifyError::Mismatch), "another transfer address");
        assert_eq!(verify(body, ts, ta, ta, sig), Err(VerifyError::Mismatch), "another requester");
        assert_eq!(verify(body, ts, ta, who, "not base64!"), Err(VerifyError::Malformed));
        assert_eq!(verify(body, ts, ta, who, "AAAA"), Err(VerifyError::Malformed));
    }

    #[test]
    fn timestamps_strictly_increase_across_threads() {
        let signer = GonkaSigner::from_hex(&"11".repeat(32)).unwrap();
        let all = std::sync::Mutex::new(Vec::new());
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    let mine: Vec<u64> = (0..2000).map(|_| signer.next_timestamp_ns()).collect();
                    assert!(mine.windows(2).all(|w| w[0] < w[1]));
                    all.lock().unwrap().extend(mine);
                });
            }
        });
        let mut all = all.into_inner().unwrap();
        let n = all.len();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), n, "no timestamp handed out twice");
    }

    #[test]
    fn generated_keys_round_trip_and_differ() {
        let a = GonkaSigner::generate();
        let b = GonkaSigner::generate();
        assert_ne!(a.private_key_hex(), b.private_key_hex());
        let again = GonkaSigner::from_hex(&a.private_key_hex()).unwrap();
        assert_eq!(again.address(), a.address());
        assert_eq!(hex(&a.public_key()), a.public_key_hex());
        assert_eq!(a.private_key_hex().len(), 64);
    }

    #[test]
    fn byte_signatures_are_low_s_deterministic_and_verify() {
        use k256::ecdsa::signature::Verifier as _;
        let signer = GonkaSigner::from_hex(&"22".repeat(32)).unwrap();
        let sig = signer.sign_bytes(b"a sign doc");
        assert_eq!(sig, signer.sign_bytes(b"a sign doc"));
        let parsed = Signature::from_slice(&sig).unwrap();
        assert_eq!(parsed.normalize_s(), parsed);
        let key = VerifyingKey::from_sec1_bytes(&signer.public_key()).unwrap();
        key.verify(b"a sign doc", &parsed).unwrap();
        assert!(key.verify(b"another doc", &parsed).is_err());
    }

    #[test]
    fn bad_keys_are_refused() {
        assert!(GonkaSigner::from_hex("zz").is_err());
        assert!(GonkaSigner::from_hex(&"00".repeat(32)).is_err(), "zero is not a valid scalar");
        assert!(GonkaSigner::from_hex(&"11".repeat(31)).is_err());
        assert!(GonkaSigner::from_hex(&format!("0x{}", "11".repeat(32))).is_ok());
    }
}
