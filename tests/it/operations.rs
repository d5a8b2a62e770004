//! Operations end to end: resume after `kill -9`, `--lock`, scheduling
//! ticks with `--now`, `--shard`, run → undo → run, audited plans (`--expect-digest`), and
//! `--resume` across plan edits. The real binary runs against the in-process sandbox on
//! loopback; assertions are on reports, exit codes and what the sandbox saw.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use crate::common::*;
use chrono::{DateTime, Utc};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use reactbatch::outputs::report::{read_report, RowResult, Status};
use reactbatch::plan::ProviderKind;
use reactbatch::sandbox::{Sandbox, SandboxHandle};

/// A plan row with every column the operations features use.
#[derive(Clone, Debug, Default)]
struct OpsRow {
    target: &'static str,
    action: &'static str,
    message: String,
    emoji: &'static str,
    not_before: Option<&'static str>,
    previous_emoji: Option<&'static str>,
    key: Option<&'static str>,
}

fn r(target: &'static str, message: impl Into<String>, emoji: &'static str) -> OpsRow {
    OpsRow {
        target,
        action: "react",
        message: message.into(),
        emoji,
        ..OpsRow::default()
    }
}

fn u(target: &'static str, message: impl Into<String>) -> OpsRow {
    OpsRow {
        target,
        action: "unreact",
        message: message.into(),
        ..OpsRow::default()
    }
}

impl OpsRow {
    fn at(mut self, not_before: &'static str) -> OpsRow {
        self.not_before = Some(not_before);
        self
    }

    fn prev(mut self, emoji: &'static str) -> OpsRow {
        self.previous_emoji = Some(emoji);
        self
    }

    fn key(mut self, key: &'static str) -> OpsRow {
        self.key = Some(key);
        self
    }

    fn provider(&self) -> ProviderKind {
        if self.target == "k" {
            ProviderKind::Kommo
        } else {
            ProviderKind::Ogmma
        }
    }
}

/// `plan.yaml` (targets `k` and `o` at `base_url`) including `rows.csv`, with every column.
fn write_ops_plan(dir: &Path, base_url: &str, rows: &[OpsRow], settings: &str) -> PathBuf {
    let plan = write_plan(dir, base_url, &[], settings);
    write_rows(&dir.join("rows.csv"), rows);
    plan
}

fn write_rows(path: &Path, rows: &[OpsRow]) {
    let mut csv = String::from(
        "target,action,message_id,conversation_id,emoji,not_before,previous_emoji,key\n",
    );
    for r in rows {
        let conv = if r.target == "k" { "chat-1" } else { "" };
        csv.push_str(&format!(
            "{},{},{},{conv},{},{},{},{}\n",
            r.target,
            r.action,
            r.message,
            r.emoji,
            r.not_before.unwrap_or(""),
            r.previous_emoji.unwrap_or(""),
            r.key.unwrap_or(""),
        ));
    }
    std::fs::write(path, csv).expect("write rows");
}

/// The final state the rows intend, from `start`.
fn ops_intent<'a>(
    start: BTreeMap<(ProviderKind, String), String>,
    rows: impl IntoIterator<Item = &'a OpsRow>,
) -> BTreeMap<(ProviderKind, String), String> {
    let mut state = start;
    for r in rows {
        let key = (r.provider(), r.message.clone());
        if r.action == "react" {
            state.insert(key, r.emoji.to_string());
        } else {
            state.remove(&key);
        }
    }
    state
}

fn code(out: &std::process::Output) -> Option<i32> {
    out.status.code()
}

fn provider_requests(sandbox: &SandboxHandle) -> u64 {
    let stats = sandbox.stats();
    stats.by_provider.values().map(|p| p.requests).sum()
}

fn ok_sends(sandbox: &SandboxHandle) -> u64 {
    let stats = sandbox.stats();
    stats.count(ProviderKind::Kommo, 200) + stats.count(ProviderKind::Ogmma, 200)
}

fn is_done_earlier(r: &RowResult) -> bool {
    r.status == Status::Skipped && r.code == "done_earlier"
}

fn spawn(mut cmd: std::process::Command) -> Child {
    cmd.stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn reactbatch")
}

/// Waits until `path` holds `needle`.
async fn wait_for_file_containing(path: &Path, needle: &str) {
    wait_until(&format!("{} to hold `{needle}`", path.display()), || {
        std::fs::read_to_string(path).is_ok_and(|t| t.contains(needle))
    })
    .await;
}

/// One line of the sandbox's request log.
#[derive(serde::Deserialize)]
struct LogLine {
    time: String,
    message_id: Option<String>,
}

fn request_log(path: &Path) -> Vec<(DateTime<Utc>, String)> {
    std::fs::read_to_string(path)
        .expect("request log")
        .lines()
        .filter_map(|l| {
            let line: LogLine = serde_json::from_str(l).expect("log line");
            let at = DateTime::parse_from_rfc3339(&line.time)
                .expect("log time")
                .with_timezone(&Utc);
            line.message_id.map(|m| (at, m))
        })
        .collect()
}

const CONCURRENCY: u64 = 8;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_random_moments_then_resume_sends_every_row_once() {
    crash_loop(3, 3000).await;
}

/// The long form of the crash loop: 20 kills over 10 000 rows.
/// `cargo test --release --test it operations::crash_loop_long -- --ignored --nocapture`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long form: 20 kills, about a minute"]
async fn crash_loop_long() {
    crash_loop(20, 10_000).await;
}

/// Kills the run with SIGKILL at `kills` seeded random moments, resuming after each, then lets
/// it finish; checks the report after every kill and the sends at the end.
async fn crash_loop(kills_wanted: u64, n: usize) {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("requests.jsonl");
    let sandbox = Sandbox::start(
        sandbox_config()
            .request_log(log.clone())
            .latency(Duration::from_millis(2)),
    )
    .await
    .expect("sandbox");
    // One message per row, so the request log counts sends per row.
    const EMOJIS: [&str; 3] = ["👍", "❤️", "🎉"];
    let rows: Vec<OpsRow> = (0..n)
        .map(|i| {
            r(
                if i % 3 == 0 { "k" } else { "o" },
                format!("x-{i}"),
                EMOJIS[i % 3],
            )
        })
        .collect();
    let plan = write_ops_plan(
        dir.path(),
        &sandbox.base_url(),
        &rows,
        &format!("rate: 400/s, concurrency: {CONCURRENCY}"),
    );
    let report = dir.path().join("report.csv");
    let report_arg = report.to_str().expect("utf-8 path").to_string();
    let mut rng = SmallRng::seed_from_u64(0x5eed_0005);
    // (restart time, rows the report showed done at the kill before it)
    let mut restarts: Vec<(DateTime<Utc>, BTreeSet<String>)> = Vec::new();
    let mut kills = 0u64;
    let mut finished = false;
    for attempt in 0..kills_wanted + 10 {
        let kill_after =
            (kills < kills_wanted).then(|| Duration::from_millis(rng.random_range(250..1200)));
        let cmd = run_cmd(&plan, &report, &["--resume", &report_arg, "-q"]);
        let started = Utc::now();
        let (status, was_killed) = tokio::task::spawn_blocking(move || {
            let mut child = spawn(cmd);
            if let Some(delay) = kill_after {
                std::thread::sleep(delay);
                if child.try_wait().expect("try_wait").is_none() {
                    child.kill().expect("kill -9");
                    return (child.wait().expect("wait"), true);
                }
            }
            (child.wait().expect("wait"), false)
        })
        .await
        .expect("join");
        if attempt > 0 {
            if let Some(last) = restarts.last_mut() {
                last.0 = started;
            }
        }
        if !was_killed {
            assert_eq!(status.code(), Some(0), "attempt {attempt}");
            finished = true;
            break;
        }
        kills += 1;
        let after_kill = read_report(&report)
            .unwrap_or_else(|e| panic!("the report must parse after kill {kills}: {e}"));
        let done: BTreeSet<String> = after_kill
            .iter()
            .filter(|r| r.status == Status::Ok || is_done_earlier(r))
            .map(|r| r.message_id.clone())
            .collect();
        assert_eq!(
            done.len(),
            after_kill
                .iter()
                .filter(|r| r.status == Status::Ok || is_done_earlier(r))
                .count(),
            "a row shown done twice after kill {kills}"
        );
        restarts.push((Utc::now(), done));
    }
    assert!(finished, "no run completed after {kills} kills");
    assert_eq!(
        kills, kills_wanted,
        "the run finished before it was killed {kills_wanted} times"
    );
    sandbox.shutdown().await;

    let final_report = read_report(&report).expect("final report");
    assert_one_row_per_plan_row(&final_report, rows.len());
    for row in &final_report {
        assert!(
            row.status == Status::Ok || is_done_earlier(row),
            "row {} is {} {}",
            row.row,
            row.status,
            row.code
        );
        assert_eq!(
            row.message_id,
            rows[row.row as usize - 1].message,
            "row {}",
            row.row
        );
    }

    let sends = request_log(&log);
    let mut per_message: HashMap<&str, u64> = HashMap::new();
    for (_, m) in &sends {
        *per_message.entry(m.as_str()).or_default() += 1;
    }
    assert!(
        rows.iter()
            .all(|r| per_message.contains_key(r.message.as_str())),
        "a row was never sent"
    );
    let resent = sends.len() as u64 - rows.len() as u64;
    eprintln!(
        "crash loop: {} rows, {kills} kills, {} requests, {resent} re-sent after kills",
        rows.len(),
        sends.len()
    );
    assert!(
        resent <= CONCURRENCY * kills,
        "{resent} re-sends after {kills} kills (at most {CONCURRENCY} in flight per kill)"
    );
    // A row the report showed done at a kill is never sent by a later run.
    for (restart, done) in &restarts {
        let restart = restart.timestamp_millis();
        for (at, m) in &sends {
            assert!(
                !(done.contains(m) && at.timestamp_millis() >= restart),
                "{m} was re-sent at {at} after a restart although the report showed it done"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_run_with_the_same_lock_exits_4_at_once_and_a_stale_lock_does_not_block() {
    let sandbox = Sandbox::start(sandbox_config()).await.expect("sandbox");
    let dir = tempfile::tempdir().expect("tempdir");
    let rows: Vec<OpsRow> = (0..120).map(|i| r("o", format!("l-{i}"), "👍")).collect();
    let plan = write_ops_plan(dir.path(), &sandbox.base_url(), &rows, "rate: 40/s");
    let report = dir.path().join("cron.report.csv");
    let lock = dir.path().join("cron.lock");
    let lock_arg = lock.to_str().expect("utf-8 path").to_string();

    let mut first = spawn(run_cmd(&plan, &report, &["--lock", &lock_arg]));
    let holder = format!("pid {}", first.id());
    wait_for_file_containing(&lock, &holder).await;

    let second = run_cmd(&plan, &report, &["--lock", &lock_arg]);
    let out = run_blocking(second).await;
    assert_eq!(code(&out), Some(4), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&holder) && stderr(&out).contains("started"),
        "the message names the holder: {}",
        stderr(&out)
    );
    // "At once": it did not wait for the lock, as the first run is still going. An event, not
    // a stopwatch, so a loaded machine cannot turn it red by slowing the second run down.
    assert!(
        first.try_wait().expect("try_wait").is_none(),
        "the first run ended before the second was refused; make the first one slower"
    );

    let first = tokio::task::spawn_blocking(move || first.wait_with_output().expect("wait"))
        .await
        .expect("join");
    assert_eq!(code(&first), Some(0), "{}", stderr(&first));
    let report_rows = read_report(&report).expect("report");
    assert_one_row_per_plan_row(&report_rows, rows.len());
    assert!(report_rows.iter().all(|r| r.status == Status::Ok));

    // A run killed while holding the lock leaves the file behind, with its pid.
    // (`--overwrite`: the report holds the first run's results.)
    let mut killed = spawn(run_cmd(
        &plan,
        &report,
        &["--lock", &lock_arg, "--overwrite"],
    ));
    let dead = format!("pid {}", killed.id());
    wait_for_file_containing(&lock, &dead).await;
    killed.kill().expect("kill -9");
    killed.wait().expect("wait");
    assert!(std::fs::read_to_string(&lock)
        .expect("lock file")
        .contains(&dead));
    let out = run_blocking(run_cmd(
        &plan,
        &report,
        &["--lock", &lock_arg, "--rate", "unlimited", "--overwrite"],
    ))
    .await;
    assert_eq!(
        code(&out),
        Some(0),
        "a stale lock blocked: {}",
        stderr(&out)
    );
    sandbox.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cron_ticks_with_advancing_now_send_each_row_once_when_it_is_due() {
    let sandbox = Sandbox::start(sandbox_config()).await.expect("sandbox");
    let dir = tempfile::tempdir().expect("tempdir");
    // Far in the future of the wall clock: only `--now` makes them due.
    const T1: &str = "2031-03-01T09:00:00Z";
    const T2: &str = "2031-03-01T10:00:00Z";
    const T3: &str = "2031-03-01T11:00:00+00:00";
    let rows = vec![
        r("k", "now-1", "👍"),
        r("k", "a-1", "👍").at(T1),
        r("o", "a-2", "❤️").at(T1),
        r("k", "seq", "👍").at(T1),
        r("o", "b-1", "🎉").at(T2),
        r("k", "b-2", "🎉").at(T2),
        u("k", "seq").at(T2),
        r("o", "c-1", "👍").at(T3),
        r("k", "seq", "🎉").at(T3),
        r("k", "c-2", "❤️").at(T3),
    ];
    let plan = write_ops_plan(dir.path(), &sandbox.base_url(), &rows, "rate: unlimited");
    let report = dir.path().join("cron.report.csv");
    let report_arg = report.to_str().expect("utf-8 path").to_string();
    let lock = dir.path().join("cron.lock");
    let lock_arg = lock.to_str().expect("utf-8 path").to_string();
    let due_at = |r: &OpsRow| {
        r.not_before.map(|t| {
            DateTime::parse_from_rfc3339(t)
                .expect("time")
                .with_timezone(&Utc)
        })
    };

    let ticks = [
        "2031-03-01T08:00:00Z",
        "2031-03-01T09:30:00Z",
        "2031-03-01T10:00:00Z", // exactly T2: due
        "2031-03-01T11:30:00Z",
        "2031-03-01T12:00:00Z", // nothing left
    ];
    let mut sent_before = 0u64;
    for (i, tick) in ticks.iter().enumerate() {
        let now = DateTime::parse_from_rfc3339(tick)
            .expect("tick")
            .with_timezone(&Utc);
        let is_due = |r: &OpsRow| due_at(r).is_none_or(|t| t <= now);
        let out = run_blocking(run_cmd(
            &plan,
            &report,
            &[
                "--now",
                tick,
                "--resume",
                &report_arg,
                "--lock",
                &lock_arg,
                "-q",
            ],
        ))
        .await;
        assert_eq!(code(&out), Some(0), "tick {i}: {}", stderr(&out));

        let due = rows.iter().filter(|r| is_due(r)).count() as u64;
        let sent = ok_sends(&sandbox);
        assert_eq!(
            sent, due,
            "tick {i} ({tick}): every due row once, none early"
        );
        assert_eq!(
            provider_requests(&sandbox),
            sent,
            "tick {i}: only successes"
        );
        assert_eq!(
            sandbox_state(&sandbox),
            ops_intent(BTreeMap::new(), rows.iter().filter(|r| is_due(r))),
            "tick {i}"
        );

        let report_rows = read_report(&report).expect("report");
        assert_one_row_per_plan_row(&report_rows, rows.len());
        let mut newly_sent = 0;
        for rr in &report_rows {
            let row = &rows[rr.row as usize - 1];
            if is_due(row) {
                assert!(
                    rr.status == Status::Ok || is_done_earlier(rr),
                    "tick {i}: row {} is {} {}",
                    rr.row,
                    rr.status,
                    rr.code
                );
                newly_sent += u64::from(rr.status == Status::Ok);
            } else {
                assert_eq!(
                    (rr.status, rr.code.as_str()),
                    (Status::Deferred, "not_before"),
                    "tick {i}: row {}",
                    rr.row
                );
            }
        }
        assert_eq!(
            newly_sent,
            sent - sent_before,
            "tick {i}: ok rows are this tick's sends"
        );
        sent_before = sent;
    }
    sandbox.shutdown().await;
}

/// Report rows as comparable tuples: (row, key, target, action, message, emoji).
type RowId = (u64, String, String, String, String, String);

fn row_ids(report: &[RowResult]) -> BTreeSet<RowId> {
    report
        .iter()
        .map(|r| {
            (
                r.row,
                r.key.clone(),
                r.target.clone(),
                r.action.clone(),
                r.message_id.clone(),
                r.emoji.clone(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_shards_together_are_the_unsharded_run() {
    let whole_box = Sandbox::start(sandbox_config()).await.expect("sandbox");
    let shard_box = Sandbox::start(sandbox_config()).await.expect("sandbox");
    let whole_dir = tempfile::tempdir().expect("tempdir");
    let shard_dir = tempfile::tempdir().expect("tempdir");
    // Repeated rows (identical content) too, so occurrence-numbered identities are compared.
    let mut rows = mixed_rows(300, 40);
    rows.extend(mixed_rows(20, 40));
    let settings = "rate: unlimited, concurrency: 8";
    let whole_plan = write_plan(whole_dir.path(), &whole_box.base_url(), &rows, settings);
    let shard_plan = write_plan(shard_dir.path(), &shard_box.base_url(), &rows, settings);

    let whole_report = whole_dir.path().join("report.csv");
    let out = run_blocking(run_cmd(&whole_plan, &whole_report, &["-q"])).await;
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    let whole = read_report(&whole_report).expect("report");
    assert_one_row_per_plan_row(&whole, rows.len());

    // The shards run at the same time, as parallel CI jobs would.
    let runs = (1..=3).map(|i| {
        let report = shard_dir.path().join(format!("shard-{i}.csv"));
        let shard = format!("{i}/3");
        let cmd = run_cmd(&shard_plan, &report, &["-q", "--shard", &shard]);
        async move {
            let out = run_blocking(cmd).await;
            assert_eq!(code(&out), Some(0), "shard {i}: {}", stderr(&out));
            read_report(&report).expect("shard report")
        }
    });
    let shards = futures::future::join_all(runs).await;

    let mut owner: HashMap<(String, String), usize> = HashMap::new();
    let mut union = BTreeSet::new();
    let mut total = 0;
    for (i, shard) in shards.iter().enumerate() {
        assert!(!shard.is_empty(), "shard {} is empty", i + 1);
        total += shard.len();
        for row in shard {
            assert_eq!(row.status, Status::Ok);
            let message = (row.target.clone(), row.message_id.clone());
            let first = *owner.entry(message.clone()).or_insert(i);
            assert_eq!(
                first,
                i,
                "{message:?} is in shards {} and {}",
                first + 1,
                i + 1
            );
        }
        union.extend(row_ids(shard));
    }
    assert_eq!(total, rows.len(), "every row in exactly one shard");
    assert_eq!(
        union,
        row_ids(&whole),
        "the shards' rows are the unsharded run's"
    );
    // Per-message order held in every shard: the final state is the plan's intent.
    assert_eq!(sandbox_state(&shard_box), intent(&rows));
    assert_eq!(sandbox_state(&whole_box), intent(&rows));
    whole_box.shutdown().await;
    shard_box.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_then_undo_restores_the_state_the_sandbox_started_in() {
    let sandbox = Sandbox::start(sandbox_config().not_found_prefix("gone-"))
        .await
        .expect("sandbox");
    let dir = tempfile::tempdir().expect("tempdir");
    let base = sandbox.base_url();

    // Some state to start from.
    let seed_dir = dir.path().join("seed");
    std::fs::create_dir(&seed_dir).expect("mkdir");
    let seed = vec![
        r("k", "u-1", "👍"),
        r("k", "u-2", "❤️"),
        r("o", "u-3", "🎉"),
        r("o", "u-4", "👍"),
    ];
    let seed_plan = write_ops_plan(&seed_dir, &base, &seed, "rate: unlimited");
    let out = run_blocking(run_cmd(&seed_plan, &seed_dir.join("seed.csv"), &["-q"])).await;
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    let start = sandbox_state(&sandbox);
    assert_eq!(start, ops_intent(BTreeMap::new(), &seed));

    let rows = vec![
        u("k", "u-1").prev("👍"),
        u("o", "u-3").prev("🎉"),
        // A react that replaces a reaction, recording the one it replaces.
        r("k", "u-2", "🔥").prev("❤️"),
        r("o", "v-1", "👍"),
        r("k", "v-2", "😀"),
        r("k", "v-2", "🎉"),
        r("o", "u-4", "❤️").prev("👍"),
        // Nothing to restore (no previous_emoji): listed with a warning; v-3 had nothing.
        u("o", "v-3"),
        // Fails (404): not done, so not undone.
        r("o", "gone-1", "👍"),
    ];
    let plan = write_ops_plan(dir.path(), &base, &rows, "rate: unlimited, concurrency: 4");
    let report = dir.path().join("plan.report.csv");
    let out = run_blocking(run_cmd(&plan, &report, &["-q"])).await;
    assert_eq!(code(&out), Some(1), "the gone- row fails: {}", stderr(&out));
    let after_run = sandbox_state(&sandbox);
    assert_eq!(
        after_run,
        ops_intent(
            start.clone(),
            rows.iter().filter(|r| !r.message.starts_with("gone-"))
        )
    );

    let undo_plan = dir.path().join("undo.yaml");
    let mut undo = bin();
    undo.arg("undo")
        .arg(&report)
        .arg("--plan")
        .arg(&plan)
        .arg("-o")
        .arg(&undo_plan);
    let out = run_blocking(undo).await;
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("rows.csv:9") && stderr(&out).contains("cannot be restored"),
        "the unreact without previous_emoji is named: {}",
        stderr(&out)
    );
    let text = std::fs::read_to_string(&undo_plan).expect("undo plan");
    assert!(!text.contains("gone-1"), "a failed row was undone:\n{text}");
    assert!(text.contains(&base), "targets keep their base_url:\n{text}");
    assert!(!text.contains(KOMMO_SECRET) && !text.contains(OGMMA_KEY));

    let mut check = bin();
    check
        .arg("check")
        .arg(&undo_plan)
        .env("KOMMO_CHANNEL_SECRET", KOMMO_SECRET)
        .env("OGMMA_API_KEY", OGMMA_KEY);
    let out = run_blocking(check).await;
    assert_eq!(
        code(&out),
        Some(0),
        "check undo.yaml: {}\n{text}",
        stderr(&out)
    );

    let undo_report = dir.path().join("undo.report.csv");
    let out = run_blocking(run_cmd(&undo_plan, &undo_report, &["-q"])).await;
    assert_eq!(code(&out), Some(0), "{}\n{text}", stderr(&out));
    assert_eq!(
        sandbox_state(&sandbox),
        start,
        "undo restores the start:\n{text}"
    );

    // Undoing the undo redoes the run.
    let redo_plan = dir.path().join("redo.yaml");
    let mut redo = bin();
    redo.arg("undo")
        .arg(&undo_report)
        .arg("--plan")
        .arg(&undo_plan)
        .arg("-o")
        .arg(&redo_plan);
    let out = run_blocking(redo).await;
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    let out = run_blocking(run_cmd(&redo_plan, &dir.path().join("redo.csv"), &["-q"])).await;
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    assert_eq!(sandbox_state(&sandbox), after_run);
    sandbox.shutdown().await;
}

fn digest_in(stderr: &str) -> String {
    let at = stderr
        .find("plan digest sha256:")
        .unwrap_or_else(|| panic!("no digest in:\n{stderr}"));
    let digest = stderr[at + "plan digest ".len()..]
        .split_whitespace()
        .next()
        .expect("digest")
        .to_string();
    assert_eq!(digest.len(), "sha256:".len() + 64, "{digest}");
    digest
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_audited_digest_runs_and_a_changed_include_is_refused() {
    let sandbox = Sandbox::start(sandbox_config()).await.expect("sandbox");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut rows: Vec<OpsRow> = (0..30)
        .map(|i| r(if i % 2 == 0 { "k" } else { "o" }, format!("d-{i}"), "👍"))
        .collect();
    let plan = write_ops_plan(dir.path(), &sandbox.base_url(), &rows, "rate: unlimited");
    let report = dir.path().join("audit.report.csv");
    let summary = dir.path().join("audit.summary.json");
    let dry_run = |summary: Option<&Path>| {
        let mut cmd = run_cmd(
            &plan,
            &report,
            &["--dry-run", "--now", "2026-12-01T09:00:00Z"],
        );
        if let Some(path) = summary {
            cmd.arg("--summary-json").arg(path);
        }
        cmd
    };

    let out = run_blocking(dry_run(Some(&summary))).await;
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    let audited = digest_in(&stderr(&out));
    let json = summary_json(&summary);
    assert_eq!(json["digest"], audited.as_str());
    // The same plan audited again (any --now) has the same digest.
    let again = run_blocking(dry_run(None)).await;
    assert_eq!(digest_in(&stderr(&again)), audited);
    assert_eq!(provider_requests(&sandbox), 0, "a dry run sends nothing");

    // One emoji changed in the included CSV.
    rows[17].emoji = "👎";
    write_rows(&dir.path().join("rows.csv"), &rows);
    let out = run_blocking(dry_run(None)).await;
    let changed = digest_in(&stderr(&out));
    assert_ne!(changed, audited);

    let out = run_blocking(run_cmd(&plan, &report, &["--expect-digest", &audited])).await;
    assert_eq!(code(&out), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&changed) && stderr(&out).contains("nothing was sent"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        provider_requests(&sandbox),
        0,
        "nothing sent on a digest mismatch"
    );

    let out = run_blocking(run_cmd(&plan, &report, &["--expect-digest", &changed])).await;
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    assert_eq!(ok_sends(&sandbox), rows.len() as u64);
    assert_eq!(sandbox_state(&sandbox), ops_intent(BTreeMap::new(), &rows));
    sandbox.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_refuses_another_plans_report() {
    let sandbox = Sandbox::start(sandbox_config()).await.expect("sandbox");
    let dir = tempfile::tempdir().expect("tempdir");
    let base = sandbox.base_url();
    let rows: Vec<OpsRow> = (0..10).map(|i| r("o", format!("f-{i}"), "👍")).collect();
    let plan = write_ops_plan(dir.path(), &base, &rows, "rate: unlimited");

    // A report of a plan with other targets.
    let other = dir.path().join("other");
    std::fs::create_dir(&other).expect("mkdir");
    let other_plan = other.join("other.yaml");
    std::fs::write(
        &other_plan,
        format!(
            "version: 1\ntargets:\n  ogmma-br:\n    provider: ogmma\n    channel_id: ch_9\n    api_key: {{ env: OGMMA_API_KEY }}\n    base_url: {base}\nrows:\n  - {{ message_id: f-1, emoji: \"👍\" }}\n"
        ),
    )
    .expect("write");
    let other_report = other.join("other.report.csv");
    let out = run_blocking(run_cmd(&other_plan, &other_report, &["-q"])).await;
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));

    // A report of a plan with the same targets but rows from other files.
    let renamed = dir.path().join("renamed");
    std::fs::create_dir(&renamed).expect("mkdir");
    let renamed_plan = write_ops_plan(&renamed, &base, &rows, "rate: unlimited");
    std::fs::rename(renamed.join("rows.csv"), renamed.join("batch-2.csv")).expect("rename");
    let text = std::fs::read_to_string(&renamed_plan).expect("plan");
    std::fs::write(&renamed_plan, text.replace("rows.csv", "batch-2.csv")).expect("write");
    let renamed_report = renamed.join("renamed.report.csv");
    let out = run_blocking(run_cmd(&renamed_plan, &renamed_report, &["-q"])).await;
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    let before = provider_requests(&sandbox);

    for foreign in [&other_report, &renamed_report] {
        let report = dir.path().join("plan.report.csv");
        let out = run_blocking(run_cmd(
            &plan,
            &report,
            &["--resume", foreign.to_str().expect("utf-8 path")],
        ))
        .await;
        assert_eq!(code(&out), Some(2), "{}", stderr(&out));
        let err = stderr(&out);
        assert!(
            err.contains("--resume") && err.contains("is not a report of"),
            "{err}"
        );
        assert_eq!(provider_requests(&sandbox), before, "nothing sent");
        assert!(!report.exists(), "no report written for a refused run");
    }
    sandbox.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_after_rows_were_added_and_removed_elsewhere_sends_only_new_rows() {
    let sandbox = Sandbox::start(sandbox_config()).await.expect("sandbox");
    let dir = tempfile::tempdir().expect("tempdir");
    let old_rows: Vec<OpsRow> = (0..40)
        .map(|i| r(if i % 2 == 0 { "k" } else { "o" }, format!("e-{i}"), "👍"))
        .chain([
            // Identical rows: told apart by their occurrence.
            r("o", "dup", "🎉"),
            r("o", "dup", "🎉"),
            // An explicit key holds even when the content changes.
            r("k", "keyed", "👍").key("row-k1"),
        ])
        .collect();
    let plan = write_ops_plan(
        dir.path(),
        &sandbox.base_url(),
        &old_rows,
        "rate: unlimited",
    );
    let report = dir.path().join("plan.report.csv");
    let report_arg = report.to_str().expect("utf-8 path").to_string();
    let out = run_blocking(run_cmd(&plan, &report, &["-q"])).await;
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    assert_eq!(ok_sends(&sandbox), old_rows.len() as u64);

    // The plan is edited: rows inserted before and among the old ones, some removed, a third
    // identical row, the keyed row's emoji changed.
    let mut new_rows = vec![r("k", "n-0", "❤️"), r("o", "n-1", "❤️")];
    for (i, row) in old_rows.iter().enumerate() {
        if (10..15).contains(&i) {
            continue; // removed
        }
        let mut row = row.clone();
        if row.key.is_some() {
            row.emoji = "🔥";
        }
        new_rows.push(row);
        if i == 20 {
            new_rows.push(r("k", "n-2", "🎉"));
        }
    }
    new_rows.push(r("o", "dup", "🎉"));
    write_rows(&dir.path().join("rows.csv"), &new_rows);
    let added = 4u64; // n-0, n-1, n-2 and the third dup

    let out = run_blocking(run_cmd(&plan, &report, &["--resume", &report_arg, "-q"])).await;
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    assert_eq!(
        ok_sends(&sandbox),
        old_rows.len() as u64 + added,
        "only the added rows were sent"
    );
    let all_rows = read_report(&report).expect("report");
    // The removed rows are kept after the plan's, as they were, with code not_in_plan.
    let (report_rows, kept): (Vec<_>, Vec<_>) =
        all_rows.iter().partition(|r| r.code != "not_in_plan");
    let mut kept_ids: Vec<&str> = kept.iter().map(|r| r.message_id.as_str()).collect();
    kept_ids.sort_unstable();
    assert_eq!(kept_ids, ["e-10", "e-11", "e-12", "e-13", "e-14"]);
    assert!(kept.iter().all(|r| r.status == Status::Ok));
    assert!(all_rows[all_rows.len() - kept.len()..]
        .iter()
        .all(|r| r.code == "not_in_plan"));
    let report_rows: Vec<RowResult> = report_rows.into_iter().cloned().collect();
    assert_one_row_per_plan_row(&report_rows, new_rows.len());
    let mut sent = 0;
    for rr in &report_rows {
        let row = &new_rows[rr.row as usize - 1];
        assert_eq!(
            (
                rr.message_id.as_str(),
                rr.source.ends_with(&format!("rows.csv:{}", rr.row + 1))
            ),
            (row.message.as_str(), true),
            "report row {} ({}) is the plan's row {}",
            rr.row,
            rr.source,
            rr.row
        );
        let is_new = row.message.starts_with("n-")
            || (row.message == "dup" && rr.row as usize == new_rows.len());
        if is_new {
            assert_eq!(rr.status, Status::Ok, "row {}", rr.row);
            sent += 1;
        } else {
            assert!(
                is_done_earlier(rr),
                "row {} is {} {}",
                rr.row,
                rr.status,
                rr.code
            );
        }
    }
    assert_eq!(sent, added);
    sandbox.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_behind_a_deferred_row_on_the_same_message_waits_for_it() {
    let sandbox = Sandbox::start(sandbox_config()).await.expect("sandbox");
    let dir = tempfile::tempdir().expect("tempdir");
    const T1: &str = "2031-03-01T09:00:00Z";
    let rows = vec![
        r("k", "ord", "👍").at(T1),
        // Due at once, but after the deferred react in plan order: it must not overtake it.
        u("k", "ord"),
        r("o", "free", "🎉"),
    ];
    let plan = write_ops_plan(dir.path(), &sandbox.base_url(), &rows, "rate: unlimited");
    let report = dir.path().join("report.csv");
    let report_arg = report.to_str().expect("utf-8 path").to_string();
    for (tick, now) in ["2031-03-01T08:00:00Z", "2031-03-01T09:00:00Z"]
        .into_iter()
        .enumerate()
    {
        let out = run_blocking(run_cmd(
            &plan,
            &report,
            &["--now", now, "--resume", &report_arg, "-q"],
        ))
        .await;
        assert_eq!(code(&out), Some(0), "tick {tick}: {}", stderr(&out));
        let report_rows = read_report(&report).expect("report");
        assert_one_row_per_plan_row(&report_rows, rows.len());
        let row = |n: u64| report_rows.iter().find(|r| r.row == n).expect("row");
        let status = |n: u64| (row(n).status, row(n).code.clone());
        if tick == 0 {
            assert_eq!(status(1), (Status::Deferred, "not_before".into()));
            assert_eq!(status(2), (Status::Deferred, "not_before".into()));
            assert!(
                row(2).message.contains("waits for row 1"),
                "{}",
                row(2).message
            );
            assert_eq!(ok_sends(&sandbox), 1, "only the free row");
        } else {
            assert_eq!(status(1).0, Status::Ok);
            assert_eq!(status(2).0, Status::Ok);
        }
    }
    assert_eq!(sandbox_state(&sandbox), ops_intent(BTreeMap::new(), &rows));
    sandbox.shutdown().await;
}

/// Copies `examples/workflows` into a temporary directory, so reports land there.
fn examples_copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/workflows");
    for entry in std::fs::read_dir(src).expect("examples") {
        let path = entry.expect("entry").path();
        std::fs::copy(&path, dir.path().join(path.file_name().expect("name"))).expect("copy");
    }
    dir
}

fn example_run(dir: &Path, args: &[&str]) -> std::process::Command {
    let mut cmd = bin();
    cmd.arg("run")
        .args(args)
        .arg("--no-progress")
        .current_dir(dir)
        .env("KOMMO_CHANNEL_SECRET", KOMMO_SECRET)
        .env("OGMMA_API_KEY", OGMMA_KEY)
        .stdin(Stdio::null());
    cmd
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_migration_example_audits_runs_resumes_and_undoes_as_documented() {
    let dir = examples_copy();
    let d = dir.path();
    let plan = "migration-to-ogmma.yaml";
    // 1. Audit.
    let out = run_blocking(example_run(
        d,
        &[
            plan,
            "--dry-run",
            "--emit",
            "migration.requests.jsonl",
            "--report",
            "migration.audit.csv",
            "--now",
            "2026-12-01T09:00:00Z",
        ],
    ))
    .await;
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    let digest = digest_in(&stderr(&out));
    let requests = std::fs::read_to_string(d.join("migration.requests.jsonl")).expect("emit");
    assert_eq!(requests.lines().count(), 6);
    // 2. Run what was audited (on the in-process sandbox, at full speed).
    let out = run_blocking(example_run(
        d,
        &[
            plan,
            "--sandbox",
            "--rate",
            "unlimited",
            "--expect-digest",
            &digest,
            "--lock",
            "migration.lock",
        ],
    ))
    .await;
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    let report = d.join("migration-to-ogmma.report.csv");
    assert!(read_report(&report)
        .expect("report")
        .iter()
        .all(|r| r.status == Status::Ok));
    // 3. Resume: everything is done already.
    let out = run_blocking(example_run(
        d,
        &[
            plan,
            "--sandbox",
            "--rate",
            "unlimited",
            "--resume",
            "migration-to-ogmma.report.csv",
        ],
    ))
    .await;
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    let resumed = read_report(&report).expect("report");
    assert_one_row_per_plan_row(&resumed, 6);
    assert!(resumed.iter().all(is_done_earlier), "{resumed:?}");
    // 4. Undo: a plan that checks.
    let mut undo = bin();
    undo.args([
        "undo",
        "migration-to-ogmma.report.csv",
        "--plan",
        plan,
        "-o",
        "migration-undo.yaml",
    ])
    .current_dir(d);
    let out = run_blocking(undo).await;
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    let out = run_blocking(example_run(
        d,
        &["migration-undo.yaml", "--sandbox", "--rate", "unlimited"],
    ))
    .await;
    assert_eq!(code(&out), Some(0), "{}", stderr(&out));
    let undone = read_report(&d.join("migration-undo.report.csv")).expect("undo report");
    assert_eq!(undone.len(), 6);
    assert!(undone
        .iter()
        .all(|r| r.action == "unreact" && r.status == Status::Ok));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cron_example_works_through_its_rows_tick_by_tick() {
    let dir = examples_copy();
    let d = dir.path();
    let report = d.join("cron-followups.report.csv");
    // (tick, rows deferred after it)
    for (now, deferred) in [
        ("2026-12-01T08:55:00Z", 4),
        ("2026-12-01T09:05:00Z", 2),
        ("2026-12-01T10:00:00Z", 1),
        ("2026-12-01T11:05:00Z", 0),
    ] {
        let out = run_blocking(example_run(
            d,
            &[
                "cron-followups.yaml",
                "--sandbox",
                "--rate",
                "unlimited",
                "--now",
                now,
                "--resume",
                "cron-followups.report.csv",
                "--report",
                "cron-followups.report.csv",
                "--lock",
                "cron-followups.lock",
                "-q",
            ],
        ))
        .await;
        assert_eq!(code(&out), Some(0), "{now}: {}", stderr(&out));
        let rows = read_report(&report).expect("report");
        assert_one_row_per_plan_row(&rows, 5);
        let counts = by_status(&rows);
        assert_eq!(
            counts.get(&Status::Deferred).copied().unwrap_or(0),
            deferred,
            "{now}: {counts:?}"
        );
        assert_eq!(counts.get(&Status::Failed), None, "{now}: {counts:?}");
    }
}
