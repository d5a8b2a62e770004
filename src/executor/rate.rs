//! Per-target pacing: a GCRA ("virtual scheduling") limiter. Each send reserves the next slot
//! on an even schedule that does not drift: `send_at = max(now, tat - tolerance)`, then
//! `tat = max(tat, send_at) + interval`, where `tolerance = (burst - 1) * interval`.
//!
//! In any window of length W at most `W / interval + burst` sends are allowed, idle time does
//! not accumulate credit beyond `burst`, and a `Retry-After` pause moves the schedule for every
//! row of the target, not only the one that was told to wait.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::plan::Rate;

#[derive(Debug)]
pub struct RateLimiter {
    /// `None`: unlimited.
    interval: Option<Duration>,
    tolerance: Duration,
    /// Theoretical arrival time of the next send.
    tat: Mutex<Option<Instant>>,
}

impl RateLimiter {
    /// `burst` is the number of sends allowed at once before the even schedule applies (≥ 1).
    pub fn new(rate: Rate, burst: u32) -> RateLimiter {
        let interval = rate.interval();
        let tolerance = interval
            .map(|i| i * burst.max(1).saturating_sub(1))
            .unwrap_or_default();
        RateLimiter {
            interval,
            tolerance,
            tat: Mutex::new(None),
        }
    }

    /// Reserves the next slot and returns when the caller may send.
    pub fn reserve(&self, now: Instant) -> Instant {
        let Some(interval) = self.interval else {
            return now;
        };
        let mut tat = self.tat.lock().unwrap_or_else(|e| e.into_inner());
        let current = tat.unwrap_or(now);
        let send_at = now.max(current.checked_sub(self.tolerance).unwrap_or(now));
        *tat = Some(current.max(send_at) + interval);
        send_at
    }

    /// Waits for the next slot.
    pub async fn until_ready(&self) {
        let at = self.reserve(Instant::now());
        if at > Instant::now() {
            tokio::time::sleep_until(at).await;
        }
    }

    /// Holds every sender of this target until `until` (a provider's `Retry-After`); sending
    /// then resumes on the even schedule, without a burst.
    pub fn pause_until(&self, until: Instant) {
        let mut tat = self.tat.lock().unwrap_or_else(|e| e.into_inner());
        let resume = until + self.tolerance;
        *tat = Some(tat.map_or(resume, |t| t.max(resume)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn per_sec(n: u32) -> Rate {
        Rate::Limited {
            count: n,
            per: Duration::from_secs(1),
        }
    }

    /// Largest number of `times` inside any window of `window` length.
    fn max_in_window(times: &[Instant], window: Duration) -> usize {
        let mut best = 0;
        let mut start = 0;
        for end in 0..times.len() {
            while times[end] - times[start] >= window {
                start += 1;
            }
            best = best.max(end - start + 1);
        }
        best
    }

    #[tokio::test(start_paused = true)]
    async fn paces_evenly_without_drift() {
        let limiter = RateLimiter::new(per_sec(200), 1);
        let start = Instant::now();
        let mut times = Vec::new();
        for _ in 0..2000 {
            limiter.until_ready().await;
            times.push(Instant::now());
        }
        let elapsed = times[1999] - start;
        // 2000 sends at 200/s: the last one at 1999 × 5 ms.
        assert_eq!(elapsed, Duration::from_millis(9995));
        assert!(max_in_window(&times, Duration::from_secs(1)) <= 201);
        assert!(max_in_window(&times, Duration::from_millis(100)) <= 21);
    }

    #[tokio::test(start_paused = true)]
    async fn burst_allows_that_many_at_once_then_even_spacing() {
        let limiter = RateLimiter::new(per_sec(10), 3);
        let now = Instant::now();
        let slots: Vec<Duration> = (0..6).map(|_| limiter.reserve(now) - now).collect();
        let ms = |n| Duration::from_millis(n);
        assert_eq!(slots, vec![ms(0), ms(0), ms(0), ms(100), ms(200), ms(300)]);
    }

    #[tokio::test(start_paused = true)]
    async fn idle_time_does_not_bank_more_than_the_burst() {
        let limiter = RateLimiter::new(per_sec(10), 2);
        let t0 = Instant::now();
        limiter.reserve(t0);
        tokio::time::advance(Duration::from_secs(60)).await;
        let now = Instant::now();
        let slots: Vec<Duration> = (0..4).map(|_| limiter.reserve(now) - now).collect();
        let ms = |n| Duration::from_millis(n);
        assert_eq!(slots, vec![ms(0), ms(0), ms(100), ms(200)]);
    }

    #[tokio::test(start_paused = true)]
    async fn pause_moves_the_schedule_for_everyone_without_a_burst_after() {
        let limiter = RateLimiter::new(per_sec(10), 3);
        let now = Instant::now();
        limiter.pause_until(now + Duration::from_secs(2));
        let slots: Vec<Duration> = (0..3).map(|_| limiter.reserve(now) - now).collect();
        let ms = |n| Duration::from_millis(n);
        assert_eq!(slots, vec![ms(2000), ms(2100), ms(2200)]);
    }

    #[tokio::test(start_paused = true)]
    async fn unlimited_never_waits() {
        let limiter = RateLimiter::new(Rate::Unlimited, 1);
        let now = Instant::now();
        assert!((0..1000).all(|_| limiter.reserve(now) == now));
    }
}
