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
