//! Operator trust: what a run tells a person, and what it keeps, when something is off — a
//! resume after the plan was edited keeps the earlier rows, an interrupt says in one line how
//! to continue, a curl script that would outlive its signatures is refused, and the small
//! things (plural, rates as written, timestamps, one refusal above the warnings, `undo -o`,
//! `--retry-failed`). Every test runs the real binary; sends go to the sandbox on 127.0.0.1.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use reactbatch::outputs::report::{read_report, RowResult, Status};
use reactbatch::sandbox::Sandbox;

use crate::common::*;

fn is_timestamp(s: &str) -> bool {
    chrono::DateTime::parse_from_rfc3339(s).is_ok() && s.ends_with('Z')
}

/// Text lines of stderr, each without its leading timestamp (stderr is a pipe here, so every
/// line carries one: the test of that is [`every_stderr_line_of_a_piped_run_is_timestamped`]).
fn unstamped(stderr: &str) -> Vec<String> {
    stderr
        .lines()
        .map(|l| match l.split_once(' ') {
            Some((ts, rest)) if is_timestamp(ts) => rest.to_string(),
            _ => l.to_string(),
        })
        .collect()
}

fn rows_of(report: &[RowResult], code: &str) -> Vec<RowResult> {
    report.iter().filter(|r| r.code == code).cloned().collect()
}

// ---- resume never loses history ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_after_a_user_id_edit_keeps_the_earlier_rows_and_names_their_count() {
    let sandbox = Sandbox::start(sandbox_config()).await.expect("sandbox");
    let dir = tempfile::tempdir().expect("tempdir");
    let rows: Vec<PlanRow> = (0..12)
        .map(|i| react("k", format!("u-{i}"), "👍"))
        .collect();
    let plan = write_plan(dir.path(), &sandbox.base_url(), &rows, "rate: unlimited");
    let report = dir.path().join("report.csv");
    let out = run_blocking(run_cmd(&plan, &report, &[])).await;
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    let first = read_report(&report).expect("report");
    assert_eq!(first.len(), 12);

    // Mid-migration, the target's user changes: every row is a different request now.
    let text = std::fs::read_to_string(&plan).expect("plan");
    std::fs::write(
        &plan,
        text.replace(&format!("user_id: {USER}"), "user_id: bot-2"),
    )
    .expect("edit plan");

    // The dry run says it before anything is sent, and its report keeps them too.
    let dry = dir.path().join("dry.csv");
    let resume = report.display().to_string();
    let out = run_blocking(run_cmd(&plan, &dry, &["--dry-run", "--resume", &resume])).await;
    let err = stderr(&out);
    assert_eq!(code(&out), Some(0), "{err}");
    assert!(
        err.contains("12 row(s) of") && err.contains("match no row of the plan"),
        "{err}"
    );
    assert!(
        err.contains("12 at a line whose row keeps its target, action, message and emoji"),
        "{err}"
    );
    let dry_report = read_report(&dry).expect("dry report");
    assert_eq!(
        rows_of(&dry_report, "not_in_plan").len(),
        12,
        "{dry_report:?}"
    );
    assert_eq!(
        dry_report
            .iter()
            .filter(|r| r.status == Status::Planned)
            .count(),
        12
    );
    let sent_before = sandbox
        .stats()
        .count(reactbatch::plan::ProviderKind::Kommo, 200);

    // The live resume, into the same file.
    let summary = dir.path().join("summary.json");
    let summary_arg = summary.display().to_string();
    let out = run_blocking(run_cmd(
        &plan,
        &report,
        &["--resume", &resume, "--summary-json", &summary_arg],
    ))
    .await;
    let err = stderr(&out);
    assert_eq!(code(&out), Some(0), "{err}");
    assert!(err.contains("12 row(s) of"), "{err}");
    assert!(
        err.contains("12 earlier row(s) of the resumed report match no row of the plan"),
        "the summary counts them apart: {err}"
    );
    assert_eq!(
        sandbox
            .stats()
            .count(reactbatch::plan::ProviderKind::Kommo, 200),
        sent_before + 12,
        "the edited rows are sent as new rows"
    );
    let now = read_report(&report).expect("report");
    assert_eq!(now.len(), 24, "{now:?}");
    // This run's rows first, then the earlier ones, unchanged but for the code.
    let (mine, kept) = now.split_at(12);
    assert!(mine
        .iter()
        .all(|r| r.status == Status::Ok && r.code.is_empty()));
    for (kept, earlier) in kept.iter().zip(&first) {
        assert_eq!(
            RowResult {
                code: earlier.code.clone(),
                ..kept.clone()
            },
            *earlier
        );
        assert_eq!(kept.code, "not_in_plan");
    }
    let s = summary_json(&summary);
    assert_eq!(s["not_in_plan"], 12, "{s}");
    assert_eq!(s["rows"], 12, "{s}");
    assert_eq!(s["exit_code"], 0, "{s}");

    // A second resume keeps them again, and sends nothing.
    let out = run_blocking(run_cmd(&plan, &report, &["--resume", &resume])).await;
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    let again = read_report(&report).expect("report");
    assert_eq!(again.len(), 24);
    assert_eq!(rows_of(&again, "done_earlier").len(), 12);
    assert_eq!(rows_of(&again, "not_in_plan").len(), 12);
    assert_eq!(
        sandbox
            .stats()
            .count(reactbatch::plan::ProviderKind::Kommo, 200),
        sent_before + 12
    );

    // undo with the edited plan: the earlier rows are named as ones it cannot reverse.
    let undo = dir.path().join("undo.yaml");
    let out = bin()
        .args(["undo", &resume, "--plan"])
        .arg(&plan)
        .arg("-o")
        .arg(&undo)
        .output()
        .expect("undo");
    let err = stderr(&out);
    assert_eq!(code(&out), Some(0), "{err}");
    assert!(
        err.contains("12 done row(s) of") && err.contains("cannot be reversed from this plan"),
        "{err}"
    );
    assert!(err.contains("12 row(s) to undo"), "{err}");
    assert!(err.contains("target k message u-"), "{err}");
    let undo_text = std::fs::read_to_string(&undo).expect("undo plan");
    assert!(
        undo_text.contains("# not undone: 12 done row(s)"),
        "{undo_text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_names_the_fields_that_changed_at_a_line_and_the_lines_now_empty() {
    let sandbox = Sandbox::start(sandbox_config()).await.expect("sandbox");
    let dir = tempfile::tempdir().expect("tempdir");
    let rows: Vec<PlanRow> = (0..4).map(|i| react("k", format!("f-{i}"), "👍")).collect();
    let plan = write_plan(dir.path(), &sandbox.base_url(), &rows, "rate: unlimited");
    let report = dir.path().join("report.jsonl");
    let out = run_blocking(run_cmd(&plan, &report, &[])).await;
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));

    // Row 1 reacts with another emoji now; the last row is gone.
    let mut edited = rows[..3].to_vec();
    edited[0].emoji = "🎉";
    write_plan(dir.path(), &sandbox.base_url(), &edited, "rate: unlimited");
    let resume = report.display().to_string();
    let dry = dir.path().join("dry.jsonl");
    let out = run_blocking(run_cmd(&plan, &dry, &["--dry-run", "--resume", &resume])).await;
    let err = stderr(&out);
    assert_eq!(code(&out), Some(0), "{err}");
    assert!(err.contains("2 row(s) of"), "{err}");
    assert!(err.contains("1 whose line now has another emoji"), "{err}");
    assert!(err.contains("1 whose line holds no row now"), "{err}");
    let dry_rows = read_report(&dry).expect("dry report");
    assert_eq!(dry_rows.len(), 5, "{dry_rows:?}");
    let kept = rows_of(&dry_rows, "not_in_plan");
    let mut kept_ids: Vec<&str> = kept.iter().map(|r| r.message_id.as_str()).collect();
    kept_ids.sort_unstable();
    assert_eq!(kept_ids, ["f-0", "f-3"]);
    assert!(kept
        .iter()
        .all(|r| r.status == Status::Ok && r.emoji == "👍"));
    assert_eq!(rows_of(&dry_rows, "done_earlier").len(), 2);
}

// ---- short interrupts ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_quiet_says_in_a_few_lines_how_to_resume_and_that_command_works() {
    let sandbox = Sandbox::start(sandbox_config()).await.expect("sandbox");
    let dir = tempfile::tempdir().expect("tempdir");
    let plan = plan_to_interrupt(dir.path(), &sandbox);
    // A path the shell must quote.
    let report = dir.path().join("the report.csv");
    let summary = dir.path().join("summary.json");
    let summary_arg = summary.display().to_string();
    let child = run_cmd(&plan, &report, &["-q", "--summary-json", &summary_arg])
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let (status, err) = terminate_once_under_way(child, &report).await;
    assert_eq!(status.code(), Some(143), "{err}");
    let lines = unstamped(&err);
    assert!(lines.len() <= 5, "{} lines:\n{err}", lines.len());
    assert!(
        !err.contains("cancelled row"),
        "no row listed one by one: {err}"
    );
    let line = lines
        .iter()
        .find(|l| l.contains("--resume"))
        .unwrap_or_else(|| panic!("a line with --resume:\n{err}"));
    assert!(line.contains("terminated (SIGTERM)"), "{line}");
    assert!(line.contains("cancelled"), "{line}");
    let report_rows = read_report(&report).expect("report");
    let cancelled = by_status(&report_rows)
        .get(&Status::Cancelled)
        .copied()
        .unwrap_or(0);
    assert!(cancelled > 0, "stopped early");
    assert!(line.contains(&format!("{cancelled} cancelled")), "{line}");

    // The rate counts rows sent, not the cancelled ones.
    let s = summary_json(&summary);
    let sent = s["counts"]["ok"].as_f64().expect("ok count");
    let elapsed = s["elapsed_ms"].as_f64().expect("elapsed") / 1000.0;
    let rate = s["rows_per_second"].as_f64().expect("rate");
    assert!(
        (rate * elapsed - sent).abs() < 1.0,
        "rate {rate} × {elapsed}s is the {sent} rows sent: {s}"
    );

    // The command, pasted into a shell, finishes the plan.
    let command = line
        .split_once("to continue: ")
        .map(|(_, c)| c)
        .expect("to continue: …");
    assert!(command.contains("--resume"), "{command}");
    assert!(
        command.contains("'"),
        "the report path is quoted: {command}"
    );
    let words = shlex::split(command).expect("shell words");
    let mut again = bin();
    again
        .args(&words[1..])
        .current_dir(dir.path())
        .env("KOMMO_CHANNEL_SECRET", KOMMO_SECRET)
        .env("OGMMA_API_KEY", OGMMA_KEY)
        .stdin(Stdio::null());
    let out = run_blocking(again).await;
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    let report_rows = read_report(&report).expect("report");
    assert_one_row_per_plan_row(&report_rows, ROWS_TO_INTERRUPT);
    assert!(report_rows
        .iter()
        .all(|r| r.status == Status::Ok || r.code == "done_earlier"));
}

// ---- emit ----

fn kommo_rows(n: usize) -> Vec<PlanRow> {
    (0..n).map(|i| react("k", format!("e-{i}"), "👍")).collect()
}

#[test]
fn emit_takes_its_format_from_the_extension_unless_told() {
    let dir = tempfile::tempdir().expect("tempdir");
    let plan = write_plan(dir.path(), "http://127.0.0.1:9", &kommo_rows(3), "");
    let report = dir.path().join("r.csv");
    let emit = |name: &str, extra: &[&str]| {
        let path = dir.path().join(name);
        let p = path.display().to_string();
        let mut args = vec!["--dry-run", "--emit", p.as_str()];
        args.extend_from_slice(extra);
        let out = run_cmd(&plan, &report, &args).output().expect("run");
        assert_eq!(code(&out), Some(0), "{name}: {}", stderr(&out));
        std::fs::read_to_string(&path).expect("emitted")
    };
    let script = emit("x.sh", &[]);
    assert!(script.starts_with("#!/usr/bin/env bash\n"), "{script}");
    assert_eq!(script.matches("\ncurl ").count(), 3, "{script}");
    for name in ["x.jsonl", "x.json", "x.log"] {
        let lines = emit(name, &[]);
        assert_eq!(lines.lines().count(), 3, "{name}");
        for line in lines.lines() {
            let v: serde_json::Value = serde_json::from_str(line).expect("JSON line");
            assert!(v["headers"]["X-Signature"].is_string(), "{line}");
        }
    }
    // The flag wins over the extension.
    let lines = emit("y.sh", &["--emit-format", "jsonl"]);
    assert!(lines.starts_with("{\"row\":1,"), "{lines}");
    let script = emit("y.jsonl", &["--emit-format", "curl"]);
    assert!(script.starts_with("#!/usr/bin/env bash\n"), "{script}");
}

#[test]
fn a_curl_script_that_outlives_kommo_signatures_is_refused_with_the_split_that_fits() {
    let dir = tempfile::tempdir().expect("tempdir");
    // 7 000 rows at Kommo's 7/s: 16m 39s of pauses (1/7 s is 142.857 ms), past the 15 minutes a signature lives.
    let plan = write_plan(dir.path(), "http://127.0.0.1:9", &kommo_rows(7000), "");
    let report = dir.path().join("r.csv");
    let script = dir.path().join("r.sh");
    let script_arg = script.display().to_string();
    let out = run_cmd(&plan, &report, &["--dry-run", "--emit", &script_arg])
        .output()
        .expect("run");
    let err = stderr(&out);
    assert_eq!(code(&out), Some(2), "{err}");
    let lines = unstamped(&err);
    assert_eq!(lines.len(), 1, "one line: {err}");
    assert!(lines[0].contains("16m 39s"), "{err}");
    assert!(lines[0].contains("15 minutes"), "{err}");
    assert!(
        lines[0].contains("--shard 1/2 --rate 7/s") && lines[0].contains("--shard 2/2 --rate 7/s"),
        "{err}"
    );
    assert!(!script.exists(), "nothing written");
    assert!(!report.exists(), "nothing written");

    // The fix it names works: each shard's script fits in the window.
    for shard in ["1/2", "2/2"] {
        let path = dir.path().join(format!("r-{}.sh", &shard[..1]));
        let p = path.display().to_string();
        let out = run_cmd(
            &plan,
            &report,
            &["--dry-run", "--shard", shard, "--rate", "7/s", "--emit", &p],
        )
        .output()
        .expect("run");
        assert_eq!(code(&out), Some(0), "{shard}: {}", stderr(&out));
        let script = std::fs::read_to_string(&path).expect("script");
        let sleeps: f64 = script
            .lines()
            .filter_map(|l| l.strip_prefix("sleep "))
            .map(|s| s.parse::<f64>().expect("seconds"))
            .sum();
        assert!(sleeps > 0.0 && sleeps <= 15.0 * 60.0, "{shard}: {sleeps}s");
    }

    // JSON Lines replay nothing: no limit.
    let jsonl = dir.path().join("r.jsonl").display().to_string();
    let out = run_cmd(&plan, &report, &["--dry-run", "--emit", &jsonl])
        .output()
        .expect("run");
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
}

// ---- the smaller items ----

#[test]
fn retry_failed_without_resume_is_a_usage_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let plan = write_plan(dir.path(), "http://127.0.0.1:9", &kommo_rows(2), "");
    let report = dir.path().join("r.csv");
    let out = run_cmd(&plan, &report, &["--retry-failed"])
        .output()
        .expect("run");
    let err = stderr(&out);
    assert_eq!(code(&out), Some(2), "{err}");
    assert!(
        err.contains("--retry-failed needs --resume REPORT"),
        "{err}"
    );
    assert!(!report.exists(), "nothing sent, nothing written");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_request_is_singular_rates_read_as_written_and_a_missing_rate_says_why() {
    let sandbox = Sandbox::start(sandbox_config()).await.expect("sandbox");
    let dir = tempfile::tempdir().expect("tempdir");
    // Shard 1 of 3 of Kommo's 7/s paces at 7/s shared by three: 7/3s.
    let rows: Vec<PlanRow> = (0..9).map(|i| react("k", format!("s-{i}"), "👍")).collect();
    let plan = write_plan(dir.path(), &sandbox.base_url(), &rows, "");
    let report = dir.path().join("r.csv");
    let out = run_blocking(run_cmd(&plan, &report, &["--shard", "1/3"])).await;
    let err = stderr(&out);
    assert_eq!(code(&out), Some(0), "{err}");
    assert!(err.contains("(limit 7/3s)"), "{err}");
    assert!(err.contains("(limit 60/3min)"), "{err}");
    assert!(!err.contains("000ms"), "{err}");

    let rows = vec![react("k", "one", "👍")];
    let plan = write_plan(dir.path(), &sandbox.base_url(), &rows, "rate: 5/s");
    let report = dir.path().join("one.csv");
    let out = run_blocking(run_cmd(&plan, &report, &[])).await;
    let err = stderr(&out);
    assert_eq!(code(&out), Some(0), "{err}");
    assert!(err.contains("1 request (retries 0)"), "{err}");
    assert!(
        err.contains(": 1 request, no rate (sent over less than 1 s),"),
        "{err}"
    );
    assert!(!err.contains("1 requests"), "{err}");
    assert!(!err.contains("achieved -"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_rerun_says_its_one_reason_first_and_every_line_is_timestamped() {
    let sandbox = Sandbox::start(sandbox_config()).await.expect("sandbox");
    let dir = tempfile::tempdir().expect("tempdir");
    // Every message reacted twice: ten pointless-row warnings, several lines each.
    let rows: Vec<PlanRow> = (0..20)
        .map(|i| {
            react(
                "k",
                format!("w-{}", i / 2),
                if i % 2 == 0 { "👍" } else { "🎉" },
            )
        })
        .collect();
    let plan = write_plan(dir.path(), &sandbox.base_url(), &rows, "rate: unlimited");
    let report = dir.path().join("r.csv");
    let out = run_blocking(run_cmd(&plan, &report, &[])).await;
    let err = stderr(&out);
    assert_eq!(code(&out), Some(0), "{err}");
    assert!(err.matches("is pointless").count() >= 10, "{err}");
    every_line_is_timestamped(&err);

    // The second tick without --resume: refused, and the refusal is what it says.
    let out = run_blocking(run_cmd(&plan, &report, &[])).await;
    let err = stderr(&out);
    assert_eq!(code(&out), Some(2), "{err}");
    every_line_is_timestamped(&err);
    let lines = unstamped(&err);
    assert!(lines.len() <= 2, "{err}");
    assert!(
        lines[0].contains("holds the results of a live run") && lines[0].contains("--resume"),
        "{err}"
    );
    assert!(!err.contains("is pointless"), "{err}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("10 warning(s) not shown") && l.contains("reactbatch check")),
        "{err}"
    );
}

fn every_line_is_timestamped(stderr: &str) {
    for line in stderr.lines() {
        let (ts, _) = line.split_once(' ').unwrap_or((line, ""));
        assert!(is_timestamp(ts), "no timestamp: {line:?} in\n{stderr}");
    }
}

#[test]
fn undo_does_not_replace_a_file_without_force() {
    let dir = tempfile::tempdir().expect("tempdir");
    let plan = write_plan(dir.path(), "http://127.0.0.1:9", &kommo_rows(2), "");
    // A dry run's report: nothing done, so an empty undo plan.
    let report = dir.path().join("r.csv");
    let out = run_cmd(&plan, &report, &["--dry-run"])
        .output()
        .expect("run");
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    let out_path = dir.path().join("precious.yaml");
    std::fs::write(&out_path, "keep me\n").expect("write");
    let undo = |force: bool| {
        let mut cmd = bin();
        cmd.arg("undo")
            .arg(&report)
            .arg("--plan")
            .arg(&plan)
            .arg("-o")
            .arg(&out_path);
        if force {
            cmd.arg("--force");
        }
        cmd.output().expect("undo")
    };
    let out = undo(false);
    let err = stderr(&out);
    assert_eq!(code(&out), Some(2), "{err}");
    assert!(err.contains("exists; add --force"), "{err}");
    assert_eq!(read(&out_path), "keep me\n");
    let out = undo(true);
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    assert!(read(&out_path).contains("version: 1"));
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).expect("read")
}

fn code(out: &std::process::Output) -> Option<i32> {
    out.status.code()
}

#[test]
fn every_stderr_line_of_a_piped_run_is_timestamped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let plan = root().join("examples/workflows/quickstart.yaml");
    let out = output_within(
        bin()
            .args(["run"])
            .arg(&plan)
            .args(["--sandbox", "--rate", "unlimited", "--dry-run"])
            .current_dir(dir.path())
            .stdin(Stdio::null()),
        Duration::from_secs(120),
    );
    let err = stderr(&out);
    assert_eq!(code(&out), Some(0), "{err}");
    assert!(err.lines().count() > 3, "{err}");
    every_line_is_timestamped(&err);
}
