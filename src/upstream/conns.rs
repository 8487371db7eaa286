//! Per-core keep-alive pools of upstream connections, one stack per node.
//!
//! # Design
//! Owned by one core (`RefCell` inside the core context), so no locking. The most recently returned
//! connection is reused first (it is the least likely to have been closed by the node); connections idle
//! longer than the pool's timeout are closed on the way.

use super::client::UpstreamIo;
use super::pool::NodeId;
use std::collections::HashMap;
use std::time::{Duration, Instant};

#[derive(Debug)]
struct Idle {
    io: UpstreamIo,
    since: Instant,
}

#[derive(Debug)]
pub struct ConnPool {
    idle: HashMap<NodeId, Vec<Idle>>,
    max_idle_per_node: usize,
    idle_timeout: Duration,
}

impl ConnPool {
    pub fn new(max_idle_per_node: usize, idle_timeout: Duration) -> Self {
        Self { idle: HashMap::new(), max_idle_per_node, idle_timeout }
    }

    /// A live-looking idle connection to `node`, if any.
    pub fn take(&mut self, node: NodeId) -> Option<UpstreamIo> {
        let stack = self.idle.get_mut(&node)?;
        while let Some(idle) = stack.pop() {
            if idle.since.elapsed() < self.idle_timeout {
                return Some(idle.io);
            }
        }
        None
    }

    /// Returns a connection whose last exchange ended cleanly.
    pub fn put(&mut self, node: NodeId, io: UpstreamIo) {
        if self.max_idle_per_node == 0 {
            return;
        }
        let stack = self.idle.entry(node).or_default();
        if stack.len() >= self.max_idle_per_node {
            stack.remove(0);
        }
        stack.push(Idle { io, since: Instant::now() });
    }

    /// Closes connections idle past the timeout.
    pub fn sweep(&mut self) {
        let timeout = self.idle_timeout;
        for stack in self.idle.values_mut() {
            stack.retain(|i| i.since.elapsed() < timeout);
        }
        self.idle.retain(|_, s| !s.is_empty());
    }
}
