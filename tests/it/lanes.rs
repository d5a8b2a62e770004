//! Lanes, pace groups and adaptive pace, end to end: the real binary against the sandbox on
//! 127.0.0.1 enforcing the providers' limits. Only what a busy machine cannot change is checked
//! here: every row reported once, statuses, exit codes, request counts, what the summary says.
//! The rates, windows and 429 counts themselves are checked exactly under paused time, against
//! the executor's simulated provider (`src/executor/tests/pace.rs`).

use std::path::Path;
use std::time::Duration;

use crate::common::*;
use reactbatch::outputs::report::{read_report, Status};
use reactbatch::plan::{ProviderKind, Rate};
use reactbatch::sandbox::Sandbox;

/// One line of the sandbox's request log.
struct Arrival {
    provider: String,
    status: Option<u64>,
    message: String,
}

fn arrivals(log: &Path) -> Vec<Arrival> {
    let text = std::fs::read_to_string(log).expect("request log");
    let mut out: Vec<Arrival> = text
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("log line");
            Arrival {
                provider: v["provider"].as_str().unwrap_or_default().to_string(),
                status: v["status"].as_u64(),
                message: v["message_id"].as_str().unwrap_or_default().to_string(),
            }
        })
        .collect();
    out.sort_by_key(|a| a.message.clone());
    out
}

fn per_second(n: u32) -> Rate {
    Rate::Limited {
        count: n,
        per: Duration::from_secs(1),
    }
}

/// `reactbatch check PLAN` with the test credentials in the environment.
fn check(plan: &Path) -> std::process::Output {
    bin()
        .arg("check")
        .arg(plan)
        .env("KOMMO_CHANNEL_SECRET", KOMMO_SECRET)
        .env("OGMMA_API_KEY", OGMMA_KEY)
        .output()
        .expect("check")
}

/// 28 Kommo rows (7/s) interleaved with 4 Ogmma rows (60/min) with default settings: every
/// row goes once to its provider, none is refused. (Each lane's pace: the paused-time test
/// `mixed_plan_runs_each_provider_at_its_own_limit`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_plan_sends_each_row_once_within_both_limits() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("requests.jsonl");
    let sandbox = Sandbox::start(
        sandbox_config()
            .kommo_rate(per_second(7), 2)
            .ogmma_rate(Rate::parse("60/min").expect("rate"), 2)
            .request_log(log.clone()),
    )
    .await
    .expect("sandbox");
    let mut rows = Vec::new();
    for i in 0..28 {
        rows.push(react("k", format!("k-{i}"), "👍"));
        if i % 7 == 3 {
            rows.push(react("o", format!("o-{i}"), "👍"));
        }
    }
    let plan = write_plan(dir.path(), &sandbox.base_url(), &rows, "concurrency: 16");
    let report = dir.path().join("report.csv");
    let out = run_blocking(run_cmd(&plan, &report, &[])).await;
    sandbox.shutdown().await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let results = read_report(&report).expect("report");
    assert_one_row_per_plan_row(&results, 32);
    assert_eq!(by_status(&results).get(&Status::Ok), Some(&32));
    let log = arrivals(&log);
    let count = |provider: &str| log.iter().filter(|a| a.provider == provider).count();
    assert_eq!(
        (count("kommo"), count("ogmma")),
        (28, 4),
        "no request was retried"
    );
    assert!(log.iter().all(|a| a.status == Some(200)));
}

/// A strict 7/s bucket (burst 1), plan at 7/s: every row ends ok, whatever the 429s on the
/// way, and the summary counts each 429 the sandbox answered. (The pace it settles at and the
/// number of 429s: the paused-time test `strict_bucket_at_the_plan_rate_settles_just_under_it`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_bucket_at_the_plan_rate_loses_no_row() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("requests.jsonl");
    let sandbox = Sandbox::start(
        sandbox_config()
            .kommo_rate(per_second(7), 1)
            .request_log(log.clone()),
    )
    .await
    .expect("sandbox");
    let rows: Vec<PlanRow> = (0..35)
        .map(|i| react("k", format!("s-{i}"), "👍"))
        .collect();
    let plan = write_plan(dir.path(), &sandbox.base_url(), &rows, "rate: 7/s");
    let report = dir.path().join("report.csv");
    let summary = dir.path().join("summary.json");
    let mut cmd = run_cmd(&plan, &report, &["--summary-json"]);
    cmd.arg(&summary);
    let out = run_blocking(cmd).await;
    sandbox.shutdown().await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let results = read_report(&report).expect("report");
    assert_eq!(by_status(&results).get(&Status::Ok), Some(&35));
    assert_one_row_per_plan_row(&results, 35);
    let log = arrivals(&log);
    let ok = log.iter().filter(|a| a.status == Some(200)).count();
    let limited = log.iter().filter(|a| a.status == Some(429)).count();
    assert_eq!((ok, ok + limited), (35, log.len()), "only 200s and 429s");
    let lane = &summary_json(&summary)["lanes"][0];
    assert_eq!(
        lane["rate_limited"].as_u64(),
        Some(limited as u64),
        "{lane}"
    );
    assert_eq!(lane["requests"].as_u64(), Some(log.len() as u64), "{lane}");
}

/// A 20/s plan against a 7/s provider that sends no Retry-After: the lane slows down, rows
/// keep their place, none is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_faster_than_the_provider_loses_no_row() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("requests.jsonl");
    let sandbox = Sandbox::start(
        sandbox_config()
            .kommo_rate(per_second(7), 1)
            .request_log(log.clone()),
    )
    .await
    .expect("sandbox");
    let rows: Vec<PlanRow> = (0..70)
        .map(|i| react("k", format!("f-{i}"), "👍"))
        .collect();
    let plan = write_plan(dir.path(), &sandbox.base_url(), &rows, "rate: 20/s");
    let report = dir.path().join("report.csv");
    let summary = dir.path().join("summary.json");
    let mut cmd = run_cmd(&plan, &report, &["--summary-json"]);
    cmd.arg(&summary);
    let out = run_blocking(cmd).await;
    sandbox.shutdown().await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let results = read_report(&report).expect("report");
    assert_eq!(
        by_status(&results).get(&Status::Ok),
        Some(&70),
        "every row ok"
    );
    let log = arrivals(&log);
    let limited = log.iter().filter(|a| a.status == Some(429)).count();
    let ok = log.iter().filter(|a| a.status == Some(200)).count();
    let lane = &summary_json(&summary)["lanes"][0];
    assert_eq!(ok, 70);
    assert!(limited > 0, "the provider did limit");
    assert_eq!(lane["rate_limited"].as_u64(), Some(limited as u64));
    assert!(lane["slowdowns"].as_u64().is_some_and(|n| n > 0));
    assert!(lane["slowest_rate"].as_f64().is_some_and(|r| r < 20.0));
}

/// Plan with two Ogmma targets (two channels) on one API key reference.
fn two_channels_plan(
    dir: &Path,
    base_url: &str,
    rows: usize,
    groups: [&str; 2],
) -> std::path::PathBuf {
    let mut plan = "version: 1\ntargets:\n".to_string();
    for (name, channel, group) in [("o1", "ch_1", groups[0]), ("o2", "ch_2", groups[1])] {
        plan.push_str(&format!(
            "  {name}:\n    provider: ogmma\n    channel_id: {channel}\n    api_key: {{ env: OGMMA_API_KEY }}\n    base_url: {base_url}\n    rate: 10/s\n{group}"
        ));
    }
    plan.push_str("rows:\n");
    for i in 0..rows {
        let t = if i % 2 == 0 { "o1" } else { "o2" };
        plan.push_str(&format!(
            "  - {{ target: {t}, message_id: c-{i}, emoji: \"👍\" }}\n"
        ));
    }
    let path = dir.join("plan.yaml");
    std::fs::write(&path, plan).expect("plan");
    path
}

/// Two targets on one key share one pace: one lane in the summary, naming both, and every row
/// ok. (The key's limit in every window: the paused-time test
/// `two_targets_on_one_key_stay_within_the_keys_limit`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_targets_on_one_key_share_one_lane() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sandbox = Sandbox::start(sandbox_config().ogmma_rate(per_second(10), 2))
        .await
        .expect("sandbox");
    let plan = two_channels_plan(dir.path(), &sandbox.base_url(), 40, ["", ""]);
    let report = dir.path().join("report.csv");
    let summary = dir.path().join("summary.json");
    let mut cmd = run_cmd(&plan, &report, &["--summary-json"]);
    cmd.arg(&summary);
    let out = run_blocking(cmd).await;
    let stats = sandbox.stats();
    sandbox.shutdown().await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let results = read_report(&report).expect("report");
    assert_one_row_per_plan_row(&results, 40);
    assert_eq!(by_status(&results).get(&Status::Ok), Some(&40));
    assert_eq!(stats.count(ProviderKind::Ogmma, 200), 40);
    let s = summary_json(&summary);
    assert_eq!(s["lanes"].as_array().map(Vec::len), Some(1), "{s}");
    assert_eq!(s["lanes"][0]["targets"], serde_json::json!(["o1", "o2"]));
}

/// `limit_group: own` opts out of the key's group (each target then paces alone); and
/// `check` says which targets share a pace.
#[test]
fn check_says_which_targets_share_a_pace() {
    let dir = tempfile::tempdir().expect("tempdir");
    let plan = two_channels_plan(dir.path(), "http://127.0.0.1:9", 2, ["", ""]);
    let out = check(&plan);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("targets o1, o2 share one pace (group o1+1): 10/s"),
        "{}",
        stderr(&out)
    );
    let plan = two_channels_plan(
        dir.path(),
        "http://127.0.0.1:9",
        2,
        ["    limit_group: own\n", ""],
    );
    let out = check(&plan);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(!stderr(&out).contains("share one pace"), "{}", stderr(&out));
}

/// A limit_group joining two providers is a located error (exit 2, nothing sent); a named
/// group with one member is a located warning.
#[test]
fn limit_group_errors_are_located() {
    let dir = tempfile::tempdir().expect("tempdir");
    let plan = write_plan(
        dir.path(),
        "http://127.0.0.1:9",
        &[react("k", "m-1", "👍")],
        "",
    );
    let text = std::fs::read_to_string(&plan).expect("plan");
    let text = text
        .replacen("    user_id:", "    limit_group: acme\n    user_id:", 1)
        .replacen(
            "    channel_id:",
            "    limit_group: acme\n    channel_id:",
            1,
        );
    std::fs::write(&plan, &text).expect("plan");
    let line = text
        .lines()
        .enumerate()
        .filter(|(_, l)| l.contains("limit_group"))
        .nth(1)
        .map(|(i, _)| i + 1)
        .expect("second limit_group");
    for cmd in ["check", "run"] {
        let mut c = bin();
        c.arg(cmd)
            .arg(&plan)
            .env("KOMMO_CHANNEL_SECRET", KOMMO_SECRET)
            .env("OGMMA_API_KEY", OGMMA_KEY);
        if cmd == "run" {
            c.arg("--report").arg(dir.path().join("r.csv"));
        }
        let out = c.output().expect("run");
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{cmd}: {err}");
        assert!(
            err.contains(&format!("plan.yaml:{line}:18"))
                && err
                    .contains("limit_group `acme` joins target `o` (ogmma) with kommo targets (k)"),
            "{cmd}: {err}"
        );
    }
    assert!(!dir.path().join("r.csv").exists(), "nothing ran");

    let text = text.replacen(
        "    limit_group: acme\n    channel_id:",
        "    channel_id:",
        1,
    );
    std::fs::write(&plan, &text).expect("plan");
    let out = check(&plan);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("limit_group `acme` has only target `k`"),
        "{}",
        stderr(&out)
    );
}

/// A row appended to an include while the run goes on is never sent: the run sends the rows
/// it validated (read back from its spool), and the plan files are not read again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_include_edited_mid_run_sends_nothing_unvalidated() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("requests.jsonl");
    let sandbox = Sandbox::start(sandbox_config().request_log(log.clone()))
        .await
        .expect("sandbox");
    let rows: Vec<PlanRow> = (0..12)
        .map(|i| react("k", format!("v-{i}"), "👍"))
        .collect();
    let plan = write_plan(dir.path(), &sandbox.base_url(), &rows, "rate: 4/s");
    let report = dir.path().join("report.csv");
    let mut child = run_cmd(&plan, &report, &[])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    // The first finished row is the observable event: the run has started sending.
    wait_until("a report row", || {
        std::fs::read_to_string(&report).is_ok_and(|t| t.lines().count() >= 2)
    })
    .await;
    let csv = dir.path().join("rows.csv");
    let mut text = std::fs::read_to_string(&csv).expect("rows");
    text.push_str("k,react,INJECTED,chat-1,👎\n");
    std::fs::write(&csv, text).expect("append");
    let status = tokio::task::spawn_blocking(move || child.wait().expect("wait"))
        .await
        .expect("join");
    sandbox.shutdown().await;
    assert_eq!(status.code(), Some(0));
    let log = arrivals(&log);
    assert_eq!(log.len(), 12, "only the validated rows were sent");
    assert!(log.iter().all(|a| a.message.starts_with("v-")));
    let results = read_report(&report).expect("report");
    assert_one_row_per_plan_row(&results, 12);
}
