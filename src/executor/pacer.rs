//! A sub-millisecond wake-up source for fast lanes. tokio's timers fire on millisecond ticks
//! and wake 0.5–2 ms late, which at thousands of requests a second spans several intervals:
//! sends then leave in clumps and the schedule has to catch up. Above
//! [`PRECISE_BELOW`] intervals a lane's limiter waits through this instead: one thread for the
//! process keeps the pending wake-ups in deadline order, sleeps on a channel with the timeout
//! to the earliest one (timer slack set to 1 µs, so the kernel does not round it up by the
//! default 50 µs), spins through the last [`SPIN`], and wakes the waiting task.
//!
//! Only the run command turns this on ([`super::ExecConfig::precise_pacing`]): tests drive the
//! limiter under tokio's paused clock, which this thread cannot see.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

/// Intervals shorter than this (rates above 200/s) are paced with precise wake-ups.
pub(super) const PRECISE_BELOW: Duration = Duration::from_micros(5001);

/// The last stretch before a deadline that the thread spins through rather than sleeps.
const SPIN: Duration = Duration::from_micros(30);

type Wake = (Instant, oneshot::Sender<()>);

/// The pacer thread's inbox; `None` when the thread could not be started.
fn inbox() -> Option<&'static mpsc::Sender<Wake>> {
    static INBOX: OnceLock<Option<mpsc::Sender<Wake>>> = OnceLock::new();
    INBOX
        .get_or_init(|| {
            let (tx, rx) = mpsc::channel();
            std::thread::Builder::new()
                .name("reactbatch-pacer".into())
                .spawn(move || run(rx))
                .ok()
                .map(|_| tx)
        })
        .as_ref()
}

/// Waits until `at` (the wall clock's monotonic time), to within tens of microseconds when
/// the machine is not overloaded. Falls back to tokio's timer if the pacer thread is missing.
pub(super) async fn sleep_until(at: tokio::time::Instant) {
    let deadline = at.into_std();
    if deadline <= Instant::now() {
        return;
    }
    let (tx, rx) = oneshot::channel();
    let sent = inbox().is_some_and(|inbox| inbox.send((deadline, tx)).is_ok());
    if !sent || rx.await.is_err() {
        tokio::time::sleep_until(at).await;
    }
}

/// A pending wake-up, ordered by deadline, then by arrival (a tie wakes the earlier first).
struct Pending {
    at: Instant,
    seq: u64,
    tx: oneshot::Sender<()>,
}

impl PartialEq for Pending {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}

impl Eq for Pending {}

impl PartialOrd for Pending {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Pending {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

fn run(rx: mpsc::Receiver<Wake>) {
    #[cfg(target_os = "linux")]
    // SAFETY: prctl(PR_SET_TIMERSLACK) only changes this thread's timer slack (in ns).
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1000 as libc::c_ulong);
    }
    let mut pending: BinaryHeap<Reverse<Pending>> = BinaryHeap::new();
    let mut seq = 0u64;
    loop {
        let got = match pending.peek() {
            None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
            Some(Reverse(first)) => {
                let now = Instant::now();
                if first.at > now + SPIN {
                    rx.recv_timeout(first.at - now - SPIN)
                } else {
                    while Instant::now() < first.at {
                        std::hint::spin_loop();
                    }
                    Err(RecvTimeoutError::Timeout)
                }
            }
        };
        match got {
            Ok((at, tx)) => {
                pending.push(Reverse(Pending { at, seq, tx }));
                seq += 1;
            }
            Err(RecvTimeoutError::Timeout) => {}
            // Every sender is gone: the process is ending.
            Err(RecvTimeoutError::Disconnected) => return,
        }
        let now = Instant::now();
        while pending.peek().is_some_and(|Reverse(p)| p.at <= now) {
            if let Some(Reverse(p)) = pending.pop() {
                // The waiter may have given up (a cancel); nothing to do then.
                let _ = p.tx.send(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Many waiters at once, deadlines out of order: none wakes before its deadline, and
    /// they wake in deadline order. One runtime thread: it runs the woken waiters in the
    /// order the pacer woke them, however late a loaded machine lets it run, so the times
    /// they record follow the pacer's order (two runtime threads could each run one late).
    /// The first deadline is far enough ahead that every waiter has registered by then.
    #[tokio::test(flavor = "current_thread")]
    async fn wakes_every_waiter_in_deadline_order_never_early() {
        let start = tokio::time::Instant::now() + Duration::from_millis(50);
        let woke = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for i in 0..40u64 {
            // 0, 7, 14, … (mod 40) × 250 µs: every deadline distinct, spawned out of order.
            let k = (i * 7) % 40;
            let at = start + Duration::from_micros(250 * k);
            let woke = std::sync::Arc::clone(&woke);
            tasks.push(tokio::spawn(async move {
                sleep_until(at).await;
                let now = tokio::time::Instant::now();
                assert!(now >= at, "woke {:?} early", at - now);
                woke.lock().expect("lock").push((now, k));
            }));
        }
        for t in tasks {
            t.await.expect("waiter");
        }
        let mut woke = woke.lock().expect("lock").clone();
        woke.sort();
        let order: Vec<u64> = woke.iter().map(|(_, k)| *k).collect();
        let mut expected = order.clone();
        expected.sort();
        // Wake times (sorted) follow the deadlines: a waiter is never woken before an earlier
        // deadline's waiter is. (Two wakes in the same microsecond may record either way.)
        let inversions = order.windows(2).filter(|w| w[0] > w[1]).count();
        assert!(inversions <= 2, "{order:?}");
        assert_eq!(expected, (0..40).collect::<Vec<_>>());
    }
}
