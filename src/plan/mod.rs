//! Plans: the model ([`model`]), located problems ([`problem`]), and loading.
//!
//! - [`Plan::load`] parses the plan's structure ([`load`]): targets ([`targets`]), `settings:`
//!   ([`settings`]), `defaults:` and inline rows, the include tree. YAML is read through a
//!   position-keeping node tree ([`yaml`]) so every problem points at `file:line:col`.
//! - [`Plan::rows`] streams validated rows ([`rows`]) in plan order; CSV files are read record
//!   by record ([`csv_rows`]), never whole.
//! - [`Plan::validate`] is one streaming pass collecting every error, plus (only when some
//!   message or some explicit `key` repeats) a second pass for "pointless row" warnings
//!   ([`warnings`]) and duplicate-`key` errors ([`keys`]). Rows are read and checked on a thread
//!   of their own, a few batches ahead of the rest of the pass ([`pipeline`]).
//! - [`Plan::resolve_secrets`] reads each target's `{ env }` / `{ file }` secret ([`secrets`]).
//!
//! Hard limits on input sizes are listed in [`fields`]; what an emoji or an id may be, in
//! [`emoji`].

mod csv_rows;
mod doc;
pub mod emoji;
pub mod fields;
mod keys;
mod load;
pub mod model;
pub mod pace;
mod paths;
mod ping_url;
mod pipeline;
pub mod problem;
mod rows;
pub mod schema;
mod secrets;
pub mod settings;
mod source;
pub mod spool;
mod targets;
mod warnings;
mod yaml;
mod yaml_rows;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use model::*;
pub use ping_url::PingUrl;
pub use pipeline::Threads;
pub use problem::{Folded, Problem, Severity};

use crate::secret::Secret;
use csv_rows::CsvRows;
use fields::{MAX_ERRORS, MAX_WARNINGS};
use load::Segment;
use pipeline::Item;
use rows::{check_row, Checked, RowContext};
use secrets::SecretSite;

/// A loaded plan: targets and settings in memory, rows streamed on demand.
#[derive(Debug)]
pub struct Plan {
    /// The plan file as the user named it.
    pub path: PathBuf,
    pub targets: Vec<Target>,
    /// Which targets share a pace (one lane each); every target is in exactly one.
    pub pace_groups: Vec<pace::PaceGroup>,
    /// Warnings about `limit_group:` (e.g. a named group with one member).
    pub pace_warnings: Vec<Problem>,
    pub settings: Settings,
    inner: Arc<Inner>,
    files: Vec<PathBuf>,
    secret_sites: Vec<SecretSite>,
}

/// What row streaming needs, shared with every [`RowIter`].
#[derive(Debug)]
struct Inner {
    /// The plan file's display name, for plan-wide problems.
    file: Arc<str>,
    ctx: RowContext,
    segments: Vec<Segment>,
}

/// The outcome of a full validation pass.
#[derive(Debug, Default)]
pub struct Validation {
    /// At most [`MAX_ERRORS`] errors, then one note saying how many more there were.
    pub errors: Vec<Problem>,
    /// At most [`MAX_WARNINGS`] warnings, then one note saying how many more there were.
    pub warnings: Vec<Problem>,
    /// Rows in the plan (valid or not).
    pub rows: u64,
    /// Errors beyond the cap, not listed in `errors`.
    pub errors_omitted: u64,
    /// Warnings beyond the cap, not listed in `warnings`.
    pub warnings_omitted: u64,
}

impl Validation {
    fn finish(errors: Capped, warnings: Capped, rows: u64, file: &str) -> Validation {
        let (errors, errors_omitted) = errors.finish(file, "errors");
        let (warnings, warnings_omitted) = warnings.finish(file, "warnings");
        Validation {
            errors,
            warnings,
            rows,
            errors_omitted,
            warnings_omitted,
        }
    }

    /// The real number of errors, listed, folded into a listed one, or only counted.
    pub fn error_count(&self) -> u64 {
        real_count(&self.errors, self.errors_omitted)
    }

    /// The real number of warnings, listed, folded into a listed one, or only counted.
    pub fn warning_count(&self) -> u64 {
        real_count(&self.warnings, self.warnings_omitted)
    }
}

/// The code of the note that ends a capped list, counting what it does not list.
pub const NOT_LISTED: &str = "not_listed";

fn real_count(list: &[Problem], omitted: u64) -> u64 {
    let notes = list.iter().filter(|p| p.code == NOT_LISTED).count() as u64;
    list.len() as u64 - notes + omitted
}

/// A list capped at `max` with a count of the rest. A problem past the cap that repeats a
/// listed one (see [`Problem::same_as`]) is folded into it, so the listed one carries the true
/// count and lines of the mistake; only the others are left to the closing note.
struct Capped {
    list: Vec<Problem>,
    omitted: u64,
    /// Omitted and not folded into a listed problem.
    unfolded: u64,
    max: usize,
    /// [`Problem::same_hash`] → the first listed problem with it.
    listed: HashMap<u64, usize>,
}

impl Capped {
    fn new(max: usize) -> Self {
        Capped {
            list: Vec::new(),
            omitted: 0,
            unfolded: 0,
            max,
            listed: HashMap::new(),
        }
    }

    fn push(&mut self, p: Problem) {
        if self.list.len() < self.max {
            self.listed.entry(p.same_hash()).or_insert(self.list.len());
            self.list.push(p);
            return;
        }
        self.omitted += 1;
        let same = self
            .listed
            .get(&p.same_hash())
            .map(|&i| &mut self.list[i])
            .filter(|listed| listed.same_as(&p));
        match same {
            Some(listed) => listed.folded.get_or_insert_default().add(p.line),
            None => self.unfolded += 1,
        }
    }

    /// Lists `p` even past the cap (for a problem that must not go unseen).
    fn push_listed(&mut self, p: Problem) {
        self.list.push(p);
    }

    fn finish(mut self, file: &str, what: &str) -> (Vec<Problem>, u64) {
        if self.unfolded > 0 {
            let message = format!("… and {} more {what} not listed", self.unfolded);
            let note = match what {
                "warnings" => Problem::warning(file, None, None, message),
                _ => Problem::error(file, None, None, message),
            };
            self.list.push(note.with_code(NOT_LISTED));
        }
        (self.list, self.omitted)
    }
}

impl Plan {
    /// Parses the plan file's structure: targets (or the `--targets` file for CSV plans),
    /// settings, defaults, inline rows with positions, the include list (existence, loops).
    /// Does not read secrets. Every structural problem is returned, not just the first.
    pub fn load(path: &Path, targets_file: Option<&Path>) -> Result<Plan, Vec<Problem>> {
        match Plan::load_lenient(path, targets_file) {
            (Some(plan), problems) if problems.is_empty() => Ok(plan),
            (_, problems) => Err(problems),
        }
    }

    /// Like [`Plan::load`], but returns the plan even when it has structural problems, as long
    /// as its rows can still be streamed, so `check` can report row problems too. Rows naming
    /// a target that had errors are not reported again by [`Plan::validate`].
    pub fn load_lenient(path: &Path, targets_file: Option<&Path>) -> (Option<Plan>, Vec<Problem>) {
        let loaded = load::load(path, targets_file);
        if !loaded.usable {
            return (None, loaded.problems);
        }
        let plan = Plan {
            path: path.to_path_buf(),
            targets: loaded.ctx.targets.clone(),
            pace_groups: loaded.pace_groups,
            pace_warnings: loaded.pace_warnings,
            settings: loaded.settings,
            inner: Arc::new(Inner {
                file: Arc::from(path.display().to_string()),
                ctx: loaded.ctx,
                segments: loaded.segments,
            }),
            files: loaded.files,
            secret_sites: loaded.secret_sites,
        };
        (Some(plan), loaded.problems)
    }

    /// Streams rows in plan order (inline `rows:` first, then each `include` in order; CSV
    /// streamed), each validated. [`Row::number`] is 1-based over the whole plan. A row with
    /// several problems yields its first; [`Plan::validate`] lists them all.
    pub fn rows(&self) -> RowIter {
        RowIter {
            inner: Arc::clone(&self.inner),
            segment: 0,
            index: 0,
            csv: None,
            number: 0,
        }
    }

    /// One full streaming pass collecting every error (capped at [`MAX_ERRORS`] plus a count),
    /// then, only if some message appears in several rows or some explicit `key` hash repeats,
    /// a second pass for warnings about rows a later row makes pointless and errors for rows
    /// repeating an earlier row's `key`. Rows are never collected in memory (explicit keys
    /// cost a 64-bit hash each; see [`keys`]).
    pub fn validate(&self) -> Validation {
        self.validate_with(|_| {})
    }

    /// [`Plan::validate`], also handing every valid row of the first pass to `on_row`, in plan
    /// order, so a caller that needs another look at every row (identities, digest) does not
    /// read the plan once more.
    pub fn validate_with(&self, mut on_row: impl FnMut(&Row)) -> Validation {
        self.validate_split(true, Threads::available(), |_| (), |row, ()| on_row(row))
    }

    /// [`Plan::validate_with`] for a caller that shows no warnings (`run -q`): the same errors,
    /// without looking for rows a later row makes pointless. That search is what usually
    /// makes the second pass happen (its Bloom filter has false positives on any large plan),
    /// and the second pass reads and checks every row again: a fifth of a 1 M-row dry run's
    /// serial validation, spent on warnings nobody would see.
    pub fn validate_errors_with(&self, mut on_row: impl FnMut(&Row)) -> Validation {
        self.validate_split(false, Threads::available(), |_| (), |row, ()| on_row(row))
    }

    /// The validation pass with the work per row split in two: `beside` runs on the thread
    /// that reads and checks the rows ([`Threads::Two`]; see [`pipeline`]), `on_row` on the
    /// calling thread with what `beside` returned (taken out of the batch, hence `Default`).
    /// Both see every valid row of the first pass once, in plan order, `beside` first; so
    /// order-dependent state may live on either side. `warnings`: whether to look for rows a
    /// later row makes pointless ([`Plan::validate_with`]) or not
    /// ([`Plan::validate_errors_with`]). The results do not depend on `threads`; a panic on
    /// the reader thread is an error in the [`Validation`], never a shorter valid plan.
    pub fn validate_split<T: Send + Default>(
        &self,
        warnings: bool,
        threads: Threads,
        beside: impl FnMut(&Row) -> T + Send,
        on_row: impl FnMut(&Row, T),
    ) -> Validation {
        self.validate_rows(warnings, threads, beside, on_row)
    }

    fn validate_rows<T: Send + Default>(
        &self,
        pointless: bool,
        threads: Threads,
        beside: impl FnMut(&Row) -> T + Send,
        mut on_row: impl FnMut(&Row, T),
    ) -> Validation {
        let file = &*self.inner.file;
        let mut errors = Capped::new(MAX_ERRORS);
        let mut warnings = Capped::new(MAX_WARNINGS);
        let mut finder = pointless.then(warnings::RepeatFinder::default);
        let mut keys = keys::KeyFinder::default();
        let mut seen = 0;
        let read = pipeline::stream(self, threads, beside, |item| match item {
            Item::Row(row, made) => {
                seen = row.number;
                if let Some(w) = warnings::both_message_ids(row) {
                    warnings.push(w);
                }
                on_row(row, std::mem::take(made));
                if let Some(finder) = finder.as_mut() {
                    finder.add(row);
                }
                keys.add(row);
            }
            Item::Invalid(problems) => std::mem::take(problems)
                .into_iter()
                .for_each(|p| errors.push(p)),
        });
        let count = match read {
            Ok(count) => count,
            Err(why) => {
                // Not a plan problem, but the plan was not fully checked: it must not pass,
                // and the message must show even past the cap.
                errors.push_listed(Problem::error(
                    file,
                    None,
                    None,
                    format!("internal error: {why}; the plan was not fully checked"),
                ));
                return Validation::finish(errors, warnings, seen, file);
            }
        };
        if count == 0 {
            warnings.push(
                Problem::warning(file, None, None, "the plan has no rows").with_code("no_rows"),
            );
        }
        // One second pass serves both, and only runs when one of them needs it.
        let (mut pointless, mut duplicates) = (finder.and_then(|f| f.finish()), keys.finish());
        if pointless.is_some() || duplicates.is_some() {
            let read = pipeline::stream(
                self,
                threads,
                |_| (),
                |item| {
                    if let Item::Row(row, ()) = item {
                        if let Some(e) = duplicates.as_mut().and_then(|d| d.add(row)) {
                            errors.push(e);
                        }
                        if let Some(w) = pointless.as_mut().and_then(|p| p.add(row)) {
                            warnings.push(w);
                        }
                    }
                },
            );
            if let Err(why) = read {
                errors.push_listed(Problem::error(
                    file,
                    None,
                    None,
                    format!("internal error: {why} while looking for repeated rows"),
                ));
            } else if let Some(note) = pointless.as_ref().and_then(|p| p.note(file)) {
                warnings.push(note);
            }
        }
        Validation::finish(errors, warnings, count, file)
    }

    /// Reads each target's secret (`{ env: NAME }` / `{ file: PATH }`), index-aligned with
    /// [`Plan::targets`]. Problems point at the secret reference and never hold a value.
    pub fn resolve_secrets(&self) -> Result<Vec<Secret>, Vec<Problem>> {
        secrets::resolve(&self.targets, &self.secret_sites)
    }

    /// Warnings about how secrets are kept (files readable by other users) and what they hold
    /// (whitespace around the value). Never show the value.
    pub fn secret_warnings(&self) -> Vec<Problem> {
        let mut warnings = secrets::permission_warnings(&self.targets, &self.secret_sites);
        warnings.extend(secrets::whitespace_warnings(
            &self.targets,
            &self.secret_sites,
        ));
        warnings
    }

    /// Notes on emojis sent in another form than written (`❤` is sent as `❤️`, the
    /// fully-qualified form the services show and compare with): one per spelling and file, at
    /// its first row. Filled by any full pass over the rows ([`Plan::validate`]).
    pub fn emoji_notes(&self) -> Vec<Problem> {
        let Ok(notes) = self.inner.ctx.emoji_notes.lock() else {
            return Vec::new();
        };
        let code_points = |s: &str| {
            s.chars()
                .map(|c| format!("U+{:04X}", u32::from(c)))
                .collect::<Vec<_>>()
                .join(" ")
        };
        notes
            .iter()
            .map(|((file, written), ((line, col), sent))| {
                Problem::note(
                    &**file,
                    Some(*line),
                    *col,
                    format!(
                        "`{written}` ({}) is sent as `{sent}` ({}), the fully-qualified form \
                         the services show",
                        code_points(written),
                        code_points(sent)
                    ),
                )
                .with_code("emoji_normalized")
            })
            .collect()
    }

    /// Targets reached over plain `http://` on a non-loopback host (errors for `run` unless
    /// `--allow-insecure-http`).
    pub fn insecure_http(&self) -> Vec<Problem> {
        secrets::insecure_http(&self.targets)
    }

    /// The plan file, the `--targets` file if any, and every included file, in order (for a
    /// digest of what was audited).
    /// The file (as named in problems) where target `index` is defined.
    pub fn target_file(&self, index: usize) -> &str {
        self.secret_sites
            .get(index)
            .map_or(&*self.inner.file, |s| s.file.as_str())
    }

    pub fn files(&self) -> Vec<PathBuf> {
        self.files.clone()
    }
}

/// Streams a plan's rows; owns what it needs, so it can move into a task.
#[derive(Debug)]
pub struct RowIter {
    inner: Arc<Inner>,
    segment: usize,
    index: usize,
    csv: Option<CsvRows>,
    /// Rows yielded so far (the last row's number).
    number: u64,
}

impl RowIter {
    fn next_checked(&mut self) -> Option<Checked> {
        let inner = Arc::clone(&self.inner);
        loop {
            let raw = match inner.segments.get(self.segment)? {
                Segment::Inline(rows) => match rows.get(self.index) {
                    Some(raw) => {
                        self.index += 1;
                        raw.clone()
                    }
                    None => {
                        self.segment += 1;
                        self.index = 0;
                        continue;
                    }
                },
                Segment::Csv { path, file } => {
                    if self.csv.is_none() {
                        match CsvRows::open(path, file.clone()) {
                            Ok(csv) => self.csv = Some(csv),
                            // Changed since load: report it, go on with the next file.
                            Err(problems) => {
                                self.segment += 1;
                                return Some(Checked::Invalid(problems));
                            }
                        }
                    }
                    match self.csv.as_mut().and_then(CsvRows::next_raw) {
                        Some(raw) => raw,
                        None => {
                            self.csv = None;
                            self.segment += 1;
                            continue;
                        }
                    }
                }
            };
            self.number += 1;
            return Some(check_row(&inner.ctx, raw, self.number));
        }
    }
}

impl Iterator for RowIter {
    type Item = Result<Row, Problem>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            return match self.next_checked()? {
                Checked::Row(row) => Some(Ok(row)),
                Checked::Suppressed(p) => Some(Err(p)),
                Checked::Invalid(problems) => match problems.into_iter().next() {
                    Some(p) => Some(Err(p)),
                    None => continue,
                },
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}
    fn assert_send_static<T: Send + 'static>() {}

    #[test]
    fn plan_and_rows_can_move_into_tasks() {
        assert_send_sync::<Plan>();
        assert_send_static::<RowIter>();
    }
}
