//! Per-target pacing: a GCRA ("virtual scheduling") limiter, with an exact guard on the windows
//! that matter.
//!
//! With `interval = 1/rate` and `tolerance = (burst - 1) * interval`, a send may go at
//! `max(now, tat - tolerance)`, after which the theoretical arrival time becomes
//! `tat = max(tat, counted) + interval`.
//!
//! - The schedule does not drift: a sender that slept until its slot and woke within the late
//!   allowance ([`late_allowance`]; tokio timers tick in milliseconds) counts at its slot.
//! - Above [`FINE`] rates (intervals shorter than a timer tick), a sender under a backlog that
//!   finds its slot already past also counts at it, giving up only lateness beyond the
//!   allowance: the schedule catches up on what the tick cost. At lower rates a late sender
//!   moves the schedule instead, so sends never bunch there; idle time never banks credit
//!   beyond `burst`.
//! - An exact sliding-window guard over the actual send times holds every one-second window to
//!   `rate + burst - 1` (one under the promise, as headroom for jitter between the send
//!   decision and the wire) and every 100 ms window to `rate/10 + burst`.
//! - One sender at a time waits for the next slot (a FIFO turn).
//! - A `Retry-After` pause moves the schedule for every row of the lane, not only the one
//!   that was told to wait.
//! - Adaptive pace (AIMD, [`Adapt`]): a 429 without `Retry-After` lowers the lane's ceiling to
//!   [`SETTLE`] × the rate the 429 came at ([`REFINE`] × when the lane was already at its
//!   ceiling) and the pace to [`DECREASE`] × that ceiling; the
//!   pace then climbs back by [`CLIMB`] × the configured rate per second up to the ceiling,
//!   and the ceiling itself recovers by [`RECOVER`] × the configured rate per second. One 429
//!   decreases once: answers to requests sent before the last decrease are not counted again.
//!   Once slowed, the lane paces from actual send times (no late allowance, no burst), since a
//!   strict provider counts the gaps between arrivals: a plan rate exactly at such a
//!   provider's limit settles just under it instead of oscillating.
//! - A 429 slows every lane, `unlimited` included: when the lane was sending far above what
//!   the provider accepted over the last [`ACCEPT_WINDOW`] (more than [`FAR_ABOVE`] × that),
//!   the pace drops to the accepted rate instead, and its ceiling then grows by [`PROBE`] of
//!   itself per second (the measurement after a burst is pessimistic) until the next 429
//!   finds the limit. 429s in a row (no acceptance between) also hold the next send back
//!   exponentially, up to [`MAX_REFUSAL_WAIT`]: requests after a refusal never outrun
//!   acceptances.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::plan::Rate;

/// How late a send may be and still count as on schedule: half an interval (so catching up
/// never puts two sends closer than half an interval at low rates), but at least 1.5 ms (tokio
/// timers tick in milliseconds, which spans several intervals at high rates) and at most
/// [`MAX_LATE`].
pub(crate) fn late_allowance(interval: Duration) -> Duration {
    (interval / 2).clamp(Duration::from_micros(1500), MAX_LATE)
}

/// The most a send may be late and still count as on schedule, at any rate.
pub(crate) const MAX_LATE: Duration = Duration::from_millis(5);

/// Intervals shorter than this (rates above 500/s) are finer than the timer's tick: only there
/// does the schedule catch up on sends found already past their slot.
pub(crate) const FINE: Duration = Duration::from_millis(2);

/// The windows the guard holds to their share of the rate.
const WINDOWS: [Duration; 2] = [Duration::from_secs(1), Duration::from_millis(100)];

/// After a 429, the ceiling is this share of the rate the 429 came at.
pub(crate) const SETTLE: f64 = 0.95;
/// A 429 that comes while the lane already runs at its ceiling lowers the ceiling by this
/// share only: the limit was found (just under the ceiling), so it is refined in small steps;
/// lowering it by [`SETTLE`] again for each jitter-borne 429 at a strict provider would
/// ratchet the lane ever further below the limit.
pub(crate) const REFINE: f64 = 0.98;
/// After a 429, the pace drops to this share of the new ceiling.
pub(crate) const DECREASE: f64 = 0.8;
/// The pace climbs back by this share of the configured rate per second.
pub(crate) const CLIMB: f64 = 0.1;
/// The ceiling recovers by this share of the configured rate per second (1% per 10 s).
pub(crate) const RECOVER: f64 = 0.001;
/// The slowest a lane is paced at after 429s, in requests per second (one a minute).
const FLOOR: f64 = 1.0 / 60.0;
/// The span over which acceptances are counted to measure what the provider takes.
pub(crate) const ACCEPT_WINDOW: Duration = Duration::from_secs(2);
/// A pace more than this many times the measured acceptance rate is far above the provider's
/// limit: the lane drops to the measurement rather than stepping down from its pace.
pub(crate) const FAR_ABOVE: f64 = 2.0;
/// After a drop to the measured rate, the ceiling grows by this share of itself per second.
pub(crate) const PROBE: f64 = 0.5;
/// A lane held far below its configured rate (more than [`HELD_FAR_BELOW`] times under it,
/// or `unlimited`) that the provider has accepted since its last 429, this long, grows its
/// ceiling again by [`REGROW`] of itself per second. A refusal that came while the lane was
/// still finding its pace (a burst that arrived bunched on a busy machine) would otherwise
/// hold it there, recovering 1% per 10 s, for the rest of the run; a provider that really
/// limits there answers 429 again as soon as the lane goes past, and the lane drops back.
pub(crate) const QUIET: Duration = Duration::from_secs(5);
/// See [`QUIET`].
pub(crate) const REGROW: f64 = 0.1;
/// See [`QUIET`].
pub(crate) const HELD_FAR_BELOW: f64 = 10.0;
/// The longest that 429s in a row hold a lane's next send back.
pub(crate) const MAX_REFUSAL_WAIT: Duration = Duration::from_secs(30);
/// Acceptance times kept, at most (a fast lane's window would otherwise hold thousands).
const ACCEPTS_KEPT: usize = 4096;

/// The shortest span the accepted rate is measured over. Just after a lane starts (or comes
/// back from idle), the few answers in the window came within milliseconds: counted over a
/// whole second they read as 1–5/s for a provider that takes hundreds, and a lane set to that
/// pace takes many seconds to climb back. Over 100 ms, a provider that accepted one request
/// is credited with 10/s, which the adaptive pace then refines.
const MIN_ACCEPT_SPAN: Duration = Duration::from_millis(100);

/// The adaptive part of a lane's pace: what 429s without `Retry-After` did to it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Adapt {
    /// The configured rate, requests per second (infinite for `unlimited`).
    configured: f64,
    /// The rate the pace climbs and the ceiling recovers in proportion to: the rate the last
    /// decrease came at (never above the configured rate).
    reference: f64,
    /// Pace right after the last decrease, and when that was.
    from: f64,
    at: Instant,
    /// Ceiling right after the last decrease.
    ceiling: f64,
    /// The ceiling came from the measured acceptance rate: it grows by [`PROBE`] per second.
    probing: bool,
    /// The first acceptance since the decrease (see [`QUIET`]).
    accepted_since: Option<Instant>,
}

impl Adapt {
    /// Pace (requests per second) at `now`.
    fn rate(&self, now: Instant) -> f64 {
        let secs = now.saturating_duration_since(self.at).as_secs_f64();
        let ceiling = self.ceiling(now);
        (self.from + CLIMB * self.reference.max(ceiling) * secs).min(ceiling)
    }

    fn ceiling(&self, now: Instant) -> f64 {
        let secs = now.saturating_duration_since(self.at).as_secs_f64();
        let grown = if self.probing {
            self.ceiling * (1.0 + PROBE).powf(secs)
        } else {
            let recovered = self.ceiling + RECOVER * self.reference * secs;
            let quiet = self.accepted_since.map_or(0.0, |t| {
                now.saturating_duration_since(t).as_secs_f64() - QUIET.as_secs_f64()
            });
            if quiet > 0.0 && self.configured > HELD_FAR_BELOW * self.ceiling {
                recovered.max(self.ceiling * (1.0 + REGROW).powf(quiet))
            } else {
                recovered
            }
        };
        grown.min(self.configured)
    }
}

/// What a lane's pace went through, for the summary.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct PaceStats {
    /// 429 answers without `Retry-After` that slowed the lane.
    pub slowdowns: u64,
    /// The slowest pace the lane was set to, requests per second.
    pub slowest_rate: Option<f64>,
    /// `Retry-After` pauses.
    pub pauses: u64,
    /// The pace the lane was at when the run ended, if a 429 ever slowed it.
    pub settled_rate: Option<f64>,
}

#[derive(Debug)]
pub(crate) struct RateLimiter {
    /// `None`: unlimited.
    interval: Option<Duration>,
    tolerance: Duration,
    /// Most sends allowed in each of [`WINDOWS`].
    caps: [usize; 2],
    /// See [`late_allowance`].
    late: Duration,
    state: Mutex<State>,
    /// Held by the one sender waiting for the next slot; tokio's mutex is fair (FIFO).
    turn: tokio::sync::Mutex<()>,
    /// Wait through [`super::pacer`] (sub-millisecond) rather than tokio's timer.
    precise: bool,
    /// Set once a 429 slowed or paused the lane: an unlimited lane is paced from then on.
    paced: std::sync::atomic::AtomicBool,
}

#[derive(Debug, Default)]
struct State {
    /// Theoretical arrival time of the next send.
    tat: Option<Instant>,
    /// Actual send times within the longest window, oldest first.
    sent: VecDeque<Instant>,
    /// Set once a 429 without `Retry-After` slowed the pace.
    adapt: Option<Adapt>,
    stats: PaceStats,
    /// When answers other than 429 came, within [`ACCEPT_WINDOW`], oldest first.
    accepted: VecDeque<Instant>,
    /// 429s that decreased the pace with no acceptance since.
    refusals_in_row: u32,
}

impl RateLimiter {
    /// `burst` is the number of sends allowed at once before the even schedule applies (≥ 1).
    pub(crate) fn new(rate: Rate, burst: u32) -> RateLimiter {
        let burst = burst.max(1);
        let interval = rate.interval();
        let tolerance = interval.map(|i| i * (burst - 1)).unwrap_or_default();
        // The one-second window is held one under `rate + burst`, as headroom for jitter between
        // the send decision and the wire; 100 ms windows at `rate/10 + burst`.
        let caps = WINDOWS.map(|w| match interval {
            Some(i) if !i.is_zero() => {
                let share = (w.as_nanos() / i.as_nanos()) as usize + burst as usize;
                if w == WINDOWS[0] {
                    share.saturating_sub(1).max(1)
                } else {
                    share
                }
            }
            _ => usize::MAX,
        });
        RateLimiter {
            late: interval.map_or(MAX_LATE, late_allowance),
            interval,
            tolerance,
            caps,
            state: Mutex::new(State::default()),
            turn: tokio::sync::Mutex::new(()),
            precise: false,
            paced: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Whether sends wait for a pace: a limited lane, or one a 429 slowed or paused.
    fn is_paced(&self) -> bool {
        self.interval.is_some() || self.paced.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Precise wake-ups ([`super::pacer`]) for intervals shorter than
    /// [`super::pacer::PRECISE_BELOW`]; only on the wall clock (tokio's paused clock in tests
    /// drives the ordinary timer).
    pub(crate) fn set_precise(&mut self, on: bool) {
        self.precise = on
            && self
                .interval
                .is_some_and(|i| i < super::pacer::PRECISE_BELOW);
    }

    async fn sleep_until(&self, at: Instant) {
        // A lane a 429 slowed below the precise range waits on tokio's timer again.
        let precise = self.precise
            && (!self.paced.load(std::sync::atomic::Ordering::Acquire)
                || self.current_rate().is_some_and(|r| {
                    Duration::from_secs_f64(1.0 / r.max(FLOOR)) < super::pacer::PRECISE_BELOW
                }));
        if precise {
            super::pacer::sleep_until(at).await;
        } else {
            tokio::time::sleep_until(at).await;
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The theoretical slot of the next send (`tat - tolerance`), if any send was made. A
    /// slowed lane has no burst.
    fn theoretical(&self) -> Option<Instant> {
        let state = self.state();
        let tat = state.tat?;
        let tolerance = if state.adapt.is_some() {
            Duration::ZERO
        } else {
            self.tolerance
        };
        Some(tat.checked_sub(tolerance).unwrap_or(tat))
    }

    /// The spacing between sends at `now`: the configured interval, or longer while slowed.
    fn interval_at(state: &State, base: Duration, now: Instant) -> Duration {
        match &state.adapt {
            None => base,
            Some(a) => Duration::from_secs_f64(1.0 / a.rate(now).max(FLOOR)).max(base),
        }
    }

    /// A 429 without `Retry-After` to a request sent at `sent_at`: slow the pace (once per
    /// congestion: requests sent before the last decrease do not decrease it again), whatever
    /// the configured rate.
    pub(crate) fn rate_limited(&self, sent_at: Instant) {
        let now = Instant::now();
        let mut state = self.state();
        let configured = self
            .interval
            .map_or(f64::INFINITY, |i| 1.0 / i.as_secs_f64());
        if state.adapt.is_some_and(|a| sent_at <= a.at) {
            return;
        }
        let current = state.adapt.map_or(configured, |a| a.rate(now));
        let measured = Self::accepted_rate(&mut state, now);
        let at_ceiling = state
            .adapt
            .is_some_and(|a| current >= a.ceiling(now) * (1.0 - 1e-9));
        let probing = current > FAR_ABOVE * measured;
        let (base, step) = if probing {
            (measured, SETTLE)
        } else if at_ceiling {
            (current, REFINE)
        } else {
            (current, SETTLE)
        };
        let ceiling = (base * step).max(FLOOR);
        let from = (ceiling * DECREASE).max(FLOOR);
        state.adapt = Some(Adapt {
            configured,
            reference: base.min(configured),
            from,
            at: now,
            ceiling,
            probing,
            accepted_since: None,
        });
        state.refusals_in_row = state.refusals_in_row.saturating_add(1);
        state.stats.slowdowns += 1;
        state.stats.slowest_rate = Some(state.stats.slowest_rate.map_or(from, |s| s.min(from)));
        // The next send waits a full interval at the new pace from now, doubled for each
        // 429 in a row before this one.
        let doubling = 1u32 << (state.refusals_in_row - 1).min(16);
        let wait = Duration::from_secs_f64(1.0 / from)
            .saturating_mul(doubling)
            .min(MAX_REFUSAL_WAIT.max(Duration::from_secs_f64(1.0 / from)));
        let next = now + wait;
        state.tat = Some(state.tat.map_or(next, |t| t.max(next)));
        drop(state);
        self.paced.store(true, std::sync::atomic::Ordering::Release);
    }

    /// Requests per second the provider accepted over the last [`ACCEPT_WINDOW`] (over at least
    /// [`MIN_ACCEPT_SPAN`], and counting at least one acceptance: a refusal before any answer
    /// is no proof that the provider takes nothing).
    fn accepted_rate(state: &mut State, now: Instant) -> f64 {
        while state
            .accepted
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) > ACCEPT_WINDOW)
        {
            state.accepted.pop_front();
        }
        // Measured from the oldest acceptance still in the window: a lane that has just
        // started (or was idle) is not credited with time it did not send in.
        let span = state
            .accepted
            .front()
            .map_or(Duration::ZERO, |t| now.saturating_duration_since(*t))
            .max(MIN_ACCEPT_SPAN);
        state.accepted.len().max(1) as f64 / span.as_secs_f64()
    }

    /// The provider accepted a request (any answer but 429) at `at`: counted for the measured
    /// rate, and the end of a run of refusals.
    pub(crate) fn accepted(&self, at: Instant) {
        let mut state = self.state();
        state.refusals_in_row = 0;
        if let Some(adapt) = state.adapt.as_mut() {
            if at > adapt.at {
                adapt.accepted_since.get_or_insert(at);
            }
        }
        if state.accepted.len() >= ACCEPTS_KEPT {
            state.accepted.pop_front();
        }
        state.accepted.push_back(at);
    }

    /// The pace now, requests per second (`None` when unlimited).
    pub(crate) fn current_rate(&self) -> Option<f64> {
        let state = self.state();
        if self.interval.is_none() && state.adapt.is_none() {
            return None;
        }
        let base = self.interval.unwrap_or_default();
        Some(1.0 / Self::interval_at(&state, base, Instant::now()).as_secs_f64())
    }

    pub(crate) fn stats(&self) -> PaceStats {
        let slowed = self.state().adapt.is_some();
        let settled_rate = if slowed { self.current_rate() } else { None };
        PaceStats {
            settled_rate,
            ..self.state().stats
        }
    }

    /// The send that took the last slot actually left at `at` (it waited for a concurrency
    /// slot after its pace slot): the schedule and the window guard count it then.
    pub(crate) fn sent_late(&self, at: Instant) {
        if !self.is_paced() {
            return;
        }
        let base = self.interval.unwrap_or_default();
        let mut state = self.state();
        if let Some(last) = state.sent.back_mut() {
            *last = (*last).max(at);
        }
        let next = at + Self::interval_at(&state, base, at);
        state.tat = Some(state.tat.map_or(next, |t| t.max(next)));
    }

    /// When the window guard lets the next send go, if it must wait.
    fn guard(&self, now: Instant) -> Option<Instant> {
        let mut state = self.state();
        let longest = WINDOWS[0];
        while state
            .sent
            .front()
            .is_some_and(|t| now.duration_since(*t) >= longest)
        {
            state.sent.pop_front();
        }
        let mut until: Option<Instant> = None;
        for (window, cap) in WINDOWS.iter().zip(self.caps) {
            let window = *window;
            let inside = state
                .sent
                .iter()
                .rev()
                .take_while(|t| now.duration_since(**t) < window)
                .count();
            if inside >= cap {
                // The send that must leave the window first.
                let oldest = state.sent[state.sent.len() - inside + (inside - cap)];
                let free = oldest + window;
                until = Some(until.map_or(free, |u| u.max(free)));
            }
        }
        until
    }

    /// Waits for the next slot and takes it.
    #[cfg(test)]
    pub(crate) async fn until_ready(&self) {
        self.next_slot(false).await
    }

    /// Waits for the next slot and takes it, for a lane's worker, which takes one slot after another
    /// from its queue (`backlog`): a slot found just past — by at most the late allowance,
    /// because the worker was busy starting the previous row — counts on schedule, as if it
    /// had slept until it. Without this the schedule would move by that work on every send
    /// and fall behind the rate.
    pub(crate) async fn next_slot(&self, backlog: bool) {
        if !self.is_paced() {
            return;
        }
        let interval = self.interval.unwrap_or_default();
        // Whether this send is part of a backlog (others were waiting, or it had to wait).
        let (_turn, mut pressed) = match self.turn.try_lock() {
            Ok(turn) => (turn, false),
            Err(_) => (self.turn.lock().await, true),
        };
        let mut slept_until = None;
        loop {
            let now = Instant::now();
            if let Some(slot) = self.theoretical().filter(|s| *s > now) {
                self.sleep_until(slot).await;
                slept_until = Some(slot);
                pressed = true;
                // Loop: a Retry-After pause may have moved the schedule while we slept.
                continue;
            }
            if let Some(free) = self.guard(now) {
                self.sleep_until(free).await;
                pressed = true;
                continue;
            }
            break;
        }
        let sent = Instant::now();
        let mut state = self.state();
        let theoretical = state
            .tat
            .map(|t| t.checked_sub(self.tolerance).unwrap_or(t));
        let strict = state.adapt.is_some();
        let counted = match (slept_until, theoretical) {
            // A slowed lane counts from the actual send: a strict provider counts the gaps.
            _ if strict => sent,
            // Slept until the slot and woke within the allowance: on schedule.
            (Some(at), _) if sent <= at + self.late => at,
            // A worker's next row, its slot just past: on schedule too.
            (None, Some(slot)) if backlog && sent <= slot + self.late => slot,
            // A fine rate under a backlog, the slot already past: catch up on what the timer
            // tick cost, giving up only lateness beyond the allowance.
            (_, Some(slot)) if pressed && interval < FINE => {
                slot.max(sent.checked_sub(self.late).unwrap_or(sent))
            }
            // Idle, stalled, or a coarse rate: the schedule moves to now.
            _ => sent,
        };
        let spacing = Self::interval_at(&state, interval, sent);
        state.tat = Some(state.tat.unwrap_or(counted).max(counted) + spacing);
        if self.interval.is_some() {
            state.sent.push_back(sent);
        }
    }

    /// Holds every sender of this target until `until` (a provider's `Retry-After`); sending
    /// then resumes on the even schedule, without a burst.
    pub(crate) fn pause_until(&self, until: Instant) {
        let mut state = self.state();
        state.stats.pauses += 1;
        let resume = until + self.tolerance;
        state.tat = Some(state.tat.map_or(resume, |t| t.max(resume)));
        drop(state);
        self.paced.store(true, std::sync::atomic::Ordering::Release);
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

    /// Largest number of `times` inside any window of `window` length (the sandbox's count).
    fn max_in_window(times: &[Instant], window: Duration) -> usize {
        crate::sandbox::max_in_window(times.to_vec(), window)
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
    async fn late_senders_keep_the_average_rate_and_the_windows() {
        // 2000/s with eight senders queued on the limiter, while the clock jumps 1 ms every
        // 10 ms (timers firing late on millisecond ticks, a busy core): the schedule must not
        // drift, and no window may hold more than its share + burst.
        let limiter = std::sync::Arc::new(RateLimiter::new(per_sec(2000), 1));
        let start = Instant::now();
        let mut senders = Vec::new();
        for _ in 0..8 {
            let l = std::sync::Arc::clone(&limiter);
            senders.push(tokio::spawn(async move {
                let mut times = Vec::new();
                for _ in 0..500 {
                    l.until_ready().await;
                    times.push(Instant::now());
                }
                times
            }));
        }
        let jitter = tokio::spawn(async {
            loop {
                tokio::time::sleep(Duration::from_millis(10)).await;
                tokio::time::advance(Duration::from_millis(1)).await;
            }
        });
        let mut times = Vec::new();
        for s in senders {
            times.extend(s.await.expect("sender"));
        }
        jitter.abort();
        times.sort();
        let last = times[3999] - start;
        // 4000 sends at 2000/s: the last at 1999.5 ms; within 1%.
        assert!(
            last <= Duration::from_micros(1_999_500) * 101 / 100,
            "drifted: last send at {last:?}"
        );
        assert!(max_in_window(&times, ms(1000)) <= 2001);
        assert!(
            max_in_window(&times, ms(100)) <= 201,
            "{}",
            max_in_window(&times, ms(100))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn unlimited_never_waits() {
        let limiter = RateLimiter::new(Rate::Unlimited, 1);
        let times = send_times(&limiter, 1000).await;
        assert!(times.iter().all(|t| t.is_zero()));
    }
}

#[cfg(test)]
mod adaptive_tests {
    use super::*;

    /// A lane's worker does some work after each slot (starting the row's attempt) before it
    /// asks for the next; at 200/s a 1–2 ms detour must not make the schedule drift.
    #[tokio::test(start_paused = true)]
    async fn a_busy_worker_keeps_the_schedule() {
        let limiter = RateLimiter::new(per_sec(200), 1);
        let start = Instant::now();
        let mut times = Vec::new();
        for i in 0..1000u64 {
            limiter.next_slot(true).await;
            times.push(Instant::now());
            // Work after the send: sometimes longer than the gap to the next slot.
            tokio::time::advance(Duration::from_micros(if i % 3 == 0 {
                6_500
            } else {
                1_000
            }))
            .await;
        }
        let last = times[999] - start;
        assert!(
            last <= Duration::from_millis(4995) * 101 / 100,
            "drifted: last send at {last:?}"
        );
        let max_1s = crate::sandbox::max_in_window(times.clone(), Duration::from_secs(1));
        assert!(max_1s <= 200, "{max_1s} in one second");
    }

    fn per_sec(n: u32) -> Rate {
        Rate::Limited {
            count: n,
            per: Duration::from_secs(1),
        }
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-6
    }

    /// A second of sends at the configured pace, every one accepted.
    async fn accepted_for_a_second(limiter: &RateLimiter, rate: u32) {
        for _ in 0..rate {
            limiter.until_ready().await;
            limiter.accepted(Instant::now());
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_429_slows_the_pace_which_climbs_back_to_just_under_where_it_came() {
        let limiter = RateLimiter::new(per_sec(10), 1);
        accepted_for_a_second(&limiter, 10).await;
        let sent = Instant::now();
        limiter.rate_limited(sent);
        // Ceiling 0.95 × 10, pace 0.8 × that.
        assert!(close(limiter.current_rate().expect("rate"), 7.6));
        // A second 429 for a request sent before the decrease is the same congestion.
        limiter.rate_limited(sent);
        assert_eq!(limiter.stats().slowdowns, 1);
        // Climbing by 1/s per second (10% of the configured rate): 1.9 s to the ceiling.
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(close(limiter.current_rate().expect("rate"), 8.6));
        tokio::time::advance(Duration::from_secs(2)).await;
        let at_ceiling = limiter.current_rate().expect("rate");
        assert!((9.5..9.6).contains(&at_ceiling), "{at_ceiling}");
        // The ceiling itself recovers slowly (1% per 10 s) up to the configured rate.
        tokio::time::advance(Duration::from_secs(600)).await;
        assert!(close(limiter.current_rate().expect("rate"), 10.0));
        let stats = limiter.stats();
        assert_eq!(stats.slowdowns, 1);
        assert!(close(stats.slowest_rate.expect("slowest"), 7.6));
    }

    #[tokio::test(start_paused = true)]
    async fn a_429_at_the_ceiling_refines_it_in_a_small_step() {
        let limiter = RateLimiter::new(per_sec(10), 1);
        accepted_for_a_second(&limiter, 10).await;
        limiter.rate_limited(Instant::now());
        // Still climbing (8.6/s, under the 9.5 ceiling): a new congestion lowers the ceiling
        // to 0.95 × the pace it came at.
        tokio::time::advance(Duration::from_secs(1)).await;
        limiter.rate_limited(Instant::now());
        tokio::time::advance(Duration::from_secs(10)).await;
        let ceiling = limiter.current_rate().expect("rate");
        assert!((8.17..8.3).contains(&ceiling), "{ceiling}");
        // At the ceiling, the provider accepting what the lane sends: a 429 lowers it by 2%
        // only.
        accepted_for_a_second(&limiter, 8).await;
        limiter.rate_limited(Instant::now());
        tokio::time::advance(Duration::from_secs(10)).await;
        let refined = limiter.current_rate().expect("rate");
        let expected = ceiling * REFINE;
        assert!(
            (expected..expected + 0.11).contains(&refined),
            "{refined} after {ceiling}"
        );
        assert_eq!(limiter.stats().slowdowns, 3);
    }

    #[tokio::test(start_paused = true)]
    async fn sends_follow_the_slowed_pace_from_actual_send_times() {
        let limiter = RateLimiter::new(per_sec(10), 3);
        limiter.until_ready().await;
        limiter.rate_limited(Instant::now());
        let start = Instant::now();
        let mut times = Vec::new();
        for _ in 0..5 {
            limiter.until_ready().await;
            times.push(Instant::now() - start);
        }
        // No burst once slowed, and every gap at least the slowed interval (1/7.6 s, growing
        // less as the pace climbs).
        for pair in times.windows(2) {
            assert!(pair[1] - pair[0] >= Duration::from_millis(100), "{times:?}");
        }
        assert!(times[0] >= Duration::from_millis(130), "{times:?}");
    }

    /// A strict provider (token bucket of one at 7/s) sees arrivals with 0–3 ms of jitter; the
    /// plan asks for exactly 7/s. The pace must settle just under the limit: few 429s, most
    /// of the rate achieved.
    #[tokio::test(start_paused = true)]
    async fn at_a_strict_providers_limit_the_pace_settles_just_under_it() {
        let limiter = RateLimiter::new(per_sec(7), 1);
        let interval = Duration::from_secs(1) / 7;
        let start = Instant::now();
        let mut last_ok: Option<Instant> = None;
        let (mut ok, mut limited) = (0u32, 0u32);
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        while ok < 1000 {
            limiter.until_ready().await;
            let sent = Instant::now();
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let arrival = sent + Duration::from_micros(seed % 3000);
            if last_ok.is_some_and(|t| arrival < t + interval) {
                limited += 1;
                limiter.rate_limited(sent);
            } else {
                ok += 1;
                last_ok = Some(arrival);
                limiter.accepted(sent);
            }
        }
        let achieved = f64::from(ok) / (Instant::now() - start).as_secs_f64();
        let share = f64::from(limited) / f64::from(ok + limited);
        assert!(achieved >= 0.9 * 7.0, "achieved {achieved:.3}/s");
        assert!(share <= 0.05, "{limited} of {} answered 429", ok + limited);
    }
}
