//! What the page is made from: the summary JSON as the page reads it, and the report's rows
//! gathered in one pass into a [`RowDigest`] (counts, sent rows, the first failures, the
//! outline of a dry run).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use hdrhistogram::Histogram;
use serde::Deserialize;

use super::LISTED_FAILURES;
use crate::outputs::report::{RowResult, Status};
use crate::outputs::series::Series;

/// A listed message is cut to this many characters (a provider may answer with a page).
const MESSAGE_CHARS: usize = 200;

/// What the page takes from the summary JSON (a run's own, or a file given to `report`).
/// Every field has a default: a summary from an older version still makes a page.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct PageSummary {
    pub plan: String,
    pub report: String,
    pub dry_run: bool,
    pub rows: u64,
    pub counts: BTreeMap<String, u64>,
    pub attempts: u64,
    pub retries: u64,
    pub elapsed_ms: u64,
    /// How long the live run takes at the lanes' pace (shown for a dry run).
    pub estimated_ms: Option<u64>,
    pub digest: Option<String>,
    pub interrupted: bool,
    pub exit_code: Option<u8>,
    pub targets: Vec<PageTarget>,
    pub lanes: Vec<PageLane>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct PageTarget {
    pub name: String,
    pub provider: String,
    pub rate: String,
    pub reacts: u64,
    pub unreacts: u64,
    pub replacing: Option<u64>,
    pub deferred: u64,
    pub top_emoji: Vec<TopEmoji>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct TopEmoji {
    pub emoji: String,
    pub rows: u64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct PageLane {
    pub name: String,
    pub provider: String,
    pub rate: String,
    pub requests: u64,
    pub achieved_rate: Option<f64>,
    pub rate_limited: u64,
    pub failed: u64,
    pub series: Option<Series>,
}

/// A failed or cancelled row as the table lists it: the row stderr names, in the page.
pub(crate) use crate::outputs::log::FailedRow as Failure;

/// One row that was sent, for the latency chart and the timeline.
pub(super) struct Sent {
    pub(super) finished_ms: i64,
    pub(super) duration_ms: u32,
    pub(super) target: u32,
    pub(super) ok: bool,
}

/// What the page needs from the report's rows, gathered in one pass: counts, the sent rows
/// (a few bytes each), the first failures, and per target the outline of a dry run.
pub(crate) struct RowDigest {
    pub(super) counts: BTreeMap<Status, u64>,
    pub(super) rows: u64,
    pub(super) sent: Vec<Sent>,
    pub(super) targets: Vec<String>,
    target_index: HashMap<String, u32>,
    pub(super) outline: Vec<Outline>,
    pub(super) failures: Vec<Failure>,
    pub(super) failures_total: u64,
    pub(super) ok_latency: Histogram<u64>,
    pub(super) failed_latency: Histogram<u64>,
    pub(super) first_ms: Option<i64>,
    pub(super) last_ms: Option<i64>,
}

#[derive(Default)]
pub(super) struct Outline {
    pub(super) reacts: u64,
    pub(super) unreacts: u64,
    pub(super) emoji: HashMap<String, u64>,
}

fn histogram() -> Histogram<u64> {
    // Milliseconds up to a day, three significant digits; saturating, never failing.
    Histogram::new_with_bounds(1, 86_400_000, 3)
        .unwrap_or_else(|_| Histogram::new(3).unwrap_or_else(|_| unreachable!()))
}

impl Default for RowDigest {
    fn default() -> Self {
        RowDigest {
            counts: BTreeMap::new(),
            rows: 0,
            sent: Vec::new(),
            targets: Vec::new(),
            target_index: HashMap::new(),
            outline: Vec::new(),
            failures: Vec::new(),
            failures_total: 0,
            ok_latency: histogram(),
            failed_latency: histogram(),
            first_ms: None,
            last_ms: None,
        }
    }
}

/// Codes of rows this run did not send: copied from an earlier report.
const NOT_SENT_CODES: [&str; 3] = ["done_earlier", "failed_earlier", "not_in_plan"];

impl RowDigest {
    pub(crate) fn add(&mut self, row: RowResult) {
        self.rows += 1;
        *self.counts.entry(row.status).or_default() += 1;
        let target = match self.target_index.get(&row.target) {
            Some(&i) => i,
            None => {
                let i = self.targets.len() as u32;
                self.target_index.insert(row.target.clone(), i);
                self.targets.push(row.target.clone());
                self.outline.push(Outline::default());
                i
            }
        };
        if row.status == Status::Planned {
            if let Some(o) = self.outline.get_mut(target as usize) {
                if row.action == "unreact" {
                    o.unreacts += 1;
                } else {
                    o.reacts += 1;
                    *o.emoji.entry(row.emoji.clone()).or_default() += 1;
                }
            }
        }
        let finished = chrono::DateTime::parse_from_rfc3339(&row.finished_at)
            .ok()
            .map(|t| t.timestamp_millis());
        let sent = matches!(row.status, Status::Ok | Status::Failed)
            && row.attempts > 0
            && !NOT_SENT_CODES.contains(&row.code.as_str());
        if let (true, Some(finished_ms)) = (sent, finished) {
            let start =
                finished_ms.saturating_sub(i64::try_from(row.duration_ms).unwrap_or(i64::MAX));
            self.first_ms = Some(self.first_ms.map_or(start, |f| f.min(start)));
            self.last_ms = Some(self.last_ms.map_or(finished_ms, |l| l.max(finished_ms)));
            let ok = row.status == Status::Ok;
            let hist = if ok {
                &mut self.ok_latency
            } else {
                &mut self.failed_latency
            };
            hist.saturating_record(row.duration_ms.max(1));
            self.sent.push(Sent {
                finished_ms,
                duration_ms: u32::try_from(row.duration_ms).unwrap_or(u32::MAX),
                target,
                ok,
            });
        }
        if matches!(row.status, Status::Failed | Status::Cancelled) {
            self.failures_total += 1;
            if self.failures.len() < LISTED_FAILURES {
                let mut message: String = row.message.chars().take(MESSAGE_CHARS).collect();
                if message.len() < row.message.len() {
                    message.push('…');
                }
                self.failures.push(Failure {
                    row: row.row,
                    source: row.source,
                    target: row.target,
                    message_id: row.message_id,
                    status: row.status.as_str(),
                    http_status: row.http_status,
                    code: row.code,
                    message,
                });
            }
        }
    }

    pub(super) fn count(&self, status: Status) -> u64 {
        self.counts.get(&status).copied().unwrap_or(0)
    }

    /// A report of planned rows only is a dry run's.
    pub(super) fn looks_dry(&self) -> bool {
        self.count(Status::Planned) > 0 && self.count(Status::Ok) + self.count(Status::Failed) == 0
    }
}

/// Reads a report (CSV or JSON Lines) into what the page needs.
pub(crate) fn digest_report(path: &Path) -> Result<RowDigest, String> {
    let mut digest = RowDigest::default();
    crate::outputs::report::for_each_report_row(path, |row| digest.add(row))?;
    Ok(digest)
}

/// Reads a summary JSON file; an error names the file, line and column.
pub(crate) fn read_summary(path: &Path) -> Result<PageSummary, String> {
    let text =
        std::fs::read(path).map_err(|e| format!("cannot read summary {}: {e}", path.display()))?;
    serde_json::from_slice(&text).map_err(|e| {
        format!(
            "{}:{}:{}: not a summary JSON: {e}",
            path.display(),
            e.line(),
            e.column()
        )
    })
}
