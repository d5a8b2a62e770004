//! The one place that writes files during a run: a dedicated thread that receives finished
//! rows and emitted requests, appends them to the report and emit files, and counts.
//!
//! Durability: after each batch of whatever has arrived, both files are flushed to the OS, so a
//! crash or `kill -9` loses no row that reached this thread; the report is also `fsync`ed at
//! most once a second and at the end. Rows that finished but were still in the channel at a
//! `kill -9` (microseconds' worth) are the only ones that can be missing.

use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tokio::sync::mpsc;

use crate::emit::EmitWriter;
use crate::exit::Exit;
use crate::report::{render_row, ReportFormat, ReportWriter, RowView, Status};

use super::progress::Counters;

pub enum Output {
    /// One finished row, rendered, and the latency of its last attempt when one was sent.
    Row(RowDone),
    /// Several finished rows (and their emit records), rendered by the dispatcher.
    Batch(Sent),
    /// One rendered emit record, newline included.
    Emit(Vec<u8>),
    /// Second Ctrl-C: write what arrived before this, then exit the process at once.
    Abort,
}

/// One finished row: its rendered report line and what the tally counts.
pub struct RowDone {
    pub line: Vec<u8>,
    pub status: Status,
    pub attempts: u32,
    pub latency: Option<Duration>,
}

/// Rows rendered together, in order: report lines, the emit records that go with them, and
/// per row its status and attempts (no latency: nothing was sent for these rows).
#[derive(Default)]
pub struct Batch {
    pub report: Vec<u8>,
    pub emit: Vec<u8>,
    pub rows: Vec<(Status, u32)>,
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
}

impl Tally {
    fn new() -> Tally {
        Tally {
            rows: 0,
            attempts: 0,
            retries: 0,
            latency: new_histogram(),
            io_error: None,
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

    pub async fn abort(&self) {
        let _ = self.tx.send(Output::Abort).await;
    }
}

/// Spare batches kept for reuse, at most.
const SPARE_BATCHES: usize = 8;

/// Batches sent and not yet written, at most.
pub const BATCHES_IN_FLIGHT: usize = 4;

pub struct OutputThread {
    handle: JoinHandle<Tally>,
}

impl OutputThread {
    pub fn start(
        report: ReportWriter,
        emit: Option<EmitWriter>,
        counters: Arc<Counters>,
    ) -> (OutputSender, OutputThread) {
        let (tx, rx) = mpsc::channel(8192);
        let format = report.format();
        let spare = Arc::new(Mutex::new(Vec::new()));
        let spare_w = Arc::clone(&spare);
        let handle = std::thread::Builder::new()
            .name("reactbatch-writer".into())
            .spawn(move || write_loop(rx, report, emit, &counters, &spare_w))
            .unwrap_or_else(|e| {
                eprintln!("reactbatch: cannot start the report writer thread: {e}");
                std::process::exit(i32::from(Exit::Invalid.code()))
            });
        let in_flight = Arc::new(tokio::sync::Semaphore::new(BATCHES_IN_FLIGHT));
        (
            OutputSender {
                tx,
                format,
                spare,
                in_flight,
            },
            OutputThread { handle },
        )
    }

    /// Waits for the writer to drain (all senders must be dropped first).
    pub fn join(self) -> Tally {
        self.handle
            .join()
            .unwrap_or_else(|_| Tally::lost("the report writer thread stopped unexpectedly"))
    }
}

fn new_histogram() -> Histogram<u64> {
    // Microseconds from 1 µs to 1 hour, 3 significant digits; creation cannot fail for these bounds.
    Histogram::new_with_bounds(1, 3_600_000_000, 3)
        .unwrap_or_else(|_| Histogram::new(3).unwrap_or_else(|_| unreachable!()))
}

fn write_loop(
    mut rx: mpsc::Receiver<Output>,
    mut report: ReportWriter,
    mut emit: Option<EmitWriter>,
    counters: &Counters,
    spare: &Mutex<Vec<Batch>>,
) -> Tally {
    let mut tally = Tally::new();
    let mut last_sync = Instant::now();
    let mut abort = false;
    while let Some(first) = rx.blocking_recv() {
        let mut next = Some(first);
        while let Some(msg) = next.take() {
            match msg {
                Output::Row(done) => {
                    counters.record(done.status);
                    tally.rows += 1;
                    tally.attempts += u64::from(done.attempts);
                    tally.retries += u64::from(done.attempts.saturating_sub(1));
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
                Output::Abort => abort = true,
            }
            next = rx.try_recv().ok();
        }
        flush(&mut report, emit.as_mut(), &mut tally);
        if abort {
            let _ = report.sync();
            std::process::exit(i32::from(Exit::Interrupted.code()));
        }
        if last_sync.elapsed() >= Duration::from_secs(1) {
            let _ = report.sync();
            last_sync = Instant::now();
        }
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
