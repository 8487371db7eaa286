//! Direct keys: Gonka accounts the gateway creates for an account, funds from its balance, watches on
//! chain and bills. Their owner uses them peer-to-peer with the official SDK; the gateway is never on
//! their request path.

use super::keys::KeyStatus;

/// What a transfer the gateway submitted for a direct key does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransferKind {
    /// Treasury → direct account: the float (and, before the first use, the fee of `Publish`).
    Fund,
    /// Direct account → treasury: the float back (pause, archive).
    Sweep,
    /// Direct account → treasury, 1 ngonka: the account's first transaction, which puts its public key on
    /// chain (nodes refuse a requester whose key they cannot find).
    Publish,
}

impl TransferKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Fund => "fund",
            Self::Sweep => "sweep",
            Self::Publish => "publish",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "fund" => Self::Fund,
            "sweep" => Self::Sweep,
            "publish" => Self::Publish,
            _ => return None,
        })
    }
}

/// A transfer submitted and not yet seen included (or seen failed, or timed out).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingTransfer {
    pub kind: TransferKind,
    /// Upper-case hex, as the chain names it.
    pub tx_hash: String,
    /// What the message moves, ngonka (the fee not included).
    pub amount_ngonka: u64,
    /// The chain's height when it was submitted.
    pub submitted_height: u64,
    /// When it was submitted, Unix ms: past `chain.timeout_ms` without inclusion it counts as dropped.
    pub submitted_ms: i64,
}

/// A direct key as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectKeyRow {
    /// `dk_…`.
    pub id: String,
    pub account_id: String,
    pub name: String,
    /// `gonka1…`.
    pub address: String,
    /// The private key sealed under the server secret (`secret::SealingKey`); empty once archived.
    pub sealed_private_key: String,
    pub status: KeyStatus,
    /// Whether its public key is on chain (its `Publish` transfer was included).
    pub published: bool,
    /// The float the gateway keeps on it now, ngonka (0 while paused or archived).
    pub float_target_ngonka: u64,
    /// What is held on the owner's gateway balance for the money on chain, ngonka.
    pub held_ngonka: u64,
    /// The account's on-chain balance as last accounted for (after billing what it dropped by), ngonka.
    pub chain_balance_ngonka: u64,
    /// The height that balance was seen at.
    pub chain_height: u64,
    /// Everything billed for it, ngonka.
    pub spent_ngonka: u64,
    pub pending: Option<PendingTransfer>,
    /// Unix seconds.
    pub created_at: i64,
    pub updated_at: i64,
}

/// One observed drop of a direct account's balance, billed as a usage record of status `direct`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectCharge {
    /// The usage record's id, unique per observation: billing it again changes nothing.
    pub reference: String,
    pub account_id: String,
    pub key_id: String,
    pub amount_ngonka: u64,
    /// The heights of the two balances compared.
    pub from_height: u64,
    pub to_height: u64,
    /// Unix ms.
    pub at_ms: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transfer_kinds_parse_back() {
        for k in [TransferKind::Fund, TransferKind::Sweep, TransferKind::Publish] {
            assert_eq!(TransferKind::parse(k.as_str()), Some(k));
        }
        assert_eq!(TransferKind::parse("mint"), None);
    }
}
