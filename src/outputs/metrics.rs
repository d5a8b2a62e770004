//! `run --metrics-file FILE` (setting `metrics_file`): the end of a live run as gauges in the
//! Prometheus text format, for node_exporter's textfile collector. The file is replaced
//! atomically (a temporary file in the same directory, renamed over it), so the collector
//! never reads half a file.
//!
//! `reactbatch_last_success_timestamp_seconds` is what staleness alerts watch: a run that
//! ends with exit code 0 sets it to its own end; any other run carries over the value of the
//! file it replaces (same plan label), or writes 0 when there is none, so a job that has never
//! succeeded is as stale as can be. Every sample has a `plan` label: the plan file's stem.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::outputs::report::Status;
use crate::outputs::summary::Summary;

/// What one run puts in the file.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct RunMetrics {
    /// The plan file's stem (`nightly` for `jobs/nightly.yaml`).
    pub plan: String,
    /// Rows by status, every status of the report (0s included), in the report's order.
    pub rows: Vec<(&'static str, u64)>,
    /// Requests sent, retries included.
    pub requests: u64,
    /// Requests answered 429.
    pub rate_limited: u64,
    pub duration_seconds: f64,
    pub exit_code: u8,
    /// When the run ended, seconds since the Unix epoch.
    pub finished_at: f64,
}

impl RunMetrics {
    /// The metrics of a run from its summary, the plan it ran and its final exit code (which
    /// may differ from the summary's when an output failed after it was made).
    pub(crate) fn of_run(
        summary: &Summary,
        plan: &Path,
        exit_code: u8,
        finished_at: f64,
    ) -> RunMetrics {
        RunMetrics {
            plan: plan_label(plan),
            rows: Status::ALL
                .iter()
                .map(|&st| (st.as_str(), summary.count(st)))
                .collect(),
            requests: summary.attempts,
            rate_limited: summary.lanes.iter().map(|l| l.rate_limited).sum(),
            duration_seconds: summary.elapsed_ms as f64 / 1000.0,
            exit_code,
            finished_at,
        }
    }
}

/// The `plan` label: the plan file's stem.
pub(crate) fn plan_label(plan: &Path) -> String {
    plan.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "plan".into())
}

/// A label value as the text format writes it: `\` → `\\`, `"` → `\"`, newline → `\n`.
pub(crate) fn escape_label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

const LAST_SUCCESS: &str = "reactbatch_last_success_timestamp_seconds";

/// The file's text. `last_success`: the earlier value a failed run carries over (0 if none);
/// a run with exit code 0 writes its own end instead.
pub(crate) fn render(m: &RunMetrics, last_success: Option<f64>) -> String {
    let plan = escape_label(&m.plan);
    let mut out = String::new();
    let mut gauge = |name: &str, help: &str, samples: &[(Option<&str>, String)]| {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} gauge\n"));
        for (status, value) in samples {
            match status {
                Some(st) => out.push_str(&format!(
                    "{name}{{plan=\"{plan}\",status=\"{}\"}} {value}\n",
                    escape_label(st)
                )),
                None => out.push_str(&format!("{name}{{plan=\"{plan}\"}} {value}\n")),
            }
        }
    };
    let rows: Vec<_> = m
        .rows
        .iter()
        .map(|(st, n)| (Some(*st), n.to_string()))
        .collect();
    gauge(
        "reactbatch_last_run_rows",
        "Rows of the last live run by report status.",
        &rows,
    );
    let one = |v: String| [(None, v)];
    gauge(
        "reactbatch_last_run_requests",
        "Requests the last live run sent, retries included.",
        &one(m.requests.to_string()),
    );
    gauge(
        "reactbatch_last_run_rate_limited",
        "Requests of the last live run answered 429 (rate limited).",
        &one(m.rate_limited.to_string()),
    );
    gauge(
        "reactbatch_last_run_duration_seconds",
        "How long the last live run took, in seconds.",
        &one(m.duration_seconds.to_string()),
    );
    gauge(
        "reactbatch_last_run_exit_code",
        "Exit code of the last live run (0: every row done).",
        &one(m.exit_code.to_string()),
    );
    gauge(
        "reactbatch_last_run_timestamp_seconds",
        "When the last live run ended, seconds since the Unix epoch.",
        &one(m.finished_at.to_string()),
    );
    let success = if m.exit_code == 0 {
        m.finished_at
    } else {
        last_success.unwrap_or(0.0)
    };
    gauge(
        LAST_SUCCESS,
        "When a live run last ended with exit code 0, seconds since the Unix epoch (0: never).",
        &one(success.to_string()),
    );
    out
}

/// The last-success value that `text` (an earlier file) holds for `plan`, if it holds one: the
/// sample this module wrote, read back exactly (a foreign or hand-edited line reads as none).
pub(crate) fn last_success_in(text: &str, plan: &str) -> Option<f64> {
    let prefix = format!("{LAST_SUCCESS}{{plan=\"{}\"}} ", escape_label(plan));
    text.lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|v| v.is_finite() && *v >= 0.0)
}

/// A temporary file beside `path`, which the textfile collector does not read (it reads
/// `*.prom` only): `.<name>.<pid>.tmp`.
pub(crate) fn temporary_beside(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "metrics".into());
    path.with_file_name(format!(".{name}.{}.tmp", std::process::id()))
}

/// Replaces `path` with `bytes` atomically: written and synced to a temporary file in the
/// same directory, then renamed over it. On failure the temporary file is removed and `path`
/// is as it was.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = temporary_beside(path);
    let written = (|| {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// Whether a file can be created in `path`'s directory (what [`write_atomic`] needs, even when
/// `path` itself exists and is writable): a temporary file is created there and removed.
pub(crate) fn check_directory(path: &Path) -> std::io::Result<()> {
    let tmp = temporary_beside(path);
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)?;
    std::fs::remove_file(&tmp)
}

/// Writes the metrics of a run that ended with `exit_code` to `path`, carrying over the last
/// success from the file it replaces. A failure is a warning: the run's outcome stands (and a
/// stale file is itself what the alerts see).
pub(crate) fn write(path: &Path, summary: &Summary, plan: &Path, exit_code: u8) {
    let finished_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| (d.as_millis() as f64) / 1000.0);
    let metrics = RunMetrics::of_run(summary, plan, exit_code, finished_at);
    let earlier = std::fs::read_to_string(path)
        .ok()
        .and_then(|text| last_success_in(&text, &metrics.plan));
    if let Err(e) = write_atomic(path, render(&metrics, earlier).as_bytes()) {
        crate::outputs::log::warn(&format!(
            "reactbatch run: cannot write the metrics file {}: {e}; the run's outcome is unchanged",
            path.display()
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics(exit_code: u8) -> RunMetrics {
        RunMetrics {
            plan: "night\"ly\\job\nx".into(),
            rows: vec![("ok", 3), ("failed", 0)],
            requests: 4,
            rate_limited: 1,
            duration_seconds: 1.5,
            exit_code,
            finished_at: 1_765_000_000.25,
        }
    }

    #[test]
    fn label_values_are_escaped_as_the_text_format_says() {
        assert_eq!(escape_label(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(escape_label("a\nb"), "a\\nb");
        assert_eq!(escape_label("nightly-é"), "nightly-é");
        let text = render(&metrics(0), None);
        assert!(
            text.contains(
                r#"reactbatch_last_run_rows{plan="night\"ly\\job\nx",status="failed"} 0"#
            ),
            "{text}"
        );
        // Every line is a comment or one sample: the newline in the stem did not split one.
        for line in text.lines() {
            assert!(
                line.starts_with("# HELP ")
                    || line.starts_with("# TYPE ")
                    || line.starts_with("reactbatch_"),
                "{line}"
            );
        }
    }

    #[test]
    fn last_success_is_this_runs_end_or_carried_over() {
        let ok = render(&metrics(0), Some(5.0));
        let plan = &metrics(0).plan;
        assert_eq!(last_success_in(&ok, plan), Some(1_765_000_000.25));
        let failed = render(&metrics(1), last_success_in(&ok, plan));
        assert_eq!(last_success_in(&failed, plan), Some(1_765_000_000.25));
        assert!(failed.contains("reactbatch_last_run_exit_code{plan="));
        let never = render(&metrics(1), None);
        assert_eq!(last_success_in(&never, plan), Some(0.0));
        // Another plan's file says nothing of this one.
        assert_eq!(last_success_in(&ok, "other"), None);
    }

    #[test]
    fn write_atomic_replaces_the_file_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("reactbatch.prom");
        std::fs::write(&path, "old\n").unwrap();
        write_atomic(&path, b"new\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "new\n");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("reactbatch.prom")]);
        assert!(check_directory(&path).is_ok());
    }

    #[test]
    fn a_failed_write_leaves_the_old_file_and_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        // A directory where the file should be: the rename fails after the temporary file
        // was written.
        let path = dir.path().join("taken.prom");
        std::fs::create_dir(&path).unwrap();
        std::fs::write(path.join("inside"), "kept").unwrap();
        assert!(write_atomic(&path, b"new\n").is_err());
        assert_eq!(
            std::fs::read_to_string(path.join("inside")).unwrap(),
            "kept"
        );
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("taken.prom")]);
        let missing = dir.path().join("no-such-dir").join("x.prom");
        assert!(check_directory(&missing).is_err());
        assert!(write_atomic(&missing, b"x").is_err());
    }
}
