//! Usage: the tokens a request used, its record, where the journal is, and what the store sums.

use rkyv::{Archive, Deserialize, Serialize};

/// Prompt and completion tokens of one request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

/// How a request ended.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordStatus {
    /// The whole answer reached the client.
    Completed,
    /// The client left before the end.
    ClientGone,
    /// The node failed (or no node could serve).
    UpstreamFailed,
    /// The node stopped answering.
    Timeout,
    /// A progress mark of an answer still being relayed: what it had cost so far. The request's final
    /// record replaces it; one that stays is an answer the gateway was stopped in the middle of (a
    /// crash), billed for what had been relayed.
    Interrupted,
    /// What a direct key's on-chain balance dropped by, other than the gateway's own transfers: spend
    /// the node charged peer-to-peer (`model` is `direct`, no tokens).
    Direct,
}

impl RecordStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Completed => "completed",
            Self::ClientGone => "client_gone",
            Self::UpstreamFailed => "upstream_failed",
            Self::Timeout => "timeout",
            Self::Interrupted => "interrupted",
            Self::Direct => "direct",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "completed" => Self::Completed,
            "client_gone" => Self::ClientGone,
            "upstream_failed" => Self::UpstreamFailed,
            "timeout" => Self::Timeout,
            "interrupted" => Self::Interrupted,
            "direct" => Self::Direct,
            _ => return None,
        })
    }
}

#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct UsageRecord {
    /// Unique: the store keeps one record per request id. A request's final record replaces its
    /// progress marks ([`RecordStatus::Interrupted`]); anything else with a known id is applied once.
    pub request_id: String,
    pub account_id: String,
    pub key_id: String,
    pub model: String,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cost_ngonka: u64,
    pub status: RecordStatus,
    /// The node reported no usage; tokens were estimated.
    pub estimated: bool,
    pub latency_ms: u64,
    /// Admission time, Unix ms.
    pub started_ms: i64,
    /// Settlement time, Unix ms.
    pub finished_ms: i64,
    /// The UTC day and month the cost counts in (those of admission).
    pub day: i64,
    pub month: i64,
}

impl UsageRecord {
    /// Whether this record replaces `stored`, the record the store already has for its request id: a
    /// final record replaces a progress mark, a later progress mark an earlier one; nothing replaces a
    /// final record.
    pub fn replaces(&self, stored: RecordStatus, stored_cost: u64) -> bool {
        stored == RecordStatus::Interrupted
            && (self.status != RecordStatus::Interrupted || self.cost_ngonka >= stored_cost)
    }
}

/// A place in the journal: file sequence number and byte offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct JournalPos {
    pub seq: u64,
    pub offset: u64,
}

/// What one key spent in the current day and month.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySpend {
    pub key_id: String,
    pub day_spent: u64,
    pub month_spent: u64,
}

/// What this instance (the one whose journal the store applies) has spent: the base of its share of
/// every budget when several instances share the store (see `limits::share`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InstanceSpend {
    /// Per account: the cost of every usage record this instance applied, ever.
    pub accounts: Vec<(String, i64)>,
    /// Per key: this instance's spend in the given day and month.
    pub keys: Vec<KeySpend>,
}

/// How `GET /api/usage` groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupBy {
    Day,
    Model,
    Key,
}

/// A usage query: one account, days `from_day..=to_day` (UTC day indexes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageQuery {
    pub account_id: String,
    pub from_day: i64,
    pub to_day: i64,
    pub group_by: GroupBy,
}

/// One group of a usage summary; `group` is the day index as text, the model or the key id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageSummaryRow {
    pub group: String,
    pub requests: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cost_ngonka: u64,
    /// When the group's latest request finished, Unix ms.
    pub last_finished_ms: i64,
}
