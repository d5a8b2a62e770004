//! Pacing of `reactbatch run` as the sandbox sees it: counted from the sandbox's arrival log
//! (its busiest windows) and the run's own count of what it sent, never from a wall clock
//! around the child process, so a loaded machine can slow the run down without turning the test
//! red.

use std::time::Duration;

use crate::common::*;
use reactbatch::sandbox::Sandbox;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pacing_never_exceeds_rate_plus_burst_and_spreads_over_the_planned_time() {
    const ROWS: usize = 2000;
    const RATE: usize = 200;
    const BURST: usize = 1;
    let sandbox = Sandbox::start(sandbox_config().record_arrivals(true))
        .await
        .expect("sandbox");
    let dir = tempfile::tempdir().expect("tempdir");
    let rows: Vec<PlanRow> = (0..ROWS)
        .map(|i| react("o", format!("p-{i}"), "👍"))
        .collect();
    let plan = write_plan(
        dir.path(),
        &sandbox.base_url(),
        &rows,
        &format!("rate: {RATE}/s, concurrency: 16"),
    );
    let report = dir.path().join("report.csv");
    let summary = dir.path().join("summary.json");
    let out = run_blocking({
        let mut c = run_cmd(&plan, &report, &["--summary-json"]);
        c.arg(&summary);
        c
    })
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(sandbox.stats().requests, ROWS as u64, "one request per row");
    let summary = summary_json(&summary);
    let sent = summary["targets"][0]["max_requests_in_1s"].as_u64();
    assert!(
        sent.is_some_and(|n| n <= (RATE + BURST) as u64),
        "the run reports {sent:?} sent in one second"
    );
    // What arrived, over short and long windows alike. The check above is the strict one, on
    // when requests were sent; arrivals also carry delivery jitter (requests sent on time but
    // scheduled late on two busy cores land in the next window), so here each window may hold
    // 50 ms of the rate more, as in the soak. A limiter running even 3% fast exceeds this over
    // the 5 s windows.
    let jitter = RATE / 20;
    for secs in [1usize, 2, 5] {
        let busiest = sandbox.max_in_window(None, Duration::from_secs(secs as u64));
        let limit = RATE * secs + BURST + jitter;
        assert!(
            busiest <= limit,
            "{busiest} requests arrived in {secs} s (rate {RATE}/s + burst {BURST} + {jitter})"
        );
    }
    // And spread out: the first-to-last arrival span is at least what the rate allows,
    // (ROWS - BURST) / RATE = 9.995 s, less 250 ms for the first request's own way to the
    // sandbox (connection set-up), which the limiter does not wait for. Windows are half-open,
    // so "all arrivals fit in a window of S" means "span < S".
    let least_span = Duration::from_secs_f64((ROWS - BURST) as f64 / RATE as f64 - 0.25);
    let in_least_span = sandbox.max_in_window(None, least_span);
    assert!(
        in_least_span < ROWS,
        "all {ROWS} requests arrived within {least_span:?}: faster than {RATE}/s"
    );
    sandbox.shutdown().await;
}
