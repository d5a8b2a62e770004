//! What the report writer counts as rows reach the report: for the summary and the live
//! progress.

use std::time::Duration;

use hdrhistogram::Histogram;

use crate::outputs::log::{FailedRow, MAX_FAILED_LINES};
use crate::outputs::report::Status;

use super::progress::Counters;

/// What the writer counted, for the summary.
#[derive(Debug)]
pub(crate) struct Tally {
    pub rows: u64,
    pub attempts: u64,
    /// Attempts after each row's first.
    pub retries: u64,
    pub latency: Histogram<u64>,
    pub io_error: Option<String>,
    /// Sent rows (at least one attempt) the report holds.
    pub recorded_sent: u64,
    /// Sent rows the report could not take (a write error): listed on stderr.
    pub unrecorded_sent: u64,
    /// The first failed or cancelled rows, in the order they finished.
    pub failed_rows: Vec<FailedRow>,
    /// Failed or cancelled rows beyond those.
    pub failed_more: u64,
}

impl Tally {
    pub(super) fn new() -> Tally {
        Tally {
            rows: 0,
            attempts: 0,
            retries: 0,
            latency: new_histogram(),
            io_error: None,
            recorded_sent: 0,
            unrecorded_sent: 0,
            failed_rows: Vec::new(),
            failed_more: 0,
        }
    }

    /// Keeps the first write error (the run reports it at the end); `false` on an error.
    pub(super) fn check(&mut self, written: std::io::Result<()>, what: &str) -> bool {
        match written {
            Ok(()) => true,
            Err(e) => {
                let first = self.io_error.is_none();
                let text = self
                    .io_error
                    .get_or_insert(format!("cannot write the {what}: {e}"));
                if first {
                    crate::outputs::log::error(&format!("reactbatch run: {text}; sending stopped"));
                }
                false
            }
        }
    }

    /// One written row, counted.
    pub(super) fn count(
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

    pub(super) fn record_failure(&mut self, failure: FailedRow) {
        if self.failed_rows.len() < MAX_FAILED_LINES {
            self.failed_rows.push(failure);
        } else {
            self.failed_more += 1;
        }
    }

    /// The tally of a writer that died: nothing counted, and why.
    pub(crate) fn lost(why: &str) -> Tally {
        Tally {
            io_error: Some(why.to_string()),
            ..Tally::new()
        }
    }
}

fn new_histogram() -> Histogram<u64> {
    // Microseconds from 1 µs to 1 hour, 3 significant digits; creation cannot fail for these bounds.
    Histogram::new_with_bounds(1, 3_600_000_000, 3)
        .unwrap_or_else(|_| Histogram::new(3).unwrap_or_else(|_| unreachable!()))
}
