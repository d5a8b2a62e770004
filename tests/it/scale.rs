//! Connections at scale: one HTTP client whose connections belong to the origin, not to a
//! lane or a sender. A thousand accounts (a target, a scope and a lane each), and one
//! integration whose rows name a thousand or three thousand accounts, run under an
//! open-file limit of 1 024 with the sandbox's peak of open connections within
//! `--concurrency`; a smaller limit lowers the concurrency and says so; HTTPS speaks HTTP/2 to
//! `sandbox --tls`; a connection that cannot be made names its origin. Counts only.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use reactbatch::outputs::report::{read_report, Status};
use reactbatch::plan::{ProviderKind, Rate};
use reactbatch::sandbox::Sandbox;

use crate::common::{
    output_within, react, run_cmd, sandbox_config, stderr, write_plan, KOMMO_SECRET, USER,
};

/// Generous: a hang is forever, and debug builds on a busy machine are slow.
const WATCHDOG: Duration = Duration::from_secs(300);

/// Runs the child with its soft and hard open-file limits both `limit`: it cannot raise them.
fn with_open_file_limit(cmd: &mut Command, limit: u64) {
    // SAFETY: between fork and exec only setrlimit, which is async-signal-safe, is called.
    unsafe {
        cmd.pre_exec(move || {
            let rl = libc::rlimit {
                rlim_cur: limit as libc::rlim_t,
                rlim_max: limit as libc::rlim_t,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &rl) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// A plan of `accounts` Kommo targets at `base_url`, one scope each (so one lane each), at
/// `rate`, with `per_account` rows each; `plan.yaml` and `rows.csv` in `dir`.
fn accounts_plan(
    dir: &Path,
    base_url: &str,
    accounts: usize,
    per_account: usize,
    rate: &str,
) -> PathBuf {
    let mut plan = String::from("version: 1\ntargets:\n");
    for a in 0..accounts {
        plan.push_str(&format!(
            "  a{a}:\n    provider: kommo\n    scope_id: chan-1_acct-{a}\n    secret: {{ env: KOMMO_CHANNEL_SECRET }}\n    user_id: {USER}\n    base_url: {base_url}\n    rate: {rate}\n"
        ));
    }
    plan.push_str("include: [rows.csv]\n");
    let mut csv = String::from("target,action,message_id,conversation_id,emoji\n");
    for a in 0..accounts {
        for m in 0..per_account {
            csv.push_str(&format!("a{a},react,m-{a}-{m},chat-{a},👍\n"));
        }
    }
    std::fs::write(dir.join("rows.csv"), csv).expect("write rows");
    let path = dir.join("plan.yaml");
    std::fs::write(&path, plan).expect("write plan");
    path
}

async fn run_within(mut cmd: Command) -> std::process::Output {
    tokio::task::spawn_blocking(move || output_within(&mut cmd, WATCHDOG))
        .await
        .expect("join")
}

/// A plan of one Kommo integration (one target, one channel secret) at `base_url` whose rows
/// name their accounts (`scope_id` per row: a lane each), `per_account` rows each, sorted by
/// account as exports come; `plan.yaml` and `rows.csv` in `dir`.
fn integration_plan(
    dir: &Path,
    base_url: &str,
    accounts: usize,
    per_account: usize,
    rate: &str,
) -> PathBuf {
    let plan = format!(
        "version: 1\ntargets:\n  integration:\n    provider: kommo\n    secret: {{ env: KOMMO_CHANNEL_SECRET }}\n    user_id: {USER}\n    base_url: {base_url}\n    rate: {rate}\ninclude: [rows.csv]\n"
    );
    let mut csv = String::from("action,message_id,conversation_id,scope_id,emoji\n");
    for a in 0..accounts {
        for m in 0..per_account {
            csv.push_str(&format!("react,m-{m},chat-{a},chan-1_acct-{a},👍\n"));
        }
    }
    std::fs::write(dir.join("rows.csv"), csv).expect("write rows");
    let path = dir.join("plan.yaml");
    std::fs::write(&path, plan).expect("write plan");
    path
}

/// Every account limited to 7/s by the sandbox (its per-scope limit) and paced at 7/s by the
/// plan `make_plan` writes, under an open-file limit of 1 024 the child cannot raise: every
/// row ok, and the sandbox never saw more than `--concurrency` + 6 connections open at once
/// (one client's connections, shared by all the lanes).
async fn accounts_run_on_few_connections(
    accounts: usize,
    rows: usize,
    make_plan: fn(&Path, &str, usize, usize, &str) -> PathBuf,
) {
    const CONCURRENCY: u64 = 64;
    let rate = Rate::Limited {
        count: 7,
        per: Duration::from_secs(1),
    };
    let sandbox = Sandbox::start(sandbox_config().kommo_rate(rate, 7))
        .await
        .expect("sandbox");
    let dir = tempfile::tempdir().expect("tempdir");
    let plan = make_plan(dir.path(), &sandbox.base_url(), accounts, rows, "7/s");
    let report = dir.path().join("report.csv");
    let mut cmd = run_cmd(&plan, &report, &["--concurrency", &CONCURRENCY.to_string()]);
    with_open_file_limit(&mut cmd, 1024);
    let out = run_within(cmd).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        !stderr(&out).contains("lowered"),
        "64 connections fit under 1 024 files: {}",
        stderr(&out)
    );
    let results = read_report(&report).expect("report");
    assert_eq!(results.len(), accounts * rows);
    let not_ok: Vec<_> = results.iter().filter(|r| r.status != Status::Ok).collect();
    assert!(
        not_ok.is_empty(),
        "{} rows not ok, e.g. {:?}",
        not_ok.len(),
        not_ok.first()
    );
    let stats = sandbox.stats();
    assert_eq!(
        stats.count(ProviderKind::Kommo, 200),
        (accounts * rows) as u64
    );
    assert!(
        stats.connections.peak_open <= CONCURRENCY + 6,
        "peak of open connections {} for --concurrency {CONCURRENCY}: {:?}",
        stats.connections.peak_open,
        stats.connections
    );
    assert_eq!(stats.by_version.get("HTTP/1.1"), Some(&stats.requests));
    sandbox.shutdown().await;
}

/// A thousand accounts as a thousand targets, seven rows each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_accounts_run_under_an_open_file_limit_of_1024_on_few_connections() {
    accounts_run_on_few_connections(1000, 7, accounts_plan).await;
}

/// One integration whose rows name a thousand accounts, seven rows each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_integration_over_a_thousand_accounts_runs_on_few_connections() {
    accounts_run_on_few_connections(1000, 7, integration_plan).await;
}

/// One integration whose rows name three thousand accounts, three rows each: three times
/// the open-file limit in lanes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_integration_over_three_thousand_accounts_runs_on_few_connections() {
    accounts_run_on_few_connections(3000, 3, integration_plan).await;
}

/// Under an open-file limit too small for the concurrency asked, the run lowers it to fit
/// (one line on stderr says so) and runs every row within that many connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_open_file_limit_lowers_the_concurrency_and_says_so() {
    let sandbox = Sandbox::start(sandbox_config()).await.expect("sandbox");
    let dir = tempfile::tempdir().expect("tempdir");
    let plan = accounts_plan(dir.path(), &sandbox.base_url(), 100, 3, "unlimited");
    let report = dir.path().join("report.csv");
    let mut cmd = run_cmd(&plan, &report, &["--concurrency", "500"]);
    // 64 kept for other files: 36 connections.
    with_open_file_limit(&mut cmd, 100);
    let out = run_within(cmd).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let lowered: Vec<_> = stderr(&out)
        .lines()
        .filter(|l| l.contains("lowered"))
        .map(str::to_string)
        .collect();
    assert_eq!(lowered.len(), 1, "{}", stderr(&out));
    assert!(
        lowered[0].contains("concurrency 500 lowered to 36") && lowered[0].contains("100"),
        "{}",
        lowered[0]
    );
    let rows = read_report(&report).expect("report");
    assert_eq!(rows.len(), 300);
    assert!(rows.iter().all(|r| r.status == Status::Ok), "{rows:?}");
    let peak = sandbox.stats().connections.peak_open;
    assert!(peak <= 36 + 6, "peak of open connections {peak}");
    sandbox.shutdown().await;
}

/// HTTPS to `sandbox --tls` negotiates HTTP/2 (ALPN): every request arrives as HTTP/2, all
/// on one connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_speaks_http2_to_sandbox_tls() {
    let sandbox = Sandbox::start(sandbox_config().tls(true))
        .await
        .expect("sandbox");
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, sandbox.ca_pem().expect("a TLS sandbox has a CA")).expect("write CA");
    let rows: Vec<_> = (0..40)
        .map(|i| react("k", format!("m-{i}"), "👍"))
        .collect();
    let plan = write_plan(dir.path(), &sandbox.base_url(), &rows, "");
    let report = dir.path().join("report.csv");
    let ca_arg = ca.display().to_string();
    let cmd = run_cmd(
        &plan,
        &report,
        &[
            "--ca-cert",
            &ca_arg,
            "--rate",
            "unlimited",
            "--concurrency",
            "8",
        ],
    );
    let out = run_within(cmd).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let done = read_report(&report).expect("report");
    assert_eq!(done.len(), 40);
    assert!(done.iter().all(|r| r.status == Status::Ok), "{done:?}");
    let stats = sandbox.stats();
    assert_eq!(stats.requests, 40);
    assert_eq!(
        stats.by_version.get("HTTP/2"),
        Some(&40),
        "{:?}",
        stats.by_version
    );
    // One connection carries them all: the first burst waits for ALPN's answer rather than
    // open a connection per sender.
    assert_eq!(
        stats.connections.accepted, 1,
        "HTTP/2 connections: {:?}",
        stats.connections
    );
    sandbox.shutdown().await;
}

/// A port nobody listens on: the rows fail with code `connection`, the message naming the
/// origin (`127.0.0.1:PORT`), as a failure to establish a connection.
#[tokio::test]
async fn a_connection_that_cannot_be_made_names_its_origin() {
    // A port that was free a moment ago: bound, then closed.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("http://127.0.0.1:{port}");
    let rows = vec![react("k", "m-1", "👍"), react("o", "m-2", "👍")];
    let plan = write_plan(dir.path(), &url, &rows, "retries: 0");
    let report = dir.path().join("report.csv");
    let out = run_within(run_cmd(&plan, &report, &["--rate", "unlimited"])).await;
    assert_ne!(out.status.code(), Some(0), "{}", stderr(&out));
    let done = read_report(&report).expect("report");
    assert_eq!(done.len(), 2);
    for r in &done {
        assert_eq!(r.status, Status::Failed, "{r:?}");
        assert_eq!(r.code, "connection", "{r:?}");
        assert!(
            r.message.starts_with(&format!("127.0.0.1:{port}: ")),
            "{}",
            r.message
        );
    }
    assert!(!stderr(&out).contains(KOMMO_SECRET));
}
