//! A good citizen under refusal and failure, end to end: 429s slow every lane whatever its
//! configured rate, a report that cannot be written stops the sending, and an origin that
//! refuses connections stops its targets after a few attempts. Counts only here (the wall
//! clock); the rates and windows are tested under paused time (`executor::citizen_tests`).

use std::time::Duration;

use reactbatch::plan::{ProviderKind, Rate};
use reactbatch::report::{read_report, Status};
use reactbatch::sandbox::Sandbox;

use crate::common::*;

/// A port on 127.0.0.1 that refuses connections: bound, then closed.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    drop(listener);
    port
}

#[test]
fn an_origin_that_refuses_connections_stops_its_targets_after_ten_attempts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = closed_port();
    let base = format!("http://127.0.0.1:{port}");
    let rows: Vec<PlanRow> = (0..300)
        .map(|i| react("o", format!("m{i}"), "👍"))
        .collect();
    let plan = write_plan(dir.path(), &base, &rows, "");
    let report = dir.path().join("r.csv");
    let concurrency = 8;
    let out = output_within(
        &mut run_cmd(
            &plan,
            &report,
            &[
                "--rate",
                "unlimited",
                "--concurrency",
                &concurrency.to_string(),
            ],
        ),
        Duration::from_secs(120),
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(5), "{err}");
    let results = read_report(&report).expect("report");
    assert_one_row_per_plan_row(&results, 300);
    let attempts: u32 = results.iter().map(|r| r.attempts).sum();
    assert!(
        attempts as usize <= 10 + concurrency,
        "{attempts} connection attempts in all"
    );
    for r in &results {
        match r.status {
            Status::Skipped => assert_eq!(r.code, "unreachable", "{r:?}"),
            // A row whose retries ran out before the stop keeps its own code.
            Status::Failed => assert_eq!(r.code, "connection", "{r:?}"),
            _ => panic!("{r:?}"),
        }
        if r.attempts > 0 || r.status == Status::Skipped {
            assert!(
                r.message.contains(&format!("127.0.0.1:{port}")),
                "the row names the origin: {r:?}"
            );
        }
    }
    assert!(
        results.iter().filter(|r| r.code == "unreachable").count() >= 300 - 10 - concurrency,
        "{:?}",
        by_status(&results)
    );
    let origin = format!("127.0.0.1:{port}");
    assert_eq!(err.matches(&origin).count(), 1, "named once:\n{err}");
    assert!(err.contains("unreachable"), "{err}");
    assert!(err.contains("refused"), "the cause: {err}");
}

/// 100 rows at `rate` with 16 in flight against a sandbox that takes 7/s (burst 1) and
/// answers 429 without `Retry-After` above that: every row ok in at most 200 requests.
async fn refused_flood(rate: &str) {
    let sandbox = Sandbox::start(
        sandbox_config()
            .kommo_rate(
                Rate::Limited {
                    count: 7,
                    per: Duration::from_secs(1),
                },
                1,
            )
            .retry_after(None),
    )
    .await
    .expect("sandbox");
    let dir = tempfile::tempdir().expect("tempdir");
    let rows: Vec<PlanRow> = (0..100)
        .map(|i| react("k", format!("m{i}"), "👍"))
        .collect();
    let plan = write_plan(dir.path(), &sandbox.base_url(), &rows, "");
    let report = dir.path().join("r.csv");
    let summary = dir.path().join("summary.json");
    let mut cmd = run_cmd(
        &plan,
        &report,
        &["--rate", rate, "--concurrency", "16", "--summary-json"],
    );
    cmd.arg(&summary);
    let out = run_blocking(cmd).await;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{rate}: {err}");
    let results = read_report(&report).expect("report");
    assert_one_row_per_plan_row(&results, 100);
    assert!(results.iter().all(|r| r.status == Status::Ok), "{rate}");
    let stats = sandbox.stats();
    assert!(
        stats.requests <= 200,
        "{rate}: {} requests for 100 rows ({} answered 429)",
        stats.requests,
        stats.count(ProviderKind::Kommo, 429)
    );
    assert!(
        stats.count(ProviderKind::Kommo, 429) > 0,
        "{rate}: the provider did limit"
    );
    // The summary shows the pace the lane settled at.
    let json = summary_json(&summary);
    let lane = &json["lanes"][0];
    assert!(lane["settled_rate"].as_f64().is_some(), "{rate}: {lane}");
    assert!(err.contains("settled at"), "{rate}: {err}");
    sandbox.shutdown().await;
}

#[tokio::test]
async fn an_unlimited_lane_against_a_refusing_provider_sends_at_most_twice_its_rows() {
    refused_flood("unlimited").await;
}

#[tokio::test]
async fn a_1000_per_second_lane_against_a_refusing_provider_sends_at_most_twice_its_rows() {
    refused_flood("1000/s").await;
}
