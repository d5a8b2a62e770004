//! Lanes: one per pace group. A lane owns its group's [`RateLimiter`] and a queue of rows
//! ready to send; one long-lived worker per lane takes the row at the front, waits for the
//! lane's pace, then for one of the run's concurrency slots, and starts the attempt
//! ([`super::task`]). A row waiting for its lane's pace holds no concurrency slot, so every
//! lane runs at its own limit at the same time; `--concurrency` bounds requests in flight.
//!
//! A row that is retried goes back to the front of its lane's queue: it keeps its place.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;

use super::rate::{PaceStats, RateLimiter};
use super::task::{self, Job};
use super::{MessageId, RunContext, SendLog, Transport};
use crate::plan::Rate;

/// One pace group while a run goes on.
pub struct Lane {
    pub name: String,
    /// Indexes of the targets that share this pace.
    pub members: Vec<usize>,
    /// The configured rate (the lowest of the members', or `--rate`).
    pub rate: Rate,
    pub limiter: RateLimiter,
    queue: Mutex<VecDeque<Job>>,
    ready: Notify,
    closed: AtomicBool,
    /// 429 answers (with or without `Retry-After`).
    pub rate_limited: AtomicU64,
    pub(super) sends: SendLog,
}

impl Lane {
    pub fn new(name: String, members: Vec<usize>, rate: Rate, burst: u32) -> Lane {
        Lane {
            name,
            members,
            rate,
            limiter: RateLimiter::new(rate, burst),
            queue: Mutex::new(VecDeque::new()),
            ready: Notify::new(),
            closed: AtomicBool::new(false),
            rate_limited: AtomicU64::new(0),
            sends: SendLog::default(),
        }
    }

    fn queue(&self) -> std::sync::MutexGuard<'_, VecDeque<Job>> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn push_back(&self, job: Job) {
        self.queue().push_back(job);
        self.ready.notify_one();
    }

    /// A row that was already on its way (retried, or put back while waiting): first again.
    pub(super) fn push_front(&self, job: Job) {
        self.queue().push_front(job);
        self.ready.notify_one();
    }

    /// No row will be added any more; the worker ends once the queue is empty.
    pub(super) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.ready.notify_one();
    }

    async fn next(&self) -> Option<Job> {
        loop {
            if let Some(job) = self.queue().pop_front() {
                return Some(job);
            }
            if self.closed.load(Ordering::Acquire) {
                return None;
            }
            // `notify_one` stores a permit when nobody waits, so a push between the check
            // above and this wait is not missed.
            self.ready.notified().await;
        }
    }

    /// Requests this lane put on the wire.
    pub fn requests(&self) -> u64 {
        self.sends.count()
    }

    pub fn achieved_rate(&self) -> Option<f64> {
        self.sends.achieved_rate()
    }

    pub fn max_sent_in_1s(&self) -> usize {
        self.sends.max_in_1s()
    }

    pub fn pace_stats(&self) -> PaceStats {
        self.limiter.stats()
    }
}

/// The lane's worker: until the lane is closed and empty, take the front row, wait for the
/// pace, then for a concurrency slot, and start its attempt.
pub(super) async fn run_lane<T: Transport>(
    ctx: Arc<RunContext<T>>,
    lane: usize,
    done: mpsc::UnboundedSender<MessageId>,
) {
    let l = &ctx.lanes[lane];
    while let Some(job) = l.next().await {
        if ctx.cancel.is_soft() {
            task::finish_unsent(&ctx, job, &done).await;
            continue;
        }
        if ctx.targets[job.row.target].stopped().is_some() {
            task::finish_unsent(&ctx, job, &done).await;
            continue;
        }
        tokio::select! {
            _ = l.limiter.next_slot(true) => {}
            _ = ctx.cancel.soft() => {
                l.push_front(job);
                continue;
            }
        }
        let permit = match Arc::clone(&ctx.slots).try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                let permit = tokio::select! {
                    p = Arc::clone(&ctx.slots).acquire_owned() => p,
                    _ = ctx.cancel.soft() => {
                        l.push_front(job);
                        continue;
                    }
                };
                let Ok(permit) = permit else {
                    // The semaphore is never closed; treat it as a cancel.
                    l.push_front(job);
                    continue;
                };
                // The slot was taken at the pace; the request leaves now.
                l.limiter.sent_late(Instant::now());
                permit
            }
        };
        // The target may have been stopped while this row waited for its pace or its slot.
        if ctx.targets[job.row.target].stopped().is_some() {
            drop(permit);
            task::finish_unsent(&ctx, job, &done).await;
            continue;
        }
        let ctx = Arc::clone(&ctx);
        let done = done.clone();
        tokio::spawn(async move {
            let finished = task::attempt(&ctx, lane, job, permit).await;
            // Drop our handle before saying the row is done, so that once the dispatcher has
            // heard from every row and the workers have ended, it holds the only one.
            drop(ctx);
            if let Some(id) = finished {
                let _ = done.send(id);
            }
        });
    }
}
