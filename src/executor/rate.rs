//! Per-target pacing: a GCRA ("virtual scheduling") limiter. With `interval = 1/rate` and
//! `tolerance = (burst - 1) * interval`, a send may go at `max(now, tat - tolerance)`, after
//! which the theoretical arrival time becomes `tat = max(tat, sent) + interval`.
//!
//! - The schedule does not drift: a sender that wakes within [`LATE`] of its slot counts as on
//!   time, so timer granularity does not slow the pace.
//! - One sender at a time waits for the next slot (a FIFO turn), and a sender that wakes later
//!   than [`LATE`] (the process stalled) moves the schedule instead of catching up: in any
//!   window of length W at most `(W + LATE) / interval + burst` sends go out, e.g. at most
//!   `rate + burst` in any second for rates up to 500/s.
//! - Idle time does not accumulate credit beyond `burst`.
//! - A `Retry-After` pause moves the schedule for every row of the target, not only the one
//!   that was told to wait.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::plan::Rate;

/// How late a wake-up may be and still count as on schedule.
pub const LATE: Duration = Duration::from_millis(2);

#[derive(Debug)]
pub struct RateLimiter {
    /// `None`: unlimited.
    interval: Option<Duration>,
    tolerance: Duration,
    /// Theoretical arrival time of the next send.
    tat: Mutex<Option<Instant>>,
    /// Held by the one sender waiting for the next slot; tokio's mutex is fair (FIFO).
    turn: tokio::sync::Mutex<()>,
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
            turn: tokio::sync::Mutex::new(()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, Option<Instant>> {
        self.tat.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The earliest instant a send may go, seen at `now`.
    fn slot(&self, now: Instant) -> Instant {
        match *self.state() {
            Some(tat) => now.max(tat.checked_sub(self.tolerance).unwrap_or(now)),
            None => now,
        }
    }

    /// Records a send counted at `at`.
    fn commit(&self, at: Instant, interval: Duration) {
        let mut tat = self.state();
        *tat = Some(tat.unwrap_or(at).max(at) + interval);
    }

    /// Waits for the next slot and takes it.
    pub async fn until_ready(&self) {
        let Some(interval) = self.interval else {
            return;
        };
        let _turn = self.turn.lock().await;
        let mut scheduled = None;
        loop {
            let now = Instant::now();
            let at = self.slot(now);
            if at <= now {
                break;
            }
            tokio::time::sleep_until(at).await;
            // Loop: a Retry-After pause may have moved the schedule while we slept.
            scheduled = Some(at);
        }
        let woke = Instant::now();
        let counted = match scheduled {
            Some(at) if woke <= at + LATE => at,
            _ => woke,
        };
        self.commit(counted, interval);
    }

    /// Holds every sender of this target until `until` (a provider's `Retry-After`); sending
    /// then resumes on the even schedule, without a burst.
    pub fn pause_until(&self, until: Instant) {
        let mut tat = self.state();
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

    /// Offsets from the start at which `n` back-to-back sends go.
    async fn send_times(limiter: &RateLimiter, n: usize) -> Vec<Duration> {
        let start = Instant::now();
        let mut out = Vec::new();
        for _ in 0..n {
            limiter.until_ready().await;
            out.push(Instant::now() - start);
        }
        out
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[tokio::test(start_paused = true)]
    async fn burst_allows_that_many_at_once_then_even_spacing() {
        let limiter = RateLimiter::new(per_sec(10), 3);
        let times = send_times(&limiter, 6).await;
        assert_eq!(times, vec![ms(0), ms(0), ms(0), ms(100), ms(200), ms(300)]);
    }

    #[tokio::test(start_paused = true)]
    async fn idle_time_does_not_bank_more_than_the_burst() {
        let limiter = RateLimiter::new(per_sec(10), 2);
        limiter.until_ready().await;
        tokio::time::advance(Duration::from_secs(60)).await;
        let times = send_times(&limiter, 4).await;
        assert_eq!(times, vec![ms(0), ms(0), ms(100), ms(200)]);
    }

    #[tokio::test(start_paused = true)]
    async fn pause_moves_the_schedule_for_everyone_without_a_burst_after() {
        let limiter = RateLimiter::new(per_sec(10), 3);
        limiter.pause_until(Instant::now() + Duration::from_secs(2));
        let times = send_times(&limiter, 3).await;
        assert_eq!(times, vec![ms(2000), ms(2100), ms(2200)]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stall_moves_the_schedule_instead_of_bursting_to_catch_up() {
        // 8 senders at 100/s; the runtime stalls for 50 ms (a blocked thread, not a timer).
        let limiter = std::sync::Arc::new(RateLimiter::new(per_sec(100), 1));
        let start = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let l = std::sync::Arc::clone(&limiter);
            tasks.push(tokio::spawn(async move {
                let mut times = Vec::new();
                for _ in 0..10 {
                    l.until_ready().await;
                    times.push(Instant::now());
                }
                times
            }));
        }
        tokio::time::sleep(ms(105)).await;
        // The stall: the clock jumps 50 ms and every timer due meanwhile wakes late, at once.
        tokio::time::advance(ms(50)).await;
        let mut times = Vec::new();
        for t in tasks {
            times.extend(t.await.expect("task"));
        }
        times.sort();
        assert_eq!(times.len(), 80);
        assert!(
            max_in_window(&times, ms(100)) <= 11,
            "{:?}",
            times.iter().map(|t| *t - start).collect::<Vec<_>>()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn unlimited_never_waits() {
        let limiter = RateLimiter::new(Rate::Unlimited, 1);
        let times = send_times(&limiter, 1000).await;
        assert!(times.iter().all(|t| t.is_zero()));
    }
}
