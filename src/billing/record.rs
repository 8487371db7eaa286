//! One usage record per admitted request: what it used, what it cost, how it ended.

use rkyv::{Archive, Deserialize, Serialize};

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
}

impl RecordStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Completed => "completed",
            Self::ClientGone => "client_gone",
            Self::UpstreamFailed => "upstream_failed",
            Self::Timeout => "timeout",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "completed" => Self::Completed,
            "client_gone" => Self::ClientGone,
            "upstream_failed" => Self::UpstreamFailed,
            "timeout" => Self::Timeout,
            _ => return None,
        })
    }
}

#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct UsageRecord {
    /// Unique: the store applies each request id once.
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
