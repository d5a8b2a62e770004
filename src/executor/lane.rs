//! Lanes: one per pace group. A lane owns its group's [`RateLimiter`] and a queue of rows
//! ready to send, taken by the lane's senders (`sender`). A row that is retried goes
//! back to the front of its lane's queue: it keeps its place.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use crate::outputs::report::Status;
use crate::plan::Rate;

use super::job::Job;
use super::message::MessageId;
use super::rate::{PaceStats, RateLimiter};
use super::target::SendLog;

/// One pace group while a run goes on.
pub(crate) struct Lane {
    pub name: String,
    /// Indexes of the targets that share this pace.
    pub members: Vec<usize>,
    /// The configured rate (the lowest of the members', or `--rate`).
    pub rate: Rate,
    pub limiter: RateLimiter,
    /// Shared with the tasks that wait out a retry's backoff (they hold no run context).
    pub(super) queue: Arc<LaneQueue>,
    /// 429 answers (with or without `Retry-After`).
    pub rate_limited: AtomicU64,
    /// The only member's own log when there is one member (the two would be the same).
    pub(super) sends: Arc<SendLog>,
    /// Rows of the plan that will come to this lane, when known (`u64::MAX`: not known).
    pub(super) planned_rows: u64,
    /// Rows it finished (sent, or skipped or cancelled unsent), and of those, failed: for the
    /// live ETA and the summary.
    finished: AtomicU64,
    failed: AtomicU64,
    /// Its sends, 429s, retries and latency over time, for the summary and the HTML page.
    pub series: crate::outputs::series::LaneSeries,
}

impl Lane {
    pub(crate) fn new(name: String, members: Vec<usize>, rate: Rate, burst: u32) -> Lane {
        Lane {
            name,
            members,
            rate,
            limiter: RateLimiter::new(rate, burst),
            queue: Arc::new(LaneQueue::default()),
            rate_limited: AtomicU64::new(0),
            sends: Arc::default(),
            planned_rows: u64::MAX,
            finished: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            series: crate::outputs::series::LaneSeries::new(tokio::time::Instant::now()),
        }
    }

    /// One of its rows finished, with `status`.
    pub(super) fn count_finished(&self, status: Status) {
        self.finished.fetch_add(1, Ordering::Relaxed);
        if status == Status::Failed {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Rows it finished so far.
    pub(crate) fn finished(&self) -> u64 {
        self.finished.load(Ordering::Relaxed)
    }

    /// Rows of it that failed.
    pub(crate) fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }

    /// How many of the plan's rows will come to this lane: once they have all been read, a
    /// full lane need not keep the dispatcher reading for it (see the dispatcher's `LANE_AHEAD`).
    pub(crate) fn with_planned_rows(mut self, rows: u64) -> Lane {
        self.planned_rows = rows;
        self
    }

    pub(super) fn push_back(&self, job: Job) {
        self.queue.push_back(job);
    }

    /// Rows in the queue, waiting for a sender.
    pub(super) fn waiting(&self) -> usize {
        self.queue.len.load(Ordering::Relaxed)
    }

    /// A row that was already on its way (put back while waiting): first again.
    pub(super) fn push_front(&self, job: Job) {
        self.queue.push_front(job);
    }

    /// No row will be added any more; the senders end once the queue is empty.
    pub(super) fn close(&self) {
        self.queue.close();
    }

    /// Requests this lane put on the wire.
    pub(crate) fn requests(&self) -> u64 {
        self.sends.count()
    }

    pub(crate) fn achieved_rate(&self) -> Option<f64> {
        self.sends.achieved_rate()
    }

    pub(crate) fn max_sent_in_1s(&self) -> usize {
        self.sends.max_in_1s()
    }

    /// Senders the lane has started so far.
    #[cfg(test)]
    pub(crate) fn senders(&self) -> usize {
        self.queue.senders.load(Ordering::Relaxed)
    }

    pub(crate) fn pace_stats(&self) -> PaceStats {
        self.limiter.stats()
    }
}

/// Finished rows' message ids on their way back to the dispatcher (which frees the message
/// for the rows queued behind it and tops the lanes up). The dispatcher is woken for a batch
/// of them, or when a lane has run out of rows, not once per row: with a lane holding
/// thousands of rows, a wake-up per finished row would wake it for nothing.
#[derive(Default)]
pub(super) struct Done {
    ids: Mutex<Vec<MessageId>>,
    wake: Notify,
}

/// Finished rows that wake the dispatcher.
pub(super) const DONE_BATCH: usize = 64;

impl Done {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<MessageId>> {
        self.ids.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Row `id` finished; `urgent` wakes the dispatcher whatever the batch holds (its lane
    /// is empty, or the row was not sent).
    pub(super) fn push(&self, id: MessageId, urgent: bool) {
        let held = {
            let mut ids = self.lock();
            ids.push(id);
            ids.len()
        };
        if urgent || held >= DONE_BATCH {
            self.wake.notify_one();
        }
    }

    /// Waits until woken (at once if a wake-up is pending); [`Done::take`] has the ids.
    pub(super) async fn woken(&self) {
        self.wake.notified().await;
    }

    /// Moves every id handed back so far to `into`.
    pub(super) fn take(&self, into: &mut Vec<MessageId>) {
        into.append(&mut self.lock());
    }
}

/// A lane's rows ready to send, and the senders waiting for one.
#[derive(Default)]
pub(super) struct LaneQueue {
    queue: Mutex<VecDeque<Job>>,
    /// The queue's length, kept for the dispatcher (read without the lock).
    len: AtomicUsize,
    ready: Notify,
    closed: AtomicBool,
    /// Senders started for the lane, those waiting for a row, and those holding a row
    /// waiting for the lane's pace.
    pub(super) senders: AtomicUsize,
    idle: AtomicUsize,
    pub(super) pacing: AtomicUsize,
}

impl LaneQueue {
    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Job>> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn push_back(&self, job: Job) {
        let mut queue = self.lock();
        queue.push_back(job);
        self.len.store(queue.len(), Ordering::Relaxed);
        drop(queue);
        self.ready.notify_one();
    }

    pub(super) fn push_front(&self, job: Job) {
        let mut queue = self.lock();
        queue.push_front(job);
        self.len.store(queue.len(), Ordering::Relaxed);
        drop(queue);
        self.ready.notify_one();
    }

    fn pop_front(&self) -> Option<Job> {
        let mut queue = self.lock();
        let job = queue.pop_front();
        self.len.store(queue.len(), Ordering::Relaxed);
        job
    }

    pub(super) fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.ready.notify_waiters();
    }

    pub(super) async fn next(&self) -> Option<Job> {
        // A row is usually there: take it without registering as a waiter (which locks the
        // Notify's list twice).
        if let Some(job) = self.pop_front() {
            return Some(job);
        }
        self.idle.fetch_add(1, Ordering::AcqRel);
        let job = loop {
            // Registered before the checks, so neither a push (`notify_one`) nor the close
            // (`notify_waiters`) between the checks and the wait is missed.
            let notified = self.ready.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(job) = self.pop_front() {
                break Some(job);
            }
            if self.closed.load(Ordering::Acquire) {
                break None;
            }
            notified.await;
        };
        self.idle.fetch_sub(1, Ordering::AcqRel);
        job
    }

    /// Counts a new sender in when rows wait with no sender free to take them or already
    /// waiting for the pace, and fewer than `max` run: true when the caller is to start it.
    /// A lane slower than its answers keeps two senders (one on the wire, one at the pace);
    /// one whose pace lets rows straight through grows to what its answers' latency needs.
    pub(super) fn wants_sender(&self, max: usize) -> bool {
        if self.len.load(Ordering::Relaxed) == 0
            || self.idle.load(Ordering::Acquire) > 0
            || self.pacing.load(Ordering::Acquire) > 0
        {
            return false;
        }
        self.senders
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .is_ok()
    }
}
