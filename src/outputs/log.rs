//! What `run` tells stderr while it works — notices, plan problems, progress, the summary — in
//! the form the reader needs:
//!
//! - **text on a terminal**: as written, with the progress bar;
//! - **text elsewhere** (cron, CI, `2>run.log`): progress and summary lines each start with an
//!   RFC 3339 UTC timestamp, one event per line, no bar;
//! - **`--log-format json`** (log shippers): every line is one JSON object with `ts`, `level`
//!   (`info`, `warn`, `error`), `event` (`message`, `problem`, `progress`, `summary`) and the
//!   event's fields. No bar, even on a terminal.
//!
//! The format and the quietness are chosen once per process ([`init`]), like the colour of
//! diagnostics: stderr is process-wide, and the executor's progress ticker must not need the
//! flag threaded to it. Callers say the level: [`info`] (dropped by `-q`), [`warn`] (dropped
//! by `-q`), [`error`] (always); failed rows go through [`failed_rows`], which `-q` keeps:
//! `-q` means "only what needs a human".
//!
//! The formatting functions are pure (timestamp passed in) and unit-tested.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use serde_json::{json, Value};

use crate::outputs::summary::Summary;
use crate::plan::{Problem, Severity};

/// `run --log-format`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human lines; timestamped progress and summary when stderr is not a terminal.
    #[default]
    Text,
    /// One JSON object per line: `ts`, `level`, `event`, fields.
    Json,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Level {
    Info,
    Warn,
    Error,
}

impl Level {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Config {
    format: LogFormat,
    /// Timestamps on text progress and summary lines (stderr is not a terminal).
    timestamps: bool,
}

static CONFIG: OnceLock<Config> = OnceLock::new();

/// `-q`: only errors (and failed rows) are written. Set apart from the format because `-q` is
/// known only once the plan's `settings:` are read, and the format is needed before.
static QUIET: AtomicBool = AtomicBool::new(false);

/// Chooses the format for the whole process (called once, by `run`, before loading the plan).
pub(crate) fn init(format: LogFormat) {
    let _ = CONFIG.set(Config {
        format,
        timestamps: !std::io::stderr().is_terminal(),
    });
}

/// Turns `-q` on or off (by `run`, once its options are resolved).
pub(crate) fn set_quiet(quiet: bool) {
    QUIET.store(quiet, Ordering::Relaxed);
}

fn config() -> Config {
    *CONFIG.get_or_init(|| Config {
        format: LogFormat::Text,
        timestamps: !std::io::stderr().is_terminal(),
    })
}

/// Whether `-q` is on.
pub(crate) fn quiet() -> bool {
    QUIET.load(Ordering::Relaxed)
}

/// The chosen format (text unless [`init`] said otherwise).
pub(crate) fn format() -> LogFormat {
    config().format
}

fn now() -> String {
    crate::outputs::report::timestamp(chrono::Utc::now())
}

/// One JSON line: `ts`, `level`, `event` first, then `fields` (an object, serialized in its own
/// field order; other values are ignored).
pub(crate) fn json_line(
    ts: &str,
    level: Level,
    event: &str,
    fields: &impl serde::Serialize,
) -> String {
    let head = format!(
        "{{\"ts\":{},\"level\":\"{}\",\"event\":{}",
        Value::from(ts),
        level.as_str(),
        Value::from(event)
    );
    let body = serde_json::to_string(fields).unwrap_or_default();
    match body.strip_prefix('{') {
        Some(rest) if rest != "}" => format!("{head},{rest}"),
        _ => format!("{head}}}"),
    }
}

/// Each line of `text` prefixed with `ts` (when given), newline-terminated.
pub(crate) fn stamped(text: &str, ts: Option<&str>) -> String {
    let mut out = String::new();
    for line in text.lines() {
        if let Some(ts) = ts {
            out.push_str(ts);
            out.push(' ');
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// A notice or failure message (one line of text, or one event). Off a terminal each text
/// line carries the timestamp progress and summary lines carry, so a log reads in one form.
pub(crate) fn message(level: Level, text: &str) {
    let c = config();
    match c.format {
        LogFormat::Text => {
            std::eprint!("{}", stamped(text, c.timestamps.then(now).as_deref()))
        }
        LogFormat::Json => {
            std::eprintln!(
                "{}",
                json_line(&now(), level, "message", &json!({ "message": text }))
            )
        }
    }
}

/// A notice: what the run is doing. Not written with `-q`.
pub(crate) fn info(text: &str) {
    if !quiet() {
        message(Level::Info, text);
    }
}

/// Something the user may want to fix, that does not stop the run. Not written with `-q`.
pub(crate) fn warn(text: &str) {
    if !quiet() {
        message(Level::Warn, text);
    }
}

/// A failure: the run stops, or did not do what was asked. Always written.
pub(crate) fn error(text: &str) {
    message(Level::Error, text);
}

/// Plan problems: rendered diagnostics in text, one `problem` event each in JSON. With `-q`,
/// only errors.
pub(crate) fn problems(problems: &[Problem]) {
    if quiet() {
        let errors: Vec<Problem> = problems
            .iter()
            .filter(|p| p.severity == Severity::Error)
            .cloned()
            .collect();
        write_problems(&errors);
    } else {
        write_problems(problems);
    }
}

fn write_problems(problems: &[Problem]) {
    if problems.is_empty() {
        return;
    }
    let c = config();
    match c.format {
        LogFormat::Text if c.timestamps => {
            let text = crate::diagnostic::render_all(problems, crate::diagnostic::color());
            std::eprint!("{}", stamped(&text, Some(&now())));
        }
        LogFormat::Text => crate::diagnostic::eprint(problems),
        LogFormat::Json => {
            let ts = now();
            for p in problems {
                std::eprintln!("{}", problem_line(&ts, p));
            }
        }
    }
}

pub(crate) fn problem_line(ts: &str, p: &Problem) -> String {
    let level = match p.severity {
        Severity::Error => Level::Error,
        Severity::Warning => Level::Warn,
        Severity::Note => Level::Info,
    };
    json_line(
        ts,
        level,
        "problem",
        &json!({
            "file": p.file,
            "line": p.line,
            "column": p.column,
            "code": p.code,
            "message": p.message,
            "hint": p.hint,
        }),
    )
}

/// Counts for a progress event.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct ProgressCounts {
    pub done: u64,
    pub total: u64,
    pub ok: u64,
    pub failed: u64,
    pub rows_per_second: f64,
    /// Time left, from the lanes' pace model ([`crate::outputs::audit::PaceModel::time_left`]).
    pub eta: std::time::Duration,
}

/// One failed row, for the lines that name failures on stderr.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub(crate) struct FailedRow {
    pub row: u64,
    /// `file:line`.
    pub source: String,
    pub target: String,
    pub message_id: String,
    pub status: &'static str,
    pub http_status: Option<u16>,
    pub code: String,
    pub message: String,
}

/// At most this many failed rows are named on stderr; the rest are counted.
pub(crate) const MAX_FAILED_LINES: usize = 20;

/// Names failed rows (at most [`MAX_FAILED_LINES`], then how many more and where to look), and
/// each stopped target's reason once. Written even with `-q`: this is what a human must read.
pub(crate) fn failed_rows(
    rows: &[FailedRow],
    more: u64,
    report: &str,
    stopped: &[(String, String)],
) {
    let c = config();
    let ts = now();
    let text = failed_rows_text(c.format, &ts, rows, more, report, stopped);
    // Off a terminal, text lines carry the timestamp the summary's do.
    let text = match c.format {
        LogFormat::Text if c.timestamps => stamped(&text, Some(&ts)),
        _ => text,
    };
    std::eprint!("{text}");
}

pub(crate) fn failed_rows_text(
    format: LogFormat,
    ts: &str,
    rows: &[FailedRow],
    more: u64,
    report: &str,
    stopped: &[(String, String)],
) -> String {
    let mut out = String::new();
    match format {
        LogFormat::Text => {
            for (target, why) in stopped {
                // The executor's reasons already name the target ("target k stopped after ...").
                if why.starts_with(&format!("target {target} ")) {
                    out.push_str(&format!("reactbatch: {why}\n"));
                } else {
                    out.push_str(&format!("reactbatch: target {target} stopped: {why}\n"));
                }
            }
            for r in rows {
                let answer = match (r.http_status, r.code.as_str()) {
                    (Some(h), "") => h.to_string(),
                    (Some(h), code) => format!("{h} {code}"),
                    (None, code) => code.to_string(),
                };
                out.push_str(&format!(
                    "reactbatch: {} row {} ({}) target {} message {}: {answer}: {}\n",
                    r.status,
                    r.row,
                    r.source,
                    r.target,
                    r.message_id,
                    one_line(&r.message)
                ));
            }
            if more > 0 {
                out.push_str(&format!("reactbatch: … and {more} more — see {report}\n"));
            }
        }
        LogFormat::Json => {
            for (target, why) in stopped {
                out.push_str(&json_line(
                    ts,
                    Level::Error,
                    "target_stopped",
                    &json!({ "target": target, "reason": why }),
                ));
                out.push('\n');
            }
            for r in rows {
                out.push_str(&json_line(ts, Level::Error, "failed_row", r));
                out.push('\n');
            }
            if more > 0 {
                out.push_str(&json_line(
                    ts,
                    Level::Error,
                    "failed_rows_not_listed",
                    &json!({ "count": more, "report": report }),
                ));
                out.push('\n');
            }
        }
    }
    out
}

/// A provider's message on one line, and not a page long.
fn one_line(text: &str) -> String {
    let flat: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    match flat.char_indices().nth(300) {
        Some((at, _)) => format!("{}…", &flat[..at]),
        None => flat,
    }
}

/// A status line of a run without a progress bar (every 10 s).
pub(crate) fn progress(c: ProgressCounts) {
    std::eprint!("{}", progress_line(&now(), format(), c));
}

pub(crate) fn progress_line(ts: &str, format: LogFormat, c: ProgressCounts) -> String {
    match format {
        LogFormat::Text => format!(
            "{ts} reactbatch: progress {}/{} rows, ok {}, failed {}, {:.1} rows/s, ETA {}\n",
            c.done,
            c.total,
            c.ok,
            c.failed,
            c.rows_per_second,
            crate::outputs::audit::human_ms(c.eta.as_millis() as u64)
        ),
        LogFormat::Json => {
            let mut line = json_line(
                ts,
                Level::Info,
                "progress",
                &json!({
                    "done": c.done,
                    "total": c.total,
                    "ok": c.ok,
                    "failed": c.failed,
                    "rows_per_second": (c.rows_per_second * 10.0).round() / 10.0,
                    "eta_ms": c.eta.as_millis() as u64,
                }),
            );
            line.push('\n');
            line
        }
    }
}

/// The end-of-run summary: [`Summary::render`] (timestamped per line when stderr is not a
/// terminal), or one `summary` event holding the `--summary-json` fields.
pub(crate) fn summary(summary: &Summary) {
    let c = config();
    let ts = now();
    std::eprint!(
        "{}",
        summary_text(summary, c.format, c.timestamps.then_some(ts.as_str()), &ts)
    );
}

/// `-q`'s summary: [`Summary::headline`] in text, the same `summary` event in JSON.
pub(crate) fn summary_headline(summary: &Summary) {
    let c = config();
    let ts = now();
    let text = match c.format {
        LogFormat::Text => stamped(&summary.headline(), c.timestamps.then_some(ts.as_str())),
        LogFormat::Json => summary_text(summary, LogFormat::Json, None, &ts),
    };
    std::eprint!("{text}");
}

pub(crate) fn summary_text(
    summary: &Summary,
    format: LogFormat,
    stamp: Option<&str>,
    ts: &str,
) -> String {
    match format {
        LogFormat::Text => stamped(&summary.render(), stamp),
        LogFormat::Json => {
            let level = match summary.exit_code {
                0 => Level::Info,
                130 | 143 => Level::Warn,
                _ => Level::Error,
            };
            let mut line = json_line(ts, level, "summary", summary);
            line.push('\n');
            line
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TS: &str = "2026-12-01T09:00:00.000Z";

    fn summary() -> Summary {
        Summary {
            not_in_plan: 0,
            plan: "p.yaml".into(),
            report: "p.report.csv".into(),
            dry_run: false,
            rows: 3,
            counts: [("ok", 2), ("failed", 1)].into_iter().collect(),
            attempts: 4,
            retries: 1,
            elapsed_ms: 1500,
            rows_per_second: 2.0,
            estimated_ms: 0,
            targets: vec![],
            lanes: vec![],
            hosts: vec![],
            latency: None,
            digest: None,
            files: vec![],
            interrupted: false,
            not_recorded: 0,
            exit_code: 1,
        }
    }

    #[test]
    fn text_summary_is_stamped_line_by_line_off_a_terminal() {
        let s = summary();
        let plain = summary_text(&s, LogFormat::Text, None, TS);
        let stamped = summary_text(&s, LogFormat::Text, Some(TS), TS);
        assert!(plain.starts_with("reactbatch: 3 rows in 1.50s"), "{plain}");
        assert_eq!(plain.lines().count(), stamped.lines().count());
        for (p, s) in plain.lines().zip(stamped.lines()) {
            assert_eq!(s, format!("{TS} {p}"));
        }
    }

    #[test]
    fn json_summary_is_one_event_with_the_summary_fields() {
        let line = summary_text(&summary(), LogFormat::Json, None, TS);
        assert_eq!(line.matches('\n').count(), 1);
        let v: Value = serde_json::from_str(&line).expect("JSON");
        assert_eq!(v["ts"], TS);
        assert_eq!(v["level"], "error");
        assert_eq!(v["event"], "summary");
        assert_eq!(v["counts"]["failed"], 1);
        assert_eq!(v["exit_code"], 1);
        // Shippers read the head first; the summary's fields keep their documented order.
        let head = format!("{{\"ts\":\"{TS}\",\"level\":\"error\",\"event\":\"summary\",\"plan\":");
        assert!(line.starts_with(&head), "{line}");
    }

    #[test]
    fn failed_rows_are_named_one_line_each_then_counted() {
        let row = FailedRow {
            row: 3,
            source: "rows.csv:4".into(),
            target: "k".into(),
            message_id: "gone-1".into(),
            status: "failed",
            http_status: Some(404),
            code: "MESSAGE_NOT_FOUND".into(),
            message: "Message\nnot found".into(),
        };
        let stopped = vec![("o".to_string(), "stopped after 3 × 401".to_string())];
        let text = failed_rows_text(
            LogFormat::Text,
            TS,
            std::slice::from_ref(&row),
            2,
            "r.csv",
            &stopped,
        );
        assert_eq!(
            text,
            "reactbatch: target o stopped: stopped after 3 × 401\n\
             reactbatch: failed row 3 (rows.csv:4) target k message gone-1: 404 MESSAGE_NOT_FOUND: Message not found\n\
             reactbatch: … and 2 more — see r.csv\n"
        );
        let json = failed_rows_text(LogFormat::Json, TS, &[row], 0, "r.csv", &[]);
        assert_eq!(json.lines().count(), 1, "{json}");
        let v: Value = serde_json::from_str(&json).expect("JSON");
        assert_eq!(v["event"], "failed_row");
        assert_eq!(v["level"], "error");
        assert_eq!(v["code"], "MESSAGE_NOT_FOUND");
        assert_eq!(v["http_status"], 404);
        assert_eq!(v["source"], "rows.csv:4");
    }

    #[test]
    fn progress_lines() {
        let c = ProgressCounts {
            done: 5,
            total: 10,
            ok: 4,
            failed: 1,
            rows_per_second: 2.345,
            eta: std::time::Duration::from_secs(100),
        };
        assert_eq!(
            progress_line(TS, LogFormat::Text, c),
            format!(
                "{TS} reactbatch: progress 5/10 rows, ok 4, failed 1, 2.3 rows/s, ETA 1m 40s\n"
            )
        );
        let v: Value = serde_json::from_str(&progress_line(TS, LogFormat::Json, c)).expect("JSON");
        assert_eq!(
            v,
            json!({"ts": TS, "level": "info", "event": "progress", "done": 5, "total": 10,
                   "ok": 4, "failed": 1, "rows_per_second": 2.3, "eta_ms": 100000})
        );
    }

    #[test]
    fn problems_and_messages_as_events() {
        let p = Problem::warning("p.yaml", Some(3), None, "pointless").with_hint("drop it");
        let v: Value = serde_json::from_str(&problem_line(TS, &p)).expect("JSON");
        assert_eq!(
            v,
            json!({"ts": TS, "level": "warn", "event": "problem", "file": "p.yaml", "line": 3,
                   "column": null, "code": "warning", "message": "pointless", "hint": "drop it"})
        );
        let line = json_line(
            TS,
            Level::Error,
            "message",
            &json!({"message": "a \"b\"\nc"}),
        );
        assert!(!line.contains('\n'), "one line: {line}");
        let v: Value = serde_json::from_str(&line).expect("JSON");
        assert_eq!(v["message"], "a \"b\"\nc");
        assert_eq!(
            json_line(TS, Level::Info, "x", &json!({})),
            format!("{{\"ts\":\"{TS}\",\"level\":\"info\",\"event\":\"x\"}}")
        );
    }
}
