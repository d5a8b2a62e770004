//! Watching a cron job: `run --metrics-file` (a node_exporter textfile, read back with a
//! Prometheus text-format parser) and `run --ping` (healthchecks-style pings, seen by a small
//! HTTP server on 127.0.0.1). The real binary runs against the sandbox; assertions are on the
//! file, the requests the ping server saw, exit codes and stderr.

use std::collections::HashMap;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use prom_text_format_parser::{Scrape, Type};

use crate::common::*;
use reactbatch::sandbox::{Sandbox, SandboxHandle};

/// What a ping server saw: path with query, and body, in arrival order.
type Seen = Arc<Mutex<Vec<(String, String)>>>;

/// A monitor on 127.0.0.1 that answers every request `200 OK` and records it.
async fn ping_server() -> (String, Seen) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let seen: Seen = Arc::default();
    let record = Arc::clone(&seen);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let record = Arc::clone(&record);
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                    let record = Arc::clone(&record);
                    async move {
                        let path = req
                            .uri()
                            .path_and_query()
                            .map_or_else(String::new, |p| p.as_str().to_string());
                        let body = req.into_body().collect().await?.to_bytes();
                        record
                            .lock()
                            .expect("record")
                            .push((path, String::from_utf8_lossy(&body).into_owned()));
                        Ok::<_, hyper::Error>(Response::new(Full::new(Bytes::from_static(b"OK"))))
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (base, seen)
}

fn seen(seen: &Seen) -> Vec<(String, String)> {
    seen.lock().expect("seen").clone()
}

async fn gone_sandbox() -> SandboxHandle {
    Sandbox::start(sandbox_config().not_found_prefix("gone-"))
        .await
        .expect("sandbox")
}

/// A plan in `dir` whose rows all succeed, or (`gone`) whose second row the sandbox answers
/// 404.
fn plan_in(dir: &Path, sandbox: &SandboxHandle, gone: bool, settings: &str) -> std::path::PathBuf {
    let second = if gone { "gone-1" } else { "m-2" };
    let rows = vec![react("k", "m-1", "👍"), react("o", second, "🎉")];
    let settings = if settings.is_empty() {
        "rate: unlimited".to_string()
    } else {
        format!("rate: unlimited, {settings}")
    };
    write_plan(dir, &sandbox.base_url(), &rows, &settings)
}

/// The metrics file, parsed with a Prometheus text-format parser: each sample's value by
/// metric name and `status` label (empty when none), after checking that every metric is a
/// gauge with a `# HELP` and every sample is labelled `plan` with `plan` (as written: label
/// values stay escaped).
fn metrics(path: &Path, plan: &str) -> HashMap<(String, String), f64> {
    let text = std::fs::read_to_string(path).expect("metrics file");
    let scrape = Scrape::parse(&text).unwrap_or_else(|e| panic!("text format: {e:?}\n{text}"));
    let mut values = HashMap::new();
    for metric in scrape.metrics {
        assert_eq!(metric.kind, Type::Gauge, "{}: {text}", metric.name);
        assert!(
            metric.help_desc.is_some(),
            "{} has # HELP: {text}",
            metric.name
        );
        for sample in metric.samples {
            let label = |key: &str| {
                sample
                    .labels
                    .iter()
                    .find(|l| l.key == key)
                    .map(|l| l.value.clone())
            };
            assert_eq!(label("plan").as_deref(), Some(plan), "{text}");
            let status = label("status").unwrap_or_default();
            let key = (metric.name.clone(), status);
            assert!(!values.contains_key(&key), "{key:?} twice: {text}");
            values.insert(key, sample.value.value.as_f64());
        }
    }
    values
}

fn get(values: &HashMap<(String, String), f64>, metric: &str, status: &str) -> f64 {
    *values
        .get(&(metric.to_string(), status.to_string()))
        .unwrap_or_else(|| panic!("{metric}{{status={status}}} in {values:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_file_holds_the_run_and_keeps_the_last_success_across_a_failed_run() {
    let sandbox = gone_sandbox().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let prom = dir.path().join("textfile").join("reactbatch.prom");
    std::fs::create_dir(prom.parent().expect("dir")).expect("mkdir");
    let metrics_flag = prom.to_str().expect("utf-8 path");

    let good = dir.path().join("good");
    std::fs::create_dir(&good).expect("mkdir");
    let plan = plan_in(&good, &sandbox, false, "");
    let out = run_blocking(run_cmd(
        &plan,
        &good.join("r.csv"),
        &["--metrics-file", metrics_flag],
    ))
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let first = metrics(&prom, "plan");
    assert_eq!(get(&first, "reactbatch_last_run_rows", "ok"), 2.0);
    // Every status of the report, the ones no row had as 0.
    for status in ["failed", "skipped", "deferred", "planned", "cancelled"] {
        assert_eq!(get(&first, "reactbatch_last_run_rows", status), 0.0);
    }
    assert_eq!(get(&first, "reactbatch_last_run_requests", ""), 2.0);
    assert_eq!(get(&first, "reactbatch_last_run_rate_limited", ""), 0.0);
    assert_eq!(get(&first, "reactbatch_last_run_exit_code", ""), 0.0);
    assert!(get(&first, "reactbatch_last_run_duration_seconds", "") >= 0.0);
    let ended = get(&first, "reactbatch_last_run_timestamp_seconds", "");
    assert!(ended > 1.7e9, "a Unix time: {ended}");
    let success = get(&first, "reactbatch_last_success_timestamp_seconds", "");
    assert_eq!(success, ended, "a successful run's end is the last success");
    let names: Vec<_> = std::fs::read_dir(prom.parent().expect("dir"))
        .expect("read dir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(
        names,
        ["reactbatch.prom"],
        "no temporary file is left behind"
    );

    // The same plan (same stem) failing a row: exit code 1 and the rows update, the last
    // success stays.
    let bad = dir.path().join("bad");
    std::fs::create_dir(&bad).expect("mkdir");
    let plan = plan_in(&bad, &sandbox, true, "");
    let out = run_blocking(run_cmd(
        &plan,
        &bad.join("r.csv"),
        &["--metrics-file", metrics_flag],
    ))
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let second = metrics(&prom, "plan");
    assert_eq!(get(&second, "reactbatch_last_run_exit_code", ""), 1.0);
    assert_eq!(get(&second, "reactbatch_last_run_rows", "ok"), 1.0);
    assert_eq!(get(&second, "reactbatch_last_run_rows", "failed"), 1.0);
    assert!(get(&second, "reactbatch_last_run_timestamp_seconds", "") >= ended);
    assert_eq!(
        get(&second, "reactbatch_last_success_timestamp_seconds", ""),
        success,
        "a failed run carries the last success over"
    );

    // A plan that never succeeded: its last success is 0, which a staleness alert fires on.
    let fresh = dir.path().join("fresh.prom");
    let out = run_blocking(run_cmd(
        &plan,
        &bad.join("r2.csv"),
        &["--metrics-file", fresh.to_str().expect("utf-8")],
    ))
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let never = metrics(&fresh, "plan");
    assert_eq!(
        get(&never, "reactbatch_last_success_timestamp_seconds", ""),
        0.0
    );
    sandbox.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_plan_label_is_the_stem_escaped_and_the_setting_is_relative_to_the_plan() {
    let sandbox = gone_sandbox().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let plan = plan_in(dir.path(), &sandbox, false, "metrics_file: out/job.prom");
    std::fs::create_dir(dir.path().join("out")).expect("mkdir");
    let odd = dir.path().join("night\"ly\\job.yaml");
    std::fs::rename(&plan, &odd).expect("rename");
    let out = run_blocking(run_cmd(&odd, &dir.path().join("r.csv"), &[])).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let prom = dir.path().join("out/job.prom");
    let text = std::fs::read_to_string(&prom).expect("metrics");
    assert!(
        text.contains(r#"reactbatch_last_run_exit_code{plan="night\"ly\\job"} 0"#),
        "{text}"
    );
    let values = metrics(&prom, r#"night\"ly\\job"#);
    assert_eq!(get(&values, "reactbatch_last_run_rows", "ok"), 2.0);
    sandbox.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_written_after_an_interrupt() {
    let sandbox = Sandbox::start(sandbox_config()).await.expect("sandbox");
    let dir = tempfile::tempdir().expect("tempdir");
    let plan = plan_to_interrupt(dir.path(), &sandbox);
    let report = dir.path().join("report.csv");
    let prom = dir.path().join("job.prom");
    let child = run_cmd(
        &plan,
        &report,
        &["--metrics-file", prom.to_str().expect("utf-8")],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .expect("spawn");
    let (status, err) = terminate_once_under_way(child, &report).await;
    assert_eq!(status.code(), Some(143), "{err}");
    let values = metrics(&prom, "plan");
    assert_eq!(get(&values, "reactbatch_last_run_exit_code", ""), 143.0);
    assert!(get(&values, "reactbatch_last_run_rows", "cancelled") > 0.0);
    assert_eq!(
        get(&values, "reactbatch_last_success_timestamp_seconds", ""),
        0.0
    );
    sandbox.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_metrics_file_that_cannot_be_written_at_the_end_is_only_a_warning() {
    let sandbox = Sandbox::start(sandbox_config()).await.expect("sandbox");
    let dir = tempfile::tempdir().expect("tempdir");
    let rows: Vec<PlanRow> = (0..40)
        .map(|i| react("k", format!("w-{i}"), "👍"))
        .collect();
    let plan = write_plan(dir.path(), &sandbox.base_url(), &rows, "rate: 20/s");
    let report = dir.path().join("report.csv");
    let textfile = dir.path().join("textfile");
    std::fs::create_dir(&textfile).expect("mkdir");
    let prom = textfile.join("job.prom");
    let child = run_cmd(
        &plan,
        &report,
        &["--metrics-file", prom.to_str().expect("utf-8")],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .expect("spawn");
    // The directory goes away once the run is under way (checked before sending, gone at the
    // end).
    wait_until("a row reported ok", || {
        std::fs::read_to_string(&report).is_ok_and(|t| t.contains(",ok,"))
    })
    .await;
    std::fs::remove_dir(&textfile).expect("remove the metrics directory");
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().expect("wait"))
        .await
        .expect("join");
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("cannot write the metrics file"), "{err}");
    assert!(!prom.exists());
    sandbox.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_ping_targets_are_checked_before_sending() {
    let sandbox = gone_sandbox().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let plan = plan_in(dir.path(), &sandbox, false, "");
    let report = dir.path().join("r.csv");
    let missing = dir.path().join("no-such-dir").join("job.prom");
    let cases: [(&[&str], &str); 4] = [
        (
            &["--metrics-file", missing.to_str().expect("utf-8")],
            "cannot write the metrics file",
        ),
        (
            &["--ping", "ftp://hc.example/abc"],
            "--ping: the ping URL must be http:// or https://",
        ),
        (
            &["--ping", "not a url"],
            "--ping: the ping URL is not an absolute URL",
        ),
        (
            &["--ping", "https://bob:hunter2@/uuid-77"],
            "--ping: the ping URL",
        ),
    ];
    for (args, says) in cases {
        let out = run_blocking(run_cmd(&plan, &report, args)).await;
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
        assert!(
            err.contains("nothing was sent") || err.contains("--ping"),
            "{err}"
        );
        assert!(
            !err.contains("hunter2") && !err.contains("uuid-77"),
            "{err}"
        );
    }
    // In the plan: located, and its line (which holds the URL) not shown.
    let bad = tempfile::tempdir().expect("tempdir");
    let plan = plan_in(
        bad.path(),
        &sandbox,
        false,
        "ping_url: \"gopher://bob:hunter2@h/uuid-77\"",
    );
    let out = run_blocking(run_cmd(&plan, &report, &[])).await;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("`ping_url`: the ping URL must be http"),
        "{err}"
    );
    assert!(
        err.contains(&format!("{}:14:", plan.display())),
        "located at the value: {err}"
    );
    assert!(
        !err.contains("hunter2") && !err.contains("uuid-77"),
        "{err}"
    );
    // A valid URL on a line that another problem points at: that line is not shown either.
    let plan = plan_in(
        bad.path(),
        &sandbox,
        false,
        "ping_url: \"https://hc.example/uuid-88\", bogus: 1",
    );
    let out = run_blocking(run_cmd(&plan, &report, &[])).await;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("unknown key `bogus` in settings"), "{err}");
    assert!(!err.contains("uuid-88"), "{err}");
    assert_eq!(
        sandbox
            .stats()
            .by_provider
            .values()
            .map(|p| p.requests)
            .sum::<u64>(),
        0
    );
    sandbox.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pings_start_then_the_exit_code_with_the_summary_line() {
    let sandbox = gone_sandbox().await;
    let (base, pings) = ping_server().await;
    let dir = tempfile::tempdir().expect("tempdir");

    let good = dir.path().join("good");
    std::fs::create_dir(&good).expect("mkdir");
    let plan = plan_in(&good, &sandbox, false, "");
    let url = format!("{base}/check-1");
    let out = run_blocking(run_cmd(&plan, &good.join("r.csv"), &["--ping", &url])).await;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    let got = seen(&pings);
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[0], ("/check-1/start".to_string(), String::new()));
    assert_eq!(got[1].0, "/check-1/0");
    assert!(got[1].1.starts_with("reactbatch: 2 rows in "), "{got:?}");
    assert!(!got[1].1.contains('\n'), "one line: {got:?}");
    assert!(err.contains(&got[1].1), "the summary's first line: {err}");

    pings.lock().expect("seen").clear();
    let bad = dir.path().join("bad");
    std::fs::create_dir(&bad).expect("mkdir");
    let plan = plan_in(&bad, &sandbox, true, &format!("ping_url: \"{url}\""));
    let out = run_blocking(run_cmd(&plan, &bad.join("r.csv"), &[])).await;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let got = seen(&pings);
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[0].0, "/check-1/start");
    assert_eq!(got[1].0, "/check-1/1");
    assert!(got[1].1.contains("1 ok, 1 failed"), "{got:?}");
    assert!(err.contains(&got[1].1), "{err}");
    sandbox.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_refused_before_sending_pings_its_exit_code_alone() {
    let sandbox = gone_sandbox().await;
    let (base, pings) = ping_server().await;
    let dir = tempfile::tempdir().expect("tempdir");
    // A row without its emoji: invalid. The URL comes from the plan's settings.
    let rows = vec![react("k", "m-1", "👍"), react("k", "m-2", "")];
    let url = format!("{base}/check-2");
    let plan = write_plan(
        dir.path(),
        &sandbox.base_url(),
        &rows,
        &format!("ping_url: \"{url}\""),
    );
    let out = run_blocking(run_cmd(&plan, &dir.path().join("r.csv"), &[])).await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let got = seen(&pings);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].0, "/check-2/2");

    // A plan that cannot even be read: only the command line's URL is known.
    pings.lock().expect("seen").clear();
    let missing = dir.path().join("missing.yaml");
    let out = run_blocking(run_cmd(
        &missing,
        &dir.path().join("r2.csv"),
        &["--ping", &url],
    ))
    .await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert_eq!(seen(&pings).len(), 1);
    assert_eq!(seen(&pings)[0].0, "/check-2/2");

    // Another run holds the lock: exit 4, pinged alone.
    pings.lock().expect("seen").clear();
    let good = tempfile::tempdir().expect("tempdir");
    let plan = plan_in(good.path(), &sandbox, false, "");
    let lock = good.path().join("job.lock");
    let held = reactbatch::lock::RunLock::acquire(&lock).expect("lock");
    let out = run_blocking(run_cmd(
        &plan,
        &good.path().join("r0.csv"),
        &["--ping", &url, "--lock", lock.to_str().expect("utf-8")],
    ))
    .await;
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    let paths: Vec<String> = seen(&pings).into_iter().map(|(p, _)| p).collect();
    assert_eq!(paths, ["/check-2/4"]);
    drop(held);

    // A dry run pings nothing and writes no metrics, and says so.
    pings.lock().expect("seen").clear();
    let prom = good.path().join("job.prom");
    let out = run_blocking(run_cmd(
        &plan,
        &good.path().join("r.csv"),
        &[
            "--dry-run",
            "--ping",
            &url,
            "--metrics-file",
            prom.to_str().expect("utf-8"),
        ],
    ))
    .await;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains("a dry run writes no metrics file and pings nothing"),
        "{err}"
    );
    assert!(seen(&pings).is_empty());
    assert!(!prom.exists());
    sandbox.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_url_with_credentials_is_never_printed_whole() {
    let sandbox = gone_sandbox().await;
    let (base, pings) = ping_server().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let plan = plan_in(dir.path(), &sandbox, true, "");
    let report = dir.path().join("r.jsonl");
    let summary = dir.path().join("summary.json");
    let with_credentials = base.replace("http://", "http://bob:hunter2@") + "/uuid-5f2b?token=tok9";
    // A monitor that refuses the connection: the warning names the URL as far as it may.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").port()
    };
    let refused = format!("http://bob:hunter2@127.0.0.1:{closed}/uuid-5f2b?token=tok9");
    for url in [&with_credentials, &refused] {
        let out = run_blocking(run_cmd(
            &plan,
            &report,
            &[
                "--ping",
                url,
                "--overwrite",
                "--summary-json",
                summary.to_str().expect("utf-8"),
            ],
        ))
        .await;
        let err = stderr(&out);
        assert_eq!(
            out.status.code(),
            Some(1),
            "a ping changes no exit code: {err}"
        );
        let report = std::fs::read_to_string(&report).expect("report");
        let summary = std::fs::read_to_string(&summary).expect("summary");
        for secret in ["hunter2", "uuid-5f2b", "tok9"] {
            assert!(!err.contains(secret), "{secret} in {err}");
            assert!(!report.contains(secret), "{secret} in the report");
            assert!(!summary.contains(secret), "{secret} in the summary");
        }
        if *url == refused {
            assert!(
                err.contains(&format!("ping http://127.0.0.1:{closed}/…/start failed")),
                "{err}"
            );
            assert!(
                err.contains(&format!("ping http://127.0.0.1:{closed}/…/1 failed")),
                "{err}"
            );
        }
    }
    // The monitor got the whole URL: the path and the query, the suffix on the path.
    let got = seen(&pings);
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[0].0, "/uuid-5f2b/start?token=tok9");
    assert_eq!(got[1].0, "/uuid-5f2b/1?token=tok9");
    sandbox.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_monitor_that_never_answers_changes_nothing() {
    let sandbox = gone_sandbox().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let plan = plan_in(dir.path(), &sandbox, false, "");
    // Connections are taken (the kernel's backlog) and never answered.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/check-3", silent.local_addr().expect("addr"));
    let mut cmd = run_cmd(&plan, &dir.path().join("r.csv"), &["--ping", &url]);
    // The watchdog only catches a hang; the pings give up on their own, 5 s each at most.
    let out =
        tokio::task::spawn_blocking(move || output_within(&mut cmd, Duration::from_secs(120)))
            .await
            .expect("join");
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains("/…/start failed: no answer within 5s"),
        "{err}"
    );
    assert!(err.contains("/…/0 failed: no answer within 5s"), "{err}");
    drop(silent);
    sandbox.shutdown().await;
}

/// The ping gives up at its cap, on tokio's clock (paused here: no wall-clock wait).
#[tokio::test(start_paused = true)]
async fn a_ping_gives_up_after_five_seconds() {
    use reactbatch::monitor::ping::{try_ping, PingUrl, PING_TIMEOUT};
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url =
        PingUrl::parse(&format!("http://{}/x", silent.local_addr().expect("addr"))).expect("url");
    let started = tokio::time::Instant::now();
    let outcome = try_ping(&url, "start", String::new()).await;
    assert_eq!(outcome, Err("no answer within 5s".to_string()));
    assert_eq!(PING_TIMEOUT, Duration::from_secs(5));
    assert!(started.elapsed() <= PING_TIMEOUT + Duration::from_millis(10));
    drop(silent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sandbox_rehearsal_reports_only_to_the_flags_it_is_given() {
    let (base, pings) = ping_server().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let rows = vec![react("k", "m-1", "👍"), react("o", "m-2", "🎉")];
    let settings =
        format!("rate: unlimited, metrics_file: plan.prom, ping_url: \"{base}/from-plan\"");
    let plan = write_plan(dir.path(), "http://127.0.0.1:9", &rows, &settings);
    let out = run_blocking(run_cmd(&plan, &dir.path().join("r.csv"), &["--sandbox"])).await;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("are not used with --sandbox"), "{err}");
    assert!(seen(&pings).is_empty(), "{:?}", seen(&pings));
    assert!(!dir.path().join("plan.prom").exists());

    // Flags on the command line are what the user asks for: they apply.
    let prom = dir.path().join("flag.prom");
    let out = run_blocking(run_cmd(
        &plan,
        &dir.path().join("r2.csv"),
        &[
            "--sandbox",
            "--ping",
            &format!("{base}/from-flag"),
            "--metrics-file",
            prom.to_str().expect("utf-8"),
        ],
    ))
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let paths: Vec<String> = seen(&pings).into_iter().map(|(p, _)| p).collect();
    assert_eq!(paths, ["/from-flag/start", "/from-flag/0"]);
    assert_eq!(
        get(&metrics(&prom, "plan"), "reactbatch_last_run_rows", "ok"),
        2.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_after_the_run_stops_waiting_for_the_monitor() {
    let sandbox = gone_sandbox().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let plan = plan_in(dir.path(), &sandbox, false, "");
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/check-4", silent.local_addr().expect("addr"));
    let prom = dir.path().join("job.prom");
    let child = run_cmd(
        &plan,
        &dir.path().join("r.csv"),
        &[
            "--ping",
            &url,
            "--metrics-file",
            prom.to_str().expect("utf-8"),
        ],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .expect("spawn");
    // The metrics are written once the run is over, just before the end ping.
    wait_until("the metrics file", || prom.exists()).await;
    let kill = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(kill.success());
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().expect("wait"))
        .await
        .expect("join");
    let err = stderr(&out);
    assert_eq!(
        out.status.code(),
        Some(0),
        "the run's outcome stands: {err}"
    );
    assert!(err.contains("the end ping was not waited for"), "{err}");
    assert_eq!(
        get(&metrics(&prom, "plan"), "reactbatch_last_run_exit_code", ""),
        0.0
    );
    drop(silent);
    sandbox.shutdown().await;
}
