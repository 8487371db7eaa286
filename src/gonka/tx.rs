//! Cosmos SDK transactions as the Gonka chain takes them: a `MsgSend` (bank module) wrapped in
//! `google.protobuf.Any`, a secp256k1 signer, SIGN_MODE_DIRECT, protobuf `TxRaw` on the wire; and the
//! way back, decoding a `TxRaw` into what it says.
//!
//! # Design
//! The protobuf messages are written by hand as `prost` structs carrying the field numbers of the
//! Cosmos SDK's `.proto` files (only the fields a bank transfer uses; `ModeInfo`'s `oneof` is written as
//! its one `single` field, which is the same on the wire). prost encodes fields in tag order and leaves
//! out proto3 defaults, which is what the SDK's deterministic encoding expects, so the bytes are
//! canonical: `tests/data/chain_vectors.json` holds transactions built and signed by an independent
//! library (cosmpy 0.12.2), and [`build_send`] must reproduce them byte for byte (see the tests below).
//!
//! What is signed (SIGN_MODE_DIRECT): the encoded `SignDoc {body_bytes, auth_info_bytes, chain_id,
//! account_number}`; the signature is ECDSA secp256k1 over its SHA-256, deterministic (RFC 6979), low-S,
//! 64 bytes `r‖s` ([`GonkaSigner::sign_bytes`]). A transaction's hash is the upper-hex SHA-256 of its
//! `TxRaw` bytes.
//!
//! The simulated chain decodes with [`decode`] too: since both directions are pinned by cosmpy (our
//! bytes equal cosmpy's, and cosmpy-built transactions are accepted by the simulator in
//! `tests/python/chain_fidelity.py`), sharing the decoder cannot make a bug agree with itself unseen.
//!
//! # Errors
//! [`decode`] refuses bytes that are not a `TxRaw` whose body and auth info decode ([`TxError`]);
//! what the chain refuses for its content (unknown message types, several signers) is up to the caller.

use super::signer::GonkaSigner;
use prost::Message as _;
use sha2::{Digest, Sha256};

/// `Any.type_url` of a bank transfer.
pub const MSG_SEND_TYPE_URL: &str = "/cosmos.bank.v1beta1.MsgSend";
/// `Any.type_url` of a secp256k1 public key.
pub const SECP256K1_PUBKEY_TYPE_URL: &str = "/cosmos.crypto.secp256k1.PubKey";
/// `cosmos.tx.signing.v1beta1.SignMode.SIGN_MODE_DIRECT`.
pub const SIGN_MODE_DIRECT: i32 = 1;

/// `google.protobuf.Any`.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct Any {
    #[prost(string, tag = "1")]
    pub type_url: String,
    #[prost(bytes = "vec", tag = "2")]
    pub value: Vec<u8>,
}

/// `cosmos.base.v1beta1.Coin` (the amount is a decimal string).
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct Coin {
    #[prost(string, tag = "1")]
    pub denom: String,
    #[prost(string, tag = "2")]
    pub amount: String,
}

/// `cosmos.bank.v1beta1.MsgSend`.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct MsgSend {
    #[prost(string, tag = "1")]
    pub from_address: String,
    #[prost(string, tag = "2")]
    pub to_address: String,
    #[prost(message, repeated, tag = "3")]
    pub amount: Vec<Coin>,
}

/// `cosmos.crypto.secp256k1.PubKey` (33 bytes, compressed).
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct PubKey {
    #[prost(bytes = "vec", tag = "1")]
    pub key: Vec<u8>,
}

/// `cosmos.tx.v1beta1.TxBody`.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct TxBody {
    #[prost(message, repeated, tag = "1")]
    pub messages: Vec<Any>,
    #[prost(string, tag = "2")]
    pub memo: String,
    #[prost(uint64, tag = "3")]
    pub timeout_height: u64,
}

/// `cosmos.tx.v1beta1.ModeInfo.Single`.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct Single {
    #[prost(int32, tag = "1")]
    pub mode: i32,
}

/// `cosmos.tx.v1beta1.ModeInfo` (its `oneof` holds `single` = 1 or `multi` = 2; only `single` is used).
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct ModeInfo {
    #[prost(message, optional, tag = "1")]
    pub single: Option<Single>,
}

/// `cosmos.tx.v1beta1.SignerInfo`.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct SignerInfo {
    #[prost(message, optional, tag = "1")]
    pub public_key: Option<Any>,
    #[prost(message, optional, tag = "2")]
    pub mode_info: Option<ModeInfo>,
    #[prost(uint64, tag = "3")]
    pub sequence: u64,
}

/// `cosmos.tx.v1beta1.Fee`.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct Fee {
    #[prost(message, repeated, tag = "1")]
    pub amount: Vec<Coin>,
    #[prost(uint64, tag = "2")]
    pub gas_limit: u64,
    #[prost(string, tag = "3")]
    pub payer: String,
    #[prost(string, tag = "4")]
    pub granter: String,
}

/// `cosmos.tx.v1beta1.AuthInfo`.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct AuthInfo {
    #[prost(message, repeated, tag = "1")]
    pub signer_infos: Vec<SignerInfo>,
    #[prost(message, optional, tag = "2")]
    pub fee: Option<Fee>,
}

/// `cosmos.tx.v1beta1.SignDoc`: what SIGN_MODE_DIRECT signs.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct SignDoc {
    #[prost(bytes = "vec", tag = "1")]
    pub body_bytes: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    pub auth_info_bytes: Vec<u8>,
    #[prost(string, tag = "3")]
    pub chain_id: String,
    #[prost(uint64, tag = "4")]
    pub account_number: u64,
}

/// `cosmos.tx.v1beta1.TxRaw`: what is broadcast.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct TxRaw {
    #[prost(bytes = "vec", tag = "1")]
    pub body_bytes: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    pub auth_info_bytes: Vec<u8>,
    #[prost(bytes = "vec", repeated, tag = "3")]
    pub signatures: Vec<Vec<u8>>,
}

/// A bank transfer to build and sign.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Send<'a> {
    pub chain_id: &'a str,
    pub account_number: u64,
    pub sequence: u64,
    pub to_address: &'a str,
    pub amount: u128,
    pub denom: &'a str,
    /// The fee, in `denom`; 0 leaves the fee's amount empty (as the SDK's clients do).
    pub fee: u128,
    pub gas_limit: u64,
    pub memo: &'a str,
}

/// Why bytes are not a transaction.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TxError {
    #[error("not a TxRaw: {0}")]
    Raw(String),
    #[error("the body does not decode: {0}")]
    Body(String),
    #[error("the auth info does not decode: {0}")]
    AuthInfo(String),
    #[error("a {0} message does not decode: {1}")]
    Message(&'static str, String),
}

/// The encoded `SignDoc` for these parts.
pub fn sign_doc_bytes(
    body_bytes: &[u8],
    auth_info_bytes: &[u8],
    chain_id: &str,
    account_number: u64,
) -> Vec<u8> {
    SignDoc {
        body_bytes: body_bytes.to_vec(),
        auth_info_bytes: auth_info_bytes.to_vec(),
        chain_id: chain_id.to_owned(),
        account_number,
    }
    .encode_to_vec()
}

/// The `TxRaw` bytes of `send`, from `signer`'s account, signed with SIGN_MODE_DIRECT.
pub fn build_send(signer: &GonkaSigner, send: &Send<'_>) -> Vec<u8> {
    let coin = |amount: u128| Coin { denom: send.denom.to_owned(), amount: amount.to_string() };
    let msg = MsgSend {
        from_address: signer.address().to_owned(),
        to_address: send.to_address.to_owned(),
        amount: vec![coin(send.amount)],
    };
    let body = TxBody {
        messages: vec![Any { type_url: MSG_SEND_TYPE_URL.to_owned(), value: msg.encode_to_vec() }],
        memo: send.memo.to_owned(),
        timeout_height: 0,
    };
    let public_key = PubKey { key: signer.public_key().to_vec() };
    let auth_info = AuthInfo {
        signer_infos: vec![SignerInfo {
            public_key: Some(Any {
                type_url: SECP256K1_PUBKEY_TYPE_URL.to_owned(),
                value: public_key.encode_to_vec(),
            }),
            mode_info: Some(ModeInfo { single: Some(Single { mode: SIGN_MODE_DIRECT }) }),
            sequence: send.sequence,
        }],
        fee: Some(Fee {
            amount: if send.fee == 0 { Vec::new() } else { vec![coin(send.fee)] },
            gas_limit: send.gas_limit,
            payer: String::new(),
            granter: String::new(),
        }),
    };
    let body_bytes = body.encode_to_vec();
    let auth_info_bytes = auth_info.encode_to_vec();
    let doc = sign_doc_bytes(&body_bytes, &auth_info_bytes, send.chain_id, send.account_number);
    let signature = signer.sign_bytes(&doc);
    TxRaw { body_bytes, auth_info_bytes, signatures: vec![signature.to_vec()] }.encode_to_vec()
}

/// The hash the chain names a transaction by: upper-hex SHA-256 of its `TxRaw` bytes.
pub fn tx_hash(tx_bytes: &[u8]) -> String {
    Sha256::digest(tx_bytes).iter().map(|b| format!("{b:02X}")).collect()
}

/// A decoded transaction: the raw parts (what was signed) and what they say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedTx {
    pub raw: TxRaw,
    pub body: TxBody,
    pub auth_info: AuthInfo,
}

/// Decodes `TxRaw` bytes, its body and its auth info.
pub fn decode(tx_bytes: &[u8]) -> Result<DecodedTx, TxError> {
    let raw = TxRaw::decode(tx_bytes).map_err(|e| TxError::Raw(e.to_string()))?;
    let body = TxBody::decode(raw.body_bytes.as_slice()).map_err(|e| TxError::Body(e.to_string()))?;
    let auth_info =
        AuthInfo::decode(raw.auth_info_bytes.as_slice()).map_err(|e| TxError::AuthInfo(e.to_string()))?;
    Ok(DecodedTx { raw, body, auth_info })
}

impl DecodedTx {
    /// The encoded `SignDoc` the signer of this transaction signed for `chain_id` and `account_number`.
    pub fn sign_doc(&self, chain_id: &str, account_number: u64) -> Vec<u8> {
        sign_doc_bytes(&self.raw.body_bytes, &self.raw.auth_info_bytes, chain_id, account_number)
    }

    /// The bank transfers of the body; `Ok(None)` when it holds a message of another type.
    pub fn msg_sends(&self) -> Result<Option<Vec<MsgSend>>, TxError> {
        let mut sends = Vec::with_capacity(self.body.messages.len());
        for any in &self.body.messages {
            if any.type_url != MSG_SEND_TYPE_URL {
                return Ok(None);
            }
            sends.push(
                MsgSend::decode(any.value.as_slice())
                    .map_err(|e| TxError::Message("MsgSend", e.to_string()))?,
            );
        }
        Ok(Some(sends))
    }

    /// The compressed secp256k1 public key a signer info carries, if it carries one of that type.
    pub fn signer_public_key(info: &SignerInfo) -> Result<Option<Vec<u8>>, TxError> {
        match &info.public_key {
            Some(any) if any.type_url == SECP256K1_PUBKEY_TYPE_URL => {
                let key = PubKey::decode(any.value.as_slice())
                    .map_err(|e| TxError::Message("PubKey", e.to_string()))?;
                Ok(Some(key.key))
            }
            _ => Ok(None),
        }
    }

    /// The fee's coins.
    pub fn fee_coins(&self) -> &[Coin] {
        self.auth_info.fee.as_ref().map_or(&[], |f| f.amount.as_slice())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;
    use serde_json::Value;

    fn vectors() -> Vec<Value> {
        let v: Value = serde_json::from_str(include_str!("../../tests/data/chain_vectors.json")).unwrap();
        v["vectors"].as_array().unwrap().clone()
    }

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    #[test]
    fn transactions_are_byte_identical_to_cosmpy() {
        let vectors = vectors();
        assert!(vectors.len() >= 4);
        for v in &vectors {
            let s = |k: &str| v[k].as_str().unwrap();
            let n = |k: &str| s(k).parse::<u64>().unwrap();
            let signer = GonkaSigner::from_hex(s("private_key_hex")).unwrap();
            assert_eq!(signer.address(), s("from_address"));
            assert_eq!(hex(&signer.public_key()), s("public_key_hex"));
            let send = Send {
                chain_id: s("chain_id"),
                account_number: n("account_number"),
                sequence: n("sequence"),
                to_address: s("to_address"),
                amount: s("amount").parse().unwrap(),
                denom: s("denom"),
                fee: s("fee").parse().unwrap(),
                gas_limit: n("gas_limit"),
                memo: s("memo"),
            };
            let bytes = build_send(&signer, &send);
            let decoded = decode(&bytes).unwrap();
            assert_eq!(hex(&decoded.raw.body_bytes), s("body_bytes_hex"), "{}", s("memo"));
            assert_eq!(hex(&decoded.raw.auth_info_bytes), s("auth_info_bytes_hex"));
            assert_eq!(hex(&decoded.raw.signatures[0]), s("signature_hex"));
            assert_eq!(base64::engine::general_purpose::STANDARD.encode(&bytes), s("tx_bytes_b64"));
            assert_eq!(tx_hash(&bytes), s("tx_hash"));
        }
    }

    #[test]
    fn cosmpy_transactions_decode_into_what_they_say() {
        for v in &vectors() {
            let s = |k: &str| v[k].as_str().unwrap();
            let bytes = base64::engine::general_purpose::STANDARD.decode(s("tx_bytes_b64")).unwrap();
            let tx = decode(&bytes).unwrap();
            let sends = tx.msg_sends().unwrap().unwrap();
            assert_eq!(sends.len(), 1);
            assert_eq!(sends[0].from_address, s("from_address"));
            assert_eq!(sends[0].to_address, s("to_address"));
            assert_eq!(sends[0].amount, vec![Coin { denom: s("denom").into(), amount: s("amount").into() }]);
            assert_eq!(tx.body.memo, s("memo"));
            let info = &tx.auth_info.signer_infos[0];
            assert_eq!(info.sequence.to_string(), s("sequence"));
            assert_eq!(
                info.mode_info.as_ref().and_then(|m| m.single.as_ref()).unwrap().mode,
                SIGN_MODE_DIRECT
            );
            assert_eq!(hex(&DecodedTx::signer_public_key(info).unwrap().unwrap()), s("public_key_hex"));
            let fee: u128 = tx.fee_coins().first().map_or(0, |c| c.amount.parse().unwrap());
            assert_eq!(fee.to_string(), s("fee"));
            assert_eq!(tx.auth_info.fee.as_ref().unwrap().gas_limit.to_string(), s("gas_limit"));
            // The signature verifies against the sign doc rebuilt from the decoded parts.
            use k256::ecdsa::signature::Verifier as _;
            let key = k256::ecdsa::VerifyingKey::from_sec1_bytes(
                &DecodedTx::signer_public_key(info).unwrap().unwrap(),
            )
            .unwrap();
            let sig = k256::ecdsa::Signature::from_slice(&tx.raw.signatures[0]).unwrap();
            let doc = tx.sign_doc(s("chain_id"), s("account_number").parse().unwrap());
            key.verify(&doc, &sig).unwrap();
            assert!(key.verify(&tx.sign_doc("other-chain", 0), &sig).is_err());
        }
    }

    #[test]
    fn garbage_is_refused_and_other_messages_are_told_apart() {
        assert!(matches!(decode(b"\xff\xff\xff"), Err(TxError::Raw(_))));
        let bad_body = TxRaw { body_bytes: vec![0x0a, 0x05, 1], auth_info_bytes: vec![], signatures: vec![] };
        assert!(matches!(decode(&bad_body.encode_to_vec()), Err(TxError::Body(_))));
        let other = TxBody {
            messages: vec![Any { type_url: "/cosmos.staking.v1beta1.MsgDelegate".into(), value: vec![] }],
            memo: String::new(),
            timeout_height: 0,
        };
        let raw = TxRaw { body_bytes: other.encode_to_vec(), auth_info_bytes: vec![], signatures: vec![] };
        assert_eq!(decode(&raw.encode_to_vec()).unwrap().msg_sends(), Ok(None));
    }
}
