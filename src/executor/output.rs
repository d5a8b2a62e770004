//! The one place that writes files during a run: a dedicated thread that receives finished
//! rows and emitted requests, appends them to the report and emit files, and counts.
//!
//! Durability: after each batch of whatever has arrived, both files are flushed to the OS, so a
//! crash or `kill -9` loses no row that reached this thread; the report is also `fsync`ed at
//! most once a second and at the end. Rows that finished but were still in the channel at a
//! `kill -9` (microseconds' worth) are the only ones that can be missing.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tokio::sync::mpsc;

use crate::emit::EmitWriter;
use crate::exit::Exit;
use crate::report::{ReportWriter, RowResult};

use super::progress::Counters;

pub enum Output {
    /// A finished row, and the latency of its last attempt when one was sent.
    Row(Box<RowResult>, Option<Duration>),
    /// One rendered emit record, newline included.
    Emit(Vec<u8>),
    /// Second Ctrl-C: write what arrived before this, then exit the process at once.
    Abort,
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
}

impl OutputSender {
    pub async fn row(&self, row: RowResult, latency: Option<Duration>) {
        // The receiver lives until every sender is gone, so a send only fails after an I/O
        // error stopped the writer; that error is reported by the writer itself.
        let _ = self.tx.send(Output::Row(Box::new(row), latency)).await;
    }

    pub async fn emit(&self, line: Vec<u8>) {
        let _ = self.tx.send(Output::Emit(line)).await;
    }

    pub async fn abort(&self) {
        let _ = self.tx.send(Output::Abort).await;
    }
}

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
        let handle = std::thread::Builder::new()
            .name("reactbatch-writer".into())
            .spawn(move || write_loop(rx, report, emit, &counters))
            .unwrap_or_else(|e| {
                eprintln!("reactbatch: cannot start the report writer thread: {e}");
                std::process::exit(i32::from(Exit::Invalid.code()))
            });
        (OutputSender { tx }, OutputThread { handle })
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
) -> Tally {
    let mut tally = Tally::new();
    let mut last_sync = Instant::now();
    let mut abort = false;
    while let Some(first) = rx.blocking_recv() {
        let mut next = Some(first);
        while let Some(msg) = next.take() {
            match msg {
                Output::Row(row, latency) => {
                    counters.record(row.status);
                    tally.rows += 1;
                    tally.attempts += u64::from(row.attempts);
                    tally.retries += u64::from(row.attempts.saturating_sub(1));
                    if let Some(l) = latency {
                        let _ = tally
                            .latency
                            .record((l.as_micros() as u64).clamp(1, 3_600_000_000));
                    }
                    if let Err(e) = report.write(&row) {
                        tally
                            .io_error
                            .get_or_insert(format!("cannot write the report: {e}"));
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
