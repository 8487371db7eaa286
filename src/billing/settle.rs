//! Settlement: a request's hold is replaced by its real cost, and its usage record is journaled, once,
//! on whatever ending it had.
//!
//! # Rules
//! - Completed: the node's reported usage × prices. Without a reported usage, an estimate (prompt: a
//!   quarter of the body's bytes; completion: the stream's content events, or a quarter of the answer's
//!   bytes), and the record says it was estimated.
//! - The client left: the prompt plus the completion tokens relayed so far (estimated unless reported).
//! - The node failed or stalled: nothing, unless tokens were already relayed to the client (then as
//!   for a client that left).
//!
//! Billing never exceeds the hold (see [`crate::limits`]).

use super::Usage;
use super::record::{RecordStatus, UsageRecord};
use crate::app::App;
use crate::auth::cache::KeyEntry;
use crate::config::ModelSpec;
use crate::limits::{self, Hold};
use std::sync::Arc;
use std::time::Instant;

/// What a relay saw, for billing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Relayed {
    /// The node's reported usage, if any.
    pub usage: Option<Usage>,
    /// SSE content events relayed (≈ completion tokens).
    pub events: u64,
    /// Body bytes relayed.
    pub bytes: u64,
    pub stream: bool,
}

/// The tokens to bill and whether they are estimated.
pub fn billed_tokens(status: RecordStatus, relayed: Relayed, body_len: usize) -> (Usage, bool) {
    if let Some(u) = relayed.usage {
        return (u, false);
    }
    let prompt = (body_len as u64).div_ceil(4);
    let completion = if relayed.stream { relayed.events } else { relayed.bytes.div_ceil(4) };
    match status {
        RecordStatus::Completed => (Usage { prompt_tokens: prompt, completion_tokens: completion }, true),
        RecordStatus::ClientGone => {
            let completion = if relayed.stream { relayed.events } else { 0 };
            (Usage { prompt_tokens: prompt, completion_tokens: completion }, true)
        }
        RecordStatus::UpstreamFailed | RecordStatus::Timeout => {
            if relayed.stream && relayed.events > 0 {
                (Usage { prompt_tokens: prompt, completion_tokens: relayed.events }, true)
            } else {
                (Usage::default(), false)
            }
        }
    }
}

/// One admitted request's settlement, done at most once.
#[derive(Debug)]
pub struct Settler {
    app: Arc<App>,
    key: Arc<KeyEntry>,
    model: ModelSpec,
    hold: Option<Hold>,
    request_id: String,
    started_ms: i64,
    started: Instant,
    body_len: usize,
    /// What was billed, once settled: (tokens, cost, estimated).
    pub billed: Option<(Usage, u64, bool)>,
}

impl Settler {
    #[expect(clippy::too_many_arguments, reason = "everything a usage record is made of")]
    pub fn new(
        app: Arc<App>,
        key: Arc<KeyEntry>,
        model: ModelSpec,
        hold: Hold,
        request_id: String,
        started_ms: i64,
        started: Instant,
        body_len: usize,
    ) -> Self {
        Self { app, key, model, hold: Some(hold), request_id, started_ms, started, body_len, billed: None }
    }

    pub fn is_settled(&self) -> bool {
        self.hold.is_none()
    }

    /// Settles the hold and writes the usage record to the journal; later calls do nothing. Returns
    /// once the record is as durable as `journal.wait` asks.
    pub async fn settle(&mut self, status: RecordStatus, relayed: Relayed) {
        let Some(hold) = self.hold.take() else { return };
        let (tokens, estimated) = billed_tokens(status, relayed, self.body_len);
        let cost = limits::cost(&self.model, tokens.prompt_tokens, tokens.completion_tokens);
        let (day, month) = hold.windows();
        let billed = hold.settle(cost);
        if billed < cost {
            log::warn!(
                target: "billing",
                "{}: usage reported above the request's worst case ({cost} > {billed} ngonka); billed the hold",
                self.request_id
            );
        }
        self.billed = Some((tokens, billed, estimated));
        let record = UsageRecord {
            request_id: self.request_id.clone(),
            account_id: self.key.account_id.to_string(),
            key_id: self.key.id.to_string(),
            model: self.model.id.clone(),
            prompt_tokens: tokens.prompt_tokens,
            completion_tokens: tokens.completion_tokens,
            cost_ngonka: billed,
            status,
            estimated,
            latency_ms: u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX),
            started_ms: self.started_ms,
            finished_ms: self.app.clock.now_ms(),
            day,
            month,
        };
        if let Err(e) = self.app.journal.append(&record).await {
            log::error!(target: "billing", "{}: usage record not journaled: {e}", self.request_id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn billing_rules() {
        let reported = Usage { prompt_tokens: 10, completion_tokens: 20 };
        let r = |usage, events, bytes, stream| Relayed { usage, events, bytes, stream };
        assert_eq!(
            billed_tokens(RecordStatus::Completed, r(Some(reported), 0, 0, true), 400),
            (reported, false)
        );
        assert_eq!(
            billed_tokens(RecordStatus::Completed, r(None, 7, 0, true), 400),
            (Usage { prompt_tokens: 100, completion_tokens: 7 }, true)
        );
        assert_eq!(
            billed_tokens(RecordStatus::ClientGone, r(None, 3, 999, true), 401),
            (Usage { prompt_tokens: 101, completion_tokens: 3 }, true)
        );
        assert_eq!(
            billed_tokens(RecordStatus::UpstreamFailed, r(None, 0, 0, true), 400),
            (Usage::default(), false)
        );
        assert_eq!(
            billed_tokens(RecordStatus::Timeout, r(None, 2, 0, true), 400),
            (Usage { prompt_tokens: 100, completion_tokens: 2 }, true)
        );
        assert_eq!(
            billed_tokens(RecordStatus::UpstreamFailed, r(None, 0, 500, false), 400),
            (Usage::default(), false)
        );
    }
}
