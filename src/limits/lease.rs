//! Leases: budgets lent between instances through Redis, so a busy instance can spend more than its
//! fixed share without a round trip per request.
//!
//! # Design
//! With `limits.redis_url` set, each budget of `total` (an account's credits, a child key's daily or
//! monthly limit, a key's requests in one UTC minute) is split in two. Half of it is fixed: every instance owns `floor(total / (2N))` outright
//! ([`super::share::Share`]), which it keeps whatever happens to Redis. The rest is a pool in Redis that
//! instances *lease* slices of, atomically, in a Lua script: a lease is granted only from what no other
//! instance holds, so the fixed shares plus all leases never add up to more than the total, and an
//! instance only ever spends what it owns or leased. Spend across all instances therefore never exceeds
//! a limit, with Redis up, down, or coming back.
//!
//! Redis keeps, per budget, one hash: `total` (the pool's size; for credits only ever raised, so a late
//! writer with an older view cannot shrink it) and `e:<instance>` (what that instance leased, spent
//! or not). An instance leases ahead of need (the control plane renews a slice when less than half a
//! slice is left) and on a refusal (the core asks the control plane once, then answers); it returns what
//! it has not spent when it shuts down, and after a crash it finds its leases under its instance id at
//! the next start (what it spent is in the store under the same id). Redis unreachable: the instance
//! spends what it owns and holds, and asks again once Redis answers.
//!
//! Lua numbers are doubles: pool totals are capped at 2^53 − 1 ngonka (9 million GNK), which can only
//! lend less than there is, never more.

use std::time::{Duration, Instant};

/// The largest total a pool holds (exact in a Lua number).
pub const MAX_POOL: u64 = (1 << 53) - 1;

/// Leases a slice: raises or sets the pool total, grants at most what no instance holds.
/// KEYS[1] the budget's hash; ARGV: instance, total, mode ("max" | "set"), want, ttl seconds.
const LEASE: &str = r"
local total = tonumber(ARGV[2])
local cur = tonumber(redis.call('HGET', KEYS[1], 'total') or '-1')
if ARGV[3] == 'set' or total > cur then
  redis.call('HSET', KEYS[1], 'total', ARGV[2])
  cur = total
end
local held = 0
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  if string.sub(all[i], 1, 2) == 'e:' then held = held + tonumber(all[i + 1]) end
end
local grant = tonumber(ARGV[4])
if grant > cur - held then grant = cur - held end
if grant < 0 then grant = 0 end
local mine = redis.call('HINCRBY', KEYS[1], 'e:' .. ARGV[1], grant)
if tonumber(ARGV[5]) > 0 then redis.call('EXPIRE', KEYS[1], ARGV[5]) end
return {grant, mine}
";

/// Returns up to ARGV[2] of the instance's lease. KEYS[1] the budget's hash; ARGV: instance, amount.
const RELEASE: &str = r"
local mine = tonumber(redis.call('HGET', KEYS[1], 'e:' .. ARGV[1]) or '0')
local r = tonumber(ARGV[2])
if r > mine then r = mine end
return redis.call('HINCRBY', KEYS[1], 'e:' .. ARGV[1], -r)
";

/// A budget leased through Redis.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    /// An account's credits (all time).
    Account(String),
    /// A key's daily limit in a UTC day.
    Day(String, i64),
    /// A key's monthly limit in a UTC month.
    Month(String, i64),
    /// A key's requests per minute in a UTC minute (counted in requests, not ngonka).
    Minute(String, i64),
}

impl Scope {
    fn redis_key(&self, prefix: &str) -> String {
        match self {
            Scope::Account(a) => format!("{prefix}lease:acct:{a}"),
            Scope::Day(k, d) => format!("{prefix}lease:day:{k}:{d}"),
            Scope::Month(k, m) => format!("{prefix}lease:month:{k}:{m}"),
            Scope::Minute(k, m) => format!("{prefix}lease:minute:{k}:{m}"),
        }
    }

    /// Redis forgets a window's pool a while after the window ends; an account's never.
    fn ttl_secs(&self) -> u64 {
        match self {
            Scope::Account(_) => 0,
            Scope::Day(..) => 3 * 86_400,
            Scope::Month(..) => 63 * 86_400,
            Scope::Minute(..) => 180,
        }
    }

    /// Whether the pool's total follows the largest total seen (credits only grow) or the latest (a
    /// limit may be lowered).
    fn mode(&self) -> &'static str {
        match self {
            Scope::Account(_) => "max",
            Scope::Day(..) | Scope::Month(..) | Scope::Minute(..) => "set",
        }
    }
}

/// The control plane's connection to Redis. Blocking, with short timeouts; after a failure it waits a
/// second before trying again, so an outage costs the control plane little.
pub struct LeaseClient {
    client: redis::Client,
    conn: Option<redis::Connection>,
    prefix: String,
    instance: String,
    lease: redis::Script,
    release: redis::Script,
    retry_at: Option<Instant>,
    /// False while Redis is unreachable.
    pub up: bool,
}

impl std::fmt::Debug for LeaseClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaseClient").field("prefix", &self.prefix).field("up", &self.up).finish()
    }
}

const CONNECT_TIMEOUT: Duration = Duration::from_millis(300);
const IO_TIMEOUT: Duration = Duration::from_millis(500);

impl LeaseClient {
    pub fn new(url: &str, prefix: &str, instance: &str) -> Result<Self, String> {
        let client = redis::Client::open(url).map_err(|e| format!("limits.redis_url: {e}"))?;
        Ok(Self {
            client,
            conn: None,
            prefix: prefix.to_owned(),
            instance: instance.to_owned(),
            lease: redis::Script::new(LEASE),
            release: redis::Script::new(RELEASE),
            retry_at: None,
            up: false,
        })
    }

    fn conn(&mut self) -> Result<&mut redis::Connection, String> {
        if self.conn.is_none() {
            if self.retry_at.is_some_and(|t| Instant::now() < t) {
                return Err("redis unreachable (waiting before the next try)".into());
            }
            let made = self.client.get_connection_with_timeout(CONNECT_TIMEOUT).and_then(|c| {
                c.set_read_timeout(Some(IO_TIMEOUT))?;
                c.set_write_timeout(Some(IO_TIMEOUT))?;
                Ok(c)
            });
            match made {
                Ok(c) => {
                    if !self.up {
                        log::info!(target: "limits", "redis reachable: leases on");
                    }
                    self.conn = Some(c);
                    self.up = true;
                    self.retry_at = None;
                }
                Err(e) => return Err(self.down(e)),
            }
        }
        self.conn.as_mut().ok_or_else(|| "no connection".into())
    }

    fn down(&mut self, e: redis::RedisError) -> String {
        if self.up || self.retry_at.is_none() {
            log::warn!(target: "limits", "redis unreachable, spending only what this instance holds: {e}");
        }
        self.conn = None;
        self.up = false;
        self.retry_at = Some(Instant::now() + Duration::from_secs(1));
        e.to_string()
    }

    /// Leases up to `want` of `scope` whose total is `total`: `(granted, now leased in all)`.
    pub fn lease(&mut self, scope: &Scope, total: u64, want: u64) -> Result<(u64, u64), String> {
        let key = scope.redis_key(&self.prefix);
        let (instance, script) = (self.instance.clone(), self.lease.clone());
        let conn = self.conn()?;
        let r: redis::RedisResult<(i64, i64)> = script
            .key(key)
            .arg(instance)
            .arg(total.min(MAX_POOL))
            .arg(scope.mode())
            .arg(want.min(MAX_POOL))
            .arg(scope.ttl_secs())
            .invoke(conn);
        match r {
            Ok((g, m)) => Ok((g.max(0) as u64, m.max(0) as u64)),
            Err(e) => Err(self.down(e)),
        }
    }

    /// Returns up to `amount` of this instance's lease of `scope`; what it still leases.
    pub fn release(&mut self, scope: &Scope, amount: u64) -> Result<u64, String> {
        let key = scope.redis_key(&self.prefix);
        let (instance, script) = (self.instance.clone(), self.release.clone());
        let conn = self.conn()?;
        let r: redis::RedisResult<i64> = script.key(key).arg(instance).arg(amount.min(MAX_POOL)).invoke(conn);
        match r {
            Ok(m) => Ok(m.max(0) as u64),
            Err(e) => Err(self.down(e)),
        }
    }

    /// What this instance leases of each scope (a restart finds its leases here).
    pub fn leased(&mut self, scopes: &[Scope]) -> Result<Vec<u64>, String> {
        let field = format!("e:{}", self.instance);
        let mut pipe = redis::pipe();
        // Nothing to read still asks Redis, so an instance knows whether it is there.
        pipe.cmd("PING").ignore();
        for s in scopes {
            pipe.cmd("HGET").arg(s.redis_key(&self.prefix)).arg(&field);
        }
        let conn = self.conn()?;
        let r: redis::RedisResult<Vec<Option<i64>>> = pipe.query(conn);
        match r {
            Ok(v) => Ok(v.into_iter().map(|m| m.unwrap_or(0).max(0) as u64).collect()),
            Err(e) => Err(self.down(e)),
        }
    }
}
