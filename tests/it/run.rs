//! `reactbatch run` end to end: the real binary against the sandbox on loopback, asserting on
//! the report, the exit code and the sandbox's state (issue "executor", "Done when").

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::*;
use reactbatch::outputs::report::{read_report, Status};
use reactbatch::plan::{ProviderKind, Rate};
use reactbatch::sandbox::{Sandbox, SandboxConfig};
use reactbatch::secret::Secret;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_providers_run_ok_and_the_sandbox_matches_the_plan() {
    let sandbox = Sandbox::start(sandbox_config()).await.expect("sandbox");
    let dir = tempfile::tempdir().expect("tempdir");
    let rows = mixed_rows(120, 15);
    let plan = write_plan(dir.path(), &sandbox.base_url(), &rows, "rate: unlimited");
    let report = dir.path().join("report.jsonl");
    let summary = dir.path().join("summary.json");
    let out = run_blocking({
        let mut c = run_cmd(&plan, &report, &["--summary-json"]);
        c.arg(&summary);
        c
    })
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let report = read_report(&report).expect("report");
    assert_one_row_per_plan_row(&report, rows.len());
    assert!(
        report
            .iter()
            .all(|r| r.status == Status::Ok && r.http_status == Some(200)),
        "{report:?}"
    );
    assert_eq!(sandbox_state(&sandbox), intent(&rows));
    let summary = summary_json(&summary);
    assert_eq!(summary["counts"]["ok"], 120);
    assert_eq!(summary["exit_code"], 0);
    assert_eq!(summary["targets"].as_array().map(Vec::len), Some(2));
    sandbox.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_and_rate_limits_are_retried_until_every_row_is_ok() {
    let per_sec = |count| Rate::Limited {
        count,
        per: Duration::from_secs(1),
    };
    let sandbox = Sandbox::start(
        sandbox_config()
            .error_rate(0.10)
            .drop_rate(0.05)
            .seed(42)
            // Below the plan's pace: 429s must happen and be retried.
            .kommo_rate(per_sec(300), 5)
            .ogmma_rate(per_sec(300), 5),
    )
    .await
    .expect("sandbox");
    let dir = tempfile::tempdir().expect("tempdir");
    let rows = mixed_rows(2000, 400);
    let plan = write_plan(
        dir.path(),
        &sandbox.base_url(),
        &rows,
        "rate: 600/s, burst: 20, concurrency: 32, retries: 12, timeout: 2s",
    );
    let report = dir.path().join("report.csv");
    let out = run_blocking(run_cmd(&plan, &report, &[])).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let report = read_report(&report).expect("report");
    assert_one_row_per_plan_row(&report, rows.len());
    assert_eq!(by_status(&report), BTreeMap::from([(Status::Ok, 2000)]));
    let attempts: u32 = report.iter().map(|r| r.attempts).sum();
    let stats = sandbox.stats();
    assert!(
        stats.faults.server_errors > 50 && stats.faults.dropped > 20,
        "{stats:?}"
    );
    assert!(stats.rate_limited > 0, "no 429 was provoked: {stats:?}");
    // Every fault and 429 cost an attempt, and attempts are counted in the report.
    assert!(
        u64::from(attempts) >= 2000 + stats.faults.server_errors + stats.faults.dropped,
        "{attempts} attempts, {stats:?}"
    );
    assert_eq!(sandbox_state(&sandbox), intent(&rows));
    sandbox.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_on_one_message_land_in_plan_order_across_repetitions() {
    let sandbox = Sandbox::start(sandbox_config().latency(Duration::from_millis(2)))
        .await
        .expect("sandbox");
    let dir = tempfile::tempdir().expect("tempdir");
    // react → unreact → react on 30 messages per provider, interleaved with unrelated rows.
    let mut rows = Vec::new();
    for step in 0..3 {
        for m in 0..30 {
            for target in ["k", "o"] {
                let msg = format!("seq-{m}");
                rows.push(match step {
                    0 => react(target, msg, "👍"),
                    1 => unreact(target, msg),
                    _ => react(target, msg, "🎉"),
                });
                rows.push(react(target, format!("other-{step}-{m}"), "❤️"));
            }
        }
    }
    let plan = write_plan(
        dir.path(),
        &sandbox.base_url(),
        &rows,
        "rate: unlimited, concurrency: 32",
    );
    for rep in 0..20 {
        let report = dir.path().join(format!("report-{rep}.csv"));
        let out = run_blocking(run_cmd(&plan, &report, &["-q"])).await;
        assert_eq!(
            out.status.code(),
            Some(0),
            "repetition {rep}: {}",
            stderr(&out)
        );
        assert_eq!(sandbox_state(&sandbox), intent(&rows), "repetition {rep}");
    }
    sandbox.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_key_stops_the_target_after_a_few_requests() {
    let sandbox = Sandbox::start(SandboxConfig::new().kommo_secret(Secret::new(KOMMO_SECRET)))
        .await
        .expect("sandbox");
    let dir = tempfile::tempdir().expect("tempdir");
    let rows: Vec<PlanRow> = (0..500)
        .map(|i| react("o", format!("a-{i}"), "👍"))
        .collect();
    let plan = write_plan(
        dir.path(),
        &sandbox.base_url(),
        &rows,
        "rate: unlimited, concurrency: 4",
    );
    let report = dir.path().join("report.csv");
    // OGMMA_API_KEY is the test's key, which this sandbox (generated key) does not accept.
    let out = run_blocking(run_cmd(&plan, &report, &[])).await;
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("stopped after"), "{}", stderr(&out));
    let requests = sandbox.stats().count(ProviderKind::Ogmma, 401);
    assert!(
        (3..=8).contains(&requests),
        "{requests} requests before stopping"
    );
    let report = read_report(&report).expect("report");
    assert_one_row_per_plan_row(&report, 500);
    let skipped = report
        .iter()
        .filter(|r| r.status == Status::Skipped && r.code == "auth_stopped")
        .count();
    assert_eq!(skipped as u64 + requests, 500);
    assert!(!stderr(&out).contains(OGMMA_KEY));
    sandbox.shutdown().await;
}

fn signal(pid: u32, sig: &str) {
    let status = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_cancels_unsent_rows_writes_the_report_and_exits_130() {
    let sandbox = Sandbox::start(sandbox_config()).await.expect("sandbox");
    let dir = tempfile::tempdir().expect("tempdir");
    let rows: Vec<PlanRow> = (0..1000)
        .map(|i| react("k", format!("s-{i}"), "👍"))
        .collect();
    let plan = write_plan(dir.path(), &sandbox.base_url(), &rows, "rate: 100/s");
    let report = dir.path().join("report.csv");
    let child = run_cmd(&plan, &report, &[])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    // Interrupt mid-run: once the sandbox has accepted 100 of the 1000 rows (at 100/s, 9 s
    // before the run could end by itself).
    wait_until("100 accepted requests", || {
        sandbox.stats().count(ProviderKind::Kommo, 200) >= 100
    })
    .await;
    signal(child.id(), "-INT");
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().expect("wait"))
        .await
        .expect("join");
    assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
    let report = read_report(&report).expect("report");
    assert_one_row_per_plan_row(&report, 1000);
    let counts = by_status(&report);
    let ok = counts.get(&Status::Ok).copied().unwrap_or(0);
    assert!((100..1000).contains(&ok), "{counts:?}");
    assert_eq!(
        ok + counts.get(&Status::Cancelled).copied().unwrap_or(0),
        1000,
        "{counts:?}"
    );
    assert_eq!(sandbox.stats().count(ProviderKind::Kommo, 200), ok as u64);
    sandbox.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_keeps_every_answered_row_in_the_report() {
    let sandbox = Sandbox::start(sandbox_config()).await.expect("sandbox");
    let dir = tempfile::tempdir().expect("tempdir");
    let rows: Vec<PlanRow> = (0..1000)
        .map(|i| react("o", format!("x-{i}"), "👍"))
        .collect();
    let plan = write_plan(
        dir.path(),
        &sandbox.base_url(),
        &rows,
        "rate: 200/s, concurrency: 8",
    );
    let report = dir.path().join("report.csv");
    let mut child = run_cmd(&plan, &report, &[])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    // Kill mid-run: once the sandbox has accepted 100 of the 1000 rows (at 200/s, 4.5 s before
    // the run could end by itself).
    wait_until("100 accepted requests", || {
        sandbox.stats().count(ProviderKind::Ogmma, 200) >= 100
    })
    .await;
    child.kill().expect("kill -9");
    tokio::task::spawn_blocking(move || child.wait().expect("wait"))
        .await
        .expect("join");
    let accepted = sandbox.stats().count(ProviderKind::Ogmma, 200);
    let report = read_report(&report).expect("a report torn by kill -9 still parses");
    let ok = report.iter().filter(|r| r.status == Status::Ok).count() as u64;
    assert!(accepted >= 100, "{accepted}");
    // Only answers in flight at the kill (at most `concurrency`) may be missing.
    assert!(
        ok <= accepted && accepted - ok <= 8,
        "report {ok} ok, sandbox accepted {accepted}"
    );
    sandbox.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_does_not_overwrite_a_live_report() {
    let sandbox = Sandbox::start(sandbox_config()).await.expect("sandbox");
    let dir = tempfile::tempdir().expect("tempdir");
    let rows = vec![react("o", "d-1", "👍"), react("k", "d-2", "🎉")];
    let plan = write_plan(dir.path(), &sandbox.base_url(), &rows, "rate: unlimited");
    let report = dir.path().join("report.csv");
    let out = run_blocking(run_cmd(&plan, &report, &[])).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let live = std::fs::read(&report).expect("live report");
    let out = run_blocking(run_cmd(&plan, &report, &["--dry-run"])).await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("holds the results of a live run"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        std::fs::read(&report).expect("report"),
        live,
        "the live report was changed"
    );
    // A dry run may replace an earlier dry run's report.
    let audit = dir.path().join("audit.csv");
    for _ in 0..2 {
        let out = run_blocking(run_cmd(&plan, &audit, &["--dry-run"])).await;
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    }
    sandbox.shutdown().await;
}
