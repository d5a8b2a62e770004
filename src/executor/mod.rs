//! The executor: streams validated rows through per-message ordering, bounded concurrency and
//! per-target pacing to the provider (or, in a dry run, to the renderer), and every row's
//! result to the report.
//!
//! - The dispatcher reads rows lazily and tracks only messages with a row on its way; a row for
//!   a message that is busy waits in that message's queue, so rows on one (target, message) go
//!   in plan order and never overlap. From a spool chained by lane ([`RowSource`]) it reads
//!   each lane's rows on their own, a few ahead of each lane ([`lane_read_ahead`]), so a plan
//!   sorted by account runs every lane side by side. From rows in plan order only (the dry
//!   run), reading pauses while [`MAX_QUEUED`] rows are on their way or waiting, or while
//!   every lane with rows still to come has [`LANE_AHEAD`] waiting to be sent. Either way
//!   memory does not grow with the plan.
//! - A row whose message is free goes to its target's [`lane::Lane`] (one per pace group):
//!   one of the lane's senders paces it, takes one of `concurrency` slots for the request
//!   only, and runs the attempt ([`task`]): sign afresh, send over the run's one HTTP client,
//!   whose connections belong to the origin ([`transport`]), classify ([`retry`]), finish or
//!   go back to the front of the lane.
//! - Finished rows go to the writer task ([`output`]), which appends them to the report. No
//!   more than `concurrency` rows are sent and not yet in the report, and the first write error
//!   stops dispatching (as a Ctrl-C does): no more is sent than the report can record.

pub mod cancel;
mod dry;
pub mod host;
pub mod lane;
pub mod output;
mod pacer;
pub mod progress;
pub mod rate;
pub mod retry;
mod target;
mod task;
pub mod transport;

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::outputs::report::{timestamp, with_timestamp, RowView, SourceRef, Status};
use crate::plan::pace::LaneMap;
use crate::plan::{settings, EmitFormat, Problem, ProviderKind, Row, Target};
use dry::{DryPool, Item};

pub use cancel::Cancel;
pub use lane::Lane;
pub use output::{Batch, OutputSender, OutputThread, Tally};
pub use retry::AttemptOutcome;
pub use target::{
    OriginHealth, SendLog, TargetRuntime, AUTH_FAILURES_TO_STOP, UNREACHABLE_TO_STOP,
};
pub use task::RowOutcome;
pub use transport::{HttpTransport, Transport};

/// Rows waiting behind a busy message, at most; the dispatcher stops reading beyond this.
pub const MAX_QUEUED: usize = 10_000;

/// Rows waiting in a lane's queue (not in flight, not waiting out a backoff) that make it
/// full. Reading pauses only when every lane that still has rows to come is full: a lane
/// that has run short keeps the dispatcher reading (up to [`MAX_QUEUED`]), so a slow lane
/// never holds a fast one to its pace, while a plan for one lane keeps no more than this
/// waiting.
pub const LANE_AHEAD: usize = 1024;

/// Rows read ahead for one lane (waiting, in flight, or behind a busy message) when every
/// lane reads its own rows: [`MAX_QUEUED`] shared between the lanes, but at least enough to
/// keep a slow lane going and at most what keeps a fast one busy.
pub fn lane_read_ahead(lanes: usize) -> usize {
    (MAX_QUEUED / lanes.max(1)).clamp(LANE_READ_MIN, LANE_READ_MAX)
}

/// The bounds of [`lane_read_ahead`].
pub const LANE_READ_MIN: usize = 8;
pub const LANE_READ_MAX: usize = 256;

/// Where the dispatcher reads the rows: in plan order (any iterator of rows), or lane by lane
/// (the spool, chained by lane when validated: [`crate::plan::spool::LaneRows`]).
pub trait RowSource {
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

/// Where "now" comes from: the wall clock, or a fixed instant (`--now`) for `not_before`
/// and for signing in a dry run. The wall clock is read only through this.
#[derive(Clone, Copy, Debug)]
pub enum Clock {
    System,
    Fixed(DateTime<Utc>),
}

impl Clock {
    pub fn now(self) -> DateTime<Utc> {
        match self {
            Clock::System => Utc::now(),
            Clock::Fixed(t) => t,
        }
    }
}

/// Validated run settings (command line over plan settings over defaults).
#[derive(Clone, Debug)]
pub struct ExecConfig {
    /// Rows in flight at once (≥ 1).
    pub concurrency: usize,
    /// Attempts after the first, for retryable outcomes.
    pub retries: u32,
    /// Per-attempt timeout.
    pub timeout: Duration,
    /// How long a row may keep being answered 429 before it fails (429s use no retries).
    pub rate_limit_budget: Duration,
    /// Requests allowed ahead of the even schedule (≥ 1).
    pub burst: u32,
    /// Build and sign, send nothing.
    pub dry_run: bool,
    /// Clock for `not_before` (and for signing in a dry run).
    pub clock: Clock,
    pub emit_format: Option<EmitFormat>,
    pub backoff_base: Duration,
    pub backoff_cap: Duration,
    /// How long in-flight requests may finish after a soft cancel before they are abandoned.
    pub grace: Duration,
    /// Fast lanes wait for their pace with sub-millisecond wake-ups (see `pacer`). Off by
    /// default: tests drive the limiter under tokio's paused clock.
    pub precise_pacing: bool,
}

impl Default for ExecConfig {
    fn default() -> Self {
        ExecConfig {
            concurrency: settings::DEFAULT_CONCURRENCY,
            retries: settings::DEFAULT_RETRIES,
            timeout: settings::DEFAULT_TIMEOUT,
            rate_limit_budget: settings::DEFAULT_RATE_LIMIT_BUDGET,
            burst: settings::DEFAULT_BURST,
            dry_run: false,
            clock: Clock::System,
            emit_format: None,
            backoff_base: Duration::from_millis(100),
            backoff_cap: Duration::from_secs(10),
            grace: Duration::from_secs(3),
            precise_pacing: false,
        }
    }
}

/// Everything a row task needs, shared.
pub struct RunContext<T: Transport> {
    pub config: ExecConfig,
    pub targets: Vec<TargetRuntime>,
    /// One per pace group; every target is a member of exactly one.
    pub lanes: Vec<Lane>,
    pub transport: T,
    pub out: OutputSender,
    pub cancel: Cancel,
    /// Requests in flight, at most `config.concurrency`.
    slots: Arc<tokio::sync::Semaphore>,
    /// Rows sent and not yet in the report, at most `config.concurrency`: the writer frees
    /// a row's permit once the report holds it.
    unrecorded: Arc<tokio::sync::Semaphore>,
    /// Ceilings on what the lanes to one host send together (none unless given).
    pub hosts: host::HostCeilings,
    /// Which lane each row goes to, when rows carry their accounts (else its target's).
    lane_map: LaneMap,
    /// The lanes' senders, awaited at the end of the run (senders start more as needed).
    workers: std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl<T: Transport> RunContext<T> {
    /// Ties each target to its lane. A target no lane names gets a lane of its own.
    pub fn new(
        config: ExecConfig,
        mut targets: Vec<TargetRuntime>,
        mut lanes: Vec<Lane>,
        transport: T,
        out: OutputSender,
        cancel: Cancel,
    ) -> RunContext<T> {
        for (i, lane) in lanes.iter().enumerate() {
            for &m in &lane.members {
                if let Some(t) = targets.get_mut(m) {
                    t.lane = i;
                }
            }
        }
        for (i, t) in targets.iter_mut().enumerate() {
            if !lanes.get(t.lane).is_some_and(|l| l.members.contains(&i)) {
                t.lane = lanes.len();
                lanes.push(Lane::new(
                    t.spec.name.clone(),
                    vec![i],
                    t.rate,
                    config.burst,
                ));
            }
        }
        // Targets on one origin share its health: connections belong to the origin.
        let mut origins: HashMap<String, Arc<target::OriginHealth>> = HashMap::new();
        for t in &mut targets {
            let name = target::origin_of(&t.spec.base_url);
            let shared = origins
                .entry(name.clone())
                .or_insert_with(|| Arc::new(target::OriginHealth::new(name)));
            t.origin = Arc::clone(shared);
        }
        let mut lanes_of = vec![0usize; targets.len()];
        for lane in &lanes {
            for &m in &lane.members {
                if let Some(n) = lanes_of.get_mut(m) {
                    *n += 1;
                }
            }
        }
        for lane in &mut lanes {
            lane.limiter.set_precise(config.precise_pacing);
            // One log for a lane and its only target, unless the target's rows go to other
            // lanes too (one lane per account).
            if let [only] = lane.members[..] {
                if lanes_of[only] == 1 {
                    lane.sends = Arc::clone(&targets[only].sends);
                }
            }
        }
        let slots = Arc::new(tokio::sync::Semaphore::new(config.concurrency.max(1)));
        let unrecorded = Arc::new(tokio::sync::Semaphore::new(config.concurrency.max(1)));
        RunContext {
            config,
            targets,
            lanes,
            transport,
            out,
            cancel,
            slots,
            unrecorded,
            hosts: host::HostCeilings::default(),
            lane_map: LaneMap::default(),
            workers: std::sync::Mutex::default(),
        }
    }

    /// The run with these host ceilings (see [`host`]).
    pub fn with_host_ceilings(mut self, hosts: host::HostCeilings) -> RunContext<T> {
        self.hosts = hosts;
        self
    }

    /// Routes rows by `map` (lanes made from the plan's rows, index-aligned with `lanes`):
    /// a row naming its own account goes to that account's lane.
    pub fn with_lane_map(mut self, map: LaneMap) -> RunContext<T> {
        self.lane_map = map;
        self
    }

    /// The lane `row` goes to: its account's, else its target's.
    pub(crate) fn lane_of(&self, row: &Row) -> usize {
        self.lane_map
            .lane_of(row)
            .filter(|&l| l < self.lanes.len())
            .unwrap_or(self.targets[row.target].lane)
    }
}

/// A (target, account, message) triple, account and message hashed: rows on one message run
/// in plan order, one at a time. Two messages whose hashes collide only wait for each other
/// (never overlap), so the dispatcher keeps no copy of each in-flight message id.
pub(crate) type MessageId = (usize, u64);

pub(crate) fn message_id(row: &Row) -> MessageId {
    use std::hash::BuildHasher;
    let hasher = foldhash::quality::FixedState::default();
    let hash = match row.own_account() {
        None => hasher.hash_one(row.message_ref()),
        // A message id is only unique within its account.
        Some(account) => hasher.hash_one((account, row.message_ref())),
    };
    (row.target, hash)
}

/// A message exactly (target, the row's own account, message id), where a collision would do
/// harm (deferring an unrelated row).
fn message_key(row: &Row) -> (usize, String) {
    let text = match row.own_account() {
        None => row.message_ref().to_string(),
        // `\0` is in no account (they are path-safe).
        Some(account) => [account, "\0", row.message_ref()].concat(),
    };
    (row.target, text)
}

/// A row's stable identity for `--resume`, computed by the caller (see `crate::identity`).
pub type KeyFn = Box<dyn FnMut(&Row) -> String + Send>;

/// What happens to a row before any request: decided by the caller (resume, shard).
pub enum Admission {
    /// Run it.
    Run,
    /// Not this run's row: another shard's, or already in the report (done earlier).
    Exclude,
}

/// The report row of `row` on `target`, as settled with nothing sent: the fields a row and
/// its target decide, with no attempts. Callers that sent something (or, for `--resume`, that
/// copy an earlier outcome) override the rest. Every report row is built here.
pub fn row_view<'a>(
    target: &'a Target,
    row: &'a Row,
    key: &'a str,
    status: Status,
    code: &'a str,
    message: &'a str,
    finished_at: &'a str,
) -> RowView<'a> {
    RowView {
        row: row.number,
        source: SourceRef::Plan(&row.source),
        target: &target.name,
        provider: target.provider().as_str(),
        action: row.action.as_str(),
        message_id: row.message_ref(),
        emoji: crate::provider::sent_emoji(target.provider(), row),
        status,
        http_status: None,
        code,
        message,
        attempts: 0,
        duration_ms: 0,
        finished_at,
        key,
        scope_id: match target.provider() {
            ProviderKind::Kommo => row.account(target),
            ProviderKind::Ogmma => "",
        },
        channel_id: match target.provider() {
            ProviderKind::Ogmma => row.account(target),
            ProviderKind::Kommo => "",
        },
    }
}

/// [`row_view`] for a row of the run's targets.
pub(crate) fn settled_view<'a>(
    targets: &'a [TargetRuntime],
    row: &'a Row,
    key: &'a str,
    status: Status,
    code: &'a str,
    message: &'a str,
    finished_at: &'a str,
) -> RowView<'a> {
    row_view(
        &targets[row.target].spec,
        row,
        key,
        status,
        code,
        message,
        finished_at,
    )
}

/// A settled row's view, with its timestamp rendered, handed to `f`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn with_settled<R>(
    targets: &[TargetRuntime],
    row: &Row,
    key: &str,
    status: Status,
    code: &str,
    message: &str,
    at: DateTime<Utc>,
    f: impl FnOnce(&RowView<'_>) -> R,
) -> R {
    with_timestamp(at, |finished_at| {
        f(&settled_view(
            targets,
            row,
            key,
            status,
            code,
            message,
            finished_at,
        ))
    })
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

/// Runs every row of `rows` and sends each result to `ctx.out`. Returns when every row that
/// was read has a result (cancelled rows included) and every lane's worker has ended. Rows the
/// source yields as `Err` (a plan file that no longer reads as it was validated) are
/// reported `failed` with code `invalid_row` and the problem, never dropped. A dry run reads
/// in plan order whatever the source.
pub async fn execute<T: Transport>(
    ctx: Arc<RunContext<T>>,
    mut rows: impl RowSource,
    mut key_of: KeyFn,
    mut admit: impl FnMut(&Row, &str) -> Admission,
) {
    let done = Arc::new(lane::Done::default());
    // The first report (or emit) write error stops dispatching, as a Ctrl-C does: in-flight
    // requests finish, nothing more is sent that the report could not record.
    let write_failed = ctx.out.write_failure();
    let cancel = ctx.cancel.clone();
    let stop_on_failure = tokio::spawn(async move {
        write_failed.wait().await;
        cancel.cancel_soft();
    });
    let mut finished: Vec<MessageId> = Vec::new();
    let mut busy: HashMap<MessageId, Busy, foldhash::fast::FixedState> = HashMap::default();
    // Messages with a deferred row: (first such row, its not_before).
    // Exact ids here: a collision would defer an unrelated row.
    let mut deferred: HashMap<(usize, String), (u64, DateTime<Utc>)> = HashMap::new();
    // Rows handed to a lane and not finished; rows waiting behind a busy message.
    let mut running = 0usize;
    let mut queued = 0usize;
    // Rows each lane still has to come in the plan (those not read yet).
    let mut ahead: Vec<u64> = ctx.lanes.iter().map(|l| l.planned_rows).collect();
    // Lane by lane: rows each lane has read and not finished, and the lanes that may read
    // more (each once, `ready_now` saying which are in).
    let by_lane = if ctx.config.dry_run { 0 } else { rows.lanes() };
    let read_ahead = lane_read_ahead(by_lane);
    let mut reading = vec![0usize; by_lane];
    let mut ready: VecDeque<usize> = (0..by_lane).filter(|&l| rows.has_more(l)).collect();
    let mut ready_now = vec![true; by_lane];
    // Lanes with rows not read yet.
    let mut lanes_left = ready.len();
    let mut exhausted = false;
    let mut last_number = 0u64;
    let pool = if ctx.config.dry_run {
        DryPool::start(&ctx)
    } else {
        None
    };
    let mut settle = match pool {
        Some(pool) => Settle::Pool(pool),
        None => Settle::Inline(ctx.out.batch()),
    };
    if !ctx.config.dry_run {
        for i in 0..ctx.lanes.len() {
            lane::start_sender(&ctx, i, &done);
        }
    }

    loop {
        let cancelled = ctx.cancel.is_soft();
        if cancelled && queued > 0 {
            // Rows waiting behind a busy message will not start now.
            for (lane, queue) in busy.values_mut() {
                if let Some(n) = reading.get_mut(*lane) {
                    *n -= queue.len();
                }
                for (row, key) in queue.drain(..) {
                    settle.push(&ctx, unsent_cancelled(&ctx, row, key)).await;
                }
            }
            queued = 0;
        }
        if cancelled && by_lane > 0 {
            // Every unread row is reported cancelled, whatever its lane's read-ahead.
            ready = (0..by_lane).filter(|&l| rows.has_more(l)).collect();
        }
        loop {
            let chain = if by_lane > 0 {
                // The lane at the front reads until it has its read-ahead (rows of one lane
                // lie together in a sorted plan), then the next one.
                let Some(&lane) = ready.front() else {
                    exhausted = lanes_left == 0;
                    break;
                };
                if !rows.has_more(lane) || (!cancelled && reading[lane] >= read_ahead) {
                    ready.pop_front();
                    ready_now[lane] = false;
                    continue;
                }
                lane
            } else if !exhausted && running + queued < MAX_QUEUED && !all_full(&ctx, &ahead) {
                0
            } else {
                break;
            };
            let Some(item) = rows.next_in(chain) else {
                if by_lane == 0 {
                    exhausted = true;
                    break;
                }
                continue;
            };
            if by_lane > 0 && !rows.has_more(chain) {
                // Its last row, or a broken spool: then no lane has any more.
                lanes_left = if item.is_ok() {
                    lanes_left.saturating_sub(1)
                } else {
                    0
                };
            }
            let row = match item {
                Ok(row) => row,
                Err(problem) => {
                    last_number += 1;
                    let item = Item::Unusable {
                        number: last_number,
                        problem,
                    };
                    settle.push(&ctx, item).await;
                    continue;
                }
            };
            last_number = row.number;
            if let Some(n) = ahead.get_mut(ctx.lane_of(&row)) {
                *n = n.saturating_sub(1);
            }
            let key = key_of(&row);
            if cancelled {
                settle.push(&ctx, unsent_cancelled(&ctx, row, key)).await;
                continue;
            }
            match admit(&row, &key) {
                Admission::Exclude => continue,
                Admission::Run => {}
            }
            // The clock only matters to rows that wait for a time, or behind one.
            let now =
                (row.not_before.is_some() || !deferred.is_empty()).then(|| ctx.config.clock.now());
            let due = row.not_before.filter(|t| now.is_some_and(|now| *t > now));
            // A row behind a deferred row on the same message waits with it, so a later run
            // still applies them in plan order.
            let behind = (!deferred.is_empty())
                .then(|| deferred.get(&message_key(&row)))
                .flatten()
                .copied();
            let waits = match (due, behind) {
                (Some(at), _) => Some(format!("not before {}", timestamp(at))),
                (None, Some((n, at))) => Some(format!(
                    "waits for row {n} on the same message (not before {})",
                    timestamp(at)
                )),
                (None, None) => None,
            };
            if let Some(msg) = waits {
                if let Some(at) = due {
                    deferred
                        .entry(message_key(&row))
                        .or_insert((row.number, at));
                }
                let item = Item::Settled {
                    row,
                    key,
                    status: Status::Deferred,
                    code: "not_before",
                    message: msg,
                    at: now.unwrap_or_else(|| ctx.config.clock.now()),
                };
                settle.push(&ctx, item).await;
                continue;
            }
            if ctx.config.dry_run {
                settle.push(&ctx, Item::Plan { row, key }).await;
                continue;
            }
            if let Some(n) = reading.get_mut(chain) {
                *n += 1;
            }
            match busy.entry(message_id(&row)) {
                Entry::Occupied(mut q) => {
                    q.get_mut().1.push_back((row, key));
                    queued += 1;
                }
                Entry::Vacant(v) => {
                    v.insert((chain, VecDeque::new()));
                    to_lane(&ctx, row, key);
                    running += 1;
                }
            }
        }
        // Before waiting (or finishing), the rows settled so far go on.
        settle.flush(&ctx).await;
        if running == 0 && (exhausted || cancelled) {
            break;
        }
        tokio::select! {
            _ = done.woken() => {}
            _ = ctx.cancel.soft(), if !cancelled => {}
        }
        // Every row that finished meanwhile, in one round: with many senders, rows finish
        // faster than one round per row would go.
        done.take(&mut finished);
        for id in finished.drain(..) {
            running -= 1;
            let Some((chain, waiting)) = busy.get_mut(&id) else {
                continue;
            };
            let chain = *chain;
            let next = waiting.pop_front();
            if let Some(n) = reading.get_mut(chain) {
                *n -= 1;
                if !ready_now[chain] && *n < read_ahead && rows.has_more(chain) {
                    ready_now[chain] = true;
                    ready.push_back(chain);
                }
            }
            match next {
                Some((row, key)) => {
                    queued -= 1;
                    to_lane(&ctx, row, key);
                    running += 1;
                }
                None => {
                    busy.remove(&id);
                }
            }
        }
    }
    settle.finish(&ctx).await;
    for lane in &ctx.lanes {
        lane.close();
    }
    // A sender may start another until its lane is empty: until none is left to await.
    loop {
        let workers = std::mem::take(&mut *ctx.workers.lock().unwrap_or_else(|e| e.into_inner()));
        if workers.is_empty() {
            break;
        }
        for worker in workers {
            let _ = worker.await;
        }
    }
    stop_on_failure.abort();
}

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
    let job = task::Job::new(row, key);
    ctx.lanes[lane].push_back(job);
}

/// The report row of a row the executor could not use (the plan no longer reads as it was
/// validated): `failed`, code `invalid_row`, with the problem.
fn unusable_row<T: Transport>(
    ctx: &RunContext<T>,
    number: u64,
    problem: &Problem,
    batch: &mut Batch,
) {
    let source = crate::plan::Source {
        file: problem.file.clone().into(),
        line: problem.line.unwrap_or(0),
    };
    let message = problem.message.clone();
    with_timestamp(ctx.config.clock.now(), |finished_at| {
        let view = RowView {
            row: number,
            source: SourceRef::Plan(&source),
            target: "",
            provider: "",
            action: "",
            message_id: "",
            emoji: "",
            status: Status::Failed,
            http_status: None,
            code: "invalid_row",
            message: &message,
            attempts: 0,
            duration_ms: 0,
            finished_at,
            key: "",
            scope_id: "",
            channel_id: "",
        };
        ctx.out.push(batch, &view);
    });
}

#[cfg(test)]
mod citizen_tests;
#[cfg(test)]
pub(crate) mod sim;
#[cfg(test)]
mod tests;
