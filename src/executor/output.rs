//! The one place that writes files during a run: a task on the runtime that receives finished
//! rows and emitted requests, appends them to the report and emit files, and counts. (It was
//! a thread of its own; as a task, a finished row wakes it without waking a parked thread —
//! a thread wake-up per row was a large share of a fast live run's time.)
//!
//! Rows the lanes' senders finish are rendered straight into the writer's inbox (one buffer
//! behind a lock, the writer woken when it was empty); rows the dispatcher settles, emit
//! records and the second Ctrl-C's flush come through a channel.
//!
//! Durability: after each round of whatever has arrived, both files are flushed to the OS, so
//! a crash or `kill -9` loses no row that reached the file; the report is also `fsync`ed at
//! most once a second (on the blocking pool, so no sender waits for the disk) and at the end.
//! Rows that finished but were still in the inbox or the channel at a `kill -9` (microseconds'
//! worth) are the only ones that can be missing. (The writer does not gather live rows over a
//! time window to save wake-ups: a confirmed row must reach the file at once, as the SPEC
//! promises.)
//!
//! The writer never ends the process: a second Ctrl-C asks it to put what it has on disk and
//! confirm ([`OutputSender::flush_now`]); the signal handler then exits. Failed rows are kept
//! (the first [`MAX_FAILED_LINES`]) and counted for the lines that name them at the end.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tokio::sync::{mpsc, Notify};

use crate::emit::EmitWriter;
use crate::log::{FailedRow, MAX_FAILED_LINES};
use crate::report::{render_row, ReportFormat, ReportWriter, RowView, Status};

use super::progress::Counters;

pub enum Output {
    /// Several finished rows (and their emit records), rendered by the dispatcher.
    Batch(Sent),
    /// One rendered emit record, newline included.
    Emit(Vec<u8>),
    /// Second Ctrl-C: put what arrived before this on disk, then confirm.
    FlushNow(std::sync::mpsc::Sender<()>),
}

/// Rows the lanes' senders finished, rendered straight into the writer's next buffer: no
/// allocation and no channel message per row. The writer swaps the whole inbox for its empty
/// spare whenever it wakes.
#[derive(Default)]
struct Inbox {
    rows: Mutex<Finished>,
    /// Wakes the writer: a row arrived in an empty inbox.
    arrived: Notify,
    /// Wakes senders that found the inbox full: the writer took it.
    taken: Notify,
}

#[derive(Default)]
struct Finished {
    report: Vec<u8>,
    /// Per row: status, attempts, and the last attempt's latency.
    rows: Vec<(Status, u32, Option<Duration>)>,
    /// The failed or cancelled rows among them (see [`Batch::failures`]).
    failures: Vec<FailedRow>,
}

impl Finished {
    fn clear(&mut self) {
        self.report.clear();
        self.rows.clear();
        self.failures.clear();
    }
}

impl Inbox {
    fn lock(&self) -> std::sync::MutexGuard<'_, Finished> {
        self.rows.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Report bytes the inbox holds before senders wait for the writer to take them (so memory
/// does not grow when the disk is slower than the rows).
const INBOX_BYTES: usize = 1 << 20;

/// Rows rendered together, in order: report lines, the emit records that go with them, and
/// per row its status and attempts (no latency: nothing was sent for these rows).
#[derive(Default)]
pub struct Batch {
    pub report: Vec<u8>,
    pub emit: Vec<u8>,
    pub rows: Vec<(Status, u32)>,
    /// The failed or cancelled rows among them: what their stderr lines name.
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

    /// Keeps the first write error (the run reports it at the end).
    fn check(&mut self, written: std::io::Result<()>, what: &str) {
        if let Err(e) = written {
            self.io_error
                .get_or_insert(format!("cannot write the {what}: {e}"));
        }
    }

    /// One written row, counted.
    fn count(
        &mut self,
        counters: &Counters,
        status: Status,
        attempts: u32,
        latency: Option<Duration>,
    ) {
        counters.record(status);
        self.rows += 1;
        self.attempts += u64::from(attempts);
        self.retries += u64::from(attempts.saturating_sub(1));
        if let Some(l) = latency {
            let _ = self
                .latency
                .record((l.as_micros() as u64).clamp(1, 3_600_000_000));
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
    inbox: Arc<Inbox>,
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

    /// A row a sender finished, with its last attempt's latency when one was sent: rendered
    /// into the writer's inbox. `true` when the inbox is full: await
    /// [`OutputSender::room`] before finishing another row.
    pub fn finished(&self, row: &RowView<'_>, latency: Option<Duration>) -> bool {
        let failure = failure_of(row);
        let (first, full) = {
            let mut inbox = self.inbox.lock();
            let first = inbox.rows.is_empty();
            render_row(self.format, row, &mut inbox.report);
            inbox.rows.push((row.status, row.attempts, latency));
            if let Some(f) = failure {
                inbox.failures.push(f);
            }
            (first, inbox.report.len() >= INBOX_BYTES)
        };
        if first {
            self.inbox.arrived.notify_one();
        }
        full
    }

    /// Waits until the writer has taken a full inbox.
    pub async fn room(&self) {
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
        let inbox = Arc::new(Inbox::default());
        let inbox_w = Arc::clone(&inbox);
        let handle = tokio::spawn(async move {
            write_loop(rx, &inbox_w, report, emit, &counters, &spare_w).await
        });
        let in_flight = Arc::new(tokio::sync::Semaphore::new(BATCHES_IN_FLIGHT));
        Ok((
            OutputSender {
                tx,
                inbox,
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
    inbox: &Inbox,
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
    // What the inbox held, swapped for this empty one each round.
    let mut taken = Finished::default();
    let mut open = true;
    while open {
        let mut next = tokio::select! {
            msg = rx.recv() => {
                open = msg.is_some();
                msg
            }
            _ = inbox.arrived.notified() => None,
        };
        let mut handled = 0usize;
        while let Some(msg) = next.take() {
            handled += 1;
            match msg {
                Output::Batch(sent) => {
                    let Sent { mut batch, _permit } = sent;
                    // Emit records first, as when each was sent before its row finished.
                    if let Some(w) = emit.as_mut() {
                        tally.check(w.write_raw(&batch.emit), "emit file");
                    }
                    for f in batch.failures.drain(..) {
                        tally.record_failure(f);
                    }
                    for &(status, attempts) in &batch.rows {
                        tally.count(counters, status, attempts, None);
                    }
                    tally.check(report.write_rendered(&batch.report), "report");
                    batch.clear();
                    if let Ok(mut spare) = spare.lock() {
                        if spare.len() < SPARE_BATCHES {
                            spare.push(batch);
                        }
                    }
                }
                Output::Emit(line) => {
                    if let Some(w) = emit.as_mut() {
                        tally.check(w.write_raw(&line), "emit file");
                    }
                }
                Output::FlushNow(done) => confirm.push(done),
            }
            if handled < ROUND {
                next = rx.try_recv().ok();
            }
        }
        // The rows finished so far, after the messages: every row finished before a
        // `FlushNow` was sent is in the inbox by now, and on the disk before it is confirmed.
        // Once the channel has closed, no sender is left to add any.
        std::mem::swap(&mut *inbox.lock(), &mut taken);
        inbox.taken.notify_waiters();
        for f in taken.failures.drain(..) {
            tally.record_failure(f);
        }
        for &(status, attempts, latency) in &taken.rows {
            tally.count(counters, status, attempts, latency);
        }
        tally.check(report.write_rendered(&taken.report), "report");
        taken.clear();
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
    tally.check(report.sync(), "report");
    tally
}

fn flush(report: &mut ReportWriter, emit: Option<&mut EmitWriter>, tally: &mut Tally) {
    tally.check(report.flush(), "report");
    if let Some(w) = emit {
        tally.check(w.flush(), "emit file");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{read_report, SourceRef};
    use futures::FutureExt;

    fn view(row: u64, status: Status, message: &str) -> RowView<'_> {
        RowView {
            row,
            source: SourceRef::Text("p.csv:2"),
            target: "t",
            provider: "ogmma",
            action: "react",
            message_id: "m",
            emoji: "👍",
            status,
            http_status: Some(200),
            code: "",
            message,
            attempts: 2,
            duration_ms: 1,
            finished_at: "2026-12-05T05:00:00.000Z",
            key: "k",
            scope_id: "",
            channel_id: "",
        }
    }

    #[tokio::test]
    async fn a_full_inbox_holds_its_senders_until_the_writer_takes_it_and_loses_no_row() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("r.csv");
        let counters = Arc::new(Counters::default());
        let (out, thread) = OutputThread::start(
            ReportWriter::create(&path).expect("report"),
            None,
            Arc::clone(&counters),
        )
        .expect("writer");
        // On this one-thread runtime the writer cannot run before the test awaits: rows pile
        // up in the inbox until it says full.
        let long = "x".repeat(1000);
        let mut rows = 0u64;
        loop {
            rows += 1;
            let status = if rows.is_multiple_of(100) {
                Status::Failed
            } else {
                Status::Ok
            };
            if out.finished(&view(rows, status, &long), Some(Duration::from_millis(3))) {
                break;
            }
        }
        assert!(rows > 500, "full after {rows} rows of 1 kB");
        assert!(out.room().now_or_never().is_none(), "room while full");
        // Awaiting lets the writer take the inbox; then there is room again.
        out.room().await;
        assert!(!out.finished(&view(rows + 1, Status::Ok, ""), None));
        drop(out);
        let tally = thread.join().await;
        assert_eq!(tally.rows, rows + 1);
        assert_eq!(tally.attempts, 2 * (rows + 1));
        assert_eq!(tally.latency.len(), rows);
        assert_eq!(
            tally.failed_rows.len() as u64,
            rows / 100,
            "every 100th row failed"
        );
        assert!(tally.io_error.is_none());
        assert_eq!(
            counters.done.load(std::sync::atomic::Ordering::Relaxed),
            rows + 1
        );
        let report = read_report(&path).expect("read report");
        let numbers: Vec<u64> = report.iter().map(|r| r.row).collect();
        assert_eq!(numbers, (1..=rows + 1).collect::<Vec<_>>());
        assert_eq!(report[0].message, long);
    }
}
