//! Credits: one entry of an account's credit history, what kind it is, what an admin or a deposit asks
//! to credit, and how referrals pay.

/// What a credit is. Positive kinds add to a balance, the others take from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreditKind {
    /// Credited by an admin (`paid` says whether it was paid for).
    Admin,
    /// GNK that reached the account from the chain (always paid).
    Deposit,
    /// What a referrer earned on a paid credit of an account it referred (directly or through one).
    Referral,
    /// A negative admin adjustment that refunds one paid credit (`source_reference`).
    Refund,
    /// A negative admin adjustment that refunds nothing in particular (a correction).
    Adjustment,
    /// A referral credit taken back, in proportion, when the credit it was paid on was refunded.
    ReferralClawback,
}

impl CreditKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Deposit => "deposit",
            Self::Referral => "referral",
            Self::Refund => "refund",
            Self::Adjustment => "adjustment",
            Self::ReferralClawback => "referral_clawback",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "admin" => Self::Admin,
            "deposit" => Self::Deposit,
            "referral" => Self::Referral,
            "refund" => Self::Refund,
            "adjustment" => Self::Adjustment,
            "referral_clawback" => Self::ReferralClawback,
            _ => return None,
        })
    }
}

/// One entry of an account's credit history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreditRow {
    /// Store-assigned, increasing in the order entries were written (0 before it is stored).
    pub seq: i64,
    pub account_id: String,
    /// Unique per account: what makes the entry idempotent.
    pub reference: String,
    pub kind: CreditKind,
    /// Signed: refunds, adjustments and clawbacks are negative.
    pub amount_ngonka: i64,
    /// Money received for it (a paid admin credit, a deposit): only paid credits pay referrals.
    pub paid: bool,
    /// Whether it may one day be withdrawn (referral credits may be kept for spending only).
    pub withdrawable: bool,
    /// Referral credits and clawbacks: the account whose credit they were paid on; refunds: the account
    /// itself.
    pub source_account_id: Option<String>,
    /// Referral credits and clawbacks: the credit they were paid on; refunds: the credit refunded.
    pub source_reference: Option<String>,
    /// Referral credits and clawbacks: 1 (the referrer) or 2 (the referrer's referrer).
    pub referral_level: Option<u8>,
    /// Unix seconds.
    pub created_at: i64,
}

/// A credit (or negative adjustment) to make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreditRequest {
    pub account_id: String,
    pub reference: String,
    /// `Admin` or `Deposit` (positive amounts), `Refund` or `Adjustment` (negative ones).
    pub kind: CreditKind,
    /// Not 0.
    pub amount_ngonka: i64,
    pub paid: bool,
    /// A refund: the reference of the account's credit it refunds.
    pub refund_of: Option<String>,
    /// Unix seconds.
    pub at: i64,
}

/// What a credit did: its outcome and, when it applied, every entry written (the credit first, then
/// the referral credits or clawbacks it made).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreditApplied {
    pub outcome: super::accounts::CreditOutcome,
    pub entries: Vec<CreditRow>,
}

/// How paid credits pay the accounts that referred their account (`[referrals]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReferralPolicy {
    pub enabled: bool,
    /// What the referrer gets, basis points of the paid credit (1000 = 10 %).
    pub l1_bps: u32,
    /// What the referrer's referrer gets.
    pub l2_bps: u32,
    /// Whether referral credits are withdrawable.
    pub withdrawable: bool,
}

impl Default for ReferralPolicy {
    fn default() -> Self {
        Self { enabled: true, l1_bps: 1000, l2_bps: 300, withdrawable: true }
    }
}

/// Prefixes of the references the gateway derives for referral credits and clawbacks; a credit made
/// through the API may not use them.
pub const DERIVED_REFERENCE_PREFIXES: [&str; 2] = ["referral:", "clawback:"];

/// The reference of the level-`level` referral credit paid on `account`'s credit `reference`.
pub fn referral_reference(level: u8, account: &str, reference: &str) -> String {
    format!("referral:{level}:{account}:{reference}")
}

/// The reference of the level-`level` clawback made by `account`'s refund `refund_reference`.
pub fn clawback_reference(level: u8, account: &str, refund_reference: &str) -> String {
    format!("clawback:{level}:{account}:{refund_reference}")
}
