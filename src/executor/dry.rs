//! A dry run on every core. The dispatcher decides each row's fate in plan order (identity
//! key, admission, `not_before`, cancel) and collects the rows into chunks of [`CHUNK_ROWS`];
//! a pool of threads signs and renders whole chunks ([`Item`] → report lines and emit
//! records), and each chunk's batch goes to the writer in plan order: a worker waits for its
//! chunk's turn before handing the batch on. The output is byte for byte what one thread
//! would write.
//!
//! Memory stays flat: each worker takes at most one chunk ahead, and the writer's batches in
//! flight are bounded as before ([`super::output::BATCHES_IN_FLIGHT`]). A chunk's vector goes
//! back to the dispatcher once rendered, and the rows in it are dropped there: they were
//! allocated on the dispatcher's thread, and freeing them on another would make both threads
//! fight over the allocator's arena lock.

use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;

use crate::outputs::report::{with_row_view, with_unusable_view, Status};
use crate::plan::{Problem, Row};

use super::context::RunContext;
use super::output::Batch;
use super::task;
use super::transport::Transport;

/// Rows per chunk: large enough that the hand-offs cost nothing per row, small enough that
/// every worker has work early.
pub(super) const CHUNK_ROWS: usize = 128;

/// Workers at most, whatever the machine: the dispatcher and the writer need a share too.
const MAX_WORKERS: usize = 4;

/// One row's fate, decided by the dispatcher, rendered by a worker.
pub(super) enum Item {
    /// Build, sign and record the request; report `planned`.
    Plan { row: Row, key: String },
    /// Settled with nothing to sign (deferred, cancelled).
    Settled {
        row: Row,
        key: String,
        status: Status,
        code: &'static str,
        message: String,
        at: DateTime<Utc>,
    },
    /// A row the plan no longer yields as it was validated.
    Unusable { number: u64, problem: Problem },
}

struct Chunk {
    seq: u64,
    items: Vec<Item>,
}

/// Whose turn it is to hand a batch to the writer.
#[derive(Default)]
struct Turn {
    next: Mutex<u64>,
    changed: Condvar,
}

impl Turn {
    fn wait_for(&self, seq: u64) {
        let mut next = self.next.lock().unwrap_or_else(|e| e.into_inner());
        while *next != seq {
            next = self.changed.wait(next).unwrap_or_else(|e| e.into_inner());
        }
    }

    fn advance(&self) {
        let mut next = self.next.lock().unwrap_or_else(|e| e.into_inner());
        *next += 1;
        self.changed.notify_all();
    }
}

/// The dispatcher's side of the pool.
pub(super) struct DryPool {
    inputs: Vec<mpsc::Sender<Chunk>>,
    /// Rendered chunks' vectors, back for reuse (their rows are dropped by the dispatcher).
    spent: std::sync::mpsc::Receiver<Vec<Item>>,
    spent_tx: std::sync::mpsc::Sender<Vec<Item>>,
    workers: Vec<JoinHandle<()>>,
    chunk: Vec<Item>,
    seq: u64,
}

impl DryPool {
    /// Starts the workers; `None` when the OS refuses a thread (the caller renders inline).
    pub(super) fn start<T: Transport>(ctx: &Arc<RunContext<T>>) -> Option<DryPool> {
        let n = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .clamp(1, MAX_WORKERS);
        let turn = Arc::new(Turn::default());
        let handle = tokio::runtime::Handle::current();
        let (spent_tx, spent) = std::sync::mpsc::channel();
        let mut inputs = Vec::with_capacity(n);
        let mut workers = Vec::with_capacity(n);
        for i in 0..n {
            let (tx, rx) = mpsc::channel::<Chunk>(1);
            let ctx = Arc::clone(ctx);
            let turn = Arc::clone(&turn);
            let handle = handle.clone();
            let spent_tx = spent_tx.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("reactbatch-dry-{i}"))
                .spawn(move || work(&ctx, rx, &turn, &handle, &spent_tx));
            match spawned {
                Ok(w) => {
                    inputs.push(tx);
                    workers.push(w);
                }
                Err(_) if i > 0 => break,
                Err(_) => return None,
            }
        }
        Some(DryPool {
            inputs,
            spent,
            spent_tx,
            workers,
            chunk: Vec::with_capacity(CHUNK_ROWS),
            seq: 0,
        })
    }

    /// Adds a row's fate; hands the chunk on when it is full.
    pub(super) async fn push(&mut self, item: Item) {
        self.chunk.push(item);
        if self.chunk.len() >= CHUNK_ROWS {
            self.send().await;
        }
    }

    /// Hands the rows collected so far to the next worker.
    pub(super) async fn send(&mut self) {
        if self.chunk.is_empty() {
            return;
        }
        // A spent vector to fill next: its rows are dropped here, on the thread that made them.
        let next = match self.spent.try_recv() {
            Ok(mut v) => {
                v.clear();
                v
            }
            Err(_) => Vec::with_capacity(CHUNK_ROWS),
        };
        let items = std::mem::replace(&mut self.chunk, next);
        let worker = (self.seq % self.inputs.len() as u64) as usize;
        let chunk = Chunk {
            seq: self.seq,
            items,
        };
        self.seq += 1;
        // A worker only stops early when its thread died; its rows are then lost, which the
        // writer's count of rows shows (the run's summary does not match the plan).
        let _ = self.inputs[worker].send(chunk).await;
    }

    /// Sends what is left and waits until every chunk is with the writer.
    pub(super) async fn finish(mut self) {
        self.send().await;
        self.inputs.clear();
        drop(self.spent_tx);
        let workers = std::mem::take(&mut self.workers);
        let spent = self.spent;
        // Joining blocks; the rows coming back are dropped on the blocking thread, which is
        // only the tail of the run.
        let _ = tokio::task::spawn_blocking(move || {
            for w in workers {
                let _ = w.join();
            }
            drop(spent);
        })
        .await;
    }
}

fn work<T: Transport>(
    ctx: &RunContext<T>,
    mut rx: mpsc::Receiver<Chunk>,
    turn: &Turn,
    handle: &tokio::runtime::Handle,
    spent: &std::sync::mpsc::Sender<Vec<Item>>,
) {
    while let Some(Chunk { seq, items }) = rx.blocking_recv() {
        let mut batch = ctx.out.batch();
        // Rendering does not panic on any row; should it ever, the chunk's rows are missing
        // from the report (the summary's count shows it) but the other workers, waiting for
        // this chunk's turn, are not left hanging.
        let rendered = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            for item in &items {
                render(ctx, item, &mut batch);
            }
        }));
        if rendered.is_err() {
            batch = ctx.out.batch();
        }
        let _ = spent.send(items);
        turn.wait_for(seq);
        handle.block_on(ctx.out.send_batch(&mut batch));
        turn.advance();
    }
}

/// Renders one row's fate into `batch`, exactly as the dispatcher would inline.
pub(super) fn render<T: Transport>(ctx: &RunContext<T>, item: &Item, batch: &mut Batch) {
    match item {
        Item::Plan { row, key } => task::plan_row(ctx, row, key, batch),
        Item::Settled {
            row,
            key,
            status,
            code,
            message,
            at,
        } => with_row_view(
            &ctx.targets[row.target].spec,
            row,
            key,
            (*status, code, message),
            *at,
            |v| ctx.out.push(batch, v),
        ),
        Item::Unusable { number, problem } => {
            with_unusable_view(*number, problem, ctx.config.clock.now(), |v| {
                ctx.out.push(batch, v)
            })
        }
    }
}
