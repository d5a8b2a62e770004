//! Operators: cron hears about failures (`-q`), a rerun cannot resend by
//! accident, final failures stay final on `--resume`, outputs are checked before sending, a
//! closed pipe and SIGTERM end the process cleanly, audits estimate the live run. The real
//! binary runs against the sandbox on 127.0.0.1; assertions are on exit codes, stderr, reports
//! and what the sandbox saw.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::*;
use reactbatch::outputs::report::{read_report, Status};
use reactbatch::sandbox::{Sandbox, SandboxHandle};

fn requests(sandbox: &SandboxHandle) -> u64 {
    sandbox
        .stats()
        .by_provider
        .values()
        .map(|p| p.requests)
        .sum()
}

/// Two Kommo rows, the second on a message the sandbox answers 404.
fn one_ok_one_gone(dir: &Path, sandbox: &SandboxHandle) -> std::path::PathBuf {
    let rows = vec![react("k", "m-1", "👍"), react("k", "gone-1", "🎉")];
    write_plan(dir, &sandbox.base_url(), &rows, "rate: unlimited")
}

async fn gone_sandbox() -> SandboxHandle {
    Sandbox::start(sandbox_config().not_found_prefix("gone-"))
        .await
        .expect("sandbox")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quiet_names_a_404_row_and_exits_1_and_says_nothing_when_all_is_well() {
    let sandbox = gone_sandbox().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let plan = one_ok_one_gone(dir.path(), &sandbox);
    let report = dir.path().join("report.csv");
    let out = run_blocking(run_cmd(&plan, &report, &["-q"])).await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 2, "the failed row and the summary line: {err}");
    assert!(lines[0].contains(" reactbatch: failed row 2 ("), "{err}");
    assert!(
        lines[0].contains("rows.csv:3) target k message gone-1: 404 message_not_found: "),
        "{err}"
    );
    assert!(lines[1].contains("1 ok, 1 failed"), "{err}");
    assert!(lines[1].contains(&report.display().to_string()), "{err}");

    // The same in JSON: one failed_row event, then the summary.
    let json_report = dir.path().join("report2.csv");
    let out = run_blocking(run_cmd(
        &plan,
        &json_report,
        &["-q", "--log-format", "json"],
    ))
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let events: Vec<serde_json::Value> = stderr(&out)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON event a line"))
        .collect();
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(events[0]["event"], "failed_row");
    assert_eq!(events[0]["message_id"], "gone-1");
    assert_eq!(events[0]["http_status"], 404);
    assert_eq!(events[1]["event"], "summary");

    // All well: -q prints nothing at all.
    let good = tempfile::tempdir().expect("tempdir");
    let rows = vec![react("k", "m-2", "👍"), react("o", "m-3", "🎉")];
    let plan = write_plan(good.path(), &sandbox.base_url(), &rows, "rate: unlimited");
    let out = run_blocking(run_cmd(&plan, &good.path().join("r.csv"), &["-q"])).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stderr(&out), "");
    sandbox.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quiet_names_the_reason_of_a_wrong_secret_and_exits_3() {
    let sandbox = Sandbox::start(sandbox_config()).await.expect("sandbox");
    let dir = tempfile::tempdir().expect("tempdir");
    let rows: Vec<PlanRow> = (0..8).map(|i| react("k", format!("m-{i}"), "👍")).collect();
    let plan = write_plan(dir.path(), &sandbox.base_url(), &rows, "concurrency: 1");
    let mut cmd = run_cmd(
        &plan,
        &dir.path().join("r.csv"),
        &["-q", "--rate", "unlimited"],
    );
    cmd.env("KOMMO_CHANNEL_SECRET", "not-the-secret");
    let out = run_blocking(cmd).await;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let err = stderr(&out);
    let stopped: Vec<&str> = err
        .lines()
        .filter(|l| l.contains(" reactbatch: target k stopped"))
        .collect();
    assert_eq!(stopped.len(), 1, "the reason, once: {err}");
    assert!(stopped[0].contains("authentication failures"), "{err}");
    assert!(err.contains("failed row 1 "), "{err}");
    assert!(!err.contains("not-the-secret"), "{err}");
    sandbox.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_run_onto_a_live_report_is_refused_unless_resumed_or_overwritten() {
    let sandbox = Sandbox::start(sandbox_config()).await.expect("sandbox");
    let dir = tempfile::tempdir().expect("tempdir");
    let rows = vec![react("k", "m-1", "👍"), react("o", "m-2", "🎉")];
    let plan = write_plan(dir.path(), &sandbox.base_url(), &rows, "rate: unlimited");
    let report = dir.path().join("report.csv");
    let out = run_blocking(run_cmd(&plan, &report, &[])).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let sent = requests(&sandbox);
    let before = std::fs::read(&report).expect("report");

    let out = run_blocking(run_cmd(&plan, &report, &[])).await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("--resume") && err.contains("--overwrite"),
        "{err}"
    );
    assert_eq!(requests(&sandbox), sent, "nothing sent");
    assert_eq!(
        std::fs::read(&report).expect("report"),
        before,
        "report untouched"
    );

    let resume = report.display().to_string();
    let out = run_blocking(run_cmd(&plan, &report, &["--resume", &resume])).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(requests(&sandbox), sent, "every row was done");

    let out = run_blocking(run_cmd(&plan, &report, &["--overwrite"])).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(requests(&sandbox), sent + 2, "--overwrite sends again");
    sandbox.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_skips_a_404_row_and_retry_failed_sends_it() {
    let sandbox = gone_sandbox().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let plan = one_ok_one_gone(dir.path(), &sandbox);
    let report = dir.path().join("report.csv");
    let resume = report.display().to_string();
    let out = run_blocking(run_cmd(&plan, &report, &[])).await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(requests(&sandbox), 2);

    let out = run_blocking(run_cmd(&plan, &report, &["--resume", &resume])).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(requests(&sandbox), 2, "neither row sent again");
    let rows = read_report(&report).expect("report");
    let gone = rows.iter().find(|r| r.message_id == "gone-1").expect("row");
    assert_eq!(gone.status, Status::Skipped);
    assert_eq!(gone.code, "failed_earlier");
    assert_eq!(gone.http_status, Some(404));
    assert!(gone.message.contains("--retry-failed"), "{}", gone.message);

    // A chain of resumed runs keeps it skipped.
    let out = run_blocking(run_cmd(&plan, &report, &["--resume", &resume])).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(requests(&sandbox), 2);

    let out = run_blocking(run_cmd(
        &plan,
        &report,
        &["--resume", &resume, "--retry-failed"],
    ))
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(requests(&sandbox), 3, "only the 404 row is sent again");
    let rows = read_report(&report).expect("report");
    assert_eq!(rows.len(), 2);
    let gone = rows.iter().find(|r| r.message_id == "gone-1").expect("row");
    assert_eq!(gone.status, Status::Failed);
    sandbox.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_output_path_exits_2_before_sending() {
    let sandbox = Sandbox::start(sandbox_config()).await.expect("sandbox");
    let dir = tempfile::tempdir().expect("tempdir");
    let rows = vec![react("k", "m-1", "👍")];
    let plan = write_plan(dir.path(), &sandbox.base_url(), &rows, "rate: unlimited");
    let report = dir.path().join("report.csv");
    let missing = dir.path().join("no-such-dir").join("s.json");
    let missing = missing.display().to_string();
    for flag in ["--summary-json", "--emit"] {
        let out = run_blocking(run_cmd(&plan, &report, &[flag, &missing])).await;
        assert_eq!(out.status.code(), Some(2), "{flag}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("nothing was sent"),
            "{}",
            stderr(&out)
        );
        assert_eq!(requests(&sandbox), 0, "{flag}");
        assert!(!report.exists(), "{flag}: the test leaves no report behind");
    }
    sandbox.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_plan_leaves_a_report_with_its_header() {
    let dir = tempfile::tempdir().expect("tempdir");
    let plan = write_plan(dir.path(), "http://127.0.0.1:9", &[], "");
    let report = dir.path().join("report.csv");
    let out = run_blocking(run_cmd(&plan, &report, &[])).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        std::fs::read_to_string(&report).expect("report"),
        "row,source,target,provider,action,message_id,emoji,status,http_status,code,message,attempts,duration_ms,finished_at,key,scope_id,channel_id\n"
    );
}

#[test]
fn check_json_into_a_closed_pipe_ends_quietly() {
    use std::os::unix::process::ExitStatusExt;
    // A thousand problems: far more JSON than a pipe buffers, so the writes hit the closed pipe.
    let dir = tempfile::tempdir().expect("tempdir");
    let mut plan = String::from(
        "version: 1\ntargets:\n  k: { provider: kommo, scope_id: s_1, secret: { env: X }, user_id: u }\nrows:\n",
    );
    for i in 0..3000 {
        plan.push_str(&format!(
            "  - {{ message_id: m-{i}, conversation_id: c, emoij: x }}\n"
        ));
    }
    std::fs::write(dir.path().join("p.yaml"), plan).expect("plan");
    let mut child = bin()
        .args(["check", "p.yaml", "--format", "json"])
        .current_dir(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut stdout = child.stdout.take().expect("stdout");
    let mut first = [0u8; 1];
    stdout.read_exact(&mut first).expect("one byte");
    assert_eq!(&first, b"{");
    drop(stdout);
    let out = child.wait_with_output().expect("wait");
    assert_eq!(out.status.signal(), Some(libc::SIGPIPE), "{:?}", out.status);
    assert_eq!(stderr(&out), "", "quiet: no internal error");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_exits_143_with_every_row_in_the_report() {
    let sandbox = Sandbox::start(sandbox_config()).await.expect("sandbox");
    let dir = tempfile::tempdir().expect("tempdir");
    let plan = plan_to_interrupt(dir.path(), &sandbox);
    let report = dir.path().join("report.csv");
    let child = run_cmd(&plan, &report, &[])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    // Signal once a row is confirmed in the report: the run is under way.
    let (status, err) = terminate_once_under_way(child, &report).await;
    assert_eq!(status.code(), Some(143), "{err}");
    assert!(err.contains("terminated (SIGTERM)"), "{err}");
    assert!(!err.contains("Ctrl-C"), "{err}");
    let report = read_report(&report).expect("report");
    assert_one_row_per_plan_row(&report, ROWS_TO_INTERRUPT);
    let counts = by_status(&report);
    let ok = counts.get(&Status::Ok).copied().unwrap_or(0);
    assert!(ok < ROWS_TO_INTERRUPT, "stopped early: {counts:?}");
    assert_eq!(
        ok + counts.get(&Status::Cancelled).copied().unwrap_or(0),
        ROWS_TO_INTERRUPT,
        "{counts:?}"
    );
    assert_eq!(
        sandbox
            .stats()
            .count(reactbatch::plan::ProviderKind::Kommo, 200),
        ok as u64
    );
    sandbox.shutdown().await;
}

#[test]
fn a_dry_run_of_700_kommo_rows_at_7_per_second_estimates_100_seconds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut rows: Vec<PlanRow> = (0..690)
        .map(|i| react("k", format!("m-{i}"), "👍"))
        .collect();
    // Ten replacing reacts (a message reacted to earlier in the plan), with another emoji.
    rows.extend((0..10).map(|i| react("k", format!("m-{i}"), "🎉")));
    let plan = write_plan(dir.path(), "http://127.0.0.1:9", &rows, "rate: 7/s");
    let summary = dir.path().join("audit.json");
    let out = bin()
        .arg("run")
        .arg(&plan)
        .args([
            "--dry-run",
            "--no-progress",
            "--now",
            "2026-12-01T09:00:00Z",
        ])
        .arg("--report")
        .arg(dir.path().join("audit.csv"))
        .arg("--summary-json")
        .arg(&summary)
        .env("KOMMO_CHANNEL_SECRET", KOMMO_SECRET)
        .env("OGMMA_API_KEY", OGMMA_KEY)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let doc = summary_json(&summary);
    let estimated = doc["estimated_ms"].as_u64().expect("estimated_ms");
    assert!(
        (97_000..=103_000).contains(&estimated),
        "700 rows at 7/s ≈ 100 s, got {estimated} ms"
    );
    let k = &doc["targets"][0];
    assert_eq!(k["name"], "k");
    assert_eq!(k["reacts"], 700);
    assert_eq!(k["replacing"], 10);
    assert_eq!(k["estimated_ms"], estimated);
    assert_eq!(
        k["top_emoji"][0],
        serde_json::json!({"emoji": "👍", "rows": 690})
    );
    assert_eq!(doc["targets"][1]["estimated_ms"], 0, "no Ogmma rows");
    let err = stderr(&out);
    assert!(
        err.contains("plan for target k (kommo): 700 react(s) (10 replacing), 0 unreact(s)"),
        "{err}"
    );
    assert!(err.contains("the live run takes ~1m 39s"), "{err}");
}

#[test]
fn expect_digest_says_what_is_wrong_with_the_value_and_which_file_changed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rows = vec![react("k", "m-1", "👍")];
    let plan = write_plan(dir.path(), "http://127.0.0.1:9", &rows, "");
    let dry = |extra: &[&str], report: &str| {
        bin()
            .arg("run")
            .arg(&plan)
            .args(["--dry-run", "--no-progress", "--report"])
            .arg(dir.path().join(report))
            .args(extra)
            .env("KOMMO_CHANNEL_SECRET", KOMMO_SECRET)
            .env("OGMMA_API_KEY", OGMMA_KEY)
            .output()
            .expect("run")
    };
    let out = dry(&["--expect-digest", "d41d8cd98f00b204"], "a.csv");
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("is not a digest"), "{}", stderr(&out));

    let audit = dir.path().join("audit.json");
    let audit_arg = audit.display().to_string();
    let out = dry(&["--summary-json", &audit_arg], "b.csv");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = dry(&["--expect-digest", &audit_arg], "c.csv");
    assert_eq!(out.status.code(), Some(0), "unchanged: {}", stderr(&out));

    write_plan(
        dir.path(),
        "http://127.0.0.1:9",
        &[react("k", "m-1", "🎉")],
        "",
    );
    let out = dry(&["--expect-digest", &audit_arg], "d.csv");
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("rows.csv (changed)"), "{err}");
    assert!(!err.contains("plan.yaml (changed)"), "{err}");
}

#[test]
fn check_warns_about_two_message_ids_and_a_padded_secret() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("p.yaml"),
        "version: 1\ntargets:\n  k: { provider: kommo, scope_id: s_1, secret: { env: OPS_PADDED_SECRET }, user_id: u }\n\
         rows:\n  - { message_id: m-1, msgid: x-1, conversation_id: c, emoji: \"👍\" }\n",
    )
    .expect("plan");
    let out = bin()
        .args(["check", "p.yaml", "--format", "json"])
        .current_dir(dir.path())
        .env("OPS_PADDED_SECRET", "s3cret-value ")
        .output()
        .expect("check");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(!text.contains("s3cret-value"), "no secret in output");
    let doc: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    let codes: Vec<&str> = doc["plans"][0]["problems"]
        .as_array()
        .expect("problems")
        .iter()
        .filter_map(|p| p["code"].as_str())
        .collect();
    assert!(codes.contains(&"both_message_ids"), "{codes:?}");
    assert!(codes.contains(&"secret_whitespace"), "{codes:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_shows_the_emoji_that_was_sent() {
    let sandbox = Sandbox::start(sandbox_config()).await.expect("sandbox");
    let dir = tempfile::tempdir().expect("tempdir");
    let unreact_with = |target: &'static str| PlanRow {
        target,
        message: "m-1".into(),
        action: "unreact",
        emoji: "👍",
    };
    let rows = vec![
        react("o", "m-1", "👍"),
        unreact_with("o"),
        react("k", "m-1", "👍"),
        unreact_with("k"),
    ];
    let plan = write_plan(dir.path(), &sandbox.base_url(), &rows, "rate: unlimited");
    let report = dir.path().join("report.csv");
    let out = run_blocking(run_cmd(&plan, &report, &[])).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let emoji: Vec<(String, String, String)> = read_report(&report)
        .expect("report")
        .into_iter()
        .map(|r| (r.target, r.action, r.emoji))
        .collect();
    let expect = |t: &str, a: &str, e: &str| (t.to_string(), a.to_string(), e.to_string());
    for row in [
        expect("o", "react", "👍"),
        expect("o", "unreact", ""),
        expect("k", "react", "👍"),
        expect("k", "unreact", "👍"),
    ] {
        assert!(emoji.contains(&row), "{row:?} in {emoji:?}");
    }
    sandbox.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_failed_rows_are_named_then_the_rest_counted() {
    let sandbox = gone_sandbox().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let rows: Vec<PlanRow> = (0..25)
        .map(|i| react("k", format!("gone-{i}"), "👍"))
        .collect();
    let plan = write_plan(dir.path(), &sandbox.base_url(), &rows, "rate: unlimited");
    let report = dir.path().join("report.csv");
    let out = run_blocking(run_cmd(&plan, &report, &["-q"])).await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    let named = err
        .lines()
        .filter(|l| l.contains(" reactbatch: failed row "))
        .count();
    assert_eq!(named, 20, "{err}");
    assert!(
        err.contains(&format!(
            "reactbatch: … and 5 more — see {}",
            report.display()
        )),
        "{err}"
    );
    sandbox.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_ctrl_c_exits_at_once_with_every_finished_row_on_disk() {
    use std::io::BufRead;
    // Each answer takes 2 s and rows go out at 10/s: whenever a row finishes, a score of
    // requests are still in flight, longer than the first Ctrl-C waits for them.
    let sandbox = Sandbox::start(sandbox_config().latency(Duration::from_secs(2)))
        .await
        .expect("sandbox");
    let dir = tempfile::tempdir().expect("tempdir");
    let rows: Vec<PlanRow> = (0..100)
        .map(|i| react("k", format!("c-{i}"), "👍"))
        .collect();
    let plan = write_plan(dir.path(), &sandbox.base_url(), &rows, "rate: 10/s");
    let report = dir.path().join("report.csv");
    let mut child = run_cmd(&plan, &report, &[])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let pid = child.id().to_string();
    let err = child.stderr.take().expect("stderr");
    wait_until("a row reported ok", || {
        std::fs::read_to_string(&report).is_ok_and(|t| t.contains(",ok,"))
    })
    .await;
    let kill = |sig: &str| {
        let status = Command::new("kill")
            .args([sig, &pid])
            .status()
            .expect("kill");
        assert!(status.success());
    };
    kill("-INT");
    // The second signal once the first was heard.
    let (mut seen, rest) = tokio::task::spawn_blocking(move || {
        let mut lines = std::io::BufReader::new(err).lines();
        let mut seen = String::new();
        for line in lines.by_ref() {
            let line = line.expect("stderr");
            seen.push_str(&line);
            seen.push('\n');
            if line.contains("interrupted (Ctrl-C)") {
                break;
            }
        }
        (seen, lines)
    })
    .await
    .expect("join");
    kill("-INT");
    let (status, rest) = tokio::task::spawn_blocking(move || {
        let rest: Vec<String> = rest.map_while(Result::ok).collect();
        (child.wait().expect("wait"), rest.join("\n"))
    })
    .await
    .expect("join");
    seen.push_str(&rest);
    assert_eq!(status.code(), Some(130), "{seen}");
    assert!(
        !seen.contains(" rows in "),
        "exited before the summary: {seen}"
    );
    // Even then, one line says how to go on.
    assert!(
        seen.contains("then stopped at once")
            && seen.contains(&format!("--resume {}", report.display())),
        "{seen}"
    );
    // The report is whole: its header, then complete rows, each row once.
    let text = std::fs::read_to_string(&report).expect("report");
    assert!(text.starts_with("row,source,target,"), "{text}");
    let rows_on_disk = read_report(&report).expect("report");
    assert!(!rows_on_disk.is_empty());
    let ok = rows_on_disk
        .iter()
        .filter(|r| r.status == Status::Ok)
        .count();
    assert!(ok < rows.len(), "stopped early");
    sandbox.shutdown().await;
}
