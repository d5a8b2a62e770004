//! The one place that writes files during a run: a task on the runtime that receives finished
//! rows and emitted requests, appends them to the report and emit files, and counts. (It was
//! a thread of its own; as a task, a finished row wakes it without waking a parked thread —
//! a thread wake-up per row was a large share of a fast live run's time.)
//!
//! Durability: after each batch of whatever has arrived, both files are flushed to the OS, so a
//! crash or `kill -9` loses no row that reached this thread; the report is also `fsync`ed at
//! most once a second (on the blocking pool, so no sender waits for the disk) and at the end. Rows that finished but were still in the channel at a
//! `kill -9` (microseconds' worth) are the only ones that can be missing. (The writer does not
//! gather live rows over a time window to save wake-ups: a confirmed row must reach the file
//! at once, as the SPEC promises.)
//!
//! The thread never ends the process: a second Ctrl-C asks it to put what it has on disk and
//! confirm ([`OutputSender::flush_now`]); the signal handler then exits. Failed rows are kept
//! (the first [`MAX_FAILED_LINES`]) and counted for the lines that name them at the end.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tokio::sync::mpsc;

use crate::emit::EmitWriter;
use crate::log::{FailedRow, MAX_FAILED_LINES};
use crate::report::{render_row, ReportFormat, ReportWriter, RowView, Status};

use super::progress::Counters;

pub enum Output {
    /// One finished row, rendered, and the latency of its last attempt when one was sent.
    Row(RowDone),
    /// Several finished rows (and their emit records), rendered by the dispatcher.
    Batch(Sent),
    /// One rendered emit record, newline included.
    Emit(Vec<u8>),
    /// Second Ctrl-C: put what arrived before this on disk, then confirm.
    FlushNow(std::sync::mpsc::Sender<()>),
}

/// One finished row: its rendered report line and what the tally counts.
pub struct RowDone {
    pub line: Vec<u8>,
    pub status: Status,
    pub attempts: u32,
    pub latency: Option<Duration>,
    /// For a failed or cancelled row: what the stderr line names.
    pub failure: Option<Box<FailedRow>>,
}

/// Rows rendered together, in order: report lines, the emit records that go with them, and
/// per row its status and attempts (no latency: nothing was sent for these rows).
#[derive(Default)]
pub struct Batch {
    pub report: Vec<u8>,
    pub emit: Vec<u8>,
    pub rows: Vec<(Status, u32)>,
    /// The failed or cancelled rows among them (see [`RowDone::failure`]).
    pub failures: Vec<FailedRow>,
}

/// A batch on its way, holding one of [`BATCHES_IN_FLIGHT`] permits until the writer is done.
pub struct Sent {
    batch: Batch,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty() && self.emit.is_empty()
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    fn clear(&mut self) {
        self.report.clear();
        self.emit.clear();
        self.rows.clear();
        self.failures.clear();
    }
}

/// What the writer counted, for the summary.
#[derive(Debug)]
pub struct Tally {
    pub rows: u64,
    pub attempts: u64,
    /// Attempts after each row's first.
    pub retries: u64,
    pub latency: Histogram<u64>,
    pub io_error: Option<String>,
    /// The first failed or cancelled rows, in the order they finished.
    pub failed_rows: Vec<FailedRow>,
    /// Failed or cancelled rows beyond those.
    pub failed_more: u64,
}

impl Tally {
    fn new() -> Tally {
        Tally {
            rows: 0,
            attempts: 0,
            retries: 0,
            latency: new_histogram(),
            io_error: None,
            failed_rows: Vec::new(),
            failed_more: 0,
        }
    }

    fn record_failure(&mut self, failure: FailedRow) {
        if self.failed_rows.len() < MAX_FAILED_LINES {
            self.failed_rows.push(failure);
        } else {
            self.failed_more += 1;
        }
    }

    /// The tally of a writer that died: nothing counted, and why.
    pub fn lost(why: &str) -> Tally {
        Tally {
            io_error: Some(why.to_string()),
            ..Tally::new()
        }
    }
}

#[derive(Clone)]
pub struct OutputSender {
    tx: mpsc::Sender<Output>,
    format: ReportFormat,
    /// Batches the writer has emptied, for the dispatcher to fill again (no allocation per
    /// batch once the run is going, and none freed on the other thread).
    spare: Arc<Mutex<Vec<Batch>>>,
    /// Bounds the batches queued for the writer, so memory does not grow with the plan when
    /// the dispatcher renders faster than the disk takes it (the channel bounds messages,
    /// and a batch is hundreds of rows).
    in_flight: Arc<tokio::sync::Semaphore>,
}

impl OutputSender {
    /// The report's format, for rendering rows before they are sent.
    pub fn format(&self) -> ReportFormat {
        self.format
    }

    /// Renders one finished row for [`OutputSender::row`].
    pub fn render(&self, row: &RowView<'_>, latency: Option<Duration>) -> RowDone {
        let mut line = Vec::with_capacity(256);
        render_row(self.format, row, &mut line);
        RowDone {
            line,
            status: row.status,
            attempts: row.attempts,
            latency,
            failure: failure_of(row).map(Box::new),
        }
    }

    pub async fn row(&self, done: RowDone) {
        // The receiver lives until every sender is gone, so a send only fails after an I/O
        // error stopped the writer; that error is reported by the writer itself.
        let _ = self.tx.send(Output::Row(done)).await;
    }

    /// An empty batch to fill, reused when the writer has one spare.
    pub fn batch(&self) -> Batch {
        self.spare
            .lock()
            .ok()
            .and_then(|mut s| s.pop())
            .unwrap_or_default()
    }

    /// Adds a row to `batch`, rendered in the report's format.
    pub fn push(&self, batch: &mut Batch, row: &RowView<'_>) {
        render_row(self.format, row, &mut batch.report);
        batch.rows.push((row.status, row.attempts));
        if let Some(f) = failure_of(row) {
            batch.failures.push(f);
        }
    }

    /// Sends `batch` (if it holds anything) and leaves an empty one in its place.
    pub async fn send_batch(&self, batch: &mut Batch) {
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

    pub async fn emit(&self, line: Vec<u8>) {
        let _ = self.tx.send(Output::Emit(line)).await;
    }

    /// Asks the writer to put every row it received on disk, and waits until it has (or is
    /// gone). For a second Ctrl-C, just before the process exits.
    pub async fn flush_now(&self) {
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

/// Spare batches kept for reuse, at most.
const SPARE_BATCHES: usize = 8;

/// Batches sent and not yet written, at most.
pub const BATCHES_IN_FLIGHT: usize = 4;

/// Messages the writer handles in one round before it hands the files to the OS and lets
/// other tasks run.
const ROUND: usize = 512;

/// The writer task.
pub struct OutputThread {
    handle: tokio::task::JoinHandle<Tally>,
}

impl OutputThread {
    /// Starts the writer task on the current runtime. (Kept fallible for the callers: an
    /// error means nothing was sent.)
    pub fn start(
        report: ReportWriter,
        emit: Option<EmitWriter>,
        counters: Arc<Counters>,
    ) -> std::io::Result<(OutputSender, OutputThread)> {
        let (tx, rx) = mpsc::channel(8192);
        let format = report.format();
        let spare = Arc::new(Mutex::new(Vec::new()));
        let spare_w = Arc::clone(&spare);
        let handle =
            tokio::spawn(async move { write_loop(rx, report, emit, &counters, &spare_w).await });
        let in_flight = Arc::new(tokio::sync::Semaphore::new(BATCHES_IN_FLIGHT));
        Ok((
            OutputSender {
                tx,
                format,
                spare,
                in_flight,
            },
            OutputThread { handle },
        ))
    }

    /// Waits for the writer to drain (all senders must be dropped first).
    pub async fn join(self) -> Tally {
        self.handle
            .await
            .unwrap_or_else(|_| Tally::lost("the report writer stopped unexpectedly"))
    }
}

fn new_histogram() -> Histogram<u64> {
    // Microseconds from 1 µs to 1 hour, 3 significant digits; creation cannot fail for these bounds.
    Histogram::new_with_bounds(1, 3_600_000_000, 3)
        .unwrap_or_else(|_| Histogram::new(3).unwrap_or_else(|_| unreachable!()))
}

async fn write_loop(
    mut rx: mpsc::Receiver<Output>,
    mut report: ReportWriter,
    mut emit: Option<EmitWriter>,
    counters: &Counters,
    spare: &Mutex<Vec<Batch>>,
) -> Tally {
    let mut tally = Tally::new();
    let mut last_sync = Instant::now();
    let mut confirm: Vec<std::sync::mpsc::Sender<()>> = Vec::new();
    // A background fsync of the report, at most one at a time.
    let mut syncing: Option<tokio::task::JoinHandle<()>> = None;
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        let mut handled = 0usize;
        while let Some(msg) = next.take() {
            handled += 1;
            match msg {
                Output::Row(done) => {
                    counters.record(done.status);
                    tally.rows += 1;
                    tally.attempts += u64::from(done.attempts);
                    tally.retries += u64::from(done.attempts.saturating_sub(1));
                    if let Some(f) = done.failure {
                        tally.record_failure(*f);
                    }
                    if let Some(l) = done.latency {
                        let _ = tally
                            .latency
                            .record((l.as_micros() as u64).clamp(1, 3_600_000_000));
                    }
                    if let Err(e) = report.write_rendered(&done.line) {
                        tally
                            .io_error
                            .get_or_insert(format!("cannot write the report: {e}"));
                    }
                }
                Output::Batch(sent) => {
                    let Sent { mut batch, _permit } = sent;
                    // Emit records first, as when each was sent before its row finished.
                    if let Some(w) = emit.as_mut() {
                        if let Err(e) = w.write_raw(&batch.emit) {
                            tally
                                .io_error
                                .get_or_insert(format!("cannot write the emit file: {e}"));
                        }
                    }
                    for f in batch.failures.drain(..) {
                        tally.record_failure(f);
                    }
                    for &(status, attempts) in &batch.rows {
                        counters.record(status);
                        tally.rows += 1;
                        tally.attempts += u64::from(attempts);
                        tally.retries += u64::from(attempts.saturating_sub(1));
                    }
                    if let Err(e) = report.write_rendered(&batch.report) {
                        tally
                            .io_error
                            .get_or_insert(format!("cannot write the report: {e}"));
                    }
                    batch.clear();
                    if let Ok(mut spare) = spare.lock() {
                        if spare.len() < SPARE_BATCHES {
                            spare.push(batch);
                        }
                    }
                }
                Output::Emit(line) => {
                    if let Some(w) = emit.as_mut() {
                        if let Err(e) = w.write_raw(&line) {
                            tally
                                .io_error
                                .get_or_insert(format!("cannot write the emit file: {e}"));
                        }
                    }
                }
                Output::FlushNow(done) => confirm.push(done),
            }
            if handled < ROUND {
                next = rx.try_recv().ok();
            }
        }
        flush(&mut report, emit.as_mut(), &mut tally);
        if !confirm.is_empty() {
            let _ = report.sync();
            for done in confirm.drain(..) {
                let _ = done.send(());
            }
        }
        if last_sync.elapsed() >= Duration::from_secs(1)
            && syncing.as_ref().is_none_or(|s| s.is_finished())
        {
            if let Ok(file) = report.file_to_sync() {
                syncing = Some(tokio::task::spawn_blocking(move || {
                    let _ = file.sync_data();
                }));
            }
            last_sync = Instant::now();
        }
        if handled >= ROUND {
            tokio::task::yield_now().await;
        }
    }
    if let Some(s) = syncing {
        let _ = s.await;
    }
    flush(&mut report, emit.as_mut(), &mut tally);
    if let Err(e) = report.sync() {
        tally
            .io_error
            .get_or_insert(format!("cannot write the report: {e}"));
    }
    tally
}

fn flush(report: &mut ReportWriter, emit: Option<&mut EmitWriter>, tally: &mut Tally) {
    if let Err(e) = report.flush() {
        tally
            .io_error
            .get_or_insert(format!("cannot write the report: {e}"));
    }
    if let Some(w) = emit {
        if let Err(e) = w.flush() {
            tally
                .io_error
                .get_or_insert(format!("cannot write the emit file: {e}"));
        }
    }
}
