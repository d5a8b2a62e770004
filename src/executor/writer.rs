//! The writer task: each round it takes what arrived (the dispatcher's batches through the
//! channel, the senders' rows from the inbox), appends it to the report and emit files, hands
//! both to the OS, and counts the round once the report holds it (see [`super::output`] for
//! the guarantees).

use std::io::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::outputs::emit::EmitWriter;
use crate::outputs::log::FailedRow;
use crate::outputs::report::{ReportWriter, Status};

use super::output::{Batch, Finished, Inbox, Output, OutputSender, Sent, WriteFailure};
use super::progress::Counters;
use super::tally::Tally;

/// Spare batches kept for reuse, at most.
const SPARE_BATCHES: usize = 8;

/// Messages the writer handles in one round before it hands the files to the OS and lets
/// other tasks run.
const ROUND: usize = 512;

/// The writer task.
pub(crate) struct OutputThread {
    handle: tokio::task::JoinHandle<Tally>,
}

impl OutputThread {
    /// Starts the writer task on the current runtime. (Kept fallible for the callers: an
    /// error means nothing was sent.)
    pub(crate) fn start(
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
        Ok((
            OutputSender::new(tx, inbox, format, spare, failure),
            OutputThread { handle },
        ))
    }

    /// Waits for the writer to drain (all senders must be dropped first).
    pub(crate) async fn join(self) -> Tally {
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
        if next.is_none() && open {
            // Woken by a sender's row: the senders already runnable finish theirs first, in
            // this same turn of the scheduler (no timer), so one write takes them all rather
            // than one write and one wake-up for every row or two.
            tokio::task::yield_now().await;
        }
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
    use crate::outputs::report::{read_report, RowView, SourceRef};
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
