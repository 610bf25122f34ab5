//! Failed-authentication limit per client address (`auth.failed_per_minute`).
//!
//! Each address that failed to authenticate gets a token bucket holding
//! `failed_per_minute` failures and refilling at that rate; an address whose
//! bucket is empty is refused (`429` with `Retry-After`) before its credential
//! is looked at, so guessing and JWKS/database work stay bounded. Successful
//! authentications never take from a bucket. IPv6 addresses are grouped by
//! their /64 (one host usually owns a whole /64). The map holds at most
//! [`MAX_TRACKED`] addresses: when full, buckets that have refilled are
//! forgotten, then the least recently failed ones.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Most addresses remembered at once (a few hundred KiB).
pub const MAX_TRACKED: usize = 10_000;

struct Bucket {
    /// Failures still allowed, refilled continuously.
    tokens: f64,
    updated: Instant,
}

/// The per-address failure buckets; `per_minute = 0` disables the limit.
pub struct FailedAuthLimit {
    per_minute: u32,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

impl FailedAuthLimit {
    pub fn new(per_minute: u32) -> FailedAuthLimit {
        FailedAuthLimit { per_minute, buckets: Mutex::new(HashMap::new()) }
    }

    fn capacity(&self) -> f64 {
        f64::from(self.per_minute)
    }

    /// Refill rate, tokens per second.
    fn rate(&self) -> f64 {
        self.capacity() / 60.0
    }

    fn refill(&self, bucket: &mut Bucket, now: Instant) {
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.rate()).min(self.capacity());
        bucket.updated = now;
    }

    /// `Err(wait)` when `ip` has used up its failures: refuse the request and
    /// tell the client to retry after `wait`.
    pub fn check(&self, ip: IpAddr) -> Result<(), Duration> {
        if self.per_minute == 0 {
            return Ok(());
        }
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let Some(bucket) = buckets.get_mut(&group(ip)) else { return Ok(()) };
        self.refill(bucket, now);
        if bucket.tokens >= 1.0 {
            return Ok(());
        }
        let wait = ((1.0 - bucket.tokens) / self.rate()).ceil().max(1.0);
        Err(Duration::from_secs_f64(wait))
    }

    /// Records one failed authentication from `ip`.
    pub fn failed(&self, ip: IpAddr) {
        if self.per_minute == 0 {
            return;
        }
        let now = Instant::now();
        let key = group(ip);
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if !buckets.contains_key(&key) && buckets.len() >= MAX_TRACKED {
            self.evict(&mut buckets, now);
        }
        let bucket = buckets.entry(key).or_insert(Bucket { tokens: self.capacity(), updated: now });
        self.refill(bucket, now);
        bucket.tokens = (bucket.tokens - 1.0).max(0.0);
    }

    /// Makes room: forgets full buckets, then (if still over 90 % full) the
    /// least recently updated tenth, so eviction is rare and amortised.
    fn evict(&self, buckets: &mut HashMap<IpAddr, Bucket>, now: Instant) {
        let (capacity, rate) = (self.capacity(), self.rate());
        buckets.retain(|_, b| b.tokens + now.saturating_duration_since(b.updated).as_secs_f64() * rate < capacity);
        if buckets.len() < MAX_TRACKED * 9 / 10 {
            return;
        }
        let mut times: Vec<Instant> = buckets.values().map(|b| b.updated).collect();
        let cut = MAX_TRACKED / 10;
        let (_, cutoff, _) = times.select_nth_unstable(cut);
        let cutoff = *cutoff;
        buckets.retain(|_, b| b.updated > cutoff);
    }

    /// Addresses currently remembered.
    pub fn tracked(&self) -> usize {
        self.buckets.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

/// The key an address is limited under: IPv4 as is (also when IPv4-mapped), IPv6 by /64.
fn group(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !(u128::from(u64::MAX)))),
        },
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    #[test]
    fn an_address_is_refused_after_its_failures_and_others_are_not() {
        let limit = FailedAuthLimit::new(3);
        let a = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
        let b = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2));
        for _ in 0..3 {
            assert!(limit.check(a).is_ok());
            limit.failed(a);
        }
        let wait = limit.check(a).expect_err("limited");
        assert!(wait >= Duration::from_secs(1) && wait <= Duration::from_secs(20), "{wait:?}");
        assert!(limit.check(b).is_ok());
    }

    #[test]
    fn zero_disables_the_limit() {
        let limit = FailedAuthLimit::new(0);
        let a = IpAddr::V4(Ipv4Addr::LOCALHOST);
        for _ in 0..100 {
            limit.failed(a);
        }
        assert!(limit.check(a).is_ok());
        assert_eq!(limit.tracked(), 0);
    }

    #[test]
    fn ipv6_is_grouped_by_64_and_mapped_ipv4_is_ipv4() {
        let one: IpAddr = "2001:db8:1:2::1".parse().expect("ip");
        let other: IpAddr = "2001:db8:1:2:ffff::9".parse().expect("ip");
        assert_eq!(group(one), group(other));
        assert_ne!(group(one), group("2001:db8:1:3::1".parse().expect("ip")));
        assert_eq!(group("::ffff:10.0.0.1".parse().expect("ip")), IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)));
    }

    #[test]
    fn spraying_addresses_cannot_grow_the_map_past_its_cap() {
        let limit = FailedAuthLimit::new(20);
        for i in 0..(MAX_TRACKED as u32 * 3) {
            limit.failed(IpAddr::V4(Ipv4Addr::from(i)));
        }
        assert!(limit.tracked() <= MAX_TRACKED, "{}", limit.tracked());
        // The newest addresses are still remembered.
        let last = IpAddr::V4(Ipv4Addr::from(MAX_TRACKED as u32 * 3 - 1));
        for _ in 0..19 {
            limit.failed(last);
        }
        assert!(limit.check(last).is_err());
    }
}
