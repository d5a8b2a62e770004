//! The HTML page of a run: `run --report-html` (live, dry, interrupted), `reactbatch report
//! … --html`, the output path checked before sending, and — with Chromium installed — the page
//! as a browser builds it (`--ignored`, run by `.ci/run`).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use reactbatch::plan::Rate;
use reactbatch::sandbox::{Sandbox, SandboxHandle};

use crate::common::*;

/// The message id that must show as text, never run.
const HOSTILE: &str = "<script>alert(1)</script>";

fn per_sec(count: u32) -> Rate {
    Rate::Limited {
        count,
        per: Duration::from_secs(1),
    }
}

/// A sandbox that answers 404 to the hostile id and 429 above 40/s to Kommo.
async fn strict_sandbox() -> SandboxHandle {
    Sandbox::start(
        sandbox_config()
            .not_found_prefix("<script>")
            .kommo_rate(per_sec(40), 2),
    )
    .await
    .expect("sandbox")
}

/// 120 Kommo rows (sent faster than the sandbox allows: 429s, retried) and 10 Ogmma rows,
/// two of them the hostile id (404).
fn rows() -> Vec<PlanRow> {
    let mut rows: Vec<PlanRow> = (0..120)
        .map(|i| react("k", format!("m-{i}"), "👍"))
        .collect();
    rows.extend((0..8).map(|i| react("o", format!("o-{i}"), "🎉")));
    rows.push(react("o", HOSTILE, "🎉"));
    rows.push(unreact("o", HOSTILE));
    rows
}

fn page(path: &Path) -> String {
    std::fs::read_to_string(path).expect("the HTML page")
}

/// The page's inline data, read back as a browser's `JSON.parse` would.
fn page_data(html: &str) -> serde_json::Value {
    let start = html
        .find(r#"<script type="application/json" id="reactbatch-data">"#)
        .expect("data element");
    let body = &html[start..];
    let body = &body[body.find('>').expect("tag end") + 1..];
    let end = body.find("</script>").expect("data end");
    serde_json::from_str(&body[..end]).expect("the data is JSON")
}

/// Nothing is loaded from elsewhere: no `src`/`href` at all, no URL in a tag's attributes.
fn assert_self_contained(html: &str) {
    for attr in ["src=", "href=", "@import", "url("] {
        assert!(!html.contains(attr), "the page has {attr}");
    }
    for tag in html.split('<').skip(1) {
        let tag = tag.split('>').next().unwrap_or("");
        assert!(
            !tag.contains("http://") && !tag.contains("https://"),
            "a tag names a URL: <{tag}>"
        );
    }
}

/// What every page must not hold: the hostile id as markup, a secret.
fn assert_safe(html: &str) {
    assert!(!html.contains(HOSTILE), "the hostile id is markup");
    assert!(!html.contains(KOMMO_SECRET) && !html.contains(OGMMA_KEY));
    assert_eq!(
        html.matches("<script").count(),
        2,
        "only the page's own scripts"
    );
}

fn arg(p: &Path) -> String {
    p.display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_run_writes_a_page_with_counts_lanes_latency_and_failures() {
    let sandbox = strict_sandbox().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let rows = rows();
    let plan = write_plan(
        dir.path(),
        &sandbox.base_url(),
        &rows,
        "rate: 200/s, burst: 10, retries: 8, report_html: run.html",
    );
    let report = dir.path().join("report.csv");
    let summary = dir.path().join("summary.json");
    let out = run_blocking(run_cmd(&plan, &report, &["--summary-json", &arg(&summary)])).await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(sandbox.stats().rate_limited > 0, "no 429 was provoked");

    // The summary's series: every request and 429 of each lane, in its buckets.
    let s = summary_json(&summary);
    for lane in s["lanes"].as_array().expect("lanes") {
        let series = &lane["series"];
        let sum = |k: &str| -> u64 {
            series[k]
                .as_array()
                .expect("column")
                .iter()
                .map(|v| v.as_u64().expect("count"))
                .sum()
        };
        assert_eq!(series["bucket_s"], 1, "{lane}");
        assert_eq!(
            sum("sends"),
            lane["requests"].as_u64().expect("n"),
            "{lane}"
        );
        assert_eq!(
            sum("rate_limited"),
            lane["rate_limited"].as_u64().expect("n")
        );
        let len = series["t"].as_array().expect("t").len();
        for k in ["sends", "ok", "rate_limited", "retries", "latency_mean_ms"] {
            assert_eq!(series[k].as_array().expect("column").len(), len, "{k}");
        }
    }
    let kommo = &s["lanes"][0];
    assert!(kommo["rate_limited"].as_u64() > Some(0), "{kommo}");

    // The page, from the settings' `report_html` (relative to the plan).
    let html = page(&dir.path().join("run.html"));
    assert_self_contained(&html);
    assert_safe(&html);
    assert!(html.contains("<span class=\"badge live\">live run</span>"));
    assert!(
        html.contains("<td class=\"num\">128</td><td class=\"num\">98.5%</td>"),
        "ok count"
    );
    assert!(
        html.contains("<td class=\"num\">2</td><td class=\"num\">1.5%</td>"),
        "failed count"
    );
    let digest = s["digest"].as_str().expect("digest");
    assert!(html.contains(digest));
    // A chart per lane, its limit drawn, the 429s marked.
    assert_eq!(html.matches("<figure class=\"lane\">").count(), 2);
    assert!(html.contains("<rect class=\"sends\""));
    assert!(html.contains("limit 200/s"));
    assert!(html.contains("<path class=\"limited\""));
    assert!(html.contains("answered 429</title>"));
    // Latency over time and its percentiles.
    assert!(html.contains("<path class=\"lat ok\""));
    assert!(html.contains("<tr><td>ok</td><td class=\"num\">128</td>"));
    assert!(html.contains("<tr><td>failed</td><td class=\"num\">2</td>"));
    // The failed rows, the hostile id as text.
    assert_eq!(
        html.matches("<td>&lt;script&gt;alert(1)&lt;/script&gt;</td>")
            .count(),
        2
    );
    let data = page_data(&html);
    assert_eq!(data["failures_total"], 2);
    assert_eq!(data["failures"][0]["message_id"], HOSTILE);
    assert_eq!(data["counts"]["ok"], 128);
    sandbox.shutdown().await;
}

#[test]
fn a_dry_run_writes_a_page_with_the_outline_per_target() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rows = rows();
    // Nothing listens there: a dry run sends nothing.
    let plan = write_plan(dir.path(), "http://127.0.0.1:9", &rows, "");
    let report = dir.path().join("report.jsonl");
    let html_path = dir.path().join("dry.html");
    let out = run_cmd(
        &plan,
        &report,
        &["--dry-run", "--report-html", &arg(&html_path)],
    )
    .output()
    .expect("run");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let html = page(&html_path);
    assert_self_contained(&html);
    assert_safe(&html);
    assert!(html.contains("<span class=\"badge dry\">dry run</span>"));
    assert!(html.contains("<td class=\"num\">130</td><td class=\"num\">100.0%</td>"));
    // Kommo: 120 reacts of 👍; Ogmma: 9 reacts, 1 unreact.
    assert!(html.contains("<tr><td>k</td><td>kommo</td>"), "{html}");
    assert!(html.contains("<td class=\"num\">120</td><td class=\"num\">0</td>"));
    assert!(html.contains("<td class=\"num\">9</td><td class=\"num\">1</td>"));
    assert!(html.contains("👍 ×120"));
    assert!(html.contains("<dt>live run would take</dt><dd>~"), "{html}");
    assert!(!html.contains("id=\"latency\""), "nothing was sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_run_still_writes_its_page() {
    let sandbox = Sandbox::start(sandbox_config()).await.expect("sandbox");
    let dir = tempfile::tempdir().expect("tempdir");
    let plan = plan_to_interrupt(dir.path(), &sandbox);
    let report = dir.path().join("report.csv");
    let html_path = dir.path().join("run.html");
    let child = run_cmd(&plan, &report, &["--report-html", &arg(&html_path)])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let (status, err) = terminate_once_under_way(child, &report).await;
    assert_eq!(status.code(), Some(143), "{err}");
    let html = page(&html_path);
    assert_self_contained(&html);
    let data = page_data(&html);
    let cancelled = data["counts"]["cancelled"]
        .as_u64()
        .expect("cancelled rows");
    let ok = data["counts"]["ok"].as_u64().expect("ok rows");
    assert_eq!(ok + cancelled, 200);
    assert!(html.contains("<dt>interrupted</dt><dd>yes</dd>"));
    assert!(html.contains("<dt>exit code</dt><dd>143</dd>"));
    // Cancelled rows are listed with the failed ones.
    assert_eq!(data["failures_total"].as_u64(), Some(cancelled));
    sandbox.shutdown().await;
}

/// Runs the plan of [`rows`] once, JSON Lines report and summary, for `report` to read.
async fn finished_run(dir: &Path) -> (PathBuf, PathBuf) {
    let sandbox = strict_sandbox().await;
    let plan = write_plan(dir, &sandbox.base_url(), &rows(), "rate: 200/s, retries: 8");
    let report = dir.join("report.jsonl");
    let summary = dir.join("summary.json");
    let out = run_blocking(run_cmd(&plan, &report, &["--summary-json", &arg(&summary)])).await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    sandbox.shutdown().await;
    (report, summary)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_command_makes_the_page_afterwards_with_or_without_the_summary() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (report, summary) = finished_run(dir.path()).await;
    let report_page = |extra: &[&str], out: &Path| {
        let mut cmd = bin();
        cmd.arg("report")
            .arg(&report)
            .args(extra)
            .arg("--html")
            .arg(out);
        cmd.output().expect("report")
    };
    // Without the summary: what the report holds, the timeline by target instead of lanes.
    let alone = dir.path().join("alone.html");
    let out = report_page(&[], &alone);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let html = page(&alone);
    assert_self_contained(&html);
    assert_safe(&html);
    assert!(html.contains("<section id=\"timeline\">"));
    assert!(!html.contains("<section id=\"lanes\">"));
    assert!(html.contains("<path class=\"series c0\""));
    assert!(html.contains("<td class=\"num\">128</td><td class=\"num\">98.5%</td>"));
    assert!(html.contains("<td>&lt;script&gt;alert(1)&lt;/script&gt;</td>"));
    // With it: the lanes, the digest.
    let full = dir.path().join("full.html");
    let out = report_page(&["--summary-json", &arg(&summary)], &full);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let html = page(&full);
    assert_self_contained(&html);
    assert_safe(&html);
    assert!(html.contains("<section id=\"lanes\">"));
    assert!(html.contains("<rect class=\"sends\""));
    let s = summary_json(&summary);
    assert!(html.contains(s["digest"].as_str().expect("digest")));

    // A summary that is not one: exit 2, file:line:column, no page.
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, "{\n  \"lanes\": [\n    {\"name\": 3}\n  ]\n}\n").expect("write");
    let none = dir.path().join("none.html");
    let out = report_page(&["--summary-json", &arg(&bad)], &none);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains(&format!("{}:3:", bad.display())), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(!none.exists());
    // A report with a malformed line names it.
    let broken = dir.path().join("broken.jsonl");
    let mut text = std::fs::read_to_string(&report).expect("report");
    text.push_str("{\"row\": \"x\"}\n");
    std::fs::write(&broken, &text).expect("write");
    let out = bin()
        .args(["report", &arg(&broken), "--html", &arg(&none)])
        .output()
        .expect("report");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains(&format!("{}:131:", broken.display())),
        "{}",
        stderr(&out)
    );
    // The page never replaces what it is made from.
    let out = report_page(&[], &report);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("is the file it would be made from"));
    assert!(std::fs::read_to_string(&report)
        .expect("report")
        .starts_with('{'));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_path_is_checked_before_sending_and_a_late_write_error_is_a_warning() {
    let sandbox = Sandbox::start(sandbox_config()).await.expect("sandbox");
    let dir = tempfile::tempdir().expect("tempdir");
    let rows: Vec<PlanRow> = (0..5).map(|i| react("k", format!("p-{i}"), "👍")).collect();
    let plan = write_plan(dir.path(), &sandbox.base_url(), &rows, "");
    let report = dir.path().join("report.csv");
    let nowhere = dir.path().join("no-such-dir").join("run.html");
    let out = run_blocking(run_cmd(&plan, &report, &["--report-html", &arg(&nowhere)])).await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("run.html"), "{}", stderr(&out));
    assert_eq!(sandbox.stats().requests, 0, "nothing sent");
    // /dev/full opens, then refuses every byte: the run's outcome stands.
    let out = run_blocking(run_cmd(&plan, &report, &["--report-html", "/dev/full"])).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("cannot write the HTML page /dev/full"),
        "{}",
        stderr(&out)
    );
    sandbox.shutdown().await;
}

/// Loads `page` in headless Chromium and returns the DOM after its script ran.
fn chromium_dom(page: &Path) -> String {
    require_tool("chromium", "chromium");
    let profile = tempfile::tempdir().expect("profile dir");
    let out = output_within(
        bin_chromium()
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("--dump-dom")
            .arg(format!("file://{}", page.display())),
        Duration::from_secs(120),
    );
    assert!(out.status.success(), "chromium: {}", stderr(&out));
    text(&out.stdout)
}

/// Chromium headless as the page's tests and screenshot use it: nothing fetched in the
/// background, no sandbox (tests may run as root).
pub fn bin_chromium() -> std::process::Command {
    let mut cmd = std::process::Command::new("chromium");
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
    ])
    .stdin(Stdio::null());
    cmd
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs chromium"]
async fn chromium_renders_the_counts_a_chart_and_the_failed_rows_with_the_script_as_text() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (report, summary) = finished_run(dir.path()).await;
    let page_path = dir.path().join("run.html");
    let out = bin()
        .args(["report", &arg(&report), "--summary-json", &arg(&summary)])
        .args(["--html", &arg(&page_path)])
        .output()
        .expect("report");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let dom = chromium_dom(&page_path);
    // The counts.
    assert!(
        dom.contains("<td class=\"num\">128</td><td class=\"num\">98.5%</td>"),
        "{dom}"
    );
    // A drawn chart: an <svg> holding bars and lines.
    let chart = &dom[dom.find("<svg class=\"chart\"").expect("a chart")..];
    let chart = &chart[..chart.find("</svg>").expect("svg end")];
    assert!(chart.contains("<rect class=\"sends\""), "{chart}");
    assert!(chart.contains("<path "), "{chart}");
    // The failed rows, after the filter's script ran (it counts them), the script as text:
    // the browser's DOM holds it escaped, no element made of it.
    assert!(
        dom.contains("<span id=\"shown\">2 of 2 listed rows shown</span>"),
        "{dom}"
    );
    assert_eq!(
        dom.matches("<td>&lt;script&gt;alert(1)&lt;/script&gt;</td>")
            .count(),
        2,
        "{dom}"
    );
    assert!(!dom.contains(HOSTILE));
    assert_self_contained(&dom);
}
