//! Kept responses (OpenAI's Responses API) on the control plane: keeping, reading and deleting them, and
//! the sweep that deletes the expired ones. A response is its account's: another account's id reads as
//! not found, and so does one whose retention has passed (it is deleted when it is read, else by the
//! sweep).

use super::ControlState;
use crate::error::ApiError;
use crate::model::StoredResponse;
use std::time::{Duration, Instant};

/// How often expired responses are looked for.
const SWEEP_EVERY: Duration = Duration::from_secs(60);
/// Responses deleted per sweep step; a full step sweeps again at the next tick, so a backlog never
/// holds the control plane for long.
const SWEEP_BATCH: usize = 1000;

impl ControlState {
    /// Keeps a response.
    pub fn put_response(&mut self, response: &StoredResponse) -> Result<(), ApiError> {
        Ok(self.store.put_response(response)?)
    }

    /// The response `id` of `account_id` while its retention lasts.
    pub fn live_response(&mut self, account_id: &str, id: &str) -> Result<Option<StoredResponse>, ApiError> {
        let Some(found) = self.store.response(account_id, id)? else { return Ok(None) };
        if found.expires_ms <= self.clock.now_ms() {
            self.store.delete_response(account_id, id)?;
            return Ok(None);
        }
        Ok(Some(found))
    }

    /// Deletes the response `id` of `account_id`; whether a live one was there.
    pub fn delete_response(&mut self, account_id: &str, id: &str) -> Result<bool, ApiError> {
        let live = self.live_response(account_id, id)?.is_some();
        Ok(live && self.store.delete_response(account_id, id)?)
    }

    /// Deletes expired responses, a batch at a time (called by the periodic tick).
    pub(super) fn sweep_responses(&mut self) {
        if self.responses_swept.elapsed() < SWEEP_EVERY {
            return;
        }
        match self.store.delete_expired_responses(self.clock.now_ms(), SWEEP_BATCH) {
            // A full batch: more may be waiting, so the next tick sweeps again.
            Ok(SWEEP_BATCH) => return,
            Ok(n) if n > 0 => log::info!(target: "store", "deleted {n} expired responses"),
            Ok(_) => {}
            Err(e) => log::warn!(target: "store", "cannot delete expired responses (will retry): {e}"),
        }
        self.responses_swept = Instant::now();
    }
}
