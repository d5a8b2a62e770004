//! Fault soak: many rows across both providers against sandboxes that answer 10% 5xx, drop 5%
//! of connections, add 20 ms latency and rate-limit below the plan's pace (Kommo's sandbox with
//! `Retry-After`, Ogmma's without). Every row must end `ok`, exactly once, and the sandboxes'
//! state must equal the plan's intent. (That no window exceeds the rate, and that the limits
//! were hit, is checked exactly under paused time: the executor's `tests/pace.rs`, `soak_…`.)
//!
//! CI runs the short form (5 000 rows). The long form (100 000 rows) is ignored by default:
//! `cargo test --release --test it soak::soak_long -- --ignored --nocapture`.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::common::*;
use reactbatch::outputs::report::{read_report, Status};
use reactbatch::plan::Rate;
use reactbatch::sandbox::Sandbox;

const PLAN_RATE: u32 = 400;
const BURST: u32 = 10;

async fn soak(n: usize) {
    let per_sec = |count| Rate::Limited {
        count,
        per: Duration::from_secs(1),
    };
    // Kommo's sandbox answers 429 with `Retry-After: 1`, which holds the whole target for a
    // second, so its limit is just under the plan's pace; Ogmma's (no Retry-After) is well under.
    let kommo_limit = per_sec(PLAN_RATE - 10);
    let ogmma_limit = per_sec(PLAN_RATE * 3 / 4);
    let faulty = || {
        sandbox_config()
            .error_rate(0.10)
            .drop_rate(0.05)
            .latency(Duration::from_millis(20))
            .seed(n as u64)
    };
    let kommo = Sandbox::start(
        faulty()
            .kommo_rate(kommo_limit, 20)
            .retry_after(Some(Duration::from_secs(1))),
    )
    .await
    .expect("kommo sandbox");
    let ogmma = Sandbox::start(faulty().ogmma_rate(ogmma_limit, 10))
        .await
        .expect("ogmma sandbox");
    let dir = tempfile::tempdir().expect("tempdir");
    let rows = mixed_rows(n, n / 5);
    let settings =
        format!("rate: {PLAN_RATE}/s, burst: {BURST}, concurrency: 256, retries: 30, timeout: 2s");
    let plan = write_plan_split(
        dir.path(),
        &kommo.base_url(),
        &ogmma.base_url(),
        &rows,
        &settings,
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

    let report = read_report(&report).expect("report");
    assert_one_row_per_plan_row(&report, n);
    assert_eq!(by_status(&report), BTreeMap::from([(Status::Ok, n)]));
    let mut state = sandbox_state(&kommo);
    state.extend(sandbox_state(&ogmma));
    assert_eq!(state, intent(&rows));

    let (k, o) = (kommo.stats(), ogmma.stats());
    for (name, stats) in [("kommo", &k), ("ogmma", &o)] {
        assert!(
            stats.faults.server_errors > 0 && stats.faults.dropped > 0,
            "{name}: {stats:?}"
        );
    }
    // The summary counts every attempt the report shows.
    let summary = summary_json(&summary);
    let sent: u64 = summary["targets"]
        .as_array()
        .expect("targets")
        .iter()
        .map(|t| t["requests"].as_u64().expect("requests"))
        .sum();
    let attempts: u64 = report.iter().map(|r| u64::from(r.attempts)).sum();
    assert_eq!(sent, attempts);
    eprintln!(
        "soak: {n} rows; {attempts} requests; kommo 5xx {} dropped {} 429 {}; ogmma 5xx {} dropped {} 429 {}",
        k.faults.server_errors,
        k.faults.dropped,
        k.rate_limited,
        o.faults.server_errors,
        o.faults.dropped,
        o.rate_limited
    );
    kommo.shutdown().await;
    ogmma.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_short() {
    soak(5_000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long form: 100 000 rows, about five minutes"]
async fn soak_long() {
    soak(100_000).await;
}
