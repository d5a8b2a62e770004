//! Pacing of `reactbatch run` as the sandbox sees it. In a test binary of its own, so that no
//! other test competes for the CPU while it measures time.

use std::time::{Duration, Instant};

use crate::common::*;
use reactbatch::sandbox::Sandbox;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pacing_never_exceeds_rate_plus_burst_and_takes_the_planned_time() {
    let sandbox = Sandbox::start(sandbox_config().record_arrivals(true))
        .await
        .expect("sandbox");
    let dir = tempfile::tempdir().expect("tempdir");
    let rows: Vec<PlanRow> = (0..2000)
        .map(|i| react("o", format!("p-{i}"), "👍"))
        .collect();
    let plan = write_plan(
        dir.path(),
        &sandbox.base_url(),
        &rows,
        "rate: 200/s, concurrency: 16",
    );
    let report = dir.path().join("report.csv");
    let started = Instant::now();
    let summary = dir.path().join("summary.json");
    let out = run_blocking({
        let mut c = run_cmd(&plan, &report, &["--summary-json"]);
        c.arg(&summary);
        c
    })
    .await;
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&summary).expect("summary")).expect("json");
    let sent = summary["targets"][0]["max_requests_in_1s"].as_u64();
    assert!(
        sent.is_some_and(|n| n <= 201),
        "sent {sent:?} in one second"
    );
    let in_1s = sandbox.max_in_window(None, Duration::from_secs(1));
    assert!(
        in_1s <= 201,
        "{in_1s} requests in one second (rate 200 + burst 1)"
    );
    // 2000 rows at 200/s: 10 s ± 3%.
    let secs = took.as_secs_f64();
    assert!((9.7..=10.3).contains(&secs), "took {secs:.3}s");
    sandbox.shutdown().await;
}
