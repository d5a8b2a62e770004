//! `--resume REPORT`: which rows an earlier run already did, or already failed for good.
//!
//! A row counts as done when the report shows it `ok`, or `skipped` with code `done_earlier`
//! (done by a run before that one), so a chain of resumed runs works. A row *failed for good*
//! when the provider answered with a final refusal ([`is_final_failure`]: 400, 404 and the
//! like), or it is `skipped` with code `failed_earlier`; `--resume` skips those too, so a
//! message that no longer exists is not tried again on every cron tick, unless
//! `--retry-failed`. Rows that failed for reasons that may pass (timeouts, 5xx, 429 after the
//! time budget, connection errors, 401/403, cancelled) run again. Rows are matched by identity
//! ([`crate::identity`]), not position. Only 64-bit hashes of their identities (and, for final
//! failures, the provider's code) are held in memory.
//!
//! The new report starts as a copy of the skipped rows (status `skipped`, code `done_earlier`
//! or `failed_earlier`),
//! written to a temporary file and renamed over the report path before anything is sent, so
//! at every instant the report on disk holds every confirmed row — even when `--resume` and
//! `--report` name the same file, and even after `kill -9`. The copy is made in the *current*
//! plan's order and numbering: a done row keeps its earlier outcome (HTTP status, attempts,
//! time) but takes its `row` and `source` from the plan as it is now, and a done row that was
//! removed from the plan is not copied as a plan row — so the report still has exactly one
//! row per plan row after rows were added or removed elsewhere.
//!
//! A resume never drops history: every row of the earlier report whose identity matches no
//! row of the plan (the plan was edited: a row removed, or a field changed that makes it a
//! different request, such as a target's `user_id`) is kept in the new report as it was, code
//! `not_in_plan` ([`DoneSet::keep_not_in_plan`]). Such rows are not sent, not counted with the
//! run's rows, and do not change the exit code; the run says how many there are and, by the
//! plan row now at the same `file:line`, which of the report's fields changed.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use crate::identity::Identities;
use crate::outputs::report::{
    for_each_report_row, render_row, row_view, timestamp, ReportWriter, RowResult, RowView, Status,
};
use crate::plan::{Plan, Problem, Row};

/// Code of a row skipped because an earlier run did it.
pub(crate) const DONE_EARLIER: &str = "done_earlier";

/// Code of a row skipped because an earlier run got a final refusal for it.
pub(crate) const FAILED_EARLIER: &str = "failed_earlier";

/// Code of an earlier report's row that matches no row of the plan, kept by a resumed run.
pub(crate) const NOT_IN_PLAN: &str = "not_in_plan";

/// How a `done_earlier` row's message starts.
const DONE_MESSAGE: &str = "done in an earlier run";

/// How a `failed_earlier` row's message starts.
const FAILED_MESSAGE: &str = "failed in an earlier run: ";

pub(crate) fn is_done(row: &RowResult) -> bool {
    row.status == Status::Ok
        || (row.status == Status::Skipped
            && (row.code == DONE_EARLIER
                // A `done_earlier` row later kept as `not_in_plan` keeps its message.
                || (row.code == NOT_IN_PLAN && row.message.starts_with(DONE_MESSAGE))))
}

/// Whether a report row is a failure that sending again would only repeat: the provider
/// answered and refused the request itself — a 4xx other than 401/403 (a credential can be
/// fixed), 408 and 429 (time), or a 2xx that said no (Ogmma's `{"success": false}`) — or an
/// earlier resumed run already skipped it as such.
pub(crate) fn is_final_failure(row: &RowResult) -> bool {
    match row.status {
        Status::Failed => match row.http_status {
            Some(s) if (200..300).contains(&s) => true,
            Some(s) if (400..500).contains(&s) => !matches!(s, 401 | 403 | 408 | 429),
            _ => false,
        },
        Status::Skipped => {
            row.code == FAILED_EARLIER
                || (row.code == NOT_IN_PLAN && row.message.starts_with(FAILED_MESSAGE))
        }
        _ => false,
    }
}

/// The 64-bit hash identities are held as in memory.
pub(crate) fn key_hash(key: &str) -> u64 {
    let d = Sha256::digest(key.as_bytes());
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    u64::from_le_bytes(b)
}

/// What an earlier report said about a skipped row, kept for the copy (a few bytes a row).
#[derive(Clone, Debug)]
struct Earlier {
    http_status: Option<u16>,
    attempts: u32,
    duration_ms: u64,
    finished_at: Option<DateTime<Utc>>,
    /// `None` when the row was done; for a final failure, why (the provider's code and text).
    failure: Option<Box<str>>,
}

/// The identities an earlier report shows done (and, for `--resume`, failed for good).
#[derive(Debug, Default)]
pub(crate) struct DoneSet {
    keys: HashMap<u64, Earlier>,
    pub report: PathBuf,
}

impl DoneSet {
    pub(crate) fn contains(&self, key: &str) -> bool {
        self.keys.contains_key(&key_hash(key))
    }

    /// The rows `report` shows done (for `undo`); see [`DoneSet::load_for_resume`].
    pub(crate) fn load(report: &Path, plan: &Plan) -> Result<DoneSet, String> {
        DoneSet::read(report, plan, false)
    }

    /// The rows `--resume report` skips: those done and, unless `retry_failed`, those that
    /// failed for good ([`is_final_failure`]).
    pub(crate) fn load_for_resume(
        report: &Path,
        plan: &Plan,
        retry_failed: bool,
    ) -> Result<DoneSet, String> {
        DoneSet::read(report, plan, !retry_failed)
    }

    /// Reads `report` and checks that it comes from `plan`: every target it names must be a
    /// target of the plan, and every source file one of the plan's files.
    fn read(report: &Path, plan: &Plan, skip_final_failures: bool) -> Result<DoneSet, String> {
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
            let failure = if is_done(&row) {
                None
            } else if skip_final_failures && is_final_failure(&row) {
                Some(failure_text(&row))
            } else {
                return;
            };
            {
                let earlier = Earlier {
                    http_status: row.http_status,
                    attempts: row.attempts,
                    duration_ms: row.duration_ms,
                    finished_at: DateTime::parse_from_rfc3339(&row.finished_at)
                        .ok()
                        .map(|t| t.with_timezone(&Utc)),
                    failure: failure.map(String::into_boxed_str),
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
    /// report shows done (or failed for good) into `out`, as `skipped` with code
    /// `done_earlier` (or `failed_earlier`), with the plan's current row numbers and sources,
    /// built by the executor's row view builder. `ids` must be fresh (it numbers repeated rows
    /// as it goes); `mine` says which rows this run covers (a shard's). Returns how many were
    /// written, and the hashes of every plan row's identity (for
    /// [`DoneSet::keep_not_in_plan`]).
    pub(crate) fn copy_done(
        &self,
        out: &mut ReportWriter,
        plan: &Plan,
        rows: impl Iterator<Item = Result<Row, Problem>>,
        mut ids: Identities,
        mine: impl Fn(&Row) -> bool,
    ) -> Result<(u64, HashSet<u64>), String> {
        let shown = self.report.display().to_string();
        let format = out.format();
        let mut line = Vec::with_capacity(256);
        let mut n = 0;
        let mut plan_keys = HashSet::new();
        for row in rows {
            let row = row.map_err(|p| format!("cannot read the validated rows: {p}"))?;
            let target = &plan.targets[row.target];
            // Every row's key is taken, in order, so occurrence numbers match the run's.
            let key = ids.key(&row, &target.name);
            let hash = key_hash(&key);
            plan_keys.insert(hash);
            let Some(earlier) = self.keys.get(&hash) else {
                continue;
            };
            if !mine(&row) {
                continue;
            }
            let finished_at = earlier.finished_at.map(timestamp).unwrap_or_default();
            let message = match &earlier.failure {
                None => format!("{DONE_MESSAGE} (report {shown}, finished {finished_at})"),
                Some(why) => format!(
                    "{FAILED_MESSAGE}{why} (report {shown}, finished {finished_at}); --retry-failed sends it again"
                ),
            };
            let code = if earlier.failure.is_some() {
                FAILED_EARLIER
            } else {
                DONE_EARLIER
            };
            let view = RowView {
                http_status: earlier.http_status,
                attempts: earlier.attempts,
                duration_ms: earlier.duration_ms,
                ..row_view(
                    target,
                    &row,
                    &key,
                    Status::Skipped,
                    code,
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
        Ok((n, plan_keys))
    }

    /// Writes every row of the earlier report whose identity is not in `plan_keys` into
    /// `out`, as it was but for code `not_in_plan`, and returns what they were (for
    /// [`NotInPlan::compare`]). Rows of other shards are plan rows too: only rows no plan
    /// row matches are kept.
    pub(crate) fn keep_not_in_plan(
        &self,
        out: &mut ReportWriter,
        plan_keys: &HashSet<u64>,
    ) -> Result<NotInPlan, String> {
        let format = out.format();
        let mut line = Vec::with_capacity(256);
        let mut kept = NotInPlan::default();
        let mut failed = None;
        for_each_report_row(&self.report, |row| {
            if failed.is_some() || plan_keys.contains(&key_hash(&row.key)) {
                return;
            }
            line.clear();
            render_row(
                format,
                &RowView {
                    code: NOT_IN_PLAN,
                    ..row.view()
                },
                &mut line,
            );
            if let Err(e) = out.write_rendered(&line) {
                failed = Some(format!("cannot write the report: {e}"));
                return;
            }
            kept.count += 1;
            if kept.rows.len() >= COMPARED {
                return;
            }
            kept.rows.push(KeptRow {
                source: row.source,
                target: row.target,
                action: row.action,
                message_id: row.message_id,
                emoji: row.emoji,
            });
        })?;
        match failed {
            Some(e) => Err(e),
            None => Ok(kept),
        }
    }
}

/// The report's fields of an earlier row kept as `not_in_plan`: what can be compared with the
/// plan row now at its `file:line`.
#[derive(Clone, Debug, PartialEq, Eq)]
struct KeptRow {
    source: String,
    target: String,
    action: String,
    message_id: String,
    emoji: String,
}

/// Kept rows compared with the plan at most: what changed shows in the first ones, and an
/// edit that changed every row of a million-row plan must not hold a million rows in memory.
const COMPARED: usize = 100_000;

/// The earlier report's rows that match no row of the plan, as kept in the new report.
#[derive(Debug, Default)]
pub(crate) struct NotInPlan {
    count: u64,
    /// The first [`COMPARED`] of them.
    rows: Vec<KeptRow>,
}

impl NotInPlan {
    pub(crate) fn len(&self) -> u64 {
        self.count
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Says what changed, by the plan rows at the kept rows' `file:line` (`rows`: the plan's
    /// validated rows): one line for the run's stderr, e.g. `277 row(s) … : 277 at a line
    /// whose row keeps target, action, message and emoji (a field the report does not hold
    /// changed: user, conversation, not_before or key)`.
    pub(crate) fn describe(
        &self,
        report: &Path,
        plan: &Plan,
        rows: impl Iterator<Item = Result<Row, Problem>>,
    ) -> String {
        let mut at: HashMap<&str, Option<KeptRow>> = self
            .rows
            .iter()
            .map(|r| (r.source.as_str(), None))
            .collect();
        for row in rows.flatten() {
            let source = row.source.to_string();
            if let Some(slot) = at.get_mut(source.as_str()) {
                let target = &plan.targets[row.target];
                *slot = Some(KeptRow {
                    source,
                    target: target.name.clone(),
                    action: row.action.as_str().to_string(),
                    message_id: row.message_ref().to_string(),
                    emoji: crate::provider::sent_emoji(target.provider(), &row).to_string(),
                });
            }
        }
        let mut same = 0u64;
        let mut gone = 0u64;
        // Field name → rows where it differs, in the report's column order.
        let mut changed: Vec<(&str, u64)> = ["target", "action", "message_id", "emoji"]
            .into_iter()
            .map(|f| (f, 0))
            .collect();
        for kept in &self.rows {
            let Some(Some(now)) = at.get(kept.source.as_str()) else {
                gone += 1;
                continue;
            };
            let diffs = [
                kept.target != now.target,
                kept.action != now.action,
                kept.message_id != now.message_id,
                kept.emoji != now.emoji,
            ];
            if !diffs.contains(&true) {
                same += 1;
            }
            for (d, (_, n)) in diffs.iter().zip(changed.iter_mut()) {
                if *d {
                    *n += 1;
                }
            }
        }
        let mut parts = Vec::new();
        if same > 0 {
            parts.push(format!(
                "{same} at a line whose row keeps its target, action, message and emoji (a field \
                 the report does not hold changed: user, conversation, not_before or key)"
            ));
        }
        for (field, n) in changed.into_iter().filter(|(_, n)| *n > 0) {
            parts.push(format!("{n} whose line now has another {field}"));
        }
        if gone > 0 {
            parts.push(format!("{gone} whose line holds no row now"));
        }
        if self.count > self.rows.len() as u64 {
            parts.push(format!(
                "{} not compared",
                self.count - self.rows.len() as u64
            ));
        }
        format!(
            "reactbatch run: --resume: {} row(s) of {} match no row of the plan ({}); they are \
             kept at the end of the new report with code not_in_plan and not sent, and plan rows \
             with no earlier result run as new rows",
            self.len(),
            report.display(),
            parts.join("; ")
        )
    }
}

/// Calls `f` with every row of `report` that [`is_done`] and whose identity is not in
/// `plan_keys`: rows `undo` cannot reverse from the plan.
pub(crate) fn done_rows_not_in_plan(
    report: &Path,
    plan_keys: &HashSet<u64>,
    mut f: impl FnMut(RowResult),
) -> Result<(), String> {
    for_each_report_row(report, |row| {
        if is_done(&row) && !plan_keys.contains(&key_hash(&row.key)) {
            f(row);
        }
    })
}

/// Why a row failed for good, for the `failed_earlier` message; a chain of resumed runs keeps
/// the first run's reason.
fn failure_text(row: &RowResult) -> String {
    if row.status == Status::Skipped {
        // "failed in an earlier run: WHY (report ...": keep WHY.
        let why = row
            .message
            .strip_prefix(FAILED_MESSAGE)
            .and_then(|m| m.split(" (report ").next())
            .unwrap_or(&row.message);
        return why.to_string();
    }
    let status = row.http_status.map(|s| s.to_string()).unwrap_or_default();
    let text = [status.as_str(), row.code.as_str(), row.message.as_str()]
        .into_iter()
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    // The report keeps the provider's whole text; the reminder needs a line, not a page.
    match text.char_indices().nth(200) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(status: Status, http: Option<u16>, code: &str) -> RowResult {
        RowResult {
            row: 1,
            source: "p.yaml:3".into(),
            target: "k".into(),
            provider: "kommo".into(),
            action: "react".into(),
            message_id: "m-1".into(),
            emoji: String::new(),
            status,
            http_status: http,
            code: code.into(),
            message: "Message not found".into(),
            attempts: 1,
            duration_ms: 5,
            finished_at: String::new(),
            key: "k1".into(),
            scope_id: String::new(),
            channel_id: String::new(),
        }
    }

    #[test]
    fn final_failures_are_refusals_of_the_request_itself() {
        for (http, code) in [
            (400, "BAD_REQUEST"),
            (404, "MESSAGE_NOT_FOUND"),
            (422, "http_422"),
            (200, "success_false"),
        ] {
            assert!(
                is_final_failure(&row(Status::Failed, Some(http), code)),
                "{http}"
            );
        }
        for (http, code) in [
            (Some(401), "UNAUTHORIZED"),
            (Some(403), "FORBIDDEN"),
            (Some(408), "http_408"),
            (Some(429), "RATE_LIMITED"),
            (Some(500), "http_500"),
            (Some(503), "http_503"),
            (None, "timeout"),
            (None, "connection"),
        ] {
            assert!(
                !is_final_failure(&row(Status::Failed, http, code)),
                "{http:?} {code}"
            );
        }
        assert!(!is_final_failure(&row(
            Status::Cancelled,
            None,
            "cancelled"
        )));
        assert!(!is_final_failure(&row(
            Status::Skipped,
            None,
            "auth_stopped"
        )));
        assert!(is_final_failure(&row(
            Status::Skipped,
            Some(404),
            FAILED_EARLIER
        )));
        assert!(!is_final_failure(&row(Status::Ok, Some(200), "")));
    }

    #[test]
    fn a_chain_of_resumed_runs_keeps_the_first_reason() {
        let first = row(Status::Failed, Some(404), "MESSAGE_NOT_FOUND");
        let why = failure_text(&first);
        assert_eq!(why, "404 MESSAGE_NOT_FOUND Message not found");
        let mut again = row(Status::Skipped, Some(404), FAILED_EARLIER);
        again.message = format!("failed in an earlier run: {why} (report r.csv, finished x); --retry-failed sends it again");
        assert_eq!(failure_text(&again), why);
    }
}
