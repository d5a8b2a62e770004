//! A lane's senders. A sender takes the row at the front of its lane, waits for the lane's
//! pace (one sender at a time, in turn), then for one of the run's concurrency slots, and runs
//! the attempt itself ([`super::task`]) — no task is spawned per row or per attempt. A lane
//! starts with one sender and adds one, up to `concurrency`, when a sender leaves the pace
//! with rows still waiting and no sender free to take them: a lane at 7/s with quick answers
//! keeps one sender, an unlimited one grows to what its answers' latency needs, and a thousand
//! lanes cost a thousand small tasks, not a thousand times `concurrency`. A row waiting for its
//! lane's pace holds no concurrency slot, so every lane runs at its own limit at the same
//! time; `--concurrency` bounds requests in flight across the run, and the slots go to waiting
//! senders first come, first served (the semaphore is fair), so no ready lane starves.
//!
//! A retried row's backoff is waited out by a small task of its own, so a sender never sleeps
//! through one.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::context::RunContext;
use super::job::Job;
use super::lane::{Done, Lane};
use super::task;
use super::transport::Transport;

/// Runs of at most this many lanes keep each attempt in its sender's future ([`Inline`]); more,
/// and it is boxed when it starts ([`Boxed`]).
const INLINE_LANES: usize = 16;

/// Starts a sender for `lane`, its handle kept for the end of the run.
pub(super) fn start_sender<T: Transport>(ctx: &Arc<RunContext<T>>, lane: usize, done: &Arc<Done>) {
    ctx.lanes[lane].queue.senders.fetch_add(1, Ordering::AcqRel);
    if ctx.lanes.len() <= INLINE_LANES {
        spawn_sender::<T, Inline>(ctx, lane, done);
    } else {
        spawn_sender::<T, Boxed>(ctx, lane, done);
    }
}

/// Where a sender keeps the future of the attempt it runs: the request on its way (a
/// connection being opened, the exchange, the answer read), several KiB.
pub(super) trait Holding: Send + 'static {
    fn hold<'a, F>(attempt: F) -> impl Future<Output = task::Attempted> + Send + 'a
    where
        F: Future<Output = task::Attempted> + Send + 'a;
}

/// In the sender's own future: no allocation and no copy per request, for runs of a few
/// lanes, whose senders are few.
pub(super) struct Inline;

/// Boxed when it starts, so only requests in flight hold it: a run of thousands of lanes keeps
/// a sender or two waiting in each, and inline the attempt would be part of every one of them.
pub(super) struct Boxed;

impl Holding for Inline {
    fn hold<'a, F>(attempt: F) -> impl Future<Output = task::Attempted> + Send + 'a
    where
        F: Future<Output = task::Attempted> + Send + 'a,
    {
        attempt
    }
}

impl Holding for Boxed {
    fn hold<'a, F>(attempt: F) -> impl Future<Output = task::Attempted> + Send + 'a
    where
        F: Future<Output = task::Attempted> + Send + 'a,
    {
        Box::pin(attempt)
    }
}

fn spawn_sender<T: Transport, H: Holding>(ctx: &Arc<RunContext<T>>, lane: usize, done: &Arc<Done>) {
    // Boxed: a sender starts another, and a future cannot hold its own type.
    let work: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> =
        Box::pin(sender::<T, H>(Arc::clone(ctx), lane, Arc::clone(done)));
    let handle = tokio::spawn(work);
    ctx.workers
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(handle);
}

/// One of a lane's senders: until the lane is closed and empty, take the front row, wait for
/// the pace, then for a concurrency slot, and run its attempt.
pub(super) async fn sender<T: Transport, H: Holding>(
    ctx: Arc<RunContext<T>>,
    lane: usize,
    done: Arc<Done>,
) {
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
            finish_unsent(&ctx, lane, job, &done).await;
            continue;
        }
        if ctx.targets[job.row.target].stopped().is_some() {
            finish_unsent(&ctx, lane, job, &done).await;
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
            spawn_sender::<T, H>(&ctx, lane, &done);
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
        // writer has it: the report is never more rows behind than `RECORD_WINDOW` times
        // `concurrency`. It is apart from the request's slot, which is freed as soon as the
        // answer is read: a slot held through the writer's round frees in bursts, and a burst
        // of requests finds the pool's connections still on their way back and opens new ones.
        let Some((record, _)) = permit_unless_cancelled(&ctx.unrecorded, &ctx).await else {
            l.push_front(job);
            continue;
        };
        let Some((permit, waited)) = permit_unless_cancelled(&ctx.slots, &ctx).await else {
            l.push_front(job);
            continue;
        };
        if waited {
            // The slot was taken at the pace; the request leaves now.
            l.limiter.sent_late(Instant::now());
        }
        // The target may have been stopped while this row waited for its pace or its slot,
        // or the report may have failed: the slot it waited for was freed by the writer's
        // failing round.
        if ctx.targets[job.row.target].stopped().is_some() || write_failed.has_failed() {
            drop(permit);
            drop(record);
            finish_unsent(&ctx, lane, job, &done).await;
            continue;
        }
        // Inline or boxed as the run's lane count has it (`Holding`).
        let attempt = H::hold(task::attempt(
            &ctx,
            &mut session,
            lane,
            &mut job,
            (permit, record),
            hard.as_mut(),
        ));
        match attempt.await {
            task::Attempted::Finished(id) => {
                // With no row left in the lane, the dispatcher may be holding the next ones
                // (behind a busy message, or not read yet): tell it now.
                done.push(id, l.queue.is_empty());
            }
            task::Attempted::Again(wait) => again(&ctx, l, job, wait),
        }
    }
}

/// [`task::finish_unsent`], boxed for the reason an attempt may be ([`Boxed`]): a row
/// seldom ends unsent (a cancel, a stopped target), and its report line's future would
/// otherwise be part of every sender's, waiting or not.
fn finish_unsent<'a, T: Transport>(
    ctx: &'a RunContext<T>,
    lane: usize,
    job: Job,
    done: &'a Done,
) -> Pin<Box<impl Future<Output = ()> + 'a>> {
    Box::pin(task::finish_unsent(ctx, lane, job, done))
}

/// A row that goes again: back to the front of its lane at once, or once `wait` is over.
fn again<T: Transport>(ctx: &RunContext<T>, lane: &Lane, job: Job, wait: Duration) {
    if wait.is_zero() {
        lane.push_front(job);
        return;
    }
    // Waited out apart, holding only the lane's queue: the sender goes on.
    let queue = Arc::clone(&lane.queue);
    let cancel = ctx.cancel.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = cancel.soft() => {}
        }
        queue.push_front(job);
    });
}

/// One of `pool`'s permits, at once or after a wait (then `true`), unless the run is
/// cancelled meanwhile (`None`: the row goes back to its lane).
async fn permit_unless_cancelled<T: Transport>(
    pool: &Arc<Semaphore>,
    ctx: &RunContext<T>,
) -> Option<(OwnedSemaphorePermit, bool)> {
    if let Ok(permit) = Arc::clone(pool).try_acquire_owned() {
        return Some((permit, false));
    }
    tokio::select! {
        // The semaphore is never closed; were it, that is taken as a cancel.
        p = Arc::clone(pool).acquire_owned() => p.ok().map(|p| (p, true)),
        _ = ctx.cancel.soft() => None,
    }
}

#[cfg(test)]
mod tests {
    use super::super::transport::HttpTransport;
    use super::*;

    /// The size of what `f` returns, without calling it.
    fn output_size<A, B, C, F>(_: fn(A, B, C) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// A run of thousands of lanes keeps a sender or two per lane waiting for its pace: what
    /// one sender's future holds while it waits is what each waiting lane costs. With the
    /// HTTP exchange inline it took over 5 KiB.
    #[test]
    fn a_waiting_sender_holds_no_request_on_its_way() {
        let size = output_size(sender::<HttpTransport, Boxed>);
        assert!(size <= 3 << 10, "a sender's future takes {size} bytes");
        // Inline, the attempt is part of it: only for runs of a few lanes.
        let inline = output_size(sender::<HttpTransport, Inline>);
        assert!(
            inline > size + (1 << 10),
            "inline {inline} bytes, boxed {size}"
        );
    }
}
