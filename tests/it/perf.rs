//! Issue 15 (performance, round two): behaviour the faster paths must keep. The outline's
//! *replacing* counts are settled by a second pass that rides on the run's own read of the
//! rows (the dispatcher reads every row, reporting those an interrupt left unsent as
//! cancelled); an interrupted run must still report the whole plan's counts.

use std::process::Stdio;

use crate::common::*;
use reactbatch::plan::ProviderKind;
use reactbatch::sandbox::Sandbox;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_run_still_counts_every_replacing_react() {
    let sandbox = Sandbox::start(sandbox_config()).await.expect("sandbox");
    let dir = tempfile::tempdir().expect("tempdir");
    // 24 000 rows on 16 000 messages: 8 000 react again on a message an earlier row reacted
    // to. More rows than the dispatcher reads ahead (10 000), so an interrupt at the start
    // leaves most of them to be read after it.
    let rows: Vec<PlanRow> = (0..24_000)
        .map(|i| react("k", format!("r-{}", i % 16_000), "👍"))
        .collect();
    let plan = write_plan(dir.path(), &sandbox.base_url(), &rows, "rate: 100/s");
    let report = dir.path().join("report.csv");
    let summary = dir.path().join("summary.json");
    let summary_arg = summary.to_str().expect("utf-8 path").to_string();
    // `-q`: the 8 000 repeats are warnings, which would fill the stderr pipe.
    let child = run_cmd(&plan, &report, &["-q", "--summary-json", &summary_arg])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    wait_until("10 accepted requests", || {
        sandbox.stats().count(ProviderKind::Kommo, 200) >= 10
    })
    .await;
    let status = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().expect("wait"))
        .await
        .expect("join");
    assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
    let json = summary_json(&summary);
    let target = &json["targets"][0];
    assert_eq!(target["reacts"], 24_000, "{target}");
    assert_eq!(target["replacing"], 8_000, "{target}");
    // And it was interrupted early: most rows were never sent.
    let sent = sandbox.stats().count(ProviderKind::Kommo, 200);
    assert!(sent < 12_000, "{sent} sent");
    sandbox.shutdown().await;
}
