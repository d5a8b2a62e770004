//! Lanes: one per pace group. A lane owns its group's [`RateLimiter`] and a queue of rows
//! ready to send. A lane has long-lived senders: a sender takes the row at the front, waits
//! for the lane's pace (one sender at a time, in turn), then for one of the run's concurrency
//! slots, and runs the attempt itself ([`super::task`]) — no task is spawned per row or per
//! attempt. A lane starts with one sender and adds one, up to `concurrency`, when a sender
//! leaves the pace with rows still waiting and no sender free to take them: a lane at 7/s
//! with quick answers keeps one sender, an unlimited one grows to what its answers' latency
//! needs, and a thousand lanes cost a thousand small tasks, not a thousand times
//! `concurrency`. A row waiting for its lane's pace holds no concurrency slot, so every lane
//! runs at its own limit at the same time; `--concurrency` bounds requests in flight across
//! the run, and the slots go to waiting senders first come, first served (the semaphore is
//! fair), so no ready lane starves.
//!
//! A row that is retried goes back to the front of its lane's queue: it keeps its place. Its
//! backoff is waited out by a small task of its own, so a sender never sleeps through one.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;
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
    pub fn new(name: String, members: Vec<usize>, rate: Rate, burst: u32) -> Lane {
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
            series: crate::outputs::series::LaneSeries::new(Instant::now()),
        }
    }

    /// One of its rows finished, with `status`.
    pub(super) fn count_finished(&self, status: crate::report::Status) {
        self.finished.fetch_add(1, Ordering::Relaxed);
        if status == crate::report::Status::Failed {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Rows it finished so far.
    pub fn finished(&self) -> u64 {
        self.finished.load(Ordering::Relaxed)
    }

    /// Rows of it that failed.
    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }

    /// How many of the plan's rows will come to this lane: once they have all been read, a
    /// full lane need not keep the dispatcher reading for it (see [`super::LANE_AHEAD`]).
    pub fn with_planned_rows(mut self, rows: u64) -> Lane {
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
    pub fn requests(&self) -> u64 {
        self.sends.count()
    }

    pub fn achieved_rate(&self) -> Option<f64> {
        self.sends.achieved_rate()
    }

    pub fn max_sent_in_1s(&self) -> usize {
        self.sends.max_in_1s()
    }

    /// Senders the lane has started so far.
    pub fn senders(&self) -> usize {
        self.queue.senders.load(Ordering::Relaxed)
    }

    pub fn pace_stats(&self) -> PaceStats {
        self.limiter.stats()
    }
}

/// Finished rows' message ids on their way back to the dispatcher (which frees the message
/// for the rows queued behind it and tops the lanes up). The dispatcher is woken for a batch
/// of them, or when a lane has run out of rows, not once per row: with a lane holding
/// thousands of rows, a wake-up per finished row was work for nothing.
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
    senders: AtomicUsize,
    idle: AtomicUsize,
    pacing: AtomicUsize,
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

    fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.ready.notify_waiters();
    }

    async fn next(&self) -> Option<Job> {
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
    fn wants_sender(&self, max: usize) -> bool {
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

/// Starts a sender for `lane`, its handle kept for the end of the run.
pub(super) fn start_sender<T: Transport>(ctx: &Arc<RunContext<T>>, lane: usize, done: &Arc<Done>) {
    ctx.lanes[lane].queue.senders.fetch_add(1, Ordering::AcqRel);
    spawn_sender(ctx, lane, done);
}

fn spawn_sender<T: Transport>(ctx: &Arc<RunContext<T>>, lane: usize, done: &Arc<Done>) {
    // Boxed: a sender starts another, and a future cannot hold its own type.
    let work: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> =
        Box::pin(sender(Arc::clone(ctx), lane, Arc::clone(done)));
    let handle = tokio::spawn(work);
    ctx.workers
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(handle);
}

/// One of a lane's senders: until the lane is closed and empty, take the front row, wait for
/// the pace, then for a concurrency slot, and run its attempt.
pub(super) async fn sender<T: Transport>(ctx: Arc<RunContext<T>>, lane: usize, done: Arc<Done>) {
    let l = &ctx.lanes[lane];
    // This sender's own connections, kept between its requests.
    let mut session = ctx.transport.session();
    // Its watch for a hard cancel, kept for all its attempts.
    let hard = ctx.cancel.hard_watch();
    tokio::pin!(hard);
    // Raised at the first report write error: nothing more is sent from then on.
    let write_failed = ctx.out.write_failure();
    while let Some(mut job) = l.queue.next().await {
        if ctx.cancel.is_soft() || write_failed.has_failed() {
            task::finish_unsent(&ctx, job, &done).await;
            continue;
        }
        if ctx.targets[job.row.target].stopped().is_some() {
            task::finish_unsent(&ctx, job, &done).await;
            continue;
        }
        l.queue.pacing.fetch_add(1, Ordering::AcqRel);
        let paced = tokio::select! {
            // The pace first: when it has a slot at once (an unlimited lane), the cancel
            // watch is not even registered with.
            biased;
            _ = l.limiter.next_slot(true) => true,
            _ = ctx.cancel.soft() => false,
        };
        l.queue.pacing.fetch_sub(1, Ordering::AcqRel);
        if !paced {
            l.push_front(job);
            continue;
        }
        // The next row's turn at the pace comes while this one is on the wire.
        if l.queue.wants_sender(ctx.config.concurrency.max(1)) {
            spawn_sender(&ctx, lane, &done);
        }
        // Then its host's ceiling, shared with every lane to that host (`super::host`).
        if ctx.hosts.limits(job.row.target) {
            tokio::select! {
                biased;
                late = ctx.hosts.wait(job.row.target) => if late { l.limiter.sent_late(Instant::now()) },
                _ = ctx.cancel.soft() => {
                    l.push_front(job);
                    continue;
                }
            }
        }
        // A row sent and not yet in the report holds one of `unrecorded`'s permits until the
        // writer has it: no more rows are sent than the report is behind by `concurrency`.
        // It is apart from the request's slot, which is freed as soon as the answer is read:
        // a slot held through the writer's round frees in bursts, and a burst of requests
        // finds the pool's connections still on their way back and opens new ones.
        let record = match Arc::clone(&ctx.unrecorded).try_acquire_owned() {
            Ok(record) => record,
            Err(_) => {
                let record = tokio::select! {
                    p = Arc::clone(&ctx.unrecorded).acquire_owned() => p,
                    _ = ctx.cancel.soft() => {
                        l.push_front(job);
                        continue;
                    }
                };
                let Ok(record) = record else {
                    l.push_front(job);
                    continue;
                };
                record
            }
        };
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
        // The target may have been stopped while this row waited for its pace or its slot,
        // or the report may have failed: the slot it waited for was freed by the writer's
        // failing round.
        if ctx.targets[job.row.target].stopped().is_some() || write_failed.has_failed() {
            drop(permit);
            drop(record);
            task::finish_unsent(&ctx, job, &done).await;
            continue;
        }
        match task::attempt(
            &ctx,
            &mut session,
            lane,
            &mut job,
            (permit, record),
            hard.as_mut(),
        )
        .await
        {
            task::Attempted::Finished(id) => {
                // With no row left in the lane, the dispatcher may be holding the next ones
                // (behind a busy message, or not read yet): tell it now.
                done.push(id, l.queue.is_empty());
            }
            task::Attempted::Again(wait) => {
                if wait.is_zero() {
                    l.push_front(job);
                } else {
                    // Waited out apart, holding only the lane's queue: the sender goes on.
                    let queue = Arc::clone(&l.queue);
                    let cancel = ctx.cancel.clone();
                    tokio::spawn(async move {
                        tokio::select! {
                            _ = tokio::time::sleep(wait) => {}
                            _ = cancel.soft() => {}
                        }
                        queue.push_front(job);
                    });
                }
            }
        }
    }
}
