//! Loading a plan's structure: the YAML workflow (or a bare CSV plus `--targets`), its targets,
//! `defaults:`, `settings:`, inline rows, and the include tree. Row *validation* happens later,
//! while streaming ([`super::RowIter`]); CSV files are only opened here to check their header.
//!
//! Includes are resolved relative to the including file. A `.csv` include is rows; a
//! `.yaml`/`.yml` include may hold `rows:` and `include:` (and `version:`), so include loops are
//! possible: they are errors naming the cycle. Rows come in plan order: a file's inline `rows:`
//! first, then each of its includes in order, depth first.
//!
//! `version:` is optional (so plans written before it existed keep working); when present it
//! must be `1`. A `--targets` file holds `targets:` (and optionally `version:`) only; given with
//! a YAML plan that has its own `targets:`, it is an error (which one wins would be a guess).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::csv_rows::CsvRows;
use super::doc::DocReader;
use super::fields::{RawRow, MAX_ERRORS, MAX_INCLUDES, MAX_INCLUDE_DEPTH};
use super::model::Settings;
use super::paths;
use super::problem::Problem;
use super::rows::RowContext;
use super::secrets::SecretSite;
use super::source::Pos;
use super::targets::{read_targets, LoadedTarget};
use super::yaml::{self, Key, Node, Value};
use super::yaml_rows::{read_defaults, read_yaml_row};

/// Top-level keys of a plan file (the JSON Schema in [`super::schema`] is tested against it).
pub(super) const PLAN_KEYS: &[&str] = &[
    "version", "targets", "defaults", "settings", "rows", "include",
];
const INCLUDE_KEYS: &[&str] = &["version", "rows", "include"];
const TARGETS_FILE_KEYS: &[&str] = &["version", "targets"];

/// A run of rows: inline rows of one YAML file, or one CSV file (streamed).
#[derive(Debug)]
pub(super) enum Segment {
    Inline(Vec<RawRow>),
    Csv { path: PathBuf, file: Arc<str> },
}

/// Everything loading found; `problems` empty means the plan is valid as far as structure goes.
#[derive(Debug, Default)]
pub(super) struct Loaded {
    pub ctx: RowContext,
    pub secret_sites: Vec<SecretSite>,
    pub pace_groups: Vec<super::pace::PaceGroup>,
    /// Warnings about `limit_group:` (not problems: they do not stop a run).
    pub pace_warnings: Vec<Problem>,
    pub settings: Settings,
    pub segments: Vec<Segment>,
    pub files: Vec<PathBuf>,
    pub problems: Vec<Problem>,
    /// False when the structure is too broken to stream rows from (e.g. a YAML syntax error).
    pub usable: bool,
}

fn display(path: &Path) -> Arc<str> {
    Arc::from(path.display().to_string())
}

fn dir_of(path: &Path) -> &Path {
    path.parent().unwrap_or(Path::new(""))
}

fn is_csv(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("csv"))
}

fn is_yaml(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("yaml") || e.eq_ignore_ascii_case("yml"))
}

fn entry<'n>(entries: &'n [(Key, Node)], key: &str) -> Option<&'n Node> {
    entries.iter().find(|(k, _)| k.text == key).map(|(_, v)| v)
}

fn check_version(r: &mut DocReader<'_>, entries: &[(Key, Node)]) {
    if let Some(v) = entry(entries, "version") {
        if v.as_scalar() != Some("1") {
            r.error(
                v.pos,
                "unsupported `version`: this reactbatch reads `version: 1`",
            );
        }
    }
}

/// The targets found while loading, wherever they were written.
#[derive(Default)]
struct TargetsFound {
    list: Vec<(LoadedTarget, Arc<str>)>,
    /// Every name written under `targets:`, valid or not.
    names: Vec<String>,
    /// `--targets FILE` was given.
    given: bool,
    /// Whether a `targets:` mapping was read (from the plan or the `--targets` file), with no
    /// doubt about which: otherwise rows naming a target are not checked against it.
    read: bool,
}

/// Loads a plan (see [`super::Plan::load`]), collecting every structural problem.
pub(super) fn load(path: &Path, targets_file: Option<&Path>) -> Loaded {
    let mut out = Loaded {
        usable: true,
        ..Loaded::default()
    };
    let file = display(path);
    out.files.push(path.to_path_buf());
    let mut targets = TargetsFound::default();
    if let Some(tf) = targets_file {
        targets.given = true;
        out.files.push(tf.to_path_buf());
        targets.read = load_targets_file(tf, &mut out, &mut targets.list, &mut targets.names);
    }
    let mut walk = IncludeWalk {
        segments: Vec::new(),
        files: Vec::new(),
        stack: Vec::new(),
        count: 0,
    };
    if is_csv(path) {
        load_csv_plan(path, &file, targets.given, &mut out, &mut walk);
    } else if !is_yaml(path) {
        out.problems.push(Problem::error(
            &*file,
            None,
            None,
            "a plan must be a `.yaml`/`.yml` workflow or a `.csv` file of rows",
        ));
        out.usable = false;
    } else {
        load_yaml_plan(path, &file, &mut out, &mut targets, &mut walk);
    }
    out.segments = walk.segments;
    out.files.extend(walk.files);
    settle_targets(&mut out, targets);
    sort_by_position(&mut out.problems);
    cap_problems(&mut out.problems, &file);
    out
}

/// A CSV plan: its rows only; the targets come from `--targets`.
fn load_csv_plan(
    path: &Path,
    file: &Arc<str>,
    targets_given: bool,
    out: &mut Loaded,
    walk: &mut IncludeWalk,
) {
    if !targets_given {
        out.problems.push(
            Problem::error(&**file, None, None, "a CSV plan needs `--targets FILE`")
                .with_hint("a YAML file holding only `targets:`"),
        );
    }
    match CsvRows::open(path, file.clone()) {
        Ok(_) => walk.segments.push(Segment::Csv {
            path: path.to_path_buf(),
            file: file.clone(),
        }),
        Err(mut ps) => {
            out.problems.append(&mut ps);
            out.usable = false;
        }
    }
}

/// A YAML plan: read and parsed, then its top-level mapping.
fn load_yaml_plan(
    path: &Path,
    file: &Arc<str>,
    out: &mut Loaded,
    targets: &mut TargetsFound,
    walk: &mut IncludeWalk,
) {
    let root = match yaml::read_file(path, file, &mut out.problems) {
        Err(mut ps) => {
            out.problems.append(&mut ps);
            out.usable = false;
            return;
        }
        // Nothing, or `---` alone: a document holding nothing.
        Ok(None) => None,
        Ok(Some(root)) if root.is_null() => None,
        Ok(Some(root)) => Some(root),
    };
    let Some(root) = root else {
        out.problems
            .push(Problem::error(&**file, Some(1), None, "the plan is empty"));
        out.usable = false;
        return;
    };
    let mut problems = std::mem::take(&mut out.problems);
    let mut r = DocReader {
        file: file.clone(),
        problems: &mut problems,
    };
    match r.map(&root, "the plan") {
        None => out.usable = false,
        Some(entries) => read_plan_keys(&mut r, path, entries, out, targets, walk),
    }
    out.problems = problems;
}

/// The plan's keys: `version`, `targets` (unless `--targets` gives them), `settings`,
/// `defaults`, then its rows and includes.
fn read_plan_keys(
    r: &mut DocReader<'_>,
    path: &Path,
    entries: &[(Key, Node)],
    out: &mut Loaded,
    targets: &mut TargetsFound,
    walk: &mut IncludeWalk,
) {
    check_version(r, entries);
    for (key, _) in entries {
        if !PLAN_KEYS.contains(&key.text.as_str()) {
            r.unknown_key(key, "the plan", PLAN_KEYS);
        }
    }
    match (entry(entries, "targets"), targets.given) {
        (Some(node), true) => {
            r.error(
                node.pos,
                "targets are given both here and by `--targets`; keep one",
            );
            targets.read = false;
        }
        (Some(node), false) => {
            targets.read = matches!(node.value, Value::Map(_));
            targets.names = map_keys(node);
            for t in read_targets(r, node, dir_of(path)) {
                targets.list.push((t, r.file.clone()));
            }
        }
        (None, true) => {}
        (None, false) => {
            r.error(Pos { line: 1, col: 1 }, "the plan has no `targets:`")
                .hint = Some("add `targets:`, or pass `--targets FILE`".into());
        }
    }
    if let Some(node) = entry(entries, "settings") {
        out.settings = super::settings::read_settings(r, node, dir_of(path));
    }
    if let Some(node) = entry(entries, "defaults") {
        out.ctx.defaults = read_defaults(r, node, &targets.names);
    }
    walk.file(r, path, entries);
}

/// The targets into the rows' context (with where each secret and limit group was written),
/// and the pace groups they form.
fn settle_targets(out: &mut Loaded, targets: TargetsFound) {
    let mut group_sites = Vec::new();
    for (t, f) in targets.list {
        out.secret_sites.push(SecretSite {
            file: f.to_string(),
            pos: t.secret_pos,
        });
        group_sites.push(
            t.limit_group
                .map(|(group, pos)| super::pace::LimitGroupSite {
                    group,
                    file: f.clone(),
                    pos,
                }),
        );
        out.ctx.targets.push(t.target);
    }
    out.pace_groups = super::pace::group(
        &out.ctx.targets,
        &group_sites,
        &mut out.problems,
        &mut out.pace_warnings,
    );
    out.ctx.target_index = out
        .ctx
        .targets
        .iter()
        .enumerate()
        .map(|(i, t)| (t.name.clone(), i))
        .collect();
    out.ctx.targets_unread = !targets.read;
    out.ctx.broken_targets = targets
        .names
        .into_iter()
        .filter(|n| !out.ctx.target_index.contains_key(n))
        .collect();
}

/// Keeps the first [`MAX_ERRORS`] structural problems and replaces the rest with one note
/// counting them (a 16 MiB file of unknown keys would otherwise print for minutes).
fn cap_problems(problems: &mut Vec<Problem>, file: &str) {
    if problems.len() > MAX_ERRORS {
        let more = problems.len() - MAX_ERRORS;
        problems.truncate(MAX_ERRORS);
        problems.push(
            Problem::error(
                file,
                None,
                None,
                format!("… and {more} more errors not listed"),
            )
            .with_code(super::NOT_LISTED),
        );
    }
}

/// Orders problems by file (in order of first appearance) then line and column, so a target's
/// problems read top to bottom whichever check found them first.
fn sort_by_position(problems: &mut [Problem]) {
    let mut files: Vec<String> = Vec::new();
    for p in problems.iter() {
        if !files.contains(&p.file) {
            files.push(p.file.clone());
        }
    }
    problems.sort_by_key(|p| {
        let file = files.iter().position(|f| *f == p.file).unwrap_or(0);
        (file, p.line.unwrap_or(0), p.column.unwrap_or(0))
    });
}

fn map_keys(node: &Node) -> Vec<String> {
    match &node.value {
        Value::Map(entries) => entries.iter().map(|(k, _)| k.text.clone()).collect(),
        _ => Vec::new(),
    }
}

/// Reads the `--targets` file; `true` when it held a `targets:` mapping.
fn load_targets_file(
    tf: &Path,
    out: &mut Loaded,
    list: &mut Vec<(LoadedTarget, Arc<str>)>,
    names: &mut Vec<String>,
) -> bool {
    let tfile = display(tf);
    match yaml::read_file(tf, &tfile, &mut out.problems) {
        Err(mut ps) => {
            out.problems.append(&mut ps);
            out.usable = false;
            false
        }
        Ok(None) => {
            out.problems.push(Problem::error(
                &*tfile,
                None,
                None,
                "the targets file is empty: expected `targets:`",
            ));
            false
        }
        Ok(Some(root)) => {
            let mut r = DocReader {
                file: tfile.clone(),
                problems: &mut out.problems,
            };
            let Some(entries) = r.map(&root, "the targets file") else {
                return false;
            };
            check_version(&mut r, entries);
            for (key, _) in entries {
                if !TARGETS_FILE_KEYS.contains(&key.text.as_str()) {
                    r.unknown_key(
                        key,
                        "a --targets file (it holds only `targets:`)",
                        TARGETS_FILE_KEYS,
                    );
                }
            }
            match entry(entries, "targets") {
                Some(node) => {
                    *names = map_keys(node);
                    for t in read_targets(&mut r, node, dir_of(tf)) {
                        list.push((t, tfile.clone()));
                    }
                    matches!(node.value, Value::Map(_))
                }
                None => {
                    r.error(
                        Pos { line: 1, col: 1 },
                        "the targets file has no `targets:`",
                    );
                    false
                }
            }
        }
    }
}

/// Walks a YAML file's `rows:` and `include:` into segments, depth first.
struct IncludeWalk {
    segments: Vec<Segment>,
    files: Vec<PathBuf>,
    /// Canonical paths of the YAML files being walked, with their display names (loop check).
    stack: Vec<(PathBuf, Arc<str>)>,
    count: usize,
}

impl IncludeWalk {
    fn file(&mut self, r: &mut DocReader<'_>, path: &Path, entries: &[(Key, Node)]) {
        let canonical = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        self.stack.push((canonical, r.file.clone()));
        if let Some(node) = entry(entries, "rows") {
            self.rows(r, node);
        }
        if let Some(node) = entry(entries, "include") {
            self.includes(r, path, node);
        }
        self.stack.pop();
    }

    fn rows(&mut self, r: &mut DocReader<'_>, node: &Node) {
        if node.is_null() {
            return;
        }
        let Value::Seq(items) = &node.value else {
            r.error(
                node.pos,
                format!("`rows` must be a list of rows, found {}", node.kind()),
            );
            return;
        };
        let rows = items
            .iter()
            .map(|item| read_yaml_row(&r.file, item, "a row"))
            .collect();
        self.segments.push(Segment::Inline(rows));
    }

    fn includes(&mut self, r: &mut DocReader<'_>, including: &Path, node: &Node) {
        let items: Vec<&Node> = match &node.value {
            _ if node.is_null() => return,
            Value::Seq(items) => items.iter().collect(),
            Value::Scalar { .. } => vec![node],
            Value::Map(_) => {
                r.error(
                    node.pos,
                    "`include` must be a list of file names, found a mapping",
                );
                return;
            }
        };
        for item in items {
            let Some(name) = r.string(item, "include") else {
                continue;
            };
            if name.is_empty() {
                r.error(item.pos, "`include` entry is an empty file name");
                continue;
            }
            self.count += 1;
            if self.count > MAX_INCLUDES {
                r.error(item.pos, format!("more than {MAX_INCLUDES} includes"));
                return;
            }
            let joined = match paths::resolve(dir_of(including), name) {
                Ok(p) => p,
                Err(msg) => {
                    r.error(item.pos, format!("include {msg}"));
                    continue;
                }
            };
            let shown = display(&joined);
            let canonical = match std::fs::canonicalize(&joined) {
                Ok(c) => c,
                Err(e) => {
                    r.error(item.pos, format!("cannot include `{shown}`: {e}"));
                    continue;
                }
            };
            if let Err(what) = paths::regular_file(&joined) {
                r.error(
                    item.pos,
                    format!("cannot include `{shown}`: it is {what}, not a regular file"),
                );
                continue;
            }
            if is_csv(&joined) {
                match CsvRows::open(&joined, shown.clone()) {
                    Ok(_) => self.segments.push(Segment::Csv {
                        path: joined.clone(),
                        file: shown,
                    }),
                    Err(mut ps) => r.problems.append(&mut ps),
                }
                self.files.push(joined);
                continue;
            }
            if !is_yaml(&joined) {
                r.error(
                    item.pos,
                    format!("cannot include `{shown}`: expected a `.csv` or `.yaml` file"),
                );
                continue;
            }
            if let Some(at) = self.stack.iter().position(|(c, _)| *c == canonical) {
                let mut cycle: Vec<&str> = self.stack[at..].iter().map(|(_, f)| &**f).collect();
                cycle.push(&shown);
                r.error(item.pos, format!("include loop: {}", cycle.join(" → ")));
                continue;
            }
            if self.stack.len() >= MAX_INCLUDE_DEPTH {
                r.error(
                    item.pos,
                    format!("includes nest deeper than {MAX_INCLUDE_DEPTH} levels"),
                );
                continue;
            }
            self.files.push(joined.clone());
            let root = match yaml::read_file(&joined, &shown, r.problems) {
                Ok(Some(root)) => root,
                Ok(None) => continue,
                Err(mut ps) => {
                    r.problems.append(&mut ps);
                    continue;
                }
            };
            let mut inner = DocReader {
                file: shown.clone(),
                problems: r.problems,
            };
            let Some(entries) = inner.map(&root, "an included file") else {
                continue;
            };
            check_version(&mut inner, entries);
            for (key, _) in entries {
                if !INCLUDE_KEYS.contains(&key.text.as_str()) {
                    inner.unknown_key(
                        key,
                        "an included file (it may hold `rows:` and `include:`)",
                        INCLUDE_KEYS,
                    );
                }
            }
            self.file(&mut inner, &joined, entries);
        }
    }
}
