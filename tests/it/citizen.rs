//! A good citizen under refusal and failure, end to end: 429s slow every lane whatever its
//! configured rate, a report that cannot be written stops the sending, and an origin that
//! refuses connections stops its targets after a few attempts. Counts only here (the wall
//! clock); the rates and windows are tested under paused time (`executor::citizen_tests`).

use std::time::Duration;

use reactbatch::outputs::report::{read_report, Status};
use reactbatch::plan::{ProviderKind, Rate};
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

/// `cmd` with every file it writes limited to `bytes`, and SIGXFSZ ignored: a write past the
/// limit fails with EFBIG instead of killing the process (a disk that fills up, without root).
fn with_file_size_limit(cmd: &mut std::process::Command, bytes: u64) {
    use std::os::unix::process::CommandExt;
    // SAFETY: between fork and exec, only async-signal-safe calls (setrlimit, signal).
    unsafe {
        cmd.pre_exec(move || {
            let limit = libc::rlimit {
                rlim_cur: bytes,
                rlim_max: bytes,
            };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            Ok(())
        });
    }
}

/// 3000 rows with 16 in flight to a fast sandbox, the report at `report`, the child set up by
/// `limit`: the run must stop at the first failed write, exit 74 naming `problem`, and list
/// on stderr every row the sandbox accepted that the report lacks (at most those in flight).
async fn stops_at_the_first_failed_write(
    dir: &std::path::Path,
    report: &std::path::Path,
    limit: impl FnOnce(&mut std::process::Command, u64),
    problem: &str,
) {
    let n = 3000;
    let concurrency = 16;
    let rows: Vec<PlanRow> = (0..n).map(|i| react("o", format!("m{i}"), "👍")).collect();
    // The rows file gets a long name, which every report row carries (`source`) and the
    // spool does not (it numbers files): a file size limit then stops the report, not the
    // spool.
    let long_plan = |base: &str| {
        let plan = write_plan(dir, base, &rows, "");
        let long = format!("{}.csv", "rows".repeat(50));
        std::fs::rename(dir.join("rows.csv"), dir.join(&long)).expect("rename");
        let text = std::fs::read_to_string(&plan).expect("plan");
        std::fs::write(&plan, text.replace("[rows.csv]", &format!("[{long}]"))).expect("plan");
        plan
    };
    // The whole report's size, from a run that can write it.
    let sandbox = Sandbox::start(sandbox_config()).await.expect("sandbox");
    let full = dir.join("full.csv");
    let plan = long_plan(&sandbox.base_url());
    let out = run_blocking(run_cmd(&plan, &full, &["--rate", "unlimited"])).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let full_len = std::fs::metadata(&full).expect("report").len();
    std::fs::remove_file(&full).expect("remove");
    sandbox.shutdown().await;

    let sandbox = Sandbox::start(sandbox_config()).await.expect("sandbox");
    let plan = long_plan(&sandbox.base_url());
    let summary = dir.join("summary.json");
    let mut cmd = run_cmd(
        &plan,
        report,
        &[
            "--rate",
            "unlimited",
            "--concurrency",
            &concurrency.to_string(),
            "--summary-json",
        ],
    );
    cmd.arg(&summary);
    // Room for about a third of the report.
    limit(&mut cmd, full_len / 3);
    let out = run_blocking(cmd).await;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(74), "{err}");
    assert!(err.contains("cannot write the report"), "{err}");
    assert!(err.contains(problem), "names the problem: {err}");
    assert!(err.contains("--resume"), "says how to go on: {err}");

    // What the report holds (a torn last line is not a row), and what the server accepted.
    let recorded = read_report(report).expect("report");
    assert!(
        !recorded.is_empty() && recorded.len() < n,
        "{}",
        recorded.len()
    );
    let in_report: std::collections::BTreeSet<String> =
        recorded.iter().map(|r| r.message_id.clone()).collect();
    let accepted: Vec<String> = sandbox.reactions().into_iter().map(|r| r.message).collect();
    let lacking: Vec<&String> = accepted
        .iter()
        .filter(|m| !in_report.contains(*m))
        .collect();
    // Sending stopped at the first failed write: only the rows in flight or on their way to
    // the report are missing (the record window: twice `--concurrency`), and each of them is
    // on stderr as its report line.
    assert!(
        lacking.len() <= 2 * concurrency,
        "{} accepted rows not in the report (of {} accepted)",
        lacking.len(),
        accepted.len()
    );
    let listed: Vec<&str> = err
        .lines()
        .filter(|l| l.contains(",ogmma,react,"))
        .collect();
    for m in &lacking {
        assert!(
            listed.iter().any(|l| l.contains(&format!(",{m},"))),
            "{m} is not listed:\n{err}"
        );
    }
    assert!(
        err.contains(&format!("{} sent and not recorded", listed.len())),
        "{err}"
    );
    // The summary counts only what the report holds; the rest is `not_recorded`.
    let json = summary_json(&summary);
    let ok = json["counts"]["ok"].as_u64().unwrap_or(0);
    assert!(
        ok as usize <= recorded.len(),
        "{ok} ok, {} in the report",
        recorded.len()
    );
    assert_eq!(json["not_recorded"].as_u64(), Some(listed.len() as u64));
    assert_eq!(json["exit_code"].as_u64(), Some(74));
    sandbox.shutdown().await;
}

#[tokio::test]
async fn a_report_that_cannot_grow_stops_the_sending_and_lists_what_it_lacks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let report = dir.path().join("r.csv");
    stops_at_the_first_failed_write(dir.path(), &report, with_file_size_limit, "File too large")
        .await;
}

/// A small tmpfs mounted for a test, unmounted when dropped.
struct Tmpfs(std::path::PathBuf);

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

/// Says on the real stderr (not the test's captured output) that a test could not run; under
/// CI (`CI` set, where it runs as root), fails instead: there it must run.
fn not_run(why: &str) {
    use std::io::Write;
    assert!(
        std::env::var_os("CI").is_none(),
        "TEST NOT RUN under CI: {why}"
    );
    let _ = writeln!(std::io::stderr(), "\n*** TEST NOT RUN: {why} ***\n");
}

#[tokio::test]
async fn a_full_disk_stops_the_sending_and_lists_what_the_report_lacks() {
    let dir = tempfile::tempdir().expect("tempdir");
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        not_run(
            "citizen::a_full_disk_…: mounting a tmpfs needs root; the RLIMIT_FSIZE variant \
             covers a report that cannot grow",
        );
        return;
    }
    let mount = dir.path().join("disk");
    std::fs::create_dir(&mount).expect("mkdir");
    let probe = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64k", "tmpfs"])
        .arg(&mount)
        .output();
    match probe {
        Ok(out) if out.status.success() => drop(Tmpfs(mount.clone())),
        other => {
            not_run(&format!(
                "citizen::a_full_disk_…: root, but mounting a tmpfs failed ({other:?}); the \
                 RLIMIT_FSIZE variant covers a report that cannot grow"
            ));
            return;
        }
    }
    // The size is set once the report's full size is known: mount in the child's setup.
    let mounted = std::sync::Arc::new(std::sync::Mutex::new(None::<Tmpfs>));
    let report = mount.join("r.csv");
    let at = mount.clone();
    let keep = std::sync::Arc::clone(&mounted);
    let mount_small = move |_: &mut std::process::Command, bytes: u64| {
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o"])
            .arg(format!("size={bytes}"))
            .arg("tmpfs")
            .arg(&at)
            .status();
        if !status.as_ref().is_ok_and(|s| s.success()) {
            panic!(
                "running as root, but cannot mount a tmpfs at {}: {status:?}",
                at.display()
            );
        }
        *keep.lock().expect("lock") = Some(Tmpfs(at));
    };
    stops_at_the_first_failed_write(dir.path(), &report, mount_small, "No space left on device")
        .await;
    drop(mounted);
}

#[tokio::test]
async fn an_emit_file_that_cannot_grow_stops_the_sending_too() {
    let sandbox = Sandbox::start(sandbox_config()).await.expect("sandbox");
    let dir = tempfile::tempdir().expect("tempdir");
    let n = 2000;
    let rows: Vec<PlanRow> = (0..n).map(|i| react("o", format!("m{i}"), "👍")).collect();
    let plan = write_plan(dir.path(), &sandbox.base_url(), &rows, "");
    // The emit file's full size, from a dry run (the same records, signed with the run's
    // clock): each record is several times a report row or a spooled row.
    let emit = dir.path().join("requests.jsonl");
    let out = run_blocking(run_cmd(
        &plan,
        &dir.path().join("dry.csv"),
        &["--dry-run", "--emit", &emit.display().to_string()],
    ))
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let full_len = std::fs::metadata(&emit).expect("emit").len();
    std::fs::remove_file(&emit).expect("remove");
    // Room for the whole report (the rows not sent are reported `cancelled`), but not for
    // the emit file.
    let report_len = std::fs::metadata(dir.path().join("dry.csv"))
        .expect("report")
        .len();
    let limit = report_len + report_len / 4;
    // The emit file outgrows the limit well before its end (its records are about twice the
    // report's rows, account columns included), so the failed write comes mid-run.
    assert!(limit < full_len * 2 / 3, "{limit} {full_len}");

    let report = dir.path().join("r.csv");
    let concurrency = 16;
    let mut cmd = run_cmd(
        &plan,
        &report,
        &[
            "--rate",
            "unlimited",
            "--concurrency",
            &concurrency.to_string(),
            "--emit",
            &emit.display().to_string(),
        ],
    );
    with_file_size_limit(&mut cmd, limit);
    let out = run_blocking(cmd).await;
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(74), "{err}");
    assert!(err.contains("cannot write the emit file"), "{err}");
    assert!(err.contains("File too large"), "{err}");
    // Sending stopped once the emit file was full: no more rows sent than records fit,
    // and those in flight (records differ a little in size: 5% slack).
    let fit = (limit / (full_len / n as u64)) as usize;
    let accepted = sandbox.reactions().len();
    assert!(
        accepted <= fit + fit / 20 + concurrency,
        "{accepted} of {n} rows sent, {fit} records fit"
    );
    // The report holds every row: those sent, and the rest `cancelled`.
    let recorded = read_report(&report).expect("report");
    assert_one_row_per_plan_row(&recorded, n);
    let sent = recorded.iter().filter(|r| r.attempts > 0).count();
    assert_eq!(sent, accepted, "{err}");
    sandbox.shutdown().await;
}
