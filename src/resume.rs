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
//! `--report` name the same file, and even after `kill -9`.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::plan::Plan;
use crate::report::{for_each_report_row, ReportWriter, RowResult, Status};

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

/// The identities an earlier report shows done.
#[derive(Debug, Default)]
pub struct DoneSet {
    keys: HashSet<u64>,
    pub report: PathBuf,
}

impl DoneSet {
    pub fn contains(&self, key: &str) -> bool {
        self.keys.contains(&key_hash(key))
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
            keys: HashSet::new(),
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
                set.keys.insert(key_hash(&row.key));
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

    /// Copies the done rows of the earlier report into `out` as `skipped`/`done_earlier`,
    /// once per identity. Returns how many were copied.
    pub fn copy_done(&self, out: &mut ReportWriter) -> Result<u64, String> {
        let mut copied = HashSet::new();
        let mut n = 0;
        let mut err = None;
        let shown = self.report.display().to_string();
        for_each_report_row(&self.report, |mut row| {
            if err.is_some() || !is_done(&row) || !copied.insert(key_hash(&row.key)) {
                return;
            }
            if row.status == Status::Ok {
                row.status = Status::Skipped;
                row.code = DONE_EARLIER.to_string();
                row.message = format!(
                    "done in an earlier run (report {shown}, finished {})",
                    row.finished_at
                );
            }
            match out.write(&row) {
                Ok(()) => n += 1,
                Err(e) => err = Some(format!("cannot write the report: {e}")),
            }
        })?;
        match err {
            Some(e) => Err(e),
            None => Ok(n),
        }
    }
}
