//! Plain data every layer may use: keys and their rows, accounts, models and their table, usage and its
//! records, credits, kept responses, direct keys, deposits. No behaviour beyond parsing and naming its own
//! values.

pub mod accounts;
pub mod credits;
pub mod deposits;
pub mod direct;
pub mod keys;
pub mod models;
pub mod responses;
pub mod usage;

pub use accounts::{AccountRow, AccountStatus, CreditOutcome, ReferrerOutcome};
pub use credits::{CreditApplied, CreditKind, CreditRequest, CreditRow, ReferralPolicy};
pub use deposits::{BlockRef, DepositClaim, DepositRow, DepositStatus, NewDeposit};
pub use direct::{DirectCharge, DirectKeyRow, PendingTransfer, TransferKind};
pub use keys::{FitPolicy, KeyHash, KeyKind, KeyRow, KeyStatus, model_allowed};
pub use models::{ModelEntry, ModelSpec, ModelTable, PriceRow};
pub use responses::StoredResponse;
pub use usage::{
    GroupBy, InstanceSpend, JournalPos, KeySpend, RecordStatus, Usage, UsageQuery, UsageRecord,
    UsageSummaryRow,
};
