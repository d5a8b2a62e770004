//! What a run hands its writer, and how: the one place that writes files during a run is the
//! writer task ([`super::writer`]), which receives finished rows and emitted requests, appends
//! them to the report and emit files, and counts. A task, not a thread of its own: a finished
//! row wakes it without waking a parked thread.
//!
//! Rows the lanes' senders finish, and the emit records of the requests they send, are
//! rendered straight into the writer's inbox (one buffer behind a lock, the writer woken when
//! it was empty); rows the dispatcher settles (with a dry run's emit records) and the second
//! Ctrl-C's flush come through a channel.
//!
//! Durability: after each round of whatever has arrived, both files are flushed to the OS, so
//! a crash or `kill -9` loses no row that reached the file; the report is also `fsync`ed at
//! most once a second (on the blocking pool, so no sender waits for the disk) and at the end.
//! A sent row's record permit (one of `concurrency`) comes with it and is freed only once the
//! round that holds it reached the file, and a row is counted (progress, summary) only then.
//!
//! Write errors: the first one on the report (a failed write, flush or `fsync`: disk full,
//! file too large, I/O error) or the emit file is reported at once and raises
//! [`WriteFailure`], on which the executor stops dispatching. From then on the report is not
//! written again; every sent row the report did not take (those of the failing round, and any
//! that finish after) goes to stderr as its report line, and is counted as not recorded.
//! Rows that finished but were still in the inbox or the channel at a `kill -9` (microseconds'
//! worth) are the only ones that can be missing. (The writer does not gather live rows over a
//! time window to save wake-ups: a row the run has finished must reach the file at once.)
//!
//! The writer never ends the process: a second Ctrl-C asks it to put what it has on disk and
//! confirm ([`OutputSender::flush_now`]); the signal handler then exits. Failed rows are kept
//! (the first [`crate::outputs::log::MAX_FAILED_LINES`]) and counted for the lines that name
//! them at the end.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, Notify};

use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::OwnedSemaphorePermit;

use crate::outputs::log::FailedRow;
use crate::outputs::report::{render_row, ReportFormat, RowView, Status};

pub(crate) enum Output {
    /// Several finished rows (and their emit records), rendered by the dispatcher.
    Batch(Sent),
    /// Second Ctrl-C: put what arrived before this on disk, then confirm.
    FlushNow(std::sync::mpsc::Sender<()>),
}

/// Rows the lanes' senders finished, rendered straight into the writer's next buffer: no
/// allocation and no channel message per row. The writer swaps the whole inbox for its empty
/// spare whenever it wakes.
#[derive(Default)]
pub(super) struct Inbox {
    rows: Mutex<Finished>,
    /// Wakes the writer: a row arrived in an empty inbox.
    pub(super) arrived: Notify,
    /// Wakes senders that found the inbox full: the writer took it.
    pub(super) taken: Notify,
}

#[derive(Default)]
pub(super) struct Finished {
    pub(super) report: Vec<u8>,
    /// Emit records of requests sent (or about to be), in the order they were made.
    pub(super) emit: Vec<u8>,
    /// Per row: status, attempts, and the last attempt's latency.
    pub(super) rows: Vec<(Status, u32, Option<Duration>)>,
    /// Per row, where its line ends in `report` (to name the rows a failed write lost).
    pub(super) ends: Vec<usize>,
    /// The failed or cancelled rows among them (see [`Batch::failures`]).
    pub(super) failures: Vec<FailedRow>,
    /// The record permits of the sent rows among them, freed once they are in the report.
    pub(super) permits: Vec<OwnedSemaphorePermit>,
}

impl Finished {
    pub(super) fn clear(&mut self) {
        self.report.clear();
        self.emit.clear();
        self.rows.clear();
        self.ends.clear();
        self.failures.clear();
        self.permits.clear();
    }

    /// The report lines of the sent rows (at least one attempt) among these.
    pub(super) fn sent_lines(&self) -> impl Iterator<Item = &[u8]> {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        self.rows
            .iter()
            .zip(starts.zip(self.ends.iter().copied()))
            .filter(|((_, attempts, _), _)| *attempts > 0)
            .map(|(_, (start, end))| &self.report[start..end])
    }
}

/// Raised by the writer at the first write error on the report or the emit file.
#[derive(Default)]
pub(crate) struct WriteFailure {
    failed: AtomicBool,
    raised: Notify,
}

impl WriteFailure {
    pub(super) fn raise(&self) {
        self.failed.store(true, Ordering::Release);
        self.raised.notify_waiters();
    }

    pub(crate) fn has_failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    /// Resolves once a write failed.
    pub(crate) async fn wait(&self) {
        loop {
            // Registered before the check, so a raise between the two is not missed.
            let raised = self.raised.notified();
            tokio::pin!(raised);
            raised.as_mut().enable();
            if self.has_failed() {
                return;
            }
            raised.await;
        }
    }
}

impl Inbox {
    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, Finished> {
        self.rows.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Report bytes the inbox holds before senders wait for the writer to take them (so memory
/// does not grow when the disk is slower than the rows).
const INBOX_BYTES: usize = 1 << 20;

/// Rows rendered together, in order: report lines, the emit records that go with them, and
/// per row its status and attempts (no latency: nothing was sent for these rows).
#[derive(Default)]
pub(crate) struct Batch {
    pub report: Vec<u8>,
    pub emit: Vec<u8>,
    pub rows: Vec<(Status, u32)>,
    /// The failed or cancelled rows among them: what their stderr lines name.
    pub failures: Vec<FailedRow>,
}

/// A batch on its way, holding one of [`BATCHES_IN_FLIGHT`] permits until the writer is done.
pub(crate) struct Sent {
    pub(super) batch: Batch,
    pub(super) _permit: tokio::sync::OwnedSemaphorePermit,
}

impl Batch {
    pub(crate) fn is_empty(&self) -> bool {
        self.rows.is_empty() && self.emit.is_empty()
    }

    pub(crate) fn len(&self) -> usize {
        self.rows.len()
    }

    pub(super) fn clear(&mut self) {
        self.report.clear();
        self.emit.clear();
        self.rows.clear();
        self.failures.clear();
    }
}

#[derive(Clone)]
pub(crate) struct OutputSender {
    tx: mpsc::Sender<Output>,
    inbox: Arc<Inbox>,
    format: ReportFormat,
    /// Batches the writer has emptied, for the dispatcher to fill again (no allocation per
    /// batch once the run is going, and none freed on the other thread).
    spare: Arc<Mutex<Vec<Batch>>>,
    /// Bounds the batches queued for the writer, so memory does not grow with the plan when
    /// the dispatcher renders faster than the disk takes it (the channel bounds messages,
    /// and a batch is hundreds of rows).
    in_flight: Arc<tokio::sync::Semaphore>,
    failure: Arc<WriteFailure>,
}

impl OutputSender {
    /// The senders' side of the writer that reads `tx`'s other end and `inbox`.
    pub(super) fn new(
        tx: mpsc::Sender<Output>,
        inbox: Arc<Inbox>,
        format: ReportFormat,
        spare: Arc<Mutex<Vec<Batch>>>,
        failure: Arc<WriteFailure>,
    ) -> OutputSender {
        OutputSender {
            tx,
            inbox,
            format,
            spare,
            in_flight: Arc::new(tokio::sync::Semaphore::new(BATCHES_IN_FLIGHT)),
            failure,
        }
    }

    /// Raised at the first write error (see the module documentation).
    pub(crate) fn write_failure(&self) -> Arc<WriteFailure> {
        Arc::clone(&self.failure)
    }

    /// A row a sender finished, with its last attempt's latency when one was sent: rendered
    /// into the writer's inbox. `true` when the inbox is full: await
    /// [`OutputSender::room`] before finishing another row.
    /// `permit`, the row's record permit, is freed once the report holds the row.
    pub(crate) fn finished(
        &self,
        row: &RowView<'_>,
        latency: Option<Duration>,
        permit: Option<OwnedSemaphorePermit>,
    ) -> bool {
        let failure = failure_of(row);
        let (first, full) = {
            let mut inbox = self.inbox.lock();
            let first = inbox.rows.is_empty();
            render_row(self.format, row, &mut inbox.report);
            let end = inbox.report.len();
            inbox.ends.push(end);
            inbox.rows.push((row.status, row.attempts, latency));
            if let Some(f) = failure {
                inbox.failures.push(f);
            }
            if let Some(p) = permit {
                inbox.permits.push(p);
            }
            (first, inbox.report.len() >= INBOX_BYTES)
        };
        if first {
            self.inbox.arrived.notify_one();
        }
        full
    }

    /// Waits until the writer has taken a full inbox.
    pub(crate) async fn room(&self) {
        loop {
            // Registered before the check, so the writer's take between them is not missed.
            let taken = self.inbox.taken.notified();
            tokio::pin!(taken);
            taken.as_mut().enable();
            if self.inbox.lock().report.len() < INBOX_BYTES {
                return;
            }
            taken.await;
        }
    }

    /// An empty batch to fill, reused when the writer has one spare.
    pub(crate) fn batch(&self) -> Batch {
        self.spare
            .lock()
            .ok()
            .and_then(|mut s| s.pop())
            .unwrap_or_default()
    }

    /// Adds a row to `batch`, rendered in the report's format.
    pub(crate) fn push(&self, batch: &mut Batch, row: &RowView<'_>) {
        render_row(self.format, row, &mut batch.report);
        batch.rows.push((row.status, row.attempts));
        if let Some(f) = failure_of(row) {
            batch.failures.push(f);
        }
    }

    /// Sends `batch` (if it holds anything) and leaves an empty one in its place.
    pub(crate) async fn send_batch(&self, batch: &mut Batch) {
        if batch.is_empty() {
            return;
        }
        // The semaphore is never closed.
        let Ok(permit) = Arc::clone(&self.in_flight).acquire_owned().await else {
            return;
        };
        let full = std::mem::replace(batch, self.batch());
        let sent = Sent {
            batch: full,
            _permit: permit,
        };
        let _ = self.tx.send(Output::Batch(sent)).await;
    }

    /// A live request's emit record (newline included), put in the inbox before the request
    /// is sent: it is written in the same round as the rows finished before it, so a failing
    /// emit file is noticed while only the rows in flight are unrecorded there.
    pub(crate) async fn emit(&self, line: Vec<u8>) {
        let first = {
            let mut inbox = self.inbox.lock();
            let first = inbox.rows.is_empty() && inbox.emit.is_empty();
            inbox.emit.extend_from_slice(&line);
            first
        };
        if first {
            self.inbox.arrived.notify_one();
        }
    }

    /// Asks the writer to put every row it received on disk, and waits until it has (or is
    /// gone). For a second Ctrl-C, just before the process exits.
    pub(crate) async fn flush_now(&self) {
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        if self.tx.send(Output::FlushNow(done_tx)).await.is_ok() {
            let _ = tokio::task::spawn_blocking(move || done_rx.recv()).await;
        }
    }
}

/// What the stderr line of a failed or cancelled row names; `None` for other rows.
fn failure_of(row: &RowView<'_>) -> Option<FailedRow> {
    matches!(row.status, Status::Failed | Status::Cancelled).then(|| FailedRow {
        row: row.row,
        source: row.source.to_string(),
        target: row.target.to_string(),
        message_id: row.message_id.to_string(),
        status: row.status.as_str(),
        http_status: row.http_status,
        code: row.code.to_string(),
        message: row.message.to_string(),
    })
}

/// Batches sent and not yet written, at most.
pub(crate) const BATCHES_IN_FLIGHT: usize = 4;
