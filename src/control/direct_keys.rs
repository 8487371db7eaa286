//! The direct-key side of the control state: the `[chain]` settings, the sealing key and the rows the
//! chain worker has work on. Plain state; the operations on it are [`super::direct`]'s.

use crate::config::ChainSettings;
use crate::model::DirectKeyRow;
use crate::secret::SealingKey;
use std::collections::HashMap;
use std::sync::Arc;

/// The direct-key side of the control state.
#[derive(Debug)]
pub struct DirectKeys {
    pub settings: ChainSettings,
    /// Seals a new key's private key under the server secret.
    pub sealing: Arc<SealingKey>,
    /// The rows the chain worker still has work on, by id: every key not archived, and archived ones
    /// until their float is swept and their sealed key erased.
    pub(super) rows: HashMap<String, DirectKeyRow>,
}

impl DirectKeys {
    pub fn new(settings: ChainSettings, sealing: Arc<SealingKey>) -> Self {
        Self { settings, sealing, rows: HashMap::new() }
    }

    /// What publishing a key costs the direct account: 1 ngonka sent back and the fee.
    pub fn publish_cost(&self) -> u64 {
        self.settings.fee_ngonka.saturating_add(1)
    }
}
