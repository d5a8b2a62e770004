//! The dispatcher: reads the rows lazily and hands each one whose message is free to its
//! lane, keeping rows on one (target, message) in plan order and never overlapping, and
//! settles itself the rows that are not sent (deferred, excluded, cancelled, unusable; every
//! row of a dry run). It tracks only messages with a row on its way; a row for a message that
//! is busy waits in that message's queue.
//!
//! From a spool chained by lane ([`RowSource`]) it reads each lane's rows on their own, a few
//! ahead of each lane ([`lane_read_ahead`]), so a plan sorted by account runs every lane side
//! by side. From rows in plan order only (the dry run), reading pauses while [`MAX_QUEUED`]
//! rows are on their way or waiting, or while every lane with rows still to come has
//! [`LANE_AHEAD`] waiting to be sent. Either way memory does not grow with the plan.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::outputs::report::{timestamp, Status};
use crate::plan::{Problem, Row};

use super::context::RunContext;
use super::dry::{self, DryPool, Item};
use super::job::Job;
use super::lane::Done;
use super::message::{message_id, message_key, MessageId};
use super::output::Batch;
use super::sender;
use super::transport::Transport;

/// Rows waiting behind a busy message, at most; the dispatcher stops reading beyond this.
pub(crate) const MAX_QUEUED: usize = 10_000;

/// Rows waiting in a lane's queue (not in flight, not waiting out a backoff) that make it
/// full. Reading pauses only when every lane that still has rows to come is full: a lane
/// that has run short keeps the dispatcher reading (up to [`MAX_QUEUED`]), so a slow lane
/// never holds a fast one to its pace, while a plan for one lane keeps no more than this
/// waiting.
pub(crate) const LANE_AHEAD: usize = 1024;

/// Rows read ahead for one lane (waiting, in flight, or behind a busy message) when every
/// lane reads its own rows: [`MAX_QUEUED`] shared between the lanes, but at least enough to
/// keep a slow lane going and at most what keeps a fast one busy.
pub(crate) fn lane_read_ahead(lanes: usize) -> usize {
    (MAX_QUEUED / lanes.max(1)).clamp(LANE_READ_MIN, LANE_READ_MAX)
}

/// The bounds of [`lane_read_ahead`].
pub(crate) const LANE_READ_MIN: usize = 8;
pub(crate) const LANE_READ_MAX: usize = 256;

/// Where the dispatcher reads the rows: in plan order (any iterator of rows), or lane by lane
/// (the spool, chained by lane when validated: [`crate::plan::spool::LaneRows`]).
pub(crate) trait RowSource {
    /// The lanes the rows can be read by; 0 for rows read in plan order only.
    fn lanes(&self) -> usize;
    /// Whether `lane` has rows not read yet.
    fn has_more(&self, lane: usize) -> bool;
    /// The next row of `lane` (of the plan, for rows read in plan order).
    fn next_in(&mut self, lane: usize) -> Option<Result<Row, Problem>>;
}

impl<I: Iterator<Item = Result<Row, Problem>>> RowSource for I {
    fn lanes(&self) -> usize {
        0
    }

    fn has_more(&self, _lane: usize) -> bool {
        true
    }

    fn next_in(&mut self, _lane: usize) -> Option<Result<Row, Problem>> {
        self.next()
    }
}

impl RowSource for crate::plan::spool::LaneRows {
    fn lanes(&self) -> usize {
        crate::plan::spool::LaneRows::lanes(self)
    }

    fn has_more(&self, lane: usize) -> bool {
        crate::plan::spool::LaneRows::has_more(self, lane)
    }

    fn next_in(&mut self, lane: usize) -> Option<Result<Row, Problem>> {
        crate::plan::spool::LaneRows::next_in(self, lane)
    }
}

/// A row's stable identity for `--resume`, computed by the caller (see `crate::identity`).
pub(crate) type KeyFn = Box<dyn FnMut(&Row) -> String + Send>;

/// What happens to a row before any request: decided by the caller (resume, shard).
pub(crate) enum Admission {
    /// Run it.
    Run,
    /// Not this run's row: another shard's, or already in the report (done earlier).
    Exclude,
}

/// Runs every row of `rows` and sends each result to `ctx.out`. Returns when every row that
/// was read has a result (cancelled rows included) and every lane's worker has ended. Rows the
/// source yields as `Err` (a plan file that no longer reads as it was validated) are
/// reported `failed` with code `invalid_row` and the problem, never dropped. A dry run reads
/// in plan order whatever the source.
pub(crate) async fn execute<T: Transport>(
    ctx: Arc<RunContext<T>>,
    rows: impl RowSource,
    mut key_of: KeyFn,
    mut admit: impl FnMut(&Row, &str) -> Admission,
) {
    let stop_on_failure = stop_on_write_failure(&ctx);
    let mut run = Dispatch::start(ctx, rows);
    loop {
        let cancelled = run.ctx.cancel.is_soft();
        if cancelled {
            run.cancel_waiting().await;
        }
        run.read(cancelled, &mut key_of, &mut admit).await;
        // Before waiting (or finishing), the rows settled so far go on.
        run.settle.flush(&run.ctx).await;
        if run.running == 0 && (run.exhausted || cancelled) {
            break;
        }
        tokio::select! {
            _ = run.done.woken() => {}
            _ = run.ctx.cancel.soft(), if !cancelled => {}
        }
        run.free_finished();
    }
    run.finish().await;
    stop_on_failure.abort();
}

/// The first report (or emit) write error stops dispatching, as a Ctrl-C does: in-flight
/// requests finish, nothing more is sent that the report could not record.
fn stop_on_write_failure<T: Transport>(ctx: &RunContext<T>) -> tokio::task::JoinHandle<()> {
    let write_failed = ctx.out.write_failure();
    let cancel = ctx.cancel.clone();
    tokio::spawn(async move {
        write_failed.wait().await;
        cancel.cancel_soft();
    })
}

/// The dispatcher's state while a run goes on.
struct Dispatch<T: Transport, R: RowSource> {
    ctx: Arc<RunContext<T>>,
    rows: R,
    /// Finished rows' messages, handed back by the senders.
    done: Arc<Done>,
    settle: Settle,
    finished: Vec<MessageId>,
    busy: HashMap<MessageId, Busy, foldhash::fast::FixedState>,
    /// Messages with a deferred row: (first such row, its not_before). Exact ids here: a
    /// collision would defer an unrelated row.
    deferred: HashMap<(usize, String), (u64, DateTime<Utc>)>,
    /// Rows handed to a lane and not finished; rows waiting behind a busy message.
    running: usize,
    queued: usize,
    /// Rows each lane still has to come in the plan (those not read yet).
    ahead: Vec<u64>,
    /// Lanes the rows are read by (0: in plan order).
    by_lane: usize,
    read_ahead: usize,
    /// Lane by lane: rows each lane has read and not finished, and the lanes that may read
    /// more (each once, `ready_now` saying which are in).
    reading: Vec<usize>,
    ready: VecDeque<usize>,
    ready_now: Vec<bool>,
    /// Lanes with rows not read yet.
    lanes_left: usize,
    exhausted: bool,
    last_number: u64,
}

impl<T: Transport, R: RowSource> Dispatch<T, R> {
    /// The dispatcher before its first row, the lanes' first senders started (live run).
    fn start(ctx: Arc<RunContext<T>>, rows: R) -> Self {
        let done = Arc::new(Done::default());
        let by_lane = if ctx.config.dry_run { 0 } else { rows.lanes() };
        let ready: VecDeque<usize> = (0..by_lane).filter(|&l| rows.has_more(l)).collect();
        let pool = if ctx.config.dry_run {
            DryPool::start(&ctx)
        } else {
            None
        };
        let settle = match pool {
            Some(pool) => Settle::Pool(pool),
            None => Settle::Inline(ctx.out.batch()),
        };
        if !ctx.config.dry_run {
            for i in 0..ctx.lanes.len() {
                sender::start_sender(&ctx, i, &done);
            }
        }
        Dispatch {
            ahead: ctx.lanes.iter().map(|l| l.planned_rows).collect(),
            rows,
            done,
            settle,
            finished: Vec::new(),
            busy: HashMap::default(),
            deferred: HashMap::new(),
            running: 0,
            queued: 0,
            by_lane,
            read_ahead: lane_read_ahead(by_lane),
            reading: vec![0; by_lane],
            lanes_left: ready.len(),
            ready,
            ready_now: vec![true; by_lane],
            exhausted: false,
            last_number: 0,
            ctx,
        }
    }

    /// After a cancel: rows waiting behind a busy message will not start now, and every
    /// unread row is reported cancelled, whatever its lane's read-ahead.
    async fn cancel_waiting(&mut self) {
        if self.queued > 0 {
            for (lane, queue) in self.busy.values_mut() {
                if let Some(n) = self.reading.get_mut(*lane) {
                    *n -= queue.len();
                }
                for (row, key) in queue.drain(..) {
                    let item = unsent_cancelled(&self.ctx, row, key);
                    self.settle.push(&self.ctx, item).await;
                }
            }
            self.queued = 0;
        }
        if self.by_lane > 0 {
            self.ready = (0..self.by_lane)
                .filter(|&l| self.rows.has_more(l))
                .collect();
        }
    }

    /// Reads rows and hands each on (or settles it) until the lanes have enough or the rows
    /// run out.
    async fn read(
        &mut self,
        cancelled: bool,
        key_of: &mut KeyFn,
        admit: &mut impl FnMut(&Row, &str) -> Admission,
    ) {
        while let Some(chain) = self.next_chain(cancelled) {
            let Some(item) = self.rows.next_in(chain) else {
                if self.by_lane == 0 {
                    self.exhausted = true;
                    break;
                }
                continue;
            };
            if self.by_lane > 0 && !self.rows.has_more(chain) {
                // Its last row, or a broken spool: then no lane has any more.
                self.lanes_left = if item.is_ok() {
                    self.lanes_left.saturating_sub(1)
                } else {
                    0
                };
            }
            match item {
                Ok(row) => self.take(row, chain, cancelled, key_of, admit).await,
                Err(problem) => {
                    self.last_number += 1;
                    let item = Item::Unusable {
                        number: self.last_number,
                        problem,
                    };
                    self.settle.push(&self.ctx, item).await;
                }
            }
        }
    }

    /// Which chain of rows to read next (0 for rows in plan order), or `None` to wait.
    fn next_chain(&mut self, cancelled: bool) -> Option<usize> {
        if self.by_lane == 0 {
            let room = self.running + self.queued < MAX_QUEUED;
            return (!self.exhausted && room && !all_full(&self.ctx, &self.ahead)).then_some(0);
        }
        // The lane at the front reads until it has its read-ahead (rows of one lane lie
        // together in a sorted plan), then the next one.
        loop {
            let Some(&lane) = self.ready.front() else {
                self.exhausted = self.lanes_left == 0;
                return None;
            };
            if !self.rows.has_more(lane) || (!cancelled && self.reading[lane] >= self.read_ahead) {
                self.ready.pop_front();
                self.ready_now[lane] = false;
                continue;
            }
            return Some(lane);
        }
    }

    /// One row read from `chain`: settled here (cancelled, excluded, deferred, a dry run's),
    /// queued behind its busy message, or handed to its lane.
    async fn take(
        &mut self,
        row: Row,
        chain: usize,
        cancelled: bool,
        key_of: &mut KeyFn,
        admit: &mut impl FnMut(&Row, &str) -> Admission,
    ) {
        self.last_number = row.number;
        if let Some(n) = self.ahead.get_mut(self.ctx.lane_of(&row)) {
            *n = n.saturating_sub(1);
        }
        let key = key_of(&row);
        if cancelled {
            let item = unsent_cancelled(&self.ctx, row, key);
            return self.settle.push(&self.ctx, item).await;
        }
        match admit(&row, &key) {
            Admission::Exclude => return,
            Admission::Run => {}
        }
        if let Some((message, at)) = self.waits(&row) {
            let item = Item::Settled {
                row,
                key,
                status: Status::Deferred,
                code: "not_before",
                message,
                at,
            };
            return self.settle.push(&self.ctx, item).await;
        }
        if self.ctx.config.dry_run {
            return self.settle.push(&self.ctx, Item::Plan { row, key }).await;
        }
        if let Some(n) = self.reading.get_mut(chain) {
            *n += 1;
        }
        match self.busy.entry(message_id(&row)) {
            Entry::Occupied(mut q) => {
                q.get_mut().1.push_back((row, key));
                self.queued += 1;
            }
            Entry::Vacant(v) => {
                v.insert((chain, VecDeque::new()));
                to_lane(&self.ctx, row, key);
                self.running += 1;
            }
        }
    }

    /// Why `row` waits for a later run, and when it was settled so: its `not_before` is still
    /// to come, or it is behind a deferred row on the same message (so a later run still
    /// applies them in plan order).
    fn waits(&mut self, row: &Row) -> Option<(String, DateTime<Utc>)> {
        // The clock only matters to rows that wait for a time, or behind one.
        let now = (row.not_before.is_some() || !self.deferred.is_empty())
            .then(|| self.ctx.config.clock.now());
        let due = row.not_before.filter(|t| now.is_some_and(|now| *t > now));
        let behind = (!self.deferred.is_empty())
            .then(|| self.deferred.get(&message_key(row)))
            .flatten()
            .copied();
        let message = match (due, behind) {
            (Some(at), _) => format!("not before {}", timestamp(at)),
            (None, Some((n, at))) => format!(
                "waits for row {n} on the same message (not before {})",
                timestamp(at)
            ),
            (None, None) => return None,
        };
        if let Some(at) = due {
            self.deferred
                .entry(message_key(row))
                .or_insert((row.number, at));
        }
        Some((message, now.unwrap_or_else(|| self.ctx.config.clock.now())))
    }

    /// Every row that finished meanwhile, in one round (with many senders, rows finish
    /// faster than one round per row would go): its message is free for the next row
    /// waiting on it, and its lane may read more.
    fn free_finished(&mut self) {
        let mut finished = std::mem::take(&mut self.finished);
        self.done.take(&mut finished);
        for id in finished.drain(..) {
            self.running -= 1;
            let Some((chain, waiting)) = self.busy.get_mut(&id) else {
                continue;
            };
            let chain = *chain;
            let next = waiting.pop_front();
            if let Some(n) = self.reading.get_mut(chain) {
                *n -= 1;
                if !self.ready_now[chain] && *n < self.read_ahead && self.rows.has_more(chain) {
                    self.ready_now[chain] = true;
                    self.ready.push_back(chain);
                }
            }
            match next {
                Some((row, key)) => {
                    self.queued -= 1;
                    to_lane(&self.ctx, row, key);
                    self.running += 1;
                }
                None => {
                    self.busy.remove(&id);
                }
            }
        }
        self.finished = finished;
    }

    /// The last rows settled go on, the lanes close, and every sender is awaited.
    async fn finish(self) {
        self.settle.finish(&self.ctx).await;
        for lane in &self.ctx.lanes {
            lane.close();
        }
        // A sender may start another until its lane is empty: until none is left to await.
        loop {
            let workers =
                std::mem::take(&mut *self.ctx.workers.lock().unwrap_or_else(|e| e.into_inner()));
            if workers.is_empty() {
                break;
            }
            for worker in workers {
                let _ = worker.await;
            }
        }
    }
}

/// The fate of a row that an interruption stopped before it was sent.
fn unsent_cancelled<T: Transport>(ctx: &RunContext<T>, row: Row, key: String) -> Item {
    Item::Settled {
        row,
        key,
        status: Status::Cancelled,
        code: "cancelled",
        message: "interrupted before sending".into(),
        at: ctx.config.clock.now(),
    }
}

/// Where the rows the dispatcher settles itself go: rendered on the spot into a batch for the
/// writer, or (dry run) collected into chunks that a pool of threads signs and renders.
enum Settle {
    Inline(Batch),
    Pool(DryPool),
}

impl Settle {
    async fn push<T: Transport>(&mut self, ctx: &RunContext<T>, item: Item) {
        match self {
            Settle::Inline(batch) => {
                if batch.len() >= BATCH_ROWS {
                    ctx.out.send_batch(batch).await;
                }
                dry::render(ctx, &item, batch);
            }
            Settle::Pool(pool) => pool.push(item).await,
        }
    }

    /// Hands on what was settled so far (before the dispatcher waits).
    async fn flush<T: Transport>(&mut self, ctx: &RunContext<T>) {
        match self {
            Settle::Inline(batch) => ctx.out.send_batch(batch).await,
            Settle::Pool(pool) => pool.send().await,
        }
    }

    async fn finish<T: Transport>(self, ctx: &RunContext<T>) {
        match self {
            Settle::Inline(mut batch) => ctx.out.send_batch(&mut batch).await,
            Settle::Pool(pool) => pool.finish().await,
        }
    }
}

/// A busy message: the lane its rows were read by, and its rows waiting (with their keys).
type Busy = (usize, VecDeque<(Row, String)>);

/// Rows the dispatcher renders (dry run, deferred, cancelled) go to the writer this many at a
/// time, and whenever the dispatcher is about to wait.
const BATCH_ROWS: usize = 256;

/// Some lane has [`LANE_AHEAD`] rows waiting, and so has every lane with rows still to come
/// in the plan (`ahead`): reading on would only add to the wait. A lane whose rows are all
/// read does not keep the dispatcher reading; one that may get more rows does, so a slow
/// lane's queue never keeps a fast lane from its next rows.
fn all_full<T: Transport>(ctx: &RunContext<T>, ahead: &[u64]) -> bool {
    let mut some_full = false;
    for (lane, &left) in ctx.lanes.iter().zip(ahead) {
        let full = lane.waiting() >= LANE_AHEAD;
        if !full && left > 0 {
            return false;
        }
        some_full |= full;
    }
    some_full
}

/// Hands a row whose message is free to its lane.
fn to_lane<T: Transport>(ctx: &RunContext<T>, row: Row, key: String) {
    let lane = ctx.lane_of(&row);
    let job = Job::new(row, key);
    ctx.lanes[lane].push_back(job);
}
