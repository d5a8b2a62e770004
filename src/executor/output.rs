//! The one place that writes files during a run: a task on the runtime that receives finished
//! rows and emitted requests, appends them to the report and emit files, and counts. A task,
//! not a thread of its own: a finished row wakes it without waking a parked thread.
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
//! (the first [`crate::outputs::log::MAX_FAILED_LINES`]) and counted for the lines that name them at the end.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, Notify};

use std::io::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::OwnedSemaphorePermit;

use crate::outputs::emit::EmitWriter;
use crate::outputs::log::FailedRow;
use crate::outputs::report::{render_row, ReportFormat, ReportWriter, RowView, Status};

use super::progress::Counters;
use super::tally::Tally;

pub enum Output {
    /// Several finished rows (and their emit records), rendered by the dispatcher.
    Batch(Sent),
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
    /// Emit records of requests sent (or about to be), in the order they were made.
    emit: Vec<u8>,
    /// Per row: status, attempts, and the last attempt's latency.
    rows: Vec<(Status, u32, Option<Duration>)>,
    /// Per row, where its line ends in `report` (to name the rows a failed write lost).
    ends: Vec<usize>,
    /// The failed or cancelled rows among them (see [`Batch::failures`]).
    failures: Vec<FailedRow>,
    /// The record permits of the sent rows among them, freed once they are in the report.
    permits: Vec<OwnedSemaphorePermit>,
}

impl Finished {
    fn clear(&mut self) {
        self.report.clear();
        self.emit.clear();
        self.rows.clear();
        self.ends.clear();
        self.failures.clear();
        self.permits.clear();
    }

    /// The report lines of the sent rows (at least one attempt) among these.
    fn sent_lines(&self) -> impl Iterator<Item = &[u8]> {
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
pub struct WriteFailure {
    failed: AtomicBool,
    raised: Notify,
}

impl WriteFailure {
    fn raise(&self) {
        self.failed.store(true, Ordering::Release);
        self.raised.notify_waiters();
    }

    pub fn has_failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    /// Resolves once a write failed.
    pub async fn wait(&self) {
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
    failure: Arc<WriteFailure>,
}

impl OutputSender {
    /// Raised at the first write error (see the module documentation).
    pub fn write_failure(&self) -> Arc<WriteFailure> {
        Arc::clone(&self.failure)
    }

    /// The report's format, for rendering rows before they are sent.
    pub fn format(&self) -> ReportFormat {
        self.format
    }

    /// A row a sender finished, with its last attempt's latency when one was sent: rendered
    /// into the writer's inbox. `true` when the inbox is full: await
    /// [`OutputSender::room`] before finishing another row.
    /// `permit`, the row's record permit, is freed once the report holds the row.
    pub fn finished(
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

    /// A live request's emit record (newline included), put in the inbox before the request
    /// is sent: it is written in the same round as the rows finished before it, so a failing
    /// emit file is noticed while only the rows in flight are unrecorded there.
    pub async fn emit(&self, line: Vec<u8>) {
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
        let failure = Arc::new(WriteFailure::default());
        let failure_w = Arc::clone(&failure);
        let handle = tokio::spawn(async move {
            write_loop(rx, &inbox_w, report, emit, &counters, &spare_w, &failure_w).await
        });
        let in_flight = Arc::new(tokio::sync::Semaphore::new(BATCHES_IN_FLIGHT));
        Ok((
            OutputSender {
                tx,
                inbox,
                format,
                spare,
                in_flight,
                failure,
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

/// The files the writer appends to, and whether each still takes writes.
struct Files {
    report: Option<ReportWriter>,
    emit: Option<EmitWriter>,
}

impl Files {
    /// Appends to the report, unless it failed before; `false` when it does not hold `rows`.
    fn report(&mut self, tally: &mut Tally, failure: &WriteFailure, rows: &[u8]) -> bool {
        let Some(report) = self.report.as_mut() else {
            return false;
        };
        let written = report.write_rendered(rows);
        self.report_result(tally, failure, written)
    }

    fn report_result(
        &mut self,
        tally: &mut Tally,
        failure: &WriteFailure,
        result: std::io::Result<()>,
    ) -> bool {
        if tally.check(result, "report") {
            return true;
        }
        // Never written again, and what it buffered is dropped, not written at exit: the
        // rows it held are named on stderr as not recorded.
        if let Some(report) = self.report.take() {
            report.abandon();
        }
        failure.raise();
        false
    }

    fn emit(&mut self, tally: &mut Tally, failure: &WriteFailure, bytes: &[u8]) {
        if let Some(w) = self.emit.as_mut() {
            if !tally.check(w.write_raw(bytes), "emit file") {
                self.emit = None;
                failure.raise();
            }
        }
    }

    /// Hands both files' buffers to the OS; `false` when the report did not take them.
    fn flush(&mut self, tally: &mut Tally, failure: &WriteFailure) -> bool {
        if let Some(w) = self.emit.as_mut() {
            if !tally.check(w.flush(), "emit file") {
                self.emit = None;
                failure.raise();
            }
        }
        match self.report.as_mut() {
            Some(report) => {
                let flushed = report.flush();
                self.report_result(tally, failure, flushed)
            }
            None => false,
        }
    }
}

/// Sent rows the report could not take, as their report lines on stderr (with one line
/// saying what they are, before the first).
fn unrecorded(tally: &mut Tally, lines: impl Iterator<Item = impl AsRef<[u8]>>) {
    let mut err = std::io::stderr().lock();
    for line in lines {
        if tally.unrecorded_sent == 0 {
            let _ = writeln!(
                err,
                "reactbatch run: rows sent but not in the report, as report lines:"
            );
        }
        tally.unrecorded_sent += 1;
        let _ = err.write_all(line.as_ref());
    }
}

async fn write_loop(
    mut rx: mpsc::Receiver<Output>,
    inbox: &Inbox,
    report: ReportWriter,
    emit: Option<EmitWriter>,
    counters: &Counters,
    spare: &Mutex<Vec<Batch>>,
    failure: &WriteFailure,
) -> Tally {
    let mut w = Writer {
        tally: Tally::new(),
        files: Files {
            report: Some(report),
            emit,
        },
        failure,
        last_sync: Instant::now(),
        confirm: Vec::new(),
        syncing: None,
        settled: Vec::new(),
        settled_failures: Vec::new(),
    };
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
        let mut held = true;
        while let Some(msg) = next.take() {
            handled += 1;
            held &= w.take_message(msg, spare);
            if handled < ROUND {
                next = rx.try_recv().ok();
            }
        }
        // The rows finished so far, after the messages: every row finished before a
        // `FlushNow` was sent is in the inbox by now, and on the disk before it is confirmed.
        // Once the channel has closed, no sender is left to add any.
        std::mem::swap(&mut *inbox.lock(), &mut taken);
        inbox.taken.notify_waiters();
        held &= w.write_inbox(&taken).await;
        w.count_round(held, counters, &mut taken);
        // Frees the sent rows' record permits.
        taken.clear();
        w.confirm_flushes();
        w.sync_in_background();
        if handled >= ROUND {
            tokio::task::yield_now().await;
        }
    }
    w.finish().await
}

/// The writer task's state between rounds.
struct Writer<'a> {
    tally: Tally,
    files: Files,
    failure: &'a WriteFailure,
    last_sync: Instant,
    /// Second Ctrl-C's flushes waiting for this round to reach the disk.
    confirm: Vec<std::sync::mpsc::Sender<()>>,
    /// A background fsync of the report, at most one at a time.
    syncing: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    /// The dispatcher's rows of this round, counted once the round is in the report.
    settled: Vec<(Status, u32)>,
    settled_failures: Vec<FailedRow>,
}

impl Writer<'_> {
    /// One message from the channel; `false` when the report did not take its rows.
    fn take_message(&mut self, msg: Output, spare: &Mutex<Vec<Batch>>) -> bool {
        match msg {
            Output::Batch(sent) => {
                let Sent { mut batch, _permit } = sent;
                // Emit records first, as when each was sent before its row finished.
                self.files.emit(&mut self.tally, self.failure, &batch.emit);
                self.settled_failures.append(&mut batch.failures);
                self.settled.extend_from_slice(&batch.rows);
                let held = self
                    .files
                    .report(&mut self.tally, self.failure, &batch.report);
                batch.clear();
                if let Ok(mut spare) = spare.lock() {
                    if spare.len() < SPARE_BATCHES {
                        spare.push(batch);
                    }
                }
                held
            }
            Output::FlushNow(done) => {
                self.confirm.push(done);
                true
            }
        }
    }

    /// The inbox's rows, then both files handed to the OS and a finished fsync's result;
    /// `false` when the report did not take them.
    async fn write_inbox(&mut self, taken: &Finished) -> bool {
        let (tally, failure) = (&mut self.tally, self.failure);
        self.files.emit(tally, failure, &taken.emit);
        let mut held = self.files.report(tally, failure, &taken.report);
        held &= self.files.flush(tally, failure);
        if let Some(s) = self.syncing.take_if(|s| s.is_finished()) {
            // An fsync that failed is a write error: rows handed to the OS may not be on disk.
            let synced = s.await.unwrap_or_else(|e| Err(std::io::Error::other(e)));
            held &= self.files.report_result(&mut self.tally, failure, synced);
        }
        held
    }

    /// Counts the round once it is in the report (`held`); else its sent rows go to stderr.
    fn count_round(&mut self, held: bool, counters: &Counters, taken: &mut Finished) {
        let tally = &mut self.tally;
        if held {
            for f in self
                .settled_failures
                .drain(..)
                .chain(taken.failures.drain(..))
            {
                tally.record_failure(f);
            }
            for &(status, attempts) in &self.settled {
                tally.count(counters, status, attempts, None);
            }
            for &(status, attempts, latency) in &taken.rows {
                tally.count(counters, status, attempts, latency);
                tally.recorded_sent += u64::from(attempts > 0);
            }
        } else {
            // Not in the report (this round's write failed, or an earlier one did): the sent
            // rows go to stderr; rows never sent are simply not recorded (a resume runs them).
            unrecorded(tally, taken.sent_lines());
            self.settled_failures.clear();
        }
        self.settled.clear();
    }

    /// Puts the report on disk and confirms, when a second Ctrl-C asked for it.
    fn confirm_flushes(&mut self) {
        if self.confirm.is_empty() {
            return;
        }
        if let Some(report) = self.files.report.as_mut() {
            let _ = report.sync();
        }
        for done in self.confirm.drain(..) {
            let _ = done.send(());
        }
    }

    /// Starts the report's fsync on the blocking pool, once a second at most and one at a time.
    fn sync_in_background(&mut self) {
        if self.last_sync.elapsed() < Duration::from_secs(1)
            || self.syncing.as_ref().is_some_and(|s| !s.is_finished())
        {
            return;
        }
        if let Some(report) = self.files.report.as_mut() {
            match report.file_to_sync() {
                Ok(file) => {
                    self.syncing = Some(tokio::task::spawn_blocking(move || file.sync_data()));
                }
                Err(e) => {
                    self.files
                        .report_result(&mut self.tally, self.failure, Err(e));
                }
            }
        }
        self.last_sync = Instant::now();
    }

    /// The end of the run: the last fsync awaited, both files flushed, the report synced.
    async fn finish(mut self) -> Tally {
        let (tally, failure) = (&mut self.tally, self.failure);
        if let Some(s) = self.syncing {
            let synced = s.await.unwrap_or_else(|e| Err(std::io::Error::other(e)));
            self.files.report_result(tally, failure, synced);
        }
        self.files.flush(tally, failure);
        if let Some(report) = self.files.report.as_mut() {
            let synced = report.sync();
            self.files.report_result(tally, failure, synced);
        }
        self.tally
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outputs::report::{read_report, SourceRef};
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
            if out.finished(
                &view(rows, status, &long),
                Some(Duration::from_millis(3)),
                None,
            ) {
                break;
            }
        }
        assert!(rows > 500, "full after {rows} rows of 1 kB");
        assert!(out.room().now_or_never().is_none(), "room while full");
        // Awaiting lets the writer take the inbox; then there is room again.
        out.room().await;
        assert!(!out.finished(&view(rows + 1, Status::Ok, ""), None, None));
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
