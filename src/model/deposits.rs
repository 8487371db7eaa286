//! GNK deposits: transfers on chain to an account's deposit address, from the block they were seen in
//! to the credit they became.

/// Where a deposit is on its way to a credit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DepositStatus {
    /// In a block, waiting for its confirmations.
    Pending,
    /// Confirmed, below the minimum: waiting for the account's held deposits to add up to it.
    Held,
    /// Confirmed and claimed by a credit that is being made (a crash here is finished on restart).
    Crediting,
    /// Credited (under `credit_reference`).
    Credited,
    /// Its block left the chain (a reorganisation) or it was no longer there at its confirmation.
    Dropped,
}

impl DepositStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Held => "held",
            Self::Crediting => "crediting",
            Self::Credited => "credited",
            Self::Dropped => "dropped",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => Self::Pending,
            "held" => Self::Held,
            "crediting" => Self::Crediting,
            "credited" => Self::Credited,
            "dropped" => Self::Dropped,
            _ => return None,
        })
    }
}

/// A block the watcher scanned: its height and id hash (as the chain's API writes it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockRef {
    pub height: u64,
    /// Empty when not known (the cursor after a rewind).
    pub hash: String,
}

/// What one transaction sent to one deposit address, as found in a block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDeposit {
    pub account_id: String,
    /// Upper hex, as the chain names transactions.
    pub tx_hash: String,
    pub address: String,
    /// Received, in ngonka (several transfers of one transaction to one address summed).
    pub amount_ngonka: i64,
    /// What it credits (the rate and the fee applied).
    pub credit_ngonka: i64,
}

/// A deposit as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DepositRow {
    pub account_id: String,
    pub tx_hash: String,
    pub address: String,
    pub amount_ngonka: i64,
    pub credit_ngonka: i64,
    pub height: u64,
    pub block_hash: String,
    pub status: DepositStatus,
    /// The credit it is (or is being) part of: the hash of the group's last transaction.
    pub credit_reference: Option<String>,
    /// Unix seconds.
    pub seen_at: i64,
    pub credited_at: Option<i64>,
}

/// Confirmed deposits of one account claimed for one credit: `credit_ngonka` under `reference`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DepositClaim {
    pub account_id: String,
    pub reference: String,
    pub credit_ngonka: i64,
}
