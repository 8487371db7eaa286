//! Time, in one place: the wall clock behind a trait so tests can move it (across midnight, across a
//! month), the process's coarse monotonic milliseconds, UTC calendar windows (a day is
//! `unix_ms / 86_400_000`; a month is counted from January 1970) and RFC 3339 text.

use std::sync::LazyLock;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Instant;

static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

/// Milliseconds since the process's first call; never goes back.
pub fn monotonic_ms() -> u64 {
    u64::try_from(EPOCH.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// Seconds since the Unix epoch, from the wall clock.
pub fn unix_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Milliseconds since the Unix epoch, from the wall clock.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Unix seconds as RFC 3339 (`2026-11-22T10:00:00Z`).
pub fn rfc3339(unix: i64) -> String {
    ::time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| t.format(&::time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_default()
}

/// RFC 3339 to Unix seconds.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    ::time::OffsetDateTime::parse(s, &::time::format_description::well_known::Rfc3339)
        .ok()
        .map(|t| t.unix_timestamp())
}

/// Wall-clock milliseconds since the Unix epoch.
pub trait Clock: Send + Sync + std::fmt::Debug {
    fn now_ms(&self) -> i64;
}

/// The system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
    }
}

/// A clock that moves only when told to (tests), starting at the system time plus an offset.
#[derive(Debug)]
pub struct ManualClock {
    ms: AtomicI64,
}

impl ManualClock {
    pub fn new(now_ms: i64) -> Self {
        Self { ms: AtomicI64::new(now_ms) }
    }

    pub fn set(&self, ms: i64) {
        self.ms.store(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.ms.load(Ordering::SeqCst)
    }
}

pub const DAY_MS: i64 = 86_400_000;

/// UTC day index (days since 1970-01-01).
pub fn day_index(unix_ms: i64) -> i64 {
    unix_ms.div_euclid(DAY_MS)
}

/// UTC month index (months since January 1970).
pub fn month_index(unix_ms: i64) -> i64 {
    let (y, m, _) = civil_from_days(day_index(unix_ms));
    (y - 1970) * 12 + (m - 1)
}

/// `YYYY-MM-DD` of a day index.
pub fn day_string(day: i64) -> String {
    let (y, m, d) = civil_from_days(day);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Day index of a `YYYY-MM-DD` date.
pub fn parse_day(s: &str) -> Option<i64> {
    let mut it = s.split('-');
    let y: i64 = it.next()?.parse().ok()?;
    let m: i64 = it.next()?.parse().ok()?;
    let d: i64 = it.next()?.parse().ok()?;
    if it.next().is_some() || !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    let day = days_from_civil(y, m, d);
    (civil_from_days(day) == (y, m, d)).then_some(day)
}

/// (year, month 1–12, day 1–31) of a day index (H. Hinnant's algorithm).
pub fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// Day index of a civil date.
pub fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trips() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(parse_rfc3339("2026-11-22T10:00:00Z"), Some(1_795_341_600));
        assert_eq!(parse_rfc3339("2026-11-22T11:00:00+01:00"), Some(1_795_341_600));
        assert_eq!(parse_rfc3339(&rfc3339(1_795_341_600)), Some(1_795_341_600));
        assert_eq!(parse_rfc3339("tomorrow"), None);
    }

    #[test]
    fn windows_roll_at_utc_midnight_and_on_the_first() {
        let t = days_from_civil(2026, 11, 30) * DAY_MS + DAY_MS - 1; // 2026-11-30T23:59:59.999Z
        assert_eq!(day_index(t) + 1, day_index(t + 1));
        assert_eq!(month_index(t) + 1, month_index(t + 1));
        assert_eq!(day_string(day_index(t + 1)), "2026-12-01");
        let mid = days_from_civil(2026, 11, 15) * DAY_MS;
        assert_eq!(month_index(mid), month_index(t));
        assert_eq!(month_index(days_from_civil(1970, 1, 1) * DAY_MS), 0);
        assert_eq!(month_index(days_from_civil(2027, 1, 1) * DAY_MS), 57 * 12);
    }

    #[test]
    fn civil_round_trips() {
        for day in [-1000, 0, 59, 60, 365, 11_016, 20_000, 20_780] {
            let (y, m, d) = civil_from_days(day);
            assert_eq!(days_from_civil(y, m, d), day);
        }
        assert_eq!(parse_day("2026-11-22"), Some(days_from_civil(2026, 11, 22)));
        assert_eq!(parse_day("2026-02-30"), None);
        assert_eq!(parse_day("2026-13-01"), None);
        assert_eq!(parse_day("yesterday"), None);
    }
}
