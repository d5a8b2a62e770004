//! Server-side rate limiting, the way a provider enforces its documented limit: a token bucket
//! per key (Kommo: per scope; Ogmma: per API key) holding up to `burst` requests and refilled at
//! `rate`. Implemented as GCRA (one "theoretical arrival time" per key), on tokio time so tests
//! can pause and advance the clock.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use super::state::lock;
use crate::plan::Rate;

/// One provider's limit. `Unlimited` costs nothing per request.
pub(crate) struct RateLimiter {
    /// Spacing between requests at the sustained rate; `None` when unlimited.
    interval: Option<Duration>,
    /// How far ahead of the even schedule a key may run: `(burst - 1) * interval`.
    tolerance: Duration,
    next_free: Mutex<HashMap<String, Instant>>,
}

impl RateLimiter {
    /// `burst` is the bucket size: how many requests may arrive back to back; at least 1.
    pub(crate) fn new(rate: Rate, burst: u32) -> Self {
        let interval = rate.interval();
        let tolerance = interval.unwrap_or_default() * burst.max(1).saturating_sub(1);
        RateLimiter {
            interval,
            tolerance,
            next_free: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token for `key` at `now`, or says how long until one is free.
    pub(crate) fn check(&self, key: &str, now: Instant) -> Result<(), Duration> {
        let Some(interval) = self.interval else {
            return Ok(());
        };
        let mut map = lock(&self.next_free);
        let tat = match map.get(key) {
            Some(t) if *t > now => *t,
            _ => now,
        };
        // Allowed while the theoretical arrival time is at most `tolerance` ahead of now.
        let ahead = tat - now;
        if ahead > self.tolerance {
            return Err(ahead - self.tolerance);
        }
        let next = tat + interval;
        match map.get_mut(key) {
            Some(slot) => *slot = next,
            None => {
                map.insert(key.to_string(), next);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn bucket_allows_burst_then_refills_at_the_rate() {
        let limiter = RateLimiter::new(Rate::parse("7/s").expect("rate"), 7);
        let t0 = Instant::now();
        for _ in 0..7 {
            assert!(limiter.check("scope", t0).is_ok());
        }
        let wait = limiter
            .check("scope", t0)
            .expect_err("8th is over the limit");
        assert_eq!(wait, Duration::from_secs(1) / 7);
        // Another key has its own bucket.
        assert!(limiter.check("other", t0).is_ok());
        tokio::time::advance(Duration::from_secs(1) / 7).await;
        assert!(limiter.check("scope", Instant::now()).is_ok());
        assert!(limiter.check("scope", Instant::now()).is_err());
        // After a full second the whole burst is available again.
        tokio::time::advance(Duration::from_secs(1)).await;
        for _ in 0..7 {
            assert!(limiter.check("scope", Instant::now()).is_ok());
        }
        assert!(limiter.check("scope", Instant::now()).is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn burst_one_means_even_spacing() {
        let limiter = RateLimiter::new(Rate::parse("60/min").expect("rate"), 1);
        assert!(limiter.check("k", Instant::now()).is_ok());
        assert!(limiter.check("k", Instant::now()).is_err());
        tokio::time::advance(Duration::from_millis(999)).await;
        assert!(limiter.check("k", Instant::now()).is_err());
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(limiter.check("k", Instant::now()).is_ok());
    }

    #[test]
    fn unlimited_never_refuses() {
        let limiter = RateLimiter::new(Rate::Unlimited, 1);
        let now = Instant::now();
        for _ in 0..1000 {
            assert!(limiter.check("k", now).is_ok());
        }
    }
}
