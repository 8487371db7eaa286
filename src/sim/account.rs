//! The simulator's own view of Gonka accounts: a node's address from its key, and a Transfer Agent's
//! check of a request signature. Written apart from the gateway's signer on purpose (the same curve
//! library, none of the same code), and checked against the official SDK's vectors, so a signing bug in
//! the gateway shows up as a refused request instead of agreeing with itself.

use base64::Engine as _;
use k256::ecdsa::{RecoveryId, Signature, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

/// `gonka1…`: bech32 of ripemd160(sha256(compressed public key)).
fn address(key: &VerifyingKey) -> String {
    let point = key.to_sec1_point(true);
    let hash160 = ripemd::Ripemd160::digest(Sha256::digest(point.as_bytes()));
    bech32::Hrp::parse("gonka")
        .ok()
        .and_then(|hrp| bech32::encode::<bech32::Bech32>(hrp, &hash160).ok())
        .unwrap_or_default()
}

/// The address of a compressed (33-byte) secp256k1 public key, if it is one.
pub fn address_of_public_key(key: &[u8]) -> Option<String> {
    VerifyingKey::from_sec1_bytes(key).ok().map(|k| address(&k))
}

/// The address of the account whose private key is `key_hex` (64 hex digits), if it is one.
pub fn address_of_key(key_hex: &str) -> Option<String> {
    if key_hex.len() != 64 || !key_hex.is_ascii() {
        return None;
    }
    let bytes: Option<Vec<u8>> = key_hex
        .as_bytes()
        .chunks(2)
        .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok())
        .collect();
    let key = SigningKey::from_slice(&bytes?).ok()?;
    Some(address(key.verifying_key()))
}

/// Whether `signature_b64` signs `body` at `timestamp_ns` for this node (`transfer_address`) with the
/// key of `requester`. What is signed: the lower-hex SHA-256 of the body, the decimal timestamp and the
/// transfer address, one after the other; the signature is r‖s with a low s.
pub fn signature_is_valid(
    body: &[u8],
    timestamp_ns: u64,
    transfer_address: &str,
    requester: &str,
    signature_b64: &str,
) -> bool {
    let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(signature_b64) else { return false };
    let Ok(signature) = Signature::from_slice(&raw) else { return false };
    if signature.normalize_s() != signature {
        return false;
    }
    let body_hash: String = Sha256::digest(body).iter().map(|b| format!("{b:02x}")).collect();
    let message = format!("{body_hash}{timestamp_ns}{transfer_address}");
    let digest = Sha256::digest(message.as_bytes());
    [0u8, 1].into_iter().filter_map(RecoveryId::from_byte).any(|id| {
        VerifyingKey::recover_from_prehash(&digest, &signature, id)
            .is_ok_and(|key| address(&key) == requester)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn vectors() -> Vec<Value> {
        let v: Value = serde_json::from_str(include_str!("../../tests/data/gonka_signing.json")).unwrap();
        v["vectors"].as_array().unwrap().clone()
    }

    #[test]
    fn the_sdk_vectors_verify_and_every_change_is_refused() {
        let vectors = vectors();
        assert!(vectors.len() >= 5);
        for v in &vectors {
            let s = |k: &str| v[k].as_str().unwrap();
            assert_eq!(address_of_key(s("private_key_hex")).as_deref(), Some(s("requester_address")));
            let (body, ts) = (s("body_utf8").as_bytes(), s("timestamp_ns").parse::<u64>().unwrap());
            let (to, from, sig) = (s("transfer_address"), s("requester_address"), s("signature_b64"));
            assert!(signature_is_valid(body, ts, to, from, sig));
            assert!(!signature_is_valid(b"{}x", ts, to, from, sig));
            assert!(!signature_is_valid(body, ts + 1, to, from, sig));
            assert!(!signature_is_valid(body, ts, from, from, sig));
            assert!(!signature_is_valid(body, ts, to, to, sig));
            assert!(!signature_is_valid(body, ts, to, from, "not base64!"));
        }
    }

    #[test]
    fn a_key_that_is_not_64_hex_digits_has_no_address() {
        assert_eq!(address_of_key("abc"), None);
        assert_eq!(address_of_key(&"g".repeat(64)), None);
        assert_eq!(address_of_key(&"0".repeat(64)), None);
    }
}
