//! `--resume REPORT`: which rows an earlier run already did.
//!
//! A row counts as done when the report shows it `ok`, or `skipped` with code `done_earlier`
//! (done by a run before that one), so a chain of resumed runs works. Done rows are matched by
//! identity ([`crate::identity`]), not position. Only 64-bit hashes of done identities are
//! held in memory.
//!
//! The new report starts as a copy of the done rows (status `skipped`, code `done_earlier`),
//! written to a temporary file and renamed over the report path before anything is sent, so
//! at every instant the report on disk holds every confirmed row — even when `--resume` and
//! `--report` name the same file, and even after `kill -9`. The copy is made in the *current*
//! plan's order and numbering: a done row keeps its earlier outcome (HTTP status, attempts,
//! time) but takes its `row` and `source` from the plan as it is now, and a done row that was
//! removed from the plan is not copied — so the report still has exactly one row per plan row
//! after rows were added or removed elsewhere.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use crate::executor::row_view;
use crate::identity::Identities;
use crate::plan::{Plan, Problem, Row};
use crate::report::{
    for_each_report_row, render_row, timestamp, ReportWriter, RowResult, RowView, Status,
};

/// Code of a row skipped because an earlier run did it.
pub const DONE_EARLIER: &str = "done_earlier";

pub fn is_done(row: &RowResult) -> bool {
    row.status == Status::Ok || (row.status == Status::Skipped && row.code == DONE_EARLIER)
}

fn key_hash(key: &str) -> u64 {
    let d = Sha256::digest(key.as_bytes());
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    u64::from_le_bytes(b)
}

/// What an earlier report said about a done row, kept for the copy (a few bytes a row).
#[derive(Clone, Copy, Debug)]
struct Earlier {
    http_status: Option<u16>,
    attempts: u32,
    duration_ms: u64,
    finished_at: Option<DateTime<Utc>>,
}

/// The identities an earlier report shows done.
#[derive(Debug, Default)]
pub struct DoneSet {
    keys: HashMap<u64, Earlier>,
    pub report: PathBuf,
}

impl DoneSet {
    pub fn contains(&self, key: &str) -> bool {
        self.keys.contains_key(&key_hash(key))
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Reads `report` and checks that it comes from `plan`: every target it names must be a
    /// target of the plan, and every source file one of the plan's files.
    pub fn load(report: &Path, plan: &Plan) -> Result<DoneSet, String> {
        let file_names: HashSet<String> = plan
            .files()
            .iter()
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect();
        let mut set = DoneSet {
            keys: HashMap::new(),
            report: report.to_path_buf(),
        };
        let mut foreign: Option<String> = None;
        for_each_report_row(report, |row| {
            if foreign.is_some() {
                return;
            }
            if !plan.targets.iter().any(|t| t.name == row.target) {
                foreign = Some(format!(
                    "its row {} is for target `{}`, which the plan does not have",
                    row.row, row.target
                ));
                return;
            }
            let file = row
                .source
                .rsplit_once(':')
                .map_or(row.source.as_str(), |(f, _)| f);
            let name = Path::new(file)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if !file_names.contains(&name) {
                foreign = Some(format!(
                    "its row {} comes from `{file}`, which is not a file of this plan",
                    row.row
                ));
                return;
            }
            if is_done(&row) {
                let earlier = Earlier {
                    http_status: row.http_status,
                    attempts: row.attempts,
                    duration_ms: row.duration_ms,
                    finished_at: DateTime::parse_from_rfc3339(&row.finished_at)
                        .ok()
                        .map(|t| t.with_timezone(&Utc)),
                };
                // A row done twice (a report appended to by hand) keeps its first outcome.
                set.keys.entry(key_hash(&row.key)).or_insert(earlier);
            }
        })?;
        if let Some(why) = foreign {
            return Err(format!(
                "{} is not a report of {}: {why}",
                report.display(),
                plan.path.display()
            ));
        }
        Ok(set)
    }

    /// Writes the rows of `rows` (the run's validated rows, in plan order) that the earlier
    /// report shows done into `out`, as `skipped`/`done_earlier` with the plan's current row
    /// numbers and sources, built by the executor's row view builder. `ids` must be fresh (it
    /// numbers repeated rows as it goes); `mine` says which rows this run covers (a shard's).
    /// Returns how many were written.
    pub fn copy_done(
        &self,
        out: &mut ReportWriter,
        plan: &Plan,
        rows: impl Iterator<Item = Result<Row, Problem>>,
        mut ids: Identities,
        mine: impl Fn(&Row) -> bool,
    ) -> Result<u64, String> {
        let shown = self.report.display().to_string();
        let format = out.format();
        let mut line = Vec::with_capacity(256);
        let mut n = 0;
        for row in rows {
            let row = row.map_err(|p| format!("cannot read the validated rows: {p}"))?;
            let target = &plan.targets[row.target];
            // Every row's key is taken, in order, so occurrence numbers match the run's.
            let key = ids.key(&row, &target.name);
            let Some(earlier) = self.keys.get(&key_hash(&key)) else {
                continue;
            };
            if !mine(&row) {
                continue;
            }
            let finished_at = earlier.finished_at.map(timestamp).unwrap_or_default();
            let message =
                format!("done in an earlier run (report {shown}, finished {finished_at})");
            let view = RowView {
                http_status: earlier.http_status,
                attempts: earlier.attempts,
                duration_ms: earlier.duration_ms,
                ..row_view(
                    target,
                    &row,
                    &key,
                    Status::Skipped,
                    DONE_EARLIER,
                    &message,
                    &finished_at,
                )
            };
            line.clear();
            render_row(format, &view, &mut line);
            out.write_rendered(&line)
                .map_err(|e| format!("cannot write the report: {e}"))?;
            n += 1;
        }
        Ok(n)
    }
}
