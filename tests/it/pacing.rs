//! A paced run of the real binary, end to end: one request per row and every row reported
//! once, with the lane fast enough (1 000/s) to wait through the precise pacer thread. How the
//! pace holds in every window is checked exactly under paused time (the executor's
//! `tests/pace.rs`); the pacer thread's real-clock figures are the benchmark's
//! (`scripts/bench`).

use crate::common::*;
use reactbatch::outputs::report::{read_report, Status};
use reactbatch::sandbox::Sandbox;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fast_paced_run_sends_one_request_per_row() {
    const ROWS: usize = 2000;
    let sandbox = Sandbox::start(sandbox_config()).await.expect("sandbox");
    let dir = tempfile::tempdir().expect("tempdir");
    let rows: Vec<PlanRow> = (0..ROWS)
        .map(|i| react("o", format!("p-{i}"), "👍"))
        .collect();
    let plan = write_plan(
        dir.path(),
        &sandbox.base_url(),
        &rows,
        "rate: 1000/s, concurrency: 16",
    );
    let report = dir.path().join("report.csv");
    let summary = dir.path().join("summary.json");
    let out = run_blocking({
        let mut c = run_cmd(&plan, &report, &["--summary-json"]);
        c.arg(&summary);
        c
    })
    .await;
    let stats = sandbox.stats();
    sandbox.shutdown().await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stats.requests, ROWS as u64, "one request per row");
    let results = read_report(&report).expect("report");
    assert_one_row_per_plan_row(&results, ROWS);
    assert_eq!(by_status(&results).get(&Status::Ok), Some(&ROWS));
    let summary = summary_json(&summary);
    let requests: Vec<(&str, u64)> = summary["targets"]
        .as_array()
        .expect("targets")
        .iter()
        .map(|t| {
            (
                t["name"].as_str().unwrap_or(""),
                t["requests"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(requests, vec![("k", 0), ("o", ROWS as u64)], "{summary}");
}
