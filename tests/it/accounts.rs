//! Rows that carry their account: one Kommo target (one integration, one secret) whose rows
//! each name their `scope_id`, run by the real binary against the sandbox limiting each scope
//! on its own; the located errors; resume and undo with per-row accounts; and the sandbox's
//! Ogmma keys, each limited on its own.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use reactbatch::outputs::report::{read_report, RowResult, Status};
use reactbatch::plan::{ProviderKind, Rate};
use reactbatch::sandbox::{Sandbox, SandboxHandle};
use reactbatch::secret::Secret;

use crate::common::*;

const OGMMA_KEY_2: &str = "run-test-ogmma-key-2-5d0e11";

fn per_second(n: u32) -> Rate {
    Rate::Limited {
        count: n,
        per: Duration::from_secs(1),
    }
}

/// The integration's targets: Kommo without a `scope_id` (its rows give theirs) and Ogmma
/// without a `channel_id`, both at `base_url`.
fn targets(base_url: &str) -> String {
    format!(
        "version: 1\n\
         targets:\n  integration:\n    provider: kommo\n    secret: {{ env: KOMMO_CHANNEL_SECRET }}\n    user_id: {USER}\n    base_url: {base_url}\n\
         \x20 customers:\n    provider: ogmma\n    api_key: {{ env: OGMMA_API_KEY }}\n    base_url: {base_url}\n\
         defaults: {{ target: integration, conversation_id: chat-1 }}\n"
    )
}

fn account(i: usize) -> String {
    format!("acct-{i:03}")
}

/// `accounts` accounts × `per_account` rows, the same message ids in every account (a message
/// id is only unique within its account), in account order (as exports come).
fn account_rows(accounts: std::ops::Range<usize>, per_account: usize) -> Vec<(String, String)> {
    accounts
        .flat_map(|a| (0..per_account).map(move |m| (account(a), format!("m-{m}"))))
        .collect()
}

/// A YAML plan with the rows inline.
fn yaml_plan(dir: &Path, base_url: &str, rows: &[(String, String)]) -> PathBuf {
    let mut plan = targets(base_url);
    plan.push_str("rows:\n");
    for (scope, message) in rows {
        writeln!(
            plan,
            "  - {{ scope_id: {scope}, message_id: {message}, emoji: \"👍\" }}"
        )
        .expect("write");
    }
    let path = dir.join("accounts.yaml");
    std::fs::write(&path, plan).expect("plan");
    path
}

/// A YAML plan including a CSV of the rows, with a `scope_id` column.
fn csv_plan(dir: &Path, base_url: &str, rows: &[(String, String)]) -> PathBuf {
    let mut csv = String::from("scope_id,message_id,emoji\n");
    for (scope, message) in rows {
        writeln!(csv, "{scope},{message},🎉").expect("write");
    }
    std::fs::write(dir.join("accounts.csv"), csv).expect("csv");
    let path = dir.join("accounts-csv.yaml");
    std::fs::write(
        &path,
        format!("{}include: [accounts.csv]\n", targets(base_url)),
    )
    .expect("plan");
    path
}

/// The sandbox's request log: (path, status) per request.
fn logged(log: &Path) -> Vec<(String, Option<u64>)> {
    std::fs::read_to_string(log)
        .expect("request log")
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("log line");
            (
                v["path"].as_str().unwrap_or_default().to_string(),
                v["status"].as_u64(),
            )
        })
        .collect()
}

fn limited_sandbox_config(log: &Path) -> reactbatch::sandbox::SandboxConfig {
    // Each scope is limited on its own, at the documented 7/s with a little tolerance.
    sandbox_config()
        .kommo_rate(per_second(7), 3)
        .request_log(log.to_path_buf())
}

/// Runs `plan` against the sandbox's `log`-ged run and checks what every account got.
async fn run_accounts(plan: &Path, dir: &Path, sandbox: &SandboxHandle, log: &Path, n: usize) {
    let report = dir.join(format!(
        "{}.report.csv",
        plan.file_stem().and_then(|s| s.to_str()).unwrap_or("plan")
    ));
    let summary = dir.join("summary.json");
    let out = run_blocking(run_cmd(
        plan,
        &report,
        &[
            "--summary-json",
            summary.to_str().expect("utf-8"),
            "--concurrency",
            "8",
        ],
    ))
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    // Every row ok, and the report names each row's account.
    let rows = read_report(&report).expect("report");
    assert_one_row_per_plan_row(&rows, n);
    assert!(
        rows.iter().all(|r| r.status == Status::Ok),
        "{:?}",
        by_status(&rows)
    );
    let header = std::fs::read_to_string(&report).expect("report");
    assert!(
        header
            .lines()
            .next()
            .is_some_and(|h| h.ends_with(",key,scope_id,channel_id")),
        "{header:.200}"
    );
    let mut per_account: BTreeMap<String, usize> = BTreeMap::new();
    for r in &rows {
        assert!(r.scope_id.starts_with("acct-"), "{r:?}");
        assert_eq!(r.channel_id, "", "a Kommo row has no channel");
        *per_account.entry(r.scope_id.clone()).or_default() += 1;
    }
    let accounts = per_account.len();

    // The sandbox saw each account's requests on the account's own path, every one accepted
    // (a wrong signature for the path would be 403), and made each account's reactions.
    let mut paths: BTreeMap<String, usize> = BTreeMap::new();
    for (path, status) in logged(log) {
        if status == Some(200) {
            *paths.entry(path).or_default() += 1;
        } else {
            assert_eq!(status, Some(429), "{path}: only the rate limit may refuse");
        }
    }
    let expected: BTreeMap<String, usize> = per_account
        .iter()
        .map(|(a, n)| (format!("/v2/origin/custom/{a}/react"), *n))
        .collect();
    assert_eq!(paths, expected);
    let reactions = sandbox.reactions();
    assert_eq!(reactions.len(), n);
    for (a, count) in &per_account {
        assert_eq!(
            reactions.iter().filter(|r| r.scope == *a).count(),
            *count,
            "{a}"
        );
    }

    // One lane per account, each with its account's requests.
    let summary = summary_json(&summary);
    let lanes = summary["lanes"].as_array().expect("lanes");
    // The Ogmma target's lane (no rows) aside.
    let lanes: Vec<&serde_json::Value> = lanes
        .iter()
        .filter(|l| l["provider"] == "kommo" || l["requests"].as_u64() != Some(0))
        .collect();
    assert_eq!(lanes.len(), accounts, "{:#}", summary["lanes"]);
    for lane in lanes {
        let name = lane["name"].as_str().expect("name");
        let scope = name.strip_prefix("integration/").expect("named by account");
        assert_eq!(lane["rate"], "7/s");
        assert_eq!(
            lane["requests"].as_u64(),
            Some(per_account[scope] as u64 + lane["rate_limited"].as_u64().unwrap_or(0)),
            "{lane:#}"
        );
    }
}

/// 50 accounts × 3 rows on one target, in YAML and in CSV: every row ok on its account's
/// path, a lane per account.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_target_runs_a_lane_per_account_from_yaml_and_csv() {
    for csv in [false, true] {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("requests.jsonl");
        let sandbox = Sandbox::start(limited_sandbox_config(&log))
            .await
            .expect("sandbox");
        let rows = account_rows(0..50, 3);
        let plan = if csv {
            csv_plan(dir.path(), &sandbox.base_url(), &rows)
        } else {
            yaml_plan(dir.path(), &sandbox.base_url(), &rows)
        };
        run_accounts(&plan, dir.path(), &sandbox, &log, rows.len()).await;
        sandbox.shutdown().await;
    }
}

/// The dry run: each account's requests are signed for its own path, and the estimate is one
/// account's time (the lanes run side by side), not all the rows at one account's pace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dry_run_signs_each_accounts_path_and_estimates_lanes_side_by_side() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rows = account_rows(0..20, 8);
    let plan = yaml_plan(dir.path(), "http://127.0.0.1:9", &rows);
    let emit = dir.path().join("emit.jsonl");
    let summary = dir.path().join("summary.json");
    let out = bin()
        .arg("run")
        .arg(&plan)
        .args([
            "--dry-run",
            "--no-progress",
            "--now",
            "2026-12-01T09:00:00Z",
        ])
        .arg("--emit")
        .arg(&emit)
        .arg("--summary-json")
        .arg(&summary)
        .arg("--report")
        .arg(dir.path().join("dry.csv"))
        .env("KOMMO_CHANNEL_SECRET", KOMMO_SECRET)
        .env("OGMMA_API_KEY", OGMMA_KEY)
        .output()
        .expect("dry run");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let emitted = std::fs::read_to_string(&emit).expect("emit");
    let lines: Vec<serde_json::Value> = emitted
        .lines()
        .map(|l| serde_json::from_str(l).expect("emit line"))
        .collect();
    assert_eq!(lines.len(), rows.len());
    for ((scope, _), line) in rows.iter().zip(&lines) {
        let url = line["url"].as_str().expect("url");
        assert!(
            url.ends_with(&format!("/v2/origin/custom/{scope}/react")),
            "{url}"
        );
    }
    // 8 rows at 7/s with a burst of 1: 7 intervals of 1/7 s, for every lane at once.
    let summary = summary_json(&summary);
    assert_eq!(summary["estimated_ms"].as_u64(), Some(1000));
    let kommo_lanes = summary["lanes"]
        .as_array()
        .expect("lanes")
        .iter()
        .filter(|l| l["provider"] == "kommo")
        .count();
    assert_eq!(kommo_lanes, 20);
    let err = stderr(&out);
    assert!(
        err.contains("its 20 lanes (one per account) at 7/s need ~1.0s"),
        "{err}"
    );
}

/// `check` and `run` name the row at file:line:column when a target without an account has a
/// row without one, or a row gives the other provider's account field; nothing is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_without_its_account_or_with_the_wrong_field_is_a_located_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sandbox = Sandbox::start(sandbox_config()).await.expect("sandbox");
    let base = sandbox.base_url();
    // Rows start after the targets, `defaults:` and `rows:`.
    let first_row = targets(&base).lines().count() + 2;
    let cases = [
        (
            "missing.yaml",
            format!(
                "{}rows:\n  - {{ scope_id: acct-1, message_id: m-1, emoji: \"👍\" }}\n  - {{ message_id: m-2, emoji: \"👍\" }}\n",
                targets(&base)
            ),
            format!("missing.yaml:{}:5", first_row + 1),
            "needs `scope_id`: the target gives none",
        ),
        (
            "wrong-field.yaml",
            format!(
                "{}rows:\n  - {{ target: customers, channel_id: ch-1, scope_id: acct-1, message_id: m-1, emoji: \"👍\" }}\n",
                targets(&base)
            ),
            format!("wrong-field.yaml:{first_row}:54"),
            "`scope_id` is Kommo-only",
        ),
        (
            "ogmma-missing.yaml",
            format!(
                "{}rows:\n  - {{ target: customers, message_id: m-1, emoji: \"👍\" }}\n",
                targets(&base)
            ),
            format!("ogmma-missing.yaml:{first_row}:5"),
            "needs `channel_id`",
        ),
        (
            "bad-scope.yaml",
            format!(
                "{}rows:\n  - {{ scope_id: \"acct/1\", message_id: m-1, emoji: \"👍\" }}\n",
                targets(&base)
            ),
            format!("bad-scope.yaml:{first_row}:17"),
            "`scope_id` must be made of `A-Z a-z 0-9 . _ ~ -` only",
        ),
    ];
    for (name, text, at, message) in &cases {
        let plan = dir.path().join(name);
        std::fs::write(&plan, text).expect("plan");
        let check = bin()
            .arg("check")
            .arg(&plan)
            .env("KOMMO_CHANNEL_SECRET", KOMMO_SECRET)
            .env("OGMMA_API_KEY", OGMMA_KEY)
            .output()
            .expect("check");
        let err = stderr(&check);
        assert_eq!(check.status.code(), Some(2), "{name}: {err}");
        assert!(err.contains(at.as_str()), "{name}: wants {at}: {err}");
        assert!(err.contains(message), "{name}: {err}");

        let out = run_blocking(run_cmd(&plan, &dir.path().join("r.csv"), &[])).await;
        assert_eq!(out.status.code(), Some(2), "{name}: {}", stderr(&out));
        assert!(
            stderr(&out).contains(at.as_str()),
            "{name}: {}",
            stderr(&out)
        );
    }
    // A CSV row without an account: file and line.
    std::fs::write(
        dir.path().join("rows.csv"),
        "scope_id,message_id,emoji\nacct-1,m-1,👍\n,m-2,👍\n",
    )
    .expect("csv");
    let plan = dir.path().join("csv.yaml");
    std::fs::write(&plan, format!("{}include: [rows.csv]\n", targets(&base))).expect("plan");
    let out = run_blocking(run_cmd(&plan, &dir.path().join("r.csv"), &[])).await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("rows.csv:3"), "{}", stderr(&out));
    assert_eq!(sandbox.stats().requests, 0, "nothing was sent");
    sandbox.shutdown().await;
}

fn ok_keys(rows: &[RowResult]) -> Vec<(String, String)> {
    rows.iter()
        .filter(|r| r.status == Status::Ok)
        .map(|r| (r.scope_id.clone(), r.message_id.clone()))
        .collect()
}

/// Resume: the same message ids in new accounts are new rows (identities key on the account),
/// the accounts done before are not sent again. Undo: the inverse plan goes to each row's
/// account and takes every reaction back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_and_undo_keep_each_rows_account() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("requests.jsonl");
    let sandbox = Sandbox::start(limited_sandbox_config(&log))
        .await
        .expect("sandbox");
    let base = sandbox.base_url();
    let first = account_rows(0..5, 2);
    let plan = yaml_plan(dir.path(), &base, &first);
    let report = dir.path().join("accounts.report.csv");
    let out = run_blocking(run_cmd(&plan, &report, &[])).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(sandbox.stats().requests, 10);

    // Five more accounts with the very same message ids.
    let all = account_rows(0..10, 2);
    let plan = yaml_plan(dir.path(), &base, &all);
    let report_arg = report.to_str().expect("utf-8");
    let out = run_blocking(run_cmd(&plan, &report, &["--resume", report_arg])).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(sandbox.stats().requests, 20, "only the new accounts' rows");
    let rows = read_report(&report).expect("report");
    assert_one_row_per_plan_row(&rows, 20);
    let skipped: Vec<&RowResult> = rows.iter().filter(|r| r.code == "done_earlier").collect();
    assert_eq!(skipped.len(), 10);
    assert!(skipped.iter().all(|r| r.scope_id.as_str() < "acct-005"));
    let sent = ok_keys(&rows);
    assert_eq!(sent.len(), 10);
    assert!(sent.iter().all(|(a, _)| a.as_str() >= "acct-005"));
    assert_eq!(sandbox.reactions().len(), 20);

    // The undo plan of every row done, checked and run: no reaction is left in any account.
    let undo = dir.path().join("undo.yaml");
    let out = bin()
        .arg("undo")
        .arg(&report)
        .arg("--plan")
        .arg(&plan)
        .arg("-o")
        .arg(&undo)
        .output()
        .expect("undo");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = std::fs::read_to_string(&undo).expect("undo plan");
    assert_eq!(text.matches("scope_id: acct-").count(), 20, "{text}");
    let undo_report = dir.path().join("undo.report.csv");
    let out = run_blocking(run_cmd(&undo, &undo_report, &[])).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let rows = read_report(&undo_report).expect("undo report");
    assert_eq!(rows.len(), 20);
    assert!(rows
        .iter()
        .all(|r| r.status == Status::Ok && r.action == "unreact" && !r.scope_id.is_empty()));
    assert_eq!(sandbox.reactions(), vec![]);
    sandbox.shutdown().await;
}

/// One message id in two accounts: two messages, both reacted to, and the second row not
/// taken as making the first pointless; the same id twice in one account still is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_message_id_in_two_accounts_is_two_messages() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sandbox = Sandbox::start(sandbox_config()).await.expect("sandbox");
    let mut plan = targets(&sandbox.base_url());
    plan.push_str(
        "rows:\n\
         \x20 - { scope_id: acct-a, message_id: m-1, emoji: \"👍\" }\n\
         \x20 - { scope_id: acct-b, message_id: m-1, emoji: \"❤️\" }\n\
         \x20 - { scope_id: acct-c, message_id: m-1, emoji: \"👀\" }\n\
         \x20 - { scope_id: acct-c, message_id: m-1, emoji: \"🎉\" }\n",
    );
    let path = dir.path().join("same-message.yaml");
    std::fs::write(&path, plan).expect("plan");
    let out = run_blocking(run_cmd(&path, &dir.path().join("r.csv"), &[])).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let err = stderr(&out);
    assert_eq!(err.matches("is pointless").count(), 1, "{err}");
    assert!(err.contains("row 3 (react) is pointless: row 4"), "{err}");
    let user = USER;
    assert_eq!(
        sandbox.reaction(ProviderKind::Kommo, "acct-a", "m-1", user),
        Some("👍".into())
    );
    assert_eq!(
        sandbox.reaction(ProviderKind::Kommo, "acct-c", "m-1", user),
        Some("🎉".into())
    );
    assert_eq!(
        sandbox.reaction(ProviderKind::Kommo, "acct-b", "m-1", user),
        Some("❤️".into())
    );
    sandbox.shutdown().await;
}

/// Two Ogmma customers' keys, each limited on its own by the sandbox: a burst on one key is
/// refused past its limit while the other key's requests still pass; an unknown key is 401.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sandbox_limits_each_ogmma_key_on_its_own() {
    let sandbox = Sandbox::start(
        sandbox_config()
            .ogmma_keys([Secret::new(OGMMA_KEY), Secret::new(OGMMA_KEY_2)])
            .ogmma_rate(Rate::parse("3/h").expect("rate"), 3),
    )
    .await
    .expect("sandbox");
    let client = reqwest::Client::new();
    let url = format!("{}/v1/channels/ch-1/messages/react", sandbox.base_url());
    let post = |key: &'static str, i: usize| {
        client
            .post(&url)
            .bearer_auth(key)
            .header("Content-Type", "application/json")
            .body(format!(r#"{{"messageId":"m-{i}","emoji":"👍"}}"#))
            .send()
    };
    let mut statuses: BTreeMap<(&str, u16), usize> = BTreeMap::new();
    for i in 0..5 {
        let answer = post(OGMMA_KEY, i).await.expect("answer");
        *statuses
            .entry(("key 1", answer.status().as_u16()))
            .or_default() += 1;
    }
    for i in 0..5 {
        let answer = post(OGMMA_KEY_2, i).await.expect("answer");
        *statuses
            .entry(("key 2", answer.status().as_u16()))
            .or_default() += 1;
    }
    let answer = post("not-a-key", 0).await.expect("answer");
    assert_eq!(answer.status().as_u16(), 401);
    assert_eq!(
        statuses,
        BTreeMap::from([
            (("key 1", 200), 3),
            (("key 1", 429), 2),
            (("key 2", 200), 3),
            (("key 2", 429), 2),
        ])
    );
    assert_eq!(sandbox.stats().rate_limited, 4);
    sandbox.shutdown().await;
}

/// Two Ogmma targets, one per customer key, on the same channel: a lane per key, every row
/// accepted by a sandbox that limits each key at the documented 60/min.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_key_lanes_run_against_per_key_limits() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sandbox = Sandbox::start(
        sandbox_config()
            .ogmma_keys([Secret::new(OGMMA_KEY), Secret::new(OGMMA_KEY_2)])
            .ogmma_rate(Rate::parse("60/min").expect("rate"), 2),
    )
    .await
    .expect("sandbox");
    let base = sandbox.base_url();
    let mut plan = format!(
        "version: 1\n\
         targets:\n  one:\n    provider: ogmma\n    api_key: {{ env: OGMMA_API_KEY }}\n    base_url: {base}\n\
         \x20 two:\n    provider: ogmma\n    api_key: {{ env: OGMMA_API_KEY_2 }}\n    base_url: {base}\n\
         rows:\n"
    );
    for i in 0..3 {
        for target in ["one", "two"] {
            writeln!(
                plan,
                "  - {{ target: {target}, channel_id: ch-{target}, message_id: m-{i}, emoji: \"👍\" }}"
            )
            .expect("write");
        }
    }
    let path = dir.path().join("keys.yaml");
    std::fs::write(&path, plan).expect("plan");
    let summary = dir.path().join("summary.json");
    let report = dir.path().join("keys.report.csv");
    let mut cmd = run_cmd(
        &path,
        &report,
        &["--summary-json", summary.to_str().expect("utf-8")],
    );
    cmd.env("OGMMA_API_KEY_2", OGMMA_KEY_2);
    let out = run_blocking(cmd).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let rows = read_report(&report).expect("report");
    assert!(rows.iter().all(|r| r.status == Status::Ok));
    assert!(rows
        .iter()
        .all(|r| r.channel_id == format!("ch-{}", r.target) && r.scope_id.is_empty()));
    let summary = summary_json(&summary);
    assert_eq!(summary["lanes"].as_array().map(Vec::len), Some(2));
    for target in ["one", "two"] {
        assert_eq!(
            sandbox
                .reactions()
                .iter()
                .filter(|r| r.scope == format!("ch-{target}"))
                .count(),
            3
        );
    }
    sandbox.shutdown().await;
}

/// `check` says how many accounts a target's rows name and the lanes they make, in both
/// formats; a plan whose rows name none has no `accounts` in its JSON.
#[test]
fn check_names_the_accounts_and_their_lanes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let plan = csv_plan(dir.path(), "http://127.0.0.1:9", &account_rows(0..12, 2));
    let check = |format: &str| {
        bin()
            .arg("check")
            .arg(&plan)
            .args(["--format", format])
            .env("KOMMO_CHANNEL_SECRET", KOMMO_SECRET)
            .env("OGMMA_API_KEY", OGMMA_KEY)
            .output()
            .expect("check")
    };
    let human = check("human");
    assert_eq!(human.status.code(), Some(0), "{}", stderr(&human));
    assert!(
        stderr(&human).contains("target integration: its rows name 12 accounts, paced in 12 lanes"),
        "{}",
        stderr(&human)
    );
    let json = check("json");
    assert_eq!(json.status.code(), Some(0));
    let doc: serde_json::Value = serde_json::from_slice(&json.stdout).expect("JSON");
    assert_eq!(
        doc["plans"][0]["accounts"],
        serde_json::json!([{ "target": "integration", "accounts": 12, "lanes": 12 }])
    );

    let plain = write_plan(
        dir.path(),
        "http://127.0.0.1:9",
        &[react("k", "m-1", "👍")],
        "",
    );
    let out = bin()
        .arg("check")
        .arg(&plain)
        .args(["--format", "json"])
        .env("KOMMO_CHANNEL_SECRET", KOMMO_SECRET)
        .env("OGMMA_API_KEY", OGMMA_KEY)
        .output()
        .expect("check");
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert!(doc["plans"][0].get("accounts").is_none(), "{doc:#}");
}

/// `reactbatch sandbox --ogmma-keys 2`: the second key is generated and printed (the first,
/// from the environment, is only named), and each key has its own limit.
#[test]
fn the_sandbox_binary_takes_several_ogmma_keys() {
    use std::io::BufRead;
    use std::process::Stdio;
    let mut child = bin()
        .args([
            "sandbox",
            "--ogmma-keys",
            "2",
            "--ogmma-rate",
            "1/h",
            "--burst",
            "1",
        ])
        .env("OGMMA_API_KEY", OGMMA_KEY)
        .env_remove("OGMMA_API_KEY_2")
        .env_remove("KOMMO_CHANNEL_SECRET")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let mut stdout = std::io::BufReader::new(child.stdout.take().expect("stdout"));
    let mut lines = Vec::new();
    for _ in 0..4 {
        let mut line = String::new();
        stdout.read_line(&mut line).expect("line");
        lines.push(line.trim_end().to_string());
    }
    let url = lines[0].clone();
    assert!(
        lines[2].contains("using OGMMA_API_KEY from the environment"),
        "{lines:?}"
    );
    assert!(!lines.join("\n").contains(OGMMA_KEY), "{lines:?}");
    let second = lines[3]
        .strip_prefix("export OGMMA_API_KEY_2=")
        .expect("the second key, generated")
        .to_string();

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let statuses = runtime.block_on(async {
        let client = reqwest::Client::new();
        let mut statuses = Vec::new();
        for key in [OGMMA_KEY, &second, &second] {
            let answer = client
                .post(format!("{url}/v1/channels/ch-1/messages/react"))
                .bearer_auth(key)
                .header("Content-Type", "application/json")
                .body(r#"{"messageId":"m-1","emoji":"👍"}"#)
                .send()
                .await
                .expect("answer");
            statuses.push(answer.status().as_u16());
        }
        statuses
    });
    // One request per key per hour: each key's first passes, the second key's second does not.
    assert_eq!(statuses, [200, 200, 429]);
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    assert_eq!(child.wait().expect("wait").code(), Some(0));
}

/// The integrator example runs on the in-process sandbox: a lane per account, every row ok,
/// each on the account its row names.
#[test]
fn the_integrator_example_runs_a_lane_per_account() {
    let dir = tempfile::tempdir().expect("tempdir");
    let report = dir.path().join("integrator.report.csv");
    let summary = dir.path().join("summary.json");
    let out = bin()
        .arg("run")
        .arg(root().join("examples/workflows/integrator.yaml"))
        .args(["--sandbox", "--no-progress", "--report"])
        .arg(&report)
        .arg("--summary-json")
        .arg(&summary)
        .env_remove("KOMMO_CHANNEL_SECRET")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let rows = read_report(&report).expect("report");
    assert_eq!(rows.len(), 5);
    assert!(rows.iter().all(|r| r.status == Status::Ok), "{rows:?}");
    let accounts: std::collections::BTreeSet<&str> =
        rows.iter().map(|r| r.scope_id.as_str()).collect();
    assert_eq!(accounts.len(), 3, "{accounts:?}");
    assert_eq!(
        summary_json(&summary)["lanes"].as_array().map(Vec::len),
        Some(3)
    );
}

/// A report written before the account columns existed (15 columns) still resumes: its done
/// rows are skipped and nothing is sent again; the new report has the columns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_without_the_account_columns_still_resumes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sandbox = Sandbox::start(sandbox_config()).await.expect("sandbox");
    let rows = vec![react("k", "m-1", "👍"), react("o", "m-2", "🎉")];
    let plan = write_plan(dir.path(), &sandbox.base_url(), &rows, "");
    let report = dir.path().join("plan.report.csv");
    let out = run_blocking(run_cmd(&plan, &report, &[])).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(sandbox.stats().requests, 2);
    // As the previous release wrote it: the last two columns cut off.
    let text = std::fs::read_to_string(&report).expect("report");
    let old: String = text
        .lines()
        .map(|l| {
            let mut fields: Vec<&str> = l.split(',').collect();
            fields.truncate(fields.len() - 2);
            fields.join(",") + "\n"
        })
        .collect();
    assert!(old.starts_with("row,source,target,provider,action,message_id,emoji,status,http_status,code,message,attempts,duration_ms,finished_at,key\n"));
    std::fs::write(&report, old).expect("old report");
    let report_arg = report.to_str().expect("utf-8");
    let out = run_blocking(run_cmd(&plan, &report, &["--resume", report_arg])).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(sandbox.stats().requests, 2, "nothing sent again");
    let resumed = read_report(&report).expect("report");
    assert!(
        resumed.iter().all(|r| r.code == "done_earlier"),
        "{resumed:?}"
    );
    assert_eq!(
        resumed
            .iter()
            .find(|r| r.target == "k")
            .map(|r| r.scope_id.as_str()),
        Some(SCOPE)
    );
    assert_eq!(
        resumed
            .iter()
            .find(|r| r.target == "o")
            .map(|r| r.channel_id.as_str()),
        Some(CHANNEL)
    );
    sandbox.shutdown().await;
}
