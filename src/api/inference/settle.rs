//! Settlement: a request's hold is replaced by its real cost, and its usage record is journaled, once,
//! on whatever ending it had (right before the final bytes of a complete answer, so the record is durable
//! before the client has the whole answer); while the answer is relayed, progress marks are journaled
//! too.
//!
//! # Rules
//! - The node reported usage: its tokens × prices, whatever the ending (a client that left still pays for
//!   what the node generated: the relay drains the answer to learn its usage).
//! - No usage reported: an estimate, and the record says so. The prompt from its text
//!   ([`crate::billing::estimate`]); the completion from what the node sent (content events of a stream, a quarter
//!   of the bytes of anything else). A node that failed or stalled before sending any content costs
//!   nothing.
//! - The bill is what it is, above the hold too (see [`crate::limits`]).
//! - Every `journal.progress_tokens` relayed, a progress mark ([`RecordStatus::Interrupted`]) with what
//!   the answer has cost so far is journaled without waiting; the final record replaces it. A crash
//!   between two marks loses at most that many tokens of an answer.

use crate::app::App;
use crate::auth::cache::KeyEntry;
use crate::billing::estimate::PromptText;
use crate::limits::{self, Hold};
use crate::model::{ModelSpec, RecordStatus, Usage, UsageRecord};
use crate::upstream::relay::Seen;
use std::sync::Arc;
use std::time::Instant;

/// The completion tokens to bill for what the node sent without a usage, and whether there is anything
/// to bill at all.
fn completion_sent(status: RecordStatus, seen: Seen, stream: bool) -> Option<u64> {
    let sent = if stream { seen.events } else { seen.bytes.div_ceil(4) };
    match status {
        RecordStatus::Completed | RecordStatus::ClientGone | RecordStatus::Interrupted => Some(sent),
        RecordStatus::UpstreamFailed | RecordStatus::Timeout => (stream && seen.events > 0).then_some(sent),
        // Never a request's status (the chain worker bills direct keys).
        RecordStatus::Direct => None,
    }
}

/// One admitted request's settlement, done at most once.
#[derive(Debug)]
pub struct Settlement {
    app: Arc<App>,
    key: Arc<KeyEntry>,
    model: ModelSpec,
    hold: Option<Hold>,
    request_id: String,
    started_ms: i64,
    started: Instant,
    stream: bool,
    /// The body as sent, for the prompt estimate.
    body: bytes::Bytes,
    /// The prompt estimate without a tokenizer, once needed.
    prompt_estimate: Option<u64>,
    /// What was billed, once settled: (tokens, cost, estimated).
    pub billed: Option<(Usage, u64, bool)>,
}

impl Settlement {
    #[expect(clippy::too_many_arguments, reason = "everything a usage record is made of")]
    pub fn new(
        app: Arc<App>,
        key: Arc<KeyEntry>,
        model: ModelSpec,
        hold: Hold,
        request_id: String,
        started_ms: i64,
        started: Instant,
        stream: bool,
        body: bytes::Bytes,
    ) -> Self {
        Self {
            app,
            key,
            model,
            hold: Some(hold),
            request_id,
            started_ms,
            started,
            stream,
            body,
            prompt_estimate: None,
            billed: None,
        }
    }

    fn prompt_estimate(&mut self) -> u64 {
        *self.prompt_estimate.get_or_insert_with(|| PromptText::of_body(&self.body).estimate())
    }

    fn record(&self, status: RecordStatus, tokens: Usage, cost: u64, estimated: bool) -> Option<UsageRecord> {
        let (day, month) = self.hold.as_ref()?.windows();
        Some(UsageRecord {
            request_id: self.request_id.clone(),
            account_id: self.key.account_id().to_string(),
            key_id: self.key.id().to_string(),
            model: self.model.id.clone(),
            prompt_tokens: tokens.prompt_tokens,
            completion_tokens: tokens.completion_tokens,
            cost_ngonka: cost,
            status,
            estimated,
            latency_ms: u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX),
            started_ms: self.started_ms,
            finished_ms: self.app.clock.now_ms(),
            day,
            month,
        })
    }

    /// Settles the hold and writes the usage record to the journal; later calls do nothing. Returns
    /// once the record is as durable as `journal.wait` asks.
    pub async fn settle(&mut self, status: RecordStatus, seen: Seen) {
        if self.hold.is_none() {
            return;
        }
        let (tokens, estimated) = match (seen.usage, completion_sent(status, seen, self.stream)) {
            (Some(u), _) => (u, false),
            (None, None) => (Usage::default(), false),
            (None, Some(completion)) => {
                let prompt = if self.app.tokenizers.has(&self.model.id) {
                    self.app.tokenizers.count(&self.model.id, PromptText::of_body(&self.body)).await.0
                } else {
                    self.prompt_estimate()
                };
                (Usage { prompt_tokens: prompt, completion_tokens: completion }, true)
            }
        };
        let cost = limits::cost(&self.model, tokens.prompt_tokens, tokens.completion_tokens);
        let record = self.record(status, tokens, cost, estimated);
        if let Some(hold) = self.hold.take() {
            if cost > hold.amount() {
                log::warn!(
                    target: "billing",
                    "{}: billed {cost} ngonka, above the request's hold of {} (the node generated more than it was asked for)",
                    self.request_id,
                    hold.amount()
                );
            }
            hold.settle(cost);
        }
        self.billed = Some((tokens, cost, estimated));
        if let Some(record) = record
            && let Err(e) = self.app.journal.append(&record).await
        {
            log::error!(target: "billing", "{}: usage record not journaled: {e}", self.request_id);
        }
    }

    /// Journals what the answer has cost so far, without waiting (see the module docs).
    pub fn progress(&mut self, seen: Seen) {
        if self.hold.is_none() {
            return;
        }
        let (tokens, estimated) = match seen.usage {
            Some(u) => (u, false),
            None => {
                let completion = completion_sent(RecordStatus::Interrupted, seen, self.stream).unwrap_or(0);
                (Usage { prompt_tokens: self.prompt_estimate(), completion_tokens: completion }, true)
            }
        };
        let cost = limits::cost(&self.model, tokens.prompt_tokens, tokens.completion_tokens);
        if let Some(record) = self.record(RecordStatus::Interrupted, tokens, cost, estimated) {
            self.app.journal.append_unacknowledged(&record);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_the_node_sent_is_billed() {
        let seen = |events, bytes| Seen { usage: None, events, bytes };
        assert_eq!(completion_sent(RecordStatus::Completed, seen(7, 999), true), Some(7));
        assert_eq!(completion_sent(RecordStatus::Completed, seen(0, 400), false), Some(100));
        assert_eq!(
            completion_sent(RecordStatus::ClientGone, seen(0, 4000), false),
            Some(1000),
            "a client that left pays for what the node sent"
        );
        assert_eq!(completion_sent(RecordStatus::ClientGone, seen(3, 999), true), Some(3));
        assert_eq!(completion_sent(RecordStatus::UpstreamFailed, seen(0, 0), true), None);
        assert_eq!(completion_sent(RecordStatus::UpstreamFailed, seen(0, 500), false), None);
        assert_eq!(completion_sent(RecordStatus::Timeout, seen(2, 0), true), Some(2));
        assert_eq!(completion_sent(RecordStatus::Interrupted, seen(0, 40), false), Some(10));
    }
}
