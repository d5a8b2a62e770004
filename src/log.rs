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
//! The format is chosen once per process ([`init`]), like the colour of diagnostics: stderr is
//! process-wide, and the executor's progress ticker must not need the flag threaded to it.
//! `run.rs` shadows `eprintln!` with [`eprintln!`](crate::log::eprintln) from here, so each of
//! its notices becomes an event without touching every call; in that file a line starting
//! `reactbatch run: ` is a failure (level `error`), any other a notice (`info`).
//!
//! The formatting functions are pure (timestamp passed in) and unit-tested.

use std::io::IsTerminal;
use std::sync::OnceLock;

use serde_json::{json, Value};

use crate::plan::{Problem, Severity};
use crate::summary::Summary;

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
pub enum Level {
    Info,
    Warn,
    Error,
}

impl Level {
    pub fn as_str(self) -> &'static str {
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

/// Chooses the format for the whole process (called once, by `run`).
pub fn init(format: LogFormat) {
    let _ = CONFIG.set(Config {
        format,
        timestamps: !std::io::stderr().is_terminal(),
    });
}

fn config() -> Config {
    *CONFIG.get_or_init(|| Config {
        format: LogFormat::Text,
        timestamps: !std::io::stderr().is_terminal(),
    })
}

/// The chosen format (text unless [`init`] said otherwise).
pub fn format() -> LogFormat {
    config().format
}

fn now() -> String {
    crate::report::timestamp(chrono::Utc::now())
}

/// One JSON line: `ts`, `level`, `event` first, then `fields` (an object, serialized in its own
/// field order; other values are ignored).
pub fn json_line(ts: &str, level: Level, event: &str, fields: &impl serde::Serialize) -> String {
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
pub fn stamped(text: &str, ts: Option<&str>) -> String {
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

/// A notice or failure message (one line of text, or one event).
pub fn message(level: Level, text: &str) {
    match format() {
        LogFormat::Text => std::eprintln!("{text}"),
        LogFormat::Json => {
            std::eprintln!(
                "{}",
                json_line(&now(), level, "message", &json!({ "message": text }))
            )
        }
    }
}

/// Routes a `reactbatch run` message through [`message`]; see the module doc for the level.
pub fn run_message(text: &str) {
    let level = if text.starts_with("reactbatch run: ") {
        Level::Error
    } else {
        Level::Info
    };
    message(level, text);
}

/// `eprintln!` for `run.rs`: the same text in text format, a `message` event in JSON.
macro_rules! eprintln {
    ($($arg:tt)*) => {
        $crate::log::run_message(&format!($($arg)*))
    };
}
pub(crate) use eprintln;

/// Plan problems: rendered diagnostics in text, one `problem` event each in JSON.
pub fn problems(problems: &[Problem]) {
    match format() {
        LogFormat::Text => crate::diagnostic::eprint(problems),
        LogFormat::Json => {
            let ts = now();
            for p in problems {
                std::eprintln!("{}", problem_line(&ts, p));
            }
        }
    }
}

pub fn problem_line(ts: &str, p: &Problem) -> String {
    let level = match p.severity {
        Severity::Error => Level::Error,
        Severity::Warning => Level::Warn,
    };
    json_line(
        ts,
        level,
        "problem",
        &json!({
            "file": p.file,
            "line": p.line,
            "column": p.column,
            "message": p.message,
            "hint": p.hint,
        }),
    )
}

/// Counts for a progress event.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ProgressCounts {
    pub done: u64,
    pub total: u64,
    pub ok: u64,
    pub failed: u64,
    pub rows_per_second: f64,
}

/// A status line of a run without a progress bar (every 10 s).
pub fn progress(c: ProgressCounts) {
    std::eprint!("{}", progress_line(&now(), format(), c));
}

pub fn progress_line(ts: &str, format: LogFormat, c: ProgressCounts) -> String {
    match format {
        LogFormat::Text => format!(
            "{ts} reactbatch: progress {}/{} rows, ok {}, failed {}, {:.1} rows/s\n",
            c.done, c.total, c.ok, c.failed, c.rows_per_second
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
                }),
            );
            line.push('\n');
            line
        }
    }
}

/// The end-of-run summary: [`Summary::render`] (timestamped per line when stderr is not a
/// terminal), or one `summary` event holding the `--summary-json` fields.
pub fn summary(summary: &Summary) {
    let c = config();
    let ts = now();
    std::eprint!(
        "{}",
        summary_text(summary, c.format, c.timestamps.then_some(ts.as_str()), &ts)
    );
}

pub fn summary_text(summary: &Summary, format: LogFormat, stamp: Option<&str>, ts: &str) -> String {
    match format {
        LogFormat::Text => stamped(&summary.render(), stamp),
        LogFormat::Json => {
            let level = match summary.exit_code {
                0 => Level::Info,
                130 => Level::Warn,
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
            plan: "p.yaml".into(),
            report: "p.report.csv".into(),
            dry_run: false,
            rows: 3,
            counts: [("ok", 2), ("failed", 1)].into_iter().collect(),
            attempts: 4,
            retries: 1,
            elapsed_ms: 1500,
            rows_per_second: 2.0,
            targets: vec![],
            lanes: vec![],
            latency: None,
            digest: None,
            interrupted: false,
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
    fn progress_lines() {
        let c = ProgressCounts {
            done: 5,
            total: 10,
            ok: 4,
            failed: 1,
            rows_per_second: 2.345,
        };
        assert_eq!(
            progress_line(TS, LogFormat::Text, c),
            format!("{TS} reactbatch: progress 5/10 rows, ok 4, failed 1, 2.3 rows/s\n")
        );
        let v: Value = serde_json::from_str(&progress_line(TS, LogFormat::Json, c)).expect("JSON");
        assert_eq!(
            v,
            json!({"ts": TS, "level": "info", "event": "progress", "done": 5, "total": 10,
                   "ok": 4, "failed": 1, "rows_per_second": 2.3})
        );
    }

    #[test]
    fn problems_and_messages_as_events() {
        let p = Problem::warning("p.yaml", Some(3), None, "pointless").with_hint("drop it");
        let v: Value = serde_json::from_str(&problem_line(TS, &p)).expect("JSON");
        assert_eq!(
            v,
            json!({"ts": TS, "level": "warn", "event": "problem", "file": "p.yaml", "line": 3,
                   "column": null, "message": "pointless", "hint": "drop it"})
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
