//! What the control plane knows of its leases (`limits::lease`): the Redis client, what this instance
//! leases per scope, which scopes are hot, and the gauges `/metrics` shows. `control::leasing` acts on
//! it.

use crate::limits::lease::{LeaseClient, Scope};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// A scope nobody needed a lease for in this long gives back what it does not use.
pub(super) const COLD_AFTER: Duration = Duration::from_secs(30);

/// An exhausted pool is asked again after this long.
pub(super) const EMPTY_FOR: Duration = Duration::from_secs(1);

/// Several instances, for `/metrics`: written by the control plane and the change feed.
#[derive(Debug, Default)]
pub struct ClusterGauges {
    /// 1 when Redis answered the last lease call, 0 when not, -1 without Redis.
    pub redis_up: std::sync::atomic::AtomicI64,
    /// What this instance leases, spent or not (sum over budgets, ngonka and requests alike).
    pub leased: std::sync::atomic::AtomicI64,
    /// Changes from other instances applied through the store's change feed.
    pub changes_applied: std::sync::atomic::AtomicU64,
}

/// What the control plane knows of its leases.
#[derive(Debug)]
pub struct Leases {
    pub client: LeaseClient,
    /// What this instance leases per scope, as Redis has it (valid once `synced`).
    pub(super) leased: HashMap<Scope, u64>,
    /// Whether `leased` was read back from Redis since start (an instance that started while Redis was
    /// away spends only its fixed shares until then).
    pub(super) synced: bool,
    /// Scopes that needed a lease lately, renewed ahead of need until they go cold.
    pub(super) hot: HashMap<Scope, Instant>,
    /// Scopes whose pool had nothing left, and when: not asked again for a second, so a flood of
    /// refused requests costs Redis nothing.
    pub(super) empty: HashMap<Scope, Instant>,
}

impl Leases {
    pub fn new(client: LeaseClient) -> Self {
        Self { client, leased: HashMap::new(), synced: false, hot: HashMap::new(), empty: HashMap::new() }
    }

    pub fn is_up(&self) -> bool {
        self.client.up
    }
}
