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
    /// The balance or the account's credit total would pass `i64::MAX`: nothing changed.
    WouldOverflow,
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
