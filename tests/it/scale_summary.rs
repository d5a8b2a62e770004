//! Runs across many accounts, as people read them: `check` says what the lanes on each host add
//! up to and what its ceiling makes of it; the summary of many lanes is aggregated in a few
//! lines that still name every lane in trouble; the estimate counts only rows that will be
//! sent.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::common::*;
use reactbatch::outputs::report::{read_report, Status};
use reactbatch::plan::Rate;
use reactbatch::sandbox::Sandbox;

/// A plan of `accounts` Kommo targets (one per account: its own `scope_id`, hence its own
/// lane), `rows_each` rows each, at `base_url` (`None`: Kommo's default) and `rate`.
fn accounts_plan(
    dir: &Path,
    accounts: usize,
    rows_each: usize,
    base_url: Option<&str>,
    rate: &str,
    settings: &str,
) -> PathBuf {
    let mut plan = String::from("version: 1\ntargets:\n");
    for a in 0..accounts {
        let _ = write!(
            plan,
            "  acct-{a:04}:\n    provider: kommo\n    scope_id: chan-1_acct-{a:04}\n    \
             secret: {{ env: KOMMO_CHANNEL_SECRET }}\n    user_id: {USER}\n    rate: {rate}\n"
        );
        if let Some(url) = base_url {
            let _ = writeln!(plan, "    base_url: {url}");
        }
    }
    let _ = write!(plan, "settings: {{ {settings} }}\ninclude: [rows.csv]\n");
    let mut csv = String::from("target,message_id,conversation_id,emoji\n");
    for a in 0..accounts {
        for r in 0..rows_each {
            let message = if a == 7 { "gone" } else { "m" };
            let _ = writeln!(csv, "acct-{a:04},{message}-{a}-{r},chat-{a},👍");
        }
    }
    std::fs::write(dir.join("rows.csv"), csv).expect("write rows");
    let path = dir.join("plan.yaml");
    std::fs::write(&path, plan).expect("write plan");
    path
}

fn check(plan: &Path) -> std::process::Output {
    bin()
        .arg("check")
        .arg(plan)
        .env("KOMMO_CHANNEL_SECRET", KOMMO_SECRET)
        .output()
        .expect("check")
}

#[test]
fn check_of_a_thousand_accounts_names_the_host_and_what_their_lanes_add_up_to() {
    let dir = tempfile::tempdir().expect("tempdir");
    let plan = accounts_plan(dir.path(), 1000, 1, Some("http://127.0.0.1:9"), "7/s", "");
    let out = check(&plan);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains("  127.0.0.1:9: 1000 lanes add up to 7000/s (no host ceiling)\n"),
        "{err}"
    );
    assert!(err.lines().count() <= 3, "{err}");

    let out = bin()
        .args(["check", "--format", "json"])
        .arg(&plan)
        .env("KOMMO_CHANNEL_SECRET", KOMMO_SECRET)
        .output()
        .expect("check");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(
        doc["plans"][0]["hosts"],
        serde_json::json!([{
            "host": "127.0.0.1:9",
            "base_url": "http://127.0.0.1:9",
            "lanes": 1000,
            "rate_sum": 7000.0,
            "ceiling": null,
        }])
    );
}

#[test]
fn check_says_what_kommos_host_ceiling_makes_of_the_lanes_and_host_rate_changes_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let plan = accounts_plan(dir.path(), 12, 1, None, "7/s", "");
    let out = check(&plan);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains(
            "  amojo.kommo.com: 12 lanes add up to 84/s; host ceiling 50/s holds them to it \
             (~4.17/s per lane when all are busy)\n"
        ),
        "{err}"
    );
    let plan = accounts_plan(
        dir.path(),
        12,
        1,
        None,
        "7/s",
        "host_rate: { \"https://amojo.kommo.com/\": 100/s }",
    );
    let out = check(&plan);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains(
            "  amojo.kommo.com: 12 lanes add up to 84/s; host ceiling 100/s, not reached\n"
        ),
        "{err}"
    );
}

#[test]
fn host_rate_errors_name_the_line_and_column() {
    let dir = tempfile::tempdir().expect("tempdir");
    let plan = accounts_plan(
        dir.path(),
        2,
        1,
        None,
        "7/s",
        "host_rate: { \"ftp://amojo.kommo.com\": 50/s, \"https://x.example\": fast }",
    );
    let out = check(&plan);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    let at = plan.display().to_string();
    assert!(
        err.contains(&format!("{at}:15:"))
            && err.contains("invalid base_url `ftp://amojo.kommo.com`"),
        "{err}"
    );
    assert!(err.contains("`host_rate` for https://x.example"), "{err}");
    assert!(names_file_and_line(&err), "{err}");
}

/// 30 accounts of 15 rows at 10/s against the sandbox (long enough to have rates): 3 of them
/// planned far above what the sandbox allows per scope (so they are answered 429), one whose
/// messages are gone (404: failed rows). The
/// stderr summary stays a few lines and names those four lanes; the JSON has all 30.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_summary_of_thirty_lanes_is_a_few_lines_naming_those_in_trouble() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sandbox = Sandbox::start(
        sandbox_config()
            .kommo_rate(
                Rate::Limited {
                    count: 40,
                    per: Duration::from_secs(1),
                },
                3,
            )
            .not_found_prefix("gone-"),
    )
    .await
    .expect("sandbox");
    let plan = accounts_plan(
        dir.path(),
        30,
        15,
        Some(&sandbox.base_url()),
        "10/s",
        "concurrency: 32",
    );
    // Three accounts planned at 200/s: the sandbox's 40/s per scope answers them 429.
    let text = std::fs::read_to_string(&plan).expect("plan");
    let mut hot = text.clone();
    for a in [3, 11, 25] {
        let block = format!("scope_id: chan-1_acct-{a:04}\n    secret: {{ env: KOMMO_CHANNEL_SECRET }}\n    user_id: {USER}\n    rate: 10/s");
        assert!(hot.contains(&block));
        hot = hot.replacen(&block, &block.replace("rate: 10/s", "rate: 200/s"), 1);
    }
    std::fs::write(&plan, hot).expect("write plan");
    let report = dir.path().join("report.csv");
    let summary = dir.path().join("summary.json");
    let mut cmd = run_cmd(&plan, &report, &["--summary-json"]);
    cmd.arg(&summary);
    let out = run_blocking(cmd).await;
    sandbox.shutdown().await;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let results = read_report(&report).expect("report");
    assert_eq!(by_status(&results).get(&Status::Ok), Some(&435), "{err}");
    assert_eq!(by_status(&results).get(&Status::Failed), Some(&15), "{err}");
    // The summary: from its first line to the report line.
    let start = err.find("reactbatch: 450 rows in ").expect("summary line");
    let summary_text = &err[start..];
    assert!(summary_text.lines().count() <= 12, "{summary_text}");
    assert!(
        summary_text.contains("  30 lanes (30 targets), "),
        "{summary_text}"
    );
    assert!(summary_text.contains("  slowest: "), "{summary_text}");
    // Every lane answered 429 or with failed rows is named, up to five (a loaded machine may
    // add a stray 429 on another lane), in plan order; the rest are counted.
    let json = summary_json(&summary);
    let lanes = json["lanes"].as_array().expect("lanes");
    let troubled: Vec<&str> = lanes
        .iter()
        .filter(|l| l["rate_limited"].as_u64() > Some(0) || l["failed"].as_u64() > Some(0))
        .filter_map(|l| l["name"].as_str())
        .collect();
    for name in ["acct-0003", "acct-0007", "acct-0011", "acct-0025"] {
        assert!(troubled.contains(&name), "{name} in {troubled:?}");
    }
    let named: Vec<&str> = summary_text
        .lines()
        .filter_map(|l| l.split_once("  lane ").map(|(_, rest)| rest))
        .filter_map(|rest| rest.split_once(" (kommo): ").map(|(name, _)| name))
        .collect();
    assert_eq!(named, troubled[..troubled.len().min(5)], "{summary_text}");
    let hot = summary_text
        .lines()
        .find(|l| l.contains("  lane acct-0003 (kommo): "))
        .unwrap_or_else(|| panic!("acct-0003 named: {summary_text}"));
    assert!(hot.contains(" answered 429"), "{hot}");
    let failed = summary_text
        .lines()
        .find(|l| l.contains("  lane acct-0007 (kommo): "))
        .unwrap_or_else(|| panic!("the failing lane named: {summary_text}"));
    assert!(failed.contains("; 15 failed"), "{failed}");
    let more = troubled.len().saturating_sub(5);
    let rest = 30 - troubled.len();
    let mut tail = Vec::new();
    if more > 0 {
        tail.push(format!(
            "{more} more lane(s) with failures, 429s or a stopped target"
        ));
    }
    if rest > 0 {
        tail.push(format!("{rest} more lane(s) without failures or 429s"));
    }
    assert!(
        summary_text.contains(&format!(
            "  and {} (every lane in --summary-json)",
            tail.join(", ")
        )),
        "{summary_text}"
    );
    assert!(!summary_text.contains("  target acct-"), "{summary_text}");
    assert_eq!(lanes.len(), 30);
    assert_eq!(json["targets"].as_array().map(Vec::len), Some(30));
    let failed: u64 = lanes.iter().filter_map(|l| l["failed"].as_u64()).sum();
    assert_eq!(failed, 15);
}

/// The dry run's outline of 30 accounts is a few lines too: totals, the longest lanes, what
/// the lanes on the host add up to, the estimate.
#[test]
fn the_dry_run_outline_of_thirty_accounts_is_a_few_lines() {
    let dir = tempfile::tempdir().expect("tempdir");
    let plan = accounts_plan(dir.path(), 30, 5, None, "7/s", "");
    let report = dir.path().join("dry.csv");
    let summary = dir.path().join("dry.json");
    let mut cmd = run_cmd(&plan, &report, &["--dry-run", "--summary-json"]);
    let out = cmd.arg(&summary).output().expect("dry run");
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    let json = summary_json(&summary);
    assert_eq!(
        json["hosts"],
        serde_json::json!([{
            "host": "amojo.kommo.com",
            "base_url": "https://amojo.kommo.com",
            "lanes": 30,
            "rate_sum": 210.0,
            "ceiling": "50/s",
        }])
    );
    assert_eq!(json["estimated_ms"], 2980);
    assert!(
        err.contains("reactbatch: plan for 30 targets in 30 lanes: 150 react(s) (0 replacing), 0 unreact(s)\n"),
        "{err}"
    );
    assert!(
        err.contains("reactbatch: the longest lanes: acct-0000 at 7/s ~"),
        "{err}"
    );
    assert!(
        err.contains("reactbatch: amojo.kommo.com: 30 lanes add up to 210/s; host ceiling 50/s holds them to it"),
        "{err}"
    );
    // 150 rows under the host's 50/s: 149 / 50 s, longer than any lane's 4 / 7 s.
    assert!(err.contains("the live run takes ~3.0s (2980 ms)"), "{err}");
    assert!(!err.contains("plan for target "), "{err}");
}

/// Rows an earlier report shows done are not in the estimate: 101 rows at 10/s take 10 s,
/// of which 50 done earlier leave 51 rows, 5 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_estimate_leaves_out_rows_a_resume_finds_done() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sandbox = Sandbox::start(sandbox_config()).await.expect("sandbox");
    let rows: Vec<PlanRow> = (0..101)
        .map(|i| react("k", format!("r-{i}"), "👍"))
        .collect();
    let first = tempfile::tempdir().expect("tempdir");
    let plan = write_plan(first.path(), &sandbox.base_url(), &rows[..50], "rate: 10/s");
    let earlier = dir.path().join("earlier.csv");
    let out = run_blocking(run_cmd(&plan, &earlier, &["--rate", "unlimited"])).await;
    sandbox.shutdown().await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    let plan = write_plan(dir.path(), "http://127.0.0.1:9", &rows, "rate: 10/s");
    let estimate = |extra: &[&str]| {
        let summary = dir.path().join("dry.json");
        let mut cmd = run_cmd(&plan, &dir.path().join("dry.csv"), &["--dry-run"]);
        cmd.args(extra).arg("--summary-json").arg(&summary);
        let out = cmd.output().expect("dry run");
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let json = summary_json(&summary);
        (json["estimated_ms"].as_u64(), stderr(&out))
    };
    let (all, _) = estimate(&[]);
    assert_eq!(all, Some(10_000));
    let earlier = earlier.display().to_string();
    let (rest, err) = estimate(&["--resume", &earlier]);
    assert_eq!(rest, Some(5_000), "{err}");
    assert!(err.contains("the live run takes ~5.0s (5000 ms)"), "{err}");
}

/// A live run under a host ceiling: ten accounts at 20/s each (200/s together) to the sandbox,
/// whose base URL `host_rate` holds to 30/s: every row is done, once, and the summary names the
/// ceiling the run kept. (That the lanes together stay under it in every window is asserted
/// exactly in paused time, in the executor's tests; here the wall clock would only allow a
/// loose bound that a busy machine breaks.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_holds_the_lanes_to_one_host_under_its_host_rate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sandbox = Sandbox::start(sandbox_config()).await.expect("sandbox");
    let base = sandbox.base_url();
    let plan = accounts_plan(
        dir.path(),
        10,
        9,
        Some(&base),
        "20/s",
        &format!("host_rate: {{ \"{base}\": 30/s }}"),
    );
    // The one account whose messages are gone would fail: this run is about the pace.
    let rows = std::fs::read_to_string(dir.path().join("rows.csv")).expect("rows");
    std::fs::write(dir.path().join("rows.csv"), rows.replace(",gone-", ",m-")).expect("rows");
    let report = dir.path().join("report.csv");
    let dry = run_cmd(&plan, &dir.path().join("dry.csv"), &["--dry-run"])
        .output()
        .expect("dry run");
    let err = stderr(&dry);
    // 90 rows under 30/s: 89 / 30 s, where each lane alone needs 8 / 20 s.
    assert!(err.contains("the live run takes ~3.0s (2967 ms)"), "{err}");
    let summary = dir.path().join("summary.json");
    let mut cmd = run_cmd(&plan, &report, &["--summary-json"]);
    cmd.arg(&summary);
    let out = run_blocking(cmd).await;
    let arrived = sandbox.stats().requests;
    sandbox.shutdown().await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let results = read_report(&report).expect("report");
    assert_one_row_per_plan_row(&results, 90);
    assert_eq!(by_status(&results).get(&Status::Ok), Some(&90));
    assert_eq!(arrived, 90, "one request per row");
    let hosts = &summary_json(&summary)["hosts"];
    assert_eq!(hosts.as_array().map(Vec::len), Some(1), "{hosts}");
    assert_eq!(hosts[0]["ceiling"], "30/s", "{hosts}");
    assert_eq!(hosts[0]["lanes"], 10, "{hosts}");
}

/// The same thousand accounts as one target whose rows name their accounts (`scope_id` per
/// row): one lane per account, and `check` adds them up the same.
#[test]
fn check_of_a_thousand_accounts_named_by_the_rows_adds_up_their_lanes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let plan = dir.path().join("plan.yaml");
    std::fs::write(
        &plan,
        format!(
            "version: 1\ntargets:\n  k:\n    provider: kommo\n    \
             secret: {{ env: KOMMO_CHANNEL_SECRET }}\n    user_id: {USER}\n    \
             base_url: http://127.0.0.1:9\ninclude: [rows.csv]\n"
        ),
    )
    .expect("plan");
    let mut csv = String::from("scope_id,message_id,conversation_id,emoji\n");
    for a in 0..1000 {
        for r in 0..2 {
            let _ = writeln!(csv, "chan-1_acct-{a:04},m-{a}-{r},chat-{a},👍");
        }
    }
    std::fs::write(dir.path().join("rows.csv"), csv).expect("rows");
    let out = check(&plan);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains("  127.0.0.1:9: 1000 lanes add up to 7000/s (no host ceiling)\n"),
        "{err}"
    );
}
