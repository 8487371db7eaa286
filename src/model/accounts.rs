//! Accounts and what a credit did.

/// An account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountRow {
    pub id: String,
    pub name: String,
    /// Credits minus settled usage, ngonka.
    pub balance_ngonka: i64,
    /// Unix seconds.
    pub created_at: i64,
    /// The code others sign up with to make this account their referrer (unique).
    pub referral_code: String,
    /// The account whose referral code this one was created with; set once, at creation.
    pub referrer_id: Option<String>,
}

/// What a credit did. Only `Applied` changed anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreditOutcome {
    /// Credited now; the balance after it.
    Applied { balance_ngonka: i64 },
    /// The reference had credited this same amount before: nothing changed (a retry).
    Repeated { balance_ngonka: i64 },
    /// The reference had credited another amount before: nothing changed.
    ReferenceConflict { credited_ngonka: i64 },
    /// The balance or the credit total of an account it touches would leave `i64`: nothing changed.
    WouldOverflow,
    /// A refund names no positive admin or deposit credit of the account: nothing changed.
    RefundOfUnknown,
    /// A refund would take back more than what is left of its credit: nothing changed.
    RefundExceedsCredit { refundable_ngonka: i64 },
}

/// What setting an account's referrer did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReferrerOutcome {
    Set,
    /// The account had a referrer already: nothing changed.
    AlreadySet,
    /// The referrer is the account itself or is referred by it (directly or further up): nothing
    /// changed.
    WouldCycle,
}

/// Whether an account's keys are served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccountStatus {
    Active,
    /// Its live balance is 0 or below: no request can be held against it (every request, a free one
    /// too, needs a balance above zero), so its keys answer 402 `insufficient_balance` without a node
    /// call until a credit brings the balance back above zero.
    Blocked,
}

impl AccountStatus {
    /// The status of an account whose live balance (credits less billed usage, holds in flight not
    /// subtracted) is `balance_ngonka`.
    pub fn of_balance(balance_ngonka: i64) -> Self {
        if balance_ngonka <= 0 { Self::Blocked } else { Self::Active }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Blocked => "blocked",
        }
    }
}
