//! Self-serve sign-ups: how many one client address, and everyone together, made in the current clock
//! hour, so an open sign-up cannot be used to make accounts without end.

use crate::error::{ApiError, RateLimitInfo};
use std::collections::HashMap;
use std::net::IpAddr;

/// Self-serve sign-ups per client address and in all, in the current clock hour.
#[derive(Debug, Default)]
pub struct SignupWindow {
    hour: i64,
    total: u32,
    per_ip: HashMap<IpAddr, u32>,
}

/// Addresses remembered in one hour; past it every new address is refused until the hour ends, so the
/// map stays bounded.
const MAX_ADDRESSES: usize = 100_000;

impl SignupWindow {
    /// Counts one sign-up from `ip` at `now_secs` (Unix), or refuses it (429, until the hour ends) when
    /// `ip` made `per_ip`, or everyone `total`, this hour.
    pub fn admit(&mut self, ip: IpAddr, now_secs: i64, per_ip: u32, total: u32) -> Result<(), ApiError> {
        let hour = now_secs.div_euclid(3600);
        if hour != self.hour {
            *self = Self { hour, ..Self::default() };
        }
        let seen = self.per_ip.get(&ip).copied().unwrap_or(0);
        let limit = if seen >= per_ip { Some(per_ip) } else { None };
        let limit = limit.or((self.total >= total).then_some(total));
        let limit = limit.or((seen == 0 && self.per_ip.len() >= MAX_ADDRESSES).then_some(total));
        if let Some(limit) = limit {
            let wait = u32::try_from((hour + 1) * 3600 - now_secs).unwrap_or(3600).max(1);
            return Err(ApiError::RateLimited(RateLimitInfo {
                limit,
                remaining: 0,
                reset_secs: wait,
                retry_after_secs: wait,
            }));
        }
        self.per_ip.insert(ip, seen + 1);
        self.total += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_ups_are_counted_per_address_and_in_all_per_clock_hour() {
        let mut w = SignupWindow::default();
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let t = 7_200;
        assert!(w.admit(a, t, 2, 3).is_ok() && w.admit(a, t + 1, 2, 3).is_ok());
        match w.admit(a, t + 600, 2, 3) {
            Err(ApiError::RateLimited(i)) => assert_eq!(i.retry_after_secs, 3000),
            other => panic!("{other:?}"),
        }
        assert!(w.admit(b, t, 2, 3).is_ok());
        assert!(w.admit(b, t, 2, 3).is_err(), "three in all this hour");
        assert!(w.admit(a, t + 3600, 2, 3).is_ok(), "a new hour");
    }
}
